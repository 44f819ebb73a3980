//! Raw serde form of an agent manifest (`agents/*.toml`, schema 1).
//!
//! ```toml
//! schema = 1
//!
//! [[agent]]
//! name = "STTService"            # as in the seed; unique per host
//! host = "mainpc"
//! role = "speech-to-text service"
//! ports = [5800]                 # the seed's legacy ports
//! kind = "synthetic"             # native | synthetic | process | external | zmq
//! legacy_rep = 5800              # the gateway binds the seed's REP port for it
//! legacy_pub = 6550              # and its PUB port (topics it publishes)
//! endpoint = "tcp://10.0.0.2:7140"   # kind = "zmq" only: the legacy agent's REP socket
//! class = "P"                    # P | E | any; or cpu = 3 for an exact CPU
//! priority = "high"              # critical | high | normal | low
//! weight = 3.0                   # relative CPU load, for spreading
//! calls = ["ModelManagerSuite"]  # REQ/REP client edges; "Name@host" to qualify
//! publishes = []                 # PUB/SUB topics
//! subscribes = []
//! models = [{ name = "whisper-large-v3", vram_mib = 3100, estimate = true }]
//! service = { median_us = 400, p99_us = 2000 }   # synthetic service time
//! concurrency = 2                # requests served at once
//! calls_every = 25               # event-driven: call once per 25 events
//! stream_hz = 50                 # a stream source: the load generator sends it frames
//! faults = { fail_every = 0, stall_every = 0, stall_ms = 0 }
//! # kind = "process" only (see `config::process`); `user`, `group` also
//! # for kind = "external" (who may attach):
//! command = ["../target/release/examples/echo", "--quiet"]
//! env = { LOG_LEVEL = "info" }
//! credentials = { api_key = "/etc/pinwheel/creds/api_key" }
//! user = "nobody"
//! group = "nogroup"
//! allow_root = false
//! cwd = "/"
//! restart = "on-failure"         # on-failure | always | never
//! max_restarts = 5
//! restart_window_s = 60
//! stop_timeout_ms = 3000
//! memory_max_mib = 512
//! wait = "park"                  # spin | park | adaptive (default: its CPU class's wait)
//! replicas = 4                   # instances STTService#0..#3; callers call STTService
//! balance = "p2c_ewma"           # p2c_ewma | least_outstanding | round_robin | weighted | consistent_hash
//! weights = [3, 1, 1, 1]         # balance = "weighted" only: one per replica
//! ```
//!
//! `config::agents` validates these into `AgentSpec`s.

use std::collections::BTreeMap;

use pinwheel_ipc::ring::WaitStrategy;
use serde::Deserialize;
use toml::Spanned;

/// A whole manifest.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentsFile {
    /// Schema version; must be 1.
    pub schema: Spanned<i64>,
    /// The agents.
    #[serde(default)]
    pub agent: Vec<Spanned<AgentEntry>>,
}

/// One `[[agent]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentEntry {
    /// Name, as in the seed.
    pub name: Spanned<String>,
    /// Host it belongs to.
    pub host: Spanned<String>,
    /// What it does, in words.
    pub role: String,
    /// Legacy ports of the seed system.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// How it runs.
    pub kind: Spanned<KindName>,
    /// The legacy gateway's ZeroMQ REP (ROUTER) port for this agent.
    pub legacy_rep: Option<Spanned<u16>>,
    /// The legacy gateway's ZeroMQ PUB port for this agent's topics; for
    /// kind `zmq`, the agent's own PUB port on its endpoint's host.
    pub legacy_pub: Option<Spanned<u16>>,
    /// For `kind = "zmq"`: where the legacy agent's REP socket listens.
    pub endpoint: Option<Spanned<String>>,
    /// For `kind = "native"`: which native implementation.
    pub native: Option<Spanned<NativeName>>,
    /// CPU class to place it on.
    pub class: Option<Spanned<ClassWish>>,
    /// Exact CPU to place it on.
    pub cpu: Option<Spanned<u32>>,
    /// Message priority of its traffic.
    pub priority: Option<Spanned<Priority>>,
    /// Relative CPU load.
    pub weight: Option<Spanned<f64>>,
    /// Agents it sends requests to.
    #[serde(default)]
    pub calls: Vec<Spanned<String>>,
    /// Topics it publishes.
    #[serde(default)]
    pub publishes: Vec<Spanned<String>>,
    /// Topics it subscribes to.
    #[serde(default)]
    pub subscribes: Vec<Spanned<String>>,
    /// GPU models it needs.
    #[serde(default)]
    pub models: Vec<Spanned<ModelEntry>>,
    /// Synthetic service time per request.
    pub service: Option<Spanned<ServiceEntry>>,
    /// Requests served at once (workers).
    pub concurrency: Option<Spanned<u32>>,
    /// For agents driven by events: make `calls` once every N events.
    pub calls_every: Option<Spanned<u32>>,
    /// A stream source (audio capture): frames a second the load
    /// generator sends it.
    pub stream_hz: Option<Spanned<u32>>,
    /// Fault injection, for tests and drills.
    pub faults: Option<Spanned<FaultEntry>>,
    /// Process agents: the program and its arguments.
    pub command: Option<Spanned<Vec<String>>>,
    /// Process agents: environment variables (never secrets).
    pub env: Option<Spanned<BTreeMap<String, String>>>,
    /// Process agents: credential files handed over as files.
    pub credentials: Option<Spanned<BTreeMap<String, String>>>,
    /// Process and external agents: the account it runs as.
    pub user: Option<Spanned<String>>,
    /// Process and external agents: the group it runs as.
    pub group: Option<Spanned<String>>,
    /// Process agents: whether it may run as root.
    pub allow_root: Option<Spanned<bool>>,
    /// Process agents: its working directory.
    pub cwd: Option<Spanned<String>>,
    /// Process agents: when to restart it.
    pub restart: Option<Spanned<RestartMode>>,
    /// Process agents: restarts allowed within `restart_window_s`.
    pub max_restarts: Option<Spanned<u32>>,
    /// Process agents: the restart intensity's window, seconds.
    pub restart_window_s: Option<Spanned<u32>>,
    /// Process agents: SIGTERM to SIGKILL, milliseconds.
    pub stop_timeout_ms: Option<Spanned<u32>>,
    /// Process agents: memory limit (cgroup v2 `memory.max`), MiB.
    pub memory_max_mib: Option<Spanned<u64>>,
    /// Process agents: how the process waits for its requests (default:
    /// the `wait` of its CPU's class).
    pub wait: Option<Spanned<WaitStrategy>>,
    /// Instances of the agent (default 1).
    pub replicas: Option<Spanned<u32>>,
    /// How callers spread their calls over the replicas.
    pub balance: Option<Spanned<Balance>>,
    /// For `balance = "weighted"`: each replica's share.
    pub weights: Option<Spanned<Vec<u32>>>,
}

/// `restart`: when a process agent that ended is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartMode {
    /// After a failure: a non-zero exit, a signal, a broken protocol or a
    /// missed deadline (the default).
    OnFailure,
    /// After any exit.
    Always,
    /// Never: an ended agent stays down.
    Never,
}

/// `balance`: how a call to a replicated agent picks its replica.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Power of two choices over a peak-EWMA of latency times outstanding
    /// calls (Finagle's and Linkerd's default).
    #[default]
    P2cEwma,
    /// The replica with the fewest calls outstanding.
    LeastOutstanding,
    /// Each replica in turn.
    RoundRobin,
    /// In proportion to `weights` (smooth weighted round robin).
    Weighted,
    /// By a key the caller gives, on a hash ring with bounded loads, so a
    /// session sticks to its replica.
    ConsistentHash,
}

impl Balance {
    /// The name used in files.
    pub fn as_str(self) -> &'static str {
        match self {
            Balance::P2cEwma => "p2c_ewma",
            Balance::LeastOutstanding => "least_outstanding",
            Balance::RoundRobin => "round_robin",
            Balance::Weighted => "weighted",
            Balance::ConsistentHash => "consistent_hash",
        }
    }
}

/// `service = { median_us = .., p99_us = .. }`: a log-normal service time.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceEntry {
    /// Median, microseconds.
    pub median_us: u64,
    /// 99th percentile, microseconds.
    pub p99_us: u64,
}

/// `faults = { fail_every = .., stall_every = .., stall_ms = .. }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultEntry {
    /// Every Nth request fails (0: never).
    #[serde(default)]
    pub fail_every: u32,
    /// Every Nth request stalls for `stall_ms` (0: never).
    #[serde(default)]
    pub stall_every: u32,
    /// How long a stall lasts, milliseconds.
    #[serde(default)]
    pub stall_ms: u64,
}

/// `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KindName {
    /// Rust code inside the daemon.
    Native,
    /// Simulated by the daemon from the manifest.
    Synthetic,
    /// A process the daemon starts, supervises and connects by rings.
    Process,
    /// A process started by something else that attaches through the
    /// daemon's attach socket.
    External,
    /// An unchanged seed agent on ZeroMQ REQ/REP, reached through the
    /// legacy gateway.
    Zmq,
}

/// `native`: the native agent implementations pinwheel ships.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NativeName {
    /// Registration, discovery and health of agents (the seed's
    /// ServiceRegistry and SystemDigitalTwin).
    Registry,
    /// Request coordination: priority queue, circuit breakers, retries,
    /// bulkheads (the seed's RequestCoordinator).
    Coordinator,
}

/// `class`: where an agent wants to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
pub enum ClassWish {
    /// Performance cores, else uniform, else efficiency cores.
    P,
    /// Efficiency cores, else uniform, else performance cores.
    E,
    /// Any data-plane CPU.
    #[serde(rename = "any")]
    Any,
}

/// `priority`: how urgent an agent's traffic is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Served before anything else (audio capture, interrupts).
    Critical,
    /// Interactive (speech, coordination).
    High,
    /// The default.
    Normal,
    /// Background (learning, batch).
    Low,
}

impl Priority {
    /// The name used in files.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }
}

/// One entry of `models`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// Model name (`whisper-large-v3`).
    pub name: String,
    /// VRAM it needs when resident, MiB.
    pub vram_mib: u64,
    /// Whether `vram_mib` is an estimate rather than a measurement.
    #[serde(default)]
    pub estimate: bool,
}
