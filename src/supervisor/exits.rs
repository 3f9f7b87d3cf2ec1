//! Where each reaped exit goes, and the order exits are published in: an exit seen during a
//! start waits for the start event, an exit of a pid not known yet is collected for the create
//! or start in flight, and the init's exit is the container's last. The init's exit is also
//! recorded in the bundle (`exit_record`) before its `TaskExit` leaves, for `shim delete`.

use std::collections::HashMap;
use std::sync::{Arc, MutexGuard};

use super::oom::OomCheck;
use super::{Container, InitExit, Phase, Proc, Shared, Supervisor, Table};
use crate::events::Event;
use crate::process::{ExitInfo, Op, Pid, ProcessId};
use crate::reaper::Exit;

/// Exits seen while creates or starts are in flight, per in-flight call.
#[derive(Default)]
pub(super) struct Collectors {
    seen: HashMap<u64, Vec<Exit>>,
    next: u64,
}

/// Registration of an in-flight create or start in [`Collectors`]; removed on drop, so a
/// failed or cancelled one never leaves a collector behind. Dropping it takes only the
/// collectors' own lock, so it is safe anywhere, including under the table lock.
pub(super) struct Collector {
    shared: Arc<Shared>,
    key: u64,
}

impl Collector {
    /// Stops collecting and returns the exit of `pid` if it was seen. Called under the table
    /// lock (`_table` is the proof), so no exit can fall between the collector and the table.
    pub(super) fn finish(self, _table: &Table, pid: Option<Pid>) -> Option<Exit> {
        let seen = self.shared.collectors().seen.remove(&self.key)?;
        let pid = pid?;
        seen.into_iter().find(|e| e.pid == pid.raw())
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.shared.collectors().seen.remove(&self.key);
    }
}

impl Shared {
    fn collectors(&self) -> MutexGuard<'_, Collectors> {
        self.collectors.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Proc {
    /// The process was reaped: from now on its terminal's EIO is the end of its output.
    fn output_may_end(&self) {
        if let Some(io) = &self.io {
            io.process_exited();
        }
    }
}

pub(super) fn exit_info(e: Exit) -> ExitInfo {
    ExitInfo {
        status: e.status.unsigned_abs(),
        at: e.at,
    }
}

impl Supervisor {
    /// Starts collecting exits of unknown pids for a create or start about to run.
    pub(super) fn collector(&self) -> Collector {
        let mut all = self.shared.collectors();
        let key = all.next;
        all.next += 1;
        all.seen.insert(key, Vec::new());
        Collector {
            shared: self.shared.clone(),
            key,
        }
    }

    /// Routes one reaped exit that no spawner claimed.
    pub(super) fn handle_exit(&self, exit: Exit) {
        let _routed = Routed(&self.shared.reaper);
        let mut t = self.shared.lock();
        let owner = match Pid::new(exit.pid) {
            Some(pid) => t.containers.iter_mut().find_map(|(cid, c)| {
                let process = if c.init_exit.is_none() && c.init.owns_exit(pid) {
                    Some(ProcessId::Init)
                } else {
                    c.execs
                        .iter()
                        .find(|(_, p)| p.owns_exit(pid))
                        .map(|(eid, _)| ProcessId::Exec(eid.clone()))
                };
                process.map(|process| (cid.clone(), c, process))
            }),
            None => None,
        };
        let Some((cid, c, process)) = owner else {
            // Not ours (an orphan), or the pid of a process whose create or start is in flight.
            // The collectors' lock is taken inside the table lock, as everywhere.
            for pending in self.shared.collectors().seen.values_mut() {
                pending.push(exit);
            }
            return;
        };
        let Ok(p) = c.process(&process) else { return };
        p.output_may_end();
        if let Phase::Starting { held_exit } = &mut p.phase {
            tracing::debug!(container = %cid, process = %process, pid = exit.pid, "exit held until start is published");
            *held_exit = Some(exit_info(exit));
            return;
        }
        self.process_exit(&cid, c, &process, exit_info(exit));
    }

    /// Handles a reaped process of container `id`. Called under the lock.
    pub(super) fn process_exit(
        &self,
        id: &str,
        c: &mut Container,
        process: &ProcessId,
        exit: ExitInfo,
    ) {
        if let Ok(p) = c.process(process) {
            p.output_may_end();
        }
        let exec_id = match process {
            ProcessId::Init => {
                self.hold_init_exit(id, c, exit);
                return;
            }
            ProcessId::Exec(exec_id) => exec_id,
        };
        let Some(p) = c.execs.get_mut(exec_id) else {
            return;
        };
        if p.apply(Op::Exit).is_err() {
            return;
        }
        p.exit.send_replace(Some(exit));
        self.shared.events.publish(Event::Exit {
            container_id: id.to_string(),
            id: exec_id.clone(),
            pid: Pid::or_zero(p.pid),
            exit_status: exit.status,
            exited_at: exit.at,
        });
        self.settle_init_exit(id, c);
    }

    /// The init was reaped: its exit waits (see [`InitExit`]) and is published once nothing
    /// holds it back.
    fn hold_init_exit(&self, id: &str, c: &mut Container, exit: ExitInfo) {
        let already_killing = c.init_exit.as_ref().is_some_and(|e| e.killing_all);
        // Without its own pid namespace the container's other processes survive the init.
        let kill_all = c.kill_all_on_exit && !already_killing;
        c.init_exit = Some(InitExit {
            exit,
            killing_all: already_killing || kill_all,
        });
        if kill_all {
            let (runc, sup, id) = (c.runc.clone(), self.clone(), id.to_string());
            tokio::spawn(async move {
                if let Err(e) = sup
                    .runtime_kill(&id, &runc, libc::SIGKILL.unsigned_abs(), true)
                    .await
                {
                    tracing::debug!(container = %id, error = %e, "kill --all after init exit");
                }
                let mut t = sup.shared.lock();
                if let Some(c) = t.containers.get_mut(&id) {
                    if let Some(held) = c.init_exit.as_mut() {
                        held.killing_all = false;
                    }
                    sup.settle_init_exit(&id, c);
                }
            });
        }
        if c.execs_alive() {
            tracing::debug!(container = %id, "init exited; its exit waits for the running execs");
        }
        self.settle_init_exit(id, c);
    }

    /// Publishes a held init exit once nothing holds it back any more: no exec running and no
    /// `kill --all` in flight. Called under the lock.
    pub(super) fn settle_init_exit(&self, id: &str, c: &mut Container) {
        let free = c
            .init_exit
            .as_ref()
            .is_some_and(|e| !e.killing_all && !c.execs_alive());
        if !free {
            return;
        }
        if let Some(held) = c.init_exit.take() {
            self.finish_init_exit(id, c, held.exit);
        }
    }

    /// Records the init's exit, releases waiters and queues its `TaskExit`.
    fn finish_init_exit(&self, id: &str, c: &mut Container, exit: ExitInfo) {
        if c.init.check(Op::Exit).is_err() {
            return;
        }
        // An OOM kill the watcher has not reported yet goes out first: CRI reads `OOMKilled`
        // from the TaskOOM it saw before the exit (containerd#12714).
        if self.report_oom_locked(id, c, None) == OomCheck::NothingNew
            && exit.status == 128 + libc::SIGKILL as u32
        {
            self.report_oom_from_parent(id, c);
        }
        if c.init.apply(Op::Exit).is_err() {
            return;
        }
        c.init.exit.send_replace(Some(exit));
        let pid = Pid::or_zero(c.init.pid);
        tracing::info!(container = %id, pid, status = exit.status, "init exited");
        let recorded = record_exit(&self.shared.records_in_flight, id, &c.bundle, pid, exit);
        self.shared.events.publish_after(
            recorded,
            Event::Exit {
                container_id: id.to_string(),
                id: id.to_string(),
                pid,
                exit_status: exit.status,
                exited_at: exit.at,
            },
        );
    }
}

/// Writes the init's exit into its bundle (`exit_record`) on a thread of its own; the returned
/// receiver is answered when the write is done (or failed: a status `delete` cannot read back
/// is only logged, the exit itself still goes out). Events queued behind it wait for it, so a
/// `TaskExit` never reaches containerd before its record is on disk. `in_flight` counts the
/// writes not done yet.
fn record_exit(
    in_flight: &tokio::sync::watch::Sender<usize>,
    id: &str,
    bundle: &std::path::Path,
    pid: u32,
    exit: ExitInfo,
) -> tokio::sync::oneshot::Receiver<()> {
    let (done, gate) = tokio::sync::oneshot::channel();
    let (id, bundle) = (id.to_string(), bundle.to_path_buf());
    let record = crate::exit_record::Recorded {
        pid,
        status: exit.status,
        at: exit.at,
    };
    in_flight.send_modify(|n| *n += 1);
    let in_flight = in_flight.clone();
    tokio::spawn(async move {
        let written = super::off_thread("record exit", move || {
            crate::exit_record::write(&bundle, &record)
        })
        .await;
        if let Err(e) = written {
            tracing::warn!(container = %id, error = %e, "could not record the exit status in the bundle");
        }
        in_flight.send_modify(|n| *n -= 1);
        let _ = done.send(());
    });
    gate
}

/// Counts an exit as routed once its handling is over (whatever path it took), so an upgrade
/// knows when the reaper's stream is empty.
struct Routed<'a>(&'a crate::reaper::Reaper);

impl Drop for Routed<'_> {
    fn drop(&mut self) {
        self.0.routed_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record counts as in flight from the reap until it is on disk, so an upgrade that
    /// waits for none in flight never carries a `TaskExit` whose record the exec would lose.
    #[tokio::test]
    async fn a_record_is_counted_in_flight_until_it_is_on_disk() {
        let dir = std::env::temp_dir().join(format!("tether-record-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (in_flight, _) = tokio::sync::watch::channel(0usize);
        let exit = ExitInfo {
            status: 3,
            at: std::time::SystemTime::now(),
        };
        let gate = record_exit(&in_flight, "c", &dir, 42, exit);
        assert_eq!(*in_flight.borrow(), 1, "counted before the write starts");
        gate.await.unwrap();
        assert_eq!(*in_flight.borrow(), 0);
        let read = crate::exit_record::read(&dir).unwrap().unwrap();
        assert_eq!((read.pid, read.status), (42, 3));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
