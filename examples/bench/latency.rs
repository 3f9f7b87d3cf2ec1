//! Latency sections: `ctr run --rm true` (lifecycle) and `ctr tasks exec true` (exec).

use super::*;

impl Bench<'_> {
    pub fn lifecycle(&mut self) -> Res<()> {
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
    pub fn latency_rows(&mut self, what: &str, p: &Pair) {
        let (t, g) = (p.get(Shim::Tether), p.get(Shim::Go));
        self.report.plots.latency.push(Distribution {
            name: what.to_string(),
            unit: "ms".into(),
            samples: [t.to_vec(), g.to_vec()],
            median: [median(t), median(g)],
            p90: [percentile(t, 0.9), percentile(g, 0.9)],
        });
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

    pub fn exec(&mut self) -> Res<()> {
        println!(
            "\n== exec: `ctr tasks exec ... true` into a running container, {} runs per shim",
            self.plan.exec
        );
        let ids = [self.id("ex", Shim::Tether), self.id("ex", Shim::Go)];
        let r = self.exec_inner(&ids);
        self.remove_all(&ids);
        r
    }

    pub fn exec_inner(&mut self, ids: &[String; 2]) -> Res<()> {
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
}
