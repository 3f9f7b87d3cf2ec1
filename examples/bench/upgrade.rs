//! Upgrade in place (tether only; docs/upgrade.md): N tether servers re-execute the release
//! binary at their path (an upgrade onto the same build: the handoff is the same work), with a
//! `ctr tasks ls` loop running meanwhile to catch how long a request waits.

use super::*;

impl Bench<'_> {
    pub fn upgrade(&mut self) -> Res<()> {
        let n = self.plan.upgrade;
        println!("\n== upgrade in place: {n} tether servers, `upgrade --parallel 8` (tether only)");
        let ids: Vec<String> = (0..n).map(|_| self.id("up", Shim::Tether)).collect();
        let r = self.upgrade_once(&ids);
        self.remove_all(&ids);
        let (handoffs, wall_ms, longest_ls_ms, before, after) = r?;
        let na = || Cell::Text("n/a".into());
        self.report.add(
            "upgrade: handoff per server, median (ms)",
            Cell::Num(median(&handoffs), 2),
            na(),
            Target::None,
            format!(
                "max {:.2} ms over {n} servers",
                handoffs.iter().cloned().fold(0.0, f64::max)
            ),
        );
        self.report.add(
            &format!("upgrade: wall time for {n} servers (ms)"),
            Cell::Num(wall_ms, 0),
            na(),
            Target::None,
            String::new(),
        );
        self.report.add(
            "upgrade: longest `ctr tasks ls` during it (ms)",
            Cell::Num(longest_ls_ms, 1),
            na(),
            Target::None,
            "containerd asks every server for State".into(),
        );
        self.report.add(
            "upgrade: PSS per server after / before (kB)",
            Cell::Text(format!("{:.0} / {:.0}", after, before)),
            na(),
            Target::None,
            String::new(),
        );
        Ok(())
    }

    /// Returns the handoff of each server (ms), the command's wall time (ms), the longest
    /// `ctr tasks ls` while it ran (ms), and the mean PSS per server before and after (kB).
    fn upgrade_once(&self, ids: &[String]) -> Res<(Vec<f64>, f64, f64, f64, f64)> {
        for id in ids {
            self.check_stop()?;
            self.start_sleeper(id, Shim::Tether)?;
        }
        let pids: Vec<i32> = ids.iter().map(|id| self.shim_pid(id)).collect::<Res<_>>()?;
        let pss = |pids: &[i32]| {
            let v: Vec<f64> = pids
                .iter()
                .filter_map(|&p| mem(p))
                .map(|m| m.pss_kb)
                .collect();
            v.iter().sum::<f64>() / v.len().max(1) as f64
        };
        let before = pss(&pids);
        let done = Arc::new(AtomicBool::new(false));
        let longest = thread::scope(|sc| {
            let watcher = sc.spawn(|| {
                let mut longest = Duration::ZERO;
                while !done.load(Ordering::SeqCst) {
                    let args = vec!["tasks".to_string(), "ls".to_string()];
                    longest = longest.max(self.ctr(&args, CTR_TIMEOUT).elapsed);
                }
                longest
            });
            let mut cmd = Command::new(&self.tether_bin);
            cmd.arg("upgrade");
            for p in &pids {
                cmd.args(["--pid", &p.to_string()]);
            }
            let t0 = Instant::now();
            let out = output_timeout(cmd, Duration::from_secs(600));
            let wall = t0.elapsed();
            done.store(true, Ordering::SeqCst);
            (out, wall, watcher.join().unwrap_or_default())
        });
        let (out, wall, longest_ls) = longest;
        let out = out?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return Err(format!(
                "upgrade failed: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let handoffs: Vec<f64> = text
            .lines()
            .filter_map(|l| {
                l.split(" handoff ")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .collect();
        if handoffs.len() != pids.len() {
            return Err(format!(
                "{} handoffs reported for {} servers:\n{text}",
                handoffs.len(),
                pids.len()
            ));
        }
        let after = pss(&pids);
        println!(
            "  {} servers: handoff median {:.2} ms, wall {:.0} ms, longest ctr tasks ls {:.1} ms, PSS {:.0} -> {:.0} kB",
            pids.len(),
            median(&handoffs),
            ms(wall),
            ms(longest_ls),
            before,
            after
        );
        Ok((handoffs, ms(wall), ms(longest_ls), before, after))
    }
}
