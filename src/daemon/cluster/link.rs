//! [`LinkThread`]: the control thread that runs the [`ClusterLink`] on a
//! current-thread tokio runtime until the daemon stops.
//!
//! The link connects in the background, so a NATS server that is down at
//! start is the ordinary disconnected state. Only a link that cannot start
//! at all (an unusable URL) ends the thread early: the daemon then runs
//! alone, with `cluster_link_down` raised and the reason in its detail.

use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, warn};

use super::LINK_DOWN;
use crate::cluster::{AgentRecord, ClusterConfig, ClusterEvent, ClusterLink, HostState};
use crate::observe::health::Health;

/// What the link thread is given at start.
pub(super) struct LinkInputs {
    /// The link's settings.
    pub config: ClusterConfig,
    /// The core loop's latest host state.
    pub source: watch::Receiver<HostState>,
    /// Where the link's events go.
    pub events: mpsc::Sender<ClusterEvent>,
    /// This host's agents, for the registry.
    pub records: Vec<AgentRecord>,
    /// Where a failure to start is reported.
    pub health: Arc<Health>,
}

/// The running link thread. Dropping it stops the link.
#[derive(Debug)]
pub struct LinkThread {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl LinkThread {
    /// Starts the thread; the link itself starts on it.
    pub(super) fn spawn(inputs: LinkInputs) -> std::io::Result<LinkThread> {
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("pinwheel-cluster".into())
            .spawn(move || run(inputs, stopped))?;
        Ok(LinkThread {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops the link (flushing what NATS still holds, at most one
    /// heartbeat) and joins the thread.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for LinkThread {
    fn drop(&mut self) {
        self.shut_down();
    }
}

fn run(inputs: LinkInputs, stopped: oneshot::Receiver<()>) {
    let LinkInputs {
        config,
        source,
        events,
        records,
        health,
    } = inputs;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            error!(error = %err, "cluster link: no async runtime; running alone");
            health.raise(LINK_DOWN, format!("no async runtime for the link: {err}"));
            return;
        }
    };
    runtime.block_on(async move {
        let url = config.nats_url().to_owned();
        let link = match ClusterLink::start(config, source, events).await {
            Ok(link) => link,
            Err(err) => {
                error!(error = %err, "cluster link not started; running alone");
                health.raise(
                    LINK_DOWN,
                    format!("{err}; fix the URL (--nats or [cluster] nats_url) and restart"),
                );
                return;
            }
        };
        for record in records {
            if let Err(err) = link.register(record) {
                warn!(error = %err, url, "agent not registered in the cluster");
            }
        }
        let _ = stopped.await;
        link.stop().await;
    });
}
