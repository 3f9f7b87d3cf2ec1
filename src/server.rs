//! The server: the task API on a listener, with the reaper, the supervisor and the event
//! publisher behind it. [`run`] owns all of it, so a test can run a server in-process;
//! `shim::serve` does the process-wide set-up around it.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::error::{Error, Result};
use crate::events::{self, Destination};
use crate::reaper::Reaper;
use crate::service::{services, TaskService};
use crate::supervisor::Supervisor;
use crate::upgrade::conn::{Gate, Gated};
use crate::upgrade::handoff::Upgrader;
use crate::upgrade::state::Snapshot;

/// What [`run`] needs to know besides its listener and event destination.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// containerd namespace of the tasks served (the runtime's default root is per namespace).
    pub namespace: String,
    /// Deadline of each runtime call.
    pub runtime_timeout: Duration,
    /// The listener's path, removed first when shutting down so no new client can connect
    /// (empty: nothing to remove).
    pub socket: PathBuf,
}

/// Serves the task API on `listener` until `Shutdown` finds no container left or `shutdown`
/// completes, then delivers the queued events (at most 3 s) and stops.
///
/// What stays process-wide is the caller's: this starts the reaper, whose `waitpid(-1)` loop
/// reaps every child of the process, so there must be one `run` per process and nothing else
/// in it may wait for a child; and the process should be a child subreaper (`shim::serve`
/// makes it one), so the containers' processes are still its children once runc has exited.
/// Everything else is owned by this call, so a test can run the server in-process on a socket
/// of its own (`tests/supervisor.rs`).
pub async fn run(
    listener: tokio::net::UnixListener,
    destination: Destination,
    config: ServerConfig,
    shutdown: impl Future,
) -> Result<()> {
    run_inherited(listener, destination, config, shutdown, None).await
}

/// [`run`], taking over the state an upgrade handed to this image (`src/upgrade`) when there
/// is one: its connections, process table, stdio and undelivered events.
pub(crate) async fn run_inherited(
    listener: tokio::net::UnixListener,
    destination: Destination,
    config: ServerConfig,
    shutdown: impl Future,
    inherited: Option<(Box<Snapshot>, Option<String>)>,
) -> Result<()> {
    let listener_fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
    let (reaper, exits) = Reaper::start().map_err(Error::io("install SIGCHLD handler"))?;
    let events = events::start(destination);
    let sup = Supervisor::new(
        reaper.clone(),
        exits,
        events.clone(),
        config.namespace.clone(),
        config.runtime_timeout,
    );
    let gate = Gate::default();
    // Nothing has awaited since the reaper started: its loop has not run, so every exit of
    // an imported process finds it in the table.
    let (connections, previous) = match inherited {
        Some((snap, failed)) => {
            crate::upgrade::handoff::take_over(*snap, failed, &gate, &sup, &events)?
        }
        None => (Vec::new(), None),
    };
    let upgrader = Upgrader::new(
        gate.clone(),
        sup.clone(),
        events.clone(),
        reaper.clone(),
        config.namespace.clone(),
        config.socket.clone(),
        listener_fd,
        previous,
    );
    let stop = Arc::new(Notify::new());
    let svc = Arc::new(TaskService::new(sup, stop.clone()));
    let mut services = services(svc);
    let (name, upgrade) = crate::upgrade::service(upgrader);
    services.insert(name, upgrade);
    let mut server = ttrpc::asynchronous::Server::new()
        .add_listener(ttrpc::asynchronous::transport::Listener::new(SameUser {
            listener,
            gate,
            inherited: connections,
        }))
        .register_service(services);
    server.start().await.map_err(|e| Error::Rpc {
        context: "start ttrpc server".into(),
        message: e.to_string(),
    })?;
    tokio::select! {
        _ = stop.notified() => {}
        _ = shutdown => {}
    }
    // Stop being reachable first, then deliver what is queued, then go.
    if !config.socket.as_os_str().is_empty() {
        let _ = std::fs::remove_file(&config.socket);
    }
    events.flush(Duration::from_secs(3)).await;
    let _ = tokio::time::timeout(Duration::from_millis(500), server.shutdown()).await;
    // A logger being stopped would outlive us (and never get its SIGKILL) otherwise.
    reaper.settle(Duration::from_secs(10)).await;
    tracing::info!("exiting");
    Ok(())
}

/// The server's listener: accepts only peers running as the server's own uid and gid
/// (SO_PEERCRED), as the Go shim's `UnixSocketRequireSameUser` does. The socket's 0600 mode in
/// a 0700 directory already keeps other users out; this still holds if those modes change.
///
/// Every connection is [`Gated`], so an upgrade can stop it at a frame boundary; connections
/// inherited from the previous image come first. While the gate is closed nothing is accepted:
/// new connections wait in the listen backlog, which crosses the exec with the socket.
struct SameUser {
    listener: tokio::net::UnixListener,
    gate: Gate,
    inherited: Vec<Gated>,
}

impl futures_core::Stream for SameUser {
    type Item = std::io::Result<Gated>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let (uid, gid) = (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        );
        if let Some(conn) = self.inherited.pop() {
            return std::task::Poll::Ready(Some(Ok(conn)));
        }
        if self.gate.is_closed() {
            self.gate.park(cx);
            if !self.gate.is_closed() {
                cx.waker().wake_by_ref();
            }
            return std::task::Poll::Pending;
        }
        loop {
            let (stream, _) = match std::task::ready!(self.listener.poll_accept(cx)) {
                Ok(accepted) => accepted,
                Err(e) => return std::task::Poll::Ready(Some(Err(e))),
            };
            match stream.peer_cred() {
                Ok(c) if (c.uid(), c.gid()) == (uid, gid) => {
                    return std::task::Poll::Ready(Some(Ok(self.gate.wrap(stream))))
                }
                Ok(c) => {
                    tracing::warn!(
                        uid = c.uid(),
                        gid = c.gid(),
                        pid = ?c.pid(),
                        "refused a connection from another user"
                    )
                }
                Err(e) => tracing::warn!(error = %e, "refused a connection whose peer is unknown"),
            }
        }
    }
}
