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

/// What a containerd 2.3+ `start` told us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrap {
    pub ttrpc_address: String,
    /// Where to put the socket instead of the default directory.
    pub socket_dir: Option<String>,
    pub debug: bool,
}

/// Reads `start`'s stdin: `Some` for containerd 2.3+ bootstrap parameters naming this task.
pub fn parse(stdin: &[u8], id: &str, namespace: &str) -> Option<Bootstrap> {
    let p = BootstrapParams::parse_from_bytes(stdin).ok()?;
    if p.instance_id != id || p.namespace != namespace {
        return None;
    }
    let debug = matches!(
        p.log_level.enum_value(),
        Ok(LogLevel::LOG_LEVEL_DEBUG | LogLevel::LOG_LEVEL_TRACE)
    );
    Some(Bootstrap {
        ttrpc_address: p.containerd_ttrpc_address,
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
                ttrpc_address: "/run/containerd/containerd.sock.ttrpc".into(),
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
