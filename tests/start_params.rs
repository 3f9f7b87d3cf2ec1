//! `start` with nothing but containerd 2.3's `BootstrapParams` on stdin: no `-id`, `-namespace`
//! or `-address` flags and no `TTRPC_ADDRESS`/`GRPC_ADDRESS`/`NAMESPACE` environment, which 2.3
//! deprecated ("will be removed in a future release", `docs/runtime-v2.md`). The task's
//! identity, containerd's addresses and the socket dir all come from the parameters.
//!
//! Runs the real binary's `start` as containerd would, then talks to the server it started
//! over ttrpc, and shuts it down. Needs root (the server becomes a child subreaper and sets
//! its OOM score like in production); no containerd is involved.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use containerd_shim_protos::api;
use containerd_shim_protos::bootstrap_api::{BootstrapParams, BootstrapResult};
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim_async::TaskClient;
use sha2::{Digest, Sha256};

/// Kills the server and removes its socket, whatever the outcome.
struct Cleanup(Option<i32>, PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            kill(pid, libc::SIGKILL);
        }
        let _ = std::fs::remove_file(&self.1);
    }
}

fn start_with_stdin(bundle: &Path, stdin: &[u8], flags: &[&str]) -> std::process::Output {
    let mut child = Command::new(shim_binary())
        .args(flags)
        .arg("start")
        .current_dir(bundle)
        .env_remove("TTRPC_ADDRESS")
        .env_remove("GRPC_ADDRESS")
        .env_remove("NAMESPACE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tether start");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn start_with_bootstrap_params_alone_serves_the_task() {
    require_root();
    let dir = tempfile::Builder::new()
        .prefix("tether-params-")
        .tempdir_in("/tmp")
        .unwrap();
    let (namespace, id) = (unique_id("ns"), unique_id("params"));
    let grpc = dir.path().join("containerd.sock").display().to_string();
    // Nothing listens there: events are queued and retried, never fatal.
    let ttrpc = format!("{grpc}.ttrpc");
    let socket_dir = dir.path().join("s");
    let bundle = dir.path().join(&id);
    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::write(bundle.join("config.json"), r#"{"ociVersion":"1.0.2"}"#).unwrap();
    let params = BootstrapParams {
        instance_id: id.clone(),
        namespace: namespace.clone(),
        containerd_grpc_address: grpc.clone(),
        containerd_ttrpc_address: ttrpc.clone(),
        containerd_binary: "/bin/true".into(),
        socket_dir: Some(socket_dir.display().to_string()),
        ..Default::default()
    }
    .write_to_bytes()
    .unwrap();

    let digest: String = Sha256::digest(format!("{grpc}/{namespace}/{id}").as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let socket = socket_dir.join(digest);
    let mut cleanup = Cleanup(None, socket.clone());

    let out = start_with_stdin(&bundle, &params, &[]);
    assert!(out.status.success(), "{}", describe(&out));
    let result = BootstrapResult::parse_from_bytes(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not a BootstrapResult ({e}): {}", describe(&out)));
    assert_eq!(result.address, format!("unix://{}", socket.display()));
    let server: i32 = std::fs::read_to_string(bundle.join("shim.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    cleanup.0 = Some(server);
    // The server got the task's identity and containerd's addresses from the parameters.
    let argv = cmdline(server);
    for (flag, want) in [
        ("-namespace", namespace.as_str()),
        ("-id", id.as_str()),
        ("-address", grpc.as_str()),
        ("-publish-binary", "/bin/true"),
    ] {
        let at = argv.iter().position(|a| a == flag);
        assert_eq!(
            at.and_then(|i| argv.get(i + 1)).map(String::as_str),
            Some(want),
            "{flag} in {argv:?}"
        );
    }
    let environ = std::fs::read(format!("/proc/{server}/environ")).unwrap();
    assert!(
        environ
            .split(|&b| b == 0)
            .any(|kv| kv == format!("TTRPC_ADDRESS={ttrpc}").as_bytes()),
        "the server's TTRPC_ADDRESS is not the parameters' {ttrpc}"
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let bound = Duration::from_secs(15);
        let client =
            tokio::time::timeout(bound, ttrpc::asynchronous::Client::connect(&result.address))
                .await
                .expect("connect in time")
                .expect("connect");
        let task = TaskClient::new(client);
        let ctx = || ttrpc::context::with_timeout(bound.as_nanos() as i64);
        let c = task
            .connect(
                ctx(),
                &api::ConnectRequest {
                    id: id.clone(),
                    ..Default::default()
                },
            )
            .await
            .expect("Connect");
        assert_eq!(c.shim_pid as i32, server);
        // Nothing was created: the server knows no task yet, and says so with NotFound.
        let e = task
            .state(
                ctx(),
                &api::StateRequest {
                    id: id.clone(),
                    ..Default::default()
                },
            )
            .await
            .expect_err("State of a task never created");
        assert!(
            matches!(&e, ttrpc::Error::RpcStatus(s) if s.code() == ttrpc::Code::NOT_FOUND),
            "{e:?}"
        );
        // Idle: Shutdown ends it.
        let _ = task
            .shutdown(
                ctx(),
                &api::ShutdownRequest {
                    id: id.clone(),
                    ..Default::default()
                },
            )
            .await;
    });
    assert!(
        wait_until(Duration::from_secs(10), || !alive(server)),
        "the server did not exit after Shutdown"
    );
    assert!(
        wait_until(Duration::from_secs(5), || !socket.exists()),
        "{} left behind",
        socket.display()
    );
}

/// With neither flags nor parameters naming the task, `start` fails with a clear message and
/// starts nothing.
#[test]
fn start_without_flags_or_params_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for stdin in [&b""[..], b"not a protobuf at all"] {
        let out = start_with_stdin(dir.path(), stdin, &[]);
        assert!(!out.status.success(), "{}", describe(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("no namespace") && stderr.contains("bootstrap"),
            "{}",
            describe(&out)
        );
    }
    let out = start_with_stdin(dir.path(), b"", &["-namespace", "default"]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no container id"),
        "{}",
        describe(&out)
    );
    assert!(!dir.path().join("shim.pid").exists());
}
