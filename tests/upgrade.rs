//! Upgrading running tether servers in place (issue 19, docs/upgrade.md), on the real stack: a
//! private containerd, ctr and runc (tests/common).
//!
//! Each test copies the built shim into a directory of its own, which goes first on
//! containerd's PATH; "a new binary" is that copy replaced (by rename, as package managers do)
//! with the same build plus a marker appended: the ELF runs the same, but its bytes, and so
//! the build id `upgrade` reports, differ, and `/proc/PID/exe` names the new file. Every
//! `upgrade` names its servers with `--pid`: other tests' servers run on the same host.

mod common;
#[path = "common/cri_client.rs"]
mod cri_client;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const QUICK: Duration = Duration::from_secs(30);

/// A shim directory of the test's own, holding a copy of the built binary.
struct ShimDir {
    dir: tempfile::TempDir,
    /// What containerd runs: the binary itself, or a script that sets test knobs and execs it.
    entry: PathBuf,
    /// The build copied (and marked for "new binaries").
    source: PathBuf,
}

impl ShimDir {
    fn new() -> ShimDir {
        ShimDir::with_env(&[])
    }

    /// With `env` set for the servers: containerd runs a script that sets it and execs the
    /// binary in `real/` (the server's own path, which `upgrade` re-executes).
    fn with_env(env: &[(&str, &str)]) -> ShimDir {
        ShimDir::of(shim_binary(), env)
    }

    /// Of the release build, which the memory figures are about.
    fn release() -> ShimDir {
        let bin = release_shim_binary();
        if let Some(why) = stale_binary_reason(&bin) {
            panic!("this test measures the release shim, but {why}");
        }
        ShimDir::of(bin, &[])
    }

    fn of(source: PathBuf, env: &[(&str, &str)]) -> ShimDir {
        let dir = tempfile::Builder::new()
            .prefix("tether-upgrade-")
            .tempdir_in("/tmp")
            .unwrap();
        let real = dir.path().join("real");
        fs::create_dir(&real).unwrap();
        let entry = if env.is_empty() {
            real.join(SHIM_BINARY_NAME)
        } else {
            let script = dir.path().join(SHIM_BINARY_NAME);
            let vars: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let text = format!(
                "#!/bin/sh\nexec env {} {} \"$@\"\n",
                vars.join(" "),
                real.join(SHIM_BINARY_NAME).display()
            );
            fs::write(&script, text).unwrap();
            fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
            script
        };
        let s = ShimDir { dir, entry, source };
        s.install(&fs::read(&s.source).unwrap());
        s
    }

    /// The binary the servers run.
    fn path(&self) -> PathBuf {
        self.dir.path().join("real").join(SHIM_BINARY_NAME)
    }

    /// Replaces the binary by rename (the running servers keep the old inode).
    fn install(&self, bytes: &[u8]) {
        let tmp = self.dir.path().join("real/.new");
        fs::write(&tmp, bytes).unwrap();
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).unwrap();
        fs::rename(&tmp, self.path()).unwrap();
    }

    /// The built binary with `marker` appended: same code, different bytes.
    fn install_marked(&self, marker: &str) {
        let mut bytes = fs::read(&self.source).unwrap();
        bytes.extend_from_slice(format!("\ntether-test-build-marker {marker}\n").as_bytes());
        self.install(&bytes);
    }

    fn inode(&self) -> u64 {
        fs::metadata(self.path()).unwrap().ino()
    }

    /// Runs `upgrade --pid ...` with the binary now installed.
    fn upgrade(&self, pids: &[i32]) -> (bool, String) {
        let mut cmd = Command::new(self.path());
        cmd.arg("upgrade");
        for p in pids {
            cmd.args(["--pid", &p.to_string()]);
        }
        let out = output_timeout(cmd, Duration::from_secs(120)).unwrap();
        (out.status.success(), describe(&out))
    }
}

/// The inode `/proc/PID/exe` runs.
fn exe_inode(pid: i32) -> u64 {
    fs::metadata(format!("/proc/{pid}/exe")).unwrap().ino()
}

fn start(shim: &ShimDir) -> Containerd {
    Containerd::start_with(ContainerdOptions {
        shim: shim.entry.clone(),
        debug: true,
    })
}

/// Lines of containerd's log that say it lost a shim.
fn disconnects(cd: &Containerd) -> Vec<String> {
    fs::read_to_string(cd.log_path())
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            l.contains("shim disconnected")
                || l.contains("ttrpc: closed")
                || l.contains("connection reset")
                || l.contains("cleaning up after shim")
        })
        .map(str::to_string)
        .collect()
}

/// `ctr tasks ls` as sorted rows (containerd lists them in no fixed order).
fn tasks_sorted(cd: &Containerd) -> Vec<(String, i32, String)> {
    let mut t = parse_tasks(&cd.ctr_ok(&["tasks", "ls"]));
    t.sort();
    t
}

/// Checks a stream of numbered lines: 1, 2, 3... with none lost or repeated. Returns the count.
fn check_numbered(out: &str) -> usize {
    let nums: Vec<u64> = out.lines().filter_map(|l| l.trim().parse().ok()).collect();
    for (i, n) in nums.iter().enumerate() {
        assert_eq!(
            *n,
            i as u64 + 1,
            "line {i} of the stream is {n}: a line was lost or repeated"
        );
    }
    nums.len()
}

fn wait_lines(path: &Path, at_least: usize) {
    assert!(
        wait_until(QUICK, || fs::read_to_string(path)
            .map(|s| s.lines().count() >= at_least)
            .unwrap_or(false)),
        "{} never reached {at_least} lines",
        path.display()
    );
}

/// The basic upgrade: a streaming container, a quiet one with execs exiting across the
/// handoff, a `binary://` logger; every container keeps its pid, the stream loses and repeats
/// nothing, each exec's exit is reported once with its code, containerd never loses a shim.
#[test]
fn upgrade_keeps_containers_stream_and_exits() {
    let shim = ShimDir::new();
    let cd = start(&shim);
    let events = EventStream::start(&cd);
    let old_inode = shim.inode();

    // A stream of numbered lines, without pause, into ctr's stdout.
    let stream_id = unique_id("up-stream");
    let stream = cd.ctr_spawn(
        &cd.run_args(
            &stream_id,
            &[
                "sh",
                "-c",
                "i=0; while :; do i=$((i+1)); echo $i; usleep 200; done",
            ],
        )
        .build(),
    );
    cd.wait_task_status(&stream_id, "RUNNING", QUICK);
    // The same through a terminal: ctr runs on a pty of its own (`script`), and the copy from
    // the container's pty master crosses the exec.
    let tty_id = unique_id("up-tty");
    let tty_args = cd
        .run_args(
            &tty_id,
            &[
                "sh",
                "-c",
                "i=0; while :; do i=$((i+1)); echo $i; usleep 1000; done",
            ],
        )
        .flag("-t")
        .build();
    let ctr_line = cd.ctr_cmd(&tty_args);
    let line = std::iter::once(ctr_line.get_program())
        .chain(ctr_line.get_args())
        .map(|a| format!("'{}'", a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ");
    let mut script = Command::new("script");
    script.args(["-qfec", &line, "/dev/null"]);
    let tty = Background::spawn(script);
    cd.wait_task_status(&tty_id, "RUNNING", QUICK);
    // A quiet container whose execs exit across the upgrade.
    let quiet = unique_id("up-quiet");
    cd.ctr_ok(&cd.run_args(&quiet, &["sleep", "1000"]).detach().build());
    cd.wait_task_status(&quiet, "RUNNING", QUICK);
    // A container logging through a binary:// logger.
    let logged = unique_id("up-log");
    let log_dir = cd.dir().join("logger");
    let log_file = log_dir.join("stdout");
    let logger = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/logger.sh");
    cd.ctr_ok(
        &cd.run_args(
            &logged,
            &[
                "sh",
                "-c",
                "i=0; while :; do i=$((i+1)); echo $i; usleep 2000; done",
            ],
        )
        .detach()
        .flag("--log-uri")
        .flag(&format!(
            "binary://{}?dir={}",
            logger.display(),
            log_dir.display()
        ))
        .build(),
    );
    cd.wait_task_status(&logged, "RUNNING", QUICK);
    wait_lines(&log_file, 5);

    let ids = [
        stream_id.clone(),
        quiet.clone(),
        logged.clone(),
        tty_id.clone(),
    ];
    let shims: Vec<i32> = ids
        .iter()
        .map(|id| cd.shim_pid(id).expect("shim pid"))
        .collect();
    let tasks_before = tasks_sorted(&cd);
    let inits: Vec<i32> = ids.iter().map(|id| cd.task(id).unwrap().0).collect();

    // Execs that exit at staggered times around the upgrade, each with its own code.
    let fifo_dir = cd.dir().join("fifo");
    let execs: Vec<(String, i32, Background)> = (0..12)
        .map(|i| {
            let exec_id = format!("x{i}");
            let code = 10 + i;
            let ms = 100 * i;
            let bg = cd.ctr_spawn(&[
                "tasks".to_string(),
                "exec".into(),
                "--fifo-dir".into(),
                fifo_dir.to_string_lossy().into_owned(),
                "--exec-id".into(),
                exec_id.clone(),
                quiet.clone(),
                "sh".into(),
                "-c".into(),
                format!("usleep {}; exit {code}", ms * 1000),
            ]);
            (exec_id, code, bg)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));

    shim.install_marked("second");
    let new_inode = shim.inode();
    assert_ne!(old_inode, new_inode);
    let (ok, out) = shim.upgrade(&shims);
    assert!(ok, "upgrade failed:\n{out}");
    eprintln!("first upgrade:\n{out}");
    assert_eq!(out.matches(" ok").count(), shims.len(), "{out}");
    for &pid in &shims {
        assert!(alive(pid), "shim {pid} is gone");
        assert_eq!(
            exe_inode(pid),
            new_inode,
            "shim {pid} does not run the new file"
        );
    }

    // Every exec reported its own exit code, once.
    for (exec_id, code, bg) in execs {
        let out = bg.wait(QUICK);
        assert_eq!(
            out.status.code(),
            Some(code),
            "exec {exec_id}: {}",
            describe(&out)
        );
    }
    assert!(wait_until(QUICK, || {
        events
            .task_events()
            .iter()
            .filter(|e| e.topic == "/tasks/exit" && e.field("container_id") == Some(&quiet))
            .count()
            >= 12
    }));
    for i in 0..12 {
        let id = format!("x{i}");
        let exits: Vec<_> = events
            .task_events()
            .into_iter()
            .filter(|e| e.topic == "/tasks/exit" && e.field("id") == Some(&id))
            .collect();
        assert_eq!(
            exits.len(),
            1,
            "exec {id} exits: {exits:?}\n{}",
            events.show()
        );
        assert_eq!(exits[0].payload["exit_status"], 10 + i, "{:?}", exits[0]);
    }

    // The server answers with the new code: a new exec runs, stream and logger go on.
    cd.ctr_ok(&[
        "tasks",
        "exec",
        "--fifo-dir",
        &fifo_dir.to_string_lossy(),
        "--exec-id",
        "after",
        &quiet,
        "true",
    ]);
    // A second upgrade in a row, onto yet another build.
    shim.install_marked("third");
    let (ok, out) = shim.upgrade(&shims);
    assert!(ok, "second upgrade failed:\n{out}");
    eprintln!("second upgrade:\n{out}");
    for &pid in &shims {
        assert_eq!(
            exe_inode(pid),
            shim.inode(),
            "shim {pid} not on the third build"
        );
    }
    let logged_lines = fs::read_to_string(&log_file).unwrap().lines().count();
    wait_lines(&log_file, logged_lines + 5);
    std::thread::sleep(Duration::from_millis(500));
    let inits_after: Vec<i32> = ids.iter().map(|id| cd.task(id).unwrap().0).collect();
    assert_eq!(inits, inits_after, "a container restarted");
    assert_eq!(tasks_before, tasks_sorted(&cd));
    assert_eq!(
        disconnects(&cd),
        Vec::<String>::new(),
        "containerd lost a shim"
    );

    cd.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", &stream_id]);
    let out = stream.wait(QUICK);
    let text = String::from_utf8_lossy(&out.stdout);
    let n = check_numbered(&text);
    assert!(n > 100, "only {n} lines streamed");
    cd.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", &tty_id]);
    let out = tty.wait(QUICK);
    let n = check_numbered(&String::from_utf8_lossy(&out.stdout));
    assert!(n > 100, "only {n} lines through the terminal");
    check_numbered(&fs::read_to_string(&log_file).unwrap());
    let started = Instant::now();
    for id in [&quiet, &logged] {
        cd.ctr_ok(&["tasks", "kill", "-a", "-s", "SIGKILL", id]);
        cd.wait_task_status(id, "STOPPED", QUICK);
        cd.ctr_ok(&["tasks", "rm", id]);
    }
    assert!(started.elapsed() < QUICK);
}

/// Failed upgrades: a garbage file, a binary that exits at once, and one that is not tether.
/// Each is refused before it replaces the running code; the server answers as before.
#[test]
fn failed_upgrades_keep_the_old_code_running() {
    let shim = ShimDir::new();
    let cd = start(&shim);
    let id = unique_id("up-fail");
    cd.ctr_ok(&cd.run_args(&id, &["sleep", "1000"]).detach().build());
    let init = cd.wait_task_status(&id, "RUNNING", QUICK);
    let pid = cd.shim_pid(&id).unwrap();
    let running = exe_inode(pid);
    let good = fs::read(shim_binary()).unwrap();
    let fifo_dir = cd.dir().join("fifo");
    let cases: [(&str, Vec<u8>); 3] = [
        (
            "garbage",
            b"\x7fELF this is not a binary at all".repeat(100),
        ),
        ("exits at once", b"#!/bin/sh\nexit 0\n".to_vec()),
        ("not tether", b"#!/bin/sh\necho ok 9.9.9\nexit 3\n".to_vec()),
    ];
    for (n, (what, bytes)) in cases.into_iter().enumerate() {
        shim.install(&bytes);
        // The command runs from the good binary; the server re-executes what is installed.
        let mut cmd = Command::new(shim_binary());
        cmd.args(["upgrade", "--pid", &pid.to_string()]);
        let out = output_timeout(cmd, Duration::from_secs(120)).unwrap();
        let text = describe(&out);
        assert!(!out.status.success(), "{what}: upgrade said ok:\n{text}");
        assert!(text.contains("FAILED"), "{what}: {text}");
        assert!(alive(pid), "{what}: the shim died");
        assert_eq!(
            exe_inode(pid),
            running,
            "{what}: the shim runs another file"
        );
        assert_eq!(cd.task(&id).map(|t| t.0), Some(init), "{what}");
        cd.ctr_ok(&[
            "tasks",
            "exec",
            "--fifo-dir",
            &fifo_dir.to_string_lossy(),
            "--exec-id",
            &format!("e{n}"),
            &id,
            "true",
        ]);
    }
    // And after all that, a good binary still takes over.
    shim.install(&good);
    let mut good_marked = good.clone();
    good_marked.extend_from_slice(b"\nmarker\n");
    shim.install(&good_marked);
    let (ok, out) = shim.upgrade(&[pid]);
    assert!(ok, "{out}");
    assert_eq!(exe_inode(pid), shim.inode());
    assert_eq!(cd.task(&id).map(|t| t.0), Some(init));
    assert_eq!(disconnects(&cd), Vec::<String>::new());
    cd.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", &id]);
    cd.wait_task_status(&id, "STOPPED", QUICK);
}

/// `upgrade` with nothing to upgrade says so and fails.
#[test]
fn upgrade_without_a_server_fails() {
    let mut cmd = Command::new(shim_binary());
    cmd.args(["upgrade", "--pid", "999999999"]);
    let out = output_timeout(cmd, QUICK).unwrap();
    assert!(!out.status.success());
    assert!(
        describe(&out).contains("no tether server"),
        "{}",
        describe(&out)
    );
}

/// A new binary that passes the pre-flight but cannot take over once exec'd (a test knob makes
/// it refuse): the server goes back to the old executable through the descriptor it kept,
/// with everything intact, and says why.
#[test]
fn a_new_image_that_refuses_goes_back_to_the_old_code() {
    let shim = ShimDir::with_env(&[("TETHER_TEST_REFUSE_TAKEOVER", "1")]);
    let cd = start(&shim);
    let id = unique_id("up-back");
    let stream = cd.ctr_spawn(
        &cd.run_args(
            &id,
            &[
                "sh",
                "-c",
                "i=0; while :; do i=$((i+1)); echo $i; usleep 500; done",
            ],
        )
        .build(),
    );
    let init = cd.wait_task_status(&id, "RUNNING", QUICK);
    let pid = cd.shim_pid(&id).unwrap();
    let running = exe_inode(pid);
    shim.install_marked("refuses");
    let (ok, out) = shim.upgrade(&[pid]);
    assert!(!ok, "{out}");
    assert!(out.contains("TETHER_TEST_REFUSE_TAKEOVER is set"), "{out}");
    assert!(alive(pid));
    assert_eq!(exe_inode(pid), running, "not back on the old executable");
    assert_eq!(cd.task(&id).map(|t| t.0), Some(init));
    let fifo_dir = cd.dir().join("fifo");
    cd.ctr_ok(&[
        "tasks",
        "exec",
        "--fifo-dir",
        &fifo_dir.to_string_lossy(),
        "--exec-id",
        "after",
        &id,
        "true",
    ]);
    assert_eq!(disconnects(&cd), Vec::<String>::new());
    cd.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", &id]);
    let out = stream.wait(QUICK);
    let n = check_numbered(&String::from_utf8_lossy(&out.stdout));
    assert!(n > 10, "{n} lines");
}

/// An older binary handed a newer state refuses it in the pre-flight (the old server writes a
/// format number one past this build's, as a newer tether would), and nothing changes.
#[test]
fn an_older_binary_refuses_a_newer_state() {
    let shim = ShimDir::with_env(&[("TETHER_TEST_STATE_VERSION", "2")]);
    let cd = start(&shim);
    let id = unique_id("up-newer");
    cd.ctr_ok(&cd.run_args(&id, &["sleep", "1000"]).detach().build());
    let init = cd.wait_task_status(&id, "RUNNING", QUICK);
    let pid = cd.shim_pid(&id).unwrap();
    let running = exe_inode(pid);
    shim.install_marked("older");
    let (ok, out) = shim.upgrade(&[pid]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("state format 2 is not one this binary reads"),
        "{out}"
    );
    assert_eq!(exe_inode(pid), running);
    assert_eq!(cd.task(&id).map(|t| t.0), Some(init));
    cd.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", &id]);
    cd.wait_task_status(&id, "STOPPED", QUICK);
}

/// The `exit_code N` lines containerd logs as it receives `/tasks/exit` events (debug level).
fn forwarded_exits(cd: &Containerd) -> usize {
    fs::read_to_string(cd.log_path())
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("event forwarded") && l.contains("topic=/tasks/exit"))
        .count()
}

/// A container exits while containerd is down; the shim is upgraded meanwhile (its TaskExit
/// is still queued, delivery failing); containerd comes back: the exit reaches it from the
/// new image, and the exact status is kept for Delete.
#[test]
fn an_exit_while_containerd_is_down_survives_an_upgrade() {
    let shim = ShimDir::new();
    let mut cd = start(&shim);
    let id = unique_id("up-down");
    cd.ctr_ok(
        &cd.run_args(&id, &["sh", "-c", "sleep 2; exit 5"])
            .detach()
            .build(),
    );
    let init = cd.wait_task_status(&id, "RUNNING", QUICK);
    let pid = cd.shim_pid(&id).unwrap();
    cd.stop();
    let before = forwarded_exits(&cd);
    assert!(
        wait_until(QUICK, || !alive(init)),
        "the container did not exit"
    );
    std::thread::sleep(Duration::from_millis(500));
    shim.install_marked("down");
    let (ok, out) = shim.upgrade(&[pid]);
    assert!(ok, "{out}");
    assert_eq!(exe_inode(pid), shim.inode());
    cd.restart();
    assert!(
        wait_until(Duration::from_secs(15), || forwarded_exits(&cd) > before),
        "the exit never reached containerd:\n{}",
        tail(cd.log_path(), 40)
    );
    cd.wait_task_status(&id, "STOPPED", QUICK);
    let out = cd.ctr(&["tasks", "delete", &id]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exit code 5"),
        "the exact status is kept: {}",
        describe(&out)
    );
}

/// An upgrade while containerd restarts: the shim's connections from the old containerd
/// close, the new containerd reconnects (to whichever image answers), and nothing is lost.
#[test]
fn upgrade_while_containerd_restarts() {
    let shim = ShimDir::new();
    let mut cd = start(&shim);
    let id = unique_id("up-restart");
    cd.ctr_ok(&cd.run_args(&id, &["sleep", "1000"]).detach().build());
    let init = cd.wait_task_status(&id, "RUNNING", QUICK);
    let pid = cd.shim_pid(&id).unwrap();
    shim.install_marked("restart");
    let path = shim.path();
    let upgrader = std::thread::spawn(move || {
        let mut cmd = Command::new(path);
        cmd.args(["upgrade", "--pid", &pid.to_string()]);
        output_timeout(cmd, Duration::from_secs(120)).unwrap()
    });
    cd.restart();
    let out = upgrader.join().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(exe_inode(pid), shim.inode());
    assert_eq!(cd.wait_task_status(&id, "RUNNING", QUICK), init);
    let fifo_dir = cd.dir().join("fifo");
    cd.ctr_ok(&[
        "tasks",
        "exec",
        "--fifo-dir",
        &fifo_dir.to_string_lossy(),
        "--exec-id",
        "after",
        &id,
        "true",
    ]);
    cd.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", &id]);
    cd.wait_task_status(&id, "STOPPED", QUICK);
}

/// Only root may ask: run as nobody, the command says so and fails.
#[test]
fn upgrade_needs_root() {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(shim_binary())
        .arg("upgrade");
    let out = output_timeout(cmd, QUICK).unwrap();
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        describe(&out).contains("must run as root"),
        "{}",
        describe(&out)
    );
}

/// An exit storm across an upgrade: 100 execs exiting over a second while the server is
/// upgraded twice; each exec's exit is reported once (one `/tasks/exit` each) with its own
/// code, and `ctr` gets that code from `Wait`.
#[test]
fn an_exit_storm_across_upgrades_reports_each_exit_once() {
    let shim = ShimDir::new();
    let cd = start(&shim);
    let events = EventStream::start(&cd);
    let id = unique_id("up-storm");
    cd.ctr_ok(&cd.run_args(&id, &["sleep", "1000"]).detach().build());
    let init = cd.wait_task_status(&id, "RUNNING", QUICK);
    let pid = cd.shim_pid(&id).unwrap();
    let fifo_dir = cd.dir().join("fifo");
    let n = 100;
    let execs: Vec<Background> = (0..n)
        .map(|i| {
            cd.ctr_spawn(&[
                "tasks".to_string(),
                "exec".into(),
                "--fifo-dir".into(),
                fifo_dir.to_string_lossy().into_owned(),
                "--exec-id".into(),
                format!("s{i}"),
                id.clone(),
                "sh".into(),
                "-c".into(),
                format!("usleep {}; exit {}", i * 10_000, 40 + i),
            ])
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    for marker in ["storm-1", "storm-2"] {
        shim.install_marked(marker);
        let (ok, out) = shim.upgrade(&[pid]);
        assert!(ok, "{out}");
    }
    for (i, bg) in execs.into_iter().enumerate() {
        let out = bg.wait(QUICK);
        assert_eq!(
            out.status.code(),
            Some(40 + i as i32),
            "exec s{i}: {}",
            describe(&out)
        );
    }
    let exits = |eid: &str| {
        events
            .task_events()
            .into_iter()
            .filter(|e| e.topic == "/tasks/exit" && e.field("id") == Some(eid))
            .collect::<Vec<_>>()
    };
    assert!(wait_until(QUICK, || (0..n)
        .all(|i| !exits(&format!("s{i}")).is_empty())));
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..n {
        let got = exits(&format!("s{i}"));
        assert_eq!(got.len(), 1, "exec s{i}: {got:?}");
        assert_eq!(got[0].payload["exit_status"], 40 + i, "{:?}", got[0]);
    }
    assert_eq!(cd.task(&id).map(|t| t.0), Some(init));
    assert_eq!(disconnects(&cd), Vec::<String>::new());
    cd.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", &id]);
    cd.wait_task_status(&id, "STOPPED", QUICK);
}

/// An OOM kill while the handoff is under way, held there by a test knob that keeps the new
/// binary's pre-flight waiting: the kill lands after the old image took its snapshot and
/// before the new image runs. The new image reports it once, before the container's one exit
/// (137), and the neighbour keeps its pid and its cgroup (its metrics are read afterwards).
/// Run on the host's cgroup v1 and in the VM lane on cgroup v2 (`memory.events`).
#[test]
fn an_oom_kill_during_the_handoff_is_reported_once_before_the_exit() {
    let scratch = tempfile::tempdir_in("/tmp").unwrap();
    let release = scratch.path().join("release-preflight");
    let shim = ShimDir::with_env(&[("TETHER_TEST_CHECK_WAIT_FILE", release.to_str().unwrap())]);
    let cd = start(&shim);
    let events = EventStream::start(&cd);
    let id = unique_id("up-oom");
    let trigger = format!("oom-{id}");
    let _ = fs::remove_file(cd.rootfs().join("tmp").join(&trigger));
    // `tail` keeps the "last line" of an endless stream without newlines in memory.
    let script =
        format!("while [ ! -e /tmp/{trigger} ]; do usleep 20000; done; exec tail /dev/zero");
    cd.ctr_ok(
        &cd.run_args(&id, &["sh", "-c", &script])
            .detach()
            .flag("--memory-limit")
            .flag("16777216")
            .build(),
    );
    let init = cd.wait_task_status(&id, "RUNNING", QUICK);
    let neighbour = unique_id("up-oom-n");
    cd.ctr_ok(&cd.run_args(&neighbour, &["sleep", "1000"]).detach().build());
    let neighbour_pid = cd.wait_task_status(&neighbour, "RUNNING", QUICK);
    let pids = [cd.shim_pid(&id).unwrap(), cd.shim_pid(&neighbour).unwrap()];

    shim.install_marked("oom");
    let upgrade = {
        let mut cmd = Command::new(shim.path());
        cmd.arg("upgrade");
        for p in pids {
            cmd.args(["--pid", &p.to_string()]);
        }
        Background::spawn(cmd)
    };
    // The OOM container's server is in its pre-flight: its snapshot is taken.
    let in_preflight = || {
        children_of(pids[0])
            .iter()
            .any(|c| cmdline(c.pid).iter().any(|a| a == "upgrade-check"))
    };
    assert!(
        wait_until(QUICK, in_preflight),
        "the pre-flight never started"
    );
    fs::write(cd.rootfs().join("tmp").join(&trigger), "").unwrap();
    // Killed by the kernel, and not reaped: the server's reaper is paused for the handoff.
    assert!(
        wait_until(QUICK, || proc_stat(init).is_some_and(|s| s.state == 'Z')),
        "the container was not OOM-killed during the handoff ({:?})",
        proc_stat(init)
    );
    assert!(
        events.task_topics(&id).iter().all(|t| t != "/tasks/oom"),
        "an event left during the handoff: {:?}",
        events.task_topics(&id)
    );
    fs::write(&release, "").unwrap();
    let out = upgrade.wait_timeout(Duration::from_secs(120)).unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    for p in pids {
        assert_eq!(exe_inode(p), shim.inode(), "server {p} runs the new binary");
    }

    let exit = {
        let mut found = None;
        wait_until(QUICK, || {
            found = events.find(&id, "/tasks/exit");
            found.is_some()
        });
        found.unwrap_or_else(|| panic!("no /tasks/exit: {:?}", events.task_topics(&id)))
    };
    assert!(exit.contains("\"exit_status\":137"), "exit event: {exit}");
    // Anything late would show up here.
    std::thread::sleep(Duration::from_millis(500));
    let topics = events.task_topics(&id);
    let count = |t: &str| topics.iter().filter(|x| *x == t).count();
    assert_eq!(
        (count("/tasks/oom"), count("/tasks/exit")),
        (1, 1),
        "{topics:?}"
    );
    let at = |t: &str| topics.iter().position(|x| x == t).unwrap();
    assert!(at("/tasks/oom") < at("/tasks/exit"), "{topics:?}");
    assert!(disconnects(&cd).is_empty(), "{:?}", disconnects(&cd));

    assert_eq!(cd.task(&neighbour).map(|t| t.0), Some(neighbour_pid));
    let metrics = cd.ctr_ok(&["tasks", "metrics", &neighbour]);
    assert!(metrics.contains("memory"), "{metrics}");
    cd.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", &neighbour]);
    cd.wait_task_status(&neighbour, "STOPPED", QUICK);
}

/// Pods of the CRI, as a kubelet runs them: 20 pod sandboxes on the tether handler, each with
/// a container, five with a second one in the same shim, and one writing numbered lines
/// without pause to its CRI log. Every shim is upgraded. Afterwards the CRI reports the same
/// pods and containers in the same states, each container keeps its pid, the log has no line
/// lost or repeated, containerd's log shows no lost shim, and ExecSync runs in every pod on
/// the new code.
#[test]
fn twenty_cri_pods_keep_their_status_across_an_upgrade() {
    use cri_client::{PodGuard, SANDBOX_IMAGE, WORKLOAD_IMAGE};
    use k8s_cri::v1::{ListContainersRequest, ListPodSandboxRequest, PodSandboxConfig};
    const PODS: usize = 20;
    let shim = ShimDir::new();
    let cd = cri_client::start_containerd_with(
        ContainerdOptions {
            shim: shim.entry.clone(),
            debug: true,
        },
        cri_client::handlers_config(SANDBOX_IMAGE),
    );
    let dir = cd.dir().to_path_buf();
    fs::write(dir.join("tether.toml"), "").unwrap();
    let cri = cri_client::ready_with_images(&cd);
    let pod_config = |i: usize| PodSandboxConfig {
        metadata: Some(k8s_cri::v1::PodSandboxMetadata {
            name: format!("up-{i}"),
            uid: unique_id("uid"),
            namespace: "default".into(),
            attempt: 0,
        }),
        log_directory: dir
            .join("pod-logs")
            .join(i.to_string())
            .display()
            .to_string(),
        linux: Some(k8s_cri::v1::LinuxPodSandboxConfig {
            security_context: Some(k8s_cri::v1::LinuxSandboxSecurityContext {
                namespace_options: Some(cri_client::host_network_namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let stream = "i=0; while :; do i=$((i+1)); echo $i; usleep 500; done";
    let mut guards: Vec<PodGuard> = Vec::new();
    let mut pods = Vec::new();
    for i in 0..PODS {
        let pod = pod_config(i);
        fs::create_dir_all(&pod.log_directory).unwrap();
        let mut guard = PodGuard {
            cri: &cri,
            id: None,
        };
        let sandbox = cri.run_pod(&pod, "tether", &mut guard);
        guards.push(guard);
        cd.track_id(&sandbox);
        let argv: &[&str] = if i == 0 {
            &["sh", "-c", stream]
        } else {
            &["sleep", "1000"]
        };
        let mut containers = Vec::new();
        let names: &[&str] = if i % 4 == 1 {
            &["work", "side"]
        } else {
            &["work"]
        };
        for name in names {
            let c = cri.create(
                &sandbox,
                &pod,
                cri_client::limited_container(name, WORKLOAD_IMAGE, argv, 0),
            );
            cd.track_id(&c);
            cri.start(&c)
                .unwrap_or_else(|s| panic!("StartContainer: {:?}: {}", s.code(), s.message()));
            containers.push(c);
        }
        pods.push((sandbox, pod, containers));
    }
    let log = Path::new(&pods[0].1.log_directory).join("work.log");
    // The CRI log's lines: `<time> stdout F <line>`.
    let logged = || -> String {
        fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.splitn(4, ' ').nth(3))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    assert!(
        wait_until(QUICK, || check_numbered(&logged()) > 100),
        "the stream never reached its log"
    );

    let snapshot = || {
        let mut pods_seen: Vec<(String, i32)> = cri
            .ok(
                "ListPodSandbox",
                cri.rs().list_pod_sandbox(ListPodSandboxRequest::default()),
            )
            .items
            .into_iter()
            .map(|p| (p.id, p.state))
            .collect();
        pods_seen.sort();
        let mut containers: Vec<(String, i32, i64, String)> = cri
            .ok(
                "ListContainers",
                cri.rs().list_containers(ListContainersRequest::default()),
            )
            .containers
            .into_iter()
            .map(|c| {
                let status = cri.container_status(&c.id);
                let pid = fs::read_to_string(cd.bundle(&c.id).join("init.pid")).unwrap();
                (
                    c.id,
                    status.state,
                    status.started_at,
                    pid.trim().to_string(),
                )
            })
            .collect();
        containers.sort();
        (pods_seen, containers)
    };
    let before = snapshot();
    assert_eq!(before.0.len(), PODS);
    assert_eq!(before.1.len(), PODS + PODS / 4);
    let servers: Vec<i32> = pods
        .iter()
        .map(|(sandbox, _, _)| cd.shim_pid(sandbox).expect("a shim per pod"))
        .collect();
    let mut distinct = servers.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), PODS, "one shim per pod: {servers:?}");

    shim.install_marked("cri");
    let (ok, out) = shim.upgrade(&servers);
    assert!(ok, "{out}");
    eprintln!("{out}");
    for &pid in &servers {
        assert_eq!(
            exe_inode(pid),
            shim.inode(),
            "server {pid} runs the new binary"
        );
    }
    for (_, _, containers) in &pods {
        assert_eq!(cri.exec(&containers[0], &["echo", "hi"], 10).trim(), "hi");
    }
    let lines = check_numbered(&logged());
    assert!(
        wait_until(QUICK, || check_numbered(&logged()) > lines + 100),
        "the stream stopped after the upgrade"
    );
    assert_eq!(snapshot(), before, "the CRI's view changed");
    assert_eq!(
        disconnects(&cd),
        Vec::<String>::new(),
        "containerd lost a shim"
    );
    for mut g in guards.drain(..) {
        g.remove();
    }
    check_numbered(&logged());
}

/// `Pss_Anon` of `pid` in kB: its private heap and stacks (its code is shared file pages).
fn anon_kb(pid: i32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Pss_Anon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("Pss_Anon in smaps_rollup")
}

/// An upgraded server (the release build) holds no more private memory than a fresh one
/// serving the same container. It held 72 kB more (356 against 284 kB) when the build id that
/// `upgrade`'s report asks for was hashed through a 128 kB heap buffer.
#[test]
fn an_upgraded_server_holds_no_more_private_memory_than_a_fresh_one() {
    let shim = ShimDir::release();
    let cd = start(&shim);
    let id = unique_id("up-mem");
    cd.ctr_ok(&cd.run_args(&id, &["sleep", "1000"]).detach().build());
    cd.wait_task_status(&id, "RUNNING", QUICK);
    let pid = cd.shim_pid(&id).unwrap();
    let fresh = anon_kb(pid);
    shim.install_marked("mem");
    let (ok, out) = shim.upgrade(&[pid]);
    assert!(ok, "{out}");
    let upgraded = anon_kb(pid);
    eprintln!("Pss_Anon: fresh {fresh} kB, upgraded {upgraded} kB");
    assert!(
        upgraded <= fresh + 8,
        "upgraded {upgraded} kB against fresh {fresh} kB"
    );
    cd.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", &id]);
    cd.wait_task_status(&id, "STOPPED", QUICK);
}
