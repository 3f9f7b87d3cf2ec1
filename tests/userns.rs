//! A user-namespaced pod (`hostUsers: false`) through containerd 2.x's CRI plugin and tether,
//! with runc 1.2+ (issue 13 item 5, SPEC §1.17).
//!
//! What the kubelet sends for such a pod: `userns_options { mode: POD, uids/gids }` in the
//! sandbox's and each container's namespace options. containerd then
//! - labels the rootfs snapshots with the mapping, and its overlay snapshotter (on a kernel
//!   with idmapped overlay mounts, 5.19+: `overlayutils.SupportsIDMappedMounts`) adds
//!   `uidmap=`/`gidmap=` to the rootfs mounts it hands the shim: tether makes them idmapped
//!   mounts, so the image's files (owned by host root) show as owned by the container's root;
//! - gives the container's `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` bind mounts
//!   uid/gid mappings in the OCI spec, which runc makes idmapped (runc 1.2+), and before that
//!   Create runs `<shim> -info` and fails it unless the runtime's `features` has
//!   `linux.mountExtensions.idmap.enabled` (`core/runtime/v2/task_manager.go`).
//!
//! The `tether` handler names tether by `runtime_path` under runc's runtime type, with runc's
//! options (`BinaryName`: a wrapper logging each call to runc 1.2+), as docs/configuration.md's
//! Kubernetes section says such pods need.
//!
//! Then, in the same containerd, two handlers whose container must not start: one whose runc
//! answers `features` without idmap (containerd refuses the Create on tether's `-info`
//! answer), and one with `ConfigPath` options (containerd 2.1's CRI cannot put the I/O owner
//! into them; see [`configpath_options_fail_a_user_namespaced_container`]).
//!
//! Preconditions, failing (never skipping) when missing: root, containerd 2.1+ in
//! `TETHER_CONTAINERD` (default: the 2.1.9 `scripts/containerd-versions.sh` fetches), and
//! runc 1.2+ at `TETHER_USERNS_RUNC` (default `/var/cache/tether/runc/1.3.6/runc`, which
//! `scripts/runc-versions.sh` fetches). `scripts/test.sh` runs it once, with both; it is
//! `#[ignore]`d in the plain `cargo test` run, which uses the system's containerd 1.6.
//!
//! The pod needs a network namespace of its own (containerd takes the user namespace from it),
//! so CNI is configured: a one-line fake plugin that reports an address and touches nothing,
//! with containerd bringing `lo` up itself (`use_internal_loopback`).
//!
//! `TETHER_TEST_RUNTIME=io.containerd.runc.v2` runs the same test against the Go shim (the
//! `runc` handler, same runc), which is how the test itself is checked; the assertions on
//! tether's own log are then left out.

mod common;
#[path = "common/cri_client.rs"]
mod cri_client;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{runtime, time_scale};
use cri_client::{poll, start_containerd, CgroupParentGuard, Cri, PodGuard};
use k8s_cri::v1::{
    ContainerConfig, ContainerState, ContainerStatusRequest, IdMapping, LinuxContainerConfig,
    LinuxContainerSecurityContext, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
    NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata, RemoveContainerRequest,
    StatusRequest, StopContainerRequest, UserNamespace,
};

const SANDBOX_IMAGE: &str = "docker.io/library/tether-userns-pause:test";
const WORKLOAD_IMAGE: &str = "docker.io/library/tether-userns-busybox:test";

/// The pod's mapping: container ids 0..65535 are host ids 65536..131071 (a kubelet hands out
/// such 64 Ki blocks from 65536 up).
const HOST_ID: u32 = 65536;
const LENGTH: u32 = 65536;

/// containerd 2.1.9 where `scripts/containerd-versions.sh` puts it: the containerd when
/// `TETHER_CONTAINERD` is unset (the system's 1.6 cannot run a user-namespaced pod).
const DEFAULT_CONTAINERD: &str = "/var/cache/tether/containerd/2.1.9/usr/bin";

/// runc 1.2+ for the idmapped mounts (see the module comment).
const DEFAULT_RUNC: &str = "/var/cache/tether/runc/1.3.6/runc";

/// runc's commands, to name the calls in the wrapper's log.
const RUNC_VERBS: &[&str] = &[
    "create",
    "start",
    "exec",
    "kill",
    "delete",
    "state",
    "ps",
    "pause",
    "resume",
    "update",
    "events",
    "features",
    "checkpoint",
    "restore",
];

/// ExecSync's own bound, seconds.
fn exec_timeout() -> i64 {
    10 * i64::from(time_scale())
}

fn rpc_timeout() -> Duration {
    Duration::from_secs(30) * time_scale()
}

// ---------------------------------------------------------------------------------------------
// Preconditions
// ---------------------------------------------------------------------------------------------

/// The runc to use: present, and saying idmapped mounts are enabled in its `features`.
fn runc_1_2() -> PathBuf {
    let runc = PathBuf::from(
        std::env::var("TETHER_USERNS_RUNC")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_RUNC.into()),
    );
    let out = std::process::Command::new(&runc)
        .arg("features")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "runc 1.2+ not found at {} ({e}): run scripts/runc-versions.sh, or point \
                 TETHER_USERNS_RUNC at one",
                runc.display()
            )
        });
    assert!(
        out.status.success(),
        "{} features failed: {}",
        runc.display(),
        common::describe(&out)
    );
    let features: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{} features: not JSON: {e}", runc.display()));
    assert_eq!(
        features["linux"]["mountExtensions"]["idmap"]["enabled"],
        serde_json::Value::Bool(true),
        "{} does not support idmapped mounts (runc 1.2+ does): {}",
        runc.display(),
        features["linux"]
    );
    runc
}

/// The CRI handler under test (as tests/cri.rs).
fn handler() -> &'static str {
    match runtime().as_str() {
        "io.containerd.tether.v2" => "tether",
        "io.containerd.runc.v2" => "runc",
        rt => panic!("TETHER_TEST_RUNTIME={rt}: tests/userns.rs knows io.containerd.tether.v2 and io.containerd.runc.v2"),
    }
}

/// containerd 2.4+ with tether under test: the `tether` handler is tether's own runtime type,
/// with no options, so its runc is the `runc` first on containerd's `PATH` (the wrapper).
/// 2.4's CRI asks a non-runc runtime type for its features (containerd#13504,
/// `introspectRuntimeFeatures` in `internal/cri/server/service.go` at v2.4.0-beta.0) and then
/// lets it run user-namespaced pods. The handler has no options section: with one, its options
/// are `runtimeoptions.v1.Options` and StartContainer still fails in containerd's client, as
/// [`configpath_options_fail_a_user_namespaced_container`] shows on 2.4.0-beta.0 too.
fn native_runtime_type() -> bool {
    handler() == "tether" && common::containerd_version() >= (2, 4)
}

/// Config version 3 (containerd 2.x). Both handlers run the wrapper around runc 1.2+ through
/// runc's options (`BinaryName`); with [`native_runtime_type`], the `tether` handler finds it
/// on `PATH` instead.
fn cri_config() -> String {
    let shim = common::shim_binary().display().to_string();
    let tether = if native_runtime_type() {
        r#"    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.tether]
      runtime_type = "io.containerd.tether.v2""#
            .to_string()
    } else {
        format!(
            r#"    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.tether]
      runtime_type = "io.containerd.runc.v2"
      runtime_path = "{shim}"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.tether.options]
        BinaryName = "{{dir}}/runc-wrapper""#
        )
    };
    format!(
        r#"[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = "{SANDBOX_IMAGE}"
[plugins."io.containerd.cri.v1.runtime"]
  # As in tests/cri.rs: no CAP_SYS_RESOURCE in the test host, no AppArmor.
  restrict_oom_score_adj = true
  disable_apparmor = true
  # The pod's network namespace under containerd's state dir, not /var/run/netns.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "{{dir}}/runc-wrapper"
    # containerd 2.1's CRI gives a user-namespaced container runc options (IoUid, IoGid), and
    # fails its StartContainer when the handler's options are of another type: a runtime_type
    # other than runc's gets runtimeoptions.v1.Options (ConfigPath), so tether is named by its
    # path under runc's runtime type, with runc's options.
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.tether-configpath]
      runtime_type = "io.containerd.tether.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.tether-configpath.options]
        ConfigPath = "{{dir}}/tether.toml"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.tether-noidmap]
      runtime_type = "io.containerd.runc.v2"
      runtime_path = "{shim}"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.tether-noidmap.options]
        BinaryName = "{{dir}}/runc-noidmap"
{tether}
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{{dir}}/cni/bin"]
    conf_dir = "{{dir}}/cni/net.d"
    use_internal_loopback = true
"#
    )
}

/// A CNI plugin that configures nothing: ADD reports `eth0` with an address in the given
/// namespace (containerd wants a pod IP), everything else succeeds silently.
const FAKE_CNI: &str = r#"#!/bin/sh
cat >/dev/null
case "$CNI_COMMAND" in
ADD) printf '{"cniVersion":"1.0.0","interfaces":[{"name":"%s","sandbox":"%s"}],"ips":[{"address":"10.254.254.2/24","interface":0}]}' "$CNI_IFNAME" "$CNI_NETNS" ;;
VERSION) printf '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}' ;;
esac
"#;

fn write_executable(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// libcni keeps each CNI ADD's result in `/var/lib/cni/results` until its DEL: the dirs this
/// test created there are removed when dropped, if empty (another CNI user may have filled them).
struct CniCacheGuard(Vec<PathBuf>);

impl CniCacheGuard {
    fn new() -> CniCacheGuard {
        let dirs = ["/var/lib/cni", "/var/lib/cni/results"];
        CniCacheGuard(
            dirs.iter()
                .map(PathBuf::from)
                .filter(|d| !d.exists())
                .collect(),
        )
    }
}

impl Drop for CniCacheGuard {
    fn drop(&mut self) {
        for d in self.0.iter().rev() {
            let _ = fs::remove_dir(d);
        }
    }
}

/// `(mount point, fs type)` of every line of a mountinfo file.
fn mounts_of(mountinfo: &str) -> Vec<(String, String)> {
    fs::read_to_string(mountinfo)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            Some((
                left.split(' ').nth(4)?.to_string(),
                right.split(' ').next()?.to_string(),
            ))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

/// What a kubelet sends for `hostUsers: false`: a pod user namespace with one mapping each.
fn namespaces() -> NamespaceOption {
    let map = vec![IdMapping {
        host_id: HOST_ID,
        container_id: 0,
        length: LENGTH,
    }];
    NamespaceOption {
        network: NamespaceMode::Pod as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        userns_options: Some(UserNamespace {
            mode: NamespaceMode::Pod as i32,
            uids: map.clone(),
            gids: map,
        }),
        ..Default::default()
    }
}

fn pod_config(log_dir: &Path, cgroup_parent: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "tether-userns".into(),
            uid: common::unique_id("uid"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: "userns".into(),
        log_directory: log_dir.to_string_lossy().into_owned(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.into(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container_config(name: &str, argv: &[&str]) -> ContainerConfig {
    ContainerConfig {
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..cri_client::container(name, WORKLOAD_IMAGE, argv)
    }
}

/// `Uid:`/`Gid:` of `/proc/<pid>/status`: real, effective, saved, filesystem.
fn proc_ids(pid: &str, field: &str) -> Vec<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------------

#[test]
#[ignore = "needs containerd 2.1+ and runc 1.2+: scripts/test.sh runs it with both"]
fn user_namespaced_pod_runs_with_idmapped_rootfs() {
    let t0 = Instant::now();
    common::require_root();
    if common::containerd_dir().is_none() {
        // Before anything asks for containerd (its version is cached); this binary has no
        // other test, so no other thread reads the environment.
        std::env::set_var("TETHER_CONTAINERD", DEFAULT_CONTAINERD);
    }
    let version = common::containerd_version();
    assert!(
        version >= (2, 1),
        "a user-namespaced pod needs containerd 2.1+ (found {version:?}): set TETHER_CONTAINERD \
         to e.g. /var/cache/tether/containerd/2.1.9/usr/bin (scripts/containerd-versions.sh)"
    );
    let runc = runc_1_2();
    let handler = handler();
    let _cni_cache = CniCacheGuard::new();

    // With tether's own runtime type, the wrapper is `runc` in the shim's directory, first on
    // containerd's PATH (see `native_runtime_type`); the directory outlives containerd.
    let path_dir = tempfile::tempdir().unwrap();
    // Both handlers' runc: a wrapper logging each call (the `features` call of `-info` among
    // them) around runc 1.2+; written before containerd starts, as 2.4's CRI asks for the
    // features then.
    let wrapper_log = path_dir.path().join("runc-wrapper.log");
    let wrapper = format!(
        "#!/bin/sh\necho \"$(readlink /proc/$PPID/exe): $*\" >>'{}'\nexec '{}' \"$@\"\n",
        wrapper_log.display(),
        runc.display()
    );
    write_executable(&path_dir.path().join("runc"), &wrapper);
    let cd = if native_runtime_type() {
        let shim = path_dir.path().join(common::SHIM_BINARY_NAME);
        std::os::unix::fs::symlink(common::shim_binary(), &shim).unwrap();
        cri_client::start_containerd_with(
            common::ContainerdOptions {
                shim,
                ..Default::default()
            },
            cri_config(),
        )
    } else {
        start_containerd(cri_config())
    };
    let dir = cd.dir().to_path_buf();
    write_executable(&dir.join("cni/bin/tether-fake-cni"), FAKE_CNI);
    fs::write(
        dir.join("cni/net.d/10-tether.conflist"),
        r#"{"cniVersion":"1.0.0","name":"tether-userns","plugins":[{"type":"tether-fake-cni"}]}"#,
    )
    .unwrap();
    // The same wrapper where the runc-type handlers' options name it.
    write_executable(&dir.join("runc-wrapper"), &wrapper);
    let cri = Cri::connect(cd.address(), rpc_timeout());

    // The CRI service, and the CNI config it loads, come up in the background.
    poll(
        Duration::from_secs(20) * time_scale(),
        "CRI RuntimeReady and NetworkReady",
        || {
            let resp = cri
                .call("Status", cri.rs().status(StatusRequest { verbose: false }))
                .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
            let conds = resp.status.map(|s| s.conditions).unwrap_or_default();
            let ready = |t: &str| conds.iter().any(|c| c.r#type == t && c.status);
            if ready("RuntimeReady") && ready("NetworkReady") {
                Ok(())
            } else {
                Err(format!("{conds:?}"))
            }
        },
    );

    if native_runtime_type() {
        // What the kubelet reads: the handler supports user namespaces (runc 1.2+'s features:
        // "user" namespaces and idmapped mounts), through tether's -info.
        let resp = cri.ok("Status", cri.rs().status(StatusRequest { verbose: false }));
        let features = resp
            .runtime_handlers
            .iter()
            .find(|h| h.name == "tether")
            .and_then(|h| h.features);
        assert!(
            features.as_ref().is_some_and(|f| f.user_namespaces),
            "CRI Status: the tether handler's features {features:?} in {:?}",
            resp.runtime_handlers
        );
    }

    cri_client::import_pod_images(
        &cd,
        &cri,
        &dir,
        SANDBOX_IMAGE,
        WORKLOAD_IMAGE,
        Duration::from_secs(10) * time_scale(),
    );

    // The pod.
    let cgroup_parent = format!(
        "/{}",
        common::unique_id(&format!("tether-userns-{}", std::process::id()))
    );
    let _cgroup_guard = CgroupParentGuard(cgroup_parent.clone());
    let pod = pod_config(&dir.join("pod-logs"), &cgroup_parent);
    let mut guard = PodGuard {
        cri: &cri,
        id: None,
    };
    let sandbox = cri.run_pod(&pod, handler, &mut guard);
    cd.track_id(&sandbox);
    let features_before = fs::read_to_string(&wrapper_log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.ends_with(": features"))
        .count();

    let container = cri.create(
        &sandbox,
        &pod,
        container_config("sleeper", &["/bin/sleep", "100000"]),
    );
    cd.track_id(&container);
    cri.start(&container)
        .unwrap_or_else(|s| panic!("StartContainer: {:?}: {}", s.code(), s.message()));
    let status = cri
        .ok(
            "ContainerStatus",
            cri.rs().container_status(ContainerStatusRequest {
                container_id: container.clone(),
                verbose: false,
            }),
        )
        .status
        .expect("ContainerStatus has a status");
    assert_eq!(
        status.state,
        ContainerState::ContainerRunning as i32,
        "{status:?}"
    );
    eprintln!(
        "pod {sandbox} and container {container} running after {:?}",
        t0.elapsed()
    );

    // containerd ran `<shim> -info` for the container's Create (its spec has idmapped bind
    // mounts), which asked the runtime for its features; the Create succeeded, so the answer
    // said idmapped mounts are supported.
    let calls = fs::read_to_string(&wrapper_log).unwrap_or_default();
    let features_after = calls.lines().filter(|l| l.ends_with(": features")).count();
    assert!(
        features_after > features_before,
        "no `features` call for the container's Create (containerd's -info): runc calls {calls:?}"
    );
    eprintln!(
        "runc calls: {:?}",
        calls
            .lines()
            .filter_map(|l| l.split(' ').find(|w| RUNC_VERBS.contains(w)))
            .collect::<Vec<_>>()
    );
    // Every runc call, `features` included, came from the shim under test.
    let shim_exe = match handler {
        "tether" => common::shim_binary(),
        _ => common::containerd_tool("containerd-shim-runc-v2"),
    };
    let shim_exe =
        fs::canonicalize(&shim_exe).unwrap_or_else(|e| panic!("{}: {e}", shim_exe.display()));
    let foreign: Vec<&str> = calls
        .lines()
        .filter(|l| !l.starts_with(&format!("{}: ", shim_exe.display())))
        .collect();
    assert!(
        foreign.is_empty(),
        "runc calls not made by {}: {foreign:#?}",
        shim_exe.display()
    );

    // Inside: the pod's user namespace, with the mapping asked for.
    let want_map = vec![vec![0, HOST_ID, LENGTH]];
    for file in ["/proc/self/uid_map", "/proc/self/gid_map"] {
        let text = cri.exec(&container, &["cat", file], exec_timeout());
        let map: Vec<Vec<u32>> = text
            .lines()
            .map(|l| l.split_whitespace().map(|v| v.parse().unwrap()).collect())
            .collect();
        assert_eq!(map, want_map, "{file} in the container: {text:?}");
    }
    assert_eq!(
        cri.exec(&container, &["id", "-u"], exec_timeout()).trim(),
        "0"
    );
    // The image's files are owned by host root (0:0, as built here). Through the idmapped
    // rootfs they are the container's root; without it they would be the overflow id 65534.
    let owners = cri.exec(
        &container,
        &["stat", "-c", "%n %u:%g", "/", "/bin/busybox", "/etc"],
        exec_timeout(),
    );
    assert_eq!(
        owners.lines().collect::<Vec<_>>(),
        vec!["/ 0:0", "/bin/busybox 0:0", "/etc 0:0"],
        "owners in the container's rootfs"
    );
    // What the container's root writes lands in the upperdir as the mapped host id (the
    // upperdir is not idmapped, as with containerd's own mount code).
    cri.exec(&container, &["touch", "/made-inside"], exec_timeout());

    // From the host: the container's and the sandbox's processes run as host uid/gid 65536,
    // and the file written inside is owned by it.
    for id in [&container, &sandbox] {
        let pid_file = cd.bundle(id).join("init.pid");
        let pid =
            fs::read_to_string(&pid_file).unwrap_or_else(|e| panic!("{}: {e}", pid_file.display()));
        let pid = pid.trim();
        assert_eq!(
            proc_ids(pid, "Uid:"),
            vec![HOST_ID; 4],
            "uids of {id} (pid {pid})"
        );
        assert_eq!(
            proc_ids(pid, "Gid:"),
            vec![HOST_ID; 4],
            "gids of {id} (pid {pid})"
        );
    }
    // The container's root mount: the overlay, its lowerdir through the idmapped copy of the
    // layers (tether's is next to the rootfs, and gone once the overlay is up).
    let pid = fs::read_to_string(cd.bundle(&container).join("init.pid")).unwrap();
    let mountinfo = fs::read_to_string(format!("/proc/{}/mountinfo", pid.trim())).unwrap();
    let root = mountinfo
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .unwrap_or_else(|| panic!("no / in the container's mountinfo:\n{mountinfo}"));
    eprintln!("container's /: {root}");
    assert!(
        root.contains(" - overlay "),
        "the container's / is not the overlay: {root}"
    );
    if handler == "tether" {
        let through = format!(
            "lowerdir={}/.idmapped-layers-",
            cd.bundle(&container).display()
        );
        assert!(
            root.contains(&through),
            "the overlay's lowerdir is not through tether's idmapped layers ({through}...): {root}"
        );
    }
    let made = cd.bundle(&container).join("rootfs/made-inside");
    let meta = fs::metadata(&made).unwrap_or_else(|e| panic!("{}: {e}", made.display()));
    assert_eq!(
        (meta.uid(), meta.gid()),
        (HOST_ID, HOST_ID),
        "{}",
        made.display()
    );

    // The rootfs mounts came from the overlay snapshotter with uidmap=/gidmap= and were
    // made idmapped by the shim: tether logs each (it runs with -debug here).
    if handler == "tether" {
        let log = fs::read_to_string(cd.log_path()).unwrap_or_default();
        let want = format!("uidmap=0:{HOST_ID}:{LENGTH}");
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("idmapped mount"))
            .collect();
        assert!(
            lines.len() >= 2
                && lines.iter().all(|l| l.contains("overlay")
                    && l.contains(&want)
                    && l.contains(&format!("gidmap=0:{HOST_ID}:{LENGTH}"))),
            "tether's log should show an idmapped overlay rootfs ({want}) for the sandbox and \
             the container: {lines:#?}"
        );
        eprintln!("tether: {}", lines[lines.len() - 1]);
    }

    // Stop and remove everything.
    cri.ok(
        "StopContainer",
        cri.rs().stop_container(StopContainerRequest {
            container_id: container.clone(),
            timeout: 1,
        }),
    );
    cri.ok(
        "RemoveContainer",
        cri.rs().remove_container(RemoveContainerRequest {
            container_id: container.clone(),
        }),
    );
    guard.remove();

    configpath_options_fail_a_user_namespaced_container(&cri, &dir, &cgroup_parent);
    runtime_without_idmap_fails_the_create(&cri, &dir, &cgroup_parent, &runc);

    // No mount of this containerd's is left, no shim.
    let prefix = dir.to_string_lossy().into_owned();
    poll(
        Duration::from_secs(10) * time_scale(),
        "no mount under containerd's dir and no shim left",
        || {
            let left: Vec<String> = mounts_of("/proc/self/mountinfo")
                .into_iter()
                .map(|(m, _)| m)
                .filter(|m| m.starts_with(&prefix))
                .collect();
            let shims = cd.shim_pids();
            if left.is_empty() && shims.is_empty() {
                Ok(())
            } else {
                Err(format!("mounts {left:?}, shims {shims:?}"))
            }
        },
    );
    eprintln!("done in {:?}", t0.elapsed());
}

/// Runs a user-namespaced pod with `handler` and a container in it, whose StartContainer must
/// fail; returns containerd's message. The pod is removed again.
fn start_fails(cri: &Cri, dir: &Path, cgroup_parent: &str, handler: &str) -> String {
    let pod = pod_config(&dir.join("pod-logs"), cgroup_parent);
    let mut guard = PodGuard { cri, id: None };
    let sandbox = cri.run_pod(&pod, handler, &mut guard);
    let container = cri.create(
        &sandbox,
        &pod,
        container_config(handler, &["/bin/sleep", "100000"]),
    );
    let err = cri
        .start(&container)
        .expect_err("StartContainer of the user-namespaced container");
    format!("{:?}: {}", err.code(), err.message())
}

/// containerd 2.1's CRI, not the shim: a handler whose `runtime_type` is not runc's gets its
/// options as `runtimeoptions.v1.Options` (`ConfigPath`, the form docs/configuration.md gives),
/// and StartContainer of a user-namespaced container then fails in containerd before the shim
/// is asked, because it sets `IoUid`/`IoGid` in runc options
/// (`updateContainerIOOwner` → `getRuncOptions`). The pod itself runs. This pins down why the
/// docs name tether by `runtime_path` under runc's runtime type for such pods.
fn configpath_options_fail_a_user_namespaced_container(cri: &Cri, dir: &Path, cgroup_parent: &str) {
    fs::write(
        dir.join("tether.toml"),
        format!("BinaryName = \"{}/runc-wrapper\"\n", dir.display()),
    )
    .unwrap();
    let err = start_fails(cri, dir, cgroup_parent, "tether-configpath");
    assert!(
        err.contains("runtimeoptions.v1.Options"),
        "StartContainer with ConfigPath options: {err}"
    );
    eprintln!("ConfigPath handler, as expected: {err}");
}

/// containerd acts on the shim's `-info` answer: when the runtime's `features` (here a runc
/// whose `features` leaves out `linux.mountExtensions`, as runc 1.1 does) does not say
/// idmapped mounts are supported, the Create of a container with idmapped mounts fails in
/// containerd ("idmap mounts not supported"), and no task is created.
fn runtime_without_idmap_fails_the_create(cri: &Cri, dir: &Path, cgroup_parent: &str, runc: &Path) {
    write_executable(
        &dir.join("runc-noidmap"),
        &format!(
            "#!/bin/sh
if [ \"$1\" = features ]; then
    echo '{{\"ociVersionMin\":\"1.0.0\",\"ociVersionMax\":\"1.2.1\",\"linux\":{{\"namespaces\":[\"user\"]}}}}'
    exit 0
fi
exec '{}' \"$@\"
",
            runc.display()
        ),
    );
    let err = start_fails(cri, dir, cgroup_parent, "tether-noidmap");
    assert!(
        err.contains("idmap mounts not supported"),
        "StartContainer with a runtime whose features lack idmap: {err}"
    );
    eprintln!("runtime without idmap in its features, as expected: {err}");
}
