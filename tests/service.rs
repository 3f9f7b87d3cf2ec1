//! The task API over the shim's real ttrpc socket, with a fake runtime.
//!
//! Each test runs the real `containerd-shim-tether-v2` binary's `start` action exactly as
//! containerd does (cwd = bundle, Go-style flags, empty stdin, no `TTRPC_ADDRESS` so events are
//! discarded), connects a ttrpc client to the address it prints, and drives the task API. The
//! OCI runtime is `tests/fixtures/fake-runc`, a shell script that emulates runc's command line
//! and leaves an ordinary process behind as the container's init, so no containerd, runc,
//! namespaces or cgroups are involved and the error codes and lifecycle are checked exactly.
//!
//! Needs root (the shim's socket directory `/run/containerd/s` is root-only): every test fails,
//! never skips, when not root. Tests run in parallel; each has its own temp dir, namespace, fake
//! containerd address and container ids, hence its own shim socket. Every wait is bounded, and
//! the [`Guard`] kills the shim and the fake containers whatever the outcome.

use std::fs;
use std::future::Future;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use containerd_shim_protos::api::{self, Status};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::empty::Empty;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::shim::oci::{Options as RuncOptions, ProcessDetails};
use containerd_shim_protos::shim_async::TaskClient;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use ttrpc::asynchronous::Client;
use ttrpc::Code;

mod common;
// Ids and namespaces are unique in this test process (`unique_id`); each test's shim socket
// is unique on the machine too, as it is derived from the `-address`, a path in the test's
// own temp dir.
use common::{describe, proc_stat, unique_id, wait_until_async};

/// The shim binary under test, built by cargo for integration tests.
const SHIM: &str = env!("CARGO_BIN_EXE_containerd-shim-tether-v2");

/// The fake OCI runtime.
const FAKE_RUNC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/fake-runc");

/// Where the shim puts its sockets.
const SOCKET_DIR: &str = "/run/containerd/s";

/// Bound of one ttrpc call.
const RPC_TIMEOUT: Duration = Duration::from_secs(15);

/// Bound of one run of the shim binary (`start` or `delete` action).
const CMD_TIMEOUT: Duration = Duration::from_secs(30);

/// `containerd.runc.v1.Options` as containerd's typeurl names it.
const RUNC_OPTIONS_URL: &str = "containerd.runc.v1.Options";

const V2: &str = "containerd.task.v2.Task";

const SIGKILL: u32 = 9;
const SIGTERM: u32 = 15;

// ---------------------------------------------------------------------------------------------
// Preconditions
// ---------------------------------------------------------------------------------------------

/// Fails (never skips) unless root, and unless the fake runtime is there and executable.
fn require_root_and_fixture() {
    let euid = nix::unistd::geteuid();
    assert!(
        euid.is_root(),
        "tests/service.rs must run as root (euid 0, not {euid}): the shim binds its socket in the \
         root-only {SOCKET_DIR}. Run `sudo -E cargo test --test service` or as root in CI."
    );
    let mode = fs::metadata(FAKE_RUNC)
        .unwrap_or_else(|e| panic!("fake runtime {FAKE_RUNC}: {e}"))
        .permissions()
        .mode();
    assert!(mode & 0o111 == 0o111, "{FAKE_RUNC} must be executable (mode 755), is {mode:o}: `chmod 755` it / check git's file mode");
}

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

/// The Go shim's socket derivation, computed independently of the shim's code.
fn expected_socket(address: &str, namespace: &str, group: &str) -> PathBuf {
    let digest = Sha256::digest(format!("{address}/{namespace}/{group}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    Path::new(SOCKET_DIR).join(hex)
}

/// Awaits `f` for at most [`RPC_TIMEOUT`]: a hang is a failure naming `what`.
async fn bounded<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(RPC_TIMEOUT, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no answer within {RPC_TIMEOUT:?}"),
    }
}

fn ctx() -> ttrpc::context::Context {
    ttrpc::context::Context::default()
}

/// The ttrpc status code of a failed call, with its message; panics if the call succeeded or
/// failed without a status (transport error).
#[track_caller]
fn status_of<T: std::fmt::Debug>(what: &str, r: ttrpc::Result<T>) -> (Code, String) {
    match r {
        Err(ttrpc::Error::RpcStatus(s)) => (s.code(), s.message().to_string()),
        Err(other) => panic!("{what}: want a ttrpc status, got transport error {other:?}"),
        Ok(v) => panic!("{what}: want an error status, got OK {v:?}"),
    }
}

/// Asserts that the call failed with `want`; returns the message.
#[track_caller]
fn expect_code<T: std::fmt::Debug>(what: &str, r: ttrpc::Result<T>, want: Code) -> String {
    let (code, msg) = status_of(what, r);
    assert_eq!(code, want, "{what}: want {want:?}, got {code:?} ({msg:?})");
    msg
}

#[track_caller]
fn ok<T>(what: &str, r: ttrpc::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{what}: want OK, got {e:?}"))
}

/// Runs `cmd` to completion with empty stdin, capturing stdout and stderr, bounded by
/// [`CMD_TIMEOUT`]. Also fails if the output pipes stay open after the process exited (a
/// daemon holding containerd's pipe would hang containerd, which reads until EOF).
fn run(mut cmd: Command) -> Output {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let reader = |mut r: Box<dyn Read + Send>| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            let _ = tx.send(buf);
        });
        rx
    };
    let out = reader(Box::new(child.stdout.take().unwrap()));
    let err = reader(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + CMD_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {CMD_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let collect = |rx: mpsc::Receiver<Vec<u8>>, name: &str| {
        rx.recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| panic!("{what} exited but its {name} stayed open: something it started holds the caller's pipe"))
    };
    Output {
        status,
        stdout: collect(out, "stdout"),
        stderr: collect(err, "stderr"),
    }
}

// ---------------------------------------------------------------------------------------------
// /proc inspection
// ---------------------------------------------------------------------------------------------

/// Polls until `pid` exited, at most `limit`.
async fn wait_exited(pid: i32, limit: Duration) -> bool {
    wait_until_async(limit, || exited(pid)).await
}

/// The process is gone or a zombie (it exited; whoever is its parent has not reaped it yet).
fn exited(pid: i32) -> bool {
    !common::alive(pid)
}

/// Live processes whose command line has `-socket <socket>`: servers of that socket.
fn servers_of(socket: &Path) -> Vec<i32> {
    let want = socket.as_os_str().as_encoded_bytes();
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        if args.windows(2).any(|w| w[0] == b"-socket" && w[1] == want) && !exited(pid) {
            pids.push(pid);
        }
    }
    pids
}

// ---------------------------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------------------------

/// Owns everything a test starts; on drop kills the shim server(s) of its socket, every fake
/// container init still alive, and removes the socket.
struct Guard {
    /// Extra environment for the shim (it reaches the server through `start`).
    env: Vec<(String, String)>,
    /// Extra flags for the shim's actions, e.g. `-debug` (passed on to the server).
    flags: Vec<String>,
    dir: TempDir,
    namespace: String,
    /// The `-address` given to the shim: a containerd address that is never dialled (no
    /// TTRPC_ADDRESS), unique per test so each test gets its own socket.
    address: String,
    socket: PathBuf,
}

impl Guard {
    /// `options.root` for the fake runtime; the shim appends the namespace.
    fn runc_root(&self) -> PathBuf {
        self.dir.path().join("runc")
    }

    /// The fake runtime's state dir of container `id`.
    fn fake_state(&self, id: &str) -> PathBuf {
        self.runc_root().join(&self.namespace).join(id)
    }

    /// The bundle of container `id`, made on first use: a minimal spec with a private pid
    /// namespace (so the shim does not `kill --all` after the init exits).
    fn bundle(&self, id: &str) -> PathBuf {
        let b = self.dir.path().join("bundles").join(id);
        if !b.exists() {
            fs::create_dir_all(b.join("rootfs")).unwrap();
            fs::write(
                b.join("config.json"),
                r#"{"ociVersion":"1.0.2","process":{"args":["sleep"]},"root":{"path":"rootfs"},"linux":{"namespaces":[{"type":"pid"},{"type":"mount"}]}}"#,
            )
            .unwrap();
        }
        b
    }

    /// Runs a shim action (`start` or `delete`) as containerd does.
    fn action(&self, id: &str, action: &str, with_bundle_flag: bool) -> Output {
        let bundle = self.bundle(id);
        let mut cmd = Command::new(SHIM);
        cmd.args([
            "-namespace",
            &self.namespace,
            "-address",
            &self.address,
            "-publish-binary",
            "/bin/true",
            "-id",
            id,
        ]);
        if with_bundle_flag {
            cmd.arg("-bundle").arg(&bundle);
        }
        cmd.args(&self.flags);
        cmd.arg(action)
            .current_dir(&bundle)
            .env_remove("TTRPC_ADDRESS")
            .env_remove("GRPC_ADDRESS");
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        run(cmd)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.socket.as_os_str().is_empty() {
            for pid in servers_of(&self.socket) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            let _ = fs::remove_file(&self.socket);
        }
        // Fake inits the test left behind, wherever their state is (an id that escaped its
        // directory would put it elsewhere under the root). The fake records each init's start
        // time, so a reused pid is never killed.
        kill_fake_inits(&self.runc_root(), 0);
    }
}

fn kill_fake_inits(dir: &Path, depth: usize) {
    let read = |f: &str| fs::read_to_string(dir.join(f)).unwrap_or_default();
    if let Ok(pid) = read("pid").trim().parse::<i32>() {
        let starttime = read("starttime");
        if pid > 1 && proc_stat(pid).is_some_and(|f| f.starttime.to_string() == starttime.trim()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if depth < 8 && e.file_type().is_ok_and(|t| t.is_dir()) {
            kill_fake_inits(&e.path(), depth + 1);
        }
    }
}

/// A running shim server and clients connected to it.
struct Shim {
    g: Guard,
    /// The id given to `start` (the group the socket is derived from).
    id: String,
    /// Server pid, from the bundle's `shim.pid`.
    pid: i32,
    raw: Client,
    task: TaskClient,
}

impl Shim {
    /// Starts a shim for a new container id `<tag>-…` and checks what `start` must do: print
    /// exactly the address, write `address` and `shim.pid`, leave a live server behind.
    async fn launch(tag: &str) -> Shim {
        Shim::launch_with_env(tag, Vec::new()).await
    }

    async fn launch_with_env(tag: &str, env: Vec<(String, String)>) -> Shim {
        Shim::launch_with(tag, env, false).await
    }

    /// With `logged`, the server runs with `-debug` and logs into a plain file `log` in the
    /// start bundle (containerd's FIFO would need a reader); see [`Shim::log`].
    async fn launch_with(tag: &str, env: Vec<(String, String)>, logged: bool) -> Shim {
        require_root_and_fixture();
        let dir = tempfile::Builder::new()
            .prefix("tether-svc-")
            .tempdir()
            .unwrap();
        let namespace = unique_id("ns");
        let address = dir.path().join("containerd.sock").display().to_string();
        let id = unique_id(tag);
        let socket = expected_socket(&address, &namespace, &id);
        // The guard exists before anything that can fail once a server may be running.
        let g = Guard {
            env,
            flags: if logged {
                vec!["-debug".into()]
            } else {
                Vec::new()
            },
            dir,
            namespace,
            address,
            socket: socket.clone(),
        };
        if logged {
            fs::write(g.bundle(&id).join("log"), "").unwrap();
        }
        let out = g.action(&id, "start", false);
        let bundle = g.bundle(&id);
        assert!(out.status.success(), "start failed: {}", describe(&out));
        let want = format!("unix://{}", socket.display());
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            want,
            "start must print exactly the address: {}",
            describe(&out)
        );
        assert!(
            out.stderr.is_empty(),
            "containerd reads start's stdout and stderr together; stderr must be empty: {}",
            describe(&out)
        );
        assert_eq!(
            fs::read_to_string(bundle.join("address"))
                .expect("start writes the bundle's address file"),
            want
        );
        let pid: i32 = fs::read_to_string(bundle.join("shim.pid"))
            .expect("start writes shim.pid")
            .trim()
            .parse()
            .expect("shim.pid holds a pid");
        assert!(!exited(pid), "shim.pid {pid} is not a live process");
        assert_eq!(
            servers_of(&socket),
            vec![pid],
            "exactly the shim.pid process serves {}",
            socket.display()
        );
        let meta = fs::symlink_metadata(&socket).expect("socket exists");
        assert!(
            meta.file_type().is_socket(),
            "{} is not a socket",
            socket.display()
        );
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "socket mode");
        let dir_mode = fs::metadata(socket.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700, "socket directory mode");
        // Detached from whoever ran `start` (containerd): its own session and process group,
        // and re-parented away, so containerd's death or its process group's signals miss it.
        let f = proc_stat(pid).expect("server stat");
        assert_eq!(
            (f.pgrp, f.session),
            (pid, pid),
            "server pgrp and session: {f:?}"
        );
        assert_ne!(
            f.ppid as u32,
            std::process::id(),
            "the server's parent is the test, not re-parented"
        );
        let raw = bounded("connect", Client::connect(&want))
            .await
            .unwrap_or_else(|e| panic!("connect {want}: {e:?}"));
        let task = TaskClient::new(raw.clone());
        Shim {
            g,
            id,
            pid,
            raw,
            task,
        }
    }

    fn bundle(&self, id: &str) -> PathBuf {
        self.g.bundle(id)
    }

    /// The server's log so far (a shim from [`Shim::launch_with`] with `logged`).
    fn log(&self) -> String {
        fs::read_to_string(self.bundle(&self.id).join("log")).unwrap_or_default()
    }

    fn options(&self) -> MessageField<Any> {
        let o = RuncOptions {
            binary_name: FAKE_RUNC.into(),
            root: self.g.runc_root().display().to_string(),
            ..Default::default()
        };
        MessageField::some(Any {
            type_url: RUNC_OPTIONS_URL.into(),
            value: o.write_to_bytes().unwrap(),
            ..Default::default()
        })
    }

    /// A Create of `id` in `id`'s own bundle with the fake runtime's options.
    fn create_request(&self, id: &str) -> api::CreateTaskRequest {
        self.create_request_in(id, &self.bundle(id))
    }

    fn create_request_in(&self, id: &str, bundle: &Path) -> api::CreateTaskRequest {
        api::CreateTaskRequest {
            id: id.into(),
            bundle: bundle.display().to_string(),
            options: self.options(),
            ..Default::default()
        }
    }

    async fn create_with(
        &self,
        req: api::CreateTaskRequest,
    ) -> ttrpc::Result<api::CreateTaskResponse> {
        bounded("Create", self.task.create(ctx(), &req)).await
    }

    async fn create(&self, id: &str) -> ttrpc::Result<api::CreateTaskResponse> {
        self.create_with(self.create_request(id)).await
    }

    async fn start(&self, id: &str) -> ttrpc::Result<api::StartResponse> {
        bounded(
            "Start",
            self.task.start(
                ctx(),
                &api::StartRequest {
                    id: id.into(),
                    ..Default::default()
                },
            ),
        )
        .await
    }

    async fn state(&self, id: &str) -> ttrpc::Result<api::StateResponse> {
        bounded(
            "State",
            self.task.state(
                ctx(),
                &api::StateRequest {
                    id: id.into(),
                    ..Default::default()
                },
            ),
        )
        .await
    }

    async fn wait(&self, id: &str) -> ttrpc::Result<api::WaitResponse> {
        bounded(
            "Wait",
            self.task.wait(
                ctx(),
                &api::WaitRequest {
                    id: id.into(),
                    ..Default::default()
                },
            ),
        )
        .await
    }

    async fn kill(&self, id: &str, signal: u32, all: bool) -> ttrpc::Result<Empty> {
        bounded(
            "Kill",
            self.task.kill(
                ctx(),
                &api::KillRequest {
                    id: id.into(),
                    signal,
                    all,
                    ..Default::default()
                },
            ),
        )
        .await
    }

    async fn delete(&self, id: &str) -> ttrpc::Result<api::DeleteResponse> {
        bounded(
            "Delete",
            self.task.delete(
                ctx(),
                &api::DeleteRequest {
                    id: id.into(),
                    ..Default::default()
                },
            ),
        )
        .await
    }

    async fn pids(&self, id: &str) -> ttrpc::Result<api::PidsResponse> {
        bounded(
            "Pids",
            self.task.pids(
                ctx(),
                &api::PidsRequest {
                    id: id.into(),
                    ..Default::default()
                },
            ),
        )
        .await
    }

    async fn close_io(&self, id: &str, stdin: bool) -> ttrpc::Result<Empty> {
        bounded(
            "CloseIO",
            self.task.close_io(
                ctx(),
                &api::CloseIORequest {
                    id: id.into(),
                    stdin,
                    ..Default::default()
                },
            ),
        )
        .await
    }

    async fn connect(&self, id: &str) -> ttrpc::Result<api::ConnectResponse> {
        bounded(
            "Connect",
            self.task.connect(
                ctx(),
                &api::ConnectRequest {
                    id: id.into(),
                    ..Default::default()
                },
            ),
        )
        .await
    }

    async fn shutdown(&self) -> ttrpc::Result<Empty> {
        bounded(
            "Shutdown",
            self.task.shutdown(
                ctx(),
                &api::ShutdownRequest {
                    id: self.id.clone(),
                    ..Default::default()
                },
            ),
        )
        .await
    }

    /// One call under the v2 service name (containerd 1.6/1.7), which has no generated client.
    async fn call_v2<Req: Message, Resp: Message>(
        &self,
        method: &str,
        req: &Req,
    ) -> ttrpc::Result<Resp> {
        let request = ttrpc::Request {
            service: V2.into(),
            method: method.into(),
            payload: req.write_to_bytes().unwrap(),
            ..Default::default()
        };
        let resp = bounded(&format!("{V2}/{method}"), self.raw.request(request)).await?;
        Ok(Resp::parse_from_bytes(&resp.payload)
            .unwrap_or_else(|e| panic!("{V2}/{method}: undecodable response: {e}")))
    }

    /// The pid the fake runtime recorded for `id`.
    fn fake_pid(&self, id: &str) -> u32 {
        fs::read_to_string(self.g.fake_state(id).join("pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// Creates `id` (asserting success) and checks the reported pid is the fake's init.
    async fn create_ok(&self, id: &str) -> u32 {
        let pid = ok(&format!("Create {id}"), self.create(id).await).pid;
        assert_eq!(
            pid,
            self.fake_pid(id),
            "Create's pid is the init the runtime made"
        );
        assert_eq!(
            fs::read_to_string(self.bundle(id).join("init.pid"))
                .unwrap()
                .trim(),
            pid.to_string(),
            "init.pid"
        );
        pid
    }

    fn bundle_listing(&self, id: &str) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.bundle(id))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

fn status(s: &api::StateResponse) -> Status {
    s.status
        .enum_value()
        .unwrap_or_else(|v| panic!("unknown status value {v}"))
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// `start` prints only the address (checked in `launch`); a second `start` for the same
/// id/namespace/address while the server lives prints the same address, leaves `shim.pid`
/// alone and starts no second server.
#[tokio::test]
async fn start_prints_only_the_address_and_a_second_start_reuses_the_server() {
    let shim = Shim::launch("start").await;
    let bundle = shim.bundle(&shim.id);
    let first = fs::read_to_string(bundle.join("address")).unwrap();

    let out = shim.g.action(&shim.id, "start", false);
    assert!(out.status.success(), "second start: {}", describe(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        first,
        "second start prints the same address: {}",
        describe(&out)
    );
    assert!(out.stderr.is_empty(), "second start: {}", describe(&out));
    assert_eq!(
        fs::read_to_string(bundle.join("shim.pid")).unwrap().trim(),
        shim.pid.to_string(),
        "shim.pid unchanged"
    );
    assert_eq!(
        servers_of(&shim.g.socket),
        vec![shim.pid],
        "no second server"
    );

    // The first server still answers, on the connection made before the second start.
    assert_eq!(
        ok("Connect", shim.connect(&shim.id).await).shim_pid,
        shim.pid as u32
    );
}

/// Only peers with the server's own uid and gid are served (SO_PEERCRED), as with the Go
/// shim. A root client with another gid passes the socket's 0600/0700 modes (root bypasses
/// them), so only the credential check can turn it away: the server closes that connection at
/// once, while it keeps a same-user connection open waiting for a request.
#[tokio::test]
async fn only_the_same_user_is_served() {
    let shim = Shim::launch("peer").await;
    let probe = |gid: u32| {
        let script = "import socket, sys\n\
                      s = socket.socket(socket.AF_UNIX)\n\
                      s.connect(sys.argv[1])\n\
                      s.settimeout(2)\n\
                      try:\n    print('closed' if s.recv(1) == b'' else 'data')\n\
                      except socket.timeout:\n    print('open')\n";
        let mut cmd = Command::new("python3");
        cmd.args(["-c", script]).arg(&shim.g.socket).gid(gid);
        let out = run(cmd);
        assert!(
            out.status.success(),
            "probe as gid {gid}: {}",
            describe(&out)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let own_gid = nix::unistd::getegid().as_raw();
    assert_eq!(
        probe(own_gid),
        "open",
        "a same-user connection was not kept"
    );
    assert_eq!(
        probe(65534),
        "closed",
        "a connection from another gid was served"
    );
    // The server is unharmed.
    assert_eq!(
        ok("Connect", shim.connect(&shim.id).await).shim_pid,
        shim.pid as u32
    );
}

/// `-v` prints the binary's name and version and exits 0, needing no other flag (containerd
/// runs it that way to show shim versions).
#[test]
fn version_flag_prints_name_and_version() {
    let out = run({
        let mut cmd = Command::new(SHIM);
        cmd.arg("-v");
        cmd
    });
    assert!(out.status.success(), "-v: {}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("containerd-shim-tether-v2:")
            && text.contains(&format!("Version:  {}", env!("CARGO_PKG_VERSION"))),
        "-v printed {text:?}"
    );
}

/// Connect answers under both service names with the server's pid, and task_pid 0 (not an
/// error) for a container it does not have.
#[tokio::test]
async fn connect_answers_on_v2_and_v3() {
    let shim = Shim::launch("connect").await;
    let unknown = unique_id("nosuch");

    let v3 = ok("v3 Connect", shim.connect(&unknown).await);
    assert_eq!(
        (v3.shim_pid, v3.task_pid),
        (shim.pid as u32, 0),
        "v3 Connect: {v3:?}"
    );
    assert!(!v3.version.is_empty(), "Connect reports a version");

    let v2: api::ConnectResponse = ok(
        "v2 Connect",
        shim.call_v2(
            "Connect",
            &api::ConnectRequest {
                id: unknown.clone(),
                ..Default::default()
            },
        )
        .await,
    );
    assert_eq!(
        (v2.shim_pid, v2.task_pid),
        (shim.pid as u32, 0),
        "v2 Connect: {v2:?}"
    );

    // Errors come back the same way under v2.
    let r: ttrpc::Result<api::StateResponse> = shim
        .call_v2(
            "State",
            &api::StateRequest {
                id: unknown.clone(),
                ..Default::default()
            },
        )
        .await;
    expect_code("v2 State of an unknown container", r, Code::NOT_FOUND);
    // containerd 2.x asks Pids of every shim it finds to tell leaked ones: NotFound, not empty.
    let r: ttrpc::Result<api::PidsResponse> = shim
        .call_v2(
            "Pids",
            &api::PidsRequest {
                id: unknown,
                ..Default::default()
            },
        )
        .await;
    expect_code("v2 Pids of an unknown container", r, Code::NOT_FOUND);

    // Once a container exists, Connect reports its init pid under both names.
    let id = unique_id("c");
    let pid = shim.create_ok(&id).await;
    assert_eq!(ok("v3 Connect", shim.connect(&id).await).task_pid, pid);
    let v2: api::ConnectResponse = ok(
        "v2 Connect",
        shim.call_v2(
            "Connect",
            &api::ConnectRequest {
                id,
                ..Default::default()
            },
        )
        .await,
    );
    assert_eq!(v2.task_pid, pid);
}

/// Ids that could escape a path or that containerd would refuse are INVALID_ARGUMENT before
/// anything is written or run.
#[tokio::test]
async fn invalid_ids_are_refused_and_leave_no_trace() {
    let shim = Shim::launch("ids").await;
    // Every request uses the shim's own (valid) bundle: only the id is wrong.
    let bundle = shim.bundle(&shim.id);
    let before = shim.bundle_listing(&shim.id);
    let long = "a".repeat(77);
    for id in [
        "",
        "../x",
        "a/b",
        "..",
        ".",
        long.as_str(),
        "a b",
        "-a",
        "a-",
        "a\0b",
        "é",
    ] {
        let msg = expect_code(
            &format!("Create {id:?}"),
            shim.create_with(shim.create_request_in(id, &bundle)).await,
            Code::INVALID_ARGUMENT,
        );
        assert!(
            msg.contains("invalid container id"),
            "Create {id:?}: message {msg:?}"
        );
    }
    assert_eq!(
        shim.bundle_listing(&shim.id),
        before,
        "a refused Create wrote into the bundle"
    );
    // A relative bundle path is refused too.
    let mut req = shim.create_request(&unique_id("c"));
    req.bundle = "relative/bundle".into();
    expect_code(
        "Create with a relative bundle",
        shim.create_with(req).await,
        Code::INVALID_ARGUMENT,
    );
    assert!(
        !shim.g.runc_root().exists(),
        "a refused Create ran the runtime"
    );
    // The 76-character maximum is accepted.
    shim.create_ok(&"b".repeat(76)).await;
}

/// Every per-container call on an id the shim does not have is NOT_FOUND; Connect is OK.
#[tokio::test]
async fn unknown_container_is_not_found() {
    let shim = Shim::launch("unknown").await;
    let id = unique_id("nosuch");
    expect_code("State", shim.state(&id).await, Code::NOT_FOUND);
    expect_code("Wait", shim.wait(&id).await, Code::NOT_FOUND);
    expect_code(
        "Kill",
        shim.kill(&id, SIGKILL, false).await,
        Code::NOT_FOUND,
    );
    expect_code(
        "Kill --all",
        shim.kill(&id, SIGKILL, true).await,
        Code::NOT_FOUND,
    );
    expect_code("Delete", shim.delete(&id).await, Code::NOT_FOUND);
    expect_code("Pids", shim.pids(&id).await, Code::NOT_FOUND);
    expect_code("Start", shim.start(&id).await, Code::NOT_FOUND);
    expect_code(
        "CloseIO stdin",
        shim.close_io(&id, true).await,
        Code::NOT_FOUND,
    );
    ok("Connect", shim.connect(&id).await);
    // The shim's own id before any Create is just as unknown.
    expect_code(
        "State of the start id",
        shim.state(&shim.id).await,
        Code::NOT_FOUND,
    );
    // An exec id of a known container that has no such exec is NOT_FOUND too.
    let c = unique_id("c");
    shim.create_ok(&c).await;
    let r = bounded(
        "State exec",
        shim.task.state(
            ctx(),
            &api::StateRequest {
                id: c.clone(),
                exec_id: "nope".into(),
                ..Default::default()
            },
        ),
    )
    .await;
    expect_code("State of an unknown exec", r, Code::NOT_FOUND);
}

/// A second Create of an id is ALREADY_EXISTS, whether the first finished or is in flight,
/// and does not disturb the first.
#[tokio::test]
async fn duplicate_create_is_already_exists() {
    let shim = Shim::launch("dup").await;
    let id = unique_id("c");
    let pid = shim.create_ok(&id).await;
    expect_code(
        "second Create",
        shim.create(&id).await,
        Code::ALREADY_EXISTS,
    );
    let s = ok("State", shim.state(&id).await);
    assert_eq!(
        (status(&s), s.pid),
        (Status::CREATED, pid),
        "the first container is untouched"
    );

    // Two concurrent Creates of a new id: exactly one wins.
    let id2 = unique_id("c");
    let (a, b) = tokio::join!(shim.create(&id2), shim.create(&id2));
    let (winner, loser) = match (a, b) {
        (Ok(w), l @ Err(_)) | (l @ Err(_), Ok(w)) => (w, l),
        (a, b) => {
            panic!("concurrent Creates: want one OK and one ALREADY_EXISTS, got {a:?} and {b:?}")
        }
    };
    expect_code("concurrent Create", loser, Code::ALREADY_EXISTS);
    assert_eq!(winner.pid, shim.fake_pid(&id2));
}

/// The whole lifecycle of a container killed by a signal, with the code of every refusal.
#[tokio::test]
async fn lifecycle_create_start_kill_wait_delete() {
    let shim = Shim::launch("life").await;
    let id = unique_id("c");
    let pid = shim.create_ok(&id).await;

    let s = ok("State created", shim.state(&id).await);
    assert_eq!(
        (status(&s), s.pid, s.exit_status),
        (Status::CREATED, pid, 0),
        "{s:?}"
    );
    assert_eq!(s.id, id);
    assert_eq!(s.bundle, shim.bundle(&id).display().to_string());
    assert!(s.exited_at.is_none(), "no exit time before exit: {s:?}");

    assert_eq!(ok("Start", shim.start(&id).await).pid, pid);
    let s = ok("State running", shim.state(&id).await);
    assert_eq!((status(&s), s.pid), (Status::RUNNING, pid), "{s:?}");
    assert!(!exited(pid as i32), "the init runs");

    let pids = ok("Pids", shim.pids(&id).await);
    assert_eq!(
        pids.processes.iter().map(|p| p.pid).collect::<Vec<_>>(),
        vec![pid]
    );

    expect_code(
        "Start again",
        shim.start(&id).await,
        Code::FAILED_PRECONDITION,
    );
    expect_code(
        "Delete while running",
        shim.delete(&id).await,
        Code::FAILED_PRECONDITION,
    );
    assert_eq!(
        status(&ok("State", shim.state(&id).await)),
        Status::RUNNING,
        "refusals change nothing"
    );

    ok("Kill SIGKILL", shim.kill(&id, SIGKILL, false).await);
    let w = ok("Wait", shim.wait(&id).await);
    assert_eq!(w.exit_status, 137, "{w:?}");
    assert!(
        w.exited_at.as_ref().is_some_and(|t| t.seconds > 0),
        "Wait carries the exit time: {w:?}"
    );
    assert!(wait_exited(pid as i32, Duration::from_secs(2)).await);

    let s = ok("State stopped", shim.state(&id).await);
    assert_eq!(
        (status(&s), s.pid, s.exit_status),
        (Status::STOPPED, pid, 137),
        "{s:?}"
    );
    assert_eq!(
        s.exited_at, w.exited_at,
        "State and Wait report the same exit time"
    );
    // A Wait after the exit answers at once with the same status.
    assert_eq!(ok("late Wait", shim.wait(&id).await).exit_status, 137);

    let d = ok("Delete", shim.delete(&id).await);
    assert_eq!((d.pid, d.exit_status), (pid, 137), "{d:?}");
    assert_eq!(d.exited_at, w.exited_at, "Delete reports the exit time");
    assert!(!shim.g.fake_state(&id).exists(), "Delete ran `runc delete`");

    expect_code("State after Delete", shim.state(&id).await, Code::NOT_FOUND);
    expect_code("Delete again", shim.delete(&id).await, Code::NOT_FOUND);
    expect_code("Wait after Delete", shim.wait(&id).await, Code::NOT_FOUND);
    assert_eq!(
        ok("Connect", shim.connect(&id).await).task_pid,
        0,
        "a deleted container has no task pid"
    );

    // The id is free again.
    let pid2 = shim.create_ok(&id).await;
    assert_ne!(pid2, pid);
}

/// A created container that is deleted without being started: its init is killed by the
/// runtime and Delete reports 137.
#[tokio::test]
async fn delete_of_a_created_container_reports_killed() {
    let shim = Shim::launch("created").await;
    let id = unique_id("c");
    let pid = shim.create_ok(&id).await;
    let waiter = {
        let task = shim.task.clone();
        let id = id.clone();
        tokio::spawn(async move {
            task.wait(
                ctx(),
                &api::WaitRequest {
                    id,
                    ..Default::default()
                },
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished(), "Wait answered for a created process");
    let d = ok("Delete", shim.delete(&id).await);
    assert_eq!((d.pid, d.exit_status), (pid, 137), "{d:?}");
    let w = ok(
        "Wait in flight across Delete",
        bounded("Wait", waiter).await.unwrap(),
    );
    assert_eq!(
        w.exit_status, 137,
        "a Wait in flight gets the status Delete reported: {w:?}"
    );
    assert!(
        wait_exited(pid as i32, Duration::from_secs(2)).await,
        "the created init was killed"
    );
    expect_code("State", shim.state(&id).await, Code::NOT_FOUND);
}

/// The container's own exit status reaches every waiter: ten Waits in flight before the exit
/// and one after it all get 3.
#[tokio::test]
async fn exit_status_reaches_every_waiter() {
    let shim = Shim::launch("waiters").await;
    let id = unique_id("c");
    let bundle = shim.bundle(&id);
    let go = shim.g.dir.path().join("exit-now");
    fs::write(
        bundle.join("fake-cmd"),
        format!(
            "while [ ! -e '{}' ]; do sleep 0.02; done; exit 3",
            go.display()
        ),
    )
    .unwrap();
    let pid = shim.create_ok(&id).await;
    ok("Start", shim.start(&id).await);

    let waiters: Vec<_> = (0..10)
        .map(|_| {
            let task = shim.task.clone();
            let id = id.clone();
            tokio::spawn(async move {
                task.wait(
                    ctx(),
                    &api::WaitRequest {
                        id,
                        ..Default::default()
                    },
                )
                .await
            })
        })
        .collect();
    // Let every Wait reach the server; none may answer while the process lives.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(status(&ok("State", shim.state(&id).await)), Status::RUNNING);
    assert!(
        waiters.iter().all(|w| !w.is_finished()),
        "a Wait answered before the process exited"
    );

    fs::write(&go, "").unwrap();
    for (i, w) in waiters.into_iter().enumerate() {
        let r = bounded(&format!("Wait #{i}"), w).await.unwrap();
        assert_eq!(ok(&format!("Wait #{i}"), r).exit_status, 3);
    }
    let s = ok("State", shim.state(&id).await);
    assert_eq!((status(&s), s.exit_status), (Status::STOPPED, 3));
    let late = Instant::now();
    assert_eq!(ok("late Wait", shim.wait(&id).await).exit_status, 3);
    assert!(
        late.elapsed() < Duration::from_secs(1),
        "a Wait after the exit answers at once"
    );
    let d = ok("Delete", shim.delete(&id).await);
    assert_eq!((d.pid, d.exit_status), (pid, 3));
}

/// A container that exits the moment it is started, reaped before `runc start` even returns
/// (the exit arrives while the shim's Start is in flight): Start still succeeds, Wait gets the
/// code, Kill of the stopped process is NOT_FOUND, Delete reports the code.
#[tokio::test]
async fn exit_during_start_and_kill_of_a_stopped_process() {
    let shim = Shim::launch("quick").await;
    let id = unique_id("c");
    fs::write(shim.bundle(&id).join("fake-cmd"), "exit 3").unwrap();
    fs::write(shim.bundle(&id).join("fake-start-waits-for-reap"), "").unwrap();
    let pid = shim.create_ok(&id).await;
    // Subscribed before Start, so it cannot miss the exit even if it were lost otherwise.
    let early = {
        let task = shim.task.clone();
        let id = id.clone();
        tokio::spawn(async move {
            task.wait(
                ctx(),
                &api::WaitRequest {
                    id,
                    ..Default::default()
                },
            )
            .await
        })
    };
    ok("Start", shim.start(&id).await);
    assert_eq!(ok("Wait", shim.wait(&id).await).exit_status, 3);
    assert_eq!(
        ok("early Wait", bounded("early Wait", early).await.unwrap()).exit_status,
        3
    );
    let s = ok("State", shim.state(&id).await);
    assert_eq!(
        (status(&s), s.pid, s.exit_status),
        (Status::STOPPED, pid, 3),
        "{s:?}"
    );

    expect_code(
        "Kill of a stopped process",
        shim.kill(&id, SIGKILL, false).await,
        Code::NOT_FOUND,
    );
    expect_code(
        "Kill --all of a stopped process",
        shim.kill(&id, 15, true).await,
        Code::NOT_FOUND,
    );
    expect_code(
        "Start of a stopped process",
        shim.start(&id).await,
        Code::FAILED_PRECONDITION,
    );

    let d = ok("Delete", shim.delete(&id).await);
    assert_eq!((d.pid, d.exit_status), (pid, 3), "{d:?}");
}

/// A container whose init has exited but which is not deleted answers Pids with exactly its
/// init's pid, whether the runtime's `ps` fails or lists nothing for it: containerd 1.7+ asks
/// Pids of every task on reload and drops (losing the exit status) one that answers empty.
/// An id the shim never created, and one it deleted, are NOT_FOUND.
#[tokio::test]
async fn pids_of_an_exited_init_is_its_pid_until_delete() {
    let shim = Shim::launch("exitpids").await;
    for ps_empty in [false, true] {
        let id = unique_id("c");
        let bundle = shim.bundle(&id);
        fs::write(bundle.join("fake-cmd"), "exit 3").unwrap();
        if ps_empty {
            fs::write(bundle.join("fake-ps-empty-when-stopped"), "").unwrap();
        }
        let pid = shim.create_ok(&id).await;
        ok("Start", shim.start(&id).await);
        assert_eq!(ok("Wait", shim.wait(&id).await).exit_status, 3);
        let pids = ok("Pids of an exited init", shim.pids(&id).await);
        assert_eq!(
            pids.processes.iter().map(|p| p.pid).collect::<Vec<_>>(),
            vec![pid],
            "ps empty: {ps_empty}: {pids:?}"
        );
        let d = ok("Delete", shim.delete(&id).await);
        assert_eq!((d.pid, d.exit_status), (pid, 3), "{d:?}");
        expect_code("Pids after Delete", shim.pids(&id).await, Code::NOT_FOUND);
    }
    let unknown = unique_id("never");
    expect_code(
        "Pids of an unknown id",
        shim.pids(&unknown).await,
        Code::NOT_FOUND,
    );
}

/// A Delete whose `runc delete` failed can be retried: the retry drains the (already
/// delivered) output again and succeeds with the exit status; the output is intact. (Draining
/// twice once panicked the handler, so the retry never got an answer.)
#[tokio::test]
async fn delete_retried_after_a_runtime_failure() {
    let shim = Shim::launch("delretry").await;
    let id = unique_id("c");
    let bundle = shim.bundle(&id);
    let log = bundle.join("logs/out.log");
    fs::write(bundle.join("fake-cmd"), "echo hello; exit 3").unwrap();
    let mut req = shim.create_request(&id);
    req.stdout = format!("file://{}", log.display());
    let pid = ok("Create", shim.create_with(req).await).pid;
    ok("Start", shim.start(&id).await);
    assert_eq!(ok("Wait", shim.wait(&id).await).exit_status, 3);

    fs::write(
        bundle.join("fake-fail-delete-once"),
        "fake: device or resource busy",
    )
    .unwrap();
    let msg = expect_code(
        "Delete when runc delete fails",
        shim.delete(&id).await,
        Code::UNKNOWN,
    );
    assert!(msg.contains("resource busy"), "{msg:?}");
    let s = ok("State after a failed Delete", shim.state(&id).await);
    assert_eq!((status(&s), s.exit_status), (Status::STOPPED, 3), "{s:?}");

    let d = ok("retried Delete", shim.delete(&id).await);
    assert_eq!((d.pid, d.exit_status), (pid, 3), "{d:?}");
    assert_eq!(fs::read_to_string(&log).unwrap(), "hello\n");
    expect_code(
        "Delete of a deleted container",
        shim.delete(&id).await,
        Code::NOT_FOUND,
    );
}

/// runc's own error message (from log.json) reaches the caller as UNKNOWN, and a failed Create
/// leaves nothing behind: the same id can be created afterwards.
#[tokio::test]
async fn runtime_error_message_reaches_the_caller() {
    let shim = Shim::launch("fail").await;
    let id = unique_id("c");
    let marker = shim.bundle(&id).join("fake-fail-create");
    let text = format!("fake: cannot frobnicate the {id} widget");
    fs::write(&marker, &text).unwrap();
    let msg = expect_code(
        "Create with a failing runtime",
        shim.create(&id).await,
        Code::UNKNOWN,
    );
    assert!(
        msg.contains(&text),
        "runc's message {text:?} must reach the caller, got {msg:?}"
    );

    expect_code(
        "State after a failed Create",
        shim.state(&id).await,
        Code::NOT_FOUND,
    );
    assert_eq!(ok("Connect", shim.connect(&id).await).task_pid, 0);
    fs::remove_file(&marker).unwrap();
    let pid = shim.create_ok(&id).await;
    let s = ok("State", shim.state(&id).await);
    assert_eq!((status(&s), s.pid), (Status::CREATED, pid));
}

/// Wrong-state and malformed requests of the resource-control methods get their codes (never
/// NOT_FOUND for a container that exists, which containerd would take for "no such container");
/// undecodable runc options are INVALID_ARGUMENT.
#[tokio::test]
async fn unsupported_methods_and_malformed_options() {
    let shim = Shim::launch("unimpl").await;
    let id = unique_id("c");
    shim.create_ok(&id).await;
    let t = &shim.task;
    let resources = |json: &str| {
        MessageField::some(Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into(),
            value: json.as_bytes().to_vec(),
            ..Default::default()
        })
    };
    for (target, exists) in [(id.clone(), true), (unique_id("nosuch"), false)] {
        let i = || target.clone();
        let state_code = if exists {
            Code::FAILED_PRECONDITION
        } else {
            Code::NOT_FOUND
        };
        let checks: Vec<(&str, ttrpc::Result<()>, Code)> = vec![
            (
                "Pause of a created container",
                bounded(
                    "Pause",
                    t.pause(
                        ctx(),
                        &api::PauseRequest {
                            id: i(),
                            ..Default::default()
                        },
                    ),
                )
                .await
                .map(drop),
                state_code,
            ),
            (
                "Resume of a created container",
                bounded(
                    "Resume",
                    t.resume(
                        ctx(),
                        &api::ResumeRequest {
                            id: i(),
                            ..Default::default()
                        },
                    ),
                )
                .await
                .map(drop),
                state_code,
            ),
            (
                "Checkpoint of a created container",
                bounded(
                    "Checkpoint",
                    t.checkpoint(
                        ctx(),
                        &api::CheckpointTaskRequest {
                            id: i(),
                            path: "/tmp/cp".into(),
                            ..Default::default()
                        },
                    ),
                )
                .await
                .map(drop),
                state_code,
            ),
            (
                "Update without resources",
                bounded(
                    "Update",
                    t.update(
                        ctx(),
                        &api::UpdateTaskRequest {
                            id: i(),
                            ..Default::default()
                        },
                    ),
                )
                .await
                .map(drop),
                Code::INVALID_ARGUMENT,
            ),
            (
                "Update with bad JSON",
                bounded(
                    "Update",
                    t.update(
                        ctx(),
                        &api::UpdateTaskRequest {
                            id: i(),
                            resources: resources("{nope"),
                            ..Default::default()
                        },
                    ),
                )
                .await
                .map(drop),
                Code::INVALID_ARGUMENT,
            ),
            (
                "Update with a string limit",
                bounded(
                    "Update",
                    t.update(
                        ctx(),
                        &api::UpdateTaskRequest {
                            id: i(),
                            resources: resources(r#"{"memory":{"limit":"x"}}"#),
                            ..Default::default()
                        },
                    ),
                )
                .await
                .map(drop),
                Code::INVALID_ARGUMENT,
            ),
        ];
        for (name, r, want) in checks {
            expect_code(&format!("{name} {target}"), r, want);
        }
    }
    // ResizePty is a no-op for a process without a terminal (as with the Go shim), and NotFound
    // for an unknown container.
    let resize = |target: String| api::ResizePtyRequest {
        id: target,
        width: 80,
        height: 24,
        ..Default::default()
    };
    ok(
        "ResizePty without a terminal",
        bounded("ResizePty", t.resize_pty(ctx(), &resize(id.clone()))).await,
    );
    expect_code(
        "ResizePty of an unknown container",
        bounded(
            "ResizePty",
            t.resize_pty(ctx(), &resize(unique_id("nosuch"))),
        )
        .await,
        Code::NOT_FOUND,
    );
    // Exec with a spec that is not JSON is refused before anything runs.
    let exec = bounded(
        "Exec",
        t.exec(
            ctx(),
            &api::ExecProcessRequest {
                id: id.clone(),
                exec_id: "e1".into(),
                ..Default::default()
            },
        ),
    )
    .await;
    expect_code("Exec without a process spec", exec, Code::INVALID_ARGUMENT);
    let exec = bounded(
        "Exec",
        t.exec(
            ctx(),
            &api::ExecProcessRequest {
                id: id.clone(),
                exec_id: "../e1".into(),
                ..Default::default()
            },
        ),
    )
    .await;
    expect_code("Exec with a bad exec id", exec, Code::INVALID_ARGUMENT);

    // Create variants not provided yet: refused as UNIMPLEMENTED, and the id stays free.
    let c = unique_id("c");
    let mut req = shim.create_request(&c);
    req.checkpoint = "/tmp/some-checkpoint".into();
    req.terminal = true;
    expect_code(
        "Create from a checkpoint with a terminal",
        shim.create_with(req).await,
        Code::UNIMPLEMENTED,
    );
    assert!(
        !shim.g.fake_state(&c).exists(),
        "a refused Create ran the runtime"
    );
    shim.create_ok(&c).await;
    ok(
        "CloseIO of an existing container",
        shim.close_io(&c, true).await,
    );

    // Malformed containerd.runc.v1.Options: refused before anything is written or reserved.
    let bad = unique_id("c");
    let before = shim.bundle_listing(&bad);
    let mut req = shim.create_request(&bad);
    req.options = MessageField::some(Any {
        type_url: RUNC_OPTIONS_URL.into(),
        value: vec![0xff, 0xff, 0xff],
        ..Default::default()
    });
    expect_code(
        "Create with malformed options",
        shim.create_with(req).await,
        Code::INVALID_ARGUMENT,
    );
    assert_eq!(
        shim.bundle_listing(&bad),
        before,
        "refused Create wrote into the bundle"
    );
    expect_code("State", shim.state(&bad).await, Code::NOT_FOUND);
    shim.create_ok(&bad).await;
}

/// Shutdown is refused silently while a container exists (the server keeps serving) and ends
/// the server once the last container is deleted: it exits and removes its socket.
#[tokio::test]
async fn shutdown_waits_for_the_last_container() {
    let shim = Shim::launch("shutdown").await;
    let id = unique_id("c");
    shim.create_ok(&id).await;
    ok("Start", shim.start(&id).await);

    ok("Shutdown with a container", shim.shutdown().await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!exited(shim.pid), "the server exited with a container left");
    assert_eq!(
        ok("Connect", shim.connect(&id).await).shim_pid,
        shim.pid as u32
    );
    assert!(shim.g.socket.exists(), "socket removed while serving");
    // A new connection works too (the listener was not closed).
    let again = bounded(
        "reconnect",
        Client::connect(&format!("unix://{}", shim.g.socket.display())),
    )
    .await
    .expect("reconnect");
    ok(
        "Connect on a new connection",
        bounded(
            "Connect",
            TaskClient::new(again).connect(ctx(), &api::ConnectRequest::default()),
        )
        .await,
    );

    ok("Kill", shim.kill(&id, SIGKILL, false).await);
    assert_eq!(ok("Wait", shim.wait(&id).await).exit_status, 137);
    ok("Delete", shim.delete(&id).await);

    let asked = Instant::now();
    ok("Shutdown after the last Delete", shim.shutdown().await);
    assert!(
        wait_exited(shim.pid, Duration::from_secs(2)).await,
        "the server did not exit within 2 s of Shutdown"
    );
    let deadline = asked + Duration::from_secs(2);
    while shim.g.socket.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !shim.g.socket.exists(),
        "the server left its socket {} behind",
        shim.g.socket.display()
    );
}

/// The `delete` action (containerd's cleanup after a dead server) force-deletes the container,
/// prints a DeleteResponse with 137 and the init pid from init.pid, removes the dead socket,
/// exits 0, and is idempotent.
#[tokio::test]
async fn delete_action_cleans_up_after_a_dead_server() {
    let shim = Shim::launch("cleanup").await;
    let id = shim.id.clone();
    let pid = shim.create_ok(&id).await;
    ok("Start", shim.start(&id).await);

    // The server dies without cleaning up.
    kill(Pid::from_raw(shim.pid), Signal::SIGKILL).unwrap();
    assert!(
        wait_exited(shim.pid, Duration::from_secs(2)).await,
        "SIGKILLed server still there"
    );
    assert!(
        shim.g.socket.exists(),
        "a SIGKILLed server cannot remove its socket"
    );
    assert!(!exited(pid as i32), "the container outlives the server");

    for round in 1..=2 {
        let out = shim.g.action(&id, "delete", true);
        assert!(
            out.status.success(),
            "delete action #{round}: {}",
            describe(&out)
        );
        let d = api::DeleteResponse::parse_from_bytes(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "delete action #{round} stdout is not a DeleteResponse ({e}): {}",
                describe(&out)
            )
        });
        assert_eq!(
            (d.pid, d.exit_status),
            (pid, 137),
            "delete action #{round}: {d:?}"
        );
        assert!(
            d.exited_at.as_ref().is_some_and(|t| t.seconds > 0),
            "delete action #{round}: exited_at {d:?}"
        );
        assert!(
            wait_exited(pid as i32, Duration::from_secs(2)).await,
            "delete action #{round} left the init running"
        );
        assert!(
            !shim.g.fake_state(&id).exists(),
            "delete action #{round} did not `runc delete` the container"
        );
        assert!(
            !shim.g.socket.exists(),
            "delete action #{round} left the dead server's socket"
        );
    }
}

/// A `start` that finds the socket of a dead server replaces it: a new server, the same
/// address, a new shim.pid.
#[tokio::test]
async fn start_replaces_a_dead_servers_socket() {
    let shim = Shim::launch("stale").await;
    kill(Pid::from_raw(shim.pid), Signal::SIGKILL).unwrap();
    assert!(
        wait_exited(shim.pid, Duration::from_secs(2)).await,
        "SIGKILLed server still there"
    );
    assert!(
        shim.g.socket.exists(),
        "a SIGKILLed server cannot remove its socket"
    );

    let out = shim.g.action(&shim.id, "start", false);
    let address = format!("unix://{}", shim.g.socket.display());
    assert!(
        out.status.success(),
        "start over a stale socket: {}",
        describe(&out)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        address,
        "{}",
        describe(&out)
    );
    let pid: i32 = fs::read_to_string(shim.bundle(&shim.id).join("shim.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(pid, shim.pid, "a new server");
    assert_eq!(servers_of(&shim.g.socket), vec![pid]);
    let client = TaskClient::new(
        bounded("connect", Client::connect(&address))
            .await
            .expect("connect to the new server"),
    );
    let c = ok(
        "Connect",
        bounded(
            "Connect",
            client.connect(ctx(), &api::ConnectRequest::default()),
        )
        .await,
    );
    assert_eq!(c.shim_pid, pid as u32);
}

/// A created (never started) container can be killed: Wait gets 137, it cannot be started
/// any more, and Delete reports 137.
#[tokio::test]
async fn kill_of_a_created_container() {
    let shim = Shim::launch("killcreated").await;
    let id = unique_id("c");
    let pid = shim.create_ok(&id).await;
    ok("Kill SIGKILL", shim.kill(&id, SIGKILL, false).await);
    assert_eq!(ok("Wait", shim.wait(&id).await).exit_status, 137);
    let s = ok("State", shim.state(&id).await);
    assert_eq!(
        (status(&s), s.pid, s.exit_status),
        (Status::STOPPED, pid, 137),
        "{s:?}"
    );
    expect_code(
        "Start of a stopped process",
        shim.start(&id).await,
        Code::FAILED_PRECONDITION,
    );
    let d = ok("Delete", shim.delete(&id).await);
    assert_eq!((d.pid, d.exit_status), (pid, 137), "{d:?}");
}

/// How runc's kill failures reach the caller (a `kill --all`: a plain signal to the init does
/// not run the runtime): "not running" style messages are NOT_FOUND (the process is gone),
/// anything else is UNKNOWN with runc's message; the container is unharmed.
#[tokio::test]
async fn runtime_kill_errors_are_classified() {
    let shim = Shim::launch("killerr").await;
    let id = unique_id("c");
    let pid = shim.create_ok(&id).await;
    ok("Start", shim.start(&id).await);
    let knob = shim.bundle(&id).join("fake-fail-kill");

    fs::write(&knob, "container not running").unwrap();
    expect_code(
        "Kill when runc says not running",
        shim.kill(&id, SIGKILL, true).await,
        Code::NOT_FOUND,
    );

    let text = format!("fake: operation not permitted on {id}");
    fs::write(&knob, &text).unwrap();
    let msg = expect_code(
        "Kill when runc fails otherwise",
        shim.kill(&id, SIGKILL, true).await,
        Code::UNKNOWN,
    );
    assert!(
        msg.contains(&text),
        "runc's message {text:?} must reach the caller, got {msg:?}"
    );

    assert!(!exited(pid as i32), "a failed kill killed the init");
    assert_eq!(status(&ok("State", shim.state(&id).await)), Status::RUNNING);
    fs::remove_file(&knob).unwrap();
    ok("Kill", shim.kill(&id, SIGKILL, false).await);
    assert_eq!(ok("Wait", shim.wait(&id).await).exit_status, 137);
}

/// `start` refuses an id that could escape a path: exit status 1, the reason on stderr,
/// nothing on stdout, and no socket or server.
#[tokio::test]
async fn start_refuses_an_invalid_id() {
    require_root_and_fixture();
    let dir = tempfile::Builder::new()
        .prefix("tether-svc-")
        .tempdir()
        .unwrap();
    let namespace = unique_id("ns");
    let address = dir.path().join("containerd.sock").display().to_string();
    let id = "../escape";
    let socket = expected_socket(&address, &namespace, id);
    let g = Guard {
        env: Vec::new(),
        flags: Vec::new(),
        dir,
        namespace,
        address,
        socket,
    };
    let bundle = g.bundle("bundle");
    let mut cmd = Command::new(SHIM);
    cmd.args([
        "-namespace",
        &g.namespace,
        "-address",
        &g.address,
        "-publish-binary",
        "/bin/true",
        "-id",
        id,
        "start",
    ])
    .current_dir(&bundle)
    .env_remove("TTRPC_ADDRESS");
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(out.stdout.is_empty(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid container id"),
        "{}",
        describe(&out)
    );
    assert!(!g.socket.exists(), "a socket was bound for an invalid id");
    assert!(
        servers_of(&g.socket).is_empty(),
        "a server was started for an invalid id"
    );
    assert!(
        !bundle.join("address").exists() && !bundle.join("shim.pid").exists(),
        "start wrote into the bundle"
    );
}

/// Checkpoint hands containerd's options to the runtime as runc's flags, leaves the container
/// running unless `exit` is set, and a failing checkpoint returns the runtime's message while
/// the container keeps RUNNING.
#[tokio::test]
async fn checkpoint_passes_options_and_survives_failure() {
    use containerd_shim_protos::shim::oci::CheckpointOptions;
    let shim = Shim::launch("checkpoint").await;
    let id = unique_id("c");
    let pid = shim.create_ok(&id).await;
    ok("Start", shim.start(&id).await);
    let image = shim.bundle(&id).join("image");
    let opts = CheckpointOptions {
        open_tcp: true,
        file_locks: true,
        empty_namespaces: vec!["network".into()],
        ..Default::default()
    };
    let req = api::CheckpointTaskRequest {
        id: id.clone(),
        path: image.display().to_string(),
        options: MessageField::some(Any {
            type_url: "containerd.runc.v1.CheckpointOptions".into(),
            value: opts.write_to_bytes().unwrap(),
            ..Default::default()
        }),
        ..Default::default()
    };
    ok(
        "Checkpoint",
        bounded("Checkpoint", shim.task.checkpoint(ctx(), &req)).await,
    );
    let args = fs::read_to_string(shim.bundle(&id).join("fake-checkpoint-args")).unwrap();
    let args: Vec<&str> = args.lines().collect();
    let after = |flag: &str| args.iter().position(|a| *a == flag).map(|i| args[i + 1]);
    assert_eq!(
        after("--image-path"),
        Some(image.to_str().unwrap()),
        "{args:?}"
    );
    assert_eq!(
        after("--work-path"),
        Some(shim.bundle(&id).join("work/criu-work").to_str().unwrap()),
        "{args:?}"
    );
    assert_eq!(after("--empty-ns"), Some("network"), "{args:?}");
    for flag in ["--leave-running", "--tcp-established", "--file-locks"] {
        assert!(args.contains(&flag), "{flag} missing from {args:?}");
    }
    assert!(
        !args.contains(&"--ext-unix-sk") && !args.contains(&"--shell-job"),
        "{args:?}"
    );
    assert_eq!(args.last(), Some(&id.as_str()));
    assert!(image.is_dir(), "the image directory is created");
    assert_eq!(status(&ok("State", shim.state(&id).await)), Status::RUNNING);

    // A failing checkpoint: runc's message reaches the caller, the container keeps running.
    let text = format!("criu failed: dump of {id} refused");
    fs::write(shim.bundle(&id).join("fake-fail-checkpoint"), &text).unwrap();
    let msg = expect_code(
        "failing Checkpoint",
        bounded("Checkpoint", shim.task.checkpoint(ctx(), &req)).await,
        Code::UNKNOWN,
    );
    assert!(msg.contains(&text), "{msg:?}");
    assert!(!exited(pid as i32));
    assert_eq!(status(&ok("State", shim.state(&id).await)), Status::RUNNING);
    fs::remove_file(shim.bundle(&id).join("fake-fail-checkpoint")).unwrap();

    // With `exit`, the dump stops the container (no --leave-running) and its exit is reported.
    let opts = CheckpointOptions {
        exit: true,
        ..Default::default()
    };
    let req = api::CheckpointTaskRequest {
        options: MessageField::some(Any {
            type_url: "containerd.runc.v1.CheckpointOptions".into(),
            value: opts.write_to_bytes().unwrap(),
            ..Default::default()
        }),
        ..req
    };
    ok(
        "Checkpoint with exit",
        bounded("Checkpoint", shim.task.checkpoint(ctx(), &req)).await,
    );
    let args = fs::read_to_string(shim.bundle(&id).join("fake-checkpoint-args")).unwrap();
    assert!(!args.lines().any(|a| a == "--leave-running"), "{args}");
    assert_eq!(ok("Wait", shim.wait(&id).await).exit_status, 137);
}

/// Every containerd.runc.v1.CheckpointOptions field reaches runc's argv as its own flag. The
/// calls flip the booleans against each other (terminal on with external sockets off, then the
/// reverse, ...), so a field wired to the wrong flag shows; `image_path` overrides the
/// request's path, `work_path` is used as given, and both directories are made.
#[tokio::test]
async fn checkpoint_maps_every_option_to_its_flag() {
    use containerd_shim_protos::shim::oci::CheckpointOptions;
    let shim = Shim::launch("ckptopts").await;
    let id = unique_id("c");
    shim.create_ok(&id).await;
    ok("Start", shim.start(&id).await);
    let b = shim.bundle(&id);
    let path = |p: &str| b.join(p).display().to_string();
    // The fake's argv as (flag, value) pairs, sorted: order-independent, exact.
    let argv = || {
        let text = fs::read_to_string(b.join("fake-checkpoint-args")).unwrap();
        let mut args: Vec<String> = text.lines().map(String::from).collect();
        assert_eq!(
            args.pop().as_deref(),
            Some(id.as_str()),
            "the id comes last: {text}"
        );
        let mut pairs = Vec::new();
        let mut it = args.into_iter();
        while let Some(flag) = it.next() {
            let takes_value = [
                "--image-path",
                "--work-path",
                "--parent-path",
                "--manage-cgroups-mode",
                "--empty-ns",
            ]
            .contains(&flag.as_str());
            let value = if takes_value {
                it.next()
                    .unwrap_or_else(|| panic!("{flag} without a value: {text}"))
            } else {
                String::new()
            };
            pairs.push((flag, value));
        }
        pairs.sort();
        pairs
    };
    let want = |pairs: &[(&str, &str)]| {
        let mut v: Vec<(String, String)> = pairs
            .iter()
            .map(|(f, v)| (f.to_string(), v.to_string()))
            .collect();
        v.sort();
        v
    };
    let task = &shim.task;
    let checkpoint = |opts: CheckpointOptions| {
        let req = api::CheckpointTaskRequest {
            id: id.clone(),
            path: path("request-path"),
            options: MessageField::some(Any {
                type_url: "containerd.runc.v1.CheckpointOptions".into(),
                value: opts.write_to_bytes().unwrap(),
                ..Default::default()
            }),
            ..Default::default()
        };
        async move {
            ok(
                "Checkpoint",
                bounded("Checkpoint", task.checkpoint(ctx(), &req)).await,
            )
        }
    };

    checkpoint(CheckpointOptions {
        exit: false,
        open_tcp: true,
        external_unix_sockets: false,
        terminal: true,
        file_locks: false,
        empty_namespaces: vec!["network".into(), "ipc".into()],
        cgroups_mode: "soft".into(),
        image_path: path("image-a"),
        work_path: path("work-a"),
        ..Default::default()
    })
    .await;
    let (img, work) = (path("image-a"), path("work-a"));
    assert_eq!(
        argv(),
        want(&[
            ("--image-path", &img),
            ("--work-path", &work),
            ("--leave-running", ""),
            ("--tcp-established", ""),
            ("--shell-job", ""),
            ("--manage-cgroups-mode", "soft"),
            ("--empty-ns", "network"),
            ("--empty-ns", "ipc"),
        ])
    );
    assert!(
        b.join("image-a").is_dir() && b.join("work-a").is_dir(),
        "image and work directories are made"
    );
    assert!(
        !b.join("request-path").exists(),
        "image_path overrides the request's path"
    );

    checkpoint(CheckpointOptions {
        exit: false,
        open_tcp: false,
        external_unix_sockets: true,
        terminal: false,
        file_locks: true,
        empty_namespaces: vec!["uts".into()],
        cgroups_mode: "strict".into(),
        work_path: path("work-b"),
        ..Default::default()
    })
    .await;
    let (img, work) = (path("request-path"), path("work-b"));
    assert_eq!(
        argv(),
        want(&[
            ("--image-path", &img),
            ("--work-path", &work),
            ("--leave-running", ""),
            ("--ext-unix-sk", ""),
            ("--file-locks", ""),
            ("--manage-cgroups-mode", "strict"),
            ("--empty-ns", "uts"),
        ])
    );
    assert_eq!(status(&ok("State", shim.state(&id).await)), Status::RUNNING);

    // `exit` alone: no --leave-running and no other flag; the default work path.
    checkpoint(CheckpointOptions {
        exit: true,
        ..Default::default()
    })
    .await;
    let (img, work) = (path("request-path"), path("work/criu-work"));
    assert_eq!(
        argv(),
        want(&[("--image-path", &img), ("--work-path", &work)])
    );
    assert_eq!(ok("Wait", shim.wait(&id).await).exit_status, 137);
}

/// Stats reads the cgroup files: no runtime call per scrape (the fake logs every call, and
/// `Pids`, which does call `runc ps`, shows the log works), and the answer is containerd's
/// cgroups Metrics for this host's layout, read from the cgroup the fake init runs in.
#[tokio::test]
async fn stats_makes_no_runtime_call() {
    let shim = Shim::launch("stats").await;
    let id = unique_id("c");
    shim.create_ok(&id).await;
    ok("Start", shim.start(&id).await);
    let calls = shim
        .g
        .runc_root()
        .join(&shim.g.namespace)
        .join("fake-calls");
    fs::write(&calls, "").unwrap();
    let unified = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    for _ in 0..3 {
        let r = ok(
            "Stats",
            bounded(
                "Stats",
                shim.task.stats(
                    ctx(),
                    &api::StatsRequest {
                        id: id.clone(),
                        ..Default::default()
                    },
                ),
            )
            .await,
        );
        let any = r.stats.as_ref().expect("Stats carries metrics");
        if unified {
            assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");
        } else {
            assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
            let m = containerd_shim_protos::cgroups::metrics::Metrics::parse_from_bytes(&any.value)
                .expect("decodes as cgroups v1 Metrics");
            // The fake init shares the test's cgroups (often roots, which lack pids.current);
            // memory usage is there on every v1 memory cgroup.
            assert!(
                m.memory.usage.usage > 0,
                "memory usage of the init's cgroup: {:?}",
                m.memory
            );
        }
    }
    assert_eq!(
        fs::read_to_string(&calls).unwrap(),
        "",
        "Stats ran the runtime"
    );
    ok("Pids", shim.pids(&id).await);
    let log = fs::read_to_string(&calls).unwrap();
    assert!(
        log.lines().any(|l| l.starts_with("ps ")),
        "the call log works: {log:?}"
    );
    ok("Kill", shim.kill(&id, SIGKILL, false).await);
    ok("Wait", shim.wait(&id).await);
}

/// A Create that carries a checkpoint runs nothing (pid 0, CREATED); Start restores from that
/// image with runc restore --detach --no-subreaper, and the restored init is supervised like
/// any other.
#[tokio::test]
async fn create_from_checkpoint_restores_at_start() {
    let shim = Shim::launch("restore").await;
    let id = unique_id("c");
    let image = shim.bundle(&id).join("image");
    fs::create_dir_all(&image).unwrap();
    let mut req = shim.create_request(&id);
    req.checkpoint = image.display().to_string();
    let created = ok("Create from a checkpoint", shim.create_with(req).await);
    assert_eq!(created.pid, 0, "nothing runs before the restore");
    let s = ok("State", shim.state(&id).await);
    assert_eq!((status(&s), s.pid), (Status::CREATED, 0));
    assert!(
        !shim.g.fake_state(&id).exists(),
        "Create must not run the runtime for a restore"
    );

    let pid = ok("Start (restore)", shim.start(&id).await).pid;
    assert_eq!(pid, shim.fake_pid(&id));
    let args = fs::read_to_string(shim.bundle(&id).join("fake-restore-args")).unwrap();
    let args: Vec<&str> = args.lines().collect();
    let after = |flag: &str| args.iter().position(|a| *a == flag).map(|i| args[i + 1]);
    assert_eq!(
        after("--image-path"),
        Some(image.to_str().unwrap()),
        "{args:?}"
    );
    assert_eq!(
        after("--bundle"),
        Some(shim.bundle(&id).to_str().unwrap()),
        "{args:?}"
    );
    assert_eq!(
        after("--pid-file"),
        Some(shim.bundle(&id).join("init.pid").to_str().unwrap()),
        "{args:?}"
    );
    assert!(
        args.contains(&"--detach") && args.contains(&"--no-subreaper"),
        "{args:?}"
    );
    let s = ok("State", shim.state(&id).await);
    assert_eq!((status(&s), s.pid), (Status::RUNNING, pid));
    expect_code(
        "second Start",
        shim.start(&id).await,
        Code::FAILED_PRECONDITION,
    );
    ok("Kill", shim.kill(&id, SIGKILL, false).await);
    assert_eq!(ok("Wait", shim.wait(&id).await).exit_status, 137);
    assert_eq!(ok("Delete", shim.delete(&id).await).exit_status, 137);
}

/// The runc options' `CriuWorkPath` is restore's `--work-path` (as the Go shim's
/// `createCheckpointedState`), and containerd 2.4's `CheckpointOptions.parent_path` (field 10,
/// which the protos crate lacks) is checkpoint's `--parent-path`.
#[tokio::test]
async fn criu_work_path_and_parent_path_reach_the_runtime() {
    let shim = Shim::launch("criuopts").await;
    let id = unique_id("c");
    let b = shim.bundle(&id);
    let image = b.join("image");
    fs::create_dir_all(&image).unwrap();
    let work = shim.g.dir.path().join("criu-work");
    let mut req = shim.create_request(&id);
    req.checkpoint = image.display().to_string();
    req.options = MessageField::some(Any {
        type_url: RUNC_OPTIONS_URL.into(),
        value: RuncOptions {
            binary_name: FAKE_RUNC.into(),
            root: shim.g.runc_root().display().to_string(),
            criu_work_path: work.display().to_string(),
            ..Default::default()
        }
        .write_to_bytes()
        .unwrap(),
        ..Default::default()
    });
    ok("Create from a checkpoint", shim.create_with(req).await);
    ok("Start (restore)", shim.start(&id).await);
    let args = fs::read_to_string(b.join("fake-restore-args")).unwrap();
    let args: Vec<&str> = args.lines().collect();
    let after = |args: &[&str], flag: &str| {
        args.iter()
            .position(|a| *a == flag)
            .map(|i| args[i + 1].to_string())
    };
    assert_eq!(
        after(&args, "--work-path").as_deref(),
        work.to_str(),
        "{args:?}"
    );
    assert!(work.is_dir(), "the shim makes the CRIU work dir");

    // containerd 2.4 appends field 10 to the message the crate knows (tag 10, length-delimited).
    let mut value = containerd_shim_protos::shim::oci::CheckpointOptions::default()
        .write_to_bytes()
        .unwrap();
    let parent = b.join("pre-dump-1").display().to_string();
    value.push(0x52);
    value.push(parent.len() as u8);
    value.extend(parent.as_bytes());
    let req = api::CheckpointTaskRequest {
        id: id.clone(),
        path: b.join("dump-2").display().to_string(),
        options: MessageField::some(Any {
            type_url: "containerd.runc.v1.CheckpointOptions".into(),
            value,
            ..Default::default()
        }),
        ..Default::default()
    };
    ok(
        "Checkpoint with a parent",
        bounded("Checkpoint", shim.task.checkpoint(ctx(), &req)).await,
    );
    let args = fs::read_to_string(b.join("fake-checkpoint-args")).unwrap();
    let args: Vec<&str> = args.lines().collect();
    assert_eq!(after(&args, "--parent-path"), Some(parent), "{args:?}");
    ok("Kill", shim.kill(&id, SIGKILL, false).await);
    ok("Wait", shim.wait(&id).await);
    ok("Delete", shim.delete(&id).await);
}

/// containerd 2.x sends the W3C trace context of a traced request in its ttrpc metadata: the
/// trace id is on that request's log lines, and the runtime calls made for it get
/// `TRACEPARENT`/`TRACESTATE`. A request without one (or with a malformed one) passes none on,
/// even when the shim's own environment has one.
#[tokio::test]
async fn trace_context_reaches_the_log_and_the_runtime() {
    const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = format!("00-{TRACE_ID}-00f067aa0ba902b7-01");
    let stale = "00-11111111111111111111111111111111-2222222222222222-01";
    let shim = Shim::launch_with("trace", vec![("TRACEPARENT".into(), stale.into())], true).await;
    let root = shim.g.runc_root().join(&shim.g.namespace);
    fs::create_dir_all(&root).unwrap();
    let recorded = root.join("fake-trace-env");
    fs::write(&recorded, "").unwrap();
    let traced = |pairs: &[(&str, &str)]| {
        ttrpc::context::with_metadata(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
                .collect(),
        )
    };

    let id = unique_id("c");
    let ctx_create = traced(&[
        ("traceparent", &parent),
        ("tracestate", "congo=t61rcWkgMzE"),
    ]);
    ok(
        "Create with a trace context",
        bounded(
            "Create",
            shim.task.create(ctx_create, &shim.create_request(&id)),
        )
        .await,
    );
    let start = api::StartRequest {
        id: id.clone(),
        ..Default::default()
    };
    ok(
        "Start without one",
        bounded("Start", shim.task.start(ctx(), &start)).await,
    );
    // `all` makes it a runtime call (a plain kill of the init is a pidfd signal).
    let kill = api::KillRequest {
        id: id.clone(),
        signal: SIGKILL,
        all: true,
        ..Default::default()
    };
    let malformed = traced(&[("traceparent", "00-abc-def-01")]);
    ok(
        "Kill with a malformed one",
        bounded("Kill", shim.task.kill(malformed, &kill)).await,
    );
    ok("Wait", shim.wait(&id).await);
    ok("Delete", shim.delete(&id).await);
    let env = fs::read_to_string(&recorded).unwrap();
    let line = |sub: &str| {
        env.lines()
            .find(|l| l.starts_with(&format!("{sub} ")))
            .unwrap_or_else(|| panic!("no {sub} call recorded: {env}"))
            .to_string()
    };
    assert_eq!(
        line("create"),
        format!("create TRACEPARENT={parent} TRACESTATE=congo=t61rcWkgMzE")
    );
    for sub in ["start", "kill", "delete"] {
        assert_eq!(
            line(sub),
            format!("{sub} TRACEPARENT= TRACESTATE="),
            "{env}"
        );
    }

    // The log: Shutdown logs inside its request span at debug level.
    let shutdown_ctx = traced(&[("traceparent", &parent)]);
    let req = api::ShutdownRequest {
        id: shim.id.clone(),
        ..Default::default()
    };
    ok(
        "Shutdown",
        bounded("Shutdown", shim.task.shutdown(shutdown_ctx, &req)).await,
    );
    let mut log = String::new();
    let found = wait_until_async(Duration::from_secs(10), || {
        log = shim.log();
        log.lines().any(|l| l.contains("shutdown requested"))
    })
    .await;
    assert!(found, "no shutdown line in the log: {log}");
    let shutdown_line = log
        .lines()
        .find(|l| l.contains("shutdown requested"))
        .unwrap();
    assert!(
        shutdown_line.contains("rpc=\"shutdown\"")
            && shutdown_line.contains(&format!("trace_id={TRACE_ID}")),
        "{shutdown_line}"
    );
    assert!(
        !log.contains("1111111111111111"),
        "the shim's own TRACEPARENT never shows: {log}"
    );
}

/// `SCHED_CORE` set for `start` (containerd's `sched_core`): the server takes a new
/// core-scheduling cookie that the runtime and the container inherit. Where the kernel has no
/// core scheduling (no `CONFIG_SCHED_CORE`: EINVAL; no SMT: ENODEV) the shim says so once in
/// its log and the container still runs.
#[tokio::test]
async fn sched_core_gives_the_shim_and_its_containers_one_cookie() {
    let shim = Shim::launch_with("schedcore", vec![("SCHED_CORE".into(), "1".into())], true).await;
    let id = unique_id("c");
    shim.create_ok(&id).await;
    let pid = ok("Start", shim.start(&id).await).pid as i32;
    match tether::sched_core_cookie(std::process::id() as i32) {
        Ok(_) => {
            let own = tether::sched_core_cookie(shim.pid).unwrap();
            assert_ne!(own, 0, "the shim has a cookie");
            assert_eq!(
                tether::sched_core_cookie(pid).unwrap(),
                own,
                "the container inherits the shim's cookie"
            );
            assert!(
                shim.log().contains("new core-scheduling cookie"),
                "{}",
                shim.log()
            );
        }
        Err(e) => {
            let errno = e.raw_os_error();
            assert!(
                errno == Some(libc::EINVAL) || errno == Some(libc::ENODEV),
                "PR_SCHED_CORE_GET: {e}"
            );
            let mut log = String::new();
            let warned = wait_until_async(Duration::from_secs(10), || {
                log = shim.log();
                log.contains("SCHED_CORE is set but")
            })
            .await;
            assert!(warned, "no warning in the log: {log}");
            assert_eq!(
                log.matches("SCHED_CORE is set but").count(),
                1,
                "warned once: {log}"
            );
        }
    }
    let s = ok("State", shim.state(&id).await);
    assert_eq!((status(&s), s.pid), (Status::RUNNING, pid as u32));
    ok("Kill", shim.kill(&id, SIGKILL, false).await);
    ok("Wait", shim.wait(&id).await);
    ok("Delete", shim.delete(&id).await);
}

/// A restore that fails leaves the container CREATED with its checkpoint, as the Go shim's
/// createdCheckpointState does: the half-restored container runc left is removed (its process
/// killed, the id free), and a retried Start restores again with the same stdio rather than
/// running `runc start` on a container that does not exist. A container whose restore failed
/// can also just be deleted.
#[tokio::test]
async fn failed_restore_can_be_retried_or_deleted() {
    let shim = Shim::launch("restorefail").await;
    let from_checkpoint = |id: &str, log: Option<&Path>| {
        let image = shim.bundle(id).join("image");
        fs::create_dir_all(&image).unwrap();
        let mut req = shim.create_request(id);
        req.checkpoint = image.display().to_string();
        if let Some(log) = log {
            req.stdout = format!("file://{}", log.display());
        }
        req
    };

    let id = unique_id("c");
    let bundle = shim.bundle(&id);
    let log = bundle.join("logs/out.log");
    let attempts = bundle.join("attempts");
    fs::write(
        bundle.join("fake-cmd"),
        format!(
            "echo $$ >>{}; echo attempt $$; exec sleep 1000",
            attempts.display()
        ),
    )
    .unwrap();
    ok(
        "Create from a checkpoint",
        shim.create_with(from_checkpoint(&id, Some(&log))).await,
    );
    let text = format!("criu failed: restore of {id} refused");
    fs::write(bundle.join("fake-fail-restore-once"), &text).unwrap();
    let msg = expect_code(
        "Start with a failing restore",
        shim.start(&id).await,
        Code::UNKNOWN,
    );
    assert!(msg.contains(&text), "{msg:?}");
    let s = ok("State after a failed restore", shim.state(&id).await);
    assert_eq!((status(&s), s.pid), (Status::CREATED, 0), "{s:?}");
    let half: i32 = fs::read_to_string(&attempts)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        wait_exited(half, Duration::from_secs(5)).await,
        "the half-restored process {half} was left running"
    );
    assert!(
        !shim.g.fake_state(&id).exists(),
        "the half-restored container was left in the runtime"
    );

    let pid = ok("retried Start", shim.start(&id).await).pid;
    assert_eq!(pid, shim.fake_pid(&id));
    assert_ne!(pid as i32, half);
    let s = ok("State after the retry", shim.state(&id).await);
    assert_eq!((status(&s), s.pid), (Status::RUNNING, pid), "{s:?}");
    let want = format!("attempt {pid}\n");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !fs::read_to_string(&log).unwrap_or_default().contains(&want) && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        fs::read_to_string(&log).unwrap().contains(&want),
        "the retried restore's output must reach the Create's stdout: {:?}",
        fs::read_to_string(&log)
    );
    expect_code(
        "Start after the restore",
        shim.start(&id).await,
        Code::FAILED_PRECONDITION,
    );
    ok("Kill", shim.kill(&id, SIGKILL, false).await);
    assert_eq!(ok("Wait", shim.wait(&id).await).exit_status, 137);
    ok("Delete", shim.delete(&id).await);

    // Failed, then deleted instead of retried.
    let id = unique_id("c");
    ok(
        "Create from a checkpoint",
        shim.create_with(from_checkpoint(&id, None)).await,
    );
    fs::write(
        shim.bundle(&id).join("fake-fail-restore-once"),
        "criu failed",
    )
    .unwrap();
    expect_code(
        "Start with a failing restore",
        shim.start(&id).await,
        Code::UNKNOWN,
    );
    let d = ok("Delete after a failed restore", shim.delete(&id).await);
    assert_eq!((d.pid, d.exit_status), (0, 137), "{d:?}");
    expect_code(
        "State of the deleted container",
        shim.state(&id).await,
        Code::NOT_FOUND,
    );
}

/// A socket peer that sends garbage (random bytes, a frame header announcing a huge body, a
/// truncated frame) gets disconnected, and the server keeps serving everyone else; huge and
/// empty fields get their error codes.
#[tokio::test]
async fn hostile_peers_and_fields_do_not_hurt_the_server() {
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    let shim = Shim::launch("hostile").await;
    let id = unique_id("c");
    shim.create_ok(&id).await;

    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let garbage: Vec<Vec<u8>> = vec![
        (0..4096)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect(),
        // ttrpc header: length 0xffffffff, stream 1, type request.
        vec![0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, 1, 0],
        // A plausible header and half a body.
        vec![0, 0, 0, 100, 0, 0, 0, 3, 1, 0, 0x0a, 0x05],
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
    ];
    for bytes in &garbage {
        let mut s = UnixStream::connect(&shim.g.socket).unwrap();
        let _ = s.write_all(bytes);
        drop(s);
        // The live connection and new ones still work.
        ok("Connect after garbage", shim.connect(&id).await);
        let fresh = bounded(
            "connect",
            Client::connect(&format!("unix://{}", shim.g.socket.display())),
        )
        .await
        .unwrap();
        ok(
            "Connect on a new connection after garbage",
            bounded(
                "Connect",
                TaskClient::new(fresh).connect(ctx(), &api::ConnectRequest::default()),
            )
            .await,
        );
    }

    // Huge and empty fields.
    let huge = "a".repeat(1 << 20);
    let req = shim.create_request_in(&huge, &shim.bundle(&unique_id("c")));
    expect_code(
        "Create with a 1 MiB id",
        shim.create_with(req).await,
        Code::INVALID_ARGUMENT,
    );
    expect_code(
        "State of a 1 MiB id",
        shim.state(&huge).await,
        Code::NOT_FOUND,
    );
    let mut req = shim.create_request(&unique_id("c"));
    req.bundle = String::new();
    expect_code(
        "Create without a bundle",
        shim.create_with(req).await,
        Code::INVALID_ARGUMENT,
    );
    let mut req = shim.create_request(&unique_id("c"));
    req.stdout = "ftp://nowhere".into();
    expect_code(
        "Create with an unknown stdio scheme",
        shim.create_with(req).await,
        Code::INVALID_ARGUMENT,
    );
    let exec = api::ExecProcessRequest {
        id: id.clone(),
        exec_id: huge.clone(),
        ..Default::default()
    };
    expect_code(
        "Exec with a 1 MiB exec id",
        bounded("Exec", shim.task.exec(ctx(), &exec)).await,
        Code::INVALID_ARGUMENT,
    );
    let kill = api::KillRequest {
        id: id.clone(),
        exec_id: "nosuch".into(),
        signal: 9,
        ..Default::default()
    };
    expect_code(
        "Kill of an unknown exec",
        bounded("Kill", shim.task.kill(ctx(), &kill)).await,
        Code::NOT_FOUND,
    );
    // The container was never disturbed.
    assert_eq!(status(&ok("State", shim.state(&id).await)), Status::CREATED);
}

/// A runtime call that hangs (`kill --all`) is killed at its deadline and the request fails
/// with DEADLINE_EXCEEDED, while State, Pids, Connect and Wait, of that container and of
/// another, keep answering at once: no lock is held across a runtime call. A plain Kill of the
/// init meanwhile needs no runtime at all.
#[tokio::test]
async fn a_hung_runtime_call_times_out_and_blocks_nothing() {
    let shim = Shim::launch_with_env(
        "hang",
        vec![("TETHER_RUNTIME_TIMEOUT_MS".into(), "1500".into())],
    )
    .await;
    let (a, b) = (unique_id("a"), unique_id("b"));
    let pid_a = shim.create_ok(&a).await;
    shim.create_ok(&b).await;
    ok("Start a", shim.start(&a).await);
    ok("Start b", shim.start(&b).await);
    fs::write(shim.bundle(&a).join("fake-hang-kill"), "").unwrap();

    let hung = {
        let task = shim.task.clone();
        // Not SIGKILL: a SIGKILL the runtime does not deliver the shim delivers itself (see
        // `a_sigkill_the_runtime_does_not_deliver_is_delivered_by_the_shim`).
        let req = api::KillRequest {
            id: a.clone(),
            signal: SIGTERM,
            all: true,
            ..Default::default()
        };
        tokio::spawn(async move {
            let t0 = Instant::now();
            (task.kill(ctx(), &req).await, t0.elapsed())
        })
    };
    // A Wait on the other container is parked across the whole episode.
    let waiter = {
        let task = shim.task.clone();
        let req = api::WaitRequest {
            id: b.clone(),
            ..Default::default()
        };
        tokio::spawn(async move { task.wait(ctx(), &req).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..5 {
        let t0 = Instant::now();
        assert_eq!(
            status(&ok("State a", shim.state(&a).await)),
            Status::RUNNING
        );
        assert_eq!(
            status(&ok("State b", shim.state(&b).await)),
            Status::RUNNING
        );
        ok("Connect", shim.connect(&a).await);
        ok("Pids b", shim.pids(&b).await);
        assert!(
            t0.elapsed() < Duration::from_millis(900),
            "requests waited behind the hung runtime call: {:?}",
            t0.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (res, took) = tokio::time::timeout(Duration::from_secs(10), hung)
        .await
        .expect("the hung Kill never returned")
        .unwrap();
    let msg = expect_code("Kill with a hung runtime", res, Code::DEADLINE_EXCEEDED);
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(5),
        "deadline not honoured: {took:?} ({msg})"
    );
    // The hung runtime process was killed, and the container is unharmed.
    let hung_pid: i32 = fs::read_to_string(shim.bundle(&a).join("fake-hung-pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        wait_until_async(Duration::from_secs(2), || exited(hung_pid)).await,
        "the hung runtime process {hung_pid} was left running"
    );
    assert!(!exited(pid_a as i32));
    // A plain signal to the init goes through its pidfd, so the wedged runtime cannot stop it.
    let t0 = Instant::now();
    ok(
        "Kill a (no --all) while the runtime's kill hangs",
        shim.kill(&a, SIGKILL, false).await,
    );
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "a plain Kill waited for the runtime: {:?}",
        t0.elapsed()
    );
    assert_eq!(ok("Wait a", shim.wait(&a).await).exit_status, 137);
    assert!(
        !bundle_has_new_hung_pid(&shim.bundle(&a), hung_pid),
        "a plain Kill ran the runtime"
    );
    fs::remove_file(shim.bundle(&a).join("fake-hang-kill")).unwrap();
    ok("Kill b", shim.kill(&b, SIGKILL, false).await);
    let w = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("Wait b never returned")
        .unwrap();
    assert_eq!(ok("Wait b", w).exit_status, 137);
}

/// A wedged runtime (containerd#14081): `kill --all` with SIGKILL hangs. After the kill deadline
/// (`TETHER_KILL_TIMEOUT_MS`, here 1 s, far below the 60 s runtime deadline) the shim kills the
/// runtime's call and the container itself; with fake-runc the container has no cgroup of its
/// own (the init shares the shim's), so the init is killed through its pidfd. Kill answers OK,
/// the init's exit is reported as any other (Wait: 137) and Delete completes.
#[tokio::test]
async fn a_sigkill_the_runtime_does_not_deliver_is_delivered_by_the_shim() {
    let shim = Shim::launch_with_env(
        "wedged",
        vec![("TETHER_KILL_TIMEOUT_MS".into(), "1000".into())],
    )
    .await;
    let id = unique_id("c");
    let pid = shim.create_ok(&id).await;
    ok("Start", shim.start(&id).await);
    let bundle = shim.bundle(&id);
    fs::write(bundle.join("fake-hang-kill"), "").unwrap();
    let t0 = Instant::now();
    ok("Kill --all SIGKILL", shim.kill(&id, SIGKILL, true).await);
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "the kill deadline was not what TETHER_KILL_TIMEOUT_MS said: {took:?}"
    );
    let hung: i32 = fs::read_to_string(bundle.join("fake-hung-pid"))
        .expect("the runtime's kill ran")
        .trim()
        .parse()
        .unwrap();
    assert!(
        wait_until_async(Duration::from_secs(2), || exited(hung)).await,
        "the hung runtime process {hung} was left running"
    );
    assert!(
        wait_exited(pid as i32, Duration::from_secs(5)).await,
        "the init {pid} survived"
    );
    assert_eq!(ok("Wait", shim.wait(&id).await).exit_status, 137);
    assert_eq!(status(&ok("State", shim.state(&id).await)), Status::STOPPED);
    fs::remove_file(bundle.join("fake-hang-kill")).unwrap();
    let d = ok("Delete", shim.delete(&id).await);
    assert_eq!((d.pid, d.exit_status), (pid, 137), "{d:?}");
    eprintln!("Kill with a hung runtime answered after {took:?}");
}

/// `runc delete` hangs at Delete: after the runtime deadline the call is killed and Delete
/// completes anyway, with the exit status recorded before (not lost, not 137); the container
/// is gone from the shim.
#[tokio::test]
async fn a_runtime_delete_that_hangs_does_not_keep_the_container() {
    let shim = Shim::launch_with_env(
        "wedgeddel",
        vec![("TETHER_RUNTIME_TIMEOUT_MS".into(), "1500".into())],
    )
    .await;
    let id = unique_id("c");
    let bundle = shim.bundle(&id);
    fs::write(bundle.join("fake-cmd"), "exit 3").unwrap();
    let pid = shim.create_ok(&id).await;
    ok("Start", shim.start(&id).await);
    assert_eq!(ok("Wait", shim.wait(&id).await).exit_status, 3);
    fs::write(bundle.join("fake-hang-delete"), "").unwrap();
    let t0 = Instant::now();
    let d = ok("Delete with a hung runtime", shim.delete(&id).await);
    let took = t0.elapsed();
    assert_eq!((d.pid, d.exit_status), (pid, 3), "{d:?}");
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(10),
        "Delete took {took:?}"
    );
    let hung: i32 = fs::read_to_string(bundle.join("fake-hung-pid"))
        .expect("the runtime's delete ran")
        .trim()
        .parse()
        .unwrap();
    assert!(
        wait_until_async(Duration::from_secs(2), || exited(hung)).await,
        "the hung runtime process {hung} was left running"
    );
    expect_code("State after Delete", shim.state(&id).await, Code::NOT_FOUND);
    fs::remove_file(bundle.join("fake-hang-delete")).unwrap();
}

/// Without a pid namespace of its own, a container's other processes outlive its init, so the
/// shim runs `kill --all` when the init exits; the exit is published only after that call, as
/// with the Go shim. Otherwise a client that deletes as soon as Wait answers (ctr run --rm) races
/// `runc delete` against the `kill --all`, and runc fails one of them.
#[tokio::test]
async fn init_exit_waits_for_kill_all_in_a_shared_pid_namespace() {
    let shim = Shim::launch("killall").await;
    let id = unique_id("c");
    let bundle = shim.bundle(&id);
    fs::write(bundle.join("config.json"), r#"{"ociVersion":"1.0.2","process":{"args":["sh"]},"root":{"path":"rootfs"},"linux":{"namespaces":[{"type":"mount"}]}}"#).unwrap();
    fs::write(bundle.join("fake-cmd"), "exit 3").unwrap();
    fs::write(bundle.join("fake-hang-kill"), "").unwrap();
    let pid = shim.create_ok(&id).await;
    ok("Start", shim.start(&id).await);
    let waiter = {
        let task = shim.task.clone();
        let req = api::WaitRequest {
            id: id.clone(),
            ..Default::default()
        };
        tokio::spawn(async move { task.wait(ctx(), &req).await })
    };
    let hung_file = bundle.join("fake-hung-pid");
    assert!(
        wait_until_async(Duration::from_secs(5), || hung_file.exists()).await,
        "no kill --all after the init exited"
    );
    assert!(
        wait_exited(pid as i32, Duration::from_secs(5)).await,
        "the init did not exit"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiter.is_finished(),
        "Wait answered while kill --all was still running"
    );
    assert_eq!(
        status(&ok("State", shim.state(&id).await)),
        Status::RUNNING,
        "the exit is not recorded before kill --all is done"
    );

    let hung: i32 = fs::read_to_string(&hung_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: plain kill(2) of the fake runtime process this test made hang.
    unsafe { libc::kill(hung, libc::SIGKILL) };
    let w = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("Wait never answered after kill --all ended")
        .unwrap();
    assert_eq!(ok("Wait", w).exit_status, 3);
    fs::remove_file(bundle.join("fake-hang-kill")).unwrap();
    let d = ok("Delete", shim.delete(&id).await);
    assert_eq!((d.pid, d.exit_status), (pid, 3), "{d:?}");
}

/// The fake runtime recorded a hung call other than `old` (it writes each hung pid there).
fn bundle_has_new_hung_pid(bundle: &Path, old: i32) -> bool {
    fs::read_to_string(bundle.join("fake-hung-pid")).is_ok_and(|s| s.trim() != old.to_string())
}

/// containerd 2.3 sends `BootstrapParams` on `start`'s stdin and reads a `BootstrapResult`: the
/// shim answers in kind, listens in the `socket_dir` it was given (linked from the bundle as
/// `s`), and serves the task API under both names there. Legacy stdin (the options `Any`) still
/// gets the plain address, as the other tests show.
#[tokio::test]
async fn start_speaks_the_bootstrap_protocol_when_asked() {
    use containerd_shim_protos::bootstrap_api::{BootstrapParams, BootstrapResult};
    use std::io::Write;
    require_root_and_fixture();
    let dir = tempfile::Builder::new()
        .prefix("tether-boot-")
        .tempdir()
        .unwrap();
    let (namespace, id) = (unique_id("ns"), unique_id("boot"));
    let address = dir.path().join("containerd.sock").display().to_string();
    let socket_dir = dir.path().join("s");
    let bundle = dir.path().join(&id);
    fs::create_dir_all(&bundle).unwrap();
    fs::write(bundle.join("config.json"), r#"{"ociVersion":"1.0.2"}"#).unwrap();
    let params = BootstrapParams {
        instance_id: id.clone(),
        namespace: namespace.clone(),
        containerd_grpc_address: address.clone(),
        containerd_ttrpc_address: String::new(),
        socket_dir: Some(socket_dir.display().to_string()),
        ..Default::default()
    };
    let mut child = Command::new(SHIM)
        .args([
            "-namespace",
            &namespace,
            "-address",
            &address,
            "-publish-binary",
            "/bin/true",
            "-id",
            &id,
            "start",
        ])
        .current_dir(&bundle)
        .env_remove("TTRPC_ADDRESS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&params.write_to_bytes().unwrap())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        describe(&out)
    );
    let result = BootstrapResult::parse_from_bytes(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not a BootstrapResult ({e}): {}", describe(&out)));
    let digest: String = Sha256::digest(format!("{address}/{namespace}/{id}").as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let socket = socket_dir.join(digest);
    assert_eq!((result.version, result.protocol.as_str()), (2, "ttrpc"));
    assert_eq!(result.address, format!("unix://{}", socket.display()));
    assert_eq!(
        fs::read_link(bundle.join("s")).unwrap(),
        socket_dir,
        "the bundle links the custom socket dir"
    );
    let servers = servers_of(&socket);
    assert_eq!(
        servers.len(),
        1,
        "one server listens on {}",
        socket.display()
    );
    struct Kill(i32, PathBuf);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = kill(Pid::from_raw(self.0), Signal::SIGKILL);
            let _ = fs::remove_file(&self.1);
        }
    }
    let _guard = Kill(servers[0], socket.clone());

    let raw = bounded("connect", Client::connect(&result.address))
        .await
        .unwrap();
    let c = ok(
        "Connect v3",
        bounded(
            "Connect",
            TaskClient::new(raw.clone()).connect(
                ctx(),
                &api::ConnectRequest {
                    id: id.clone(),
                    ..Default::default()
                },
            ),
        )
        .await,
    );
    assert_eq!(c.shim_pid as i32, servers[0]);
    let req = ttrpc::Request {
        service: V2.into(),
        method: "Connect".into(),
        payload: api::ConnectRequest::default().write_to_bytes().unwrap(),
        ..Default::default()
    };
    let resp = bounded("Connect v2", raw.request(req))
        .await
        .expect("v2 Connect");
    assert_eq!(
        api::ConnectResponse::parse_from_bytes(&resp.payload)
            .unwrap()
            .shim_pid as i32,
        servers[0]
    );
    // containerd 2.x probes for leaked shims with Pids: unknown ids are NotFound.
    expect_code(
        "Pids of an unknown task",
        bounded(
            "Pids",
            TaskClient::new(raw).pids(
                ctx(),
                &api::PidsRequest {
                    id: unique_id("nosuch"),
                    ..Default::default()
                },
            ),
        )
        .await,
        Code::NOT_FOUND,
    );
}

/// The `delete` action skips the runtime when it has no state for the id (containerd runs
/// `delete` after every task, usually one already deleted): no runtime is run (here it could
/// not be: its binary does not exist), nothing is printed on stderr, and the answer is the same.
#[test]
fn delete_action_without_runtime_state_runs_no_runtime() {
    require_root_and_fixture();
    let dir = tempfile::Builder::new()
        .prefix("tether-del-")
        .tempdir()
        .unwrap();
    let id = unique_id("gone");
    let bundle = dir.path().join(&id);
    fs::create_dir_all(bundle.join("rootfs")).unwrap();
    let root = dir.path().join("runc-root");
    fs::write(
        bundle.join("options.json"),
        format!(
            r#"{{"binary_name":"/nonexistent/runc","root":"{}"}}"#,
            root.display()
        ),
    )
    .unwrap();
    fs::write(bundle.join("init.pid"), "4242").unwrap();
    let out = run({
        let mut cmd = Command::new(SHIM);
        cmd.args([
            "-namespace",
            "ns",
            "-address",
            "/nowhere.sock",
            "-publish-binary",
            "/bin/true",
            "-id",
            &id,
            "-bundle",
        ])
        .arg(&bundle)
        .arg("delete")
        .current_dir(&bundle);
        cmd
    });
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        out.stderr.is_empty(),
        "a runtime was run: {}",
        describe(&out)
    );
    let d = api::DeleteResponse::parse_from_bytes(&out.stdout).unwrap();
    assert_eq!((d.pid, d.exit_status), (4242, 137));
}

/// Spawns `sleep 1000` with pid `want`, by setting the kernel's last allocated pid just below it
/// (what CRIU does to restore pids). Retries while something else takes the pid first: the
/// other tests of this binary fork in bursts (50 tries in a row once lost to one, in CI), so
/// it keeps trying for a while, pausing between tries.
fn spawn_with_pid(want: i32) -> std::process::Child {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut tries = 0;
    while Instant::now() < deadline {
        tries += 1;
        fs::write("/proc/sys/kernel/ns_last_pid", (want - 1).to_string())
            .expect("write ns_last_pid (needs root)");
        let child = Command::new("sleep").arg("1000").spawn().unwrap();
        if child.id() as i32 == want {
            return child;
        }
        let mut child = child;
        let _ = child.kill();
        let _ = child.wait();
        std::thread::sleep(Duration::from_millis(5 + tries % 20));
    }
    panic!("could not get pid {want} recycled in {tries} tries over 60 s");
}

/// A recycled pid never receives a signal meant for an exec that has exited: the shim signals
/// execs through the pidfd it opened when the exec started. The fake runtime reports a pid the
/// test owns (so the shim never reaps it and still thinks it runs); the test ends that process,
/// hands its pid to an unrelated `sleep`, and asks the shim to SIGKILL the exec: the answer is
/// NOT_FOUND and the unrelated process lives. Signalling by pid would have killed it.
#[tokio::test]
async fn a_recycled_pid_never_receives_an_exec_signal() {
    let shim = Shim::launch("pidreuse").await;
    let id = unique_id("c");
    shim.create_ok(&id).await;
    ok("Start", shim.start(&id).await);

    let mut original = Command::new("sleep").arg("1000").spawn().unwrap();
    let pid = original.id() as i32;
    fs::write(shim.bundle(&id).join("fake-exec-pid"), pid.to_string()).unwrap();
    let spec = Any {
        type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
        value: br#"{"args":["sleep","1000"],"cwd":"/"}"#.to_vec(),
        ..Default::default()
    };
    let exec = api::ExecProcessRequest {
        id: id.clone(),
        exec_id: "x".into(),
        spec: MessageField::some(spec),
        ..Default::default()
    };
    ok("Exec", bounded("Exec", shim.task.exec(ctx(), &exec)).await);
    let started = ok(
        "Start exec",
        bounded(
            "Start",
            shim.task.start(
                ctx(),
                &api::StartRequest {
                    id: id.clone(),
                    exec_id: "x".into(),
                    ..Default::default()
                },
            ),
        )
        .await,
    );
    assert_eq!(started.pid as i32, pid);

    // The exec's process goes away and its pid is handed to someone else.
    original.kill().unwrap();
    original.wait().unwrap();
    let mut stranger = spawn_with_pid(pid);
    struct Reap<'a>(&'a mut std::process::Child);
    impl Drop for Reap<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stranger = Reap(&mut stranger);

    let kill_req = api::KillRequest {
        id: id.clone(),
        exec_id: "x".into(),
        signal: SIGKILL,
        ..Default::default()
    };
    expect_code(
        "Kill of an exec whose pid was recycled",
        bounded("Kill", shim.task.kill(ctx(), &kill_req)).await,
        Code::NOT_FOUND,
    );
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        stranger.0.try_wait().unwrap().is_none(),
        "the process that recycled pid {pid} was killed"
    );
}

/// Spawns `sleep 1000` for the fake runtime to report as an exec (`fake-exec-pid`); killed and
/// reaped on drop.
struct TestExec(std::process::Child);

impl TestExec {
    fn spawn(shim: &Shim, id: &str) -> TestExec {
        let child = Command::new("sleep").arg("1000").spawn().unwrap();
        fs::write(
            shim.bundle(id).join("fake-exec-pid"),
            child.id().to_string(),
        )
        .unwrap();
        TestExec(child)
    }
}

impl Drop for TestExec {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn exec_request(id: &str, exec_id: &str) -> api::ExecProcessRequest {
    let spec = Any {
        type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
        value: br#"{"args":["sleep","1000"],"cwd":"/"}"#.to_vec(),
        ..Default::default()
    };
    api::ExecProcessRequest {
        id: id.into(),
        exec_id: exec_id.into(),
        spec: MessageField::some(spec),
        ..Default::default()
    }
}

/// Exec error codes: a second Exec with a live exec's id is ALREADY_EXISTS; an exec id nobody
/// registered is NOT_FOUND for Wait, Delete, Start, ResizePty and CloseIO (State and Kill are
/// covered above); Pids names the exec's pid with its exec id in a
/// `containerd.runc.v1.ProcessDetails` (and the init's with none).
#[tokio::test]
async fn exec_ids_duplicate_unknown_and_pids() {
    let shim = Shim::launch("execcodes").await;
    let id = unique_id("c");
    let init = shim.create_ok(&id).await;
    ok("Start", shim.start(&id).await);
    let exec = TestExec::spawn(&shim, &id);
    let t = &shim.task;

    ok(
        "Exec e1",
        bounded("Exec", t.exec(ctx(), &exec_request(&id, "e1"))).await,
    );
    let again = bounded("Exec", t.exec(ctx(), &exec_request(&id, "e1"))).await;
    expect_code(
        "Exec with a registered exec id",
        again,
        Code::ALREADY_EXISTS,
    );
    let started = ok(
        "Start e1",
        bounded(
            "Start",
            t.start(
                ctx(),
                &api::StartRequest {
                    id: id.clone(),
                    exec_id: "e1".into(),
                    ..Default::default()
                },
            ),
        )
        .await,
    );
    assert_eq!(started.pid, exec.0.id());
    let again = bounded("Exec", t.exec(ctx(), &exec_request(&id, "e1"))).await;
    expect_code("Exec with a started exec's id", again, Code::ALREADY_EXISTS);

    let nosuch = || "nosuch".to_string();
    let wait = bounded(
        "Wait",
        t.wait(
            ctx(),
            &api::WaitRequest {
                id: id.clone(),
                exec_id: nosuch(),
                ..Default::default()
            },
        ),
    )
    .await;
    expect_code("Wait of an unknown exec", wait, Code::NOT_FOUND);
    let delete = bounded(
        "Delete",
        t.delete(
            ctx(),
            &api::DeleteRequest {
                id: id.clone(),
                exec_id: nosuch(),
                ..Default::default()
            },
        ),
    )
    .await;
    expect_code("Delete of an unknown exec", delete, Code::NOT_FOUND);
    let start = bounded(
        "Start",
        t.start(
            ctx(),
            &api::StartRequest {
                id: id.clone(),
                exec_id: nosuch(),
                ..Default::default()
            },
        ),
    )
    .await;
    expect_code("Start of an unknown exec", start, Code::NOT_FOUND);
    let resize = bounded(
        "ResizePty",
        t.resize_pty(
            ctx(),
            &api::ResizePtyRequest {
                id: id.clone(),
                exec_id: nosuch(),
                width: 80,
                height: 24,
                ..Default::default()
            },
        ),
    )
    .await;
    expect_code("ResizePty of an unknown exec", resize, Code::NOT_FOUND);
    let close = bounded(
        "CloseIO",
        t.close_io(
            ctx(),
            &api::CloseIORequest {
                id: id.clone(),
                exec_id: nosuch(),
                stdin: true,
                ..Default::default()
            },
        ),
    )
    .await;
    expect_code("CloseIO of an unknown exec", close, Code::NOT_FOUND);

    let pids = ok("Pids", shim.pids(&id).await);
    let listed: Vec<(u32, Option<String>)> = pids
        .processes
        .iter()
        .map(|p| {
            let exec_id = p.info.as_ref().map(|any| {
                assert_eq!(
                    any.type_url, "containerd.runc.v1.ProcessDetails",
                    "pid {}",
                    p.pid
                );
                ProcessDetails::parse_from_bytes(&any.value)
                    .unwrap_or_else(|e| panic!("pid {}: undecodable ProcessDetails: {e}", p.pid))
                    .exec_id
            });
            (p.pid, exec_id)
        })
        .collect();
    assert_eq!(
        listed,
        vec![(init, None), (exec.0.id(), Some("e1".to_string()))],
        "Pids"
    );
}

/// No new exec once the init has exited: FAILED_PRECONDITION, and nothing is registered.
#[tokio::test]
async fn exec_after_the_init_exited_is_failed_precondition() {
    let shim = Shim::launch("execdead").await;
    let id = unique_id("c");
    fs::write(shim.bundle(&id).join("fake-cmd"), "exit 3").unwrap();
    shim.create_ok(&id).await;
    ok("Start", shim.start(&id).await);
    assert_eq!(ok("Wait", shim.wait(&id).await).exit_status, 3);
    let _exec = TestExec::spawn(&shim, &id);
    let exec = bounded("Exec", shim.task.exec(ctx(), &exec_request(&id, "late"))).await;
    expect_code(
        "Exec after the init exited",
        exec,
        Code::FAILED_PRECONDITION,
    );
    let state = bounded(
        "State",
        shim.task.state(
            ctx(),
            &api::StateRequest {
                id: id.clone(),
                exec_id: "late".into(),
                ..Default::default()
            },
        ),
    )
    .await;
    expect_code("State of the refused exec", state, Code::NOT_FOUND);
}

/// Detaches the mount on `0` when dropped, whatever the test's outcome: the shim is SIGKILLed by
/// the [`Guard`] and never takes down a rootfs it mounted.
struct DetachOnDrop(PathBuf);

impl Drop for DetachOnDrop {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// How promptly a request answers while another container's rootfs is being mounted: within
/// [`PROMPT`] in one of three tries, and never later than [`SLOW`]. The retries absorb a
/// scheduling hiccup of a loaded test host; a server thread blocked by the mount answers none of
/// the tries before the mount ends (4 s later), so they cannot hide that.
async fn promptly<T, F, Fut>(what: &str, mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ttrpc::Result<T>>,
{
    let mut tries = Vec::new();
    for _ in 0..3 {
        let t0 = Instant::now();
        let answer = ok(what, call().await);
        let took = t0.elapsed();
        assert!(
            took < SLOW,
            "{what} took {took:?} while another container's rootfs was being mounted"
        );
        if took < PROMPT {
            return answer;
        }
        tries.push(took);
    }
    panic!("{what} never answered within {PROMPT:?} while another container's rootfs was being mounted: {tries:?}");
}

const PROMPT: Duration = Duration::from_millis(100);
const SLOW: Duration = Duration::from_millis(1000);

/// One Create's rootfs mount is slow (the test knob `TETHER_TEST_MOUNT_DELAY_MS` makes the
/// mounting thread sleep before a real bind mount) while another container of the same shim is
/// asked State, Connect, Kill and Wait: each answers within 100 ms, before the slow Create
/// returns. The mount runs off the server's only thread; on it, every request would wait for
/// the mount.
#[tokio::test]
async fn a_slow_rootfs_mount_holds_up_no_other_container() {
    const DELAY: Duration = Duration::from_millis(4000);
    let shim = Shim::launch_with_env(
        "slowmount",
        vec![(
            "TETHER_TEST_MOUNT_DELAY_MS".into(),
            DELAY.as_millis().to_string(),
        )],
    )
    .await;
    let (a, b) = (unique_id("a"), unique_id("b"));
    // b has no rootfs mounts, so its Create is not slowed down.
    shim.create_ok(&b).await;
    ok("Start b", shim.start(&b).await);
    let parked_wait = {
        let task = shim.task.clone();
        let req = api::WaitRequest {
            id: b.clone(),
            ..Default::default()
        };
        tokio::spawn(async move { task.wait(ctx(), &req).await })
    };

    let source = tempfile::tempdir().unwrap();
    fs::write(source.path().join("marker"), "rootfs of a").unwrap();
    let rootfs = shim.bundle(&a).join("rootfs");
    let _detach = DetachOnDrop(rootfs.clone());
    let mut req = shim.create_request(&a);
    req.rootfs = vec![containerd_shim_protos::types::mount::Mount {
        type_: "bind".into(),
        source: source.path().display().to_string(),
        options: vec!["rbind".into(), "ro".into()],
        ..Default::default()
    }];
    let slow_create = {
        let task = shim.task.clone();
        tokio::spawn(async move {
            let t0 = Instant::now();
            (task.create(ctx(), &req).await, t0.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    for _ in 0..5 {
        let s = promptly("State b", || shim.state(&b)).await;
        assert_eq!(status(&s), Status::RUNNING);
        promptly("Connect", || shim.connect(&b)).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Kill is not repeatable: once, within the outer bound.
    let t0 = Instant::now();
    ok("Kill b", shim.kill(&b, SIGKILL, false).await);
    assert!(t0.elapsed() < SLOW, "Kill b took {:?}", t0.elapsed());
    let parked = tokio::time::timeout(SLOW, parked_wait)
        .await
        .expect("the parked Wait of b did not answer after its Kill")
        .unwrap();
    assert_eq!(ok("parked Wait b", parked).exit_status, 137);
    let w = promptly("Wait b", || shim.wait(&b)).await;
    assert_eq!(w.exit_status, 137);
    assert!(
        !slow_create.is_finished(),
        "the slow Create returned before the other requests were made: the test proved nothing"
    );

    let (created, took) = tokio::time::timeout(DELAY * 3, slow_create)
        .await
        .expect("the slow Create never returned")
        .unwrap();
    ok("slow Create a", created);
    assert!(took >= DELAY, "the mount was not slowed down: {took:?}");
    assert_eq!(
        fs::read_to_string(rootfs.join("marker")).unwrap(),
        "rootfs of a",
        "a's rootfs is the bind mount"
    );
    ok("Delete a", shim.delete(&a).await);
    assert!(
        !rootfs.join("marker").exists(),
        "Delete left a's rootfs mounted"
    );
    ok("Delete b", shim.delete(&b).await);
}

/// A rootfs mount whose id mapping (containerd 2.x's `uidmap=`/`gidmap=`, see src/mount.rs) is
/// malformed, or has only one of the two, is INVALID_ARGUMENT naming the option, for bind and
/// overlay mounts alike: nothing is mounted, the runtime never runs, no task is left, and the
/// id is free for a good Create. (Passed to the kernel as mount data, the options would fail
/// the mount with a bare EINVAL.)
#[tokio::test]
async fn malformed_idmap_rootfs_options_are_invalid_argument() {
    let shim = Shim::launch("idmap").await;
    let id = unique_id("c");
    let rootfs = shim.bundle(&id).join("rootfs");
    let _detach = DetachOnDrop(rootfs.clone());
    let layers = tempfile::tempdir().unwrap();
    for d in ["lower", "upper", "work"] {
        fs::create_dir(layers.path().join(d)).unwrap();
    }
    let l = layers.path().display();
    for (idmap, named) in [
        (
            &["uidmap=0:65536", "gidmap=0:65536:65536"][..],
            "uidmap=0:65536",
        ),
        (&["uidmap=0:65536:65536", "gidmap=0:x:1"], "gidmap=0:x:1"),
        (
            &["uidmap=0:65536:65536", "gidmap=0:65536:0"],
            "gidmap=0:65536:0",
        ),
        (&["uidmap=0:65536:65536"], "gidmap="),
    ] {
        for (kind, source, options) in [
            (
                "bind",
                format!("{l}/lower"),
                vec!["rbind".to_string(), "ro".into()],
            ),
            (
                "overlay",
                "overlay".to_string(),
                vec![
                    format!("lowerdir={l}/lower"),
                    format!("upperdir={l}/upper"),
                    format!("workdir={l}/work"),
                ],
            ),
        ] {
            let mut req = shim.create_request(&id);
            req.rootfs = vec![containerd_shim_protos::types::mount::Mount {
                type_: kind.into(),
                source,
                options: options
                    .into_iter()
                    .chain(idmap.iter().map(|o| o.to_string()))
                    .collect(),
                ..Default::default()
            }];
            let what = format!("Create with a {kind} rootfs and {idmap:?}");
            let msg = expect_code(&what, shim.create_with(req).await, Code::INVALID_ARGUMENT);
            assert!(
                msg.contains(named),
                "{what}: message {msg:?} does not name {named}"
            );
            let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
            assert!(
                !mountinfo.contains(&format!(" {} ", rootfs.display())),
                "{what}: the rootfs is mounted:\n{mountinfo}"
            );
            expect_code(
                &format!("State after the refused {what}"),
                shim.state(&id).await,
                Code::NOT_FOUND,
            );
        }
    }
    assert!(
        !shim.g.runc_root().exists(),
        "a refused Create ran the runtime"
    );
    shim.create_ok(&id).await;
    ok("Delete", shim.delete(&id).await);
}
