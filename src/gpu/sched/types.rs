//! The scheduler's vocabulary: names, claims, reports, requests and the
//! decisions it hands back. Plain data, no behaviour beyond ordering.
//!
//! A *slot* is one replica of one model. Every slot has at most one owner
//! in a healthy cluster; an owner's [`Claim`] carries an [`Epoch`], and of
//! two claims to one slot the one that [`outranks`] the other keeps it.

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

/// The generation of a slot's ownership. Each re-placement takes the
/// highest epoch known for the slot plus one, so a newer owner always
/// outranks the one it replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Epoch(pub u64);

impl Epoch {
    /// The epoch after this one.
    pub fn next(self) -> Epoch {
        Epoch(self.0.saturating_add(1))
    }
}

macro_rules! display_as_inner {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    )*};
}
display_as_inner!(HostName, ModelName, GpuIndex, Epoch);

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

/// A host's claim to own a slot, as its report states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The slot.
    pub slot: Slot,
    /// Where on the host it is loaded.
    pub gpu: GpuIndex,
    /// VRAM it holds, MiB.
    pub vram_mib: u64,
    /// Pinned: kept resident, re-placed when its host is lost.
    pub pinned: bool,
    /// Serving a GPU job now: re-placed like a pinned model if its host
    /// is lost.
    pub active: bool,
    /// 0 is the highest; lost hosts' models are re-placed in this order.
    pub priority: u8,
    /// How to choose its GPU when it is re-placed.
    pub policy: Policy,
    /// The ownership generation.
    pub epoch: Epoch,
}

impl Claim {
    /// Whether losing its host means placing it again elsewhere.
    pub fn must_survive(&self) -> bool {
        self.pinned || self.active
    }
}

/// A placement one host decided for another: `target` should load
/// `claim` (on `claim.gpu`) and then claim it itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The host that should load the slot.
    pub target: HostName,
    /// What it should claim once loaded.
    pub claim: Claim,
}

/// A slot that must survive but that no live host holds or is loading, as
/// one host knows it: `host` held it last. Hosts pass their orphans on in
/// their reports, so the placer learns of a lost host's models even if it
/// started after that host's last report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    /// The host that held it last.
    pub host: HostName,
    /// Its last claim.
    pub claim: Claim,
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

/// Everything one host tells the others, each heartbeat.
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
    /// The slots it owns.
    pub owned: Vec<Claim>,
    /// Placements it decided for hosts (itself never included) that have
    /// not loaded them yet.
    pub assignments: Vec<Assignment>,
    /// Slots it knows must be placed again.
    pub orphans: Vec<Orphan>,
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
    /// Its ownership generation.
    pub epoch: Epoch,
    /// Whether it is loaded and claimed (false: assigned, not loaded yet).
    pub loaded: bool,
}

/// What the scheduler decided; the daemon carries it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Load a slot on a local GPU (this host now owns it).
    Load {
        /// The slot.
        slot: Slot,
        /// The local GPU.
        gpu: GpuIndex,
        /// VRAM it takes, MiB.
        vram_mib: u64,
        /// The ownership generation.
        epoch: Epoch,
    },
    /// Unload a local slot: another host owns it with a higher rank.
    Yield {
        /// The slot.
        slot: Slot,
        /// The local GPU it was on.
        gpu: GpuIndex,
        /// The epoch this host held.
        epoch: Epoch,
        /// The host that keeps it.
        to: HostName,
    },
    /// Another host was told to load a slot.
    Assigned {
        /// The slot.
        slot: Slot,
        /// The host.
        host: HostName,
        /// Its GPU.
        gpu: GpuIndex,
        /// The ownership generation.
        epoch: Epoch,
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

/// Whether claim `a` (held by `a_host`) outranks claim `b` (held by
/// `b_host`): the higher epoch wins; at equal epochs (two sides of a
/// partition each re-placed the slot) the smaller host name wins, so every
/// host resolves the tie the same way.
pub fn outranks(a: Epoch, a_host: &HostName, b: Epoch, b_host: &HostName) -> bool {
    a > b || (a == b && a_host < b_host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_higher_epoch_outranks_a_lower_one_whatever_the_hosts() {
        let (a, b) = (HostName::from("zeta"), HostName::from("alpha"));

        assert!(outranks(Epoch(3), &a, Epoch(2), &b));
        assert!(!outranks(Epoch(2), &b, Epoch(3), &a));
    }

    #[test]
    fn at_equal_epochs_the_smaller_host_name_wins_and_ranking_is_strict() {
        let (a, b) = (HostName::from("alpha"), HostName::from("beta"));

        assert!(outranks(Epoch(4), &a, Epoch(4), &b));
        assert!(!outranks(Epoch(4), &b, Epoch(4), &a));
        assert!(!outranks(Epoch(4), &a, Epoch(4), &a));
    }
}
