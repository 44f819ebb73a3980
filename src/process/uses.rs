//! An agent process's GPU model uses, as the control side keeps them: what
//! it does for `ModelUse` and `ModelRelease` on the agent's link
//! (`pinwheel_ipc::link`), through the board's agent-process desk
//! (`runtime::desk`), as an in-daemon agent does through its executor's.
//!
//! * Asked: the model must be one the agent's manifest `models` names,
//!   and the agent may have at most [`MAX_PROCESS_USES`] uses open; else
//!   it is denied with the reason. While the core loop does not manage
//!   the models (no GPU here, or not yet) a use is granted at once and
//!   nothing is held, as in-daemon uses run untracked. A model whose grant
//!   stands is held at once (a hit, counted on the desk); otherwise the use
//!   is posted `ASKED` in a slot and answered when the core loop has
//!   (`poll`, each tick): `ADMITTED` is held and granted, `DENIED` freed
//!   and denied.
//! * Released: the hold is let go and an asked slot abandoned (`ENDED`
//!   or `CANCELLED`: the core loop releases or withdraws it, and frees the
//!   slot). A release of a use still asking withdraws it.
//! * The incarnation ends (exit, kill, disconnect, stop): every use it
//!   held or asked for is released the same way ([`ModelUses::release_all`]),
//!   so nothing stays resident on its account.
//!
//! The desk has two slots per agent process with models and per use it
//! may have open: one for each use asking or held after asking, one for
//! each ended in this tick, which the core loop frees in its next tick
//! before the processes' (an agent that ends uses faster than that is
//! refused until then, [`ModelUses::new_tick`]). So a misbehaving agent
//! can never take another's slots.

use pinwheel_ipc::link::LinkMessage;

use crate::runtime::board::Board;
use crate::runtime::desk::{MAX_PROCESS_USES, Posted, SlotState};

/// One open use.
#[derive(Debug, Clone, Copy)]
struct Use {
    /// The agent's number for it.
    id: u32,
    /// The model's slot on the board.
    model: u16,
    /// Whether it holds the model's grant.
    held: bool,
    /// The desk slot of a use that had to ask.
    slot: Option<usize>,
}

/// One agent process's uses.
#[derive(Debug, Clone, Default)]
pub struct ModelUses {
    /// The board slots of the models its manifest names.
    allowed: Vec<u16>,
    /// Its uses' class (0 batch, 1 interactive, 2 realtime).
    class: u8,
    /// How long it is expected to hold a model, ms.
    hold_ms: u32,
    open: Vec<Use>,
    /// Asked slots it ended since the last tick.
    ended: usize,
}

/// Why a use message broke the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UseFault(pub String);

impl ModelUses {
    /// The uses of an agent whose manifest names the board's model slots
    /// `allowed`.
    pub fn new(allowed: Vec<u16>, class: u8, hold_ms: u32) -> Self {
        Self {
            allowed,
            class,
            hold_ms: hold_ms.max(1),
            open: Vec::new(),
            ended: 0,
        }
    }

    /// A new core-loop tick: the slots it ended before are free again.
    pub fn new_tick(&mut self) {
        self.ended = 0;
    }

    /// Use `id` of `model` asked: the answer now, or `None` when it waits
    /// for the optimizer; `Err` when `id` is already open.
    pub fn ask(
        &mut self,
        board: &Board,
        id: u32,
        model: &str,
    ) -> Result<Option<LinkMessage>, UseFault> {
        if self.open.iter().any(|u| u.id == id) {
            return Err(UseFault(format!("model use {id} asked for twice")));
        }
        let denied = |reason: String| Ok(Some(LinkMessage::ModelDenied { id, reason }));
        let Some(slot) = self.slot_of(board, model) else {
            return denied(format!(
                "model {model:?} is not one of this agent's `models` in its manifest"
            ));
        };
        if self.open.len() >= MAX_PROCESS_USES {
            return denied(format!(
                "{MAX_PROCESS_USES} model uses are open already, the most an agent may have"
            ));
        }
        let granted = Ok(Some(LinkMessage::ModelGranted { id }));
        let (Some(grant), Some(desk)) = (board.grant(usize::from(slot)), board.process_desk())
        else {
            return denied(format!("model {model:?} has no grant here"));
        };
        let mut open = Use {
            id,
            model: slot,
            held: false,
            slot: None,
        };
        if !board.models_managed() {
            self.open.push(open);
            return granted;
        }
        if grant.try_hold() {
            desk.count_hit(slot);
            open.held = true;
            self.open.push(open);
            return granted;
        }
        if self.ended >= MAX_PROCESS_USES {
            return denied("model uses ended and asked again too fast; retry".into());
        }
        let Some(at) = desk.post(self.posted(slot)) else {
            return denied("the agent processes' use desk is full".into());
        };
        open.slot = Some(at);
        self.open.push(open);
        Ok(None)
    }

    /// The board slot of `model`, if the agent's manifest names it.
    fn slot_of(&self, board: &Board, model: &str) -> Option<u16> {
        self.allowed.iter().copied().find(|&m| {
            board
                .models()
                .get(usize::from(m))
                .is_some_and(|i| i.name == model)
        })
    }

    /// A use of model slot `slot` as it asks on the desk.
    fn posted(&self, slot: u16) -> Posted {
        Posted {
            state: SlotState::Asked,
            model: slot,
            class: self.class,
            hold_ms: self.hold_ms,
        }
    }

    /// The answers the optimizer gave since the last tick.
    pub fn poll(&mut self, board: &Board, answers: &mut Vec<LinkMessage>) {
        let Some(desk) = board.process_desk() else {
            return;
        };
        let mut i = 0;
        while i < self.open.len() {
            let open = &mut self.open[i];
            let waiting = open.slot.filter(|_| !open.held);
            match waiting.map(|s| desk.read(s).state) {
                Some(SlotState::Admitted) => {
                    if let Some(grant) = board.grant(usize::from(open.model)) {
                        grant.hold();
                    }
                    open.held = true;
                    answers.push(LinkMessage::ModelGranted { id: open.id });
                }
                Some(SlotState::Denied) => {
                    if let Some(slot) = open.slot {
                        desk.free(slot);
                    }
                    let name = board
                        .models()
                        .get(usize::from(open.model))
                        .map_or("?", |m| m.name.as_str());
                    answers.push(LinkMessage::ModelDenied {
                        id: open.id,
                        reason: format!(
                            "the VRAM optimizer refused model {name:?}: larger than any GPU \
                             here can hold, no GPU left, or its wait queue is full"
                        ),
                    });
                    self.open.swap_remove(i);
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
    }

    /// Use `id` is over or given up; an id not open (denied meanwhile) is
    /// ignored.
    pub fn release(&mut self, board: &Board, id: u32) {
        if let Some(i) = self.open.iter().position(|u| u.id == id) {
            let open = self.open.swap_remove(i);
            self.end(board, open);
        }
    }

    /// Releases every open use (the incarnation ended).
    pub fn release_all(&mut self, board: &Board) {
        for open in std::mem::take(&mut self.open) {
            self.end(board, open);
        }
    }

    fn end(&mut self, board: &Board, open: Use) {
        if open.held
            && let Some(grant) = board.grant(usize::from(open.model))
        {
            grant.release();
        }
        if let (Some(slot), Some(desk)) = (open.slot, board.process_desk()) {
            desk.abandon(slot);
            self.ended += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::runtime::board::ModelInfo;

    use super::*;

    fn board() -> Board {
        let model = |name: &str| ModelInfo {
            name: name.into(),
            vram_mib: 1000,
            class: 1,
        };
        let sut = Board::new(1, vec![model("a"), model("b")], &[], 2 * MAX_PROCESS_USES);
        sut.manage_models();
        sut
    }

    fn answer(id: u32) -> LinkMessage {
        LinkMessage::ModelGranted { id }
    }

    #[test]
    fn a_granted_model_is_held_at_once_and_let_go_on_release() {
        let board = board();
        board.grant(0).unwrap().grant();
        let mut sut = ModelUses::new(vec![0], 1, 5);
        assert_eq!(sut.ask(&board, 1, "a"), Ok(Some(answer(1))));
        assert_eq!(board.grant(0).unwrap().holders(), 1);
        assert_eq!(board.process_desk().unwrap().hits(0), 1);
        sut.release(&board, 1);
        sut.release(&board, 1);
        assert_eq!((board.grant(0).unwrap().holders(), sut.open.len()), (0, 0));
    }

    #[test]
    fn an_asked_use_is_answered_when_the_core_loop_decides_and_held_until_released() {
        let board = board();
        let desk = board.process_desk().unwrap();
        let mut sut = ModelUses::new(vec![0, 1], 2, 5);
        assert_eq!(sut.ask(&board, 7, "b"), Ok(None));
        let mut answers = Vec::new();
        sut.poll(&board, &mut answers);
        assert!(answers.is_empty());
        let slot = (0..desk.len())
            .find(|&s| desk.read(s).state == SlotState::Asked)
            .unwrap();
        assert_eq!((desk.read(slot).model, desk.read(slot).class), (1, 2));
        assert!(desk.advance(slot, SlotState::Asked, SlotState::Waiting));
        assert!(desk.advance(slot, SlotState::Waiting, SlotState::Admitted));
        sut.poll(&board, &mut answers);
        assert_eq!(answers, vec![answer(7)]);
        assert_eq!(board.grant(1).unwrap().holders(), 1);
        sut.release_all(&board);
        assert_eq!(board.grant(1).unwrap().holders(), 0);
        assert_eq!(desk.read(slot).state, SlotState::Ended);
    }

    #[test]
    fn a_denied_use_frees_its_slot_and_a_withdrawn_one_is_cancelled() {
        let board = board();
        let desk = board.process_desk().unwrap();
        let mut sut = ModelUses::new(vec![0], 1, 5);
        assert_eq!(sut.ask(&board, 1, "a"), Ok(None));
        assert!(desk.advance(0, SlotState::Asked, SlotState::Waiting));
        assert!(desk.advance(0, SlotState::Waiting, SlotState::Denied));
        let mut answers = Vec::new();
        sut.poll(&board, &mut answers);
        assert!(matches!(
            answers[..],
            [LinkMessage::ModelDenied { id: 1, .. }]
        ));
        assert_eq!((desk.read(0).state, sut.open.len()), (SlotState::Free, 0));
        assert_eq!(sut.ask(&board, 2, "a"), Ok(None));
        sut.release(&board, 2);
        assert_eq!(desk.read(0).state, SlotState::Cancelled);
    }

    #[test]
    fn models_outside_the_manifest_too_many_uses_and_reused_ids_are_refused() {
        let board = board();
        board.grant(0).unwrap().grant();
        let mut sut = ModelUses::new(vec![0], 1, 5);
        let denied = |r: Result<Option<LinkMessage>, UseFault>| {
            matches!(r, Ok(Some(LinkMessage::ModelDenied { .. })))
        };
        assert!(denied(sut.ask(&board, 1, "b")));
        assert!(denied(sut.ask(&board, 1, "nope")));
        for id in 0..MAX_PROCESS_USES as u32 {
            assert_eq!(sut.ask(&board, id, "a"), Ok(Some(answer(id))));
        }
        assert!(sut.ask(&board, 3, "a").is_err());
        assert!(denied(sut.ask(&board, 99, "a")));
        sut.release_all(&board);
        assert_eq!(board.grant(0).unwrap().holders(), 0);
    }

    #[test]
    fn uses_ended_faster_than_the_core_loop_frees_slots_are_refused_until_the_next_tick() {
        let board = board();
        let mut sut = ModelUses::new(vec![0], 1, 5);
        for id in 0..MAX_PROCESS_USES as u32 {
            assert_eq!(sut.ask(&board, id, "a"), Ok(None));
            sut.release(&board, id);
        }
        assert!(matches!(
            sut.ask(&board, 100, "a"),
            Ok(Some(LinkMessage::ModelDenied { .. }))
        ));
        sut.new_tick();
        let desk = board.process_desk().unwrap();
        for slot in 0..desk.len() {
            desk.free(slot);
        }
        assert_eq!(sut.ask(&board, 101, "a"), Ok(None));
    }

    #[test]
    fn while_models_are_not_managed_a_use_is_granted_and_holds_nothing() {
        let model = ModelInfo {
            name: "a".into(),
            vram_mib: 1,
            class: 0,
        };
        let board = Board::new(1, vec![model], &[], 2);
        let mut sut = ModelUses::new(vec![0], 0, 1);
        assert_eq!(sut.ask(&board, 1, "a"), Ok(Some(answer(1))));
        assert_eq!(board.grant(0).unwrap().holders(), 0);
        sut.release_all(&board);
        assert_eq!(board.grant(0).unwrap().holders(), 0);
    }
}
