//! Exec processes: registration, start (with its own stdio and early-exit collection) and
//! delete. Kill, Wait, State and CloseIO are shared with the init in the parent module.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::SystemTime;

use super::exits::exit_info;
use super::spec::read_pid;
use super::{off_thread, Deleted, Phase, Proc, Supervisor, DRAIN_STALL};
use crate::error::{Error, Result};
use crate::events::Event;
use crate::io::{ProcessIo, SpoolConfig, StdioConfig};
use crate::process::{validate_id, ExitInfo, Kind, Op, Pid, ProcessId, State};
use crate::runtime::Runc;

/// What the slow part of an exec start needs, taken from the table under the lock.
struct LaunchExec {
    runc: Runc,
    bundle: PathBuf,
    stdio: StdioConfig,
    /// The OCI process spec (JSON); given back to the table if the start fails.
    spec: Vec<u8>,
    /// uid/gid owning the stdio pipes.
    io_owner: (u32, u32),
    spool: SpoolConfig,
}

impl Supervisor {
    /// `Exec`: registers the process; it runs at `Start`.
    pub fn exec(&self, id: &str, exec_id: &str, stdio: StdioConfig, spec: &[u8]) -> Result<()> {
        validate_id("exec", exec_id)?;
        let mut spec: serde_json::Value = serde_json::from_slice(spec).map_err(|e| {
            Error::InvalidArgument(format!("exec process spec is not valid JSON: {e}"))
        })?;
        let Some(obj) = spec.as_object_mut() else {
            return Err(Error::InvalidArgument(
                "exec process spec must be a JSON object".into(),
            ));
        };
        // The request, not the spec, decides whether there is a terminal (as in the Go shim).
        obj.insert("terminal".into(), stdio.terminal.into());
        let mut t = self.shared.lock();
        let c = t.container(id)?;
        // Refused only once the init's exit is published. While it is held back (execs still
        // running, or `kill --all` in flight) the task is running by its events and by State,
        // so Exec is accepted and only its Start fails, as in the Go shim (its init stays
        // "running" until the exit is handled; containerd#10589's client test relies on it).
        if c.init.state == State::Stopped {
            return Err(Error::FailedPrecondition(format!(
                "container {id} is not running"
            )));
        }
        if c.execs.contains_key(exec_id) {
            return Err(Error::AlreadyExists(format!(
                "exec {exec_id} already exists"
            )));
        }
        let mut p = Proc::new(Kind::Exec, None, stdio, None);
        p.spec = serde_json::to_vec(&spec).expect("serialize JSON value");
        c.execs.insert(exec_id.to_string(), p);
        self.shared.events.publish(Event::ExecAdded {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
        });
        Ok(())
    }

    pub(super) async fn start_exec(&self, id: &str, exec_id: &str) -> Result<u32> {
        let process = ProcessId::Exec(exec_id.to_string());
        let launch = {
            let mut t = self.shared.lock();
            let c = t.container(id)?;
            // The init was reaped: no new exec may run, even while its exit is held back.
            if c.init_exited() {
                return Err(Error::FailedPrecondition(format!(
                    "container {id} init process is not running"
                )));
            }
            let (runc, bundle, io_owner) = (c.runc.clone(), c.bundle.clone(), c.io_owner);
            let spool = c.spool.clone();
            let p = c.process(&process)?;
            if p.starting() {
                return Err(Error::FailedPrecondition(format!(
                    "exec {exec_id} is already starting"
                )));
            }
            p.check(Op::Start)?;
            p.phase = Phase::Starting { held_exit: None };
            LaunchExec {
                runc,
                bundle,
                stdio: p.stdio.clone(),
                spec: std::mem::take(&mut p.spec),
                io_owner,
                spool,
            }
        };
        let collector = self.collector();
        let launched = self.launch_exec(id, exec_id, &launch).await;
        let mut t = self.shared.lock();
        let early_exit = collector.finish(&t, launched.as_ref().ok().map(|(pid, _, _)| *pid));
        let c = t.container(id)?;
        let p = c.process(&process)?;
        // Without a pid the exec owned no exit meanwhile: they went to the collector.
        p.end_start();
        let result = match launched {
            Ok((pid, io, pidfd)) => {
                p.pid = Some(pid);
                p.io = Some(io);
                // If it already exited the pid may be anyone's: keep no handle on it.
                p.pidfd = if early_exit.is_some() { None } else { pidfd };
                let started = p.apply(Op::Start);
                if started.is_ok() {
                    self.shared.events.publish(Event::ExecStarted {
                        container_id: id.to_string(),
                        exec_id: exec_id.to_string(),
                        pid: pid.as_u32(),
                    });
                }
                if let Some(exit) = early_exit {
                    self.process_exit(id, c, &process, exit_info(exit));
                }
                started.map(|()| pid.as_u32())
            }
            Err(e) => {
                p.spec = launch.spec;
                Err(e)
            }
        };
        // The init may have exited while this exec was starting and be waiting for it.
        self.settle_init_exit(id, c);
        result
    }

    /// The slow part of an exec start: stdio, process spec file, `runc exec`, pid.
    async fn launch_exec(
        &self,
        id: &str,
        exec_id: &str,
        launch: &LaunchExec,
    ) -> Result<(Pid, ProcessIo, Option<OwnedFd>)> {
        let (mut io, runc_stdio) = ProcessIo::open(
            &launch.stdio,
            &self.io_context(id, launch.io_owner, &launch.spool),
        )
        .await?;
        let spec_file = launch.bundle.join(format!("{exec_id}.process.json"));
        let pid_file = launch.bundle.join(format!("{exec_id}.pid"));
        let written = {
            let (spec_file, spec) = (spec_file.clone(), launch.spec.clone());
            off_thread("exec", move || {
                std::fs::write(&spec_file, spec)
                    .map_err(Error::io(format!("write {}", spec_file.display())))
            })
            .await
        };
        if let Err(e) = written {
            io.close();
            return Err(e);
        }
        let ran = launch
            .runc
            .exec(&self.shared.reaper, id, &spec_file, &pid_file, runc_stdio)
            .await;
        let ran = match ran {
            Ok(()) => io.attach_console().await,
            Err(e) => Err(e),
        };
        // The spec file goes whatever happened; the pid is read only after a good start.
        let pid = off_thread("exec", move || {
            let _ = std::fs::remove_file(&spec_file);
            ran.and_then(|()| read_pid(&pid_file))
        })
        .await;
        match pid {
            Ok(pid) => Ok((pid, io, crate::sys::pidfd_open(pid.raw()).ok())),
            Err(e) => {
                io.close();
                Err(e)
            }
        }
    }

    pub(super) async fn delete_exec(&self, id: &str, exec_id: &str) -> Result<Deleted> {
        let process = ProcessId::Exec(exec_id.to_string());
        let (mut io, state) = {
            let mut t = self.shared.lock();
            let p = t.container(id)?.process(&process)?;
            if p.starting() {
                return Err(Error::FailedPrecondition(format!(
                    "exec {exec_id} is starting"
                )));
            }
            // No transition to record: a deleted process leaves the table.
            p.check(Op::Delete)?;
            (p.io.take(), p.state)
        };
        if state == State::Stopped {
            if let Some(io) = io.as_mut() {
                io.drain(DRAIN_STALL).await;
            }
        }
        drop(io);
        let mut t = self.shared.lock();
        let c = t.container(id)?;
        let p = c
            .execs
            .remove(exec_id)
            .ok_or_else(|| Error::NotFound(format!("exec {exec_id} not found")))?;
        let _ = std::fs::remove_file(c.bundle.join(format!("{exec_id}.pid")));
        // A never-started exec releases its waiters with status 0: nothing ran.
        let exit = p.exit.borrow().unwrap_or(ExitInfo {
            status: 0,
            at: SystemTime::now(),
        });
        p.exit.send_replace(Some(exit));
        Ok(Deleted {
            pid: Pid::or_zero(p.pid),
            exit,
        })
    }
}
