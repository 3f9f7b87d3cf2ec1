//! End-to-end tests of the core shim through a private containerd and `ctr`.
//!
//! These are the acceptance criteria of the core shim. They need root, containerd, runc and
//! busybox-static (`scripts/setup.sh`), and fail (never skip) when those are missing.
//! The runtime under test is `TETHER_TEST_RUNTIME` (default `io.containerd.tether.v2`);
//! `TETHER_TEST_RUNTIME=io.containerd.runc.v2 cargo test --test core` runs the same tests
//! against the reference Go shim.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Bound for a container that should finish at once.
const QUICK: Duration = Duration::from_secs(30);

/// `ctr run --rm ... echo hello` prints exactly `hello`.
#[test]
fn run_echo_prints_hello() {
    require_root();
    let cd = Containerd::start();
    let id = unique_id("hello");
    let out = cd.ctr_ok(&cd.run_args(&id, &["echo", "hello"]).build());
    assert_eq!(out, "hello\n");
    assert!(
        cd.containers().is_empty(),
        "--rm left containers: {:?}",
        cd.containers()
    );
}

/// The shim logs through the bundle's `log` FIFO, which containerd copies into its own log:
/// info lines always, debug lines (one per queued event, naming its container) only
/// when containerd passes `-debug`.
#[test]
fn shim_log_reaches_containerd_and_debug_raises_the_level() {
    require_root();
    for debug in [true, false] {
        let cd = Containerd::start_with(ContainerdOptions {
            debug,
            ..Default::default()
        });
        let id = unique_id("log");
        cd.ctr_ok(&cd.run_args(&id, &["true"]).build());
        // tether's lines ("<RFC 3339 time>  INFO serving pid=...", tracing's format), not
        // containerd's own (logrus: time="..." level=...). containerd copies them as they come,
        // and stops at the shim's disconnect: wait for the last line written before it.
        let shim_line = |log: &str, level: &str, text: &str| {
            log.lines().any(|l| {
                l.starts_with("20")
                    && l.split_whitespace().nth(1) == Some(level)
                    && l.contains(text)
            })
        };
        let mut log = String::new();
        let complete = wait_until(Duration::from_secs(10), || {
            log = std::fs::read_to_string(cd.log_path()).unwrap();
            shim_line(&log, "INFO", "no container left; shutting down")
        });
        assert!(
            complete,
            "debug={debug}: the shim's INFO lines never reached containerd's log:\n{log}"
        );
        assert!(
            shim_line(&log, "INFO", "serving pid="),
            "debug={debug}: no shim INFO line in containerd's log:\n{log}"
        );
        let queued = shim_line(
            &log,
            "DEBUG",
            &format!("queue event topic=\"/tasks/start\" event=Start {{ container_id: \"{id}\""),
        );
        assert_eq!(
            queued, debug,
            "debug={debug}: shim DEBUG lines present: {queued}\n{log}"
        );
    }
}

/// The container's exit code is ctr's exit status.
#[test]
fn exit_codes_are_passed_through() {
    require_root();
    let cd = Containerd::start();
    for code in [0, 1, 7, 255] {
        let id = unique_id("exit");
        let script = format!("exit {code}");
        let out = cd.ctr_timeout(&cd.run_args(&id, &["sh", "-c", &script]).build(), QUICK);
        assert_eq!(
            out.status.code(),
            Some(code),
            "sh -c '{script}'\n{}",
            describe(&out)
        );
    }
}

/// Starts `cmd` attached (`ctr run --rm`, not `-d`) in the background and waits until the
/// task is RUNNING. Panics with ctr's output if ctr exits first.
fn run_attached_in_background(cd: &Containerd, args: &RunArgs, id: &str) -> Background {
    let mut bg = cd.ctr_spawn(&args.build());
    let mut exited = false;
    let mut last = None;
    // The runtime's create is in this bound: scaled (TCG under load took 7 s for one create).
    let bound = Duration::from_secs(10) * time_scale();
    let ready = wait_until(bound, || {
        if bg.try_status().is_some() {
            exited = true;
            return true;
        }
        last = cd.task(id);
        matches!(&last, Some((_, s)) if s == "RUNNING")
    });
    if exited {
        let out = bg.wait(QUICK);
        panic!(
            "`ctr run` of {id} exited before the task was seen RUNNING\n{}",
            describe(&out)
        );
    }
    assert!(
        ready,
        "task {id} not RUNNING within {bound:?}; last seen: {last:?}"
    );
    bg
}

/// SIGKILL of the init process comes back as exit status 137.
#[test]
fn sigkill_gives_137() {
    require_root();
    let cd = Containerd::start();
    let id = unique_id("sigkill");
    let args = cd.run_args(&id, &["sleep", "1000"]);
    let bg = run_attached_in_background(&cd, &args, &id);
    cd.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", &id]);
    let out = bg.wait(QUICK);
    assert_eq!(out.status.code(), Some(137), "{}", describe(&out));
}

/// SIGTERM kills a `sleep` that is not pid 1 of its pid namespace (host pid namespace
/// shared) and comes back as 143.
#[test]
fn sigterm_gives_143() {
    require_root();
    let cd = Containerd::start();
    let id = unique_id("sigterm");
    let args = cd.run_args(&id, &["sleep", "1000"]).host_pid_ns();
    let bg = run_attached_in_background(&cd, &args, &id);
    cd.ctr_ok(&["tasks", "kill", "-s", "SIGTERM", &id]);
    let out = bg.wait(QUICK);
    assert_eq!(out.status.code(), Some(143), "{}", describe(&out));
}

/// Deterministic pseudo-random bytes (all byte values occur).
fn pseudo_random(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Index of the first differing byte, or of the end of the shorter slice.
fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    if a == b {
        return None;
    }
    Some(
        a.iter()
            .zip(b)
            .position(|(x, y)| x != y)
            .unwrap_or(a.len().min(b.len())),
    )
}

/// Bytes piped into `ctr run` reach the container's stdin and come back on stdout.
///
/// The container runs `head -c N` rather than `cat`: ctr 1.6 never calls CloseIO when its
/// own stdin hits EOF, and the shim keeps a writer on the stdin FIFO (for CloseIO), so `cat`
/// would never see EOF. `head -c N` exits after exactly N bytes.
#[test]
fn stdin_round_trip() {
    require_root();
    let cd = Containerd::start();
    let id = unique_id("stdin");
    let input = pseudo_random(1 << 20);
    let n = input.len().to_string();
    let args = cd.run_args(&id, &["head", "-c", &n]).build();
    let out = cd.ctr_stdin(&args, input.clone(), QUICK);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        out.stdout.len(),
        input.len(),
        "stdout length; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        first_difference(&out.stdout, &input),
        None,
        "stdout differs from stdin"
    );
}

/// 64 MiB written to stdout arrive complete and byte-exact.
#[test]
fn large_stdout_is_byte_exact() {
    require_root();
    let cd = Containerd::start();
    let id = unique_id("bigout");
    const LEN: usize = 64 << 20;
    let script = format!("yes 0123456789abcdef | head -c {LEN}");
    let args = cd.run_args(&id, &["sh", "-c", &script]).build();
    let out = cd.ctr_timeout(&args, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "status {}; stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let expected: Vec<u8> = b"0123456789abcdef\n"
        .iter()
        .copied()
        .cycle()
        .take(LEN)
        .collect();
    assert_eq!(out.stdout.len(), LEN, "stdout length");
    assert_eq!(
        first_difference(&out.stdout, &expected),
        None,
        "stdout content differs"
    );
}

/// The container's stdout and stderr reach ctr's stdout and stderr, not mixed.
#[test]
fn stdout_and_stderr_stay_separate() {
    require_root();
    let cd = Containerd::start();
    let id = unique_id("streams");
    let args = cd
        .run_args(&id, &["sh", "-c", "echo out; echo err >&2"])
        .build();
    let out = cd.ctr_timeout(&args, QUICK);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
}

/// `run -d`, `tasks ls` (RUNNING, right pid), `tasks ps`, kill, `tasks delete`,
/// `containers delete`.
#[test]
fn detached_task_lifecycle() {
    require_root();
    let cd = Containerd::start();
    let id = unique_id("detached");
    cd.ctr_ok(&cd.run_args(&id, &["sleep", "1000"]).detach().build());

    let (pid, status) = cd.task(&id).expect("task listed after run -d");
    assert_eq!(status, "RUNNING");
    assert!(pid > 0, "pid {pid}");
    assert_eq!(
        cmdline(pid),
        ["sleep", "1000"],
        "/proc/{pid}/cmdline is not the container's process"
    );
    let ppid = proc_stat(pid).expect("container process exists").ppid;
    assert!(
        cd.shim_pids().contains(&ppid),
        "parent {ppid} of the container process is not a shim of this containerd: {:?}",
        cd.shim_pids()
    );

    let ps = cd.ctr_ok(&["tasks", "ps", &id]);
    let ps_pids: Vec<i32> = ps
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert_eq!(ps_pids, [pid], "tasks ps output:\n{ps}");

    // Without a `Root` option the runtime's root is /run/containerd/runc/<namespace>, as with
    // the Go shim, so `runc list` and other tooling find the container there. The runtime
    // asked is the configured one (crun in the VM lane's crun run): crun keeps its own state
    // format there, which only crun reads.
    let root = cd.runc_root();
    let list = runtime_list(&root).unwrap_or_else(|e| panic!("{e}"));
    let want = Listed {
        id: id.clone(),
        pid: pid.into(),
        status: "running".into(),
    };
    assert!(
        list.contains(&want),
        "{} --root {} list: {list:?}",
        runtime_binary(),
        root.display()
    );

    cd.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", &id]);
    cd.wait_task_status(&id, "STOPPED", Duration::from_secs(10));
    assert!(
        wait_until(Duration::from_secs(5), || !alive(pid)),
        "container process {pid} still alive"
    );
    delete_reports_sigkill(&cd, &id);
    assert!(!cd.containers().contains(&id));
}

/// 50 back-to-back `ctr run --rm ... true` all exit 0, none hangs, and `ctr events` shows
/// each one's /tasks/create, /tasks/start, /tasks/exit and /tasks/delete exactly once, in that
/// order. `true` is often gone before `runc start` returns, so this is the start/exit race
/// with real runc: an exit seen before the start is published must be held back.
#[test]
fn fifty_back_to_back_runs() {
    require_root();
    let cd = Containerd::start();
    let events = EventStream::start(&cd);
    let started = Instant::now();
    let mut ids = Vec::new();
    for i in 0..50 {
        let id = unique_id("b2b");
        let out = cd.ctr_timeout(&cd.run_args(&id, &["true"]).build(), QUICK);
        assert_eq!(
            out.status.code(),
            Some(0),
            "run {i} ({id})\n{}",
            describe(&out)
        );
        ids.push(id);
    }
    eprintln!("50 runs took {:?}", started.elapsed());
    assert!(
        cd.containers().is_empty(),
        "leftover containers: {:?}",
        cd.containers()
    );
    assert!(cd.tasks().is_empty(), "leftover tasks: {:?}", cd.tasks());

    let all_deleted = wait_until(Duration::from_secs(10), || {
        ids.iter()
            .all(|id| events.find(id, "/tasks/delete").is_some())
    });
    assert!(
        all_deleted,
        "missing /tasks/delete events; events:\n{}",
        events.lines().join("\n")
    );
    let wanted = [
        "/tasks/create",
        "/tasks/start",
        "/tasks/exit",
        "/tasks/delete",
    ];
    let mut exited_before_start = 0;
    for id in &ids {
        assert_eq!(
            events.task_topics(id),
            wanted,
            "{id}: events:\n{}",
            events.lines().join("\n")
        );
        let start = events.find(id, "/tasks/start").unwrap();
        let exit = events.find(id, "/tasks/exit").unwrap();
        if exited_at(&exit) < envelope_time(&start) {
            exited_before_start += 1;
        }
    }
    eprintln!("{exited_before_start} of 50 exited before their /tasks/start was sent");
    // Proof that the race was run, not just survived (typically most runs take that path).
    assert!(
        exited_before_start > 0,
        "no run exited before its start event; the held-exit path went untested"
    );
}

/// (date, nanoseconds into the day) of `ctr events`' envelope time: `2026-01-02
/// 13:48:55.922285198 +0000 UTC ...`.
fn envelope_time(line: &str) -> (String, u64) {
    let mut w = line.split_whitespace();
    let (date, time) = (w.next().unwrap(), w.next().unwrap());
    assert_eq!(w.next(), Some("+0000"), "not UTC: {line}");
    (date.to_string(), day_nanos(time))
}

/// (date, nanoseconds into the day) of a JSON `"exited_at":"2026-01-02T13:48:55.92Z"` (ctr
/// 1.6, 1.7) or `"exited_at":{"seconds":S,"nanos":N}` (ctr 2.x prints the protobuf Timestamp).
fn exited_at(line: &str) -> (String, u64) {
    if let Some(rest) = line.split("\"exited_at\":{").nth(1) {
        let field = |name: &str| -> u64 {
            rest.split(&format!("\"{name}\":"))
                .nth(1)
                .map(|r| {
                    r.chars()
                        .take_while(char::is_ascii_digit)
                        .collect::<String>()
                })
                .and_then(|d| d.parse().ok())
                .unwrap_or(0)
        };
        let (secs, nanos) = (field("seconds"), field("nanos"));
        return (
            civil_date(secs / 86_400),
            (secs % 86_400) * 1_000_000_000 + nanos,
        );
    }
    let at = line
        .split("\"exited_at\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("no exited_at: {line}"));
    let (date, time) = at.trim_end_matches('Z').split_once('T').unwrap();
    (date.to_string(), day_nanos(time))
}

/// `YYYY-MM-DD` of a day count since 1970-01-01 (proleptic Gregorian, Hinnant's algorithm).
fn civil_date(days: u64) -> String {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `HH:MM:SS[.fraction]` in nanoseconds.
fn day_nanos(t: &str) -> u64 {
    let (hms, frac) = t.split_once('.').unwrap_or((t, ""));
    let secs = hms
        .split(':')
        .fold(0, |acc, p| acc * 60 + p.parse::<u64>().unwrap());
    let frac = format!("{frac:0<9}").parse::<u64>().unwrap();
    secs * 1_000_000_000 + frac
}

/// `ctr events` shows /tasks/create, /tasks/start, /tasks/exit (with the status) and
/// /tasks/delete, in that order.
#[test]
fn task_events_in_order() {
    require_root();
    let cd = Containerd::start();
    let events = EventStream::start(&cd);
    let id = unique_id("events");
    let out = cd.ctr_timeout(&cd.run_args(&id, &["sh", "-c", "exit 3"]).build(), QUICK);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let got_delete = wait_until(Duration::from_secs(10), || {
        events.find(&id, "/tasks/delete").is_some()
    });
    assert!(
        got_delete,
        "no /tasks/delete event for {id}; events:\n{}",
        events.lines().join("\n")
    );
    let wanted = [
        "/tasks/create",
        "/tasks/start",
        "/tasks/exit",
        "/tasks/delete",
    ];
    let topics: Vec<String> = events
        .task_topics(&id)
        .into_iter()
        .filter(|t| wanted.contains(&t.as_str()))
        .collect();
    assert_eq!(topics, wanted, "events:\n{}", events.lines().join("\n"));
    let exit = events.find(&id, "/tasks/exit").unwrap();
    assert!(
        exit.contains("\"exit_status\":3"),
        "exit event lacks the status: {exit}"
    );
}

/// The shim process is gone within 2 s after its last task is deleted.
#[test]
fn shim_exits_after_last_task_deleted() {
    require_root();
    let cd = Containerd::start();
    let id = unique_id("shimexit");
    cd.ctr_ok(&cd.run_args(&id, &["sleep", "1000"]).detach().build());
    let shims = cd.shim_pids();
    assert!(
        !shims.is_empty(),
        "no shim process found for address {}",
        cd.address()
    );
    cd.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", &id]);
    cd.wait_task_status(&id, "STOPPED", Duration::from_secs(10));
    cd.ctr_ok(&["tasks", "delete", &id]);
    let deleted = Instant::now();
    let gone = wait_until(Duration::from_secs(2), || {
        shims.iter().all(|&p| !alive(p)) && cd.shim_pids().is_empty()
    });
    assert!(
        gone,
        "shim still running {:?} after its last task was deleted: {:?}",
        deleted.elapsed(),
        cd.shim_pids()
    );
    cd.ctr_ok(&["containers", "delete", &id]);
}

/// A container (host pid namespace) orphans 50 `sleep`s; they reparent to the shim (the
/// subreaper), and when they exit the shim reaps them: no zombie is left under it.
#[test]
fn no_zombies_from_orphans() {
    require_root();
    let cd = Containerd::start();
    let id = unique_id("orphans");
    let script = "for i in $(seq 50); do (sleep 2 &); done; sleep 1000";
    cd.ctr_ok(
        &cd.run_args(&id, &["sh", "-c", script])
            .host_pid_ns()
            .detach()
            .build(),
    );
    let (init, _) = cd.task(&id).expect("task listed");
    let shim = proc_stat(init).expect("container init exists").ppid;
    assert!(
        cd.shim_pids().contains(&shim),
        "parent {shim} of init {init} is not a shim of this containerd"
    );

    // Observe the orphans while they sleep: children of the shim named sleep.
    let mut orphans: Vec<i32> = Vec::new();
    wait_until(Duration::from_millis(1500), || {
        for p in children_of(shim) {
            if p.comm == "sleep" && p.pid != init && !orphans.contains(&p.pid) {
                orphans.push(p.pid);
            }
        }
        orphans.len() >= 50
    });
    assert!(
        !orphans.is_empty(),
        "no orphaned sleep was reparented to the shim {shim}"
    );
    eprintln!("observed {} orphans reparented to the shim", orphans.len());

    // They exit ~2 s after starting; then the shim must have reaped every one of them.
    let ended = wait_until(Duration::from_secs(10), || {
        orphans.iter().all(|&p| !alive(p))
    });
    assert!(
        ended,
        "orphans still running: {:?}",
        orphans.iter().filter(|&&p| alive(p)).collect::<Vec<_>>()
    );
    let mut zombies = Vec::new();
    let clean = wait_until(Duration::from_secs(2), || {
        zombies = zombies_under(shim);
        zombies.is_empty()
    });
    assert!(clean, "zombies left under the shim {shim}: {zombies:?}");
    assert!(
        alive(shim),
        "the shim exited while its container still runs"
    );

    cd.ctr_ok(&["tasks", "kill", "-a", "-s", "SIGKILL", &id]);
    cd.wait_task_status(&id, "STOPPED", Duration::from_secs(10));
    cd.ctr_ok(&["tasks", "delete", &id]);
    cd.ctr_ok(&["containers", "delete", &id]);
}

/// Tasks survive a containerd restart, and their exit status is still collected afterwards.
#[test]
fn task_survives_containerd_restart() {
    require_root();
    let mut cd = Containerd::start();
    let id = unique_id("restart");
    cd.ctr_ok(&cd.run_args(&id, &["sleep", "1000"]).detach().build());
    let (pid, _) = cd.task(&id).expect("task listed");
    let shims = cd.shim_pids();
    assert!(!shims.is_empty());

    cd.stop();
    assert!(alive(pid), "container process died with containerd");
    assert!(shims.iter().all(|&p| alive(p)), "shim died with containerd");
    cd.restart();

    assert_eq!(
        cd.task(&id),
        Some((pid, "RUNNING".to_string())),
        "task after restart"
    );
    cd.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", &id]);
    cd.wait_task_status(&id, "STOPPED", Duration::from_secs(10));
    let out = cd.ctr(&["tasks", "delete", &id]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exit code 137"),
        "exit status not collected after restart\n{}",
        describe(&out)
    );
    cd.ctr_ok(&["containers", "delete", &id]);
    assert!(
        wait_until(Duration::from_secs(2), || cd.shim_pids().is_empty()),
        "shim left: {:?}",
        cd.shim_pids()
    );
}

/// Output a container writes while containerd is down is not lost: the shim holds the pipes
/// and the stdout FIFO, and `ctr tasks attach` after the restart reads what was written.
#[test]
fn output_survives_containerd_restart() {
    require_root();
    let mut cd = Containerd::start();
    let id = unique_id("restartio");
    let [go, printed, done] = ["go", "printed", "done"].map(|f| format!("{f}-{id}"));
    let marker = format!("marker-{id}");
    let wait_for = |f: &str| format!("while [ ! -e /{f} ]; do sleep 0.05; done");
    let script = format!(
        "{}; echo {marker}; touch /{printed}; {}",
        wait_for(&go),
        wait_for(&done)
    );
    cd.ctr_ok(&cd.run_args(&id, &["sh", "-c", &script]).detach().build());
    let rootfs = cd.rootfs();

    cd.stop();
    std::fs::write(rootfs.join(&go), "").unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || rootfs.join(&printed).exists()),
        "the container did not print its marker while containerd was down"
    );
    cd.restart();

    let attach = cd.ctr_spawn(&["tasks", "attach", &id]);
    // Let the container exit only once attach holds the stdout FIFO open: data left in a FIFO
    // that every process has closed is gone.
    let fifo_dir = cd.dir().join("fifo");
    let attached = wait_until(Duration::from_secs(10), || {
        std::fs::read_dir(format!("/proc/{}/fd", attach.pid()))
            .map(|fds| {
                fds.flatten()
                    .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                    .any(|target| {
                        target.starts_with(&fifo_dir)
                            && target.to_string_lossy().ends_with("-stdout")
                    })
            })
            .unwrap_or(false)
    });
    assert!(attached, "`ctr tasks attach` never opened the stdout FIFO");
    std::fs::write(rootfs.join(&done), "").unwrap();
    let out = attach.wait(QUICK);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{marker}\n"),
        "output written while containerd was down\n{}",
        describe(&out)
    );
    cd.ctr_ok(&["containers", "delete", &id]);
}

/// A shim killed with SIGKILL: containerd notices, the task and container can be removed,
/// runc no longer knows the container and its process is gone.
#[test]
fn shim_sigkill_is_cleaned_up() {
    require_root();
    let cd = Containerd::start();
    let id = unique_id("shimkill");
    cd.ctr_ok(&cd.run_args(&id, &["sleep", "1000"]).detach().build());
    let (pid, _) = cd.task(&id).expect("task listed");
    let shim = proc_stat(pid).expect("container process exists").ppid;
    assert!(
        cd.shim_pids().contains(&shim),
        "parent {shim} of {pid} is not a shim of this containerd"
    );

    assert!(kill(shim, libc::SIGKILL));
    let mut last = None;
    let noticed = wait_until(Duration::from_secs(10), || {
        last = cd.task(&id);
        !matches!(&last, Some((_, s)) if s == "RUNNING")
    });
    assert!(
        noticed,
        "containerd still reports the task RUNNING after its shim was killed: {last:?}"
    );

    // containerd 1.6 removes the task by itself ("cleaning up dead shim"); if it is still
    // listed, deleting it must work.
    let out = cd.ctr(&["tasks", "delete", "--force", &id]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() || stderr.contains("not found"),
        "{}",
        describe(&out)
    );
    assert_eq!(cd.task(&id), None);
    cd.ctr_ok(&["containers", "delete", &id]);

    // containerd drops the task before its dead-shim cleanup (`shim delete`, which runs
    // `runc delete --force`) has finished, so poll.
    // The configured runtime (crun in the VM lane's crun run) is the one that must forget it.
    let runc_ids = || {
        runtime_list(&cd.runc_root())
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .map(|c| c.id)
            .collect::<Vec<_>>()
    };
    let mut ids = Vec::new();
    let forgotten = wait_until(Duration::from_secs(5), || {
        ids = runc_ids();
        !ids.contains(&id)
    });
    assert!(forgotten, "{} still lists {id}: {ids:?}", runtime_binary());
    assert!(
        wait_until(Duration::from_secs(5), || !alive(pid)),
        "container process {pid} survived"
    );
    assert!(
        wait_until(Duration::from_secs(3), || cd.shim_pids().is_empty()),
        "shim processes left: {:?}",
        cd.shim_pids()
    );
}

/// A stopped task whose runtime state is already gone (an admin's `runc delete`, a cleaned
/// `/run`) can still be deleted, with its exit status: the runtime no longer knowing the
/// container is not an error at Delete. runc says so as "container does not exist"; crun
/// names the state it could not open ("cannot open directory '<root>/<id>': No such file or
/// directory"): tether takes both for "already gone" (the VM lane's crun run proves crun's).
#[test]
fn delete_after_the_runtime_forgot_the_container() {
    require_root();
    let cd = Containerd::start();
    let id = unique_id("forgotten");
    cd.ctr_ok(&cd.run_args(&id, &["sleep", "1000"]).detach().build());
    cd.wait_task_status(&id, "RUNNING", QUICK);
    cd.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", &id]);
    cd.wait_task_status(&id, "STOPPED", QUICK);

    let runtime = runtime_binary();
    let mut del = std::process::Command::new(&runtime);
    del.arg("--root").arg(cd.runc_root()).args(["delete", &id]);
    let out = output_timeout(del, QUICK).unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "{runtime} delete: {}", describe(&out));
    let listed = runtime_list(&cd.runc_root()).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !listed.iter().any(|c| c.id == id),
        "{runtime} still lists {id}: {listed:?}"
    );

    delete_reports_sigkill(&cd, &id);
}

/// `ctr tasks delete` of a SIGKILLed task succeeds and reports 137 (ctr prints the collected
/// exit status when it is non-zero); then the task is gone and the container is deleted.
fn delete_reports_sigkill(cd: &Containerd, id: &str) {
    let out = cd.ctr_timeout(&["tasks", "delete", id], QUICK);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exit code 137"),
        "{}",
        describe(&out)
    );
    assert_eq!(cd.task(id), None);
    cd.ctr_ok(&["containers", "delete", id]);
}

/// A command missing from the rootfs fails with a clear error and leaves no shim behind.
#[test]
fn missing_binary_fails_cleanly() {
    require_root();
    let cd = Containerd::start();
    let id = unique_id("missing");
    let out = cd.ctr_timeout(&cd.run_args(&id, &["/bin/nonexistent"]).build(), QUICK);
    assert!(!out.status.success(), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        stderr.contains("/bin/nonexistent")
            && (stderr.contains("no such file") || stderr.contains("not found")),
        "error does not name the missing binary\n{}",
        describe(&out)
    );
    assert!(
        wait_until(Duration::from_secs(3), || cd.shim_pids().is_empty()),
        "shim processes left after the failed run: {:?}",
        cd.shim_pids()
    );
    assert_eq!(cd.task(&id), None);
}
