//! The descriptors a process's stdio owns, out to an upgrade's next image and back in.
//!
//! The copy tasks own their descriptors, so [`ProcessIo`] notes each one's number when it
//! starts a copy. At export (the server is single-threaded and every copy is parked at an
//! `.await`) each copy still running has its descriptors duplicated (close-on-exec until the
//! exec itself); the next image adopts the duplicates and starts the same copies again. A
//! spliced pipe-to-FIFO copy holds no bytes of its own between two `splice` calls, so nothing
//! is lost or repeated; a buffered copy (a terminal's output, a file target) can hold one
//! chunk while its target is full, and that chunk is lost (see docs/upgrade.md, limits).

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use serde::{Deserialize, Serialize};
use tokio::net::unix::pipe;

use super::binary::Logger;
use super::console::Console;
use super::copy::{self, Sink, Source};
use super::{copy_then_close, stdin_then_hang_up, ProcessIo};
use crate::error::{Error, Result};
use crate::reaper::Reaper;

/// Descriptor numbers of the copies a [`ProcessIo`] started (owned by the tasks, not here).
#[derive(Default)]
pub(super) struct Noted {
    /// stdin FIFO (reader) and the container's stdin pipe (writer), without a terminal.
    pub stdin: Option<(RawFd, RawFd)>,
    /// Each output copy in the order of `ProcessIo::outputs`: its source pipe (None: the pty
    /// master) and its sink.
    pub outputs: Vec<(Option<RawFd>, RawFd, SinkKind)>,
    /// The pty master.
    pub console: Option<RawFd>,
    /// The stdin FIFO copied into the pty.
    pub console_stdin: Option<RawFd>,
}

/// What kind of target a sink descriptor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SinkKind {
    Fifo,
    File,
}

/// A process's stdio as the next image receives it: duplicates, by number.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct IoState {
    stdin_keepalive: Option<RawFd>,
    stdin: Option<(RawFd, RawFd)>,
    outputs: Vec<(Option<RawFd>, RawFd, SinkKind)>,
    console: Option<RawFd>,
    console_stdin: Option<RawFd>,
    logger: Option<i32>,
    /// Output targets close together once the copies end (false: a logger reads the pipes).
    sealed: bool,
}

impl IoState {
    /// Every descriptor named, for the exec to keep (and an undone upgrade to close).
    pub fn fds(&self) -> Vec<RawFd> {
        let mut fds: Vec<RawFd> = self.stdin_keepalive.into_iter().collect();
        fds.extend(self.stdin.iter().flat_map(|&(a, b)| [a, b]));
        for &(src, sink, _) in &self.outputs {
            fds.extend(src);
            fds.push(sink);
        }
        fds.extend(self.console);
        fds.extend(self.console_stdin);
        fds
    }
}

pub(super) fn sink_fd(sink: &Sink) -> Option<(RawFd, SinkKind)> {
    match sink {
        Sink::Fifo(s) => Some((s.as_raw_fd(), SinkKind::Fifo)),
        Sink::File(f) => Some((f.as_raw_fd(), SinkKind::File)),
        Sink::Console(_) => None,
    }
}

fn dup(fd: RawFd) -> Result<RawFd> {
    crate::sys::dup_cloexec(fd).map_err(Error::io("duplicate a stdio descriptor"))
}

impl ProcessIo {
    /// Duplicates what the running copies own, for the next image. Call it with the server
    /// quiesced (no request in flight) and nothing awaited since the decision to hand off.
    pub fn export(&self) -> Result<IoState> {
        if self.pending_console.is_some() {
            return Err(Error::FailedPrecondition(
                "a terminal is still waiting for its pty".into(),
            ));
        }
        let mut out = IoState::default();
        let mut made = Vec::new();
        let result = (|| {
            let mut d = |fd: RawFd| -> Result<RawFd> {
                let n = dup(fd)?;
                made.push(n);
                Ok(n)
            };
            if let Some(k) = &self.stdin_keepalive {
                out.stdin_keepalive = Some(d(k.as_raw_fd())?);
            }
            let stdin_running = self.stdin_copy.as_ref().is_some_and(|h| !h.is_finished());
            if stdin_running {
                if let Some((r, w)) = self.noted.stdin {
                    out.stdin = Some((d(r)?, d(w)?));
                }
                if let Some(r) = self.noted.console_stdin {
                    out.console_stdin = Some(d(r)?);
                }
            }
            let running = |i: usize| self.output_aborts.get(i).is_some_and(|h| !h.is_finished());
            for (i, &(src, sink, kind)) in self.noted.outputs.iter().enumerate() {
                if running(i) {
                    out.outputs
                        .push((src.map(&mut d).transpose()?, d(sink)?, kind));
                }
            }
            let console_open = self.console.as_ref().and_then(|c| c.upgrade()).is_some();
            if let (Some(m), true) = (self.noted.console, console_open) {
                out.console = Some(d(m)?);
            }
            out.sealed = self.delivered.is_some();
            out.logger = self.logger.as_ref().and_then(Logger::running_pid);
            Ok(())
        })();
        match result {
            Ok(()) => Ok(out),
            Err(e) => {
                made.into_iter().for_each(crate::sys::close_raw);
                Err(e)
            }
        }
    }

    /// Starts again, in this image, the copies [`ProcessIo::export`] described.
    pub fn import(
        state: IoState,
        reaper: &Reaper,
        spool: &super::SpoolConfig,
    ) -> Result<ProcessIo> {
        let adopt = |fd: RawFd| -> Result<OwnedFd> {
            crate::sys::adopt_fd(fd).map_err(Error::io(format!("inherited stdio fd {fd}")))
        };
        let receiver = |fd: RawFd| -> Result<pipe::Receiver> {
            pipe::Receiver::from_owned_fd(adopt(fd)?).map_err(Error::io("inherited pipe"))
        };
        let sender = |fd: RawFd| -> Result<pipe::Sender> {
            pipe::Sender::from_owned_fd(adopt(fd)?).map_err(Error::io("inherited pipe"))
        };
        let mut io = ProcessIo::default();
        if let Some(k) = state.stdin_keepalive {
            io.stdin_keepalive = Some(sender(k)?);
        }
        let console = state
            .console
            .map(|m| Console::new(adopt(m)?, io.exited.clone()))
            .transpose()?;
        for (src, sink, kind) in state.outputs {
            let sink_fd = sink;
            let sink = match kind {
                SinkKind::Fifo => Sink::Fifo(sender(sink)?),
                SinkKind::File => Sink::File(std::fs::File::from(adopt(sink)?)),
            };
            let source = match (src, &console) {
                (Some(fd), _) => Source::Pipe(receiver(fd)?),
                (None, Some(c)) => Source::Console(c.clone()),
                (None, None) => {
                    return Err(Error::InvalidArgument(format!(
                        "output to fd {sink_fd} copies from a terminal that was not handed over"
                    )))
                }
            };
            io.noted.outputs.push((src, sink_fd, kind));
            // A terminal copied into a logger's pipe is not spooled (see `ProcessIo::open`).
            let spool = match (src, state.logger) {
                (None, Some(_)) => super::SpoolConfig::disabled(),
                _ => spool.clone(),
            };
            let spooler = super::spool::Spooler::new(spool, "output");
            io.outputs.push(tokio::spawn(copy::pump_spooled(
                source,
                sink,
                spooler,
                io.progress.clone(),
            )));
        }
        if let Some((r, w)) = state.stdin {
            io.noted.stdin = Some((r, w));
            io.stdin_copy = Some(tokio::spawn(copy_then_close(
                Source::Pipe(receiver(r)?),
                Sink::Fifo(sender(w)?),
            )));
        }
        if let Some(c) = &console {
            io.noted.console = state.console;
            io.console = Some(c.downgrade());
            if let Some(r) = state.console_stdin {
                io.noted.console_stdin = Some(r);
                io.stdin_copy = Some(tokio::spawn(stdin_then_hang_up(receiver(r)?, c.clone())));
            }
        }
        if state.sealed {
            io.seal_outputs();
        }
        if let Some(pid) = state.logger {
            io.logger = Some(Logger::adopt(reaper, pid));
        }
        Ok(io)
    }
}
