//! How a wait for a process's output tells a reader that is slow from one that went away.
//!
//! Waiting for output with a fixed time limit cuts a slow reader short: under load a client can
//! take longer than any fixed limit to read a large tail, and whatever it had not read yet when
//! the limit ran out was lost once `Delete` closed the streams. Instead, every byte that reaches
//! a target (or leaves a FIFO target to its reader) counts as progress, and a wait gives up only
//! when nothing moved for a whole stall period.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

/// Bytes moved so far by one process's output copies, shared with its waiters.
#[derive(Debug, Default)]
pub struct Progress {
    moved: AtomicU64,
}

impl Progress {
    pub fn add(&self, n: usize) {
        self.moved.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn moved(&self) -> u64 {
        self.moved.load(Ordering::Relaxed)
    }
}

/// The delivery of one process's output: done once every copy ended and its targets were read.
#[derive(Clone)]
pub struct Delivery {
    pub(super) done: watch::Receiver<bool>,
    pub(super) progress: Arc<Progress>,
}

impl Delivery {
    /// Waits until the output is delivered, for as long as it keeps moving: returns false once
    /// nothing moved for `stall` (the reader went away, or takes nothing).
    pub async fn wait(&mut self, stall: Duration) -> bool {
        let mut seen = self.progress.moved();
        loop {
            match tokio::time::timeout(stall, self.done.wait_for(|done| *done)).await {
                // A dropped sender means the copies were aborted: nothing more will come.
                Ok(_) => return true,
                Err(_) => {
                    let now = self.progress.moved();
                    if now == seen {
                        return false;
                    }
                    seen = now;
                }
            }
        }
    }
}

/// Set once the process's exit was reaped. A terminal's copy takes the master's EIO for the end
/// of output only after that: containerd's console reader, which the Go shim uses, also reads on
/// through EIO until the exit has been handled.
#[derive(Debug, Default)]
pub struct ExitSignal {
    exited: AtomicBool,
    notify: Notify,
}

impl ExitSignal {
    pub fn set(&self) {
        self.exited.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    pub fn is_set(&self) -> bool {
        self.exited.load(Ordering::Acquire)
    }

    /// Completes once [`ExitSignal::set`] was called (at once if it already was).
    pub async fn wait(&self) {
        let notified = self.notify.notified();
        if self.is_set() {
            return;
        }
        notified.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A delivery whose copies keep moving bytes is waited for past the stall period; one whose
    /// copies stopped moving is given up on after it.
    #[tokio::test(start_paused = true)]
    async fn a_wait_lasts_while_bytes_move_and_ends_when_they_stop() {
        let (tx, rx) = watch::channel(false);
        let progress = Arc::new(Progress::default());
        let mut d = Delivery {
            done: rx,
            progress: progress.clone(),
        };
        let stall = Duration::from_secs(2);
        let mover = {
            let progress = progress.clone();
            tokio::spawn(async move {
                // 10 s of slow but steady progress, then done.
                for _ in 0..10 {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    progress.add(1);
                }
                let _ = tx.send(true);
                tx
            })
        };
        let started = tokio::time::Instant::now();
        assert!(d.wait(stall).await, "gave up on a reader that kept reading");
        assert!(started.elapsed() >= Duration::from_secs(10));
        let tx = mover.await.unwrap();

        let (tx2, rx2) = watch::channel(false);
        let mut stalled = Delivery {
            done: rx2,
            progress: Arc::new(Progress::default()),
        };
        let started = tokio::time::Instant::now();
        assert!(
            !stalled.wait(stall).await,
            "a stalled delivery counted as done"
        );
        assert!(started.elapsed() >= stall && started.elapsed() < stall * 2);
        drop((tx, tx2));
    }

    #[tokio::test]
    async fn an_exit_signal_set_before_or_after_the_wait_ends_it() {
        let s = Arc::new(ExitSignal::default());
        let waiter = {
            let s = s.clone();
            tokio::spawn(async move { s.wait().await })
        };
        tokio::task::yield_now().await;
        s.set();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), s.wait())
            .await
            .expect("already set");
    }
}
