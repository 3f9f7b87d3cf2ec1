//! What `Create` reads from the bundle (the OCI spec's few facts the shim acts on) and what it
//! leaves there for the `delete` action, which runs without a server. All of it is blocking file
//! I/O, so `init.rs` runs it off the runtime thread.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::process::Pid;
use crate::runtime::RuncOptions;

/// Writes `options.json` and `runtime` for the `delete` action, which runs without us.
pub(super) fn persist_options(bundle: &Path, opts: &RuncOptions) -> Result<()> {
    let json = serde_json::to_vec(opts).expect("options serialize");
    let binary = if opts.binary_name.is_empty() {
        "runc"
    } else {
        &opts.binary_name
    };
    for (name, data) in [("options.json", &json[..]), ("runtime", binary.as_bytes())] {
        let path = bundle.join(name);
        std::fs::write(&path, data).map_err(Error::io(format!("write {}", path.display())))?;
    }
    Ok(())
}

/// What `Create` needs to know from the bundle's OCI spec. Read once at create, never on the
/// exit path.
pub(super) struct SpecFacts {
    /// The container gets a pid namespace of its own (not joined, not the host's).
    pub(super) private_pid_namespace: bool,
    /// `linux.cgroupsPath` has runc's systemd form.
    pub(super) systemd_cgroups_path: bool,
}

impl SpecFacts {
    pub(super) fn read(bundle: &Path) -> Result<SpecFacts> {
        let path = bundle.join("config.json");
        let data = std::fs::read(&path).map_err(Error::io(format!("read {}", path.display())))?;
        let spec: serde_json::Value = serde_json::from_slice(&data)
            .map_err(|e| Error::InvalidArgument(format!("{}: {e}", path.display())))?;
        let namespaces = spec
            .pointer("/linux/namespaces")
            .and_then(|n| n.as_array())
            .map(Vec::as_slice)
            .unwrap_or_default();
        let private_pid_namespace = namespaces.iter().any(|ns| {
            ns.get("type").and_then(|t| t.as_str()) == Some("pid")
                && ns
                    .get("path")
                    .and_then(|p| p.as_str())
                    .unwrap_or("")
                    .is_empty()
        });
        let cgroups_path = spec
            .pointer("/linux/cgroupsPath")
            .and_then(|p| p.as_str())
            .unwrap_or("");
        Ok(SpecFacts {
            private_pid_namespace,
            systemd_cgroups_path: is_systemd_cgroups_path(cgroups_path),
        })
    }
}

/// Whether systemd is the running init, as runc (and sd_booted(3)) decide it.
pub(super) fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// runc's systemd driver takes `[slice]:[prefix]:[name]` (e.g. a kubelet's
/// `kubepods-besteffort-pod<uid>.slice:cri-containerd:<id>`); cgroupfs paths are directories
/// (`/kubepods/besteffort/pod<uid>/<id>`) and never look like that.
fn is_systemd_cgroups_path(p: &str) -> bool {
    let parts: Vec<&str> = p.split(':').collect();
    matches!(parts[..], [slice, _, name] if !p.starts_with('/') && !name.is_empty() && (slice.is_empty() || slice.ends_with(".slice")))
}

/// Reads a pid file runc wrote, off the runtime thread.
pub(super) async fn read_pid_file(path: PathBuf) -> Result<Pid> {
    super::off_thread("read pid file", move || read_pid(&path)).await
}

pub(super) fn read_pid(path: &Path) -> Result<Pid> {
    let s = std::fs::read_to_string(path).map_err(Error::io(format!("read {}", path.display())))?;
    s.trim()
        .parse()
        .ok()
        .and_then(Pid::new)
        .ok_or_else(|| Error::Runtime {
            op: "create",
            msg: format!("bad pid file {}: {s:?}", path.display()),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_cgroups_paths_are_recognised() {
        for p in [
            "kubepods-besteffort-pod1234.slice:cri-containerd:abc",
            "system.slice:docker:x",
            ":cri-containerd:abc",
        ] {
            assert!(is_systemd_cgroups_path(p), "{p}");
        }
        for p in [
            "",
            "/kubepods/besteffort/pod1/abc",
            "/ns/id",
            "kubepods/pod1",
            "a:b:c",
            "x.slice:prefix:",
            "/x.slice:p:n",
            "a.slice:b:c:d",
        ] {
            assert!(!is_systemd_cgroups_path(p), "{p}");
        }
    }

    #[test]
    fn spec_facts() {
        let dir = tempfile::tempdir().unwrap();
        let facts = |spec: &str| {
            std::fs::write(dir.path().join("config.json"), spec).unwrap();
            SpecFacts::read(dir.path()).map(|f| (f.private_pid_namespace, f.systemd_cgroups_path))
        };
        assert_eq!(facts(r#"{"linux":{"namespaces":[{"type":"mount"},{"type":"pid"}],"cgroupsPath":"/ns/id"}}"#).unwrap(), (true, false));
        assert_eq!(facts(r#"{"linux":{"namespaces":[{"type":"mount"},{"type":"pid","path":"/proc/1/ns/pid"}]}}"#).unwrap(), (false, false));
        assert_eq!(facts(r#"{"linux":{"namespaces":[{"type":"mount"}],"cgroupsPath":"k.slice:cri-containerd:id"}}"#).unwrap(), (false, true));
        assert!(matches!(facts("not json"), Err(Error::InvalidArgument(_))));
    }
}
