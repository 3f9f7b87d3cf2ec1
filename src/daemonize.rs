//! The `start` action's mechanics: where the server listens, binding that socket, and launching
//! the long-lived server detached from containerd.
//!
//! `start` binds the socket itself and hands the listening descriptor to the server as fd 3, so
//! containerd can connect the moment `start` prints the address: there is no readiness race.

use std::fs;
use std::io::{ErrorKind, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use crate::cli::Args;
use crate::error::{Error, Result};

/// Where shim sockets live, as with the Go shim: a filesystem socket in a root-only directory
/// (never an abstract socket, which any process in the host network namespace could reach:
/// CVE-2020-15257).
pub const SOCKET_DIR: &str = "/run/containerd/s";

/// Annotations that put containers into one shim, first match wins (the Go shim's list).
pub const GROUP_ANNOTATIONS: [&str; 2] = [
    "io.containerd.runc.v2.group",
    "io.kubernetes.cri.sandbox-id",
];

/// `<dir>/<hex sha256 of "<address>/<namespace>/<group>">`, the Go shim's derivation, so the
/// same group always maps to the same socket.
pub fn socket_path(dir: &Path, address: &str, namespace: &str, group: &str) -> PathBuf {
    let digest = Sha256::digest(format!("{address}/{namespace}/{group}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    dir.join(hex)
}

/// The group a task belongs to: the first grouping annotation in the bundle's spec, else its id.
pub fn grouping_key(bundle: &Path, id: &str) -> String {
    let spec = fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|d| serde_json::from_slice::<serde_json::Value>(&d).ok());
    let annotations = spec.as_ref().and_then(|s| s.get("annotations"));
    GROUP_ANNOTATIONS
        .iter()
        .find_map(|k| {
            annotations
                .and_then(|a| a.get(k))
                .and_then(|v| v.as_str())
                .filter(|v| !v.is_empty())
        })
        .unwrap_or(id)
        .to_string()
}

/// Runs the `start` action in the bundle directory `bundle` and returns what to print.
pub fn start(args: &Args, bundle: &Path) -> Result<Vec<u8>> {
    // containerd writes runtime options, bootstrap parameters or nothing to stdin; read it all
    // (bounded) so it never blocks on a full pipe. Runtime options also arrive with Create,
    // which is where we use them, except `ShimCgroup`, which only `start` can apply.
    let mut stdin = Vec::new();
    let _ = std::io::stdin().take(10 << 20).read_to_end(&mut stdin);
    // containerd 2.3 deprecated the flags: the bootstrap parameters name the task when sent.
    let params = crate::bootstrap::resolve(args, &stdin)?;

    crate::process::validate_id("container", &params.id)?;
    let group = grouping_key(bundle, &params.id);
    let dir = Path::new(params.socket_dir.as_deref().unwrap_or(SOCKET_DIR));
    if params.socket_dir.is_some() {
        // The bundle's `s` link names a custom socket dir. containerd never reads it: the Go
        // shim (2.3+) writes it for its own server's socket cleanup; kept for tools that
        // follow the Go shim's bundle layout.
        let _ = std::os::unix::fs::symlink(dir, bundle.join("s"));
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(Error::io(format!("create {}", dir.display())))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(Error::io(format!("chmod {}", dir.display())))?;
    let path = socket_path(dir, &params.address, &params.namespace, &group);
    let address = format!("unix://{}", path.display());

    let listener = match UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) if e.kind() == ErrorKind::AddrInUse => {
            if UnixStream::connect(&path).is_ok() {
                // A live server already serves this group: share it.
                write_atomic(&bundle.join("address"), address.as_bytes())?;
                return Ok(crate::bootstrap::announce(&address, params.bootstrapped));
            }
            // Left over from a server that died: replace it.
            fs::remove_file(&path)
                .map_err(Error::io(format!("remove stale socket {}", path.display())))?;
            UnixListener::bind(&path).map_err(Error::io(format!("bind {}", path.display())))?
        }
        Err(e) => return Err(Error::io(format!("bind {}", path.display()))(e)),
    };
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
        .map_err(Error::io("chmod socket"))?;

    let spawned = spawn_server(&params, bundle, &path, &listener);
    let pid = match spawned {
        Ok(pid) => pid,
        Err(e) => {
            let _ = fs::remove_file(&path);
            return Err(e);
        }
    };
    if let Err(e) = join_shim_cgroup(pid, &stdin, params.bootstrapped) {
        // As the Go shim: a server that cannot be put where it was asked is not left running.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = fs::remove_file(&path);
        return Err(e);
    }
    adjust_oom_score(pid);
    write_atomic(&bundle.join("address"), address.as_bytes())?;
    write_atomic(&bundle.join("shim.pid"), pid.to_string().as_bytes())?;
    Ok(crate::bootstrap::announce(&address, params.bootstrapped))
}

/// Re-executes this binary as the server: new session, stdio on /dev/null (containerd reads
/// `start`'s output until EOF, so the server must not hold it), listener on fd 3.
fn spawn_server(
    params: &crate::bootstrap::StartParams,
    bundle: &Path,
    socket: &Path,
    listener: &UnixListener,
) -> Result<u32> {
    let exe = std::env::current_exe().map_err(Error::io("find own executable"))?;
    let mut cmd = Command::new(exe);
    cmd.args([
        "-namespace",
        &params.namespace,
        "-id",
        &params.id,
        "-address",
        &params.address,
    ])
    .arg("-socket")
    .arg(socket)
    .current_dir(bundle)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    if !params.publish_binary.is_empty() {
        cmd.args(["-publish-binary", &params.publish_binary]);
    }
    if params.debug {
        cmd.arg("-debug");
    }
    if let Some(ttrpc) = &params.ttrpc_address {
        cmd.env("TTRPC_ADDRESS", ttrpc);
    }
    crate::sys::detach_with_listener(&mut cmd, listener.as_raw_fd());
    let child = cmd.spawn().map_err(Error::io("start shim server"))?;
    // Never waited for: we exit now and the server is re-parented away from containerd.
    Ok(child.id())
}

/// Moves the new server into the runtime options' `ShimCgroup`, if they name one. Only a new
/// server: one that already serves the group stays where it is, as with the Go shim.
fn join_shim_cgroup(pid: u32, stdin: &[u8], bootstrapped: bool) -> Result<()> {
    let Some(any) = crate::bootstrap::runtime_options(stdin, bootstrapped) else {
        return Ok(());
    };
    let options = crate::service::decode_options(&Some(any).into())?;
    if options.shim_cgroup.is_empty() {
        return Ok(());
    }
    crate::cgroups::join::join(pid, &options.shim_cgroup).map(drop)
}

/// The server should be killed before containerd under memory pressure: containerd's score + 1
/// (we inherited containerd's). Best effort: raising a score needs no privilege, but a locked
/// down host may refuse.
fn adjust_oom_score(pid: u32) {
    let own = fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .unwrap_or(0);
    let _ = fs::write(
        format!("/proc/{pid}/oom_score_adj"),
        (own + 1).min(1000).to_string(),
    );
}

/// Writes via a temporary file and rename so a reader never sees half a file.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, data)
        .and_then(|()| fs::rename(&tmp, path))
        .map_err(Error::io(format!("write {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_path_is_sha256_of_address_namespace_group() {
        let p = socket_path(
            Path::new("/run/containerd/s"),
            "/run/containerd/containerd.sock",
            "default",
            "c1",
        );
        let name = p.file_name().unwrap().to_str().unwrap();
        assert_eq!(name.len(), 64);
        assert!(name.chars().all(|c| c.is_ascii_hexdigit()));
        let expect: String = Sha256::digest(b"/run/containerd/containerd.sock/default/c1")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(name, expect);
        assert_ne!(
            p,
            socket_path(
                Path::new("/run/containerd/s"),
                "/run/containerd/containerd.sock",
                "other",
                "c1"
            )
        );
        // Well under the 108-byte sun_path limit.
        assert!(p.as_os_str().len() < 100);
    }

    #[test]
    fn grouping_prefers_annotations_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let spec = |a: &str| {
            fs::write(
                dir.path().join("config.json"),
                format!(r#"{{"annotations":{{{a}}}}}"#),
            )
            .unwrap()
        };
        assert_eq!(grouping_key(dir.path(), "c1"), "c1");
        spec(r#""io.kubernetes.cri.sandbox-id":"pod1""#);
        assert_eq!(grouping_key(dir.path(), "c1"), "pod1");
        spec(r#""io.kubernetes.cri.sandbox-id":"pod1","io.containerd.runc.v2.group":"g""#);
        assert_eq!(grouping_key(dir.path(), "c1"), "g");
        spec(r#""io.containerd.runc.v2.group":"""#);
        assert_eq!(grouping_key(dir.path(), "c1"), "c1");
    }
}
