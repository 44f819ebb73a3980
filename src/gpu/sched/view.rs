//! One host's view of the others: their latest reports and liveness, and
//! the catalogue of every slot it has heard of.
//!
//! The catalogue is this host's memory of what must exist. It keeps, per
//! slot, the best claim heard (by [`outranks`]) and the highest epoch seen
//! in any claim or assignment, so a re-placement always takes a fresh
//! epoch. A slot whose holder is lost stays in the catalogue until a live
//! host holds it again: that is how a lost host's pinned models are found.
//! Slots that need not survive (neither pinned nor active) are forgotten
//! once no live host holds them.
//!
//! Both are fed by peers, so [`GpuScheduler::admit`] bounds them: at most
//! [`MAX_PEERS`] peers and [`MAX_SLOTS`] slots.
//!
//! What it does not do: decide anything. `replace.rs` reads it.

use std::collections::{BTreeMap, BTreeSet};

use super::scheduler::GpuScheduler;
use super::types::{Assignment, Claim, Epoch, HostName, HostReport, Orphan, Slot, outranks};
use super::{MAX_PEERS, MAX_SLOTS, SchedError};

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
    /// The peer's claim to `slot`, if it holds it.
    pub fn holds(&self, slot: &Slot) -> Option<&Claim> {
        self.report.owned.iter().find(|c| &c.slot == slot)
    }
}

/// What this host knows of one slot.
#[derive(Debug, Clone)]
pub(super) struct Known {
    /// The best claim heard.
    pub claim: Claim,
    /// Who made it.
    pub host: HostName,
    /// The highest epoch seen for the slot, claimed or assigned.
    pub max_epoch: Epoch,
}

impl GpuScheduler {
    /// Refuses a report from a peer past [`MAX_PEERS`], or one that would
    /// take the catalogue past [`MAX_SLOTS`].
    pub(super) fn admit(&self, report: &HostReport) -> Result<(), SchedError> {
        if !self.peers.contains_key(&report.host) && self.peers.len() >= MAX_PEERS {
            return Err(SchedError::TooManyPeers {
                host: report.host.clone(),
                max: MAX_PEERS,
            });
        }
        let slots = report
            .owned
            .iter()
            .chain(report.assignments.iter().map(|a| &a.claim))
            .chain(report.orphans.iter().map(|o| &o.claim))
            .map(|c| &c.slot);
        let new = self.catalogue.unknown(slots);
        if self.catalogue.len().saturating_add(new) > MAX_SLOTS {
            return Err(SchedError::TooManySlots {
                host: report.host.clone(),
                new,
                max: MAX_SLOTS,
            });
        }
        Ok(())
    }
}

/// Every slot this host has heard of.
#[derive(Debug, Default)]
pub(super) struct Catalogue {
    slots: BTreeMap<Slot, Known>,
}

impl Catalogue {
    /// Takes in what `host` holds, what it has assigned to others and the
    /// orphans it knows of.
    pub fn learn(
        &mut self,
        host: &HostName,
        owned: &[Claim],
        assignments: &[Assignment],
        orphans: &[Orphan],
    ) {
        for claim in owned {
            self.learn_claim(host, claim);
        }
        for orphan in orphans {
            self.learn_claim(&orphan.host, &orphan.claim);
        }
        // An assignment is not a claim, but it makes the slot known: if its
        // target never loads it, it is placed again like a lost host's.
        for a in assignments {
            match self.slots.get_mut(&a.claim.slot) {
                Some(known) => known.max_epoch = known.max_epoch.max(a.claim.epoch),
                None => self.learn_claim(&a.target, &a.claim),
            }
        }
    }

    fn learn_claim(&mut self, host: &HostName, claim: &Claim) {
        match self.slots.get_mut(&claim.slot) {
            None => {
                let known = Known {
                    claim: claim.clone(),
                    host: host.clone(),
                    max_epoch: claim.epoch,
                };
                self.slots.insert(claim.slot.clone(), known);
            }
            Some(known) => {
                known.max_epoch = known.max_epoch.max(claim.epoch);
                let same = known.host == *host && known.claim.epoch == claim.epoch;
                if same || outranks(claim.epoch, host, known.claim.epoch, &known.host) {
                    known.claim = claim.clone();
                    known.host = host.clone();
                }
            }
        }
    }

    /// How many slots it holds.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// How many distinct slots of `slots` it has not heard of.
    pub fn unknown<'s>(&self, slots: impl Iterator<Item = &'s Slot>) -> usize {
        let new: BTreeSet<&Slot> = slots.filter(|s| !self.slots.contains_key(s)).collect();
        new.len()
    }

    /// The highest epoch seen for `slot` (0 if never heard of).
    pub fn max_epoch(&self, slot: &Slot) -> Epoch {
        self.slots.get(slot).map_or(Epoch(0), |k| k.max_epoch)
    }

    /// Records an epoch this host handed out itself.
    pub fn saw_epoch(&mut self, slot: &Slot, epoch: Epoch) {
        if let Some(known) = self.slots.get_mut(slot) {
            known.max_epoch = known.max_epoch.max(epoch);
        }
    }

    /// Every slot known, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (&Slot, &Known)> {
        self.slots.iter()
    }

    /// Forgets slots `keep` rejects.
    pub fn retain(&mut self, mut keep: impl FnMut(&Slot, &Known) -> bool) {
        self.slots.retain(|slot, known| keep(slot, known));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::sched::types::{GpuIndex, ModelName, Policy};

    fn claim(model: &str, epoch: u64) -> Claim {
        Claim {
            slot: Slot {
                model: ModelName::from(model),
                replica: 0,
            },
            gpu: GpuIndex(0),
            vram_mib: 1000,
            pinned: true,
            active: false,
            priority: 1,
            policy: Policy::Binpack,
            epoch: Epoch(epoch),
        }
    }

    #[test]
    fn the_catalogue_keeps_the_best_claim_and_the_highest_epoch_seen() {
        let (a, b) = (HostName::from("a"), HostName::from("b"));
        let mut sut = Catalogue::default();

        sut.learn(&b, &[claim("m", 2)], &[], &[]);
        sut.learn(&a, &[claim("m", 1)], &[], &[]);
        sut.learn(
            &a,
            &[],
            &[Assignment {
                target: b.clone(),
                claim: claim("m", 7),
            }],
            &[],
        );

        let (_, known) = sut.iter().next().expect("one slot");
        assert_eq!((known.host.clone(), known.claim.epoch), (b, Epoch(2)));
        assert_eq!(known.max_epoch, Epoch(7));
    }
}
