//! containerd 2.4's CRI asks non-runc runtime types for their features (containerd#13504,
//! `introspectRuntimeFeatures` in `internal/cri/server/service.go` at v2.4.0-beta.0): an
//! `io.containerd.tether.v2` handler then reports recursive read-only mounts and user
//! namespaces to the kubelet in `Status` → `runtime_handlers`, from tether's `-info` (its
//! runtime's own `features`). Before 2.4 only runc-type handlers were asked, and a
//! recursive read-only mount was refused for any other ("runtime handler does not support
//! recursive read-only mounts", `internal/cri/opts/spec_linux_opts.go`).
//!
//! Two handlers, both `io.containerd.tether.v2`: `tether` with no options (its runc is the
//! `runc` first on containerd's PATH: runc 1.2+, `TETHER_USERNS_RUNC`), and `tether-runc11`
//! with `ConfigPath` options naming the host's runc 1.1, whose `features` lists `rro` but no
//! idmapped mounts (so no CRI user namespaces). Then a
//! host-network pod of the `tether` handler whose container has a host directory (holding a
//! tmpfs) mounted read-only twice: plainly (the tmpfs below stays writable) and recursively
//! read-only (it does not).
//!
//! Needs containerd 2.4+ (`TETHER_CONTAINERD`) and runc 1.2+: `scripts/test.sh` runs it under
//! 2.4.0-beta.0 with runc 1.3.6; `#[ignore]`d in the plain run. The user-namespaced pod with
//! this runtime type is tests/userns.rs, run under 2.4.0-beta.0 by the same script.

mod common;
#[path = "common/cri_client.rs"]
mod cri_client;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use cri_client::{CgroupParentGuard, Cri, PodGuard};
use k8s_cri::v1::{
    LinuxContainerConfig, LinuxContainerSecurityContext, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, Mount, MountPropagation, PodSandboxConfig, PodSandboxMetadata,
    StatusRequest,
};

const SANDBOX_IMAGE: &str = "docker.io/library/tether-features-pause:test";
const WORKLOAD_IMAGE: &str = "docker.io/library/tether-features-busybox:test";
const DEFAULT_RUNC: &str = "/var/cache/tether/runc/1.3.6/runc";

fn config(options_dir: &std::path::Path) -> String {
    let runc11 = options_dir.join("runc11.toml");
    let runc11 = runc11.display();
    format!(
        r#"[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = "{SANDBOX_IMAGE}"
[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
  disable_apparmor = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "tether"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.tether]
      runtime_type = "io.containerd.tether.v2"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.tether-runc11]
      runtime_type = "io.containerd.tether.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.tether-runc11.options]
        ConfigPath = "{runc11}"
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{{dir}}/cni/bin"]
    conf_dir = "{{dir}}/cni/net.d"
"#
    )
}

/// Unmounts the tmpfs under the host directory, whatever the outcome.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
#[ignore = "needs containerd 2.4+ and runc 1.2+: scripts/test.sh runs it with both"]
fn tether_handler_reports_features_and_mounts_recursively_read_only() {
    common::require_root();
    let version = common::containerd_version();
    assert!(
        version >= (2, 4),
        "needs containerd 2.4+ (found {version:?}): set TETHER_CONTAINERD"
    );
    let runc = std::env::var("TETHER_USERNS_RUNC")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_RUNC.into());
    let path_dir = tempfile::tempdir().unwrap();
    let shim = path_dir.path().join(common::SHIM_BINARY_NAME);
    std::os::unix::fs::symlink(common::shim_binary(), &shim).unwrap();
    std::os::unix::fs::symlink(&runc, path_dir.path().join("runc")).unwrap();
    // runc 1.1 (the host's) for the second handler; its options file exists before the CRI
    // asks the handlers for their features at start-up.
    let host_runc = String::from_utf8(
        std::process::Command::new("sh")
            .args(["-c", "command -v runc"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    fs::write(
        path_dir.path().join("runc11.toml"),
        format!("BinaryName = {:?}\n", host_runc.trim()),
    )
    .unwrap();
    let cd = cri_client::start_containerd_with(
        common::ContainerdOptions {
            shim,
            ..Default::default()
        },
        config(path_dir.path()),
    );
    let dir = cd.dir().to_path_buf();
    let cri = Cri::connect(cd.address(), Duration::from_secs(30));
    cri.wait_runtime_ready(Duration::from_secs(20));

    let resp = cri.ok("Status", cri.rs().status(StatusRequest { verbose: false }));
    let features = |name: &str| {
        resp.runtime_handlers
            .iter()
            .find(|h| h.name == name)
            .and_then(|h| h.features)
            .map(|f| (f.recursive_read_only_mounts, f.user_namespaces))
    };
    assert_eq!(
        features("tether"),
        Some((true, true)),
        "tether with runc 1.2+: {:?}",
        resp.runtime_handlers
    );
    assert_eq!(
        features("tether-runc11"),
        Some((true, false)),
        "tether with runc 1.1: {:?}",
        resp.runtime_handlers
    );

    cri_client::import_pod_images(
        &cd,
        &cri,
        &dir,
        SANDBOX_IMAGE,
        WORKLOAD_IMAGE,
        Duration::from_secs(10),
    );
    // A host directory with a tmpfs inside it.
    let host = dir.join("shared");
    fs::create_dir_all(host.join("sub")).unwrap();
    fs::set_permissions(&host, fs::Permissions::from_mode(0o777)).unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(host.join("sub"))
        .status()
        .unwrap();
    assert!(status.success(), "mount a tmpfs under {}", host.display());
    let _unmount = Unmount(host.join("sub"));

    let cgroup_parent = format!(
        "/{}",
        common::unique_id(&format!("tether-features-{}", std::process::id()))
    );
    let _cgroup_guard = CgroupParentGuard(cgroup_parent.clone());
    let pod = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "tether-features".into(),
            uid: common::unique_id("uid"),
            namespace: "default".into(),
            attempt: 0,
        }),
        log_directory: dir.join("pod-logs").to_string_lossy().into_owned(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.clone(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(cri_client::host_network_namespaces()),
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
    let mount = |path: &str, recursive: bool| Mount {
        container_path: path.into(),
        host_path: host.to_string_lossy().into_owned(),
        readonly: true,
        recursive_read_only: recursive,
        propagation: MountPropagation::PropagationPrivate as i32,
        ..Default::default()
    };
    let mut config = cri_client::container("rro", WORKLOAD_IMAGE, &["/bin/sleep", "100000"]);
    config.mounts = vec![mount("/ro", false), mount("/rro", true)];
    config.linux = Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext {
            namespace_options: Some(cri_client::host_network_namespaces()),
            ..Default::default()
        }),
        ..Default::default()
    });
    let container = cri.create(&sandbox, &pod, config);
    cd.track_id(&container);
    cri.start(&container)
        .unwrap_or_else(|s| panic!("StartContainer: {:?}: {}", s.code(), s.message()));

    // Plain read-only: the top is read-only, the tmpfs below is not (a bind mount's `ro` is
    // not recursive). Recursive: both are read-only.
    let sh = |script: &str| cri.exec(&container, &["sh", "-c", script], 10);
    let out = sh("touch /ro/x 2>&1; touch /ro/sub/x && echo sub-writable; \
         touch /rro/y 2>&1; touch /rro/sub/y 2>&1; true");
    assert!(out.contains("sub-writable"), "{out}");
    assert_eq!(
        out.matches("Read-only file system").count(),
        3,
        "/ro, /rro and /rro/sub must refuse writes: {out}"
    );
    assert!(host.join("sub/x").exists() && !host.join("sub/y").exists());
    guard.remove();
}
