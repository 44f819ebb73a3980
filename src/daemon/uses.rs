//! The core loop's side of the model-use desk (`runtime::desk`): each tick,
//! before the VRAM optimizer decides, it tells the optimizer what the
//! executors did since the last tick, and after, it answers the uses that
//! asked.
//!
//! * Uses that ran on a grant: each model's new hits (summed over the
//!   executors' counts) and its holders now go to
//!   [`VramOptimizer::note_held`].
//! * Slots: an `ASKED` use is submitted (`WAITING`); an `ENDED` one is
//!   released and a `CANCELLED` one withdrawn, and both slots freed.
//! * Decisions: `Admit` and `Deny` of a submitted use answer its slot. A
//!   use abandoned meanwhile (its slot `CANCELLED`) is withdrawn instead.
//!
//! Grants follow residency: a model is granted once loaded and revoked
//! before it is evicted ([`UseService::grant`], [`UseService::revoke`]).
//! How long asked uses waited for admission is measured here, in the
//! core loop's milliseconds, for the run report.

use std::collections::HashMap;
use std::sync::Arc;

use hdrhistogram::Histogram;

use crate::gpu::VramOptimizer;
use crate::gpu::vram::{Decision, ModelId, Priority, RequestId, UseRequest};
use crate::latency::{new_histogram, record_ns};
use crate::runtime::board::Board;
use crate::runtime::desk::SlotState;

/// A use submitted for a slot: its request and when it asked.
#[derive(Debug, Clone, Copy)]
struct Submitted {
    request: RequestId,
    asked_ms: u64,
}

/// The core loop's side of the desks.
#[derive(Debug)]
pub struct UseService {
    board: Arc<Board>,
    /// The optimizer's id of each model slot.
    ids: Vec<ModelId>,
    /// Hits already told, per desk and model.
    told: Vec<Vec<u64>>,
    /// Per desk and slot, the use submitted for it.
    submitted: Vec<Vec<Option<Submitted>>>,
    /// Where each submitted use's slot is.
    slots: HashMap<RequestId, (usize, usize)>,
    waits: Histogram<u64>,
}

/// The optimizer's class of a desk's class number.
fn priority(class: u8) -> Priority {
    match class {
        0 => Priority::Batch,
        1 => Priority::Interactive,
        _ => Priority::Realtime,
    }
}

impl UseService {
    /// The service of `board`'s desks; makes every model known to
    /// `optimizer`.
    pub fn new(board: Arc<Board>, optimizer: &mut VramOptimizer) -> Self {
        let ids = board
            .models()
            .iter()
            .map(|m| optimizer.model(&m.name, m.vram_mib))
            .collect();
        let models = board.models().len();
        let told = board.desks().iter().map(|_| vec![0; models]).collect();
        let submitted = board.desks().iter().map(|d| vec![None; d.len()]).collect();
        let slots = HashMap::with_capacity(board.desks().iter().map(|d| d.len()).sum());
        Self {
            board,
            ids,
            told,
            submitted,
            slots,
            waits: new_histogram(),
        }
    }

    /// Takes the desks over: from now on uses are tracked.
    pub fn start(&self) {
        self.board.manage_models();
    }

    /// Tells `optimizer` what the executors did since the last tick.
    pub fn serve(&mut self, now_ms: u64, optimizer: &mut VramOptimizer) {
        for (slot, info) in self.board.models().iter().enumerate() {
            let mut started = 0;
            for (d, desk) in self.board.desks().iter().enumerate() {
                let hits = desk.hits(slot);
                started += hits.saturating_sub(self.told[d][slot]);
                self.told[d][slot] = hits;
            }
            let holding = self.board.grant(slot).map_or(0, |g| g.holders());
            optimizer.note_held(
                now_ms,
                self.ids[slot],
                priority(info.class),
                started,
                holding,
            );
        }
        for d in 0..self.board.desks().len() {
            for s in 0..self.board.desks()[d].len() {
                self.serve_slot(now_ms, optimizer, d, s);
            }
        }
    }

    fn serve_slot(&mut self, now_ms: u64, optimizer: &mut VramOptimizer, d: usize, s: usize) {
        let desk = &self.board.desks()[d];
        let posted = desk.read(s);
        match posted.state {
            SlotState::Asked => {
                let Some(&model) = self.ids.get(usize::from(posted.model)) else {
                    return;
                };
                if !desk.advance(s, SlotState::Asked, SlotState::Waiting) {
                    return;
                }
                let request = optimizer.submit(
                    now_ms,
                    UseRequest {
                        model,
                        vram_mib: self.board.models()[usize::from(posted.model)].vram_mib,
                        priority: priority(posted.class),
                        hold_ms: u64::from(posted.hold_ms),
                    },
                );
                self.submitted[d][s] = Some(Submitted {
                    request,
                    asked_ms: now_ms,
                });
                self.slots.insert(request, (d, s));
            }
            SlotState::Ended | SlotState::Cancelled => {
                if let Some(done) = self.submitted[d][s].take() {
                    self.slots.remove(&done.request);
                    optimizer.withdraw(now_ms, done.request);
                }
                desk.free(s);
            }
            SlotState::Free | SlotState::Waiting | SlotState::Admitted | SlotState::Denied => {}
        }
    }

    /// Answers the uses `decisions` admit or deny.
    pub fn answer(&mut self, now_ms: u64, decisions: &[Decision]) {
        for decision in decisions {
            let (request, to) = match *decision {
                Decision::Admit { request, .. } => (request, SlotState::Admitted),
                Decision::Deny {
                    request: Some(request),
                    ..
                } => (request, SlotState::Denied),
                _ => continue,
            };
            let Some(&(d, s)) = self.slots.get(&request) else {
                continue;
            };
            let desk = &self.board.desks()[d];
            if desk.advance(s, SlotState::Waiting, to) {
                if let Some(asked) = self.submitted[d][s].filter(|_| to == SlotState::Admitted) {
                    record_ns(
                        &mut self.waits,
                        now_ms.saturating_sub(asked.asked_ms) * 1_000_000,
                    );
                }
                if to == SlotState::Denied {
                    self.submitted[d][s] = None;
                    self.slots.remove(&request);
                }
            }
            // Otherwise it was abandoned while it waited: the next serve
            // withdraws it (releasing the admission) and frees the slot.
        }
    }

    /// Grants every resident model and revokes every other (a GPU lost,
    /// a load failed): the grants follow the optimizer's books.
    pub fn sync(&self, optimizer: &VramOptimizer) {
        for (slot, &id) in self.ids.iter().enumerate() {
            let Some(grant) = self.board.grant(slot) else {
                continue;
            };
            match (optimizer.resident(id).is_some(), grant.granted()) {
                (true, false) => grant.grant(),
                (false, true) => {
                    grant.revoke();
                }
                _ => {}
            }
        }
    }

    /// The board slot of the optimizer's `model`, if the manifests name it.
    fn slot_of(&self, model: ModelId) -> Option<usize> {
        self.ids.iter().position(|&id| id == model)
    }

    /// `model` is resident: uses may start on it without asking.
    pub fn grant(&self, model: ModelId) {
        if let Some(grant) = self.slot_of(model).and_then(|s| self.board.grant(s)) {
            grant.grant();
        }
    }

    /// `model` is about to go: no new use may start on it. Returns how
    /// many uses still hold it (its unload waits for them).
    pub fn revoke(&self, model: ModelId) -> u32 {
        self.slot_of(model)
            .and_then(|s| self.board.grant(s))
            .map_or(0, |g| g.revoke())
    }

    /// Uses holding `model` now.
    pub fn holders(&self, model: ModelId) -> u32 {
        self.slot_of(model)
            .and_then(|s| self.board.grant(s))
            .map_or(0, |g| g.holders())
    }

    /// How long asked uses waited for admission, ns.
    pub fn waits(&self) -> &Histogram<u64> {
        &self.waits
    }
}
