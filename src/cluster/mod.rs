//! The cluster link: how pinwheel daemons on several hosts see each other,
//! own GPU placements and call each other's agents, over NATS (async-nats
//! on the control runtime; the data plane never waits on it).
//!
//! ```text
//!  core loop ──watch<HostState>──> ClusterLink ──every heartbeat──> pinwheel.<c>.host.<h>.state
//!  core loop <──mpsc<ClusterEvent>── ClusterLink <──subscribe── pinwheel.<c>.host.*.state
//!            (peers, errors, agents,              <──subscribe── pinwheel.<c>.errors.*
//!             placements, write outcomes)         <──watch──     KV pinwheel-<c>-registry
//!  core loop ──mpsc<WriteRequest>──> ClusterLink ──CAS──> KV pinwheel-<c>-placements ──watch──>
//!  executors ══uplink rings══> call plane ──request──> pinwheel.<c>.call.<to>.<h>.<agent>
//!  executors <══downlink rings══ call plane <──reply── pinwheel.<c>.inbox.<h>.*
//! ```
//!
//! * **Identity.** Each host connects as itself: an nkey seed or a
//!   user/password file (read through the root daemon's secret check),
//!   over TLS for a `tls://` URL. The NATS server's permissions (what
//!   `pinwheel cluster init` writes, `init.rs`) let host H publish only
//!   subjects that speak as H: its state, its error reports, calls from
//!   it, its registry keys, replies to requests it received. Replies come
//!   to H's own inbox prefix, which only H may subscribe to.
//! * **Host state.** Each heartbeat (250 ms by default) the link publishes
//!   the latest [`HostState`] the core loop gave it, stamped with a
//!   sequence number, the time, and acknowledgements of peers' heartbeats;
//!   peers echo those back, which gives each link the round trip to each
//!   peer without synchronized clocks ([`ClusterEvent::PeerState`] carries
//!   half of it as the link latency). A peer silent for
//!   `missed_heartbeats` heartbeats is [`ClusterEvent::PeerLost`], and
//!   forgotten a while later. A frame from the future (a forged
//!   incarnation or sequence) is refused, not stored (`proto::check_time`).
//! * **Untrusted bytes.** Every frame is versioned and checked (`proto.rs`);
//!   a bad one is counted in [`LinkStats::bad_frames`] and dropped, with a
//!   rate-limited warning, never a panic.
//! * **Error bus.** [`ClusterLink::report_error`] publishes a wire
//!   `ErrorReport` envelope on `pinwheel.<cluster>.errors.<host>`, the
//!   seed's central error bus; peers' reports arrive as
//!   [`ClusterEvent::Error`].
//! * **Registry.** Agents (name -> host, ports, health) live in a JetStream
//!   KV bucket, so any host discovers any agent, and every link keeps a
//!   full copy fed by a watch. A link writes its own records again after
//!   every reconnect, so a NATS server that restarts empty is filled again.
//! * **Placements.** Which host owns which model replica lives in a second
//!   bucket (`placements.rs`); the link carries the scheduler's
//!   compare-and-set writes and delivers every entry and every outcome.
//! * **Calls.** A call to an agent on another host travels as a NATS
//!   request carrying the same checked wire envelope (`calls/`).
//! * **Degraded, not dead.** async-nats reconnects on its own; the link
//!   turns its events into [`ClusterEvent::Connection`], skips heartbeats
//!   while disconnected, and [`ClusterLink::is_connected`] tells the core
//!   loop to report degraded. NATS down at start is the same state.
//!
//! With no `[cluster]` section there is no link at all: the daemon runs the
//! GPU scheduler in single-host mode.
//!
//! What it does not do: decide placements (`gpu::sched`), or reach the
//! core loop other than through its channels.

mod auth;
mod bridge;
mod bucket;
mod calls;
mod init;
mod link;
mod peers;
mod placements;
mod proto;
mod registry;

pub use auth::Credentials;
pub use bridge::{
    key_of, ownership_from_record, record_from_ownership, report_from_state, slot_of,
    state_from_report,
};
pub use calls::{CallPlane, MAX_REMOTE_IN_FLIGHT};
pub use init::{InitFiles, init_files};
pub use link::{ClusterLink, LinkIo, LinkStats};
pub use proto::{
    Ack, AgentHealth, AgentRecord, CLUSTER_VERSION, ErrorEvent, FrameProblem, GpuState, Health,
    HostState, MAX_ENTRIES, MAX_FRAME_BYTES, MAX_SKEW_MS, OwnershipRecord, QueueDepth, check_time,
    decode_error, decode_ownership, decode_record, decode_state, encode_error, encode_ownership,
    encode_record, encode_state, parse_slot_key, slot_key,
};
pub use registry::MAX_REGISTRY_ENTRIES;

use std::path::PathBuf;

use crate::config::name_problem;
use crate::gpu::sched::{Ownership, Slot, WriteOutcome};
use crate::topology::{ClusterAuth, ClusterSpec};

/// What the link needs to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    cluster: String,
    host: String,
    nats_url: String,
    heartbeat_ms: u64,
    missed_heartbeats: u32,
    event_capacity: usize,
    credentials: Credentials,
    tls_ca: Option<PathBuf>,
    tls_client: Option<(PathBuf, PathBuf)>,
    kv_replicas: u8,
}

impl ClusterConfig {
    /// The link of `host` in the cluster `spec` describes, with its
    /// heartbeat settings, its identity (the secret files are read and
    /// checked now) and TLS files.
    pub fn from_spec(spec: &ClusterSpec, host: &str) -> Result<Self, ClusterError> {
        let config = Self::try_new(
            &spec.name,
            host,
            &spec.nats_url,
            spec.heartbeat_ms,
            spec.missed_heartbeats,
        )?;
        let credentials = match &spec.auth {
            ClusterAuth::None => Credentials::None,
            ClusterAuth::Nkey(path) => Credentials::nkey_file(path)?,
            ClusterAuth::Password(path) => Credentials::password_file(path)?,
        };
        auth::check_tls_files(spec.tls.ca.as_deref(), spec.tls.client.as_ref())?;
        Ok(ClusterConfig {
            credentials,
            tls_ca: spec.tls.ca.clone(),
            tls_client: spec.tls.client.clone(),
            kv_replicas: spec.kv_replicas.max(1),
            ..config
        })
    }

    /// Checks names and timings. Cluster and host names become NATS subject
    /// tokens and a bucket name, so they may not hold `.`. No credentials,
    /// no TLS files, one replica: [`with_credentials`](Self::with_credentials)
    /// and [`with_kv_replicas`](Self::with_kv_replicas) change that.
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
            credentials: Credentials::None,
            tls_ca: None,
            tls_client: None,
            kv_replicas: 1,
        })
    }

    /// The same link with `credentials`.
    pub fn with_credentials(self, credentials: Credentials) -> Self {
        ClusterConfig {
            credentials,
            ..self
        }
    }

    /// The same link with buckets of `replicas` JetStream replicas.
    pub fn with_kv_replicas(self, replicas: u8) -> Self {
        ClusterConfig {
            kv_replicas: replicas.max(1),
            ..self
        }
    }

    /// The same link trusting the CA in `ca` for a `tls://` URL.
    pub fn with_tls_ca(self, ca: PathBuf) -> Self {
        ClusterConfig {
            tls_ca: Some(ca),
            ..self
        }
    }

    /// The cluster's name.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// This host's name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The NATS server URL (or several, comma-separated).
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

    /// How long a silent peer stays up, ms.
    pub fn lost_after_ms(&self) -> u64 {
        self.heartbeat_ms
            .saturating_mul(u64::from(self.missed_heartbeats))
    }

    /// JetStream replicas of the buckets.
    pub fn kv_replicas(&self) -> u8 {
        self.kv_replicas
    }

    /// The subject this host publishes its state on.
    pub fn state_subject(&self) -> String {
        format!("pinwheel.{}.host.{}.state", self.cluster, self.host)
    }

    /// The subject every host's state arrives on.
    pub fn all_states_subject(&self) -> String {
        format!("pinwheel.{}.host.*.state", self.cluster)
    }

    /// The subject this host's error reports go out on.
    pub fn errors_subject(&self) -> String {
        format!("pinwheel.{}.errors.{}", self.cluster, self.host)
    }

    /// The subject every host's error reports arrive on.
    pub fn all_errors_subject(&self) -> String {
        format!("pinwheel.{}.errors.*", self.cluster)
    }

    /// The subject of a call from this host to `agent` on `host`, if the
    /// agent's name can end a subject.
    pub fn call_subject(&self, host: &str, agent: &str) -> Option<String> {
        proto::subject_tail(agent).then(|| {
            format!(
                "pinwheel.{}.call.{host}.{}.{agent}",
                self.cluster, self.host
            )
        })
    }

    /// The subject calls to this host's agents arrive on.
    pub fn incoming_calls_subject(&self) -> String {
        format!("pinwheel.{}.call.{}.>", self.cluster, self.host)
    }

    /// The prefix of this host's reply inboxes; only this host may
    /// subscribe to it.
    pub fn inbox_prefix(&self) -> String {
        format!("pinwheel.{}.inbox.{}", self.cluster, self.host)
    }

    /// The registry's KV bucket.
    pub fn registry_bucket(&self) -> String {
        format!("pinwheel-{}-registry", self.cluster)
    }

    /// The placements' KV bucket.
    pub fn placements_bucket(&self) -> String {
        format!("pinwheel-{}-placements", self.cluster)
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
    /// An entry of the placements bucket, as its watch delivered it.
    Placement {
        /// The slot.
        slot: Slot,
        /// The entry's revision.
        revision: u64,
        /// Its record; `None` for a deletion.
        owner: Option<Ownership>,
    },
    /// Whether the placement events so far hold the whole bucket (true
    /// once a watch has replayed it; false when it must start over).
    PlacementsSynced(bool),
    /// The bucket's answer to one of this host's writes.
    Written {
        /// The slot written.
        slot: Slot,
        /// The write's number (`WriteRequest::id`).
        id: u64,
        /// What the bucket answered.
        outcome: WriteOutcome,
    },
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
    /// A secret or TLS file the link needs could not be used.
    #[error("{}: {reason}", path.display())]
    Secret {
        /// The file.
        path: PathBuf,
        /// What is wrong, and the fix.
        reason: String,
    },
    /// `pinwheel cluster init` was given something it cannot write.
    #[error("cannot write the cluster's NATS files: {reason}")]
    Init {
        /// Why.
        reason: String,
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
        assert_eq!(sut.errors_subject(), "pinwheel.home.errors.mainpc");
        assert_eq!(sut.all_errors_subject(), "pinwheel.home.errors.*");
        assert_eq!(sut.registry_bucket(), "pinwheel-home-registry");
        assert_eq!(sut.placements_bucket(), "pinwheel-home-placements");
        assert_eq!(
            sut.call_subject("pc2", "Memory.Service").as_deref(),
            Some("pinwheel.home.call.pc2.mainpc.Memory.Service")
        );
        assert_eq!(sut.call_subject("pc2", "Trailing."), None);
        assert_eq!(sut.incoming_calls_subject(), "pinwheel.home.call.mainpc.>");
        assert_eq!(sut.inbox_prefix(), "pinwheel.home.inbox.mainpc");
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
