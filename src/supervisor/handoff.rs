//! The process table out to an upgrade's next image and back in (`src/upgrade`).
//!
//! Export runs with the server quiesced: no request in flight, the reaper paused and every
//! exit it reaped already routed, so each process is settled and each exit status is either in
//! the table or still a zombie the next image reaps. Import rebuilds the table before the new
//! image's reaper first runs, so every exit finds its process.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{Container, InitExit, Phase, Proc, Supervisor};
use crate::error::{Error, Result};
use crate::io::{IoState, ProcessIo, SpoolConfig, StdioConfig};
use crate::process::{ExitInfo, Kind, Pid, State};
use crate::runtime::{Runc, SpoolWhenFull};

/// The whole table.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct TableState {
    containers: Vec<ContainerState>,
    oom_published: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct ContainerState {
    id: String,
    bundle: PathBuf,
    runc: Runc,
    init: ProcState,
    execs: Vec<(String, ProcState)>,
    /// The init's held-back exit, and whether `runc kill --all` was running for it.
    init_exit: Option<(ExitInfo, bool)>,
    kill_all_on_exit: bool,
    io_owner: (u32, u32),
    oom_reported: u64,
    oom_counted: bool,
    oom_parent_base: Option<(u64, u64)>,
    watched_oom: bool,
    /// Where the container's cgroup is: located again from the init's pid it would be wrong
    /// for an init killed during the handoff (a zombie's `/proc/<pid>/cgroup` names the root).
    /// Absent in a state written before it was carried.
    #[serde(default)]
    cgroup: Option<crate::cgroups::ContainerCgroup>,
    mounted_rootfs: bool,
    /// The spool settings of the container's output streams: (dir, size, when full).
    spool: (PathBuf, u64, SpoolWhenFull),
}

#[derive(Debug, Serialize, Deserialize)]
struct ProcState {
    pid: Option<i32>,
    state: State,
    exit: Option<ExitInfo>,
    stdio: StdioConfig,
    spec: Vec<u8>,
    /// A close-on-exec duplicate of the pidfd: the handle keeps naming the same process.
    pidfd: Option<RawFd>,
    io: Option<IoState>,
}

impl TableState {
    /// Every descriptor the state names, for the exec to keep.
    pub fn fds(&self) -> Vec<RawFd> {
        let mut fds = Vec::new();
        for c in &self.containers {
            for p in std::iter::once(&c.init).chain(c.execs.iter().map(|(_, p)| p)) {
                fds.extend(p.pidfd);
                fds.extend(p.io.iter().flat_map(IoState::fds));
            }
        }
        fds
    }
}

fn export_proc(p: &Proc, dups: &mut Vec<RawFd>) -> Result<ProcState> {
    if p.phase != Phase::Settled {
        return Err(Error::FailedPrecondition(
            "a process is starting or being deleted".into(),
        ));
    }
    let pidfd = match &p.pidfd {
        Some(fd) => {
            let n =
                crate::sys::dup_cloexec(fd.as_raw_fd()).map_err(Error::io("duplicate a pidfd"))?;
            dups.push(n);
            Some(n)
        }
        None => None,
    };
    let io = match &p.io {
        Some(io) => {
            let s = io.export()?;
            dups.extend(s.fds());
            Some(s)
        }
        None => None,
    };
    Ok(ProcState {
        pid: p.pid.map(Pid::raw),
        state: p.state,
        exit: *p.exit.borrow(),
        stdio: p.stdio.clone(),
        spec: p.spec.clone(),
        pidfd,
        io,
    })
}

impl Supervisor {
    /// Waits (at most `limit`) until no exit record is being written; false if one still is.
    /// The export must come after: `TaskExit` is carried, so its record must be on disk.
    pub async fn records_written(&self, limit: std::time::Duration) -> bool {
        let mut n = self.shared.records_in_flight.subscribe();
        tokio::time::timeout(limit, n.wait_for(|n| *n == 0))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The table with duplicates of every descriptor it owns, or why it cannot be handed over
    /// now (a create, start, delete or restore in flight). On error nothing is left open.
    pub fn export(&self) -> Result<TableState> {
        let t = self.shared.lock();
        if !t.reserved.is_empty() {
            return Err(Error::FailedPrecondition(
                "a create or delete is in flight".into(),
            ));
        }
        let mut dups = Vec::new();
        let result = (|| {
            let mut containers = Vec::new();
            for (id, c) in &t.containers {
                if c.spool.spooling() {
                    return Err(Error::FailedPrecondition(format!(
                        "container {id} holds output in a spool file while its reader is away"
                    )));
                }
                if c.restore.is_some() {
                    return Err(Error::FailedPrecondition(format!(
                        "container {id} waits to be restored from a checkpoint"
                    )));
                }
                let execs = c
                    .execs
                    .iter()
                    .map(|(eid, p)| Ok((eid.clone(), export_proc(p, &mut dups)?)))
                    .collect::<Result<_>>()?;
                containers.push(ContainerState {
                    id: id.clone(),
                    bundle: c.bundle.clone(),
                    runc: c.runc.clone(),
                    init: export_proc(&c.init, &mut dups)?,
                    execs,
                    init_exit: c.init_exit.as_ref().map(|e| (e.exit, e.killing_all)),
                    kill_all_on_exit: c.kill_all_on_exit,
                    io_owner: c.io_owner,
                    oom_reported: c.oom_reported,
                    oom_counted: c.oom_counted,
                    oom_parent_base: c.oom_parent_base,
                    watched_oom: c.oom_watch.is_some(),
                    cgroup: c.cgroup.clone(),
                    mounted_rootfs: c.mounted_rootfs,
                    spool: (c.spool.dir.clone(), c.spool.size, c.spool.when_full),
                });
            }
            Ok(TableState {
                containers,
                oom_published: self.shared.oom_published.load(Relaxed),
            })
        })();
        if result.is_err() {
            dups.into_iter().for_each(crate::sys::close_raw);
        }
        result
    }

    /// Fills the (empty) table from the previous image's state and starts its stdio copies
    /// and OOM watches again. Call it before anything awaits, so the reaper has not run.
    pub fn import(&self, state: TableState) -> Result<()> {
        self.shared
            .oom_published
            .store(state.oom_published, Relaxed);
        let mut t = self.shared.lock();
        for cs in state.containers {
            let (dir, size, when_full) = cs.spool;
            let spool = SpoolConfig::new(dir, size, when_full, &cs.id);
            let proc_of = |kind: Kind, ps: ProcState| -> Result<Proc> {
                let io = ps
                    .io
                    .map(|s| ProcessIo::import(s, &self.shared.reaper, &spool))
                    .transpose()?;
                if let (Some(io), Some(_)) = (&io, ps.exit) {
                    // Reaped before the handoff: its terminal's EIO is the end of its output.
                    io.process_exited();
                }
                let pidfd = ps
                    .pidfd
                    .map(|fd| crate::sys::adopt_fd(fd).map_err(Error::io("inherited pidfd")))
                    .transpose()?;
                Ok(Proc {
                    kind,
                    pid: ps.pid.and_then(Pid::new),
                    state: ps.state,
                    phase: Phase::Settled,
                    exit: watch::channel(ps.exit).0,
                    stdio: ps.stdio,
                    io,
                    spec: ps.spec,
                    pidfd,
                })
            };
            let execs = cs
                .execs
                .into_iter()
                .map(|(eid, ps)| Ok((eid, proc_of(Kind::Exec, ps)?)))
                .collect::<Result<HashMap<_, _>>>()?;
            let mut c = Container {
                bundle: cs.bundle,
                runc: cs.runc,
                init: proc_of(Kind::Init, cs.init)?,
                execs,
                init_exit: cs
                    .init_exit
                    .map(|(exit, killing_all)| InitExit { exit, killing_all }),
                kill_all_on_exit: cs.kill_all_on_exit,
                io_owner: cs.io_owner,
                cgroup: None,
                oom_reported: 0,
                oom_counted: false,
                oom_parent_base: None,
                oom_watch: None,
                restore: None,
                mounted_rootfs: cs.mounted_rootfs,
                spool,
            };
            match cs.cgroup {
                Some(cg) if cs.watched_oom && c.init.state != State::Stopped => {
                    self.watch_oom_in(&cs.id, &mut c, cg)
                }
                Some(cg) => c.cgroup = Some(cg),
                None if cs.watched_oom && c.init.state != State::Stopped => {
                    self.watch_cgroup(&cs.id, &mut c)
                }
                None => {}
            }
            // What was reported before the exec stays reported; a kill during the handoff is
            // reported now, before anything else of this container.
            c.oom_reported = cs.oom_reported;
            c.oom_counted = cs.oom_counted;
            c.oom_parent_base = cs.oom_parent_base;
            if c.cgroup.is_some() {
                self.report_oom_locked(&cs.id, &mut c, None);
            }
            t.containers.insert(cs.id, c);
        }
        Ok(())
    }
}
