//! The server's side of an upgrade: quiesce, snapshot, pre-flight, exec in place; and, in the
//! new image, take the state over (or go back to the old executable).
//!
//! Order of the handoff, and why:
//! 1. Close the [`Gate`]: no new frame is read and no connection accepted; wait until every
//!    request read has been answered. Unread requests wait in the kernel's socket buffers.
//! 2. Pause event delivery, waiting for a delivery call in flight to be answered, so an event
//!    is either delivered or carried, never both.
//! 3. Pause the reaper and wait until every exit it reaped has been routed into the table:
//!    from then on an exit is either in the table or a zombie the next image reaps.
//! 4. Snapshot (duplicating every descriptor, close-on-exec), encode, and pre-flight the new
//!    binary in a child on a copy of the state: a garbage file, a binary that exits at once or
//!    one that does not read this state never replaces the running code.
//! 5. Clear close-on-exec on exactly the handed-over descriptors and `execve` the binary at
//!    the server's path, same pid. Any failure before the exec undoes 1-3.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::conn::Gate;
use super::state::{self, Handoff, Snapshot};
use super::{Outcome, Status};
use crate::error::{Error, Result};
use crate::events::EventSink;
use crate::reaper::Reaper;
use crate::supervisor::Supervisor;

/// Env vars the old image hands the new one (removed from the environment at once).
pub const STATE_FD_ENV: &str = "TETHER_UPGRADE_STATE_FD";
pub const OLD_EXE_FD_ENV: &str = "TETHER_UPGRADE_OLD_EXE_FD";
/// Set when the new image gave the state back: why.
pub const FAILED_ENV: &str = "TETHER_UPGRADE_FAILED";

/// Test-only knob: a new image started with it set refuses every state after the exec, so a
/// test can show the way back to the old executable (the old image, started again with
/// [`FAILED_ENV`] set, ignores it).
const REFUSE_ENV: &str = "TETHER_TEST_REFUSE_TAKEOVER";

/// How long the handoff waits for requests in flight to be answered.
const QUIESCE_LIMIT: Duration = Duration::from_secs(10);
/// How long the pre-flight child may take.
const PREFLIGHT_LIMIT: Duration = Duration::from_secs(10);

/// CLOCK_MONOTONIC in ns: comparable across the exec (same boot), unlike `Instant`.
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// What the server knows about its own upgrades; shared by the ttrpc service and the handoff.
pub struct Upgrader {
    pub gate: Gate,
    pub sup: Supervisor,
    pub events: EventSink,
    pub reaper: Reaper,
    pub namespace: String,
    pub socket: PathBuf,
    pub listener: RawFd,
    /// The executable this image runs, open since start: where a failed start goes back to.
    pub old_exe: Option<RawFd>,
    status: Mutex<Status>,
    busy: AtomicBool,
}

impl Upgrader {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        gate: Gate,
        sup: Supervisor,
        events: EventSink,
        reaper: Reaper,
        namespace: String,
        socket: PathBuf,
        listener: RawFd,
        previous: Option<(u64, Outcome)>,
    ) -> Arc<Upgrader> {
        let old_exe = open_own_exe();
        let (attempt, outcome) = match previous {
            Some((a, o)) => (a, Some(o)),
            None => (0, None),
        };
        Arc::new(Upgrader {
            gate,
            sup,
            events,
            reaper,
            namespace,
            socket,
            listener,
            old_exe,
            status: Mutex::new(Status {
                pid: std::process::id(),
                version: crate::VERSION.to_string(),
                // Hashed on first ask, not on the handoff's path.
                build: String::new(),
                attempt,
                outcome,
            }),
            busy: AtomicBool::new(false),
        })
    }

    pub fn status(&self) -> Status {
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        if s.build.is_empty() {
            s.build = super::build_id();
        }
        if let Some(o) = s.outcome.as_mut().filter(|o| o.new_build.is_empty()) {
            o.new_build = super::build_id();
        }
        s.clone()
    }

    /// Starts a handoff in the background and returns its attempt number: the caller's reply
    /// must be written before the gate can be quiet.
    pub fn begin(self: &Arc<Self>) -> Result<u64> {
        if self.busy.swap(true, SeqCst) {
            return Err(Error::FailedPrecondition(
                "an upgrade is already under way".into(),
            ));
        }
        let attempt = {
            let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
            s.attempt += 1;
            s.attempt
        };
        let me = self.clone();
        let span = tracing::info_span!("upgrade", attempt);
        let task = async move {
            let error = me.hand_off(attempt).await;
            tracing::error!(error = %error, "upgrade failed; still running the old code");
            let build = me.status().build;
            let mut s = me.status.lock().unwrap_or_else(|p| p.into_inner());
            s.outcome = Some(Outcome::failed(attempt, &build, error.to_string()));
            drop(s);
            me.busy.store(false, SeqCst);
        };
        tokio::spawn(tracing::Instrument::instrument(task, span));
        Ok(attempt)
    }

    /// Runs the handoff; returns only if it failed (everything is running again then).
    async fn hand_off(&self, attempt: u64) -> Error {
        let paused_at_ns = monotonic_ns();
        self.gate.set_closed(true);
        let result = self.quiesced(attempt, paused_at_ns).await;
        self.reaper.pause(false);
        self.events.pause(false, Duration::ZERO).await;
        self.gate.set_closed(false);
        match result {
            Ok(never) => match never {},
            Err(e) => e,
        }
    }

    async fn quiesced(&self, attempt: u64, paused_at_ns: u64) -> Result<std::convert::Infallible> {
        let deadline = tokio::time::Instant::now() + QUIESCE_LIMIT;
        while !self.gate.quiet() {
            if tokio::time::Instant::now() > deadline {
                return Err(Error::DeadlineExceeded(format!(
                    "requests still in flight after {QUIESCE_LIMIT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if !self.events.pause(true, Duration::from_secs(6)).await {
            return Err(Error::DeadlineExceeded(
                "an event delivery did not finish".into(),
            ));
        }
        self.reaper.pause(true);
        while !self.reaper.all_routed() {
            tokio::task::yield_now().await;
        }
        // The reaper is paused and every exit routed, so no new record starts now.
        if !self.sup.records_written(Duration::from_secs(2)).await {
            return Err(Error::DeadlineExceeded(
                "an exit status was still being recorded in its bundle".into(),
            ));
        }
        // From here to the exec nothing awaits except the pre-flight child.
        let table = self.sup.export()?;
        let table_fds = table.fds();
        let close_dups = |fds: &[RawFd]| fds.iter().copied().for_each(crate::sys::close_raw);
        let Some(old_exe) = self.old_exe else {
            close_dups(&table_fds);
            return Err(Error::FailedPrecondition(
                "the running executable could not be opened at start, so a failed upgrade \
                 would have nothing to go back to"
                    .into(),
            ));
        };
        let snap = Snapshot {
            tether_version: crate::VERSION.into(),
            namespace: self.namespace.clone(),
            socket: self.socket.clone(),
            listener: self.listener,
            connections: self.gate.export(),
            old_exe,
            handoff: Handoff {
                attempt,
                old_version: crate::VERSION.into(),
                old_build: self.status().build,
                paused_at_ns,
            },
            table,
            events: self.events.export(),
        };
        let bytes = state::encode(&snap);
        let exe = own_path();
        let result = async {
            let new = preflight(&self.reaper, &exe, &bytes).await?;
            tracing::info!(new_version = %new, exe = %exe.display(), "pre-flight passed; exec");
            exec_in_place(&exe, &bytes, &snap)
        }
        .await;
        close_dups(&table_fds);
        result
    }
}

/// The path this server was started from: the binary now there is what it becomes.
fn own_path() -> PathBuf {
    let exe = std::fs::read_link("/proc/self/exe").unwrap_or_default();
    let s = exe.to_string_lossy();
    PathBuf::from(s.strip_suffix(" (deleted)").unwrap_or(&s).to_string())
}

/// Opens the running executable (close-on-exec) so a failed start can go back to it even
/// after the file at its path was replaced.
fn open_own_exe() -> Option<RawFd> {
    let f = std::fs::File::open("/proc/self/exe").ok()?;
    Some(std::os::fd::IntoRawFd::into_raw_fd(f))
}

/// Runs `exe upgrade-check` with the state on stdin; it must say `ok <version>` and exit 0.
async fn preflight(reaper: &Reaper, exe: &std::path::Path, bytes: &[u8]) -> Result<String> {
    let mut cmd = Command::new(exe);
    cmd.arg(super::CHECK_ACTION)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let refuse = |why: String| Error::FailedPrecondition(format!("{}: {why}", exe.display()));
    // A file whose writer has just closed it can still be busy for a moment (a process that
    // forked while it was open has not exec'd yet): ETXTBSY is worth a few more tries.
    let mut tries = 0;
    let spawned = loop {
        match reaper.spawn(&mut cmd) {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < TEXT_BUSY_TRIES => {
                tries += 1;
                tokio::time::sleep(TEXT_BUSY_WAIT).await;
            }
            r => break r.map_err(|e| refuse(format!("cannot run it: {e}")))?,
        }
    };
    let mut child = spawned.child;
    let (mut stdin, mut stdout, mut stderr) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let bytes = bytes.to_vec();
    // Pipes are blocking std handles: a thread feeds and drains them.
    let io = std::thread::spawn(move || {
        if let Some(mut w) = stdin.take() {
            let _ = w.write_all(&bytes);
        }
        let (mut out, mut err) = (String::new(), String::new());
        if let Some(r) = stdout.as_mut() {
            let _ = r.take(4096).read_to_string(&mut out);
        }
        if let Some(r) = stderr.as_mut() {
            let _ = r.take(4096).read_to_string(&mut err);
        }
        (out, err)
    });
    let exit = match tokio::time::timeout(PREFLIGHT_LIMIT, spawned.exit).await {
        Ok(Ok(exit)) => exit,
        _ => {
            reaper.signal_child(child.id() as i32, libc::SIGKILL);
            return Err(refuse(format!(
                "pre-flight did not finish within {PREFLIGHT_LIMIT:?}"
            )));
        }
    };
    let (out, err) = io.join().unwrap_or_default();
    let version = out
        .lines()
        .find_map(|l| l.strip_prefix("ok "))
        .map(str::to_string);
    match (exit.status, version) {
        (0, Some(v)) => Ok(v),
        (code, _) => Err(refuse(format!(
            "pre-flight refused the state (exit {code}): {}",
            if err.trim().is_empty() {
                out.trim()
            } else {
                err.trim()
            }
        ))),
    }
}

/// How often, and how far apart, a new binary that is busy being written (ETXTBSY) is tried.
const TEXT_BUSY_TRIES: u32 = 25;
const TEXT_BUSY_WAIT: std::time::Duration = std::time::Duration::from_millis(20);

/// Execs `exe` with the state in a memfd. Returns only on failure, with every flag restored.
fn exec_in_place(
    exe: &std::path::Path,
    bytes: &[u8],
    snap: &Snapshot,
) -> Result<std::convert::Infallible> {
    let mut memfd = crate::sys::memfd("tether-upgrade").map_err(Error::io("memfd"))?;
    memfd.write_all(bytes).map_err(Error::io("write state"))?;
    let mut keep = vec![memfd.as_raw_fd(), snap.listener, snap.old_exe];
    keep.extend(snap.connections.iter().map(|c| c.fd));
    keep.extend(snap.table.fds());
    let env = exec_env(memfd.as_raw_fd(), snap.old_exe);
    let args: Vec<std::ffi::CString> = std::env::args_os()
        .filter_map(|a| std::ffi::CString::new(a.into_encoded_bytes()).ok())
        .collect();
    let mut cleared = Vec::new();
    let mut err = None;
    for &fd in &keep {
        match crate::sys::set_cloexec(fd, false) {
            Ok(()) => cleared.push(fd),
            Err(e) => {
                err = Some(Error::io(format!("keep fd {fd} across exec"))(e));
                break;
            }
        }
    }
    if err.is_none() {
        let mut tries = 0;
        let e = loop {
            let e = crate::sys::exec_image(Some(exe), -1, &args, &env);
            if e.raw_os_error() != Some(libc::ETXTBSY) || tries >= TEXT_BUSY_TRIES {
                break e;
            }
            // Blocks the server's one thread, but only within a handoff that already holds
            // every request back, and for at most TEXT_BUSY_TRIES * TEXT_BUSY_WAIT.
            tries += 1;
            std::thread::sleep(TEXT_BUSY_WAIT);
        };
        err = Some(Error::io(format!("exec {}", exe.display()))(e));
    }
    for fd in cleared {
        let _ = crate::sys::set_cloexec(fd, true);
    }
    drop(memfd);
    Err(err.unwrap_or_else(|| Error::io("exec")(std::io::Error::other("failed"))))
}

/// The environment of the next image: ours, with the upgrade's own variables replaced.
fn exec_env(state_fd: RawFd, old_exe: RawFd) -> Vec<std::ffi::CString> {
    let mut env: Vec<std::ffi::CString> = std::env::vars_os()
        .filter(|(k, _)| {
            ![STATE_FD_ENV, OLD_EXE_FD_ENV, FAILED_ENV]
                .iter()
                .any(|n| k == std::ffi::OsStr::new(n))
        })
        .filter_map(|(k, v)| {
            let mut kv = k.into_encoded_bytes();
            kv.push(b'=');
            kv.extend(v.into_encoded_bytes());
            std::ffi::CString::new(kv).ok()
        })
        .collect();
    for (k, v) in [(STATE_FD_ENV, state_fd), (OLD_EXE_FD_ENV, old_exe)] {
        if let Ok(c) = std::ffi::CString::new(format!("{k}={v}")) {
            env.push(c);
        }
    }
    env
}

/// In a freshly exec'd image: the state handed over, if this start is an upgrade.
pub enum Inherited {
    /// An ordinary start.
    None,
    /// An upgrade (or its undoing, `failed` set): the state to take over.
    State {
        snap: Box<Snapshot>,
        failed: Option<String>,
    },
}

/// Reads the handed-over state. A state this image cannot take goes back, with the reason,
/// to the executable it came from (this function then does not return).
pub fn inherited() -> Inherited {
    let Some(state_fd) = env_fd(STATE_FD_ENV) else {
        return Inherited::None;
    };
    let failed = std::env::var(FAILED_ENV).ok();
    let old_exe = env_fd(OLD_EXE_FD_ENV);
    // Read through a new open file description: the descriptor itself stays as it came
    // (without close-on-exec) in case this image has to give it back.
    let bytes = std::fs::read(format!("/proc/self/fd/{state_fd}"));
    let refuse = failed.is_none() && std::env::var_os(REFUSE_ENV).is_some();
    let checked = bytes
        .map_err(|e| format!("cannot read the state: {e}"))
        .and_then(|b| match refuse {
            true => Err(format!("{REFUSE_ENV} is set")),
            false => Ok(b),
        })
        .and_then(|b| state::decode(&b).map_err(|e| e.to_string()))
        .and_then(|snap| {
            let mut fds = vec![snap.listener, snap.old_exe];
            fds.extend(snap.connections.iter().map(|c| c.fd));
            fds.extend(snap.table.fds());
            match fds.iter().find(|&&fd| !crate::sys::is_open(fd)) {
                Some(fd) => Err(format!("descriptor {fd} named by the state is not open")),
                None => Ok(snap),
            }
        });
    match (checked, failed) {
        (Ok(snap), failed) => {
            // No other thread exists yet (no runtime, no logging), so changing the environment
            // races with nothing; children must not see these.
            for k in [STATE_FD_ENV, OLD_EXE_FD_ENV, FAILED_ENV] {
                std::env::remove_var(k);
            }
            let _ = crate::sys::adopt_fd(state_fd).map(drop);
            close_unnamed(&snap);
            Inherited::State {
                snap: Box::new(snap),
                failed,
            }
        }
        (Err(why), None) => {
            // Back to the old code with the state untouched.
            let Some(old_exe) = old_exe else {
                eprintln!("tether upgrade: {why}; no old executable to go back to");
                std::process::exit(1);
            };
            let mut env = exec_env(state_fd, old_exe);
            if let Ok(c) = std::ffi::CString::new(format!("{FAILED_ENV}={why}")) {
                env.push(c);
            }
            let args: Vec<std::ffi::CString> = std::env::args_os()
                .filter_map(|a| std::ffi::CString::new(a.into_encoded_bytes()).ok())
                .collect();
            let e = crate::sys::exec_image(None, old_exe, &args, &env);
            eprintln!("tether upgrade: {why}; going back failed too: {e}");
            std::process::exit(1);
        }
        (Err(why), Some(first)) => {
            eprintln!(
                "tether upgrade: the old image cannot read its own state ({why}) after: {first}"
            );
            std::process::exit(1);
        }
    }
}

/// Closes every descriptor above stderr that the state does not name, as a fresh server closes
/// everything but fd 3: whatever the old image left open by mistake ends here.
fn close_unnamed(snap: &Snapshot) {
    let mut named = vec![snap.listener, snap.old_exe];
    named.extend(snap.connections.iter().map(|c| c.fd));
    named.extend(snap.table.fds());
    let open: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    // The directory's own descriptor is closed by now; closing its number again is EBADF.
    for fd in open.into_iter().filter(|fd| *fd > 2 && !named.contains(fd)) {
        crate::sys::close_raw(fd);
    }
}

fn env_fd(name: &str) -> Option<RawFd> {
    std::env::var(name)
        .ok()?
        .parse()
        .ok()
        .filter(|&fd: &RawFd| fd > 2)
}

/// Takes an inherited descriptor named by a validated state.
pub fn adopt(fd: RawFd) -> Result<OwnedFd> {
    crate::sys::adopt_fd(fd).map_err(Error::io(format!("inherited fd {fd}")))
}

/// The connections taken over, and the attempt's number and outcome (for `Status`).
pub type TakenOver = (Vec<super::conn::Gated>, Option<(u64, Outcome)>);

/// Takes over what the previous image handed on: the table (with its stdio copies and OOM
/// watches), the undelivered events and the connections. Returns the connections and the
/// attempt's outcome, for `Status`.
pub fn take_over(
    snap: Snapshot,
    failed: Option<String>,
    gate: &Gate,
    sup: &Supervisor,
    events: &EventSink,
) -> Result<TakenOver> {
    // The old executable was for going back; this image opens its own.
    drop(adopt(snap.old_exe));
    // Carried events first: the table's import may publish (an OOM kill during the handoff),
    // and that must come after everything older.
    events.import(snap.events);
    sup.import(snap.table)?;
    let mut conns = Vec::new();
    for c in snap.connections {
        let s = std::os::unix::net::UnixStream::from(adopt(c.fd)?);
        s.set_nonblocking(true)
            .map_err(Error::io("inherited connection"))?;
        let s = tokio::net::UnixStream::from_std(s).map_err(Error::io("inherited connection"))?;
        conns.push(gate.wrap_replaying(s, c.replay));
    }
    let h = snap.handoff;
    let handoff_us = monotonic_ns().saturating_sub(h.paused_at_ns) / 1000;
    let outcome = match failed {
        None => Outcome {
            attempt: h.attempt,
            ok: true,
            old_version: h.old_version,
            old_build: h.old_build,
            new_version: crate::VERSION.into(),
            new_build: String::new(),
            handoff_us,
            error: String::new(),
        },
        Some(why) => Outcome {
            handoff_us,
            ..Outcome::failed(h.attempt, &h.old_build, why)
        },
    };
    tracing::info!(
        attempt = h.attempt,
        ok = outcome.ok,
        handoff_us,
        "took over from the previous image"
    );
    Ok((conns, Some((h.attempt, outcome))))
}
