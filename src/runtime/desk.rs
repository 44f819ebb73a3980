//! The model-use desk: how an agent on an executor asks the VRAM
//! optimizer, which lives in the core loop, for its model on each request
//! it serves, without the executor ever waiting for the core loop.
//!
//! Two kinds of word, all fixed at boot:
//!
//! * A **grant** per model: a `GRANTED` bit (the optimizer has the model
//!   resident and lets uses start on it) and a count of uses holding it.
//!   The bit and the count share one word, so taking a hold is one
//!   `fetch_add` that also tells whether the grant stood, and revoking is
//!   one `fetch_and` that also tells how many still hold it. A hold taken
//!   is never cut short: when the core loop revokes a grant to evict a
//!   model that uses still hold, the unload waits until they let go.
//! * A **desk** per executor: for each model, a count of the uses that
//!   started on a grant (only the executor adds to it), and slots for
//!   uses that had to ask, two per worker and model of its agents (one
//!   asking, one ended and not yet freed), so a desk never runs out. A
//!   slot is one word: state, model, class and expected hold, so a use is
//!   posted with one store.
//!
//! A use whose model is granted (a hit, the common case) takes a hold,
//! adds to its count and runs at once: no slot, no wait. Each tick the
//! core loop reads the counts (hits for the optimizer, and history for
//! its predictions) and the holders (a held model is busy: never
//! evicted). A use whose model is not granted posts `ASKED` and its task
//! (not the executor) sleeps, polling its slot every [`USE_POLL`], until
//! the core loop, having submitted it (`WAITING`), answers `ADMITTED` or
//! `DENIED`; the wait is part of the request's latency. An admitted use
//! takes a hold too. When it ends its slot goes `ENDED`, and the core loop
//! releases it and frees the slot. A use abandoned while it waits (its
//! handler overran) goes `CANCELLED`, and the core loop withdraws it.
//!
//! ```text
//!  slot word  bits 0..8 state | 8..24 model | 24..26 class | 32..64 hold ms
//!  executor:  FREE -> ASKED;  ADMITTED -> ENDED;
//!             ASKED | WAITING -> CANCELLED;  DENIED -> FREE
//!  core loop: ASKED -> WAITING -> ADMITTED | DENIED;
//!             ENDED | CANCELLED -> FREE
//! ```
//!
//! States both sides may move (`ASKED`, `WAITING`) change only by
//! compare-and-swap, so neither side's move is lost; every other state
//! has one writer. An agent process goes through a desk of the same kind,
//! the board's last (`Board::process_desk`): the control side, which owns
//! its link, posts, holds and ends its uses on its behalf, one open use at
//! most [`MAX_PROCESS_USES`] per agent (`process::uses`), and a guard in
//! its SDK stands for the [`ModelLease`].

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use super::RuntimeError;
use super::ctx::Ctx;

/// How often a waiting use looks at its slot.
pub const USE_POLL: Duration = Duration::from_millis(1);
/// Model uses one agent process may have open (held or asking) at once.
pub const MAX_PROCESS_USES: usize = 16;

const GRANTED: u32 = 1 << 31;
const HOLDERS: u32 = GRANTED - 1;
const STATE: u64 = 0xff;

/// Where a slot stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SlotState {
    /// Free for the executor to post a use in.
    Free = 0,
    /// A use asking for a model that is not granted.
    Asked = 2,
    /// Submitted to the optimizer, waiting for its decision.
    Waiting = 3,
    /// The optimizer admitted it: it runs.
    Admitted = 4,
    /// The optimizer refused it.
    Denied = 5,
    /// The use is over.
    Ended = 6,
    /// The use was abandoned while it waited.
    Cancelled = 7,
}

impl SlotState {
    fn of(word: u64) -> Self {
        match word & STATE {
            2 => SlotState::Asked,
            3 => SlotState::Waiting,
            4 => SlotState::Admitted,
            5 => SlotState::Denied,
            6 => SlotState::Ended,
            7 => SlotState::Cancelled,
            _ => SlotState::Free,
        }
    }
}

/// A use as posted in a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Posted {
    /// Where it stands.
    pub state: SlotState,
    /// The model's slot on the board.
    pub model: u16,
    /// Its class: 0 batch, 1 interactive, 2 realtime.
    pub class: u8,
    /// How long it expects to hold the model, ms.
    pub hold_ms: u32,
}

impl Posted {
    fn word(self) -> u64 {
        self.state as u64
            | u64::from(self.model) << 8
            | u64::from(self.class & 3) << 24
            | u64::from(self.hold_ms) << 32
    }

    fn of(word: u64) -> Self {
        Self {
            state: SlotState::of(word),
            model: (word >> 8) as u16,
            class: ((word >> 24) & 3) as u8,
            hold_ms: (word >> 32) as u32,
        }
    }
}

/// A model's grant and holders.
#[derive(Debug, Default)]
pub struct ModelGrant {
    word: AtomicU32,
}

impl ModelGrant {
    /// Takes a hold if the grant stands; false (and no hold) otherwise.
    pub fn try_hold(&self) -> bool {
        // SYNC: AcqRel; the Acquire half pairs with the Release of
        // `grant`, and the Release half with the AcqRel `fetch_and` in
        // `revoke`, which then counts this hold.
        let before = self.word.fetch_add(1, Ordering::AcqRel);
        if before & GRANTED != 0 {
            return true;
        }
        self.release();
        false
    }

    /// Takes a hold whatever the grant (a use the optimizer admitted).
    pub fn hold(&self) {
        // SYNC: AcqRel, as in `try_hold`.
        self.word.fetch_add(1, Ordering::AcqRel);
    }

    /// Lets go of a hold.
    pub fn release(&self) {
        // SYNC: Release pairs with the Acquire load in `holders`, so the
        // core loop that sees the count drop sees the use over.
        self.word.fetch_sub(1, Ordering::Release);
    }

    /// Lets uses start on the model without asking.
    pub fn grant(&self) {
        // SYNC: Release pairs with the Acquire half of `try_hold`.
        self.word.fetch_or(GRANTED, Ordering::Release);
    }

    /// Ends the grant; returns how many uses still hold the model.
    pub fn revoke(&self) -> u32 {
        // SYNC: AcqRel pairs with the AcqRel of `try_hold`: a hold taken
        // before is counted here, one taken after sees no grant.
        self.word.fetch_and(!GRANTED, Ordering::AcqRel) & HOLDERS
    }

    /// Whether the grant stands.
    pub fn granted(&self) -> bool {
        // SYNC: Acquire pairs with the Release of `grant`.
        self.word.load(Ordering::Acquire) & GRANTED != 0
    }

    /// Uses holding the model now.
    pub fn holders(&self) -> u32 {
        // SYNC: Acquire pairs with the Release of `release`.
        self.word.load(Ordering::Acquire) & HOLDERS
    }
}

/// One executor's slots and hit counts.
#[derive(Debug)]
#[repr(align(64))]
pub struct UseDesk {
    slots: Box<[AtomicU64]>,
    hits: Box<[AtomicU64]>,
}

impl UseDesk {
    /// A desk of `slots` slots, counting hits on `models` models.
    pub fn new(slots: usize, models: usize) -> Self {
        Self {
            slots: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            hits: (0..models).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Counts a use that started on model `model`'s grant.
    pub fn count_hit(&self, model: u16) {
        if let Some(hits) = self.hits.get(usize::from(model)) {
            // SYNC: Relaxed; a monotonic count the core loop reads for
            // accounting, publishing nothing else.
            hits.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Uses that started on model `model`'s grant so far.
    pub fn hits(&self, model: usize) -> u64 {
        // SYNC: Relaxed; as in `count_hit`.
        self.hits
            .get(model)
            .map_or(0, |h| h.load(Ordering::Relaxed))
    }

    /// Slots.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether it has none.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// What slot `slot` holds.
    pub fn read(&self, slot: usize) -> Posted {
        // SYNC: Acquire pairs with the Release stores and swaps of the
        // other side, so the fields read are the ones posted.
        Posted::of(
            self.slots
                .get(slot)
                .map_or(0, |s| s.load(Ordering::Acquire)),
        )
    }

    /// Posts `posted` in a free slot; its index, or `None` when every
    /// slot is taken.
    pub fn post(&self, posted: Posted) -> Option<usize> {
        self.slots.iter().position(|s| {
            // SYNC: AcqRel; Acquire pairs with the core loop's Release
            // store of FREE, Release publishes the posted fields.
            s.compare_exchange(0, posted.word(), Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        })
    }

    /// Moves slot `slot` from `from` to `to`, keeping its fields; false
    /// when it was not in `from` (the other side moved it first).
    pub fn advance(&self, slot: usize, from: SlotState, to: SlotState) -> bool {
        let Some(s) = self.slots.get(slot) else {
            return false;
        };
        // SYNC: Acquire pairs with the Release stores and swaps of the
        // other side.
        let word = s.load(Ordering::Acquire);
        if SlotState::of(word) != from {
            return false;
        }
        let next = (word & !STATE) | to as u64;
        // SYNC: AcqRel: the other side's move and ours are ordered, and
        // ours is published with the fields.
        s.compare_exchange(word, next, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Frees slot `slot` (by whichever side owns its current state).
    pub fn free(&self, slot: usize) {
        if let Some(s) = self.slots.get(slot) {
            // SYNC: Release pairs with the Acquire of `post`'s swap.
            s.store(0, Ordering::Release);
        }
    }

    /// The executor is done with the use in `slot`: admitted, it ends;
    /// asked or waiting, it is cancelled; denied, it is freed.
    pub fn abandon(&self, slot: usize) {
        loop {
            let state = self.read(slot).state;
            let done = match state {
                SlotState::Admitted => self.advance(slot, state, SlotState::Ended),
                SlotState::Asked | SlotState::Waiting => {
                    self.advance(slot, state, SlotState::Cancelled)
                }
                SlotState::Denied => {
                    self.free(slot);
                    true
                }
                SlotState::Free | SlotState::Ended | SlotState::Cancelled => true,
            };
            if done {
                return;
            }
        }
    }
}

/// A use of a model, held until dropped.
#[derive(Debug)]
pub struct ModelLease<'a> {
    grant: Option<&'a ModelGrant>,
    /// The slot of a use that asked.
    asked: Option<(&'a UseDesk, usize)>,
}

impl ModelLease<'_> {
    /// Whether the core loop tracks it (false while it does not serve
    /// the desks, or the host has no GPU to manage).
    pub fn tracked(&self) -> bool {
        self.grant.is_some()
    }

    /// Whether it had to ask (a miss) rather than start on a grant.
    pub fn asked(&self) -> bool {
        self.asked.is_some()
    }
}

impl Drop for ModelLease<'_> {
    fn drop(&mut self) {
        if let Some(grant) = self.grant.take() {
            grant.release();
        }
        if let Some((desk, slot)) = self.asked.take() {
            desk.abandon(slot);
        }
    }
}

/// A use posted as asked, cancelled if dropped before its answer.
struct Asking<'a> {
    desk: &'a UseDesk,
    slot: usize,
    armed: bool,
}

impl Drop for Asking<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.desk.abandon(self.slot);
        }
    }
}

/// Asks for model slot `model` for a use of class `class` (0 batch, 1
/// interactive, 2 realtime) expected to last `hold_ms`: at once when the
/// model is granted, else after the optimizer's decision, the task
/// sleeping meanwhile. `Err(ModelDenied)` if it refuses, `Err(Overloaded)`
/// if the desk is full (it is sized so that it cannot be).
pub async fn acquire(
    ctx: &Ctx,
    model: u16,
    class: u8,
    hold_ms: u32,
) -> Result<ModelLease<'_>, RuntimeError> {
    let routes = ctx.node().routes();
    let board = routes.board();
    let untracked = ModelLease {
        grant: None,
        asked: None,
    };
    let (Some(grant), Some(desk)) = (
        board.grant(usize::from(model)),
        board.desk(ctx.node().executor()),
    ) else {
        return Ok(untracked);
    };
    if !board.models_managed() {
        return Ok(untracked);
    }
    let posted = |state| Posted {
        state,
        model,
        class,
        hold_ms,
    };
    if grant.try_hold() {
        desk.count_hit(model);
        return Ok(ModelLease {
            grant: Some(grant),
            asked: None,
        });
    }
    let slot = desk
        .post(posted(SlotState::Asked))
        .ok_or(RuntimeError::Overloaded)?;
    let mut asking = Asking {
        desk,
        slot,
        armed: true,
    };
    loop {
        match desk.read(slot).state {
            SlotState::Admitted => {
                asking.armed = false;
                grant.hold();
                return Ok(ModelLease {
                    grant: Some(grant),
                    asked: Some((desk, slot)),
                });
            }
            SlotState::Denied => {
                asking.armed = false;
                desk.free(slot);
                return Err(RuntimeError::ModelDenied { model });
            }
            _ => ctx.sleep(USE_POLL).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn use_of(state: SlotState) -> Posted {
        Posted {
            state,
            model: 7,
            class: 2,
            hold_ms: 400,
        }
    }

    #[test]
    fn a_hold_stands_only_on_a_granted_model_and_revoking_counts_holders() {
        let sut = ModelGrant::default();
        assert!(!sut.try_hold());
        assert_eq!(sut.holders(), 0);
        sut.grant();
        assert!(sut.try_hold() && sut.try_hold());
        assert_eq!(sut.revoke(), 2);
        assert!(!sut.try_hold());
        sut.release();
        sut.release();
        assert_eq!((sut.holders(), sut.granted()), (0, false));
    }

    #[test]
    fn a_posted_use_keeps_its_fields_through_every_move() {
        let sut = UseDesk::new(2, 8);
        let a = sut.post(use_of(SlotState::Asked)).unwrap();
        let b = sut.post(use_of(SlotState::Asked)).unwrap();
        assert_ne!(a, b);
        assert_eq!(sut.post(use_of(SlotState::Asked)), None, "two slots");
        assert!(sut.advance(a, SlotState::Asked, SlotState::Waiting));
        assert!(!sut.advance(a, SlotState::Asked, SlotState::Waiting));
        assert!(sut.advance(a, SlotState::Waiting, SlotState::Admitted));
        assert_eq!(sut.read(a), use_of(SlotState::Admitted));
        sut.abandon(a);
        assert_eq!(sut.read(a).state, SlotState::Ended);
        sut.free(a);
        assert_eq!(sut.read(a).state, SlotState::Free);
    }

    #[test]
    fn hits_are_counted_per_model_and_unknown_models_ignored() {
        let sut = UseDesk::new(0, 2);
        sut.count_hit(1);
        sut.count_hit(1);
        sut.count_hit(5);
        assert_eq!((sut.hits(0), sut.hits(1), sut.hits(5)), (0, 2, 0));
    }

    #[test]
    fn abandoning_a_waiting_use_cancels_it_and_a_denied_one_frees_it() {
        let sut = UseDesk::new(1, 0);
        let slot = sut.post(use_of(SlotState::Asked)).unwrap();
        sut.abandon(slot);
        assert_eq!(sut.read(slot).state, SlotState::Cancelled);
        sut.free(slot);
        let slot = sut.post(use_of(SlotState::Asked)).unwrap();
        assert!(sut.advance(slot, SlotState::Asked, SlotState::Waiting));
        assert!(sut.advance(slot, SlotState::Waiting, SlotState::Denied));
        sut.abandon(slot);
        assert_eq!(sut.read(slot).state, SlotState::Free);
    }
}
