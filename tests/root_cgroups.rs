//! The cgroup code against the host's real cgroups: metrics of a live process, a real OOM kill,
//! the v2 watcher on a real cgroup2 mount, the attach-lock primer's write. Root only: these
//! fail, never skip, without it.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tether::cgroups::oom::watch_counter_file;
use tether::cgroups::{ContainerCgroup, Metrics};
use tether::error::Error;
use tokio::time::timeout;

fn write(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// The host's huge page sizes as hugetlb files name them (`2MB`, `1GB`), smallest first.
fn huge_page_sizes() -> Vec<String> {
    let Ok(entries) = fs::read_dir("/sys/kernel/mm/hugepages") else {
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
    kib.into_iter()
        .map(|k| match k {
            k if k >= 1 << 20 => format!("{}GB", k >> 20),
            k if k >= 1 << 10 => format!("{}MB", k >> 10),
            k => format!("{k}KB"),
        })
        .collect()
}

/// The primer's write really happens on this host and leaves the process exactly where it was.
#[test]
fn priming_moves_nothing() {
    require_root();
    let before = fs::read_to_string("/proc/self/cgroup").unwrap();
    tether::primer::move_self_to_own_cgroup().expect("write 0 into our own cgroup.procs");
    assert_eq!(fs::read_to_string("/proc/self/cgroup").unwrap(), before);
}

/// Fails, never skips, without root.
fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test creates cgroups and needs root: run `sudo -E cargo test --test root_cgroups`"
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
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
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
            assert!(!usage.per_cpu.is_empty() && usage.per_cpu.iter().sum::<u64>() >= usage.total);
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
    assert!(
        matches!(first, Ok(Some(_))),
        "an OOM notification within 30 s"
    );
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
            Ok(Some(_)) => continue,
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
    assert!(
        matches!(
            timeout(Duration::from_secs(10), watch.recv()).await,
            Ok(Some(_))
        ),
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
        let sizes = huge_page_sizes();
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
            let max = fs::read_to_string(dir.join(format!("hugetlb.{}.max", h.pagesize))).unwrap();
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

// ------------------------------------------------------------------------------------------------
// The v2 counter watcher on real kernfs (no memory controller is needed: `cgroup.events` has
// counters too, `populated` and `frozen`, that the test can move at will)
// ------------------------------------------------------------------------------------------------

/// A new, empty cgroup on the host's cgroup2 hierarchy (mounted on a temp dir for the test).
/// On drop it is thawed and removed, and the mount lazily unmounted.
struct Cgroup2Dir {
    dir: PathBuf,
    _mnt: Cgroup2Mount,
}

impl Cgroup2Dir {
    fn new() -> Cgroup2Dir {
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
        let dir = mnt.0.path().join(scratch_name());
        fs::create_dir(&dir).unwrap();
        Cgroup2Dir { dir, _mnt: mnt }
    }

    fn freeze(&self, on: bool) {
        write(&self.dir.join("cgroup.freeze"), if on { "1" } else { "0" });
    }

    fn events(&self) -> String {
        fs::read_to_string(self.dir.join("cgroup.events")).unwrap_or_default()
    }
}

impl Drop for Cgroup2Dir {
    fn drop(&mut self) {
        let _ = fs::write(self.dir.join("cgroup.freeze"), "0");
        let _ = fs::remove_dir(&self.dir);
    }
}

/// Inotify instances this process holds (`anon_inode:inotify` descriptors).
fn inotify_instances() -> usize {
    fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.as_os_str() == "anon_inode:inotify")
        .count()
}

async fn quiet(watch: &mut tokio::sync::mpsc::UnboundedReceiver<Option<u64>>, why: &str) {
    if let Ok(got) = timeout(Duration::from_millis(300), watch.recv()).await {
        panic!("{why}: got {got:?}");
    }
}

/// The watcher hears its key go up through kernfs's poll notification, and only that: other
/// counters of the file and decreases are not events. It holds no inotify instance, and it
/// ends promptly once its cgroup, emptied, is removed.
#[tokio::test]
async fn v2_watcher_hears_increases_of_its_key_only_and_ends_with_the_cgroup() {
    let cg = Cgroup2Dir::new();
    let inotify_before = inotify_instances();
    let mut watch = watch_counter_file(cg.dir.clone(), "cgroup.events", "frozen").unwrap();
    assert_eq!(
        inotify_instances(),
        inotify_before,
        "the watch needs no inotify instance"
    );

    let mut child = Gated::spawn("exec sleep 60");
    write(&cg.dir.join("cgroup.procs"), &child.pid().to_string());
    assert!(cg.events().contains("populated 1"), "{}", cg.events());
    quiet(&mut watch, "populated is another counter").await;

    cg.freeze(true);
    assert!(
        matches!(
            timeout(Duration::from_secs(5), watch.recv()).await,
            Ok(Some(_))
        ),
        "frozen 0 -> 1 not heard; cgroup.events: {}",
        cg.events()
    );
    cg.freeze(false);
    quiet(&mut watch, "a decrease is not an event").await;
    cg.freeze(true);
    quiet(
        &mut watch,
        "back to the highest value seen is not an increase",
    )
    .await;
    cg.freeze(false);

    child.release();
    drop(child);
    remove_cgroup_dir(&cg.dir);
    let removed = Instant::now();
    assert_eq!(
        timeout(Duration::from_secs(10), watch.recv()).await,
        Ok(None),
        "the watch ends when the cgroup is removed"
    );
    assert!(
        removed.elapsed() < Duration::from_secs(2),
        "the watch ended {:?} after the removal",
        removed.elapsed()
    );
}

/// Counting starts from the value when the watch begins.
#[tokio::test]
async fn v2_watcher_counts_from_the_value_at_start() {
    let cg = Cgroup2Dir::new();
    cg.freeze(true);
    assert!(
        wait_for(|| cg.events().contains("frozen 1")),
        "{}",
        cg.events()
    );
    let mut watch = watch_counter_file(cg.dir.clone(), "cgroup.events", "frozen").unwrap();
    quiet(&mut watch, "the value at start is no event").await;
    cg.freeze(false);
    cg.freeze(true);
    quiet(&mut watch, "1 again is no increase over the start").await;
    cg.freeze(false);
    remove_cgroup_dir(&cg.dir);
    assert_eq!(
        timeout(Duration::from_secs(10), watch.recv()).await,
        Ok(None),
        "a cgroup that was never populated: the watch still ends on removal"
    );
}

fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

// ------------------------------------------------------------------------------------------------
// Killing a whole cgroup without the runtime (a wedged `runc kill`)
// ------------------------------------------------------------------------------------------------

/// The cgroup of a process in a v1 [`Scratch`], from only the scratch's hierarchies (the others
/// still hold this test process, which the kill refuses to touch).
fn scratch_cgroup(pid: u32) -> ContainerCgroup {
    let all = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let ours: String = all
        .lines()
        .filter(|l| {
            l.split(':').nth(1).is_some_and(|cs| {
                cs.split(',')
                    .any(|c| ["memory", "pids", "cpu", "cpuacct"].contains(&c))
            })
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    ContainerCgroup::from_parts(&ours, &mountinfo, Path::new("/")).unwrap()
}

/// v1 (this host's layout): SIGKILL through pidfds to every process `cgroup.procs` lists,
/// children forked inside included, until the cgroup is empty.
#[test]
fn killing_a_v1_cgroup_reaches_every_process_in_it() {
    let scratch = Scratch::new();
    assert!(!scratch.unified, "this test is for a v1 host");
    let mut child = Gated::spawn("sleep 1000 & sleep 1000 & echo ready; wait");
    scratch.add(child.pid());
    child.release();
    assert_eq!(child.line(Duration::from_secs(10)), "ready");
    let cg = scratch_cgroup(child.pid());
    assert_eq!(cg.procs().unwrap().len(), 3, "sh and two sleeps");
    let me = ContainerCgroup::for_pid(std::process::id() as i32).unwrap();
    assert!(
        matches!(
            me.kill_all(Duration::from_millis(100)),
            Err(Error::FailedPrecondition(_))
        ),
        "a cgroup holding the caller is refused"
    );
    let t0 = Instant::now();
    let killed = cg.kill_all(Duration::from_secs(5)).expect("kill_all");
    assert!(
        matches!(killed, tether::cgroups::Killed::Pidfds(n) if n >= 3),
        "{killed:?}"
    );
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(child.wait(Duration::from_secs(5)).signal(), Some(9));
    assert!(cg.procs().unwrap().is_empty(), "{:?}", cg.procs());
    eprintln!("v1 cgroup killed through pidfds in {:?}", t0.elapsed());
}

/// v2: one write to `cgroup.kill` kills every process, a frozen cgroup's too; then the empty
/// directory is removed as the runtime's delete would.
#[test]
fn killing_a_v2_cgroup_uses_cgroup_kill_even_when_frozen() {
    let cg2 = Cgroup2Dir::new();
    let mut child = Gated::spawn("sleep 1000 & sleep 1000 & echo ready; wait");
    write(&cg2.dir.join("cgroup.procs"), &child.pid().to_string());
    child.release();
    assert_eq!(child.line(Duration::from_secs(10)), "ready");
    cg2.freeze(true);
    assert!(wait_for(|| cg2.events().contains("frozen 1")));
    let mnt = cg2.dir.parent().unwrap();
    let name = cg2.dir.file_name().unwrap().to_string_lossy().into_owned();
    let mountinfo = format!("99 1 0:99 / {} rw - cgroup2 cgroup2 rw\n", mnt.display());
    let cg =
        ContainerCgroup::from_parts(&format!("0::/{name}\n"), &mountinfo, Path::new("/")).unwrap();
    assert!(cg.is_unified());
    assert_eq!(cg.procs().unwrap().len(), 3);
    let t0 = Instant::now();
    assert_eq!(
        cg.kill_all(Duration::from_secs(5)).expect("kill_all"),
        tether::cgroups::Killed::CgroupKill
    );
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(child.wait(Duration::from_secs(5)).signal(), Some(9));
    eprintln!("v2 cgroup killed through cgroup.kill in {:?}", t0.elapsed());
    cg2.freeze(false);
    assert!(cg.remove_dirs().is_empty(), "the emptied cgroup is removed");
    assert!(!cg2.dir.exists());
}
