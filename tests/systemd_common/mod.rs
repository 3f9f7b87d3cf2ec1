//! What `tests/systemd_node.rs` and `tests/systemd_node_oom.rs` share: the systemd checks and
//! a CRI pod on runc's systemd cgroup driver through tether (see those files).

#![allow(dead_code)]

use std::fs;
use std::future::Future;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;
use containerd_shim_protos::api;
use containerd_shim_protos::cgroups_v2::metrics::Metrics as CgroupV2Metrics;
use containerd_shim_protos::protobuf::Message;
use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerState, ContainerStatsRequest, ContainerStatus,
    ContainerStatusRequest, CreateContainerRequest, ImageSpec, ImageStatusRequest,
    LinuxContainerConfig, LinuxContainerResources, LinuxContainerSecurityContext,
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxMetadata, RemovePodSandboxRequest, RunPodSandboxRequest,
    StartContainerRequest, StatusRequest, StopPodSandboxRequest,
};
use tonic::transport::{Channel, Endpoint, Uri};

const SANDBOX_IMAGE: &str = "docker.io/library/tether-pause:test";
const WORKLOAD_IMAGE: &str = "docker.io/library/tether-busybox:test";
const RPC_TIMEOUT: Duration = Duration::from_secs(60);
const OOM_LIMIT: i64 = 16 * 1024 * 1024;

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
    if containerd_version() >= (2, 0) {
        format!(
            r#"[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = "{SANDBOX_IMAGE}"
[plugins."io.containerd.cri.v1.runtime"]
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
    } else {
        format!(
            r#"[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{SANDBOX_IMAGE}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.tether]
      runtime_type = "io.containerd.tether.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.tether.options]
        ConfigPath = "{{dir}}/tether.toml"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{{dir}}/cni/bin"
    conf_dir = "{{dir}}/cni/net.d"
"#
        )
    }
}

/// Blocking CRI client over containerd's socket (as in `tests/cri.rs`).
struct Cri {
    rt: tokio::runtime::Runtime,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

impl Cri {
    fn connect(socket: &str) -> Cri {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let socket = socket.to_string();
        let channel = rt
            .block_on(async {
                let endpoint = Endpoint::try_from("http://[::]:50051")
                    .expect("endpoint")
                    .connect_timeout(Duration::from_secs(5))
                    .timeout(RPC_TIMEOUT);
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
        }
    }

    fn call<T>(
        &self,
        what: &str,
        fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, tonic::Status> {
        self.rt
            .block_on(async { tokio::time::timeout(RPC_TIMEOUT, fut).await })
            .unwrap_or_else(|_| panic!("CRI {what} did not answer within {RPC_TIMEOUT:?}"))
            .map(tonic::Response::into_inner)
    }

    fn ok<T>(
        &self,
        what: &str,
        fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> T {
        self.call(what, fut)
            .unwrap_or_else(|s| panic!("CRI {what} failed: {:?}: {}", s.code(), s.message()))
    }

    fn rs(&self) -> RuntimeServiceClient<Channel> {
        self.runtime.clone()
    }

    fn container_status(&self, id: &str) -> ContainerStatus {
        let req = ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: false,
        };
        self.ok("ContainerStatus", self.rs().container_status(req))
            .status
            .unwrap_or_else(|| panic!("ContainerStatus of {id} has no status"))
    }
}

fn poll<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) if Instant::now() >= deadline => {
                panic!("{what}: not reached within {timeout:?}; last seen: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Stops and removes the pod sandbox when dropped.
struct PodGuard<'a> {
    cri: &'a Cri,
    id: Option<String>,
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

fn namespaces() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Node as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

fn container_config(name: &str, argv: &[&str], memory_limit: i64) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: WORKLOAD_IMAGE.into(),
            ..Default::default()
        }),
        command: argv[..1].iter().map(|s| s.to_string()).collect(),
        args: argv[1..].iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        linux: Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                memory_limit_in_bytes: memory_limit,
                ..Default::default()
            }),
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(namespaces()),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
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
    let cd = Containerd::start_cri(
        ContainerdOptions::default(),
        CriOptions {
            config: cri_config(),
        },
    );
    let dir = cd.dir().to_path_buf();
    for d in ["cni/bin", "cni/net.d", "pod-logs"] {
        fs::create_dir_all(dir.join(d)).unwrap();
    }
    // runc through a wrapper that logs its arguments: proves `--systemd-cgroup` was passed.
    let wrapper = dir.join("runc-wrapper");
    let wrapper_log = dir.join("runc-wrapper.log");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$*\" >>'{}'\nexec runc \"$@\"\n",
            wrapper_log.display()
        ),
    )
    .unwrap();
    fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    fs::write(
        dir.join("tether.toml"),
        format!(
            "SystemdCgroup = true\nBinaryName = \"{}\"\n",
            wrapper.display()
        ),
    )
    .unwrap();
    let cri = Cri::connect(cd.address());
    poll(
        Duration::from_secs(20) * scale,
        "CRI Status RuntimeReady",
        || {
            let req = StatusRequest { verbose: false };
            match cri.call("Status", cri.rs().status(req)) {
                Ok(resp) => {
                    let conds = resp.status.map(|s| s.conditions).unwrap_or_default();
                    if conds.iter().any(|c| c.r#type == "RuntimeReady" && c.status) {
                        Ok(())
                    } else {
                        Err(format!("{conds:?}"))
                    }
                }
                Err(s) => Err(format!("{:?}: {}", s.code(), s.message())),
            }
        },
    );
    let archive = image::build_image_archive(
        &dir,
        &[
            (SANDBOX_IMAGE, &["/bin/sleep", "1000000"][..]),
            (WORKLOAD_IMAGE, &["/bin/sh"][..]),
        ],
    );
    cd.ctr_ok(&["images", "import", &archive.to_string_lossy()]);
    for image in [SANDBOX_IMAGE, WORKLOAD_IMAGE] {
        poll(
            Duration::from_secs(10) * scale,
            &format!("ImageStatus {image}"),
            || {
                let req = ImageStatusRequest {
                    image: Some(ImageSpec {
                        image: image.into(),
                        ..Default::default()
                    }),
                    verbose: false,
                };
                let resp = cri.ok("ImageStatus", cri.images.clone().image_status(req));
                resp.image.map(|_| ()).ok_or_else(|| "not found".into())
            },
        );
    }
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
                namespace_options: Some(namespaces()),
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
    let sandbox = cri
        .ok(
            "RunPodSandbox",
            cri.rs().run_pod_sandbox(RunPodSandboxRequest {
                config: Some(pod.clone()),
                runtime_handler: "tether".into(),
            }),
        )
        .pod_sandbox_id;
    guard.id = Some(sandbox.clone());
    cd.track_id(&sandbox);

    let create = |name: &str, argv: &[&str], memory_limit: i64| -> String {
        let id = cri
            .ok(
                &format!("CreateContainer {name}"),
                cri.rs().create_container(CreateContainerRequest {
                    pod_sandbox_id: sandbox.clone(),
                    config: Some(container_config(name, argv, memory_limit)),
                    sandbox_config: Some(pod.clone()),
                }),
            )
            .container_id;
        cd.track_id(&id);
        cri.ok(
            &format!("StartContainer {name}"),
            cri.rs().start_container(StartContainerRequest {
                container_id: id.clone(),
            }),
        );
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
    let stats = cri
        .ok(
            "ContainerStats",
            cri.rs().container_stats(ContainerStatsRequest {
                container_id: sleeper.clone(),
            }),
        )
        .stats
        .expect("ContainerStats has stats");
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

    if with_oom {
        // Over its memory limit (runc's systemd driver sets it as the scope's MemoryMax).
        let oom = create("oom", &["/bin/sh", "-c", "tail /dev/zero"], OOM_LIMIT);
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
