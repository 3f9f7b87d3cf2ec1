//! Fewer wake-ups for bulk output: when the client reads a FIFO slower than the container
//! writes, refill the FIFO on a timer in large batches instead of once per client read.
//!
//! The kernel wakes a pipe's writer each time a reader takes data from a *full* pipe. Once
//! containerd's reader (ctr reads 32 KiB at a time) is the bottleneck, the FIFO stays full and
//! the shim woke up for every 32 KiB: that wake-up, not the splice, was nearly all of the shim's
//! CPU time per GiB. In batch mode both pipes are enlarged to [`CAPACITY`] and the FIFO is
//! refilled only up to `CAPACITY - MARGIN`: a FIFO that is never full never wakes us, and a
//! timer set from the reader's measured drain rate brings us back when it is a quarter full,
//! roughly once per 700 KiB.

use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg};
use tokio::net::unix::pipe;

use super::progress::Progress;
use crate::sys::{splice, unread_bytes, Timer};

/// Pipe size in batch mode: the default `fs.pipe-max-size`, so no privilege is needed.
const CAPACITY: usize = 1 << 20;
/// Room left free in the FIFO so that it never counts as full (fullness is counted in page
/// slots, and a split page takes a slot of its own).
const MARGIN: usize = 64 << 10;
/// Refill when the reader has drained the FIFO down to this.
const LOW_WATER: usize = CAPACITY / 4;
/// Bounds of one timer sleep: below the shortest, a timer costs as much as the wake-ups it
/// saves; above the longest, a reader that speeds up would wait on us.
const MIN_SLEEP: Duration = Duration::from_micros(50);
const MAX_SLEEP: Duration = Duration::from_millis(4);

/// State kept while one output stream is in batch mode.
pub struct Batcher {
    timer: Timer,
    /// The reader's drain rate, bytes per second, smoothed.
    rate: f64,
    capacity: usize,
}

impl Batcher {
    /// Enlarges both pipes and arms nothing yet. None where that is not possible (a pipe that
    /// cannot grow, no timerfd): the caller stays event-driven.
    pub fn new(from: &pipe::Receiver, to: &pipe::Sender) -> Option<Batcher> {
        let capacity = grow(to.as_raw_fd())?.min(grow(from.as_raw_fd())?);
        if capacity < CAPACITY {
            return None;
        }
        let timer = Timer::new().ok()?;
        // A first guess (about ctr's speed); the first sleep measures the real one.
        Some(Batcher {
            timer,
            rate: 1e9,
            capacity,
        })
    }

    /// Moves data from `from` to `to` in timed batches while the reader keeps up a steady
    /// drain, and returns to the event-driven loop when the client read nothing for a whole
    /// sleep or the container's pipe ran dry (it writes slower than the client reads, or is
    /// done). Errors are the sink's.
    pub async fn run(
        &mut self,
        from: &pipe::Receiver,
        to: &pipe::Sender,
        progress: &Progress,
    ) -> std::io::Result<()> {
        let fill_to = self.capacity - MARGIN;
        loop {
            let before = unread_bytes(to)?;
            let started = Instant::now();
            self.timer.sleep(self.sleep_for(before)).await?;
            let after = unread_bytes(to)?;
            let drained = before.saturating_sub(after);
            if drained == 0 {
                return Ok(());
            }
            let measured = drained as f64 / started.elapsed().as_secs_f64().max(1e-6);
            self.rate = if after == 0 {
                // The reader ran dry while we slept, so it can go faster than it showed.
                (self.rate * 2.0).max(measured)
            } else {
                (self.rate + measured) / 2.0
            };
            let mut room = fill_to.saturating_sub(after);
            while room > 0 {
                let avail = unread_bytes(from)?;
                if avail == 0 {
                    return Ok(());
                }
                match splice(from, to, avail.min(room)) {
                    Ok(0) => return Ok(()),
                    Ok(n) => {
                        progress.add(n);
                        room -= n.min(room);
                    }
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::Interrupted =>
                    {
                        break
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }

    /// How long the reader needs to bring `queued` bytes down to the low-water mark.
    fn sleep_for(&self, queued: usize) -> Duration {
        let secs = queued.saturating_sub(LOW_WATER) as f64 / self.rate.max(1.0);
        Duration::from_secs_f64(secs).clamp(MIN_SLEEP, MAX_SLEEP)
    }
}

/// Sets a pipe's capacity to [`CAPACITY`] (if smaller) and returns what it is now.
fn grow(fd: RawFd) -> Option<usize> {
    let now = fcntl(fd, FcntlArg::F_GETPIPE_SZ).ok()? as usize;
    if now >= CAPACITY {
        return Some(now);
    }
    fcntl(fd, FcntlArg::F_SETPIPE_SZ(CAPACITY as libc::c_int))
        .ok()
        .map(|n| n as usize)
}
