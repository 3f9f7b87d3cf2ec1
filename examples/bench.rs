//! Benchmark: tether (the RELEASE binary) against containerd's Go shim
//! (`containerd-shim-runc-v2`), in one run, against one private containerd.
//!
//! ```sh
//! sudo scripts/bench.sh            # full run (a few minutes)
//! sudo scripts/bench.sh --quick    # smoke check (fewer runs, smaller transfers)
//! ```
//!
//! `scripts/bench.sh` builds the release shim and runs
//! `cargo run --release --example bench -- [--quick]`. Other flags: `--only a,b` runs only the
//! named sections (`lifecycle exec fleet stdio cpu storm delete`).
//!
//! How it measures:
//! - One private containerd (temp dir, CRI disabled, log level `info` so neither shim gets
//!   `-debug`), started and stopped by the test harness (`tests/common/mod.rs`), with
//!   `<target>/release` first on its `PATH`: `io.containerd.tether.v2` is the release tether,
//!   `io.containerd.runc.v2` the Go shim containerd ships.
//! - Runs are interleaved, tether and Go alternating (ABBA order: T G, G T, T G, ...), after
//!   warm-up runs of each, so drift in machine load hits both alike.
//! - Wall times are taken around the whole `ctr` (or shim) process, from spawn to exit, with
//!   `waitid` (no polling granularity). Medians, p90 and medians of per-round means; nothing
//!   is asserted: the bench reports, it does not judge (the target column is informative).
//! - Shim CPU is `utime + stime` of the shim server from `/proc/PID/stat` (10 ms clock ticks)
//!   and, for sub-tick resolution, the sum of `/proc/PID/task/*/schedstat` run times of its
//!   live threads.
//!
//! Every `ctr` call is bounded; a hung shim (the Go shim 1.6 can lose exec exits under load,
//! containerd#7561) shows up as "missing", never as a hung bench. Ctrl-C/SIGTERM stop the bench
//! between runs and still clean up. Everything (containers, shims, runc state, mounts, the
//! temp dir) is removed at the end.

#[path = "../tests/common/mod.rs"]
mod common;

use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{output_timeout, Containerd, ContainerdOptions};

const TETHER_RUNTIME: &str = "io.containerd.tether.v2";
const GO_RUNTIME: &str = "io.containerd.runc.v2";
const GO_SHIM: &str = "containerd-shim-runc-v2";
const MIB: f64 = 1024.0 * 1024.0;
const GIB: f64 = 1024.0 * MIB;

/// Bound for one ordinary `ctr` call.
const CTR_TIMEOUT: Duration = Duration::from_secs(60);

type Res<T> = Result<T, String>;

// ---------------------------------------------------------------------------------------------
// Plan
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Plan {
    quick: bool,
    only: Option<Vec<String>>,
    warmup: usize,
    lifecycle: usize,
    exec: usize,
    fleet_rounds: usize,
    fleet: usize,
    stdio_rounds: usize,
    stdio_mib: u64,
    cpu_start: usize,
    storm_rounds: usize,
    storm: usize,
    storm_timeout: Duration,
    delete: usize,
}

impl Plan {
    fn full() -> Plan {
        Plan {
            quick: false,
            only: None,
            warmup: 3,
            lifecycle: 40,
            exec: 30,
            fleet_rounds: 3,
            fleet: 20,
            stdio_rounds: 5,
            stdio_mib: 512,
            cpu_start: 15,
            storm_rounds: 2,
            storm: 200,
            storm_timeout: Duration::from_secs(60),
            delete: 50,
        }
    }

    fn quick() -> Plan {
        Plan {
            quick: true,
            warmup: 1,
            lifecycle: 5,
            exec: 5,
            fleet_rounds: 1,
            stdio_rounds: 1,
            stdio_mib: 128,
            cpu_start: 3,
            storm_rounds: 1,
            storm: 50,
            storm_timeout: Duration::from_secs(30),
            delete: 5,
            ..Plan::full()
        }
    }

    fn wants(&self, section: &str) -> bool {
        match &self.only {
            None => true,
            Some(v) => v.iter().any(|s| s == section),
        }
    }
}

fn parse_args() -> Res<Plan> {
    let mut plan = Plan::full();
    let mut only = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => {
                plan = Plan {
                    only: plan.only.clone(),
                    ..Plan::quick()
                }
            }
            "--only" => {
                let v = args.next().ok_or("--only needs a comma-separated list")?;
                only = Some(v.split(',').map(|s| s.trim().to_string()).collect());
            }
            "-h" | "--help" => {
                println!(
                    "usage: bench [--quick] [--only lifecycle,exec,fleet,stdio,cpu,storm,delete]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    plan.only = only;
    Ok(plan)
}

// ---------------------------------------------------------------------------------------------
// The two shims
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shim {
    Tether,
    Go,
}

impl Shim {
    fn runtime(self) -> &'static str {
        match self {
            Shim::Tether => TETHER_RUNTIME,
            Shim::Go => GO_RUNTIME,
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Shim::Tether => "t",
            Shim::Go => "g",
        }
    }

    fn idx(self) -> usize {
        match self {
            Shim::Tether => 0,
            Shim::Go => 1,
        }
    }
}

/// ABBA interleaving: round 0 runs tether then Go, round 1 Go then tether, ...
fn order(round: usize) -> [Shim; 2] {
    if round % 2 == 1 {
        [Shim::Go, Shim::Tether]
    } else {
        [Shim::Tether, Shim::Go]
    }
}

/// Samples per shim, indexed by [`Shim::idx`].
#[derive(Debug, Default, Clone)]
struct Pair {
    v: [Vec<f64>; 2],
    failures: [usize; 2],
}

impl Pair {
    fn push(&mut self, s: Shim, x: f64) {
        self.v[s.idx()].push(x);
    }
    fn fail(&mut self, s: Shim) {
        self.failures[s.idx()] += 1;
    }
    fn get(&self, s: Shim) -> &[f64] {
        &self.v[s.idx()]
    }
    fn note(&self) -> String {
        let [t, g] = self.failures;
        if t + g == 0 {
            String::new()
        } else {
            format!("failed runs: tether {t}, Go {g}")
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------------------

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    s
}

fn median(v: &[f64]) -> f64 {
    let s = sorted(v);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Mean of the middle 80%: the slowest and fastest 10% dropped (ctr-level times have long
/// tails on a shared 2-core machine).
fn trimmed_mean(v: &[f64]) -> f64 {
    let s = sorted(v);
    let cut = s.len() / 10;
    mean(&s[cut..s.len() - cut])
}

/// Nearest-rank percentile, `p` in (0, 1].
fn percentile(v: &[f64], p: f64) -> f64 {
    let s = sorted(v);
    if s.is_empty() {
        return f64::NAN;
    }
    let rank = (p * s.len() as f64).ceil().max(1.0) as usize;
    s[rank.min(s.len()) - 1]
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn max(v: &[f64]) -> f64 {
    v.iter().cloned().fold(f64::NAN, f64::max)
}

// ---------------------------------------------------------------------------------------------
// Results table
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Cell {
    Num(f64, usize),
    Text(String),
}

impl Cell {
    fn show(&self) -> String {
        match self {
            Cell::Num(x, _) if x.is_nan() => "n/a".into(),
            Cell::Num(x, d) => format!("{x:.d$}", d = *d),
            Cell::Text(s) => s.clone(),
        }
    }
    fn num(&self) -> Option<f64> {
        match self {
            Cell::Num(x, _) if x.is_finite() => Some(*x),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
enum Target {
    None,
    RatioAtMost(f64, &'static str),
    RatioAtLeast(f64, &'static str),
    AtMost(f64, &'static str),
    Text(&'static str, bool),
}

#[derive(Debug, Clone)]
struct Row {
    metric: String,
    tether: Cell,
    go: Cell,
    target: Target,
    note: String,
}

impl Row {
    fn ratio(&self) -> Option<f64> {
        let (t, g) = (self.tether.num()?, self.go.num()?);
        (g != 0.0).then_some(t / g)
    }

    fn target_text(&self) -> String {
        match &self.target {
            Target::None => "".into(),
            Target::RatioAtMost(_, s)
            | Target::RatioAtLeast(_, s)
            | Target::AtMost(_, s)
            | Target::Text(s, _) => s.to_string(),
        }
    }

    /// `Some(true)` met, `Some(false)` missed, `None` no target or not measurable.
    fn met(&self) -> Option<bool> {
        match &self.target {
            Target::None => None,
            Target::RatioAtMost(x, _) => self.ratio().map(|r| r <= *x),
            Target::RatioAtLeast(x, _) => self.ratio().map(|r| r >= *x),
            Target::AtMost(x, _) => self.tether.num().map(|t| t <= *x),
            Target::Text(_, ok) => Some(*ok),
        }
    }
}

struct Report {
    rows: Vec<Row>,
}

impl Report {
    fn add(&mut self, metric: &str, t: Cell, g: Cell, target: Target, note: String) {
        let row = Row {
            metric: metric.to_string(),
            tether: t,
            go: g,
            target,
            note,
        };
        let ratio = row.ratio().map(|r| format!("{r:.2}")).unwrap_or("-".into());
        println!(
            "  {:<44} tether {:>10}   Go {:>10}   tether/Go {:>6}{}",
            row.metric,
            row.tether.show(),
            row.go.show(),
            ratio,
            if row.note.is_empty() {
                String::new()
            } else {
                format!("   ({})", row.note)
            }
        );
        self.rows.push(row);
    }

    fn markdown(&self) -> String {
        let mut s = String::new();
        s.push_str("| metric | tether | Go (runc v2) | tether/Go | target | met |\n");
        s.push_str("|---|---:|---:|---:|---|:-:|\n");
        for r in &self.rows {
            let ratio = r.ratio().map(|x| format!("{x:.2}")).unwrap_or("-".into());
            let met = match r.met() {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "",
            };
            let metric = if r.note.is_empty() {
                r.metric.clone()
            } else {
                format!("{} ({})", r.metric, r.note)
            };
            let _ = writeln!(
                s,
                "| {metric} | {} | {} | {ratio} | {} | {met} |",
                r.tether.show(),
                r.go.show(),
                r.target_text()
            );
        }
        s
    }
}

// ---------------------------------------------------------------------------------------------
// Processes: precise wall time with a bound
// ---------------------------------------------------------------------------------------------

struct Timed {
    elapsed: Duration,
    /// `None`: did not finish within the bound (it was killed).
    status: Option<ExitStatus>,
    stderr: String,
}

impl Timed {
    fn ok(&self) -> bool {
        matches!(self.status, Some(s) if s.success())
    }
    fn describe(&self) -> String {
        match self.status {
            None => format!("timed out after {:?}", self.elapsed),
            Some(s) => format!("{s}: {}", self.stderr.trim()),
        }
    }
}

/// Blocks until `pid` (our child) has exited, without reaping it.
fn wait_exited_keep_zombie(pid: i32) {
    loop {
        // SAFETY: siginfo_t is plain data; waitid only writes into it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointer to a siginfo_t for the duration of the call.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return;
        }
    }
}

/// Runs `cmd` (stdin and stdout `/dev/null`, stderr captured) and measures spawn-to-exit wall
/// time. A watchdog kills it after `timeout`; the child is only reaped after the watchdog is
/// disarmed, so the kill can never hit a recycled pid.
fn timed_run(mut cmd: Command, timeout: Duration) -> Timed {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let t0 = Instant::now();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Timed {
                elapsed: t0.elapsed(),
                status: None,
                stderr: format!("spawn {cmd:?}: {e}"),
            }
        }
    };
    let pid = child.id() as i32;
    let mut err = child.stderr.take().expect("piped stderr");
    let reader = thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err.read_to_end(&mut b);
        b
    });
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let killed = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let gate = Arc::clone(&gate);
        let killed = Arc::clone(&killed);
        thread::spawn(move || {
            let (m, cv) = &*gate;
            let g = m.lock().unwrap();
            let (g, _) = cv.wait_timeout_while(g, timeout, |done| !*done).unwrap();
            if !*g {
                common::kill(pid, libc::SIGKILL);
                killed.store(true, Ordering::SeqCst);
            }
        })
    };
    wait_exited_keep_zombie(pid);
    let elapsed = t0.elapsed();
    {
        let (m, cv) = &*gate;
        *m.lock().unwrap() = true;
        cv.notify_all();
    }
    let _ = watchdog.join();
    let status = child.wait().ok();
    let stderr = String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned();
    Timed {
        elapsed,
        status: if killed.load(Ordering::SeqCst) {
            None
        } else {
            status
        },
        stderr,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ---------------------------------------------------------------------------------------------
// /proc
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    /// utime + stime from /proc/PID/stat, in ms (10 ms resolution).
    stat_ms: f64,
    /// Sum of the live threads' run time from /proc/PID/task/*/schedstat, in ms.
    sched_ms: f64,
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

fn cpu(pid: i32) -> Option<Cpu> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    // Fields after the comm: state(3) ppid(4) ... utime(14) stime(15).
    let utime: f64 = rest.get(11)?.parse().ok()?;
    let stime: f64 = rest.get(12)?.parse().ok()?;
    let mut sched_ns = 0u64;
    for e in fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        if let Ok(s) = fs::read_to_string(e.path().join("schedstat")) {
            sched_ns += s
                .split_whitespace()
                .next()
                .and_then(|x| x.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Some(Cpu {
        stat_ms: (utime + stime) * 1000.0 / clk_tck(),
        sched_ms: sched_ns as f64 / 1e6,
    })
}

#[derive(Debug, Clone, Copy, Default)]
struct Mem {
    rss_kb: f64,
    pss_kb: f64,
    threads: f64,
    fds: f64,
}

fn kb_field(text: &str, key: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn mem(pid: i32) -> Option<Mem> {
    let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some(Mem {
        rss_kb: kb_field(&rollup, "Rss")?,
        pss_kb: kb_field(&rollup, "Pss")?,
        threads: kb_field(&status, "Threads")?,
        fds: fds as f64,
    })
}

// ---------------------------------------------------------------------------------------------
// The bench
// ---------------------------------------------------------------------------------------------

struct Bench<'a> {
    cd: &'a Containerd,
    plan: Plan,
    stop: Arc<AtomicBool>,
    fifo: String,
    tether_bin: PathBuf,
    go_bin: PathBuf,
    report: Report,
}

impl<'a> Bench<'a> {
    fn check_stop(&self) -> Res<()> {
        if self.stop.load(Ordering::SeqCst) {
            Err("interrupted".into())
        } else {
            Ok(())
        }
    }

    fn ctr(&self, args: &[String], timeout: Duration) -> Timed {
        timed_run(self.cd.ctr_cmd(args), timeout)
    }

    fn ctr_ok(&self, args: &[String], timeout: Duration) -> Res<Timed> {
        let t = self.ctr(args, timeout);
        if t.ok() {
            Ok(t)
        } else {
            Err(format!("ctr {} failed: {}", args.join(" "), t.describe()))
        }
    }

    fn id(&self, what: &str, s: Shim) -> String {
        common::unique_id(&format!("{what}-{}", s.tag()))
    }

    fn run_args(&self, id: &str, s: Shim, detach: bool, cmd: &[&str]) -> Vec<String> {
        let a = self.cd.run_args(id, cmd).runtime(s.runtime());
        if detach { a.detach() } else { a }.build()
    }

    /// Starts a detached container running `sleep 100000`.
    fn start_sleeper(&self, id: &str, s: Shim) -> Res<Timed> {
        self.ctr_ok(
            &self.run_args(id, s, true, &["sleep", "100000"]),
            CTR_TIMEOUT,
        )
    }

    /// Kills and removes container `id` (bounded; errors are reported, not fatal: whatever is
    /// left is removed when the private containerd is torn down).
    fn remove(&self, id: &str) {
        let strs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let t = self.ctr(
            &strs(&["tasks", "delete", "-f", id]),
            Duration::from_secs(30),
        );
        if !t.ok() && !t.stderr.contains("not found") {
            eprintln!("  (cleanup: tasks delete -f {id}: {})", t.describe());
            return;
        }
        let t = self.ctr(
            &strs(&["containers", "delete", id]),
            Duration::from_secs(30),
        );
        if !t.ok() && !t.stderr.contains("not found") {
            eprintln!("  (cleanup: containers delete {id}: {})", t.describe());
        }
    }

    fn remove_all(&self, ids: &[String]) {
        thread::scope(|sc| {
            for id in ids {
                sc.spawn(move || self.remove(id));
            }
        });
    }

    fn shim_pid(&self, id: &str) -> Res<i32> {
        self.cd
            .shim_pid(id)
            .filter(|p| common::alive(*p))
            .ok_or_else(|| {
                format!(
                    "no live shim for {id} (shim.pid in {})",
                    self.cd.bundle(id).display()
                )
            })
    }

    fn warm_up(&self) -> Res<()> {
        for _ in 0..self.plan.warmup {
            for s in order(0) {
                let id = self.id("warm", s);
                self.ctr_ok(&self.run_args(&id, s, false, &["true"]), CTR_TIMEOUT)?;
            }
        }
        Ok(())
    }

    // ---- lifecycle: ctr run --rm ... true -------------------------------------------------

    fn lifecycle(&mut self) -> Res<()> {
        println!(
            "\n== lifecycle: `ctr run --rm ... true`, {} runs per shim, interleaved",
            self.plan.lifecycle
        );
        let mut p = Pair::default();
        for i in 0..self.plan.lifecycle {
            self.check_stop()?;
            for s in order(i) {
                let id = self.id("lc", s);
                let t = self.ctr(&self.run_args(&id, s, false, &["true"]), CTR_TIMEOUT);
                if t.ok() {
                    p.push(s, ms(t.elapsed));
                } else {
                    eprintln!("  lifecycle {id} failed: {}", t.describe());
                    p.fail(s);
                    self.remove(&id);
                }
            }
        }
        self.latency_rows("lifecycle `ctr run --rm true`", &p);
        Ok(())
    }

    /// The rows of a latency measured per run: judged on the trimmed mean (the middle 80%),
    /// with the median and p90 beside it.
    fn latency_rows(&mut self, what: &str, p: &Pair) {
        let (t, g) = (p.get(Shim::Tether), p.get(Shim::Go));
        self.report.add(
            &format!("{what}, trimmed mean (ms)"),
            Cell::Num(trimmed_mean(t), 1),
            Cell::Num(trimmed_mean(g), 1),
            Target::RatioAtMost(0.9, "≤ 0.9× Go"),
            p.note(),
        );
        self.report.add(
            &format!("{what}, median (ms)"),
            Cell::Num(median(t), 1),
            Cell::Num(median(g), 1),
            Target::None,
            String::new(),
        );
        self.report.add(
            &format!("{what}, p90 (ms)"),
            Cell::Num(percentile(t, 0.9), 1),
            Cell::Num(percentile(g, 0.9), 1),
            Target::None,
            String::new(),
        );
    }

    // ---- exec: ctr tasks exec ... true ----------------------------------------------------

    fn exec(&mut self) -> Res<()> {
        println!(
            "\n== exec: `ctr tasks exec ... true` into a running container, {} runs per shim",
            self.plan.exec
        );
        let ids = [self.id("ex", Shim::Tether), self.id("ex", Shim::Go)];
        let r = self.exec_inner(&ids);
        self.remove_all(&ids);
        r
    }

    fn exec_inner(&mut self, ids: &[String; 2]) -> Res<()> {
        for s in order(0) {
            self.start_sleeper(&ids[s.idx()], s)?;
        }
        let mut p = Pair::default();
        let mut n = 0;
        for i in 0..self.plan.exec + self.plan.warmup {
            self.check_stop()?;
            for s in order(i) {
                n += 1;
                let args: Vec<String> = [
                    "tasks",
                    "exec",
                    "--exec-id",
                    &format!("x{n}"),
                    "--fifo-dir",
                    &self.fifo,
                    &ids[s.idx()],
                    "true",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                let t = self.ctr(&args, CTR_TIMEOUT);
                if i < self.plan.warmup {
                    continue;
                }
                if t.ok() {
                    p.push(s, ms(t.elapsed));
                } else {
                    eprintln!("  exec into {} failed: {}", ids[s.idx()], t.describe());
                    p.fail(s);
                }
            }
        }
        self.latency_rows("exec `ctr tasks exec true`", &p);
        Ok(())
    }

    // ---- fleet: 20 detached containers started concurrently; memory per shim ---------------

    fn fleet(&mut self) -> Res<()> {
        let n = self.plan.fleet;
        println!(
            "\n== parallel start + memory: {n} detached `sleep` containers started concurrently, \
             {} round(s) per shim",
            self.plan.fleet_rounds
        );
        let mut start = Pair::default();
        let mut rss = Pair::default();
        let mut pss = Pair::default();
        let mut threads = Pair::default();
        let mut threads_max = Pair::default();
        let mut fds = Pair::default();
        for round in 0..self.plan.fleet_rounds {
            for s in order(round) {
                self.check_stop()?;
                let ids: Vec<String> = (0..n).map(|_| self.id("fl", s)).collect();
                let r = self.fleet_round(s, &ids);
                self.remove_all(&ids);
                match r {
                    Ok((secs, m)) => {
                        start.push(s, secs);
                        rss.push(s, mean(&m.iter().map(|x| x.rss_kb).collect::<Vec<_>>()));
                        pss.push(s, mean(&m.iter().map(|x| x.pss_kb).collect::<Vec<_>>()));
                        let th: Vec<f64> = m.iter().map(|x| x.threads).collect();
                        threads.push(s, mean(&th));
                        threads_max.push(s, max(&th));
                        fds.push(s, mean(&m.iter().map(|x| x.fds).collect::<Vec<_>>()));
                        println!(
                            "  round {round} {:?}: {n} RUNNING in {:.0} ms; per shim RSS {:.0} kB, \
                             PSS {:.0} kB, threads {:.1}, fds {:.1}",
                            s,
                            secs,
                            rss.get(s).last().unwrap(),
                            pss.get(s).last().unwrap(),
                            threads.get(s).last().unwrap(),
                            fds.get(s).last().unwrap()
                        );
                    }
                    Err(e) => {
                        eprintln!("  round {round} {s:?} failed: {e}");
                        start.fail(s);
                    }
                }
            }
        }
        let m = |p: &Pair, s| median(p.get(s));
        self.report.add(
            &format!("parallel start of {n} containers (ms)"),
            Cell::Num(m(&start, Shim::Tether), 0),
            Cell::Num(m(&start, Shim::Go), 0),
            Target::None,
            start.note(),
        );
        self.report.add(
            &format!("RSS per shim, {n} running (kB)"),
            Cell::Num(m(&rss, Shim::Tether), 0),
            Cell::Num(m(&rss, Shim::Go), 0),
            Target::AtMost(2048.0, "≤ 2 MiB"),
            String::new(),
        );
        self.report.add(
            &format!("PSS per shim, {n} running (kB)"),
            Cell::Num(m(&pss, Shim::Tether), 0),
            Cell::Num(m(&pss, Shim::Go), 0),
            Target::AtMost(512.0, "≤ 0.5 MiB"),
            String::new(),
        );
        self.report.add(
            "threads per shim (max)",
            Cell::Num(max(threads_max.get(Shim::Tether)), 0),
            Cell::Num(max(threads_max.get(Shim::Go)), 0),
            Target::AtMost(2.0, "≤ 2"),
            String::new(),
        );
        self.report.add(
            "open fds per shim (mean)",
            Cell::Num(m(&fds, Shim::Tether), 1),
            Cell::Num(m(&fds, Shim::Go), 1),
            Target::None,
            String::new(),
        );
        Ok(())
    }

    /// Starts `ids` concurrently; returns (ms until the last `ctr run -d` returned, memory of
    /// each shim after a 1 s settle).
    fn fleet_round(&self, s: Shim, ids: &[String]) -> Res<(f64, Vec<Mem>)> {
        let t0 = Instant::now();
        let results: Vec<(Timed, Instant)> = thread::scope(|sc| {
            let hs: Vec<_> = ids
                .iter()
                .map(|id| {
                    let args = self.run_args(id, s, true, &["sleep", "100000"]);
                    sc.spawn(move || {
                        let t = self.ctr(&args, CTR_TIMEOUT);
                        (t, Instant::now())
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let last = results.iter().map(|r| r.1).max().unwrap_or(t0);
        for (id, (t, _)) in ids.iter().zip(&results) {
            if !t.ok() {
                return Err(format!("ctr run -d {id}: {}", t.describe()));
            }
        }
        let elapsed = ms(last - t0);
        // `ctr run -d` returns after Start; confirm containerd agrees.
        let out = output_timeout(self.cd.ctr_cmd(&["tasks", "ls"]), CTR_TIMEOUT)?;
        let tasks = common::parse_tasks(&String::from_utf8_lossy(&out.stdout));
        for id in ids {
            if !tasks.iter().any(|t| &t.0 == id && t.2 == "RUNNING") {
                return Err(format!("{id} is not RUNNING after ctr run -d"));
            }
        }
        thread::sleep(Duration::from_secs(1));
        let want = fs::canonicalize(match s {
            Shim::Tether => &self.tether_bin,
            Shim::Go => &self.go_bin,
        })
        .map_err(|e| format!("canonicalize shim binary: {e}"))?;
        let mut mems = Vec::new();
        for id in ids {
            let pid = self.shim_pid(id)?;
            // Make sure containerd ran the binary we mean to measure (PATH order).
            let exe = fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
            if exe != want {
                return Err(format!(
                    "shim {pid} of {id} runs {}, not {}",
                    exe.display(),
                    want.display()
                ));
            }
            mems.push(mem(pid).ok_or_else(|| format!("cannot read /proc/{pid}"))?);
        }
        Ok((elapsed, mems))
    }

    // ---- stdio: N MiB through the shim to ctr ----------------------------------------------

    fn stdio(&mut self) -> Res<()> {
        let mib = self.plan.stdio_mib;
        println!(
            "\n== stdio: {mib} MiB from the container's stdout through the shim to ctr, {} round(s) per shim",
            self.plan.stdio_rounds
        );
        let mut rate = Pair::default();
        let mut cpu_gib = Pair::default();
        let mut sched_gib = Pair::default();
        for round in 0..self.plan.stdio_rounds {
            for s in order(round) {
                self.check_stop()?;
                let id = self.id("io", s);
                match self.stdio_once(s, &id, mib) {
                    Ok((mibs, c)) => {
                        let gib = mib as f64 * MIB / GIB;
                        rate.push(s, mibs);
                        cpu_gib.push(s, c.stat_ms / gib);
                        sched_gib.push(s, c.sched_ms / gib);
                        println!(
                            "  round {round} {s:?}: {mibs:.0} MiB/s, shim CPU {:.0} ms (stat) / {:.1} ms (schedstat) for {mib} MiB",
                            c.stat_ms, c.sched_ms
                        );
                    }
                    Err(e) => {
                        eprintln!("  stdio {id} failed: {e}");
                        rate.fail(s);
                    }
                }
                self.remove(&id);
            }
        }
        let m = |p: &Pair, s| median(p.get(s));
        self.report.add(
            &format!("stdio throughput, {mib} MiB to ctr (MiB/s)"),
            Cell::Num(m(&rate, Shim::Tether), 0),
            Cell::Num(m(&rate, Shim::Go), 0),
            Target::RatioAtLeast(2.0, "≥ 2× Go"),
            rate.note(),
        );
        self.report.add(
            "stdio shim CPU per GiB, utime+stime (ms)",
            Cell::Num(m(&cpu_gib, Shim::Tether), 0),
            Cell::Num(m(&cpu_gib, Shim::Go), 0),
            Target::RatioAtMost(0.125, "≤ 1/8 Go"),
            String::new(),
        );
        self.report.add(
            "stdio shim CPU per GiB, schedstat (ms)",
            Cell::Num(m(&sched_gib, Shim::Tether), 0),
            Cell::Num(m(&sched_gib, Shim::Go), 0),
            Target::None,
            String::new(),
        );
        Ok(())
    }

    /// One transfer: MiB/s between ctr's first and last byte, and the shim's CPU over the same
    /// interval.
    fn stdio_once(&self, s: Shim, id: &str, mib: u64) -> Res<(f64, Cpu)> {
        let want = mib * 1024 * 1024;
        let script = format!("dd if=/dev/zero bs=1048576 count={mib} 2>/dev/null; exec sleep 600");
        let args = self.run_args(id, s, false, &["sh", "-c", &script]);
        let mut cmd = self.cd.ctr_cmd(&args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().map_err(|e| format!("spawn ctr: {e}"))?;
        let mut out = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        let result = thread::scope(|sc| {
            sc.spawn(move || {
                let mut buf = vec![0u8; 1 << 20];
                let mut total = 0u64;
                let mut first: Option<(Instant, Option<Cpu>, Option<i32>)> = None;
                let mut first_len = 0u64;
                let mut sent = false;
                loop {
                    let n = match out.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if first.is_none() {
                        let pid = self.cd.shim_pid(id);
                        first = Some((Instant::now(), pid.and_then(cpu), pid));
                        first_len = n as u64;
                    }
                    total += n as u64;
                    if total >= want && !sent {
                        let now = Instant::now();
                        let (t1, c1, pid) = first.unwrap();
                        let c2 = pid.and_then(cpu);
                        let _ = tx.send((now - t1, c1, c2, total, total - first_len));
                        sent = true;
                    }
                }
                if !sent {
                    let _ = tx.send((Duration::ZERO, None, None, total, 0));
                }
            });
            let got = rx.recv_timeout(Duration::from_secs(300));
            // The container now sleeps; end it so ctr exits and removes it.
            let kill: Vec<String> = ["tasks", "kill", "-s", "SIGKILL", id]
                .iter()
                .map(|s| s.to_string())
                .collect();
            let _ = self.ctr(&kill, Duration::from_secs(30));
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
            }
            let _ = child.wait();
            got
        });
        let (elapsed, c1, c2, total, timed_bytes) =
            result.map_err(|_| "no data within 300 s".to_string())?;
        if total < want {
            return Err(format!("got {total} bytes, wanted {want}"));
        }
        let (Some(c1), Some(c2)) = (c1, c2) else {
            return Err("could not read the shim's CPU time".into());
        };
        // The clock starts when the first read returns: count only the bytes after it.
        let mibs = (timed_bytes as f64 / MIB) / elapsed.as_secs_f64().max(1e-9);
        Ok((
            mibs,
            Cpu {
                stat_ms: c2.stat_ms - c1.stat_ms,
                sched_ms: c2.sched_ms - c1.sched_ms,
            },
        ))
    }

    // ---- shim CPU to start one container ---------------------------------------------------

    fn cpu_start(&mut self) -> Res<()> {
        println!(
            "\n== shim CPU to start one container (`ctr run -d`), {} runs per shim",
            self.plan.cpu_start
        );
        let mut stat = Pair::default();
        let mut sched = Pair::default();
        for i in 0..self.plan.cpu_start {
            for s in order(i) {
                self.check_stop()?;
                let id = self.id("cpu", s);
                let r = self.start_sleeper(&id, s).and_then(|_| {
                    thread::sleep(Duration::from_millis(100));
                    let pid = self.shim_pid(&id)?;
                    cpu(pid).ok_or_else(|| format!("cannot read /proc/{pid}/stat"))
                });
                match r {
                    Ok(c) => {
                        stat.push(s, c.stat_ms);
                        sched.push(s, c.sched_ms);
                    }
                    Err(e) => {
                        eprintln!("  {id}: {e}");
                        stat.fail(s);
                    }
                }
                self.remove(&id);
            }
        }
        let m = |p: &Pair, s| median(p.get(s));
        // utime and stime are each truncated to whole 10 ms ticks, so a few ms read as 0: the
        // target is judged on the schedstat figure.
        // Shown as text: a ratio of whole ticks (0 against 10) would mean nothing.
        self.report.add(
            "shim CPU to start 1 container, utime+stime (ms)",
            Cell::Text(format!("{:.0}", m(&stat, Shim::Tether))),
            Cell::Text(format!("{:.0}", m(&stat, Shim::Go))),
            Target::None,
            if stat.note().is_empty() {
                "10 ms ticks".to_string()
            } else {
                format!("10 ms ticks; {}", stat.note())
            },
        );
        self.report.add(
            "shim CPU to start 1 container, schedstat (ms)",
            Cell::Num(m(&sched, Shim::Tether), 2),
            Cell::Num(m(&sched, Shim::Go), 2),
            Target::RatioAtMost(0.25, "≤ 1/4 Go"),
            String::new(),
        );
        Ok(())
    }

    // ---- exit storm: K concurrent execs, each `exit N` --------------------------------------

    fn storm(&mut self) -> Res<()> {
        let k = self.plan.storm;
        println!(
            "\n== exit storm: {k} concurrent `ctr tasks exec ... sh -c 'exit N'` into one container, \
             bound {:?}, {} round(s) per shim",
            self.plan.storm_timeout, self.plan.storm_rounds
        );
        let mut res: [Vec<(usize, usize, usize, f64)>; 2] = [Vec::new(), Vec::new()];
        for round in 0..self.plan.storm_rounds {
            for s in order(round) {
                self.check_stop()?;
                let id = self.id("st", s);
                let r = self.start_sleeper(&id, s).and_then(|_| {
                    let pid = self.shim_pid(&id)?;
                    let r = self.storm_once(&id, round)?;
                    if r.2 > 0 {
                        // Execs went missing: the shim has lost track of them and would hang
                        // the teardown too. Kill it; containerd then cleans up through the
                        // `delete` action.
                        println!("  ({s:?} shim {pid} lost exec exits; killing it for cleanup)");
                        common::kill(pid, libc::SIGKILL);
                        common::wait_until(Duration::from_secs(10), || !common::alive(pid));
                    }
                    Ok(r)
                });
                self.remove(&id);
                match r {
                    Ok(x) => {
                        println!(
                            "  round {round} {s:?}: right {}, wrong {}, missing {} of {k}; all back in {:.1} s",
                            x.0, x.1, x.2, x.3
                        );
                        res[s.idx()].push(x);
                    }
                    Err(e) => eprintln!("  storm {id} failed: {e}"),
                }
            }
        }
        let text = |v: &Vec<(usize, usize, usize, f64)>| {
            if v.is_empty() {
                "n/a".to_string()
            } else {
                v.iter()
                    .map(|x| format!("{}/{}/{}", x.0, x.1, x.2))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        let all_right = !res[0].is_empty() && res[0].iter().all(|x| x.0 == k);
        self.report.add(
            &format!("exit storm {k} execs: right/wrong/missing per round"),
            Cell::Text(text(&res[0])),
            Cell::Text(text(&res[1])),
            Target::Text(if k == 200 { "200/0/0" } else { "all right" }, all_right),
            String::new(),
        );
        let secs = |v: &Vec<(usize, usize, usize, f64)>| {
            median(&v.iter().map(|x| x.3).collect::<Vec<_>>())
        };
        self.report.add(
            &format!("exit storm {k} execs: time until all back (s)"),
            Cell::Num(secs(&res[0]), 1),
            Cell::Num(secs(&res[1]), 1),
            Target::None,
            format!("bound {} s", self.plan.storm_timeout.as_secs()),
        );
        Ok(())
    }

    /// Returns (right, wrong, missing, seconds until the last one came back or the bound).
    fn storm_once(&self, id: &str, round: usize) -> Res<(usize, usize, usize, f64)> {
        let k = self.plan.storm;
        // Exit codes 30..30+k: distinct, and clear of 0 and 1 (ctr's own error status).
        let code = |i: usize| (30 + i) as i32;
        let t0 = Instant::now();
        let mut children = Vec::with_capacity(k);
        for i in 0..k {
            let args: Vec<String> = [
                "tasks",
                "exec",
                "--exec-id",
                &format!("s{round}-{i}"),
                "--fifo-dir",
                &self.fifo,
                id,
                "sh",
                "-c",
                &format!("exit {}", code(i)),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let mut cmd = self.cd.ctr_cmd(&args);
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            match cmd.spawn() {
                Ok(c) => children.push((i, Some(c), None::<Option<i32>>)),
                Err(e) => {
                    eprintln!("  spawn ctr exec #{i}: {e}");
                    children.push((i, None, Some(None)));
                }
            }
        }
        let deadline = t0 + self.plan.storm_timeout;
        let mut last_back = t0;
        loop {
            let mut pending = 0;
            for (_, child, result) in children.iter_mut() {
                if result.is_some() {
                    continue;
                }
                let c = child.as_mut().unwrap();
                match c.try_wait() {
                    Ok(Some(st)) => {
                        *result = Some(st.code());
                        last_back = Instant::now();
                    }
                    Ok(None) => pending += 1,
                    Err(_) => *result = Some(None),
                }
            }
            if pending == 0 || Instant::now() >= deadline || self.stop.load(Ordering::SeqCst) {
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let (mut right, mut wrong, mut missing) = (0, 0, 0);
        for (i, child, result) in children.iter_mut() {
            match result {
                Some(Some(c)) if *c == code(*i) => right += 1,
                Some(_) => wrong += 1,
                None => {
                    missing += 1;
                    let c = child.as_mut().unwrap();
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
        }
        let secs = if missing > 0 {
            self.plan.storm_timeout.as_secs_f64()
        } else {
            (last_back - t0).as_secs_f64()
        };
        Ok((right, wrong, missing, secs))
    }

    // ---- the `delete` binary action -------------------------------------------------------

    fn delete(&mut self) -> Res<()> {
        println!(
            "\n== `<shim> ... delete` in a synthetic bundle (config.json, rootfs/, no options.json), \
             {} runs per shim",
            self.plan.delete
        );
        let mut p = Pair::default();
        let mut bundles = Vec::new();
        for s in order(0) {
            let id = format!("del-{}", s.tag());
            let b = self.cd.dir().join("delete-bundles").join(&id);
            fs::create_dir_all(b.join("rootfs"))
                .map_err(|e| format!("mkdir {}: {e}", b.display()))?;
            fs::write(
                b.join("config.json"),
                r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"}}"#,
            )
            .map_err(|e| format!("write config.json: {e}"))?;
            // The Go shim writes `runtime` (runc's binary name, empty = runc) at Create and its
            // delete fails without it; tether does not use it.
            fs::write(b.join("runtime"), "").map_err(|e| format!("write runtime: {e}"))?;
            bundles.push((s, id, b));
        }
        for i in 0..self.plan.delete + self.plan.warmup {
            self.check_stop()?;
            for s in order(i) {
                let (_, id, b) = bundles.iter().find(|x| x.0 == s).unwrap();
                let bin = match s {
                    Shim::Tether => &self.tether_bin,
                    Shim::Go => &self.go_bin,
                };
                let mut cmd = Command::new(bin);
                cmd.args([
                    "-namespace",
                    self.cd.namespace(),
                    "-address",
                    self.cd.address(),
                ])
                .args(["-publish-binary", "/usr/bin/containerd", "-id", id])
                .arg("-bundle")
                .arg(b)
                .arg("delete")
                .current_dir(b)
                .env("TTRPC_ADDRESS", self.cd.ttrpc_address());
                let t = timed_run(cmd, Duration::from_secs(30));
                if i < self.plan.warmup {
                    continue;
                }
                if t.ok() {
                    p.push(s, ms(t.elapsed));
                } else {
                    eprintln!("  delete ({s:?}) failed: {}", t.describe());
                    p.fail(s);
                }
            }
        }
        self.report.add(
            "`delete` action wall time, median (ms)",
            Cell::Num(median(p.get(Shim::Tether)), 2),
            Cell::Num(median(p.get(Shim::Go)), 2),
            Target::RatioAtMost(0.5, "≤ 0.5× Go"),
            p.note(),
        );
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------------------------

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    })
}

fn first_line(cmd: &str, args: &[&str]) -> String {
    let mut c = Command::new(cmd);
    c.args(args);
    match output_timeout(c, Duration::from_secs(10)) {
        Ok(o) => String::from_utf8_lossy(&o.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string(),
        Err(_) => String::new(),
    }
}

/// `Version:` line of a shim's `-v` output (plus `Go version:` if present).
fn shim_version(bin: &Path) -> String {
    let c = Command::new(bin);
    let mut c = c;
    c.arg("-v");
    let text = output_timeout(c, Duration::from_secs(10))
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let pick = |k: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(k).map(|v| v.trim().to_string()))
    };
    match (pick("Version:"), pick("Go version:")) {
        (Some(v), Some(g)) => format!("{v} ({g})"),
        (Some(v), None) => v,
        _ => "?".into(),
    }
}

fn preflight() -> Res<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("run as root (it starts containerd and runc): sudo scripts/bench.sh".into());
    }
    for tool in ["containerd", "ctr", "runc", GO_SHIM] {
        if which(tool).is_none() {
            return Err(format!(
                "{tool} not found in PATH; scripts/setup.sh installs it"
            ));
        }
    }
    if !Path::new("/bin/busybox").is_file() {
        return Err("/bin/busybox missing; install busybox-static (scripts/setup.sh)".into());
    }
    Ok(())
}

fn main() {
    let plan = match parse_args() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = preflight() {
        eprintln!("bench: {e}");
        std::process::exit(1);
    }
    let tether_bin = common::release_shim_binary();
    if !tether_bin.is_file() {
        eprintln!(
            "bench: {} is missing; build it with `cargo build --release` (scripts/bench.sh does)",
            tether_bin.display()
        );
        std::process::exit(1);
    }
    // Sources edited after the build (scripts/bench.sh builds right before the run): measure
    // anyway, but say so in the results.
    let stale = common::stale_binary_reason(&tether_bin);
    if let Some(why) = &stale {
        eprintln!("bench: WARNING: {why}");
    }
    let go_bin = which(GO_SHIM).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(sig, Arc::clone(&stop));
    }

    let date = first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let nproc = thread::available_parallelism().map_or(0, |n| n.get());
    let cpu_model = fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let containerd_v = first_line("containerd", &["--version"]);
    let runc_v = first_line("runc", &["--version"]);
    let manifest = env!("CARGO_MANIFEST_DIR");
    let git = first_line("git", &["-C", manifest, "describe", "--always", "--dirty"]);
    let bin_size = fs::metadata(&tether_bin).map(|m| m.len()).unwrap_or(0);
    let load = |_: ()| {
        fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
            .to_string()
    };

    println!(
        "tether benchmark ({})",
        if plan.quick { "--quick" } else { "full" }
    );
    println!(
        "  tether: {} ({}, {:.1} MB, git {git})",
        tether_bin.display(),
        shim_version(&tether_bin),
        bin_size as f64 / 1e6
    );
    println!("  Go:     {} ({})", go_bin.display(), shim_version(&go_bin));
    let load_start = load(());
    println!("  load average at start: {load_start}");

    let cd = Containerd::start_with(ContainerdOptions {
        shim: tether_bin.clone(),
        debug: false,
    });
    let fifo = cd.dir().join("fifo").to_string_lossy().into_owned();
    println!(
        "  private containerd pid {:?} in {}",
        cd.pid(),
        cd.dir().display()
    );
    let t_start = Instant::now();
    let mut bench = Bench {
        cd: &cd,
        plan: plan.clone(),
        stop: Arc::clone(&stop),
        fifo,
        tether_bin: tether_bin.clone(),
        go_bin: go_bin.clone(),
        report: Report { rows: Vec::new() },
    };
    let run = (|| -> Res<()> {
        bench.warm_up()?;
        if plan.wants("lifecycle") {
            bench.lifecycle()?;
        }
        if plan.wants("exec") {
            bench.exec()?;
        }
        if plan.wants("fleet") {
            bench.fleet()?;
        }
        if plan.wants("stdio") {
            bench.stdio()?;
        }
        if plan.wants("cpu") {
            bench.cpu_start()?;
        }
        if plan.wants("storm") {
            bench.storm()?;
        }
        if plan.wants("delete") {
            bench.delete()?;
        }
        Ok(())
    })();
    let elapsed = t_start.elapsed();
    let report = std::mem::replace(&mut bench.report, Report { rows: Vec::new() });
    drop(bench);
    println!("\ncleaning up (containers, containerd, shims, runc state, mounts, temp dir)");
    drop(cd);

    println!("\n## Results\n");
    println!(
        "- date: {date}; measured in {:.0} s ({})",
        elapsed.as_secs_f64(),
        if plan.quick { "--quick" } else { "full run" }
    );
    println!(
        "- machine: {nproc} cores ({cpu_model}), kernel {kernel}; /proc/loadavg at start {load_start}, at end {}",
        load(())
    );
    println!("- {containerd_v}; {runc_v}");
    println!(
        "- tether {} (release, {:.1} MB, git {git}); Go shim containerd-shim-runc-v2 {}",
        shim_version(&tether_bin),
        bin_size as f64 / 1e6,
        shim_version(&go_bin)
    );
    println!(
        "- runs per shim: lifecycle {}, exec {}, parallel start/memory {} round(s) of {}, \
         stdio {} × {} MiB, start CPU {}, exit storm {} round(s) of {}, delete {}; \
         interleaved tether/Go (ABBA) after {} warm-up run(s) each\n",
        plan.lifecycle,
        plan.exec,
        plan.fleet_rounds,
        plan.fleet,
        plan.stdio_rounds,
        plan.stdio_mib,
        plan.cpu_start,
        plan.storm_rounds,
        plan.storm,
        plan.delete,
        plan.warmup
    );
    if let Some(why) = &stale {
        println!("- WARNING: {why}\n");
    }
    print!("{}", report.markdown());
    if let Err(e) = run {
        eprintln!("\nbench: stopped early: {e}");
        std::process::exit(1);
    }
}
