//! Container stdio.
//!
//! The container never writes into containerd's FIFOs directly. tether gives runc pipes (or a
//! pty) and copies between them and the client's targets, so:
//! - output survives the client going away (a containerd restart): tether holds each output
//!   FIFO open read-write, so writes never fail with EPIPE and resume when a reader returns;
//! - a failed write never stalls the container: the copy keeps draining the pipe;
//! - stdin sees EOF only after the client closed its end *and* sent `CloseIO`, because tether
//!   holds an extra writer on the stdin FIFO until then (as the Go shim does).
//!
//! `binary://` targets are the exception: the logger reads the container's pipes itself (but
//! not a terminal's output, which tether copies into the logger's stdout pipe).

mod batch;
mod binary;
mod console;
mod copy;
mod handoff;
mod progress;
mod spool;
mod uri;

pub use binary::LoggerEnv;
pub use handoff::IoState;
pub use progress::Delivery;
pub use spool::SpoolConfig;
pub use uri::{parse_target, Target};

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::unistd::{fchown, pipe2, Gid, Uid};
use tokio::net::unix::pipe;
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

use crate::error::{Error, Result};
use crate::reaper::Reaper;
use crate::runtime::RuncStdio;
use binary::{Logger, Ready};
use console::{Console, ConsoleSocket, WeakConsole};
use copy::{Sink, Source};
use progress::{ExitSignal, Progress};

/// How long a client may read nothing of a process's output, after the process exited, before
/// tether stops waiting for it to be read: the output is given up on only once its reader took
/// nothing for this long, never while it is still reading (see `progress`). The Go shim's
/// `Delete` gives a reader the same 10 s, though in total.
pub const DRAIN_STALL: Duration = Duration::from_secs(10);

/// How long `Delete` waits for a `binary://` logger to exit on EOF before stopping it. The logger
/// reads the container's pipes itself, so tether cannot see whether it is still making progress.
const LOGGER_EXIT: Duration = Duration::from_secs(5);

/// Capacity of the container's stdout/stderr pipes (the kernel default is 64 KiB).
const OUTPUT_PIPE_SIZE: i32 = 256 * 1024;

/// stdio as the client named it in `Create` or `Exec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StdioConfig {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// What opening stdio needs besides the config.
pub struct IoContext<'a> {
    pub reaper: &'a Reaper,
    pub logger_env: LoggerEnv<'a>,
    /// uid/gid owning the pipes (user-namespaced containers); 0/0 leaves them as they are.
    pub owner: (u32, u32),
    /// The spool behind each output FIFO while its reader is away.
    pub spool: SpoolConfig,
}

/// The shim's side of one process's stdio.
#[derive(Default)]
pub struct ProcessIo {
    /// Extra writer on the stdin FIFO, dropped by `CloseIO`.
    stdin_keepalive: Option<pipe::Sender>,
    stdin_copy: Option<JoinHandle<()>>,
    /// stdout/stderr copies being set up; each ends when every writer of its source is gone
    /// and hands back its target.
    outputs: Vec<JoinHandle<Option<Sink>>>,
    /// The copies, for aborting them.
    output_aborts: Vec<AbortHandle>,
    /// Closes every output target once all copies ended (see `seal_outputs`).
    outputs_done: Option<JoinHandle<()>>,
    /// Becomes true once every output copy has ended and its target is closed.
    delivered: Option<watch::Receiver<bool>>,
    /// Bytes the copies moved, for telling a slow reader from a missing one.
    progress: Arc<Progress>,
    /// Set when the process's exit is reaped (a terminal reads on through EIO until then).
    exited: Arc<ExitSignal>,
    /// A terminal whose master runc has not sent yet, with the copies to start then (and the
    /// spool behind its output).
    pending_console: Option<(ConsoleSocket, Option<pipe::Receiver>, Sink, SpoolConfig)>,
    /// Weak: the copies own the pty master, so it closes when they end (see `hang_up`).
    console: Option<WeakConsole>,
    logger: Option<Logger>,
    /// Descriptor numbers of the copies, for an upgrade's export (`handoff.rs`).
    noted: handoff::Noted,
}

impl ProcessIo {
    /// Opens the client's targets and prepares what runc gets. For a terminal, call
    /// [`ProcessIo::attach_console`] once runc returned.
    pub async fn open(cfg: &StdioConfig, ctx: &IoContext<'_>) -> Result<(ProcessIo, RuncStdio)> {
        let mut io = ProcessIo::default();
        let mut runc = RuncStdio::default();
        let owner = (ctx.owner != (0, 0))
            .then_some((Uid::from_raw(ctx.owner.0), Gid::from_raw(ctx.owner.1)));
        let stdin_fifo = io.open_stdin(&cfg.stdin)?;
        let stdout = parse_target(&cfg.stdout)?;
        let stderr = parse_target(&cfg.stderr)?;

        if cfg.terminal {
            let sink = match &stdout {
                Target::None => None,
                Target::Binary(path, args) => {
                    Some(io.console_logger(ctx, path, args, Ready::Close).await?)
                }
                Target::BinaryV2(path, args) => {
                    Some(io.console_logger(ctx, path, args, Ready::Byte).await?)
                }
                t => Some(open_sink(t)?),
            };
            let socket = ConsoleSocket::new()?;
            runc.console_socket = Some(socket.path());
            // Output with nowhere to go is still read, so the pty never fills up.
            let sink = match sink {
                Some(sink) => sink,
                None => Sink::File(
                    std::fs::File::options()
                        .write(true)
                        .open("/dev/null")
                        .map_err(Error::io("open /dev/null for a terminal's unread output"))?,
                ),
            };
            // A client's FIFO gets the spool; a logger's pipe blocks, as without a terminal.
            let spool = match stdout {
                Target::Fifo(_) => ctx.spool.clone(),
                _ => SpoolConfig::disabled(),
            };
            io.pending_console = Some((socket, stdin_fifo, sink, spool));
            return Ok((io, runc));
        }

        if let Some(fifo) = stdin_fifo {
            let (r, w) = make_pipe(owner)?;
            let w = pipe::Sender::from_owned_fd(w).map_err(Error::io("stdin pipe"))?;
            io.noted.stdin = Some((fifo.as_raw_fd(), w.as_raw_fd()));
            // Dropping the pipe's write end at EOF is how EOF reaches the container.
            io.stdin_copy = Some(tokio::spawn(copy_then_close(
                Source::Pipe(fifo),
                Sink::Fifo(w),
            )));
            runc.stdin = Some(r);
        }

        if let Some((path, args, ready)) = stdout
            .clone()
            .into_binary()
            .or(stderr.clone().into_binary())
        {
            // One logger takes both streams (the Go shim uses the stdout URI for both).
            let (out_r, out_w) = make_pipe(owner)?;
            let (err_r, err_w) = make_pipe(owner)?;
            let env = &ctx.logger_env;
            io.logger =
                Some(Logger::start(ctx.reaper, &path, &args, ready, env, out_r, err_r).await?);
            runc.stdout = Some(out_w);
            runc.stderr = Some(err_w);
            return Ok((io, runc));
        }
        runc.stdout = io.output(&stdout, owner, ctx.spool.clone(), "stdout")?;
        runc.stderr = io.output(&stderr, owner, ctx.spool.clone(), "stderr")?;
        io.seal_outputs();
        Ok((io, runc))
    }

    /// Starts a `binary://` logger for a terminal's output, which tether copies to the logger's
    /// fd 3 (as containerd-shim-runc-v2 does). A terminal has no separate stderr: fd 4 is a pipe
    /// whose write end is closed at once, so the logger sees EOF there.
    async fn console_logger(
        &mut self,
        ctx: &IoContext<'_>,
        path: &std::path::Path,
        args: &[(String, String)],
        ready: Ready,
    ) -> Result<Sink> {
        let (out_r, out_w) = make_pipe(None)?;
        let (err_r, err_w) = make_pipe(None)?;
        drop(err_w);
        let env = &ctx.logger_env;
        self.logger = Some(Logger::start(ctx.reaper, path, args, ready, env, out_r, err_r).await?);
        Ok(Sink::Fifo(
            pipe::Sender::from_owned_fd(out_w).map_err(Error::io("logger pipe"))?,
        ))
    }

    /// Opens the stdin FIFO: reader first (never blocks), then our keep-alive writer (succeeds:
    /// a reader exists).
    fn open_stdin(&mut self, stdin: &str) -> Result<Option<pipe::Receiver>> {
        let path = match parse_target(stdin)? {
            Target::None => return Ok(None),
            Target::Fifo(path) => path,
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "stdin must be a fifo, got {stdin:?}"
                )))
            }
        };
        let fifo = pipe::OpenOptions::new()
            .open_receiver(&path)
            .map_err(Error::io(format!("open stdin fifo {}", path.display())))?;
        let keepalive = pipe::OpenOptions::new()
            .open_sender(&path)
            .map_err(Error::io(format!(
                "open stdin fifo {} for writing",
                path.display()
            )))?;
        self.stdin_keepalive = Some(keepalive);
        Ok(Some(fifo))
    }

    /// Starts the copy for one output stream and returns the pipe end for runc.
    fn output(
        &mut self,
        target: &Target,
        owner: Option<(Uid, Gid)>,
        spool: SpoolConfig,
        stream: &'static str,
    ) -> Result<Option<OwnedFd>> {
        if *target == Target::None {
            return Ok(None);
        }
        let sink = open_sink(target)?;
        let (r, w) = make_pipe(owner)?;
        // A larger pipe lets a chatty container run ahead of its reader; best effort.
        let _ = nix::fcntl::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&r),
            nix::fcntl::FcntlArg::F_SETPIPE_SZ(OUTPUT_PIPE_SIZE),
        );
        let r = pipe::Receiver::from_owned_fd(r).map_err(Error::io("output pipe"))?;
        if let Some((fd, kind)) = handoff::sink_fd(&sink) {
            self.noted.outputs.push((Some(r.as_raw_fd()), fd, kind));
        }
        let spooler = spool::Spooler::new(spool, stream);
        self.outputs.push(tokio::spawn(copy::pump_spooled(
            Source::Pipe(r),
            sink,
            spooler,
            self.progress.clone(),
        )));
        Ok(Some(w))
    }

    /// Closes the output targets together, once every copy has ended. A client sees EOF on
    /// stdout and stderr at the same moment: containerd's client (ctr) stops reading stdout
    /// soon after stderr ends, so closing stderr first lost the tail of stdout under load.
    fn seal_outputs(&mut self) {
        let copies = std::mem::take(&mut self.outputs);
        self.output_aborts = copies.iter().map(JoinHandle::abort_handle).collect();
        let (tx, rx) = watch::channel(false);
        self.delivered = Some(rx);
        let progress = self.progress.clone();
        self.outputs_done = Some(tokio::spawn(async move {
            let mut targets = Vec::with_capacity(copies.len());
            for copy in copies {
                targets.push(copy.await.ok().flatten());
            }
            for target in targets.iter().flatten() {
                target.read_by_client(DRAIN_STALL, &progress).await;
            }
            drop(targets);
            let _ = tx.send(true);
        }));
    }

    /// The delivery of this process's output to the client's targets; `None` when tether copies
    /// nothing (a `binary://` logger without a terminal reads the pipes itself).
    pub fn delivery(&self) -> Option<Delivery> {
        Some(Delivery {
            done: self.delivered.clone()?,
            progress: self.progress.clone(),
        })
    }

    /// The process's exit was reaped: a terminal's copy may now take EIO for the end.
    pub fn process_exited(&self) {
        self.exited.set();
    }

    /// For a terminal: takes the pty master runc sent and starts copying.
    pub async fn attach_console(&mut self) -> Result<()> {
        let Some((socket, stdin, sink, spool)) = self.pending_console.take() else {
            return Ok(());
        };
        let master = socket.receive().await?;
        self.noted.console = Some(master.as_raw_fd());
        self.noted.console_stdin = stdin.as_ref().map(AsRawFd::as_raw_fd);
        if let Some((fd, kind)) = handoff::sink_fd(&sink) {
            self.noted.outputs.push((None, fd, kind));
        }
        let console = Console::new(master, self.exited.clone())?;
        self.outputs.push(tokio::spawn(copy::pump_spooled(
            Source::Console(console.clone()),
            sink,
            spool::Spooler::new(spool, "terminal"),
            self.progress.clone(),
        )));
        self.seal_outputs();
        self.console = Some(console.downgrade());
        if let Some(fifo) = stdin {
            self.stdin_copy = Some(tokio::spawn(stdin_then_hang_up(fifo, console)));
        }
        Ok(())
    }

    /// `ResizePty`; a process without a terminal ignores it, as with the Go shim.
    pub fn resize(&self, width: u32, height: u32) -> Result<()> {
        let (w, h) = (u16::try_from(width), u16::try_from(height));
        let (Ok(w), Ok(h)) = (w, h) else {
            return Err(Error::InvalidArgument(format!(
                "window size {width}x{height} is out of range"
            )));
        };
        self.console
            .as_ref()
            .and_then(WeakConsole::upgrade)
            .map_or(Ok(()), |c| c.resize(w, h))
    }

    /// `CloseIO{stdin}`: drop our writer so the client's close becomes EOF in the container.
    pub fn close_stdin(&mut self) {
        self.stdin_keepalive = None;
    }

    /// Waits until the output is delivered (copies finished and read, logger exited), for as
    /// long as it keeps moving: false once nothing moved for `stall` (logged at WARN), or the
    /// logger did not exit within [`LOGGER_EXIT`].
    pub async fn drain(&mut self, stall: Duration) -> bool {
        if let Some(mut delivery) = self.delivery() {
            if !delivery.wait(stall).await {
                tracing::warn!(
                    moved = self.progress.moved(),
                    "the client read none of the output for {stall:?}; closing it"
                );
                return false;
            }
        }
        match self.logger.as_mut() {
            Some(l) => l.wait(LOGGER_EXIT).await,
            None => true,
        }
    }

    /// Stops every copy and closes every descriptor.
    pub fn close(&mut self) {
        self.stdin_keepalive = None;
        self.pending_console = None;
        self.console = None;
        if let Some(mut l) = self.logger.take() {
            l.terminate();
        }
        for h in self.output_aborts.drain(..) {
            h.abort();
        }
        for h in self.outputs.drain(..) {
            h.abort();
        }
        for h in self
            .stdin_copy
            .take()
            .into_iter()
            .chain(self.outputs_done.take())
        {
            h.abort();
        }
    }
}

impl Drop for ProcessIo {
    fn drop(&mut self) {
        self.close();
    }
}

/// A logger's path, arguments (query pairs) and readiness rule.
type LoggerCmd = (PathBuf, Vec<(String, String)>, Ready);

impl Target {
    /// A logger target's path, arguments and readiness rule.
    fn into_binary(self) -> Option<LoggerCmd> {
        match self {
            Target::Binary(path, args) => Some((path, args, Ready::Close)),
            Target::BinaryV2(path, args) => Some((path, args, Ready::Byte)),
            _ => None,
        }
    }
}

async fn copy_then_close(src: Source, sink: Sink) {
    drop(copy::pump(src, sink, Default::default()).await);
}

/// A terminal's stdin copy: at EOF (the client closed stdin and sent `CloseIO`) the terminal
/// hangs up, as with containerd-shim-runc-v2, so the process gets SIGHUP instead of waiting on
/// a terminal nobody can type into.
async fn stdin_then_hang_up(fifo: pipe::Receiver, console: Console) {
    drop(
        copy::pump(
            Source::Pipe(fifo),
            Sink::Console(console.clone()),
            Default::default(),
        )
        .await,
    );
    console.hang_up();
}

fn open_sink(target: &Target) -> Result<Sink> {
    match target {
        Target::Fifo(path) => Ok(Sink::Fifo(
            pipe::OpenOptions::new()
                .read_write(true)
                .open_sender(path)
                .map_err(Error::io(format!("open output fifo {}", path.display())))?,
        )),
        Target::File(path) => copy::open_log_file(path),
        Target::None | Target::Binary(..) | Target::BinaryV2(..) => {
            unreachable!("callers handle None and Binary")
        }
    }
}

fn make_pipe(owner: Option<(Uid, Gid)>) -> Result<(OwnedFd, OwnedFd)> {
    let (r, w) = pipe2(OFlag::O_CLOEXEC).map_err(Error::os("pipe"))?;
    if let Some((uid, gid)) = owner {
        for fd in [&r, &w] {
            fchown(std::os::fd::AsRawFd::as_raw_fd(fd), Some(uid), Some(gid))
                .map_err(Error::os("chown stdio pipe"))?;
        }
    }
    Ok((r, w))
}
