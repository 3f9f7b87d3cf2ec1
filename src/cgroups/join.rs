//! Moving a process into a named cgroup: the runc option `ShimCgroup`, which `start` applies to
//! the server it launches, as the Go shim does.
//!
//! The Go shim's rules (`manager_linux.go` `Start`, with containerd's `cgroups/v3` library):
//! - cgroup2-only host: the path is under the cgroup2 mount; it must exist.
//! - v1 or hybrid host: the path is a static path in every v1 hierarchy; the process joins each
//!   hierarchy where that directory exists, and it is an error if it exists in none.
//! - Any failure fails `start`, and the server it launched is killed.

use std::fs;
use std::path::{Path, PathBuf};

use super::locate::{locate, CgroupMount};
use crate::error::{Error, Result};

/// Moves `pid` into cgroup `path` (e.g. `/tether/shims`) as this process sees cgroupfs. Returns
/// the directories joined.
pub fn join(pid: u32, path: &str) -> Result<Vec<PathBuf>> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")
        .map_err(Error::io("read /proc/self/mountinfo"))?;
    join_in(pid, path, &mountinfo, Path::new("/"))
}

/// [`join`] against a given mountinfo text, mount points taken relative to `host_root`.
pub(crate) fn join_in(
    pid: u32,
    path: &str,
    mountinfo: &str,
    host_root: &Path,
) -> Result<Vec<PathBuf>> {
    let path = format!("/{}", path.trim_matches('/'));
    if path == "/" || path.split('/').any(|c| c == "..") {
        return Err(Error::InvalidArgument(format!(
            "ShimCgroup {path:?}: not a cgroup below the root"
        )));
    }
    let mounts: Vec<CgroupMount> = mountinfo.lines().filter_map(CgroupMount::parse).collect();
    // v1 when any v1 hierarchy with a real controller is mounted (hybrid hosts too, as
    // containerd's library decides); named-only hierarchies (`name=systemd`) do not count.
    let v1_controller = |m: &CgroupMount| {
        !m.unified
            && m.super_options
                .split(',')
                .any(|o| is_v1_controller(o) || o.starts_with("name="))
    };
    let is_v1 = mounts
        .iter()
        .any(|m| !m.unified && m.super_options.split(',').any(is_v1_controller));
    let dirs: Vec<PathBuf> = if is_v1 {
        let mut dirs: Vec<PathBuf> = mounts
            .iter()
            .filter(|m| v1_controller(m))
            .filter_map(|m| locate(std::slice::from_ref(m), |_| true, &path, host_root))
            .filter(|d| d.is_dir())
            .collect();
        dirs.sort();
        dirs.dedup();
        dirs
    } else {
        locate(&mounts, |m| m.unified, &path, host_root)
            .filter(|d| d.is_dir())
            .into_iter()
            .collect()
    };
    if dirs.is_empty() {
        let layout = if is_v1 {
            "v1 hierarchy"
        } else {
            "cgroup2 mount"
        };
        return Err(Error::NotFound(format!(
            "ShimCgroup {path}: no such cgroup in any {layout}"
        )));
    }
    for dir in &dirs {
        let procs = dir.join("cgroup.procs");
        fs::write(&procs, pid.to_string())
            .map_err(Error::io(format!("join {}", procs.display())))?;
    }
    Ok(dirs)
}

/// A v1 mount option that names a controller (not `rw`, `relatime`, `name=...`, ...).
fn is_v1_controller(option: &str) -> bool {
    matches!(
        option,
        "cpu"
            | "cpuacct"
            | "cpuset"
            | "memory"
            | "devices"
            | "freezer"
            | "net_cls"
            | "net_prio"
            | "blkio"
            | "perf_event"
            | "hugetlb"
            | "pids"
            | "rdma"
            | "misc"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
24 1 0:22 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
25 24 0:23 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
26 24 0:24 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
27 24 0:25 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd
28 24 0:26 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
";
    const UNIFIED: &str = "31 23 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";

    fn mkdir(root: &Path, dir: &str) -> PathBuf {
        let d = root.join(dir);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn v1_joins_every_hierarchy_where_the_cgroup_exists() {
        let host = tempfile::tempdir().unwrap();
        let memory = mkdir(host.path(), "sys/fs/cgroup/memory/shims");
        let systemd = mkdir(host.path(), "sys/fs/cgroup/systemd/shims");
        // Present on the cgroup2 side of the hybrid host too: not v1, so not joined.
        let unified = mkdir(host.path(), "sys/fs/cgroup/unified/shims");
        let joined = join_in(42, "/shims", HYBRID, host.path()).unwrap();
        assert_eq!(joined, vec![memory.clone(), systemd.clone()]);
        for d in [&memory, &systemd] {
            assert_eq!(fs::read_to_string(d.join("cgroup.procs")).unwrap(), "42");
        }
        assert!(!unified.join("cgroup.procs").exists());
        // In no v1 hierarchy: an error, as containerd's cgroup1.Load reports a deleted cgroup.
        let e = join_in(42, "/absent", HYBRID, host.path()).unwrap_err();
        assert!(
            matches!(&e, Error::NotFound(m) if m.contains("/absent") && m.contains("v1")),
            "{e}"
        );
    }

    #[test]
    fn unified_joins_the_one_directory() {
        let host = tempfile::tempdir().unwrap();
        let dir = mkdir(host.path(), "sys/fs/cgroup/system.slice/shims");
        // Relative or trailing-slash forms name the same cgroup.
        let joined = join_in(7, "system.slice/shims/", UNIFIED, host.path()).unwrap();
        assert_eq!(joined, vec![dir.clone()]);
        assert_eq!(fs::read_to_string(dir.join("cgroup.procs")).unwrap(), "7");
        assert!(matches!(
            join_in(7, "/system.slice/absent", UNIFIED, host.path()),
            Err(Error::NotFound(_))
        ));
    }

    #[test]
    fn paths_outside_the_hierarchy_are_invalid() {
        let host = tempfile::tempdir().unwrap();
        for bad in ["/", "", "/a/../../etc", ".."] {
            assert!(
                matches!(
                    join_in(7, bad, UNIFIED, host.path()),
                    Err(Error::InvalidArgument(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_cgroup_that_refuses_the_process_is_an_io_error() {
        let host = tempfile::tempdir().unwrap();
        let dir = mkdir(host.path(), "sys/fs/cgroup/shims");
        // cgroup.procs as a directory: the write fails as a refused join would.
        fs::create_dir(dir.join("cgroup.procs")).unwrap();
        assert!(matches!(
            join_in(7, "/shims", UNIFIED, host.path()),
            Err(Error::Io { .. })
        ));
    }
}
