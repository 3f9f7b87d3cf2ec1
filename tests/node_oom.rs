//! Live OOM notification at density on a cgroup v2 node (VM lane: `scripts/vm-test.sh` runs it
//! with `--ignored`; the cgroup v1 dev host cannot).
//!
//! With `fs.inotify.max_user_instances` lowered to 16 (restored afterwards), more containers
//! than that run through a private containerd with tether, each with a memory limit, so a
//! shim that needed an inotify instance per container could not watch the later ones. In the
//! last one started a child is OOM-killed while the init (a shell) survives: `/tasks/oom` must
//! arrive within a few seconds while the task is still running.
//!
//! Fails (never skips) without root or on a node that is not cgroup v2 with the memory
//! controller.

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::*;

const INOTIFY_LIMIT: &str = "/proc/sys/fs/inotify/max_user_instances";
/// The lowered limit, and how many containers run beyond it.
const LOWERED: usize = 16;
const CONTAINERS: usize = LOWERED + 6;
/// Memory limit of each container: 16 MiB.
const MEMORY_LIMIT: &str = "16777216";

/// Sets `fs.inotify.max_user_instances` and puts the old value back on drop, even when the test
/// fails.
struct InotifyLimit {
    old: String,
}

impl InotifyLimit {
    fn lower_to(n: usize) -> InotifyLimit {
        let old = fs::read_to_string(INOTIFY_LIMIT).expect("read max_user_instances");
        fs::write(INOTIFY_LIMIT, n.to_string()).expect("lower max_user_instances");
        InotifyLimit {
            old: old.trim().to_string(),
        }
    }
}

impl Drop for InotifyLimit {
    fn drop(&mut self) {
        if let Err(e) = fs::write(INOTIFY_LIMIT, &self.old) {
            eprintln!("could not restore {INOTIFY_LIMIT} to {}: {e}", self.old);
        }
    }
}

/// Fails loudly unless `/sys/fs/cgroup` is a cgroup2 mount offering the memory controller.
fn require_cgroup_v2_memory() {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let unified = mountinfo.lines().any(|l| {
        let fields: Vec<&str> = l.split(' ').collect();
        let sep = fields.iter().position(|f| *f == "-");
        fields.get(4) == Some(&"/sys/fs/cgroup")
            && sep.and_then(|s| fields.get(s + 1)) == Some(&"cgroup2")
    });
    assert!(
        unified,
        "this VM-lane test needs a cgroup v2 node (/sys/fs/cgroup mounted as cgroup2); \
         this host is not one"
    );
    let controllers = fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").unwrap_or_default();
    assert!(
        controllers.split_whitespace().any(|c| c == "memory"),
        "the cgroup2 root offers no memory controller: {controllers:?}"
    );
}

fn wait_event(events: &EventStream, id: &str, topic: &str, timeout: Duration) -> Option<String> {
    let mut found = None;
    wait_until(timeout, || {
        found = events.find(id, topic);
        found.is_some()
    });
    found
}

#[test]
#[ignore = "VM lane: scripts/vm-test.sh"]
fn oom_kill_of_a_child_is_reported_promptly_beyond_the_inotify_limit() {
    require_root();
    require_cgroup_v2_memory();
    let cd = Containerd::start();
    let events = EventStream::start(&cd);
    // Lowered once containerd and `ctr events` run, so only what starts from now on meets it.
    let _limit = InotifyLimit::lower_to(LOWERED);

    let mut ids = Vec::new();
    for n in 0..CONTAINERS - 1 {
        let id = unique_id(&format!("density{n}"));
        let args = cd
            .run_args(&id, &["sleep", "1000"])
            .flag("--memory-limit")
            .flag(MEMORY_LIMIT)
            .detach();
        cd.ctr_ok(&args.build());
        cd.wait_task_status(&id, "RUNNING", Duration::from_secs(30));
        ids.push(id);
    }

    // The last one: a child grows until the OOM killer takes it (the biggest process of the
    // cgroup); the shell records the child's status and goes on.
    let id = unique_id("densityoom");
    let marker = cd.rootfs().join("tmp").join(format!("survived-{id}"));
    let script = format!("sleep 1000 & (tail /dev/zero); echo $? > /tmp/survived-{id}; wait");
    let args = cd
        .run_args(&id, &["sh", "-c", &script])
        .flag("--memory-limit")
        .flag(MEMORY_LIMIT)
        .detach();
    let started = Instant::now();
    cd.ctr_ok(&args.build());
    let pid = cd.wait_task_status(&id, "RUNNING", Duration::from_secs(30));

    let mut status = String::new();
    assert!(
        wait_until(Duration::from_secs(30), || {
            status = fs::read_to_string(&marker)
                .unwrap_or_default()
                .trim()
                .to_string();
            !status.is_empty()
        }),
        "the child was not OOM-killed within 30 s of the start"
    );
    let killed = Instant::now();
    assert_eq!(
        status, "137",
        "the child's status as the shell saw it (SIGKILL)"
    );
    let oom = wait_event(&events, &id, "/tasks/oom", Duration::from_secs(5));
    let heard = killed.elapsed();
    assert!(
        oom.is_some(),
        "no /tasks/oom within 5 s of the kill ({CONTAINERS} containers, inotify limit \
         {LOWERED}); topics for it: {:?}",
        events.task_topics(&id)
    );
    assert_eq!(
        cd.task(&id),
        Some((pid, "RUNNING".to_string())),
        "the init survives its child's OOM kill"
    );
    let topics = events.task_topics(&id);
    assert!(
        !topics.iter().any(|t| t == "/tasks/exit"),
        "no exit yet: {topics:?}"
    );
    eprintln!(
        "/tasks/oom heard {heard:?} after the shell saw the kill ({:?} after the start)",
        started.elapsed()
    );

    // Every shim set its watch up: none warned that it could not.
    let log = fs::read_to_string(cd.log_path()).unwrap_or_default();
    for bad in ["cannot watch for OOM kills", "OOM watcher stopped"] {
        assert!(
            !log.contains(bad),
            "a shim logged {bad:?}:\n{}",
            tail(cd.log_path(), 40)
        );
    }
    // The others are all still running.
    for other in &ids {
        assert_eq!(
            cd.task(other).map(|(_, s)| s),
            Some("RUNNING".to_string()),
            "{other}"
        );
    }
}
