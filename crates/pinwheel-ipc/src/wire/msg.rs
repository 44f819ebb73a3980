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
//! The archived envelope is 56 bytes, so that a request with a 64-byte body
//! (56 + 64 = 120 bytes, plus the ring's 8-byte frame header) fills exactly
//! two 64-byte ring slots. Cross-core streaming is bound by cache-line
//! transfers, and a third slot would mean half again as many transfers per
//! message. Two choices keep it there:
//! * Fields are ordered so the 1-byte priority packs beside the three
//!   `u32` ids instead of taking 8 bytes of its own.
//! * The payload stays at 16 bytes: the hot kinds (request, reply, event,
//!   heartbeat) are in line, and the rare, large kinds ([`GpuJob`],
//!   [`GpuPlacement`], [`ErrorReport`]) sit out of line behind a 4-byte
//!   relative pointer ([`rkyv::with::AsBox`]). Natively they are plain
//!   `Copy` structs held by value in the payload, so building, sending and
//!   reading them back ([`ArchivedPayload::to_payload`]) allocates nothing
//!   either.
//!
//! ```text
//!  ArchivedEnvelope: 56 bytes, align 8, the last 56 bytes of the frame
//!   0  from u32 | 4 to u32 | 8 topic u32 | 12 priority u8 | 13..16 pad
//!  16  correlation u64
//!  24  sent_ns u64
//!  32  deadline_ns u64
//!  40  payload: ArchivedPayload, 16 bytes, align 8
//!
//!  ArchivedPayload, by tag (offsets within it; gaps are zeroed padding)
//!   0 Request, 1 Reply   0 tag | 2 method/status u16 | 4 body ptr i32 | 8 body len u32
//!   2 Event              0 tag | 4 body ptr i32 | 8 body len u32
//!   3 Heartbeat          0 tag | 8 seq u64
//!   4 GpuJob             0 tag | 4 ptr i32 to ArchivedGpuJob (24 bytes)
//!   5 GpuPlacement       0 tag | 4 ptr i32 to ArchivedGpuPlacement (40 bytes)
//!   6 ErrorReport        0 tag | 4 ptr i32 to ArchivedErrorReport (16 bytes)
//!
//!  Pointers are relative to their own position and point back into the
//!  frame: bodies, strings and out-of-line structs precede the envelope.
//! ```
//!
//! Invariants:
//! * Every field has a fixed-width, little-endian archived form (rkyv's
//!   default), so a frame means the same on every host of a cluster.
//! * `size_of::<ArchivedEnvelope>()` is 56, checked at compile time below.
//! * A change to any type here changes the archived layout: bump
//!   [`WIRE_VERSION`](super::WIRE_VERSION). The golden-bytes test in
//!   `version.rs` fails until you do.
//! * `inline.rs` writes the archived envelope of the in-line kinds word by
//!   word; its proptest against rkyv fails if the two ever differ, so a
//!   layout change updates it too.
//!
//! This file does not encode or check bytes; `codec.rs` does.

use core::fmt;

use rkyv::with::{AsBox, InlineAsBox};
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
///
/// The rare kinds whose fields need more than 8 bytes wrap a struct that is
/// archived out of line, behind a relative pointer, so that the archived
/// payload stays 16 bytes and a common message fits two ring slots (see the
/// module doc). Natively the struct is held by value.
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
    /// Ask the GPU scheduler for room to run a model. Archived out of line.
    GpuJob(#[rkyv(with = AsBox)] GpuJob<'a>),
    /// The scheduler's answer: where a model runs. Archived out of line.
    GpuPlacement(#[rkyv(with = AsBox)] GpuPlacement<'a>),
    /// An error an agent reports to the error bus. Archived out of line.
    ErrorReport(#[rkyv(with = AsBox)] ErrorReport<'a>),
}

/// The body of [`Payload::GpuJob`]: a request to the GPU scheduler for room
/// to run `model`.
#[derive(Archive, Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuJob<'a> {
    /// The model to load or run.
    #[rkyv(with = InlineAsBox)]
    pub model: &'a str,
    /// VRAM the job needs, MiB.
    pub vram_mib: u64,
    /// The scheduler's priority, 0 highest.
    pub priority: u8,
    /// How long the job keeps its VRAM after it finishes, ms.
    pub hold_ms: u32,
}

/// The body of [`Payload::GpuPlacement`]: the scheduler's answer, where
/// `model` runs.
// The `u64`s come last so that `gpu` and `pinned` share one 8-byte word:
// the archived struct is 40 bytes, not 48.
#[derive(Archive, Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuPlacement<'a> {
    /// The model placed.
    #[rkyv(with = InlineAsBox)]
    pub model: &'a str,
    /// The host it runs on.
    #[rkyv(with = InlineAsBox)]
    pub host: &'a str,
    /// The GPU index on that host.
    pub gpu: u32,
    /// Whether the optimizer may never evict it.
    pub pinned: bool,
    /// VRAM reserved for it, MiB.
    pub vram_mib: u64,
    /// The scheduler's epoch the decision belongs to; later wins.
    pub epoch: u64,
}

/// The body of [`Payload::ErrorReport`]: an error an agent reports to the
/// error bus.
#[derive(Archive, Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorReport<'a> {
    /// The agent's own error code.
    pub code: u32,
    /// The agent the error is about (not always the sender).
    pub agent: AgentId,
    /// What happened, for an operator.
    #[rkyv(with = InlineAsBox)]
    pub message: &'a str,
}

/// A message between two agents: addressing, timing and a [`Payload`].
///
/// The field order is the archived layout (see the module doc); keep the
/// 1-byte `priority` beside the `u32` ids.
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
    /// How urgently to handle it. Placed after the three `u32` ids, where
    /// it fills what would otherwise be padding.
    pub priority: Priority,
    /// Ties a reply to its request; chosen by the requester.
    pub correlation: u64,
    /// When it was sent.
    pub sent_ns: u64,
    /// When it stops being useful; 0 for no deadline.
    pub deadline_ns: u64,
    /// What it carries.
    pub payload: Payload<'a>,
}

// The budget this layout exists for: a request with a 64-byte body is an
// 8-byte ring frame header, the 64-byte body and this envelope, which must
// fit two 64-byte slots (128 bytes), so the envelope gets 56. At 57 the
// same request takes three slots, a third more cache-line transfers per
// message. The payload's 16 bytes are part of the 56; a larger in-line
// variant breaks the budget, so move it out of line as `GpuJob` is.
const _: () = {
    assert!(
        size_of::<ArchivedEnvelope<'static>>() == 56,
        "envelope outgrew its 2-slot budget"
    );
    assert!(align_of::<ArchivedEnvelope<'static>>() == 8);
    assert!(
        size_of::<ArchivedPayload<'static>>() == 16,
        "payload outgrew its 16 bytes"
    );
};

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
    #[inline]
    pub fn kind(&self) -> PayloadKind {
        match self {
            Payload::Request { .. } => PayloadKind::Request,
            Payload::Reply { .. } => PayloadKind::Reply,
            Payload::Event { .. } => PayloadKind::Event,
            Payload::Heartbeat { .. } => PayloadKind::Heartbeat,
            Payload::GpuJob(_) => PayloadKind::GpuJob,
            Payload::GpuPlacement(_) => PayloadKind::GpuPlacement,
            Payload::ErrorReport(_) => PayloadKind::ErrorReport,
        }
    }
}

impl ArchivedAgentId {
    /// The id, in native byte order.
    #[inline]
    pub fn get(&self) -> AgentId {
        AgentId(self.0.to_native())
    }
}

impl ArchivedTopicId {
    /// The id, in native byte order.
    #[inline]
    pub fn get(&self) -> TopicId {
        TopicId(self.0.to_native())
    }
}

impl ArchivedPriority {
    /// The priority as a native value.
    #[inline]
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
    #[inline]
    pub fn kind(&self) -> PayloadKind {
        match self {
            ArchivedPayload::Request { .. } => PayloadKind::Request,
            ArchivedPayload::Reply { .. } => PayloadKind::Reply,
            ArchivedPayload::Event { .. } => PayloadKind::Event,
            ArchivedPayload::Heartbeat { .. } => PayloadKind::Heartbeat,
            ArchivedPayload::GpuJob(_) => PayloadKind::GpuJob,
            ArchivedPayload::GpuPlacement(_) => PayloadKind::GpuPlacement,
            ArchivedPayload::ErrorReport(_) => PayloadKind::ErrorReport,
        }
    }

    /// The body of a request, reply or event; empty for the other kinds.
    #[inline]
    pub fn body(&self) -> &[u8] {
        match self {
            ArchivedPayload::Request { body, .. }
            | ArchivedPayload::Reply { body, .. }
            | ArchivedPayload::Event { body } => body.get(),
            _ => &[],
        }
    }

    /// The payload as a [`Payload`] borrowing its body and strings from the
    /// frame. Copies scalars only, out-of-line structs included; never
    /// allocates.
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
            ArchivedPayload::GpuJob(job) => Payload::GpuJob(job.get().to_native()),
            ArchivedPayload::GpuPlacement(placement) => {
                Payload::GpuPlacement(placement.get().to_native())
            }
            ArchivedPayload::ErrorReport(report) => Payload::ErrorReport(report.get().to_native()),
        }
    }
}

impl ArchivedEnvelope<'_> {
    /// The sender.
    #[inline]
    pub fn from(&self) -> AgentId {
        self.from.get()
    }

    /// The receiver.
    #[inline]
    pub fn to(&self) -> AgentId {
        self.to.get()
    }

    /// The topic; [`TopicId::NONE`] if none.
    #[inline]
    pub fn topic(&self) -> TopicId {
        self.topic.get()
    }

    /// The correlation id.
    #[inline]
    pub fn correlation(&self) -> u64 {
        self.correlation.to_native()
    }

    /// The priority.
    #[inline]
    pub fn priority(&self) -> Priority {
        self.priority.get()
    }

    /// When it was sent, `CLOCK_MONOTONIC` ns of the sender.
    #[inline]
    pub fn sent_ns(&self) -> u64 {
        self.sent_ns.to_native()
    }

    /// The deadline, `CLOCK_MONOTONIC` ns of the sender; 0 for none.
    #[inline]
    pub fn deadline_ns(&self) -> u64 {
        self.deadline_ns.to_native()
    }

    /// The kind of payload.
    #[inline]
    pub fn kind(&self) -> PayloadKind {
        self.payload.kind()
    }

    /// The body of a request, reply or event; empty for the other kinds.
    #[inline]
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

impl ArchivedGpuJob<'_> {
    /// The job as a [`GpuJob`] borrowing its model name from the frame.
    pub fn to_native(&self) -> GpuJob<'_> {
        GpuJob {
            model: self.model.get(),
            vram_mib: self.vram_mib.to_native(),
            priority: self.priority,
            hold_ms: self.hold_ms.to_native(),
        }
    }
}

impl ArchivedGpuPlacement<'_> {
    /// The placement as a [`GpuPlacement`] borrowing its strings from the
    /// frame.
    pub fn to_native(&self) -> GpuPlacement<'_> {
        GpuPlacement {
            model: self.model.get(),
            host: self.host.get(),
            gpu: self.gpu.to_native(),
            pinned: self.pinned,
            vram_mib: self.vram_mib.to_native(),
            epoch: self.epoch.to_native(),
        }
    }
}

impl ArchivedErrorReport<'_> {
    /// The report as an [`ErrorReport`] borrowing its message from the
    /// frame.
    pub fn to_native(&self) -> ErrorReport<'_> {
        ErrorReport {
            code: self.code.to_native(),
            agent: self.agent.get(),
            message: self.message.get(),
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

impl fmt::Debug for ArchivedGpuJob<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_native(), f)
    }
}

impl fmt::Debug for ArchivedGpuPlacement<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_native(), f)
    }
}

impl fmt::Debug for ArchivedErrorReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_native(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sizes and alignments of every archived type that reaches a frame, as
    /// the compiler laid them out.
    fn layout<T>() -> (usize, usize) {
        (size_of::<T>(), align_of::<T>())
    }

    #[test]
    fn the_archived_envelope_and_payload_are_compact() {
        assert_eq!(layout::<ArchivedEnvelope<'static>>(), (56, 8));
        assert_eq!(layout::<ArchivedPayload<'static>>(), (16, 8));
    }

    #[test]
    fn out_of_line_bodies_have_no_padding_to_spare() {
        assert_eq!(layout::<ArchivedGpuJob<'static>>(), (24, 8));
        assert_eq!(layout::<ArchivedGpuPlacement<'static>>(), (40, 8));
        assert_eq!(layout::<ArchivedErrorReport<'static>>(), (16, 4));
    }

    #[test]
    fn the_priority_shares_the_ids_eight_bytes() {
        let sut = core::mem::offset_of!(ArchivedEnvelope<'static>, priority);
        assert_eq!(sut, 12);
        assert_eq!(
            core::mem::offset_of!(ArchivedEnvelope<'static>, correlation),
            16
        );
        assert_eq!(
            core::mem::offset_of!(ArchivedEnvelope<'static>, payload),
            40
        );
    }
}
