//! The systemd cgroup driver with systemd running: runc's `--systemd-cgroup` through tether,
//! on a node whose init is systemd (issue 13, item 3).
//!
//! VM lane, systemd guest only: `TETHER_VM_SYSTEMD=1 TETHER_VM_BINARIES=systemd_node:--ignored
//! scripts/vm-test.sh` (`scripts/test.sh` runs it as the lane's second call). The default
//! guest boots virtme-ng's own init and runs `tests/node_*.rs`, which this binary is not; there
//! `tests/node_systemd.rs` proves the clear error without systemd. Each test first checks that
//! systemd is PID 1, so a run on the wrong node fails instead of proving nothing.
//!
//! - CRI, as a kubelet on the systemd cgroup driver drives it: containerd's CRI plugin with
//!   tether as the runtime handler and `SystemdCgroup = true` in its options file, a pod whose
//!   `cgroup_parent` is `kubepods-besteffort-pod<uid>.slice`. containerd turns that into the
//!   cgroupsPath `kubepods-besteffort-pod<uid>.slice:cri-containerd:<id>` (`getCgroupsPath` in
//!   its CRI server), which runc's systemd driver expands into the slice hierarchy and a
//!   transient scope.
//! - `ctr run` with `--cgroup system.slice:tether:<id>` and an options file saying
//!   `SystemdCgroup = true`: the task runs in `system.slice/tether-<id>.scope`, Stats answers
//!   from it, and the scope is gone after delete.

mod common;
#[path = "common/cri_client.rs"]
mod cri_client;
#[path = "systemd_common/mod.rs"]
mod sd;

/// A pod as a kubelet on the systemd cgroup driver sends it (`cgroup_parent`
/// `kubepods-besteffort-pod<uid>.slice`, the uid's `-` as `_`), through tether with
/// `SystemdCgroup = true`: runc runs with `--systemd-cgroup`, the container runs in
/// `cri-containerd-<id>.scope` under the pod's slice, systemd reports that scope active,
/// ContainerStats has its memory, and the scope is gone after RemovePodSandbox.
#[test]
#[ignore = "VM lane, systemd guest: TETHER_VM_SYSTEMD=1 scripts/vm-test.sh"]
fn cri_pod_on_the_systemd_cgroup_driver() {
    sd::cri_pod(false);
}

/// `ctr run --cgroup system.slice:tether:<id>` with `SystemdCgroup = true` in the runtime
/// options file: the task runs in `system.slice/tether-<id>.scope` (active in systemd), Stats
/// answers v2 metrics of that cgroup, and the scope is gone after delete.
#[test]
#[ignore = "VM lane, systemd guest: TETHER_VM_SYSTEMD=1 scripts/vm-test.sh"]
fn ctr_run_in_a_systemd_scope() {
    sd::ctr_run_in_a_systemd_scope();
}
