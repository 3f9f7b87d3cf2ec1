//! Teardown that always finishes, even with a wedged OCI runtime (containerd#14081: a runtime
//! whose `kill` never returns left pods Terminating for days).
//!
//! - A SIGKILL the runtime does not deliver within its deadline (`runc kill`, or `runsc kill`,
//!   whose pid file names the sandbox, so every signal goes through it) is delivered by the
//!   shim: to the container's whole cgroup (`cgroup.kill` on v2, pidfds on v1; see
//!   `cgroups/kill.rs`), or, when the cgroup is not the container's own or not known, to the
//!   init through its pidfd. The exit is then reaped and reported as any other, once, with
//!   its real status. Other signals keep the runtime's DeadlineExceeded: only a kill is safe to
//!   take over without the runtime's knowledge of the container.
//! - The resume after a paused container's SIGKILL has the kill deadline too; past it the
//!   shim thaws the cgroup itself.
//! - A `runc delete` that does not finish in time no longer fails `Delete`: the container's
//!   processes are killed as above, its cgroup directories removed, and the delete completes
//!   with the exit already recorded. Only the runtime's own state (`<root>/<id>`) and its
//!   poststop hooks are left to the runtime; the `delete` action runs `runc delete --force`
//!   again when containerd cleans up.

use std::time::{Duration, Instant};

use super::{off_thread, Supervisor};
use crate::error::{Error, Result};
use crate::runtime::Runc;

/// How long the shim waits for a killed cgroup to empty (a process in uninterruptible sleep
/// dies only when its I/O ends).
const EMPTY_LIMIT: Duration = Duration::from_secs(2);

const SIGKILL: u32 = libc::SIGKILL.unsigned_abs();

impl Supervisor {
    /// `runc kill` of container `id`; a SIGKILL it does not deliver in time is delivered by the
    /// shim.
    pub(super) async fn runtime_kill(
        &self,
        id: &str,
        runc: &Runc,
        signal: u32,
        all: bool,
    ) -> Result<()> {
        match runc.kill(&self.shared.reaper, id, signal, all).await {
            Err(Error::DeadlineExceeded(why)) if signal == SIGKILL => {
                self.kill_without_runtime(id, "kill", &why).await
            }
            other => other,
        }
    }

    /// A paused container's processes die of a SIGKILL only once thawed: `runc resume` under
    /// the kill deadline, and if the runtime does not answer, the shim thaws the cgroup.
    pub(super) async fn thaw_after_sigkill(&self, id: &str, runc: &Runc) {
        let bounded = Runc {
            timeout: runc.timeout.min(runc.kill_timeout),
            ..runc.clone()
        };
        let Err(e) = bounded.resume(&self.shared.reaper, id).await else {
            return;
        };
        let cgroup = {
            let t = self.shared.lock();
            t.containers.get(id).and_then(|c| c.cgroup.clone())
        };
        let thawed = match cgroup {
            Some(cg) => off_thread("thaw cgroup", move || cg.thaw()).await,
            None => Err(Error::NotFound(
                "no cgroup of the container is known".into(),
            )),
        };
        match thawed {
            Ok(()) => tracing::warn!(container = %id, runtime_error = %e,
                "the runtime's resume after SIGKILL failed; thawed the container's cgroup"),
            Err(t) => tracing::warn!(container = %id, runtime_error = %e, error = %t,
                "resume after SIGKILL of a paused container"),
        }
    }

    /// After `runc delete` of `id` timed out (`why`): kills what is left of the container and
    /// removes its cgroup, so `Delete` can complete.
    pub(super) async fn delete_without_runtime(&self, id: &str, why: &str) {
        if let Err(e) = self.kill_without_runtime(id, "delete", why).await {
            // Not known to be the container's own cgroup: not ours to remove either.
            tracing::warn!(container = %id, error = %e, "after the runtime's delete timed out");
            return;
        }
        let cgroup = {
            let t = self.shared.lock();
            t.containers.get(id).and_then(|c| c.cgroup.clone())
        };
        let Some(cg) = cgroup else { return };
        let left = off_thread("remove cgroup", move || Ok(cg.remove_dirs())).await;
        match left {
            Ok(left) if left.is_empty() => {}
            Ok(left) => {
                tracing::warn!(container = %id, left = ?left, "cgroup directories not removed")
            }
            Err(e) => tracing::warn!(container = %id, error = %e, "removing the cgroup"),
        }
    }

    /// SIGKILLs container `id` without the runtime, whose `op` did not finish in time (`why`).
    async fn kill_without_runtime(&self, id: &str, op: &str, why: &str) -> Result<()> {
        let t0 = Instant::now();
        let (cgroup, init) = {
            let mut t = self.shared.lock();
            let c = t.container(id)?;
            let init = c.init.pidfd.as_ref().and_then(|fd| fd.try_clone().ok());
            (c.cgroup.clone(), init)
        };
        let killed = match cgroup {
            Some(cg) => off_thread("kill cgroup", move || cg.kill_all(EMPTY_LIMIT)).await,
            None => Err(Error::FailedPrecondition(
                "no cgroup of the container is known".into(),
            )),
        };
        let cgroup_error = match killed {
            // Removed meanwhile: nothing is left in it.
            Err(Error::NotFound(_)) => return Ok(()),
            Ok(how) => {
                tracing::warn!(container = %id, runtime_error = %why, method = ?how, took = ?t0.elapsed(),
                    "the runtime's {op} did not finish in time; killed every process of the container's cgroup");
                return Ok(());
            }
            Err(e) => e,
        };
        // Not the container's own cgroup (or none known, or it would not empty): the init
        // itself, through its handle, so a recycled pid is never hit.
        let signalled = init.map(|fd| crate::sys::pidfd_signal(&fd, SIGKILL));
        match signalled {
            Some(Ok(())) => {
                tracing::warn!(container = %id, runtime_error = %why, cgroup = %cgroup_error, took = ?t0.elapsed(),
                    "the runtime's {op} did not finish in time; killed the container's init through its pidfd");
                Ok(())
            }
            _ => Err(Error::DeadlineExceeded(format!(
                "{why}; and the shim could not kill the container itself: {cgroup_error}"
            ))),
        }
    }
}
