//! The cross-host GPU scheduler: where each model and GPU job runs, across
//! every host of the cluster. A pure state machine in the core loop, beside
//! the VRAM optimizer: reports, store entries, requests and the time go in;
//! decisions (writes to the placement store among them) and this host's
//! report come out. No I/O, no clock, no randomness, so the simulation in
//! `tests/gpu_sched_sim.rs` drives many of them in virtual time.
//!
//! ```text
//!   cluster link ──HostReport──> observe()          place(), place_job()
//!   KV watch ──(slot, revision, Ownership)──> saw()      │
//!   core loop tick ───now_ms──> tick() ──Decision──> Write ──> KV (CAS) ──> written()
//!                                   │              └──> Load, Yield ──> VRAM optimizer
//!   cluster link <──local_report()──┘
//! ```
//!
//! # Protocol: ownership in a compare-and-set store
//!
//! Placements and their owners live in a store with compare-and-set: a
//! JetStream KV bucket in a cluster (`pinwheel-<cluster>-placements`,
//! replicated by JetStream), a [`MemoryKv`] on a single host. One entry per
//! slot (model replica) holds its [`Ownership`]: the owner, its GPU,
//! pinned, active, loaded. Every host follows every entry (a watch) and
//! changes one only by a write on the revision it saw ([`Write::Update`],
//! [`Write::Delete`]) or, for a first placement, a [`Write::Create`] that
//! succeeds only if the slot has no entry. So two owners of one slot are
//! impossible by construction: of two hosts that decide on the same
//! revision, the store takes the first write and refuses the second.
//!
//! * **Placement.** The host where the model is resident first; else the
//!   best GPU by free VRAM, binpack or spread per model, weighted by the
//!   link latency from the deciding host, replicas on distinct hosts
//!   (`fit.rs`). The deciding host creates the entry naming the chosen
//!   host; that host loads it once a write of its own (`loaded: true`)
//!   succeeds, never before.
//! * **Host loss.** A peer silent for [`SchedConfig::missed_heartbeats`]
//!   heartbeats is lost. Every live host that sees an entry owned by a
//!   lost host places it again (pinned or active) or deletes it (neither);
//!   whichever write lands first wins, the rest are refused. Pinned
//!   entries stay in the store until unpinned, so a host that starts after
//!   every holder of a pinned slot died still finds and places it.
//! * **Partitions.** A host cut off from the store changes nothing (it
//!   keeps what it has loaded and reports degraded); the side that reaches
//!   the store places the other side's slots again. On heal, a host that
//!   sees the store name another owner of a slot it holds unloads it.
//! * **Single host.** With no cluster configured the scheduler has no
//!   peers and places everything locally ([`GpuScheduler::single_host`]).
//!
//! * **Bounds.** Reports and entries come from others, so the peers kept
//!   ([`MAX_PEERS`]), the slots held ([`MAX_SLOTS`]) and every VRAM size
//!   ([`MAX_VRAM_MIB`]) are bounded, and VRAM sums saturate instead of
//!   wrapping.
//!
//! What it does not do: talk to the store or load anything (the daemon
//! carries out [`Decision::Write`] through the cluster link, and
//! [`Decision::Load`] and [`Decision::Yield`] through the VRAM optimizer),
//! or measure latency (the cluster link does).

mod asks;
mod fit;
mod kv;
mod reconcile;
mod requests;
mod room;
mod scheduler;
mod status;
#[cfg(test)]
mod tests;
mod types;
mod view;

pub use crate::config::limits::MAX_VRAM_MIB;
pub use asks::{ASK_PATIENCE_MS, ASK_TRIES};
pub use kv::{Change, MemoryKv};
pub use reconcile::WRITE_TIMEOUT_MS;
pub use scheduler::{GpuScheduler, MAX_REPLICAS};
pub use view::PRUNE_AFTER_MS;

/// The most peers one host keeps track of. A peer past it is refused (by
/// the cluster link, counted as a bad frame, and here), so hosts that
/// anyone can name cannot grow the maps without bound.
pub const MAX_PEERS: usize = 256;

/// The most slots the table of the placement store holds (deleted ones
/// included); an entry that would take it past this bound is not taken.
pub const MAX_SLOTS: usize = 16_384;
pub use types::{
    Decision, GpuIndex, GpuReport, HostName, HostReport, HostState, HostStatus, JobRequest,
    ModelName, ModelRequest, Ownership, Placement, Policy, Slot, Write, WriteOutcome, WriteRequest,
};

/// Timing and weights of a [`GpuScheduler`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedConfig {
    /// How often hosts report, ms.
    pub heartbeat_ms: u64,
    /// Heartbeats a peer may miss before it is lost.
    pub missed_heartbeats: u32,
    /// How much one ms of link latency costs in a placement, in MiB of
    /// fit (see `fit.rs`).
    pub latency_weight_mib_per_ms: u64,
    /// How long an entry assigned to a host may stay not loaded before
    /// its slot is placed elsewhere, ms.
    pub assignment_timeout_ms: u64,
}

impl Default for SchedConfig {
    /// 250 ms heartbeats, lost after 4 missed (1 s); 1 ms of latency
    /// weighs 1 GiB; assignments time out after 2 s.
    fn default() -> Self {
        SchedConfig {
            heartbeat_ms: 250,
            missed_heartbeats: 4,
            latency_weight_mib_per_ms: 1024,
            assignment_timeout_ms: 2000,
        }
    }
}

impl SchedConfig {
    /// How long a silent peer stays up, ms.
    pub fn lost_after_ms(&self) -> u64 {
        self.heartbeat_ms
            .saturating_mul(u64::from(self.missed_heartbeats))
    }

    fn check(&self) -> Result<(), SchedError> {
        if self.heartbeat_ms == 0 || self.missed_heartbeats == 0 {
            return Err(SchedError::Config {
                heartbeat_ms: self.heartbeat_ms,
                missed_heartbeats: self.missed_heartbeats,
            });
        }
        if self.assignment_timeout_ms < self.heartbeat_ms {
            return Err(SchedError::AssignmentTimeout {
                timeout_ms: self.assignment_timeout_ms,
                heartbeat_ms: self.heartbeat_ms,
            });
        }
        Ok(())
    }
}

/// Errors of the GPU scheduler.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchedError {
    /// Heartbeats every 0 ms, or lost after 0 missed.
    #[error(
        "heartbeat every {heartbeat_ms} ms, lost after {missed_heartbeats} missed: both must be at least 1"
    )]
    Config {
        /// The heartbeat period.
        heartbeat_ms: u64,
        /// Missed heartbeats before loss.
        missed_heartbeats: u32,
    },
    /// Assignments would time out before a host can report taking them up.
    #[error(
        "assignment timeout {timeout_ms} ms is shorter than one heartbeat ({heartbeat_ms} ms); make it several heartbeats"
    )]
    AssignmentTimeout {
        /// The timeout.
        timeout_ms: u64,
        /// The heartbeat period.
        heartbeat_ms: u64,
    },
    /// A single-host scheduler got another host's report.
    #[error(
        "host {host} reported, but no cluster is configured here; add a [cluster] section to use peers"
    )]
    SingleHost {
        /// The reporting host.
        host: HostName,
    },
    /// Another daemon reports under this host's name.
    #[error("another daemon reports as host {host}, this host's name; give each host its own name")]
    SameName {
        /// The name.
        host: HostName,
    },
    /// A model asked for no VRAM, or for more than any GPU has.
    #[error("model {model} asks for {vram_mib} MiB of VRAM; give its size, 1 to {max} MiB")]
    Vram {
        /// The model.
        model: ModelName,
        /// What it asked for.
        vram_mib: u64,
        /// The most allowed ([`MAX_VRAM_MIB`]).
        max: u64,
    },
    /// A peer would be one more than [`MAX_PEERS`].
    #[error("host {host} would be peer {} of this host; a cluster holds at most {max} peers", max + 1)]
    TooManyPeers {
        /// The new peer.
        host: HostName,
        /// [`MAX_PEERS`].
        max: usize,
    },
    /// An entry would take the table past [`MAX_SLOTS`].
    #[error("slot {slot} would be one more than the {max} slots a host keeps; not taken")]
    TooManySlots {
        /// The new slot.
        slot: Slot,
        /// [`MAX_SLOTS`].
        max: usize,
    },
    /// Too few or too many replicas.
    #[error("model {model} asks for {replicas} replicas; ask for 1 to {max}")]
    Replicas {
        /// The model.
        model: ModelName,
        /// What it asked for.
        replicas: u8,
        /// The most allowed.
        max: u8,
    },
    /// A request named a host that is not up.
    #[error("host {host} is not up in this cluster; leave out the host or name one that is up")]
    UnknownHost {
        /// The host.
        host: HostName,
    },
    /// No GPU has room.
    #[error(
        "no GPU has {vram_mib} MiB free for model {model}; the most free is {largest_free_mib} MiB"
    )]
    NoRoom {
        /// The model.
        model: ModelName,
        /// What it needs.
        vram_mib: u64,
        /// The most any candidate GPU has.
        largest_free_mib: u64,
    },
}
