//! An OOM kill on runc's systemd cgroup driver with systemd running, through the CRI: NOT in
//! the lane (run it by hand, below), because it fails intermittently.
//!
//! The same pod as `tests/systemd_node.rs`, plus a container over a 16 MiB limit, which must
//! end `OOMKilled` (137) after tether published `/tasks/oom`. In the systemd guest it passed
//! in 2 of 3 lane runs on 2026-12-05; the failure was exit 137 with reason "Error": no
//! `/tasks/oom`. Likely cause, not proven: systemd removes the emptied scope's cgroup itself
//! (with the cgroupfs driver the cgroup stays until `runc delete`), and the kernel rate-limits
//! `memory.events` notifications to one per 10 ms and drops a deferred one when the cgroup is
//! removed, so the `oom_kill` increase may never be read. tether's watcher then logs (debug)
//! "cgroup removed before its last oom_kill read".
//!
//! `TETHER_VM_SYSTEMD=1 TETHER_VM_BINARIES=systemd_node_oom:--ignored scripts/vm-test.sh`

mod common;
#[path = "systemd_common/mod.rs"]
mod sd;

#[test]
#[ignore = "systemd guest, by hand: TETHER_VM_SYSTEMD=1 TETHER_VM_BINARIES=systemd_node_oom:--ignored scripts/vm-test.sh"]
fn cri_oom_kill_on_the_systemd_cgroup_driver() {
    sd::cri_pod(true);
}
