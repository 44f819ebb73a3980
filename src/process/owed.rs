//! What a welcomed incarnation of an agent process is owed on its link,
//! sent each core-loop tick (`ProcessSide::tick`): the answers the VRAM
//! optimizer gave to its model uses (`uses.rs`), and the drill the board
//! holds for it whenever that differs from the last one it was sent (the
//! welcome carried the one in force then).
//!
//! Nothing here blocks: an answer that does not fit in the link is a
//! fault (the agent does not read it), a drill that does not fit is sent
//! again next tick.

use pinwheel_ipc::link::LinkMessage;
use pinwheel_ipc::ring::RingError;
use pinwheel_ipc::wire::AgentId;
use tracing::info;

use super::link::{self, LinkFault};
use super::managed::{Env, Managed};
use crate::runtime::board::Board;

impl Managed {
    /// Sends a welcomed incarnation what it is owed: answers to its model
    /// uses, and the drill in force when it changed.
    pub fn sync(&mut self, env: &mut Env<'_>) -> Result<(), LinkFault> {
        if self.welcomed_link().is_none() {
            return Ok(());
        }
        let mut answers = Vec::new();
        self.uses.poll(env.board, &mut answers);
        if let Some(link) = self.welcomed_link() {
            for answer in &answers {
                link::send(link, answer)?;
            }
        }
        self.send_drill(env.board)
    }

    /// Sends the drill in force if the incarnation was sent another; one
    /// that does not fit in its link now is sent next tick.
    fn send_drill(&mut self, board: &Board) -> Result<(), LinkFault> {
        let Some(link) = self.welcomed_link() else {
            return Ok(());
        };
        let drill = board.drill(AgentId(self.facts.agent));
        if drill == self.drill_sent {
            return Ok(());
        }
        match link.try_send_message(&LinkMessage::Drill(drill)) {
            Ok(true) => {
                info!(agent = %self.name, fault = %drill, "fault drill sent to the agent");
                self.drill_sent = drill;
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(RingError::PeerGone) => Err(LinkFault::Gone),
            Err(err) => Err(LinkFault::Corrupt(err.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_drilled_agent_process_fails_a_request_with_the_status_a_synthetic_agent_does() {
        assert_eq!(
            pinwheel_ipc::drill::STATUS_DRILL_ERROR,
            crate::runtime::node::STATUS_FAILED
        );
    }
}
