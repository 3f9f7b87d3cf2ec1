//! OOM kills in a container's cgroup, published as `TaskOOM`, each once, and always before the
//! init's `TaskExit` (see `exits.rs`).

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::{Container, Supervisor};
use crate::cgroups::ContainerCgroup;
use crate::events::Event;

/// What one look at a container's OOM counter found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OomCheck {
    /// A `TaskOOM` went out.
    Reported,
    /// No OOM kill that was not reported already.
    NothingNew,
    /// The container is not in the table any more.
    ContainerGone,
}

impl Supervisor {
    /// Finds the container's cgroup from its init and starts forwarding OOM kills as
    /// `TaskOOM`. Called under the lock; both steps are best effort (a container may have no
    /// memory controller, or be gone already).
    pub(super) fn watch_cgroup(&self, id: &str, c: &mut Container) {
        let Some(pid) = c.init.pid else { return };
        match ContainerCgroup::for_pid(pid.raw()) {
            Ok(cg) => self.watch_oom_in(id, c, cg),
            Err(e) => tracing::debug!(container = %id, error = %e, "no cgroup found"),
        }
    }

    /// [`Self::watch_cgroup`] for a cgroup already located (an upgrade carries it).
    pub(super) fn watch_oom_in(&self, id: &str, c: &mut Container, cg: ContainerCgroup) {
        let count = cg.oom_kill_count();
        c.oom_counted = count.is_some();
        c.oom_reported = count.unwrap_or(0);
        c.oom_parent_base = cg
            .parent_oom_kill_count()
            .map(|n| (n, self.shared.oom_published.load(Relaxed)));
        match cg.watch_oom() {
            Ok(mut events) => {
                let (sup, id) = (self.clone(), id.to_string());
                c.oom_watch = Some(tokio::spawn(async move {
                    while let Some(seen) = events.recv().await {
                        // cgroup v1 notifies before the kill, when `oom_kill` often has not
                        // moved yet: look again for a short while before giving up on it.
                        for _ in 0..20 {
                            match sup.report_oom(&id, Some(seen)) {
                                OomCheck::NothingNew => {
                                    tokio::time::sleep(Duration::from_millis(25)).await
                                }
                                OomCheck::Reported | OomCheck::ContainerGone => break,
                            }
                        }
                    }
                }));
            }
            // The container runs anyway; its OOM kills just go unreported, which is worth a warning.
            Err(e) => tracing::warn!(container = %id, error = %e, "cannot watch for OOM kills"),
        }
        c.cgroup = Some(cg);
    }

    /// Publishes `TaskOOM` for OOM kills not reported yet. `notified` is set when the cgroup
    /// said an OOM happened, with the kill count the watcher read then if it has one (a v1
    /// eventfd, or a kernel without an `oom_kill` counter, cannot say how many).
    fn report_oom(&self, id: &str, notified: Option<Option<u64>>) -> OomCheck {
        let mut t = self.shared.lock();
        match t.containers.get_mut(id) {
            Some(c) => self.report_oom_locked(id, c, notified),
            None => OomCheck::ContainerGone,
        }
    }

    /// [`Supervisor::report_oom`] for a caller that holds the lock.
    pub(super) fn report_oom_locked(
        &self,
        id: &str,
        c: &mut Container,
        notified: Option<Option<u64>>,
    ) -> OomCheck {
        let Some(cg) = &c.cgroup else {
            return OomCheck::NothingNew;
        };
        // The watcher's count counts too: under runc's systemd driver systemd removes the
        // cgroup as soon as the OOM kill empties it, often before this read.
        let seen = notified.flatten();
        let count = match (cg.oom_kill_count(), seen) {
            (Some(now), Some(seen)) => Some(now.max(seen)),
            (now, seen) => now.or(seen),
        };
        let notified = notified.is_some();
        let new = match count {
            Some(n) if n > c.oom_reported => {
                let kills = n - c.oom_reported;
                c.oom_reported = n;
                kills
            }
            Some(_) => 0,
            // v1 also notifies when the cgroup is removed; with a counter that read failing
            // means exactly that.
            None => u64::from(notified && !c.oom_counted),
        };
        if new == 0 {
            return OomCheck::NothingNew;
        }
        self.publish_oom(id, new);
        OomCheck::Reported
    }

    /// For an init killed by SIGKILL whose OOM kill nothing reported: under runc's systemd
    /// driver, systemd removes the container's scope as soon as the kill empties it, and when
    /// that happens within the kernel's 10 ms notification delay the watcher hears nothing
    /// and the counter is gone. The parent (the pod's slice) counts the kill too and stays. A
    /// kill there that no `TaskOOM` of this shim explains since the watch began is taken to be
    /// this one. Only when the container's own counter cannot be read any more: while it can,
    /// it is the answer.
    pub(super) fn report_oom_from_parent(&self, id: &str, c: &mut Container) -> OomCheck {
        let Some(cg) = &c.cgroup else {
            return OomCheck::NothingNew;
        };
        let Some((parent_base, published_base)) = c.oom_parent_base else {
            return OomCheck::NothingNew;
        };
        if cg.oom_kill_count().is_some() {
            return OomCheck::NothingNew;
        }
        let Some(parent_now) = cg.parent_oom_kill_count() else {
            return OomCheck::NothingNew;
        };
        let explained = self.shared.oom_published.load(Relaxed) - published_base;
        if parent_now.saturating_sub(parent_base) <= explained {
            return OomCheck::NothingNew;
        }
        tracing::info!(
            container = %id,
            parent_kills = parent_now - parent_base,
            explained,
            "cgroup already removed; OOM kill read from the parent cgroup"
        );
        // The watcher may still deliver the count it read before the removal: this is that kill.
        c.oom_reported += 1;
        self.publish_oom(id, 1);
        OomCheck::Reported
    }

    fn publish_oom(&self, id: &str, kills: u64) {
        self.shared.oom_published.fetch_add(kills, Relaxed);
        tracing::info!(container = %id, "OOM kill");
        self.shared.events.publish(Event::Oom {
            container_id: id.to_string(),
        });
    }
}
