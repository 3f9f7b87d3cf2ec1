//! The binary's actions: `start`, `delete`, and serving (the daemon's main).

use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use containerd_shim_protos::api::DeleteResponse;
use containerd_shim_protos::protobuf::{Message, MessageField};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Notify;

use crate::cli::{Action, Args};
use crate::error::{Error, Result};
use crate::events::{self, Destination};
use crate::reaper::Reaper;
use crate::runtime::{Runc, RuncOptions};
use crate::service::{services, TaskService};
use crate::supervisor::Supervisor;

/// Runs the action and returns the process exit code.
pub fn run(args: Args) -> i32 {
    let result = match args.action {
        Action::Version => {
            println!("containerd-shim-tether-v2:\n  Version:  {}", crate::VERSION);
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
/// and report the task as killed (137). Idempotent; runs on every teardown, so it is quick.
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
    let pid = std::fs::read_to_string(bundle.join("init.pid"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let resp = DeleteResponse {
        pid,
        exit_status: 128 + libc::SIGKILL as u32,
        exited_at: MessageField::some(events::timestamp(SystemTime::now())),
        ..Default::default()
    };
    let bytes = resp.write_to_bytes().map_err(|e| Error::Io {
        context: "encode DeleteResponse".into(),
        source: std::io::Error::other(e),
    })?;
    use std::io::Write;
    std::io::stdout()
        .write_all(&bytes)
        .map_err(Error::io("write DeleteResponse"))?;
    Ok(())
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

/// The server's listener: accepts only peers running as the server's own uid and gid
/// (SO_PEERCRED), as the Go shim's `UnixSocketRequireSameUser` does. The socket's 0600 mode in
/// a 0700 directory already keeps other users out; this still holds if those modes change.
struct SameUser(tokio::net::UnixListener);

impl futures_core::Stream for SameUser {
    type Item = std::io::Result<tokio::net::UnixStream>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let (uid, gid) = (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        );
        loop {
            let (stream, _) = match std::task::ready!(self.0.poll_accept(cx)) {
                Ok(accepted) => accepted,
                Err(e) => return std::task::Poll::Ready(Some(Err(e))),
            };
            match stream.peer_cred() {
                Ok(c) if (c.uid(), c.gid()) == (uid, gid) => {
                    return std::task::Poll::Ready(Some(Ok(stream)))
                }
                Ok(c) => {
                    tracing::warn!(uid = c.uid(), gid = c.gid(), pid = ?c.pid(), "refused a connection from another user")
                }
                Err(e) => tracing::warn!(error = %e, "refused a connection whose peer is unknown"),
            }
        }
    }
}

/// The long-lived server.
fn serve(args: &Args) -> Result<()> {
    crate::sys::close_fds_from(4);
    crate::sys::single_malloc_arena();
    let bundle = cwd()?;
    crate::logging::init(&bundle, args.debug);
    // Before anything forks, so every descendant that is orphaned comes to us.
    crate::sys::set_child_subreaper().map_err(Error::io("set child subreaper"))?;
    let listener = crate::sys::take_inherited_fd(3).map_err(Error::io(
        "listener on fd 3 (the server is started by `start`)",
    ))?;
    let listener = StdUnixListener::from(listener);
    listener
        .set_nonblocking(true)
        .map_err(Error::io("listener"))?;
    let span = tracing::info_span!("shim", namespace = %args.namespace, id = %args.id);
    let _enter = span.enter();
    tracing::info!(pid = std::process::id(), "serving");
    let rt = current_thread_runtime()?;
    rt.block_on(async {
        let (reaper, exits) = Reaper::start().map_err(Error::io("install SIGCHLD handler"))?;
        let dest = match std::env::var("TTRPC_ADDRESS") {
            Ok(address) if !address.is_empty() => Destination::Containerd {
                address,
                namespace: args.namespace.clone(),
            },
            _ => Destination::Discard,
        };
        let events = events::start(dest);
        let sup = Supervisor::new(
            reaper.clone(),
            exits,
            events.clone(),
            args.namespace.clone(),
            runtime_timeout(),
        );
        let shutdown = Arc::new(Notify::new());
        let svc = Arc::new(TaskService::new(sup, shutdown.clone()));
        let listener =
            tokio::net::UnixListener::from_std(listener).map_err(Error::io("listener"))?;
        let mut server = ttrpc::asynchronous::Server::new()
            .add_listener(ttrpc::asynchronous::transport::Listener::new(SameUser(
                listener,
            )))
            .register_service(services(svc));
        server.start().await.map_err(|e| Error::Io {
            context: "start ttrpc server".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let mut term = signal(SignalKind::terminate()).map_err(Error::io("signal"))?;
        let mut int = signal(SignalKind::interrupt()).map_err(Error::io("signal"))?;
        tokio::select! {
            _ = shutdown.notified() => {}
            _ = term.recv() => tracing::info!("SIGTERM"),
            _ = int.recv() => tracing::info!("SIGINT"),
        }
        // Stop being reachable first, then deliver what is queued, then go.
        if !args.socket.is_empty() {
            let _ = std::fs::remove_file(&args.socket);
        }
        events.flush(Duration::from_secs(3)).await;
        let _ = tokio::time::timeout(Duration::from_millis(500), server.shutdown()).await;
        // A logger being stopped would outlive us (and never get its SIGKILL) otherwise.
        reaper.settle(Duration::from_secs(10)).await;
        tracing::info!("exiting");
        Ok(())
    })
}
