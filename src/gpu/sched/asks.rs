//! This host's own requests of the store: writes waiting for an answer
//! and placements asked of it that the store has not shown yet.
//!
//! Each write carries a number of this host's ([`WriteRequest::id`]), and
//! its answer is taken only if it names the write in flight for the slot:
//! a write whose answer came after [`WRITE_TIMEOUT_MS`] (counted failed,
//! perhaps replaced by another write to the slot) is not credited to its
//! successor. The store stays right either way (every write is a
//! compare-and-set); this keeps the host's table right too.
//!
//! An asked placement ([`GpuScheduler::place`] or `place_job`) whose
//! create failed (the link was down, the store did not answer in time) is
//! created again after its backoff, where it fits then, until the store
//! shows the slot. One that fits nowhere waits for room, reported once as
//! [`Decision::Unplaced`]. One the store keeps refusing is given up when a
//! create fails after [`ASK_TRIES`] failed before it and [`ASK_PATIENCE_MS`]
//! have passed since it was asked ([`Decision::GaveUp`]): long past any
//! recovery of a JetStream cluster that lost a node (tens of seconds), so
//! only a store that cannot take the create (permissions, a full bucket)
//! ends there. Only failures while the view is synced count, and both
//! the count and the patience start over when it is synced again after
//! the link or the store went away: an outage alone never gives a
//! placement up.
//!
//! [`WRITE_TIMEOUT_MS`]: super::reconcile::WRITE_TIMEOUT_MS
//! [`GpuScheduler::place`]: super::GpuScheduler::place

use super::MAX_SLOTS;
use super::SchedError;
use super::scheduler::{GpuScheduler, placement};
use super::types::{Decision, HostName, Ownership, Placement, Slot, Write, WriteRequest};

/// Failed creates of one asked placement before it may be given up.
pub const ASK_TRIES: u32 = 5;
/// How long after it was asked a placement may be given up, ms.
pub const ASK_PATIENCE_MS: u64 = 60_000;

/// A write of this host's waiting for the store's answer.
#[derive(Debug, Clone)]
pub(super) struct InFlight {
    pub write: Write,
    /// When it was issued, ms.
    pub at_ms: u64,
    /// Its number, which its answer names.
    pub id: u64,
}

/// A placement asked of this host, kept until the store shows its slot.
#[derive(Debug, Clone)]
pub(super) struct Asked {
    /// The request: where it may go is chosen again at each try.
    pub owner: Ownership,
    /// The host the request named, if any.
    pub only: Option<HostName>,
    /// When it was asked, ms.
    pub since_ms: u64,
    /// Creates the store failed.
    pub failed: u32,
}

impl GpuScheduler {
    /// Chooses where `owner`'s slot goes and asks the store to create it,
    /// remembering the request until the store shows the slot.
    pub(super) fn create(
        &mut self,
        slot: &Slot,
        owner: Ownership,
        only: Option<&HostName>,
        now_ms: u64,
        out: &mut Vec<Decision>,
    ) -> Result<Placement, SchedError> {
        if self.asked.len() >= MAX_SLOTS && !self.asked.contains_key(slot) {
            return Err(SchedError::TooManySlots {
                slot: slot.clone(),
                max: MAX_SLOTS,
            });
        }
        let mut chosen = owner.clone();
        self.choose(slot, &mut chosen, only, None)?;
        let asked = Asked {
            owner,
            only: only.cloned(),
            since_ms: now_ms,
            failed: 0,
        };
        self.asked.insert(slot.clone(), asked);
        self.backoff.remove(slot);
        let placed = placement(slot, &chosen, 0);
        self.issue(slot, Write::Create(chosen), now_ms, out);
        Ok(placed)
    }

    /// Asks the store again for each asked placement whose create failed,
    /// once its backoff is over: where it goes is chosen again (the host
    /// first chosen may be gone). One that no longer fits anywhere waits
    /// for room, reported once; one the store kept refusing is given up.
    pub(super) fn ask_again(&mut self, now_ms: u64, out: &mut Vec<Decision>) {
        let due: Vec<Slot> = self
            .asked
            .keys()
            .filter(|s| !self.writing.contains_key(*s))
            .filter(|s| self.table.get(*s).is_none_or(|seen| seen.owner.is_none()))
            .filter(|s| self.backoff.get(*s).is_none_or(|&t| now_ms >= t))
            .cloned()
            .collect();
        for slot in due {
            let Some(asked) = self.asked.get(&slot) else {
                continue;
            };
            let (mut owner, only) = (asked.owner.clone(), asked.only.clone());
            if self.choose(&slot, &mut owner, only.as_ref(), None).is_ok() {
                self.unplaced.remove(&slot);
                self.issue(&slot, Write::Create(owner), now_ms, out);
            } else if self.unplaced.insert(slot.clone()) {
                out.push(Decision::Unplaced {
                    slot: slot.clone(),
                    vram_mib: owner.vram_mib,
                });
            }
        }
    }

    /// Hands a write to the daemon, unless one to the same slot is in
    /// flight or the slot is backing off after a refusal. Returns whether
    /// it was issued.
    pub(super) fn issue(
        &mut self,
        slot: &Slot,
        write: Write,
        now_ms: u64,
        out: &mut Vec<Decision>,
    ) -> bool {
        let backing_off = self.backoff.get(slot).is_some_and(|&t| now_ms < t);
        if self.writing.contains_key(slot) || backing_off {
            return false;
        }
        self.next_write_id += 1;
        let id = self.next_write_id;
        let in_flight = InFlight {
            write: write.clone(),
            at_ms: now_ms,
            id,
        };
        self.writing.insert(slot.clone(), in_flight);
        out.push(Decision::Write(WriteRequest {
            slot: slot.clone(),
            write,
            id,
        }));
        true
    }

    /// Counts a failed create of an asked placement (the store failed it,
    /// or its answer never came), giving the placement up when the store
    /// has refused it long enough.
    pub(super) fn create_failed(
        &mut self,
        slot: &Slot,
        write: &Write,
        now_ms: u64,
        out: &mut Vec<Decision>,
    ) {
        if !self.is_synced() {
            return;
        }
        let (Write::Create(_), Some(asked)) = (write, self.asked.get_mut(slot)) else {
            return;
        };
        asked.failed = asked.failed.saturating_add(1);
        let waited = now_ms.saturating_sub(asked.since_ms);
        if asked.failed > ASK_TRIES && waited >= ASK_PATIENCE_MS {
            out.push(Decision::GaveUp {
                slot: slot.clone(),
                tries: asked.failed,
            });
            self.forget_asked(slot);
        }
    }

    /// Drops an asked placement: the store showed it, another host's
    /// entry holds its key, or it was given up.
    pub(super) fn forget_asked(&mut self, slot: &Slot) {
        self.asked.remove(slot);
        self.unplaced.remove(slot);
    }

    /// Starts every asked placement's count of failures and its patience
    /// over: the view is synced again after the link or the store went
    /// away, and an outage says nothing of whether the store would take
    /// it.
    pub(super) fn forgive_asked(&mut self, now_ms: u64) {
        for asked in self.asked.values_mut() {
            (asked.failed, asked.since_ms) = (0, now_ms);
        }
    }
}
