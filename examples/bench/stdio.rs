//! Stdio throughput: container output through the shim to `ctr`, and the shim's CPU for it.

use super::*;

impl Bench<'_> {
    pub fn stdio(&mut self) -> Res<()> {
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
        let (t, g) = (rate.get(Shim::Tether), rate.get(Shim::Go));
        self.report.plots.stdio.push(Distribution {
            name: format!("{mib} MiB from the container to ctr"),
            unit: "MiB/s".into(),
            samples: [t.to_vec(), g.to_vec()],
            median: [median(t), median(g)],
            p90: [percentile(t, 0.9), percentile(g, 0.9)],
        });
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
    pub fn stdio_once(&self, s: Shim, id: &str, mib: u64) -> Res<(f64, Cpu)> {
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
}
