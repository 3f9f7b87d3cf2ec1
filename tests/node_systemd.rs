//! The systemd cgroup driver on a node without systemd as init (the VM lane's guest, like the
//! CI host): a container whose `cgroupsPath` has runc's systemd form (`slice:prefix:name`, what
//! a kubelet on the systemd cgroup driver sends) is refused at Create with FailedPrecondition
//! and a message naming the cause, instead of runc's error from deep inside its set-up.
//!
//! VM lane (`scripts/vm-test.sh`). The driver itself, with systemd running, is not proven here:
//! neither node boots systemd as init.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

#[test]
#[ignore = "VM lane: scripts/vm-test.sh"]
fn systemd_cgroups_path_without_systemd_is_a_clear_error() {
    require_root();
    assert!(
        !Path::new("/run/systemd/system").exists(),
        "this test needs a node where systemd is not the init"
    );
    let cd = Containerd::start();
    let id = unique_id("sdpath");
    let cgroup = format!("system.slice:tether:{id}");
    let args = cd
        .run_args(&id, &["true"])
        .flag("--cgroup")
        .flag(&cgroup)
        .build();
    let out = cd.ctr_timeout(&args, Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("ctr run with cgroupsPath {cgroup}: {}", describe(&out));
    assert!(
        !out.status.success(),
        "ran without systemd: {}",
        describe(&out)
    );
    assert!(
        stderr.contains("systemd is not running") && stderr.contains("slice:prefix:name"),
        "the error names the cause: {stderr}"
    );
    assert!(
        stderr.contains("failed precondition"),
        "FailedPrecondition reaches ctr: {stderr}"
    );
    assert_eq!(cd.task(&id), None, "no task is left");
}
