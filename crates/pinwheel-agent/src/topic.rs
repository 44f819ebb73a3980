//! Subscriptions: [`Agent::subscribe`] to one of the manifest's
//! `subscribes`, and the [`Event`]s heard on it, which the reader queues
//! per topic (bounded, see `inbox.rs`) until taken.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::agent::find;
use crate::{Agent, AgentError};

/// An event heard on a subscribed topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The topic.
    pub topic: Arc<str>,
    /// The publisher's body.
    pub body: Vec<u8>,
}

/// A subscription to one of the agent's topics.
#[derive(Debug, Clone)]
pub struct Subscription {
    agent: Agent,
    topic: u32,
    name: Arc<str>,
}

impl Agent {
    /// Subscribes to `topic` (one of its manifest's `subscribes`: the
    /// daemon routes those topics to it from the start, and events are
    /// queued until taken).
    pub fn subscribe(&self, topic: &str) -> Result<Subscription, AgentError> {
        let id = find(&self.facts().subscribes, topic).ok_or_else(|| AgentError::NotAllowed {
            reason: format!(
                "agent {} does not hear {topic:?}: add it to `subscribes` in the manifest",
                self.name()
            ),
        })?;
        Ok(Subscription {
            agent: self.clone(),
            topic: id,
            name: topic.into(),
        })
    }
}

impl Subscription {
    /// The topic.
    pub fn topic(&self) -> &str {
        &self.name
    }

    /// Waits up to `timeout` for the next event on the topic.
    pub fn recv(&self, timeout: Duration) -> Result<Option<Event>, AgentError> {
        let topic = self.topic;
        let body = self.agent.wait_for(Instant::now() + timeout, |input| {
            input.events.get_mut(&topic).and_then(|q| q.pop_front())
        })?;
        Ok(body.map(|body| Event {
            topic: Arc::clone(&self.name),
            body,
        }))
    }
}
