//! containerd#14081 on a cgroup v2 node: `runc kill` hangs, and tether kills the container
//! through `cgroup.kill` once the kill deadline passes. The v1 path (pidfds, on this host's
//! hierarchy) is `tests/robustness.rs`' `a_wedged_runtime_kill_still_tears_the_container_down`.
//!
//! VM lane (`scripts/vm-test.sh`): the guest is cgroup v2 only.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;

#[test]
#[ignore = "VM lane: scripts/vm-test.sh"]
fn a_wedged_runtime_kill_is_finished_by_cgroup_kill() {
    require_root();
    let scale = time_scale();
    let quick = Duration::from_secs(30) * scale;
    let cd = Containerd::start();
    let wrapper = runc_hanging_on(cd.dir(), "kill");
    let options = binary_options_file(cd.dir(), "hung-kill", &wrapper);
    let events = EventStream::start(&cd);
    let id = unique_id("wedged2");
    let args = cd
        .run_args(&id, &["sh", "-c", "sleep 1000 & exec sleep 1001"])
        .detach()
        .runtime_config(&options)
        .build();
    cd.ctr_ok(&args);
    let init = cd.wait_task_status(&id, "RUNNING", quick);
    let cgroups = std::fs::read_to_string(format!("/proc/{init}/cgroup")).unwrap();
    let path = cgroups
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("a cgroup2 path");
    assert!(
        !cgroups.contains(":memory:"),
        "this test is for a cgroup v2 node:\n{cgroups}"
    );
    let dir = PathBuf::from(format!("/sys/fs/cgroup{path}"));
    assert!(
        wait_until(quick, || std::fs::read_to_string(dir.join("cgroup.procs"))
            .is_ok_and(|p| p.lines().count() == 2)),
        "sh's child never started"
    );

    let t0 = Instant::now();
    let out = cd.ctr_timeout(
        &["tasks", "kill", "--all", "--signal", "SIGKILL", &id],
        Duration::from_secs(120) * scale,
    );
    let answered = t0.elapsed();
    assert!(out.status.success(), "ctr tasks kill: {}", describe(&out));
    cd.wait_task_status(&id, "STOPPED", quick);
    eprintln!(
        "Kill answered after {answered:?}, STOPPED after {:?}",
        t0.elapsed()
    );
    assert!(
        answered >= Duration::from_secs(9),
        "answered before the kill deadline: {answered:?}"
    );
    let log = std::fs::read_to_string(cd.log_path()).unwrap_or_default();
    let warned = log
        .lines()
        .find(|l| l.contains("WARN") && l.contains("did not finish in time"))
        .unwrap_or_else(|| panic!("no WARN:\n{}", tail(cd.log_path(), 40)));
    eprintln!("shim: {warned}");
    assert!(
        warned.contains("CgroupKill"),
        "not killed through cgroup.kill: {warned}"
    );
    assert!(wait_until(quick, || events
        .task_events()
        .iter()
        .any(
            |e| e.topic == "/tasks/exit" && e.field("container_id") == Some(id.as_str())
        )));
    std::thread::sleep(Duration::from_millis(500));
    let exits: Vec<_> = events
        .task_events()
        .into_iter()
        .filter(|e| e.topic == "/tasks/exit" && e.field("container_id") == Some(id.as_str()))
        .collect();
    assert_eq!(exits.len(), 1, "exactly one TaskExit: {}", events.show());
    assert_eq!(
        exits[0].payload.get("exit_status").and_then(|v| v.as_u64()),
        Some(137)
    );
    let out = cd.ctr(&["tasks", "delete", &id]);
    assert!(out.status.success(), "{}", describe(&out));
    cd.ctr_ok(&["containers", "delete", &id]);
    assert!(!dir.exists(), "{} left behind", dir.display());
}
