//! A blocking client for containerd's CRI plugin, the kubelet's own messages (`k8s-cri`), for
//! the CRI tests (`tests/cri.rs`, `tests/userns.rs`, `tests/systemd_node*.rs`). Included with
//! `#[path]` by those binaries only, so the others do not build tonic.

#![allow(dead_code)]

use std::fs;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerStats, ContainerStatsRequest, ContainerStatus,
    ContainerStatusRequest, CreateContainerRequest, ExecSyncRequest, ImageSpec, ImageStatusRequest,
    LinuxContainerConfig, LinuxContainerResources, LinuxContainerSecurityContext, NamespaceMode,
    NamespaceOption, PodSandboxConfig, RemovePodSandboxRequest, RunPodSandboxRequest,
    RuntimeCondition, StartContainerRequest, StatusRequest, StopPodSandboxRequest,
};
use tonic::transport::{Channel, Endpoint, Uri};

pub struct Cri {
    rt: tokio::runtime::Runtime,
    runtime: RuntimeServiceClient<Channel>,
    pub images: ImageServiceClient<Channel>,
    /// Bound on each call.
    timeout: Duration,
}

impl Cri {
    /// Connects to containerd's grpc socket; every call is bounded by `timeout`.
    pub fn connect(socket: &str, timeout: Duration) -> Cri {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let socket = socket.to_string();
        let channel = rt
            .block_on(async {
                // The URI is required by tonic but unused: the connector dials the socket.
                let endpoint = Endpoint::try_from("http://[::]:50051")
                    .expect("endpoint")
                    .connect_timeout(Duration::from_secs(5))
                    .timeout(timeout);
                tokio::time::timeout(
                    Duration::from_secs(10),
                    endpoint.connect_with_connector(tower::service_fn(move |_: Uri| {
                        let socket = socket.clone();
                        async move {
                            let stream = tokio::net::UnixStream::connect(socket).await?;
                            Ok::<_, std::io::Error>(TokioIo::new(stream))
                        }
                    })),
                )
                .await
            })
            .expect("connecting to containerd's grpc socket timed out")
            .expect("connect to containerd's grpc socket");
        Cri {
            rt,
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
            timeout,
        }
    }

    /// Runs one call to completion (bounded); the gRPC status on failure.
    pub fn call<T>(
        &self,
        what: &str,
        fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, tonic::Status> {
        let bound = self.timeout;
        self.rt
            .block_on(async { tokio::time::timeout(bound, fut).await })
            .unwrap_or_else(|_| panic!("CRI {what} did not answer within {bound:?}"))
            .map(tonic::Response::into_inner)
    }

    /// [`Cri::call`] that must succeed.
    pub fn ok<T>(
        &self,
        what: &str,
        fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> T {
        self.call(what, fut)
            .unwrap_or_else(|s| panic!("CRI {what} failed: {:?}: {}", s.code(), s.message()))
    }

    pub fn rs(&self) -> RuntimeServiceClient<Channel> {
        self.runtime.clone()
    }

    pub fn container_status(&self, id: &str) -> ContainerStatus {
        let req = ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: false,
        };
        self.ok("ContainerStatus", self.rs().container_status(req))
            .status
            .unwrap_or_else(|| panic!("ContainerStatus of {id} has no status"))
    }

    /// ContainerStats of `id`, which must carry stats.
    pub fn container_stats(&self, id: &str) -> ContainerStats {
        self.ok(
            "ContainerStats",
            self.rs().container_stats(ContainerStatsRequest {
                container_id: id.to_string(),
            }),
        )
        .stats
        .expect("ContainerStats has stats")
    }

    /// Waits until the CRI says RuntimeReady (its service initialises in the background after
    /// containerd answers); the conditions it reported then.
    pub fn wait_runtime_ready(&self, timeout: Duration) -> Vec<RuntimeCondition> {
        poll(timeout, "CRI Status RuntimeReady", || {
            let req = StatusRequest { verbose: false };
            match self.call("Status", self.rs().status(req)) {
                Ok(resp) => {
                    let conds = resp.status.map(|s| s.conditions).unwrap_or_default();
                    if conds.iter().any(|c| c.r#type == "RuntimeReady" && c.status) {
                        Ok(conds)
                    } else {
                        Err(format!("{conds:?}"))
                    }
                }
                Err(s) => Err(format!("{:?}: {}", s.code(), s.message())),
            }
        })
    }

    /// Waits until the CRI lists `image` (after a `ctr images import`).
    pub fn wait_image(&self, image: &str, timeout: Duration) {
        poll(timeout, &format!("ImageStatus {image}"), || {
            let req = ImageStatusRequest {
                image: Some(ImageSpec {
                    image: image.into(),
                    ..Default::default()
                }),
                verbose: false,
            };
            let resp = self.ok("ImageStatus", self.images.clone().image_status(req));
            resp.image
                .map(|_| ())
                .ok_or_else(|| "not found".to_string())
        });
    }

    /// RunPodSandbox; the sandbox id, also kept in `guard` so the pod goes on drop.
    pub fn run_pod(&self, pod: &PodSandboxConfig, handler: &str, guard: &mut PodGuard) -> String {
        let sandbox = self
            .ok(
                &format!("RunPodSandbox ({handler})"),
                self.rs().run_pod_sandbox(RunPodSandboxRequest {
                    config: Some(pod.clone()),
                    runtime_handler: handler.into(),
                }),
            )
            .pod_sandbox_id;
        guard.id = Some(sandbox.clone());
        sandbox
    }

    /// CreateContainer in `sandbox`; the container id.
    pub fn create(&self, sandbox: &str, pod: &PodSandboxConfig, config: ContainerConfig) -> String {
        let name = config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        self.ok(
            &format!("CreateContainer {name}"),
            self.rs().create_container(CreateContainerRequest {
                pod_sandbox_id: sandbox.into(),
                config: Some(config),
                sandbox_config: Some(pod.clone()),
            }),
        )
        .container_id
    }

    /// StartContainer; the gRPC status on failure.
    pub fn start(&self, id: &str) -> Result<(), tonic::Status> {
        self.call(
            &format!("StartContainer {id}"),
            self.rs().start_container(StartContainerRequest {
                container_id: id.into(),
            }),
        )
        .map(drop)
    }

    /// ExecSync `argv` in `id` (bounded by `timeout_s` inside); its stdout, after asserting
    /// exit 0.
    pub fn exec(&self, id: &str, argv: &[&str], timeout_s: i64) -> String {
        let r = self.ok(
            "ExecSync",
            self.rs().exec_sync(ExecSyncRequest {
                container_id: id.into(),
                cmd: argv.iter().map(|s| s.to_string()).collect(),
                timeout: timeout_s,
            }),
        );
        assert_eq!(
            r.exit_code,
            0,
            "ExecSync {argv:?}: stdout {:?} stderr {:?}",
            String::from_utf8_lossy(&r.stdout),
            String::from_utf8_lossy(&r.stderr)
        );
        String::from_utf8_lossy(&r.stdout).into_owned()
    }
}

/// A container of `image` running `argv` (logged to `<name>.log`): the fields every CRI test
/// sets; the caller adds its `linux` part.
pub fn container(name: &str, image: &str, argv: &[&str]) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: argv[..1].iter().map(|s| s.to_string()).collect(),
        args: argv[1..].iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        ..Default::default()
    }
}

/// containerd's config additions for the CRI tests: the CRI plugin with both handlers (tether's
/// runc options from `{dir}/tether.toml`), local-only images and no
/// CNI plugins. `{dir}` is the instance's temp dir. Each version gets its native format:
/// config version 2 (`io.containerd.grpc.v1.cri`) for 1.6/1.7, version 3 (the CRI split into
/// `io.containerd.cri.v1.runtime` and `io.containerd.cri.v1.images`) for 2.x; the harness
/// writes `version = 3` when it sees the latter.
pub fn handlers_config(sandbox_image: &str) -> String {
    if crate::common::containerd_version() >= (2, 0) {
        config_v3(sandbox_image)
    } else {
        config_v2(sandbox_image)
    }
}

/// Config version 3 (containerd 2.x), keys as of containerd v2.1.9's internal/cri/config.
fn config_v3(sandbox_image: &str) -> String {
    format!(
        r#"[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = "{sandbox_image}"
[plugins."io.containerd.cri.v1.runtime"]
  # See config_v2.
  restrict_oom_score_adj = true
  disable_apparmor = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.tether]
      runtime_type = "io.containerd.tether.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.tether.options]
        ConfigPath = "{{dir}}/tether.toml"
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{{dir}}/cni/bin"]
    conf_dir = "{{dir}}/cni/net.d"
"#
    )
}

/// Config version 2 (containerd 1.6/1.7).
fn config_v2(sandbox_image: &str) -> String {
    format!(
        r#"[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  # The test host lacks CAP_SYS_RESOURCE; without this runc fails the sandbox
  # ("can't get final child's PID from pipe") when asked to lower oom_score_adj.
  restrict_oom_score_adj = true
  # No AppArmor profile is loaded by (or needed for) the test.
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    # Declaring any runtime replaces the built-in map: runc is declared again.
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.tether]
      runtime_type = "io.containerd.tether.v2"
      # A non-runc runtime type gets runtimeoptions.v1.Options: runc's options come from
      # this file (the test writes it: BinaryName is a logging wrapper around runc).
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.tether.options]
        ConfigPath = "{{dir}}/tether.toml"
  [plugins."io.containerd.grpc.v1.cri".cni]
    # Empty: host-network pods need no CNI plugin.
    bin_dir = "{{dir}}/cni/bin"
    conf_dir = "{{dir}}/cni/net.d"
"#
    )
}

/// Host network, a pid namespace per container and a pod IPC namespace: what a kubelet asks
/// for a `hostNetwork: true` pod (no CNI plugin needed).
pub fn host_network_namespaces() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Node as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// [`container`] in a host-network pod, with a memory limit (0: none).
pub fn limited_container(
    name: &str,
    image: &str,
    argv: &[&str],
    memory_limit: i64,
) -> ContainerConfig {
    ContainerConfig {
        linux: Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                memory_limit_in_bytes: memory_limit,
                ..Default::default()
            }),
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(host_network_namespaces()),
                ..Default::default()
            }),
        }),
        ..container(name, image, argv)
    }
}

/// A private containerd with the CRI plugin configured by `config`, and the directories those
/// configs name under its temp dir: `cni/bin`, `cni/net.d` (empty unless the test adds a
/// plugin) and `pod-logs`.
pub fn start_containerd(config: String) -> crate::common::Containerd {
    start_containerd_with(crate::common::ContainerdOptions::default(), config)
}

/// [`start_containerd`] with explicit options (e.g. a shim dir that also holds a `runc`).
pub fn start_containerd_with(
    opts: crate::common::ContainerdOptions,
    config: String,
) -> crate::common::Containerd {
    let cd = crate::common::Containerd::start_cri(opts, crate::common::CriOptions { config });
    for d in ["cni/bin", "cni/net.d", "pod-logs"] {
        fs::create_dir_all(cd.dir().join(d)).unwrap();
    }
    cd
}

/// A CRI client of `cd` once its CRI is ready, with both pod images imported: what most
/// tests do first (RPCs bounded at 30 s, readiness at 20 s, the import at 10 s).
pub fn ready_with_images(cd: &crate::common::Containerd) -> Cri {
    let cri = Cri::connect(cd.address(), Duration::from_secs(30));
    cri.wait_runtime_ready(Duration::from_secs(20));
    import_pod_images(
        cd,
        &cri,
        cd.dir(),
        SANDBOX_IMAGE,
        WORKLOAD_IMAGE,
        Duration::from_secs(10),
    );
    cri
}

/// The sandbox ("pause") image of the CRI tests: the CRI config's `sandbox_image`.
pub const SANDBOX_IMAGE: &str = "docker.io/library/tether-pause:test";
/// The image of the pod's containers (same layer, different name and Cmd).
pub const WORKLOAD_IMAGE: &str = "docker.io/library/tether-busybox:test";

/// Builds the two busybox images of a pod, `sandbox` (sleeping) and `workload` (a shell),
/// imports them into containerd's CRI namespace and waits until the CRI lists both, each
/// within `timeout`. Returns what `ctr images import` printed.
pub fn import_pod_images(
    cd: &crate::common::Containerd,
    cri: &Cri,
    dir: &Path,
    sandbox: &str,
    workload: &str,
    timeout: Duration,
) -> String {
    let archive = crate::common::image::build_image_archive(
        dir,
        &[
            (sandbox, &["/bin/sleep", "1000000"][..]),
            (workload, &["/bin/sh"][..]),
        ],
    );
    let imported = cd.ctr_ok(&["images", "import", &archive.to_string_lossy()]);
    for image in [sandbox, workload] {
        cri.wait_image(image, timeout);
    }
    imported
}

/// A runc wrapper in `dir` that appends each call's arguments to a log before it runs runc:
/// (wrapper, log). Named as `BinaryName`, it shows which runc calls a shim made.
pub fn runc_wrapper(dir: &Path) -> (PathBuf, PathBuf) {
    let wrapper = dir.join("runc-wrapper");
    let log = dir.join("runc-wrapper.log");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$*\" >>'{}'\nexec runc \"$@\"\n",
            log.display()
        ),
    )
    .unwrap();
    fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    (wrapper, log)
}

/// Polls `f` every 50 ms until it returns `Ok` (→ its value) or `timeout` passes (→ panic
/// with `what` and the last `Err`, which describes what was seen).
pub fn poll<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) if Instant::now() >= deadline => {
                panic!("{what}: not reached within {timeout:?}; last seen: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Stops and removes the pod sandbox when dropped (also on a failed assertion), so containerd
/// is left with nothing running before the harness stops it.
pub struct PodGuard<'a> {
    pub cri: &'a Cri,
    pub id: Option<String>,
}

impl PodGuard<'_> {
    /// Stops and removes the pod now; both must succeed.
    pub fn remove(&mut self) {
        let id = self.id.take().expect("a pod to remove");
        let stop = StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        };
        self.cri
            .ok("StopPodSandbox", self.cri.rs().stop_pod_sandbox(stop));
        let rm = RemovePodSandboxRequest { pod_sandbox_id: id };
        self.cri
            .ok("RemovePodSandbox", self.cri.rs().remove_pod_sandbox(rm));
    }
}

impl Drop for PodGuard<'_> {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else { return };
        let stop = StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        };
        let _ = self
            .cri
            .call("StopPodSandbox", self.cri.rs().stop_pod_sandbox(stop));
        let rm = RemovePodSandboxRequest { pod_sandbox_id: id };
        let _ = self
            .cri
            .call("RemovePodSandbox", self.cri.rs().remove_pod_sandbox(rm));
    }
}

/// Removes the (by then empty) pod cgroup `parent` from every cgroup hierarchy when dropped:
/// runc removes a container's own cgroup, not the parent it created it under.
pub struct CgroupParentGuard(pub String);

impl Drop for CgroupParentGuard {
    fn drop(&mut self) {
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for line in info.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let fstype = right.split(' ').next().unwrap_or_default();
            let Some(mountpoint) = left.split(' ').nth(4) else {
                continue;
            };
            if fstype == "cgroup" || fstype == "cgroup2" {
                let _ = fs::remove_dir(format!("{mountpoint}{}", self.0));
            }
        }
    }
}
