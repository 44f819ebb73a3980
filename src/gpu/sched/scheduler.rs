//! [`GpuScheduler`]: the state and the public surface. Inputs are peers'
//! reports, the placement store's entries (as a watch delivers them) and
//! the answers to this host's writes, this host's GPUs, placement requests
//! and the time; outputs are [`Decision`]s pushed onto a caller's vector
//! (writes for the store among them) and this host's [`HostReport`].
//!
//! The periodic work (liveness, yielding, claiming, placing again) is in
//! `reconcile.rs`; requests (place, place a job) in `requests.rs`; room and
//! choosing a GPU in `room.rs` and `fit.rs`.

use std::collections::{BTreeMap, BTreeSet};

use super::asks::{Asked, InFlight};
use super::types::{
    Decision, GpuIndex, GpuReport, HostName, HostReport, ModelName, Ownership, Placement, Slot,
    Write, WriteOutcome,
};
use super::view::{Peer, Seen};
use super::{MAX_SLOTS, MAX_VRAM_MIB, SchedConfig, SchedError};

/// The most replicas one model may ask for.
pub const MAX_REPLICAS: u8 = 8;

/// Whether this scheduler is one of a cluster or alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// No cluster configured: one host, no peers, never degraded by them.
    SingleHost,
    /// One of the hosts of a cluster.
    Cluster,
}

/// A slot this host has loaded, with what the store said of it (to
/// write it again if the store loses it).
#[derive(Debug, Clone)]
pub(super) struct Loaded {
    pub gpu: GpuIndex,
    pub vram_mib: u64,
    /// The slot is active until then, ms (0: not active).
    pub active_until_ms: u64,
    pub pinned: bool,
    pub priority: u8,
    pub policy: super::types::Policy,
}

/// The cross-host GPU scheduler of one host. See the module doc of
/// [`crate::gpu::sched`] for the protocol.
#[derive(Debug)]
pub struct GpuScheduler {
    pub(super) me: HostName,
    pub(super) incarnation: u64,
    pub(super) mode: Mode,
    pub(super) config: SchedConfig,
    pub(super) local_gpus: Vec<GpuReport>,
    /// What this host has loaded (the daemon carried out a `Load`).
    pub(super) loaded: BTreeMap<Slot, Loaded>,
    /// The placement store as the watch delivered it.
    pub(super) table: BTreeMap<Slot, Seen>,
    /// This host's writes waiting for the store's answer, one per slot.
    pub(super) writing: BTreeMap<Slot, InFlight>,
    /// The number of the last write issued.
    pub(super) next_write_id: u64,
    /// No new write to a slot before this time, ms (after a refusal).
    pub(super) backoff: BTreeMap<Slot, u64>,
    /// Placements asked of this host whose entry the store has not shown
    /// yet, asked again while their create fails (`asks.rs`).
    pub(super) asked: BTreeMap<Slot, Asked>,
    pub(super) peers: BTreeMap<HostName, Peer>,
    /// Since when the table holds the whole store, ms; `None` while not.
    pub(super) synced_since_ms: Option<u64>,
    /// Grows each time the table stops being synced; entries carry the
    /// generation they were last seen in, so a replay can replace them.
    pub(super) generation: u64,
    pub(super) link_up: bool,
    pub(super) degraded: bool,
    pub(super) unplaced: BTreeSet<Slot>,
    /// VRAM of local loads decided since the last GPU sample, per GPU: the
    /// sample cannot show them yet.
    pub(super) loaded_since_sample: BTreeMap<GpuIndex, u64>,
}

impl GpuScheduler {
    /// A scheduler for a host with no cluster: every placement is local,
    /// and its store is the daemon's own [`MemoryKv`](super::MemoryKv).
    pub fn single_host(me: HostName, config: SchedConfig) -> Result<Self, SchedError> {
        let mut sched = Self::build(me, 0, Mode::SingleHost, config)?;
        sched.synced_since_ms = Some(0);
        Ok(sched)
    }

    /// A scheduler for `me`, one host of a cluster. `incarnation` must grow
    /// each time the host starts (the daemon uses its start time, Unix ms):
    /// peers tell a restart by it.
    pub fn cluster(
        me: HostName,
        incarnation: u64,
        config: SchedConfig,
    ) -> Result<Self, SchedError> {
        Self::build(me, incarnation, Mode::Cluster, config)
    }

    fn build(
        me: HostName,
        incarnation: u64,
        mode: Mode,
        config: SchedConfig,
    ) -> Result<Self, SchedError> {
        config.check()?;
        Ok(GpuScheduler {
            me,
            incarnation,
            mode,
            config,
            local_gpus: Vec::new(),
            loaded: BTreeMap::new(),
            table: BTreeMap::new(),
            writing: BTreeMap::new(),
            next_write_id: 0,
            backoff: BTreeMap::new(),
            asked: BTreeMap::new(),
            peers: BTreeMap::new(),
            synced_since_ms: None,
            generation: 0,
            link_up: true,
            degraded: false,
            unplaced: BTreeSet::new(),
            loaded_since_sample: BTreeMap::new(),
        })
    }

    /// This host's name.
    pub fn host(&self) -> &HostName {
        &self.me
    }

    /// Whether this host's view is degraded: a peer lost, or the link down.
    pub fn is_degraded(&self) -> bool {
        self.degraded
    }

    /// This host's GPUs as its backend sees them.
    pub fn set_local_gpus(&mut self, gpus: &[GpuReport]) {
        self.loaded_since_sample.clear();
        self.local_gpus.clear();
        self.local_gpus.extend_from_slice(gpus);
    }

    /// Whether the cluster link is connected; down makes the view degraded
    /// at the next tick.
    pub fn set_link_up(&mut self, up: bool) {
        self.link_up = up;
    }

    /// Whether the table holds the whole store now (the watch replayed it),
    /// as of `now_ms`. Until it does, the scheduler changes nothing: a
    /// partial view would re-create or yield slots it has not heard of yet.
    /// Going unsynced marks every entry for replacement: the replay that
    /// follows (perhaps of a store that restarted empty, its revisions
    /// from 1 again) replaces them, and those it does not deliver are gone
    /// when it says it is synced again.
    pub fn set_synced(&mut self, synced: bool, now_ms: u64) {
        match (synced, self.synced_since_ms) {
            (true, None) => {
                let (generation, writing) = (self.generation, &self.writing);
                self.table.retain(|slot, seen| {
                    seen.generation == generation || writing.contains_key(slot)
                });
                self.synced_since_ms = Some(now_ms);
                self.forgive_asked(now_ms);
            }
            (false, Some(_)) => {
                self.synced_since_ms = None;
                self.generation += 1;
            }
            _ => {}
        }
    }

    /// Whether the table holds the whole store.
    pub fn is_synced(&self) -> bool {
        self.synced_since_ms.is_some()
    }

    /// Takes in a peer's report, which arrived at `now_ms` over a link of
    /// `latency_us`. Reports older than the peer's latest incarnation are
    /// ignored, as is this host's own echo.
    pub fn observe(
        &mut self,
        report: HostReport,
        latency_us: u64,
        now_ms: u64,
        out: &mut Vec<Decision>,
    ) -> Result<(), SchedError> {
        if self.mode == Mode::SingleHost {
            return Err(SchedError::SingleHost { host: report.host });
        }
        if report.host == self.me {
            return if report.incarnation == self.incarnation {
                Ok(())
            } else {
                Err(SchedError::SameName { host: report.host })
            };
        }
        if let Some(peer) = self.peers.get_mut(&report.host) {
            if report.incarnation < peer.report.incarnation && !peer.lost {
                return Ok(());
            }
            if peer.lost || report.incarnation != peer.report.incarnation {
                out.push(Decision::HostUp {
                    host: report.host.clone(),
                });
            }
            *peer = Peer::new(report, now_ms, latency_us);
            return Ok(());
        }
        if self.peers.len() >= super::MAX_PEERS {
            return Err(SchedError::TooManyPeers {
                host: report.host,
                max: super::MAX_PEERS,
            });
        }
        out.push(Decision::HostUp {
            host: report.host.clone(),
        });
        let peer = Peer::new(report, now_ms, latency_us);
        self.peers.insert(peer.report.host.clone(), peer);
        Ok(())
    }

    /// Takes in one entry of the placement store: `owner` at `revision`,
    /// or a deletion (`None`). Revisions only grow, so an entry older than
    /// the one held is ignored (unless the held one predates a resync). A new slot past [`MAX_SLOTS`] is refused:
    /// whoever can write the store cannot grow every host's memory.
    pub fn saw(
        &mut self,
        slot: Slot,
        revision: u64,
        owner: Option<Ownership>,
        now_ms: u64,
    ) -> Result<(), SchedError> {
        match self.table.get(&slot) {
            Some(seen) if seen.generation == self.generation && seen.revision >= revision => {
                return Ok(());
            }
            None if self.table.len() >= MAX_SLOTS => {
                return Err(SchedError::TooManySlots {
                    slot,
                    max: MAX_SLOTS,
                });
            }
            _ => {}
        }
        let owner = owner.map(|mut o| {
            o.vram_mib = o.vram_mib.min(MAX_VRAM_MIB);
            o
        });
        if owner.is_some() {
            self.forget_asked(&slot);
        }
        self.table.insert(
            slot,
            Seen {
                revision,
                owner,
                since_ms: now_ms,
                generation: self.generation,
            },
        );
        Ok(())
    }

    /// The store's answer to this host's write `id` to `slot`
    /// ([`WriteRequest::id`]); an answer to a write no longer in flight
    /// (it timed out) is ignored. A write that made this host the owner of
    /// a loaded slot is when it loads: never before the store agreed.
    pub fn written(
        &mut self,
        slot: &Slot,
        id: u64,
        outcome: WriteOutcome,
        now_ms: u64,
        out: &mut Vec<Decision>,
    ) {
        if self.writing.get(slot).is_none_or(|f| f.id != id) {
            return;
        }
        let Some(InFlight { write, .. }) = self.writing.remove(slot) else {
            return;
        };
        let WriteOutcome::Written { revision } = outcome else {
            let retry = now_ms.saturating_add(self.config.heartbeat_ms);
            self.backoff.insert(slot.clone(), retry);
            if outcome == WriteOutcome::Conflict {
                // Another entry holds the key: the watch shows whose.
                self.forget_asked(slot);
            } else {
                self.create_failed(slot, &write, now_ms, out);
            }
            return;
        };
        self.forget_asked(slot);
        self.backoff.remove(slot);
        let owner = write.owner().cloned();
        // The watch delivers the same entry; whichever comes first counts.
        let _ = self.saw(slot.clone(), revision, owner.clone(), now_ms);
        let current = self.table.get(slot).is_some_and(|s| s.revision == revision);
        let Some(owner) = owner.filter(|_| current) else {
            return;
        };
        if owner.host != self.me {
            if !owner.loaded {
                out.push(Decision::Assigned {
                    slot: slot.clone(),
                    host: owner.host,
                    gpu: owner.gpu,
                    revision,
                });
            }
        } else if owner.loaded && !self.loaded.contains_key(slot) {
            self.load_local(slot, &owner, revision, now_ms, out);
        }
    }

    /// Marks this host's replicas of `model` active for `hold_ms` more (a
    /// job for it arrived here), telling the store if they were not.
    pub fn touch(&mut self, model: &ModelName, hold_ms: u64, now_ms: u64, out: &mut Vec<Decision>) {
        let until = now_ms.saturating_add(hold_ms);
        let mut stale = Vec::new();
        for (slot, loaded) in self.loaded.iter_mut().filter(|(s, _)| &s.model == model) {
            loaded.active_until_ms = loaded.active_until_ms.max(until);
            stale.push(slot.clone());
        }
        stale.retain(|s| self.owns(s));
        for slot in stale {
            self.change(&slot, |o| o.active = true, now_ms, out);
        }
    }

    /// Whether the store names this host the owner of `slot`. A local
    /// slot's active mark is written only to this host's own entry: one
    /// the store has given another owner is not this host's to change
    /// (and the write, while in flight, would hold back this host's
    /// yield of it: the two hosts would hold it at once).
    pub(super) fn owns(&self, slot: &Slot) -> bool {
        self.table
            .get(slot)
            .and_then(|s| s.owner.as_ref())
            .is_some_and(|o| o.host == self.me)
    }

    /// Pins (or unpins) every replica of `model` the store holds: a pinned
    /// replica stays in the store, and is placed again when its owner is
    /// lost, until it is unpinned. Any host may do it; the store orders
    /// concurrent changes. Returns how many replicas the store holds.
    pub fn set_pinned(
        &mut self,
        model: &ModelName,
        pinned: bool,
        now_ms: u64,
        out: &mut Vec<Decision>,
    ) -> usize {
        let slots: Vec<Slot> = self
            .table
            .iter()
            .filter(|(s, seen)| &s.model == model && seen.owner.is_some())
            .map(|(s, _)| s.clone())
            .collect();
        for slot in &slots {
            self.backoff.remove(slot);
            self.change(slot, |o| o.pinned = pinned, now_ms, out);
        }
        slots.len()
    }

    /// The daemon could not load a slot after all: this host no longer
    /// holds it; one that must survive is placed elsewhere, another is
    /// deleted from the store.
    pub fn load_failed(&mut self, slot: &Slot, now_ms: u64, out: &mut Vec<Decision>) {
        self.loaded.remove(slot);
        let Some(seen) = self.table.get(slot) else {
            return;
        };
        if seen.owner.as_ref().is_some_and(|o| o.host == self.me) {
            let me = self.me.clone();
            self.move_away(slot, Some(&me), now_ms, out);
        }
    }

    /// What this host tells the cluster now.
    pub fn local_report(&self) -> HostReport {
        HostReport {
            host: self.me.clone(),
            incarnation: self.incarnation,
            degraded: self.degraded,
            gpus: self
                .local_gpus
                .iter()
                .map(|g| GpuReport {
                    free_mib: self.local_free(g),
                    ..*g
                })
                .collect(),
        }
    }

    /// Where the store has `slot`, or where this host's write in flight
    /// puts it (revision 0).
    pub fn where_is(&self, slot: &Slot) -> Option<Placement> {
        if let Some(owner) = self.writing.get(slot).and_then(|f| f.write.owner()) {
            return Some(placement(slot, owner, 0));
        }
        let seen = self.table.get(slot)?;
        seen.owner
            .as_ref()
            .map(|owner| placement(slot, owner, seen.revision))
    }

    pub(super) fn live_peers(&self) -> impl Iterator<Item = &Peer> {
        self.peers.values().filter(|p| !p.lost)
    }

    /// Whether `host` is this host or a peer heard from and not lost.
    pub(super) fn is_live(&self, host: &HostName) -> bool {
        *host == self.me || self.peers.get(host).is_some_and(|p| !p.lost)
    }

    /// Asks the store to change the entry of `slot` with `edit`, if it has
    /// one and the edit changes it.
    pub(super) fn change(
        &mut self,
        slot: &Slot,
        edit: impl FnOnce(&mut Ownership),
        now_ms: u64,
        out: &mut Vec<Decision>,
    ) {
        let Some(seen) = self.table.get(slot) else {
            return;
        };
        let Some(mut owner) = seen.owner.clone() else {
            return;
        };
        let revision = seen.revision;
        let before = owner.clone();
        edit(&mut owner);
        if owner != before {
            self.issue(slot, Write::Update { owner, revision }, now_ms, out);
        }
    }

    /// Takes ownership of `slot` on this host: the store named it.
    pub(super) fn load_local(
        &mut self,
        slot: &Slot,
        owner: &Ownership,
        revision: u64,
        now_ms: u64,
        out: &mut Vec<Decision>,
    ) {
        out.push(Decision::Load {
            slot: slot.clone(),
            gpu: owner.gpu,
            vram_mib: owner.vram_mib,
            revision,
        });
        let active_until_ms = if owner.active {
            now_ms.saturating_add(self.config.lost_after_ms())
        } else {
            0
        };
        let since = self.loaded_since_sample.entry(owner.gpu).or_default();
        *since = since.saturating_add(owner.vram_mib);
        self.unplaced.remove(slot);
        self.loaded.insert(
            slot.clone(),
            Loaded {
                gpu: owner.gpu,
                vram_mib: owner.vram_mib,
                active_until_ms,
                pinned: owner.pinned,
                priority: owner.priority,
                policy: owner.policy,
            },
        );
    }
}

/// `slot` as `owner` holds it at `revision`.
pub(super) fn placement(slot: &Slot, owner: &Ownership, revision: u64) -> Placement {
    Placement {
        slot: slot.clone(),
        host: owner.host.clone(),
        gpu: owner.gpu,
        vram_mib: owner.vram_mib,
        pinned: owner.pinned,
        revision,
        loaded: owner.loaded,
    }
}
