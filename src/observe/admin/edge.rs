//! The admin API's HTTP edge: accepting connections and serving them with
//! hyper, so that no client can hold the daemon hostage.
//!
//! * **Header-read timeout.** A connection has [`HEADER_READ_TIMEOUT`] to
//!   send a request's head, counted from when the server starts waiting
//!   for it (so an idle keep-alive connection is closed after as long).
//!   A client that sends half a request line and waits is cut off.
//! * **A cap on open connections.** At most [`MAX_CONNECTIONS`] are served
//!   at once; past that the accept loop waits for one to end, and new
//!   connections wait in the kernel's listen queue (they are answered
//!   late, not refused). Idle holders of a slot are closed by the
//!   header-read timeout, so the queue always moves.
//! * **Small heads and bodies.** A head over [`MAX_HEAD_BYTES`] is
//!   answered 431 by hyper; a body over [`MAX_BODY_BYTES`] is answered 413
//!   before the token is looked at (see `admin.rs`).
//! * **Bounded shutdown.** On stop the listener closes at once, every
//!   connection is told to finish its request in progress and close, and
//!   after [`SHUTDOWN_GRACE`] the ones still open are dropped. A SIGTERM
//!   therefore waits at most that long for the admin API, whatever its
//!   clients do.
//!
//! Each connection is a task on the control runtime (a `JoinSet`, so the
//! ones left at the deadline can be aborted together); the semaphore's
//! permit lives in the task, so a slot frees however the task ends.
//!
//! What it does not do: routing, authorisation or parsing bodies
//! (`admin.rs`), or TLS (the API listens on loopback by default).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot, watch};
use tokio::task::JoinSet;
use tracing::{debug, error, info};

/// Longest a client may take to send a request's head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait in the listen queue.
pub const MAX_CONNECTIONS: usize = 32;
/// Largest request head (request line and headers), bytes (hyper's
/// minimum read buffer is 8 KiB).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Largest request body, bytes: a command is a small JSON object.
pub const MAX_BODY_BYTES: usize = 4 * 1024;
/// How long connections may finish at shutdown before they are dropped.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// Pause after a failed accept (out of file descriptors, say), so the
/// loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// One served connection.
type Connection = http1::Connection<TokioIo<TcpStream>, TowerToHyperService<Router>>;

/// Serves `router` on `listener` until `stopped` fires, then shuts down
/// within [`SHUTDOWN_GRACE`].
pub(super) async fn serve(
    listener: std::net::TcpListener,
    router: Router,
    stopped: oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(err) => {
            error!(error = %err, "admin API: listener not usable; serving nothing");
            return;
        }
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES);
    let (stopping, stop_seen) = watch::channel(false);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    tokio::pin!(stopped);
    loop {
        // Reap what ended, so the set holds only open connections.
        while connections.try_join_next().is_some() {}
        let slot = tokio::select! {
            _ = &mut stopped => break,
            slot = Arc::clone(&slots).acquire_owned() => slot,
        };
        let Ok(slot) = slot else { break };
        let accepted = tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(err) => {
                debug!(error = %err, "admin API: accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let connection = builder.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(router.clone()),
        );
        connections.spawn(serve_connection(connection, slot, stop_seen.clone()));
    }
    drop(listener);
    let _ = stopping.send(true);
    shut_down(connections).await;
}

/// Serves one connection; on stop, lets its request in progress finish.
async fn serve_connection(
    connection: Connection,
    slot: OwnedSemaphorePermit,
    mut stopping: watch::Receiver<bool>,
) {
    let _slot = slot;
    tokio::pin!(connection);
    tokio::select! {
        ended = connection.as_mut() => {
            if let Err(err) = ended {
                debug!(error = %err, "admin API: connection ended");
            }
            return;
        }
        _ = stopping.wait_for(|stop| *stop) => {}
    }
    connection.as_mut().graceful_shutdown();
    if let Err(err) = connection.await {
        debug!(error = %err, "admin API: connection ended at shutdown");
    }
}

/// Waits up to [`SHUTDOWN_GRACE`] for the connections to close, then
/// drops the rest.
async fn shut_down(mut connections: JoinSet<()>) {
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drained).await.is_err() {
        info!(
            connections = connections.len(),
            grace_ms = SHUTDOWN_GRACE.as_millis() as u64,
            "admin API connections dropped at shutdown"
        );
        connections.abort_all();
    }
}
