//! The cross-host GPU scheduler: where each model and GPU job runs, across
//! every host of the cluster. A pure state machine in the core loop, beside
//! the VRAM optimizer: reports, requests and the time go in; decisions and
//! this host's report come out. No I/O, no clock, no randomness, so the
//! simulation in `tests/gpu_sched_sim.rs` drives many of them in virtual
//! time.
//!
//! ```text
//!   cluster link ──HostReport──> observe()        place(), place_job()
//!                                   │                  │
//!   core loop tick ───now_ms──> tick() ──Decision──> VRAM optimizer
//!                                   │               (Load, Yield)
//!   cluster link <──local_report()──┘
//! ```
//!
//! # Protocol: no consensus, state gossip plus epochs
//!
//! Every host runs its own scheduler; none is the leader of record. Each
//! publishes a [`HostReport`] every heartbeat: its GPUs, the slots (model
//! replicas) it holds, each with an [`Epoch`], and the placements it
//! decided for other hosts (*assignments*). A host takes up an assignment
//! addressed to it by loading the slot and claiming it in its next report.
//!
//! * **Placement.** The host where the model is resident first; else the
//!   best GPU by free VRAM, binpack or spread per model, weighted by the
//!   link latency from the deciding host, replicas on distinct hosts
//!   (`fit.rs`).
//! * **Host loss.** A peer silent for [`SchedConfig::missed_heartbeats`]
//!   heartbeats is lost. Its pinned and active slots become orphans; the
//!   *placer* (the live host that has run longest) re-places them in
//!   priority order in the same tick that detects the loss, each with the
//!   highest epoch known plus one.
//! * **Partitions.** Each side keeps what it holds and reports degraded;
//!   each side's placer re-places the other side's pinned slots where room
//!   allows. On heal, a host that sees a live peer hold one of its slots
//!   with a higher rank (higher epoch, or at equal epochs the smaller host
//!   name) yields it, so no slot keeps two owners. Lower epochs yield.
//! * **Single host.** With no cluster configured the scheduler has no
//!   peers and places everything locally ([`GpuScheduler::single_host`]).
//!
//! * **Orphans are gossiped.** Each report lists the orphans its host
//!   knows of, so the placer learns of a lost host's models even when it
//!   started after that host's last report. The knowledge lives in the
//!   hosts' memory, not in a store: it is lost only if every host that
//!   knew it is lost before passing it on.
//!
//! * **Bounds.** Reports come from peers, so the peers kept
//!   ([`MAX_PEERS`]), the slots remembered ([`MAX_SLOTS`]) and every VRAM
//!   size ([`MAX_VRAM_MIB`]) are bounded, and VRAM sums saturate instead
//!   of wrapping.
//!
//! What it does not do: load anything (the daemon carries out
//! [`Decision::Load`] and [`Decision::Yield`] through the VRAM optimizer)
//! or measure latency (the cluster link does).

mod fit;
mod replace;
mod scheduler;
mod status;
#[cfg(test)]
mod tests;
mod types;
mod view;

pub use crate::config::limits::MAX_VRAM_MIB;
pub use scheduler::{GpuScheduler, MAX_REPLICAS};

/// The most peers one host keeps track of. A peer past it is refused (by
/// the cluster link, counted as a bad frame, and here), so hosts that
/// anyone can name cannot grow the maps without bound.
pub const MAX_PEERS: usize = 256;

/// The most slots the catalogue remembers. Slots of lost hosts stay in it
/// until placed again; a report that would take it past this bound is not
/// taken.
pub const MAX_SLOTS: usize = 16_384;
pub use types::{
    Assignment, Claim, Decision, Epoch, GpuIndex, GpuReport, HostName, HostReport, HostState,
    HostStatus, JobRequest, ModelName, ModelRequest, Orphan, Placement, Policy, Slot, outranks,
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
    /// How long an assignment waits to be taken up before its slot is
    /// placed again, ms.
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
    /// A report would take the catalogue past [`MAX_SLOTS`].
    #[error(
        "host {host} reports {new} slots this host never heard of; at most {max} are remembered"
    )]
    TooManySlots {
        /// The reporting host.
        host: HostName,
        /// Slots new to this host in the report.
        new: usize,
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
