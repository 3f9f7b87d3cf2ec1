//! Priming the kernel's cgroup attach lock while runc starts: takes a grace period off every
//! `runc create` and `runc exec` (docs/benchmarks/history.md has the numbers).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::cgroups::ContainerCgroup;

/// Starts a no-op move of this shim into its own cgroup, on a short-lived thread, just before
/// `runc create` or `runc exec` is spawned.
///
/// Every write to a `cgroup.procs` file takes the kernel's one global
/// `cgroup_threadgroup_rwsem` for writing, and a writer finding that percpu lock idle first
/// waits a full RCU grace period (about 10 ms here). runc writes the new process into the
/// container's cgroup some 8 ms after it is spawned; when our write's grace period is already
/// under way by then, runc's write shares it (and the lock stays in writer mode for one more
/// grace period). Where cgroupfs is mounted with `favordynmods` the lock never waits, and this
/// is one cheap write.
///
/// Best effort: at most one primer runs at a time, and any failure (no cgroupfs, read-only
/// cgroupfs, no thread) only means runc pays the wait itself.
pub fn prime_attach_lock() {
    use std::sync::atomic::{AtomicBool, Ordering};
    static RUNNING: AtomicBool = AtomicBool::new(false);
    if RUNNING.swap(true, Ordering::AcqRel) {
        return;
    }
    let primer = std::thread::Builder::new()
        .name("attach-primer".into())
        .stack_size(32 * 1024)
        .spawn(|| {
            if let Err(e) = move_self_to_own_cgroup() {
                tracing::debug!(error = %e, "priming the cgroup attach lock failed");
            }
            RUNNING.store(false, Ordering::Release);
        });
    if primer.is_err() {
        RUNNING.store(false, Ordering::Release);
    }
}

/// Writes `0` (this process) into the `cgroup.procs` of the cgroup it is already in. Public for
/// the root tests (`tests/root_cgroups.rs`).
pub fn move_self_to_own_cgroup() -> io::Result<()> {
    let proc_cgroup = fs::read_to_string("/proc/self/cgroup")?;
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
    let procs = own_procs_file(&proc_cgroup, &mountinfo)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "own cgroup not mounted"))?;
    fs::OpenOptions::new()
        .write(true)
        .open(procs)?
        .write_all(b"0")
}

/// The `cgroup.procs` of our own cgroup in one hierarchy: the cgroup2 one, or on v1 `pids` if
/// mounted, else the first mounted controller (never a named hierarchy). Pure, for tests.
fn own_procs_file(proc_cgroup: &str, mountinfo: &str) -> Option<PathBuf> {
    let cg = ContainerCgroup::from_parts(proc_cgroup, mountinfo, Path::new("/")).ok()?;
    let dir = cg.dir("pids").or_else(|| {
        cg.hierarchies()
            .find(|(c, _)| !c.starts_with("name="))
            .map(|(_, d)| d)
    })?;
    Some(dir.join("cgroup.procs"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(rel: &str) -> String {
        let path = format!(
            "{}/tests/fixtures/cgroups/{rel}",
            env!("CARGO_MANIFEST_DIR")
        );
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {rel}: {e}"))
    }

    #[test]
    fn attach_primer_writes_into_its_own_cgroup() {
        // v1: the pids hierarchy, at the path the process is in there.
        let f = own_procs_file(&fixture("hybrid/cgroup"), &fixture("hybrid/mountinfo"));
        assert_eq!(f, Some("/sys/fs/cgroup/pids/cgroup.procs".into()));
        // Without pids: the first real controller, never a named hierarchy.
        let no_pids: String = fixture("hybrid/cgroup")
            .lines()
            .filter(|l| !l.contains(":pids:"))
            .map(|l| format!("{l}\n"))
            .collect();
        let f = own_procs_file(&no_pids, &fixture("hybrid/mountinfo")).unwrap();
        assert!(
            !f.starts_with("/sys/fs/cgroup/systemd") && !f.starts_with("/sys/fs/cgroup/pids"),
            "{}",
            f.display()
        );
        assert_eq!(f.file_name().unwrap(), "cgroup.procs");
        // cgroup2: the one directory.
        let f = own_procs_file(&fixture("unified/cgroup"), &fixture("unified/mountinfo")).unwrap();
        assert!(
            f.starts_with("/sys/fs/cgroup/kubepods.slice/") && f.ends_with("cgroup.procs"),
            "{}",
            f.display()
        );
        // Nowhere to write: None, never a guess.
        assert_eq!(own_procs_file("0::/x\n", ""), None);
    }
}
