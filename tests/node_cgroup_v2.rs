//! cgroup v2 live: Stats, OOM, Update and Pause/Resume against the unified hierarchy as runc
//! and containerd see it on a pure cgroup v2 node.
//!
//! VM lane only (`scripts/vm-test.sh` runs this binary with `--ignored` inside a guest whose
//! `/sys/fs/cgroup` is cgroup2 with every controller): the CI host binds its controllers to
//! v1, where `tests/resources.rs` proves the same behaviours. Each test first checks that it
//! really is on a unified host, so a run on the wrong node fails instead of proving nothing.
//!
//! With ctr's default spec a container's cgroup is `/<namespace>/<id>`, i.e.
//! `/sys/fs/cgroup/<namespace>/<id>` here.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use containerd_shim_protos::api;
use containerd_shim_protos::cgroups_v2::metrics::Metrics as CgroupV2Metrics;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::empty::Empty;
use containerd_shim_protos::protobuf::{Message, MessageField};
use ttrpc::Code;

use common::*;

const QUICK: Duration = Duration::from_secs(60);
const RPC_TIMEOUT: Duration = Duration::from_secs(60);
const LINUX_RESOURCES_URL: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";
const CGROUP_V2_METRICS_URL: &str = "io.containerd.cgroups.v2.Metrics";

/// Fails unless `/sys/fs/cgroup` is a cgroup2 mount (a pure v2 node).
fn require_unified() {
    require_root();
    let mounts = fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    let fstype = mounts
        .lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            (pre.split_whitespace().nth(4)? == "/sys/fs/cgroup")
                .then(|| post.split_whitespace().next().map(str::to_string))?
        })
        .unwrap_or_default();
    assert_eq!(
        fstype, "cgroup2",
        "this test proves cgroup v2 behaviour and needs a pure v2 node (run it through \
         scripts/vm-test.sh); /sys/fs/cgroup is {fstype:?} here"
    );
}

/// The container's unified cgroup directory, from its init's `/proc/<pid>/cgroup` (`0::/path`),
/// checked to be the `/<namespace>/<id>` ctr asked for.
fn cgroup_dir(cd: &Containerd, id: &str, pid: i32) -> PathBuf {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/cgroup: {e}"));
    let rel = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or_else(|| panic!("no unified line in /proc/{pid}/cgroup:\n{text}"));
    assert_eq!(
        rel,
        format!("/{}/{id}", cd.namespace()),
        "init {pid} of {id} is not in the cgroup ctr asked for"
    );
    let dir = Path::new("/sys/fs/cgroup").join(&rel[1..]);
    assert!(dir.is_dir(), "{} is not a directory", dir.display());
    dir
}

fn read_trim(path: &Path) -> String {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_string()
}

/// A value of a flat-keyed cgroup file (`memory.stat`, `memory.events`, `cgroup.events`).
fn keyed(path: &Path, key: &str) -> u64 {
    let text = read_trim(path);
    text.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == key).then(|| v.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no {key} in {}:\n{text}", path.display()))
}

fn run_detached(cd: &Containerd, args: RunArgs, id: &str) -> i32 {
    cd.ctr_ok(&args.detach().build());
    cd.wait_task_status(id, "RUNNING", QUICK)
}

fn stats(shim: &ShimConn) -> CgroupV2Metrics {
    let req = api::StatsRequest {
        id: shim.id.clone(),
        ..Default::default()
    };
    let resp: api::StatsResponse = shim
        .call("Stats", &req, RPC_TIMEOUT)
        .unwrap_or_else(|e| panic!("Stats: {e:?}"));
    let any = resp.stats.as_ref().expect("Stats carries metrics");
    assert_eq!(
        any.type_url, CGROUP_V2_METRICS_URL,
        "Stats type on a v2 node"
    );
    CgroupV2Metrics::parse_from_bytes(&any.value).expect("decodes as cgroups v2 Metrics")
}

fn update(shim: &ShimConn, resources_json: &[u8]) -> ttrpc::Result<Empty> {
    let req = api::UpdateTaskRequest {
        id: shim.id.clone(),
        resources: MessageField::some(Any {
            type_url: LINUX_RESOURCES_URL.into(),
            value: resources_json.to_vec(),
            ..Default::default()
        }),
        ..Default::default()
    };
    shim.call("Update", &req, RPC_TIMEOUT)
}

fn wait_event(events: &EventStream, id: &str, topic: &str, timeout: Duration) -> String {
    let mut found = None;
    wait_until(timeout, || {
        found = events.find(id, topic);
        found.is_some()
    });
    found.unwrap_or_else(|| {
        panic!(
            "no {topic} event for {id} within {timeout:?}; topics seen: {:?}",
            events.task_topics(id)
        )
    })
}

/// Stats answers with v2 Metrics read from the live cgroup: cpu usage, memory usage and the
/// limit the container was started with, anon (a 4 MB shell variable) and file (an 8 MiB file
/// written to the tmpfs rootfs) memory, the pids in `cgroup.procs`, and io entries equal to
/// the kernel's `io.stat` lines.
#[test]
#[ignore = "VM lane: scripts/vm-test.sh"]
fn stats_are_v2_metrics_of_the_live_cgroup() {
    require_unified();
    let cd = Containerd::start();
    let id = unique_id("v2stats");
    let script = "dd if=/dev/zero of=/tmp/v2stats-fill bs=1M count=8 2>/dev/null; \
                  x=$(head -c 4000000 /dev/zero | tr '\\0' a); \
                  sleep 1000 & sleep 1000 & wait";
    let args = cd
        .run_args(&id, &["sh", "-c", script])
        .flag("--memory-limit")
        .flag("134217728");
    let pid = run_detached(&cd, args, &id);
    let dir = cgroup_dir(&cd, &id, pid);
    assert!(
        wait_until(QUICK, || read_trim(&dir.join("pids.current")) == "3"),
        "want the shell and two sleeps in {}: pids.current {}",
        dir.display(),
        read_trim(&dir.join("pids.current"))
    );
    assert_eq!(read_trim(&dir.join("memory.max")), "134217728");

    let shim = ShimConn::connect(&cd, &id);
    // Pids reads the same cgroup: the shell and its two sleeps.
    let req = api::PidsRequest {
        id: id.clone(),
        ..Default::default()
    };
    let listed: api::PidsResponse = shim
        .call("Pids", &req, RPC_TIMEOUT)
        .unwrap_or_else(|e| panic!("Pids: {e:?}"));
    let mut pids: Vec<u32> = listed.processes.iter().map(|p| p.pid).collect();
    pids.sort_unstable();
    let mut procs: Vec<u32> = read_trim(&dir.join("cgroup.procs"))
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect();
    procs.sort_unstable();
    assert_eq!(pids, procs, "Pids against cgroup.procs");
    assert!(pids.contains(&(pid as u32)), "the init {pid} in {pids:?}");
    let m = stats(&shim);
    eprintln!("v2 metrics: {m:?}");
    assert_eq!(m.pids.current, 3, "pids: {:?}", m.pids);
    assert!(m.cpu.usage_usec > 0, "cpu: {:?}", m.cpu);
    assert!(
        m.cpu.user_usec + m.cpu.system_usec > 0,
        "cpu split: {:?}",
        m.cpu
    );
    let mem = &m.memory;
    assert_eq!(mem.usage_limit, 134217728, "memory limit: {mem:?}");
    assert!(mem.usage > 8 << 20, "memory usage counts the file: {mem:?}");
    assert!(
        mem.anon >= 4_000_000,
        "anon holds the shell variable: {mem:?}"
    );
    assert!(mem.file >= 8 << 20, "file holds the tmpfs file: {mem:?}");
    // Within the same order as the kernel's own file (the container keeps running).
    let current: u64 = read_trim(&dir.join("memory.current")).parse().unwrap();
    assert!(
        mem.usage.abs_diff(current) < 4 << 20,
        "usage {} vs memory.current {current}",
        mem.usage
    );
    let anon = keyed(&dir.join("memory.stat"), "anon");
    assert!(
        mem.anon.abs_diff(anon) < 4 << 20,
        "anon {} vs memory.stat {anon}",
        mem.anon
    );
    let io_lines = read_trim(&dir.join("io.stat"));
    let devices: Vec<(u64, u64)> = io_lines
        .lines()
        .filter_map(|l| {
            let (maj, min) = l.split_whitespace().next()?.split_once(':')?;
            Some((maj.parse().ok()?, min.parse().ok()?))
        })
        .collect();
    let got: Vec<(u64, u64)> = m.io.usage.iter().map(|e| (e.major, e.minor)).collect();
    assert_eq!(
        got, devices,
        "io entries vs io.stat:\n{io_lines}\n{:?}",
        m.io
    );
    cd.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", &id]);
    cd.wait_task_status(&id, "STOPPED", QUICK);
}

/// A container outgrowing its 16 MiB `memory.max` is OOM-killed: `ctr run` exits 137 and
/// exactly one /tasks/oom (from `memory.events`' `oom_kill`) precedes its /tasks/exit.
#[test]
#[ignore = "VM lane: scripts/vm-test.sh"]
fn oom_kill_is_reported_from_memory_events_before_the_exit() {
    require_unified();
    let cd = Containerd::start();
    let events = EventStream::start(&cd);
    let id = unique_id("v2oom");
    let args = cd
        .run_args(&id, &["tail", "/dev/zero"])
        .flag("--memory-limit")
        .flag("16777216")
        .build();
    let out = cd.ctr_timeout(&args, Duration::from_secs(120));
    assert_eq!(out.status.code(), Some(137), "{}", describe(&out));
    let exit = wait_event(&events, &id, "/tasks/exit", QUICK);
    wait_event(&events, &id, "/tasks/oom", Duration::from_secs(10));
    let topics = events.task_topics(&id);
    let at = |t: &str| topics.iter().position(|x| x == t).unwrap();
    assert!(
        at("/tasks/oom") < at("/tasks/exit"),
        "/tasks/oom must precede /tasks/exit: {topics:?}"
    );
    assert_eq!(
        topics.iter().filter(|t| *t == "/tasks/oom").count(),
        1,
        "one OOM kill, one /tasks/oom: {topics:?}"
    );
    assert!(exit.contains("\"exit_status\":137"), "exit event: {exit}");
}

/// Update writes `memory.max`, `pids.max` and `cpu.max` (read back from the files, and from
/// Stats); a malformed request is InvalidArgument and changes nothing.
#[test]
#[ignore = "VM lane: scripts/vm-test.sh"]
fn update_writes_memory_max_pids_max_and_cpu_max() {
    require_unified();
    let cd = Containerd::start();
    let id = unique_id("v2update");
    let pid = run_detached(&cd, cd.run_args(&id, &["sleep", "1000"]), &id);
    let dir = cgroup_dir(&cd, &id, pid);
    assert_eq!(read_trim(&dir.join("memory.max")), "max");
    assert_eq!(read_trim(&dir.join("pids.max")), "max");
    assert_eq!(read_trim(&dir.join("cpu.max")), "max 100000");

    let shim = ShimConn::connect(&cd, &id);
    update(
        &shim,
        br#"{"memory":{"limit":67108864},"pids":{"limit":42},"cpu":{"quota":50000,"period":200000}}"#,
    )
    .unwrap_or_else(|e| panic!("Update: {e:?}"));
    assert_eq!(read_trim(&dir.join("memory.max")), "67108864");
    assert_eq!(read_trim(&dir.join("pids.max")), "42");
    assert_eq!(read_trim(&dir.join("cpu.max")), "50000 200000");
    assert_eq!(cd.task(&id), Some((pid, "RUNNING".to_string())));
    let m = stats(&shim);
    assert_eq!(m.memory.usage_limit, 67108864, "{:?}", m.memory);
    assert_eq!(m.pids.limit, 42, "{:?}", m.pids);

    let (code, msg) = match update(&shim, br#"{"memory":{"limit":"lots"},"pids":{"limit":7}}"#) {
        Err(ttrpc::Error::RpcStatus(s)) => (s.code(), s.message().to_string()),
        other => panic!("Update with a string limit: want an error status, got {other:?}"),
    };
    assert_eq!(code, Code::INVALID_ARGUMENT, "{msg}");
    assert_eq!(read_trim(&dir.join("pids.max")), "42", "refused: unchanged");
    assert_eq!(read_trim(&dir.join("memory.max")), "67108864");
    cd.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", &id]);
    cd.wait_task_status(&id, "STOPPED", QUICK);
}

/// Pause freezes the cgroup (`cgroup.freeze` 1, `cgroup.events` frozen 1) and the counter
/// stops; Resume thaws it and the counter goes on.
#[test]
#[ignore = "VM lane: scripts/vm-test.sh"]
fn pause_and_resume_use_cgroup_freeze() {
    require_unified();
    let cd = Containerd::start();
    let id = unique_id("v2pause");
    let file = cd.rootfs().join("tmp").join(format!("count-{id}"));
    let script =
        format!("i=0; while true; do i=$((i+1)); echo $i > /tmp/count-{id}; sleep 0.1; done");
    let pid = run_detached(&cd, cd.run_args(&id, &["sh", "-c", &script]), &id);
    let dir = cgroup_dir(&cd, &id, pid);
    let value = || -> u64 {
        fs::read_to_string(&file)
            .unwrap_or_default()
            .trim()
            .parse()
            .unwrap_or(0)
    };
    assert!(wait_until(QUICK, || value() > 2), "counter never counted");
    assert_eq!(read_trim(&dir.join("cgroup.freeze")), "0");

    cd.ctr_ok(&["tasks", "pause", &id]);
    cd.wait_task_status(&id, "PAUSED", QUICK);
    assert_eq!(read_trim(&dir.join("cgroup.freeze")), "1");
    assert!(
        wait_until(QUICK, || keyed(&dir.join("cgroup.events"), "frozen") == 1),
        "cgroup.events never said frozen"
    );
    let frozen = value();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(value(), frozen, "the counter moved while paused");

    cd.ctr_ok(&["tasks", "resume", &id]);
    cd.wait_task_status(&id, "RUNNING", QUICK);
    assert_eq!(read_trim(&dir.join("cgroup.freeze")), "0");
    assert_eq!(keyed(&dir.join("cgroup.events"), "frozen"), 0);
    assert!(
        wait_until(QUICK, || value() > frozen + 2),
        "the counter did not go on after resume (stuck at {frozen})"
    );
    cd.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", &id]);
    cd.wait_task_status(&id, "STOPPED", QUICK);
}
