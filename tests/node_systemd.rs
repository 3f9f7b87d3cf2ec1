//! The systemd cgroup driver on a node without systemd as init (the VM lane's guest, like the
//! CI host). Only the runtime options choose the driver, as in the Go shim:
//! - `SystemdCgroup = true` is refused at Create with FailedPrecondition and a message naming
//!   the option and the way out, instead of runc's error from deep inside its set-up;
//! - a `cgroupsPath` in runc's systemd form (`slice:prefix:name`) without that option goes to
//!   runc's cgroupfs driver as a plain path, and the task runs.
//!
//! VM lane (`scripts/vm-test.sh`). The driver itself, with systemd running, is proven by
//! `tests/systemd_node.rs` in the systemd guest.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

#[test]
#[ignore = "VM lane: scripts/vm-test.sh"]
fn systemd_cgroup_option_without_systemd_is_a_clear_error() {
    require_root();
    assert!(
        !Path::new("/run/systemd/system").exists(),
        "this test needs a node where systemd is not the init"
    );
    let cd = Containerd::start();
    let id = unique_id("sdopt");
    let options = cd.dir().join("tether-systemd.toml");
    std::fs::write(&options, "SystemdCgroup = true\n").unwrap();
    let cgroup = format!("system.slice:tether:{id}");
    let args = cd
        .run_args(&id, &["true"])
        .flag("--runtime-config-path")
        .flag(&options.to_string_lossy())
        .flag("--cgroup")
        .flag(&cgroup)
        .build();
    let out = cd.ctr_timeout(&args, Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("ctr run with SystemdCgroup = true: {}", describe(&out));
    assert!(
        !out.status.success(),
        "ran without systemd: {}",
        describe(&out)
    );
    assert!(
        stderr.contains("systemd is not running") && stderr.contains("SystemdCgroup"),
        "the error names the cause: {stderr}"
    );
    assert!(
        stderr.contains("failed precondition"),
        "FailedPrecondition reaches ctr: {stderr}"
    );
    assert_eq!(cd.task(&id), None, "no task is left");
}

#[test]
#[ignore = "VM lane: scripts/vm-test.sh"]
fn systemd_form_cgroups_path_without_the_option_runs_on_cgroupfs() {
    require_root();
    let cd = Containerd::start();
    let id = unique_id("sdpath");
    let cgroup = format!("test.slice:tether:{id}");
    let args = cd
        .run_args(&id, &["sh", "-c", "exit 7"])
        .flag("--cgroup")
        .flag(&cgroup)
        .build();
    let out = cd.ctr_timeout(&args, Duration::from_secs(120));
    eprintln!("ctr run with cgroupsPath {cgroup}: {}", describe(&out));
    assert_eq!(
        out.status.code(),
        Some(7),
        "the task ran to its own exit status: {}",
        describe(&out)
    );
    assert_eq!(cd.task(&id), None, "no task is left");
}
