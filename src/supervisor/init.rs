//! A container's own lifecycle, through its init: create (bundle, rootfs mounts, stdio, `runc
//! create`), start or restore, and delete. Mounts and bundle file I/O run off the runtime thread;
//! a failed step undoes the ones before it, and a failed undo is logged with the failure.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::SystemTime;

use super::exits::{exit_info, Collector};
use super::spec::{
    check_cgroup_driver, persist_options, read_pid_file, systemd_running, SpecFacts,
};
use super::{
    off_thread, Container, CreateRequest, Deleted, Phase, Proc, Restore, Supervisor, DRAIN_STALL,
};
use crate::error::{Error, Result};
use crate::events::Event;
use crate::io::{ProcessIo, SpoolConfig};
use crate::mount;
use crate::process::{validate_id, ExitInfo, Kind, Op, Pid, ProcessId, State};
use crate::runtime::{Runc, RuncOptions};

/// Exit status reported for an init that never ran or was killed by `runc delete`.
const KILLED: u32 = 128 + libc::SIGKILL.unsigned_abs();

impl Supervisor {
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
        let early_exit = collector.finish(&t, pid);
        self.shared.events.publish(Event::Create {
            container_id: req.id.clone(),
            bundle: req.bundle.display().to_string(),
            rootfs: req.rootfs.clone(),
            io: req.stdio.clone(),
            checkpoint: req.checkpoint.clone(),
            pid: Pid::or_zero(pid),
        });
        let c = t.containers.entry(req.id.clone()).or_insert(container);
        if let Some(exit) = early_exit {
            // The pid may be anyone's by now: keep no handle on it.
            c.init.pidfd = None;
            self.process_exit(&req.id, c, &ProcessId::Init, exit_info(exit));
        } else if pid.is_some() {
            // The cgroup exists from `runc create` on (the init waits in it), so OOM kills are
            // watched from the start, as the Go shim does.
            self.watch_cgroup(&req.id, c);
        }
        Ok(Pid::or_zero(pid))
    }

    /// The slow part of create, outside the lock. Undoes what it did on failure.
    async fn create_container(&self, req: &CreateRequest) -> Result<(Container, Collector)> {
        let bundle = &req.bundle;
        let (spec, options) = self.prepare_bundle(req).await?;
        if spec.systemd_cgroups_path && !options.systemd_cgroup {
            // As with the Go shim, the options decide the driver, not the path's form: runc's
            // cgroupfs driver takes `slice:prefix:name` as a plain path, relative to its own
            // cgroup (containerd's CRI gives that form to any pod whose parent ends in
            // `.slice`, critest's `test.slice` included). The cgroup is found from the init.
            tracing::info!(container = %req.id, "cgroupsPath is in systemd's slice:prefix:name form, SystemdCgroup is false: runc's cgroupfs driver takes it as a path");
        }
        let kill_all_on_exit = !spec.private_pid_namespace;
        let mounted_rootfs = !req.rootfs.is_empty();
        let rootfs = bundle.join("rootfs");
        let spool = SpoolConfig::from_options(&options, bundle, &req.id);
        let ctx = self.io_context(&req.id, (options.io_uid, options.io_gid), &spool);
        let (mut io, runc_stdio) = match ProcessIo::open(&req.stdio, &ctx).await {
            Ok(x) => x,
            Err(e) => {
                if mounted_rootfs {
                    unmount_rootfs(rootfs, &e).await;
                }
                return Err(e);
            }
        };
        let runc = Runc {
            timeout: self.shared.runtime_timeout,
            ..Runc::new(&options, &self.shared.namespace, bundle)
        };
        let collector = self.collector();
        let new_container = |pid, io, restore| Container {
            bundle: bundle.clone(),
            runc: runc.clone(),
            init: Proc::new(Kind::Init, pid, req.stdio.clone(), Some(io)),
            execs: HashMap::new(),
            init_exit: None,
            io_owner: (options.io_uid, options.io_gid),
            spool: spool.clone(),
            kill_all_on_exit,
            mounted_rootfs,
            cgroup: None,
            oom_reported: 0,
            oom_counted: false,
            oom_parent_base: None,
            oom_watch: None,
            restore,
        };
        if !req.checkpoint.is_empty() {
            // Restore happens at Start, in place of `runc start`; until then nothing runs.
            let restore = Restore {
                image: PathBuf::from(&req.checkpoint),
                stdio: runc_stdio,
            };
            return Ok((new_container(None, io, Some(restore)), collector));
        }
        let pid_file = bundle.join("init.pid");
        let created = runc
            .create(&self.shared.reaper, &req.id, bundle, &pid_file, runc_stdio)
            .await;
        let pid = match created {
            Ok(()) => match io.attach_console().await {
                Ok(()) => read_pid_file(pid_file).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match pid {
            Ok(pid) => Ok((new_container(Some(pid), io, None), collector)),
            Err(e) => {
                io.close();
                // runc may have left a half-made container behind.
                if let Err(undo) = runc.delete(&self.shared.reaper, &req.id, true).await {
                    tracing::warn!(container = %req.id, error = %e, rollback_error = %undo, "create failed, and so did its rollback (runc delete --force)");
                }
                if mounted_rootfs {
                    unmount_rootfs(rootfs, &e).await;
                }
                Err(e)
            }
        }
    }

    /// Reads the spec's facts, leaves the options for the `delete` action, and mounts the
    /// rootfs: blocking work (up to 120 overlay layers), so on a thread of its own. Returns the
    /// options runc gets.
    async fn prepare_bundle(&self, req: &CreateRequest) -> Result<(SpecFacts, RuncOptions)> {
        let bundle = req.bundle.clone();
        let options = req.options.clone();
        let rootfs = req.rootfs.clone();
        let delay = self.shared.mount_delay;
        off_thread("mount", move || {
            let spec = SpecFacts::read(&bundle)?;
            check_cgroup_driver(options.systemd_cgroup, systemd_running())?;
            persist_options(&bundle, &options)?;
            if !rootfs.is_empty() {
                let target = bundle.join("rootfs");
                std::fs::create_dir_all(&target)
                    .map_err(Error::io(format!("create {}", target.display())))?;
                if let Some(delay) = delay {
                    std::thread::sleep(delay);
                }
                mount::mount_all(&rootfs, &target)?;
            }
            Ok((spec, options))
        })
        .await
    }

    pub(super) async fn start_init(&self, id: &str) -> Result<u32> {
        let (runc, restore, bundle) = {
            let mut t = self.shared.lock();
            let c = t.container(id)?;
            c.refuse_if_busy(id)?;
            c.init.check(Op::Start)?;
            // A failed restore leaves the container created with its checkpoint, so Start can
            // be retried, as with the Go shim (createdCheckpointState); `restore` clears it.
            let restore = c.restore.as_ref().map(Restore::try_clone).transpose()?;
            c.init.phase = Phase::Starting { held_exit: None };
            (c.runc.clone(), restore, c.bundle.clone())
        };
        if let Some(restore) = restore {
            return self.restore(id, runc, bundle, restore).await;
        }
        let started = runc.start(&self.shared.reaper, id).await;
        let mut t = self.shared.lock();
        let c = t.container(id)?;
        let held_exit = c.init.end_start();
        let pid = Pid::or_zero(c.init.pid);
        let started = started.and_then(|()| c.init.apply(Op::Start));
        if started.is_ok() {
            self.shared.events.publish(Event::Start {
                container_id: id.to_string(),
                pid,
            });
        }
        if let Some(exit) = held_exit {
            self.process_exit(id, c, &ProcessId::Init, exit);
        }
        started.map(|()| pid)
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
        // `CriuWorkPath` keeps CRIU's logs where the operator wants them; else the bundle.
        let work = runc
            .criu_work_path
            .clone()
            .unwrap_or_else(|| bundle.join("work").join("criu-restore"));
        let made = {
            let work = work.clone();
            off_thread("restore", move || {
                std::fs::create_dir_all(&work)
                    .map_err(Error::io(format!("create {}", work.display())))
            })
            .await
        };
        let restored = match made {
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
            Err(e) => Err(e),
        };
        let pid = match restored {
            Ok(()) => read_pid_file(pid_file.clone()).await,
            Err(e) => Err(e),
        };
        if let Err(e) = &pid {
            // runc may have left a half-restored container behind; a retry needs the id free.
            if let Err(undo) = runc.delete(&self.shared.reaper, id, true).await {
                tracing::warn!(container = %id, error = %e, rollback_error = %undo, "restore failed, and so did its rollback (runc delete --force)");
            }
            let _ = off_thread("restore", move || {
                let _ = std::fs::remove_file(pid_file);
                Ok(())
            })
            .await;
        }
        let mut t = self.shared.lock();
        let early_exit = collector.finish(&t, pid.as_ref().ok().copied());
        let c = t.container(id)?;
        // Nothing was held: without a pid the init owns no exit, so they went to the collector.
        c.init.end_start();
        // On failure nothing runs; the container stays created with its checkpoint and stdio.
        let pid = pid?;
        c.restore = None;
        c.init.started_as(pid, early_exit.is_none());
        c.init.apply(Op::Start)?;
        self.shared.events.publish(Event::Start {
            container_id: id.to_string(),
            pid: pid.as_u32(),
        });
        if let Some(exit) = early_exit {
            self.process_exit(id, c, &ProcessId::Init, exit_info(exit));
        } else {
            self.watch_cgroup(id, c);
        }
        Ok(pid.as_u32())
    }

    pub(super) async fn delete_init(&self, id: &str) -> Result<Deleted> {
        let (runc, mut io, state) = {
            let mut t = self.shared.lock();
            let c = t.container(id)?;
            c.refuse_if_busy(id)?;
            // No transition to record: a deleted process leaves the table.
            c.init.check(Op::Delete)?;
            c.init.phase = Phase::Deleting;
            (c.runc.clone(), c.init.io.take(), c.init.state)
        };
        if state == State::Stopped {
            if let Some(io) = io.as_mut() {
                io.drain(DRAIN_STALL).await;
            }
        }
        match runc.delete(&self.shared.reaper, id, false).await {
            Err(Error::DeadlineExceeded(why)) => {
                // A wedged runtime must not keep the container (and its exit) forever.
                self.delete_without_runtime(id, &why).await;
            }
            Err(e) => return self.delete_failed(id, io, e),
            Ok(()) => {}
        }
        drop(io);
        let c = {
            let mut t = self.shared.lock();
            let c = t
                .containers
                .remove(id)
                .ok_or_else(|| Error::NotFound(format!("container {id} not found")))?;
            // The id stays taken until the rootfs is down, so a new Create cannot mount there
            // meanwhile, and the server does not exit half-way.
            t.reserved.insert(id.to_string());
            c
        };
        if let Some(w) = &c.oom_watch {
            w.abort();
        }
        for p in c.execs.values() {
            if p.exit.borrow().is_none() {
                p.exit.send_replace(Some(ExitInfo {
                    status: KILLED,
                    at: SystemTime::now(),
                }));
            }
        }
        let pid_files: Vec<PathBuf> = (c.execs.keys())
            .map(|exec_id| c.bundle.join(format!("{exec_id}.pid")))
            .collect();
        let rootfs = c.mounted_rootfs.then(|| c.bundle.join("rootfs"));
        let cleaned = off_thread("unmount", move || {
            for f in pid_files {
                let _ = std::fs::remove_file(f);
            }
            if let Some(rootfs) = rootfs {
                mount::unmount_all(&rootfs);
            }
            Ok(())
        })
        .await;
        if let Err(e) = cleaned {
            tracing::warn!(container = %id, error = %e, "bundle clean-up after delete");
        }
        self.shared.lock().reserved.remove(id);
        // A created-but-never-started init was killed by `runc delete`.
        let exit = c.init.exit.borrow().unwrap_or(ExitInfo {
            status: KILLED,
            at: SystemTime::now(),
        });
        c.init.exit.send_replace(Some(exit));
        let pid = Pid::or_zero(c.init.pid);
        self.shared.events.publish(Event::Delete {
            container_id: id.to_string(),
            id: id.to_string(),
            pid,
            exit_status: exit.status,
            exited_at: Some(exit.at),
        });
        Ok(Deleted { pid, exit })
    }
}

impl Supervisor {
    /// A failed `runc delete`: the container stays, with its output, for a retry.
    fn delete_failed(&self, id: &str, io: Option<ProcessIo>, e: Error) -> Result<Deleted> {
        let mut t = self.shared.lock();
        let c = t.container(id)?;
        c.init.phase = Phase::Settled;
        c.init.io = io;
        Err(e)
    }
}

/// Takes the rootfs mounts down after `failure`, off the runtime thread.
async fn unmount_rootfs(rootfs: PathBuf, failure: &Error) {
    let undone = off_thread("unmount", move || {
        mount::unmount_all(&rootfs);
        Ok(())
    })
    .await;
    if let Err(undo) = undone {
        tracing::warn!(error = %failure, rollback_error = %undo, "unmounting the rootfs after a failed create failed too");
    }
}
