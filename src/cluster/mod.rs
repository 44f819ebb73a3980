//! The cluster link: how pinwheel daemons on several hosts see each other,
//! over NATS (async-nats on the control thread's tokio runtime; the data
//! plane never waits on it).
//!
//! ```text
//!  core loop ──watch<HostState>──> ClusterLink ──publish every heartbeat──> pinwheel.<c>.host.<h>.state
//!  core loop <──mpsc<ClusterEvent>── ClusterLink <──subscribe── pinwheel.<c>.host.*.state
//!            (PeerUp/PeerState/PeerLost,            <──subscribe── pinwheel.<c>.errors
//!             Connection, Error, Agent)             <──watch──     KV pinwheel-<c>-registry
//! ```
//!
//! * **Host state.** Each heartbeat (250 ms by default) the link publishes
//!   the latest [`HostState`] the core loop gave it, stamped with a
//!   sequence number and acknowledgements of peers' heartbeats; peers echo
//!   those back, which gives each link the round trip to each peer without
//!   synchronized clocks ([`ClusterEvent::PeerState`] carries half of it as
//!   the link latency). A peer silent for `missed_heartbeats` heartbeats is
//!   [`ClusterEvent::PeerLost`].
//! * **Untrusted bytes.** Every frame is versioned and checked (`proto.rs`);
//!   a bad one is counted in [`LinkStats::bad_frames`] and dropped, with a
//!   rate-limited warning, never a panic.
//! * **Error bus.** [`ClusterLink::report_error`] publishes a wire
//!   `ErrorReport` envelope on `pinwheel.<cluster>.errors`, the seed's
//!   central error bus; peers' reports arrive as [`ClusterEvent::Error`].
//! * **Registry.** Agents (name -> host, ports, health) live in a JetStream
//!   KV bucket, so any host discovers any agent, and every link keeps a
//!   full copy fed by a watch: no host holds the only copy. A link writes
//!   its own records again after every reconnect, so a NATS server that
//!   restarts empty is filled again.
//! * **Degraded, not dead.** async-nats reconnects on its own; the link
//!   turns its events into [`ClusterEvent::Connection`], skips heartbeats
//!   while disconnected, and [`ClusterLink::is_connected`] tells the core
//!   loop to report degraded. NATS down at start is the same state.
//!
//! With no `[cluster]` section there is no link at all: the daemon runs the
//! GPU scheduler in single-host mode.
//!
//! What it does not do: decide placements (`gpu::sched`), or reach the
//! core loop other than through the two channels.

mod bridge;
mod link;
mod proto;
mod registry;

pub use bridge::{report_from_state, state_from_report};
pub use link::{ClusterLink, LinkStats};
pub use proto::{
    Ack, AgentHealth, AgentRecord, AssignmentState, CLUSTER_VERSION, ErrorEvent, FrameProblem,
    GpuState, Health, HostState, MAX_ENTRIES, MAX_FRAME_BYTES, ModelState, OrphanState, QueueDepth,
    decode_error, decode_record, decode_state, encode_error, encode_record, encode_state,
};
pub use registry::MAX_REGISTRY_ENTRIES;

use crate::config::name_problem;
use crate::topology::ClusterSpec;

/// What the link needs to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    cluster: String,
    host: String,
    nats_url: String,
    heartbeat_ms: u64,
    missed_heartbeats: u32,
    event_capacity: usize,
}

impl ClusterConfig {
    /// The link of `host` in the cluster `spec` describes, with its
    /// heartbeat settings.
    pub fn from_spec(spec: &ClusterSpec, host: &str) -> Result<Self, ClusterError> {
        Self::try_new(
            &spec.name,
            host,
            &spec.nats_url,
            spec.heartbeat_ms,
            spec.missed_heartbeats,
        )
    }

    /// Checks names and timings. Cluster and host names become NATS subject
    /// tokens and a bucket name, so they may not hold `.`.
    pub fn try_new(
        cluster: &str,
        host: &str,
        nats_url: &str,
        heartbeat_ms: u64,
        missed_heartbeats: u32,
    ) -> Result<Self, ClusterError> {
        subject_token("cluster", cluster)?;
        subject_token("host", host)?;
        if !(10..=60_000).contains(&heartbeat_ms) || !(1..=1000).contains(&missed_heartbeats) {
            return Err(ClusterError::Timing {
                heartbeat_ms,
                missed_heartbeats,
            });
        }
        Ok(ClusterConfig {
            cluster: cluster.to_owned(),
            host: host.to_owned(),
            nats_url: nats_url.to_owned(),
            heartbeat_ms,
            missed_heartbeats,
            event_capacity: 1024,
        })
    }

    /// The cluster's name.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// This host's name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The NATS server URL.
    pub fn nats_url(&self) -> &str {
        &self.nats_url
    }

    /// How often the host state goes out, ms.
    pub fn heartbeat_ms(&self) -> u64 {
        self.heartbeat_ms
    }

    /// Heartbeats a peer may miss before it is lost.
    pub fn missed_heartbeats(&self) -> u32 {
        self.missed_heartbeats
    }

    /// The subject this host publishes its state on.
    pub fn state_subject(&self) -> String {
        format!("pinwheel.{}.host.{}.state", self.cluster, self.host)
    }

    /// The subject every host's state arrives on.
    pub fn all_states_subject(&self) -> String {
        format!("pinwheel.{}.host.*.state", self.cluster)
    }

    /// The error bus.
    pub fn errors_subject(&self) -> String {
        format!("pinwheel.{}.errors", self.cluster)
    }

    /// The registry's KV bucket.
    pub fn registry_bucket(&self) -> String {
        format!("pinwheel-{}-registry", self.cluster)
    }
}

fn subject_token(what: &'static str, name: &str) -> Result<(), ClusterError> {
    let problem = name_problem(name).or_else(|| {
        name.contains('.')
            .then_some("may not hold '.', which separates NATS subject tokens")
    });
    match problem {
        None => Ok(()),
        Some(problem) => Err(ClusterError::Name {
            what,
            name: name.to_owned(),
            problem,
        }),
    }
}

/// Something the link tells the core loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterEvent {
    /// The NATS connection came up (first time or again) or went down.
    Connection {
        /// Whether it is up now.
        connected: bool,
    },
    /// A peer's first heartbeat, or its first after it was lost or
    /// restarted.
    PeerUp {
        /// The peer.
        host: String,
    },
    /// A peer's heartbeat.
    PeerState {
        /// What it said.
        state: HostState,
        /// Half the measured round trip to it, µs (0 until measured).
        latency_us: u64,
    },
    /// A peer missed its heartbeats.
    PeerLost {
        /// The peer.
        host: String,
    },
    /// A report on the error bus.
    Error(ErrorEvent),
    /// An agent record was written to the registry (by any host).
    Agent(AgentRecord),
}

/// Errors of the cluster link.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A name that cannot be a subject token.
    #[error("{what} name {name:?} {problem}; rename it in the topology file")]
    Name {
        /// Which name.
        what: &'static str,
        /// The name.
        name: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// Heartbeat settings out of range.
    #[error(
        "heartbeat every {heartbeat_ms} ms, lost after {missed_heartbeats} missed: use 10-60000 ms and 1-1000 heartbeats"
    )]
    Timing {
        /// The heartbeat period.
        heartbeat_ms: u64,
        /// Missed heartbeats before loss.
        missed_heartbeats: u32,
    },
    /// The URL or options were refused before any connection was tried.
    #[error("cannot use NATS at {url}: {reason}")]
    Connect {
        /// The URL.
        url: String,
        /// async-nats's reason.
        reason: String,
    },
    /// A subscription could not be set up.
    #[error("cannot subscribe to {subject}: {reason}")]
    Subscribe {
        /// The subject.
        subject: String,
        /// async-nats's reason.
        reason: String,
    },
    /// A frame could not be built.
    #[error("cannot encode a {what}: {problem}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// Why.
        problem: FrameProblem,
    },
    /// The link's outgoing queue is full (NATS is slow or down for long).
    #[error(
        "the cluster link's queue of {capacity} outgoing messages is full; the message was dropped"
    )]
    Busy {
        /// The queue's capacity.
        capacity: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_and_bucket_follow_the_cluster_and_host_names() {
        let sut = ClusterConfig::try_new("home", "mainpc", "nats://127.0.0.1:4222", 250, 4)
            .expect("valid");

        assert_eq!(sut.state_subject(), "pinwheel.home.host.mainpc.state");
        assert_eq!(sut.all_states_subject(), "pinwheel.home.host.*.state");
        assert_eq!(sut.errors_subject(), "pinwheel.home.errors");
        assert_eq!(sut.registry_bucket(), "pinwheel-home-registry");
    }

    #[test]
    fn a_dotted_host_name_is_refused_because_it_would_split_the_subject() {
        let sut = ClusterConfig::try_new("home", "pc.2", "nats://x:1", 250, 4);

        let Err(ClusterError::Name {
            what: "host",
            problem,
            ..
        }) = sut
        else {
            panic!("expected a name error, got {sut:?}");
        };
        assert!(problem.contains("'.'"), "{problem}");
    }

    #[test]
    fn heartbeat_settings_out_of_range_are_refused() {
        assert!(matches!(
            ClusterConfig::try_new("home", "a", "nats://x:1", 5, 4),
            Err(ClusterError::Timing { .. })
        ));
        assert!(matches!(
            ClusterConfig::try_new("home", "a", "nats://x:1", 250, 0),
            Err(ClusterError::Timing { .. })
        ));
    }
}
