//! The refresh thread of `pinwheel top`: asks the admin API once a second
//! (and at once when woken) and hands each answer to the UI loop, so a
//! slow or absent daemon never freezes the screen or the keys.
//!
//! The plan does not change while a daemon runs, so it is asked for until
//! it arrives and then kept. The thread ends when the UI drops its end of
//! either channel.

use std::net::SocketAddr;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender};
use std::thread::JoinHandle;
use std::time::Duration;

use super::app::Snapshot;
use crate::cli::client::AdminClient;
use crate::error::DaemonError;
use crate::observe::api::PlanResponse;

/// How often the view is refreshed.
pub const REFRESH: Duration = Duration::from_secs(1);

/// A refresh, or why it failed.
pub type Fetched = Result<Snapshot, String>;

/// Starts the thread; `wake` makes it refresh at once.
pub fn spawn(
    addr: SocketAddr,
    out: SyncSender<Fetched>,
    wake: Receiver<()>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("pinwheel-top-fetch".into())
        .spawn(move || {
            let client = AdminClient::new(addr);
            let mut plan: Option<PlanResponse> = None;
            loop {
                let fetched = fetch(&client, &mut plan).map_err(|err| err.to_string());
                if out.send(fetched).is_err() {
                    return;
                }
                match wake.recv_timeout(REFRESH) {
                    Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
        })
}

fn fetch(client: &AdminClient, plan: &mut Option<PlanResponse>) -> Result<Snapshot, DaemonError> {
    let plan = match plan {
        Some(plan) => plan.clone(),
        None => plan.insert(client.get("/v1/plan")?).clone(),
    };
    Ok(Snapshot {
        health: client.get("/health")?,
        agents: client.get("/v1/agents")?,
        gpus: client.get("/v1/gpus")?,
        cluster: client.get("/v1/cluster")?,
        plan,
    })
}

/// Wakes the thread for a refresh now (after a pin, say).
pub fn wake(waker: &Sender<()>) {
    // A thread that has ended has nothing to refresh.
    let _ = waker.send(());
}
