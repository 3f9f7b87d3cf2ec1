//! `-info` (containerd 2.0+): describe the shim and its OCI runtime as a
//! `containerd.types.RuntimeInfo` protobuf on stdout.
//!
//! containerd runs `<shim> -info` (no `-namespace`, no action) with the runtime options `Any`
//! on stdin, possibly empty: for `ctr plugins inspect-runtime`, for every Create with idmapped
//! mounts (where a failure fails the Create), and on 2.2+ for every Create of a non-runc
//! runtime. The `features` field is the OCI runtime's own `features` JSON, so the options'
//! runtime binary (`BinaryName`, from runc options or the CRI's `ConfigPath` file, as Create
//! reads them) answers for itself: crun's features for crun.

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
    let binary = if runc.binary_name.is_empty() {
        "runc".to_string()
    } else {
        runc.binary_name
    };
    let features = features(&binary)?;
    let info = RuntimeInfo {
        name: RUNTIME_NAME.into(),
        version: MessageField::some(RuntimeVersion {
            version: crate::VERSION.into(),
            revision: String::new(),
            ..Default::default()
        }),
        options,
        features: MessageField::some(Any {
            type_url: FEATURES_TYPE_URL.into(),
            value: features,
            ..Default::default()
        }),
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

/// `<binary> features`: its stdout, checked to be a JSON object.
fn features(binary: &str) -> Result<Vec<u8>> {
    let fail = |why: String| {
        Error::Unimplemented(format!(
            "OCI runtime {binary:?} gave no features (`{binary} features`): {why}"
        ))
    };
    let mut child = Command::new(binary)
        .arg("features")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
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
                return Err(fail(format!("no answer within {FEATURES_TIMEOUT:?}")));
            }
            Err(e) => return Err(fail(e.to_string())),
        }
    };
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    if !status.success() {
        let msg = String::from_utf8_lossy(&stderr);
        let msg = msg.trim();
        return Err(fail(if msg.is_empty() {
            status.to_string()
        } else {
            format!("{status}: {msg}")
        }));
    }
    match serde_json::from_slice::<serde_json::Value>(&stdout) {
        Ok(serde_json::Value::Object(_)) => Ok(stdout),
        Ok(_) => Err(fail("output is not a JSON object".into())),
        Err(e) => Err(fail(format!("output is not JSON: {e}"))),
    }
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
    fn a_runtime_without_features_is_an_error() {
        // `false features` exits 1; a missing binary cannot be spawned.
        for bin in ["false", "/nonexistent/runtime"] {
            let e = features(bin).unwrap_err();
            assert!(e.to_string().contains(bin), "{e}");
        }
    }
}
