//! The copy loop between a stdio source and a client target.

use std::io::Write;
use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;

use super::console::Console;
use crate::error::{Error, Result};

/// Where copied bytes come from.
pub enum Source {
    /// A pipe or FIFO.
    Pipe(pipe::Receiver),
    /// A pty master.
    Console(Console),
}

impl Source {
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Source::Pipe(p) => p.read(buf).await,
            Source::Console(c) => c.read(buf).await,
        }
    }
}

/// Where copied bytes go.
pub enum Sink {
    /// A FIFO or pipe, written asynchronously.
    Fifo(pipe::Sender),
    /// A regular file opened for append; page-cache writes, short enough to do inline.
    File(std::fs::File),
    /// A pty master (the process's terminal input).
    Console(Console),
}

impl Sink {
    async fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Fifo(s) => s.write_all(buf).await,
            Sink::File(f) => f.write_all(buf),
            Sink::Console(c) => c.write_all(buf).await,
        }
    }
}

/// Opens (creating parent directories) a log file for appending.
pub fn open_log_file(path: &Path) -> Result<Sink> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(Error::io(format!("create {}", dir.display())))?;
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(Error::io(format!("open log file {}", path.display())))?;
    Ok(Sink::File(f))
}

/// Largest move per splice(2) call: a whole pipe's worth.
const SPLICE_CHUNK: usize = 1 << 20;

/// Moves a pipe's bytes into another pipe or FIFO inside the kernel with splice(2): no copy
/// through user space and no buffer of ours. Ends at EOF on `src`, dropping `dst`.
///
/// With both ends non-blocking, EAGAIN means "`src` empty" or "`dst` full"; poll(2) tells
/// which, inside tokio's `try_io`, so only the side that is really not ready waits for its
/// next readiness edge. If `dst` fails, the rest of `src` is read and discarded: the container
/// must never block because its reader went away.
pub async fn splice_pump(src: pipe::Receiver, dst: pipe::Sender) {
    use nix::errno::Errno;
    use nix::fcntl::{splice, SpliceFFlags};
    let flags = SpliceFFlags::SPLICE_F_NONBLOCK | SpliceFFlags::SPLICE_F_MOVE;
    loop {
        if src.readable().await.is_err() || dst.writable().await.is_err() {
            break;
        }
        let moved = src.try_io(|| match splice(&src, None, &dst, None, SPLICE_CHUNK, flags) {
            Err(Errno::EAGAIN) if !poll_ready(&src, nix::poll::PollFlags::POLLIN) => Err(std::io::ErrorKind::WouldBlock.into()),
            other => Ok(other),
        });
        match moved {
            // `src` is empty: its readiness was cleared, wait for more.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return,
            Ok(Ok(0)) => return,
            Ok(Ok(_)) | Ok(Err(Errno::EINTR)) => continue,
            Ok(Err(Errno::EAGAIN)) => {
                // `src` has data, so `dst` is full: wait for the reader to make room.
                let cleared = dst.try_io(|| if poll_ready(&dst, nix::poll::PollFlags::POLLOUT) { Ok(()) } else { Err(std::io::ErrorKind::WouldBlock.into()) });
                if cleared.is_ok() {
                    // Both sides claim ready yet the kernel refused: back off briefly.
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "stdio splice failed; discarding further output of this stream");
                break;
            }
        }
    }
    // Keep draining without a destination.
    drop(dst);
    discard(src).await;
}

async fn discard(mut src: pipe::Receiver) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = src.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

/// Whether `fd` is ready for `what` right now (poll with a zero timeout).
fn poll_ready(fd: &impl std::os::fd::AsFd, what: nix::poll::PollFlags) -> bool {
    let mut fds = [nix::poll::PollFd::new(fd.as_fd(), what)];
    matches!(nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO), Ok(n) if n > 0)
        && fds[0].revents().is_some_and(|r| r.intersects(what | nix::poll::PollFlags::POLLHUP | nix::poll::PollFlags::POLLERR))
}

/// Copies `src` to `sink` until EOF on `src`, then drops `sink` (closing it, which is how EOF
/// reaches a container's stdin).
///
/// A write error drops the sink but the loop keeps reading: the writer side of `src` (the
/// container) must never block forever because a reader went away.
pub async fn pump(mut src: Source, sink: Sink) {
    let mut sink = Some(sink);
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match src.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!(error = %e, "stdio read failed");
                break;
            }
        };
        if let Some(s) = sink.as_mut() {
            if let Err(e) = s.write_all(&buf[..n]).await {
                tracing::warn!(error = %e, "stdio write failed; discarding further output of this stream");
                sink = None;
            }
        }
    }
}
