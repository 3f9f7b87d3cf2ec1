//! The bench's state and what every section shares: bounded `ctr` calls, container ids,
//! starting and removing containers, finding a container's shim.

use super::*;

pub struct Bench<'a> {
    pub cd: &'a mut Containerd,
    pub plan: Plan,
    pub stop: Arc<AtomicBool>,
    pub fifo: String,
    pub tether_bin: PathBuf,
    pub go_bin: PathBuf,
    pub report: Report,
}

impl<'a> Bench<'a> {
    pub fn check_stop(&self) -> Res<()> {
        if self.stop.load(Ordering::SeqCst) {
            Err("interrupted".into())
        } else {
            Ok(())
        }
    }

    pub fn ctr(&self, args: &[String], timeout: Duration) -> Timed {
        timed_run(self.cd.ctr_cmd(args), timeout)
    }

    pub fn ctr_ok(&self, args: &[String], timeout: Duration) -> Res<Timed> {
        let t = self.ctr(args, timeout);
        if t.ok() {
            Ok(t)
        } else {
            Err(format!("ctr {} failed: {}", args.join(" "), t.describe()))
        }
    }

    pub fn id(&self, what: &str, s: Shim) -> String {
        common::unique_id(&format!("{what}-{}", s.tag()))
    }

    pub fn run_args(&self, id: &str, s: Shim, detach: bool, cmd: &[&str]) -> Vec<String> {
        let a = self.cd.run_args(id, cmd).runtime(s.runtime());
        if detach { a.detach() } else { a }.build()
    }

    /// Starts a detached container running `sleep 100000`.
    pub fn start_sleeper(&self, id: &str, s: Shim) -> Res<Timed> {
        self.ctr_ok(
            &self.run_args(id, s, true, &["sleep", "100000"]),
            CTR_TIMEOUT,
        )
    }

    /// Kills and removes container `id` (bounded; errors are reported, not fatal: whatever is
    /// left is removed when the private containerd is torn down).
    pub fn remove(&self, id: &str) {
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

    pub fn remove_all(&self, ids: &[String]) {
        thread::scope(|sc| {
            for id in ids {
                sc.spawn(move || self.remove(id));
            }
        });
    }

    pub fn shim_pid(&self, id: &str) -> Res<i32> {
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

    pub fn warm_up(&self) -> Res<()> {
        for _ in 0..self.plan.warmup {
            for s in order(0) {
                let id = self.id("warm", s);
                self.ctr_ok(&self.run_args(&id, s, false, &["true"]), CTR_TIMEOUT)?;
            }
        }
        Ok(())
    }
}
