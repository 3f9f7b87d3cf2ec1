//! The shim's CPU to start one container.

use super::*;

impl Bench<'_> {
    pub fn cpu_start(&mut self) -> Res<()> {
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
}
