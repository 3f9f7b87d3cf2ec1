//! `-info` (containerd 2.0+): describe the shim and its OCI runtime as a
//! `containerd.types.RuntimeInfo` protobuf on stdout.
//!
//! containerd runs `<shim> -info` (no `-namespace`, no action) with the runtime options `Any`
//! on stdin, possibly empty: for `ctr plugins inspect-runtime`, for every Create with idmapped
//! mounts (where a failure fails the Create), and on 2.2+ for every Create of a non-runc
//! runtime (with no options then: `runc` answers). The `features` field is the OCI runtime's
//! own `features` JSON, so the options' runtime binary (`BinaryName`, from runc options or the
//! CRI's `ConfigPath` file, as Create reads them) answers for itself: crun's features for crun.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};

use crate::error::{Error, Result};
use crate::protos::introspection::{RuntimeInfo, RuntimeVersion};

/// Runtime name in `RuntimeInfo.name` (what containerd's config calls the runtime type).
pub const RUNTIME_NAME: &str = "io.containerd.tether.v2";

/// Type URL containerd's typeurl registry gives the runtime-spec `Features` struct; its
/// value is the struct's JSON (containerd decodes it with `json.Unmarshal`).
pub const FEATURES_TYPE_URL: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/features/Features";

/// Bound for `<runtime> features`, which only prints what the binary knows.
const FEATURES_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads the options from `stdin`, asks the runtime for its features and returns the encoded
/// `RuntimeInfo`.
pub fn info(stdin: &mut impl Read) -> Result<Vec<u8>> {
    let mut raw = Vec::new();
    stdin
        .read_to_end(&mut raw)
        .map_err(Error::io("read runtime options from stdin"))?;
    let options = parse_options(&raw)?;
    let runc = crate::service::decode_options(&options)?;
    let named = !runc.binary_name.is_empty();
    let binary = if named {
        runc.binary_name
    } else {
        "runc".to_string()
    };
    // A runtime that runs but has no `features` (runc before 1.1, crun before 1.8.6, youki)
    // still gets an answer, without features, as from the Go shim (its manager `Info`):
    // containerd 2.2+ asks on every non-runc Create and logs a failed `-info` as an ERROR
    // each time ("failed to load runtime info"). A runtime the options name that cannot be
    // run at all stays an error, as in the Go shim (its `exec.LookPath`). Without options the
    // default `runc` may be missing on a host whose runtimes all name their binary (crun only):
    // containerd 2.2+'s per-Create `-info` sends no options whatever the handler's are
    // (`loadShimInfo`), so that is answered without features too.
    let found = match features(&binary) {
        Err(e) if !named => Err(e.to_string()),
        other => other?,
    };
    let features = match found {
        Ok(json) => MessageField::some(Any {
            type_url: FEATURES_TYPE_URL.into(),
            value: json,
            ..Default::default()
        }),
        Err(why) => {
            eprintln!("containerd-shim-tether-v2: RuntimeInfo without features: {why}");
            MessageField::none()
        }
    };
    let info = RuntimeInfo {
        name: RUNTIME_NAME.into(),
        version: MessageField::some(RuntimeVersion {
            version: crate::VERSION.into(),
            revision: String::new(),
            ..Default::default()
        }),
        options,
        features,
        ..Default::default()
    };
    info.write_to_bytes()
        .map_err(|e| Error::InvalidArgument(format!("encode RuntimeInfo: {e}")))
}

/// stdin's bytes as the options `Any`: nothing means no options; anything else must be a
/// protobuf `Any` with a type URL (what containerd marshals), or it is refused.
fn parse_options(raw: &[u8]) -> Result<MessageField<Any>> {
    if raw.is_empty() {
        return Ok(MessageField::none());
    }
    let any = Any::parse_from_bytes(raw).map_err(|e| {
        Error::InvalidArgument(format!(
            "runtime options on stdin are not a protobuf Any ({} bytes): {e}",
            raw.len()
        ))
    })?;
    if any.type_url.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "runtime options on stdin are not a protobuf Any ({} bytes, no type URL)",
            raw.len()
        )));
    }
    Ok(MessageField::some(any))
}

/// `<binary> features`: `Ok(Ok(json))` with its stdout, checked to be a JSON object;
/// `Ok(Err(why))` when the runtime ran but gave none; `Err` when it cannot be run at all.
fn features(binary: &str) -> Result<std::result::Result<Vec<u8>, String>> {
    let fail = |why: String| {
        format!("OCI runtime {binary:?} gave no features (`{binary} features`): {why}")
    };
    let mut child = Command::new(binary)
        .arg("features")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Unimplemented(fail(e.to_string())))?;
    // Readers on threads, so a runtime that writes a lot cannot block on a full pipe.
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + FEATURES_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Ok(Err(fail(format!("no answer within {FEATURES_TIMEOUT:?}"))));
            }
            Err(e) => return Ok(Err(fail(e.to_string()))),
        }
    };
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    if !status.success() {
        let msg = String::from_utf8_lossy(&stderr);
        let msg = msg.trim();
        return Ok(Err(fail(if msg.is_empty() {
            status.to_string()
        } else {
            format!("{status}: {msg}")
        })));
    }
    Ok(match serde_json::from_slice::<serde_json::Value>(&stdout) {
        Ok(serde_json::Value::Object(_)) => Ok(stdout),
        Ok(_) => Err(fail("output is not a JSON object".into())),
        Err(e) => Err(fail(format!("output is not JSON: {e}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_stdin_means_no_options() {
        assert!(parse_options(b"").unwrap().is_none());
    }

    #[test]
    fn garbage_is_refused() {
        for raw in [&b"hello world"[..], b"\xff\xff\xff", b"\x08\x01"] {
            let e = parse_options(raw).unwrap_err();
            assert!(
                matches!(&e, Error::InvalidArgument(m) if m.contains("not a protobuf Any")),
                "{raw:?}: {e}"
            );
        }
    }

    #[test]
    fn any_is_kept_as_sent() {
        let any = Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: vec![],
            ..Default::default()
        };
        let got = parse_options(&any.write_to_bytes().unwrap()).unwrap();
        assert_eq!(got.unwrap().type_url, "containerd.runc.v1.Options");
    }

    #[test]
    fn a_runtime_without_features_gives_none_and_a_missing_one_an_error() {
        // `false features` exits 1: the runtime is there, its features are not.
        let why = features("false").unwrap().unwrap_err();
        assert!(
            why.contains("false") && why.contains("exit status: 1"),
            "{why}"
        );
        let e = features("/nonexistent/runtime").unwrap_err();
        assert!(e.to_string().contains("/nonexistent/runtime"), "{e}");
    }
}
