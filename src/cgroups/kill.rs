//! Killing every process of a container's cgroup without the OCI runtime: the way out when the
//! runtime's own kill hangs (containerd#14081: a wedged runtime left pods Terminating for days).
//!
//! - cgroup v2 (Linux 5.14+): one write of `1` to `cgroup.kill`; the kernel SIGKILLs every
//!   process in the cgroup and below, frozen ones included, and no fork can escape it.
//! - cgroup v1, or a v2 kernel without `cgroup.kill`: SIGKILL through a pidfd to each process
//!   `cgroup.procs` lists, again until the cgroup is empty or the time is up (a fork between
//!   reading the list and the signal lands in the next round). A v1 freezer holds a SIGKILL
//!   until thaw, so a frozen cgroup is thawed after the signals.
//!
//! Blocking (file writes, short sleeps between rounds): callers run it off the runtime thread.

use std::fs;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{ContainerCgroup, Layout};
use crate::error::{Error, Result};

/// Pause between two looks at a cgroup that is not empty yet.
const ROUND: Duration = Duration::from_millis(10);

/// How a cgroup was killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Killed {
    /// `cgroup.kill` (v2).
    CgroupKill,
    /// SIGKILL through pidfds to this many processes, over all rounds.
    Pidfds(usize),
}

impl ContainerCgroup {
    /// SIGKILLs every process in the cgroup and below it and waits (at most `limit`) until
    /// none is left. Refused (FailedPrecondition) when this process is in it: the cgroup is then
    /// not the container's own (a fake runtime, or a runtime that made none). `NotFound` when the
    /// cgroup is gone already (nothing left to kill); DeadlineExceeded when processes remain.
    pub fn kill_all(&self, limit: Duration) -> Result<Killed> {
        let own = std::process::id();
        if self.procs()?.iter().any(|&p| p.unsigned_abs() == own) {
            return Err(Error::FailedPrecondition(format!(
                "cgroup {} holds the shim itself, so it is not the container's own",
                self.describe()
            )));
        }
        let deadline = Instant::now() + limit;
        let how = match &self.layout {
            Layout::Unified(dir) if write_cgroup_kill(dir)? => Killed::CgroupKill,
            _ => Killed::Pidfds(self.signal_rounds(own, deadline)?),
        };
        loop {
            match self.procs() {
                Err(Error::NotFound(_)) => return Ok(how),
                Ok(pids) if pids.is_empty() => return Ok(how),
                Ok(pids) if Instant::now() >= deadline => {
                    return Err(Error::DeadlineExceeded(format!(
                        "{} process(es) still in cgroup {} after {limit:?}",
                        pids.len(),
                        self.describe()
                    )))
                }
                Ok(_) => std::thread::sleep(ROUND),
                Err(e) => return Err(e),
            }
        }
    }

    /// Signals every listed process until a round finds none (or the deadline passes); returns
    /// how many signals were sent.
    fn signal_rounds(&self, own: u32, deadline: Instant) -> Result<usize> {
        let mut sent = 0;
        loop {
            let pids = match self.procs() {
                Err(Error::NotFound(_)) => return Ok(sent),
                other => other?,
            };
            let mut live = false;
            for pid in pids.into_iter().filter(|p| p.unsigned_abs() != own) {
                // Gone between the list and the open: nothing to do.
                let Ok(pidfd) = crate::sys::pidfd_open(pid) else {
                    continue;
                };
                // The pid may have been reused between the list and the open; the handle now
                // pins one process, and only one still in this cgroup is signalled.
                if !self.holds(pid) {
                    continue;
                }
                live = true;
                if crate::sys::pidfd_signal(&pidfd, libc::SIGKILL.unsigned_abs()).is_ok() {
                    sent += 1;
                }
            }
            self.thaw_v1();
            if !live || Instant::now() >= deadline {
                return Ok(sent);
            }
            std::thread::sleep(ROUND);
        }
    }

    /// Whether process `pid` is in this cgroup or below it now.
    fn holds(&self, pid: i32) -> bool {
        let Ok(theirs) = ContainerCgroup::for_pid(pid) else {
            return false;
        };
        match (&self.layout, &theirs.layout) {
            (Layout::Unified(ours), Layout::Unified(theirs)) => theirs.starts_with(ours),
            (Layout::V1(ours), Layout::V1(_)) => ours.iter().any(|(controller, dir)| {
                !controller.starts_with("name=")
                    && theirs.dir(controller).is_some_and(|d| d.starts_with(dir))
            }),
            _ => false,
        }
    }

    /// A v1 freezer holds SIGKILL until thaw. Best effort: without a freezer there is nothing to
    /// thaw.
    fn thaw_v1(&self) {
        if let (Layout::V1(_), Some(dir)) = (&self.layout, self.dir("freezer")) {
            let _ = fs::write(dir.join("freezer.state"), "THAWED");
        }
    }

    /// Thaws the cgroup without the runtime (`freezer.state` on v1, `cgroup.freeze` on v2).
    pub fn thaw(&self) -> Result<()> {
        let (file, value) = match &self.layout {
            Layout::Unified(dir) => (dir.join("cgroup.freeze"), "0"),
            Layout::V1(_) => match self.dir("freezer") {
                Some(dir) => (dir.join("freezer.state"), "THAWED"),
                None => return Err(Error::NotFound("no v1 freezer hierarchy".into())),
            },
        };
        fs::write(&file, value).map_err(Error::io(format!("write {}", file.display())))
    }
}

impl ContainerCgroup {
    /// Removes the cgroup's (empty) directories, as the runtime's delete would: every
    /// hierarchy's on v1, the one on v2. Not recursive: a directory with children, or one still
    /// holding a process (shared, or the hierarchy's root) stays. Returns those left behind.
    pub fn remove_dirs(&self) -> Vec<std::path::PathBuf> {
        let mut left = Vec::new();
        for (_, dir) in self.hierarchies() {
            match fs::remove_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(_) => left.push(dir.to_path_buf()),
            }
        }
        left.sort();
        left.dedup();
        left
    }
}

/// Writes `1` to `dir/cgroup.kill`; false when the kernel has no such file (before 5.14).
fn write_cgroup_kill(dir: &Path) -> Result<bool> {
    // Never created: a missing file means an older kernel (or a removed cgroup), not a file to
    // make.
    let written = fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.kill"))
        .and_then(|mut f| io::Write::write_all(&mut f, b"1"));
    match written {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound && dir.is_dir() => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENODEV) => {
            Err(Error::NotFound(format!(
                "cgroup {} no longer exists",
                dir.display()
            )))
        }
        Err(e) => Err(Error::Io {
            context: format!("write {}/cgroup.kill", dir.display()),
            source: e,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::testdata::*;

    #[test]
    fn a_cgroup_holding_the_shim_is_never_killed() {
        let (_root, cg) = v2_tree();
        let dir = cg.dir("memory").unwrap().to_path_buf();
        write(
            &dir.join("cgroup.procs"),
            &format!("{}\n", std::process::id()),
        );
        assert!(matches!(
            cg.kill_all(Duration::from_millis(50)),
            Err(Error::FailedPrecondition(_))
        ));
        assert!(
            !dir.join("cgroup.kill").exists(),
            "cgroup.kill written for a cgroup holding the shim"
        );
    }

    #[test]
    fn cgroup_kill_is_written_on_v2_and_a_removed_cgroup_is_not_found() {
        let (_root, cg) = v2_tree();
        let dir = cg.dir("memory").unwrap().to_path_buf();
        write(&dir.join("cgroup.procs"), "");
        write(&dir.join("cgroup.kill"), "0");
        assert_eq!(
            cg.kill_all(Duration::from_millis(50)).unwrap(),
            Killed::CgroupKill
        );
        assert_eq!(fs::read_to_string(dir.join("cgroup.kill")).unwrap(), "1");
        // A fixture cgroup.procs keeps its pids (no kernel kills them): the limit is kept.
        write(&dir.join("cgroup.procs"), "4000000\n");
        let t0 = Instant::now();
        assert!(matches!(
            cg.kill_all(Duration::from_millis(100)),
            Err(Error::DeadlineExceeded(_))
        ));
        assert!(t0.elapsed() < Duration::from_secs(2));
        fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(
            cg.kill_all(Duration::from_millis(50)),
            Err(Error::NotFound(_))
        ));
    }
}
