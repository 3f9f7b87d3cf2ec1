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
//! named sections (`lifecycle exec fleet stdio cpu storm delete upgrade`).
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

#[path = "../../tests/common/mod.rs"]
mod common;

mod harness;
mod plot;
mod proc;
mod report;
mod stats;

// Sections, one `impl Bench` each.
mod cpu;
mod delete;
mod density;
mod fleet;
mod latency;
mod stdio;
mod storm;
mod upgrade;

use harness::*;
use plot::*;
use proc::*;
use report::*;
use stats::*;

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
    /// Pod counts of the density section, smallest first.
    density: Vec<usize>,
    density_idle: Duration,
    density_restarts: usize,
    /// tether servers upgraded in place together (tether only).
    upgrade: usize,
    /// Where the results (header lines and tables) are written, besides stdout. The plots
    /// and `results.json` go into the same directory.
    out: Option<PathBuf>,
    /// `--plot-from FILE`: only draw the plots of a `results.json` (into `--plot-dir`, default
    /// the file's directory), measuring nothing.
    plot_from: Option<PathBuf>,
    plot_dir: Option<PathBuf>,
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
            density: vec![100, 300, 1000],
            density_idle: Duration::from_secs(60),
            density_restarts: 3,
            upgrade: 20,
            out: None,
            plot_from: None,
            plot_dir: None,
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
            density: vec![100],
            density_restarts: 1,
            upgrade: 5,
            ..Plan::full()
        }
    }

    /// Every section but `density` (long: it runs only when named in `--only`).
    fn wants(&self, section: &str) -> bool {
        match &self.only {
            None => section != "density",
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
                    out: plan.out.clone(),
                    plot_from: plan.plot_from.clone(),
                    plot_dir: plan.plot_dir.clone(),
                    ..Plan::quick()
                }
            }
            "--only" => {
                let v = args.next().ok_or("--only needs a comma-separated list")?;
                only = Some(v.split(',').map(|s| s.trim().to_string()).collect());
            }
            "--upgrade-n" => {
                let v = args.next().ok_or("--upgrade-n needs a server count")?;
                plan.upgrade = v
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("--upgrade-n {v:?}: not a server count"))?;
            }
            "--density-n" => {
                let v = args
                    .next()
                    .ok_or("--density-n needs a comma-separated list")?;
                let mut n = v
                    .split(',')
                    .map(|x| x.trim().parse::<usize>().ok().filter(|n| *n > 0))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| format!("--density-n {v:?}: not a list of pod counts"))?;
                n.sort_unstable();
                plan.density = n;
            }
            "--out" => {
                plan.out = Some(args.next().ok_or("--out needs a file name")?.into());
            }
            "--plot-from" => {
                plan.plot_from = Some(args.next().ok_or("--plot-from needs a file name")?.into());
            }
            "--plot-dir" => {
                plan.plot_dir = Some(args.next().ok_or("--plot-dir needs a directory")?.into());
            }
            "-h" | "--help" => {
                println!(
                    "usage: bench [--quick] [--only lifecycle,exec,fleet,stdio,cpu,storm,delete,upgrade,density] \\\n             [--density-n 100,300,1000] [--upgrade-n 20] [--out results.md]\n       bench --plot-from results.json [--plot-dir DIR]"
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

/// `--plot-from`: the plots of a recorded `results.json`, nothing measured.
fn plot_only(from: &Path, dir: Option<&Path>) -> Res<()> {
    let text = fs::read(from).map_err(|e| format!("{}: {e}", from.display()))?;
    let data: PlotData =
        serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", from.display()))?;
    let dir = dir.unwrap_or_else(|| from.parent().unwrap_or(Path::new(".")));
    for p in data
        .write_all(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
    {
        println!("{}", p.display());
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
    if let Some(from) = &plan.plot_from {
        std::process::exit(match plot_only(from, plan.plot_dir.as_deref()) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("bench: {e}");
                1
            }
        });
    }
    if let Err(e) = preflight() {
        eprintln!("bench: {e}");
        std::process::exit(1);
    }
    // TETHER_BENCH_SHIM: measure a copy of the release binary (a long run then survives
    // rebuilds of the target dir). The file must be named containerd-shim-tether-v2.
    let tether_bin = std::env::var_os("TETHER_BENCH_SHIM")
        .filter(|p| !p.is_empty())
        .map_or_else(common::release_shim_binary, PathBuf::from);
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

    // containerd inherits this process's fd limit: the density section needs a few per pod.
    let nofile = density::raise_fd_limit();
    println!("  open-file limit (soft, raised to the hard limit for this process): {nofile}");

    let mut cd = Containerd::start_with(ContainerdOptions {
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
        cd: &mut cd,
        plan: plan.clone(),
        stop: Arc::clone(&stop),
        fifo,
        tether_bin: tether_bin.clone(),
        go_bin: go_bin.clone(),
        report: Report::default(),
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
        if plan.wants("upgrade") {
            bench.upgrade()?;
        }
        if plan.wants("density") {
            bench.density()?;
        }
        Ok(())
    })();
    let elapsed = t_start.elapsed();
    let report = std::mem::take(&mut bench.report);
    drop(bench);
    println!("\ncleaning up (containers, containerd, shims, runc state, mounts, temp dir)");
    drop(cd);

    let mut res = String::new();
    let _ = writeln!(
        res,
        "- date: {date}; measured in {:.0} s ({})",
        elapsed.as_secs_f64(),
        if plan.quick { "--quick" } else { "full run" }
    );
    let _ = writeln!(
        res,
        "- machine: {nproc} cores ({cpu_model}), kernel {kernel}; /proc/loadavg at start {load_start}, at end {}",
        load(())
    );
    let _ = writeln!(res, "- {containerd_v}; {runc_v}");
    let _ = writeln!(
        res,
        "- tether {} (release, {:.1} MB, git {git}); Go shim containerd-shim-runc-v2 {}",
        shim_version(&tether_bin),
        bin_size as f64 / 1e6,
        shim_version(&go_bin)
    );
    let _ = writeln!(
        res,
        "- runs per shim: lifecycle {}, exec {}, parallel start/memory {} round(s) of {}, \
         stdio {} × {} MiB, start CPU {}, exit storm {} round(s) of {}, delete {}; \
         density N = {:?} (idle {} s, {} restart(s), only with `--only density`); \
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
        plan.density,
        plan.density_idle.as_secs(),
        plan.density_restarts,
        plan.warmup
    );
    if let Some(why) = &stale {
        let _ = writeln!(res, "- WARNING: {why}\n");
    }
    res.push_str(&report.markdown());
    println!("\n## Results\n\n{res}");
    let out = plan
        .out
        .clone()
        .unwrap_or_else(|| common::target_dir().join("bench").join("results.md"));
    let written = out
        .parent()
        .map_or(Ok(()), fs::create_dir_all)
        .and_then(|_| fs::write(&out, &res));
    match written {
        Ok(()) => println!("(written to {})", out.display()),
        Err(e) => eprintln!("bench: cannot write {}: {e}", out.display()),
    }
    let mut plots = report.plots;
    plots.source = format!("{date}; git {git}; {containerd_v}; {nproc} cores");
    let dir = out.parent().unwrap_or(Path::new("."));
    match plots.write_all(dir) {
        Ok(svgs) => {
            for p in svgs {
                println!("(plot: {})", p.display());
            }
        }
        Err(e) => eprintln!("bench: cannot write the plots into {}: {e}", dir.display()),
    }

    if let Err(e) = run {
        eprintln!("\nbench: stopped early: {e}");
        std::process::exit(1);
    }
}
