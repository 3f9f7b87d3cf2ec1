//! The ttrpc edge: `containerd.task.v2.Task` (containerd 1.6/1.7) and `containerd.task.v3.Task`
//! (2.x) served by the same handlers. Each method decodes its request into plain values, makes
//! one supervisor call and encodes the answer. This is the only module that sees task-API
//! protobuf types and the only place an [`Error`] becomes a ttrpc status code.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim_protos::api::{self, Status};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::empty::Empty;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::shim::oci::{Options as PbRuncOptions, ProcessDetails};
use containerd_shim_protos::shim_async::{create_task, Task};
use tokio::sync::Notify;
use tracing::Instrument;
use ttrpc::asynchronous::{Service, TtrpcContext};
use ttrpc::Code;

use crate::error::Error;
use crate::events::timestamp;
use crate::io::StdioConfig;
use crate::mount::Mount;
use crate::process::{ExitInfo, ProcessId, State};
use crate::protos::checkpoint::CheckpointOptions as PbCheckpointOptions;
use crate::protos::runtimeoptions::Options as CriRuntimeOptions;
use crate::runtime::{CheckpointOptions, RuncOptions};
use crate::supervisor::{CreateRequest, Supervisor};
use crate::trace_context::TraceContext;

/// The service names containerd dials: v2 up to 1.7, v3 from 2.0. The messages are identical.
pub(crate) const TASK_SERVICE_V2: &str = "containerd.task.v2.Task";
pub(crate) const TASK_SERVICE_V3: &str = "containerd.task.v3.Task";

/// The `delete` action's answer on stdout: a task-API `DeleteResponse`, encoded here so the
/// task-API types stay in this module.
pub(crate) fn encode_delete_response(
    pid: u32,
    exit_status: u32,
    exited_at: std::time::SystemTime,
) -> Result<Vec<u8>, Error> {
    api::DeleteResponse {
        pid,
        exit_status,
        exited_at: MessageField::some(timestamp(exited_at)),
        ..Default::default()
    }
    .write_to_bytes()
    .map_err(|e| Error::Rpc {
        context: "encode DeleteResponse".into(),
        message: e.to_string(),
    })
}

/// The one mapping from our errors to ttrpc status codes.
pub(crate) fn to_status(e: Error) -> ttrpc::Error {
    let code = match &e {
        Error::InvalidArgument(_) => Code::INVALID_ARGUMENT,
        Error::NotFound(_) => Code::NOT_FOUND,
        Error::AlreadyExists(_) => Code::ALREADY_EXISTS,
        Error::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
        Error::Unimplemented(_) => Code::UNIMPLEMENTED,
        Error::DeadlineExceeded(_) => Code::DEADLINE_EXCEEDED,
        // The Go shim reports runtime failures as Unknown; containerd shows the message.
        Error::Runtime { .. } => Code::UNKNOWN,
        Error::Rpc { .. } | Error::Io { .. } => Code::INTERNAL,
    };
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, e.to_string()))
}

/// The task service.
pub(crate) struct TaskService {
    sup: Supervisor,
    /// Notified when `Shutdown` finds no container left.
    shutdown: Arc<Notify>,
    /// containerd asked us to shut down while a container still existed or was being created.
    /// If that create then fails, nobody will ask again, so the failure path shuts down.
    shutdown_requested: AtomicBool,
}

impl TaskService {
    pub(crate) fn new(sup: Supervisor, shutdown: Arc<Notify>) -> TaskService {
        TaskService {
            sup,
            shutdown,
            shutdown_requested: AtomicBool::new(false),
        }
    }

    fn shutdown_if_idle(&self) {
        if self.shutdown_requested.load(Ordering::SeqCst) && self.sup.is_empty() {
            tracing::info!("no container left; shutting down");
            self.shutdown.notify_one();
        }
    }
}

/// The service registered under both task API names.
pub(crate) fn services(svc: Arc<TaskService>) -> HashMap<String, Service> {
    let mut all = create_task(svc.clone());
    let v3 = create_task(svc)
        .remove(TASK_SERVICE_V3)
        .expect("generated service is v3");
    all.insert(TASK_SERVICE_V2.to_string(), v3);
    all
}

type Res<T> = ttrpc::Result<T>;

/// Runs one handler in its span, which names the method, the container and the exec (empty
/// for the init and for container-wide methods), and the trace id when containerd sent a W3C
/// trace context: the one way every method is instrumented. The context stays current for
/// the runtime calls the handler makes (see [`crate::trace_context`]).
async fn traced<T>(
    ctx: &TtrpcContext,
    rpc: &'static str,
    id: &str,
    exec_id: &str,
    handler: impl std::future::Future<Output = Res<T>>,
) -> Res<T> {
    let trace = TraceContext::from_metadata(&ctx.metadata);
    let span = tracing::info_span!(
        "task",
        rpc,
        id = %id,
        exec_id = %exec_id,
        trace_id = tracing::field::Empty
    );
    if let Some(t) = &trace {
        span.record("trace_id", tracing::field::display(t.trace_id()));
    }
    crate::trace_context::scope(trace, handler.instrument(span)).await
}

/// Decodes the runtime options of a `Create`:
/// - `containerd.runc.v1.Options`, as `ctr` and a runc-type CRI handler send them;
/// - `runtimeoptions.v1.Options`, which containerd's CRI plugin sends for any other runtime
///   type (so for tether): runc's option names are read from the TOML file at `ConfigPath`,
///   or from `ConfigBody` (containerd 1.7+). Without this a Kubernetes node could not ask for
///   the systemd cgroup driver or another runc binary.
///
/// Anything else (or nothing) means defaults.
pub fn decode_options(any: &MessageField<Any>) -> Result<RuncOptions, Error> {
    let Some(any) = any.as_ref() else {
        return Ok(RuncOptions::default());
    };
    if any.type_url.ends_with("runtimeoptions.v1.Options") {
        let cri = CriRuntimeOptions::parse_from_bytes(&any.value).map_err(|e| {
            Error::InvalidArgument(format!("malformed runtimeoptions.v1.Options: {e}"))
        })?;
        let body = String::from_utf8_lossy(&cri.config_body);
        if !body.trim().is_empty() {
            return RuncOptions::from_toml(&body)
                .map_err(|e| Error::InvalidArgument(format!("runtime options ConfigBody: {e}")));
        }
        let path = cri.config_path;
        if path.is_empty() {
            return Ok(RuncOptions::default());
        }
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Error::InvalidArgument(format!("runtime options ConfigPath {path}: {e}"))
        })?;
        return RuncOptions::from_toml(&text)
            .map_err(|e| Error::InvalidArgument(format!("runtime options file {path}: {e}")));
    }
    if !any.type_url.ends_with("containerd.runc.v1.Options") {
        return Ok(RuncOptions::default());
    }
    let o = PbRuncOptions::parse_from_bytes(&any.value)
        .map_err(|e| Error::InvalidArgument(format!("malformed runc options: {e}")))?;
    Ok(RuncOptions {
        binary_name: o.binary_name,
        root: o.root,
        systemd_cgroup: o.systemd_cgroup,
        no_pivot_root: o.no_pivot_root,
        no_new_keyring: o.no_new_keyring,
        io_uid: o.io_uid,
        io_gid: o.io_gid,
        shim_cgroup: o.shim_cgroup,
        criu_work_path: o.criu_work_path,
        ..RuncOptions::default()
    })
}

/// `containerd.runc.v1.CheckpointOptions` (our copy, with containerd 2.4's `parent_path`) plus
/// the request's image path.
fn decode_checkpoint_options(req: &api::CheckpointTaskRequest) -> Result<CheckpointOptions, Error> {
    let o = match req.options.as_ref() {
        Some(any)
            if any
                .type_url
                .ends_with("containerd.runc.v1.CheckpointOptions") =>
        {
            PbCheckpointOptions::parse_from_bytes(&any.value)
                .map_err(|e| Error::InvalidArgument(format!("malformed checkpoint options: {e}")))?
        }
        _ => PbCheckpointOptions::default(),
    };
    // containerd passes the image directory as `path`; an image_path option overrides it.
    let image = if o.image_path.is_empty() {
        req.path.clone()
    } else {
        o.image_path
    };
    Ok(CheckpointOptions {
        image_path: image.into(),
        work_path: o.work_path.into(),
        parent_path: o.parent_path,
        exit: o.exit,
        open_tcp: o.open_tcp,
        external_unix_sockets: o.external_unix_sockets,
        terminal: o.terminal,
        file_locks: o.file_locks,
        empty_namespaces: o.empty_namespaces,
        cgroups_mode: o.cgroups_mode,
    })
}

fn status_of(s: State) -> Status {
    match s {
        State::Created => Status::CREATED,
        State::Running => Status::RUNNING,
        State::Paused => Status::PAUSED,
        State::Stopped => Status::STOPPED,
    }
}

fn exited_at(
    e: Option<ExitInfo>,
) -> MessageField<containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp> {
    e.map(|e| timestamp(e.at)).into()
}

#[async_trait]
impl Task for TaskService {
    async fn create(
        &self,
        ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> Res<api::CreateTaskResponse> {
        traced(ctx, "create", &req.id, "", async {
            let options = decode_options(&req.options).map_err(to_status)?;
            let create = CreateRequest {
                id: req.id.clone(),
                bundle: PathBuf::from(&req.bundle),
                rootfs: req
                    .rootfs
                    .iter()
                    .map(|m| Mount {
                        kind: m.type_.clone(),
                        source: m.source.clone(),
                        options: m.options.clone(),
                    })
                    .collect(),
                stdio: StdioConfig {
                    stdin: req.stdin.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    terminal: req.terminal,
                },
                options,
                checkpoint: req.checkpoint.clone(),
            };
            let pid = self.sup.create(create).await.map_err(|e| {
                self.shutdown_if_idle();
                to_status(e)
            })?;
            Ok(api::CreateTaskResponse {
                pid,
                ..Default::default()
            })
        })
        .await
    }

    async fn start(&self, ctx: &TtrpcContext, req: api::StartRequest) -> Res<api::StartResponse> {
        traced(ctx, "start", &req.id, &req.exec_id, async {
            let process = ProcessId::from_api(&req.exec_id).map_err(to_status)?;
            let pid = self.sup.start(&req.id, &process).await.map_err(to_status)?;
            Ok(api::StartResponse {
                pid,
                ..Default::default()
            })
        })
        .await
    }

    async fn state(&self, ctx: &TtrpcContext, req: api::StateRequest) -> Res<api::StateResponse> {
        traced(ctx, "state", &req.id, &req.exec_id, async {
            let process = ProcessId::from_api(&req.exec_id).map_err(to_status)?;
            let s = self.sup.state(&req.id, &process).map_err(to_status)?;
            Ok(api::StateResponse {
                id: s.id,
                exec_id: s.exec_id,
                bundle: s.bundle.display().to_string(),
                pid: s.pid,
                status: status_of(s.state).into(),
                stdin: s.stdio.stdin,
                stdout: s.stdio.stdout,
                stderr: s.stdio.stderr,
                terminal: s.stdio.terminal,
                exit_status: s.exit.map_or(0, |e| e.status),
                exited_at: exited_at(s.exit),
                ..Default::default()
            })
        })
        .await
    }

    async fn wait(&self, ctx: &TtrpcContext, req: api::WaitRequest) -> Res<api::WaitResponse> {
        traced(ctx, "wait", &req.id, &req.exec_id, async {
            let process = ProcessId::from_api(&req.exec_id).map_err(to_status)?;
            let e = self.sup.wait(&req.id, &process).await.map_err(to_status)?;
            Ok(api::WaitResponse {
                exit_status: e.status,
                exited_at: exited_at(Some(e)),
                ..Default::default()
            })
        })
        .await
    }

    async fn kill(&self, ctx: &TtrpcContext, req: api::KillRequest) -> Res<Empty> {
        traced(ctx, "kill", &req.id, &req.exec_id, async {
            let process = ProcessId::from_api(&req.exec_id).map_err(to_status)?;
            self.sup
                .kill(&req.id, &process, req.signal, req.all)
                .await
                .map_err(to_status)?;
            Ok(Empty::new())
        })
        .await
    }

    async fn delete(
        &self,
        ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> Res<api::DeleteResponse> {
        traced(ctx, "delete", &req.id, &req.exec_id, async {
            let process = ProcessId::from_api(&req.exec_id).map_err(to_status)?;
            let d = self
                .sup
                .delete(&req.id, &process)
                .await
                .map_err(to_status)?;
            Ok(api::DeleteResponse {
                pid: d.pid,
                exit_status: d.exit.status,
                exited_at: exited_at(Some(d.exit)),
                ..Default::default()
            })
        })
        .await
    }

    async fn pids(&self, ctx: &TtrpcContext, req: api::PidsRequest) -> Res<api::PidsResponse> {
        traced(ctx, "pids", &req.id, "", async {
            let pids = self.sup.pids(&req.id).await.map_err(to_status)?;
            let processes = pids
                .into_iter()
                .map(|(pid, exec_id)| api::ProcessInfo {
                    pid,
                    // containerd reads `containerd.runc.v1.ProcessDetails` to tell execs apart.
                    info: exec_id
                        .map(|exec_id| Any {
                            type_url: "containerd.runc.v1.ProcessDetails".into(),
                            value: ProcessDetails {
                                exec_id,
                                ..Default::default()
                            }
                            .write_to_bytes()
                            .unwrap_or_default(),
                            ..Default::default()
                        })
                        .into(),
                    ..Default::default()
                })
                .collect();
            Ok(api::PidsResponse {
                processes,
                ..Default::default()
            })
        })
        .await
    }

    async fn close_io(&self, ctx: &TtrpcContext, req: api::CloseIORequest) -> Res<Empty> {
        traced(ctx, "close_io", &req.id, &req.exec_id, async {
            let process = ProcessId::from_api(&req.exec_id).map_err(to_status)?;
            self.sup
                .close_io(&req.id, &process, req.stdin)
                .map_err(to_status)?;
            Ok(Empty::new())
        })
        .await
    }

    async fn connect(
        &self,
        ctx: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> Res<api::ConnectResponse> {
        traced(ctx, "connect", &req.id, "", async {
            Ok(api::ConnectResponse {
                shim_pid: std::process::id(),
                task_pid: self.sup.init_pid(&req.id),
                version: crate::VERSION.to_string(),
                ..Default::default()
            })
        })
        .await
    }

    async fn shutdown(&self, ctx: &TtrpcContext, req: api::ShutdownRequest) -> Res<Empty> {
        traced(ctx, "shutdown", &req.id, "", async {
            // containerd 2.1+ sends one after every task delete of a grouped shim.
            tracing::debug!("shutdown requested");
            self.shutdown_requested.store(true, Ordering::SeqCst);
            self.shutdown_if_idle();
            Ok(Empty::new())
        })
        .await
    }

    async fn exec(&self, ctx: &TtrpcContext, req: api::ExecProcessRequest) -> Res<Empty> {
        traced(ctx, "exec", &req.id, &req.exec_id, async {
            let stdio = StdioConfig {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
            };
            let spec = req
                .spec
                .as_ref()
                .map(|a| a.value.as_slice())
                .unwrap_or_default();
            self.sup
                .exec(&req.id, &req.exec_id, stdio, spec)
                .map_err(to_status)?;
            Ok(Empty::new())
        })
        .await
    }

    async fn resize_pty(&self, ctx: &TtrpcContext, req: api::ResizePtyRequest) -> Res<Empty> {
        traced(ctx, "resize_pty", &req.id, &req.exec_id, async {
            let process = ProcessId::from_api(&req.exec_id).map_err(to_status)?;
            self.sup
                .resize_pty(&req.id, &process, req.width, req.height)
                .map_err(to_status)?;
            Ok(Empty::new())
        })
        .await
    }

    async fn pause(&self, ctx: &TtrpcContext, req: api::PauseRequest) -> Res<Empty> {
        traced(ctx, "pause", &req.id, "", async {
            self.sup.pause(&req.id).await.map_err(to_status)?;
            Ok(Empty::new())
        })
        .await
    }

    async fn resume(&self, ctx: &TtrpcContext, req: api::ResumeRequest) -> Res<Empty> {
        traced(ctx, "resume", &req.id, "", async {
            self.sup.resume(&req.id).await.map_err(to_status)?;
            Ok(Empty::new())
        })
        .await
    }

    async fn checkpoint(&self, ctx: &TtrpcContext, req: api::CheckpointTaskRequest) -> Res<Empty> {
        traced(ctx, "checkpoint", &req.id, "", async {
            let opts = decode_checkpoint_options(&req).map_err(to_status)?;
            self.sup
                .checkpoint(&req.id, opts)
                .await
                .map_err(to_status)?;
            Ok(Empty::new())
        })
        .await
    }

    async fn update(&self, ctx: &TtrpcContext, req: api::UpdateTaskRequest) -> Res<Empty> {
        traced(ctx, "update", &req.id, "", async {
            let Some(resources) = req.resources.as_ref() else {
                return Err(to_status(Error::InvalidArgument(
                    "update carries no resources".into(),
                )));
            };
            self.sup
                .update(&req.id, &resources.value)
                .await
                .map_err(to_status)?;
            Ok(Empty::new())
        })
        .await
    }

    async fn stats(&self, ctx: &TtrpcContext, req: api::StatsRequest) -> Res<api::StatsResponse> {
        traced(ctx, "stats", &req.id, "", async {
            let metrics = self.sup.stats(&req.id).map_err(to_status)?;
            Ok(api::StatsResponse {
                stats: MessageField::some(metrics.to_any()),
                ..Default::default()
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_kind_has_its_code() {
        let code = |e: Error| match to_status(e) {
            ttrpc::Error::RpcStatus(s) => s.code(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            code(Error::InvalidArgument("x".into())),
            Code::INVALID_ARGUMENT
        );
        assert_eq!(code(Error::NotFound("x".into())), Code::NOT_FOUND);
        assert_eq!(code(Error::AlreadyExists("x".into())), Code::ALREADY_EXISTS);
        assert_eq!(
            code(Error::FailedPrecondition("x".into())),
            Code::FAILED_PRECONDITION
        );
        assert_eq!(code(Error::Unimplemented("x".into())), Code::UNIMPLEMENTED);
        assert_eq!(
            code(Error::DeadlineExceeded("x".into())),
            Code::DEADLINE_EXCEEDED
        );
        assert_eq!(
            code(Error::Runtime {
                op: "create",
                msg: "boom".into()
            }),
            Code::UNKNOWN
        );
        assert_eq!(
            code(Error::Io {
                context: "x".into(),
                source: std::io::Error::other("y")
            }),
            Code::INTERNAL
        );
        assert_eq!(
            code(Error::Rpc {
                context: "x".into(),
                message: "y".into()
            }),
            Code::INTERNAL
        );
    }

    #[test]
    fn runtime_message_reaches_the_caller() {
        let ttrpc::Error::RpcStatus(s) = to_status(Error::Runtime {
            op: "create",
            msg: "exec: \"x\": not found".into(),
        }) else {
            panic!()
        };
        assert_eq!(
            s.message(),
            "OCI runtime create failed: exec: \"x\": not found"
        );
    }

    #[test]
    fn checkpoint_options_carry_containerd_2_4s_parent_path() {
        // The crate's CheckpointOptions (fields 1-9) plus field 10 as containerd 2.4 appends it:
        // tag 10, wire type 2.
        let mut value = containerd_shim_protos::shim::oci::CheckpointOptions {
            exit: true,
            work_path: "/w".into(),
            ..Default::default()
        }
        .write_to_bytes()
        .unwrap();
        value.extend([0x52, 7]);
        value.extend(b"/parent");
        let req = api::CheckpointTaskRequest {
            path: "/img".into(),
            options: MessageField::some(Any {
                type_url: "containerd.runc.v1.CheckpointOptions".into(),
                value,
                ..Default::default()
            }),
            ..Default::default()
        };
        let o = decode_checkpoint_options(&req).unwrap();
        assert_eq!(
            (
                o.parent_path.as_str(),
                o.exit,
                o.work_path.to_str(),
                o.image_path.to_str()
            ),
            ("/parent", true, Some("/w"), Some("/img"))
        );
    }

    #[test]
    fn runc_options_carry_shim_cgroup_and_criu_work_path() {
        let pb = PbRuncOptions {
            shim_cgroup: "/tether/shims".into(),
            criu_work_path: "/var/lib/criu".into(),
            ..Default::default()
        };
        let any = Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: pb.write_to_bytes().unwrap(),
            ..Default::default()
        };
        let o = decode_options(&MessageField::some(any)).unwrap();
        assert_eq!(
            (o.shim_cgroup.as_str(), o.criu_work_path.as_str()),
            ("/tether/shims", "/var/lib/criu")
        );
    }

    #[test]
    fn options_decoding() {
        use containerd_shim_protos::protobuf::well_known_types::any::Any;
        let pb = PbRuncOptions {
            binary_name: "crun".into(),
            root: "/r".into(),
            systemd_cgroup: true,
            ..Default::default()
        };
        let any = Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: pb.write_to_bytes().unwrap(),
            ..Default::default()
        };
        let o = decode_options(&MessageField::some(any)).unwrap();
        assert_eq!(
            (o.binary_name.as_str(), o.root.as_str(), o.systemd_cgroup),
            ("crun", "/r", true)
        );
        // runtimeoptions.v1.Options, as containerd's CRI plugin sends it for a non-runc type.
        let cri = |path: &str, body: &str| {
            let o = CriRuntimeOptions {
                config_path: path.into(),
                config_body: body.into(),
                ..Default::default()
            };
            MessageField::some(Any {
                type_url: "runtimeoptions.v1.Options".into(),
                value: o.write_to_bytes().unwrap(),
                ..Default::default()
            })
        };
        // The wire form is containerd's: config_path is field 2, config_body field 3.
        let Some(any) = cri("/p", "b").take() else {
            panic!()
        };
        assert_eq!(any.value, [0x12, 2, b'/', b'p', 0x1a, 1, b'b']);
        assert_eq!(
            decode_options(&cri("", "")).unwrap(),
            RuncOptions::default()
        );
        let body = decode_options(&cri("", "SystemdCgroup = true\nBinaryName = \"crun\"")).unwrap();
        assert_eq!(
            (body.systemd_cgroup, body.binary_name.as_str()),
            (true, "crun")
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tether.toml");
        std::fs::write(&file, "Root = \"/run/r\"\n").unwrap();
        let path = file.display().to_string();
        assert_eq!(decode_options(&cri(&path, "")).unwrap().root, "/run/r");
        let missing = dir.path().join("missing.toml").display().to_string();
        assert!(
            matches!(decode_options(&cri(&missing, "")), Err(Error::InvalidArgument(m)) if m.contains("missing.toml"))
        );
        assert!(matches!(
            decode_options(&cri("", "SystemdCgroup = 1")),
            Err(Error::InvalidArgument(_))
        ));
        let garbage = Any {
            type_url: "runtimeoptions.v1.Options".into(),
            value: vec![0x12, 0x40, b'x'],
            ..Default::default()
        };
        assert!(matches!(
            decode_options(&MessageField::some(garbage)),
            Err(Error::InvalidArgument(_))
        ));
        let bad = Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: vec![0xff, 0xff],
            ..Default::default()
        };
        assert!(matches!(
            decode_options(&MessageField::some(bad)),
            Err(Error::InvalidArgument(_))
        ));
        assert_eq!(
            decode_options(&MessageField::none()).unwrap(),
            RuncOptions::default()
        );
    }
}
