//! Model uses: [`Agent::model`] asks the daemon's VRAM optimizer for a GPU
//! model before the agent serves with it, and the [`ModelGuard`] it
//! returns holds the model (the optimizer never evicts a held model)
//! until it is dropped.
//!
//! ```no_run
//! # let agent = pinwheel_agent::Agent::from_env()?;
//! # let request = agent.recv(std::time::Duration::from_secs(1))?.unwrap();
//! let whisper = agent.model("whisper-large-v3")?; // waits for a load if need be
//! // ... run the model ...
//! drop(whisper); // the daemon may evict it again
//! request.reply(0, b"transcript")?;
//! # Ok::<(), pinwheel_agent::AgentError>(())
//! ```
//!
//! On the link (`pinwheel_ipc::link`): `ModelUse { id, model }` out, one
//! `ModelGranted { id }` or `ModelDenied { id, reason }` back, and
//! `ModelRelease { id }` out when the guard drops, or when the agent gives
//! up waiting (then the daemon withdraws the use, or releases it if it was
//! granted meanwhile). `id` counts up per agent. The wait is part of the
//! request's latency, as for an in-daemon agent. The daemon releases every
//! use an agent holds when its link closes (it exited, was killed or
//! disconnected), and refuses more than its bound of uses open at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pinwheel_ipc::link::LinkMessage;

use crate::{Agent, AgentError};

/// How long [`Agent::model`] waits for the optimizer's answer.
pub const MODEL_WAIT: Duration = Duration::from_secs(30);

/// A granted use of a GPU model; the model stays resident while this
/// lives, and is released when it is dropped.
#[derive(Debug)]
#[must_use = "the model is released as soon as the guard is dropped"]
pub struct ModelGuard {
    agent: Agent,
    id: u32,
    model: Arc<str>,
}

impl ModelGuard {
    /// The model held.
    pub fn model(&self) -> &str {
        &self.model
    }
}

impl Drop for ModelGuard {
    fn drop(&mut self) {
        // A daemon that is gone released it already.
        let _ = self
            .agent
            .send_link(&LinkMessage::ModelRelease { id: self.id });
    }
}

/// A use asked for and not answered yet. While it lives the reader reads
/// the link on every pass; dropped unanswered (a timeout, a dropped
/// future), it gives the use up.
#[derive(Debug)]
pub(crate) struct Asking {
    agent: Agent,
    id: u32,
    model: Arc<str>,
    answered: bool,
}

impl Asking {
    /// Asks the daemon for `model`.
    pub(crate) fn start(agent: &Agent, model: &str) -> Result<Self, AgentError> {
        let id = agent.next_use_id();
        {
            let mut input = agent.input();
            if let Some(err) = &input.gone {
                return Err(err.clone());
            }
            input.uses_asked.insert(id);
            input.link_waiters += 1;
        }
        let asking = Self {
            agent: agent.clone(),
            id,
            model: model.into(),
            answered: false,
        };
        agent.send_link(&LinkMessage::ModelUse {
            id,
            model: model.to_owned(),
        })?;
        Ok(asking)
    }

    /// The use's number.
    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    /// The guard for a grant, the error for a denial. Call without the
    /// input locked.
    pub(crate) fn finish(mut self, answer: Result<(), String>) -> Result<ModelGuard, AgentError> {
        self.answered = true;
        match answer {
            Ok(()) => Ok(ModelGuard {
                agent: self.agent.clone(),
                id: self.id,
                model: Arc::clone(&self.model),
            }),
            Err(reason) => Err(AgentError::ModelDenied {
                model: self.model.to_string(),
                reason,
            }),
        }
    }
}

impl Drop for Asking {
    fn drop(&mut self) {
        let mut input = self.agent.input();
        input.link_waiters -= 1;
        if self.answered {
            return;
        }
        input.uses_asked.remove(&self.id);
        input.uses_answered.remove(&self.id);
        drop(input);
        let _ = self
            .agent
            .send_link(&LinkMessage::ModelRelease { id: self.id });
    }
}

impl Agent {
    /// Asks for GPU model `model` (one the manifest's `models` names) and
    /// waits up to [`MODEL_WAIT`] for the VRAM optimizer: the guard holds
    /// the model until dropped. [`AgentError::ModelDenied`] when refused
    /// (not in the manifest, larger than any GPU, too many uses open),
    /// [`AgentError::Timeout`] when no answer came.
    pub fn model(&self, model: &str) -> Result<ModelGuard, AgentError> {
        self.model_within(model, MODEL_WAIT)
    }

    /// [`Agent::model`], waiting up to `timeout`.
    pub fn model_within(&self, model: &str, timeout: Duration) -> Result<ModelGuard, AgentError> {
        let deadline = Instant::now() + timeout;
        let asking = Asking::start(self, model)?;
        let id = asking.id();
        match self.wait_for(deadline, |input| input.uses_answered.remove(&id))? {
            Some(answer) => asking.finish(answer),
            None => Err(AgentError::Timeout {
                waited_ms: timeout.as_millis() as u64,
            }),
        }
    }
}
