//! The copy loop between a stdio source and a client target.

use std::io::Write;
use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;

use super::batch::Batcher;
use super::console::Console;
use super::progress::Progress;
use super::spool::{SpoolConfig, Spooled, Spooler, STALL};
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

    pub(super) async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
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
    /// Waits until the client has read everything written to a FIFO target, for as long as it
    /// keeps reading: gives up once it took nothing for `stall`. Each byte it takes counts as
    /// `progress`. Other targets are done as soon as written.
    pub async fn read_by_client(&self, stall: std::time::Duration, progress: &Progress) {
        use std::time::Duration;
        let Sink::Fifo(fifo) = self else { return };
        let mut last = usize::MAX;
        let mut last_move = tokio::time::Instant::now();
        // Short polls while the reader keeps up, longer ones while it is away, so a client that
        // went away costs few wake-ups.
        let mut poll = Duration::from_millis(5);
        loop {
            let Ok(unread) = crate::sys::unread_bytes(fifo) else {
                return;
            };
            if unread == 0 {
                return;
            }
            if unread < last {
                if last != usize::MAX {
                    progress.add(last - unread);
                }
                last_move = tokio::time::Instant::now();
                poll = Duration::from_millis(5);
            } else if last_move.elapsed() >= stall {
                return;
            } else {
                poll = (poll * 2).min(Duration::from_millis(200));
            }
            last = unread;
            tokio::time::sleep(poll).await;
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
/// Pipe to FIFO (the common case: a container's output to containerd) is spliced in the
/// kernel; other pairs are copied through a buffer.
///
/// A write error drops the sink but the loop keeps reading: the writer side of `src` (the
/// container) must never block forever because a reader went away.
pub async fn pump(src: Source, sink: Sink, progress: std::sync::Arc<Progress>) -> Option<Sink> {
    pump_spooled(
        src,
        sink,
        Spooler::new(SpoolConfig::disabled(), ""),
        progress,
    )
    .await
}

/// [`pump`], with a spool behind a pipe-to-FIFO stream whose reader goes away (`spool.rs`).
pub async fn pump_spooled(
    mut src: Source,
    sink: Sink,
    mut spooler: Spooler,
    progress: std::sync::Arc<Progress>,
) -> Option<Sink> {
    let mut sink = Some(sink);
    // No buffer until the stream carries something: a quiet container (most are) costs its
    // shim no heap for its three streams.
    if src.ready().await.is_err() {
        return sink;
    }
    if let (Source::Pipe(from), Some(Sink::Fifo(to))) = (&src, &mut sink) {
        match splice_all(from, to, &mut spooler, &progress).await {
            Spliced::Eof => return sink,
            Spliced::Unsupported => {}
            Spliced::SinkFailed(e) => {
                tracing::warn!(error = %e, "stdio write failed; discarding further output of this stream");
                sink = None;
            }
        }
    }
    let mut buf = vec![0u8; 32 * 1024];
    // The last byte the target got did not end a line (for a spool's drop-oldest).
    let mut mid_line = false;
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
            let wrote = match s {
                Sink::Fifo(to) if spooler.enabled() => {
                    let chunk = &buf[..n];
                    write_or_spool(&mut src, to, chunk, &mut spooler, &progress, &mut mid_line)
                        .await
                }
                s => s.write_all(&buf[..n]).await.map(|()| {
                    progress.add(n);
                    Wrote::All
                }),
            };
            match wrote {
                Ok(Wrote::All) => {}
                Ok(Wrote::SourceEnded) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "stdio write failed; discarding further output of this stream");
                    sink = None;
                }
            }
        }
    }
    sink
}

/// How a buffered write into a FIFO ended.
enum Wrote {
    /// Written (perhaps through a spool that is empty again).
    All,
    /// A spool took over, and the source ended while it delivered; everything was delivered.
    SourceEnded,
}

/// Writes `chunk` into the FIFO `to`; once the FIFO stayed full for [`STALL`], the spool takes
/// the chunk and what `src` gives after it until it is delivered (`Spooler::run_buffered`).
async fn write_or_spool(
    src: &mut Source,
    to: &pipe::Sender,
    mut chunk: &[u8],
    spooler: &mut Spooler,
    progress: &Progress,
    mid_line: &mut bool,
) -> std::io::Result<Wrote> {
    use std::io::ErrorKind::{Interrupted, WouldBlock};
    while !chunk.is_empty() {
        match to.try_write(chunk) {
            Ok(n) => {
                progress.add(n);
                if n > 0 {
                    *mid_line = chunk[n - 1] != b'\n';
                }
                chunk = &chunk[n..];
            }
            Err(e) if e.kind() == Interrupted => {}
            Err(e) if e.kind() == WouldBlock => {
                if spooler.enabled() {
                    match tokio::time::timeout(STALL, to.writable()).await {
                        Ok(r) => {
                            r?;
                            continue;
                        }
                        Err(_) => match spooler
                            .run_buffered(src, to, chunk, progress, mid_line)
                            .await
                        {
                            Some(Spooled::Drained) => return Ok(Wrote::All),
                            Some(Spooled::Eof) => return Ok(Wrote::SourceEnded),
                            Some(Spooled::SinkFailed(e)) => return Err(e),
                            // No spool file: wait for the reader, as without a spool.
                            None => {}
                        },
                    }
                }
                to.writable().await?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Wrote::All)
}

enum Spliced {
    /// Every writer of the source is gone and all it held was moved.
    Eof,
    /// The kernel cannot splice between these two (nothing was moved): copy instead.
    Unsupported,
    SinkFailed(std::io::Error),
}

/// Splices `from` into `to` until EOF on `from`.
///
/// Readiness is tracked per side: `from` is waited on only when it is empty, `to` only when
/// it is full. Only we read `from`, so once FIONREAD says it holds data, a splice that would
/// block means `to` is full. Once `to` has been full, the client reads slower than the
/// container writes, and [`Batcher`] takes over until that changes. Once `to` has been full for
/// [`STALL`], its reader is away, and the spool takes the output until it was delivered.
async fn splice_all(
    from: &pipe::Receiver,
    to: &mut pipe::Sender,
    spooler: &mut Spooler,
    progress: &Progress,
) -> Spliced {
    use crate::sys::{splice, unread_bytes};
    use std::io::ErrorKind::{Interrupted, WouldBlock};
    let mut moved_any = false;
    // None: not tried yet; Some(None): this pair cannot batch.
    let mut batcher: Option<Option<Batcher>> = None;
    loop {
        if from.readable().await.is_err() {
            return Spliced::Eof;
        }
        let avail = unread_bytes(from).unwrap_or(0);
        if avail == 0 {
            // EOF, or a wake-up whose data is gone: a one-byte read tells them apart (and
            // clears the stale readiness).
            let mut one = [0u8; 1];
            match from.try_read(&mut one) {
                Ok(0) => return Spliced::Eof,
                Ok(_) => {
                    if let Err(e) = to.write_all(&one).await {
                        return Spliced::SinkFailed(e);
                    }
                    progress.add(1);
                    moved_any = true;
                }
                Err(e) if e.kind() == WouldBlock || e.kind() == Interrupted => {}
                Err(e) => {
                    tracing::warn!(error = %e, "stdio read failed");
                    return Spliced::Eof;
                }
            }
            continue;
        }
        let to_ref = &*to;
        match to_ref.try_io(|| splice(from, to_ref, avail)) {
            Ok(0) => continue,
            Ok(n) => {
                progress.add(n);
                moved_any = true;
            }
            Err(e) if e.kind() == Interrupted => {}
            Err(e) if e.kind() == WouldBlock => {
                if spooler.enabled() {
                    match tokio::time::timeout(STALL, to.writable()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return Spliced::SinkFailed(e),
                        Err(_) => match spooler.run(from, to, progress).await {
                            Some(Spooled::Drained) => continue,
                            Some(Spooled::Eof) => return Spliced::Eof,
                            Some(Spooled::SinkFailed(e)) => return Spliced::SinkFailed(e),
                            None => {}
                        },
                    }
                }
                // `to` is full: wait for the client to read, then let the batcher refill.
                if let Err(e) = to.writable().await {
                    return Spliced::SinkFailed(e);
                }
                if let Some(b) = batcher.get_or_insert_with(|| Batcher::new(from, to)) {
                    if let Err(e) = b.run(from, to, progress).await {
                        return Spliced::SinkFailed(e);
                    }
                }
            }
            Err(e) if !moved_any && e.raw_os_error() == Some(libc::EINVAL) => {
                return Spliced::Unsupported
            }
            Err(e) => return Spliced::SinkFailed(e),
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::OwnedFd;

    fn pattern(len: usize) -> Vec<u8> {
        let mut x: u32 = 0x1234_5678;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    /// A pipe spliced into a FIFO that fills up (a slow reader) delivers every byte in order,
    /// and the FIFO target comes back at EOF. Uneven 7001-byte writes, so the pipe holds odd
    /// amounts when the pump looks.
    #[tokio::test]
    async fn pipe_to_fifo_is_spliced_exactly() {
        let slow_reader = |mut f: std::fs::File, len: usize| {
            let mut got = Vec::new();
            let mut buf = vec![0u8; 4096];
            while got.len() < len {
                let n = f.read(&mut buf).unwrap();
                got.extend_from_slice(&buf[..n]);
                if got.len() % (256 * 1024) < 4096 {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
            }
            got
        };
        let (got, want, _) = through_fifo(pattern(3 * 1024 * 1024 + 17), 7001, slow_reader).await;
        assert_eq!(got.len(), want.len());
        assert!(got == want, "bytes were reordered or changed");
    }

    /// A FIFO in a temp dir, held read-write as `ProcessIo` holds it (so opening never
    /// blocks), and a reader that has not read yet.
    pub(in crate::io) fn held_fifo() -> (tempfile::TempDir, pipe::Sender, std::fs::File) {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("out");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let to = pipe::OpenOptions::new()
            .read_write(true)
            .open_sender(&fifo)
            .unwrap();
        let reader = std::fs::File::open(&fifo).unwrap();
        (dir, to, reader)
    }

    /// Runs `pump` from a pipe into a FIFO: a thread writes `data` into the pipe in
    /// `write_chunk` pieces, `read` drains the FIFO on another and returns what it got.
    /// Returns (got, sent, the FIFO's capacity afterwards).
    async fn through_fifo(
        data: Vec<u8>,
        write_chunk: usize,
        read: impl FnOnce(std::fs::File, usize) -> Vec<u8> + Send + 'static,
    ) -> (Vec<u8>, Vec<u8>, usize) {
        let (dir, to, reader) = held_fifo();
        let (r, w): (OwnedFd, OwnedFd) = nix::unistd::pipe().unwrap();
        let from = pipe::Receiver::from_owned_fd(r).unwrap();
        let want = data.clone();
        let writer = std::thread::spawn(move || {
            let mut w = std::fs::File::from(w);
            for chunk in data.chunks(write_chunk) {
                w.write_all(chunk).unwrap();
            }
        });
        let len = want.len();
        let reader = std::thread::spawn(move || read(reader, len));
        let sink = tokio::time::timeout(
            std::time::Duration::from_secs(20),
            pump(Source::Pipe(from), Sink::Fifo(to), Default::default()),
        )
        .await
        .expect("the pump ended");
        assert!(
            matches!(sink, Some(Sink::Fifo(_))),
            "the FIFO target is handed back"
        );
        writer.join().unwrap();
        let got = reader.join().unwrap();
        // The capacity after the transfer, read through a fresh handle on the same FIFO.
        let probe = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.path().join("out"))
            .unwrap();
        use std::os::fd::AsRawFd;
        let capacity = nix::fcntl::fcntl(probe.as_raw_fd(), nix::fcntl::FcntlArg::F_GETPIPE_SZ)
            .unwrap() as usize;
        (got, want, capacity)
    }

    /// Reads `len` bytes in `chunk`-sized reads, sleeping `pause` once after `pause_after` bytes.
    fn reader(
        chunk: usize,
        pause_after: usize,
        pause: std::time::Duration,
    ) -> impl FnOnce(std::fs::File, usize) -> Vec<u8> + Send + 'static {
        move |mut f, len| {
            let mut got = Vec::with_capacity(len);
            let mut buf = vec![0u8; chunk];
            let mut paused = false;
            while got.len() < len {
                let n = f.read(&mut buf).unwrap();
                assert!(n > 0, "EOF after {} of {len} bytes", got.len());
                got.extend_from_slice(&buf[..n]);
                if !paused && got.len() >= pause_after {
                    paused = true;
                    std::thread::sleep(pause);
                }
            }
            got
        }
    }

    /// Bulk output to a reader that takes 32 KiB at a time (as ctr does) switches to batch
    /// mode (the FIFO is grown to 1 MiB) and still delivers every byte in order.
    #[tokio::test]
    async fn bulk_output_is_batched_and_exact() {
        let (got, want, capacity) = through_fifo(
            pattern(48 << 20),
            1 << 20,
            reader(32 << 10, usize::MAX, std::time::Duration::ZERO),
        )
        .await;
        assert_eq!(got.len(), want.len());
        assert!(got == want, "bytes were reordered or changed");
        assert!(
            capacity >= 1 << 20,
            "batch mode did not engage: FIFO capacity {capacity}"
        );
    }

    /// A reader that stops for a while in the middle of bulk output (batch mode sees no
    /// progress and falls back to waiting for the reader) gets everything once it resumes.
    #[tokio::test]
    async fn a_reader_pausing_mid_stream_loses_nothing() {
        let (got, want, _) = through_fifo(
            pattern(8 << 20),
            7001,
            reader(32 << 10, 2 << 20, std::time::Duration::from_millis(300)),
        )
        .await;
        assert_eq!(got.len(), want.len());
        assert!(got == want, "bytes were reordered or changed");
    }

    /// A target that fails (its reader is gone: EPIPE) is dropped, and the container's output
    /// is still read to the end, so the writer is never left blocked on a full pipe. Both the
    /// splice path (pipe target) and the copy path (file target that cannot be written) count.
    #[tokio::test]
    async fn a_failed_target_is_dropped_and_the_source_still_drained() {
        let (sink_r, sink_w): (OwnedFd, OwnedFd) = nix::unistd::pipe().unwrap();
        drop(sink_r);
        let readonly = tempfile::tempfile().unwrap();
        let readonly = std::fs::File::open(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&readonly)
        ))
        .unwrap();
        for sink in [
            Sink::Fifo(pipe::Sender::from_owned_fd(sink_w).unwrap()),
            Sink::File(readonly),
        ] {
            let (r, w): (OwnedFd, OwnedFd) = nix::unistd::pipe().unwrap();
            let from = pipe::Receiver::from_owned_fd(r).unwrap();
            // Far more than the pipe holds: the writer only finishes if the pump keeps reading.
            let writer =
                std::thread::spawn(move || std::fs::File::from(w).write_all(&pattern(8 << 20)));
            let left = tokio::time::timeout(
                std::time::Duration::from_secs(20),
                pump(Source::Pipe(from), sink, Default::default()),
            )
            .await
            .expect("the source was drained to EOF");
            assert!(left.is_none(), "the failed target was handed back");
            writer
                .join()
                .unwrap()
                .expect("the writer was never refused");
        }
    }
}
