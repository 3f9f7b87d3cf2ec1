//! containerd's task teardown, as each version drives it (written for containerd 2.4,
//! `scripts/test.sh` runs it under every version of the matrix).
//!
//! What containerd v2.4.0-beta.0 does, read at that tag:
//! - `Shutdown` after every task delete of a shim announcing version 2, grouped or not
//!   (`shimTask.delete` in `core/runtime/v2/shim.go`: `sandboxed` is forced false below
//!   `supportSandboxAPIVersion = 3`, then `waitShutdown`). containerd#13958 (also for v3
//!   sandboxed tasks) is in the 2.4.0 notes, not in beta.0, and does not change what tether
//!   (version 2) sees. tether must keep serving a group's other tasks and exit once idle.
//! - A failed shim `Delete` is returned to the client, the task stays, and the client's retry
//!   calls the shim's `Delete` again. containerd#14020 (containerd caches the result so its own
//!   retry completes the cleanup) and #13309 (containerd calls shim `Delete` when the
//!   connection closes) are in the 2.4.0 release notes only, not in beta.0. What beta.0 does on
//!   a closed connection is `cleanupAfterDeadShim`: it runs `shim delete` and publishes its
//!   status, proven in tests/exit_status.rs.

mod common;

use std::time::Duration;

use common::*;

const QUICK: Duration = Duration::from_secs(30);

/// Lines the shim logged (forwarded into containerd's log, tracing's format) that contain
/// `text`.
fn shim_lines(cd: &Containerd, text: &str) -> usize {
    std::fs::read_to_string(cd.log_path())
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("20") && l.contains(text))
        .count()
}

/// Two containers in one group share a shim. Deleting the first makes containerd 2.1+ send
/// `Shutdown` (the shim logs it at debug level, which the harness's containerd passes on):
/// the shim keeps serving the second, which still runs and takes an exec. Deleting the second
/// (and its `Shutdown`) ends the shim.
#[test]
fn shutdown_after_each_delete_keeps_the_group_served() {
    require_root();
    let cd = Containerd::start();
    let group = unique_id("grp");
    let members: Vec<String> = (0..2).map(|i| unique_id(&format!("m{i}"))).collect();
    for id in &members {
        let args = cd
            .run_args(id, &["sleep", "1000"])
            .detach()
            .flag("--annotation")
            .flag(&format!("io.containerd.runc.v2.group={group}"));
        cd.ctr_ok(&args.build());
        cd.wait_task_status(id, "RUNNING", QUICK);
    }
    let shims = cd.shim_pids();
    assert_eq!(shims.len(), 1, "one shim for the group: {shims:?}");
    let shim = shims[0];

    let before = shim_lines(&cd, "shutdown requested");
    cd.ctr(&["tasks", "kill", "-s", "SIGKILL", &members[0]]);
    cd.wait_task_status(&members[0], "STOPPED", QUICK);
    cd.ctr_ok(&["tasks", "delete", &members[0]]);
    cd.ctr_ok(&["containers", "delete", &members[0]]);
    if containerd_version() >= (2, 1) {
        assert!(
            wait_until(Duration::from_secs(10), || shim_lines(
                &cd,
                "shutdown requested"
            ) > before),
            "containerd {:?} sent no Shutdown after the task delete",
            containerd_version()
        );
    }
    assert!(alive(shim), "the shim must keep serving the group");
    assert_eq!(
        cd.task(&members[1]).map(|t| t.1),
        Some("RUNNING".to_string())
    );
    let out = cd.ctr_ok(&[
        "tasks",
        "exec",
        "--exec-id",
        "after-shutdown",
        &members[1],
        "echo",
        "served",
    ]);
    assert_eq!(out, "served\n");

    cd.ctr(&["tasks", "kill", "-s", "SIGKILL", &members[1]]);
    cd.wait_task_status(&members[1], "STOPPED", QUICK);
    cd.ctr_ok(&["tasks", "delete", &members[1]]);
    cd.ctr_ok(&["containers", "delete", &members[1]]);
    assert!(
        wait_until(Duration::from_secs(5), || !alive(shim)),
        "the shim outlived its last task"
    );
}

/// The runtime's `delete` fails once (a wrapper around the real runtime, for fault injection):
/// the first `ctr tasks delete` fails and leaves the task STOPPED with its status; the retry
/// completes the cleanup (runtime state gone, real exit code reported, shim gone).
#[test]
fn a_delete_retried_after_a_failure_completes_the_cleanup() {
    require_root();
    let cd = Containerd::start();
    let id = unique_id("retry");
    let fail_flag = cd.dir().join(format!("fail-delete-{id}"));
    let wrapper = cd.dir().join(format!("runtime-{id}"));
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n\
             for a in \"$@\"; do\n\
               if [ \"$a\" = delete ] && [ -e {flag} ]; then\n\
                 rm -f {flag}; echo 'injected: delete failed' >&2; exit 1\n\
               fi\n\
             done\n\
             exec {real} \"$@\"\n",
            flag = fail_flag.display(),
            real = runtime_binary(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let config = cd.dir().join(format!("runtime-{id}.toml"));
    std::fs::write(
        &config,
        format!("BinaryName = {:?}\n", wrapper.display().to_string()),
    )
    .unwrap();
    let mut args = cd.run_args(&id, &["sh", "-c", "exit 3"]).detach();
    if runtime_config_path().is_none() {
        args = args
            .flag("--runtime-config-path")
            .flag(&config.display().to_string());
    }
    cd.ctr_ok(&args.build());
    cd.wait_task_status(&id, "STOPPED", QUICK);

    std::fs::write(&fail_flag, b"").unwrap();
    let first = cd.ctr_timeout(&["tasks", "delete", &id], QUICK);
    if runtime_config_path().is_none() {
        assert!(!first.status.success(), "{}", describe(&first));
        assert!(!fail_flag.exists(), "the wrapper was not called for delete");
        assert_eq!(
            cd.task(&id).map(|t| t.1),
            Some("STOPPED".to_string()),
            "the task must stay after a failed delete"
        );
        let second = cd.ctr_timeout(&["tasks", "delete", &id], QUICK);
        assert!(second.status.success(), "{}", describe(&second));
        assert!(
            String::from_utf8_lossy(&second.stderr).contains("exit code 3"),
            "{}",
            describe(&second)
        );
    } else {
        // Another runtime config is in force (the VM lane's crun run): no fault injected.
        assert!(first.status.success(), "{}", describe(&first));
    }
    assert_eq!(cd.task(&id), None);
    let listed = runtime_list(&cd.runc_root()).unwrap_or_else(|e| panic!("{e}"));
    assert!(!listed.iter().any(|c| c.id == id), "{listed:?}");
    cd.ctr_ok(&["containers", "delete", &id]);
    assert!(
        wait_until(Duration::from_secs(5), || cd.shim_pids().is_empty()),
        "shim left: {:?}",
        cd.shim_pids()
    );
}
