//! `binary://` log URIs: a logger program containerd's users provide. It gets the container's
//! stdout on fd 3, stderr on fd 4, and a pipe on fd 5 that it closes once ready (containerd's
//! documented protocol); the container writes straight into its pipes, tether copies nothing
//! (except a terminal's output, see `ProcessIo::console_logger`).
//!
//! `binary-v2://` (containerd 2.3+) is the same, except that the logger is ready only once it
//! wrote a byte to fd 5: closing fd 5 without writing (or dying first) fails the start, where
//! `binary://` takes that EOF for ready.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::reaper::{Exit, Reaper};

/// How long a logger may take to report ready.
const READY_LIMIT: Duration = Duration::from_secs(10);

/// How long a logger may take to exit after SIGTERM before it is killed. Shorter than the Go
/// shim's 12 s: SIGTERM is already the second request (Delete first gave it `DRAIN_LIMIT`, 5 s,
/// to exit on EOF), a flush should take far less, and the server's exit waits for it.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// How a logger says it is ready, on fd 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// `binary://`: by closing it (EOF, written bytes or not).
    Close,
    /// `binary-v2://`: by writing a byte to it; EOF before one fails the start.
    Byte,
}

/// A running logger process.
pub struct Logger {
    pid: i32,
    exit: Option<oneshot::Receiver<Exit>>,
    reaper: Reaper,
}

/// Who the logger logs for.
pub struct LoggerEnv<'a> {
    pub container_id: &'a str,
    pub namespace: &'a str,
}

impl Logger {
    /// Starts `path` with `args` (the URI's query pairs, each as two words) reading `stdout` and
    /// `stderr`, and waits until it is ready.
    pub async fn start(
        reaper: &Reaper,
        path: &Path,
        args: &[(String, String)],
        ready_rule: Ready,
        env: &LoggerEnv<'_>,
        stdout: OwnedFd,
        stderr: OwnedFd,
    ) -> Result<Logger> {
        let (ready_r, ready_w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(Error::os("pipe"))?;
        let mut cmd = Command::new(path);
        for (k, v) in args {
            cmd.arg(k).arg(v);
        }
        cmd.env("CONTAINER_ID", env.container_id)
            .env("CONTAINER_NAMESPACE", env.namespace)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        crate::sys::map_fds(
            &mut cmd,
            vec![
                (stdout.as_raw_fd(), 3),
                (stderr.as_raw_fd(), 4),
                (ready_w.as_raw_fd(), 5),
            ],
        );
        let spawned = reaper.spawn(&mut cmd).map_err(|e| {
            Error::InvalidArgument(format!("cannot start logger {}: {e}", path.display()))
        })?;
        // The logger has its copies; ours would keep its pipes from ever reaching EOF.
        drop((stdout, stderr, ready_w, cmd));
        let logger = Logger {
            pid: spawned.child.id() as i32,
            exit: Some(spawned.exit),
            reaper: reaper.clone(),
        };
        let mut ready =
            pipe::Receiver::from_owned_fd(ready_r).map_err(Error::io("logger ready pipe"))?;
        // On any error `logger` is dropped: the process is stopped and reaped (`Drop`), and
        // its pipes are closed with it.
        let waited = match ready_rule {
            Ready::Close => {
                let mut sink = Vec::new();
                tokio::time::timeout(READY_LIMIT, ready.read_to_end(&mut sink))
                    .await
                    .map(|r| r.map(|_| true))
            }
            Ready::Byte => {
                let mut byte = [0u8; 1];
                tokio::time::timeout(READY_LIMIT, ready.read(&mut byte))
                    .await
                    .map(|r| r.map(|n| n == 1))
            }
        };
        match waited {
            Ok(Ok(true)) => Ok(logger),
            Ok(Ok(false)) => Err(Error::FailedPrecondition(format!(
                "logger {} closed its ready fd (5) without writing a byte: it exited or \
                 does not speak binary-v2",
                path.display()
            ))),
            Ok(Err(e)) => Err(Error::io(format!(
                "read ready fd of logger {}",
                path.display()
            ))(e)),
            Err(_) => Err(Error::DeadlineExceeded(format!(
                "logger {} did not get ready within {READY_LIMIT:?}",
                path.display()
            ))),
        }
    }

    /// Waits (at most `limit`) for the logger to finish writing and exit. True if it did.
    pub async fn wait(&mut self, limit: Duration) -> bool {
        let Some(exit) = self.exit.as_mut() else {
            return true;
        };
        let done = tokio::time::timeout(limit, exit).await.is_ok();
        if done {
            self.exit = None;
        }
        done
    }

    /// Stops a logger that is still running: SIGTERM, then SIGKILL after `STOP_GRACE`, in the
    /// background (see [`Reaper::stop`]).
    pub fn terminate(&mut self) {
        if let Some(exit) = self.exit.take() {
            self.reaper.stop(self.pid, exit, STOP_GRACE);
        }
    }
}

impl Logger {
    /// The logger's pid while it runs (an upgrade carries it to the next image).
    pub fn running_pid(&self) -> Option<i32> {
        self.exit.is_some().then_some(self.pid)
    }

    /// A logger started by the previous image of this process (still our child).
    pub fn adopt(reaper: &Reaper, pid: i32) -> Logger {
        Logger {
            pid,
            exit: Some(reaper.adopt(pid)),
            reaper: reaper.clone(),
        }
    }
}

impl Drop for Logger {
    fn drop(&mut self) {
        self.terminate();
    }
}
