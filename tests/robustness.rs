//! End-to-end robustness tests through a private containerd and `ctr`: pod grouping, and
//! load cycles that must leave the shim as they found it.

mod common;

use std::time::Duration;

use common::*;

const QUICK: Duration = Duration::from_secs(30);

fn kill_and_delete(cd: &Containerd, id: &str) {
    cd.ctr(&["tasks", "kill", "-s", "SIGKILL", id]);
    cd.wait_task_status(id, "STOPPED", QUICK);
    cd.ctr_ok(&["tasks", "delete", id]);
    cd.ctr_ok(&["containers", "delete", id]);
}

/// Containers carrying `io.containerd.runc.v2.group` share one shim process; a container of
/// another group gets its own. Killing one container of the group leaves the others running,
/// and the shared shim exits only once the last of them is deleted.
#[test]
fn grouped_containers_share_one_shim() {
    require_root();
    let cd = Containerd::start();
    let group = unique_id("pod");
    let members: Vec<String> = (0..3).map(|i| unique_id(&format!("member{i}"))).collect();
    for id in &members {
        let args = cd
            .run_args(id, &["sleep", "1000"])
            .detach()
            .flag("--annotation")
            .flag(&format!("io.containerd.runc.v2.group={group}"));
        cd.ctr_ok(&args.build());
    }
    for id in &members {
        cd.wait_task_status(id, "RUNNING", QUICK);
    }
    let shims = cd.shim_pids();
    assert_eq!(
        shims.len(),
        1,
        "one shim for the whole group, got {shims:?}"
    );
    let shim = shims[0];
    for id in &members {
        let task_pid = cd.task(id).expect("task listed").0;
        let parent = proc_stat(task_pid).expect("task process").ppid;
        assert_eq!(parent, shim, "{id}'s init is a child of the shared shim");
    }

    let loner = unique_id("loner");
    cd.ctr_ok(&cd.run_args(&loner, &["sleep", "1000"]).detach().build());
    cd.wait_task_status(&loner, "RUNNING", QUICK);
    assert_eq!(
        cd.shim_pids().len(),
        2,
        "a container outside the group has its own shim"
    );

    // One member goes; the rest are undisturbed and the shim stays.
    kill_and_delete(&cd, &members[0]);
    for id in &members[1..] {
        assert_eq!(
            cd.task(id).map(|t| t.1),
            Some("RUNNING".to_string()),
            "{id} after its sibling was deleted"
        );
    }
    assert!(
        alive(shim),
        "the group's shim must serve the remaining members"
    );
    let out = cd.ctr_ok(&[
        "tasks",
        "exec",
        "--exec-id",
        "still-here",
        &members[1],
        "echo",
        "alive",
    ]);
    assert_eq!(out, "alive\n");

    for id in &members[1..] {
        kill_and_delete(&cd, id);
    }
    assert!(
        wait_until(Duration::from_secs(2), || !alive(shim)),
        "the group's shim outlived its last container"
    );
    assert!(cd.shim_pids().len() == 1, "the loner's shim is still there");
    kill_and_delete(&cd, &loner);
    assert!(
        wait_until(Duration::from_secs(2), || cd.shim_pids().is_empty()),
        "shims left: {:?}",
        cd.shim_pids()
    );
}

fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn status_field(pid: i32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| {
            l.strip_prefix(key)
                .map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0))
        })
        .unwrap_or(0)
}

/// Many short execs in one container leave the shim with the fds, threads and (within a small
/// margin) memory it had before, no zombie, and every exit status right. CI runs a short
/// version; `TETHER_SOAK=1` runs the full 2,000.
#[test]
fn exec_cycles_leave_no_residue() {
    require_root();
    let cd = Containerd::start();
    let id = unique_id("soak");
    cd.ctr_ok(&cd.run_args(&id, &["sleep", "1000"]).detach().build());
    cd.wait_task_status(&id, "RUNNING", QUICK);
    let shim = cd.shim_pids()[0];
    let n = if std::env::var_os("TETHER_SOAK").is_some() {
        2000
    } else {
        150
    };
    // Warm up allocations that are made once.
    for i in 0..10 {
        cd.ctr_ok(&[
            "tasks",
            "exec",
            "--exec-id",
            &format!("warm{i}"),
            &id,
            "true",
        ]);
    }
    let (fds0, threads0, rss0) = (
        fd_count(shim),
        status_field(shim, "Threads:"),
        status_field(shim, "VmRSS:"),
    );
    for i in 0..n {
        let code = i % 7;
        let out = cd.ctr_timeout(
            &[
                "tasks",
                "exec",
                "--exec-id",
                &format!("x{i}"),
                &id,
                "sh",
                "-c",
                &format!("exit {code}"),
            ],
            QUICK,
        );
        assert_eq!(
            out.status.code(),
            Some(code),
            "exec {i}: {}",
            describe(&out)
        );
    }
    let (fds1, threads1, rss1) = (
        fd_count(shim),
        status_field(shim, "Threads:"),
        status_field(shim, "VmRSS:"),
    );
    println!("after {n} execs: fds {fds0} -> {fds1}, threads {threads0} -> {threads1}, VmRSS {rss0} kB -> {rss1} kB");
    assert_eq!(fds1, fds0, "fd leak");
    assert_eq!(threads1, threads0, "thread leak");
    assert!(
        rss1 <= rss0 + 512,
        "RSS grew by more than 512 kB: {rss0} -> {rss1} kB"
    );
    assert!(
        zombies_under(shim).is_empty(),
        "zombies: {:?}",
        zombies_under(shim)
    );
    kill_and_delete(&cd, &id);
}

/// Many container lifecycles through one containerd: each `ctr run --rm` returns its status,
/// and afterwards no shim, runc state or mount is left. CI runs a short version;
/// `TETHER_SOAK=1` runs 500.
#[test]
fn container_cycles_leave_no_residue() {
    require_root();
    let cd = Containerd::start();
    let n = if std::env::var_os("TETHER_SOAK").is_some() {
        500
    } else {
        40
    };
    for i in 0..n {
        let id = unique_id("cycle");
        let code = i % 5;
        let out = cd.ctr_timeout(
            &cd.run_args(&id, &["sh", "-c", &format!("exit {code}")])
                .build(),
            QUICK,
        );
        assert_eq!(
            out.status.code(),
            Some(code),
            "cycle {i}: {}",
            describe(&out)
        );
    }
    assert!(
        wait_until(Duration::from_secs(3), || cd.shim_pids().is_empty()),
        "shims left: {:?}",
        cd.shim_pids()
    );
    let left: Vec<_> = std::fs::read_dir(cd.runc_root())
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "runc state left: {left:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&cd.dir().display().to_string()),
        "mounts left under the test dir"
    );
}

fn forwarded_exits(cd: &Containerd) -> usize {
    std::fs::read_to_string(cd.log_path())
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("msg=\"event forwarded\"") && l.contains("topic=/tasks/exit"))
        .count()
}

/// A container that exits while containerd is down (longer than other shims' retry budget): its TaskExit waits in tether's queue and
/// reaches containerd once it is back (containerd logs every forwarded event at debug level),
/// and State/Wait answer the exact status from tether's own record.
#[test]
fn exit_during_containerd_downtime_is_delivered_later() {
    require_root();
    let mut cd = Containerd::start();
    let id = unique_id("downtime");
    cd.ctr_ok(
        &cd.run_args(&id, &["sh", "-c", "sleep 2; exit 5"])
            .detach()
            .build(),
    );
    cd.wait_task_status(&id, "RUNNING", QUICK);
    cd.stop();
    let before = forwarded_exits(&cd);
    // The container exits while nobody listens; tether keeps retrying in order. The downtime
    // outlasts the ~15 s after which the Go shim (and the Rust shim crate) give an event up.
    std::thread::sleep(Duration::from_secs(17));
    cd.restart();
    assert!(
        wait_until(Duration::from_secs(15), || forwarded_exits(&cd) > before),
        "the exit that happened during the downtime never reached containerd:\n{}",
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
    cd.ctr_ok(&["containers", "delete", &id]);
}

/// A shim killed with SIGKILL leaves nothing once containerd has run `delete`: no runc state,
/// no socket (the Go shim leaves its socket behind), no bundle, no container process.
#[test]
fn killed_shim_leaves_nothing_behind() {
    require_root();
    let cd = Containerd::start();
    let id = unique_id("crash");
    cd.ctr_ok(&cd.run_args(&id, &["sleep", "1000"]).detach().build());
    let (pid, _) = cd.task(&id).expect("task listed");
    let shim = proc_stat(pid).expect("container process").ppid;
    let bundle = cd.bundle(&id);
    let address = cd.shim_address(&id);
    let socket = std::path::PathBuf::from(
        address
            .trim()
            .strip_prefix("unix://")
            .expect("unix:// address"),
    );
    assert!(socket.exists());
    assert!(kill(shim, libc::SIGKILL));
    assert!(
        wait_until(Duration::from_secs(10), || cd.task(&id).is_none()),
        "containerd kept the task of a dead shim"
    );
    cd.ctr_ok(&["containers", "delete", &id]);
    assert!(
        wait_until(Duration::from_secs(5), || !alive(pid)),
        "container process {pid} survived its shim's cleanup"
    );
    assert!(
        wait_until(Duration::from_secs(5), || !cd
            .runc_root()
            .join(&id)
            .exists()),
        "runc state of {id} left"
    );
    assert!(
        wait_until(Duration::from_secs(5), || !bundle.exists()),
        "bundle {} left",
        bundle.display()
    );
    if runtime() == "io.containerd.tether.v2" {
        assert!(
            wait_until(Duration::from_secs(5), || !socket.exists()),
            "socket {} left",
            socket.display()
        );
    }
}

/// The end of a container's output is never lost, however the container's exit races the
/// copy: 60 containers each write 1 MiB and exit at once, and ctr receives every byte each
/// time. It caught a splice(2)-based copy losing the last pages (~1 run in 80), and, under CPU
/// load, exits answered before ctr had read the output (ctr tears its FIFOs down on Wait).
#[test]
fn output_at_exit_is_never_truncated() {
    require_root();
    let cd = Containerd::start();
    for i in 0..60 {
        let id = unique_id("tail");
        let out = cd.ctr_timeout(
            &cd.run_args(&id, &["head", "-c", "1048576", "/dev/zero"])
                .build(),
            QUICK,
        );
        assert!(out.status.success(), "run {i}: {}", describe(&out));
        assert_eq!(out.stdout.len(), 1 << 20, "run {i}: stdout truncated");
    }
}

/// containerd#14081 against the real stack (containerd, ctr, runc, this host's v1 cgroups):
/// `runc kill` hangs, so `ctr tasks kill --all -s SIGKILL` would never end. tether kills the
/// runtime's call after its kill deadline (the default, 10 s) and the container's cgroup itself:
/// both processes die, the task is STOPPED with 137, containerd gets exactly one TaskExit for it
/// (after its TaskStart), the shim log says at WARN what it did, and the task and container are
/// then deleted as usual. (The Go shim waits on such a runc forever.)
#[test]
fn a_wedged_runtime_kill_still_tears_the_container_down() {
    require_root();
    let cd = Containerd::start();
    let wrapper = runc_hanging_on(cd.dir(), "kill");
    let options = binary_options_file(cd.dir(), "hung-kill", &wrapper);
    let events = EventStream::start(&cd);
    let id = unique_id("wedged");
    let args = cd
        .run_args(&id, &["sh", "-c", "sleep 1000 & exec sleep 1001"])
        .detach()
        .runtime_config(&options)
        .build();
    cd.ctr_ok(&args);
    let init = cd.wait_task_status(&id, "RUNNING", QUICK);
    let cgroups = std::fs::read_to_string(format!("/proc/{init}/cgroup")).unwrap();
    let memory = cgroups
        .lines()
        .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string()))
        .expect("a v1 memory cgroup (this test is the v1 path)");
    let procs_file = format!("/sys/fs/cgroup/memory{memory}/cgroup.procs");
    assert!(
        wait_until(QUICK, || std::fs::read_to_string(&procs_file)
            .is_ok_and(|p| p.lines().count() == 2)),
        "sh's child never started: {:?}",
        std::fs::read_to_string(&procs_file)
    );
    let pids: Vec<i32> = std::fs::read_to_string(&procs_file)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();

    let t0 = std::time::Instant::now();
    let out = cd.ctr_timeout(
        &["tasks", "kill", "--all", "--signal", "SIGKILL", &id],
        Duration::from_secs(60),
    );
    let answered = t0.elapsed();
    assert!(out.status.success(), "ctr tasks kill: {}", describe(&out));
    cd.wait_task_status(&id, "STOPPED", QUICK);
    let stopped = t0.elapsed();
    eprintln!("Kill answered after {answered:?}, task STOPPED after {stopped:?}");
    assert!(
        answered >= Duration::from_secs(9) && answered < Duration::from_secs(30),
        "the kill deadline (10 s) was not what held the Kill: {answered:?}"
    );
    let hung = std::fs::read_to_string(cd.dir().join("hung-kill"))
        .expect("tether called the runtime's kill");
    for pid in hung.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        assert!(
            wait_until(QUICK, || !alive(pid)),
            "the hung runc kill {pid} was left running"
        );
    }
    for pid in pids {
        assert!(
            wait_until(QUICK, || !alive(pid)),
            "container process {pid} survived"
        );
    }
    assert!(wait_until(QUICK, || events
        .task_events()
        .iter()
        .any(
            |e| e.topic == "/tasks/exit" && e.field("container_id") == Some(id.as_str())
        )));
    std::thread::sleep(Duration::from_millis(500));
    let topics = events.task_topics(&id);
    let exits: Vec<_> = events
        .task_events()
        .into_iter()
        .filter(|e| e.topic == "/tasks/exit" && e.field("container_id") == Some(id.as_str()))
        .collect();
    assert_eq!(exits.len(), 1, "exactly one TaskExit: {}", events.show());
    assert_eq!(
        exits[0].payload.get("exit_status").and_then(|v| v.as_u64()),
        Some(137),
        "{}",
        exits[0].line
    );
    let start_at = topics.iter().position(|t| t == "/tasks/start");
    let exit_at = topics.iter().position(|t| t == "/tasks/exit");
    assert!(start_at < exit_at && start_at.is_some(), "{topics:?}");
    let log = std::fs::read_to_string(cd.log_path()).unwrap_or_default();
    let warned = log
        .lines()
        .find(|l| l.contains("WARN") && l.contains("did not finish in time"))
        .unwrap_or_else(|| {
            panic!(
                "no WARN from the shim about killing the container itself:\n{}",
                tail(cd.log_path(), 40)
            )
        });
    eprintln!("shim: {warned}");
    let out = cd.ctr(&["tasks", "delete", &id]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exit code 137")
            || String::from_utf8_lossy(&out.stdout).contains("137"),
        "{}",
        describe(&out)
    );
    cd.ctr_ok(&["containers", "delete", &id]);
    assert!(
        !std::path::Path::new(&format!("/sys/fs/cgroup/memory{memory}")).exists(),
        "the container's cgroup is left behind"
    );
}

/// containerd#10589 against the real stack: an exec's start is held inside runc (a wrapper
/// whose `exec` waits while `dir/hold-exec` exists), the init is SIGKILLed, and a second exec
/// is made. The init's exit is held back, so the task is RUNNING by State; the second exec is
/// accepted and only its Start fails ("init process is not running", not Exec's "is not
/// running"). Once the held exec ends, the task stops with one TaskExit (137).
#[test]
fn an_exec_made_while_the_init_exit_is_held_fails_only_at_start() {
    require_root();
    let cd = Containerd::start();
    let dir = cd.dir().to_path_buf();
    let hold = dir.join("hold-exec");
    let held = dir.join("held-execs");
    let wrapper = dir.join("runc-held-exec");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do\n  case $a in\n    exec) if [ -e '{}' ]; then echo $$ >>'{}'; exec sleep 1000; fi ;;\n  esac\ndone\nexec runc \"$@\"\n",
            hold.display(),
            held.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let options = binary_options_file(&dir, "held-exec", &wrapper);
    let events = EventStream::start(&cd);
    let id = unique_id("heldexec");
    let args = cd
        .run_args(&id, &["sleep", "1000"])
        .detach()
        .runtime_config(&options)
        .build();
    cd.ctr_ok(&args);
    let init = cd.wait_task_status(&id, "RUNNING", QUICK);

    std::fs::write(&hold, "").unwrap();
    let mut first = cd
        .ctr_cmd(&["tasks", "exec", "--exec-id", "e1", &id, "sleep", "100"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("ctr tasks exec e1");
    assert!(
        wait_until(QUICK, || held.exists()),
        "runc exec of e1 never ran"
    );
    cd.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", &id]);
    assert!(wait_until(QUICK, || !alive(init)), "the init survived");
    std::fs::remove_file(&hold).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        cd.task(&id).map(|t| t.1),
        Some("RUNNING".to_string()),
        "State agrees with the events while the init's exit is held"
    );
    let second = cd.ctr(&["tasks", "exec", "--exec-id", "e2", &id, "true"]);
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "e2 ran: {}", describe(&second));
    assert!(
        said.contains("init process is not running"),
        "e2 must be accepted by Exec and refused by Start: {}",
        describe(&second)
    );

    let hung: i32 = std::fs::read_to_string(&held)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: kill(2) of the wrapper process this test made hang; it is alive (held above).
    unsafe { libc::kill(hung, libc::SIGKILL) };
    let deadline = std::time::Instant::now() + QUICK;
    let status = loop {
        if let Some(s) = first.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ctr exec e1 never ended"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "e1 started after all");
    cd.wait_task_status(&id, "STOPPED", QUICK);
    std::thread::sleep(Duration::from_millis(500));
    let exits: Vec<_> = events
        .task_events()
        .into_iter()
        .filter(|e| e.topic == "/tasks/exit" && e.field("container_id") == Some(id.as_str()))
        .collect();
    assert_eq!(
        exits.len(),
        1,
        "one TaskExit, the init's: {}",
        events.show()
    );
    assert_eq!(
        exits[0].payload.get("exit_status").and_then(|v| v.as_u64()),
        Some(137)
    );
    cd.ctr_ok(&["tasks", "delete", &id]);
    cd.ctr_ok(&["containers", "delete", &id]);
}

/// A paused container is SIGKILLed while the runtime's `resume` hangs: its processes die only
/// once thawed, so after the kill deadline the shim thaws the cgroup itself (v1 freezer here),
/// the task stops with 137 and is deleted as usual.
#[test]
fn a_paused_container_dies_of_sigkill_when_the_runtime_cannot_resume_it() {
    require_root();
    let cd = Containerd::start();
    let wrapper = runc_hanging_on(cd.dir(), "resume");
    let options = binary_options_file(cd.dir(), "hung-resume", &wrapper);
    let id = unique_id("frozen");
    let args = cd
        .run_args(&id, &["sleep", "1000"])
        .detach()
        .runtime_config(&options)
        .build();
    cd.ctr_ok(&args);
    let init = cd.wait_task_status(&id, "RUNNING", QUICK);
    cd.ctr_ok(&["tasks", "pause", &id]);
    cd.wait_task_status(&id, "PAUSED", QUICK);
    let t0 = std::time::Instant::now();
    let out = cd.ctr_timeout(
        &["tasks", "kill", "--signal", "SIGKILL", &id],
        Duration::from_secs(60),
    );
    let answered = t0.elapsed();
    assert!(out.status.success(), "ctr tasks kill: {}", describe(&out));
    cd.wait_task_status(&id, "STOPPED", QUICK);
    eprintln!("Kill of the paused task answered after {answered:?}");
    assert!(
        std::fs::read_to_string(cd.dir().join("hung-resume")).is_ok(),
        "tether never asked the runtime to resume"
    );
    assert!(wait_until(QUICK, || !alive(init)), "the init survived");
    let log = std::fs::read_to_string(cd.log_path()).unwrap_or_default();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("thawed the container's cgroup")),
        "no WARN about the thaw:\n{}",
        tail(cd.log_path(), 40)
    );
    let out = cd.ctr(&["tasks", "delete", &id]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exit code 137")
            || String::from_utf8_lossy(&out.stdout).contains("137"),
        "{}",
        describe(&out)
    );
    cd.ctr_ok(&["containers", "delete", &id]);
}
