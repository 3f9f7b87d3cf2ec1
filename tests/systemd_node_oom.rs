//! An OOM kill on runc's systemd cgroup driver with systemd running, through the CRI: NOT in
//! the lane (run it by hand, below), because it fails intermittently.
//!
//! The same pod as `tests/systemd_node.rs`, plus five containers in turn over a 16 MiB limit,
//! each of which must end `OOMKilled` (137) after tether published `/tasks/oom`. systemd
//! removes an emptied scope's cgroup at once (with the cgroupfs driver it stays until `runc
//! delete`), which loses the kill in two ways, both seen in the shim's debug log on
//! 2026-12-05: the watcher read the kill but the supervisor re-read the file after the removal
//! (fixed: the watcher's count counts), or no notification reached the watcher before the
//! removal at all (the kernel defers `memory.events` notifications within 10 ms of the last and
//! drops a deferred one when the cgroup goes; open: the first container failed so after the
//! fix).
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
