//! The binary's actions: `start`, `delete`, and serving (the daemon's main).

use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::cli::{Action, Args};
use crate::error::{Error, Result};
use crate::events::Destination;
use crate::reaper::Reaper;
use crate::runtime::{Runc, RuncOptions};
use crate::server::ServerConfig;

/// Runs the action and returns the process exit code.
pub fn run(args: Args) -> i32 {
    let result = match args.action {
        Action::Version => {
            print!("{}", crate::version::text());
            Ok(())
        }
        Action::Info => crate::info::info(&mut std::io::stdin().lock()).and_then(|out| {
            use std::io::Write;
            std::io::stdout()
                .write_all(&out)
                .map_err(Error::io("write RuntimeInfo"))
        }),
        Action::Start => start(&args),
        Action::Delete => delete(&args),
        Action::Serve => serve(&args),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            // For start, containerd reads stdout+stderr together and shows this text.
            eprintln!("containerd-shim-tether-v2: {e}");
            1
        }
    }
}

fn cwd() -> Result<PathBuf> {
    std::env::current_dir().map_err(Error::io("current directory"))
}

fn start(args: &Args) -> Result<()> {
    let out = crate::daemonize::start(args, &cwd()?)?;
    // Exactly the announcement (address or BootstrapResult), nothing else: containerd parses
    // stdout and stderr together.
    use std::io::Write;
    std::io::stdout()
        .write_all(&out)
        .map_err(Error::io("write start result"))?;
    Ok(())
}

fn current_thread_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::io("build async runtime"))
}

/// Clean up after a server that is gone: force-delete the runc container, unmount the rootfs,
/// and report the init's exit as the server recorded it in the bundle, or as killed (137) when
/// nothing was recorded (the server died before its init). Idempotent; runs on every
/// teardown, so it is quick.
fn delete(args: &Args) -> Result<()> {
    crate::process::validate_id("container", &args.id)?;
    let bundle = if args.bundle.is_empty() {
        cwd()?
    } else {
        PathBuf::from(&args.bundle)
    };
    let opts: RuncOptions = std::fs::read(bundle.join("options.json"))
        .ok()
        .and_then(|d| serde_json::from_slice(&d).ok())
        .unwrap_or_default();
    let runc = Runc::new(&opts, &args.namespace, &bundle);
    // The runtime keeps its state in <root>/<id>; without it there is nothing for
    // `runc delete --force` to do, and skipping it makes the routine teardown (containerd runs
    // this after every task, usually already deleted) a few file operations.
    if runc.root.join(&args.id).exists() {
        let rt = current_thread_runtime()?;
        rt.block_on(async {
            let (reaper, _orphans) = Reaper::start().map_err(Error::io("reaper"))?;
            if let Err(e) = runc.delete(&reaper, &args.id, true).await {
                // containerd logs stderr of `delete` as warnings.
                eprintln!("runc delete: {e}");
            }
            Ok::<_, Error>(())
        })?;
    }
    crate::mount::unmount_all(&bundle.join("rootfs"));
    remove_dead_socket(&bundle);
    let (pid, status, at) = match recorded_exit(&bundle) {
        Some(r) => (r.pid, r.status, r.at),
        None => {
            let pid = std::fs::read_to_string(bundle.join("init.pid"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            (pid, 128 + libc::SIGKILL as u32, SystemTime::now())
        }
    };
    let bytes = crate::service::encode_delete_response(pid, status, at)?;
    use std::io::Write;
    std::io::stdout()
        .write_all(&bytes)
        .map_err(Error::io("write DeleteResponse"))?;
    Ok(())
}

/// The exit the server recorded (`exit_record`). A record that cannot be read is ignored with
/// a warning on stderr, which containerd logs: the answer is then 137, as with none.
fn recorded_exit(bundle: &Path) -> Option<crate::exit_record::Recorded> {
    match crate::exit_record::read(bundle) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("WARN ignoring the recorded exit status, reporting 137: {e}");
            None
        }
    }
}

/// Removes the bundle's server socket if nothing serves it any more (a grouped server that is
/// still alive keeps its socket).
fn remove_dead_socket(bundle: &Path) {
    let Ok(address) = std::fs::read_to_string(bundle.join("address")) else {
        return;
    };
    let Some(path) = address.trim().strip_prefix("unix://") else {
        return;
    };
    if std::os::unix::net::UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
}

/// Deadline for one runtime call: `TETHER_RUNTIME_TIMEOUT_MS` from the environment containerd
/// gives the shim, else [`crate::runtime::DEFAULT_TIMEOUT`].
fn runtime_timeout() -> Duration {
    std::env::var("TETHER_RUNTIME_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&ms| ms > 0)
        .map_or(crate::runtime::DEFAULT_TIMEOUT, Duration::from_millis)
}

/// The long-lived server's process: everything that is global to the process (inherited
/// descriptors, malloc arenas, logging, the child subreaper bit, fd 3, signals, the
/// environment), then [`crate::server::run`].
fn serve(args: &Args) -> Result<()> {
    // An upgrade's exec hands over many descriptors, named by its state; otherwise only fd 3.
    let inherited = match crate::upgrade::handoff::inherited() {
        crate::upgrade::handoff::Inherited::State { snap, failed } => Some((snap, failed)),
        crate::upgrade::handoff::Inherited::None => None,
    };
    let listener = match &inherited {
        Some((snap, _)) => crate::sys::adopt_fd(snap.listener),
        // SAFETY: nothing owns a descriptor yet: this is the server's first act after exec,
        // and fd 3 is the listener `start` passed on, taken once.
        #[allow(unsafe_code)]
        None => unsafe {
            crate::sys::close_fds_from(4);
            crate::sys::take_inherited_fd(3)
        },
    };
    crate::sys::single_malloc_arena();
    let bundle = cwd()?;
    crate::logging::init(&bundle, args.debug);
    // Before anything forks, so every descendant that is orphaned comes to us.
    crate::sys::set_child_subreaper().map_err(Error::io("set child subreaper"))?;
    if std::env::var_os("SCHED_CORE").is_some_and(|v| !v.is_empty()) {
        // Before anything forks, so runc and the containers inherit the cookie. The Go shim
        // fails `start` here; containerd documents the setting as "if available", so a kernel
        // without core scheduling costs a warning, not the containers.
        match crate::sys::sched_core_create() {
            Ok(()) => tracing::info!("SCHED_CORE: new core-scheduling cookie for the shim"),
            Err(e) => {
                tracing::warn!(error = %e, "SCHED_CORE is set but this kernel cannot create a core-scheduling cookie; running without")
            }
        }
    }
    let listener = listener.map_err(Error::io(
        "listener on fd 3 (the server is started by `start`)",
    ))?;
    let listener = StdUnixListener::from(listener);
    listener
        .set_nonblocking(true)
        .map_err(Error::io("listener"))?;
    let span = tracing::info_span!("shim", namespace = %args.namespace, id = %args.id);
    let _enter = span.enter();
    tracing::info!(pid = std::process::id(), "serving");
    let destination = match std::env::var("TTRPC_ADDRESS") {
        Ok(address) if !address.is_empty() => Destination::Containerd {
            address,
            namespace: args.namespace.clone(),
        },
        _ => Destination::Discard,
    };
    let config = ServerConfig {
        namespace: args.namespace.clone(),
        runtime_timeout: runtime_timeout(),
        socket: PathBuf::from(&args.socket),
    };
    let rt = current_thread_runtime()?;
    rt.block_on(async {
        let listener =
            tokio::net::UnixListener::from_std(listener).map_err(Error::io("listener"))?;
        let mut stop = crate::signals::Signals::new(&[libc::SIGTERM, libc::SIGINT])
            .map_err(Error::io("signal"))?;
        let signalled = async move {
            if stop.recv().await.is_ok() {
                tracing::info!("SIGTERM or SIGINT");
            }
        };
        crate::server::run_inherited(listener, destination, config, signalled, inherited).await
    })
}
