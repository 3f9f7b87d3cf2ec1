//! What `tests/systemd_node.rs` and `tests/systemd_node_oom.rs` share: the systemd checks and
//! a CRI pod on runc's systemd cgroup driver through tether (see those files).

#![allow(dead_code)]

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::*;
use crate::cri_client::{
    handlers_config, host_network_namespaces, import_pod_images, limited_container, poll,
    runc_wrapper, start_containerd, Cri, PodGuard, SANDBOX_IMAGE, WORKLOAD_IMAGE,
};
use containerd_shim_protos::api;
use containerd_shim_protos::cgroups_v2::metrics::Metrics as CgroupV2Metrics;
use containerd_shim_protos::protobuf::Message;
use k8s_cri::v1::{
    ContainerConfig, ContainerState, ContainerStatus, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, PodSandboxConfig, PodSandboxMetadata,
};

const RPC_TIMEOUT: Duration = Duration::from_secs(60);
const OOM_LIMIT: i64 = 16 * 1024 * 1024;
/// OOM-killed containers per run of the OOM test.
const OOM_ROUNDS: usize = 5;

/// Fails unless systemd is the running init (as runc and sd_booted(3) decide it, and PID 1).
fn require_systemd() {
    require_root();
    assert!(
        Path::new("/run/systemd/system").is_dir(),
        "this test proves the systemd cgroup driver and needs systemd as init (run it through \
         TETHER_VM_SYSTEMD=1 scripts/vm-test.sh); there is no /run/systemd/system here"
    );
    let comm = fs::read_to_string("/proc/1/comm").unwrap_or_default();
    assert_eq!(comm.trim(), "systemd", "PID 1 is not systemd");
}

/// `systemctl show <unit> -p <prop> --value`.
fn unit_property(unit: &str, prop: &str) -> String {
    let out = Command::new("systemctl")
        .args(["show", unit, "-p", prop, "--value"])
        .output()
        .expect("run systemctl");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The unified cgroup path of `pid` (`0::/path`).
fn cgroup_of(pid: i32) -> String {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/cgroup: {e}"));
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or_else(|| panic!("no unified line in /proc/{pid}/cgroup:\n{text}"))
        .to_string()
}

/// Stops a systemd unit when dropped (the pod slice, which runc creates and never removes).
struct UnitGuard(String);

impl Drop for UnitGuard {
    fn drop(&mut self) {
        let _ = Command::new("systemctl").args(["stop", &self.0]).output();
    }
}

// ---------------------------------------------------------------------------------------------
// CRI
// ---------------------------------------------------------------------------------------------

/// The CRI config: tether as handler `tether`, its runc options from `{dir}/tether.toml`.
fn cri_config() -> String {
    handlers_config(SANDBOX_IMAGE)
}

fn container_config(name: &str, argv: &[&str], memory_limit: i64) -> ContainerConfig {
    limited_container(name, WORKLOAD_IMAGE, argv, memory_limit)
}

fn brief(s: &ContainerStatus) -> String {
    format!(
        "state {} exit_code={} reason={:?} message={:?}",
        s.state, s.exit_code, s.reason, s.message
    )
}

/// A pod as a kubelet on the systemd cgroup driver sends it (`cgroup_parent`
/// `kubepods-besteffort-pod<uid>.slice`, the uid's `-` as `_`), through tether with
/// `SystemdCgroup = true`: its container runs in `cri-containerd-<id>.scope` under the pod's
/// slice, systemd reports that scope active, ContainerStats has its memory, and a container
/// over its memory limit ends OOMKilled after tether published `/tasks/oom`.
pub fn cri_pod(with_oom: bool) {
    require_systemd();
    let scale = time_scale();
    let cd = start_containerd(cri_config());
    let dir = cd.dir().to_path_buf();
    // runc through a wrapper that logs its arguments: proves `--systemd-cgroup` was passed.
    let (wrapper, wrapper_log) = runc_wrapper(&dir);
    fs::write(
        dir.join("tether.toml"),
        format!(
            "SystemdCgroup = true\nBinaryName = \"{}\"\n",
            wrapper.display()
        ),
    )
    .unwrap();
    let cri = Cri::connect(cd.address(), RPC_TIMEOUT);
    cri.wait_runtime_ready(Duration::from_secs(20) * scale);
    import_pod_images(
        &cd,
        &cri,
        &dir,
        SANDBOX_IMAGE,
        WORKLOAD_IMAGE,
        Duration::from_secs(10) * scale,
    );
    let events = EventStream::start(&cd);

    // The pod, as the kubelet's systemd driver names its cgroup.
    // A kubelet's pod uid is a UUID; this one is unique per run (pid and clock).
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let uid = format!(
        "5e7a1b2c-0d3f-4a6b-8c9d-{:012x}",
        (u64::from(std::process::id()) << 20) | u64::from(nanos >> 12)
    );
    let pod_slice = format!("kubepods-besteffort-pod{}.slice", uid.replace('-', "_"));
    let _slice_guard = UnitGuard(pod_slice.clone());
    let pod = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "tether-systemd".into(),
            uid: uid.clone(),
            namespace: "default".into(),
            attempt: 0,
        }),
        log_directory: dir.join("pod-logs").to_string_lossy().into_owned(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: pod_slice.clone(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(host_network_namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut guard = PodGuard {
        cri: &cri,
        id: None,
    };
    let sandbox = cri.run_pod(&pod, "tether", &mut guard);
    cd.track_id(&sandbox);

    let create = |name: &str, argv: &[&str], memory_limit: i64| -> String {
        let id = cri.create(&sandbox, &pod, container_config(name, argv, memory_limit));
        cd.track_id(&id);
        cri.start(&id)
            .unwrap_or_else(|s| panic!("StartContainer {name}: {:?}: {}", s.code(), s.message()));
        id
    };
    let sleeper = create("sleeper", &["/bin/sleep", "1000"], 0);
    let running = cri.container_status(&sleeper);
    assert_eq!(
        running.state,
        ContainerState::ContainerRunning as i32,
        "sleeper: {}",
        brief(&running)
    );

    // runc was told to use its systemd driver, for the sandbox and the container.
    let calls = fs::read_to_string(&wrapper_log).unwrap_or_default();
    for id in [&sandbox, &sleeper] {
        assert!(
            calls.lines().any(|l| l.contains("--systemd-cgroup")
                && l.contains(" create ")
                && l.contains(id.as_str())),
            "no `runc --systemd-cgroup ... create ... {id}`; runc saw:\n{calls}"
        );
    }

    // The container's scope under the pod's slice, as runc's systemd driver expands it.
    let pid: i32 = fs::read_to_string(cd.bundle(&sleeper).join("init.pid"))
        .expect("sleeper's init.pid")
        .trim()
        .parse()
        .expect("a pid");
    let scope = format!("cri-containerd-{sleeper}.scope");
    let wanted = format!("/kubepods.slice/kubepods-besteffort.slice/{pod_slice}/{scope}");
    assert_eq!(cgroup_of(pid), wanted, "sleeper (pid {pid})'s cgroup");
    assert_eq!(unit_property(&scope, "ActiveState"), "active", "{scope}");
    assert_eq!(unit_property(&scope, "Slice"), pod_slice, "{scope}'s slice");
    assert_eq!(
        unit_property(&pod_slice, "ActiveState"),
        "active",
        "{pod_slice}"
    );
    eprintln!("sleeper (pid {pid}) runs in {wanted}, systemd: {scope} active");

    // ContainerStats comes from tether's Stats of that scope's cgroup.
    let stats = cri.container_stats(&sleeper);
    let memory = stats.memory.as_ref().expect("memory stats");
    let usage = memory.usage_bytes.as_ref().map_or(0, |v| v.value);
    let working_set = memory.working_set_bytes.as_ref().map_or(0, |v| v.value);
    assert!(usage > 0, "no memory usage in ContainerStats: {stats:?}");
    let cgroup_usage: u64 = fs::read_to_string(format!("/sys/fs/cgroup{wanted}/memory.current"))
        .expect("the scope's memory.current")
        .trim()
        .parse()
        .unwrap();
    eprintln!(
        "sleeper stats: usage {usage} B, working set {working_set} B; memory.current {cgroup_usage} B"
    );

    // Several in turn: whether the kill is seen before systemd removes the emptied scope is a
    // race, and one run proves little about a race.
    for round in 0..if with_oom { OOM_ROUNDS } else { 0 } {
        // Over its memory limit (runc's systemd driver sets it as the scope's MemoryMax).
        let oom = create(
            &format!("oom-{round}"),
            &["/bin/sh", "-c", "tail /dev/zero"],
            OOM_LIMIT,
        );
        let killed = poll(Duration::from_secs(20) * scale, "oom OOMKilled", || {
            let s = cri.container_status(&oom);
            if s.state == ContainerState::ContainerExited as i32 && s.reason == "OOMKilled" {
                Ok(s)
            } else {
                Err(brief(&s))
            }
        });
        assert_eq!(killed.exit_code, 137, "oom: {}", brief(&killed));
        assert!(
            events.find(&oom, "/tasks/oom").is_some(),
            "tether published no /tasks/oom for {oom}; topics: {:?}",
            events.task_topics(&oom)
        );
        let calls = fs::read_to_string(&wrapper_log).unwrap_or_default();
        assert!(
            calls.lines().any(|l| l.contains("--systemd-cgroup")
                && l.contains(" create ")
                && l.contains(oom.as_str())),
            "oom was not created through runc's systemd driver; runc saw:\n{calls}"
        );
    }
    if with_oom {
        // How many kills the scope took with it, reported from the pod's slice instead
        // (src/supervisor/oom.rs): printed, as the race decides it (`--nocapture` shows it).
        let log = fs::read_to_string(cd.log_path()).unwrap_or_default();
        let from_parent = log
            .lines()
            .filter(|l| l.contains("OOM kill read from the parent cgroup"))
            .count();
        eprintln!("{from_parent} of {OOM_ROUNDS} OOM kills were read from the pod's slice");
    }

    // Removing the pod removes the scopes.
    drop(guard);
    let gone = wait_until(Duration::from_secs(20) * scale, || {
        unit_property(&scope, "ActiveState") != "active"
    });
    assert!(gone, "{scope} still active after RemovePodSandbox");
    assert!(
        !Path::new(&format!("/sys/fs/cgroup{wanted}")).exists(),
        "{wanted} left behind"
    );
}

/// `ctr run --cgroup system.slice:tether:<id>` with `SystemdCgroup = true` in the runtime
/// options file: the task runs in `system.slice/tether-<id>.scope` (active in systemd), Stats
/// answers v2 metrics of that cgroup, and the scope is gone after delete.
pub fn ctr_run_in_a_systemd_scope() {
    require_systemd();
    let cd = Containerd::start();
    let id = unique_id("sdscope");
    let options = cd.dir().join("tether-systemd.toml");
    fs::write(&options, "SystemdCgroup = true\n").unwrap();
    let cgroup = format!("system.slice:tether:{id}");
    let args = cd
        .run_args(&id, &["sleep", "1000"])
        .detach()
        .flag("--runtime-config-path")
        .flag(&options.to_string_lossy())
        .flag("--cgroup")
        .flag(&cgroup)
        .build();
    cd.ctr_ok(&args);
    let pid = cd.wait_task_status(&id, "RUNNING", Duration::from_secs(60));
    let scope = format!("tether-{id}.scope");
    let wanted = format!("/system.slice/{scope}");
    assert_eq!(cgroup_of(pid), wanted, "task {id} (pid {pid})'s cgroup");
    assert_eq!(unit_property(&scope, "ActiveState"), "active", "{scope}");

    let shim = ShimConn::connect(&cd, &id);
    let req = api::StatsRequest {
        id: id.clone(),
        ..Default::default()
    };
    let resp: api::StatsResponse = shim
        .call("Stats", &req, RPC_TIMEOUT)
        .unwrap_or_else(|e| panic!("Stats: {e:?}"));
    let any = resp.stats.as_ref().expect("Stats carries metrics");
    assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");
    let m = CgroupV2Metrics::parse_from_bytes(&any.value).expect("v2 Metrics");
    assert!(m.memory.usage > 0, "no memory usage: {m:?}");
    assert_eq!(m.pids.current, 1, "one process in {scope}: {m:?}");
    drop(shim);

    cd.ctr_ok(&["tasks", "kill", "-s", "KILL", &id]);
    cd.wait_task_status(&id, "STOPPED", Duration::from_secs(60));
    cd.ctr_ok(&["tasks", "delete", &id]);
    cd.ctr_ok(&["containers", "delete", &id]);
    let gone = wait_until(Duration::from_secs(20) * time_scale(), || {
        unit_property(&scope, "ActiveState") != "active"
    });
    assert!(gone, "{scope} still active after delete");
    assert!(
        !Path::new(&format!("/sys/fs/cgroup{wanted}")).exists(),
        "{wanted} left behind"
    );
}
