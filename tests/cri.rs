//! tether as a runtime handler of containerd's CRI plugin (issue #7): what a kubelet does,
//! through the real CRI (`runtime.v1`) gRPC API of a private containerd.
//!
//! The test starts containerd with the CRI plugin enabled and two runtime handlers, `runc`
//! (`io.containerd.runc.v2`, the default) and `tether` (`io.containerd.tether.v2`); CNI points
//! at empty directories, so the pod uses the host network (the CRI then reports
//! `NetworkReady=false`, which a host-network pod does not need). Images come from no
//! registry: the test builds an OCI image archive of a busybox-static rootfs and imports it
//! with `ctr -n k8s.io images import`; one image is the sandbox ("pause") image, one the
//! workload image. Then, with the handler under test:
//!
//! RunPodSandbox → three containers (a long-running one, one exiting with 3 by itself, one
//! OOM-killed under a 16 MiB limit) → ExecSync, ContainerStatus (Error / OOMKilled),
//! ContainerStats, the container log → StopContainer, RemoveContainer → StopPodSandbox,
//! RemovePodSandbox. While the pod runs, exactly one shim process serves the sandbox and all
//! its containers, its `-id` is the sandbox id, and it exits once the pod is removed.
//!
//! `TETHER_TEST_RUNTIME=io.containerd.runc.v2` runs the same test with the `runc` handler and
//! the Go shim, which is how the test itself is checked.

mod common;
#[path = "common/cri_client.rs"]
mod cri_client;

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{cmdline, runtime, Containerd};
use cri_client::{poll, CgroupParentGuard, Cri, PodGuard, SANDBOX_IMAGE, WORKLOAD_IMAGE};
use k8s_cri::v1::{
    ContainerConfig, ContainerState, ContainerStatus, ContainerStatusRequest, ExecSyncRequest,
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, ListContainersRequest,
    ListPodSandboxRequest, PodSandboxConfig, PodSandboxMetadata, PodSandboxStatusRequest,
    RemoveContainerRequest, StopContainerRequest, VersionRequest,
};

/// Bound for one CRI call. StopContainer waits its own timeout (1 s here) inside the call.
const RPC_TIMEOUT: Duration = Duration::from_secs(30);

/// Memory limit of the container that is OOM-killed.
const OOM_LIMIT: i64 = 16 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Runtime under test
// ---------------------------------------------------------------------------------------------

/// The CRI runtime handler for the runtime under test (`io.containerd.<name>.v2` → `<name>`),
/// and the shim binary's file name (`containerd-shim-<name>-v2`).
fn handler() -> (String, String) {
    let rt = runtime();
    let name = rt
        .strip_prefix("io.containerd.")
        .and_then(|r| r.strip_suffix(".v2"))
        .filter(|n| *n == "tether" || *n == "runc")
        .unwrap_or_else(|| {
            panic!("TETHER_TEST_RUNTIME={rt}: tests/cri.rs knows io.containerd.tether.v2 and io.containerd.runc.v2")
        })
        .to_string();
    let binary = format!("containerd-shim-{name}-v2");
    (name, binary)
}

/// containerd's config additions (see [`cri_client::handlers_config`]).
fn cri_config() -> String {
    cri_client::handlers_config(SANDBOX_IMAGE)
}

// ---------------------------------------------------------------------------------------------
// Shim processes
// ---------------------------------------------------------------------------------------------

/// Shim servers of this containerd (not `start`/`delete` invocations): `(pid, argv, exe)`.
fn shim_servers(cd: &Containerd) -> Vec<(i32, Vec<String>, String)> {
    cd.shim_pids()
        .into_iter()
        .filter_map(|pid| {
            let argv = cmdline(pid);
            if argv.iter().any(|a| a == "start" || a == "delete") {
                return None;
            }
            let exe = fs::read_link(format!("/proc/{pid}/exe"))
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            Some((pid, argv, exe))
        })
        .collect()
}

/// The value after `flag` in `argv`.
fn flag_value<'a>(argv: &'a [String], flag: &str) -> Option<&'a str> {
    argv.windows(2)
        .find(|w| w[0] == flag)
        .map(|w| w[1].as_str())
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

fn pod_config(log_dir: &Path, uid: &str, cgroup_parent: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "tether-cri".into(),
            uid: uid.into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        // No hostname: a host-network pod keeps the node's.
        hostname: String::new(),
        log_directory: log_dir.to_string_lossy().into_owned(),
        linux: Some(LinuxPodSandboxConfig {
            // A kubelet gives every pod its own cgroup (e.g. /kubepods/besteffort/pod<uid>).
            cgroup_parent: cgroup_parent.into(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(cri_client::host_network_namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container_config(name: &str, argv: &[&str], memory_limit: i64) -> ContainerConfig {
    cri_client::limited_container(name, WORKLOAD_IMAGE, argv, memory_limit)
}

fn state_name(state: i32) -> String {
    ContainerState::try_from(state)
        .map(|s| s.as_str_name().to_string())
        .unwrap_or_else(|_| format!("state {state}"))
}

/// One-line rendering of a container status for failure messages.
fn brief(s: &ContainerStatus) -> String {
    format!(
        "{} exit_code={} reason={:?} message={:?}",
        state_name(s.state),
        s.exit_code,
        s.reason,
        s.message
    )
}

// ---------------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------------

#[test]
fn cri_pod_lifecycle_through_the_runtime_handler() {
    let t0 = Instant::now();
    let (handler, shim_name) = handler();
    let mut cd = cri_client::start_containerd(cri_config());
    let dir = cd.dir().to_path_buf();
    // The tether handler's options file names a runc wrapper that logs each call.
    let (wrapper, wrapper_log) = cri_client::runc_wrapper(&dir);
    fs::write(
        dir.join("tether.toml"),
        format!(
            "# runc options for tether under the CRI\nBinaryName = \"{}\"\n",
            wrapper.display()
        ),
    )
    .unwrap();
    let cri = Cri::connect(cd.address(), RPC_TIMEOUT);

    // The CRI service initialises in the background after containerd answers: wait for it.
    let status = cri.wait_runtime_ready(Duration::from_secs(20));
    // Empty CNI dirs: the network is not ready, which a host-network pod does not need.
    assert!(
        status
            .iter()
            .any(|c| c.r#type == "NetworkReady" && !c.status),
        "expected NetworkReady=false with empty CNI dirs: {status:?}"
    );
    let version = cri.ok(
        "Version",
        cri.rs().version(VersionRequest {
            version: "v1".into(),
        }),
    );
    assert_eq!(version.runtime_api_version, "v1", "{version:?}");
    eprintln!(
        "CRI: {} {} (API {}), handler {handler:?}",
        version.runtime_name, version.runtime_version, version.runtime_api_version
    );

    // Images: built here, imported into the CRI's namespace, visible to the CRI.
    let imported = cri_client::import_pod_images(
        &cd,
        &cri,
        &dir,
        SANDBOX_IMAGE,
        WORKLOAD_IMAGE,
        Duration::from_secs(10),
    );
    eprintln!("ctr images import: {}", imported.trim());

    // The pod.
    let log_dir = dir.join("pod-logs");
    let cgroup_parent = format!(
        "/{}",
        common::unique_id(&format!("tether-cri-{}", std::process::id()))
    );
    let _cgroup_guard = CgroupParentGuard(cgroup_parent.clone());
    let pod = pod_config(&log_dir, &common::unique_id("uid"), &cgroup_parent);
    let mut guard = PodGuard {
        cri: &cri,
        id: None,
    };
    let sandbox = cri.run_pod(&pod, &handler, &mut guard);
    cd.track_id(&sandbox);
    let sb_status = cri
        .ok(
            "PodSandboxStatus",
            cri.rs().pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: sandbox.clone(),
                verbose: false,
            }),
        )
        .status
        .expect("PodSandboxStatus has a status");
    assert_eq!(
        sb_status.state, 0,
        "sandbox not SANDBOX_READY: {sb_status:?}"
    );
    assert_eq!(sb_status.runtime_handler, handler, "{sb_status:?}");
    if handler == "tether" {
        let calls = fs::read_to_string(&wrapper_log).unwrap_or_default();
        assert!(
            calls.lines().any(|l| l.contains(" create ") && l.contains(&sandbox)),
            "tether did not use the BinaryName of its ConfigPath file for the sandbox; wrapper saw: {calls:?}"
        );
    }
    eprintln!("sandbox {sandbox} ready after {:?}", t0.elapsed());

    let create = |name: &str, argv: &[&str], memory_limit: i64| -> String {
        let id = cri.create(&sandbox, &pod, container_config(name, argv, memory_limit));
        cd.track_id(&id);
        cri.start(&id)
            .unwrap_or_else(|s| panic!("StartContainer {name}: {:?}: {}", s.code(), s.message()));
        id
    };
    let sleeper = create("sleeper", &["/bin/sleep", "1000"], 0);
    // Exits with 3 once /go exists (an ExecSync below makes it): until then the pod has two
    // running containers, both of which must be served by the sandbox's shim.
    let exiter = create(
        "exiter",
        &[
            "/bin/sh",
            "-c",
            "echo bye; while [ ! -e /go ]; do sleep 0.1; done; exit 3",
        ],
        0,
    );
    let oom = create("oom", &["/bin/sh", "-c", "tail /dev/zero"], OOM_LIMIT);
    for id in [&sleeper, &exiter] {
        let running = cri.container_status(id);
        assert_eq!(
            running.state,
            ContainerState::ContainerRunning as i32,
            "{id}: {}",
            brief(&running)
        );
    }

    // Pod grouping: one shim server for the sandbox and both running containers, named after
    // the sandbox, and their bundles point at its socket.
    let servers = poll(Duration::from_secs(5), "exactly one shim server", || {
        let s = shim_servers(&cd);
        if s.len() == 1 {
            Ok(s)
        } else {
            Err(format!("{s:?}"))
        }
    });
    let (shim_pid, argv, exe) = &servers[0];
    assert_eq!(
        Path::new(exe).file_name().and_then(|f| f.to_str()),
        Some(shim_name.as_str()),
        "the pod's shim (pid {shim_pid}, argv {argv:?}) is not {shim_name}"
    );
    assert_eq!(
        flag_value(argv, "-id"),
        Some(sandbox.as_str()),
        "the pod's shim is not named after the sandbox: {argv:?}"
    );
    let addresses: HashMap<&str, String> = [&sandbox, &sleeper, &exiter]
        .iter()
        .map(|id| {
            // containerd 2.x keeps the address in `bootstrap.json` (it writes that file; the
            // Go shim of 2.x writes no `address`), 1.6/1.7 read the shim's `address`.
            let bootstrap = cd.bundle(id).join("bootstrap.json");
            if let Ok(text) = fs::read_to_string(&bootstrap) {
                let v: serde_json::Value = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("{}: {e}: {text}", bootstrap.display()));
                return (
                    id.as_str(),
                    v["address"].as_str().unwrap_or_default().to_string(),
                );
            }
            let a = fs::read_to_string(cd.bundle(id).join("address"))
                .unwrap_or_else(|e| panic!("{}/address: {e}", cd.bundle(id).display()));
            (id.as_str(), a.trim().to_string())
        })
        .collect();
    assert!(
        addresses
            .values()
            .all(|a| a == &addresses[sandbox.as_str()]),
        "the pod's bundles name different shim sockets: {addresses:?}"
    );
    eprintln!("one {shim_name} (pid {shim_pid}) serves the pod: {argv:?}");

    // The running container is in its own cgroup under the pod's cgroup parent.
    let pid_file = cd.bundle(&sleeper).join("init.pid");
    let pid =
        fs::read_to_string(&pid_file).unwrap_or_else(|e| panic!("{}: {e}", pid_file.display()));
    let cgroups = fs::read_to_string(format!("/proc/{}/cgroup", pid.trim())).unwrap_or_default();
    let wanted = format!(":{cgroup_parent}/{sleeper}");
    assert!(
        cgroups.lines().any(|l| l.ends_with(&wanted)),
        "sleeper (pid {}) is not in a cgroup ending in {wanted}:\n{cgroups}",
        pid.trim()
    );

    // ExecSync in the running container.
    let exec = cri.ok(
        "ExecSync",
        cri.rs().exec_sync(ExecSyncRequest {
            container_id: sleeper.clone(),
            cmd: vec!["sh".into(), "-c".into(), "echo hi; exit 2".into()],
            timeout: 10,
        }),
    );
    assert_eq!(
        (
            String::from_utf8_lossy(&exec.stdout).as_ref(),
            exec.exit_code
        ),
        ("hi\n", 2),
        "ExecSync: stderr {:?}",
        String::from_utf8_lossy(&exec.stderr)
    );

    // The container that exits by itself once told to: EXITED, its code, reason "Error", its
    // log (which holds no ExecSync output).
    let touch = cri.ok(
        "ExecSync touch /go",
        cri.rs().exec_sync(ExecSyncRequest {
            container_id: exiter.clone(),
            cmd: vec!["touch".into(), "/go".into()],
            timeout: 10,
        }),
    );
    assert_eq!(touch.exit_code, 0, "touch /go in exiter: {touch:?}");
    let exited = poll(Duration::from_secs(10), "exiter EXITED", || {
        let s = cri.container_status(&exiter);
        if s.state == ContainerState::ContainerExited as i32 {
            Ok(s)
        } else {
            Err(brief(&s))
        }
    });
    assert_eq!(
        (exited.exit_code, exited.reason.as_str()),
        (3, "Error"),
        "exiter: {}",
        brief(&exited)
    );
    // Both set. No order between them: started_at is containerd's clock after the Start call
    // returned, finished_at the shim's exit time, which for a process this short can be earlier.
    assert!(
        exited.started_at > 0 && exited.finished_at > 0,
        "exiter: started_at {} finished_at {}",
        exited.started_at,
        exited.finished_at
    );
    eprintln!(
        "exiter: finished_at - started_at = {} ns",
        exited.finished_at - exited.started_at
    );
    let log = poll(Duration::from_secs(5), "exiter's log", || {
        let text = fs::read_to_string(log_dir.join("exiter.log")).unwrap_or_default();
        if text.contains(" stdout F bye") {
            Ok(text)
        } else {
            Err(format!("{text:?}"))
        }
    });
    assert_eq!(log.lines().count(), 1, "exiter.log: {log:?}");

    // The container over its memory limit: EXITED with reason OOMKilled (the reason comes
    // from the /tasks/oom event, which may follow the exit).
    let killed = poll(Duration::from_secs(20), "oom OOMKilled", || {
        let s = cri.container_status(&oom);
        if s.state == ContainerState::ContainerExited as i32 && s.reason == "OOMKilled" {
            Ok(s)
        } else {
            Err(brief(&s))
        }
    });
    assert_eq!(killed.exit_code, 137, "oom: {}", brief(&killed));

    // A container that exits while containerd is down keeps its exit code and reason
    // (containerd 1.7+ drops a reloaded task whose Pids is empty: tether answers with the
    // exited init's pid). It waits for a file the test writes into its rootfs, which the shim
    // mounted on the host at its bundle's rootfs.
    let late = create(
        "late",
        &[
            "/bin/sh",
            "-c",
            "while [ ! -e /late ]; do sleep 0.05; done; exit 7",
        ],
        0,
    );
    let late_shim = shim_servers(&cd).iter().map(|s| s.0).collect::<Vec<_>>();
    cd.stop();
    fs::write(cd.bundle(&late).join("rootfs/late"), b"").unwrap();
    // The pod's shim is a child subreaper: once it has reaped `late`, no process of the
    // container is left under it but the others of the pod.
    std::thread::sleep(Duration::from_secs(1));
    cd.restart();
    let late_status = poll(Duration::from_secs(30), "late EXITED after restart", || {
        let req = ContainerStatusRequest {
            container_id: late.clone(),
            verbose: false,
        };
        match cri.call("ContainerStatus", cri.rs().container_status(req)) {
            Ok(r) => match r.status {
                Some(s) if s.state == ContainerState::ContainerExited as i32 => Ok(s),
                Some(s) => Err(brief(&s)),
                None => Err("no status".into()),
            },
            Err(e) => Err(format!("{:?}: {}", e.code(), e.message())),
        }
    });
    let go_shim_on_1_7 = handler == "runc" && common::containerd_version() >= (1, 7);
    if go_shim_on_1_7 {
        // The Go shim's empty Pids: containerd 1.7+ deletes the task, CRI no longer knows
        // the real exit code.
        assert_ne!(late_status.exit_code, 7, "late: {}", brief(&late_status));
    } else {
        assert_eq!(
            (late_status.exit_code, late_status.reason.as_str()),
            (7, "Error"),
            "late after a containerd restart (containerd {:?}): {}",
            common::containerd_version(),
            brief(&late_status)
        );
    }
    assert_eq!(
        shim_servers(&cd).iter().map(|s| s.0).collect::<Vec<_>>(),
        late_shim,
        "the pod's shim changed across the restart"
    );

    // Stats of the running container.
    let stats = cri.container_stats(&sleeper);
    let memory = stats.memory.as_ref().expect("memory stats");
    let working_set = memory.working_set_bytes.as_ref().map_or(0, |v| v.value);
    let usage = memory.usage_bytes.as_ref().map_or(0, |v| v.value);
    assert!(
        working_set > 0 || usage > 0,
        "no memory usage in ContainerStats: {stats:?}"
    );
    let cpu = stats.cpu.as_ref().expect("cpu stats");
    let cpu_ns = cpu
        .usage_core_nano_seconds
        .as_ref()
        .unwrap_or_else(|| panic!("no CPU usage in ContainerStats: {stats:?}"))
        .value;
    // sleep and the ExecSync above ran in its cgroup: zero would mean the field was never read.
    assert!(
        cpu_ns > 0,
        "no CPU usage counted in ContainerStats: {stats:?}"
    );
    eprintln!("sleeper stats: working set {working_set} B, usage {usage} B, cpu {cpu_ns} ns");

    // Stop and remove the containers (sleep ignores SIGTERM as pid 1: SIGKILL after 1 s).
    cri.ok(
        "StopContainer",
        cri.rs().stop_container(StopContainerRequest {
            container_id: sleeper.clone(),
            timeout: 1,
        }),
    );
    let stopped = cri.container_status(&sleeper);
    assert_eq!(
        stopped.state,
        ContainerState::ContainerExited as i32,
        "sleeper after StopContainer: {}",
        brief(&stopped)
    );
    // sleep, pid 1 of its namespace, ignores SIGTERM: the kubelet-style stop ends in SIGKILL.
    assert_eq!(
        (stopped.exit_code, stopped.reason.as_str()),
        (137, "Error"),
        "sleeper after StopContainer: {}",
        brief(&stopped)
    );
    // containerd 2.1+ sends the shim `Shutdown` after every task delete of a version-2 shim
    // (1.6, 1.7 and 2.0 do not), and the CRI deletes a container's task as soon as it exits:
    // by the end the pod's shim got one per container. It must stay for the sandbox, removal
    // after removal, and only exit after RemovePodSandbox.
    let shutdowns = || {
        fs::read_to_string(cd.log_path())
            .unwrap_or_default()
            .matches("shutdown requested")
            .count()
    };
    for id in [&sleeper, &exiter, &oom, &late] {
        cri.ok(
            "RemoveContainer",
            cri.rs().remove_container(RemoveContainerRequest {
                container_id: id.clone(),
            }),
        );
        assert_eq!(
            shim_servers(&cd).iter().map(|s| s.0).collect::<Vec<_>>(),
            vec![*shim_pid],
            "the pod's shim is gone after RemoveContainer {id}"
        );
    }
    if handler == "tether" && common::containerd_version() >= (2, 1) {
        // The shim logs each Shutdown at debug level (it runs with -debug here).
        poll(
            Duration::from_secs(5),
            "a Shutdown per removed container",
            || {
                let n = shutdowns();
                if n >= 4 {
                    Ok(())
                } else {
                    let log = fs::read_to_string(cd.log_path()).unwrap_or_default();
                    let seen: Vec<&str> = log.lines().filter(|l| l.contains("hutdown")).collect();
                    Err(format!(
                        "{n} Shutdown requests logged; log lines: {seen:#?}"
                    ))
                }
            },
        );
    }
    let left = cri
        .ok(
            "ListContainers",
            cri.rs()
                .list_containers(ListContainersRequest { filter: None }),
        )
        .containers;
    assert!(
        left.is_empty(),
        "containers left after RemoveContainer: {left:?}"
    );
    // The pod's shim still serves the sandbox.
    assert_eq!(
        shim_servers(&cd).iter().map(|s| s.0).collect::<Vec<_>>(),
        vec![*shim_pid],
        "the pod's shim changed while the sandbox runs"
    );

    // Stop and remove the pod: its shim exits.
    guard.remove();
    let pods = cri
        .ok(
            "ListPodSandbox",
            cri.rs()
                .list_pod_sandbox(ListPodSandboxRequest { filter: None }),
        )
        .items;
    assert!(
        pods.is_empty(),
        "pods left after RemovePodSandbox: {pods:?}"
    );
    poll(Duration::from_secs(5), "the pod's shim exits", || {
        let pids = cd.shim_pids();
        if pids.is_empty() {
            Ok(())
        } else {
            Err(format!("{pids:?}"))
        }
    });
    eprintln!("done in {:?}", t0.elapsed());
}

/// critest 1.33 on containerd 1.6/1.7 gives its pods the parent `test.slice`, so containerd's
/// CRI names their cgroups in systemd's form, `test.slice:cri-containerd:<id>`, even with the
/// cgroupfs driver. Without `SystemdCgroup` (not set here) runc's cgroupfs driver takes that as
/// a path relative to its own cgroup, as under the Go shim: the pod runs, the container's cgroup
/// is where runc made it (below the shim's cgroup, named with the colons), ContainerStats reads
/// it, and teardown removes it. The Go shim passes it too (`TETHER_TEST_RUNTIME`).
#[test]
fn a_pod_whose_parent_is_a_slice_runs_on_cgroupfs() {
    let (handler, _) = handler();
    let cd = cri_client::start_containerd(cri_config());
    let dir = cd.dir().to_path_buf();
    let (wrapper, wrapper_log) = cri_client::runc_wrapper(&dir);
    fs::write(
        dir.join("tether.toml"),
        format!("BinaryName = \"{}\"\n", wrapper.display()),
    )
    .unwrap();
    let cri = cri_client::ready_with_images(&cd);
    let pod = pod_config(
        &dir.join("pod-logs"),
        &common::unique_id("uid"),
        "test.slice",
    );
    let mut guard = cri_client::PodGuard {
        cri: &cri,
        id: None,
    };
    let sandbox = cri.run_pod(&pod, &handler, &mut guard);
    cd.track_id(&sandbox);
    let sleeper = cri.create(
        &sandbox,
        &pod,
        container_config("sleeper", &["/bin/sleep", "1000"], 0),
    );
    cd.track_id(&sleeper);
    cri.start(&sleeper)
        .unwrap_or_else(|s| panic!("StartContainer: {:?}: {}", s.code(), s.message()));
    let status = cri.container_status(&sleeper);
    assert_eq!(
        status.state,
        ContainerState::ContainerRunning as i32,
        "sleeper: {}",
        brief(&status)
    );
    if handler == "tether" {
        // (The runc handler, for the Go shim, does not read tether.toml.)
        let calls = fs::read_to_string(&wrapper_log).unwrap_or_default();
        assert!(
            calls
                .lines()
                .any(|l| l.contains(" create ") && l.contains(&sleeper))
                && !calls.contains("--systemd-cgroup"),
            "runc created the container with its cgroupfs driver; it saw:\n{calls}"
        );
    }

    // runc made `<its own cgroup>/test.slice:cri-containerd:<id>` in every hierarchy.
    let pid = fs::read_to_string(cd.bundle(&sleeper).join("init.pid")).unwrap();
    let cgroups = fs::read_to_string(format!("/proc/{}/cgroup", pid.trim())).unwrap();
    let wanted = format!("/test.slice:cri-containerd:{sleeper}");
    let memory = cgroups
        .lines()
        .find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
            let unified = controllers.is_empty() && !cgroups.contains(":memory:");
            (controllers.split(',').any(|c| c == "memory") || unified).then(|| path.to_string())
        })
        .unwrap_or_else(|| panic!("no memory cgroup for pid {}:\n{cgroups}", pid.trim()));
    assert!(
        memory.ends_with(&wanted),
        "sleeper's memory cgroup {memory} does not end in {wanted}"
    );
    let memory_dir = if cgroups.contains(":memory:") {
        format!("/sys/fs/cgroup/memory{memory}")
    } else {
        format!("/sys/fs/cgroup{memory}")
    };
    assert!(Path::new(&memory_dir).is_dir(), "{memory_dir}");

    // Stats come from that cgroup.
    let stats = cri.container_stats(&sleeper);
    let mem = stats.memory.as_ref().expect("memory stats");
    let usage = mem.usage_bytes.as_ref().map_or(0, |v| v.value);
    let working_set = mem.working_set_bytes.as_ref().map_or(0, |v| v.value);
    assert!(
        usage > 0 || working_set > 0,
        "no memory usage in ContainerStats: {stats:?}"
    );
    eprintln!("sleeper in {memory_dir}: usage {usage} B, working set {working_set} B");

    cri.ok(
        "StopContainer",
        cri.rs().stop_container(StopContainerRequest {
            container_id: sleeper.clone(),
            timeout: 1,
        }),
    );
    let stopped = cri.container_status(&sleeper);
    assert_eq!(
        stopped.state,
        ContainerState::ContainerExited as i32,
        "sleeper after StopContainer: {}",
        brief(&stopped)
    );
    cri.ok(
        "RemoveContainer",
        cri.rs().remove_container(RemoveContainerRequest {
            container_id: sleeper.clone(),
        }),
    );
    guard.remove();
    poll(
        Duration::from_secs(10),
        "the container's cgroup removed",
        || {
            if Path::new(&memory_dir).exists() {
                Err(format!("{memory_dir} still exists"))
            } else {
                Ok(())
            }
        },
    );
    let left = poll(Duration::from_secs(10), "no shim left", || {
        let s = shim_servers(&cd);
        if s.is_empty() {
            Ok(s)
        } else {
            Err(format!("{s:?}"))
        }
    });
    assert!(left.is_empty());
}
