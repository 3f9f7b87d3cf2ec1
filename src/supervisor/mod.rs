//! The process table: which containers exist, what state each process is in, where each reaped
//! exit belongs, and the order events leave in.
//!
//! # Rules kept here
//! - The table lock (`std::sync::Mutex`) is held only for short sections with no `.await`, no
//!   runtime call and no blocking system call: runc runs outside it, and mounts and bundle file
//!   I/O run on a thread of their own ([`off_thread`]), so `State`, `Wait` and `Connect` always
//!   answer.
//! - Events are queued while the lock is held, at the moment the decision is made, so their
//!   order is the order of the decisions.
//! - `TaskExit` never precedes `TaskStart`: while a start is in flight the process is in
//!   [`Phase::Starting`] and an exit for it is held there, then handled right after the start
//!   event is queued. While a create is in flight its init pid is not yet known, so every exit
//!   of an unknown pid is also collected for it (Go's `preStart`/`handleStarted`; `exits.rs`).
//! - Exit status is kept until `Delete`; `Wait` is a `watch` on it, so every waiter, early or
//!   late, gets the same status exactly once.
//!
//! # Files
//! - `mod.rs`: the table and the requests that are one short look at it.
//! - `init.rs`: a container's create, start, restore and delete.
//! - `exec.rs`: an exec's registration, start and delete.
//! - `exits.rs`: routing reaped exits, the init-exit-last rule, collectors.
//! - `oom.rs`: the cgroup's OOM kills as `TaskOOM`.
//! - `spec.rs`: what `Create` reads from the bundle and leaves in it.
//! - `resources.rs`: checks of `Update`'s resources.
//! - `teardown.rs`: killing and deleting without a runtime that does not answer in time.

use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

mod exec;
mod exits;
mod handoff;
mod init;
mod oom;
mod resources;
mod spec;
mod teardown;

pub use handoff::TableState;

use crate::cgroups::{ContainerCgroup, Metrics};
use crate::error::{Error, Result};
use crate::events::{Event, EventSink};
use crate::io::{IoContext, LoggerEnv, ProcessIo, SpoolConfig, StdioConfig, DRAIN_STALL};
use crate::mount::Mount;
use crate::process::{ExitInfo, Kind, Op, Pid, ProcessId, State};
use crate::reaper::{Exit, Reaper};
use crate::runtime::{CheckpointOptions, Runc, RuncOptions, RuncStdio};

/// How long `Wait` holds an exit back while the process's output moves no byte: it holds it
/// for as long as the output keeps moving, so a client that reads slowly gets all of it before
/// it tears its IO down.
pub const WAIT_STALL: Duration = Duration::from_secs(2);

/// Test-only knob, read once at start: every rootfs mount first sleeps this many milliseconds
/// on its thread, so a test can prove that a slow mount holds up no other request.
const MOUNT_DELAY_ENV: &str = "TETHER_TEST_MOUNT_DELAY_MS";

/// A `Create` in domain terms.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    pub id: String,
    pub bundle: PathBuf,
    pub rootfs: Vec<Mount>,
    pub stdio: StdioConfig,
    pub options: RuncOptions,
    pub checkpoint: String,
}

/// What `State` reports.
#[derive(Debug, Clone)]
pub struct ProcessState {
    pub id: String,
    pub exec_id: String,
    pub bundle: PathBuf,
    /// 0 while the process has not started (the task API's convention).
    pub pid: u32,
    pub state: State,
    pub stdio: StdioConfig,
    pub exit: Option<ExitInfo>,
}

/// What `Delete` reports.
#[derive(Debug, Clone, Copy)]
pub struct Deleted {
    /// 0 if the process never started.
    pub pid: u32,
    pub exit: ExitInfo,
}

/// The process table and the collaborators it drives. Cheap to clone.
#[derive(Clone)]
pub struct Supervisor {
    shared: Arc<Shared>,
}

struct Shared {
    table: Mutex<Table>,
    /// In-flight creates and starts collecting exits of pids not known yet. A lock of its own,
    /// taken alone or inside the table lock, never around it: a `Collector` dropped anywhere
    /// (even under the table lock) only needs this one.
    collectors: Mutex<exits::Collectors>,
    reaper: Reaper,
    events: EventSink,
    namespace: String,
    /// Deadline of each runtime call (CRIU calls get more; see `runtime`).
    runtime_timeout: Duration,
    /// See [`MOUNT_DELAY_ENV`]; `None` outside tests.
    mount_delay: Option<Duration>,
    /// `TaskOOM`s published so far, all containers together.
    oom_published: std::sync::atomic::AtomicU64,
    /// Exit records being written (`exits::record_exit`): an upgrade waits for none, since a
    /// write still on its thread would die with the exec.
    records_in_flight: tokio::sync::watch::Sender<usize>,
}

#[derive(Default)]
struct Table {
    containers: HashMap<String, Container>,
    /// Ids whose `Create` is in flight, or whose `Delete` is still cleaning up: taken, but not
    /// visible.
    reserved: HashSet<String>,
}

struct Container {
    bundle: PathBuf,
    runc: Runc,
    init: Proc,
    execs: HashMap<String, Proc>,
    /// The init was reaped but its `TaskExit` is held back (see [`InitExit`]).
    init_exit: Option<InitExit>,
    /// The container has no pid namespace of its own, so its processes outlive its init
    /// unless we kill them (the kernel does it for a private namespace).
    kill_all_on_exit: bool,
    /// uid/gid owning the stdio pipes (user-namespaced containers).
    io_owner: (u32, u32),
    /// The spool behind every output stream of the container's processes.
    spool: SpoolConfig,
    /// The container's cgroup, found from its init at create (None if it was already gone):
    /// `Stats` reads it, and the OOM count is checked against it before the init's exit.
    cgroup: Option<ContainerCgroup>,
    /// OOM kills already reported (`TaskOOM`), so each is published once.
    oom_reported: u64,
    /// The kernel keeps an `oom_kill` counter for this cgroup. Then an unreadable counter
    /// means the cgroup is gone, not that an OOM happened.
    oom_counted: bool,
    /// The parent cgroup's `oom_kill` count and [`Shared::oom_published`] when the watch
    /// began: for an init SIGKILLed once its own cgroup was already removed (see
    /// `oom.rs`, `report_oom_from_parent`).
    oom_parent_base: Option<(u64, u64)>,
    /// Forwards the cgroup's OOM notifications; aborted at delete.
    oom_watch: Option<tokio::task::JoinHandle<()>>,
    /// Set by a Create from a checkpoint: Start restores instead of starting.
    restore: Option<Restore>,
    /// We mounted `rootfs` mounts and must take them down at delete.
    mounted_rootfs: bool,
}

/// A reaped init whose `TaskExit` waits, so that it is the container's last event: for the
/// execs still running, and for `runc kill --all` when the container shares a pid namespace
/// (as with the Go shim: a client that deletes on Wait must not race `runc delete` against it).
struct InitExit {
    exit: ExitInfo,
    /// `runc kill --all` is running.
    killing_all: bool,
}

/// A transition of one process that runs outside the table lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing in flight.
    Settled,
    /// A start (or restore) is in flight. An exit reaped meanwhile waits here until the start
    /// event is queued.
    Starting { held_exit: Option<ExitInfo> },
    /// The container's `Delete` is draining output and running `runc delete` (the init only).
    Deleting,
}

/// A checkpoint to restore at Start, with the stdio prepared at Create.
struct Restore {
    image: PathBuf,
    stdio: RuncStdio,
}

impl Restore {
    /// What one `runc restore` consumes; the original stays for a retry.
    fn try_clone(&self) -> Result<Restore> {
        let dup = |fd: &Option<OwnedFd>| {
            fd.as_ref()
                .map(OwnedFd::try_clone)
                .transpose()
                .map_err(Error::io("duplicate the restore's stdio"))
        };
        let s = &self.stdio;
        let stdio = RuncStdio {
            stdin: dup(&s.stdin)?,
            stdout: dup(&s.stdout)?,
            stderr: dup(&s.stderr)?,
            console_socket: s.console_socket.clone(),
        };
        Ok(Restore {
            image: self.image.clone(),
            stdio,
        })
    }
}

/// One process (the init or an exec) as the table tracks it.
struct Proc {
    kind: Kind,
    /// `None` until the process exists (an exec before its start, an init before a restore).
    pid: Option<Pid>,
    /// Changed only through [`Proc::apply`], so every transition obeys `process::State`.
    state: State,
    phase: Phase,
    exit: watch::Sender<Option<ExitInfo>>,
    stdio: StdioConfig,
    /// Taken out while `Delete` drains it.
    io: Option<ProcessIo>,
    /// An exec's OCI process spec (JSON), kept from `Exec` to its `Start`.
    spec: Vec<u8>,
    /// A handle on the process itself, opened right after its pid was read: signals go through
    /// it, so a recycled pid can never receive a signal meant for this process.
    pidfd: Option<OwnedFd>,
}

impl Proc {
    fn new(kind: Kind, pid: Option<Pid>, stdio: StdioConfig, io: Option<ProcessIo>) -> Proc {
        Proc {
            kind,
            pid,
            state: State::Created,
            phase: Phase::Settled,
            exit: watch::channel(None).0,
            stdio,
            io,
            spec: Vec::new(),
            pidfd: pid.and_then(|p| crate::sys::pidfd_open(p.raw()).ok()),
        }
    }

    /// The state `op` would lead to, or why it is refused; changes nothing.
    fn check(&self, op: Op) -> Result<State> {
        self.state.apply(op, self.kind)
    }

    /// Makes the transition `op`, or refuses it and changes nothing.
    fn apply(&mut self, op: Op) -> Result<()> {
        self.state = self.check(op)?;
        Ok(())
    }

    /// The process now runs as `pid`. With `keep_handle` false (it was already seen to exit,
    /// so the pid may be anyone's by now) no pidfd is kept.
    fn started_as(&mut self, pid: Pid, keep_handle: bool) {
        self.pid = Some(pid);
        self.pidfd = keep_handle
            .then(|| crate::sys::pidfd_open(pid.raw()).ok())
            .flatten();
    }

    /// Ends a start: back to [`Phase::Settled`], returning the exit held meanwhile.
    fn end_start(&mut self) -> Option<ExitInfo> {
        match std::mem::replace(&mut self.phase, Phase::Settled) {
            Phase::Starting { held_exit } => held_exit,
            other => {
                self.phase = other;
                None
            }
        }
    }

    fn starting(&self) -> bool {
        matches!(self.phase, Phase::Starting { .. })
    }

    /// Whether a reaped exit of `pid` can be this process's. The pid alone is not enough: the
    /// reaper's report is routed after the fact, and by then a new process (say an exec just
    /// started) may have been given the same pid. Its pidfd tells the two apart: a process
    /// whose handle says it is still running cannot be the one that was reaped.
    fn owns_exit(&self, pid: Pid) -> bool {
        self.pid == Some(pid)
            && self.state != State::Stopped
            && self.pidfd.as_ref().is_none_or(crate::sys::pidfd_exited)
    }

    fn alive(&self) -> bool {
        self.starting() || self.state == State::Running
    }
}

impl Container {
    fn process(&mut self, process: &ProcessId) -> Result<&mut Proc> {
        match process {
            ProcessId::Init => Ok(&mut self.init),
            ProcessId::Exec(exec_id) => self
                .execs
                .get_mut(exec_id)
                .ok_or_else(|| Error::NotFound(format!("exec {exec_id} not found"))),
        }
    }

    /// The one answer to "is a start or delete of this container in flight?": then another
    /// start, delete, pause or resume is refused.
    fn busy(&self) -> bool {
        self.init.phase != Phase::Settled
    }

    fn refuse_if_busy(&self, id: &str) -> Result<()> {
        if self.busy() {
            return Err(Error::FailedPrecondition(format!("container {id} is busy")));
        }
        Ok(())
    }

    /// Whether the init was reaped (its exit may still be held behind execs).
    fn init_exited(&self) -> bool {
        self.init_exit.is_some() || self.init.state == State::Stopped
    }

    fn execs_alive(&self) -> bool {
        self.execs.values().any(Proc::alive)
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Table> {
        // A panic under the lock cannot leave the table half-updated in a way that matters more
        // than losing every container, so keep serving.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Table {
    fn container(&mut self, id: &str) -> Result<&mut Container> {
        self.containers
            .get_mut(id)
            .ok_or_else(|| Error::NotFound(format!("container {id} not found")))
    }
}

/// Runs blocking work (a mount, bundle file I/O) on a short-lived thread of its own and awaits
/// it, so the runtime's only thread keeps answering meanwhile. Not tokio's blocking pool: that
/// would keep an idle thread, and its memory, for seconds after every create. If no thread can
/// be made (the task's thread limit), the work runs here rather than not at all: an unmount
/// skipped would leave the rootfs mounted.
async fn off_thread<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let work = Arc::new(Mutex::new(Some(work)));
    let theirs = work.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name(what.into())
        .spawn(move || {
            let work = theirs.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(work) = work {
                let _ = tx.send(work());
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no thread to {what}; doing it on the server thread");
        let work = work.lock().unwrap_or_else(|p| p.into_inner()).take();
        return match work {
            Some(work) => work(),
            None => Err(Error::io(format!("start a thread to {what}"))(e)),
        };
    }
    rx.await.unwrap_or_else(|_| {
        Err(Error::io(what)(std::io::Error::other(
            "its thread ended without an answer",
        )))
    })
}

impl Supervisor {
    /// Builds the supervisor and starts routing the reaper's unclaimed exits into it.
    pub fn new(
        reaper: Reaper,
        exits: mpsc::UnboundedReceiver<Exit>,
        events: EventSink,
        namespace: String,
        runtime_timeout: Duration,
    ) -> Supervisor {
        let mount_delay = std::env::var(MOUNT_DELAY_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis);
        let shared = Arc::new(Shared {
            table: Mutex::default(),
            collectors: Mutex::default(),
            reaper,
            events,
            namespace,
            runtime_timeout,
            mount_delay,
            oom_published: Default::default(),
            records_in_flight: tokio::sync::watch::channel(0).0,
        });
        let sup = Supervisor { shared };
        let routing = sup.clone();
        tokio::spawn(async move {
            let mut exits = exits;
            while let Some(exit) = exits.recv().await {
                routing.handle_exit(exit);
            }
        });
        sup
    }

    /// True when no container exists or is being created: the server may exit.
    pub fn is_empty(&self) -> bool {
        let t = self.shared.lock();
        t.containers.is_empty() && t.reserved.is_empty()
    }

    pub async fn start(&self, id: &str, process: &ProcessId) -> Result<u32> {
        match process {
            ProcessId::Init => self.start_init(id).await,
            ProcessId::Exec(exec_id) => self.start_exec(id, exec_id).await,
        }
    }

    pub async fn delete(&self, id: &str, process: &ProcessId) -> Result<Deleted> {
        match process {
            ProcessId::Init => self.delete_init(id).await,
            ProcessId::Exec(exec_id) => self.delete_exec(id, exec_id).await,
        }
    }

    pub async fn kill(&self, id: &str, process: &ProcessId, signal: u32, all: bool) -> Result<()> {
        let (runc, state, signalled) = {
            let mut t = self.shared.lock();
            let c = t.container(id)?;
            if let ProcessId::Exec(_) = process {
                // Execs are signalled directly, as the Go shim does. A paused exec is frozen
                // with its container; the signal waits for resume.
                let p = c.process(process)?;
                p.check(Op::Kill)?;
                return match (&p.pidfd, p.pid) {
                    (Some(fd), _) => crate::sys::pidfd_signal(fd, signal),
                    (None, Some(pid)) => crate::sys::signal(pid.raw(), signal),
                    (None, None) => Err(Error::FailedPrecondition(format!(
                        "{process} is not started"
                    ))),
                };
            }
            c.init.check(Op::Kill)?;
            // The init too is signalled through its pidfd: no runtime process per signal, and a
            // recycled pid is never hit. `--all` needs the runtime (it walks the cgroup), and so
            // does a runtime whose pid file names a sandbox rather than the container process.
            let signalled = match &c.init.pidfd {
                Some(fd) if !all && c.runc.pid_is_the_container_process() => {
                    crate::sys::pidfd_signal(fd, signal)?;
                    true
                }
                _ => false,
            };
            (c.runc.clone(), c.init.state, signalled)
        };
        if !signalled {
            self.runtime_kill(id, &runc, signal, all).await?;
        }
        if state == State::Paused && signal == libc::SIGKILL.unsigned_abs() {
            // Frozen processes only die once thawed.
            self.thaw_after_sigkill(id, &runc).await;
        }
        Ok(())
    }

    /// `Pause`: freezes the whole container.
    pub async fn pause(&self, id: &str) -> Result<()> {
        self.freeze(id, Op::Pause).await
    }

    /// `Resume`: thaws the whole container.
    pub async fn resume(&self, id: &str) -> Result<()> {
        self.freeze(id, Op::Resume).await
    }

    /// `op` is [`Op::Pause`] or [`Op::Resume`].
    async fn freeze(&self, id: &str, op: Op) -> Result<()> {
        let runc = {
            let mut t = self.shared.lock();
            let c = t.container(id)?;
            c.refuse_if_busy(id)?;
            c.init.check(op)?;
            c.runc.clone()
        };
        if op == Op::Pause {
            runc.pause(&self.shared.reaper, id).await?;
        } else {
            runc.resume(&self.shared.reaper, id).await?;
        }
        let mut t = self.shared.lock();
        let c = t.container(id)?;
        // The init may have been killed meanwhile; then the exit already decided the state.
        if c.init.apply(op).is_ok() {
            let container_id = id.to_string();
            self.shared.events.publish(if op == Op::Pause {
                Event::Paused { container_id }
            } else {
                Event::Resumed { container_id }
            });
        }
        Ok(())
    }

    /// `Update`: new resources (runtime-spec `LinuxResources` JSON). What runc or the kernel
    /// would certainly refuse is InvalidArgument before runc runs, so it changes nothing; a
    /// failure of `runc update` itself stays a runtime error (Unknown, with runc's message), as
    /// it may have applied part of the request.
    pub async fn update(&self, id: &str, data: &[u8]) -> Result<()> {
        let resources = resources::validate(data)?;
        let (runc, unified) = {
            let mut t = self.shared.lock();
            let c = t.container(id)?;
            c.init.check(Op::Modify)?;
            (
                c.runc.clone(),
                c.cgroup.as_ref().map(ContainerCgroup::is_unified),
            )
        };
        if let Some(unified) = unified {
            resources::for_hierarchy(&resources, unified)?;
        }
        runc.update(&self.shared.reaper, id, data).await
    }

    /// `Checkpoint` through runc and CRIU. On failure CRIU's dump log is kept in the bundle as
    /// `criu-dump.log` (as the Go shim does) and its path is part of the error.
    pub async fn checkpoint(&self, id: &str, mut opts: CheckpointOptions) -> Result<()> {
        let (runc, bundle) = {
            let mut t = self.shared.lock();
            let c = t.container(id)?;
            c.init.check(Op::Checkpoint)?;
            (c.runc.clone(), c.bundle.clone())
        };
        if opts.work_path.as_os_str().is_empty() {
            opts.work_path = bundle.join("work").join("criu-work");
        }
        if opts.image_path.as_os_str().is_empty() {
            return Err(Error::InvalidArgument(
                "checkpoint needs an image path".into(),
            ));
        }
        let dirs = [opts.work_path.clone(), opts.image_path.clone()];
        off_thread("checkpoint", move || {
            for dir in dirs {
                std::fs::create_dir_all(&dir)
                    .map_err(Error::io(format!("create {}", dir.display())))?;
            }
            Ok(())
        })
        .await?;
        match runc.checkpoint(&self.shared.reaper, id, &opts).await {
            Ok(()) => Ok(()),
            Err(Error::Runtime { op, msg }) => {
                let kept = bundle.join("criu-dump.log");
                let log = opts.work_path.join("dump.log");
                let copied = {
                    let kept = kept.clone();
                    off_thread("checkpoint", move || {
                        std::fs::copy(log, kept).map_err(Error::io("copy dump.log"))
                    })
                    .await
                };
                let msg = match copied {
                    Ok(_) => format!("{msg} (CRIU log: {})", kept.display()),
                    Err(_) => msg,
                };
                Err(Error::Runtime { op, msg })
            }
            Err(e) => Err(e),
        }
    }

    pub async fn wait(&self, id: &str, process: &ProcessId) -> Result<ExitInfo> {
        let (mut rx, delivery) = {
            let mut t = self.shared.lock();
            let p = t.container(id)?.process(process)?;
            (
                p.exit.subscribe(),
                p.io.as_ref().and_then(ProcessIo::delivery),
            )
        };
        let exit = rx
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|e| *e)
            .ok_or_else(|| Error::NotFound(format!("{process} of {id} was deleted")))?;
        // Answer once the process's output has reached its targets, for as long as it keeps
        // moving: a client that tears its IO down when Wait returns (ctr does, under load) must
        // not lose the tail.
        if let Some(mut delivery) = delivery {
            delivery.wait(WAIT_STALL).await;
        }
        Ok(exit)
    }

    pub fn state(&self, id: &str, process: &ProcessId) -> Result<ProcessState> {
        let mut t = self.shared.lock();
        let c = t.container(id)?;
        let bundle = c.bundle.clone();
        let container_paused = c.init.state == State::Paused;
        let p = c.process(process)?;
        let state = ProcessState {
            id: id.to_string(),
            exec_id: process.exec_id().to_string(),
            bundle,
            pid: Pid::or_zero(p.pid),
            // An exec is frozen along with its container.
            state: if container_paused && p.state == State::Running {
                State::Paused
            } else {
                p.state
            },
            stdio: p.stdio.clone(),
            exit: *p.exit.borrow(),
        };
        Ok(state)
    }

    /// Pids of every process in the container, each with its exec id if it is an exec.
    ///
    /// A container whose init has exited but which is not deleted answers with the init's pid
    /// when nothing else is left (rather than runc's empty list or error): containerd 1.7+
    /// takes a shim whose `Pids` is empty or an error on reload for leaked and deletes it, and
    /// the exit status with it. An id this server never created stays `NotFound`, so a server
    /// that never got its `Create` is still cleaned up.
    pub async fn pids(&self, id: &str) -> Result<Vec<(u32, Option<String>)>> {
        let (runc, cgroup) = {
            let mut t = self.shared.lock();
            let c = t.container(id)?;
            (c.runc.clone(), c.cgroup.clone())
        };
        // The cgroup's own files when it is the container's alone, else `runc ps` (which
        // reads the same files). containerd 1.7+ calls Pids on every shim, one after another,
        // when it restarts: a fork and exec of runc per shim would be most of that wait.
        let own = std::process::id();
        let listed = match cgroup.map(|cg| cg.procs()) {
            Some(Ok(pids)) if !pids.iter().any(|p| p.unsigned_abs() == own) => Ok(pids),
            _ => runc.ps(&self.shared.reaper, id).await,
        };
        let mut t = self.shared.lock();
        let c = t.container(id)?;
        let exited_init = c.init.pid.filter(|_| c.init.state == State::Stopped);
        let pids = match (listed, exited_init) {
            (Ok(pids), Some(init)) if pids.is_empty() => return Ok(vec![(init.as_u32(), None)]),
            (Err(_), Some(init)) => return Ok(vec![(init.as_u32(), None)]),
            (listed, _) => listed?,
        };
        let exec_of = |pid: Option<Pid>| {
            c.execs
                .iter()
                .find(|(_, p)| pid.is_some() && p.pid == pid)
                .map(|(e, _)| e.clone())
        };
        Ok(pids
            .into_iter()
            .map(|pid| (pid.unsigned_abs(), exec_of(Pid::new(pid))))
            .collect())
    }

    /// The init pid of `id`, or 0 when unknown (Connect is a liveness probe and never fails).
    pub fn init_pid(&self, id: &str) -> u32 {
        Pid::or_zero(
            self.shared
                .lock()
                .containers
                .get(id)
                .and_then(|c| c.init.pid),
        )
    }

    /// `ResizePty`.
    pub fn resize_pty(&self, id: &str, process: &ProcessId, width: u32, height: u32) -> Result<()> {
        let mut t = self.shared.lock();
        match t.container(id)?.process(process)?.io.as_ref() {
            Some(io) => io.resize(width, height),
            None => Ok(()),
        }
    }

    /// `CloseIO`: with `stdin`, EOF reaches the process once the client closed its end too.
    pub fn close_io(&self, id: &str, process: &ProcessId, stdin: bool) -> Result<()> {
        let mut t = self.shared.lock();
        let p = t.container(id)?.process(process)?;
        if let (true, Some(io)) = (stdin, p.io.as_mut()) {
            io.close_stdin();
        }
        Ok(())
    }

    /// `Stats`: the container's cgroup metrics, read from the cgroup files.
    pub fn stats(&self, id: &str) -> Result<Metrics> {
        let cg = {
            let mut t = self.shared.lock();
            t.container(id)?.cgroup.clone()
        };
        cg.ok_or_else(|| Error::NotFound(format!("container {id} has no cgroup")))?
            .metrics()
    }

    fn io_context<'a>(
        &'a self,
        container_id: &'a str,
        owner: (u32, u32),
        spool: &SpoolConfig,
    ) -> IoContext<'a> {
        IoContext {
            reaper: &self.shared.reaper,
            logger_env: LoggerEnv {
                container_id,
                namespace: &self.shared.namespace,
            },
            owner,
            spool: spool.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reaped pid is attributed to a tracked process only if that process's pidfd says it
    /// has exited: a process given the same pid after the reap cannot take the exit.
    #[test]
    fn an_exit_belongs_only_to_a_process_whose_pidfd_says_it_exited() {
        let mut child = std::process::Command::new("sleep")
            .arg("100")
            .spawn()
            .unwrap();
        let pid = Pid::new(child.id() as i32).unwrap();
        let mut p = Proc::new(Kind::Init, Some(pid), StdioConfig::default(), None);
        p.apply(Op::Start).unwrap();
        assert!(p.pidfd.is_some());
        assert!(
            !p.owns_exit(pid),
            "a running process claimed an exit reported for its pid"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(p.owns_exit(pid));
        assert!(!p.owns_exit(Pid::new(pid.raw() + 1).unwrap()));
        p.apply(Op::Exit).unwrap();
        assert!(!p.owns_exit(pid), "an exit is attributed once");
        // Without a handle (pidfd_open unavailable) the pid decides, as before.
        let far = Pid::new(4_000_000).unwrap();
        let q = Proc {
            pid: Some(far),
            ..Proc::new(Kind::Exec, None, StdioConfig::default(), None)
        };
        assert!(q.pidfd.is_none() && q.owns_exit(far));
        // A process that has not started owns no exit.
        let r = Proc::new(Kind::Exec, None, StdioConfig::default(), None);
        assert!(!r.owns_exit(far));
    }

    #[tokio::test]
    async fn blocking_work_runs_on_another_thread_and_keeps_its_error() {
        let here = std::thread::current().id();
        let there = off_thread("test", || Ok(std::thread::current().id()))
            .await
            .unwrap();
        assert_ne!(here, there);
        let failed: Result<()> =
            off_thread("test", || Err(Error::InvalidArgument("no".into()))).await;
        assert!(matches!(failed, Err(Error::InvalidArgument(m)) if m == "no"));
    }

    #[test]
    fn a_start_holds_the_exit_seen_meanwhile_and_gives_it_back_once() {
        let mut p = Proc::new(Kind::Exec, None, StdioConfig::default(), None);
        assert!(!p.alive());
        p.phase = Phase::Starting { held_exit: None };
        assert!(p.alive() && p.starting());
        let exit = ExitInfo {
            status: 3,
            at: std::time::SystemTime::now(),
        };
        if let Phase::Starting { held_exit } = &mut p.phase {
            *held_exit = Some(exit);
        }
        assert_eq!(p.end_start(), Some(exit));
        assert_eq!(p.phase, Phase::Settled);
        assert_eq!(p.end_start(), None);
        // Ending a start never clears another phase.
        p.phase = Phase::Deleting;
        assert_eq!(p.end_start(), None);
        assert_eq!(p.phase, Phase::Deleting);
    }
}
