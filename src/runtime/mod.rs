//! Invoking the OCI runtime (runc or a compatible binary).
//!
//! Every call goes through the [`Reaper`] (never `Child::wait`), has a deadline after which the
//! runtime process is killed, and on failure reports runc's own message from `log.json`. The
//! unavoidable classification of runc's error text also lives here and nowhere else.
//!
//! - `mod.rs`: [`Runc`], one container's runtime settings, and its verbs (create, start, ...);
//! - `options`: runc's options as containerd sends them, and the options file (a TOML subset);
//! - `argv`: the command lines of the verbs;
//! - `call`: running one call under its deadline, and reading and classifying runc's errors.

mod argv;
mod call;
mod options;
pub mod primer;

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::reaper::Reaper;

use call::{classify_kill_error, says_no_such_container};
pub use options::{RuncOptions, SpoolWhenFull};

/// Default base of runc state dirs; the namespace is appended, as the Go shim does.
pub const DEFAULT_ROOT: &str = "/run/containerd/runc";
/// How long one runtime call may take before it is killed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long `runc kill` may take by default before the shim kills the container itself (see
/// `supervisor/teardown.rs`). A kill is little work for the runtime; waiting longer only keeps a
/// pod Terminating.
pub const DEFAULT_KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// Environment knob for the kill deadline, in milliseconds (as `TETHER_RUNTIME_TIMEOUT_MS` is
/// for every call); never longer than the runtime deadline.
pub const KILL_TIMEOUT_ENV: &str = "TETHER_KILL_TIMEOUT_MS";

/// The kill deadline from [`KILL_TIMEOUT_ENV`] (the environment containerd gave the shim).
fn kill_timeout() -> Duration {
    std::env::var(KILL_TIMEOUT_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&ms| ms > 0)
        .map_or(DEFAULT_KILL_TIMEOUT, Duration::from_millis)
}

/// stdio handed to a runc call whose children inherit it (create, exec).
#[derive(Default)]
pub struct RuncStdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    /// `--console-socket`: the process gets a pty whose master runc sends here.
    pub console_socket: Option<PathBuf>,
}

/// What `runc checkpoint` is asked to do (containerd.runc.v1.CheckpointOptions in plain form).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckpointOptions {
    pub image_path: PathBuf,
    pub work_path: PathBuf,
    pub parent_path: String,
    /// Stop the container after the dump (`exit` in containerd's options).
    pub exit: bool,
    pub open_tcp: bool,
    pub external_unix_sockets: bool,
    pub terminal: bool,
    pub file_locks: bool,
    pub empty_namespaces: Vec<String>,
    pub cgroups_mode: String,
}

/// Checkpoint and restore move whole process trees through CRIU: allow far more time.
pub const CRIU_TIMEOUT: Duration = Duration::from_secs(600);

/// A runc bound to one container's settings.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Runc {
    pub binary: String,
    /// `--root`: `<options.root or DEFAULT_ROOT>/<namespace>`.
    pub root: PathBuf,
    /// `--log`: the bundle's `log.json`.
    pub log: PathBuf,
    pub systemd_cgroup: bool,
    pub no_pivot_root: bool,
    pub no_new_keyring: bool,
    /// `--work-path` of a restore (`CriuWorkPath`); `None`: the caller's default in the bundle.
    pub criu_work_path: Option<PathBuf>,
    pub timeout: Duration,
    /// Deadline of `kill` (capped by `timeout`).
    pub kill_timeout: Duration,
}

impl Runc {
    pub fn new(opts: &RuncOptions, namespace: &str, bundle: &Path) -> Runc {
        let binary = if opts.binary_name.is_empty() {
            "runc".to_string()
        } else {
            opts.binary_name.clone()
        };
        let base = if opts.root.is_empty() {
            DEFAULT_ROOT
        } else {
            &opts.root
        };
        Runc {
            binary,
            root: Path::new(base).join(namespace),
            log: bundle.join("log.json"),
            systemd_cgroup: opts.systemd_cgroup,
            no_pivot_root: opts.no_pivot_root,
            no_new_keyring: opts.no_new_keyring,
            criu_work_path: (!opts.criu_work_path.is_empty())
                .then(|| PathBuf::from(&opts.criu_work_path)),
            timeout: DEFAULT_TIMEOUT,
            kill_timeout: kill_timeout(),
        }
    }

    /// runc, crun and youki write the container's own init to `--pid-file`; gVisor's runsc
    /// writes its sandbox, which must be signalled through `runsc kill`.
    pub fn pid_is_the_container_process(&self) -> bool {
        Path::new(&self.binary)
            .file_name()
            .is_none_or(|name| name != "runsc")
    }

    /// `runc create`: the container's init exists afterwards, paused before the user program.
    pub async fn create(
        &self,
        reaper: &Reaper,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
        stdio: RuncStdio,
    ) -> Result<()> {
        let args = self.create_args(id, bundle, pid_file, stdio.console_socket.as_deref());
        primer::prime_attach_lock();
        self.call(reaper, "create", &args, Some(stdio))
            .await
            .map(drop)
    }

    /// `runc exec --detach`: runs the process described by the `process` JSON file.
    pub async fn exec(
        &self,
        reaper: &Reaper,
        id: &str,
        process: &Path,
        pid_file: &Path,
        stdio: RuncStdio,
    ) -> Result<()> {
        let args = self.exec_args(id, process, pid_file, stdio.console_socket.as_deref());
        primer::prime_attach_lock();
        self.call(reaper, "exec", &args, Some(stdio))
            .await
            .map(drop)
    }

    pub async fn start(&self, reaper: &Reaper, id: &str) -> Result<()> {
        self.call(reaper, "start", &["start".into(), id.into()], None)
            .await
            .map(drop)
    }

    pub async fn pause(&self, reaper: &Reaper, id: &str) -> Result<()> {
        self.call(reaper, "pause", &["pause".into(), id.into()], None)
            .await
            .map(drop)
    }

    pub async fn resume(&self, reaper: &Reaper, id: &str) -> Result<()> {
        self.call(reaper, "resume", &["resume".into(), id.into()], None)
            .await
            .map(drop)
    }

    /// `runc update --resources -` with the runtime-spec `LinuxResources` JSON on stdin.
    pub async fn update(&self, reaper: &Reaper, id: &str, resources: &[u8]) -> Result<()> {
        let args: Vec<OsString> =
            vec!["update".into(), "--resources".into(), "-".into(), id.into()];
        self.call_with_input(reaper, "update", &args, resources)
            .await
            .map(drop)
    }

    /// `runc restore`: the container's processes come back from a checkpoint image, detached,
    /// re-parented to us (`--no-subreaper`).
    #[allow(clippy::too_many_arguments)]
    pub async fn restore(
        &self,
        reaper: &Reaper,
        id: &str,
        bundle: &Path,
        image: &Path,
        work: &Path,
        pid_file: &Path,
        stdio: RuncStdio,
    ) -> Result<()> {
        let runc = Runc {
            timeout: CRIU_TIMEOUT,
            ..self.clone()
        };
        runc.call(
            reaper,
            "restore",
            &self.restore_args(id, bundle, image, work, pid_file),
            Some(stdio),
        )
        .await
        .map(drop)
    }

    /// `runc checkpoint` through CRIU.
    pub async fn checkpoint(&self, reaper: &Reaper, id: &str, o: &CheckpointOptions) -> Result<()> {
        let runc = Runc {
            timeout: CRIU_TIMEOUT,
            ..self.clone()
        };
        runc.call(reaper, "checkpoint", &self.checkpoint_args(id, o), None)
            .await
            .map(drop)
    }

    /// `runc kill` under the kill deadline; "already finished" style failures become
    /// NotFound.
    pub async fn kill(&self, reaper: &Reaper, id: &str, signal: u32, all: bool) -> Result<()> {
        let runc = Runc {
            timeout: self.timeout.min(self.kill_timeout),
            ..self.clone()
        };
        let mut args: Vec<OsString> = vec!["kill".into()];
        if all {
            args.push("--all".into());
        }
        args.push(id.into());
        args.push(signal.to_string().into());
        runc.call(reaper, "kill", &args, None)
            .await
            .map(drop)
            .map_err(|e| classify_kill_error(e, &self.root, id))
    }

    /// `runc delete`; a container the runtime no longer knows is not an error (runc's and
    /// crun's words for it: [`says_no_such_container`]).
    pub async fn delete(&self, reaper: &Reaper, id: &str, force: bool) -> Result<()> {
        let mut args: Vec<OsString> = vec!["delete".into()];
        if force {
            args.push("--force".into());
        }
        args.push(id.into());
        match self.call(reaper, "delete", &args, None).await {
            Err(Error::Runtime { msg, .. }) if says_no_such_container(&msg, &self.root, id) => {
                Ok(())
            }
            other => other.map(drop),
        }
    }

    /// `runc ps`: pids of every process in the container.
    pub async fn ps(&self, reaper: &Reaper, id: &str) -> Result<Vec<i32>> {
        let out = self
            .call(
                reaper,
                "ps",
                &["ps".into(), "--format".into(), "json".into(), id.into()],
                None,
            )
            .await
            .map_err(|e| classify_kill_error(e, &self.root, id))?;
        let pids: Option<Vec<i32>> = serde_json::from_slice(&out).map_err(|e| Error::Runtime {
            op: "ps",
            msg: format!("unparsable output: {e}"),
        })?;
        Ok(pids.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_defaults_to_containerd_layout_and_honours_options() {
        let r = Runc::new(&RuncOptions::default(), "ns1", Path::new("/b"));
        assert_eq!(r.binary, "runc");
        assert_eq!(r.root, Path::new("/run/containerd/runc/ns1"));
        assert_eq!(r.log, Path::new("/b/log.json"));
        let opts = RuncOptions {
            binary_name: "crun".into(),
            root: "/r".into(),
            systemd_cgroup: true,
            ..Default::default()
        };
        let r = Runc::new(&opts, "ns1", Path::new("/b"));
        assert_eq!(r.binary, "crun");
        assert!(r.pid_is_the_container_process());
        assert_eq!(r.root, Path::new("/r/ns1"));
        let gvisor = Runc::new(
            &RuncOptions {
                binary_name: "/usr/local/bin/runsc".into(),
                ..Default::default()
            },
            "ns1",
            Path::new("/b"),
        );
        assert!(
            !gvisor.pid_is_the_container_process(),
            "runsc's pid file names its sandbox"
        );
        let argv = r.argv(&["start".into(), "c".into()]);
        let argv: Vec<_> = argv.iter().map(|s| s.to_str().unwrap()).collect();
        assert_eq!(
            argv,
            [
                "--root",
                "/r/ns1",
                "--log",
                "/b/log.json",
                "--log-format",
                "json",
                "--systemd-cgroup",
                "start",
                "c"
            ]
        );
    }
}
