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
    /// Waits until a read would not block (data, EOF or an error is there).
    async fn ready(&self) -> std::io::Result<()> {
        match self {
            Source::Pipe(p) => p.readable().await,
            Source::Console(c) => c.readable().await,
        }
    }

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

impl Sink {
    /// Waits (at most `limit`) until the client has read everything written to a FIFO target;
    /// other targets are done as soon as written.
    pub async fn read_by_client(&self, limit: std::time::Duration) {
        let Sink::Fifo(fifo) = self else { return };
        let deadline = tokio::time::Instant::now() + limit;
        while crate::sys::unread_bytes(fifo).map_or(false, |n| n > 0) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
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

/// Copies `src` to `sink` until EOF on `src` and hands the sink back (`None` if it failed):
/// the caller decides when the target sees EOF.
///
/// A write error drops the sink but the loop keeps reading: the writer side of `src` (the
/// container) must never block forever because a reader went away.
pub async fn pump(mut src: Source, sink: Sink) -> Option<Sink> {
    let mut sink = Some(sink);
    // No buffer until the stream carries something: a quiet container (most are) costs its
    // shim no heap for its three streams.
    if src.ready().await.is_err() {
        return sink;
    }
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
    sink
}
