//! A call in flight: its request sent, its reply not yet taken.
//!
//! [`Agent::send_call`] sends the request and registers its correlation as
//! waited for; [`PendingCall::wait`] waits for the reply in pieces as short
//! as the caller likes (the Python package checks for Ctrl-C between
//! them), and dropping the [`PendingCall`], by whatever way (an answer, a
//! timeout, an error, an interrupt, a dropped future), forgets the
//! correlation: a reply that comes after is dropped by the reader instead
//! of being filed for no one.

use std::time::{Duration, Instant};

#[cfg(feature = "async")]
use crate::inbox::Input;
use crate::{Agent, AgentError, Reply};

/// A call sent and not answered yet ([`Agent::send_call`]).
#[derive(Debug)]
pub struct PendingCall {
    agent: Agent,
    correlation: u64,
    deadline: Instant,
    timeout: Duration,
}

impl PendingCall {
    /// The call with `correlation`, sent by `agent`, waited for up to
    /// `timeout` from now.
    pub(crate) fn new(agent: Agent, correlation: u64, timeout: Duration) -> Self {
        let now = Instant::now();
        Self {
            agent,
            correlation,
            deadline: now
                .checked_add(timeout)
                .unwrap_or(now + Duration::from_secs(86_400 * 365)),
            timeout,
        }
    }

    /// Waits up to `patience` (never past the call's deadline) for the
    /// reply, whatever its status. `Ok(None)`: no reply yet and the
    /// deadline not reached; [`AgentError::Timeout`] once it is.
    pub fn wait(&self, patience: Duration) -> Result<Option<Reply>, AgentError> {
        let until = Instant::now()
            .checked_add(patience)
            .map_or(self.deadline, |until| until.min(self.deadline));
        let found = self
            .agent
            .wait_for(until, |input| input.replies.remove(&self.correlation))?;
        match found {
            Some((status, body)) => Ok(Some(Reply { status, body })),
            None if Instant::now() >= self.deadline => Err(self.timed_out()),
            None => Ok(None),
        }
    }

    /// The reply if it came, the error if the link broke or the deadline
    /// passed, else `None` (the async API's poll, which holds `input`
    /// locked from this check until its waker is filed).
    #[cfg(feature = "async")]
    pub(crate) fn check(&self, input: &mut Input) -> Option<Result<Reply, AgentError>> {
        if let Some((status, body)) = input.replies.remove(&self.correlation) {
            return Some(Ok(Reply { status, body }));
        }
        if let Some(err) = &input.gone {
            return Some(Err(err.clone()));
        }
        (Instant::now() >= self.deadline).then(|| Err(self.timed_out()))
    }

    fn timed_out(&self) -> AgentError {
        AgentError::Timeout {
            waited_ms: self.timeout.as_millis() as u64,
        }
    }
}

impl Drop for PendingCall {
    fn drop(&mut self) {
        let mut input = self.agent.input();
        input.waiting.remove(&self.correlation);
        input.replies.remove(&self.correlation);
    }
}
