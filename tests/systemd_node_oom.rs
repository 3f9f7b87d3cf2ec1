//! An OOM kill on runc's systemd cgroup driver with systemd running, through the CRI: NOT in
//! the lane (run it by hand, below), because it fails intermittently.
//!
//! The same pod as `tests/systemd_node.rs`, plus a container over a 16 MiB limit, which must
//! end `OOMKilled` (137) after tether published `/tasks/oom`. In the systemd guest it passed
//! in 3 of 5 runs on 2026-12-05; each failure was exit 137 with reason "Error": no
//! `/tasks/oom`. With the shim's debug log, the failing run showed why: systemd had removed the
//! emptied scope's cgroup (with the cgroupfs driver it stays until `runc delete`) before
//! tether's watcher read an `oom_kill` increase from `memory.events` (the kernel rate-limits
//! that file's notifications to one per 10 ms and drops a deferred one when the cgroup is
//! removed); the watcher logged "cgroup removed before its last oom_kill read". Not fixed.
//!
//! `TETHER_VM_SYSTEMD=1 TETHER_VM_BINARIES=systemd_node_oom:--ignored scripts/vm-test.sh`

mod common;
#[path = "common/cri_client.rs"]
mod cri_client;
#[path = "systemd_common/mod.rs"]
mod sd;

#[test]
#[ignore = "systemd guest, by hand: TETHER_VM_SYSTEMD=1 TETHER_VM_BINARIES=systemd_node_oom:--ignored scripts/vm-test.sh"]
fn cri_oom_kill_on_the_systemd_cgroup_driver() {
    sd::cri_pod(true);
}
