//! Invoking the OCI runtime (runc or a compatible binary).
//!
//! Every call goes through the [`Reaper`] (never `Child::wait`), has a deadline after which the
//! runtime process is killed, and on failure reports runc's own message from `log.json`. The
//! unavoidable classification of runc's error text also lives here and nowhere else.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

use crate::error::{Error, Result};
use crate::reaper::Reaper;

pub mod primer;

/// Default base of runc state dirs; the namespace is appended, as the Go shim does.
pub const DEFAULT_ROOT: &str = "/run/containerd/runc";
/// How long one runtime call may take before it is killed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The runc options containerd passes in `CreateTaskRequest.options`
/// (`containerd.runc.v1.Options`), in plain form. Persisted as the bundle's `options.json` so
/// the `delete` action can find the runc root after the server is gone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RuncOptions {
    pub binary_name: String,
    pub root: String,
    pub systemd_cgroup: bool,
    pub no_pivot_root: bool,
    pub no_new_keyring: bool,
    pub io_uid: u32,
    pub io_gid: u32,
}

impl RuncOptions {
    /// Reads runc's options from a runtime options file (the CRI's `ConfigPath`), written
    /// with the names of `containerd.runc.v1.Options` as containerd's config uses them:
    ///
    /// ```toml
    /// SystemdCgroup = true
    /// BinaryName = "/usr/local/bin/crun"
    /// ```
    ///
    /// A small TOML subset: `Key = value` lines (string, boolean or integer), `#` comments
    /// and `[table]` headers (ignored). Unknown keys are ignored, as containerd does.
    pub fn from_toml(text: &str) -> std::result::Result<RuncOptions, String> {
        let mut o = RuncOptions::default();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('[') {
                continue;
            }
            let at = |why: String| format!("line {}: {why}", n + 1);
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| at(format!("expected `Key = value`, got {line:?}")))?;
            let key = key.trim().trim_matches('"');
            let value = toml_value(value.trim()).map_err(at)?;
            let uint = |v: &TomlValue| match v {
                TomlValue::Int(i) => {
                    u32::try_from(*i).map_err(|_| at(format!("{key} = {i} is out of range")))
                }
                _ => Err(at(format!("{key} must be an integer"))),
            };
            let boolean = |v: &TomlValue| match v {
                TomlValue::Bool(b) => Ok(*b),
                _ => Err(at(format!("{key} must be true or false"))),
            };
            let string = |v: TomlValue| match v {
                TomlValue::Str(s) => Ok(s),
                _ => Err(at(format!("{key} must be a string"))),
            };
            match key {
                "BinaryName" => o.binary_name = string(value)?,
                "Root" => o.root = string(value)?,
                "SystemdCgroup" => o.systemd_cgroup = boolean(&value)?,
                "NoPivotRoot" => o.no_pivot_root = boolean(&value)?,
                "NoNewKeyring" => o.no_new_keyring = boolean(&value)?,
                "IoUid" => o.io_uid = uint(&value)?,
                "IoGid" => o.io_gid = uint(&value)?,
                _ => {}
            }
        }
        Ok(o)
    }
}

enum TomlValue {
    Str(String),
    Bool(bool),
    Int(i64),
}

/// One TOML scalar, with any trailing `# comment` dropped.
fn toml_value(v: &str) -> std::result::Result<TomlValue, String> {
    if let Some(rest) = v.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => return trailing_ok(chars.as_str()).map(|()| TomlValue::Str(out)),
                '\\' => match chars.next() {
                    Some('"') => out.push('"'),
                    Some('\\') => out.push('\\'),
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    other => {
                        return Err(format!(
                            "unsupported escape \\{}",
                            other.map(String::from).unwrap_or_default()
                        ))
                    }
                },
                c => out.push(c),
            }
        }
        return Err("unterminated string".into());
    }
    if let Some(rest) = v.strip_prefix('\'') {
        let (s, after) = rest.split_once('\'').ok_or("unterminated string")?;
        return trailing_ok(after).map(|()| TomlValue::Str(s.to_string()));
    }
    let bare = v.split('#').next().unwrap_or("").trim();
    match bare {
        "true" => Ok(TomlValue::Bool(true)),
        "false" => Ok(TomlValue::Bool(false)),
        _ => bare
            .replace('_', "")
            .parse()
            .map(TomlValue::Int)
            .map_err(|_| format!("unsupported value {bare:?}")),
    }
}

fn trailing_ok(after: &str) -> std::result::Result<(), String> {
    let t = after.trim();
    if t.is_empty() || t.starts_with('#') {
        Ok(())
    } else {
        Err(format!("unexpected {t:?} after the value"))
    }
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
#[derive(Debug, Clone)]
pub struct Runc {
    pub binary: String,
    /// `--root`: `<options.root or DEFAULT_ROOT>/<namespace>`.
    pub root: PathBuf,
    /// `--log`: the bundle's `log.json`.
    pub log: PathBuf,
    pub systemd_cgroup: bool,
    pub no_pivot_root: bool,
    pub no_new_keyring: bool,
    pub timeout: Duration,
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
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// runc, crun and youki write the container's own init to `--pid-file`; gVisor's runsc
    /// writes its sandbox, which must be signalled through `runsc kill`.
    pub fn pid_is_the_container_process(&self) -> bool {
        Path::new(&self.binary)
            .file_name()
            .is_none_or(|name| name != "runsc")
    }

    /// The argv after the binary name: global flags, then the subcommand's. Pure, for tests.
    pub fn argv(&self, sub: &[OsString]) -> Vec<OsString> {
        let mut v: Vec<OsString> = vec![
            "--root".into(),
            self.root.clone().into(),
            "--log".into(),
            self.log.clone().into(),
            "--log-format".into(),
            "json".into(),
        ];
        if self.systemd_cgroup {
            v.push("--systemd-cgroup".into());
        }
        v.extend(sub.iter().cloned());
        v
    }

    pub fn create_args(
        &self,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
        console: Option<&Path>,
    ) -> Vec<OsString> {
        let mut v: Vec<OsString> = vec![
            "create".into(),
            "--bundle".into(),
            bundle.into(),
            "--pid-file".into(),
            pid_file.into(),
        ];
        if let Some(c) = console {
            v.extend(["--console-socket".into(), c.into()]);
        }
        if self.no_pivot_root {
            v.push("--no-pivot".into());
        }
        if self.no_new_keyring {
            v.push("--no-new-keyring".into());
        }
        v.push(id.into());
        v
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

    pub fn exec_args(
        &self,
        id: &str,
        process: &Path,
        pid_file: &Path,
        console: Option<&Path>,
    ) -> Vec<OsString> {
        let mut v: Vec<OsString> = vec![
            "exec".into(),
            "--detach".into(),
            "--pid-file".into(),
            pid_file.into(),
            "--process".into(),
            process.into(),
        ];
        if let Some(c) = console {
            v.extend(["--console-socket".into(), c.into()]);
        }
        v.push(id.into());
        v
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

    pub fn checkpoint_args(&self, id: &str, o: &CheckpointOptions) -> Vec<OsString> {
        let mut v: Vec<OsString> = vec![
            "checkpoint".into(),
            "--image-path".into(),
            o.image_path.clone().into(),
            "--work-path".into(),
            o.work_path.clone().into(),
        ];
        let flags = [
            (!o.exit, "--leave-running"),
            (o.open_tcp, "--tcp-established"),
            (o.external_unix_sockets, "--ext-unix-sk"),
            (o.terminal, "--shell-job"),
            (o.file_locks, "--file-locks"),
        ];
        v.extend(
            flags
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, f)| OsString::from(f)),
        );
        if !o.parent_path.is_empty() {
            v.extend(["--parent-path".into(), o.parent_path.clone().into()]);
        }
        if !o.cgroups_mode.is_empty() {
            v.extend([
                "--manage-cgroups-mode".into(),
                o.cgroups_mode.clone().into(),
            ]);
        }
        for ns in &o.empty_namespaces {
            v.extend(["--empty-ns".into(), ns.into()]);
        }
        v.push(id.into());
        v
    }

    pub fn restore_args(
        &self,
        id: &str,
        bundle: &Path,
        image: &Path,
        work: &Path,
        pid_file: &Path,
    ) -> Vec<OsString> {
        let mut v: Vec<OsString> = vec![
            "restore".into(),
            "--detach".into(),
            "--no-subreaper".into(),
            "--image-path".into(),
            image.into(),
            "--work-path".into(),
            work.into(),
            "--pid-file".into(),
            pid_file.into(),
            "--bundle".into(),
            bundle.into(),
        ];
        if self.no_pivot_root {
            v.push("--no-pivot".into());
        }
        v.push(id.into());
        v
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

    /// `runc kill`; "already finished" style failures become NotFound.
    pub async fn kill(&self, reaper: &Reaper, id: &str, signal: u32, all: bool) -> Result<()> {
        let mut args: Vec<OsString> = vec!["kill".into()];
        if all {
            args.push("--all".into());
        }
        args.push(id.into());
        args.push(signal.to_string().into());
        self.call(reaper, "kill", &args, None)
            .await
            .map(drop)
            .map_err(classify_kill_error)
    }

    /// `runc delete`; a container runc no longer knows is not an error.
    pub async fn delete(&self, reaper: &Reaper, id: &str, force: bool) -> Result<()> {
        let mut args: Vec<OsString> = vec!["delete".into()];
        if force {
            args.push("--force".into());
        }
        args.push(id.into());
        match self.call(reaper, "delete", &args, None).await {
            Err(Error::Runtime { msg, .. }) if msg.contains("does not exist") => Ok(()),
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
            .map_err(classify_kill_error)?;
        let pids: Option<Vec<i32>> = serde_json::from_slice(&out).map_err(|e| Error::Runtime {
            op: "ps",
            msg: format!("unparsable output: {e}"),
        })?;
        Ok(pids.unwrap_or_default())
    }

    /// Runs one runtime command to completion and returns its stdout.
    ///
    /// With `stdio` the command's stdio is the container's (create, exec) and nothing is
    /// captured; otherwise stdout and stderr are captured for results and messages.
    async fn call(
        &self,
        reaper: &Reaper,
        op: &'static str,
        sub: &[OsString],
        stdio: Option<RuncStdio>,
    ) -> Result<Vec<u8>> {
        self.run(reaper, op, sub, stdio, None).await
    }

    async fn call_with_input(
        &self,
        reaper: &Reaper,
        op: &'static str,
        sub: &[OsString],
        input: &[u8],
    ) -> Result<Vec<u8>> {
        self.run(reaper, op, sub, None, Some(input.to_vec())).await
    }

    async fn run(
        &self,
        reaper: &Reaper,
        op: &'static str,
        sub: &[OsString],
        stdio: Option<RuncStdio>,
        input: Option<Vec<u8>>,
    ) -> Result<Vec<u8>> {
        let log_offset = std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        let mut cmd = Command::new(&self.binary);
        cmd.args(self.argv(sub)).env_remove("NOTIFY_SOCKET");
        let capture = stdio.is_none();
        match stdio {
            Some(s) => {
                cmd.stdin(s.stdin.map_or_else(Stdio::null, Stdio::from));
                cmd.stdout(s.stdout.map_or_else(Stdio::null, Stdio::from));
                cmd.stderr(s.stderr.map_or_else(Stdio::null, Stdio::from));
            }
            None => {
                cmd.stdin(if input.is_some() {
                    Stdio::piped()
                } else {
                    Stdio::null()
                })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            }
        }
        let mut spawned = reaper.spawn(&mut cmd).map_err(|e| Error::Runtime {
            op,
            msg: format!("cannot run {}: {e}", self.binary),
        })?;
        // Drop our copies of the container's stdio ends now that runc has them.
        drop(cmd);
        let pid = spawned.child.id() as i32;
        if let (Some(input), Some(stdin)) = (input, spawned.child.stdin.take()) {
            // Written by a task so a large input can never deadlock against our reads.
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                if let Ok(mut tx) = pipe::Sender::from_owned_fd(stdin.into()) {
                    let _ = tx.write_all(&input).await;
                }
            });
        }
        let (out, err) = if capture {
            (
                spawned
                    .child
                    .stdout
                    .take()
                    .map(|s| tokio::spawn(read_all(s.into()))),
                spawned
                    .child
                    .stderr
                    .take()
                    .map(|s| tokio::spawn(read_all(s.into()))),
            )
        } else {
            (None, None)
        };
        let exit = match tokio::time::timeout(self.timeout, spawned.exit).await {
            Ok(Ok(exit)) => exit,
            Ok(Err(_)) => {
                return Err(Error::Runtime {
                    op,
                    msg: "lost the runtime's exit status".into(),
                })
            }
            Err(_) => {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                return Err(Error::DeadlineExceeded(format!(
                    "{} {op} did not finish within {:?} and was killed",
                    self.binary, self.timeout
                )));
            }
        };
        let collect = |h: Option<tokio::task::JoinHandle<Vec<u8>>>| async move {
            match h {
                Some(h) => tokio::time::timeout(Duration::from_secs(1), h)
                    .await
                    .ok()
                    .and_then(|r| r.ok())
                    .unwrap_or_default(),
                None => Vec::new(),
            }
        };
        let stdout = collect(out).await;
        let stderr = collect(err).await;
        if exit.status == 0 {
            return Ok(stdout);
        }
        let msg = last_log_error(&self.log, log_offset)
            .or_else(|| non_empty(&stderr))
            .or_else(|| non_empty(&stdout))
            .unwrap_or_else(|| format!("exit status {}", exit.status));
        Err(Error::Runtime { op, msg })
    }
}

async fn read_all(fd: OwnedFd) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Ok(mut rx) = pipe::Receiver::from_owned_fd(fd) {
        let _ = rx.read_to_end(&mut buf).await;
    }
    buf
}

fn non_empty(b: &[u8]) -> Option<String> {
    let s = String::from_utf8_lossy(b).trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// The message of the last `"level":"error"` line runc appended to `log.json` after `offset`.
pub fn last_log_error(log: &Path, offset: u64) -> Option<String> {
    let data = std::fs::read(log).ok()?;
    let start = usize::try_from(offset)
        .ok()
        .filter(|&o| o <= data.len())
        .unwrap_or(0);
    parse_last_error(&data[start..])
}

fn parse_last_error(data: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Line {
        level: String,
        msg: String,
    }
    data.split(|&b| b == b'\n')
        .rev()
        .filter_map(|l| serde_json::from_slice::<Line>(l).ok())
        .find(|l| l.level == "error")
        .map(|l| l.msg)
}

/// Maps runc's kill/ps failures about a finished process or a missing container to NotFound.
fn classify_kill_error(e: Error) -> Error {
    match e {
        Error::Runtime { msg, .. }
            if [
                "process already finished",
                "container not running",
                "no such process",
                "not running",
            ]
            .iter()
            .any(|s| msg.to_lowercase().contains(s)) =>
        {
            Error::NotFound("process already finished".into())
        }
        Error::Runtime { msg, .. } if msg.contains("does not exist") => {
            Error::NotFound("no such container".into())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_file_uses_runc_option_names() {
        let text = r#"
# /etc/containerd/tether.toml
[options]
SystemdCgroup = true   # kubelet's systemd cgroup driver
BinaryName = "/usr/local/bin/crun"
Root = '/run/tether-runc'
NoPivotRoot = false
IoUid = 1_000
IoGid = 1000
Unknown = "ignored"
"#;
        let o = RuncOptions::from_toml(text).unwrap();
        assert_eq!(
            o,
            RuncOptions {
                binary_name: "/usr/local/bin/crun".into(),
                root: "/run/tether-runc".into(),
                systemd_cgroup: true,
                io_uid: 1000,
                io_gid: 1000,
                ..Default::default()
            }
        );
        assert_eq!(
            RuncOptions::from_toml("BinaryName = \"a\\\"b\"")
                .unwrap()
                .binary_name,
            "a\"b"
        );
        assert_eq!(RuncOptions::from_toml("").unwrap(), RuncOptions::default());
        for bad in [
            "SystemdCgroup = \"yes\"",
            "IoUid = -1",
            "IoUid = 99999999999",
            "BinaryName = \"open",
            "Root = 1",
            "just words",
            "BinaryName = \"a\" b",
        ] {
            let e = RuncOptions::from_toml(bad).unwrap_err();
            assert!(e.starts_with("line 1: "), "{bad:?}: {e}");
        }
    }

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

    #[test]
    fn create_args_carry_pid_file_and_flags() {
        let opts = RuncOptions {
            no_pivot_root: true,
            no_new_keyring: true,
            ..Default::default()
        };
        let r = Runc::new(&opts, "n", Path::new("/b"));
        let a = r.create_args("c1", Path::new("/b"), Path::new("/b/init.pid"), None);
        let a: Vec<_> = a.iter().map(|s| s.to_str().unwrap()).collect();
        assert_eq!(
            a,
            [
                "create",
                "--bundle",
                "/b",
                "--pid-file",
                "/b/init.pid",
                "--no-pivot",
                "--no-new-keyring",
                "c1"
            ]
        );
        let a = r.exec_args(
            "c1",
            Path::new("/b/x.json"),
            Path::new("/b/x.pid"),
            Some(Path::new("/tmp/p.sock")),
        );
        let a: Vec<_> = a.iter().map(|s| s.to_str().unwrap()).collect();
        assert_eq!(
            a,
            [
                "exec",
                "--detach",
                "--pid-file",
                "/b/x.pid",
                "--process",
                "/b/x.json",
                "--console-socket",
                "/tmp/p.sock",
                "c1"
            ]
        );
    }

    #[test]
    fn checkpoint_args_follow_options() {
        let r = Runc::new(&RuncOptions::default(), "n", Path::new("/b"));
        let o = CheckpointOptions {
            image_path: "/img".into(),
            work_path: "/w".into(),
            ..Default::default()
        };
        let a: Vec<_> = r
            .checkpoint_args("c", &o)
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect();
        assert_eq!(
            a,
            [
                "checkpoint",
                "--image-path",
                "/img",
                "--work-path",
                "/w",
                "--leave-running",
                "c"
            ]
        );
        let o = CheckpointOptions {
            image_path: "/img".into(),
            work_path: "/w".into(),
            parent_path: "/p".into(),
            exit: true,
            open_tcp: true,
            external_unix_sockets: true,
            terminal: true,
            file_locks: true,
            empty_namespaces: vec!["network".into()],
            cgroups_mode: "soft".into(),
        };
        let a: Vec<_> = r
            .restore_args(
                "c",
                Path::new("/b"),
                Path::new("/img"),
                Path::new("/w"),
                Path::new("/b/init.pid"),
            )
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect();
        assert_eq!(
            a,
            [
                "restore",
                "--detach",
                "--no-subreaper",
                "--image-path",
                "/img",
                "--work-path",
                "/w",
                "--pid-file",
                "/b/init.pid",
                "--bundle",
                "/b",
                "c"
            ]
        );
        let a: Vec<_> = r
            .checkpoint_args("c", &o)
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect();
        assert_eq!(
            a,
            [
                "checkpoint",
                "--image-path",
                "/img",
                "--work-path",
                "/w",
                "--tcp-established",
                "--ext-unix-sk",
                "--shell-job",
                "--file-locks",
                "--parent-path",
                "/p",
                "--manage-cgroups-mode",
                "soft",
                "--empty-ns",
                "network",
                "c"
            ]
        );
    }

    #[test]
    fn last_error_line_wins_and_offset_skips_old_errors() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log.json");
        let old = "{\"level\":\"error\",\"msg\":\"old failure\",\"time\":\"t\"}\n";
        let new = "{\"level\":\"info\",\"msg\":\"hi\"}\n{\"level\":\"error\",\"msg\":\"exec: \\\"nope\\\": executable file not found in $PATH\"}\n{\"level\":\"warning\",\"msg\":\"w\"}\n";
        std::fs::write(&log, format!("{old}{new}")).unwrap();
        assert_eq!(
            last_log_error(&log, 0).as_deref(),
            Some("exec: \"nope\": executable file not found in $PATH")
        );
        std::fs::write(&log, old).unwrap();
        assert_eq!(last_log_error(&log, old.len() as u64), None);
        assert_eq!(last_log_error(&dir.path().join("missing"), 0), None);
    }

    #[test]
    fn kill_errors_are_classified() {
        let rt = |m: &str| Error::Runtime {
            op: "kill",
            msg: m.into(),
        };
        assert!(matches!(
            classify_kill_error(rt("container not running")),
            Error::NotFound(_)
        ));
        assert!(matches!(
            classify_kill_error(rt("container \"x\" does not exist")),
            Error::NotFound(_)
        ));
        assert!(matches!(
            classify_kill_error(rt("permission denied")),
            Error::Runtime { .. }
        ));
    }
}
