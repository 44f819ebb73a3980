//! What an agent is to the runtime: the [`Agent`] trait, and the
//! [`Message`]s handed to it.
//!
//! An agent is a value shared by its workers (`concurrency` of them, each
//! a task on the agent's executor), so its methods take `&self` and keep
//! state in cells. `handle` is called once per message; it answers
//! requests with [`super::Ctx::reply`], and may call other agents, publish,
//! or sleep. The daemon runs several kinds of agent through one enum that
//! implements the trait, so handlers are dispatched statically: no boxed
//! future per message.

use std::cell::Ref;
use std::future::Future;

use super::RuntimeError;
use super::ctx::Ctx;
use super::pool::FrameBuf;
use pinwheel_ipc::wire::{
    self, AgentId, ArchivedEnvelope, Payload, PayloadKind, Priority, TopicId,
};

/// A native or synthetic agent.
pub trait Agent {
    /// Runs once before the agent takes messages (and again after a
    /// restart): registration, preparing state. By default, nothing.
    fn start(&self, ctx: &Ctx) -> impl Future<Output = Result<(), RuntimeError>> {
        let _ = ctx;
        async { Ok(()) }
    }

    /// Handles one message. An error counts against the agent with its
    /// supervisor; an unanswered request is answered as failed. By
    /// default every message is dropped (so every request fails): for
    /// agents that only send.
    fn handle(&self, ctx: &Ctx, msg: &Message) -> impl Future<Output = Result<(), RuntimeError>> {
        let _ = (ctx, msg);
        async { Ok(()) }
    }

    /// Forgets the agent's state before a restart. By default there is
    /// none.
    fn reset(&self) {}

    /// The agent's own activity besides answering messages (a generator,
    /// periodic heartbeats), run on its executor once it has started; it
    /// should end soon after [`Ctx::draining`] turns true.
    fn run(&self, ctx: &Ctx) -> impl Future<Output = ()> {
        let _ = ctx;
        async {}
    }
}

/// The fixed fields of a message, decoded once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Sender.
    pub from: AgentId,
    /// Receiver.
    pub to: AgentId,
    /// Topic of an event.
    pub topic: TopicId,
    /// Correlation id.
    pub correlation: u64,
    /// Priority.
    pub priority: Priority,
    /// When it was sent (sender's CLOCK_MONOTONIC ns).
    pub sent_ns: u64,
    /// Deadline (sender's CLOCK_MONOTONIC ns); 0 for none.
    pub deadline_ns: u64,
    /// What it carries.
    pub kind: PayloadKind,
    /// A request's method or a reply's status; 0 otherwise.
    pub code: u16,
    /// A heartbeat's sequence number; 0 otherwise.
    pub seq: u64,
}

impl Head {
    /// The fixed fields of a checked envelope.
    pub fn of(env: &ArchivedEnvelope<'_>) -> Self {
        let (code, seq) = match env.to_envelope().payload {
            Payload::Request { method, .. } => (method, 0),
            Payload::Reply { status, .. } => (status, 0),
            Payload::Heartbeat { seq } => (0, seq),
            _ => (0, 0),
        };
        Self {
            from: env.from(),
            to: env.to(),
            topic: env.topic(),
            correlation: env.correlation(),
            priority: env.priority(),
            sent_ns: env.sent_ns(),
            deadline_ns: env.deadline_ns(),
            kind: env.kind(),
            code,
            seq,
        }
    }
}

/// A message: its head, and its frame for the body.
#[derive(Debug)]
pub struct Message {
    head: Head,
    frame: FrameBuf,
    /// Where the body lies in the frame, found by the one checked decode
    /// in [`Message::new`], so reading it or answering does not decode
    /// again.
    body: std::ops::Range<usize>,
}

impl Message {
    /// Wraps a frame from an inbox or a reply; frames there are valid
    /// envelopes (checked when they arrived on a ring, or encoded here).
    pub fn new(frame: FrameBuf) -> Result<Self, RuntimeError> {
        let (head, body) = {
            let bytes = frame.bytes();
            let env = wire::decode(&bytes).map_err(|source| RuntimeError::Decode {
                source: Box::new(source),
            })?;
            (Head::of(env), body_range(&bytes, env.body()))
        };
        Ok(Self { head, frame, body })
    }

    /// The fixed fields.
    pub fn head(&self) -> &Head {
        &self.head
    }

    /// Reads the envelope in place (its strings, out-of-line payloads).
    pub fn with_envelope<R>(&self, read: impl FnOnce(&ArchivedEnvelope<'_>) -> R) -> R {
        let bytes = self.frame.bytes();
        read(wire::decode(&bytes).expect("Message::new checked this frame"))
    }

    /// The whole frame: a valid envelope, to forward as it is.
    pub fn bytes(&self) -> Ref<'_, [u8]> {
        self.frame.bytes()
    }

    /// The body of a request, reply or event.
    pub fn body(&self) -> Ref<'_, [u8]> {
        Ref::map(self.frame.bytes(), |bytes| &bytes[self.body.clone()])
    }
}

/// Where `body`, a slice of `bytes`, lies in it (empty when it is not in
/// it: an empty body need not point into the frame).
fn body_range(bytes: &[u8], body: &[u8]) -> std::ops::Range<usize> {
    let start = body.as_ptr().addr().wrapping_sub(bytes.as_ptr().addr());
    match start.checked_add(body.len()) {
        Some(end) if !body.is_empty() && end <= bytes.len() => start..end,
        _ => 0..0,
    }
}
