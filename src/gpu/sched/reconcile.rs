//! The tick: the scheduler's periodic work, in this order, so that a loss
//! detected in a tick is acted on in the same tick:
//!
//! 1. end the active marks of local slots whose hold ran out (a write);
//! 2. declare lost the peers silent for `missed_heartbeats` heartbeats,
//!    forget those lost for [`PRUNE_AFTER_MS`];
//! 3. note whether the view is degraded;
//!
//! and, only while the table holds the whole store (a partial view would
//! re-create or yield slots it has not heard of yet), asks again for the
//! placements asked of this host whose create failed, then:
//!
//! 4. **yield** each local slot the store gives another owner;
//! 5. **re-create** each local slot the store has no entry for (a store
//!    that lost its state, or a deletion while this host was thought
//!    lost): the host that holds it claims it again;
//! 6. for each entry: **claim** one that names this host and is not loaded
//!    here (assigned here, or held before a restart), if a GPU has room;
//!    **place again** one whose owner is lost and that must survive, or
//!    one assigned but not loaded for `assignment_timeout_ms`; **delete**
//!    one whose owner is lost and that need not survive.
//!
//! Every change is a write on the revision it was decided on, so any
//! number of hosts may decide the same re-placement at once: the first
//! write wins, the others are refused and see the winner's entry. There is
//! no placer and no election. An owner never heard from counts as live for
//! one loss period after the table was synced (it may not have reported
//! yet), then as lost: that is how a host that starts after every holder
//! of a pinned slot died still places it.
//!
//! [`PRUNE_AFTER_MS`]: super::view::PRUNE_AFTER_MS

use super::scheduler::GpuScheduler;
use super::types::{Decision, GpuIndex, HostName, Ownership, Slot, Write};
use super::view::{PRUNE_AFTER_MS, owner_live};

/// How long a write may wait for the store's answer before it counts as
/// failed, ms (the link gives a bucket operation 2 s).
pub const WRITE_TIMEOUT_MS: u64 = 5_000;

impl GpuScheduler {
    /// Runs one tick at `now_ms` and pushes what it decided onto `out`.
    pub fn tick(&mut self, now_ms: u64, out: &mut Vec<Decision>) {
        self.expire_writes(now_ms, out);
        self.expire_active(now_ms, out);
        self.detect_lost(now_ms, out);
        self.update_degraded(out);
        if !self.link_up || !self.is_synced() {
            return;
        }
        self.ask_again(now_ms, out);
        self.yield_and_recreate(now_ms, out);
        let slots: Vec<Slot> = self.table.keys().cloned().collect();
        for slot in slots {
            self.reconcile(&slot, now_ms, out);
        }
    }

    /// A write whose answer never came (a dropped event, a lost link)
    /// counts as failed after [`WRITE_TIMEOUT_MS`], so the slot is not held
    /// forever.
    fn expire_writes(&mut self, now_ms: u64, out: &mut Vec<Decision>) {
        let retry = now_ms.saturating_add(self.config.heartbeat_ms);
        let expired: Vec<Slot> = self
            .writing
            .iter()
            .filter(|(_, f)| now_ms.saturating_sub(f.at_ms) >= WRITE_TIMEOUT_MS)
            .map(|(s, _)| s.clone())
            .collect();
        for slot in expired {
            if let Some(f) = self.writing.remove(&slot) {
                self.create_failed(&slot, &f.write, now_ms, out);
            }
            self.backoff.insert(slot, retry);
        }
    }

    fn expire_active(&mut self, now_ms: u64, out: &mut Vec<Decision>) {
        let expired: Vec<Slot> = self
            .loaded
            .iter()
            .filter(|(_, l)| l.active_until_ms > 0 && l.active_until_ms <= now_ms)
            .map(|(s, _)| s.clone())
            .collect();
        for slot in expired {
            if let Some(loaded) = self.loaded.get_mut(&slot) {
                loaded.active_until_ms = 0;
            }
            if self.owns(&slot) {
                self.change(&slot, |o| o.active = false, now_ms, out);
            }
        }
    }

    fn detect_lost(&mut self, now_ms: u64, out: &mut Vec<Decision>) {
        let lost_after_ms = self.config.lost_after_ms();
        for peer in self.peers.values_mut() {
            if !peer.lost && now_ms.saturating_sub(peer.last_seen_ms) > lost_after_ms {
                peer.lost = true;
                out.push(Decision::HostLost {
                    host: peer.report.host.clone(),
                });
            }
        }
        self.peers
            .retain(|_, p| !p.lost || now_ms.saturating_sub(p.last_seen_ms) <= PRUNE_AFTER_MS);
    }

    fn update_degraded(&mut self, out: &mut Vec<Decision>) {
        let degraded = !self.link_up || self.peers.values().any(|p| p.lost);
        if degraded != self.degraded {
            self.degraded = degraded;
            out.push(Decision::Degraded(degraded));
        }
    }

    /// Steps 4 and 5: local slots against the store.
    fn yield_and_recreate(&mut self, now_ms: u64, out: &mut Vec<Decision>) {
        let local: Vec<Slot> = self
            .loaded
            .keys()
            .filter(|s| !self.writing.contains_key(*s))
            .cloned()
            .collect();
        for slot in local {
            let stored = self.table.get(&slot).and_then(|s| s.owner.clone());
            match stored {
                Some(owner) if owner.host == self.me => {
                    if let Some(loaded) = self.loaded.get_mut(&slot) {
                        if loaded.pinned != owner.pinned {
                            out.push(Decision::Pinned {
                                slot: slot.clone(),
                                pinned: owner.pinned,
                            });
                        }
                        loaded.pinned = owner.pinned;
                        loaded.priority = owner.priority;
                        loaded.policy = owner.policy;
                    }
                }
                Some(owner) => {
                    if let Some(loaded) = self.loaded.remove(&slot) {
                        out.push(Decision::Yield {
                            slot,
                            gpu: loaded.gpu,
                            to: Some(owner.host),
                        });
                    }
                }
                None => {
                    let Some(loaded) = self.loaded.get(&slot) else {
                        continue;
                    };
                    let owner = Ownership {
                        host: self.me.clone(),
                        gpu: loaded.gpu,
                        vram_mib: loaded.vram_mib,
                        pinned: loaded.pinned,
                        active: loaded.active_until_ms > now_ms,
                        priority: loaded.priority,
                        policy: loaded.policy,
                        loaded: true,
                    };
                    self.issue(&slot, Write::Create(owner), now_ms, out);
                }
            }
        }
    }

    /// Step 6 for one entry.
    fn reconcile(&mut self, slot: &Slot, now_ms: u64, out: &mut Vec<Decision>) {
        if self.writing.contains_key(slot) {
            return;
        }
        let Some(seen) = self.table.get(slot) else {
            return;
        };
        let Some(owner) = seen.owner.clone() else {
            return;
        };
        let (revision, since_ms) = (seen.revision, seen.since_ms);
        if owner.host == self.me {
            self.claim(slot, owner, revision, now_ms, out);
            return;
        }
        let synced_ms = self.synced_since_ms.unwrap_or(now_ms);
        let live = owner_live(
            self.peers.get(&owner.host),
            now_ms,
            synced_ms,
            self.config.lost_after_ms(),
        );
        let stuck =
            !owner.loaded && now_ms.saturating_sub(since_ms) >= self.config.assignment_timeout_ms;
        if !live || stuck {
            self.move_away(slot, Some(&owner.host), now_ms, out);
        }
    }

    /// An entry naming this host: loads it by a write that says it is
    /// loaded (the load follows when the store agrees), if a GPU has room.
    fn claim(
        &mut self,
        slot: &Slot,
        owner: Ownership,
        revision: u64,
        now_ms: u64,
        out: &mut Vec<Decision>,
    ) {
        if let Some(loaded) = self.loaded.get(slot) {
            if !owner.loaded || owner.gpu != loaded.gpu {
                let gpu = loaded.gpu;
                self.change(
                    slot,
                    |o| {
                        o.loaded = true;
                        o.gpu = gpu;
                    },
                    now_ms,
                    out,
                );
            }
            return;
        }
        let Some(gpu) = self.local_gpu_for(&owner) else {
            // No room: the entry times out and is placed elsewhere.
            return;
        };
        let claimed = Ownership {
            gpu,
            loaded: true,
            ..owner
        };
        self.issue(
            slot,
            Write::Update {
                owner: claimed,
                revision,
            },
            now_ms,
            out,
        );
    }

    /// The assigned GPU if it still has room, else the local GPU the
    /// policy prefers among those that do.
    fn local_gpu_for(&self, owner: &Ownership) -> Option<GpuIndex> {
        let cands: Vec<super::fit::Candidate<'_>> = self
            .local_gpus
            .iter()
            .map(|g| super::fit::Candidate {
                host: &self.me,
                gpu: g.gpu,
                free_mib: self.local_free(g),
                latency_us: 0,
                holds_replica: false,
            })
            .collect();
        let assigned = cands
            .iter()
            .find(|c| c.gpu == owner.gpu && c.free_mib >= owner.vram_mib);
        assigned
            .or_else(|| super::fit::choose(&cands, owner.vram_mib, owner.policy, 0))
            .map(|c| c.gpu)
    }

    /// Takes `slot` away from its owner `from`: to the best other host if
    /// it must survive (or was only assigned), else out of the store.
    pub(super) fn move_away(
        &mut self,
        slot: &Slot,
        from: Option<&HostName>,
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
        let owner_lost = from.is_some_and(|h| *h != self.me && !self.is_live(h));
        if !owner.must_survive() && (owner_lost || from == Some(&self.me)) {
            self.issue(slot, Write::Delete { revision }, now_ms, out);
            return;
        }
        match self.choose(slot, &mut owner, None, from) {
            Ok(()) => {
                self.unplaced.remove(slot);
                self.issue(slot, Write::Update { owner, revision }, now_ms, out);
            }
            Err(_) => {
                if self.unplaced.insert(slot.clone()) {
                    out.push(Decision::Unplaced {
                        slot: slot.clone(),
                        vram_mib: owner.vram_mib,
                    });
                }
            }
        }
    }
}
