//! The process table: which containers exist, what state each process is in, where each reaped
//! exit belongs, and the order events leave in.
//!
//! # Rules kept here
//! - The table lock (`std::sync::Mutex`) is held only for short sections with no `.await` and
//!   no runtime call; runc runs outside it, so `State`, `Wait` and `Connect` always answer.
//! - Events are queued while the lock is held, at the moment the decision is made, so their
//!   order is the order of the decisions.
//! - `TaskExit` never precedes `TaskStart`: while a start is in flight the process is marked
//!   `starting` and an exit for it is held back, then handled right after the start event is
//!   queued. While a create is in flight its init pid is not yet known, so every exit of an
//!   unknown pid is also collected for it (Go's `preStart`/`handleStarted`).
//! - Exit status is kept until `Delete`; `Wait` is a `watch` on it, so every waiter, early or
//!   late, gets the same status exactly once.

use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};

mod exec;
mod resources;

use crate::cgroups::{ContainerCgroup, Metrics};
use crate::error::{Error, Result};
use crate::events::{Event, EventSink};
use crate::io::{IoContext, LoggerEnv, ProcessIo, StdioConfig};
use crate::mount::{self, Mount};
use crate::process::{validate_id, ExitInfo, Op, State};
use crate::reaper::{Exit, Reaper};
use crate::runtime::{CheckpointOptions, Runc, RuncOptions, RuncStdio};

/// How long `Wait` holds an exit back while the process's output is still being copied.
pub const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// How long `Delete` waits for a process's output to drain before closing it.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(5);

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
    pub pid: u32,
    pub state: State,
    pub stdio: StdioConfig,
    pub exit: Option<ExitInfo>,
}

/// What `Delete` reports.
#[derive(Debug, Clone, Copy)]
pub struct Deleted {
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
    reaper: Reaper,
    events: EventSink,
    namespace: String,
    /// Deadline of each runtime call (CRIU calls get more; see `runtime`).
    runtime_timeout: Duration,
}

#[derive(Default)]
struct Table {
    containers: HashMap<String, Container>,
    /// Ids whose `Create` is in flight: taken, but not visible yet.
    reserved: HashSet<String>,
    /// In-flight creates collecting exits of pids not known yet, by key.
    collectors: HashMap<u64, Vec<Exit>>,
    next_collector: u64,
}

struct Container {
    bundle: PathBuf,
    runc: Runc,
    init: Proc,
    execs: HashMap<String, Proc>,
    /// The init was reaped while execs were still running; its exit is published once the
    /// last of them is, so the init's `TaskExit` is always the container's last.
    pending_init_exit: Option<ExitInfo>,
    /// The container has no pid namespace of its own, so its processes outlive its init
    /// unless we kill them (the kernel does it for a private namespace).
    kill_all_on_exit: bool,
    /// That `runc kill --all` is running. The init's exit waits for it, as with the Go shim:
    /// a client that deletes on Wait must not race `runc delete` against it.
    killing_all: bool,
    /// uid/gid owning the stdio pipes (user-namespaced containers).
    io_owner: (u32, u32),
    /// The container's cgroup, found from its init at create (None if it was already gone):
    /// `Stats` reads it, and the OOM count is checked against it before the init's exit.
    cgroup: Option<ContainerCgroup>,
    /// OOM kills already reported (`TaskOOM`), so each is published once.
    oom_reported: u64,
    /// The kernel keeps an `oom_kill` counter for this cgroup. Then an unreadable counter
    /// means the cgroup is gone, not that an OOM happened.
    oom_counted: bool,
    /// Forwards the cgroup's OOM notifications; aborted at delete.
    oom_watch: Option<tokio::task::JoinHandle<()>>,
    /// Set by a Create from a checkpoint: Start restores instead of starting.
    restore: Option<Restore>,
    /// We mounted `rootfs` mounts and must take them down at delete.
    mounted_rootfs: bool,
    deleting: bool,
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
    /// 0 for an exec that has not started.
    pid: i32,
    state: State,
    stdio: StdioConfig,
    /// A start is in flight; exits are held in `held_exit` until its event is queued.
    starting: bool,
    held_exit: Option<ExitInfo>,
    exit: watch::Sender<Option<ExitInfo>>,
    /// Taken out while `Delete` drains it.
    io: Option<ProcessIo>,
    /// An exec's OCI process spec (JSON), kept from `Exec` to its `Start`.
    spec: Vec<u8>,
    /// A handle on the process itself, opened right after its pid was read: signals go through
    /// it, so a recycled pid can never receive a signal meant for this process.
    pidfd: Option<OwnedFd>,
}

impl Proc {
    fn new(pid: i32, stdio: StdioConfig, io: Option<ProcessIo>) -> Proc {
        let pidfd = (pid > 0)
            .then(|| crate::sys::pidfd_open(pid).ok())
            .flatten();
        Proc {
            pid,
            state: State::Created,
            stdio,
            starting: false,
            held_exit: None,
            exit: watch::channel(None).0,
            io,
            spec: Vec::new(),
            pidfd,
        }
    }

    /// Whether a reaped exit of `pid` can be this process's. The pid alone is not enough: the
    /// reaper's report is routed after the fact, and by then a new process (say an exec just
    /// started) may have been given the same pid. Its pidfd tells the two apart: a process
    /// whose handle says it is still running cannot be the one that was reaped.
    fn owns_exit(&self, pid: i32) -> bool {
        self.pid == pid
            && pid != 0
            && self.state != State::Stopped
            && self.pidfd.as_ref().is_none_or(crate::sys::pidfd_exited)
    }

    fn alive(&self) -> bool {
        self.starting || self.state == State::Running
    }
}

impl Container {
    /// The init (`exec_id` empty) or the named exec.
    fn process(&mut self, exec_id: &str) -> Result<&mut Proc> {
        if exec_id.is_empty() {
            return Ok(&mut self.init);
        }
        self.execs
            .get_mut(exec_id)
            .ok_or_else(|| Error::NotFound(format!("exec {exec_id} not found")))
    }

    /// Whether the init was reaped (its exit may still be pending behind execs).
    fn init_exited(&self) -> bool {
        self.pending_init_exit.is_some() || self.init.state == State::Stopped
    }

    fn execs_alive(&self) -> bool {
        self.execs.values().any(Proc::alive)
    }
}

/// Registration of an in-flight create or exec start in `Table::collectors`; removed on drop,
/// so a failed or cancelled one never leaves a collector behind.
struct Collector {
    /// `None` once `finish` removed the registration under the caller's lock.
    shared: Option<Arc<Shared>>,
    key: u64,
}

impl Collector {
    /// Stops collecting (the caller holds the lock) and returns the exit of `pid` if it was seen.
    /// Must be used instead of dropping whenever the caller holds the table lock.
    fn finish(mut self, table: &mut Table, pid: i32) -> Option<Exit> {
        self.shared = None;
        table
            .collectors
            .remove(&self.key)
            .and_then(|v| v.into_iter().find(|e| e.pid == pid && pid != 0))
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            shared.lock().collectors.remove(&self.key);
        }
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

fn check_exec_id(exec_id: &str) -> Result<()> {
    if exec_id.is_empty() {
        Ok(())
    } else {
        validate_id("exec", exec_id)
    }
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
        let shared = Arc::new(Shared {
            table: Mutex::default(),
            reaper,
            events,
            namespace,
            runtime_timeout,
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

    pub async fn create(&self, req: CreateRequest) -> Result<u32> {
        validate_id("container", &req.id)?;
        if !req.checkpoint.is_empty() && req.stdio.terminal {
            return Err(Error::Unimplemented(
                "restoring a checkpoint with a terminal is not supported".into(),
            ));
        }
        if !req.bundle.is_absolute() {
            return Err(Error::InvalidArgument(format!(
                "bundle path {:?} must be absolute",
                req.bundle
            )));
        }
        {
            let mut t = self.shared.lock();
            if t.containers.contains_key(&req.id) || !t.reserved.insert(req.id.clone()) {
                return Err(Error::AlreadyExists(format!(
                    "container {} already exists",
                    req.id
                )));
            }
        }
        let created = self.create_container(&req).await;
        let mut t = self.shared.lock();
        t.reserved.remove(&req.id);
        let (container, collector) = created?;
        let pid = container.init.pid;
        let early_exit = collector.finish(&mut t, pid);
        self.shared.events.publish(Event::Create {
            container_id: req.id.clone(),
            bundle: req.bundle.display().to_string(),
            rootfs: req.rootfs.clone(),
            io: req.stdio.clone(),
            checkpoint: req.checkpoint.clone(),
            pid: pid as u32,
        });
        let c = t.containers.entry(req.id.clone()).or_insert(container);
        if let Some(exit) = early_exit {
            // The pid may be anyone's by now: keep no handle on it.
            c.init.pidfd = None;
            self.process_exit(&req.id, c, "", exit_info(exit));
        } else if pid > 0 {
            // The cgroup exists from `runc create` on (the init waits in it), so OOM kills are
            // watched from the start, as the Go shim does.
            self.watch_cgroup(&req.id, c);
        }
        Ok(pid as u32)
    }

    /// The slow part of create, outside the lock. Undoes what it did on failure.
    async fn create_container(&self, req: &CreateRequest) -> Result<(Container, Collector)> {
        let bundle = &req.bundle;
        let spec = SpecFacts::read(bundle)?;
        let kill_all_on_exit = !spec.private_pid_namespace;
        let mut options = req.options.clone();
        if spec.systemd_cgroups_path && !options.systemd_cgroup {
            // Only runc's systemd driver understands this path: a kubelet on the systemd
            // cgroup driver sends it whatever the runtime options say.
            tracing::info!(container = %req.id, "cgroupsPath is slice:prefix:name; using the systemd cgroup driver");
            options.systemd_cgroup = true;
        }
        if options.systemd_cgroup && !systemd_running() {
            // runc would refuse too, after its own set-up, with a message that names neither
            // the path nor the option that asked for systemd.
            return Err(Error::FailedPrecondition(format!(
                "the systemd cgroup driver is needed ({}) but systemd is not running on this \
                 node (no /run/systemd/system): use a cgroupfs cgroupsPath and SystemdCgroup = false",
                if spec.systemd_cgroups_path {
                    "cgroupsPath is in systemd's slice:prefix:name form"
                } else {
                    "the runtime options say SystemdCgroup = true"
                }
            )));
        }
        let options = &options;
        persist_options(bundle, options)?;
        let mounted_rootfs = !req.rootfs.is_empty();
        let rootfs = bundle.join("rootfs");
        if mounted_rootfs {
            std::fs::create_dir_all(&rootfs)
                .map_err(Error::io(format!("create {}", rootfs.display())))?;
            mount::mount_all(&req.rootfs, &rootfs)?;
        }
        let undo_mount = || {
            if mounted_rootfs {
                mount::unmount_all(&rootfs);
            }
        };
        let ctx = self.io_context(&req.id, (options.io_uid, options.io_gid));
        let (mut io, runc_stdio) = match ProcessIo::open(&req.stdio, &ctx).await {
            Ok(x) => x,
            Err(e) => {
                undo_mount();
                return Err(e);
            }
        };
        let runc = Runc {
            timeout: self.shared.runtime_timeout,
            ..Runc::new(options, &self.shared.namespace, bundle)
        };
        let collector = self.collector();
        let new_container = |pid, io, restore| Container {
            bundle: bundle.clone(),
            runc: runc.clone(),
            init: Proc::new(pid, req.stdio.clone(), Some(io)),
            execs: HashMap::new(),
            pending_init_exit: None,
            io_owner: (options.io_uid, options.io_gid),
            kill_all_on_exit,
            killing_all: false,
            mounted_rootfs,
            deleting: false,
            cgroup: None,
            oom_reported: 0,
            oom_counted: false,
            oom_watch: None,
            restore,
        };
        if !req.checkpoint.is_empty() {
            // Restore happens at Start, in place of `runc start`; until then nothing runs.
            let restore = Restore {
                image: PathBuf::from(&req.checkpoint),
                stdio: runc_stdio,
            };
            return Ok((new_container(0, io, Some(restore)), collector));
        }
        let pid_file = bundle.join("init.pid");
        let created = runc
            .create(&self.shared.reaper, &req.id, bundle, &pid_file, runc_stdio)
            .await;
        let pid = match created {
            Ok(()) => io.attach_console().await.and_then(|()| read_pid(&pid_file)),
            Err(e) => Err(e),
        };
        match pid {
            Ok(pid) => Ok((new_container(pid, io, None), collector)),
            Err(e) => {
                io.close();
                // runc may have left a half-made container behind.
                let _ = runc.delete(&self.shared.reaper, &req.id, true).await;
                undo_mount();
                Err(e)
            }
        }
    }

    /// Finds the container's cgroup from its init and starts forwarding OOM kills as
    /// `TaskOOM`. Called under the lock; both steps are best effort (a container may have no
    /// memory controller, or be gone already).
    fn watch_cgroup(&self, id: &str, c: &mut Container) {
        let cg = match ContainerCgroup::for_pid(c.init.pid) {
            Ok(cg) => cg,
            Err(e) => {
                tracing::debug!(container = %id, error = %e, "no cgroup found");
                return;
            }
        };
        let count = cg.oom_kill_count();
        c.oom_counted = count.is_some();
        c.oom_reported = count.unwrap_or(0);
        match cg.watch_oom() {
            Ok(mut events) => {
                let (sup, id) = (self.clone(), id.to_string());
                c.oom_watch = Some(tokio::spawn(async move {
                    while events.recv().await.is_some() {
                        // cgroup v1 notifies before the kill, when `oom_kill` often has not
                        // moved yet: look again for a short while before giving up on it.
                        for _ in 0..20 {
                            match sup.report_oom(&id, true) {
                                Some(false) => tokio::time::sleep(Duration::from_millis(25)).await,
                                _ => break,
                            }
                        }
                    }
                }));
            }
            Err(e) => tracing::debug!(container = %id, error = %e, "no OOM watch"),
        }
        c.cgroup = Some(cg);
    }

    /// Publishes `TaskOOM` for OOM kills not reported yet. `notified` is true when the cgroup
    /// said an OOM happened (a kernel without an `oom_kill` counter cannot say how many).
    /// Returns whether a `TaskOOM` went out, or `None` when the container is gone.
    fn report_oom(&self, id: &str, notified: bool) -> Option<bool> {
        let mut t = self.shared.lock();
        let c = t.containers.get_mut(id)?;
        Some(self.report_oom_locked(id, c, notified))
    }

    fn report_oom_locked(&self, id: &str, c: &mut Container, notified: bool) -> bool {
        let Some(cg) = &c.cgroup else { return false };
        let new = match cg.oom_kill_count() {
            Some(n) if n > c.oom_reported => {
                c.oom_reported = n;
                true
            }
            Some(_) => false,
            // v1 also notifies when the cgroup is removed; with a counter that read failing
            // means exactly that.
            None => notified && !c.oom_counted,
        };
        if new {
            tracing::info!(container = %id, "OOM kill");
            self.shared.events.publish(Event::Oom {
                container_id: id.to_string(),
            });
        }
        new
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

    fn io_context<'a>(&'a self, container_id: &'a str, owner: (u32, u32)) -> IoContext<'a> {
        IoContext {
            reaper: &self.shared.reaper,
            logger_env: LoggerEnv {
                container_id,
                namespace: &self.shared.namespace,
            },
            owner,
        }
    }

    fn collector(&self) -> Collector {
        let mut t = self.shared.lock();
        let key = t.next_collector;
        t.next_collector += 1;
        t.collectors.insert(key, Vec::new());
        Collector {
            shared: Some(self.shared.clone()),
            key,
        }
    }

    pub async fn start(&self, id: &str, exec_id: &str) -> Result<u32> {
        check_exec_id(exec_id)?;
        if !exec_id.is_empty() {
            return self.start_exec(id, exec_id).await;
        }
        let (runc, pid, restore, bundle) = {
            let mut t = self.shared.lock();
            let c = t.container(id)?;
            if c.init.starting || c.deleting {
                return Err(Error::FailedPrecondition(format!("container {id} is busy")));
            }
            c.init.state.apply(Op::Start)?;
            // A failed restore leaves the container created with its checkpoint, so Start can
            // be retried, as with the Go shim (createdCheckpointState); `restore` clears it.
            let restore = c.restore.as_ref().map(Restore::try_clone).transpose()?;
            c.init.starting = true;
            (c.runc.clone(), c.init.pid, restore, c.bundle.clone())
        };
        if let Some(restore) = restore {
            return self.restore(id, runc, bundle, restore).await;
        }
        let started = runc.start(&self.shared.reaper, id).await;
        let mut t = self.shared.lock();
        let c = t.container(id)?;
        c.init.starting = false;
        if started.is_ok() {
            c.init.state = State::Running;
            self.shared.events.publish(Event::Start {
                container_id: id.to_string(),
                pid: pid as u32,
            });
        }
        if let Some(exit) = c.init.held_exit.take() {
            self.process_exit(id, c, "", exit);
        }
        started.map(|()| pid as u32)
    }

    /// Start of a container created from a checkpoint: `runc restore`. The init's pid is known
    /// only afterwards, so its exit may come first and is collected meanwhile.
    async fn restore(
        &self,
        id: &str,
        runc: Runc,
        bundle: PathBuf,
        restore: Restore,
    ) -> Result<u32> {
        let collector = self.collector();
        let pid_file = bundle.join("init.pid");
        let work = bundle.join("work").join("criu-restore");
        let restored = match std::fs::create_dir_all(&work) {
            Ok(()) => {
                runc.restore(
                    &self.shared.reaper,
                    id,
                    &bundle,
                    &restore.image,
                    &work,
                    &pid_file,
                    restore.stdio,
                )
                .await
            }
            Err(e) => Err(Error::io(format!("create {}", work.display()))(e)),
        };
        let pid = restored.and_then(|()| read_pid(&pid_file));
        if pid.is_err() {
            // runc may have left a half-restored container behind; a retry needs the id free.
            let _ = runc.delete(&self.shared.reaper, id, true).await;
            let _ = std::fs::remove_file(&pid_file);
        }
        let mut t = self.shared.lock();
        let early_exit = collector.finish(&mut t, *pid.as_ref().unwrap_or(&0));
        let c = t.container(id)?;
        c.init.starting = false;
        let pid = match pid {
            // Nothing runs; the container stays created with its checkpoint and stdio.
            Err(e) => return Err(e),
            Ok(pid) => pid,
        };
        c.restore = None;
        c.init.pid = pid;
        c.init.pidfd = if early_exit.is_some() {
            None
        } else {
            crate::sys::pidfd_open(pid).ok()
        };
        c.init.state = State::Running;
        self.shared.events.publish(Event::Start {
            container_id: id.to_string(),
            pid: pid as u32,
        });
        if let Some(exit) = early_exit {
            self.process_exit(id, c, "", exit_info(exit));
        } else {
            self.watch_cgroup(id, c);
        }
        Ok(pid as u32)
    }

    pub async fn kill(&self, id: &str, exec_id: &str, signal: u32, all: bool) -> Result<()> {
        check_exec_id(exec_id)?;
        let (runc, state, signalled) = {
            let mut t = self.shared.lock();
            let c = t.container(id)?;
            if !exec_id.is_empty() {
                // Execs are signalled directly, as the Go shim does.
                let p = c.process(exec_id)?;
                return match p.state {
                    State::Created => Err(Error::FailedPrecondition(format!(
                        "exec {exec_id} is not started"
                    ))),
                    State::Stopped => Err(Error::NotFound("process already finished".into())),
                    // A paused exec is frozen with its container; the signal waits for resume.
                    State::Running | State::Paused => match &p.pidfd {
                        Some(fd) => crate::sys::pidfd_signal(fd, signal),
                        None => crate::sys::signal(p.pid, signal),
                    },
                };
            }
            c.init.state.apply(Op::Kill)?;
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
            runc.kill(&self.shared.reaper, id, signal, all).await?;
        }
        if state == State::Paused && signal == libc::SIGKILL as u32 {
            // Frozen processes only die once thawed; a kill must not wait for a resume.
            if let Err(e) = runc.resume(&self.shared.reaper, id).await {
                tracing::warn!(error = %e, "resume after SIGKILL of a paused container");
            }
        }
        Ok(())
    }

    /// `Pause`/`Resume` of the whole container.
    pub async fn pause(&self, id: &str, pause: bool) -> Result<()> {
        let op = if pause { Op::Pause } else { Op::Resume };
        let runc = {
            let mut t = self.shared.lock();
            let c = t.container(id)?;
            if c.init.starting || c.deleting {
                return Err(Error::FailedPrecondition(format!("container {id} is busy")));
            }
            c.init.state.apply(op)?;
            c.runc.clone()
        };
        if pause {
            runc.pause(&self.shared.reaper, id).await?;
        } else {
            runc.resume(&self.shared.reaper, id).await?;
        }
        let mut t = self.shared.lock();
        let c = t.container(id)?;
        // The init may have been killed meanwhile; then the exit already decided the state.
        if let Ok(next) = c.init.state.apply(op) {
            c.init.state = next;
            let container_id = id.to_string();
            self.shared.events.publish(if pause {
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
            c.init.state.apply(Op::Modify)?;
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
            c.init.state.apply(Op::Modify)?;
            // containerd pauses a task before it checkpoints it, so Paused is the usual state.
            if !matches!(c.init.state, State::Running | State::Paused) {
                return Err(Error::FailedPrecondition(format!(
                    "cannot checkpoint a {} container",
                    c.init.state.name()
                )));
            }
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
        for dir in [&opts.work_path, &opts.image_path] {
            std::fs::create_dir_all(dir).map_err(Error::io(format!("create {}", dir.display())))?;
        }
        match runc.checkpoint(&self.shared.reaper, id, &opts).await {
            Ok(()) => Ok(()),
            Err(Error::Runtime { op, msg }) => {
                let kept = bundle.join("criu-dump.log");
                let msg = match std::fs::copy(opts.work_path.join("dump.log"), &kept) {
                    Ok(_) => format!("{msg} (CRIU log: {})", kept.display()),
                    Err(_) => msg,
                };
                Err(Error::Runtime { op, msg })
            }
            Err(e) => Err(e),
        }
    }

    pub async fn delete(&self, id: &str, exec_id: &str) -> Result<Deleted> {
        check_exec_id(exec_id)?;
        if !exec_id.is_empty() {
            return self.delete_exec(id, exec_id).await;
        }
        let (runc, mut io, state) = {
            let mut t = self.shared.lock();
            let c = t.container(id)?;
            if c.init.starting || c.deleting {
                return Err(Error::FailedPrecondition(format!("container {id} is busy")));
            }
            c.init.state.apply(Op::Delete)?;
            c.deleting = true;
            (c.runc.clone(), c.init.io.take(), c.init.state)
        };
        if state == State::Stopped {
            if let Some(io) = io.as_mut() {
                if !io.drain(DRAIN_LIMIT).await {
                    tracing::warn!("output did not drain within {DRAIN_LIMIT:?}; closing it");
                }
            }
        }
        if let Err(e) = runc.delete(&self.shared.reaper, id, false).await {
            let mut t = self.shared.lock();
            let c = t.container(id)?;
            c.deleting = false;
            c.init.io = io;
            return Err(e);
        }
        drop(io);
        let mut t = self.shared.lock();
        let c = t
            .containers
            .remove(id)
            .ok_or_else(|| Error::NotFound(format!("container {id} not found")))?;
        drop(t);
        if let Some(w) = &c.oom_watch {
            w.abort();
        }
        for (exec_id, p) in &c.execs {
            let _ = std::fs::remove_file(c.bundle.join(format!("{exec_id}.pid")));
            if p.exit.borrow().is_none() {
                p.exit.send_replace(Some(ExitInfo {
                    status: 128 + libc::SIGKILL as u32,
                    at: SystemTime::now(),
                }));
            }
        }
        if c.mounted_rootfs {
            mount::unmount_all(&c.bundle.join("rootfs"));
        }
        // A created-but-never-started init was killed by `runc delete`.
        let exit = c.init.exit.borrow().unwrap_or(ExitInfo {
            status: 128 + libc::SIGKILL as u32,
            at: SystemTime::now(),
        });
        c.init.exit.send_replace(Some(exit));
        self.shared.events.publish(Event::Delete {
            container_id: id.to_string(),
            id: id.to_string(),
            pid: c.init.pid as u32,
            exit_status: exit.status,
            exited_at: Some(exit.at),
        });
        Ok(Deleted {
            pid: c.init.pid as u32,
            exit,
        })
    }

    pub async fn wait(&self, id: &str, exec_id: &str) -> Result<ExitInfo> {
        check_exec_id(exec_id)?;
        let (mut rx, delivered) = {
            let mut t = self.shared.lock();
            let p = t.container(id)?.process(exec_id)?;
            (
                p.exit.subscribe(),
                p.io.as_ref().and_then(ProcessIo::delivered),
            )
        };
        let exit = rx
            .wait_for(Option::is_some)
            .await
            .map(|e| *e)
            .map_err(|_| Error::NotFound(format!("process {id}/{exec_id} was deleted")))?;
        let exit = exit.expect("waited for Some");
        // Answer once the process's output has reached its targets (bounded): a client that
        // tears its IO down when Wait returns (ctr does, under load) must not lose the tail.
        if let Some(mut delivered) = delivered {
            let _ = tokio::time::timeout(OUTPUT_GRACE, delivered.wait_for(|done| *done)).await;
        }
        Ok(exit)
    }

    pub fn state(&self, id: &str, exec_id: &str) -> Result<ProcessState> {
        check_exec_id(exec_id)?;
        let mut t = self.shared.lock();
        let c = t.container(id)?;
        let bundle = c.bundle.clone();
        let container_paused = c.init.state == State::Paused;
        let p = c.process(exec_id)?;
        let state = ProcessState {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            bundle,
            pid: p.pid as u32,
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
    pub async fn pids(&self, id: &str) -> Result<Vec<(u32, Option<String>)>> {
        let runc = {
            let mut t = self.shared.lock();
            t.container(id)?.runc.clone()
        };
        let pids = runc.ps(&self.shared.reaper, id).await?;
        let mut t = self.shared.lock();
        let c = t.container(id)?;
        let exec_of = |pid: i32| {
            c.execs
                .iter()
                .find(|(_, p)| p.pid == pid && p.pid != 0)
                .map(|(e, _)| e.clone())
        };
        Ok(pids
            .into_iter()
            .map(|pid| (pid as u32, exec_of(pid)))
            .collect())
    }

    /// The init pid of `id`, or 0 when unknown (Connect is a liveness probe and never fails).
    pub fn init_pid(&self, id: &str) -> u32 {
        self.shared
            .lock()
            .containers
            .get(id)
            .map_or(0, |c| c.init.pid as u32)
    }

    /// `ResizePty`.
    pub fn resize_pty(&self, id: &str, exec_id: &str, width: u32, height: u32) -> Result<()> {
        check_exec_id(exec_id)?;
        let mut t = self.shared.lock();
        match t.container(id)?.process(exec_id)?.io.as_ref() {
            Some(io) => io.resize(width, height),
            None => Ok(()),
        }
    }

    /// `CloseIO`: with `stdin`, EOF reaches the process once the client closed its end too.
    pub fn close_io(&self, id: &str, exec_id: &str, stdin: bool) -> Result<()> {
        check_exec_id(exec_id)?;
        let mut t = self.shared.lock();
        let p = t.container(id)?.process(exec_id)?;
        if let (true, Some(io)) = (stdin, p.io.as_mut()) {
            io.close_stdin();
        }
        Ok(())
    }

    /// Routes one reaped exit that no spawner claimed.
    fn handle_exit(&self, exit: Exit) {
        let mut t = self.shared.lock();
        let owner = t.containers.iter().find_map(|(cid, c)| {
            if c.init.owns_exit(exit.pid) && c.pending_init_exit.is_none() {
                return Some((cid.clone(), String::new()));
            }
            c.execs
                .iter()
                .find(|(_, p)| p.owns_exit(exit.pid))
                .map(|(eid, _)| (cid.clone(), eid.clone()))
        });
        let Some((cid, exec_id)) = owner else {
            // Not ours (an orphan), or the pid of a process whose start is in flight.
            for pending in t.collectors.values_mut() {
                pending.push(exit);
            }
            return;
        };
        let c = t.containers.get_mut(&cid).expect("found above");
        let p = c.process(&exec_id).expect("found above");
        if p.starting {
            tracing::debug!(container = %cid, exec = %exec_id, pid = exit.pid, "exit held until start is published");
            p.held_exit = Some(exit_info(exit));
            return;
        }
        self.process_exit(&cid, c, &exec_id, exit_info(exit));
    }

    /// Handles a reaped process of container `id`. Called under the lock.
    fn process_exit(&self, id: &str, c: &mut Container, exec_id: &str, exit: ExitInfo) {
        if exec_id.is_empty() {
            c.pending_init_exit = Some(exit);
            if c.kill_all_on_exit && !c.killing_all {
                // Without its own pid namespace the container's other processes survive the init.
                c.killing_all = true;
                let (runc, sup, id) = (c.runc.clone(), self.clone(), id.to_string());
                tokio::spawn(async move {
                    if let Err(e) = runc
                        .kill(&sup.shared.reaper, &id, libc::SIGKILL as u32, true)
                        .await
                    {
                        tracing::debug!(container = %id, error = %e, "kill --all after init exit");
                    }
                    let mut t = sup.shared.lock();
                    if let Some(c) = t.containers.get_mut(&id) {
                        c.killing_all = false;
                        sup.settle_init_exit(&id, c);
                    }
                });
            }
            if c.execs_alive() {
                tracing::debug!(container = %id, "init exited; its exit waits for the running execs");
            }
            self.settle_init_exit(id, c);
            return;
        }
        let Some(p) = c.execs.get_mut(exec_id) else {
            return;
        };
        let Ok(next) = p.state.apply(Op::Exit) else {
            return;
        };
        p.state = next;
        p.exit.send_replace(Some(exit));
        self.shared.events.publish(Event::Exit {
            container_id: id.to_string(),
            id: exec_id.to_string(),
            pid: p.pid as u32,
            exit_status: exit.status,
            exited_at: exit.at,
        });
        self.settle_init_exit(id, c);
    }

    /// Publishes a held init exit once nothing holds it back any more: no exec running and no
    /// `kill --all` in flight. Called under the lock.
    fn settle_init_exit(&self, id: &str, c: &mut Container) {
        if c.killing_all || c.execs_alive() {
            return;
        }
        if let Some(exit) = c.pending_init_exit.take() {
            self.finish_init_exit(id, c, exit);
        }
    }

    /// Records the init's exit, releases waiters and queues its `TaskExit`.
    fn finish_init_exit(&self, id: &str, c: &mut Container, exit: ExitInfo) {
        c.pending_init_exit = None;
        let Ok(next) = c.init.state.apply(Op::Exit) else {
            return;
        };
        // An OOM kill the watcher has not reported yet goes out first: CRI reads `OOMKilled`
        // from the TaskOOM it saw before the exit (containerd#12714).
        self.report_oom_locked(id, c, false);
        c.init.state = next;
        c.init.exit.send_replace(Some(exit));
        tracing::info!(container = %id, pid = c.init.pid, status = exit.status, "init exited");
        self.shared.events.publish(Event::Exit {
            container_id: id.to_string(),
            id: id.to_string(),
            pid: c.init.pid as u32,
            exit_status: exit.status,
            exited_at: exit.at,
        });
    }
}

fn exit_info(e: Exit) -> ExitInfo {
    ExitInfo {
        status: e.status as u32,
        at: e.at,
    }
}

fn read_pid(path: &Path) -> Result<i32> {
    let s = std::fs::read_to_string(path).map_err(Error::io(format!("read {}", path.display())))?;
    s.trim().parse().map_err(|_| Error::Runtime {
        op: "create",
        msg: format!("bad pid file {}: {s:?}", path.display()),
    })
}

/// Writes `options.json` and `runtime` for the `delete` action, which runs without us.
fn persist_options(bundle: &Path, opts: &RuncOptions) -> Result<()> {
    let json = serde_json::to_vec(opts).expect("options serialize");
    let binary = if opts.binary_name.is_empty() {
        "runc"
    } else {
        &opts.binary_name
    };
    for (name, data) in [("options.json", &json[..]), ("runtime", binary.as_bytes())] {
        let path = bundle.join(name);
        std::fs::write(&path, data).map_err(Error::io(format!("write {}", path.display())))?;
    }
    Ok(())
}

/// Whether the bundle's spec gives the container a new pid namespace (a `pid` entry without a
/// path). Read once at create, never on the exit path.
/// What `Create` needs to know from the bundle's OCI spec.
struct SpecFacts {
    /// The container gets a pid namespace of its own (not joined, not the host's).
    private_pid_namespace: bool,
    /// `linux.cgroupsPath` has runc's systemd form.
    systemd_cgroups_path: bool,
}

impl SpecFacts {
    fn read(bundle: &Path) -> Result<SpecFacts> {
        let path = bundle.join("config.json");
        let data = std::fs::read(&path).map_err(Error::io(format!("read {}", path.display())))?;
        let spec: serde_json::Value = serde_json::from_slice(&data)
            .map_err(|e| Error::InvalidArgument(format!("{}: {e}", path.display())))?;
        let namespaces = spec
            .pointer("/linux/namespaces")
            .and_then(|n| n.as_array())
            .map(Vec::as_slice)
            .unwrap_or_default();
        let private_pid_namespace = namespaces.iter().any(|ns| {
            ns.get("type").and_then(|t| t.as_str()) == Some("pid")
                && ns
                    .get("path")
                    .and_then(|p| p.as_str())
                    .unwrap_or("")
                    .is_empty()
        });
        let cgroups_path = spec
            .pointer("/linux/cgroupsPath")
            .and_then(|p| p.as_str())
            .unwrap_or("");
        Ok(SpecFacts {
            private_pid_namespace,
            systemd_cgroups_path: is_systemd_cgroups_path(cgroups_path),
        })
    }
}

/// Whether systemd is the running init, as runc (and sd_booted(3)) decide it.
fn systemd_running() -> bool {
    std::path::Path::new("/run/systemd/system").is_dir()
}

/// runc's systemd driver takes `[slice]:[prefix]:[name]` (e.g. a kubelet's
/// `kubepods-besteffort-pod<uid>.slice:cri-containerd:<id>`); cgroupfs paths are directories
/// (`/kubepods/besteffort/pod<uid>/<id>`) and never look like that.
fn is_systemd_cgroups_path(p: &str) -> bool {
    let parts: Vec<&str> = p.split(':').collect();
    matches!(parts[..], [slice, _, name] if !p.starts_with('/') && !name.is_empty() && (slice.is_empty() || slice.ends_with(".slice")))
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
        let pid = child.id() as i32;
        let mut p = Proc::new(pid, StdioConfig::default(), None);
        p.state = State::Running;
        assert!(p.pidfd.is_some());
        assert!(
            !p.owns_exit(pid),
            "a running process claimed an exit reported for its pid"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(p.owns_exit(pid));
        assert!(!p.owns_exit(pid + 1));
        p.state = State::Stopped;
        assert!(!p.owns_exit(pid), "an exit is attributed once");
        // Without a handle (pidfd_open unavailable) the pid decides, as before.
        let q = Proc {
            pid: 4_000_000,
            state: State::Running,
            ..Proc::new(0, StdioConfig::default(), None)
        };
        assert!(q.pidfd.is_none() && q.owns_exit(4_000_000));
    }

    #[test]
    fn systemd_cgroups_paths_are_recognised() {
        for p in [
            "kubepods-besteffort-pod1234.slice:cri-containerd:abc",
            "system.slice:docker:x",
            ":cri-containerd:abc",
        ] {
            assert!(is_systemd_cgroups_path(p), "{p}");
        }
        for p in [
            "",
            "/kubepods/besteffort/pod1/abc",
            "/ns/id",
            "kubepods/pod1",
            "a:b:c",
            "x.slice:prefix:",
            "/x.slice:p:n",
            "a.slice:b:c:d",
        ] {
            assert!(!is_systemd_cgroups_path(p), "{p}");
        }
    }

    #[test]
    fn spec_facts() {
        let dir = tempfile::tempdir().unwrap();
        let facts = |spec: &str| {
            std::fs::write(dir.path().join("config.json"), spec).unwrap();
            SpecFacts::read(dir.path()).map(|f| (f.private_pid_namespace, f.systemd_cgroups_path))
        };
        assert_eq!(facts(r#"{"linux":{"namespaces":[{"type":"mount"},{"type":"pid"}],"cgroupsPath":"/ns/id"}}"#).unwrap(), (true, false));
        assert_eq!(facts(r#"{"linux":{"namespaces":[{"type":"mount"},{"type":"pid","path":"/proc/1/ns/pid"}]}}"#).unwrap(), (false, false));
        assert_eq!(facts(r#"{"linux":{"namespaces":[{"type":"mount"}],"cgroupsPath":"k.slice:cri-containerd:id"}}"#).unwrap(), (false, true));
        assert!(matches!(facts("not json"), Err(Error::InvalidArgument(_))));
    }
}
