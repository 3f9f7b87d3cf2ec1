//! Parallel start of 20 containers, and the memory, threads and fds of their shims.

use super::*;

impl Bench<'_> {
    pub fn fleet(&mut self) -> Res<()> {
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
    pub fn fleet_round(&self, s: Shim, ids: &[String]) -> Res<(f64, Vec<Mem>)> {
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
}
