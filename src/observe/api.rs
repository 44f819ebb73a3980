//! The admin API's answers, as types: one serde struct per response,
//! shared by the server ([`super::admin`]), `pinwheel status`, `pinwheel
//! cluster status`, `pinwheel top` and the tests, so a renamed field is a
//! compile error and not a `"?"` on someone's screen.
//!
//! | endpoint | type |
//! | --- | --- |
//! | `GET /health` | [`HealthReport`] |
//! | `GET /v1/agents` | [`AgentsResponse`] |
//! | `GET /v1/gpus` | [`GpusResponse`] |
//! | `GET /v1/cluster` | [`ClusterResponse`] |
//! | `GET /v1/plan` | [`PlanResponse`] (`pinwheel plan --format json`) |
//! | `POST /v1/gpu/place`, `/v1/models/pin`, `/v1/models/unpin` | [`ModelAnswer`] |
//! | `POST /v1/agents/{name}/fault` ([`FaultRequest`]) | [`FaultAnswer`] |
//! | any error (4xx, 5xx) | [`ErrorBody`] |
//!
//! The request bodies of the `POST` endpoints are
//! [`super::admin::Command`]. These are plain data: no locks, no
//! behaviour beyond naming their states.

use serde::{Deserialize, Serialize};

pub use super::anomaly::Signal;

pub use crate::plan::{
    PlacedAgent, PlanDoc as PlanResponse, PlannedRemote, PlannedRing, PlannedRoute,
};
pub use crate::runtime::legacy::PortTotals;

/// `ok`, or `degraded` with reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Nothing is degraded.
    Ok,
    /// At least one reason is raised.
    Degraded,
}

impl HealthStatus {
    /// `ok` or `degraded`.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Ok => "ok",
            HealthStatus::Degraded => "degraded",
        }
    }
}

/// One reason the daemon is degraded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    /// Stable name, e.g. `no_nvml`.
    pub reason: String,
    /// What it means and what to do.
    pub detail: String,
}

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    /// `ok` or `degraded`.
    pub status: HealthStatus,
    /// Why it is degraded, by name.
    pub reasons: Vec<Reason>,
}

/// What an agent is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentState {
    /// Placed, not yet seen handling anything on its CPU.
    Starting,
    /// Running on its executor.
    Up,
    /// Taken out by the supervisor after failing; restarted with backoff.
    Isolated,
    /// An external agent with no process attached.
    Detached,
    /// An external agent whose process is attached.
    Attached,
    /// A process agent whose child is up and linked.
    Running,
    /// A process agent waiting out its restart backoff.
    Backoff,
    /// A process agent restarted too often: down for good.
    Failed,
    /// A process agent that ended and whose restart mode keeps it down.
    Exited,
    /// A process agent the daemon is stopping.
    Stopping,
}

impl AgentState {
    /// The state's name.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Starting => "starting",
            AgentState::Up => "up",
            AgentState::Isolated => "isolated",
            AgentState::Detached => "detached",
            AgentState::Attached => "attached",
            AgentState::Running => "running",
            AgentState::Backoff => "backoff",
            AgentState::Failed => "failed",
            AgentState::Exited => "exited",
            AgentState::Stopping => "stopping",
        }
    }
}

/// An agent now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// Its name.
    pub name: String,
    /// The CPU the plan gave it.
    pub cpu: u32,
    /// The CPU its worker found itself on.
    pub observed_cpu: Option<u32>,
    /// What it is doing.
    pub state: AgentState,
    /// Messages handled a second over the last period.
    pub msgs_per_s: f64,
    /// Median of its handler time, ns (0 before its first message).
    pub p50_ns: u64,
    /// p99 of its handler time, ns (0 before its first message).
    pub p99_ns: u64,
    /// Messages handled.
    pub handled: u64,
    /// Handler failures and overruns.
    pub failures: u64,
    /// Restarts after isolation (a process agent: restarts of its
    /// process).
    pub restarts: u64,
    /// A process or external agent's process now.
    pub pid: Option<u32>,
    /// A process or external agent's manifest user.
    pub user: Option<String>,
    /// How a process agent's last incarnation ended.
    pub last_exit: Option<String>,
    /// Its signals the anomaly detector holds anomalous now.
    #[serde(default)]
    pub anomalies: Vec<Signal>,
    /// The fault drill it is under (`slow=10x`, ...), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
}

/// An anomaly the detector raised, for the run report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnomalySeen {
    /// The agent or replica (`Name#1`).
    pub agent: String,
    /// Which signal.
    pub signal: Signal,
    /// When it was raised, seconds since the mesh came up.
    pub raised_s: f64,
    /// When it cleared; `None` if it lasted to the end.
    pub cleared_s: Option<f64>,
    /// Its level when raised (ns for latency, a share for errors).
    pub level: f64,
    /// The baseline it was judged against.
    pub baseline: f64,
}

/// `POST /v1/agents/{name}/fault`'s body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRequest {
    /// The drill as `pinwheel run --fault` writes it (`slow=10x`,
    /// `error=0.2`, `stall`, joined by commas), or `none` to end one.
    pub fault: String,
    /// End it after this many seconds; absent: until changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_s: Option<f64>,
}

/// `POST /v1/agents/{name}/fault`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultAnswer {
    /// The agent or replica.
    pub agent: String,
    /// The drill now in force (`none` when ended).
    pub fault: String,
    /// Seconds until it ends by itself, if it does.
    pub for_s: Option<f64>,
}

/// An executor (one planned CPU) now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutorStatus {
    /// Its CPU.
    pub cpu: u32,
    /// Share of the last period it was busy (0 to 1).
    pub busy: f64,
    /// Stalls the watchdog counted.
    pub stalls: u64,
    /// Migrations of its pinned thread (perf), if counted.
    pub migrations: Option<u64>,
    /// Slots waiting in its incoming rings after the pump's last pass.
    pub ring_backlog_slots: u64,
    /// Times its pump parked on the doorbell.
    pub parks: u64,
}

/// `GET /v1/agents`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentsResponse {
    /// This host's name.
    pub host: String,
    /// Agents, in plan order.
    pub agents: Vec<AgentStatus>,
    /// Executors, by index.
    pub executors: Vec<ExecutorStatus>,
    /// Seed agents on the legacy ZeroMQ edge: the `zmq` agents this
    /// host's agents call, then those that registered themselves.
    #[serde(default)]
    pub legacy: Vec<LegacyAgent>,
    /// The legacy gateway's ports, with their traffic.
    #[serde(default)]
    pub legacy_ports: Vec<PortTotals>,
}

/// A seed agent on the legacy ZeroMQ edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegacyAgent {
    /// Its name.
    pub name: String,
    /// `zmq` (a manifest's, called through the gateway) or `legacy`
    /// (registered itself with a native registry).
    pub kind: String,
    /// Its REP socket, `tcp://host:port`.
    pub endpoint: String,
    /// The registry it registered with (`legacy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    /// Calls the gateway sent it (`zmq`).
    pub calls: u64,
    /// Of those, answered with an error.
    pub errors: u64,
}

/// A model resident on a GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResidentModel {
    /// Its name.
    pub model: String,
    /// VRAM it holds, MiB.
    pub vram_mib: u64,
    /// Never evicted.
    pub pinned: bool,
}

/// One GPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuStatus {
    /// Its index.
    pub gpu: u32,
    /// Its product name.
    pub name: String,
    /// Its UUID.
    pub uuid: String,
    /// Simulated from the topology (no NVIDIA driver).
    pub simulated: bool,
    /// VRAM, MiB.
    pub total_mib: u64,
    /// Used at the last sample, MiB.
    pub used_mib: u64,
    /// Free at the last sample, MiB.
    pub free_mib: u64,
    /// Utilisation at the last sample, if the GPU reports it.
    pub util_pct: Option<u32>,
    /// What the optimizer has placed on it, MiB.
    pub planned_mib: u64,
    /// The most the optimizer places on it (the `[vram]` budget), MiB.
    pub budget_mib: u64,
    /// Models resident on it.
    pub resident: Vec<ResidentModel>,
}

/// The optimizer's decisions since start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VramCounts {
    /// Loads a use waited for.
    pub loads: u64,
    /// Loads history predicted.
    pub preloads: u64,
    /// Evictions, all reasons.
    pub evictions: u64,
    /// Uses whose model was resident.
    pub hits: u64,
    /// Uses that needed a load.
    pub misses: u64,
    /// Uses that waited.
    pub queued: u64,
    /// Uses and pins refused.
    pub denied: u64,
    /// Agents' uses that asked and were admitted after a wait.
    #[serde(default)]
    pub waits: u64,
    /// p99 of those waits, ns.
    #[serde(default)]
    pub wait_p99_ns: u64,
}

/// One of the optimizer's recent decisions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VramDecision {
    /// When, ms since the daemon started.
    pub at_ms: u64,
    /// `load`, `preload`, `evict`, `queue` or `deny`.
    pub kind: String,
    /// The model.
    pub model: String,
    /// The GPU, where the decision names one.
    pub gpu: Option<u32>,
    /// Why (evictions, waits and denials).
    pub reason: Option<String>,
}

/// `GET /v1/gpus`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct GpusResponse {
    /// Each GPU.
    pub gpus: Vec<GpuStatus>,
    /// The optimizer's counts.
    pub vram: VramCounts,
    /// Its most recent decisions, oldest first (admissions of resident
    /// models left out; at most [`RECENT_DECISIONS`]).
    pub decisions: Vec<VramDecision>,
}

/// How many decisions `/v1/gpus` keeps.
pub const RECENT_DECISIONS: usize = 32;

/// A host of the cluster, as one daemon sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    /// Heard within its heartbeats, nothing degraded.
    Up,
    /// Heard, but degraded (or partitioned).
    Degraded,
    /// Silent past its missed heartbeats.
    Lost,
}

impl HostState {
    /// The state's name.
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Up => "up",
            HostState::Degraded => "degraded",
            HostState::Lost => "lost",
        }
    }
}

/// One host in `/v1/cluster`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterHost {
    /// Its name.
    pub host: String,
    /// Its state.
    pub state: HostState,
    /// How long ago its last heartbeat arrived, ms (0 for this host).
    pub last_seen_ms: u64,
    /// The link's latency to it, µs (0 for this host).
    pub latency_us: u64,
}

/// A model placed somewhere in the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementView {
    /// The model.
    pub model: String,
    /// The host holding it.
    pub host: String,
    /// The GPU there.
    pub gpu: u32,
    /// VRAM, MiB.
    pub vram_mib: u64,
    /// Placed again on a survivor if its host is lost.
    pub pinned: bool,
    /// Which replica.
    pub replica: u32,
    /// Loaded (else assigned and loading).
    pub loaded: bool,
    /// The placement store's revision of its entry (0 while the write
    /// that places it is on its way).
    pub revision: u64,
    /// The VRAM optimizer's word for it, in a place's answer
    /// (`resident`, `waiting`, `assigned`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

/// An agent in the cluster registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryAgent {
    /// Its name.
    pub agent: String,
    /// Its host.
    pub host: String,
    /// Its legacy ports.
    pub ports: Vec<u16>,
    /// `starting`, `healthy`, `unhealthy`, `stopped`, or `lost` (its
    /// host is).
    pub health: String,
}

/// `GET /v1/cluster`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterResponse {
    /// The cluster's name; `None` on a single host.
    pub cluster: Option<String>,
    /// This host.
    pub host: String,
    /// Every host, this one first.
    pub hosts: Vec<ClusterHost>,
    /// Every placement.
    pub placements: Vec<PlacementView>,
    /// The cluster registry (empty on a single host).
    pub agents: Vec<RegistryAgent>,
}

/// The answer to a place, pin or unpin: the model's state here (for a
/// place, the first replica's) and every replica the cluster holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelAnswer {
    /// The model.
    pub model: String,
    /// The host of the first replica (a place's answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The GPU it is on, if resident.
    pub gpu: Option<u32>,
    /// Its VRAM, MiB (a place's answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vram_mib: Option<u64>,
    /// Whether it is pinned.
    pub pinned: bool,
    /// `resident`, `waiting` or `assigned`.
    pub state: String,
    /// Every replica, as `/v1/cluster` lists them.
    pub placements: Vec<PlacementView>,
}

/// Any error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, and what to do.
    pub error: String,
}

/// One agent process as views, metrics and reports show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessStatus {
    /// The agent.
    pub agent: String,
    /// `process` or `external`.
    pub kind: String,
    /// Its process now, or its last one.
    pub pid: Option<u32>,
    /// Its planned CPU.
    pub cpu: u32,
    /// The CPU its process was found pinned to when it attached
    /// (`Cpus_allowed_list` in `/proc/PID/status`).
    pub cpu_seen: Option<u32>,
    /// The manifest's user.
    pub user: Option<String>,
    /// The uid it runs (or last ran) as.
    pub uid: Option<u32>,
    /// `starting`, `running`, `backoff`, `failed`, `exited`, `stopping`
    /// (process); `attached`, `detached` (external).
    pub state: AgentState,
    /// Restarts so far.
    pub restarts: u64,
    /// How its last incarnation ended.
    pub last_exit: Option<String>,
    /// Exits by reason label.
    pub exits: Vec<(String, u64)>,
}
