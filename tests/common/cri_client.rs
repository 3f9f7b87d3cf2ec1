//! A blocking client for containerd's CRI plugin, the kubelet's own messages (`k8s-cri`), for
//! the CRI tests (`tests/cri.rs`, `tests/userns.rs`). Included with `#[path]` by those binaries
//! only, so the others do not build tonic.

#![allow(dead_code)]

use std::fs;
use std::future::Future;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerStatus, ContainerStatusRequest,
    CreateContainerRequest, ExecSyncRequest, ImageSpec, ImageStatusRequest, PodSandboxConfig,
    RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest, StopPodSandboxRequest,
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
