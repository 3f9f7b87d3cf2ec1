//! A bounded spool behind one output stream, so a container keeps running while nobody reads
//! its output (containerd restarting or being upgraded: containerd#11805, #11511, #9342).
//!
//! Without it the container blocks once its pipe and the client's FIFO are full, as with every
//! other shim. With it, once the FIFO has stayed full for [`STALL`], the copy loop moves the
//! container's output into an unlinked file instead, a ring of at most `size` bytes, and hands
//! the file to the FIFO, oldest first, as the reader comes back. While the spool holds
//! anything, new output is appended behind it, so nothing is reordered, and a byte is spliced
//! out of the file exactly once. When the spool empties, the file is closed (its disk is given
//! back) and the loop splices directly again.
//!
//! The file is created on the first stall only, so an idle shim keeps its memory and fd count.
//! Bytes move by `splice` (pipe to file, file to FIFO), never through the heap. Any failure to
//! create or extend the file (missing or read-only directory, ENOSPC) is logged once and the
//! stream falls back to blocking; what was spooled is still delivered.

use std::fs::File;
use std::io::ErrorKind::{Interrupted, WouldBlock};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::unix::pipe;

use crate::runtime::SpoolWhenFull;
use crate::sys::{splice_from_file, splice_to_file, unread_bytes};

/// How long a FIFO may stay full before its reader counts as away and output is spooled.
/// A reader that is alive but slower than the writer (ctr, containerd's CRI log writer) takes
/// something from a full FIFO within milliseconds, so it keeps the direct (batched) path; a
/// quarter second is far above that, and short against the time a blocked service's own
/// health checks allow. A false alarm costs only a detour through the file.
pub const STALL: Duration = Duration::from_millis(250);

/// Spool size per output stream when the options do not name one. It holds a 30 s containerd
/// restart of a stream writing about 2 MiB/s, and costs nothing until a stall.
pub const DEFAULT_SIZE: u64 = 64 << 20;

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
    /// Set once a spool of this process failed, so the warning is logged once.
    warned: Arc<AtomicBool>,
}

impl SpoolConfig {
    pub fn new(dir: PathBuf, size: u64, when_full: SpoolWhenFull, container: &str) -> SpoolConfig {
        SpoolConfig {
            dir,
            size,
            when_full,
            container: container.to_string(),
            warned: Arc::default(),
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

    /// No spool: a full FIFO blocks the container.
    pub fn disabled() -> SpoolConfig {
        SpoolConfig::new(PathBuf::new(), 0, SpoolWhenFull::Block, "")
    }

    fn warn_once(&self, stream: &str, what: &str, e: &std::io::Error) {
        if !self.warned.swap(true, Ordering::Relaxed) {
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
    pub async fn run(&mut self, from: &pipe::Receiver, to: &pipe::Sender) -> Option<Spooled> {
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
        let mut ring = Ring::new(file, self.cfg.size);
        let outcome = self.episode(&mut ring, from, to).await;
        if ring.dropped > 0 {
            tracing::warn!(container = %self.cfg.container, stream = self.stream,
                dropped_bytes = ring.dropped, "spool was full: dropped the oldest output");
        }
        tracing::info!(container = %self.cfg.container, stream = self.stream,
            spooled_bytes = ring.tail, "spool delivered");
        Some(outcome)
    }

    async fn episode(
        &mut self,
        ring: &mut Ring,
        from: &pipe::Receiver,
        to: &pipe::Sender,
    ) -> Spooled {
        let drop_oldest = self.cfg.when_full == SpoolWhenFull::DropOldest;
        let mut eof = false;
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
                    match to.try_io(|| ring.deliver(to)) {
                        Ok(_) => {}
                        Err(e) if e.kind() == WouldBlock || e.kind() == Interrupted => {}
                        Err(e) => return Spooled::SinkFailed(e),
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
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
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
}

impl Ring {
    fn new(file: File, size: u64) -> Ring {
        Ring {
            file,
            size,
            head: 0,
            tail: 0,
            dropped: 0,
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

    /// Under drop-oldest, discards the oldest bytes until `need` fit, and then up to the end
    /// of the line they cut, so the reader gets whole lines where possible.
    fn make_room(&mut self, need: u64, drop_oldest: bool) -> std::io::Result<()> {
        if !drop_oldest || self.room() >= need {
            return Ok(());
        }
        let mut new_head = self.head + (need - self.room());
        // The rest of the cut line, if its end is near.
        let at = new_head % self.size;
        let span = (self.tail - new_head)
            .min(self.size - at)
            .min(LINE_LOOKAHEAD as u64);
        if new_head > self.head && span > 0 {
            let mut buf = vec![0u8; span as usize];
            let cut_mid_line = {
                let mut prev = [0u8; 1];
                self.file
                    .read_exact_at(&mut prev, (new_head - 1) % self.size)?;
                prev[0] != b'\n'
            };
            self.file.read_exact_at(&mut buf, at)?;
            if cut_mid_line {
                if let Some(i) = buf.iter().position(|&b| b == b'\n') {
                    new_head += i as u64 + 1;
                }
            }
        }
        self.dropped += new_head - self.head;
        self.head = new_head;
        Ok(())
    }

    /// Splices the oldest spooled bytes into the FIFO; WouldBlock when it is full. Gives the
    /// file's blocks back when it empties.
    fn deliver(&mut self, to: &pipe::Sender) -> std::io::Result<usize> {
        let at = self.head % self.size;
        let len = self.len().min(self.size - at) as usize;
        let n = match splice_from_file(&self.file, at, to, len) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                // A filesystem that cannot splice out: copy through a buffer.
                let mut buf = vec![0u8; len.min(64 << 10)];
                let got = self.file.read_at(&mut buf, at)?;
                to.try_write(&buf[..got])?
            }
            r => r?,
        };
        self.head += n as u64;
        if self.is_empty() && self.tail > 0 {
            self.file.set_len(0)?;
        }
        Ok(n)
    }
}
