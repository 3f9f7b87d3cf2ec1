//! The `delete` binary action in a synthetic bundle.

use super::*;

impl Bench<'_> {
    pub fn delete(&mut self) -> Res<()> {
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
