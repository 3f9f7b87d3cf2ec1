//! Container stdio.
//!
//! The container never writes into containerd's FIFOs directly. tether gives runc pipes and
//! copies between the pipes and the client's targets, so:
//! - output survives the client going away (a containerd restart): tether holds each output
//!   FIFO open read-write, so writes never fail with EPIPE and resume when a reader returns;
//! - a failed write never stalls the container: the copy keeps draining the pipe;
//! - stdin sees EOF only after the client closed its end *and* sent `CloseIO`, because tether
//!   holds an extra writer on the stdin FIFO until then (as the Go shim does).

mod copy;
mod uri;

pub use uri::{Target, parse_target};

use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::unistd::{fchown, pipe2, Gid, Uid};
use tokio::net::unix::pipe;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::runtime::RuncStdio;

/// stdio as the client named it in `Create` or `Exec`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StdioConfig {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// The shim's side of one process's stdio: the copy tasks and the stdin keep-alive writer.
#[derive(Default)]
pub struct ProcessIo {
    /// Extra writer on the stdin FIFO, dropped by `CloseIO`.
    stdin_keepalive: Option<pipe::Sender>,
    stdin_copy: Option<JoinHandle<()>>,
    /// stdout/stderr copies; each ends when every writer of its pipe is gone.
    output_copies: Vec<JoinHandle<()>>,
}

impl ProcessIo {
    /// Opens the client's targets, makes the pipes and starts the copies. Returns the ends to
    /// hand to runc.
    pub fn open(cfg: &StdioConfig, io_uid: u32, io_gid: u32) -> Result<(ProcessIo, RuncStdio)> {
        if cfg.terminal {
            return Err(Error::Unimplemented("terminal (pty) stdio is not supported yet".into()));
        }
        let mut io = ProcessIo::default();
        let mut runc = RuncStdio::default();
        let owner = (io_uid != 0 || io_gid != 0).then_some((Uid::from_raw(io_uid), Gid::from_raw(io_gid)));

        if !cfg.stdin.is_empty() {
            let Target::Fifo(path) = parse_target(&cfg.stdin)? else {
                return Err(Error::InvalidArgument(format!("stdin must be a fifo, got {:?}", cfg.stdin)));
            };
            // Reader first (never blocks), then our keep-alive writer (succeeds: a reader exists).
            let fifo = pipe::OpenOptions::new().open_receiver(&path).map_err(Error::io(format!("open stdin fifo {}", path.display())))?;
            let keepalive = pipe::OpenOptions::new().open_sender(&path).map_err(Error::io(format!("open stdin fifo {} for writing", path.display())))?;
            let (r, w) = make_pipe(owner)?;
            let w = pipe::Sender::from_owned_fd(w).map_err(Error::io("stdin pipe"))?;
            io.stdin_keepalive = Some(keepalive);
            io.stdin_copy = Some(tokio::spawn(copy::pump(fifo, copy::Sink::Fifo(w))));
            runc.stdin = Some(r);
        }

        let stdout = parse_target(&cfg.stdout)?;
        let stderr = parse_target(&cfg.stderr)?;
        if matches!(stdout, Target::Binary(..)) || matches!(stderr, Target::Binary(..)) {
            return Err(Error::Unimplemented("binary:// log URIs are not supported yet".into()));
        }
        runc.stdout = io.output(&stdout, owner)?;
        runc.stderr = io.output(&stderr, owner)?;
        Ok((io, runc))
    }

    /// Starts the copy for one output stream and returns the pipe end for runc.
    fn output(&mut self, target: &Target, owner: Option<(Uid, Gid)>) -> Result<Option<OwnedFd>> {
        let sink = match target {
            Target::None => return Ok(None),
            Target::Fifo(path) => copy::Sink::Fifo(
                pipe::OpenOptions::new()
                    .read_write(true)
                    .open_sender(path)
                    .map_err(Error::io(format!("open output fifo {}", path.display())))?,
            ),
            Target::File(path) => copy::open_log_file(path)?,
            Target::Binary(..) => unreachable!("refused in open"),
        };
        let (r, w) = make_pipe(owner)?;
        let r = pipe::Receiver::from_owned_fd(r).map_err(Error::io("output pipe"))?;
        self.output_copies.push(tokio::spawn(copy::pump(r, sink)));
        Ok(Some(w))
    }

    /// `CloseIO{stdin}`: drop our writer so the client's close becomes EOF in the container.
    pub fn close_stdin(&mut self) {
        self.stdin_keepalive = None;
    }

    /// Waits until the output copies finished (every writer gone), at most `limit`.
    /// Returns false on timeout.
    pub async fn drain(&mut self, limit: Duration) -> bool {
        let all = async {
            for h in &mut self.output_copies {
                let _ = h.await;
            }
        };
        tokio::time::timeout(limit, all).await.is_ok()
    }

    /// Stops every copy and closes every descriptor.
    pub fn close(&mut self) {
        self.stdin_keepalive = None;
        for h in self.output_copies.drain(..).chain(self.stdin_copy.take()) {
            h.abort();
        }
    }
}

impl Drop for ProcessIo {
    fn drop(&mut self) {
        self.close();
    }
}

fn make_pipe(owner: Option<(Uid, Gid)>) -> Result<(OwnedFd, OwnedFd)> {
    let (r, w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::io("pipe")(e.into()))?;
    if let Some((uid, gid)) = owner {
        for fd in [&r, &w] {
            fchown(std::os::fd::AsRawFd::as_raw_fd(fd), Some(uid), Some(gid)).map_err(|e| Error::io("chown stdio pipe")(e.into()))?;
        }
    }
    Ok((r, w))
}

/// Whether `path` names a FIFO we can open; used by tests and diagnostics.
pub fn is_fifo(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).map(|m| m.file_type().is_fifo()).unwrap_or(false)
}
