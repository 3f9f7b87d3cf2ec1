//! Output is delivered whole: every byte a process writes reaches its client, with and without a
//! terminal, for inits and execs, when the client reads slowly and when the machine is loaded.
//!
//! The client is `ctr` (containerd's own Go client library: it tears its IO down after `Delete`,
//! as containerd's client tests do), reading into a pipe or, with `-t`, a terminal of the
//! test's own. The same loops run against the Go shim (`io.containerd.runc.v2`) in the same
//! containerd; its results are printed beside tether's, not asserted.
//!
//! `TETHER_OUTPUT_RUNS` sets how many runs each loop makes: 200 is the proof issue 20 asks
//! for (hours for all three loops and both shims on a loaded 2-core machine); the default, 3,
//! keeps CI's run short. For a long proof run, `TETHER_OUTPUT_LOOPS` picks loops (a comma list
//! of `tty`, `exec`, `init`; default all) and `TETHER_OUTPUT_GO=0` leaves the Go shim out.

mod common;

use std::os::unix::fs::OpenOptionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::pty::{Pace, PtyChild};
use common::*;

/// `seq -s " " N`, as the container prints it (a terminal turns the final `\n` into `\r\n`).
fn expected(n: u32, tty: bool) -> Vec<u8> {
    let mut s = (1..=n).map(|i| i.to_string()).collect::<Vec<_>>().join(" ");
    s.push_str(if tty { "\r\n" } else { "\n" });
    s.into_bytes()
}

fn runs() -> usize {
    std::env::var("TETHER_OUTPUT_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

/// The loops `TETHER_OUTPUT_LOOPS` picks (all by default).
fn loop_wanted(name: &str) -> bool {
    std::env::var("TETHER_OUTPUT_LOOPS").map_or(true, |v| v.split(',').any(|l| l.trim() == name))
}

/// Whether the Go shim's loops run beside tether's (`TETHER_OUTPUT_GO=0` leaves them out).
fn go_too() -> bool {
    std::env::var("TETHER_OUTPUT_GO").map_or(true, |v| v != "0")
}

/// Busy loops on every core for as long as it lives: the load under which output was cut.
struct CpuHog(Vec<Child>);

impl CpuHog {
    fn start() -> CpuHog {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        CpuHog(
            (0..cores)
                .map(|_| {
                    Command::new("sh")
                        .args(["-c", "while :; do :; done"])
                        .stdout(Stdio::null())
                        .spawn()
                        .expect("spawn a CPU hog")
                })
                .collect(),
        )
    }
}

impl Drop for CpuHog {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `ctr tasks exec [-t] --exec-id <exec> <id> sh -c 'seq -s " " <n>'`.
fn exec_seq(cd: &Containerd, id: &str, exec: &str, n: u32, tty: bool) -> Vec<String> {
    let fifo_dir = cd.dir().join("fifo");
    let mut v: Vec<String> = vec!["tasks".into(), "exec".into()];
    if tty {
        v.push("-t".into());
    }
    v.extend([
        "--fifo-dir".into(),
        fifo_dir.to_string_lossy().into_owned(),
        "--exec-id".into(),
        exec.into(),
        id.into(),
        "sh".into(),
        "-c".into(),
        format!("seq -s ' ' {n}"),
    ]);
    v
}

/// Runs `args` through ctr, its stdout (a terminal with `tty`) read at `pace`; returns ctr's
/// exit code and everything it printed.
fn run_ctr(cd: &Containerd, args: &[String], tty: bool, pace: Pace) -> (i32, Vec<u8>) {
    let limit = Duration::from_secs(180) * time_scale();
    if tty {
        let pty = PtyChild::spawn_reading(cd.ctr_cmd(args), 24, 80, Some(pace));
        let (status, bytes) = pty.wait_bytes(limit);
        return (status.code().unwrap_or(-1), bytes);
    }
    let mut cmd = cd.ctr_cmd(args);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn ctr");
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || read_at(&mut out, pace));
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ctr {args:?} did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    (status.code().unwrap_or(-1), reader.join().unwrap())
}

/// Reads `r` to EOF at `pace`.
fn read_at(r: &mut impl std::io::Read, pace: Pace) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let started = Instant::now();
    let mut paused = false;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) | Err(_) => return got,
            Ok(n) => n,
        };
        got.extend_from_slice(&buf[..n]);
        pace.keep(started, got.len(), &mut paused);
    }
}

/// Where two outputs first differ, for a failure message that says what was lost.
fn difference(got: &[u8], want: &[u8]) -> String {
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let tail = |b: &[u8]| String::from_utf8_lossy(&b[b.len().saturating_sub(24)..]).into_owned();
    format!(
        "got {} of {} bytes, first difference at byte {at}; got ends {:?}, want ends {:?}",
        got.len(),
        want.len(),
        tail(got),
        tail(want)
    )
}

/// A long-running container of `runtime` to exec into.
fn sleeper(cd: &Containerd, runtime: &str) -> String {
    let id = unique_id(if runtime == DEFAULT_RUNTIME {
        "out"
    } else {
        "outgo"
    });
    let args = cd
        .run_args(&id, &["sleep", "100000"])
        .detach()
        .runtime(runtime)
        .build();
    cd.ctr_ok(&args);
    cd.wait_task_status(&id, "RUNNING", Duration::from_secs(30) * time_scale());
    id
}

/// A client that reads slowly and looks away for a while near the end: at 12 KiB/s, the
/// 341 KiB of `seq -s " " 60000` take about 28 s, and the client reads nothing for 7.5 s once
/// only 200 KiB are left. By then the exec has long exited (the pipes, pty and FIFO between it
/// and the client hold the rest), and ctr sent `Delete` once `Wait` answered. Every byte
/// arrives: `Delete` gives up on output only after 10 s in which the client took nothing, where
/// it used to close the streams 7 s after the exit (2 s in `Wait`, 5 s in `Delete`).
fn slow_client_gets_everything(tty: bool) {
    require_root();
    let cd = Containerd::start();
    let id = sleeper(&cd, &runtime());
    let want = expected(60_000, tty);
    let pace = Pace {
        rate: Some(12 * 1024),
        pause_at: Some(want.len() - 200 * 1024),
        pause: Duration::from_millis(7500),
    };
    let (code, got) = run_ctr(&cd, &exec_seq(&cd, &id, "slow", 60_000, tty), tty, pace);
    assert_eq!(code, 0, "ctr exec failed");
    assert_exact(&got, &want, tty);
}

/// `got == want`, except that a terminal's final `\r\n` may arrive as `\r\r\n`: ctr restores
/// its own terminal's settings before it writes the last bytes (the Go shim's output shows the
/// same), so `\r`s are not compared.
fn assert_exact(got: &[u8], want: &[u8], tty: bool) {
    assert!(same(got, want, tty), "{}", difference(got, want));
}

fn same(got: &[u8], want: &[u8], tty: bool) -> bool {
    if !tty {
        return got == want;
    }
    let strip = |b: &[u8]| {
        b.iter()
            .copied()
            .filter(|&c| c != b'\r')
            .collect::<Vec<u8>>()
    };
    strip(got) == strip(want)
}

#[test]
fn a_slow_client_gets_all_of_an_exec_terminals_output() {
    slow_client_gets_everything(true);
}

#[test]
fn a_slow_client_gets_all_of_an_execs_output() {
    slow_client_gets_everything(false);
}

/// The loop of containerd's `TestContainerExecLargeOutputWithTTY` (which found output cut short
/// under load): `runs()` execs of `seq -s " " 1000000` (6.9 MB) in a row, under a CPU hog on
/// every core, each compared byte for byte. Returns the failed runs' descriptions.
fn exec_loop(cd: &Containerd, runtime: &str, tty: bool, runs: usize) -> Vec<String> {
    let id = sleeper(cd, runtime);
    let want = expected(1_000_000, tty);
    let mut failed = Vec::new();
    for i in 0..runs {
        let (code, got) = run_ctr(
            cd,
            &exec_seq(cd, &id, &format!("e{i}"), 1_000_000, tty),
            tty,
            Pace::default(),
        );
        if code != 0 || !same(&got, &want, tty) {
            failed.push(format!("run {i}: exit {code}, {}", difference(&got, &want)));
        }
    }
    failed
}

/// The init's own output, the same way: `ctr run --rm` of `seq -s " " 1000000`, `runs()` times.
fn init_loop(cd: &Containerd, runtime: &str, runs: usize) -> Vec<String> {
    let want = expected(1_000_000, false);
    let mut failed = Vec::new();
    for i in 0..runs {
        let id = unique_id("initout");
        let args = cd
            .run_args(&id, &["sh", "-c", "seq -s ' ' 1000000"])
            .runtime(runtime)
            .build();
        let (code, got) = run_ctr(cd, &args, false, Pace::default());
        if code != 0 || got != want {
            failed.push(format!("run {i}: exit {code}, {}", difference(&got, &want)));
        }
    }
    failed
}

/// One loop of runs for a runtime; returns the failed runs' descriptions.
type Loop<'a> = dyn Fn(&str) -> Vec<String> + 'a;

/// The three loops, one after another under one CPU hog, each for tether and then for the Go
/// shim in the same containerd: tether's runs must all be exact; the Go shim's are printed
/// beside them.
#[test]
fn output_is_exact_under_load() {
    require_root();
    let cd = Containerd::start();
    let n = runs();
    let _hog = CpuHog::start();
    let loops: [(&str, &str, &Loop); 3] = [
        ("tty", "exec with a terminal", &|rt| {
            exec_loop(&cd, rt, true, n)
        }),
        ("exec", "exec", &|rt| exec_loop(&cd, rt, false, n)),
        ("init", "init", &|rt| init_loop(&cd, rt, n)),
    ];
    let mut cut = Vec::new();
    for (name, what, lp) in loops {
        if !loop_wanted(name) {
            continue;
        }
        let started = Instant::now();
        let ours = lp(&runtime());
        let ours_took = started.elapsed();
        let started = Instant::now();
        let go = if go_too() {
            let go = lp("io.containerd.runc.v2");
            format!(
                "{} cut short in {:.0?}{}",
                go.len(),
                started.elapsed(),
                go.first()
                    .map(|f| format!(" (first: {f})"))
                    .unwrap_or_default()
            )
        } else {
            "not run".to_string()
        };
        eprintln!(
            "{what}, {n} runs of 6.9 MB under a CPU hog, containerd {:?}: {}: {} cut short in {:.0?}; \
             Go shim: {go}",
            containerd_version(),
            runtime(),
            ours.len(),
            ours_took,
        );
        cut.extend(ours.into_iter().map(|f| format!("{what}: {f}")));
    }
    assert!(
        cut.is_empty(),
        "runs that were not exact:\n{}",
        cut.join("\n")
    );
}

/// Exec `sh -c <script>` straight through the shim's task API (as containerd would), with
/// `stdout` (a FIFO the test made) as its output; returns the exec's exit status once `Wait`
/// answered, and how long `Delete` then took.
fn exec_through_the_shim(
    cd: &Containerd,
    id: &str,
    exec_id: &str,
    script: &str,
    tty: bool,
    stdout: &std::path::Path,
) -> (u32, Duration) {
    use containerd_shim_protos::api;
    use containerd_shim_protos::protobuf::well_known_types::any::Any;
    let spec = serde_json::json!({
        "args": ["sh", "-c", script],
        "cwd": "/",
        "env": ["PATH=/bin"],
        "terminal": tty,
        "user": {"uid": 0, "gid": 0},
    });
    let exec = api::ExecProcessRequest {
        id: id.into(),
        exec_id: exec_id.into(),
        terminal: tty,
        stdout: stdout.to_string_lossy().into_owned(),
        spec: Some(Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
            value: serde_json::to_vec(&spec).unwrap(),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    let quick = Duration::from_secs(30) * time_scale();
    let conn = ShimConn::connect(cd, id);
    conn.call::<_, api::Empty>("Exec", &exec, quick).unwrap();
    let start = api::StartRequest {
        id: id.into(),
        exec_id: exec_id.into(),
        ..Default::default()
    };
    conn.call::<_, api::StartResponse>("Start", &start, quick)
        .unwrap();
    let wait = api::WaitRequest {
        id: id.into(),
        exec_id: exec_id.into(),
        ..Default::default()
    };
    let status = conn
        .call::<_, api::WaitResponse>("Wait", &wait, Duration::from_secs(120))
        .unwrap()
        .exit_status;
    let delete = api::DeleteRequest {
        id: id.into(),
        exec_id: exec_id.into(),
        ..Default::default()
    };
    let started = Instant::now();
    conn.call::<_, api::DeleteResponse>("Delete", &delete, Duration::from_secs(120))
        .expect("Delete");
    (status, started.elapsed())
}

fn make_fifo(cd: &Containerd, name: &str) -> std::path::PathBuf {
    let fifo = cd.dir().join(name);
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    fifo
}

/// A client that looks away for 8 s near the end of a terminal exec's output, with 80 KiB
/// left (more than the FIFO holds, so tether still holds output when the exec has exited):
/// `Delete`, sent once `Wait` answered, waits for it, since the client read something less
/// than 10 s ago, and the client gets every byte once it reads again. tether used to close
/// the streams 7 s after the exit (2 s in `Wait`, 5 s in `Delete`) and lose what it held.
#[test]
fn a_client_that_looks_away_near_the_end_gets_every_byte() {
    require_root();
    let cd = Containerd::start();
    let id = sleeper(&cd, &runtime());
    let want = expected(60_000, true);
    let fifo = make_fifo(&cd, "away-stdout");
    let reader = {
        let (fifo, total) = (fifo.clone(), want.len());
        std::thread::spawn(move || {
            let mut f = std::fs::File::open(fifo).unwrap();
            let pace = Pace {
                rate: None,
                pause_at: Some(total - 80 * 1024),
                pause: Duration::from_secs(8),
            };
            read_at(&mut f, pace)
        })
    };
    let (status, _) = exec_through_the_shim(&cd, &id, "away", "seq -s ' ' 60000", true, &fifo);
    assert_eq!(status, 0);
    let got = reader.join().unwrap();
    assert_exact(&got, &want, true);
}

/// A `Delete` whose output nobody reads still finishes: an exec writes more than its pipes
/// and the FIFO hold to a FIFO that is open but never read, exits, and `Delete` gives the
/// output up once nothing moved for the drain's stall period (10 s), logging why.
#[test]
fn delete_finishes_when_nobody_reads_the_output() {
    require_root();
    let cd = Containerd::start();
    let id = sleeper(&cd, &runtime());
    let fifo = make_fifo(&cd, "unread-stdout");
    // Held open, never read: a client that went away without closing.
    let _reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let (status, took) =
        exec_through_the_shim(&cd, &id, "unread", "seq -s ' ' 300000", false, &fifo);
    assert_eq!(status, 0, "the exec did not exit on its own");
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(40),
        "Delete took {took:?}: it should give the output up after about 10 s without progress"
    );
    let log = std::fs::read_to_string(cd.log_path()).unwrap_or_default();
    assert!(
        log.contains("read none of the output"),
        "no WARN says why the output was given up"
    );
}
