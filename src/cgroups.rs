//! A container's cgroup: where it is, what it uses (the task API's `Stats`) and when the kernel
//! OOM-kills in it (`TaskOOM`); and [`prime_attach_lock`], which takes ~10 ms off every
//! `runc create` and `runc exec`.
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
//!   are the `oom_kill` counter of `memory.events`, watched with inotify.
//!
//! Which fields are filled, and from which file, follows containerd's Go library
//! (`cgroups/v3`, `cgroup1/*.go` and `cgroup2/manager.go`), so clients see the numbers the Go shim
//! reports. Where that library errors out on a missing file we skip the file: a controller may
//! not be enabled for the container. A line that does not parse is skipped too; only a cgroup
//! that is gone as a whole is an error ([`Error::NotFound`]).

use std::ffi::OsString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use containerd_shim_protos::cgroups::metrics as v1;
use containerd_shim_protos::cgroups_v2::metrics as v2;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::sync::mpsc;

use crate::error::{Error, Result};

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
#[derive(Debug, Clone, PartialEq, Eq)]
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

#[derive(Debug, Clone, PartialEq, Eq)]
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
            Layout::V1(_) => Metrics::V1(self.v1_metrics()?),
            Layout::Unified(dir) => Metrics::V2(v2_metrics(dir, &self.host_root)?),
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

    /// Starts watching for OOM kills. The receiver gets one `()` per notification:
    /// - v1: each eventfd wake-up of the `memory.oom_control` notification (the kernel signals
    ///   when the cgroup hits OOM, so one kill can give more than one, as with the Go shim);
    /// - unified: each observed increase of `oom_kill` in `memory.events` (several kills between
    ///   two reads give one), counted from the value when the watch began.
    ///
    /// The channel closes when the cgroup is removed; dropping the receiver stops the watch. Runs
    /// as a task on the current tokio runtime (no thread), so it must be called inside one, with
    /// IO enabled (`FailedPrecondition` outside any runtime); `Unimplemented` when the cgroup has
    /// no memory controller, `NotFound` when it is gone.
    pub fn watch_oom(&self) -> Result<mpsc::UnboundedReceiver<()>> {
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
                watch_eventfd(dir.to_path_buf())
            }
            Layout::Unified(dir) => watch_counter_file(dir.clone(), "memory.events", "oom_kill"),
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

    fn v1_metrics(&self) -> Result<v1::Metrics> {
        let mut m = v1::Metrics::new();
        if let Some(dir) = self.dir("pids") {
            if let Some(current) = read_value(&dir.join("pids.current"), 0)? {
                let limit = read_value(&dir.join("pids.max"), 0)?.unwrap_or(0);
                m.pids = MessageField::some(v1::PidsStat {
                    current,
                    limit,
                    ..Default::default()
                });
            }
        }
        // containerd always sends a cpu message with both parts, zero when not mounted.
        m.cpu = MessageField::some(v1::CPUStat {
            usage: MessageField::some(v1_cpu_usage(self.dir("cpuacct"))?),
            throttling: MessageField::some(v1_throttling(self.dir("cpu"))?),
            ..Default::default()
        });
        if let Some(dir) = self.dir("memory") {
            v1_memory(dir, &mut m)?;
        }
        if let Some(dir) = self.dir("blkio") {
            m.blkio = MessageField::some(v1_blkio(dir, &self.host_root)?);
        }
        if let Some(dir) = self.dir("hugetlb") {
            for size in huge_page_sizes(&self.host_root) {
                let file = |name: &str| dir.join(format!("hugetlb.{size}.{name}"));
                m.hugetlb.push(v1::HugetlbStat {
                    usage: read_value(&file("usage_in_bytes"), 0)?.unwrap_or(0),
                    max: read_value(&file("max_usage_in_bytes"), 0)?.unwrap_or(0),
                    failcnt: read_value(&file("failcnt"), 0)?.unwrap_or(0),
                    pagesize: size,
                    ..Default::default()
                });
            }
        }
        if let Some(dir) = self.dir("rdma") {
            let entries = |file: &str| -> Result<Vec<v1::RdmaEntry>> {
                Ok(rdma_entries(&dir.join(file))?
                    .into_iter()
                    .map(|(device, hca_handles, hca_objects)| v1::RdmaEntry {
                        device,
                        hca_handles,
                        hca_objects,
                        ..Default::default()
                    })
                    .collect())
            };
            m.rdma = MessageField::some(v1::RdmaStat {
                current: entries("rdma.current")?,
                limit: entries("rdma.max")?,
                ..Default::default()
            });
        }
        Ok(m)
    }
}

// ------------------------------------------------------------------------------------------------
// Priming the attach lock
// ------------------------------------------------------------------------------------------------

/// Starts a no-op move of this shim into its own cgroup, on a short-lived thread, just before
/// `runc create` or `runc exec` is spawned.
///
/// Every write to a `cgroup.procs` file takes the kernel's one global
/// `cgroup_threadgroup_rwsem` for writing, and a writer finding that percpu lock idle first
/// waits a full RCU grace period (about 10 ms here). runc writes the new process into the
/// container's cgroup some 8 ms after it is spawned; when our write's grace period is already
/// under way by then, runc's write shares it (and the lock stays in writer mode for one more
/// grace period). Measured on this 2-core host: `runc exec` 30 ms to 20 ms. Where cgroupfs is
/// mounted with `favordynmods` the lock never waits, and this is one cheap write.
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

/// Writes `0` (this process) into the `cgroup.procs` of the cgroup it is already in.
fn move_self_to_own_cgroup() -> io::Result<()> {
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
    let dir = match &cg.layout {
        Layout::Unified(dir) => dir.as_path(),
        Layout::V1(dirs) => cg.dir("pids").or_else(|| {
            dirs.iter()
                .find(|(c, _)| !c.starts_with("name="))
                .map(|(_, d)| d.as_path())
        })?,
    };
    Some(dir.join("cgroup.procs"))
}

// ------------------------------------------------------------------------------------------------
// Locating
// ------------------------------------------------------------------------------------------------

/// A cgroupfs line of mountinfo.
struct CgroupMount {
    /// The path inside the hierarchy that is mounted (`/` unless a sub-tree is bind-mounted).
    root: String,
    mount_point: String,
    unified: bool,
    /// For v1, the controllers of the hierarchy (`rw,cpu,cpuacct`, `rw,name=systemd`).
    super_options: String,
}

impl CgroupMount {
    /// Parses `id parent maj:min root mount-point options [optional...] - fstype source super-options`,
    /// keeping only cgroup and cgroup2 mounts.
    fn parse(line: &str) -> Option<CgroupMount> {
        let mut fields = line.split(' ');
        let root = fields.nth(3)?;
        let mount_point = fields.next()?;
        let mut rest = fields.skip_while(|f| *f != "-");
        rest.next()?;
        let fstype = rest.next()?;
        let super_options = rest.nth(1).unwrap_or("");
        let unified = match fstype {
            "cgroup2" => true,
            "cgroup" => false,
            _ => return None,
        };
        Some(CgroupMount {
            root: unescape(root),
            mount_point: unescape(mount_point),
            unified,
            super_options: super_options.to_string(),
        })
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\134` for a backslash...).
fn unescape(field: &str) -> String {
    if !field.contains('\\') {
        return field.to_string();
    }
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                let v = (u32::from(d[0] - b'0') << 6)
                    | (u32::from(d[1] - b'0') << 3)
                    | u32::from(d[2] - b'0');
                out.push(v as u8);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The directory of cgroup `path` through the best of the `wanted` mounts: the one whose root is
/// the longest prefix of the path.
fn locate(
    mounts: &[CgroupMount],
    wanted: impl Fn(&CgroupMount) -> bool,
    path: &str,
    host_root: &Path,
) -> Option<PathBuf> {
    let mut best: Option<(&CgroupMount, &str)> = None;
    for m in mounts.iter().filter(|m| wanted(m)) {
        let Some(rel) = relative_to(path, &m.root) else {
            continue;
        };
        if best.is_none_or(|(b, _)| m.root.len() > b.root.len()) {
            best = Some((m, rel));
        }
    }
    let (m, rel) = best?;
    let mut dir = host_root.join(m.mount_point.trim_start_matches('/'));
    if !rel.is_empty() {
        dir.push(rel);
    }
    Some(dir)
}

/// `path` relative to a mount's `root`, if it lies under it: (`/a/b`, `/a`) → `b`,
/// (`/a`, `/`) → `a`, (`/ab`, `/a`) → None. Paths climbing out (`/..`, seen across cgroup
/// namespaces) are refused.
fn relative_to<'p>(path: &'p str, root: &str) -> Option<&'p str> {
    let rest = path.strip_prefix(root.trim_end_matches('/'))?;
    let rel = if rest.is_empty() {
        ""
    } else {
        rest.strip_prefix('/')?.trim_end_matches('/')
    };
    if rel.split('/').any(|c| c == "..") {
        return None;
    }
    Some(rel)
}

// ------------------------------------------------------------------------------------------------
// Reading files
// ------------------------------------------------------------------------------------------------

/// True for errors that mean "this file is not there": controller not enabled, kernel without
/// the feature (PSI off reads as EOPNOTSUPP), or the cgroup being removed (ENODEV).
fn absent(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
        || matches!(
            e.raw_os_error(),
            Some(libc::ENODEV) | Some(libc::EOPNOTSUPP)
        )
}

/// A whole cgroup file, or None when it is [`absent`]. Bytes that are not UTF-8 (never written
/// by the kernel) become U+FFFD, so such a line is skipped rather than failing the whole read.
fn read_opt(path: &Path) -> Result<Option<String>> {
    match fs::read(path) {
        Ok(bytes) => {
            Ok(Some(String::from_utf8(bytes).unwrap_or_else(|e| {
                String::from_utf8_lossy(e.as_bytes()).into_owned()
            })))
        }
        Err(e) if absent(&e) => Ok(None),
        Err(e) => Err(Error::Io {
            context: format!("read {}", path.display()),
            source: e,
        }),
    }
}

/// Parses a counter as containerd does: negative values (v1 uses -1 for "no limit" in places)
/// read as 0; anything else that is not a number is None.
fn parse_num(s: &str) -> Option<u64> {
    let s = s.trim();
    if let Ok(v) = s.parse::<u64>() {
        return Some(v);
    }
    match s.strip_prefix('-') {
        Some(digits) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => Some(0),
        _ => None,
    }
}

/// A single-value file; `max` reads as `max_as` (0 on v1 as containerd's v1 code does,
/// `u64::MAX` on v2). None when absent or not a number.
fn read_value(path: &Path, max_as: u64) -> Result<Option<u64>> {
    Ok(read_opt(path)?.and_then(|text| match text.trim() {
        "max" => Some(max_as),
        v => parse_num(v),
    }))
}

/// The `key value` lines of a flat-keyed file (`memory.stat`, `cpu.stat`...); other lines are
/// skipped.
fn flat_keyed(text: &str) -> impl Iterator<Item = (&str, u64)> {
    text.lines().filter_map(|line| {
        let mut fields = line.split_ascii_whitespace();
        let (key, value) = (fields.next()?, fields.next()?);
        if fields.next().is_some() {
            return None;
        }
        Some((key, parse_num(value)?))
    })
}

/// One counter of a small flat-keyed file, read into a stack buffer: the v2 OOM watcher calls
/// this on every `memory.events` change, which under memory pressure is often. `Ok(None)` when
/// the key is not there; an error when the file cannot be read (gone, for the watcher).
fn read_counter(path: &Path, key: &str) -> io::Result<Option<u64>> {
    let mut file = fs::File::open(path)?;
    let mut buf = [0u8; 512];
    let mut len = 0;
    while len < buf.len() {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    if len < buf.len() {
        return Ok(find_counter(&buf[..len], key));
    }
    // Larger than any kernel writes today: read the rest rather than miss the key.
    let mut all = buf.to_vec();
    file.read_to_end(&mut all)?;
    Ok(find_counter(&all, key))
}

fn find_counter(text: &[u8], key: &str) -> Option<u64> {
    let text = std::str::from_utf8(text).ok()?;
    flat_keyed(text).find(|(k, _)| *k == key).map(|(_, v)| v)
}

/// `USER_HZ`, the unit of `cpuacct.stat`.
fn clock_ticks() -> u64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(hz)) if hz > 0 => hz as u64,
        _ => 100,
    }
}

/// The host's huge page sizes named the way hugetlb files are (`2MB`, `1GB`, `64KB`), smallest
/// first, from `sys/kernel/mm/hugepages/hugepages-<n>kB`.
fn huge_page_sizes(host_root: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(host_root.join("sys/kernel/mm/hugepages")) else {
        return Vec::new();
    };
    let mut kib: Vec<u64> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()
        })
        .collect();
    kib.sort_unstable();
    kib.dedup();
    kib.into_iter().map(huge_page_name).collect()
}

/// The kernel's name for a huge page size (mm/hugetlb_cgroup.c `mem_fmt`).
fn huge_page_name(kib: u64) -> String {
    if kib >= 1 << 20 {
        format!("{}GB", kib >> 20)
    } else if kib >= 1 << 10 {
        format!("{}MB", kib >> 10)
    } else {
        format!("{kib}KB")
    }
}

/// `rdma.current` / `rdma.max` lines: `<device> hca_handle=<n> hca_object=<n>`, `max` as
/// `u32::MAX`.
fn rdma_entries(path: &Path) -> Result<Vec<(String, u32, u32)>> {
    let Some(text) = read_opt(path)? else {
        return Ok(Vec::new());
    };
    let value = |v: &str| {
        if v == "max" {
            Some(u32::MAX)
        } else {
            v.parse().ok()
        }
    };
    Ok(text
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_ascii_whitespace().collect();
            let [device, a, b] = fields[..] else {
                return None;
            };
            let (mut handles, mut objects) = (0, 0);
            for kv in [a, b] {
                match kv.split_once('=') {
                    Some(("hca_handle", v)) => handles = value(v)?,
                    Some(("hca_object", v)) => objects = value(v)?,
                    _ => {}
                }
            }
            Some((device.to_string(), handles, objects))
        })
        .collect())
}

// ------------------------------------------------------------------------------------------------
// v1
// ------------------------------------------------------------------------------------------------

fn v1_cpu_usage(cpuacct: Option<&Path>) -> Result<v1::CPUUsage> {
    let mut usage = v1::CPUUsage::new();
    let Some(dir) = cpuacct else { return Ok(usage) };
    usage.total = read_value(&dir.join("cpuacct.usage"), 0)?.unwrap_or(0);
    if let Some(text) = read_opt(&dir.join("cpuacct.usage_percpu"))? {
        // Keep positions: entry i is CPU i even if one value were unreadable.
        usage.per_cpu = text
            .split_ascii_whitespace()
            .map(|v| parse_num(v).unwrap_or(0))
            .collect();
    }
    if let Some(text) = read_opt(&dir.join("cpuacct.stat"))? {
        // USER_HZ ticks to nanoseconds, as containerd reports them. u128: a root cgroup on a big
        // machine overflows u64 in the multiplication.
        let hz = u128::from(clock_ticks());
        let ns =
            |ticks: u64| u64::try_from(u128::from(ticks) * 1_000_000_000 / hz).unwrap_or(u64::MAX);
        for (key, value) in flat_keyed(&text) {
            match key {
                "user" => usage.user = ns(value),
                "system" => usage.kernel = ns(value),
                _ => {}
            }
        }
    }
    Ok(usage)
}

fn v1_throttling(cpu: Option<&Path>) -> Result<v1::Throttle> {
    let mut throttle = v1::Throttle::new();
    let Some(text) = cpu
        .map(|d| read_opt(&d.join("cpu.stat")))
        .transpose()?
        .flatten()
    else {
        return Ok(throttle);
    };
    for (key, value) in flat_keyed(&text) {
        match key {
            "nr_periods" => throttle.periods = value,
            "nr_throttled" => throttle.throttled_periods = value,
            "throttled_time" => throttle.throttled_time = value,
            _ => {}
        }
    }
    Ok(throttle)
}

fn v1_memory(dir: &Path, m: &mut v1::Metrics) -> Result<()> {
    let Some(text) = read_opt(&dir.join("memory.stat"))? else {
        return Ok(());
    };
    let mut s = v1::MemoryStat::new();
    for (key, value) in flat_keyed(&text) {
        let field = match key {
            "cache" => &mut s.cache,
            "rss" => &mut s.rss,
            "rss_huge" => &mut s.rss_huge,
            "mapped_file" => &mut s.mapped_file,
            "dirty" => &mut s.dirty,
            "writeback" => &mut s.writeback,
            "pgpgin" => &mut s.pg_pg_in,
            "pgpgout" => &mut s.pg_pg_out,
            "pgfault" => &mut s.pg_fault,
            "pgmajfault" => &mut s.pg_maj_fault,
            "inactive_anon" => &mut s.inactive_anon,
            "active_anon" => &mut s.active_anon,
            "inactive_file" => &mut s.inactive_file,
            "active_file" => &mut s.active_file,
            "unevictable" => &mut s.unevictable,
            "hierarchical_memory_limit" => &mut s.hierarchical_memory_limit,
            "hierarchical_memsw_limit" => &mut s.hierarchical_swap_limit,
            "total_cache" => &mut s.total_cache,
            "total_rss" => &mut s.total_rss,
            "total_rss_huge" => &mut s.total_rss_huge,
            "total_mapped_file" => &mut s.total_mapped_file,
            "total_dirty" => &mut s.total_dirty,
            "total_writeback" => &mut s.total_writeback,
            "total_pgpgin" => &mut s.total_pg_pg_in,
            "total_pgpgout" => &mut s.total_pg_pg_out,
            "total_pgfault" => &mut s.total_pg_fault,
            "total_pgmajfault" => &mut s.total_pg_maj_fault,
            "total_inactive_anon" => &mut s.total_inactive_anon,
            "total_active_anon" => &mut s.total_active_anon,
            "total_inactive_file" => &mut s.total_inactive_file,
            "total_active_file" => &mut s.total_active_file,
            "total_unevictable" => &mut s.total_unevictable,
            _ => continue,
        };
        *field = value;
    }
    // containerd sends all four entries, zero where the kernel has no such files (memsw without
    // swap accounting, kmem on newer kernels).
    for (module, entry) in [
        ("", &mut s.usage),
        ("memsw.", &mut s.swap),
        ("kmem.", &mut s.kernel),
        ("kmem.tcp.", &mut s.kernel_tcp),
    ] {
        let value = |name: &str| -> Result<u64> {
            Ok(read_value(&dir.join(format!("memory.{module}{name}")), 0)?.unwrap_or(0))
        };
        *entry = MessageField::some(v1::MemoryEntry {
            usage: value("usage_in_bytes")?,
            max: value("max_usage_in_bytes")?,
            failcnt: value("failcnt")?,
            limit: value("limit_in_bytes")?,
            ..Default::default()
        });
    }
    m.memory = MessageField::some(s);
    if let Some(text) = read_opt(&dir.join("memory.oom_control"))? {
        let mut oom = v1::MemoryOomControl::new();
        for (key, value) in flat_keyed(&text) {
            match key {
                "oom_kill_disable" => oom.oom_kill_disable = value,
                "under_oom" => oom.under_oom = value,
                "oom_kill" => oom.oom_kill = value,
                _ => {}
            }
        }
        m.memory_oom_control = MessageField::some(oom);
    }
    Ok(())
}

/// The blkio files containerd reads: the CFQ `*_recursive` set when the kernel has it, else
/// (no CFQ, or CFQ not used by the cgroup's devices) the throttle counters.
fn v1_blkio(dir: &Path, host_root: &Path) -> Result<v1::BlkIOStat> {
    let mut stat = v1::BlkIOStat::new();
    let devices = device_names(host_root)?;
    let read = |file: &str, entries: &mut Vec<v1::BlkIOEntry>| -> Result<()> {
        if let Some(text) = read_opt(&dir.join(format!("blkio.{file}")))? {
            entries.extend(text.lines().filter_map(|line| blkio_entry(line, &devices)));
        }
        Ok(())
    };
    if dir.join("blkio.io_serviced_recursive").exists() {
        read("sectors_recursive", &mut stat.sectors_recursive)?;
        read(
            "io_service_bytes_recursive",
            &mut stat.io_service_bytes_recursive,
        )?;
        read("io_serviced_recursive", &mut stat.io_serviced_recursive)?;
        read("io_queued_recursive", &mut stat.io_queued_recursive)?;
        read(
            "io_service_time_recursive",
            &mut stat.io_service_time_recursive,
        )?;
        read("io_wait_time_recursive", &mut stat.io_wait_time_recursive)?;
        read("io_merged_recursive", &mut stat.io_merged_recursive)?;
        read("time_recursive", &mut stat.io_time_recursive)?;
    }
    let cfq_entries = stat.sectors_recursive.len()
        + stat.io_service_bytes_recursive.len()
        + stat.io_serviced_recursive.len()
        + stat.io_queued_recursive.len()
        + stat.io_service_time_recursive.len()
        + stat.io_wait_time_recursive.len()
        + stat.io_merged_recursive.len()
        + stat.io_time_recursive.len();
    if cfq_entries == 0 {
        read("throttle.io_serviced", &mut stat.io_serviced_recursive)?;
        read(
            "throttle.io_service_bytes",
            &mut stat.io_service_bytes_recursive,
        )?;
    }
    Ok(stat)
}

/// `<major>:<minor> <op> <value>` or `<major>:<minor> <value>`; the trailing `Total <n>` line
/// and anything unparsable give None.
fn blkio_entry(line: &str, devices: &[(u64, u64, String)]) -> Option<v1::BlkIOEntry> {
    let mut fields = line.split_ascii_whitespace();
    let (major, minor) = fields.next()?.split_once(':')?;
    let (major, minor) = (major.parse().ok()?, minor.parse().ok()?);
    let (op, value) = match (fields.next()?, fields.next()) {
        (value, None) => ("", value),
        (op, Some(value)) => (op, value),
    };
    if fields.next().is_some() {
        return None;
    }
    let device = devices
        .iter()
        .find(|(ma, mi, _)| *ma == major && *mi == minor)
        .map(|(_, _, name)| name.clone())
        .unwrap_or_default();
    Some(v1::BlkIOEntry {
        op: op.to_string(),
        device,
        major,
        minor,
        value: parse_num(value)?,
        ..Default::default()
    })
}

/// `/dev/<name>` for each `major minor` of `proc/partitions` (first occurrence wins).
fn device_names(host_root: &Path) -> Result<Vec<(u64, u64, String)>> {
    let Some(text) = read_opt(&host_root.join("proc/partitions"))? else {
        return Ok(Vec::new());
    };
    let mut devices: Vec<(u64, u64, String)> = Vec::new();
    for line in text.lines().skip(2) {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        let [major, minor, _, name] = f[..] else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (major.parse(), minor.parse()) else {
            continue;
        };
        if !devices
            .iter()
            .any(|(ma, mi, _)| *ma == major && *mi == minor)
        {
            devices.push((major, minor, format!("/dev/{name}")));
        }
    }
    Ok(devices)
}

// ------------------------------------------------------------------------------------------------
// v2
// ------------------------------------------------------------------------------------------------

/// Like containerd's `cgroup2.Manager.Stat`: pids, cpu, memory, io and rdma are always present
/// (zeros for what the cgroup lacks), memory_events when `memory.events` has counters, one
/// hugetlb entry per host page size. Unlike it, `cpu.stat` is read even when the cpu controller
/// is not enabled (its usage lines are always there), and `workingset_refault`,
/// `workingset_activate` and `slab` are summed from their `_anon`/`_file` (resp.
/// `slab_(un)reclaimable`) parts on kernels that no longer print the total.
fn v2_metrics(dir: &Path, host_root: &Path) -> Result<v2::Metrics> {
    let mut m = v2::Metrics::new();
    let value =
        |file: &str| -> Result<u64> { Ok(read_value(&dir.join(file), u64::MAX)?.unwrap_or(0)) };

    m.pids = MessageField::some(v2::PidsStat {
        current: value("pids.current")?,
        limit: value("pids.max")?,
        ..Default::default()
    });

    let mut cpu = v2::CPUStat::new();
    if let Some(text) = read_opt(&dir.join("cpu.stat"))? {
        for (key, v) in flat_keyed(&text) {
            let field = match key {
                "usage_usec" => &mut cpu.usage_usec,
                "user_usec" => &mut cpu.user_usec,
                "system_usec" => &mut cpu.system_usec,
                "nr_periods" => &mut cpu.nr_periods,
                "nr_throttled" => &mut cpu.nr_throttled,
                "throttled_usec" => &mut cpu.throttled_usec,
                "nr_bursts" => &mut cpu.nr_bursts,
                "burst_usec" => &mut cpu.burst_usec,
                _ => continue,
            };
            *field = v;
        }
    }
    cpu.psi = read_psi(&dir.join("cpu.pressure"))?;
    m.cpu = MessageField::some(cpu);

    let mut mem = v2::MemoryStat::new();
    if let Some(text) = read_opt(&dir.join("memory.stat"))? {
        v2_memory_stat(&text, &mut mem);
    }
    mem.usage = value("memory.current")?;
    mem.usage_limit = value("memory.max")?;
    mem.max_usage = value("memory.peak")?;
    mem.swap_usage = value("memory.swap.current")?;
    mem.swap_limit = value("memory.swap.max")?;
    mem.swap_max_usage = value("memory.swap.peak")?;
    mem.psi = read_psi(&dir.join("memory.pressure"))?;
    m.memory = MessageField::some(mem);

    if let Some(text) = read_opt(&dir.join("memory.events"))? {
        let mut events = v2::MemoryEvents::new();
        let mut any = false;
        for (key, v) in flat_keyed(&text) {
            let field = match key {
                "low" => &mut events.low,
                "high" => &mut events.high,
                "max" => &mut events.max,
                "oom" => &mut events.oom,
                "oom_kill" => &mut events.oom_kill,
                "oom_group_kill" => &mut events.oom_group_kill,
                _ => continue,
            };
            *field = v;
            any = true;
        }
        if any {
            m.memory_events = MessageField::some(events);
        }
    }

    let mut io_stat = v2::IOStat::new();
    if let Some(text) = read_opt(&dir.join("io.stat"))? {
        io_stat.usage = text.lines().filter_map(io_entry).collect();
    }
    io_stat.psi = read_psi(&dir.join("io.pressure"))?;
    m.io = MessageField::some(io_stat);

    let rdma = |file: &str| -> Result<Vec<v2::RdmaEntry>> {
        Ok(rdma_entries(&dir.join(file))?
            .into_iter()
            .map(|(device, hca_handles, hca_objects)| v2::RdmaEntry {
                device,
                hca_handles,
                hca_objects,
                ..Default::default()
            })
            .collect())
    };
    m.rdma = MessageField::some(v2::RdmaStat {
        current: rdma("rdma.current")?,
        limit: rdma("rdma.max")?,
        ..Default::default()
    });

    for size in huge_page_sizes(host_root) {
        let failcnt = read_opt(&dir.join(format!("hugetlb.{size}.events")))?
            .and_then(|text| flat_keyed(&text).find(|(k, _)| *k == "max").map(|(_, v)| v))
            .unwrap_or(0);
        m.hugetlb.push(v2::HugeTlbStat {
            current: value(&format!("hugetlb.{size}.current"))?,
            max: value(&format!("hugetlb.{size}.max"))?,
            failcnt,
            pagesize: size,
            ..Default::default()
        });
    }
    Ok(m)
}

fn v2_memory_stat(text: &str, s: &mut v2::MemoryStat) {
    // Totals newer kernels split up: (seen the total, sum of the parts).
    let (mut refault, mut activate, mut slab) = ((false, 0u64), (false, 0u64), (false, 0u64));
    for (key, v) in flat_keyed(text) {
        match key {
            "workingset_refault_anon" | "workingset_refault_file" => {
                refault.1 = refault.1.saturating_add(v)
            }
            "workingset_activate_anon" | "workingset_activate_file" => {
                activate.1 = activate.1.saturating_add(v)
            }
            "workingset_refault" => refault.0 = true,
            "workingset_activate" => activate.0 = true,
            "slab" => slab.0 = true,
            _ => {}
        }
        if matches!(key, "slab_reclaimable" | "slab_unreclaimable") {
            slab.1 = slab.1.saturating_add(v);
        }
        let field = match key {
            "anon" => &mut s.anon,
            "file" => &mut s.file,
            "kernel_stack" => &mut s.kernel_stack,
            "slab" => &mut s.slab,
            "sock" => &mut s.sock,
            "shmem" => &mut s.shmem,
            "file_mapped" => &mut s.file_mapped,
            "file_dirty" => &mut s.file_dirty,
            "file_writeback" => &mut s.file_writeback,
            "anon_thp" => &mut s.anon_thp,
            "inactive_anon" => &mut s.inactive_anon,
            "active_anon" => &mut s.active_anon,
            "inactive_file" => &mut s.inactive_file,
            "active_file" => &mut s.active_file,
            "unevictable" => &mut s.unevictable,
            "slab_reclaimable" => &mut s.slab_reclaimable,
            "slab_unreclaimable" => &mut s.slab_unreclaimable,
            "pgfault" => &mut s.pgfault,
            "pgmajfault" => &mut s.pgmajfault,
            "workingset_refault" => &mut s.workingset_refault,
            "workingset_activate" => &mut s.workingset_activate,
            "workingset_nodereclaim" => &mut s.workingset_nodereclaim,
            "pgrefill" => &mut s.pgrefill,
            "pgscan" => &mut s.pgscan,
            "pgsteal" => &mut s.pgsteal,
            "pgactivate" => &mut s.pgactivate,
            "pgdeactivate" => &mut s.pgdeactivate,
            "pglazyfree" => &mut s.pglazyfree,
            "pglazyfreed" => &mut s.pglazyfreed,
            "thp_fault_alloc" => &mut s.thp_fault_alloc,
            "thp_collapse_alloc" => &mut s.thp_collapse_alloc,
            _ => continue,
        };
        *field = v;
    }
    if !refault.0 {
        s.workingset_refault = refault.1;
    }
    if !activate.0 {
        s.workingset_activate = activate.1;
    }
    if !slab.0 {
        s.slab = slab.1;
    }
}

/// An `io.stat` line: `<major>:<minor> rbytes=<n> wbytes=<n> rios=<n> wios=<n> ...`.
fn io_entry(line: &str) -> Option<v2::IOEntry> {
    let mut fields = line.split_ascii_whitespace();
    let (major, minor) = fields.next()?.split_once(':')?;
    let mut entry = v2::IOEntry {
        major: major.parse().ok()?,
        minor: minor.parse().ok()?,
        ..Default::default()
    };
    for kv in fields {
        let Some((key, value)) = kv.split_once('=') else {
            continue;
        };
        let Ok(value) = value.parse() else { continue };
        match key {
            "rbytes" => entry.rbytes = value,
            "wbytes" => entry.wbytes = value,
            "rios" => entry.rios = value,
            "wios" => entry.wios = value,
            _ => {}
        }
    }
    Some(entry)
}

/// A pressure file (`some avg10=.. avg60=.. avg300=.. total=..` and the same for `full`); none
/// when absent (PSI disabled).
fn read_psi(path: &Path) -> Result<MessageField<v2::PSIStats>> {
    let Some(text) = read_opt(path)? else {
        return Ok(MessageField::none());
    };
    let mut psi = v2::PSIStats::new();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let slot = match fields.next() {
            Some("some") => &mut psi.some,
            Some("full") => &mut psi.full,
            _ => continue,
        };
        let mut data = v2::PSIData::new();
        for kv in fields {
            let Some((key, value)) = kv.split_once('=') else {
                continue;
            };
            match key {
                "avg10" => data.avg10 = value.parse().unwrap_or(0.0),
                "avg60" => data.avg60 = value.parse().unwrap_or(0.0),
                "avg300" => data.avg300 = value.parse().unwrap_or(0.0),
                "total" => data.total = parse_num(value).unwrap_or(0),
                _ => {}
            }
        }
        *slot = MessageField::some(data);
    }
    Ok(MessageField::some(psi))
}

// ------------------------------------------------------------------------------------------------
// OOM watchers
// ------------------------------------------------------------------------------------------------

fn os_error(context: impl Into<String>) -> impl FnOnce(nix::Error) -> Error {
    let context = context.into();
    move |e| Error::Io {
        context,
        source: e.into(),
    }
}

/// Maps a failure to open a file of cgroup `dir`: the cgroup is gone (NotFound), or the file is
/// missing because the controller is not enabled (Unimplemented).
fn open_error(dir: &Path, file: &str, e: io::Error) -> Error {
    if !absent(&e) {
        return Error::Io {
            context: format!("open {}", dir.join(file).display()),
            source: e,
        };
    }
    if dir.is_dir() {
        Error::Unimplemented(format!(
            "{} has no {file}: memory controller not enabled or not supported",
            dir.display()
        ))
    } else {
        Error::NotFound(format!("cgroup {} no longer exists", dir.display()))
    }
}

/// v1: an eventfd registered for `memory.oom_control` notifications via `cgroup.event_control`.
/// The kernel also signals it once when the cgroup is removed, which is told apart by the
/// directory being gone.
fn watch_eventfd(dir: PathBuf) -> Result<mpsc::UnboundedReceiver<()>> {
    let control = fs::File::open(dir.join("memory.oom_control"))
        .map_err(|e| open_error(&dir, "memory.oom_control", e))?;
    let efd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
        .map_err(os_error("eventfd"))?;
    let registration = format!("{} {}", efd.as_raw_fd(), control.as_raw_fd());
    fs::write(dir.join("cgroup.event_control"), registration)
        .map_err(|e| open_error(&dir, "cgroup.event_control", e))?;
    // The kernel keeps its own reference to memory.oom_control.
    drop(control);
    let efd = crate::sys::async_fd(OwnedFd::from(efd)).map_err(Error::io("register eventfd"))?;

    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut counter = [0u8; 8];
        loop {
            let ready = tokio::select! {
                _ = tx.closed() => return,
                ready = efd.readable() => ready,
            };
            let mut guard = match ready {
                Ok(guard) => guard,
                Err(e) => {
                    tracing::warn!(cgroup = %dir.display(), error = %e, "OOM watcher stopped");
                    return;
                }
            };
            match guard.try_io(|fd| {
                nix::unistd::read(fd.as_raw_fd(), &mut counter).map_err(io::Error::from)
            }) {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(cgroup = %dir.display(), error = %e, "OOM watcher stopped");
                    return;
                }
                Err(_would_block) => continue,
            }
            if !dir.exists() {
                return;
            }
            if tx.send(()).is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// v2: inotify on `dir/file` (`memory.events`), one event per observed increase of its `key`
/// counter (`oom_kill`).
///
/// kernfs sends nothing to watches on the files of a removed cgroup, so removal is seen as an
/// `IN_DELETE` of `dir` on its parent; `IN_IGNORED` / `IN_DELETE_SELF` on the file itself (what
/// other filesystems send) and a failed read also end the watch.
fn watch_counter_file(
    dir: PathBuf,
    file: &'static str,
    key: &'static str,
) -> Result<mpsc::UnboundedReceiver<()>> {
    let path = dir.join(file);
    let before = read_counter(&path, key)
        .map_err(|e| open_error(&dir, file, e))?
        .unwrap_or(0);
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
        .map_err(os_error("inotify_init"))?;
    let file_watch = inotify
        .add_watch(
            &path,
            AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_DELETE_SELF,
        )
        .map_err(os_error(format!("inotify watch {}", path.display())))?;
    let name: Option<OsString> = dir.file_name().map(Into::into);
    // Without it OOM kills are still reported; only the end of the watch waits for the receiver
    // to be dropped.
    let parent_watch = match (dir.parent(), &name) {
        (Some(parent), Some(_)) => {
            match inotify.add_watch(parent, AddWatchFlags::IN_DELETE | AddWatchFlags::IN_ONLYDIR) {
                Ok(watch) => Some(watch),
                Err(e) => {
                    tracing::warn!(cgroup = %dir.display(), error = %e, "cannot watch for the cgroup's removal");
                    None
                }
            }
        }
        _ => None,
    };
    // Readiness comes through a second descriptor of the same inotify instance; reads go through
    // `inotify`, which parses the events.
    let ready_fd = inotify
        .as_fd()
        .try_clone_to_owned()
        .map_err(Error::io("dup inotify descriptor"))?;
    let ready_fd =
        crate::sys::async_fd(ready_fd).map_err(Error::io("register inotify descriptor"))?;

    let (tx, rx) = mpsc::unbounded_channel();
    // A kill between the first read and add_watch made no inotify event: look again now.
    let mut last = before;
    if let Ok(Some(now)) = read_counter(&path, key) {
        if now > before {
            last = now;
            let _ = tx.send(());
        }
    }
    tokio::spawn(async move {
        loop {
            let ready = tokio::select! {
                _ = tx.closed() => return,
                ready = ready_fd.readable() => ready,
            };
            let mut guard = match ready {
                Ok(guard) => guard,
                Err(e) => {
                    tracing::warn!(cgroup = %dir.display(), error = %e, "OOM watcher stopped");
                    return;
                }
            };
            let events = match guard.try_io(|_| inotify.read_events().map_err(io::Error::from)) {
                Ok(Ok(events)) => events,
                Ok(Err(e)) => {
                    tracing::warn!(cgroup = %dir.display(), error = %e, "OOM watcher stopped");
                    return;
                }
                Err(_would_block) => continue,
            };
            let (mut changed, mut gone) = (false, false);
            for event in &events {
                if event.wd == file_watch {
                    if event
                        .mask
                        .intersects(AddWatchFlags::IN_IGNORED | AddWatchFlags::IN_DELETE_SELF)
                    {
                        gone = true;
                    } else {
                        changed = true;
                    }
                } else if Some(event.wd) == parent_watch {
                    gone |= event.mask.contains(AddWatchFlags::IN_DELETE) && event.name == name;
                } else if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                    changed = true;
                }
            }
            if !(changed || gone) {
                continue;
            }
            // Read even when gone: a kill just before removal must not be lost.
            match read_counter(&path, key) {
                Ok(now) => {
                    let now = now.unwrap_or(0);
                    if now > last {
                        last = now;
                        if tx.send(()).is_err() {
                            return;
                        }
                    }
                }
                Err(_) => gone = true,
            }
            if gone {
                return;
            }
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Child, Command, Stdio};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    use tokio::time::timeout;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/cgroups");

    fn fixture(rel: &str) -> String {
        fs::read_to_string(format!("{FIXTURES}/{rel}"))
            .unwrap_or_else(|e| panic!("fixture {rel}: {e}"))
    }

    /// Copies every fixture file of `src` into `dst`.
    fn copy_fixtures(src: &str, dst: &Path) {
        fs::create_dir_all(dst).unwrap();
        for entry in fs::read_dir(format!("{FIXTURES}/{src}")).unwrap() {
            let entry = entry.unwrap();
            fs::copy(entry.path(), dst.join(entry.file_name())).unwrap();
        }
    }

    fn write(path: &Path, text: &str) {
        fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    // --------------------------------------------------------------------------------------------
    // Locating
    // --------------------------------------------------------------------------------------------

    #[test]
    fn locates_v1_controllers_on_a_hybrid_host() {
        // Captured on the dev VM: v1 controllers plus cgroup2 at /sys/fs/cgroup/unified.
        let cg = ContainerCgroup::from_parts(
            &fixture("hybrid/cgroup"),
            &fixture("hybrid/mountinfo"),
            Path::new("/"),
        )
        .unwrap();
        assert!(!cg.is_unified());
        let dir = |c| cg.dir(c).map(Path::to_path_buf);
        assert_eq!(
            dir("memory"),
            Some("/sys/fs/cgroup/memory/process_api/431ac47e17d2076334a7a1e740459517".into())
        );
        assert_eq!(dir("cpu"), Some("/sys/fs/cgroup/cpu".into()));
        assert_eq!(dir("cpuacct"), Some("/sys/fs/cgroup/cpuacct".into()));
        assert_eq!(dir("pids"), Some("/sys/fs/cgroup/pids".into()));
        assert_eq!(dir("blkio"), Some("/sys/fs/cgroup/blkio".into()));
        assert_eq!(dir("name=systemd"), Some("/sys/fs/cgroup/systemd".into()));
        // hugetlb is only on the cgroup2 side of this host.
        assert_eq!(dir("hugetlb"), None);
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

    /// The primer's write really happens on this host (tests run as root) and leaves the
    /// process exactly where it was.
    #[test]
    fn priming_moves_nothing() {
        let before = fs::read_to_string("/proc/self/cgroup").unwrap();
        move_self_to_own_cgroup().expect("write 0 into our own cgroup.procs");
        assert_eq!(fs::read_to_string("/proc/self/cgroup").unwrap(), before);
    }

    #[test]
    fn locates_a_unified_cgroup() {
        let cg = ContainerCgroup::from_parts(
            &fixture("unified/cgroup"),
            &fixture("unified/mountinfo"),
            Path::new("/host"),
        )
        .unwrap();
        assert!(cg.is_unified());
        let want = Path::new(
            "/host/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/\
             kubepods-burstable-pod5c2f4d1e_8a9b_4c3d_9e1f_2a3b4c5d6e7f.slice/\
             cri-containerd-3f1c9a7e2b4d6f8a0c1e3b5d7f9a1c3e5b7d9f1a3c5e7b9d1f3a5c7e9b1d3f5a.scope",
        );
        assert_eq!(cg.dir("memory"), Some(want));
        assert_eq!(cg.dir("cpu"), Some(want));
    }

    #[test]
    fn resolves_paths_relative_to_the_mount_root() {
        // Inside a container without a cgroup namespace: hierarchies are mounted from
        // /docker/<id>, /proc/<pid>/cgroup shows the host paths.
        let cg = ContainerCgroup::from_parts(
            &fixture("nested/cgroup"),
            &fixture("nested/mountinfo"),
            Path::new("/"),
        )
        .unwrap();
        assert!(!cg.is_unified(), "v1 controllers win over the 0:: line");
        let dir = |c| cg.dir(c).map(Path::to_path_buf);
        assert_eq!(dir("memory"), Some("/sys/fs/cgroup/memory/worker".into()));
        assert_eq!(dir("cpu"), Some("/sys/fs/cgroup/cpu,cpuacct/worker".into()));
        assert_eq!(
            dir("cpuacct"),
            Some("/sys/fs/cgroup/cpu,cpuacct/worker".into())
        );
        assert_eq!(
            dir("name=systemd"),
            Some("/sys/fs/cgroup/systemd/worker".into())
        );
        assert_eq!(dir("rdma"), Some("/sys/fs/cgroup/rdma".into()));
    }

    #[test]
    fn the_longest_matching_mount_root_wins() {
        let mountinfo = "40 31 0:32 / /cg/all rw - cgroup cgroup rw,memory\n\
                         41 31 0:32 /docker/x /cg/x rw - cgroup cgroup rw,memory\n";
        let at = |path: &str| {
            ContainerCgroup::from_parts(&format!("4:memory:{path}\n"), mountinfo, Path::new("/"))
                .map(|cg| cg.dir("memory").unwrap().to_path_buf())
        };
        assert_eq!(at("/docker/x/y").unwrap(), Path::new("/cg/x/y"));
        assert_eq!(at("/docker/x").unwrap(), Path::new("/cg/x"));
        // "/docker/x" is not a path prefix of "/docker/xy".
        assert_eq!(at("/docker/xy").unwrap(), Path::new("/cg/all/docker/xy"));
        // A path climbing out of every mount is not reachable.
        assert!(matches!(at("/.."), Err(Error::Unimplemented(_))));
    }

    #[test]
    fn unknown_layouts_are_unimplemented() {
        let v1_only = "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        let v2_only = "31 23 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let unimplemented = |cgroup: &str, mountinfo: &str| {
            matches!(
                ContainerCgroup::from_parts(cgroup, mountinfo, Path::new("/")),
                Err(Error::Unimplemented(_))
            )
        };
        assert!(unimplemented("", v2_only));
        assert!(unimplemented("garbage\n\n::\n", v2_only));
        assert!(
            unimplemented("0::/c\n", v1_only),
            "cgroup2 entry but no cgroup2 mount"
        );
        assert!(
            unimplemented("4:memory:/c\n", v2_only),
            "v1 controller but no v1 mount"
        );
        // A legacy name=systemd hierarchy on a cgroup2 host does not make it v1.
        let cg = ContainerCgroup::from_parts("1:name=systemd:/c\n0::/c\n", v2_only, Path::new("/"))
            .unwrap();
        assert_eq!(cg.dir("memory"), Some(Path::new("/sys/fs/cgroup/c")));
    }

    #[test]
    fn mountinfo_fields_are_unescaped() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/a\\134b\\011c"), "/a\\b\tc");
        assert_eq!(unescape("/odd\\9\\04"), "/odd\\9\\04");
        let mountinfo =
            "30 23 0:27 / /sys/fs/my\\040cgroup rw,relatime shared:4 - cgroup2 cgroup2 rw\n";
        let cg = ContainerCgroup::from_parts("0::/c\n", mountinfo, Path::new("/")).unwrap();
        assert_eq!(cg.dir("cpu"), Some(Path::new("/sys/fs/my cgroup/c")));
    }

    #[test]
    fn for_pid_of_a_missing_process_is_not_found() {
        assert!(matches!(
            ContainerCgroup::for_pid(i32::MAX),
            Err(Error::NotFound(_))
        ));
    }

    // --------------------------------------------------------------------------------------------
    // Parsing
    // --------------------------------------------------------------------------------------------

    #[test]
    fn numbers_parse_like_containerd() {
        assert_eq!(parse_num("42\n"), Some(42));
        assert_eq!(parse_num("18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_num("18446744073709551616"), None);
        assert_eq!(parse_num("-1"), Some(0));
        assert_eq!(parse_num("-99999999999999999999"), Some(0));
        assert_eq!(parse_num("-"), None);
        assert_eq!(parse_num("max"), None);
        assert_eq!(parse_num(""), None);
        let pairs: Vec<_> = flat_keyed("a 1\nb\nc x\nd 2 3\ne -5\n\n  f   6  \n").collect();
        assert_eq!(pairs, [("a", 1), ("e", 0), ("f", 6)]);
        assert_eq!(find_counter(b"low 0\noom_kill 7\n", "oom_kill"), Some(7));
        assert_eq!(find_counter(b"low 0\n", "oom_kill"), None);
        assert_eq!(find_counter(b"\xff\xfe", "oom_kill"), None);
    }

    #[test]
    fn huge_page_sizes_are_named_like_the_kernel() {
        assert_eq!(huge_page_name(64), "64KB");
        assert_eq!(huge_page_name(2048), "2MB");
        assert_eq!(huge_page_name(32768), "32MB");
        assert_eq!(huge_page_name(1 << 20), "1GB");
        assert_eq!(huge_page_name(16 << 20), "16GB");
        let root = tempfile::tempdir().unwrap();
        let pages = root.path().join("sys/kernel/mm/hugepages");
        for d in [
            "hugepages-1048576kB",
            "hugepages-2048kB",
            "hugepages-bogus",
            "hugepages-12MB",
            "other",
        ] {
            fs::create_dir_all(pages.join(d)).unwrap();
        }
        assert_eq!(huge_page_sizes(root.path()), ["2MB", "1GB"]);
        assert!(huge_page_sizes(Path::new("/nonexistent")).is_empty());
    }

    #[test]
    fn blkio_lines() {
        let devices = vec![(254, 0, "/dev/vda".to_string())];
        let e = blkio_entry("254:0 Read 4096", &devices).unwrap();
        assert_eq!(
            (e.major, e.minor, e.op.as_str(), e.value, e.device.as_str()),
            (254, 0, "Read", 4096, "/dev/vda")
        );
        let e = blkio_entry("8:16 777", &devices).unwrap();
        assert_eq!(
            (e.major, e.minor, e.op.as_str(), e.value, e.device.as_str()),
            (8, 16, "", 777, "")
        );
        for bad in [
            "Total 12582912",
            "",
            "254:0",
            "254 0 Read 1",
            "254:x Read 1",
            "254:0 Read x",
            "254:0 Read 1 2",
            "1 2 3",
        ] {
            assert!(blkio_entry(bad, &devices).is_none(), "{bad:?}");
        }
    }

    // --------------------------------------------------------------------------------------------
    // Metrics from fixture trees
    // --------------------------------------------------------------------------------------------

    /// A fake cgroup2 host in a temp dir: the `unified/` fixture's cgroup holding the `v2/`
    /// files, and two huge page sizes.
    fn v2_tree() -> (tempfile::TempDir, ContainerCgroup) {
        let root = tempfile::tempdir().unwrap();
        let cg = ContainerCgroup::from_parts(
            &fixture("unified/cgroup"),
            &fixture("unified/mountinfo"),
            root.path(),
        )
        .unwrap();
        copy_fixtures("v2", cg.dir("memory").unwrap());
        for size in ["hugepages-2048kB", "hugepages-1048576kB"] {
            fs::create_dir_all(root.path().join("sys/kernel/mm/hugepages").join(size)).unwrap();
        }
        (root, cg)
    }

    fn psi(some: (f64, f64, f64, u64), full: (f64, f64, f64, u64)) -> MessageField<v2::PSIStats> {
        let data = |(avg10, avg60, avg300, total)| {
            MessageField::some(v2::PSIData {
                avg10,
                avg60,
                avg300,
                total,
                ..Default::default()
            })
        };
        MessageField::some(v2::PSIStats {
            some: data(some),
            full: data(full),
            ..Default::default()
        })
    }

    #[test]
    fn v2_metrics_from_fixture_files() {
        let (_root, cg) = v2_tree();
        let Metrics::V2(m) = cg.metrics().unwrap() else {
            panic!("a unified cgroup gives v2 metrics")
        };
        assert_eq!(
            *m.pids,
            v2::PidsStat {
                current: 7,
                limit: 4096,
                ..Default::default()
            }
        );
        assert_eq!(
            *m.cpu,
            v2::CPUStat {
                usage_usec: 6132218,
                user_usec: 4485903,
                system_usec: 1646315,
                nr_periods: 2187,
                nr_throttled: 93,
                throttled_usec: 1702811,
                nr_bursts: 4,
                burst_usec: 12000,
                psi: psi((1.25, 0.80, 0.31, 5912233), (0.50, 0.22, 0.07, 2231004)),
                ..Default::default()
            }
        );
        assert_eq!(
            *m.memory,
            v2::MemoryStat {
                anon: 44040192,
                file: 122757120,
                kernel_stack: 327680,
                slab: 2755136,
                sock: 4096,
                shmem: 2195456,
                file_mapped: 33886208,
                file_dirty: 135168,
                file_writeback: 0,
                anon_thp: 8388608,
                inactive_anon: 46170112,
                active_anon: 61440,
                inactive_file: 74067968,
                active_file: 46493696,
                unevictable: 0,
                slab_reclaimable: 2244744,
                slab_unreclaimable: 510392,
                pgfault: 1214436,
                pgmajfault: 712,
                // 6.x prints only the _anon/_file parts: 12 + 3304 and 3 + 1021.
                workingset_refault: 3316,
                workingset_activate: 1024,
                workingset_nodereclaim: 64,
                pgrefill: 4217,
                pgscan: 18254,
                pgsteal: 17993,
                pgactivate: 29581,
                pgdeactivate: 3988,
                pglazyfree: 0,
                pglazyfreed: 0,
                thp_fault_alloc: 9,
                thp_collapse_alloc: 2,
                usage: 170328064,
                usage_limit: 268435456,
                swap_usage: 0,
                swap_limit: u64::MAX,
                max_usage: 201326592,
                swap_max_usage: 1048576,
                psi: psi((0.0, 0.04, 0.01, 40211), (0.0, 0.02, 0.0, 30877)),
                ..Default::default()
            }
        );
        assert_eq!(
            *m.memory_events,
            v2::MemoryEvents {
                low: 0,
                high: 0,
                max: 27,
                oom: 3,
                oom_kill: 2,
                oom_group_kill: 1,
                ..Default::default()
            }
        );
        let io = |major, minor, rbytes, wbytes, rios, wios| v2::IOEntry {
            major,
            minor,
            rbytes,
            wbytes,
            rios,
            wios,
            ..Default::default()
        };
        assert_eq!(
            m.io.usage,
            [
                io(259, 0, 90222592, 2183168, 1797, 213),
                io(253, 0, 4096, 0, 1, 0)
            ]
        );
        assert_eq!(
            m.io.psi,
            psi((0.12, 0.09, 0.03, 811922), (0.10, 0.08, 0.02, 790301))
        );
        let rdma = |hca_handles, hca_objects| v2::RdmaEntry {
            device: "mlx5_0".into(),
            hca_handles,
            hca_objects,
            ..Default::default()
        };
        assert_eq!(m.rdma.current, [rdma(2, 112)]);
        assert_eq!(m.rdma.limit, [rdma(u32::MAX, 4000)]);
        let huge = |pagesize: &str, current, max, failcnt| v2::HugeTlbStat {
            pagesize: pagesize.into(),
            current,
            max,
            failcnt,
            ..Default::default()
        };
        assert_eq!(
            m.hugetlb,
            [
                huge("2MB", 4194304, 16777216, 3),
                huge("1GB", 0, u64::MAX, 0)
            ]
        );
        assert_eq!(cg.oom_kill_count(), Some(2));

        // What the service sends: decodable as the v2 message under its full name.
        let metrics = Metrics::V2(m.clone());
        let any = metrics.to_any();
        assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");
        assert_eq!(v2::Metrics::parse_from_bytes(&any.value).unwrap(), m);
    }

    #[test]
    fn v2_metrics_of_a_cgroup_without_controllers() {
        // Captured from a cgroup2 child on the dev VM, where every controller is bound to v1.
        let root = tempfile::tempdir().unwrap();
        let cg = ContainerCgroup::from_parts(
            "0::/c\n",
            "31 23 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
            root.path(),
        )
        .unwrap();
        copy_fixtures("v2-real", cg.dir("cpu").unwrap());
        let Metrics::V2(m) = cg.metrics().unwrap() else {
            panic!("v2")
        };
        assert_eq!(
            (
                m.cpu.usage_usec,
                m.cpu.user_usec,
                m.cpu.system_usec,
                m.cpu.nr_periods
            ),
            (71842, 68061, 3781, 0)
        );
        assert_eq!(m.cpu.psi, psi((0.0, 0.0, 0.0, 3569), (0.0, 0.0, 0.0, 3569)));
        // Always present as in containerd, zero here.
        assert_eq!(*m.pids, v2::PidsStat::new());
        assert_eq!(*m.memory, v2::MemoryStat::new());
        assert_eq!(*m.io, v2::IOStat::new());
        assert!(m.memory_events.is_none());
        assert!(m.hugetlb.is_empty(), "no huge page sizes on this fake host");
        assert_eq!(cg.oom_kill_count(), None);
    }

    /// A fake v1 host in a temp dir with memory, cpu+cpuacct (co-mounted), pids, blkio and hugetlb
    /// hierarchies, the `v1/` fixture files in each and a 2 MB huge page size.
    fn v1_tree() -> (tempfile::TempDir, ContainerCgroup) {
        let root = tempfile::tempdir().unwrap();
        let mountinfo = "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                         32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n\
                         39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n\
                         38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio\n\
                         42 31 0:39 / /sys/fs/cgroup/hugetlb rw,relatime - cgroup cgroup rw,hugetlb\n\
                         41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        let proc_cgroup = "10:memory:/ctr\n9:cpu,cpuacct:/ctr\n8:pids:/ctr\n7:blkio:/ctr\n6:hugetlb:/ctr\n1:name=systemd:/ctr\n0::/ctr\n";
        let cg = ContainerCgroup::from_parts(proc_cgroup, mountinfo, root.path()).unwrap();
        for controller in ["memory", "cpu", "pids", "blkio", "hugetlb"] {
            copy_fixtures("v1", cg.dir(controller).unwrap());
        }
        let hugetlb = cg.dir("hugetlb").unwrap();
        write(&hugetlb.join("hugetlb.2MB.usage_in_bytes"), "2097152\n");
        write(&hugetlb.join("hugetlb.2MB.max_usage_in_bytes"), "4194304\n");
        write(&hugetlb.join("hugetlb.2MB.failcnt"), "1\n");
        fs::create_dir_all(root.path().join("sys/kernel/mm/hugepages/hugepages-2048kB")).unwrap();
        fs::create_dir_all(root.path().join("proc")).unwrap();
        fs::copy(
            format!("{FIXTURES}/partitions"),
            root.path().join("proc/partitions"),
        )
        .unwrap();
        (root, cg)
    }

    #[test]
    fn v1_metrics_from_fixture_files() {
        let (_root, cg) = v1_tree();
        let Metrics::V1(m) = cg.metrics().unwrap() else {
            panic!("a v1 cgroup gives v1 metrics")
        };
        // pids.max "max" reads as 0 on v1, as in containerd.
        assert_eq!(
            *m.pids,
            v1::PidsStat {
                current: 1,
                limit: 0,
                ..Default::default()
            }
        );
        let ns = |ticks: u64| ticks * 1_000_000_000 / clock_ticks();
        assert_eq!(
            *m.cpu.usage,
            v1::CPUUsage {
                total: 1064364954920,
                kernel: ns(41244),
                user: ns(65192),
                per_cpu: vec![486544593112, 577820421687],
                ..Default::default()
            }
        );
        assert_eq!(*m.cpu.throttling, v1::Throttle::new());
        let unlimited = 9223372036854771712;
        let entry = |usage, max, limit| {
            MessageField::some(v1::MemoryEntry {
                usage,
                max,
                limit,
                failcnt: 0,
                ..Default::default()
            })
        };
        assert_eq!(
            *m.memory,
            v1::MemoryStat {
                cache: 3100672,
                rss: 1974272,
                rss_huge: 0,
                mapped_file: 36864,
                dirty: 61440,
                writeback: 0,
                pg_pg_in: 46743,
                pg_pg_out: 45479,
                pg_fault: 103083,
                pg_maj_fault: 20,
                inactive_anon: 1941504,
                active_anon: 8192,
                inactive_file: 1757184,
                active_file: 1331200,
                unevictable: 0,
                hierarchical_memory_limit: unlimited,
                hierarchical_swap_limit: unlimited,
                total_cache: 3100672,
                total_rss: 1974272,
                total_rss_huge: 0,
                total_mapped_file: 36864,
                total_dirty: 61440,
                total_writeback: 0,
                total_pg_pg_in: 46743,
                total_pg_pg_out: 45479,
                total_pg_fault: 103083,
                total_pg_maj_fault: 20,
                total_inactive_anon: 1941504,
                total_active_anon: 8192,
                total_inactive_file: 1757184,
                total_active_file: 1331200,
                total_unevictable: 0,
                usage: entry(6414336, 13791232, unlimited),
                swap: entry(6762496, 13791232, unlimited),
                kernel: entry(1482752, 3547136, unlimited),
                kernel_tcp: entry(0, 0, unlimited),
                ..Default::default()
            }
        );
        assert_eq!(*m.memory_oom_control, v1::MemoryOomControl::new());
        // No CFQ files: the throttle counters, with device names from /proc/partitions.
        let blk = |op: &str, value| v1::BlkIOEntry {
            op: op.into(),
            device: "/dev/vda".into(),
            major: 254,
            minor: 0,
            value,
            ..Default::default()
        };
        assert_eq!(
            m.blkio.io_service_bytes_recursive,
            [
                blk("Read", 4194304),
                blk("Write", 8388608),
                blk("Sync", 12582912),
                blk("Async", 0),
                blk("Discard", 0),
                blk("Total", 12582912)
            ]
        );
        assert_eq!(
            m.blkio.io_serviced_recursive,
            [
                blk("Read", 32),
                blk("Write", 64),
                blk("Sync", 96),
                blk("Async", 0),
                blk("Discard", 0),
                blk("Total", 96)
            ]
        );
        assert!(m.blkio.io_queued_recursive.is_empty() && m.blkio.sectors_recursive.is_empty());
        assert_eq!(
            m.hugetlb,
            [v1::HugetlbStat {
                usage: 2097152,
                max: 4194304,
                failcnt: 1,
                pagesize: "2MB".into(),
                ..Default::default()
            }]
        );
        assert!(m.rdma.is_none());
        assert_eq!(cg.oom_kill_count(), Some(0));

        let any = Metrics::V1(m.clone()).to_any();
        assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
        assert_eq!(v1::Metrics::parse_from_bytes(&any.value).unwrap(), m);
    }

    #[test]
    fn blkio_prefers_cfq_files_and_falls_back_to_throttle() {
        let (_root, cg) = v1_tree();
        let blkio = cg.dir("blkio").unwrap();
        // CFQ present but idle for this cgroup: still the throttle counters.
        write(&blkio.join("blkio.io_serviced_recursive"), "Total 0\n");
        let Metrics::V1(m) = cg.metrics().unwrap() else {
            panic!("v1")
        };
        assert_eq!(m.blkio.io_serviced_recursive.len(), 6);
        // CFQ with entries: those, and no throttle counters.
        write(
            &blkio.join("blkio.io_serviced_recursive"),
            "254:0 Read 5\n254:0 Total 5\nTotal 5\n",
        );
        write(&blkio.join("blkio.time_recursive"), "254:0 1234\n");
        let Metrics::V1(m) = cg.metrics().unwrap() else {
            panic!("v1")
        };
        assert_eq!(
            m.blkio
                .io_serviced_recursive
                .iter()
                .map(|e| (e.op.as_str(), e.value))
                .collect::<Vec<_>>(),
            [("Read", 5), ("Total", 5)]
        );
        assert_eq!(
            m.blkio
                .io_time_recursive
                .iter()
                .map(|e| (e.op.as_str(), e.value))
                .collect::<Vec<_>>(),
            [("", 1234)]
        );
        assert!(m.blkio.io_service_bytes_recursive.is_empty());
    }

    #[test]
    fn v1_without_oom_kill_line_and_without_controllers() {
        let (root, cg) = v1_tree();
        let memory = cg.dir("memory").unwrap();
        // Kernels before 4.13 have no oom_kill line.
        write(
            &memory.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\n",
        );
        assert_eq!(cg.oom_kill_count(), None);
        // A process only in cpu,cpuacct (and a named hierarchy), with none of the cpu files: cpu
        // is still sent, zero, as containerd does; the rest is left out.
        let mountinfo =
            "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";
        let cg = ContainerCgroup::from_parts(
            "9:cpu,cpuacct:/ctr\n1:name=systemd:/\n",
            mountinfo,
            root.path(),
        )
        .unwrap();
        let cpu = cg.dir("cpu").unwrap();
        for f in [
            "cpuacct.usage",
            "cpuacct.usage_percpu",
            "cpuacct.stat",
            "cpu.stat",
        ] {
            fs::remove_file(cpu.join(f)).unwrap();
        }
        assert_eq!(cg.oom_kill_count(), None);
        assert!(
            matches!(cg.watch_oom(), Err(Error::FailedPrecondition(_))),
            "no runtime here"
        );
        let Metrics::V1(m) = cg.metrics().unwrap() else {
            panic!("v1")
        };
        assert_eq!(m.cpu.usage.as_ref(), Some(&v1::CPUUsage::new()));
        assert_eq!(m.cpu.throttling.as_ref(), Some(&v1::Throttle::new()));
        assert!(
            m.memory.is_none()
                && m.pids.is_none()
                && m.blkio.is_none()
                && m.memory_oom_control.is_none()
        );
        assert!(m.hugetlb.is_empty());
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
    fn odd_file_contents_are_skipped_not_fatal() {
        let junk = "\u{0}\u{7f}garbage\nmax max\n1 2 3\n-\n=\nsome avg10=x total=\n254:0 rbytes=x wbytes\n:::\n \n";
        let (_root, cg) = v2_tree();
        let (_root1, cg1) = v1_tree();
        for dir in [
            cg.dir("memory").unwrap(),
            cg1.dir("memory").unwrap(),
            cg1.dir("cpu").unwrap(),
            cg1.dir("blkio").unwrap(),
        ] {
            for entry in fs::read_dir(dir).unwrap() {
                write(&entry.unwrap().path(), junk);
            }
        }
        // Not even UTF-8.
        fs::write(
            cg.dir("memory").unwrap().join("memory.stat"),
            b"anon \xff\xfe\nfile 4096\n",
        )
        .unwrap();
        let Metrics::V2(m) = cg.metrics().unwrap() else {
            panic!("v2")
        };
        assert_eq!(
            (
                m.memory.anon,
                m.memory.file,
                m.pids.current,
                m.cpu.usage_usec
            ),
            (0, 4096, 0, 0)
        );
        // Only the line with a device number counts, with nothing readable in it.
        assert_eq!(
            m.io.usage,
            [v2::IOEntry {
                major: 254,
                minor: 0,
                ..Default::default()
            }]
        );
        assert_eq!(m.cpu.psi.some.total, 0);
        assert_eq!(cg.oom_kill_count(), None);
        let Metrics::V1(m) = cg1.metrics().unwrap() else {
            panic!("v1")
        };
        assert_eq!(m.memory.cache, 0);
        assert!(m.blkio.io_serviced_recursive.is_empty());
    }

    // --------------------------------------------------------------------------------------------
    // The v2 watcher on plain files
    // --------------------------------------------------------------------------------------------

    fn events(max: u64, oom_kill: u64) -> String {
        format!("low 0\nhigh 0\nmax {max}\noom {oom_kill}\noom_kill {oom_kill}\noom_group_kill 0\n")
    }

    /// A cgroup2 "host" in a temp dir with one cgroup `/ctr` holding only `memory.events`.
    fn events_tree() -> (tempfile::TempDir, ContainerCgroup) {
        let root = tempfile::tempdir().unwrap();
        let cg = ContainerCgroup::from_parts(
            "0::/ctr\n",
            "31 23 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
            root.path(),
        )
        .unwrap();
        fs::create_dir_all(cg.dir("memory").unwrap()).unwrap();
        write(
            &cg.dir("memory").unwrap().join("memory.events"),
            &events(0, 0),
        );
        (root, cg)
    }

    async fn next_event(
        rx: &mut mpsc::UnboundedReceiver<()>,
        within: Duration,
    ) -> Option<Option<()>> {
        timeout(within, rx.recv()).await.ok()
    }

    #[tokio::test]
    async fn v2_watcher_reports_oom_kill_increases_until_the_cgroup_goes() {
        let (_root, cg) = events_tree();
        let file = cg.dir("memory").unwrap().join("memory.events");
        let mut rx = cg.watch_oom().unwrap();
        // Rewritten in place like the kernel does (a rename would leave the watch on the old inode).
        write(&file, &events(4, 0));
        assert_eq!(
            next_event(&mut rx, Duration::from_millis(300)).await,
            None,
            "other counters are not OOM kills"
        );
        write(&file, &events(4, 1));
        assert_eq!(
            next_event(&mut rx, Duration::from_secs(5)).await,
            Some(Some(()))
        );
        write(&file, &events(9, 3));
        assert_eq!(
            next_event(&mut rx, Duration::from_secs(5)).await,
            Some(Some(()))
        );
        assert_eq!(
            next_event(&mut rx, Duration::from_millis(300)).await,
            None,
            "one event per observed increase"
        );
        assert_eq!(cg.oom_kill_count(), Some(3));
        fs::remove_dir_all(cg.dir("memory").unwrap()).unwrap();
        assert_eq!(
            next_event(&mut rx, Duration::from_secs(5)).await,
            Some(None),
            "the watch ends with the cgroup"
        );
    }

    #[tokio::test]
    async fn v2_watcher_counts_from_the_value_at_start() {
        let (_root, cg) = events_tree();
        let file = cg.dir("memory").unwrap().join("memory.events");
        write(&file, &events(0, 5));
        let mut rx = cg.watch_oom().unwrap();
        write(&file, &events(1, 5));
        assert_eq!(next_event(&mut rx, Duration::from_millis(300)).await, None);
        write(&file, &events(1, 6));
        assert_eq!(
            next_event(&mut rx, Duration::from_secs(5)).await,
            Some(Some(()))
        );
        // Deleting just the file (IN_DELETE_SELF / IN_IGNORED) ends it too.
        fs::remove_file(&file).unwrap();
        assert_eq!(
            next_event(&mut rx, Duration::from_secs(5)).await,
            Some(None)
        );
    }

    #[tokio::test]
    async fn watch_oom_needs_a_memory_controller_and_a_live_cgroup() {
        let (_root, cg) = events_tree();
        let dir = cg.dir("memory").unwrap();
        fs::remove_file(dir.join("memory.events")).unwrap();
        assert!(matches!(cg.watch_oom(), Err(Error::Unimplemented(_))));
        fs::remove_dir(dir).unwrap();
        assert!(matches!(cg.watch_oom(), Err(Error::NotFound(_))));
    }

    #[test]
    fn watch_oom_outside_a_runtime_is_an_error() {
        let (_root, cg) = events_tree();
        assert!(matches!(cg.watch_oom(), Err(Error::FailedPrecondition(_))));
    }

    // --------------------------------------------------------------------------------------------
    // The host's real cgroups (root)
    // --------------------------------------------------------------------------------------------

    /// Fails, never skips, without root.
    fn require_root() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test creates cgroups and needs root: run `sudo -E cargo test --lib cgroups`"
        );
    }

    static SEQ: AtomicUsize = AtomicUsize::new(0);

    fn scratch_name() -> String {
        format!(
            "tether-test-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Retries `rmdir` while the kernel still counts exiting tasks in the cgroup (EBUSY).
    fn remove_cgroup_dir(dir: &Path) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while dir.exists() {
            match fs::remove_dir(dir) {
                Ok(()) => return,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("rmdir {}: {e}", dir.display()),
            }
        }
    }

    /// A throw-away cgroup on the host's real hierarchy, whichever layout the host has: on v1 a
    /// child of this test's own cgroup in the memory, pids, cpuacct and cpu hierarchies; on a
    /// unified host a child of the root (the only cgroup that may both hold processes and hand
    /// controllers down). Its processes are killed and its directories removed on drop.
    struct Scratch {
        dirs: Vec<(&'static str, PathBuf)>,
        unified: bool,
    }

    impl Scratch {
        fn new() -> Scratch {
            require_root();
            let name = scratch_name();
            let me = ContainerCgroup::for_pid(std::process::id() as i32)
                .expect("locate the test's own cgroup");
            let mut dirs = Vec::new();
            if me.is_unified() {
                let root = Path::new("/sys/fs/cgroup");
                // Usually enabled already; a controller that cannot be enabled fails the asserts below.
                let _ = fs::write(root.join("cgroup.subtree_control"), "+memory +pids +cpu");
                dirs.push(("memory", root.join(&name)));
            } else {
                for controller in ["memory", "pids", "cpuacct", "cpu"] {
                    let parent = me
                        .dir(controller)
                        .unwrap_or_else(|| panic!("this host has no v1 {controller} hierarchy"));
                    dirs.push((controller, parent.join(&name)));
                }
            }
            let scratch = Scratch {
                dirs,
                unified: me.is_unified(),
            };
            for (_, dir) in &scratch.dirs {
                if !dir.exists() {
                    fs::create_dir(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
                }
            }
            scratch
        }

        fn dir(&self, controller: &str) -> &Path {
            self.dirs
                .iter()
                .find(|(c, _)| self.unified || *c == controller)
                .map(|(_, d)| d.as_path())
                .unwrap()
        }

        fn set_limits(&self, memory: u64, pids: u64) {
            let mem = self.dir("memory");
            if self.unified {
                write(&mem.join("memory.max"), &memory.to_string());
                if mem.join("memory.swap.max").exists() {
                    write(&mem.join("memory.swap.max"), "0");
                }
            } else {
                write(&mem.join("memory.limit_in_bytes"), &memory.to_string());
                if mem.join("memory.memsw.limit_in_bytes").exists() {
                    write(
                        &mem.join("memory.memsw.limit_in_bytes"),
                        &memory.to_string(),
                    );
                }
            }
            write(&self.dir("pids").join("pids.max"), &pids.to_string());
        }

        fn add(&self, pid: u32) {
            for (_, dir) in &self.dirs {
                write(&dir.join("cgroup.procs"), &pid.to_string());
            }
        }

        fn remove(&mut self) {
            for (_, dir) in &self.dirs {
                for pid in fs::read_to_string(dir.join("cgroup.procs"))
                    .unwrap_or_default()
                    .split_whitespace()
                {
                    if let Ok(pid) = pid.parse() {
                        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                }
            }
            for (_, dir) in std::mem::take(&mut self.dirs) {
                remove_cgroup_dir(&dir);
            }
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            if !std::thread::panicking() {
                self.remove();
                return;
            }
            // Already failing: clean up what can be, without a second panic.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.remove()));
        }
    }

    /// `sh -c "read go; <script>"`: waits for [`Gated::release`] so it can be put in a cgroup
    /// before it does anything. Killed and reaped on drop.
    struct Gated {
        child: Child,
        lines: std::sync::mpsc::Receiver<String>,
    }

    impl Gated {
        fn spawn(script: &str) -> Gated {
            let mut child = Command::new("sh")
                .arg("-c")
                .arg(format!("read go; {script}"))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn sh");
            let stdout = child.stdout.take().unwrap();
            let (tx, lines) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                    let _ = tx.send(line);
                }
            });
            Gated { child, lines }
        }

        fn pid(&self) -> u32 {
            self.child.id()
        }

        fn release(&mut self) {
            self.child
                .stdin
                .as_mut()
                .unwrap()
                .write_all(b"go\n")
                .unwrap();
        }

        fn line(&self, within: Duration) -> String {
            self.lines
                .recv_timeout(within)
                .expect("no output from the child in time")
        }

        fn wait(&mut self, within: Duration) -> std::process::ExitStatus {
            let deadline = Instant::now() + within;
            loop {
                if let Some(status) = self.child.try_wait().unwrap() {
                    return status;
                }
                assert!(
                    Instant::now() < deadline,
                    "child {} still running after {within:?}",
                    self.pid()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    impl Drop for Gated {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    const BUSY_THEN_SLEEP: &str =
        "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; echo ready; exec sleep 60";

    #[test]
    fn real_cgroup_metrics() {
        let mut scratch = Scratch::new();
        scratch.set_limits(64 << 20, 64);
        let mut child = Gated::spawn(BUSY_THEN_SLEEP);
        scratch.add(child.pid());
        child.release();
        assert_eq!(child.line(Duration::from_secs(60)), "ready");

        let cg = ContainerCgroup::for_pid(child.pid() as i32).unwrap();
        assert_eq!(cg.is_unified(), scratch.unified);
        assert_eq!(cg.dir("memory"), Some(scratch.dir("memory")));
        assert_eq!(cg.dir("pids"), Some(scratch.dir("pids")));
        match cg.metrics().unwrap() {
            Metrics::V1(m) => {
                assert_eq!((m.pids.current, m.pids.limit), (1, 64));
                assert!(
                    m.memory.usage.usage > 0,
                    "memory usage: {:?}",
                    m.memory.usage
                );
                assert_eq!(m.memory.usage.limit, 64 << 20);
                // Read from memory.stat. (Its event counters, e.g. pgfault, are flushed lazily by
                // 6.x kernels and may still read 0 here.)
                assert_eq!(m.memory.hierarchical_memory_limit, 64 << 20);
                if scratch
                    .dir("memory")
                    .join("memory.memsw.limit_in_bytes")
                    .exists()
                {
                    assert_eq!(m.memory.swap.limit, 64 << 20);
                }
                let usage = &m.cpu.usage;
                assert!(usage.total > 0, "cpu usage: {usage:?}");
                assert!(
                    !usage.per_cpu.is_empty() && usage.per_cpu.iter().sum::<u64>() >= usage.total
                );
                assert!(usage.user + usage.kernel > 0, "cpu usage: {usage:?}");
                assert_eq!(m.memory_oom_control.oom_kill, 0);
            }
            Metrics::V2(m) => {
                assert_eq!((m.pids.current, m.pids.limit), (1, 64));
                assert!(m.memory.usage > 0);
                assert_eq!(m.memory.usage_limit, 64 << 20);
                assert!(m.cpu.usage_usec > 0);
                assert_eq!(m.memory_events.oom_kill, 0);
            }
        }
        assert_eq!(cg.oom_kill_count(), Some(0));

        drop(child);
        scratch.remove();
        assert!(matches!(cg.metrics(), Err(Error::NotFound(_))));
        assert_eq!(cg.oom_kill_count(), None);
    }

    #[tokio::test]
    async fn real_oom_kill_is_reported_and_the_watch_ends_with_the_cgroup() {
        let mut scratch = Scratch::new();
        scratch.set_limits(8 << 20, 64);
        // tail looks for the last lines of an endless file without newlines: it grows until killed.
        let mut child = Gated::spawn("exec tail /dev/zero");
        scratch.add(child.pid());
        let cg = ContainerCgroup::for_pid(child.pid() as i32).unwrap();
        assert_eq!(cg.oom_kill_count(), Some(0));
        let mut rx = cg.watch_oom().unwrap();

        child.release();
        let first = timeout(Duration::from_secs(30), rx.recv()).await;
        assert_eq!(first, Ok(Some(())), "an OOM notification within 30 s");
        let status = child.wait(Duration::from_secs(30));
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "the OOM killer's SIGKILL: {status:?}"
        );
        assert!(
            cg.oom_kill_count() >= Some(1),
            "oom_kill count: {:?}",
            cg.oom_kill_count()
        );
        match cg.metrics().unwrap() {
            // (memory.failcnt stays 0 on 6.x kernels; the peak shows the limit was hit.)
            Metrics::V1(m) => {
                assert!(
                    m.memory_oom_control.oom_kill >= 1,
                    "{:?}",
                    m.memory_oom_control
                );
                assert_eq!(m.memory.usage.max, 8 << 20, "{:?}", m.memory.usage);
            }
            Metrics::V2(m) => assert!(m.memory_events.oom_kill >= 1),
        }

        scratch.remove();
        // v1 may notify more than once for one OOM; after those the removal closes the channel.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, rx.recv()).await {
                Ok(None) => break,
                Ok(Some(())) => continue,
                Err(_) => panic!("the OOM watch did not end within 10 s of the cgroup's removal"),
            }
        }
    }

    /// cgroup2 mounted on a temp dir for one test (the same hierarchy as the host's, whichever
    /// layout it has), lazily unmounted on drop.
    struct Cgroup2Mount(tempfile::TempDir);

    impl Drop for Cgroup2Mount {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(self.0.path(), nix::mount::MntFlags::MNT_DETACH);
        }
    }

    #[tokio::test]
    async fn real_cgroup2_files_and_removal() {
        require_root();
        let mnt = Cgroup2Mount(tempfile::tempdir().unwrap());
        nix::mount::mount(
            Some("cgroup2"),
            mnt.0.path(),
            Some("cgroup2"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .expect("mount cgroup2");
        // hugetlb is not bound to v1 on this host: enabled for the children of the cgroup2 root,
        // its v2 files are real (and disabled again at the end if it was off).
        let root_control = mnt.0.path().join("cgroup.subtree_control");
        let hugetlb_free = fs::read_to_string(mnt.0.path().join("cgroup.controllers"))
            .unwrap()
            .split_whitespace()
            .any(|c| c == "hugetlb");
        let hugetlb_on = |ctl: &Path| {
            fs::read_to_string(ctl)
                .unwrap()
                .split_whitespace()
                .any(|c| c == "hugetlb")
        };
        let enabled_hugetlb = hugetlb_free && !hugetlb_on(&root_control);
        if enabled_hugetlb {
            write(&root_control, "+hugetlb");
        }
        let name = scratch_name();
        let created = mnt.0.path().join(&name);
        fs::create_dir(&created).unwrap();
        // The v2 OOM watcher's mechanism on real kernfs: a counter of a flat-keyed file going up
        // (`populated` of cgroup.events, 0 -> 1 as the child joins) must be heard.
        let mut watch = watch_counter_file(created.clone(), "cgroup.events", "populated").unwrap();
        let mut child = Gated::spawn(BUSY_THEN_SLEEP);
        write(&created.join("cgroup.procs"), &child.pid().to_string());
        assert_eq!(
            timeout(Duration::from_secs(10), watch.recv()).await,
            Ok(Some(())),
            "kernfs change of cgroup.events not heard"
        );
        child.release();
        assert_eq!(child.line(Duration::from_secs(60)), "ready");

        // The child's own cgroup2 entry, as a cgroup2-only host would list it.
        let entry: String = fs::read_to_string(format!("/proc/{}/cgroup", child.pid()))
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("0::"))
            .collect();
        assert_eq!(entry, format!("0::/{name}"));
        let cg = ContainerCgroup::from_parts(
            &entry,
            &fs::read_to_string("/proc/self/mountinfo").unwrap(),
            Path::new("/"),
        )
        .unwrap();
        assert!(cg.is_unified());
        // Through whichever cgroup2 mount comes first (on a hybrid host /sys/fs/cgroup/unified).
        let dir = cg.dir("cpu").unwrap().to_path_buf();
        assert_eq!(dir.file_name(), Some(name.as_ref()));
        assert_eq!(
            fs::read_to_string(dir.join("cgroup.procs")).unwrap().trim(),
            child.pid().to_string()
        );

        let Metrics::V2(m) = cg.metrics().unwrap() else {
            panic!("v2")
        };
        assert!(
            m.cpu.usage_usec > 0 && m.cpu.user_usec + m.cpu.system_usec > 0,
            "cpu: {:?}",
            m.cpu
        );
        if dir.join("cpu.pressure").exists() {
            assert!(m.cpu.psi.some.is_some(), "cpu psi: {:?}", m.cpu.psi);
        }
        if hugetlb_free {
            // One entry per host page size, read from the live files: nothing used, no limit.
            // (6.18 writes an unlimited max as a number, 9223372036854771712 for 2MB, not "max".)
            let sizes = huge_page_sizes(Path::new("/"));
            assert!(
                !sizes.is_empty() && dir.join(format!("hugetlb.{}.current", sizes[0])).exists(),
                "sizes {sizes:?}"
            );
            assert_eq!(
                m.hugetlb
                    .iter()
                    .map(|h| h.pagesize.clone())
                    .collect::<Vec<_>>(),
                sizes
            );
            for h in &m.hugetlb {
                let max =
                    fs::read_to_string(dir.join(format!("hugetlb.{}.max", h.pagesize))).unwrap();
                let max = if max.trim() == "max" {
                    u64::MAX
                } else {
                    max.trim().parse().unwrap()
                };
                assert_eq!((h.current, h.max, h.failcnt), (0, max, 0), "hugetlb: {h:?}");
                assert!(
                    h.max > 1 << 62,
                    "an unlimited {} max: {}",
                    h.pagesize,
                    h.max
                );
            }
        }
        if !dir.join("memory.events").exists() {
            // Memory is bound to v1 here: nothing to watch, nothing to count.
            assert!(matches!(cg.watch_oom(), Err(Error::Unimplemented(_))));
            assert_eq!(cg.oom_kill_count(), None);
        }

        // Removal on real kernfs, where watches on a removed cgroup's files hear nothing: the
        // watch machinery (on cgroup.events, which every cgroup2 has) must still end.
        drop(child);
        remove_cgroup_dir(&dir);
        assert_eq!(
            timeout(Duration::from_secs(10), watch.recv()).await,
            Ok(None),
            "the watch ends when the cgroup is removed"
        );
        assert!(matches!(cg.metrics(), Err(Error::NotFound(_))));
        if enabled_hugetlb {
            write(&root_control, "-hugetlb");
        }
    }
}
