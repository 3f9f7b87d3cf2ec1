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
    let (reaper, exits) = Reaper::start().map_err(Error::io("install SIGCHLD handler"))?;
    let events = events::start(destination);
    let sup = Supervisor::new(
        reaper.clone(),
        exits,
        events.clone(),
        config.namespace.clone(),
        config.runtime_timeout,
    );
    let stop = Arc::new(Notify::new());
    let svc = Arc::new(TaskService::new(sup, stop.clone()));
    let mut server = ttrpc::asynchronous::Server::new()
        .add_listener(ttrpc::asynchronous::transport::Listener::new(SameUser(
            listener,
        )))
        .register_service(services(svc));
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
