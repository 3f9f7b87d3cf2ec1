//! Exec processes: registration, start (with its own stdio and early-exit collection) and
//! delete. Kill, Wait, State and CloseIO are shared with the init in the parent module.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::SystemTime;

use super::{exit_info, read_pid, Deleted, Proc, Supervisor, DRAIN_LIMIT};
use crate::error::{Error, Result};
use crate::events::Event;
use crate::io::{ProcessIo, StdioConfig};
use crate::process::{validate_id, ExitInfo, Op, State};
use crate::runtime::Runc;

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
        if c.init_exited() {
            return Err(Error::FailedPrecondition(format!(
                "container {id} is not running"
            )));
        }
        if c.execs.contains_key(exec_id) {
            return Err(Error::AlreadyExists(format!(
                "exec {exec_id} already exists"
            )));
        }
        let mut p = Proc::new(0, stdio, None);
        p.spec = serde_json::to_vec(&spec).expect("serialize JSON value");
        c.execs.insert(exec_id.to_string(), p);
        self.shared.events.publish(Event::ExecAdded {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
        });
        Ok(())
    }

    pub(super) async fn start_exec(&self, id: &str, exec_id: &str) -> Result<u32> {
        let (runc, bundle, stdio, spec, uid, gid) = {
            let mut t = self.shared.lock();
            let c = t.container(id)?;
            if c.init_exited() {
                return Err(Error::FailedPrecondition(format!(
                    "container {id} is not running"
                )));
            }
            let (runc, bundle) = (c.runc.clone(), c.bundle.clone());
            let io_owner = c.io_owner;
            let p = c.process(exec_id)?;
            if p.starting {
                return Err(Error::FailedPrecondition(format!(
                    "exec {exec_id} is already starting"
                )));
            }
            p.state.apply(Op::Start)?;
            p.starting = true;
            (
                runc,
                bundle,
                p.stdio.clone(),
                std::mem::take(&mut p.spec),
                io_owner.0,
                io_owner.1,
            )
        };
        let collector = self.collector();
        let launched = self
            .launch_exec(&runc, id, exec_id, &bundle, &stdio, &spec, uid, gid)
            .await;
        let mut t = self.shared.lock();
        // Finish under this lock on every path: dropping the collector here would re-lock.
        let early_exit = collector.finish(&mut t, launched.as_ref().map_or(0, |(pid, _, _)| *pid));
        let c = t.container(id)?;
        let result = match launched {
            Ok((pid, io, pidfd)) => {
                let p = c.process(exec_id)?;
                p.starting = false;
                p.pid = pid;
                p.state = State::Running;
                p.io = Some(io);
                // If it already exited the pid may be anyone's: keep no handle on it.
                p.pidfd = if early_exit.is_some() { None } else { pidfd };
                self.shared.events.publish(Event::ExecStarted {
                    container_id: id.to_string(),
                    exec_id: exec_id.to_string(),
                    pid: pid as u32,
                });
                if let Some(exit) = early_exit {
                    self.process_exit(id, c, exec_id, exit_info(exit));
                }
                Ok(pid as u32)
            }
            Err(e) => {
                let p = c.process(exec_id)?;
                p.starting = false;
                p.spec = spec;
                Err(e)
            }
        };
        // The init may have exited while this exec was starting and be waiting for it.
        self.settle_init_exit(id, c);
        result
    }

    /// The slow part of an exec start: stdio, process spec file, `runc exec`, pid.
    #[allow(clippy::too_many_arguments)]
    async fn launch_exec(
        &self,
        runc: &Runc,
        id: &str,
        exec_id: &str,
        bundle: &Path,
        stdio: &StdioConfig,
        spec: &[u8],
        uid: u32,
        gid: u32,
    ) -> Result<(i32, ProcessIo, Option<OwnedFd>)> {
        let (mut io, runc_stdio) = ProcessIo::open(stdio, &self.io_context(id, (uid, gid))).await?;
        let spec_file = bundle.join(format!("{exec_id}.process.json"));
        let pid_file = bundle.join(format!("{exec_id}.pid"));
        std::fs::write(&spec_file, spec)
            .map_err(Error::io(format!("write {}", spec_file.display())))?;
        let ran = runc
            .exec(&self.shared.reaper, id, &spec_file, &pid_file, runc_stdio)
            .await;
        let _ = std::fs::remove_file(&spec_file);
        let ran = match ran {
            Ok(()) => io.attach_console().await,
            Err(e) => Err(e),
        };
        match ran.and_then(|()| read_pid(&pid_file)) {
            Ok(pid) => Ok((pid, io, crate::sys::pidfd_open(pid).ok())),
            Err(e) => {
                io.close();
                Err(e)
            }
        }
    }

    pub(super) async fn delete_exec(&self, id: &str, exec_id: &str) -> Result<Deleted> {
        let (mut io, state) = {
            let mut t = self.shared.lock();
            let p = t.container(id)?.process(exec_id)?;
            if p.starting {
                return Err(Error::FailedPrecondition(format!(
                    "exec {exec_id} is starting"
                )));
            }
            p.state.apply(Op::Delete)?;
            (p.io.take(), p.state)
        };
        if state == State::Stopped {
            if let Some(io) = io.as_mut() {
                io.drain(DRAIN_LIMIT).await;
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
            pid: p.pid as u32,
            exit,
        })
    }
}
