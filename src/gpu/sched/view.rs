//! One host's view of the others and of the placement store: peers' latest
//! reports and liveness, and the store's entries as the watch delivered
//! them.
//!
//! The table is a copy of the store, not a memory of its own: a slot is in
//! it because the store has it. A lost host's pinned slots are found there
//! by every survivor and by any host that starts later, since they stay in
//! the store until unpinned. Both maps are fed by others, so both are
//! bounded: at most [`MAX_PEERS`](super::MAX_PEERS) peers (lost ones are
//! pruned after [`PRUNE_AFTER_MS`]) and [`MAX_SLOTS`](super::MAX_SLOTS)
//! slots.
//!
//! What it does not do: decide anything. `reconcile.rs` reads it.

use super::types::{HostReport, Ownership};

/// How long a lost peer stays listed before it is forgotten, ms. Its
/// slots stay in the store: a host it owned slots on is found lost again
/// by the grace rule (`reconcile.rs`) and its slots are placed anyway.
pub const PRUNE_AFTER_MS: u64 = 5 * 60 * 1000;

/// Another host, as this one last heard of it.
#[derive(Debug, Clone)]
pub(super) struct Peer {
    /// Its latest report.
    pub report: HostReport,
    /// When that report arrived, ms.
    pub last_seen_ms: u64,
    /// Link latency to it, µs, as the cluster link measured it.
    pub latency_us: u64,
    /// Whether it missed its heartbeats.
    pub lost: bool,
}

impl Peer {
    /// A peer just heard from.
    pub fn new(report: HostReport, now_ms: u64, latency_us: u64) -> Self {
        Peer {
            report,
            last_seen_ms: now_ms,
            latency_us,
            lost: false,
        }
    }
}

/// One entry of the placement store, as this host last saw it.
#[derive(Debug, Clone)]
pub(super) struct Seen {
    /// Its revision.
    pub revision: u64,
    /// Its record; `None` once deleted.
    pub owner: Option<Ownership>,
    /// When this revision was first seen here, ms: an assignment not
    /// loaded for long is placed elsewhere.
    pub since_ms: u64,
    /// The scheduler's sync generation when it was seen.
    pub generation: u64,
}

/// Whether `host` may be counted live in a view where it is `peer`, at
/// `now_ms`, the view holding the whole store since `synced_ms`. A host
/// never heard from is given one loss period from then to report: it may
/// simply not have reported yet.
pub(super) fn owner_live(
    peer: Option<&Peer>,
    now_ms: u64,
    synced_ms: u64,
    lost_after_ms: u64,
) -> bool {
    match peer {
        Some(peer) => !peer.lost,
        None => now_ms.saturating_sub(synced_ms) <= lost_after_ms,
    }
}
