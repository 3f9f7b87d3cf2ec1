//! A container's cgroup: where it is, what it uses (the task API's `Stats`) and when the kernel
//! OOM-kills in it (`TaskOOM`).
//!
//! Everything is read straight from cgroupfs, never through `runc events --stats`: a stats call
//! costs a few small file reads instead of a fork and exec, and OOM watching needs no helper
//! process or thread.
//!
//! Two layouts, told apart by `/proc/<pid>/cgroup` (see [`ContainerCgroup::from_parts`]):
//! - **v1 / hybrid**: one hierarchy per controller (`/sys/fs/cgroup/memory/...`). Stats are
//!   containerd's `io.containerd.cgroups.v1.Metrics`; OOM notifications come from an eventfd
//!   registered through `cgroup.event_control`.
//! - **unified** (cgroup2 only): one directory. Stats are `io.containerd.cgroups.v2.Metrics`, the
//!   type containerd decodes on such hosts (the Rust runc shim sends v1 types there); OOM kills
//!   are the `oom_kill` counter of `memory.events`, polled for kernfs change notifications.
//!
//! Which fields are filled, and from which file, follows containerd's Go library
//! (`cgroups/v3`, `cgroup1/*.go` and `cgroup2/manager.go`), so clients see the numbers the Go shim
//! reports. Where that library errors out on a missing file we skip the file: a controller may
//! not be enabled for the container. A line that does not parse is skipped too; only a cgroup
//! that is gone as a whole is an error ([`Error::NotFound`]).
//!
//! - `locate`: mountinfo and `/proc/<pid>/cgroup` to directories;
//! - `files`: reading and parsing cgroup files;
//! - `v1` and `v2`: the metrics of each layout, the only modules that know containerd's
//!   cgroups messages;
//! - [`oom`]: the OOM watchers;
//! - [`join`]: moving a process into a named cgroup (the `ShimCgroup` option).
//! - `kill`: killing the whole cgroup without the OCI runtime (`cgroup.kill`, or pidfds).
//!
//! Hand-written rather than `cgroups-rs`: see `files`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;
use tokio::sync::mpsc;

use crate::error::{Error, Result};

mod files;
pub mod join;
mod kill;
mod locate;
pub mod oom;
#[cfg(test)]
mod testdata;
mod v1;
mod v2;

use files::read_counter;
pub use kill::Killed;
use locate::{locate, CgroupMount};

/// A container's resource usage, in the message containerd expects for the host's cgroup layout.
#[derive(Debug, Clone, PartialEq)]
pub enum Metrics {
    /// v1 and hybrid hosts: `io.containerd.cgroups.v1.Metrics`.
    V1(v1::Metrics),
    /// cgroup2-only hosts: `io.containerd.cgroups.v2.Metrics`.
    V2(v2::Metrics),
}

impl Metrics {
    /// The message's full protobuf name, which containerd's `typeurl` resolves.
    pub fn type_url(&self) -> &'static str {
        match self {
            Metrics::V1(_) => "io.containerd.cgroups.v1.Metrics",
            Metrics::V2(_) => "io.containerd.cgroups.v2.Metrics",
        }
    }

    /// The payload of a `StatsResponse`.
    pub fn to_any(&self) -> Any {
        // Serialising only fails for messages over 2 GiB.
        let value = match self {
            Metrics::V1(m) => m.write_to_bytes(),
            Metrics::V2(m) => m.write_to_bytes(),
        }
        .unwrap_or_default();
        Any {
            type_url: self.type_url().to_string(),
            value,
            ..Default::default()
        }
    }
}

/// Where a process's cgroup lives, located once (at container create) and then read on demand.
/// An upgrade carries it: the `/proc/<pid>/cgroup` of an init killed but not yet reaped (a
/// zombie) names the root cgroup.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ContainerCgroup {
    layout: Layout,
    /// Prefix of the host files read besides the cgroup's own (`proc/partitions`,
    /// `sys/kernel/mm/hugepages`) and of every mount point: `/` in production, a fixture tree in
    /// tests.
    host_root: PathBuf,
}

/// The v1 controllers [`ContainerCgroup::metrics`] reads.
const V1_STATS_CONTROLLERS: [&str; 7] = [
    "memory", "cpu", "cpuacct", "pids", "blkio", "hugetlb", "rdma",
];

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum Layout {
    /// Each v1 controller the process is in (`"memory"`, `"cpu"`, `"name=systemd"`...) with its
    /// directory. Co-mounted controllers (`cpu,cpuacct`) share one.
    V1(Vec<(String, PathBuf)>),
    /// The one cgroup2 directory.
    Unified(PathBuf),
}

impl ContainerCgroup {
    /// Locates the cgroup of `pid` as this process sees cgroupfs (our mount namespace).
    ///
    /// `NotFound` if the process is gone, `Unimplemented` if its cgroup cannot be reached through
    /// any cgroupfs mount here.
    pub fn for_pid(pid: i32) -> Result<ContainerCgroup> {
        let proc_cgroup = match fs::read_to_string(format!("/proc/{pid}/cgroup")) {
            Ok(text) => text,
            Err(e)
                if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) =>
            {
                return Err(Error::NotFound(format!("process {pid} not found")));
            }
            Err(e) => {
                return Err(Error::Io {
                    context: format!("read /proc/{pid}/cgroup"),
                    source: e,
                })
            }
        };
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")
            .map_err(Error::io("read /proc/self/mountinfo"))?;
        Self::from_parts(&proc_cgroup, &mountinfo, Path::new("/"))
    }

    /// Locates a cgroup from the text of `/proc/<pid>/cgroup` and `/proc/self/mountinfo`, with
    /// every mount point taken relative to `host_root`.
    ///
    /// The layout is v1 when any line names a real v1 controller (hybrid hosts list those plus a
    /// `0::` line; containerd uses v1 there too), unified when only the `0::/path` line (and maybe
    /// named hierarchies such as `name=systemd`) is present. A cgroup path is resolved through the
    /// mount of its hierarchy whose root is the longest prefix of the path, so a cgroupfs mounted
    /// from a sub-tree (inside a container, mount root `/docker/<id>`) works too.
    pub fn from_parts(
        proc_cgroup: &str,
        mountinfo: &str,
        host_root: &Path,
    ) -> Result<ContainerCgroup> {
        let mounts: Vec<CgroupMount> = mountinfo.lines().filter_map(CgroupMount::parse).collect();
        let mut v1_dirs = Vec::new();
        let mut v1_controller = false;
        let mut unified_path = None;
        for line in proc_cgroup.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(id), Some(controllers), Some(path)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if id == "0" && controllers.is_empty() {
                unified_path = Some(path);
                continue;
            }
            for controller in controllers.split(',').filter(|c| !c.is_empty()) {
                v1_controller |= !controller.starts_with("name=");
                let mounted = |m: &CgroupMount| {
                    !m.unified && m.super_options.split(',').any(|o| o == controller)
                };
                if let Some(dir) = locate(&mounts, mounted, path, host_root) {
                    v1_dirs.push((controller.to_string(), dir));
                }
            }
        }
        let layout = if v1_controller {
            if !v1_dirs.iter().any(|(c, _)| !c.starts_with("name=")) {
                return Err(Error::Unimplemented(
                    "no v1 cgroup controller of the process is mounted here".into(),
                ));
            }
            Layout::V1(v1_dirs)
        } else if let Some(path) = unified_path {
            let dir =
                locate(&mounts, |m: &CgroupMount| m.unified, path, host_root).ok_or_else(|| {
                    Error::Unimplemented(format!(
                        "cgroup2 path {path} is not under any cgroup2 mount"
                    ))
                })?;
            Layout::Unified(dir)
        } else {
            return Err(Error::Unimplemented(
                "unknown cgroup hierarchy: no v1 controller and no cgroup2 entry".into(),
            ));
        };
        Ok(ContainerCgroup {
            layout,
            host_root: host_root.to_path_buf(),
        })
    }

    /// True on a cgroup2-only host (stats are [`Metrics::V2`]).
    pub fn is_unified(&self) -> bool {
        matches!(self.layout, Layout::Unified(_))
    }

    /// The directory holding `controller`'s files (`"memory"`, `"cpu"`...): the one cgroup2
    /// directory on a unified host, that controller's hierarchy on v1 (None if not mounted).
    pub fn dir(&self, controller: &str) -> Option<&Path> {
        match &self.layout {
            Layout::Unified(dir) => Some(dir),
            Layout::V1(dirs) => dirs
                .iter()
                .find(|(c, _)| c == controller)
                .map(|(_, d)| d.as_path()),
        }
    }

    /// Reads the cgroup's current usage. Controllers the process is not in (or that are not
    /// mounted) are left out; `NotFound` once the cgroup has been removed.
    pub fn metrics(&self) -> Result<Metrics> {
        self.check_exists()?;
        let metrics = match &self.layout {
            Layout::V1(_) => Metrics::V1(v1::metrics(self)?),
            Layout::Unified(dir) => Metrics::V2(v2::metrics(dir, &self.host_root)?),
        };
        // Removal while we read shows up as missing files, i.e. zeros: report it as gone instead.
        self.check_exists()?;
        Ok(metrics)
    }

    /// How many processes the kernel OOM killer has killed in this cgroup (and below), or None
    /// when that is unknown: no memory controller, the cgroup is gone, or a v1 kernel older than
    /// 4.13 (no `oom_kill` line in `memory.oom_control`).
    ///
    /// One small file read into a stack buffer: meant to be called right before an init exit is
    /// published, so that an OOM the watcher has not delivered yet is still reported first.
    pub fn oom_kill_count(&self) -> Option<u64> {
        let path = match &self.layout {
            Layout::V1(_) => self.dir("memory")?.join("memory.oom_control"),
            Layout::Unified(dir) => dir.join("memory.events"),
        };
        read_counter(&path, "oom_kill").ok().flatten()
    }

    /// The `oom_kill` count of the cgroup's parent on cgroup v2, where it counts every kill
    /// below it: under runc's systemd driver the pod's slice, which outlives the container's
    /// scope (systemd removes an emptied scope at once, counter and all). None on v1, or when
    /// the parent has no memory controller.
    pub fn parent_oom_kill_count(&self) -> Option<u64> {
        let Layout::Unified(dir) = &self.layout else {
            return None;
        };
        read_counter(&dir.parent()?.join("memory.events"), "oom_kill")
            .ok()
            .flatten()
    }

    /// Every process in the cgroup and in the cgroups below it, as `runc ps` lists them (runc
    /// reads the same `cgroup.procs` files, of the `devices` hierarchy on v1). `NotFound` once the
    /// cgroup is gone; a child cgroup removed during the walk is skipped.
    pub fn procs(&self) -> Result<Vec<i32>> {
        let top = match &self.layout {
            Layout::Unified(dir) => dir.as_path(),
            Layout::V1(dirs) => ["devices", "pids", "memory", "cpu"]
                .iter()
                .find_map(|c| self.dir(c))
                .or_else(|| {
                    dirs.iter()
                        .find(|(c, _)| !c.starts_with("name="))
                        .map(|(_, d)| d.as_path())
                })
                .ok_or_else(|| Error::NotFound("no v1 controller hierarchy".into()))?,
        };
        let mut pids = Vec::new();
        let mut dirs = vec![top.to_path_buf()];
        while let Some(dir) = dirs.pop() {
            let file = dir.join("cgroup.procs");
            let text = match fs::read_to_string(&file) {
                Ok(text) => text,
                // ENODEV: the cgroup was removed between open and read.
                Err(e)
                    if e.kind() == io::ErrorKind::NotFound
                        || e.raw_os_error() == Some(libc::ENODEV) =>
                {
                    if dir == top {
                        return Err(Error::NotFound(format!(
                            "cgroup {} no longer exists",
                            top.display()
                        )));
                    }
                    continue;
                }
                Err(e) => {
                    return Err(Error::Io {
                        context: format!("read {}", file.display()),
                        source: e,
                    })
                }
            };
            pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            if let Ok(entries) = fs::read_dir(&dir) {
                let mut children: Vec<PathBuf> = entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path())
                    .collect();
                // Popped in name order, depth first: the order runc's walk lists them in.
                children.sort_unstable_by(|a, b| b.cmp(a));
                dirs.extend(children);
            }
        }
        Ok(pids)
    }

    /// Starts watching for OOM kills. The receiver gets one message per notification, with the
    /// count of kills read then where there is one (unified):
    /// - v1: each eventfd wake-up of the `memory.oom_control` notification (the kernel signals
    ///   when the cgroup hits OOM, so one kill can give more than one, as with the Go shim);
    /// - unified: each observed increase of `oom_kill` in `memory.events` (several kills between
    ///   two reads give one), counted from the value when the watch began.
    ///
    /// The channel closes when the cgroup is removed; dropping the receiver stops the watch. Runs
    /// as a task on the current tokio runtime (no thread), so it must be called inside one, with
    /// IO enabled (`FailedPrecondition` outside any runtime); `Unimplemented` when the cgroup has
    /// no memory controller, `NotFound` when it is gone.
    pub fn watch_oom(&self) -> Result<mpsc::UnboundedReceiver<Option<u64>>> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::FailedPrecondition(
                "the OOM watcher runs on a tokio runtime".into(),
            ));
        }
        match &self.layout {
            Layout::V1(_) => {
                let dir = self.dir("memory").ok_or_else(|| {
                    Error::Unimplemented("the cgroup has no v1 memory controller".into())
                })?;
                oom::watch_eventfd(dir.to_path_buf())
            }
            Layout::Unified(dir) => {
                oom::watch_counter_file(dir.clone(), "memory.events", "oom_kill")
            }
        }
    }

    /// `NotFound` once the cgroup is (being) removed. On v1 that is when any directory stats are
    /// read from is gone (runc removes them all); the others may be shared with other processes
    /// (a process left in `/` of a hierarchy) and prove nothing.
    fn check_exists(&self) -> Result<()> {
        let exists = match &self.layout {
            Layout::Unified(dir) => dir.is_dir(),
            Layout::V1(dirs) => {
                let mut read = dirs
                    .iter()
                    .filter(|(c, _)| V1_STATS_CONTROLLERS.contains(&c.as_str()))
                    .peekable();
                if read.peek().is_some() {
                    read.all(|(_, d)| d.is_dir())
                } else {
                    dirs.iter().all(|(_, d)| d.is_dir())
                }
            }
        };
        if exists {
            Ok(())
        } else {
            Err(Error::NotFound(format!(
                "cgroup {} no longer exists",
                self.describe()
            )))
        }
    }

    fn describe(&self) -> String {
        match &self.layout {
            Layout::Unified(dir) => dir.display().to_string(),
            Layout::V1(dirs) => match self
                .dir("memory")
                .or_else(|| dirs.first().map(|(_, d)| d.as_path()))
            {
                Some(d) => d.display().to_string(),
                None => "(none)".into(),
            },
        }
    }

    /// Every hierarchy the process is in, as (controller, directory): on v1 each controller
    /// (`"memory"`, `"name=systemd"`...), on a unified host the one directory under `""`.
    pub fn hierarchies(&self) -> impl Iterator<Item = (&str, &Path)> {
        let (v1, unified) = match &self.layout {
            Layout::V1(dirs) => (Some(dirs.iter()), None),
            Layout::Unified(dir) => (None, Some(("", dir.as_path()))),
        };
        v1.into_iter()
            .flatten()
            .map(|(c, d)| (c.as_str(), d.as_path()))
            .chain(unified)
    }
}

#[cfg(test)]
mod tests {
    use super::testdata::*;
    use super::*;

    #[test]
    fn procs_lists_the_cgroup_and_those_below_it() {
        let (_root, cg) = v2_tree();
        let dir = cg.dir("memory").unwrap().to_path_buf();
        fs::create_dir_all(dir.join("sub/deeper")).unwrap();
        write(&dir.join("cgroup.procs"), "10\n11\n");
        write(&dir.join("sub/cgroup.procs"), "12\n");
        write(&dir.join("sub/deeper/cgroup.procs"), "");
        let mut pids = cg.procs().unwrap();
        pids.sort();
        assert_eq!(pids, vec![10, 11, 12]);
        // A child cgroup without its file (removed mid-walk) is skipped; the top one missing
        // means the cgroup is gone.
        fs::remove_file(dir.join("sub/cgroup.procs")).unwrap();
        assert_eq!(cg.procs().unwrap().len(), 2);
        fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(cg.procs(), Err(Error::NotFound(_))));

        // v1: runc reads the devices hierarchy; without it here, the pids one.
        let (_root, cg) = v1_tree();
        write(&cg.dir("pids").unwrap().join("cgroup.procs"), "7\n");
        write(&cg.dir("memory").unwrap().join("cgroup.procs"), "8\n");
        assert_eq!(cg.procs().unwrap(), vec![7]);
    }

    #[test]
    fn removed_cgroups_are_not_found() {
        let (_root, cg) = v2_tree();
        fs::remove_dir_all(cg.dir("memory").unwrap()).unwrap();
        assert!(matches!(cg.metrics(), Err(Error::NotFound(_))));
        assert_eq!(cg.oom_kill_count(), None);

        // v1: runc removes every controller's directory; one gone is enough.
        let (_root, cg) = v1_tree();
        fs::remove_dir_all(cg.dir("pids").unwrap()).unwrap();
        assert!(matches!(cg.metrics(), Err(Error::NotFound(_))));
        for c in ["memory", "cpu", "blkio", "hugetlb"] {
            fs::remove_dir_all(cg.dir(c).unwrap()).unwrap();
        }
        assert!(matches!(cg.metrics(), Err(Error::NotFound(_))));
        assert_eq!(cg.oom_kill_count(), None);
    }

    #[test]
    fn the_parents_oom_count_outlives_the_cgroup() {
        let (_root, cg) = v2_tree();
        let dir = cg.dir("memory").unwrap().to_path_buf();
        let parent = dir.parent().unwrap();
        assert_eq!(cg.parent_oom_kill_count(), None, "no memory.events above");
        write(
            &parent.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\noom_group_kill 0\n",
        );
        assert_eq!(cg.parent_oom_kill_count(), Some(2));
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(cg.oom_kill_count(), None);
        assert_eq!(cg.parent_oom_kill_count(), Some(2));
        // v1 has no hierarchical counter file to read.
        let (_root, cg) = v1_tree();
        assert_eq!(cg.parent_oom_kill_count(), None);
    }
}
