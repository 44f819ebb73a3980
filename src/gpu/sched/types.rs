//! The scheduler's vocabulary: names, ownership records, the writes the
//! scheduler asks of the placement store, reports, requests and the
//! decisions it hands back. Plain data, no behaviour.
//!
//! A *slot* is one replica of one model. Its owner is whatever the
//! placement store (a JetStream KV bucket; [`MemoryKv`](super::MemoryKv)
//! in tests and on a single host) says: one [`Ownership`] record per slot,
//! at a revision, changed only by a compare-and-set on that revision.

use std::fmt;

/// A host of the cluster, named as in its topology file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostName(pub String);

/// A model, named as agents ask for it (`"whisper-large-v3"`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ModelName(pub String);

/// A GPU of one host, by its index there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GpuIndex(pub u32);

macro_rules! display_as_inner {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    )*};
}
display_as_inner!(HostName, ModelName, GpuIndex);

impl From<&str> for HostName {
    fn from(name: &str) -> Self {
        HostName(name.to_owned())
    }
}

impl From<&str> for ModelName {
    fn from(name: &str) -> Self {
        ModelName(name.to_owned())
    }
}

/// One replica of one model: the unit that has an owner.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot {
    /// The model.
    pub model: ModelName,
    /// Which replica, from 0.
    pub replica: u8,
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.model, self.replica)
    }
}

/// How a model picks among the GPUs it fits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// The GPU it fills most tightly: keeps large holes for large models.
    #[default]
    Binpack,
    /// The GPU with the most room: spreads load and heat.
    Spread,
}

/// Who holds a slot, as the placement store records it: the value of the
/// slot's entry. Exactly one per slot at any revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ownership {
    /// The owner: the host that holds the slot, or is to load it.
    pub host: HostName,
    /// Its GPU there.
    pub gpu: GpuIndex,
    /// VRAM it holds, MiB.
    pub vram_mib: u64,
    /// Pinned: kept in the store until unpinned, placed again when its
    /// owner is lost.
    pub pinned: bool,
    /// Serving a GPU job now: placed again like a pinned slot if its owner
    /// is lost.
    pub active: bool,
    /// 0 is the highest.
    pub priority: u8,
    /// How to choose its GPU when it is placed again.
    pub policy: Policy,
    /// Whether the owner has loaded it (false: assigned, loading).
    pub loaded: bool,
}

impl Ownership {
    /// Whether losing its owner means placing it again elsewhere.
    pub fn must_survive(&self) -> bool {
        self.pinned || self.active
    }
}

/// A change the scheduler asks of the placement store. Every change but
/// the first claim names the revision it was decided on, so the store
/// refuses it if anyone changed the slot since: two hosts can never both
/// win.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// The first claim: succeeds only if the slot has no entry (or only a
    /// deleted one).
    Create(Ownership),
    /// Replaces the entry at `revision`.
    Update {
        /// The new record.
        owner: Ownership,
        /// The revision it replaces.
        revision: u64,
    },
    /// Deletes the entry at `revision` (a slot that need not survive its
    /// lost owner).
    Delete {
        /// The revision it deletes.
        revision: u64,
    },
}

impl Write {
    /// The record the write leaves, if any.
    pub fn owner(&self) -> Option<&Ownership> {
        match self {
            Write::Create(owner) | Write::Update { owner, .. } => Some(owner),
            Write::Delete { .. } => None,
        }
    }
}

/// A write to one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteRequest {
    /// The slot.
    pub slot: Slot,
    /// The change.
    pub write: Write,
    /// The scheduler's number for this write: its answer names it
    /// ([`GpuScheduler::written`](super::GpuScheduler::written)).
    pub id: u64,
}

/// What the store answered to a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Done; the slot's entry is now at `revision`.
    Written {
        /// The new revision.
        revision: u64,
    },
    /// Someone changed the slot first (the revision moved, or a create
    /// found an entry).
    Conflict,
    /// The store could not be reached, or refused for another reason.
    Failed,
}

/// One GPU as a host reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuReport {
    /// The GPU.
    pub gpu: GpuIndex,
    /// Its VRAM, MiB.
    pub total_mib: u64,
    /// VRAM free for new models, MiB.
    pub free_mib: u64,
}

/// Everything one host tells the others, each heartbeat, that the
/// scheduler reads: who it is and how much room its GPUs have. Ownership
/// is not in it; it lives in the placement store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostReport {
    /// The reporting host.
    pub host: HostName,
    /// Changes each time the host starts, so a restart is told apart from
    /// a host that kept running.
    pub incarnation: u64,
    /// Whether the host sees itself as degraded (lost peers, no NATS).
    pub degraded: bool,
    /// Its GPUs.
    pub gpus: Vec<GpuReport>,
}

/// A request to place a model (`pinwheel gpu place`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRequest {
    /// The model.
    pub model: ModelName,
    /// VRAM it needs, MiB.
    pub vram_mib: u64,
    /// Keep it resident, and re-place it if its host is lost.
    pub pinned: bool,
    /// 0 is the highest.
    pub priority: u8,
    /// How to choose among GPUs.
    pub policy: Policy,
    /// How many replicas, each on its own host where hosts allow.
    pub replicas: u8,
    /// Only this host, if given (`--host`).
    pub host: Option<HostName>,
}

/// A GPU job: run `model` (loading it if no host has it) and keep it
/// active for `hold_ms` after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRequest {
    /// The model the job runs.
    pub model: ModelName,
    /// VRAM the model needs, MiB.
    pub vram_mib: u64,
    /// 0 is the highest.
    pub priority: u8,
    /// How long the model stays active after the job, ms.
    pub hold_ms: u64,
    /// How to choose among GPUs if the model must be loaded.
    pub policy: Policy,
}

/// Where a slot is (or is going).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The slot.
    pub slot: Slot,
    /// Its host.
    pub host: HostName,
    /// Its GPU there.
    pub gpu: GpuIndex,
    /// VRAM it holds, MiB.
    pub vram_mib: u64,
    /// Whether it is pinned.
    pub pinned: bool,
    /// The revision of its entry in the placement store (0: being
    /// written).
    pub revision: u64,
    /// Whether its owner has loaded it (false: assigned, loading).
    pub loaded: bool,
}

/// What the scheduler decided; the daemon carries it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Ask the placement store for a change, then hand its answer to
    /// [`GpuScheduler::written`](super::GpuScheduler::written).
    Write(WriteRequest),
    /// Load a slot on a local GPU: the store names this host its owner.
    Load {
        /// The slot.
        slot: Slot,
        /// The local GPU.
        gpu: GpuIndex,
        /// VRAM it takes, MiB.
        vram_mib: u64,
        /// The revision that made this host its owner.
        revision: u64,
    },
    /// Unload a local slot: the store names another owner (`to`), or none.
    Yield {
        /// The slot.
        slot: Slot,
        /// The local GPU it was on.
        gpu: GpuIndex,
        /// The owner the store names, if any.
        to: Option<HostName>,
    },
    /// The store pinned (or unpinned) a slot this host holds: the VRAM
    /// optimizer keeps it resident (or may evict it again).
    Pinned {
        /// The slot.
        slot: Slot,
        /// Pinned now.
        pinned: bool,
    },
    /// This host's write made another host a slot's owner, to load it.
    Assigned {
        /// The slot.
        slot: Slot,
        /// The host.
        host: HostName,
        /// Its GPU.
        gpu: GpuIndex,
        /// The entry's revision.
        revision: u64,
    },
    /// A placement asked of this host that the store kept refusing to
    /// create is given up (see `asks.rs`): ask for it again.
    GaveUp {
        /// The slot.
        slot: Slot,
        /// Creates the store failed.
        tries: u32,
    },
    /// A slot that must be placed fits on no GPU now; retried each tick.
    Unplaced {
        /// The slot.
        slot: Slot,
        /// VRAM it needs, MiB.
        vram_mib: u64,
    },
    /// A host missed its heartbeats.
    HostLost {
        /// The host.
        host: HostName,
    },
    /// A host reported (first time, after loss, or after a restart).
    HostUp {
        /// The host.
        host: HostName,
    },
    /// This host's view became degraded (true) or whole again (false).
    Degraded(bool),
}

/// A host's state in this host's view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostState {
    /// Reporting, and not degraded.
    Up,
    /// Reporting, but degraded by its own account.
    Degraded,
    /// Missed its heartbeats.
    Lost,
}

impl HostState {
    /// `"up"`, `"degraded"` or `"lost"`, as `/v1/cluster` writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Up => "up",
            HostState::Degraded => "degraded",
            HostState::Lost => "lost",
        }
    }
}

/// One host as [`GpuScheduler::hosts`](super::GpuScheduler::hosts) lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostStatus {
    /// The host.
    pub host: HostName,
    /// Up, degraded or lost.
    pub state: HostState,
    /// When its last report arrived (this host's clock, ms); `None` for
    /// this host itself.
    pub last_seen_ms: Option<u64>,
    /// The link latency to it, µs (0 for this host).
    pub latency_us: u64,
}
