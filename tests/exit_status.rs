//! `shim delete` reports the init's real exit status once the server is gone: the server
//! records each init's exit in the bundle (`exitstatus.json`, as containerd 2.4's Go shim does,
//! containerd#14113) before it publishes the `TaskExit`, and `delete` reads it back. 137 only
//! when nothing (or nothing readable) was recorded.
//!
//! containerd runs `shim delete` itself when a shim's connection closes ("cleaning up after
//! shim disconnected", `cleanupAfterDeadShim` in `core/runtime/v2/shim.go` of every 2.x tag
//! here, `runtime/v2/shim.go` in 1.6/1.7) and publishes a `TaskExit` with the status `delete`
//! answered. `scripts/test.sh` runs this file under every containerd of the matrix.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use containerd_shim_protos::api::DeleteResponse;
use containerd_shim_protos::protobuf::Message;

/// Runs `<tether> -namespace ns -id id -bundle dir delete`; returns (success, response, stderr).
fn shim_delete(bundle: &std::path::Path, id: &str) -> (bool, Option<DeleteResponse>, String) {
    let out = Command::new(shim_binary())
        .args([
            "-namespace",
            "tether-exit-status-test",
            "-id",
            id,
            "-bundle",
        ])
        .arg(bundle)
        .arg("delete")
        .stdin(Stdio::null())
        .output()
        .expect("run tether delete");
    (
        out.status.success(),
        DeleteResponse::parse_from_bytes(&out.stdout).ok(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn unix_secs(r: &DeleteResponse) -> i64 {
    r.exited_at.seconds
}

/// With a record, `delete` answers its pid, status and time; with a corrupt one it warns on
/// stderr (containerd logs `delete`'s stderr) and answers 137 with the init's pid, as with
/// none. No containerd and no container: `delete` finds no runtime state for this id.
#[test]
fn delete_answers_the_recorded_exit_and_137_without_a_readable_one() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path();
    let id = unique_id("recorded");
    std::fs::write(bundle.join("init.pid"), "4242").unwrap();

    std::fs::write(
        bundle.join("exitstatus.json"),
        r#"{"Timestamp":"2026-12-06T23:24:05.5Z","Pid":4242,"Status":7}"#,
    )
    .unwrap();
    let (ok, resp, stderr) = shim_delete(bundle, &id);
    let resp = resp.unwrap_or_else(|| panic!("no DeleteResponse; stderr: {stderr}"));
    assert!(ok, "{stderr}");
    assert_eq!((resp.pid, resp.exit_status), (4242, 7), "{stderr}");
    assert_eq!(unix_secs(&resp), 1_796_599_445);
    assert_eq!(resp.exited_at.nanos, 500_000_000);
    assert!(!stderr.contains("WARN"), "{stderr}");

    for corrupt in [
        &b"{\"Pid\":4242,\"Sta"[..],
        b"",
        b"{\"Pid\":4242,\"Status\":\"seven\",\"Timestamp\":\"2026-12-06T23:24:05Z\"}",
    ] {
        std::fs::write(bundle.join("exitstatus.json"), corrupt).unwrap();
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let (ok, resp, stderr) = shim_delete(bundle, &id);
        let resp = resp.unwrap_or_else(|| panic!("no DeleteResponse; stderr: {stderr}"));
        assert!(ok, "{stderr}");
        assert_eq!((resp.pid, resp.exit_status), (4242, 137), "{corrupt:?}");
        assert!(
            unix_secs(&resp) >= before,
            "{corrupt:?}: a made-up time is now"
        );
        assert!(
            stderr.contains("WARN") && stderr.contains("exitstatus.json"),
            "{corrupt:?}: {stderr}"
        );
    }

    std::fs::remove_file(bundle.join("exitstatus.json")).unwrap();
    let (ok, resp, stderr) = shim_delete(bundle, &id);
    assert!(ok, "{stderr}");
    assert_eq!(resp.map(|r| r.exit_status), Some(137));
    assert!(!stderr.contains("WARN"), "{stderr}");
}

/// A container exits with 7, then its shim server is SIGKILLed. containerd notices the closed
/// connection, runs `shim delete` and publishes a `TaskExit` with what `delete` answered: 7,
/// with the time the container exited. `ctr tasks delete` then removes the task, reporting 7
/// where containerd still has the task.
#[test]
fn killed_shim_reports_the_real_exit_status() {
    require_root();
    let cd = Containerd::start();
    let events = EventStream::start(&cd);
    let id = unique_id("exit7");
    let flag = format!("go-{id}");
    let script = format!("while [ ! -e /{flag} ]; do sleep 0.05; done; exit 7");
    cd.ctr_ok(&cd.run_args(&id, &["sh", "-c", &script]).detach().build());
    let (pid, status) = cd.task(&id).expect("task listed");
    assert_eq!(status, "RUNNING");
    let shim = proc_stat(pid).expect("container process").ppid;
    assert!(cd.shim_pids().contains(&shim), "{shim} is not a shim");

    std::fs::write(cd.rootfs().join(&flag), b"").unwrap();
    let exit_events = |status: u64| {
        events
            .task_events()
            .into_iter()
            .filter(|e| e.topic == "/tasks/exit" && e.field("container_id") == Some(&id))
            .filter(|e| e.payload["exit_status"].as_u64() == Some(status))
            .count()
    };
    // The shim's own TaskExit: by then the record is in the bundle.
    assert!(
        wait_until(Duration::from_secs(10), || exit_events(7) == 1),
        "no TaskExit with 7:\n{}",
        events.show()
    );
    let record = std::fs::read_to_string(cd.bundle(&id).join("exitstatus.json"))
        .expect("exitstatus.json in the bundle");
    let record: serde_json::Value = serde_json::from_str(&record).unwrap();
    assert_eq!(record["Status"], 7, "{record}");
    assert_eq!(record["Pid"], pid, "{record}");

    assert!(kill(shim, libc::SIGKILL));
    // containerd's own TaskExit from `shim delete` after the connection closed.
    assert!(
        wait_until(Duration::from_secs(10), || exit_events(7) == 2),
        "containerd published no second TaskExit with 7 (137 means delete made it up):\n{}",
        events.show()
    );
    assert_eq!(exit_events(137), 0, "{}", events.show());

    let out = cd.ctr(&["tasks", "delete", &id]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("exit code 137"), "{}", describe(&out));
    if out.status.success() {
        assert!(text.contains("exit code 7"), "{}", describe(&out));
    } else {
        // The dead shim's task was already removed by containerd's cleanup.
        assert!(text.contains("not found"), "{}", describe(&out));
    }
    assert_eq!(cd.task(&id), None);
    cd.ctr_ok(&["containers", "delete", &id]);
    assert!(
        wait_until(Duration::from_secs(5), || cd.shim_pids().is_empty()),
        "shim left: {:?}",
        cd.shim_pids()
    );
}
