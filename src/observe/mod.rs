//! How an operator sees and steers a running pinwheel.
//!
//! * [`health`]: `ok` or `degraded` with named reasons, raised and cleared
//!   by the parts that degrade (privileges, NVML, PMU, cluster link,
//!   watchdog).
//! * [`perf`]: perf events per executor thread, probed one by one at boot;
//!   software events always, hardware events where there is a PMU; the
//!   migration alarm for pinned threads.
//! * [`watchdog`]: stall detection over the executors' heartbeats, and
//!   systemd's `READY=1` / `WATCHDOG=1`.
//! * [`view`]: the read-mostly [`view::DaemonView`] the core loop refreshes
//!   and the API reads.
//! * [`metrics`]: the Prometheus collector over that view.
//! * [`admin`]: the HTTP API, a task on the control runtime, behind an
//!   edge no client can hold (timeouts, a connection cap, bounded
//!   shutdown), answering with the types of [`api`], which its clients
//!   share.
//! * [`anomaly`]: the robust-baseline anomaly detector (pure) that flags an
//!   agent or replica whose latency or error rate has gone wrong.
//!
//! Nothing here runs on an executor: the data plane publishes counters it
//! owns, and everything else reads them from other threads.

pub mod admin;
pub mod anomaly;
pub mod api;
pub mod health;
pub mod metrics;
pub mod perf;
pub mod view;
pub mod watchdog;

use std::net::SocketAddr;

/// What can go wrong starting the observability parts.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    /// The admin address is taken or not ours.
    #[error(
        "cannot listen on {addr} for the admin API: {source}; pick another with --admin-addr or [admin] addr in the topology"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}
