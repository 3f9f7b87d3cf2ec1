//! Terminals: runc creates the pty inside the container and sends its master to us over a
//! unix socket (`--console-socket`) with SCM_RIGHTS. We copy the client's stdin into the master
//! and the master's output to the client's stdout target, and apply `ResizePty` to it.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::UnixListener;
use tokio::sync::Notify;

use super::progress::ExitSignal;
use crate::error::{Error, Result};

/// How long runc may take to hand over the pty master after create/exec returned.
const RECEIVE_LIMIT: Duration = Duration::from_secs(10);

/// A listening console socket in its own private directory, removed on drop.
pub struct ConsoleSocket {
    listener: UnixListener,
    dir: PathBuf,
}

impl ConsoleSocket {
    /// Creates the socket under the system temp dir: bundle paths can exceed the 108-byte limit
    /// of a socket path.
    pub fn new() -> Result<ConsoleSocket> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tether-pty-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&dir)
                .map_err(Error::io(format!("create {}", dir.display())))?;
        }
        let path = dir.join("pty.sock");
        let listener = UnixListener::bind(&path)
            .map_err(Error::io(format!("bind console socket {}", path.display())))?;
        Ok(ConsoleSocket { listener, dir })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join("pty.sock")
    }

    /// Accepts runc's connection and takes the pty master it sends.
    pub async fn receive(&self) -> Result<OwnedFd> {
        let receive = async {
            let (stream, _) = self.listener.accept().await?;
            loop {
                stream.readable().await?;
                match stream.try_io(Interest::READABLE, || {
                    crate::sys::recv_fd(stream.as_raw_fd())
                }) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    other => return other,
                }
            }
        };
        match tokio::time::timeout(RECEIVE_LIMIT, receive).await {
            Ok(r) => r.map_err(Error::io("receive pty master from the console socket")),
            Err(_) => Err(Error::DeadlineExceeded(
                "the runtime did not send the pty master in time".into(),
            )),
        }
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How often a terminal whose slave side is closed is read again while its process's exit is
/// not in yet (normally the exit follows the EIO at once).
const EIO_POLL: Duration = Duration::from_millis(50);

/// How much output a hung-up console still hands to the output copy: what the pty buffered
/// when stdin ended, not whatever a busy process keeps writing until its SIGHUP lands.
const HANGUP_DRAIN: usize = 64 * 1024;

/// The pty master of one process, shared by the copy tasks. Closed when the last clone goes;
/// `ResizePty` holds a [`WeakConsole`] so it does not keep the terminal alive.
#[derive(Clone)]
pub struct Console {
    shared: Arc<Shared>,
}

struct Shared {
    master: AsyncFd<OwnedFd>,
    /// Set by [`Console::hang_up`]; then reads stop waiting and end after `HANGUP_DRAIN` bytes.
    hung_up: AtomicBool,
    drain_left: AtomicUsize,
    /// Wakes the (single) output copy waiting for output when the console hangs up.
    hangup: Notify,
    /// The process's exit was reaped: only from then on is EIO the end of its output.
    exited: Arc<ExitSignal>,
    /// The master answered EIO: no slave was open then (see [`Console::read`]).
    saw_eio: AtomicBool,
}

/// A `ResizePty` handle that lets the master close once the copies are done with it.
pub struct WeakConsole(Weak<Shared>);

impl WeakConsole {
    pub fn upgrade(&self) -> Option<Console> {
        self.0.upgrade().map(|shared| Console { shared })
    }
}

impl Console {
    pub fn new(master: OwnedFd, exited: Arc<ExitSignal>) -> Result<Console> {
        let flags = fcntl(master.as_raw_fd(), FcntlArg::F_GETFL).map_err(Error::os("pty flags"))?;
        fcntl(
            master.as_raw_fd(),
            FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
        )
        .map_err(Error::os("pty flags"))?;
        let master = crate::sys::async_fd(master).map_err(Error::io("register pty"))?;
        let shared = Shared {
            master,
            hung_up: AtomicBool::new(false),
            drain_left: AtomicUsize::new(HANGUP_DRAIN),
            hangup: Notify::new(),
            exited,
            saw_eio: AtomicBool::new(false),
        };
        Ok(Console {
            shared: Arc::new(shared),
        })
    }

    pub fn downgrade(&self) -> WeakConsole {
        WeakConsole(Arc::downgrade(&self.shared))
    }

    pub fn resize(&self, width: u16, height: u16) -> Result<()> {
        crate::sys::set_window_size(self.shared.master.get_ref(), width, height)
            .map_err(Error::io("resize pty"))
    }

    /// Stdin ended: the output copy takes what is buffered and lets go of the master, so the
    /// master closes and the process gets SIGHUP (as containerd-shim-runc-v2 closes its
    /// console when the stdin copy ends). Without this a shell whose client went away would
    /// wait on its terminal forever.
    pub fn hang_up(&self) {
        self.shared.hung_up.store(true, Ordering::Release);
        // One waiter at most (the output copy); the permit is kept if it is not waiting yet.
        self.shared.hangup.notify_one();
    }

    fn is_hung_up(&self) -> bool {
        self.shared.hung_up.load(Ordering::Acquire)
    }

    /// Waits until the master is readable (output, or the hang-up when the process is gone)
    /// or the console is hung up.
    pub async fn readable(&self) -> io::Result<()> {
        if self.is_hung_up() {
            return Ok(());
        }
        tokio::select! {
            r = self.shared.master.readable() => r.map(drop),
            () = self.shared.hangup.notified() => Ok(()),
        }
    }

    /// Reads output; `Ok(0)` once every slave descriptor is closed (the kernel reports EIO)
    /// and the process's exit was reaped, or once a hung-up console has nothing (or
    /// `HANGUP_DRAIN` bytes) more to give.
    ///
    /// EIO before the exit was reaped is not the end: it says that no slave descriptor is open
    /// at this moment, and output can still be on its way through the tty layer, so the copy
    /// reads again once the exit is in (and every [`EIO_POLL`] until then; the master's
    /// readiness is no use any more: once hung up it stays readable). The read after the exit
    /// takes what arrived meanwhile: the kernel flushes its pending input before it answers EIO.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let read = |fd: &OwnedFd, buf: &mut [u8]| {
            nix::unistd::read(fd.as_raw_fd(), buf).map_err(io::Error::from)
        };
        let is_eio = |e: &io::Error| e.raw_os_error() == Some(libc::EIO);
        loop {
            if self.is_hung_up() {
                let left = self.shared.drain_left.load(Ordering::Relaxed);
                let want = buf.len().min(left);
                return match read(self.shared.master.get_ref(), &mut buf[..want]) {
                    Ok(n) => {
                        self.shared.drain_left.store(left - n, Ordering::Relaxed);
                        Ok(n)
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock || is_eio(&e) => Ok(0),
                    Err(e) => Err(e),
                };
            }
            if self.shared.saw_eio.load(Ordering::Relaxed) {
                // Checked before the read: an exit reaped after it gets one more read.
                let exited = self.shared.exited.is_set();
                match read(self.shared.master.get_ref(), buf) {
                    Ok(n) if n > 0 => return Ok(n),
                    Err(e) if !(is_eio(&e) || e.kind() == io::ErrorKind::WouldBlock) => {
                        return Err(e)
                    }
                    _ if exited => return Ok(0),
                    _ => {}
                }
                tokio::select! {
                    () = self.shared.exited.wait() => {}
                    () = self.shared.hangup.notified() => {}
                    () = tokio::time::sleep(EIO_POLL) => {}
                }
                continue;
            }
            let mut guard = tokio::select! {
                g = self.shared.master.readable() => g?,
                () = self.shared.hangup.notified() => continue,
            };
            match guard.try_io(|fd| read(fd.get_ref(), buf)) {
                Ok(Err(e)) if is_eio(&e) => self.shared.saw_eio.store(true, Ordering::Relaxed),
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    pub async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let mut guard = self.shared.master.writable().await?;
            match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), buf).map_err(io::Error::from))
            {
                Ok(Ok(n)) => buf = &buf[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }
}
