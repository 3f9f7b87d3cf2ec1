//! The `start` handshake's wire formats, in one place.
//!
//! containerd 1.6 to 2.2 send the runtime options `Any` (or nothing) on `start`'s stdin and read
//! a plain `unix://…` address back. containerd 2.3 sends a `BootstrapParams` protobuf and
//! accepts a `BootstrapResult`. A legacy `Any` also decodes as a `BootstrapParams`, so the
//! bootstrap form is recognised only when its instance id and namespace are ours. That check
//! is what containerd's main branch does (`pkg/shim/compat.go`); the 2.3 releases' shims do
//! not make it. We keep announcing protocol version 2 (SPEC §1.17).

use containerd_shim_protos::bootstrap_api::{BootstrapParams, BootstrapResult, LogLevel};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;

use crate::error::{Error, Result};

/// What a containerd 2.3+ `start` told us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrap {
    pub id: String,
    pub namespace: String,
    pub ttrpc_address: String,
    pub grpc_address: String,
    /// containerd's own binary, for publishing events (what `-publish-binary` says).
    pub containerd_binary: String,
    /// Where to put the socket instead of the default directory.
    pub socket_dir: Option<String>,
    pub debug: bool,
}

/// Reads `start`'s stdin: `Some` for containerd 2.3+ bootstrap parameters naming this task.
///
/// `id` and `namespace` are the `-id`/`-namespace` flags, empty when not given (containerd 2.3
/// deprecated them). Parameters that disagree with a flag that is given are not ours (a legacy
/// options `Any` also decodes as a `BootstrapParams`, with its type URL as instance id). With
/// no flags at all the parameters must carry a valid id, a namespace and containerd's ttrpc
/// address, which a legacy `Any` (fields 1 and 2 only) never does.
pub fn parse(stdin: &[u8], id: &str, namespace: &str) -> Option<Bootstrap> {
    let p = BootstrapParams::parse_from_bytes(stdin).ok()?;
    if (!id.is_empty() && p.instance_id != id)
        || (!namespace.is_empty() && p.namespace != namespace)
    {
        return None;
    }
    if id.is_empty() || namespace.is_empty() {
        let plausible = crate::process::validate_id("container", &p.instance_id).is_ok()
            && crate::process::validate_id("namespace", &p.namespace).is_ok()
            && !p.containerd_ttrpc_address.is_empty();
        if !plausible {
            return None;
        }
    }
    let debug = matches!(
        p.log_level.enum_value(),
        Ok(LogLevel::LOG_LEVEL_DEBUG | LogLevel::LOG_LEVEL_TRACE)
    );
    Some(Bootstrap {
        id: p.instance_id,
        namespace: p.namespace,
        ttrpc_address: p.containerd_ttrpc_address,
        grpc_address: p.containerd_grpc_address,
        containerd_binary: p.containerd_binary,
        socket_dir: p.socket_dir.filter(|d| !d.is_empty()),
        debug,
    })
}

/// The runtime options `start` was given: the stdin `Any` itself (containerd 1.6 to 2.2), or
/// the first `BootstrapParams` extension that is a runtime options message (2.3+, where they
/// travel as an extension). `None` when there are none.
pub fn runtime_options(stdin: &[u8], bootstrapped: bool) -> Option<Any> {
    let is_options = |a: &Any| {
        a.type_url.ends_with("containerd.runc.v1.Options")
            || a.type_url.ends_with("runtimeoptions.v1.Options")
    };
    if bootstrapped {
        let p = BootstrapParams::parse_from_bytes(stdin).ok()?;
        return p
            .extensions
            .into_iter()
            .filter_map(|e| e.value.into_option())
            .find(is_options);
    }
    Any::parse_from_bytes(stdin).ok().filter(is_options)
}

/// Who `start` starts a server for, and how: the bootstrap parameters where containerd sent
/// them, the command-line flags where it did not (or where a parameter is empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartParams {
    pub id: String,
    pub namespace: String,
    /// containerd's gRPC address: part of the socket hash, passed on as `-address`.
    pub address: String,
    /// containerd's ttrpc address for events; `None` leaves the environment's `TTRPC_ADDRESS`.
    pub ttrpc_address: Option<String>,
    pub publish_binary: String,
    pub socket_dir: Option<String>,
    pub debug: bool,
    /// containerd spoke the bootstrap protocol: answer with a `BootstrapResult`.
    pub bootstrapped: bool,
}

/// Combines the flags and `start`'s stdin. Fails when neither names the task or its namespace.
pub fn resolve(args: &crate::cli::Args, stdin: &[u8]) -> Result<StartParams> {
    let boot = parse(stdin, &args.id, &args.namespace);
    let pick = |from_boot: Option<&String>, flag: &str| {
        from_boot
            .filter(|v| !v.is_empty())
            .cloned()
            .unwrap_or_else(|| flag.to_string())
    };
    let b = boot.as_ref();
    let params = StartParams {
        id: pick(b.map(|b| &b.id), &args.id),
        namespace: pick(b.map(|b| &b.namespace), &args.namespace),
        address: pick(b.map(|b| &b.grpc_address), &args.address),
        ttrpc_address: b.map(|b| b.ttrpc_address.clone()).filter(|a| !a.is_empty()),
        publish_binary: pick(b.map(|b| &b.containerd_binary), &args.publish_binary),
        socket_dir: b.and_then(|b| b.socket_dir.clone()),
        debug: args.debug || b.is_some_and(|b| b.debug),
        bootstrapped: boot.is_some(),
    };
    if params.namespace.is_empty() {
        return Err(Error::InvalidArgument(
            "no namespace: neither -namespace nor bootstrap parameters on stdin".into(),
        ));
    }
    if params.id.is_empty() {
        return Err(Error::InvalidArgument(
            "no container id: neither -id nor bootstrap parameters on stdin".into(),
        ));
    }
    Ok(params)
}

/// What `start` prints: a `BootstrapResult` when containerd spoke the bootstrap protocol, the
/// plain address otherwise. Version 2 (task API v2 names; we serve v3 too) over ttrpc.
pub fn announce(address: &str, bootstrapped: bool) -> Vec<u8> {
    if !bootstrapped {
        return address.as_bytes().to_vec();
    }
    let r = BootstrapResult {
        version: 2,
        address: address.to_string(),
        protocol: "ttrpc".into(),
        ..Default::default()
    };
    r.write_to_bytes()
        .unwrap_or_else(|_| address.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim_protos::protobuf::well_known_types::any::Any;

    fn params(id: &str, ns: &str) -> BootstrapParams {
        BootstrapParams {
            instance_id: id.into(),
            namespace: ns.into(),
            containerd_ttrpc_address: "/run/containerd/containerd.sock.ttrpc".into(),
            log_level: LogLevel::LOG_LEVEL_DEBUG.into(),
            socket_dir: Some("/run/k/s".into()),
            ..Default::default()
        }
    }

    #[test]
    fn bootstrap_params_naming_us_are_recognised() {
        let b = parse(
            &params("c1", "k8s.io").write_to_bytes().unwrap(),
            "c1",
            "k8s.io",
        )
        .unwrap();
        assert_eq!(
            b,
            Bootstrap {
                id: "c1".into(),
                namespace: "k8s.io".into(),
                ttrpc_address: "/run/containerd/containerd.sock.ttrpc".into(),
                grpc_address: String::new(),
                containerd_binary: String::new(),
                socket_dir: Some("/run/k/s".into()),
                debug: true
            }
        );
        assert_eq!(
            parse(
                &params("other", "k8s.io").write_to_bytes().unwrap(),
                "c1",
                "k8s.io"
            ),
            None
        );
        assert_eq!(
            parse(
                &params("c1", "default").write_to_bytes().unwrap(),
                "c1",
                "k8s.io"
            ),
            None
        );
    }

    fn args(id: &str, ns: &str) -> crate::cli::Args {
        let mut argv = vec![];
        if !ns.is_empty() {
            argv.extend(["-namespace", ns]);
        }
        if !id.is_empty() {
            argv.extend(["-id", id]);
        }
        argv.extend(["-address", "/flag/grpc.sock", "start"]);
        crate::cli::parse(argv).unwrap()
    }

    #[test]
    fn params_alone_name_the_task_without_flags() {
        let mut p = params("c1", "k8s.io");
        p.containerd_grpc_address = "/run/containerd/containerd.sock".into();
        p.containerd_binary = "/usr/bin/containerd".into();
        let stdin = p.write_to_bytes().unwrap();
        let mut no_flags = args("", "");
        no_flags.address.clear();
        let r = resolve(&no_flags, &stdin).unwrap();
        assert_eq!(
            r,
            StartParams {
                id: "c1".into(),
                namespace: "k8s.io".into(),
                address: "/run/containerd/containerd.sock".into(),
                ttrpc_address: Some("/run/containerd/containerd.sock.ttrpc".into()),
                publish_binary: "/usr/bin/containerd".into(),
                socket_dir: Some("/run/k/s".into()),
                debug: true,
                bootstrapped: true,
            }
        );
        // Agreeing flags change nothing; the params' address wins over the flag's.
        let with_flags = resolve(&args("c1", "k8s.io"), &stdin).unwrap();
        assert_eq!(with_flags, r);
    }

    #[test]
    fn params_that_disagree_with_given_flags_are_refused() {
        let stdin = params("c1", "k8s.io").write_to_bytes().unwrap();
        for (id, ns) in [
            ("other", "k8s.io"),
            ("c1", "default"),
            ("other", ""),
            ("", "default"),
        ] {
            assert_eq!(parse(&stdin, id, ns), None, "{id:?} {ns:?}");
        }
        // Only the flags name the task then; with one of them missing, nothing does.
        let r = resolve(&args("other", "k8s.io"), &stdin).unwrap();
        assert_eq!((r.id.as_str(), r.bootstrapped), ("other", false));
        let e = resolve(&args("", "default"), &stdin).unwrap_err();
        assert!(e.to_string().contains("no container id"), "{e}");
        let e = resolve(&args("c1", ""), b"").unwrap_err();
        assert!(e.to_string().contains("no namespace"), "{e}");
    }

    #[test]
    fn without_flags_a_legacy_any_is_not_taken_for_params() {
        let opts = Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: b"k8s.io".to_vec(),
            ..Default::default()
        };
        assert_eq!(parse(&opts.write_to_bytes().unwrap(), "", ""), None);
        let mut no_ttrpc = params("c1", "k8s.io");
        no_ttrpc.containerd_ttrpc_address.clear();
        assert_eq!(parse(&no_ttrpc.write_to_bytes().unwrap(), "", ""), None);
        assert_eq!(
            parse(&params("../x", "k8s.io").write_to_bytes().unwrap(), "", ""),
            None
        );
    }

    #[test]
    fn legacy_stdin_is_not_bootstrap() {
        let opts = Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: vec![0x32, 0x04, b'r', b'u', b'n', b'c'],
            ..Default::default()
        };
        assert_eq!(
            parse(&opts.write_to_bytes().unwrap(), "c1", "default"),
            None
        );
        assert_eq!(parse(b"", "c1", "default"), None);
        assert_eq!(parse(b"\xff\xff\xff", "c1", "default"), None);
    }

    #[test]
    fn runtime_options_come_from_stdin_or_the_bootstrap_extension() {
        use containerd_shim_protos::bootstrap_api::Extension;
        let opts = Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: vec![0x32, 0x04, b'r', b'u', b'n', b'c'],
            ..Default::default()
        };
        let legacy = opts.write_to_bytes().unwrap();
        assert_eq!(runtime_options(&legacy, false), Some(opts.clone()));
        assert_eq!(runtime_options(b"", false), None);
        let other = Any {
            type_url: "containerd.types.Other".into(),
            ..Default::default()
        };
        let mut p = params("c1", "k8s.io");
        for value in [other, opts.clone()] {
            p.extensions.push(Extension {
                value: Some(value).into(),
                ..Default::default()
            });
        }
        let boot = p.write_to_bytes().unwrap();
        assert_eq!(runtime_options(&boot, true), Some(opts));
        assert_eq!(
            runtime_options(&params("c1", "k8s.io").write_to_bytes().unwrap(), true),
            None
        );
    }

    #[test]
    fn announce_matches_the_protocol_spoken() {
        assert_eq!(
            announce("unix:///run/containerd/s/ab", false),
            b"unix:///run/containerd/s/ab"
        );
        let r = BootstrapResult::parse_from_bytes(&announce("unix:///s/ab", true)).unwrap();
        assert_eq!(
            (r.version, r.address.as_str(), r.protocol.as_str()),
            (2, "unix:///s/ab", "ttrpc")
        );
    }
}
