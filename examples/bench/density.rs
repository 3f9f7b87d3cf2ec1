//! Density: N pods on one node, each a detached `sleep` in its own shim, for tether and then
//! the Go shim (ABBA over the sizes), against the one private containerd.
//!
//! For each N: the wall time to get all N RUNNING, started `DENSITY_BATCH` at a time as a
//! kubelet would; the total PSS and RSS of the shims, their threads and fds; the shims' wakeups
//! (times scheduled) and CPU while idle; containerd restarts with the N shims live (time until
//! `ctr tasks ls` lists all N RUNNING again, with the CPU the shims and containerd spent on
//! it); and the wall time to kill and delete all N, each `ctr tasks delete -f` having to give
//! the SIGKILL exit status (137). Then the per-pod growth from the smallest N to the largest.
//!
//! Before each N it refuses to start, naming the limit, when the node lacks room for it (pids,
//! threads, memory, fds). It raises nothing system-wide: only its own soft fd limit, which
//! containerd inherits.

use super::*;

/// Containers started (and deleted) concurrently, as a kubelet's parallel pod workers would.
pub const DENSITY_BATCH: usize = 20;

/// Planning figures for the room check, per pod, for the heavier (Go) shim: its threads (14
/// measured, plus the container's `sleep`), memory, and fds in containerd and the shim.
const THREADS_PER_POD: u64 = 16;
const MEM_PER_POD_KB: u64 = 8 * 1024;
const FDS_PER_POD: u64 = 10;
/// Threads of the `ctr` and `runc` processes of one batch in flight, plus everything else.
const THREADS_SLACK: u64 = 2000;
const MEM_SLACK_KB: u64 = 1024 * 1024;

/// Bound for `ctr` calls that list or touch all N tasks.
const LIST_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound for all N to be RUNNING again after a containerd restart.
const RESTART_BOUND: Duration = Duration::from_secs(300);

/// What one shim kind measured at one N.
#[derive(Debug, Clone, Default)]
pub struct Density {
    pub n: usize,
    pub start_s: f64,
    pub start_shim_cpu_ms: f64,
    pub start_containerd_cpu_ms: f64,
    pub pss_kb: f64,
    pub rss_kb: f64,
    pub threads_mean: f64,
    pub threads_max: f64,
    pub fds_mean: f64,
    pub idle_wakeups_per_s: f64,
    pub idle_cpu_ms: f64,
    /// One entry per restart: (s until all RUNNING, shims' CPU ms, containerd CPU ms).
    pub restarts: Vec<(f64, f64, f64)>,
    pub delete_s: f64,
    pub delete_containerd_cpu_ms: f64,
    /// Not RUNNING after the start, not RUNNING again after a restart, wrong exit status,
    /// or no answer from `ctr tasks delete -f`.
    pub lost_start: usize,
    pub lost_restart: usize,
    pub wrong_exit: usize,
    pub missing_exit: usize,
    pub shims_left: usize,
}

impl Density {
    fn restart_median(&self, i: usize) -> f64 {
        let v: Vec<f64> = self.restarts.iter().map(|r| [r.0, r.1, r.2][i]).collect();
        median(&v)
    }
    fn lost(&self) -> usize {
        self.lost_start + self.lost_restart + self.wrong_exit + self.missing_exit
    }
}

/// Sum over the live threads of `pids` of (run time ns, times scheduled) from
/// `/proc/PID/task/*/schedstat`.
fn schedstat_sum(pids: &[i32]) -> (u64, u64) {
    let (mut run, mut count) = (0u64, 0u64);
    for pid in pids {
        let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let Ok(s) = fs::read_to_string(t.path().join("schedstat")) else {
                continue;
            };
            let f: Vec<u64> = s
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            if f.len() == 3 {
                run += f[0];
                count += f[2];
            }
        }
    }
    (run, count)
}

fn read_u64(path: &str) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Threads alive on the node now (every `/proc/PID/task` entry).
fn threads_in_use() -> u64 {
    let Ok(procs) = fs::read_dir("/proc") else {
        return 0;
    };
    procs
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .map(|e| {
            fs::read_dir(e.path().join("task"))
                .map(|t| t.count() as u64)
                .unwrap_or(0)
        })
        .sum()
}

/// Raises this process's soft fd limit to its hard limit (containerd, started by the bench,
/// inherits it). Process-local: nothing system-wide changes. Returns the new soft limit.
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit for getrlimit to fill and setrlimit to read.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

/// Whether the node has room for `n` more pods of the heavier shim; the error names the limit.
pub fn room_for(n: usize, containerd_pid: Option<i32>) -> Res<()> {
    let n = n as u64;
    let threads = threads_in_use();
    let need = n * THREADS_PER_POD + THREADS_SLACK;
    let pid_max = read_u64("/proc/sys/kernel/pid_max").unwrap_or(32768);
    if threads + need > pid_max {
        return Err(format!(
            "no room for {n} pods: kernel.pid_max is {pid_max}, {threads} threads are alive and \
             {n} Go-shim pods need about {need} more ({THREADS_PER_POD} each: 14 shim threads, \
             the container, slack). Lower N (--density-n) or raise kernel.pid_max yourself"
        ));
    }
    let threads_max = read_u64("/proc/sys/kernel/threads-max").unwrap_or(u64::MAX);
    if threads + need > threads_max {
        return Err(format!(
            "no room for {n} pods: kernel.threads-max is {threads_max}, {threads} threads are \
             alive and {n} pods need about {need} more"
        ));
    }
    let avail = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| kb_field(&m, "MemAvailable"))
        .unwrap_or(0.0) as u64;
    let need_kb = n * MEM_PER_POD_KB + MEM_SLACK_KB;
    if avail < need_kb {
        return Err(format!(
            "no room for {n} pods: MemAvailable is {} MiB and {n} Go-shim pods need about {} MiB \
             ({} MiB each, plus 1 GiB)",
            avail / 1024,
            need_kb / 1024,
            MEM_PER_POD_KB / 1024
        ));
    }
    // containerd inherited the bench's fd limit (raised to the hard limit in main).
    let pid = containerd_pid.map_or("self".to_string(), |p| p.to_string());
    let nofile = fs::read_to_string(format!("/proc/{pid}/limits"))
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|x| x.starts_with("Max open files"))
                .and_then(|x| x.split_whitespace().nth(3)?.parse::<u64>().ok())
        })
        .unwrap_or(u64::MAX);
    let need_fds = n * FDS_PER_POD + 1024;
    if nofile < need_fds {
        return Err(format!(
            "no room for {n} pods: containerd's open-file limit (RLIMIT_NOFILE) is {nofile} and \
             {n} pods need about {need_fds}; raise the hard limit (ulimit -Hn) before starting"
        ));
    }
    let file_nr = fs::read_to_string("/proc/sys/fs/file-nr").unwrap_or_default();
    let f: Vec<u64> = file_nr
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    if f.len() == 3 && f[0] + need_fds * 2 > f[2] {
        return Err(format!(
            "no room for {n} pods: fs.file-max is {}, {} files are open and {n} pods need about \
             {} more",
            f[2],
            f[0],
            need_fds * 2
        ));
    }
    Ok(())
}

impl Bench<'_> {
    pub fn density(&mut self) -> Res<()> {
        let sizes = self.plan.density.clone();
        println!(
            "\n== density: N = {sizes:?} pods, each a detached `sleep` in its own shim, started \
             {DENSITY_BATCH} at a time; idle {} s; {} containerd restart(s); kill+delete all",
            self.plan.density_idle.as_secs(),
            self.plan.density_restarts
        );
        let mut results: Vec<[Density; 2]> = Vec::new();
        for (k, &n) in sizes.iter().enumerate() {
            room_for(n, self.cd.pid())?;
            let mut pair: [Density; 2] = Default::default();
            for s in order(k) {
                self.check_stop()?;
                let ids: Vec<String> = (0..n).map(|_| self.id(&format!("d{n}"), s)).collect();
                let mut d = Density {
                    n,
                    ..Density::default()
                };
                let r = self.density_run(s, &ids, &mut d);
                // Whatever is still there (an error or Ctrl-C midway) goes, bounded.
                self.density_remove(&ids);
                d.shims_left = self.cd.shim_pids().len();
                if d.shims_left > 0 {
                    eprintln!("  {} shim(s) still running after the cleanup", d.shims_left);
                }
                r?;
                pair[s.idx()] = d;
            }
            self.density_rows(&pair);
            self.report.plots.density.push(DensityPoint {
                n,
                pss_mb: [pair[0].pss_kb / 1024.0, pair[1].pss_kb / 1024.0],
                start_s: [pair[0].start_s, pair[1].start_s],
                delete_s: [pair[0].delete_s, pair[1].delete_s],
            });
            results.push(pair);
        }
        if results.len() >= 2 {
            self.density_growth(&results);
        }
        Ok(())
    }

    /// Runs `f` over `ids`, `DENSITY_BATCH` at a time, stopping early on Ctrl-C when
    /// `interruptible`. Returns each id's result (`None`: not run) and the wall time.
    fn batched<T: Send>(
        &self,
        ids: &[String],
        interruptible: bool,
        f: impl Fn(&str) -> T + Sync,
    ) -> (Vec<Option<T>>, f64) {
        let next = std::sync::atomic::AtomicUsize::new(0);
        let out: Vec<Mutex<Option<T>>> = ids.iter().map(|_| Mutex::new(None)).collect();
        let t0 = Instant::now();
        thread::scope(|sc| {
            for _ in 0..DENSITY_BATCH.min(ids.len()) {
                sc.spawn(|| loop {
                    if interruptible && self.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(id) = ids.get(i) else { return };
                    let r = f(id);
                    *out[i].lock().unwrap() = Some(r);
                });
            }
        });
        let secs = t0.elapsed().as_secs_f64();
        (
            out.into_iter().map(|m| m.into_inner().unwrap()).collect(),
            secs,
        )
    }

    /// `ctr tasks ls`: how many of `ids` are RUNNING.
    fn running_count(&self, ids: &[String]) -> Res<usize> {
        let out = output_timeout(self.cd.ctr_cmd(&["tasks", "ls"]), LIST_TIMEOUT)?;
        if !out.status.success() {
            return Err(format!(
                "ctr tasks ls: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let tasks = common::parse_tasks(&String::from_utf8_lossy(&out.stdout));
        let set: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
        Ok(tasks
            .iter()
            .filter(|t| t.2 == "RUNNING" && set.contains(t.0.as_str()))
            .count())
    }

    /// The shim server of each of `ids`: `shim.pid` in the bundle (tether writes it), else
    /// the shim process whose argv has `-id <id>` (the Go shim 1.6 writes no pid file), found
    /// in one scan of `/proc` for all of them (one scan per id is quadratic at 1,000 pods).
    fn shim_pids_of(&self, ids: &[String]) -> Vec<i32> {
        let mut pids = Vec::with_capacity(ids.len());
        let mut missing = std::collections::HashSet::new();
        for id in ids {
            let from_file = fs::read_to_string(self.cd.bundle(id).join("shim.pid"))
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
                .filter(|p| common::alive(*p));
            match from_file {
                Some(p) => pids.push(p),
                None => {
                    missing.insert(id.as_str());
                }
            }
        }
        if missing.is_empty() {
            return pids;
        }
        for pid in self.cd.shim_pids() {
            let argv = common::cmdline(pid);
            if argv.iter().any(|a| a == "start" || a == "delete") {
                continue;
            }
            if let Some(w) = argv
                .windows(2)
                .find(|w| w[0] == "-id" && missing.contains(w[1].as_str()))
            {
                missing.remove(w[1].as_str());
                pids.push(pid);
            }
        }
        pids
    }

    fn containerd_cpu_ms(&self) -> f64 {
        self.cd.pid().and_then(cpu).map_or(f64::NAN, |c| c.stat_ms)
    }

    fn density_run(&mut self, s: Shim, ids: &[String], d: &mut Density) -> Res<()> {
        let n = ids.len();
        // ---- start all, DENSITY_BATCH at a time
        let cd_cpu0 = self.containerd_cpu_ms();
        let (started, secs) = self.batched(ids, true, |id| {
            self.ctr(
                &self.run_args(id, s, true, &["sleep", "100000"]),
                CTR_TIMEOUT,
            )
        });
        self.check_stop()?;
        d.start_s = secs;
        d.start_containerd_cpu_ms = self.containerd_cpu_ms() - cd_cpu0;
        for (id, t) in ids.iter().zip(&started) {
            if let Some(t) = t.as_ref().filter(|t| !t.ok()) {
                eprintln!("  start {id}: {}", t.describe());
            }
        }
        let running = self.running_count(ids)?;
        d.lost_start = n - running;
        // ---- the shims: which binary, memory, threads, fds
        let pids = self.shim_pids_of(ids);
        let want = fs::canonicalize(match s {
            Shim::Tether => &self.tether_bin,
            Shim::Go => &self.go_bin,
        })
        .map_err(|e| format!("canonicalize shim binary: {e}"))?;
        if let Some(pid) = pids
            .iter()
            .find(|p| fs::read_link(format!("/proc/{p}/exe")).map_or(true, |exe| exe != want))
        {
            return Err(format!("shim {pid} does not run {}", want.display()));
        }
        d.start_shim_cpu_ms = schedstat_sum(&pids).0 as f64 / 1e6;
        println!(
            "  N={n} {s:?}: {running}/{n} RUNNING in {secs:.1} s (shims' CPU {:.0} ms, \
             containerd's {:.0} ms); loadavg {}",
            d.start_shim_cpu_ms,
            d.start_containerd_cpu_ms,
            fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .trim()
        );
        thread::sleep(Duration::from_secs(2));
        let mems: Vec<Mem> = pids.iter().filter_map(|p| mem(*p)).collect();
        d.pss_kb = mems.iter().map(|m| m.pss_kb).sum();
        d.rss_kb = mems.iter().map(|m| m.rss_kb).sum();
        let th: Vec<f64> = mems.iter().map(|m| m.threads).collect();
        d.threads_mean = mean(&th);
        d.threads_max = max(&th);
        d.fds_mean = mean(&mems.iter().map(|m| m.fds).collect::<Vec<_>>());
        println!(
            "    {} shims: PSS {:.1} MB, RSS {:.1} MB, threads {:.1} (max {}), fds {:.1}",
            mems.len(),
            d.pss_kb / 1024.0,
            d.rss_kb / 1024.0,
            d.threads_mean,
            d.threads_max,
            d.fds_mean
        );
        // ---- idle
        let idle = self.plan.density_idle;
        let (run0, count0) = schedstat_sum(&pids);
        let t0 = Instant::now();
        while t0.elapsed() < idle {
            self.check_stop()?;
            thread::sleep(Duration::from_millis(200));
        }
        let (run1, count1) = schedstat_sum(&pids);
        let idle_s = t0.elapsed().as_secs_f64();
        d.idle_wakeups_per_s = count1.saturating_sub(count0) as f64 / idle_s;
        d.idle_cpu_ms = run1.saturating_sub(run0) as f64 / 1e6;
        println!(
            "    idle {idle_s:.0} s: {:.1} wakeups/s, {:.0} ms CPU (all shims)",
            d.idle_wakeups_per_s, d.idle_cpu_ms
        );
        // ---- containerd restarts with the N shims live
        for r in 0..self.plan.density_restarts {
            self.check_stop()?;
            let (shim0, _) = schedstat_sum(&pids);
            self.cd.stop();
            let t0 = Instant::now();
            self.cd.restart();
            let back = loop {
                let now = self.running_count(ids).unwrap_or(0);
                if now >= running {
                    break now;
                }
                if t0.elapsed() > RESTART_BOUND || self.stop.load(Ordering::SeqCst) {
                    break now;
                }
                thread::sleep(Duration::from_millis(20));
            };
            let secs = t0.elapsed().as_secs_f64();
            let (shim1, _) = schedstat_sum(&pids);
            let shim_ms = shim1.saturating_sub(shim0) as f64 / 1e6;
            let cd_ms = self.containerd_cpu_ms();
            d.lost_restart = d.lost_restart.max(running - back);
            d.restarts.push((secs, shim_ms, cd_ms));
            println!(
                "    restart {r}: {back}/{running} RUNNING again in {secs:.2} s (shims' CPU \
                 {shim_ms:.0} ms, the new containerd's {cd_ms:.0} ms)"
            );
        }
        self.check_stop()?;
        // ---- kill and delete all: each must give SIGKILL's exit status
        let cd_cpu0 = self.containerd_cpu_ms();
        let strs = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let (deleted, secs) = self.batched(ids, false, |id| {
            let t = self.ctr(&strs(&["tasks", "delete", "-f", id]), CTR_TIMEOUT);
            let c = self.ctr(&strs(&["containers", "delete", id]), CTR_TIMEOUT);
            if !c.ok() {
                eprintln!("  containers delete {id}: {}", c.describe());
            }
            t
        });
        d.delete_s = secs;
        d.delete_containerd_cpu_ms = self.containerd_cpu_ms() - cd_cpu0;
        for (id, t) in ids.iter().zip(&deleted) {
            match t.as_ref().map(|t| (t.status, t)) {
                // ctr 1.6 exits 0 and warns "task <id> exit with non-zero exit code 137"
                // (128 + SIGKILL); newer ones may exit with the status itself.
                Some((Some(st), t))
                    if st.code() == Some(137)
                        || (st.success() && t.stderr.contains("exit code 137")) => {}
                Some((None, _)) | None => d.missing_exit += 1,
                Some((Some(_), t)) => {
                    d.wrong_exit += 1;
                    eprintln!("  tasks delete -f {id}: {}", t.describe());
                }
            }
        }
        let left = common::wait_until(Duration::from_secs(10), || {
            pids.iter().all(|p| !common::alive(*p))
        });
        println!(
            "    kill+delete all in {secs:.1} s (containerd's CPU {:.0} ms): exit 137 {}, \
             wrong {}, missing {}{}",
            d.delete_containerd_cpu_ms,
            n - d.wrong_exit - d.missing_exit,
            d.wrong_exit,
            d.missing_exit,
            if left { "" } else { "; some shims still alive" }
        );
        Ok(())
    }

    /// Removes whatever of `ids` is left, `DENSITY_BATCH` at a time (also after Ctrl-C).
    fn density_remove(&self, ids: &[String]) {
        let Ok(out) = output_timeout(self.cd.ctr_cmd(&["containers", "ls", "-q"]), LIST_TIMEOUT)
        else {
            return;
        };
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let left: Vec<String> = ids
            .iter()
            .filter(|id| text.split_whitespace().any(|x| x == id.as_str()))
            .cloned()
            .collect();
        if left.is_empty() {
            return;
        }
        println!("  removing {} leftover container(s)", left.len());
        self.batched(&left, false, |id| self.remove(id));
    }

    fn density_rows(&mut self, p: &[Density; 2]) {
        let (t, g) = (&p[0], &p[1]);
        let n = t.n;
        let big = n >= 1000;
        let tgt = |x: f64, text: &'static str| {
            if big {
                Target::RatioAtMost(x, text)
            } else {
                Target::None
            }
        };
        let num = |x: f64, d: usize| Cell::Num(x, d);
        let rows: Vec<(String, Cell, Cell, Target)> = vec![
            (
                format!("N={n}: start all, {DENSITY_BATCH} at a time (s)"),
                num(t.start_s, 1),
                num(g.start_s, 1),
                tgt(0.8, "≤ 0.8× Go"),
            ),
            (
                format!("N={n}: shims' CPU to start all (ms)"),
                num(t.start_shim_cpu_ms, 0),
                num(g.start_shim_cpu_ms, 0),
                Target::None,
            ),
            (
                format!("N={n}: containerd's CPU to start all (ms)"),
                num(t.start_containerd_cpu_ms, 0),
                num(g.start_containerd_cpu_ms, 0),
                Target::None,
            ),
            (
                format!("N={n}: total PSS of the shims (MB)"),
                num(t.pss_kb / 1024.0, 1),
                num(g.pss_kb / 1024.0, 1),
                tgt(1.0 / 9.0, "≤ 1/9 Go"),
            ),
            (
                format!("N={n}: total RSS of the shims (MB)"),
                num(t.rss_kb / 1024.0, 1),
                num(g.rss_kb / 1024.0, 1),
                Target::None,
            ),
            (
                format!("N={n}: threads per shim (mean)"),
                num(t.threads_mean, 1),
                num(g.threads_mean, 1),
                Target::None,
            ),
            (
                format!("N={n}: fds per shim (mean)"),
                num(t.fds_mean, 1),
                num(g.fds_mean, 1),
                Target::None,
            ),
            (
                format!("N={n}: idle wakeups, all shims (/s)"),
                num(t.idle_wakeups_per_s, 1),
                num(g.idle_wakeups_per_s, 1),
                if big {
                    Target::AtMost(0.0, "0")
                } else {
                    Target::None
                },
            ),
            (
                format!(
                    "N={n}: idle CPU, all shims, over {} s (ms)",
                    self.plan.density_idle.as_secs()
                ),
                num(t.idle_cpu_ms, 0),
                num(g.idle_cpu_ms, 0),
                Target::None,
            ),
            (
                format!(
                    "N={n}: containerd restart until all RUNNING, median of {} (s)",
                    t.restarts.len()
                ),
                num(t.restart_median(0), 2),
                num(g.restart_median(0), 2),
                tgt(1.0, "≤ Go"),
            ),
            (
                format!("N={n}: restart: shims' CPU answering containerd (ms)"),
                num(t.restart_median(1), 0),
                num(g.restart_median(1), 0),
                Target::None,
            ),
            (
                format!("N={n}: restart: the new containerd's CPU (ms)"),
                num(t.restart_median(2), 0),
                num(g.restart_median(2), 0),
                Target::None,
            ),
            (
                format!("N={n}: kill+delete all, {DENSITY_BATCH} at a time (s)"),
                num(t.delete_s, 1),
                num(g.delete_s, 1),
                tgt(0.8, "≤ 0.8× Go"),
            ),
            (
                format!("N={n}: containerd's CPU to kill+delete all (ms)"),
                num(t.delete_containerd_cpu_ms, 0),
                num(g.delete_containerd_cpu_ms, 0),
                Target::None,
            ),
        ];
        for (m, tc, gc, target) in rows {
            self.report.add(&m, tc, gc, target, String::new());
        }
        let lost = |d: &Density| {
            format!(
                "{}/{}/{}/{}",
                d.lost_start, d.lost_restart, d.wrong_exit, d.missing_exit
            )
        };
        self.report.add(
            &format!("N={n}: lost: not started/not back after restart/wrong exit/no exit"),
            Cell::Text(lost(t)),
            Cell::Text(lost(g)),
            Target::Text("0", t.lost() == 0),
            format!("shims left: {}/{}", t.shims_left, g.shims_left),
        );
    }

    /// Per-pod figures at each N and their growth from the smallest N to the largest.
    fn density_growth(&mut self, results: &[[Density; 2]]) {
        type Per = fn(&Density) -> f64;
        let per: [(&str, Per); 6] = [
            ("start all, ms per pod", |d| d.start_s * 1000.0 / d.n as f64),
            ("PSS, kB per pod", |d| d.pss_kb / d.n as f64),
            ("RSS, kB per pod", |d| d.rss_kb / d.n as f64),
            ("idle wakeups/s per pod", |d| {
                d.idle_wakeups_per_s / d.n as f64
            }),
            ("restart, ms per pod", |d| {
                d.restart_median(0) * 1000.0 / d.n as f64
            }),
            ("kill+delete all, ms per pod", |d| {
                d.delete_s * 1000.0 / d.n as f64
            }),
        ];
        let first = &results[0];
        let last = &results[results.len() - 1];
        let mut s = String::new();
        let _ = write!(s, "| per pod | shim |");
        for r in results {
            let _ = write!(s, " N={} |", r[0].n);
        }
        let _ = writeln!(s, " N={}/N={} |", last[0].n, first[0].n);
        let _ = write!(s, "|---|---|");
        for _ in results {
            let _ = write!(s, "---:|");
        }
        let _ = writeln!(s, "---:|");
        for (name, f) in per {
            for sh in [Shim::Tether, Shim::Go] {
                let i = sh.idx();
                let _ = write!(s, "| {name} | {} |", if i == 0 { "tether" } else { "Go" });
                for r in results {
                    let _ = write!(s, " {:.2} |", f(&r[i]));
                }
                let (a, b) = (f(&first[i]), f(&last[i]));
                let growth = if a > 0.0 {
                    format!("{:.2}", b / a)
                } else {
                    "-".into()
                };
                let _ = writeln!(s, " {growth} |");
            }
        }
        self.report.extra.push(s);
    }
}
