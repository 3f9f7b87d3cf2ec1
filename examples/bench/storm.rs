//! Exit storm: K concurrent execs into one container, each with its own exit status.

use super::*;

impl Bench<'_> {
    pub fn storm(&mut self) -> Res<()> {
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
    pub fn storm_once(&self, id: &str, round: usize) -> Res<(usize, usize, usize, f64)> {
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
}
