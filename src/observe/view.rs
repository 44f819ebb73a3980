//! What the admin API shows: one shared, read-mostly view of the daemon.
//!
//! The data plane never serves a reader. Executors publish their
//! statistics once a second into slots they only `try_lock`
//! ([`crate::runtime::executor::Control::recent`]); the core loop reads
//! them, computes rates and agent states, and stores the result here
//! ([`DaemonView::set_live`]). HTTP handlers clone what they need out of
//! the view and encode it on the control thread. The static parts (the
//! plan, the agents' names and planned CPUs) are built once at boot.

use std::sync::{Arc, RwLock};

use serde::Serialize;

use super::api::{
    AgentStatus, AnomalySeen, ClusterResponse, ExecutorStatus, GpusResponse, LegacyAgent,
    PortTotals,
};
use super::health::Health;
use super::perf::PerfSet;
use crate::runtime::executor::Control;
use crate::runtime::legacy::{LegacyBook, LegacyStats};
use crate::runtime::remote::CallStats;
use crate::runtime::routes::Routes;
use crate::runtime::stats::StatsSnapshot;

/// An agent's fixed facts.
#[derive(Debug, Clone, Serialize)]
pub struct AgentFacts {
    /// Its id on the wire.
    #[serde(skip)]
    pub id: usize,
    /// Its name.
    pub name: String,
    /// Its host in the manifest.
    pub host: String,
    /// native, synthetic or external.
    pub kind: &'static str,
    /// The CPU the plan gave it.
    pub cpu: u32,
}

/// What the core loop refreshes each second.
#[derive(Debug, Clone, Default)]
pub struct LiveView {
    /// Agents, in plan order.
    pub agents: Vec<AgentStatus>,
    /// Process and external agents' processes.
    pub processes: Vec<super::api::ProcessStatus>,
    /// Executors, by index.
    pub executors: Vec<ExecutorStatus>,
    /// Each executor's statistics, for `/metrics`.
    pub snapshots: Vec<StatsSnapshot>,
}

/// Everything the admin API reads.
#[derive(Debug)]
pub struct DaemonView {
    /// This host's name.
    pub host: String,
    /// Health reasons.
    pub health: Arc<Health>,
    /// perf counters of the executor threads.
    pub perf: Arc<PerfSet>,
    /// The executors' shared control block.
    pub control: Arc<Control>,
    /// Agent names and executors.
    pub routes: Arc<Routes>,
    /// Each executor's CPU, by index.
    pub executor_cpus: Vec<u32>,
    /// Agents' fixed facts, in plan order.
    pub agents: Vec<AgentFacts>,
    /// `pinwheel plan --format json` of the running plan.
    pub plan_json: String,
    live: RwLock<LiveView>,
    gpus: RwLock<GpusResponse>,
    cluster: RwLock<ClusterResponse>,
    cluster_calls: std::sync::OnceLock<Arc<CallStats>>,
    legacy: std::sync::OnceLock<(Arc<LegacyStats>, Arc<LegacyBook>)>,
    anomalies: RwLock<Vec<AnomalySeen>>,
}

impl DaemonView {
    /// A view with nothing live yet.
    pub fn new(parts: ViewParts) -> Self {
        let cluster = ClusterResponse {
            cluster: None,
            host: parts.host.clone(),
            hosts: Vec::new(),
            placements: Vec::new(),
            agents: Vec::new(),
        };
        Self {
            host: parts.host,
            health: parts.health,
            perf: parts.perf,
            control: parts.control,
            routes: parts.routes,
            executor_cpus: parts.executor_cpus,
            agents: parts.agents,
            plan_json: parts.plan_json,
            live: RwLock::new(LiveView::default()),
            gpus: RwLock::new(GpusResponse::default()),
            cluster: RwLock::new(cluster),
            cluster_calls: std::sync::OnceLock::new(),
            legacy: std::sync::OnceLock::new(),
            anomalies: RwLock::new(Vec::new()),
        }
    }

    /// The last live view.
    pub fn live(&self) -> LiveView {
        load(&self.live)
    }

    /// Replaces the live view.
    pub fn set_live(&self, live: LiveView) {
        store(&self.live, live);
    }

    /// `GET /v1/gpus` as the core loop last published it.
    pub fn gpus(&self) -> GpusResponse {
        load(&self.gpus)
    }

    /// Publishes `GET /v1/gpus`.
    pub fn set_gpus(&self, gpus: GpusResponse) {
        store(&self.gpus, gpus);
    }

    /// `GET /v1/cluster` as the core loop last published it.
    pub fn cluster(&self) -> ClusterResponse {
        load(&self.cluster)
    }

    /// Publishes `GET /v1/cluster`.
    pub fn set_cluster(&self, cluster: ClusterResponse) {
        store(&self.cluster, cluster);
    }

    /// The cluster link's call counters, once the link carries calls.
    pub fn cluster_calls(&self) -> Option<&Arc<CallStats>> {
        self.cluster_calls.get()
    }

    /// Hands the view the call plane's counters (once, at start).
    pub fn set_cluster_calls(&self, stats: Arc<CallStats>) {
        let _ = self.cluster_calls.set(stats);
    }

    /// The legacy gateway's counters and the seed's discovery data, once
    /// the gateway runs.
    pub fn legacy(&self) -> Option<&(Arc<LegacyStats>, Arc<LegacyBook>)> {
        self.legacy.get()
    }

    /// Hands the view the gateway's counters and the book (once, at
    /// start).
    pub fn set_legacy(&self, stats: Arc<LegacyStats>, book: Arc<LegacyBook>) {
        let _ = self.legacy.set((stats, book));
    }

    /// The seed agents on the legacy edge, for `GET /v1/agents`: the
    /// `zmq` agents called from here, then those that registered.
    pub fn legacy_agents(&self) -> (Vec<LegacyAgent>, Vec<PortTotals>) {
        let Some((stats, book)) = self.legacy.get() else {
            return (Vec::new(), Vec::new());
        };
        let totals = stats.totals();
        let zmq = totals.targets.into_iter().map(|t| LegacyAgent {
            name: t.agent,
            kind: "zmq".to_owned(),
            endpoint: t.endpoint,
            registry: None,
            calls: t.calls,
            errors: t.errors,
        });
        let registered = book.registered().into_iter().map(|r| LegacyAgent {
            name: r.name,
            kind: "legacy".to_owned(),
            endpoint: r.endpoint,
            registry: Some(r.registry),
            calls: 0,
            errors: 0,
        });
        (zmq.chain(registered).collect(), totals.ports)
    }

    /// The anomalies the core loop's twin has seen, for the run report.
    pub fn anomalies(&self) -> Vec<AnomalySeen> {
        load(&self.anomalies)
    }

    /// Publishes the anomalies seen.
    pub fn set_anomalies(&self, seen: Vec<AnomalySeen>) {
        store(&self.anomalies, seen);
    }
}

// A writer that panicked mid-store left either the old or the new value
// (stores are single assignments), so a poisoned lock is still usable.
fn load<T: Clone>(lock: &RwLock<T>) -> T {
    lock.read()
        .map(|v| v.clone())
        .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
}

fn store<T>(lock: &RwLock<T>, value: T) {
    match lock.write() {
        Ok(mut slot) => *slot = value,
        Err(poisoned) => *poisoned.into_inner() = value,
    }
}

/// The fixed parts of a [`DaemonView`].
#[derive(Debug)]
pub struct ViewParts {
    /// This host's name.
    pub host: String,
    /// Health reasons.
    pub health: Arc<Health>,
    /// perf counters.
    pub perf: Arc<PerfSet>,
    /// The executors' control block.
    pub control: Arc<Control>,
    /// Agent names.
    pub routes: Arc<Routes>,
    /// Each executor's CPU.
    pub executor_cpus: Vec<u32>,
    /// Agents' fixed facts.
    pub agents: Vec<AgentFacts>,
    /// The plan as JSON.
    pub plan_json: String,
}
