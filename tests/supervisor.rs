//! The supervisor's ordering rules, proved in-process: no root, no containerd, no runc.
//!
//! The test process is what the shim's server process is: a child subreaper running
//! [`tether::server::run`] on a socket of its own, with the in-memory event destination.
//! The tests drive it over ttrpc as containerd would, with `tests/fixtures/fake-runc` as the
//! runtime (its state under a temp dir), and read the events exactly as they left the queue.
//!
//! One server serves every test of this binary: its reaper's `waitpid(-1)` loop reaps every
//! child of the process, so there can be only one. For the same reason nothing here may wait
//! for a child itself (`Command::output`, `status`, `wait`): the reaper takes those statuses.
//! The exec processes are the test's own children (fake-runc's `fake-exec-pid` knob reports
//! them), so the reaper sees their exits as it sees a container's.
//!
//! Rules proved (see the header of `src/supervisor/mod.rs`): a `TaskExit` never precedes its
//! `TaskStart`/`TaskExecStarted`, also for an exit at once and an exit while `Start` is in
//! flight; an init's exit is published after the exits of all its execs; an exit storm
//! reports each exit exactly once, with its status. (OOM before exit needs a real cgroup and
//! OOM kill: `tests/core.rs` proves it as root.)

use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::shim::oci::Options as RuncOptions;
use containerd_shim_protos::shim_async::TaskClient;
use tether::events::{Destination, Event};
use tether::server::ServerConfig;

/// The fake OCI runtime.
const FAKE_RUNC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/fake-runc");

/// The namespace the server serves; fake-runc's state is under `<root>/<NAMESPACE>/<id>`.
const NAMESPACE: &str = "supervisor-test";

/// Bound of any one wait in these tests.
const LIMIT: Duration = Duration::from_secs(30);

/// The one in-process server of this test binary.
struct Harness {
    dir: PathBuf,
    socket: PathBuf,
    /// Every event the server published, in order.
    events: Arc<Mutex<Vec<Event>>>,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let mode = fs::metadata(FAKE_RUNC)
            .unwrap_or_else(|e| panic!("{FAKE_RUNC}: {e}"))
            .permissions()
            .mode();
        assert!(mode & 0o111 == 0o111, "{FAKE_RUNC} must be executable");
        // As `serve` does: orphans (fake-runc's container inits) come to this process.
        nix::sys::prctl::set_child_subreaper(true).expect("become a child subreaper");
        // Kept for the whole run (statics are never dropped); named for this process, so each
        // run removes what earlier runs left behind.
        remove_dirs_of_dead_runs();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
            .tempdir()
            .expect("temp dir")
            .keep();
        let socket = dir.join("shim.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
        listener.set_nonblocking(true).unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let config = ServerConfig {
            namespace: NAMESPACE.into(),
            runtime_timeout: Duration::from_secs(20),
            socket: PathBuf::new(),
        };
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                tokio::spawn(async move {
                    while let Some((_topic, e)) = rx.recv().await {
                        sink.lock().unwrap().push(e);
                    }
                });
                let listener = tokio::net::UnixListener::from_std(listener).unwrap();
                tether::server::run(
                    listener,
                    Destination::Memory(tx),
                    config,
                    std::future::pending::<()>(),
                )
                .await
                .expect("server run");
            });
        });
        Harness {
            dir,
            socket,
            events,
        }
    })
}

/// Temp dirs of this test binary: `<prefix><pid>-<random>`.
const DIR_PREFIX: &str = "tether-sup-";

/// Removes the temp dirs of earlier runs whose process is gone.
fn remove_dirs_of_dead_runs() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(DIR_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !PathBuf::from(format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// A client of the in-process server, and the containers and processes a test made.
struct Client {
    task: TaskClient,
    /// Processes the test spawned (exec stand-ins), as pidfds: killed on drop whatever the
    /// outcome, and a pid recycled after the reaper took one can never be hit.
    spawned: Vec<OwnedFd>,
}

impl Drop for Client {
    fn drop(&mut self) {
        for pidfd in &self.spawned {
            // SAFETY: pidfd_send_signal takes a descriptor we own, a signal number and null
            // info; it fails harmlessly (ESRCH) for a process that already exited.
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    pidfd.as_raw_fd(),
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                );
            }
        }
    }
}

/// A pidfd of `pid`, a child of this process that cannot have been reaped yet (the caller
/// holds it alive: it blocks until the test releases it).
fn pidfd_open(pid: i32) -> OwnedFd {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    assert!(
        fd >= 0,
        "pidfd_open({pid}): {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: the kernel just created this descriptor for us; nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("{prefix}-{}", N.fetch_add(1, Ordering::Relaxed))
}

async fn bounded<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {LIMIT:?}"))
}

#[track_caller]
fn ok<T>(what: &str, r: ttrpc::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{what}: want OK, got {e:?}"))
}

fn ctx() -> ttrpc::context::Context {
    ttrpc::context::Context::default()
}

impl Client {
    async fn connect() -> Client {
        let h = harness();
        let addr = format!("unix://{}", h.socket.display());
        let deadline = Instant::now() + LIMIT;
        let raw = loop {
            match ttrpc::asynchronous::Client::connect(&addr).await {
                Ok(c) => break c,
                Err(e) if Instant::now() > deadline => panic!("connect {addr}: {e:?}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        };
        Client {
            task: TaskClient::new(raw),
            spawned: Vec::new(),
        }
    }

    /// The bundle of `id`: a spec with a private pid namespace (no `kill --all` at exit) and
    /// the fake-runc knobs given, e.g. `("fake-cmd", "exit 3")`.
    fn bundle(&self, id: &str, knobs: &[(&str, &str)]) -> PathBuf {
        let b = harness().dir.join("bundles").join(id);
        fs::create_dir_all(b.join("rootfs")).unwrap();
        fs::write(
            b.join("config.json"),
            r#"{"ociVersion":"1.0.2","process":{"args":["sleep"]},"root":{"path":"rootfs"},"linux":{"namespaces":[{"type":"pid"},{"type":"mount"}]}}"#,
        )
        .unwrap();
        for (name, content) in knobs {
            fs::write(b.join(name), content).unwrap();
        }
        b
    }

    /// Creates `id` in its bundle; returns the init's pid.
    async fn create(&self, id: &str, knobs: &[(&str, &str)]) -> u32 {
        let bundle = self.bundle(id, knobs);
        let options = RuncOptions {
            binary_name: FAKE_RUNC.into(),
            root: harness().dir.join("runc").display().to_string(),
            ..Default::default()
        };
        let req = api::CreateTaskRequest {
            id: id.into(),
            bundle: bundle.display().to_string(),
            options: MessageField::some(Any {
                type_url: "containerd.runc.v1.Options".into(),
                value: options.write_to_bytes().unwrap(),
                ..Default::default()
            }),
            ..Default::default()
        };
        ok(
            &format!("Create {id}"),
            bounded("Create", self.task.create(ctx(), &req)).await,
        )
        .pid
    }

    async fn start(&self, id: &str, exec_id: &str) -> u32 {
        let req = api::StartRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        ok(
            &format!("Start {id}/{exec_id}"),
            bounded("Start", self.task.start(ctx(), &req)).await,
        )
        .pid
    }

    async fn wait(&self, id: &str, exec_id: &str) -> u32 {
        let req = api::WaitRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        ok(
            &format!("Wait {id}/{exec_id}"),
            bounded("Wait", self.task.wait(ctx(), &req)).await,
        )
        .exit_status
    }

    async fn kill(&self, id: &str, signal: u32) {
        let req = api::KillRequest {
            id: id.into(),
            signal,
            ..Default::default()
        };
        ok(
            &format!("Kill {id}"),
            bounded("Kill", self.task.kill(ctx(), &req)).await,
        );
    }

    async fn delete(&self, id: &str, exec_id: &str) {
        let req = api::DeleteRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        ok(
            &format!("Delete {id}/{exec_id}"),
            bounded("Delete", self.task.delete(ctx(), &req)).await,
        );
    }

    /// Registers exec `exec_id` of `id` and starts it with `pid` as the process fake-runc
    /// reports. Returns the pid `Start` answered.
    async fn exec(&self, id: &str, exec_id: &str, pid: i32) -> u32 {
        fs::write(
            harness().dir.join("bundles").join(id).join("fake-exec-pid"),
            pid.to_string(),
        )
        .unwrap();
        let req = api::ExecProcessRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            spec: MessageField::some(Any {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
                value: br#"{"args":["sh"],"cwd":"/"}"#.to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        };
        ok(
            &format!("Exec {id}/{exec_id}"),
            bounded("Exec", self.task.exec(ctx(), &req)).await,
        );
        self.start(id, exec_id).await
    }

    /// Spawns `sh -c script` as an exec stand-in, with `stdin` as its standard input.
    fn spawn(&mut self, script: &str, stdin: Stdio) -> i32 {
        // Never waited for here: the server's reaper reaps it (see the module doc).
        #[allow(clippy::zombie_processes)]
        let child = Command::new("/bin/sh")
            .args(["-c", script])
            .stdin(stdin)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn an exec stand-in");
        let pid = child.id() as i32;
        self.spawned.push(pidfd_open(pid));
        pid
    }
}

/// The events of container `id`, in the order they were published.
fn events_of(id: &str) -> Vec<Event> {
    harness()
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| container_of(e) == id)
        .cloned()
        .collect()
}

fn container_of(e: &Event) -> &str {
    match e {
        Event::Create { container_id, .. }
        | Event::Start { container_id, .. }
        | Event::Exit { container_id, .. }
        | Event::Delete { container_id, .. }
        | Event::ExecAdded { container_id, .. }
        | Event::ExecStarted { container_id, .. }
        | Event::Paused { container_id }
        | Event::Resumed { container_id }
        | Event::Oom { container_id } => container_id,
    }
}

/// Waits until `done` holds for the events of `id`; returns them.
async fn wait_events(id: &str, what: &str, done: impl Fn(&[Event]) -> bool) -> Vec<Event> {
    let deadline = Instant::now() + LIMIT;
    loop {
        let events = events_of(id);
        if done(&events) {
            return events;
        }
        if Instant::now() > deadline {
            panic!("{what}: not within {LIMIT:?}; events of {id}: {events:#?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `(position, pid, status)` of every `TaskExit` of process `proc` (the container id for the
/// init) among `events`.
fn exits(events: &[Event], proc: &str) -> Vec<(usize, u32, u32)> {
    events
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match e {
            Event::Exit {
                id,
                pid,
                exit_status,
                ..
            } if id == proc => Some((i, *pid, *exit_status)),
            _ => None,
        })
        .collect()
}

/// Position of the event announcing that `proc` runs (`TaskStart` or `TaskExecStarted`).
fn started(events: &[Event], id: &str, proc: &str) -> Option<(usize, u32)> {
    events.iter().enumerate().find_map(|(i, e)| match e {
        Event::Start { pid, .. } if proc == id => Some((i, *pid)),
        Event::ExecStarted { exec_id, pid, .. } if exec_id == proc => Some((i, *pid)),
        _ => None,
    })
}

/// Asserts `proc` of container `id` exited exactly once, with `status`, after its start
/// event, with the pid it started with.
#[track_caller]
fn assert_exit_after_start(events: &[Event], id: &str, proc: &str, status: u32) {
    let (start_at, pid) = started(events, id, proc)
        .unwrap_or_else(|| panic!("no start event of {id}/{proc}: {events:#?}"));
    let ex = exits(events, proc);
    assert_eq!(ex.len(), 1, "{id}/{proc} exits once: {events:#?}");
    let (exit_at, exit_pid, exit_status) = ex[0];
    assert!(
        start_at < exit_at,
        "{id}/{proc}: TaskExit (#{exit_at}) before its start event (#{start_at}): {events:#?}"
    );
    assert_eq!(
        (exit_pid, exit_status),
        (pid, status),
        "{id}/{proc}: exit pid and status"
    );
}

/// A pipe whose read end the exec stand-ins share as stdin: they run until the test drops
/// the write end, then all exit at once. Close-on-exec, so no other child holds it.
fn release_pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe")
}

/// Containers whose init exits at once (`exit 3`), ten started at the same time: each
/// `TaskExit` comes after its `TaskStart`, once, with status 3, and `Wait` answers 3.
#[tokio::test]
async fn an_instant_init_exit_follows_its_start() {
    let c = Arc::new(Client::connect().await);
    let ids: Vec<String> = (0..10).map(|_| unique("instant")).collect();
    let mut runs = Vec::new();
    for id in &ids {
        let (c, id) = (c.clone(), id.clone());
        runs.push(tokio::spawn(async move {
            let pid = c.create(&id, &[("fake-cmd", "exit 3")]).await;
            assert_eq!(c.start(&id, "").await, pid);
            assert_eq!(c.wait(&id, "").await, 3);
        }));
    }
    for r in runs {
        r.await.unwrap();
    }
    for id in &ids {
        let events = wait_events(id, "init exit", |e| !exits(e, id).is_empty()).await;
        assert!(
            matches!(events[0], Event::Create { .. }),
            "TaskCreate first: {events:#?}"
        );
        assert_exit_after_start(&events, id, id, 3);
        c.delete(id, "").await;
    }
}

/// The init exits and is reaped while `runc start` is still running (fake-runc's
/// `fake-start-waits-for-reap` returns only after the reap, and fails the Start otherwise):
/// the exit is held back and published right after `TaskStart`.
#[tokio::test]
async fn an_init_exit_during_start_follows_its_start() {
    let c = Client::connect().await;
    for _ in 0..3 {
        let id = unique("during");
        let pid = c
            .create(
                &id,
                &[("fake-cmd", "exit 5"), ("fake-start-waits-for-reap", "")],
            )
            .await;
        assert_eq!(c.start(&id, "").await, pid);
        let events = wait_events(&id, "init exit", |e| !exits(e, &id).is_empty()).await;
        assert_exit_after_start(&events, &id, &id, 5);
        assert_eq!(c.wait(&id, "").await, 5);
        c.delete(&id, "").await;
    }
}

/// Execs that exit and are reaped while `runc exec` is still running (fake-runc's
/// `fake-exec-waits-for-reap` returns only after the reap, and fails the Start otherwise):
/// each `TaskExit` follows its `TaskExecStarted`, with its status.
#[tokio::test]
async fn an_instant_exec_exit_follows_its_exec_started() {
    let mut c = Client::connect().await;
    let id = unique("instexec");
    c.create(&id, &[("fake-exec-waits-for-reap", "")]).await;
    c.start(&id, "").await;
    let exec_pids = harness()
        .dir
        .join("runc")
        .join(NAMESPACE)
        .join(&id)
        .join("exec-pids");
    for n in 0..10 {
        let exec_id = format!("e{n}");
        // Exits once fake-runc's exec recorded this pid, just before it returns.
        let script = format!(
            "until grep -qx $$ '{}' 2>/dev/null; do sleep 0.001; done; exit {}",
            exec_pids.display(),
            10 + n
        );
        let pid = c.spawn(&script, Stdio::null());
        assert_eq!(c.exec(&id, &exec_id, pid).await, pid as u32);
        assert_eq!(c.wait(&id, &exec_id).await, 10 + n);
    }
    let events = events_of(&id);
    for n in 0..10 {
        assert_exit_after_start(&events, &id, &format!("e{n}"), 10 + n);
    }
    for n in 0..10 {
        c.delete(&id, &format!("e{n}")).await;
    }
    c.kill(&id, 9).await;
    assert_eq!(c.wait(&id, "").await, 137);
    c.delete(&id, "").await;
}

/// The init is killed while three execs still run: its `TaskExit` is held until the last
/// exec's exit is published, so it is the container's last exit.
#[tokio::test]
async fn the_init_exit_is_published_after_its_execs() {
    let mut c = Client::connect().await;
    let id = unique("initlast");
    c.create(&id, &[]).await;
    c.start(&id, "").await;
    let (read, write) = release_pipe();
    for n in 0..3 {
        let pid = c.spawn(
            &format!("read _; exit {}", 20 + n),
            Stdio::from(read.try_clone().unwrap()),
        );
        c.exec(&id, &format!("x{n}"), pid).await;
    }
    drop(read);
    c.kill(&id, 9).await;
    // The init is gone and reaped (fake-runc's pid is the init's), but the execs run on.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = events_of(&id);
    assert!(
        exits(&events, &id).is_empty(),
        "the init's exit was published while its execs still ran: {events:#?}"
    );
    drop(write);
    let events = wait_events(&id, "init exit", |e| !exits(e, &id).is_empty()).await;
    let (init_at, _, init_status) = exits(&events, &id)[0];
    assert_eq!(init_status, 137, "{events:#?}");
    for n in 0..3 {
        let exec_id = format!("x{n}");
        assert_exit_after_start(&events, &id, &exec_id, 20 + n);
        assert!(
            exits(&events, &exec_id)[0].0 < init_at,
            "exec {exec_id}'s exit after the init's: {events:#?}"
        );
    }
    assert_exit_after_start(&events, &id, &id, 137);
    for n in 0..3 {
        c.delete(&id, &format!("x{n}")).await;
    }
    c.delete(&id, "").await;
}

/// 100 execs of one container exit at the same moment, each with its own status: every exit
/// is published exactly once, after its `TaskExecStarted`, with its status and pid, and every
/// `Wait` answers it.
#[tokio::test]
async fn an_exit_storm_reports_each_exit_once_with_its_status() {
    const EXECS: u32 = 100;
    let mut c = Client::connect().await;
    let id = unique("storm");
    c.create(&id, &[]).await;
    c.start(&id, "").await;
    let (read, write) = release_pipe();
    for n in 0..EXECS {
        let pid = c.spawn(
            &format!("read _; exit {n}"),
            Stdio::from(read.try_clone().unwrap()),
        );
        c.exec(&id, &format!("s{n}"), pid).await;
    }
    drop(read);
    let c = Arc::new(c);
    // Every Wait is in before the storm.
    let waits: Vec<_> = (0..EXECS)
        .map(|n| {
            let c = c.clone();
            let id = id.clone();
            tokio::spawn(async move { c.wait(&id, &format!("s{n}")).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(write);
    let events = wait_events(&id, "every exec exit", |e| {
        e.iter().filter(|e| matches!(e, Event::Exit { .. })).count() >= EXECS as usize
    })
    .await;
    for n in 0..EXECS {
        assert_exit_after_start(&events, &id, &format!("s{n}"), n);
    }
    for (n, w) in waits.into_iter().enumerate() {
        assert_eq!(w.await.unwrap(), n as u32, "Wait of s{n}");
    }
    // Nothing more arrives later (a duplicate would be a second exit of some exec).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = events_of(&id);
    assert_eq!(
        after
            .iter()
            .filter(|e| matches!(e, Event::Exit { .. }))
            .count(),
        EXECS as usize,
        "{after:#?}"
    );
    for n in 0..EXECS {
        c.delete(&id, &format!("s{n}")).await;
    }
    c.kill(&id, 9).await;
    assert_eq!(c.wait(&id, "").await, 137);
    c.delete(&id, "").await;
}

/// The code and message of a refused call.
#[track_caller]
fn refused<T: std::fmt::Debug>(what: &str, r: ttrpc::Result<T>) -> (ttrpc::Code, String) {
    match r {
        Err(ttrpc::Error::RpcStatus(s)) => (s.code(), s.message().to_string()),
        other => panic!("{what}: want an error status, got {other:?}"),
    }
}

fn exec_request(id: &str, exec_id: &str) -> api::ExecProcessRequest {
    api::ExecProcessRequest {
        id: id.into(),
        exec_id: exec_id.into(),
        spec: MessageField::some(Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
            value: br#"{"args":["sh"],"cwd":"/"}"#.to_vec(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// containerd#10589's client test (containerd 2.1.9): an exec's start is held inside the
/// runtime, the init is SIGKILLed, and a second exec is created. The init's exit is held back
/// (an exec is starting), so by its events and by State the task still runs: the second Exec is
/// accepted, as the Go shim accepts it, and only its Start fails (FailedPrecondition). Once the
/// held start ends, the init's TaskExit goes out once, as the container's last event, and only
/// then is a new Exec refused.
#[tokio::test]
async fn an_exec_created_while_the_init_exit_is_held_is_accepted_and_only_its_start_fails() {
    let c = Client::connect().await;
    let id = unique("heldexec");
    let init = c.create(&id, &[]).await;
    c.start(&id, "").await;
    let bundle = harness().dir.join("bundles").join(&id);
    fs::write(bundle.join("fake-hang-exec"), "").unwrap();
    ok(
        "Exec e1",
        bounded("Exec", c.task.exec(ctx(), &exec_request(&id, "e1"))).await,
    );
    let held = {
        let (task, req) = (
            c.task.clone(),
            api::StartRequest {
                id: id.clone(),
                exec_id: "e1".into(),
                ..Default::default()
            },
        );
        tokio::spawn(async move { task.start(ctx(), &req).await })
    };
    let hung_file = bundle.join("fake-hung-pid");
    let deadline = Instant::now() + LIMIT;
    while !hung_file.exists() {
        assert!(Instant::now() < deadline, "runc exec of e1 never ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    c.kill(&id, 9).await;
    // Reaped by the server (this process): its /proc entry is gone.
    let deadline = Instant::now() + LIMIT;
    while PathBuf::from(format!("/proc/{init}")).exists() {
        assert!(Instant::now() < deadline, "the init {init} was not reaped");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        exits(&events_of(&id), &id).is_empty(),
        "the init's exit went out while an exec was starting: {:#?}",
        events_of(&id)
    );
    let state_req = api::StateRequest {
        id: id.clone(),
        ..Default::default()
    };
    let state = ok(
        "State",
        bounded("State", c.task.state(ctx(), &state_req)).await,
    );
    assert_eq!(
        state.status.enum_value(),
        Ok(api::Status::RUNNING),
        "State agrees with the events: {state:?}"
    );
    ok(
        "Exec e2 while the init's exit is held",
        bounded("Exec", c.task.exec(ctx(), &exec_request(&id, "e2"))).await,
    );
    // Events are published after the answer, so the collector may see TaskExecAdded later.
    wait_events(&id, "TaskExecAdded for e2", |e| {
        e.iter()
            .any(|e| matches!(e, Event::ExecAdded { exec_id, .. } if exec_id == "e2"))
    })
    .await;
    let start_e2 = api::StartRequest {
        id: id.clone(),
        exec_id: "e2".into(),
        ..Default::default()
    };
    let (code, msg) = refused(
        "Start e2",
        bounded("Start", c.task.start(ctx(), &start_e2)).await,
    );
    assert_eq!(code, ttrpc::Code::FAILED_PRECONDITION, "{msg}");
    assert!(msg.contains("init process is not running"), "{msg}");

    // The runtime's exec ends (killed), so e1's start fails and nothing holds the exit.
    let hung: i32 = fs::read_to_string(&hung_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let hung_fd = pidfd_open(hung);
    // SAFETY: pidfd_send_signal with a descriptor we own, a signal number and null info.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            hung_fd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        );
    }
    let e1 = bounded("held Start e1", held).await.unwrap();
    assert!(e1.is_err(), "e1's start succeeded: {e1:?}");
    let events = wait_events(&id, "init exit", |e| !exits(e, &id).is_empty()).await;
    assert_eq!(exits(&events, &id).len(), 1, "{events:#?}");
    assert!(
        matches!(events.last(), Some(Event::Exit { id: p, exit_status: 137, .. }) if *p == id),
        "the init's exit (137) is the container's last event: {events:#?}"
    );
    for exec_id in ["e1", "e2"] {
        assert!(
            exits(&events, exec_id).is_empty() && started(&events, &id, exec_id).is_none(),
            "{exec_id} never ran: {events:#?}"
        );
    }
    let state = ok(
        "State",
        bounded("State", c.task.state(ctx(), &state_req)).await,
    );
    assert_eq!(state.status.enum_value(), Ok(api::Status::STOPPED));
    let (code, msg) = refused(
        "Exec e3 after the init's exit",
        bounded("Exec", c.task.exec(ctx(), &exec_request(&id, "e3"))).await,
    );
    assert_eq!(code, ttrpc::Code::FAILED_PRECONDITION, "{msg}");
    fs::remove_file(bundle.join("fake-hang-exec")).unwrap();
    c.delete(&id, "e1").await;
    c.delete(&id, "e2").await;
    c.delete(&id, "").await;
}
