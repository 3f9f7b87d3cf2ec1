//! A bounded spool behind one output stream, so a container keeps running while nobody reads
//! its output (containerd restarting or being upgraded: containerd#11805, #11511, #9342).
//!
//! Without it the container blocks once its pipe and the client's FIFO are full, as with every
//! other shim. With it, once the FIFO has stayed full for [`STALL`], the copy loop moves the
//! container's output into an unlinked file instead, a ring of at most `size` bytes, and hands
//! the file to the FIFO, oldest first, as the reader comes back. While the spool holds
//! anything, new output is appended behind it, so nothing is reordered, and each byte leaves
//! the file exactly once. When the spool empties, the file is closed (its disk is given
//! back) and the loop splices directly again.
//!
//! The file is created on the first stall only, so an idle shim keeps its memory and fd count.
//! Output moves into the file by `splice` (the kernel copies it into the page cache). It moves
//! out by `pread` and `write` through one buffer per episode, not by `splice`: a page spliced
//! from a file into a pipe stays shared with the file, so overwriting the ring's start would
//! change output the FIFO still holds.
//!
//! Any failure to create or extend the file (missing or read-only directory, ENOSPC) is logged
//! once per process and the stream falls back to blocking; what was spooled is still delivered.
//!
//! A terminal's output is copied through a buffer, not spliced: the same spool takes it, read
//! into a buffer and written into the file ([`Spooler::run_buffered`]).

use super::copy::Source;
use super::progress::Progress;
use std::fs::File;
use std::io::ErrorKind::{Interrupted, WouldBlock};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::unix::pipe;

use crate::runtime::SpoolWhenFull;
use crate::sys::{splice_to_file, unread_bytes};

/// How long a FIFO may stay full before its reader counts as away and output is spooled.
/// A reader that is alive but slower than the writer (ctr, containerd's CRI log writer) takes
/// something from a full FIFO far sooner, even when starved of CPU on a loaded node or
/// throttled by its cgroup's CPU quota, so it keeps the direct (batched) path; a false alarm
/// would cost copies through the file. A second is still short against a containerd restart,
/// and the container is held up at most that long once per outage.
pub const STALL: Duration = Duration::from_secs(1);

/// Spool size per output stream when the options do not name one. It holds a 30 s containerd
/// restart of a stream writing about 2 MiB/s, costs nothing until a stall, and bounds a
/// process's disk use to 128 MiB (two streams) on the node's containerd root.
pub const DEFAULT_SIZE: u64 = 64 << 20;

/// The buffer output leaves the spool through, per episode.
const OUT_BUF: usize = 128 << 10;

/// How often a terminal's spool tries delivery without a writable wake-up.
const RETRY: Duration = Duration::from_millis(100);

/// The buffer a terminal's output is read through while it spools.
const IN_BUF: usize = 32 << 10;

/// How far past the bytes it must drop a drop-oldest spool looks for a line end to drop too.
const LINE_LOOKAHEAD: usize = 64 << 10;

/// A process's spool settings, shared by its output streams.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    /// 0: no spool.
    pub size: u64,
    pub when_full: SpoolWhenFull,
    /// The container, for logs.
    pub container: String,
    /// Counters shared by the process's streams.
    stats: Arc<SpoolStats>,
}

/// What a process's spools did, for logs and tests.
#[derive(Debug, Default)]
pub struct SpoolStats {
    /// Set once a spool failed, so the warning is logged once.
    warned: AtomicBool,
    /// Bytes that went through a spool file.
    pub spooled: AtomicU64,
    /// Bytes discarded by drop-oldest.
    pub dropped: AtomicU64,
    /// Streams spooling right now: their output is in a file no upgrade carries over.
    active: AtomicU64,
}

impl SpoolConfig {
    pub fn new(dir: PathBuf, size: u64, when_full: SpoolWhenFull, container: &str) -> SpoolConfig {
        SpoolConfig {
            dir,
            size,
            when_full,
            container: container.to_string(),
            stats: Arc::default(),
        }
    }

    /// A container's settings from its runtime options; the default directory is the bundle's
    /// `work` directory, which containerd keeps per task on disk under its root directory
    /// (not the tmpfs the bundle is on) and removes at delete.
    pub fn from_options(
        o: &crate::runtime::RuncOptions,
        bundle: &Path,
        container: &str,
    ) -> SpoolConfig {
        let dir = match o.spool_dir.as_str() {
            "" => bundle.join("work"),
            d => PathBuf::from(d),
        };
        SpoolConfig::new(
            dir,
            o.spool_size.unwrap_or(DEFAULT_SIZE),
            o.spool_when_full,
            container,
        )
    }

    /// Whether any stream of these settings holds output in a spool file right now.
    pub fn spooling(&self) -> bool {
        self.stats.active.load(Ordering::Relaxed) > 0
    }

    /// No spool: a full FIFO blocks the container.
    pub fn disabled() -> SpoolConfig {
        SpoolConfig::new(PathBuf::new(), 0, SpoolWhenFull::Block, "")
    }

    fn warn_once(&self, stream: &str, what: &str, e: &std::io::Error) {
        if !self.stats.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(container = %self.container, stream, dir = %self.dir.display(), error = %e,
                "{what}; output blocks while its reader is away, as without a spool");
        }
    }
}

/// One stream's spool: its settings, and the file while it holds output.
pub struct Spooler {
    cfg: SpoolConfig,
    stream: &'static str,
    /// A failure happened: no more spooling for this stream.
    failed: bool,
}

/// How a spooling episode ended.
pub enum Spooled {
    /// The spool is empty again; direct splicing resumes.
    Drained,
    /// The container's pipe reached EOF and everything spooled was delivered.
    Eof,
    /// Writing the FIFO failed.
    SinkFailed(std::io::Error),
}

impl Spooler {
    pub fn new(cfg: SpoolConfig, stream: &'static str) -> Spooler {
        Spooler {
            cfg,
            stream,
            failed: false,
        }
    }

    /// True if a stall should start spooling.
    pub fn enabled(&self) -> bool {
        self.cfg.size > 0 && !self.failed
    }

    /// The FIFO `to` stayed full for [`STALL`]: takes the container's output into a new spool
    /// file until the spool is delivered and empty. Returns None (and logs once) if no file
    /// could be made: the caller then waits for the reader, as without a spool.
    pub async fn run(
        &mut self,
        from: &pipe::Receiver,
        to: &pipe::Sender,
        progress: &Progress,
    ) -> Option<Spooled> {
        let mut ring = self.begin()?;
        let outcome = self.episode(&mut ring, from, to, progress).await;
        self.end(&ring);
        Some(outcome)
    }

    /// [`Spooler::run`] for a copy through a buffer (a terminal's output): `pending` is what
    /// the copy still had to write when the FIFO stalled; it goes into the spool first.
    /// `mid_line` says whether the last byte the FIFO got ended a line, and is kept up to date.
    pub async fn run_buffered(
        &mut self,
        from: &mut Source,
        to: &pipe::Sender,
        pending: &[u8],
        progress: &Progress,
        mid_line: &mut bool,
    ) -> Option<Spooled> {
        let mut ring = self.begin()?;
        ring.head_mid_line = *mid_line;
        let outcome = self
            .buffered_episode(&mut ring, from, to, pending, progress)
            .await;
        *mid_line = ring.head_mid_line;
        self.end(&ring);
        Some(outcome)
    }

    /// Makes the spool file, or says (once) why not.
    fn begin(&mut self) -> Option<Ring> {
        let file = match open_file(&self.cfg.dir) {
            Ok(f) => f,
            Err(e) => {
                self.failed = true;
                self.cfg
                    .warn_once(self.stream, "cannot create a spool file", &e);
                return None;
            }
        };
        tracing::info!(container = %self.cfg.container, stream = self.stream,
            "output reader is away; spooling");
        self.cfg.stats.active.fetch_add(1, Ordering::Relaxed);
        Some(Ring::new(file, self.cfg.size))
    }

    fn end(&self, ring: &Ring) {
        let stats = &self.cfg.stats;
        stats.active.fetch_sub(1, Ordering::Relaxed);
        stats.spooled.fetch_add(ring.tail, Ordering::Relaxed);
        stats.dropped.fetch_add(ring.dropped, Ordering::Relaxed);
        if ring.dropped > 0 {
            tracing::warn!(container = %self.cfg.container, stream = self.stream,
                dropped_bytes = ring.dropped, "spool was full: dropped the oldest output");
        }
        tracing::info!(container = %self.cfg.container, stream = self.stream,
            spooled_bytes = ring.tail, "spool delivered");
    }

    /// The buffered copy's episode: output read from `from` is held in `held` until the ring
    /// takes it, and read again only once the ring took all of it, so under `block` a full
    /// spool stops reading (the process blocks) and nothing read is ever lost. If the file
    /// stops taking output, what is held is written to the FIFO as without a spool.
    async fn buffered_episode(
        &mut self,
        ring: &mut Ring,
        from: &mut Source,
        to: &pipe::Sender,
        pending: &[u8],
        progress: &Progress,
    ) -> Spooled {
        let drop_oldest = self.cfg.when_full == SpoolWhenFull::DropOldest;
        let mut held = pending.to_vec();
        let mut inbuf = vec![0u8; IN_BUF];
        let mut buf = vec![0u8; OUT_BUF];
        let (mut eof, mut stuck) = (false, false);
        loop {
            if !held.is_empty() && !stuck {
                match ring.push(&held, drop_oldest) {
                    Ok(n) => drop(held.drain(..n)),
                    Err(e) => {
                        stuck = true;
                        self.failed = true;
                        self.cfg
                            .warn_once(self.stream, "cannot write the spool file", &e);
                    }
                }
            }
            if ring.is_empty() && (eof || stuck || ring.tail > 0) {
                if let Err(e) = write_all(to, &held, progress).await {
                    return Spooled::SinkFailed(e);
                }
                if let Some(&b) = held.last() {
                    ring.head_mid_line = b != b'\n';
                }
                return if eof { Spooled::Eof } else { Spooled::Drained };
            }
            let accepting = !eof && !stuck && held.is_empty();
            tokio::select! {
                w = to.writable(), if !ring.is_empty() => {
                    if let Err(e) = w {
                        return Spooled::SinkFailed(e);
                    }
                    if let Err(e) = counted(ring.deliver(to, &mut buf), progress) {
                        return Spooled::SinkFailed(e);
                    }
                }
                // Delivery is also tried on a timer: in CI a terminal's episode once sat for
                // 10 s with output spooled and the FIFO empty, no writable wake-up seen.
                () = tokio::time::sleep(RETRY), if !ring.is_empty() => {
                    if let Err(e) = counted(ring.deliver_direct(to, &mut buf), progress) {
                        return Spooled::SinkFailed(e);
                    }
                }
                r = from.read(&mut inbuf), if accepting => match r {
                    Ok(0) => eof = true,
                    Ok(n) => held.extend_from_slice(&inbuf[..n]),
                    Err(e) if e.kind() == Interrupted => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "stdio read failed");
                        eof = true;
                    }
                },
            }
        }
    }

    async fn episode(
        &mut self,
        ring: &mut Ring,
        from: &pipe::Receiver,
        to: &pipe::Sender,
        progress: &Progress,
    ) -> Spooled {
        let drop_oldest = self.cfg.when_full == SpoolWhenFull::DropOldest;
        let mut eof = false;
        let mut buf = vec![0u8; OUT_BUF];
        // Appending stopped for good (the file could not grow): deliver, then block.
        let mut stuck = false;
        loop {
            let accepting = !eof && !stuck && (drop_oldest || ring.room() > 0);
            if ring.is_empty() && (ring.tail > 0 || !accepting) {
                return if eof { Spooled::Eof } else { Spooled::Drained };
            }
            tokio::select! {
                w = to.writable(), if !ring.is_empty() => {
                    if let Err(e) = w {
                        return Spooled::SinkFailed(e);
                    }
                    if let Err(e) = counted(ring.deliver(to, &mut buf), progress) {
                        return Spooled::SinkFailed(e);
                    }
                }
                r = from.readable(), if accepting => {
                    if r.is_err() {
                        eof = true;
                        continue;
                    }
                    match from.try_io(|| ring.fill(from, drop_oldest)) {
                        Ok(0) => eof = true,
                        Ok(_) => {}
                        Err(e) if e.kind() == WouldBlock || e.kind() == Interrupted => {}
                        Err(e) => {
                            stuck = true;
                            self.failed = true;
                            self.cfg.warn_once(self.stream, "cannot write the spool file", &e);
                        }
                    }
                }
            }
        }
    }
}

/// Counts a delivery's bytes as progress; a full FIFO (or a signal) is no error.
fn counted(delivered: std::io::Result<usize>, progress: &Progress) -> std::io::Result<()> {
    match delivered {
        Ok(n) => progress.add(n),
        Err(e) if e.kind() == WouldBlock || e.kind() == Interrupted => {}
        Err(e) => return Err(e),
    }
    Ok(())
}

/// Writes all of `bytes` into the FIFO, waiting for room as long as it takes.
async fn write_all(
    to: &pipe::Sender,
    mut bytes: &[u8],
    progress: &Progress,
) -> std::io::Result<()> {
    while !bytes.is_empty() {
        match to.try_write(bytes) {
            Ok(n) => {
                progress.add(n);
                bytes = &bytes[n..];
            }
            Err(e) if e.kind() == WouldBlock => to.writable().await?,
            Err(e) if e.kind() == Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Opens an unlinked file in `dir`: O_TMPFILE, or create and unlink where the filesystem
/// lacks it.
fn open_file(dir: &Path) -> std::io::Result<File> {
    let tmp = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
        .open(dir);
    match tmp {
        Ok(f) => return Ok(f),
        Err(e)
            if e.raw_os_error() == Some(libc::EOPNOTSUPP)
                || e.raw_os_error() == Some(libc::EISDIR) => {}
        Err(e) => return Err(e),
    }
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let name = dir.join(format!(
        ".tether-spool-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(&name)?;
    std::fs::remove_file(&name)?;
    Ok(f)
}

/// Output held in a file used as a ring of `size` bytes. `head` and `tail` count bytes since
/// the episode began; a byte's place in the file is its count modulo `size`.
struct Ring {
    file: File,
    size: u64,
    /// The oldest byte not yet delivered.
    head: u64,
    /// One past the newest byte.
    tail: u64,
    /// Bytes discarded by drop-oldest.
    dropped: u64,
    /// The reader got the start of the line `head` is in (the last byte it got was not a
    /// newline): drop-oldest keeps the rest of that line, so the reader never sees it cut.
    head_mid_line: bool,
}

impl Ring {
    fn new(file: File, size: u64) -> Ring {
        Ring {
            file,
            size,
            head: 0,
            tail: 0,
            dropped: 0,
            head_mid_line: false,
        }
    }

    fn len(&self) -> u64 {
        self.tail - self.head
    }

    fn is_empty(&self) -> bool {
        self.head == self.tail
    }

    fn room(&self) -> u64 {
        self.size - self.len()
    }

    /// Moves what the pipe holds into the ring (making room first under drop-oldest). Ok(0)
    /// is EOF on the pipe; an empty pipe is WouldBlock.
    fn fill(&mut self, from: &pipe::Receiver, drop_oldest: bool) -> std::io::Result<usize> {
        let avail = unread_bytes(from)?;
        if avail == 0 {
            // EOF, or a wake-up whose data is gone: a one-byte read tells them apart.
            let mut one = [0u8; 1];
            let n = from.try_read(&mut one)?;
            if n == 1 {
                self.make_room(1, drop_oldest)?;
                self.file.write_all_at(&one, self.tail % self.size)?;
                self.tail += 1;
            }
            return Ok(n);
        }
        let want = (avail as u64).min(self.size);
        self.make_room(want, drop_oldest)?;
        let at = self.tail % self.size;
        let len = want.min(self.room()).min(self.size - at);
        let n = splice_to_file(from, &self.file, at, len as usize)?;
        self.tail += n as u64;
        Ok(n.max(1))
    }

    /// Appends what fits of `bytes` (all of it under drop-oldest, making room first); the
    /// count taken.
    fn push(&mut self, bytes: &[u8], drop_oldest: bool) -> std::io::Result<usize> {
        // Under drop-oldest only the newest `size` bytes of a chunk can be kept at all.
        let skip = if drop_oldest {
            bytes.len().saturating_sub(self.size as usize)
        } else {
            0
        };
        let bytes = &bytes[skip..];
        self.make_room(bytes.len() as u64, drop_oldest)?;
        self.dropped += skip as u64;
        let mut done = 0;
        while done < bytes.len() && self.room() > 0 {
            let at = self.tail % self.size;
            let n = ((bytes.len() - done) as u64)
                .min(self.room())
                .min(self.size - at) as usize;
            self.file.write_all_at(&bytes[done..done + n], at)?;
            self.tail += n as u64;
            done += n;
        }
        Ok(skip + done)
    }

    /// Under drop-oldest, discards the oldest bytes until `need` fit, and then up to the end
    /// of the line they cut, so the reader gets whole lines where possible. A line the reader
    /// already has the start of is kept whole: its rest moves up to just before the new head.
    fn make_room(&mut self, need: u64, drop_oldest: bool) -> std::io::Result<()> {
        if !drop_oldest || self.room() >= need {
            return Ok(());
        }
        let mut keep = Vec::new();
        if self.head_mid_line {
            let front = self.read(self.head, self.len().min(LINE_LOOKAHEAD as u64))?;
            if let Some(i) = front.iter().position(|&b| b == b'\n') {
                if (i + 1) as u64 + need <= self.size {
                    keep = front[..=i].to_vec();
                }
            }
        }
        let drop_from = self.head + keep.len() as u64;
        let mut new_head = drop_from + (need - self.room());
        // The rest of the cut line, if its end is near.
        if new_head > drop_from && new_head < self.tail {
            let cut_mid_line = self.read(new_head - 1, 1)?[0] != b'\n';
            let ahead = self.read(new_head, (self.tail - new_head).min(LINE_LOOKAHEAD as u64))?;
            if cut_mid_line {
                if let Some(i) = ahead.iter().position(|&b| b == b'\n') {
                    new_head += i as u64 + 1;
                }
            }
        }
        self.dropped += new_head - drop_from;
        self.head = new_head - keep.len() as u64;
        self.write(self.head, &keep)
    }

    /// `len` bytes from ring position `from` (counted since the episode began).
    fn read(&self, from: u64, len: u64) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len as usize];
        let mut done = 0;
        while done < buf.len() {
            let at = (from + done as u64) % self.size;
            let n = ((buf.len() - done) as u64).min(self.size - at) as usize;
            self.file.read_exact_at(&mut buf[done..done + n], at)?;
            done += n;
        }
        Ok(buf)
    }

    /// Writes `bytes` at ring position `from`.
    fn write(&self, from: u64, bytes: &[u8]) -> std::io::Result<()> {
        let mut done = 0;
        while done < bytes.len() {
            let at = (from + done as u64) % self.size;
            let n = ((bytes.len() - done) as u64).min(self.size - at) as usize;
            self.file.write_all_at(&bytes[done..done + n], at)?;
            done += n;
        }
        Ok(())
    }

    /// [`Ring::deliver`] by a plain `write(2)`, whatever the runtime believes of the FIFO's
    /// readiness (a timer's retry).
    fn deliver_direct(&mut self, to: &pipe::Sender, buf: &mut [u8]) -> std::io::Result<usize> {
        self.deliver_with(buf, |b| {
            nix::unistd::write(to, b).map_err(std::io::Error::from)
        })
    }

    /// Writes the oldest spooled bytes into the FIFO; WouldBlock when it is full. Gives the
    /// file's blocks back when it empties.
    fn deliver(&mut self, to: &pipe::Sender, buf: &mut [u8]) -> std::io::Result<usize> {
        self.deliver_with(buf, |b| to.try_write(b))
    }

    fn deliver_with(
        &mut self,
        buf: &mut [u8],
        write: impl FnOnce(&[u8]) -> std::io::Result<usize>,
    ) -> std::io::Result<usize> {
        let at = self.head % self.size;
        let len = (self.len().min(self.size - at) as usize).min(buf.len());
        let got = self.file.read_at(&mut buf[..len], at)?;
        if got == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the spool file is shorter than what was spooled",
            ));
        }
        let n = write(&buf[..got])?;
        self.head += n as u64;
        if n > 0 {
            self.head_mid_line = buf[n - 1] != b'\n';
        }
        if self.is_empty() && self.tail > 0 {
            self.file.set_len(0)?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::super::copy::{pump_spooled, Sink, Source};
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::OwnedFd;
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    /// Numbered lines, 8 bytes each.
    fn lines(count: usize) -> Vec<u8> {
        (0..count)
            .flat_map(|i| format!("{i:07}\n").into_bytes())
            .collect()
    }

    /// A container's output pipe pumped into a FIFO held read-write (as `ProcessIo` does),
    /// whose reader does not read until [`Stream::read_all`].
    struct Stream {
        _dir: tempfile::TempDir,
        reader: std::fs::File,
        pump: tokio::task::JoinHandle<Option<Sink>>,
        writer: std::thread::JoinHandle<()>,
        /// Bytes the writer has written so far.
        written: Arc<AtomicUsize>,
    }

    fn stream(data: Vec<u8>, cfg: SpoolConfig) -> Stream {
        let (r, w): (OwnedFd, OwnedFd) = nix::unistd::pipe().unwrap();
        let from = pipe::Receiver::from_owned_fd(r).unwrap();
        pumped(Source::Pipe(from), w, data, cfg, || {})
    }

    /// [`stream`] through a terminal: the writer writes the pty's slave side (raw, so bytes
    /// pass unchanged), closes it and then reports the process's exit, as the reaper would.
    fn terminal_stream(data: Vec<u8>, cfg: SpoolConfig) -> Stream {
        let pty = nix::pty::openpty(None, None).unwrap();
        let mut t = nix::sys::termios::tcgetattr(&pty.slave).unwrap();
        nix::sys::termios::cfmakeraw(&mut t);
        nix::sys::termios::tcsetattr(&pty.slave, nix::sys::termios::SetArg::TCSANOW, &t).unwrap();
        let exited = Arc::new(super::super::progress::ExitSignal::default());
        let console = super::super::console::Console::new(pty.master, exited.clone()).unwrap();
        pumped(Source::Console(console), pty.slave, data, cfg, move || {
            exited.set()
        })
    }

    /// `source` pumped into a fresh FIFO; a thread writes `data` into `w` (the source's other
    /// end), closes it and calls `after`.
    fn pumped(
        source: Source,
        w: OwnedFd,
        data: Vec<u8>,
        cfg: SpoolConfig,
        after: impl FnOnce() + Send + 'static,
    ) -> Stream {
        let (dir, to, reader) = super::super::copy::tests::held_fifo();
        let written = Arc::new(AtomicUsize::new(0));
        let progress = written.clone();
        let writer = std::thread::spawn(move || {
            let mut w = std::fs::File::from(w);
            for chunk in data.chunks(4096) {
                w.write_all(chunk).unwrap();
                progress.fetch_add(chunk.len(), Ordering::Relaxed);
            }
            drop(w);
            after();
        });
        let pump = tokio::spawn(pump_spooled(
            source,
            Sink::Fifo(to),
            Spooler::new(cfg, "stdout"),
            Default::default(),
        ));
        Stream {
            _dir: dir,
            reader,
            pump,
            writer,
            written,
        }
    }

    impl Stream {
        /// Waits (yielding to the pump) until the writer wrote `len` bytes; false after `limit`.
        async fn wrote(&self, len: usize, limit: Duration) -> bool {
            let deadline = Instant::now() + limit;
            while self.written.load(Ordering::Relaxed) < len {
                if Instant::now() > deadline {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            true
        }

        /// The reader comes back and reads to EOF (the pump ends and its FIFO end is closed).
        async fn read_all(self) -> Vec<u8> {
            let mut reader = self.reader;
            let got = std::thread::spawn(move || {
                let mut got = Vec::new();
                reader.read_to_end(&mut got).unwrap();
                got
            });
            let sink = tokio::time::timeout(Duration::from_secs(30), self.pump)
                .await
                .expect("the pump ended")
                .unwrap();
            assert!(
                matches!(sink, Some(Sink::Fifo(_))),
                "the FIFO is handed back"
            );
            drop(sink);
            self.writer.join().unwrap();
            got.join().unwrap()
        }
    }

    fn config(dir: &Path, size: u64, when_full: SpoolWhenFull) -> SpoolConfig {
        SpoolConfig::new(dir.to_path_buf(), size, when_full, "test")
    }

    /// Descriptors of this process open on a file in `dir` (the spool, unlinked).
    fn open_in(dir: &Path) -> usize {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|p| p.starts_with(dir))
            .count()
    }

    /// How a test's stream reaches the pump: a pipe (spliced) or a terminal (buffered).
    type Make = fn(Vec<u8>, SpoolConfig) -> Stream;

    /// The reader goes away while the container writes far more than its pipe and the FIFO
    /// hold: the writer never blocks (up to the spool's size), the spool is a file that is
    /// closed again once delivered, and the returning reader gets every byte once, in order.
    async fn absent_reader(make: Make, len: usize) {
        let spool_dir = tempfile::tempdir().unwrap();
        let cfg = config(spool_dir.path(), 32 << 20, SpoolWhenFull::Block);
        let want = lines(len / 8);
        let s = make(want.clone(), cfg.clone());
        assert_eq!(open_in(spool_dir.path()), 0, "no spool file before a stall");
        assert!(
            s.wrote(want.len(), Duration::from_secs(15)).await,
            "the writer blocked after {} of {} bytes",
            s.written.load(Ordering::Relaxed),
            want.len()
        );
        assert_eq!(
            open_in(spool_dir.path()),
            1,
            "the spool is an open, unlinked file"
        );
        let got = s.read_all().await;
        assert_eq!(got.len(), want.len());
        assert!(got == want, "bytes were lost, reordered or repeated");
        assert_eq!(
            open_in(spool_dir.path()),
            0,
            "the spool file is closed once empty"
        );
        let spooled = cfg.stats.spooled.load(Ordering::Relaxed) as usize;
        assert!(
            spooled > len / 2,
            "only {spooled} bytes went through the spool"
        );
        assert!(std::fs::read_dir(spool_dir.path())
            .unwrap()
            .next()
            .is_none());
    }

    #[tokio::test]
    async fn an_absent_reader_does_not_block_the_writer_and_gets_everything_once() {
        absent_reader(stream, 16 << 20).await;
    }

    /// The same through a terminal, whose output is copied through a buffer.
    #[tokio::test]
    async fn a_terminals_output_is_spooled_while_its_reader_is_away() {
        absent_reader(terminal_stream, 4 << 20).await;
    }

    /// A full drop-oldest spool discards the oldest spooled lines, whole, and counts them: the
    /// reader gets a prefix (what was in the pipes at the stall, and the spool's delivered
    /// start) and the newest lines, with one gap, and the count is exactly what is missing.
    async fn drop_oldest(make: Make) {
        let spool_dir = tempfile::tempdir().unwrap();
        let cfg = config(spool_dir.path(), 1 << 20, SpoolWhenFull::DropOldest);
        let want = lines(1 << 20); // 8 MiB
        let s = make(want.clone(), cfg.clone());
        assert!(
            s.wrote(want.len(), Duration::from_secs(15)).await,
            "a drop-oldest spool blocked the writer"
        );
        let got = s.read_all().await;
        let dropped = cfg.stats.dropped.load(Ordering::Relaxed) as usize;
        assert!(dropped > 0, "nothing was dropped");
        assert_eq!(
            got.len() + dropped,
            want.len(),
            "the count is what is missing"
        );
        assert!(
            got.len() % 8 == 0 && got.len() >= 1 << 20,
            "got {} bytes",
            got.len()
        );
        let numbers: Vec<usize> = got
            .chunks(8)
            .map(|l| {
                assert_eq!(l[7], b'\n', "a cut line: {:?}", String::from_utf8_lossy(l));
                std::str::from_utf8(&l[..7]).unwrap().parse().unwrap()
            })
            .collect();
        let gaps: Vec<_> = numbers.windows(2).filter(|w| w[1] != w[0] + 1).collect();
        assert_eq!(numbers[0], 0, "the oldest lines before the stall are kept");
        assert_eq!(
            *numbers.last().unwrap(),
            (1 << 20) - 1,
            "the newest line is kept"
        );
        assert_eq!(
            gaps.len(),
            1,
            "one gap, where the oldest spooled lines were"
        );
    }

    #[tokio::test]
    async fn drop_oldest_drops_only_the_oldest_whole_lines_and_counts_them() {
        drop_oldest(stream).await;
    }

    #[tokio::test]
    async fn drop_oldest_behind_a_terminal_drops_only_the_oldest_whole_lines() {
        drop_oldest(terminal_stream).await;
    }

    /// A full block spool stops reading: the writer blocks after pipe, FIFO and spool are
    /// full, and still loses nothing once the reader returns.
    async fn full_block_spool(make: Make) {
        let spool_dir = tempfile::tempdir().unwrap();
        let cfg = config(spool_dir.path(), 1 << 20, SpoolWhenFull::Block);
        let want = lines(1 << 20); // 8 MiB
        let s = make(want.clone(), cfg.clone());
        assert!(
            s.wrote(1 << 20, Duration::from_secs(10)).await,
            "the spool took nothing"
        );
        assert!(
            !s.wrote(want.len(), Duration::from_secs(2)).await,
            "the writer never blocked"
        );
        let at = s.written.load(Ordering::Relaxed);
        assert!(at < 3 << 20, "{at} bytes written past a 1 MiB spool");
        let got = s.read_all().await;
        assert!(got == want, "bytes were lost, reordered or repeated");
    }

    #[tokio::test]
    async fn a_full_block_spool_blocks_the_writer_and_loses_nothing() {
        full_block_spool(stream).await;
    }

    /// Behind a terminal, a full block spool stops reading the terminal.
    #[tokio::test]
    async fn a_full_block_spool_behind_a_terminal_blocks_the_writer_and_loses_nothing() {
        full_block_spool(terminal_stream).await;
    }

    /// A spool directory that is missing, or on a filesystem where no file can be made: the
    /// stream behaves as without a spool (the writer blocks, nothing is lost), and the
    /// failure is warned about once for all the process's streams.
    #[tokio::test]
    async fn an_unusable_spool_dir_falls_back_to_blocking_and_warns_once() {
        let missing = tempfile::tempdir().unwrap().path().join("missing");
        for dir in [missing.as_path(), Path::new("/proc/self")] {
            let cfg = config(dir, 32 << 20, SpoolWhenFull::DropOldest);
            let want = lines(1 << 19); // 4 MiB
            let (a, b) = (
                stream(want.clone(), cfg.clone()),
                stream(want.clone(), cfg.clone()),
            );
            assert!(
                !a.wrote(want.len(), Duration::from_secs(2)).await,
                "{dir:?}: not blocked"
            );
            assert!(
                !b.wrote(want.len(), Duration::ZERO).await,
                "{dir:?}: not blocked"
            );
            assert!(
                cfg.stats.warned.load(Ordering::Relaxed),
                "{dir:?}: no warning"
            );
            assert_eq!(cfg.stats.spooled.load(Ordering::Relaxed), 0);
            assert!(a.read_all().await == want, "{dir:?}: stdout changed");
            assert!(b.read_all().await == want, "{dir:?}: stderr changed");
        }
    }
}
