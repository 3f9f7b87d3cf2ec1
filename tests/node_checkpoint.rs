//! Checkpoint/restore end to end with a real CRIU, through the shim's task API: a running
//! counter is checkpointed (with `exit` and with leave-running), then restored by a Create that
//! carries the checkpoint, and counts on from where it was; a restore from a missing or
//! corrupt checkpoint fails with CRIU's own message and leaves nothing behind; an established
//! TCP connection needs `open_tcp`.
//!
//! VM lane only (`scripts/vm-test.sh`): CRIU fails `criu check` on the CI host's kernel. The
//! containerd route (`ctr containers checkpoint/restore`) is `tests/resources.rs`'s, which the
//! lane runs too.
//!
//! As with the Go shim, a Create carrying a checkpoint only prepares the container; the
//! `runc restore` happens at Start, so that is where a bad checkpoint is reported.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::empty::Empty;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::oci::CheckpointOptions;

use common::*;

const QUICK: Duration = Duration::from_secs(60);
const RPC_TIMEOUT: Duration = Duration::from_secs(60);
const CRIU_TIMEOUT: Duration = Duration::from_secs(300);
const CHECKPOINT_OPTIONS_URL: &str = "containerd.runc.v1.CheckpointOptions";

fn require_criu() {
    require_root();
    let out = Command::new("criu").arg("check").output();
    assert!(
        matches!(&out, Ok(o) if o.status.success()),
        "this test needs a working CRIU (run it through scripts/vm-test.sh): criu check: {:?}",
        out.map(|o| describe(&o))
    );
}

fn checkpoint(shim: &ShimConn, path: &Path, opts: CheckpointOptions) -> ttrpc::Result<Empty> {
    let req = api::CheckpointTaskRequest {
        id: shim.id.clone(),
        path: path.display().to_string(),
        options: Some(Any {
            type_url: CHECKPOINT_OPTIONS_URL.into(),
            value: opts.write_to_bytes().expect("encode options"),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    shim.call("Checkpoint", &req, CRIU_TIMEOUT)
}

fn status_of<T: std::fmt::Debug>(what: &str, r: ttrpc::Result<T>) -> (ttrpc::Code, String) {
    match r {
        Err(ttrpc::Error::RpcStatus(s)) => (s.code(), s.message().to_string()),
        other => panic!("{what}: want an error status, got {other:?}"),
    }
}

/// A counter container on the harness's rootfs: `/tmp/count-<id>` inside is readable here.
/// Each value is written to a temp file and renamed into place, so a reader never sees the
/// file empty: `echo > file` truncates first, and a SIGKILL between truncate and write once
/// left it empty (read as 0) in the VM lane.
struct Counter {
    id: String,
    path: PathBuf,
    pid: i32,
}

impl Counter {
    fn start(cd: &Containerd, prefix: &str, prelude: &str) -> Counter {
        let id = unique_id(prefix);
        let path = cd.rootfs().join("tmp").join(format!("count-{id}"));
        let prelude = prelude.replace("{id}", &id);
        let script = format!(
            "{prelude}i=0; while true; do i=$((i+1)); echo $i > /tmp/count-{id}.new; \
             mv /tmp/count-{id}.new /tmp/count-{id}; sleep 0.1; done"
        );
        cd.ctr_ok(&cd.run_args(&id, &["sh", "-c", &script]).detach().build());
        let pid = cd.wait_task_status(&id, "RUNNING", QUICK);
        let c = Counter { id, path, pid };
        c.wait_above(5);
        c
    }

    fn value(&self) -> u64 {
        fs::read_to_string(&self.path)
            .unwrap_or_default()
            .trim()
            .parse()
            .unwrap_or(0)
    }

    fn wait_above(&self, min: u64) -> u64 {
        assert!(
            wait_until(QUICK, || self.value() > min),
            "counter {} stuck at {} (want > {min})",
            self.id,
            self.value()
        );
        self.value()
    }
}

/// A bundle for container `new` on the same rootfs as `old`'s: `old`'s config.json with the
/// cgroup path moved to `new`'s.
fn bundle_like(cd: &Containerd, old: &str, new: &str) -> PathBuf {
    let text = fs::read_to_string(cd.bundle(old).join("config.json")).expect("old config.json");
    let mut spec: serde_json::Value = serde_json::from_str(&text).expect("config.json is JSON");
    let cgroups = format!("/{}/{new}", cd.namespace());
    spec["linux"]["cgroupsPath"] = serde_json::Value::String(cgroups);
    let dir = cd.dir().join("bundles").join(new);
    fs::create_dir_all(&dir).expect("mkdir bundle");
    fs::write(dir.join("config.json"), spec.to_string()).expect("write config.json");
    dir
}

fn create_from(
    shim: &ShimConn,
    id: &str,
    bundle: &Path,
    image: &Path,
) -> ttrpc::Result<api::CreateTaskResponse> {
    let req = api::CreateTaskRequest {
        id: id.into(),
        bundle: bundle.display().to_string(),
        checkpoint: image.display().to_string(),
        ..Default::default()
    };
    shim.call("Create", &req, RPC_TIMEOUT)
}

fn start(shim: &ShimConn, id: &str) -> ttrpc::Result<api::StartResponse> {
    let req = api::StartRequest {
        id: id.into(),
        ..Default::default()
    };
    shim.call("Start", &req, CRIU_TIMEOUT)
}

/// Kill (the init, through its pidfd), Wait (137) and Delete. Not `all`: runc 1.1 with CRIU 3.17
/// restores the processes into the cgroup they were dumped from (the original container's;
/// the test prints it), so `runc kill --all`, which walks the new container's cgroup, finds
/// nobody there and the init lives on.
fn kill_and_delete(shim: &ShimConn, id: &str) {
    let kill = api::KillRequest {
        id: id.into(),
        signal: 9,
        ..Default::default()
    };
    let killed: ttrpc::Result<Empty> = shim.call("Kill", &kill, RPC_TIMEOUT);
    killed.unwrap_or_else(|e| panic!("Kill {id}: {e:?}"));
    let wait = api::WaitRequest {
        id: id.into(),
        ..Default::default()
    };
    let waited: ttrpc::Result<api::WaitResponse> = shim.call("Wait", &wait, RPC_TIMEOUT);
    let waited = waited.unwrap_or_else(|e| panic!("Wait {id}: {e:?}"));
    assert_eq!(waited.exit_status, 137, "{id} died of SIGKILL: {waited:?}");
    delete(shim, id).unwrap_or_else(|e| panic!("Delete {id}: {e:?}"));
}

fn delete(shim: &ShimConn, id: &str) -> ttrpc::Result<api::DeleteResponse> {
    let req = api::DeleteRequest {
        id: id.into(),
        ..Default::default()
    };
    shim.call("Delete", &req, RPC_TIMEOUT)
}

/// The configured runtime's `list` of the harness's runc root names `id` (a failing `list`
/// fails the test rather than reading as "not listed").
fn runc_knows(cd: &Containerd, id: &str) -> bool {
    runtime_list(&cd.runc_root())
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .any(|c| c.id == id)
}

/// Checkpoint a running counter over the task API (`exit` as given), kill what is left of it,
/// then Create a new container carrying the checkpoint and Start it: the restored counter
/// goes on from the checkpointed value (a fresh start would begin again at 1).
fn checkpoint_then_restore(exit: bool) {
    require_criu();
    let cd = Containerd::start();
    let c = Counter::start(&cd, if exit { "ckx" } else { "ckl" }, "");
    let shim = ShimConn::connect(&cd, &c.id);
    let image = cd.dir().join(format!("image-{}", c.id));
    fs::create_dir_all(&image).unwrap();
    let before = c.value();
    checkpoint(
        &shim,
        &image,
        CheckpointOptions {
            exit,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("Checkpoint (exit {exit}): {e:?}"));
    assert!(image.join("inventory.img").exists(), "no CRIU image");
    let at_checkpoint = c.value();
    if exit {
        cd.wait_task_status(&c.id, "STOPPED", QUICK);
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(c.value(), at_checkpoint, "the counter went on after exit");
    } else {
        assert_eq!(cd.task(&c.id), Some((c.pid, "RUNNING".to_string())));
        c.wait_above(at_checkpoint + 2);
        cd.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", &c.id]);
        cd.wait_task_status(&c.id, "STOPPED", QUICK);
    }
    let last = c.value();

    let new = unique_id("restored");
    cd.track_id(&new);
    let bundle = bundle_like(&cd, &c.id, &new);
    create_from(&shim, &new, &bundle, &image)
        .unwrap_or_else(|e| panic!("Create from checkpoint: {e:?}"));
    let started = start(&shim, &new).unwrap_or_else(|e| panic!("Start (restore): {e:?}"));
    assert!(
        started.pid > 0 && alive(started.pid as i32),
        "restored init {started:?}"
    );
    eprintln!(
        "restored init {} cgroup: {}",
        started.pid,
        fs::read_to_string(format!("/proc/{}/cgroup", started.pid)).unwrap_or_default()
    );
    // The restored process writes the counter file again, from the checkpointed count on.
    assert!(
        wait_until(QUICK, || c.value() != last),
        "the restored counter did not count (still {last})"
    );
    // The dump happened between `before` and `at_checkpoint` (a leave-running counter goes
    // on meanwhile); the restored one continues from there, so with leave-running it went
    // back from `last`.
    let first = c.value();
    assert!(
        first > before && first <= at_checkpoint + 5,
        "restored counter {first} does not continue from the dump ({before}..{at_checkpoint})"
    );
    if !exit {
        assert!(
            first < last,
            "restored {first}, the original had reached {last}"
        );
    }
    c.wait_above(first + 3);
    kill_and_delete(&shim, &new);
    assert!(!runc_knows(&cd, &new), "runc still lists {new}");
}

#[test]
#[ignore = "VM lane: scripts/vm-test.sh"]
fn checkpoint_with_exit_then_create_restores_the_counter() {
    checkpoint_then_restore(true);
}

#[test]
#[ignore = "VM lane: scripts/vm-test.sh"]
fn checkpoint_leave_running_then_create_restores_the_counter() {
    checkpoint_then_restore(false);
}

/// A restore from a checkpoint directory that does not exist fails with runc's message naming
/// it; one from a real checkpoint whose CRIU images are garbled fails with CRIU's (through
/// runc). Delete then leaves no runc container, no process and no mount of the new bundle.
#[test]
#[ignore = "VM lane: scripts/vm-test.sh"]
fn restore_from_a_missing_or_corrupt_checkpoint_fails_and_leaves_nothing() {
    require_criu();
    let cd = Containerd::start();
    let c = Counter::start(&cd, "ckbad", "");
    let shim = ShimConn::connect(&cd, &c.id);
    // A real checkpoint (runc's descriptors.json included), then every CRIU image garbled.
    let corrupt = cd.dir().join("corrupt");
    fs::create_dir_all(&corrupt).unwrap();
    checkpoint(&shim, &corrupt, CheckpointOptions::default())
        .unwrap_or_else(|e| panic!("Checkpoint: {e:?}"));
    for entry in fs::read_dir(&corrupt).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "img") {
            fs::write(&path, b"not a criu image").unwrap();
        }
    }
    cd.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", &c.id]);
    cd.wait_task_status(&c.id, "STOPPED", QUICK);
    let shim_pid = cd.shim_pid(&c.id).expect("shim pid");

    let missing = cd.dir().join("no-such-checkpoint");
    for (what, image) in [("missing", &missing), ("corrupt", &corrupt)] {
        let new = unique_id(&format!("bad{what}"));
        cd.track_id(&new);
        let bundle = bundle_like(&cd, &c.id, &new);
        let r = create_from(&shim, &new, &bundle, image).and_then(|_| start(&shim, &new).map(drop));
        let (code, msg) = status_of(&format!("restore from a {what} checkpoint"), r);
        eprintln!("{what}: {code:?}: {msg}");
        if what == "missing" {
            assert!(
                msg.contains(&image.display().to_string()) && msg.contains("no such file"),
                "{what}: runc's message names the checkpoint: {msg}"
            );
        } else {
            assert!(
                msg.to_ascii_lowercase().contains("criu"),
                "{what}: the message is CRIU's, through runc: {msg}"
            );
        }
        let _ = delete(&shim, &new);
        assert!(!runc_knows(&cd, &new), "{what}: runc still lists {new}");
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mounts.contains(&bundle.display().to_string()),
            "{what}: a mount of {} is left:\n{mounts}",
            bundle.display()
        );
        let kids = children_of(shim_pid);
        assert!(
            kids.is_empty(),
            "{what}: the shim still has children: {kids:?}"
        );
    }
}

/// Established TCP sockets in the network namespace of `pid` (state 01 in `/proc/<pid>/net/tcp`
/// and `tcp6`: busybox's `nc -l` listens on `::`) with `port` at either end.
fn established_on(pid: i32, port: u16) -> usize {
    let text = ["tcp", "tcp6"]
        .map(|f| fs::read_to_string(format!("/proc/{pid}/net/{f}")).unwrap_or_default())
        .join("\n");
    let port = format!(":{port:04X}");
    text.lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[3] == "01" && (f[1].ends_with(&port) || f[2].ends_with(&port))
        })
        .count()
}

/// A container holding an established TCP connection (both ends on its own loopback) cannot
/// be checkpointed without `open_tcp`: the Checkpoint fails, CRIU's log (kept in the bundle)
/// says why, and the task runs on. With `open_tcp` (runc's `--tcp-established`) the same
/// checkpoint succeeds and, leave-running, the task still counts.
#[test]
#[ignore = "VM lane: scripts/vm-test.sh"]
fn checkpoint_of_an_open_tcp_connection_needs_open_tcp() {
    require_criu();
    let cd = Containerd::start();
    // ctr gives the container a network namespace of its own, with lo up.
    // Both ends read a pipe that never ends: an nc whose stdin hits EOF closes the connection.
    let prelude =
        "sleep 100000 | nc -l -p 5000 > /dev/null & sleep 1; sleep 100000 | nc 127.0.0.1 5000 & ";
    let c = Counter::start(&cd, "cktcp", prelude);
    assert!(
        wait_until(QUICK, || established_on(c.pid, 5000) == 2),
        "no established connection on port 5000 in the container:\n{}{}",
        fs::read_to_string(format!("/proc/{}/net/tcp", c.pid)).unwrap_or_default(),
        fs::read_to_string(format!("/proc/{}/net/tcp6", c.pid)).unwrap_or_default()
    );
    let shim = ShimConn::connect(&cd, &c.id);

    let refused = cd.dir().join("image-tcp-refused");
    fs::create_dir_all(&refused).unwrap();
    let r = checkpoint(&shim, &refused, CheckpointOptions::default());
    let (code, msg) = status_of("Checkpoint without open_tcp", r);
    eprintln!("without open_tcp: {code:?}: {msg}");
    let log = cd.bundle(&c.id).join("criu-dump.log");
    assert!(
        msg.contains(&log.display().to_string()),
        "the error names CRIU's log: {msg}"
    );
    let criu = fs::read_to_string(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    assert!(
        criu.contains("tcp-established"),
        "CRIU says the connection needs --tcp-established:\n{}",
        criu.lines()
            .filter(|l| l.contains("Error"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(cd.task(&c.id), Some((c.pid, "RUNNING".to_string())));
    let now = c.value();
    c.wait_above(now + 2);

    let image = cd.dir().join("image-tcp");
    fs::create_dir_all(&image).unwrap();
    checkpoint(
        &shim,
        &image,
        CheckpointOptions {
            open_tcp: true,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("Checkpoint with open_tcp: {e:?}"));
    assert!(image.join("inventory.img").exists(), "no CRIU image");
    assert_eq!(cd.task(&c.id), Some((c.pid, "RUNNING".to_string())));
    let now = c.value();
    c.wait_above(now + 2);
    assert_eq!(
        established_on(c.pid, 5000),
        2,
        "the connection is still up after a leave-running checkpoint"
    );
    cd.ctr_ok(&["tasks", "kill", "-a", "-s", "SIGKILL", &c.id]);
    cd.wait_task_status(&c.id, "STOPPED", QUICK);
}

/// The runc option `CriuWorkPath` is where CRIU works and logs during a restore (the Go shim's
/// `createCheckpointedState`): its `restore.log` lands there, not in the bundle.
#[test]
#[ignore = "VM lane: scripts/vm-test.sh"]
fn restore_works_in_the_criu_work_path() {
    require_criu();
    let cd = Containerd::start();
    let c = Counter::start(&cd, "ckw", "");
    let shim = ShimConn::connect(&cd, &c.id);
    let image = cd.dir().join(format!("image-{}", c.id));
    fs::create_dir_all(&image).unwrap();
    checkpoint(
        &shim,
        &image,
        CheckpointOptions {
            exit: true,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("Checkpoint: {e:?}"));
    cd.wait_task_status(&c.id, "STOPPED", QUICK);

    let new = unique_id("restored");
    cd.track_id(&new);
    let bundle = bundle_like(&cd, &c.id, &new);
    let work = cd.dir().join(format!("criu-work-{new}"));
    let options = containerd_shim_protos::shim::oci::Options {
        binary_name: runtime_binary(),
        criu_work_path: work.display().to_string(),
        ..Default::default()
    };
    let req = api::CreateTaskRequest {
        id: new.clone(),
        bundle: bundle.display().to_string(),
        checkpoint: image.display().to_string(),
        options: Some(Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: options.write_to_bytes().expect("encode options"),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    let created: ttrpc::Result<api::CreateTaskResponse> = shim.call("Create", &req, RPC_TIMEOUT);
    created.unwrap_or_else(|e| panic!("Create from checkpoint: {e:?}"));
    let started = start(&shim, &new).unwrap_or_else(|e| panic!("Start (restore): {e:?}"));
    assert!(alive(started.pid as i32), "restored init {started:?}");
    let log = work.join("restore.log");
    assert!(
        fs::metadata(&log).is_ok_and(|m| m.len() > 0),
        "CRIU's restore.log is not in CriuWorkPath {}",
        work.display()
    );
    assert!(
        !bundle.join("work").join("criu-restore").exists(),
        "the default work dir in the bundle was used as well"
    );
    kill_and_delete(&shim, &new);
}
