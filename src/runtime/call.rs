//! Running one runtime call: spawned through the reaper, bounded by its deadline (the runtime
//! is killed after it), its failure reported with runc's own `log.json` message; and the one
//! place runc's error text is classified.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Deserialize;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

use crate::error::{Error, Result};
use crate::reaper::Reaper;

use super::{Runc, RuncStdio};

impl Runc {
    /// Runs one runtime command to completion and returns its stdout.
    ///
    /// With `stdio` the command's stdio is the container's (create, exec) and nothing is
    /// captured; otherwise stdout and stderr are captured for results and messages.
    pub(super) async fn call(
        &self,
        reaper: &Reaper,
        op: &'static str,
        sub: &[OsString],
        stdio: Option<RuncStdio>,
    ) -> Result<Vec<u8>> {
        self.run(reaper, op, sub, stdio, None).await
    }

    pub(super) async fn call_with_input(
        &self,
        reaper: &Reaper,
        op: &'static str,
        sub: &[OsString],
        input: &[u8],
    ) -> Result<Vec<u8>> {
        self.run(reaper, op, sub, None, Some(input.to_vec())).await
    }

    pub(super) async fn run(
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
        // The trace context of the request this call serves, and never one inherited from
        // our own environment.
        cmd.env_remove("TRACEPARENT").env_remove("TRACESTATE");
        if let Some(trace) = crate::trace_context::current() {
            cmd.envs(trace.env());
        }
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
fn last_log_error(log: &Path, offset: u64) -> Option<String> {
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

/// Whether the runtime's message says it does not know container `id` (state under `root`).
/// runc says "container does not exist". crun names the state it could not open: "error
/// opening file `<root>/<id>/status`: No such file or directory" (kill, ps), "cannot open
/// directory '<root>/<id>': No such file or directory" (delete). Matching the container's own
/// state path keeps any other missing file (in the bundle, the rootfs) a real error.
pub(super) fn says_no_such_container(msg: &str, root: &Path, id: &str) -> bool {
    if msg.contains("does not exist") {
        return true;
    }
    let dir = root.join(id);
    let dir = dir.to_string_lossy();
    msg.contains("No such file or directory")
        && (msg.contains(&format!("`{dir}/status`")) || msg.contains(&format!("'{dir}'")))
}

/// Maps the runtime's kill/ps failures about a finished process or a missing container to
/// NotFound.
pub(super) fn classify_kill_error(e: Error, root: &Path, id: &str) -> Error {
    match e {
        Error::Runtime { msg, .. } if says_no_such_container(&msg, root, id) => {
            Error::NotFound("no such container".into())
        }
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
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let root = Path::new("/run/containerd/runc/ns");
        let classify = |m: &str| classify_kill_error(rt(m), root, "c1");
        assert!(matches!(
            classify("container not running"),
            Error::NotFound(_)
        ));
        assert!(matches!(
            classify("container \"x\" does not exist"),
            Error::NotFound(_)
        ));
        // crun 1.8.1's words for a container it does not know.
        assert!(matches!(
            classify(
                "error opening file `/run/containerd/runc/ns/c1/status`: No such file or directory"
            ),
            Error::NotFound(m) if m == "no such container"
        ));
        assert!(matches!(
            classify("permission denied"),
            Error::Runtime { .. }
        ));
    }

    #[test]
    fn only_the_containers_own_missing_state_means_no_such_container() {
        let root = Path::new("/run/containerd/runc/ns");
        for msg in [
            "container does not exist",
            "error opening file `/run/containerd/runc/ns/c1/status`: No such file or directory",
            "cannot open directory '/run/containerd/runc/ns/c1': No such file or directory",
        ] {
            assert!(says_no_such_container(msg, root, "c1"), "{msg}");
        }
        for msg in [
            // Another container's state, or some other missing file, is a real error.
            "error opening file `/run/containerd/runc/ns/c10/status`: No such file or directory",
            "cannot open directory '/run/containerd/runc/ns': No such file or directory",
            "open `/bundle/config.json`: No such file or directory",
            "error opening file `/run/containerd/runc/ns/c1/status`: Permission denied",
        ] {
            assert!(!says_no_such_container(msg, root, "c1"), "{msg}");
        }
    }
}
