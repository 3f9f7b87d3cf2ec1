//! The one place that calls `waitpid`.
//!
//! The server is a child subreaper, so it must reap every process that re-parents to it,
//! including orphans it never spawned. A global `waitpid(-1)` loop steals the status of any
//! child someone else waits for, so nothing else may wait: every child we fork goes through
//! [`Reaper::spawn`], which registers interest in the pid *before* the reaping loop can see it
//! (spawning and reaping take the same lock), and gets its status from the loop.
//!
//! Exits nobody spawned through us (container init and exec processes, orphans) go to the
//! channel returned by [`Reaper::start`]; the supervisor routes them.

use std::collections::HashMap;
use std::io;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::sync::{mpsc, oneshot, watch};

/// One reaped process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub pid: i32,
    /// Exit code, or 128 + signal number when killed by a signal.
    pub status: i32,
    pub at: SystemTime,
}

/// Handle to the reaping loop; cheap to clone.
#[derive(Clone)]
pub struct Reaper {
    /// Waiters by pid. The lock is held while spawning and while reaping, which is what makes
    /// "subscribe before the exit can be seen" hold.
    waiters: Arc<Mutex<HashMap<i32, oneshot::Sender<Exit>>>>,
    /// How many children [`Reaper::stop`] is still stopping; the server waits for them before
    /// it exits, so none outlives it.
    stopping: Arc<watch::Sender<usize>>,
    /// Where exits nobody spawned through us go.
    unclaimed: mpsc::UnboundedSender<Exit>,
    /// An upgrade's handoff is under way: reap nothing, so every exit not yet routed stays a
    /// zombie for the next image to reap (`src/upgrade`).
    paused: Arc<AtomicBool>,
    /// Exits sent to `unclaimed`, and those the supervisor has routed: equal once the stream
    /// is empty.
    sent: Arc<AtomicU64>,
    routed: Arc<AtomicU64>,
}

/// A spawned child and the future status of it.
pub struct Spawned {
    pub child: Child,
    pub exit: oneshot::Receiver<Exit>,
}

impl Reaper {
    /// Installs the SIGCHLD handler and starts the loop on the current tokio runtime.
    /// Returns the reaper and the stream of exits nobody spawned through it.
    pub fn start() -> io::Result<(Reaper, mpsc::UnboundedReceiver<Exit>)> {
        let mut sigchld = crate::signals::Signals::new(&[libc::SIGCHLD])?;
        let (tx, rx) = mpsc::unbounded_channel();
        let reaper = Reaper {
            waiters: Arc::default(),
            stopping: Arc::new(watch::channel(0).0),
            unclaimed: tx,
            paused: Arc::default(),
            sent: Arc::default(),
            routed: Arc::default(),
        };
        let loop_reaper = reaper.clone();
        tokio::spawn(async move {
            loop {
                // Reap first: children may have exited before the handler was installed.
                loop_reaper.reap_all();
                if sigchld.recv().await.is_err() {
                    break;
                }
            }
        });
        Ok((reaper, rx))
    }

    /// Spawns `cmd` and returns a receiver for its exit. Never call `wait` on the child.
    pub fn spawn(&self, cmd: &mut Command) -> io::Result<Spawned> {
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        let child = cmd.spawn()?;
        let (tx, rx) = oneshot::channel();
        waiters.insert(child.id() as i32, tx);
        Ok(Spawned { child, exit: rx })
    }

    /// Sends `signal` to a child spawned through us, unless it was already reaped. Reaping
    /// takes the same lock, so the pid cannot belong to anyone else meanwhile. False if reaped.
    pub fn signal_child(&self, pid: i32, signal: i32) -> bool {
        let waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        waiters.contains_key(&pid) && crate::sys::signal(pid, signal as u32).is_ok()
    }

    /// Stops a child spawned through us without waiting for it: SIGTERM now, SIGKILL if it has
    /// not exited `grace` later. Its exit is reaped by the loop as usual.
    pub fn stop(&self, pid: i32, exit: oneshot::Receiver<Exit>, grace: Duration) {
        self.signal_child(pid, libc::SIGTERM);
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            // No runtime left to wait on (the server is going away): no grace.
            self.signal_child(pid, libc::SIGKILL);
            return;
        };
        self.stopping.send_modify(|n| *n += 1);
        let reaper = self.clone();
        rt.spawn(async move {
            let mut exit = exit;
            if tokio::time::timeout(grace, &mut exit).await.is_err()
                && reaper.signal_child(pid, libc::SIGKILL)
            {
                tracing::warn!(
                    pid,
                    "child did not exit within {grace:?} of SIGTERM; killed it"
                );
                let _ = tokio::time::timeout(Duration::from_secs(2), exit).await;
            }
            reaper.stopping.send_modify(|n| *n -= 1);
        });
    }

    /// Waits (at most `limit`) until every [`Reaper::stop`] has finished.
    pub async fn settle(&self, limit: Duration) {
        let mut rx = self.stopping.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|&n| n == 0)).await;
    }

    /// Registers interest in a child this process did not spawn in this image (a logger
    /// inherited across an upgrade). Call it before the loop first runs.
    pub fn adopt(&self, pid: i32) -> oneshot::Receiver<Exit> {
        let (tx, rx) = oneshot::channel();
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        waiters.insert(pid, tx);
        rx
    }

    /// Stops (true) or resumes (false) reaping. Resuming reaps what exited meanwhile.
    pub fn pause(&self, on: bool) {
        self.paused.store(on, Ordering::SeqCst);
        if !on {
            self.reap_all();
        }
    }

    /// Called by the consumer of the unclaimed stream after routing each exit.
    pub fn routed_one(&self) {
        self.routed.fetch_add(1, Ordering::SeqCst);
    }

    /// Whether every exit sent to the unclaimed stream has been routed.
    pub fn all_routed(&self) -> bool {
        self.sent.load(Ordering::SeqCst) == self.routed.load(Ordering::SeqCst)
    }

    /// Reaps every exited child, routing each status to its waiter or to `unclaimed`.
    fn reap_all(&self) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        if self.paused.load(Ordering::SeqCst) {
            // Only the children spawned through us (an upgrade's pre-flight); the rest wait.
            let pids: Vec<i32> = waiters.keys().copied().collect();
            for pid in pids {
                let status = match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(_, code)) => code,
                    Ok(WaitStatus::Signaled(_, sig, _)) => 128 + sig as i32,
                    _ => continue,
                };
                if let Some(w) = waiters.remove(&pid) {
                    let _ = w.send(Exit {
                        pid,
                        status,
                        at: SystemTime::now(),
                    });
                }
            }
            return;
        }
        loop {
            let (pid, status) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid.as_raw(), code),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid.as_raw(), 128 + sig as i32),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "waitpid failed");
                    return;
                }
            };
            let exit = Exit {
                pid,
                status,
                at: SystemTime::now(),
            };
            match waiters.remove(&pid) {
                // A dropped receiver means the spawner gave up (timeout); nothing to do.
                Some(waiter) => drop(waiter.send(exit)),
                None => {
                    if self.unclaimed.send(exit).is_ok() {
                        self.sent.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// 4 threads spawn 50 short-lived children each while the loop reaps: each spawner gets
    /// exactly its own child's status, however fast the child died (the lock orders
    /// "subscribe" before "reap"); a child spawned around the reaper lands on the stream.
    ///
    /// `waitpid(-1)` would take the children of every other test in this process, so the test
    /// runs itself again, alone, in a child test process.
    #[test]
    fn every_exit_goes_to_its_spawner_or_to_the_unclaimed_stream() {
        const ALONE: &str = "TETHER_REAPER_TEST_ALONE";
        if std::env::var_os(ALONE).is_none() {
            let out = Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "reaper::tests::every_exit_goes_to_its_spawner_or_to_the_unclaimed_stream",
                    "--nocapture",
                ])
                .env(ALONE, "1")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success() && text.contains("1 passed"), "{text}");
            return;
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (reaper, mut unclaimed) = Reaper::start().unwrap();
            let spawners: Vec<_> = (0..4)
                .map(|t| {
                    let reaper = reaper.clone();
                    std::thread::spawn(move || {
                        (0..50)
                            .map(|i| {
                                let code = (t * 50 + i) % 256;
                                let spawned = reaper
                                    .spawn(
                                        Command::new("/bin/sh")
                                            .args(["-c", &format!("exit {code}")]),
                                    )
                                    .unwrap();
                                (spawned.child.id() as i32, code, spawned.exit)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            // One child the reaper did not spawn, killed by a signal: 128 + 9. The loop reaps it.
            #[allow(clippy::zombie_processes)]
            let stray = Command::new("/bin/sleep").arg("100").spawn().unwrap();
            nix::sys::signal::kill(
                Pid::from_raw(stray.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
            for spawner in spawners {
                for (pid, code, exit) in
                    tokio::task::spawn_blocking(move || spawner.join().unwrap())
                        .await
                        .unwrap()
                {
                    let exit = tokio::time::timeout(Duration::from_secs(20), exit)
                        .await
                        .expect("exit reported")
                        .expect("waiter kept");
                    assert_eq!((exit.pid, exit.status), (pid, code));
                }
            }
            let stray_exit = tokio::time::timeout(Duration::from_secs(20), unclaimed.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                (stray_exit.pid, stray_exit.status),
                (stray.id() as i32, 137)
            );
            assert!(
                unclaimed.try_recv().is_err(),
                "a spawned child's exit also reached the unclaimed stream"
            );
        });
    }
}
