//! [`LinkTask`]: the [`ClusterLink`] as a task on the control runtime,
//! beside the core loop and the admin server, until the daemon stops.
//!
//! The link connects in the background, so a NATS server that is down at
//! start is the ordinary disconnected state. Only a link that cannot start
//! at all (an unusable URL) ends the task early: the daemon then runs
//! alone, with `cluster_link_down` raised and the reason in its detail.
//! The link's own tasks (heartbeats, subscriptions, the registry watch)
//! are spawned by [`ClusterLink::start`] onto the same runtime.

use std::sync::Arc;

use tokio::sync::oneshot;
use tracing::{error, warn};

use super::LINK_DOWN;
use crate::cluster::{AgentRecord, CallPlane, ClusterConfig, ClusterLink, LinkIo};
use crate::observe::health::Health;
use crate::runtime::control::{ControlRuntime, ControlTask};

/// What the link task is given at start.
pub(super) struct LinkInputs {
    /// The link's settings.
    pub config: ClusterConfig,
    /// The channels to and from the core loop.
    pub io: LinkIo,
    /// The executors' calls to other hosts, and theirs to this one.
    pub calls: Option<CallPlane>,
    /// This host's agents, for the registry.
    pub records: Vec<AgentRecord>,
    /// Where a failure to start is reported.
    pub health: Arc<Health>,
}

/// The running link task. Dropping it asks the link to stop.
#[derive(Debug)]
pub struct LinkTask {
    task: ControlTask,
}

impl LinkTask {
    /// Starts the task on `control`; the link itself starts on it.
    pub(super) fn spawn(control: &ControlRuntime, inputs: LinkInputs) -> LinkTask {
        LinkTask {
            task: control.spawn(|stopped| run(inputs, stopped)),
        }
    }

    /// Stops the link (flushing what NATS still holds, at most one
    /// heartbeat) and waits for it (from outside the control runtime).
    pub fn stop(self) {
        self.task.stop();
    }
}

async fn run(inputs: LinkInputs, stopped: oneshot::Receiver<()>) {
    let LinkInputs {
        config,
        io,
        calls,
        records,
        health,
    } = inputs;
    let url = config.nats_url().to_owned();
    let link = match ClusterLink::start(config, io, calls).await {
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
}
