//! The tick: the scheduler's periodic work, in this order, so that a loss
//! detected in a tick is acted on in the same tick:
//!
//! 1. expire active flags whose hold has run out;
//! 2. declare lost the peers silent for `missed_heartbeats` heartbeats;
//! 3. note whether the view is degraded;
//! 4. **yield**: unload each local slot a live peer holds with a higher
//!    rank (the partition-heal rule: the lower epoch yields);
//! 5. **take up** assignments live peers addressed to this host, if the
//!    GPU has room and no live holder outranks them;
//! 6. drop this host's assignments that were taken up, outranked, went to
//!    a host now lost, or timed out;
//! 7. forget slots nobody needs, and, if this host is the *placer*,
//!    **re-place** every orphan (a pinned or active slot no live host holds
//!    or is loading) in priority order.
//!
//! The placer is the live host that has run longest (lowest incarnation,
//! then name), so one host per connected part of the cluster re-places,
//! and it is the one most likely to have heard every lost host's report.

use super::fit;
use super::scheduler::GpuScheduler;
use super::types::{Assignment, Claim, Decision, Orphan, Slot, outranks};

impl GpuScheduler {
    /// Runs one tick at `now_ms` and pushes what it decided onto `out`.
    pub fn tick(&mut self, now_ms: u64, out: &mut Vec<Decision>) {
        self.expire_active(now_ms);
        self.detect_lost(now_ms, out);
        self.update_degraded(out);
        self.yield_outranked(out);
        self.take_up_assignments(now_ms, out);
        self.drop_settled_assignments(now_ms);
        self.forget_unneeded();
        if self.is_placer() {
            self.replace_orphans(now_ms, out);
        }
        self.orphans = self.orphans();
    }

    /// Whether this host re-places orphans in its part of the cluster.
    pub fn is_placer(&self) -> bool {
        let me = (self.incarnation, &self.me);
        self.live_peers()
            .all(|p| me < (p.report.incarnation, &p.report.host))
    }

    fn expire_active(&mut self, now_ms: u64) {
        for owned in self.owned.values_mut() {
            if owned.claim.active && owned.active_until_ms <= now_ms {
                owned.claim.active = false;
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
    }

    fn update_degraded(&mut self, out: &mut Vec<Decision>) {
        let degraded = !self.link_up || self.peers.values().any(|p| p.lost);
        if degraded != self.degraded {
            self.degraded = degraded;
            out.push(Decision::Degraded(degraded));
        }
    }

    fn yield_outranked(&mut self, out: &mut Vec<Decision>) {
        let mut yields = Vec::new();
        for (slot, owned) in &self.owned {
            let mine = owned.claim.epoch;
            let winner = self.live_peers().find(|p| {
                p.holds(slot)
                    .is_some_and(|c| outranks(c.epoch, &p.report.host, mine, &self.me))
            });
            if let Some(peer) = winner {
                yields.push((slot.clone(), peer.report.host.clone()));
            }
        }
        for (slot, to) in yields {
            if let Some(owned) = self.owned.remove(&slot) {
                out.push(Decision::Yield {
                    slot,
                    gpu: owned.claim.gpu,
                    epoch: owned.claim.epoch,
                    to,
                });
            }
        }
    }

    fn take_up_assignments(&mut self, now_ms: u64, out: &mut Vec<Decision>) {
        let mine: Vec<Claim> = self
            .live_peers()
            .flat_map(|p| p.report.assignments.iter())
            .filter(|a| a.target == self.me)
            .map(|a| a.claim.clone())
            .collect();
        for claim in mine {
            if self.owned.contains_key(&claim.slot) || self.outranked_by_live(&claim) {
                continue;
            }
            if let Some(gpu) = self.local_gpu_for(&claim) {
                self.load_local(Claim { gpu, ..claim }, now_ms, out);
            }
        }
    }

    /// Whether a live peer holds `claim`'s slot with a rank at least as
    /// high as `claim` would have here.
    fn outranked_by_live(&self, claim: &Claim) -> bool {
        self.live_peers().any(|p| {
            p.holds(&claim.slot)
                .is_some_and(|c| !outranks(claim.epoch, &self.me, c.epoch, &p.report.host))
        })
    }

    /// The assigned GPU if it still has room, else the local GPU the
    /// claim's policy prefers among those that do.
    fn local_gpu_for(&self, claim: &Claim) -> Option<super::types::GpuIndex> {
        let cands: Vec<fit::Candidate<'_>> = self
            .local_gpus
            .iter()
            .map(|g| fit::Candidate {
                host: &self.me,
                gpu: g.gpu,
                free_mib: self.local_free(g),
                latency_us: 0,
                holds_replica: false,
            })
            .collect();
        let assigned = cands
            .iter()
            .find(|c| c.gpu == claim.gpu && c.free_mib >= claim.vram_mib);
        assigned
            .or_else(|| fit::choose(&cands, claim.vram_mib, claim.policy, 0))
            .map(|c| c.gpu)
    }

    fn drop_settled_assignments(&mut self, now_ms: u64) {
        let timeout_ms = self.config.assignment_timeout_ms;
        let settled: Vec<Slot> = self
            .assignments
            .iter()
            .filter(|(_, p)| {
                let a = &p.assignment;
                let target_live = self.peers.get(&a.target).is_some_and(|t| !t.lost);
                !target_live
                    || self.taken_up_or_outranked(a)
                    || now_ms.saturating_sub(p.issued_ms) >= timeout_ms
            })
            .map(|(slot, _)| slot.clone())
            .collect();
        for slot in settled {
            self.assignments.remove(&slot);
        }
    }

    fn taken_up_or_outranked(&self, a: &Assignment) -> bool {
        self.live_peers().any(|p| {
            p.holds(&a.claim.slot).is_some_and(|c| {
                c.epoch >= a.claim.epoch
                    || outranks(c.epoch, &p.report.host, a.claim.epoch, &a.target)
            })
        })
    }

    /// Whether a live host (this one included) holds `slot`.
    fn held_live(&self, slot: &Slot) -> bool {
        self.owned.contains_key(slot) || self.live_peers().any(|p| p.holds(slot).is_some())
    }

    fn forget_unneeded(&mut self) {
        let needed: Vec<Slot> = self
            .catalogue
            .iter()
            .filter(|(slot, known)| {
                known.claim.must_survive()
                    || self.held_live(slot)
                    || self.pending_assignment(slot).is_some()
            })
            .map(|(slot, _)| slot.clone())
            .collect();
        self.catalogue
            .retain(|slot, _| needed.binary_search(slot).is_ok());
    }

    /// Pinned or active slots that no live host holds or is loading, in
    /// the order to re-place them: priority, pinned first, then slot.
    fn orphans(&self) -> Vec<Orphan> {
        let mut orphans: Vec<Orphan> = self
            .catalogue
            .iter()
            .filter(|(slot, known)| {
                known.claim.must_survive()
                    && !self.held_live(slot)
                    && self.pending_assignment(slot).is_none()
            })
            .map(|(_, known)| Orphan {
                host: known.host.clone(),
                claim: known.claim.clone(),
            })
            .collect();
        orphans.sort_by(|a, b| {
            let key = |c: &Claim| (c.priority, !c.pinned, c.slot.clone());
            key(&a.claim).cmp(&key(&b.claim))
        });
        orphans
    }

    fn replace_orphans(&mut self, now_ms: u64, out: &mut Vec<Decision>) {
        for orphan in self.orphans() {
            let claim = Claim {
                epoch: self.catalogue.max_epoch(&orphan.claim.slot).next(),
                ..orphan.claim
            };
            let chosen = {
                let reserved = self.reserved();
                let cands = self.candidates(&reserved, &claim.slot);
                fit::choose(&cands, claim.vram_mib, claim.policy, 0)
                    .map(|c| (c.host.clone(), c.gpu))
            };
            match chosen {
                Some((target, gpu)) => self.assign(target, Claim { gpu, ..claim }, now_ms, out),
                None => {
                    if self.unplaced.insert(claim.slot.clone()) {
                        out.push(Decision::Unplaced {
                            slot: claim.slot,
                            vram_mib: claim.vram_mib,
                        });
                    }
                }
            }
        }
    }
}
