//! The message types: [`Envelope`] and its [`Payload`], and their archived
//! (on-the-wire) forms that rkyv derives.
//!
//! The sending side builds an `Envelope<'a>` that borrows its body and
//! strings (`&'a [u8]`, `&'a str`), archived through
//! [`rkyv::with::InlineAsBox`], so building and sending a message allocates
//! nothing. The receiving side reads the archived form in place
//! ([`ArchivedEnvelope`], borrowed from the frame) through the accessors
//! below; [`ArchivedEnvelope::to_envelope`] turns it back into an
//! `Envelope` that borrows from the frame, again without allocating.
//!
//! Invariants:
//! * Every field has a fixed-width, little-endian archived form (rkyv's
//!   default), so a frame means the same on every host of a cluster.
//! * A change to any type here changes the archived layout: bump
//!   [`WIRE_VERSION`](super::WIRE_VERSION). The golden-bytes test in
//!   `version.rs` fails until you do.
//!
//! This file does not encode or check bytes; `codec.rs` does.

use core::fmt;

use rkyv::with::InlineAsBox;
use rkyv::{Archive, Deserialize, Serialize};

/// An agent of the mesh, numbered by the plan.
#[derive(
    Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[rkyv(derive(Debug))]
pub struct AgentId(pub u32);

/// A topic events are published on; [`TopicId::NONE`] (0) when a message has
/// none.
#[derive(
    Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[rkyv(derive(Debug))]
pub struct TopicId(pub u32);

impl TopicId {
    /// No topic: requests, replies and heartbeats.
    pub const NONE: TopicId = TopicId(0);
}

/// How urgently a message should be handled; receivers serve higher
/// priorities first. Archived as one byte.
#[derive(
    Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[rkyv(derive(Debug, Clone, Copy, PartialEq, Eq))]
#[repr(u8)]
pub enum Priority {
    /// Drop everything else (voice barge-in, shutdown).
    Critical = 0,
    /// Interactive work a user waits on.
    High = 1,
    /// The default.
    Normal = 2,
    /// Background work (learning, monitoring).
    Low = 3,
}

/// What a message carries. Bodies and strings are borrowed, never owned.
#[derive(Archive, Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload<'a> {
    /// A call to the receiver's `method`.
    Request {
        /// The method, numbered by the receiving agent.
        method: u16,
        /// The arguments, in the agent's own encoding.
        #[rkyv(with = InlineAsBox)]
        body: &'a [u8],
    },
    /// The answer to a [`Payload::Request`] with the same correlation id.
    Reply {
        /// 0 for success; otherwise the agent's own code.
        status: u16,
        /// The result, in the agent's own encoding.
        #[rkyv(with = InlineAsBox)]
        body: &'a [u8],
    },
    /// A publication on the envelope's topic.
    Event {
        /// The event, in the publisher's own encoding.
        #[rkyv(with = InlineAsBox)]
        body: &'a [u8],
    },
    /// A liveness beat; `seq` counts up by one per beat.
    Heartbeat {
        /// The beat's sequence number.
        seq: u64,
    },
    /// Ask the GPU scheduler for room to run `model`.
    GpuJob {
        /// The model to load or run.
        #[rkyv(with = InlineAsBox)]
        model: &'a str,
        /// VRAM the job needs, MiB.
        vram_mib: u64,
        /// The scheduler's priority, 0 highest.
        priority: u8,
        /// How long the job keeps its VRAM after it finishes, ms.
        hold_ms: u32,
    },
    /// The scheduler's answer: where `model` runs.
    GpuPlacement {
        /// The model placed.
        #[rkyv(with = InlineAsBox)]
        model: &'a str,
        /// The host it runs on.
        #[rkyv(with = InlineAsBox)]
        host: &'a str,
        /// The GPU index on that host.
        gpu: u32,
        /// VRAM reserved for it, MiB.
        vram_mib: u64,
        /// Whether the optimizer may never evict it.
        pinned: bool,
        /// The scheduler's epoch the decision belongs to; later wins.
        epoch: u64,
    },
    /// An error an agent reports to the error bus.
    ErrorReport {
        /// The agent's own error code.
        code: u32,
        /// The agent the error is about (not always the sender).
        agent: AgentId,
        /// What happened, for an operator.
        #[rkyv(with = InlineAsBox)]
        message: &'a str,
    },
}

/// A message between two agents: addressing, timing and a [`Payload`].
///
/// Times are `CLOCK_MONOTONIC` nanoseconds of the sending host.
#[derive(Archive, Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope<'a> {
    /// The sender.
    pub from: AgentId,
    /// The receiver.
    pub to: AgentId,
    /// The topic of an event; [`TopicId::NONE`] otherwise.
    pub topic: TopicId,
    /// Ties a reply to its request; chosen by the requester.
    pub correlation: u64,
    /// How urgently to handle it.
    pub priority: Priority,
    /// When it was sent.
    pub sent_ns: u64,
    /// When it stops being useful; 0 for no deadline.
    pub deadline_ns: u64,
    /// What it carries.
    pub payload: Payload<'a>,
}

/// Which kind of [`Payload`] a message carries, without its fields: for
/// routing tables and per-kind counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PayloadKind {
    /// [`Payload::Request`].
    Request,
    /// [`Payload::Reply`].
    Reply,
    /// [`Payload::Event`].
    Event,
    /// [`Payload::Heartbeat`].
    Heartbeat,
    /// [`Payload::GpuJob`].
    GpuJob,
    /// [`Payload::GpuPlacement`].
    GpuPlacement,
    /// [`Payload::ErrorReport`].
    ErrorReport,
}

impl Payload<'_> {
    /// The kind of this payload.
    pub fn kind(&self) -> PayloadKind {
        match self {
            Payload::Request { .. } => PayloadKind::Request,
            Payload::Reply { .. } => PayloadKind::Reply,
            Payload::Event { .. } => PayloadKind::Event,
            Payload::Heartbeat { .. } => PayloadKind::Heartbeat,
            Payload::GpuJob { .. } => PayloadKind::GpuJob,
            Payload::GpuPlacement { .. } => PayloadKind::GpuPlacement,
            Payload::ErrorReport { .. } => PayloadKind::ErrorReport,
        }
    }
}

impl ArchivedAgentId {
    /// The id, in native byte order.
    pub fn get(&self) -> AgentId {
        AgentId(self.0.to_native())
    }
}

impl ArchivedTopicId {
    /// The id, in native byte order.
    pub fn get(&self) -> TopicId {
        TopicId(self.0.to_native())
    }
}

impl ArchivedPriority {
    /// The priority as a native value.
    pub fn get(&self) -> Priority {
        match self {
            ArchivedPriority::Critical => Priority::Critical,
            ArchivedPriority::High => Priority::High,
            ArchivedPriority::Normal => Priority::Normal,
            ArchivedPriority::Low => Priority::Low,
        }
    }
}

impl ArchivedPayload<'_> {
    /// The kind of this payload.
    pub fn kind(&self) -> PayloadKind {
        match self {
            ArchivedPayload::Request { .. } => PayloadKind::Request,
            ArchivedPayload::Reply { .. } => PayloadKind::Reply,
            ArchivedPayload::Event { .. } => PayloadKind::Event,
            ArchivedPayload::Heartbeat { .. } => PayloadKind::Heartbeat,
            ArchivedPayload::GpuJob { .. } => PayloadKind::GpuJob,
            ArchivedPayload::GpuPlacement { .. } => PayloadKind::GpuPlacement,
            ArchivedPayload::ErrorReport { .. } => PayloadKind::ErrorReport,
        }
    }

    /// The body of a request, reply or event; empty for the other kinds.
    pub fn body(&self) -> &[u8] {
        match self {
            ArchivedPayload::Request { body, .. }
            | ArchivedPayload::Reply { body, .. }
            | ArchivedPayload::Event { body } => body.get(),
            _ => &[],
        }
    }

    /// The payload as a [`Payload`] borrowing its body and strings from the
    /// frame. Copies scalars only.
    pub fn to_payload(&self) -> Payload<'_> {
        match self {
            ArchivedPayload::Request { method, body } => Payload::Request {
                method: method.to_native(),
                body: body.get(),
            },
            ArchivedPayload::Reply { status, body } => Payload::Reply {
                status: status.to_native(),
                body: body.get(),
            },
            ArchivedPayload::Event { body } => Payload::Event { body: body.get() },
            ArchivedPayload::Heartbeat { seq } => Payload::Heartbeat {
                seq: seq.to_native(),
            },
            ArchivedPayload::GpuJob {
                model,
                vram_mib,
                priority,
                hold_ms,
            } => Payload::GpuJob {
                model: model.get(),
                vram_mib: vram_mib.to_native(),
                priority: *priority,
                hold_ms: hold_ms.to_native(),
            },
            ArchivedPayload::GpuPlacement {
                model,
                host,
                gpu,
                vram_mib,
                pinned,
                epoch,
            } => Payload::GpuPlacement {
                model: model.get(),
                host: host.get(),
                gpu: gpu.to_native(),
                vram_mib: vram_mib.to_native(),
                pinned: *pinned,
                epoch: epoch.to_native(),
            },
            ArchivedPayload::ErrorReport {
                code,
                agent,
                message,
            } => Payload::ErrorReport {
                code: code.to_native(),
                agent: agent.get(),
                message: message.get(),
            },
        }
    }
}

impl ArchivedEnvelope<'_> {
    /// The sender.
    pub fn from(&self) -> AgentId {
        self.from.get()
    }

    /// The receiver.
    pub fn to(&self) -> AgentId {
        self.to.get()
    }

    /// The topic; [`TopicId::NONE`] if none.
    pub fn topic(&self) -> TopicId {
        self.topic.get()
    }

    /// The correlation id.
    pub fn correlation(&self) -> u64 {
        self.correlation.to_native()
    }

    /// The priority.
    pub fn priority(&self) -> Priority {
        self.priority.get()
    }

    /// When it was sent, `CLOCK_MONOTONIC` ns of the sender.
    pub fn sent_ns(&self) -> u64 {
        self.sent_ns.to_native()
    }

    /// The deadline, `CLOCK_MONOTONIC` ns of the sender; 0 for none.
    pub fn deadline_ns(&self) -> u64 {
        self.deadline_ns.to_native()
    }

    /// The kind of payload.
    pub fn kind(&self) -> PayloadKind {
        self.payload.kind()
    }

    /// The body of a request, reply or event; empty for the other kinds.
    pub fn body(&self) -> &[u8] {
        self.payload.body()
    }

    /// The message as an [`Envelope`] borrowing its body and strings from
    /// the frame. Copies scalars only; never allocates.
    pub fn to_envelope(&self) -> Envelope<'_> {
        Envelope {
            from: self.from(),
            to: self.to(),
            topic: self.topic(),
            correlation: self.correlation(),
            priority: self.priority(),
            sent_ns: self.sent_ns(),
            deadline_ns: self.deadline_ns(),
            payload: self.payload.to_payload(),
        }
    }
}

impl fmt::Debug for ArchivedPayload<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_payload(), f)
    }
}

impl fmt::Debug for ArchivedEnvelope<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_envelope(), f)
    }
}
