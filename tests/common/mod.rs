//! Shared harness for the root-only integration tests: a private containerd per test, a
//! busybox rootfs, `ctr` helpers with timeouts, and `/proc` inspection.
//!
//! Every test file that uses it says `mod common;`. Nothing here skips silently: a test that
//! needs root calls [`require_root`] and fails when not root.
//!
//! Which runtime the tests drive is chosen by `TETHER_TEST_RUNTIME` (default
//! `io.containerd.tether.v2`); `TETHER_TEST_RUNTIME=io.containerd.runc.v2` runs the same tests
//! against the reference Go shim, which is how the tests themselves are checked.
//!
//! Which containerd they run under is chosen by `TETHER_CONTAINERD`: a directory holding
//! `containerd`, `ctr` and `containerd-shim-runc-v2` (e.g.
//! `/var/cache/tether/containerd/2.1.9/usr/bin`, fetched by `scripts/containerd-versions.sh`);
//! unset or empty = the ones on `PATH`. Tests that depend on containerd's version ask
//! [`containerd_version`].
//!
//! The benchmark (`examples/bench.rs`) includes this file too (`#[path]`). Examples get no
//! `CARGO_BIN_EXE_*`, so there [`shim_binary`] is the release binary ([`release_shim_binary`]);
//! [`Containerd::start_with`] picks the shim binary and containerd's log level explicitly.
//!
//! Isolation between tests (they run in parallel threads of one process and in several test
//! processes): each [`Containerd`] has its own temp dir (root, state, sockets, rootfs, log)
//! and its own containerd namespace. The namespace also keeps the shims' shared runc root
//! (`/run/containerd/runc/<namespace>`) apart, and shims are told apart by the grpc address
//! they were given, which is inside the temp dir.
#![allow(dead_code)]

pub mod image;
pub mod pty;

use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use containerd_shim_protos::protobuf::Message;

/// Runtime name used when `TETHER_TEST_RUNTIME` is unset or empty.
pub const DEFAULT_RUNTIME: &str = "io.containerd.tether.v2";

/// Upper bound for one ordinary `ctr` call. A hang becomes a test failure, not a stuck run.
pub const CTR_TIMEOUT: Duration = Duration::from_secs(60);

/// How long `Containerd::start` waits for `ctr version` to succeed: 10 s, times
/// `TETHER_TEST_TIME_SCALE` (a whole number; the VM lane sets it, since containerd takes
/// several seconds to come up under QEMU's TCG).
fn start_timeout() -> Duration {
    Duration::from_secs(10) * time_scale()
}

/// `TETHER_TEST_RUNTIME_CONFIG`: an options file `ctr run` hands the shim as
/// `runtimeoptions.v1.Options { ConfigPath }` (unset or empty: none).
pub fn runtime_config_path() -> Option<String> {
    std::env::var("TETHER_TEST_RUNTIME_CONFIG")
        .ok()
        .filter(|v| !v.trim().is_empty())
}

/// The OCI runtime the shim runs: `BinaryName` from the [`runtime_config_path`] file (what the
/// shim reads from it), else `runc`. Tests that ask the runtime themselves (`list`, `features`)
/// call this one, so they hold for crun (the VM lane's crun run) as well as for runc.
pub fn runtime_binary() -> String {
    let Some(path) = runtime_config_path() else {
        return "runc".into();
    };
    let text = fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("TETHER_TEST_RUNTIME_CONFIG {path}: {e}"));
    text.lines()
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == "BinaryName").then(|| v.trim().trim_matches('"').to_string())
        })
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| "runc".into())
}

/// A container as `<runtime> --root ROOT list --format json` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub id: String,
    pub pid: i64,
    pub status: String,
}

/// The containers [`runtime_binary`] knows under `root`. runc prints `null` for none and
/// one line; crun prints `[]` and indented JSON: both are parsed, not matched as text.
pub fn runtime_list(root: &Path) -> Result<Vec<Listed>, String> {
    let bin = runtime_binary();
    let mut cmd = Command::new(&bin);
    cmd.arg("--root")
        .arg(root)
        .args(["list", "--format", "json"]);
    let out = output_timeout(cmd, Duration::from_secs(30) * time_scale())?;
    if !out.status.success() {
        return Err(format!(
            "{bin} --root {} list: {}",
            root.display(),
            describe(&out)
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("{bin} list: not JSON ({e}): {}", describe(&out)))?;
    let items = match v {
        serde_json::Value::Null => Vec::new(),
        serde_json::Value::Array(a) => a,
        other => return Err(format!("{bin} list: not an array: {other}")),
    };
    items
        .iter()
        .map(|c| {
            Ok(Listed {
                id: c["id"].as_str().ok_or(format!("no id in {c}"))?.to_string(),
                pid: c["pid"].as_i64().ok_or(format!("no pid in {c}"))?,
                status: c["status"]
                    .as_str()
                    .ok_or(format!("no status in {c}"))?
                    .to_string(),
            })
        })
        .collect()
}

/// `TETHER_TEST_TIME_SCALE`, default 1: how many times slower than the host this node runs.
pub fn time_scale() -> u32 {
    std::env::var("TETHER_TEST_TIME_SCALE")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|n| *n >= 1)
        .unwrap_or(1)
}

/// How long `Containerd::stop` waits after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Per-call bound used while cleaning up in `Drop` (must not hang a failing test forever).
const CLEANUP_CTR_TIMEOUT: Duration = Duration::from_secs(10);

/// The busybox-static binary the rootfs is built from.
const BUSYBOX: &str = "/bin/busybox";

/// Where containerd 1.6 shims put their ttrpc sockets.
pub const SHIM_SOCKET_DIR: &str = "/run/containerd/s";

/// Runc root the containerd runc shims use for a namespace is `<RUNC_ROOT>/<namespace>`.
pub const RUNC_ROOT: &str = "/run/containerd/runc";

// ---------------------------------------------------------------------------------------------
// Basics
// ---------------------------------------------------------------------------------------------

/// Fails the test unless it runs as root (effective uid 0). Never skips silently.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "this integration test needs root (euid is {euid}): it starts containerd and runc. \
         Run it as root, e.g. `sudo -E cargo test --test core`."
    );
}

/// The runtime under test: `TETHER_TEST_RUNTIME`, or `io.containerd.tether.v2`.
pub fn runtime() -> String {
    match std::env::var("TETHER_TEST_RUNTIME") {
        Ok(v) if !v.trim().is_empty() => v.trim().to_string(),
        _ => DEFAULT_RUNTIME.to_string(),
    }
}

/// The directory in `TETHER_CONTAINERD`, if set and non-empty.
pub fn containerd_dir() -> Option<PathBuf> {
    match std::env::var_os("TETHER_CONTAINERD") {
        Some(v) if !v.is_empty() => Some(PathBuf::from(v)),
        _ => None,
    }
}

/// `name` (`containerd`, `ctr`, `containerd-shim-runc-v2`) from [`containerd_dir`], or the
/// bare name (looked up on `PATH`).
pub fn containerd_tool(name: &str) -> PathBuf {
    match containerd_dir() {
        Some(d) => d.join(name),
        None => PathBuf::from(name),
    }
}

/// (major, minor) of the containerd under test, from `containerd --version` (cached).
pub fn containerd_version() -> (u32, u32) {
    static VERSION: std::sync::OnceLock<(u32, u32)> = std::sync::OnceLock::new();
    *VERSION.get_or_init(|| {
        let bin = containerd_tool("containerd");
        let out = Command::new(&bin)
            .arg("--version")
            .output()
            .unwrap_or_else(|e| panic!("{} --version: {e}", bin.display()));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        parse_containerd_version(&text)
            .unwrap_or_else(|| panic!("no version in `{} --version`: {text:?}", bin.display()))
    })
}

/// The first `X.Y.` word after the package path in `containerd --version` output
/// (`containerd github.com/containerd/containerd/v2 2.1.9+unknown ...`, `... 1.7.24~ds1 ...`).
fn parse_containerd_version(text: &str) -> Option<(u32, u32)> {
    text.split_whitespace().skip(2).find_map(|w| {
        let w = w.strip_prefix('v').unwrap_or(w);
        let mut it = w.split(|c: char| !c.is_ascii_digit());
        let major = it.next()?.parse().ok()?;
        let minor = it.next()?.parse().ok()?;
        Some((major, minor))
    })
}

/// The shim binary cargo built for this test run (integration tests), or the release binary
/// where cargo provides none (examples, i.e. the benchmark).
pub fn shim_binary() -> PathBuf {
    match option_env!("CARGO_BIN_EXE_containerd-shim-tether-v2") {
        Some(p) => PathBuf::from(p),
        None => release_shim_binary(),
    }
}

/// Name of the tether binary (also what containerd derives from `io.containerd.tether.v2`).
pub const SHIM_BINARY_NAME: &str = "containerd-shim-tether-v2";

/// Cargo's target directory: `$CARGO_TARGET_DIR` if set (a relative value is taken relative
/// to the package root, where `cargo test` and the scripts run), else derived from this
/// executable's own path (`<target>/<profile>/deps/<test>` or
/// `<target>/<profile>/examples/<example>`), else `<package>/target`.
pub fn target_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        return if dir.is_absolute() {
            dir
        } else {
            manifest.join(dir)
        };
    }
    let from_exe = std::env::current_exe().ok().and_then(|exe| {
        let kind = exe.parent()?; // deps/ or examples/
        let profile = kind.parent()?; // debug/ or release/
        let name = kind.file_name()?.to_str()?;
        (name == "deps" || name == "examples").then(|| profile.parent().map(Path::to_path_buf))?
    });
    from_exe.unwrap_or_else(|| manifest.join("target"))
}

/// `<target dir>/release/containerd-shim-tether-v2` (built by `cargo build --release`).
pub fn release_shim_binary() -> PathBuf {
    target_dir().join("release").join(SHIM_BINARY_NAME)
}

/// Why `bin` (a build of this package's shim) cannot be measured: missing, or older than a
/// source file it is built from. The sources are the ones cargo recorded for it in `<bin>.d`
/// (its dep-info, next to the binary), else everything under `src/`. `Cargo.toml` and
/// `Cargo.lock` do not count: editing them (a dev-dependency, a test target) need not relink the
/// binary, and cargo rebuilds it anyway when a dependency it uses changes. `None` when fresh.
pub fn stale_binary_reason(bin: &Path) -> Option<String> {
    let rebuild = "run `cargo build --release --bin containerd-shim-tether-v2` first \
                   (scripts/test.sh and scripts/bench.sh do)";
    let built = match fs::metadata(bin).and_then(|m| m.modified()) {
        Ok(t) => t,
        Err(e) => return Some(format!("{} is missing ({e}); {rebuild}", bin.display())),
    };
    fn newest(path: &Path, best: &mut Option<(std::time::SystemTime, PathBuf)>) {
        let Ok(meta) = fs::symlink_metadata(path) else {
            return;
        };
        if meta.is_dir() {
            if let Ok(rd) = fs::read_dir(path) {
                for e in rd.flatten() {
                    newest(&e.path(), best);
                }
            }
        } else if let Ok(t) = meta.modified() {
            if !matches!(best, Some((b, _)) if *b >= t) {
                *best = Some((t, path.to_path_buf()));
            }
        }
    }
    let mut dep_info = bin.as_os_str().to_owned();
    dep_info.push(".d");
    let sources = fs::read_to_string(&dep_info)
        .ok()
        .and_then(|text| dep_info_sources(&text, bin))
        .unwrap_or_else(|| vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")]);
    let mut best = None;
    for p in &sources {
        newest(p, &mut best);
    }
    match best {
        Some((t, path)) if t > built => Some(format!(
            "{} is older than {} (the release binary is stale); {rebuild}",
            bin.display(),
            path.display()
        )),
        _ => None,
    }
}

/// The prerequisites of `target` in a Makefile-style dep-info file as cargo writes it
/// (`<target path>: src1 src2 ...`, spaces in paths escaped as `\ `). The rule is found by the
/// target's file name, so a differently spelled target dir (relative, symlinked) still matches.
fn dep_info_sources(text: &str, target: &Path) -> Option<Vec<PathBuf>> {
    let name = target.file_name()?.to_string_lossy().replace(' ', "\\ ");
    let line = text.lines().find_map(|l| {
        let (head, rest) = l.split_once(": ")?;
        head.ends_with(name.as_str()).then_some(rest)
    })?;
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&' ') => {
                cur.push(' ');
                chars.next();
            }
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    out.push(PathBuf::from(std::mem::take(&mut cur)));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(PathBuf::from(cur));
    }
    (!out.is_empty()).then_some(out)
}

/// A container id (or other name) unique within this test process: `<prefix>-<n>`, with
/// characters containerd does not accept in identifiers replaced by `-`.
pub fn unique_id(prefix: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut clean = String::new();
    for c in prefix.chars() {
        if c.is_ascii_alphanumeric() {
            clean.push(c);
        } else if !clean.is_empty() && !clean.ends_with('-') {
            clean.push('-');
        }
    }
    let clean = clean.trim_end_matches('-');
    let clean = if clean.is_empty() { "c" } else { clean };
    format!("{clean}-{n}")
}

/// Polls `cond` every 20 ms until it returns true (-> true) or `timeout` passes (-> false).
/// `cond` is always evaluated at least once, and once more at the deadline.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return cond();
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// [`wait_until`] for async tests: sleeps on the tokio timer, so the test's other tasks run.
pub async fn wait_until_async(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return cond();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Last `n` lines of a text file, for failure messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = match fs::read(path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => return format!("<cannot read {}: {e}>", path.display()),
    };
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `Output` rendered for an assertion message (stdout is cut to keep messages readable).
pub fn describe(out: &Output) -> String {
    let mut stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if stdout.len() > 2000 {
        let mut cut = 2000;
        while !stdout.is_char_boundary(cut) {
            cut -= 1;
        }
        stdout.truncate(cut);
        stdout.push_str("…(truncated)");
    }
    format!(
        "status: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    )
}

// ---------------------------------------------------------------------------------------------
// Rootfs
// ---------------------------------------------------------------------------------------------

/// Builds a busybox rootfs in `dir` (created if needed): `bin/busybox` copied from
/// `/bin/busybox` (must be busybox-static), one `bin/<applet> -> busybox` symlink per applet
/// of `busybox --list`, and the empty `proc dev sys tmp etc` dirs runc mounts onto.
pub fn busybox_rootfs(dir: &Path) {
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).unwrap_or_else(|e| panic!("mkdir {}: {e}", bin.display()));
    for d in ["proc", "dev", "sys", "tmp", "etc"] {
        fs::create_dir_all(dir.join(d)).unwrap_or_else(|e| panic!("mkdir {d}: {e}"));
    }
    let list = Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {BUSYBOX} ({e}); install busybox-static (scripts/setup.sh)")
        });
    assert!(
        list.status.success(),
        "{BUSYBOX} --list failed: {}",
        describe(&list)
    );
    fs::copy(BUSYBOX, bin.join("busybox"))
        .unwrap_or_else(|e| panic!("copy {BUSYBOX} into {}: {e}", bin.display()));
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim();
        // `busybox --list` names `busybox` itself; a symlink there would replace the binary.
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        let link = bin.join(applet);
        if link.symlink_metadata().is_err() {
            symlink("busybox", &link).unwrap_or_else(|e| panic!("symlink {}: {e}", link.display()));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Child processes with timeouts
// ---------------------------------------------------------------------------------------------

/// A child process whose stdout and stderr are drained by background threads (so a chatty
/// child never blocks on a full pipe) and which is killed and reaped if dropped while running.
pub struct Background {
    child: Child,
    what: String,
    stdin: Option<ChildStdin>,
    stdout: Drain,
    stderr: Drain,
}

/// A pipe read to its end by a thread of its own. What was read so far stays readable, so a
/// pipe that a grandchild keeps open can delay the output but never hang the test.
struct Drain {
    buf: Arc<Mutex<Vec<u8>>>,
    done: std::sync::mpsc::Receiver<()>,
}

impl Drain {
    fn spawn(mut pipe: impl Read + Send + 'static) -> Drain {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let (tx, done) = std::sync::mpsc::channel();
        let shared = Arc::clone(&buf);
        thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            loop {
                match pipe.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => shared.lock().unwrap().extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = tx.send(());
        });
        Drain { buf, done }
    }

    /// Everything read, once the pipe is at its end or `grace` has passed.
    fn take(&self, grace: Duration) -> Vec<u8> {
        let _ = self.done.recv_timeout(grace);
        std::mem::take(&mut *self.buf.lock().unwrap())
    }
}

/// How long output may trail a child's exit (a grandchild holding the pipe open).
const DRAIN_GRACE: Duration = Duration::from_secs(10);

impl Background {
    /// Spawns `cmd` with all three stdio streams piped.
    pub fn spawn(mut cmd: Command) -> Background {
        let what = format!("{cmd:?}");
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // A binary the test has just written can be busy for a moment (another test thread
        // forked while it was open for writing and has not exec'd yet): retry ETXTBSY.
        let mut tries = 0;
        let mut child = loop {
            match cmd.spawn() {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 50 => {
                    tries += 1;
                    thread::sleep(Duration::from_millis(20));
                }
                r => break r.unwrap_or_else(|e| panic!("spawn {what}: {e}")),
            }
        };
        let stdin = child.stdin.take();
        let stdout = Drain::spawn(child.stdout.take().expect("piped stdout"));
        let stderr = Drain::spawn(child.stderr.take().expect("piped stderr"));
        Background {
            child,
            what,
            stdin,
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Writes `data` to the child's stdin from a helper thread, then closes stdin.
    pub fn feed_stdin(&mut self, data: Vec<u8>) -> JoinHandle<std::io::Result<()>> {
        let mut stdin = self.stdin.take().expect("stdin already taken");
        thread::spawn(move || {
            let r = stdin.write_all(&data);
            drop(stdin);
            r
        })
    }

    /// Writes `data` to the child's stdin and keeps it open (for input fed in steps).
    pub fn write_stdin(&mut self, data: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin already closed");
        stdin
            .write_all(data)
            .unwrap_or_else(|e| panic!("write to stdin of {}: {e}", self.what));
        stdin
            .flush()
            .unwrap_or_else(|e| panic!("flush stdin of {}: {e}", self.what));
    }

    /// Closes the child's stdin (EOF for the child).
    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    /// `Some(status)` if the child has exited (it is then reaped), `None` if still running.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child
            .try_wait()
            .unwrap_or_else(|e| panic!("wait {}: {e}", self.what))
    }

    /// Waits at most `timeout` for the child to exit and returns its output, or `Err` with a
    /// description (after killing and reaping it) if it did not exit in time.
    pub fn wait_timeout(mut self, timeout: Duration) -> Result<Output, String> {
        self.stdin.take();
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.try_status() {
                break Some(status);
            }
            if Instant::now() >= deadline {
                break None;
            }
            thread::sleep(Duration::from_millis(10));
        };
        match status {
            Some(status) => Ok(self.collect(status)),
            None => {
                let _ = self.child.kill();
                let status = self.child.wait().expect("wait after kill");
                let out = self.collect(status);
                Err(format!(
                    "`{}` did not finish within {timeout:?}; killed it.\n{}",
                    self.what,
                    describe(&out)
                ))
            }
        }
    }

    /// Like [`Background::wait_timeout`] but panics on timeout.
    pub fn wait(self, timeout: Duration) -> Output {
        self.wait_timeout(timeout).unwrap_or_else(|e| panic!("{e}"))
    }

    fn collect(&mut self, status: ExitStatus) -> Output {
        let stdout = self.stdout.take(DRAIN_GRACE);
        let stderr = self.stderr.take(DRAIN_GRACE);
        Output {
            status,
            stdout,
            stderr,
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // The reader threads end on EOF once the child is gone; they are not joined here so a
        // pipe kept open by some grandchild can never block the drop.
    }
}

/// Runs `cmd` to completion with a bound; `Err` (child killed) on timeout.
pub fn output_timeout(cmd: Command, timeout: Duration) -> Result<Output, String> {
    Background::spawn(cmd).wait_timeout(timeout)
}

// ---------------------------------------------------------------------------------------------
// /proc inspection
// ---------------------------------------------------------------------------------------------

/// The fields of `/proc/<pid>/stat` the tests need.
#[derive(Debug, Clone)]
pub struct ProcStat {
    pub pid: i32,
    pub comm: String,
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
    pub session: i32,
    /// Clock ticks after boot at which it started: with the pid, names one process for good.
    pub starttime: u64,
}

/// Parses `/proc/<pid>/stat`; `None` if the process does not exist (any more).
pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm is in parentheses and may itself contain spaces or ')'.
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_string();
    let mut rest = text[close + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    let pgrp = rest.next()?.parse().ok()?;
    let session = rest.next()?.parse().ok()?;
    // Field 22; `rest` is at field 7 (tty_nr).
    let starttime = rest.nth(15)?.parse().ok()?;
    Some(ProcStat {
        pid,
        comm,
        state,
        ppid,
        pgrp,
        session,
        starttime,
    })
}

/// All processes currently in `/proc`.
pub fn all_procs() -> Vec<ProcStat> {
    let mut v = Vec::new();
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) {
                if let Some(st) = proc_stat(pid) {
                    v.push(st);
                }
            }
        }
    }
    v
}

/// `/proc/<pid>/cmdline` split at NULs (empty for zombies, kernel threads and gone pids).
pub fn cmdline(pid: i32) -> Vec<String> {
    match fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(b) => b
            .split(|&c| c == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// True if `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    matches!(proc_stat(pid), Some(st) if st.state != 'Z' && st.state != 'X')
}

/// Direct children of `pid` (any state, zombies included).
pub fn children_of(pid: i32) -> Vec<ProcStat> {
    all_procs().into_iter().filter(|p| p.ppid == pid).collect()
}

/// Every descendant of `pid` (children, grandchildren, ...) in one `/proc` snapshot.
pub fn descendants_of(pid: i32) -> Vec<ProcStat> {
    let procs = all_procs();
    let mut out: Vec<ProcStat> = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for p in procs.iter().filter(|p| p.ppid == parent) {
            if !out.iter().any(|o| o.pid == p.pid) {
                frontier.push(p.pid);
                out.push(p.clone());
            }
        }
    }
    out
}

/// Zombie processes anywhere below `pid`.
pub fn zombies_under(pid: i32) -> Vec<ProcStat> {
    descendants_of(pid)
        .into_iter()
        .filter(|p| p.state == 'Z')
        .collect()
}

/// Sends `sig` to `pid`; true on success.
pub fn kill(pid: i32, sig: i32) -> bool {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(pid, sig) == 0 }
}

fn is_shim_cmd(pid: i32, argv: &[String]) -> bool {
    let base = |p: &str| {
        Path::new(p)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
    };
    let argv0 = argv.first().and_then(|a| base(a)).unwrap_or_default();
    let exe = fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .and_then(|p| base(&p.to_string_lossy()))
        .unwrap_or_default();
    let shim_name = shim_binary()
        .file_name()
        .map(|f| f.to_string_lossy().into_owned());
    [argv0, exe]
        .iter()
        .any(|n| n.starts_with("containerd-shim") || Some(n) == shim_name.as_ref())
}

// ---------------------------------------------------------------------------------------------
// ctr argument builder
// ---------------------------------------------------------------------------------------------

/// Writes `dir/<name>.toml`, a runtime options file naming `binary` as the OCI runtime
/// (`BinaryName`), and returns its path: how a test puts a runc wrapper under the shim.
pub fn binary_options_file(dir: &Path, name: &str, binary: &Path) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    fs::write(&path, format!("BinaryName = \"{}\"\n", binary.display()))
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// A runc wrapper in `dir` whose `verb` (e.g. `kill`) hangs, its pid appended to
/// `dir/hung-<verb>`, like the wedged runtime of containerd#14081; every other call is the real
/// runc.
pub fn runc_hanging_on(dir: &Path, verb: &str) -> PathBuf {
    let wrapper = dir.join(format!("runc-hung-{verb}"));
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do\n  case $a in\n    {verb}) echo $$ >>'{}'; exec sleep 1000 ;;\n  esac\ndone\nexec runc \"$@\"\n",
            dir.join(format!("hung-{verb}")).display()
        ),
    )
    .unwrap();
    fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    wrapper
}

/// Builder for `ctr run` arguments. By default yields
/// `run --rm --runtime <runtime()> --env PATH=/bin --rootfs <rootfs> <id> <cmd...>`.
///
/// `--rootfs` is a boolean flag in ctr 1.6 (the directory is the first positional argument,
/// where an image ref would go), so every flag must come before it.
#[derive(Debug, Clone)]
pub struct RunArgs {
    id: String,
    rootfs: PathBuf,
    cmd: Vec<String>,
    detach: bool,
    runtime: Option<String>,
    extra: Vec<String>,
}

/// `ctr run` arguments for `cmd` in container `id` with the busybox rootfs at `rootfs`.
pub fn run_args(id: &str, rootfs: &Path, cmd: &[&str]) -> RunArgs {
    RunArgs {
        id: id.to_string(),
        rootfs: rootfs.to_path_buf(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        detach: false,
        runtime: None,
        extra: Vec::new(),
    }
}

impl RunArgs {
    /// `-d` instead of `--rm` (ctr refuses both together).
    pub fn detach(mut self) -> Self {
        self.detach = true;
        self
    }

    /// `--runtime <name>` instead of [`runtime()`] (the benchmark runs both shims).
    pub fn runtime(mut self, name: &str) -> Self {
        self.runtime = Some(name.to_string());
        self
    }

    /// Join the host pid namespace (`--with-ns pid:/proc/self/ns/pid`), so the container's
    /// first process is not pid 1 of its namespace and its orphans reparent to the shim.
    pub fn host_pid_ns(self) -> Self {
        self.flag("--with-ns").flag("pid:/proc/self/ns/pid")
    }

    /// `--runtime-config-path <path>`: the runtime options file the shim reads (see
    /// [`binary_options_file`]).
    pub fn runtime_config(self, path: &Path) -> Self {
        self.flag("--runtime-config-path")
            .flag(&path.to_string_lossy())
    }

    /// Any other `ctr run` flag (placed before `--rootfs`).
    pub fn flag(mut self, f: &str) -> Self {
        self.extra.push(f.to_string());
        self
    }

    pub fn build(&self) -> Vec<String> {
        let mut v = vec!["run".to_string()];
        v.push(if self.detach { "-d" } else { "--rm" }.to_string());
        v.extend([
            "--runtime".to_string(),
            self.runtime.clone().unwrap_or_else(runtime),
            "--env".into(),
            "PATH=/bin".into(),
        ]);
        // The runtime's options file (runtimeoptions.v1.Options' ConfigPath), e.g.
        // `BinaryName = "/usr/bin/crun"`: how the VM lane runs the suites with crun.
        if let Some(path) = runtime_config_path() {
            v.push("--runtime-config-path".into());
            v.push(path);
        }
        v.extend(self.extra.iter().cloned());
        v.push("--rootfs".into());
        v.push(self.rootfs.to_string_lossy().into_owned());
        v.push(self.id.clone());
        v.extend(self.cmd.iter().cloned());
        v
    }
}

// ---------------------------------------------------------------------------------------------
// Private containerd
// ---------------------------------------------------------------------------------------------

/// How [`Containerd::start_with`] sets up containerd.
#[derive(Debug, Clone)]
pub struct ContainerdOptions {
    /// The tether binary whose directory goes first on containerd's `PATH` (containerd finds
    /// `containerd-shim-tether-v2` there). Default: [`shim_binary`].
    pub shim: PathBuf,
    /// containerd log level `debug` (default; containerd then also passes `-debug` to the
    /// shims and the log has their output) or `info` (what a production containerd runs).
    pub debug: bool,
}

impl Default for ContainerdOptions {
    fn default() -> Self {
        ContainerdOptions {
            shim: shim_binary(),
            debug: true,
        }
    }
}

/// The namespace containerd's CRI plugin keeps all its containers and images in (fixed).
pub const CRI_NAMESPACE: &str = "k8s.io";

/// How [`Containerd::start_cri`] sets up containerd's CRI plugin.
#[derive(Debug, Clone)]
pub struct CriOptions {
    /// TOML appended to the harness's config, typically `[plugins."io.containerd.grpc.v1.cri"]`
    /// tables. Every `{dir}` in it is replaced by the instance's temp dir.
    pub config: String,
}

/// A private containerd running on a temp dir, with its own namespace. Dropping it removes
/// its containers, stops it, kills the shims it started, cleans its runc root and unmounts
/// anything left under the temp dir.
pub struct Containerd {
    child: Option<Child>,
    /// grpc socket path (also what shims get as `-address`).
    address: String,
    namespace: String,
    config: PathBuf,
    log: PathBuf,
    rootfs: std::sync::OnceLock<PathBuf>,
    /// Directory put first on containerd's `PATH` (holds the tether binary).
    shim_dir: PathBuf,
    /// Container ids handed out by [`Containerd::run_args`], for socket cleanup in `Drop`.
    ids: Mutex<Vec<String>>,
    /// Started by [`Containerd::start_cri`]: the namespace is [`CRI_NAMESPACE`], whose runc
    /// root (`/run/containerd/runc/k8s.io`) another containerd on the host may share, so
    /// `Drop` only `runc delete`s the ids given to [`Containerd::track_id`] there.
    cri: bool,
    /// Extra environment for containerd, and so for the shims it starts
    /// ([`Containerd::start_traced`]).
    env: Vec<(String, String)>,
    // Declared last so it is removed after everything else has been torn down.
    dir: tempfile::TempDir,
}

impl Containerd {
    /// Writes a config and starts containerd; panics (with the log tail) unless `ctr version`
    /// answers within 10 s.
    pub fn start() -> Containerd {
        Containerd::start_with(ContainerdOptions::default())
    }

    /// Like [`Containerd::start`] with an explicit shim binary and log level.
    pub fn start_with(opts: ContainerdOptions) -> Containerd {
        Containerd::start_impl(opts, None, None)
    }

    /// Like [`Containerd::start`] with containerd's OpenTelemetry tracing on: the tracing
    /// plugins enabled and `OTEL_EXPORTER_OTLP_ENDPOINT` (how 2.x configures it; 1.6/1.7 have
    /// no shim propagation to test) set to `endpoint` over OTLP/HTTP. Nothing needs to listen
    /// there: spans and their trace context exist, and their export fails in the background.
    pub fn start_traced(endpoint: &str) -> Containerd {
        Containerd::start_impl(ContainerdOptions::default(), None, Some(endpoint))
    }

    /// Like [`Containerd::start_with`], but with containerd's CRI plugin enabled (the
    /// `disabled_plugins` entry dropped, `cri.config` appended) and the [`CRI_NAMESPACE`]
    /// namespace for `ctr` and cleanup. containerd answering `ctr version` does not mean the
    /// CRI service is ready: the caller waits for its `Status` RPC.
    pub fn start_cri(opts: ContainerdOptions, cri: CriOptions) -> Containerd {
        Containerd::start_impl(opts, Some(cri), None)
    }

    fn start_impl(
        opts: ContainerdOptions,
        cri: Option<CriOptions>,
        otlp_endpoint: Option<&str>,
    ) -> Containerd {
        require_root();
        let mut base = std::env::temp_dir();
        // Unix socket paths are limited to 108 bytes; keep the grpc address short.
        if base.as_os_str().len() > 60 {
            base = PathBuf::from("/tmp");
        }
        let dir = tempfile::Builder::new()
            .prefix("tether-it-")
            .tempdir_in(&base)
            .unwrap_or_else(|e| panic!("temp dir in {}: {e}", base.display()));
        let d = dir.path().to_path_buf();
        let address = d.join("containerd.sock").to_string_lossy().into_owned();
        let config = d.join("config.toml");
        let log = d.join("containerd.log");
        let namespace = if cri.is_some() {
            CRI_NAMESPACE.to_string()
        } else {
            unique_id(&format!("tether-{}", std::process::id()))
        };
        let text = containerd_config(&d, &address, opts.debug);
        let text = match &cri {
            Some(cri) => cri_containerd_config(text, &d, &cri.config),
            None => text,
        };
        let (text, env) = match otlp_endpoint {
            Some(endpoint) => (
                text.replace("  \"io.containerd.tracing.processor.v1.otlp\",\n", "")
                    .replace("  \"io.containerd.internal.v1.tracing\",\n", ""),
                vec![
                    ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint.into()),
                    ("OTEL_EXPORTER_OTLP_PROTOCOL".into(), "http/protobuf".into()),
                ],
            ),
            None => (text, Vec::new()),
        };
        let shim_dir = opts
            .shim
            .parent()
            .expect("shim binary has a parent dir")
            .to_path_buf();
        fs::write(&config, text).unwrap_or_else(|e| panic!("write {}: {e}", config.display()));
        let mut cd = Containerd {
            child: None,
            address,
            namespace,
            config,
            log,
            rootfs: std::sync::OnceLock::new(),
            shim_dir,
            ids: Mutex::new(Vec::new()),
            cri: cri.is_some(),
            env,
            dir,
        };
        cd.spawn();
        // The CRI namespace is created by the CRI plugin (and by any import into it).
        if !cd.cri {
            let ns = cd.namespace.clone();
            cd.ctr_ok(&["namespaces", "create", &ns]);
        }
        cd
    }

    /// Remembers container (or CRI sandbox) id `id` for the cleanup in `Drop`: its shim socket
    /// and, in a CRI instance, its runc state. [`Containerd::run_args`] does this itself.
    pub fn track_id(&self, id: &str) {
        self.ids.lock().unwrap().push(id.to_string());
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "containerd already running");
        let logf = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("open {}: {e}", self.log.display()));
        // tether's dir first, then TETHER_CONTAINERD's (its containerd-shim-runc-v2 is the
        // reference shim of that version), then the caller's PATH.
        let mut path = self.shim_dir.clone().into_os_string();
        if let Some(d) = containerd_dir() {
            path.push(":");
            path.push(d);
        }
        match std::env::var_os("PATH") {
            Some(p) if !p.is_empty() => {
                path.push(":");
                path.push(p);
            }
            _ => path.push(":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
        }
        let mut cmd = Command::new(containerd_tool("containerd"));
        cmd.arg("--config")
            .arg(&self.config)
            .env("PATH", path)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(logf.try_clone().expect("dup log fd"))
            .stderr(logf);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start containerd ({e}); install it with scripts/setup.sh")
        });
        self.child = Some(child);
        let start_timeout = start_timeout();
        let deadline = Instant::now() + start_timeout;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .unwrap()
                .try_wait()
                .expect("wait containerd")
            {
                self.child = None;
                panic!(
                    "containerd exited during start-up ({status}); log tail:\n{}",
                    tail(&self.log, 40)
                );
            }
            let ok = matches!(
                output_timeout(self.ctr_cmd(&["version"]), Duration::from_secs(5)),
                Ok(out) if out.status.success()
            );
            if ok {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "containerd did not answer `ctr version` within {start_timeout:?}; log tail:\n{}",
                    tail(&self.log, 40)
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The shim address of container `id`: from the bundle's `bootstrap.json` where
    /// containerd 2.x wrote one (the Go shim of 2.x writes no `address` file), else from the
    /// `address` file the shim wrote (1.6/1.7, and tether everywhere).
    pub fn shim_address(&self, id: &str) -> String {
        let bundle = self.bundle(id);
        if let Ok(text) = fs::read_to_string(bundle.join("bootstrap.json")) {
            let v: serde_json::Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{}/bootstrap.json: {e}: {text}", bundle.display()));
            if let Some(a) = v["address"].as_str() {
                return a.to_string();
            }
        }
        let file = bundle.join("address");
        fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
            .trim()
            .to_string()
    }

    /// The temp dir holding everything of this instance.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// grpc socket path, as passed to `ctr --address` and to shims as `-address`.
    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn ttrpc_address(&self) -> String {
        format!("{}.ttrpc", self.address)
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// containerd's combined stdout/stderr (debug level, so shim logs are in it too).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// pid of the running containerd, if any.
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// The bundle containerd makes for container `id` (`<state>/io.containerd.runtime.v2.task/
    /// <namespace>/<id>`); both shims write `shim.pid` (the server's pid) there.
    pub fn bundle(&self, id: &str) -> PathBuf {
        self.dir
            .path()
            .join("state")
            .join("io.containerd.runtime.v2.task")
            .join(&self.namespace)
            .join(id)
    }

    /// pid of the live shim server serving container `id`: the bundle's `shim.pid` (tether
    /// writes it; the Go shim 1.6 does not), else the shim process of this instance whose
    /// command line has `-id <id>` and no `start`/`delete` action.
    pub fn shim_pid(&self, id: &str) -> Option<i32> {
        let from_file = fs::read_to_string(self.bundle(id).join("shim.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .filter(|&pid| alive(pid));
        from_file.or_else(|| {
            self.shim_pids().into_iter().find(|&pid| {
                let argv = cmdline(pid);
                argv.windows(2).any(|w| w[0] == "-id" && w[1] == id)
                    && !argv.iter().any(|a| a == "start" || a == "delete")
            })
        })
    }

    /// The runc state dir the shims use for this instance's namespace.
    pub fn runc_root(&self) -> PathBuf {
        Path::new(RUNC_ROOT).join(&self.namespace)
    }

    /// A busybox rootfs in this instance's temp dir, built on first use.
    pub fn rootfs(&self) -> PathBuf {
        self.rootfs
            .get_or_init(|| {
                let r = self.dir.path().join("rootfs");
                busybox_rootfs(&r);
                r
            })
            .clone()
    }

    /// [`run_args`] with this instance's busybox rootfs, plus `--fifo-dir` inside the temp
    /// dir (so ctr's stdio FIFOs never outlive the test, even when containerd loses track of
    /// them after a restart or a dead shim). Remembers `id` for cleanup.
    pub fn run_args(&self, id: &str, cmd: &[&str]) -> RunArgs {
        self.ids.lock().unwrap().push(id.to_string());
        let fifo_dir = self.dir.path().join("fifo");
        run_args(id, &self.rootfs(), cmd)
            .flag("--fifo-dir")
            .flag(&fifo_dir.to_string_lossy())
    }

    /// `ctr --address <addr> --namespace <ns> <args>` as a `Command` (not run).
    ///
    /// ctr 2.x prints every deprecation containerd reports as a warning on its own stderr,
    /// mixed with the container's (`NewClient` in `cmd/ctr/commands/client.go`), and containerd
    /// 2.2+ reports cgroup v1 hosts as deprecated (`emitPlatformWarnings` in
    /// `core/runtime/v2/task_manager_linux.go`). ctr's documented switch turns that off, so
    /// stderr is the container's again.
    pub fn ctr_cmd<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = Command::new(containerd_tool("ctr"));
        cmd.env("CONTAINERD_SUPPRESS_DEPRECATION_WARNINGS", "1")
            .arg("--address")
            .arg(&self.address)
            .arg("--namespace")
            .arg(&self.namespace);
        cmd.args(args);
        cmd
    }

    /// Runs `ctr` with this instance's address and namespace; panics if it takes longer than
    /// [`CTR_TIMEOUT`].
    pub fn ctr<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        self.ctr_timeout(args, CTR_TIMEOUT)
    }

    /// Like [`Containerd::ctr`] with an explicit bound.
    pub fn ctr_timeout<S: AsRef<OsStr>>(&self, args: &[S], timeout: Duration) -> Output {
        output_timeout(self.ctr_cmd(args), timeout).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs `ctr`, asserts it succeeded (showing its stderr otherwise), returns its stdout.
    pub fn ctr_ok<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {:?} failed\n{}",
            args.iter()
                .map(|a| a.as_ref().to_string_lossy())
                .collect::<Vec<_>>(),
            describe(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Spawns `ctr` in the background with stdin, stdout and stderr piped.
    pub fn ctr_spawn<S: AsRef<OsStr>>(&self, args: &[S]) -> Background {
        Background::spawn(self.ctr_cmd(args))
    }

    /// Runs `ctr` feeding `input` on its stdin (closed afterwards), bounded by `timeout`.
    pub fn ctr_stdin<S: AsRef<OsStr>>(
        &self,
        args: &[S],
        input: Vec<u8>,
        timeout: Duration,
    ) -> Output {
        let mut bg = self.ctr_spawn(args);
        let writer = bg.feed_stdin(input);
        let out = bg.wait(timeout);
        // A broken pipe is possible if the container exits without reading everything; the
        // test decides from the output whether that matters.
        let _ = writer.join();
        out
    }

    /// `ctr tasks ls` parsed into `(id, pid, status)` rows.
    pub fn tasks(&self) -> Vec<(String, i32, String)> {
        let out = self.ctr_ok(&["tasks", "ls"]);
        parse_tasks(&out)
    }

    /// `(pid, status)` of task `id` from `ctr tasks ls`, `None` if not listed.
    /// Pids listed by `ctr tasks ps <id>` (the `PID INFO` table), in its order.
    pub fn task_pids(&self, id: &str) -> Vec<i32> {
        self.ctr_ok(&["tasks", "ps", id])
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect()
    }

    pub fn task(&self, id: &str) -> Option<(i32, String)> {
        self.tasks()
            .into_iter()
            .find(|t| t.0 == id)
            .map(|t| (t.1, t.2))
    }

    /// Waits (bounded) until task `id` is listed with `status`; returns its pid.
    pub fn wait_task_status(&self, id: &str, status: &str, timeout: Duration) -> i32 {
        let mut last = None;
        let ok = wait_until(timeout, || {
            last = self.task(id);
            matches!(&last, Some((_, s)) if s == status)
        });
        assert!(
            ok,
            "task {id} did not become {status} within {timeout:?}; last seen: {last:?}"
        );
        last.unwrap().0
    }

    /// `ctr containers ls -q`.
    pub fn containers(&self) -> Vec<String> {
        self.ctr_ok(&["containers", "ls", "-q"])
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    }

    /// Live shim processes (server, `start` or `delete` invocations) of this containerd
    /// instance: executable named `containerd-shim*` (or the tether binary), and either
    /// `-address <this grpc address>` on the command line or this instance's
    /// `TTRPC_ADDRESS` in the environment. Zombies do not count (they have exited).
    pub fn shim_pids(&self) -> Vec<i32> {
        let ttrpc_env = format!("TTRPC_ADDRESS={}", self.ttrpc_address());
        let mut pids = Vec::new();
        for p in all_procs() {
            if p.state == 'Z' || p.state == 'X' {
                continue;
            }
            let argv = cmdline(p.pid);
            if argv.is_empty() || !is_shim_cmd(p.pid, &argv) {
                continue;
            }
            let by_arg = argv
                .windows(2)
                .any(|w| (w[0] == "-address" || w[0] == "--address") && w[1] == self.address)
                || argv.iter().any(|a| {
                    a == &format!("-address={}", self.address)
                        || a == &format!("--address={}", self.address)
                });
            let by_env = || {
                fs::read(format!("/proc/{}/environ", p.pid))
                    .map(|env| env.split(|&c| c == 0).any(|kv| kv == ttrpc_env.as_bytes()))
                    .unwrap_or(false)
            };
            if by_arg || by_env() {
                pids.push(p.pid);
            }
        }
        pids.sort_unstable();
        pids
    }

    /// Stops containerd by pid: SIGTERM, up to 5 s, then SIGKILL; reaps it. Shims stay.
    pub fn stop(&mut self) {
        if let Some(status) = self.stop_inner() {
            eprintln!("containerd stopped: {status}");
        }
    }

    fn stop_inner(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let pid = child.id() as i32;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        kill(pid, libc::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait().ok()
    }

    /// Stops containerd (if running) and starts it again on the same config and dirs.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Best effort: kill and delete every task and container of this instance.
    fn remove_all_tasks(&self) {
        let t = CLEANUP_CTR_TIMEOUT;
        let Ok(out) = output_timeout(self.ctr_cmd(&["tasks", "ls"]), t) else {
            return;
        };
        let ids: Vec<String> = parse_tasks(&String::from_utf8_lossy(&out.stdout))
            .into_iter()
            .map(|r| r.0)
            .collect();
        for id in &ids {
            let _ = output_timeout(
                self.ctr_cmd(&["tasks", "kill", "-a", "-s", "SIGKILL", id]),
                t,
            );
        }
        for id in &ids {
            wait_until(Duration::from_secs(3), || {
                output_timeout(self.ctr_cmd(&["tasks", "ls"]), t)
                    .map(|o| {
                        !parse_tasks(&String::from_utf8_lossy(&o.stdout))
                            .iter()
                            .any(|r| &r.0 == id && r.2 == "RUNNING")
                    })
                    .unwrap_or(true)
            });
            let _ = output_timeout(self.ctr_cmd(&["tasks", "delete", "-f", id]), t);
        }
        if let Ok(out) = output_timeout(self.ctr_cmd(&["containers", "ls", "-q"]), t) {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = output_timeout(self.ctr_cmd(&["containers", "delete", id]), t);
            }
        }
    }

    /// Best effort: `<runtime> delete --force` whatever is left in this namespace's runc root.
    fn remove_runc_state(&self) {
        let root = self.runc_root();
        if !root.exists() {
            return;
        }
        let runtime = runtime_binary();
        let mut list = Command::new(&runtime);
        list.arg("--root").arg(&root).args(["list", "-q"]);
        let tracked = self.ids.lock().map(|v| v.clone()).unwrap_or_default();
        if let Ok(out) = output_timeout(list, CLEANUP_CTR_TIMEOUT) {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if self.cri && !tracked.iter().any(|t| t == id) {
                    continue; // shared CRI runc root: not ours
                }
                let mut del = Command::new(&runtime);
                del.arg("--root").arg(&root).args(["delete", "--force", id]);
                let _ = output_timeout(del, CLEANUP_CTR_TIMEOUT);
            }
        }
        let _ = fs::remove_dir(&root);
    }

    /// Best effort: remove the shim sockets of this instance's containers that a killed shim
    /// left in `/run/containerd/s`. Both shims name them by the hex sha256 of
    /// `<grpc address>/<namespace>/<container id>`, which includes our unique address.
    fn remove_shim_sockets(&self) {
        let ids = self.ids.lock().map(|v| v.clone()).unwrap_or_default();
        for id in ids {
            let key = format!("{}/{}/{}", self.address, self.namespace, id);
            let mut cmd = Command::new("sha256sum");
            cmd.stdin(Stdio::piped());
            let mut bg = Background::spawn(cmd);
            let _ = bg.feed_stdin(key.into_bytes()).join();
            let Ok(out) = bg.wait_timeout(Duration::from_secs(5)) else {
                continue;
            };
            let text = String::from_utf8_lossy(&out.stdout);
            let Some(hash) = text.split_whitespace().next() else {
                continue;
            };
            if hash.len() != 64 || !hash.bytes().all(|c| c.is_ascii_hexdigit()) {
                continue;
            }
            let sock = Path::new(SHIM_SOCKET_DIR).join(hash);
            let is_socket = sock
                .symlink_metadata()
                .map(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
                .unwrap_or(false);
            if is_socket {
                let _ = fs::remove_file(&sock);
            }
        }
    }

    /// Best effort: lazily unmount every mount point under the temp dir, deepest first.
    fn unmount_all(&self) {
        let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
            return;
        };
        let prefix = format!("{}/", self.dir.path().display());
        let mut points: Vec<String> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .map(unescape_mountinfo)
            .filter(|p| p.starts_with(&prefix))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            if let Ok(c) = std::ffi::CString::new(p) {
                // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let shim_panic = shim_panic(&self.log);
        if thread::panicking() {
            if let Some(p) = &shim_panic {
                eprintln!("---- a shim panicked ----\n{p}\n---- end of shim panic ----");
            }
            eprintln!(
                "---- containerd log tail ({}) ----\n{}\n---- end of containerd log ----",
                self.log.display(),
                tail(&self.log, 80)
            );
        }
        if self.child.is_some() {
            self.remove_all_tasks();
        }
        let _ = self.stop_inner();
        // With containerd gone, nothing will reconnect to the shims: remove the containers
        // (runc kills their processes) and then any shim still running for this instance.
        self.remove_runc_state();
        for pid in self.shim_pids() {
            kill(pid, libc::SIGKILL);
        }
        wait_until(Duration::from_secs(2), || self.shim_pids().is_empty());
        self.remove_shim_sockets();
        self.unmount_all();
        self.remove_namespace_cgroups();
        // A shim panic is a bug even when the test's own assertions held.
        if let Some(p) = shim_panic {
            if !thread::panicking() {
                panic!("a shim panicked during the test:\n{p}");
            }
        }
    }
}

/// The first panic message a shim wrote to its log (which containerd copies into its own),
/// with the lines that follow it.
fn shim_panic(log: &Path) -> Option<String> {
    let text = String::from_utf8_lossy(&fs::read(log).ok()?).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    let at = lines.iter().position(|l| l.contains("panicked at"))?;
    Some(lines[at..lines.len().min(at + 40)].join("\n"))
}

impl Containerd {
    /// ctr's default spec puts containers in `/<namespace>/<id>`; runc removes the container's
    /// cgroups but not the (now empty) namespace directory in each v1 hierarchy (or the unified
    /// one). Remove those so test runs do not accumulate directories. The CRI namespace
    /// `k8s.io` is shared, so it is left alone.
    fn remove_namespace_cgroups(&self) {
        if self.namespace == "k8s.io" {
            return;
        }
        let Ok(hierarchies) = fs::read_dir("/sys/fs/cgroup") else {
            return;
        };
        let mut dirs: Vec<PathBuf> = hierarchies
            .flatten()
            .map(|h| h.path().join(&self.namespace))
            .collect();
        dirs.push(Path::new("/sys/fs/cgroup").join(&self.namespace));
        for dir in dirs {
            // rmdir only succeeds on an empty cgroup, which is exactly what is wanted.
            let _ = fs::remove_dir(&dir);
        }
    }
}

fn containerd_config(dir: &Path, address: &str, debug: bool) -> String {
    format!(
        r#"# Written by the tether integration-test harness (tests/common/mod.rs).
version = 2
root = "{root}"
state = "{state}"
oom_score = 0
# cri is not needed; the others fail or are slow on most hosts, and opt writes to /opt.
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.internal.v1.opt",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
  # NRI (1.7+; on by default in 2.x) listens on one fixed host socket, /var/run/nri/nri.sock:
  # two CRI containerds of parallel tests would fight over it.
  "io.containerd.nri.v1.nri",
]

[grpc]
  address = "{address}"

[ttrpc]
  address = "{address}.ttrpc"

[debug]
  level = "{level}"
"#,
        // containerd 1.7 moved "event forwarded" (which tests/robustness.rs reads) from debug
        // to trace; shims get `-debug` at either level.
        level = match (debug, containerd_version() >= (1, 7)) {
            (false, _) => "info",
            (true, false) => "debug",
            (true, true) => "trace",
        },
        root = dir.join("root").display(),
        state = dir.join("state").display(),
    )
}

/// The harness's config ([`containerd_config`]) with the CRI plugin enabled: its
/// `disabled_plugins` entry (and the comment saying it is not needed) removed, and `snippet`,
/// with every `{dir}` replaced by `dir`, appended.
fn cri_containerd_config(base: String, dir: &Path, snippet: &str) -> String {
    let mut text = base;
    for line in [
        "# cri is not needed; the others fail or are slow on most hosts, and opt writes to /opt.\n",
        "  \"io.containerd.grpc.v1.cri\",\n",
    ] {
        assert!(text.contains(line), "harness config lacks {line:?}");
        text = text.replacen(line, "", 1);
    }
    // A snippet in config version 3's plugin names (containerd 2.x) makes the file version 3;
    // the harness's own keys are the same in both.
    if snippet.contains("io.containerd.cri.v1.runtime") {
        assert!(
            text.contains("\nversion = 2\n"),
            "harness config lacks its version"
        );
        text = text.replacen("\nversion = 2\n", "\nversion = 3\n", 1);
    }
    text.push_str("\n# Added for the CRI plugin (Containerd::start_cri).\n");
    text.push_str(&snippet.replace("{dir}", &dir.to_string_lossy()));
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// Undoes the octal escapes (`\040` etc.) of `/proc/self/mountinfo` paths.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses `ctr tasks ls` output (`TASK PID STATUS` header, then one row per task).
pub fn parse_tasks(out: &str) -> Vec<(String, i32, String)> {
    out.lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let id = f.next()?.to_string();
            let pid = f.next()?.parse().ok()?;
            let status = f.next()?.to_string();
            Some((id, pid, status))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Event stream
// ---------------------------------------------------------------------------------------------

/// `ctr events` running in the background; its stdout lines are collected as they arrive.
/// Killed when dropped.
pub struct EventStream {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl EventStream {
    /// Starts `ctr events` and waits (bounded) until it demonstrably receives events, by
    /// labelling the namespace until the matching `/namespaces/update` shows up.
    pub fn start(cd: &Containerd) -> EventStream {
        let mut cmd = cd.ctr_cmd(&["events"]);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().expect("spawn ctr events");
        let mut stdout = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        thread::spawn(move || {
            let mut pending = Vec::new();
            let mut buf = [0u8; 8192];
            loop {
                match stdout.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        pending.extend_from_slice(&buf[..n]);
                        while let Some(pos) = pending.iter().position(|&c| c == b'\n') {
                            let line: Vec<u8> = pending.drain(..=pos).collect();
                            let line = String::from_utf8_lossy(&line).trim_end().to_string();
                            sink.lock().unwrap().push(line);
                        }
                    }
                }
            }
        });
        let stream = EventStream { child, lines };
        let ns = cd.namespace().to_string();
        let mut n = 0;
        let primed = wait_until(Duration::from_secs(10) * time_scale(), || {
            n += 1;
            let label = format!("tether-probe={n}");
            let _ = cd.ctr(&["namespaces", "label", &ns, &label]);
            let needle = format!("\"tether-probe\":\"{n}\"");
            wait_until(Duration::from_millis(300), || {
                stream
                    .lines()
                    .iter()
                    .any(|l| l.contains("/namespaces/update") && l.contains(&needle))
            })
        });
        assert!(
            primed,
            "`ctr events` did not deliver events within {} s: {:?}",
            10 * time_scale(),
            stream.lines()
        );
        stream
    }

    /// Everything received so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The `/tasks/*` events received so far, parsed. `ctr events` prints each as
    /// `<date> <time> <tz> UTC <namespace> <topic> <json>`.
    pub fn task_events(&self) -> Vec<TaskEvent> {
        self.lines()
            .into_iter()
            .filter_map(|line| {
                let topic = line
                    .split_whitespace()
                    .find(|w| w.starts_with("/tasks/"))?
                    .to_string();
                let payload = serde_json::from_str(&line[line.find('{')?..]).ok()?;
                Some(TaskEvent {
                    topic,
                    payload,
                    line,
                })
            })
            .collect()
    }

    /// Everything received so far, one event a line, for failure messages.
    pub fn show(&self) -> String {
        self.lines().join("\n")
    }

    /// Topics (`/tasks/create`, ...) of the `/tasks/*` events whose `container_id` is `id`,
    /// in arrival order.
    pub fn task_topics(&self, id: &str) -> Vec<String> {
        let needle = format!("\"container_id\":\"{id}\"");
        self.lines()
            .iter()
            .filter(|l| l.contains(&needle))
            .filter_map(|l| {
                l.split_whitespace()
                    .find(|w| w.starts_with("/tasks/"))
                    .map(str::to_string)
            })
            .collect()
    }

    /// The full line of the first `topic` event for container `id`.
    pub fn find(&self, id: &str, topic: &str) -> Option<String> {
        let needle = format!("\"container_id\":\"{id}\"");
        self.lines()
            .into_iter()
            .find(|l| l.contains(&needle) && l.split_whitespace().any(|w| w == topic))
    }
}

/// One `/tasks/*` event as `ctr events` printed it.
#[derive(Debug, Clone)]
pub struct TaskEvent {
    pub topic: String,
    pub payload: serde_json::Value,
    pub line: String,
}

impl TaskEvent {
    /// A string field of the event's payload (`container_id`, `id`, `exec_id`, ...).
    pub fn field(&self, key: &str) -> Option<&str> {
        self.payload.get(key).and_then(|v| v.as_str())
    }
}

/// Index in `events` of the first `topic` event of container `cid` whose `key` is `value`.
pub fn position(
    events: &[TaskEvent],
    topic: &str,
    cid: &str,
    key: &str,
    value: &str,
) -> Option<usize> {
    events.iter().position(|e| {
        e.topic == topic && e.field("container_id") == Some(cid) && e.field(key) == Some(value)
    })
}

impl Drop for EventStream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Straight to the shim
// ---------------------------------------------------------------------------------------------

/// The task service name containerd 1.6 dials (both shims serve it).
pub const TASK_V2: &str = "containerd.task.v2.Task";

/// The task service name containerd 2.x dials for the Go shim of its version (which serves
/// only this one; tether serves both).
pub const TASK_V3: &str = "containerd.task.v3.Task";

/// The task service [`ShimConn`] calls: the one the containerd under test speaks.
pub fn task_service() -> &'static str {
    if containerd_version() >= (2, 0) {
        TASK_V3
    } else {
        TASK_V2
    }
}

/// A ttrpc connection to the shim serving container `id` (its address is in the bundle), for
/// what ctr 1.6 cannot send: Update, Stats, Checkpoint, CloseIO, a bounded Wait...
pub struct ShimConn {
    // Options only so that Drop can end them in order: the client while the runtime exists,
    // then the runtime with a bound.
    client: Option<ttrpc::asynchronous::Client>,
    rt: Option<tokio::runtime::Runtime>,
    pub id: String,
}

impl ShimConn {
    /// Connects to the address in `id`'s bundle (`unix:///run/containerd/s/<hash>`).
    pub fn connect(cd: &Containerd, id: &str) -> ShimConn {
        let address = cd.shim_address(id);
        let file = cd.bundle(id);
        assert!(
            address.starts_with("unix:///run/containerd/s/"),
            "unexpected shim address {address:?} in {}",
            file.display()
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let client = rt
            .block_on(async {
                tokio::time::timeout(
                    Duration::from_secs(30),
                    ttrpc::asynchronous::Client::connect(&address),
                )
                .await
            })
            .unwrap_or_else(|_| panic!("connect {address}: no answer within 30 s"))
            .unwrap_or_else(|e| panic!("connect {address}: {e:?}"));
        ShimConn {
            client: Some(client),
            rt: Some(rt),
            id: id.to_string(),
        }
    }

    /// One `containerd.task.v2.Task/<method>` call; `None` if no answer came within `timeout`.
    pub fn call_within<Req: Message, Resp: Message>(
        &self,
        method: &str,
        req: &Req,
        timeout: Duration,
    ) -> Option<ttrpc::Result<Resp>> {
        let request = ttrpc::Request {
            service: task_service().into(),
            method: method.into(),
            payload: req.write_to_bytes().expect("encode request"),
            timeout_nano: timeout.as_nanos() as i64,
            ..Default::default()
        };
        let (rt, client) = (self.rt.as_ref()?, self.client.as_ref()?);
        let resp = rt
            .block_on(async {
                tokio::time::timeout(timeout + Duration::from_secs(5), client.request(request))
                    .await
            })
            .ok()?;
        Some(resp.map(|resp| {
            Resp::parse_from_bytes(&resp.payload).unwrap_or_else(|e| {
                panic!("{}/{method}: undecodable response: {e}", task_service())
            })
        }))
    }

    /// [`Self::call_within`], where no answer in time is a test failure.
    pub fn call<Req: Message, Resp: Message>(
        &self,
        method: &str,
        req: &Req,
        timeout: Duration,
    ) -> ttrpc::Result<Resp> {
        self.call_within(method, req, timeout)
            .unwrap_or_else(|| panic!("{}/{method}: no answer within {timeout:?}", task_service()))
    }
}

impl Drop for ShimConn {
    /// A plain runtime drop waits without bound for blocked tasks; a test must not hang there.
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            {
                let _in_runtime = rt.enter();
                self.client.take();
            }
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}
