//! The hot kinds' encoder: requests, replies, events and heartbeats, whose
//! payload sits in line in the envelope, written straight into the slot
//! as the bytes rkyv would write.
//!
//! rkyv's serializer is general: it walks the value through its
//! `Serialize` and `Archive` traits, resolves each field into place and
//! pads as it goes. For an envelope whose payload is in line, the frame is
//! always the same shape, so writing it directly is a copy of the body and
//! seven words:
//!
//! ```text
//!  0      body (n bytes), zero padding to 8        (none for heartbeats)
//!  root   ArchivedEnvelope, 56 bytes (msg.rs has the field offsets);
//!         root = n rounded up to 8; the frame is root + 56 bytes
//!  root+44  the body's relative pointer: 0 - (root + 44)
//! ```
//!
//! A request with a 64-byte body takes 10.2 ns through rkyv and 5.5 ns
//! here (`cargo bench --bench wire`, this VM). This is the encoder every
//! sender of these kinds uses, in and out of process; the out-of-line
//! kinds go through rkyv. The bytes must be exactly rkyv's: decoding runs
//! rkyv's bytecheck over them, and `tests` compares the two encoders on
//! arbitrary envelopes, byte for byte, including the padding.

use super::WireError;
use super::msg::{Envelope, Payload};

/// Words of the archived envelope (56 bytes).
const ROOT_WORDS: usize = 7;
/// Where a body's relative pointer sits in the archived envelope (in the
/// payload, which starts at 40); rkyv's pointers count from their own
/// position.
const BODY_PTR_AT: usize = 44;
/// The longest body written here. rkyv stores a body's offset as an i32;
/// longer bodies go through rkyv, which reports its own error.
const MAX_BODY: usize = i32::MAX as usize / 2;

/// Archived tags of the in-line payload kinds (declaration order).
const TAG_REQUEST: u8 = 0;
const TAG_REPLY: u8 = 1;
const TAG_EVENT: u8 = 2;
const TAG_HEARTBEAT: u8 = 3;

/// An envelope whose payload is in line, as the two parts of its frame:
/// the body, zero padding to 8 bytes, then the archived envelope.
///
/// The ring writes the parts straight into its slots, as atomic words,
/// instead of encoding into a buffer and copying that in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InlineFrame<'a> {
    body: &'a [u8],
    root: [u64; ROOT_WORDS],
}

impl<'a> InlineFrame<'a> {
    /// `env`'s frame, if its payload is in line (a request, reply, event or
    /// heartbeat); `None` for the kinds rkyv encodes.
    #[inline]
    pub fn of(env: &Envelope<'a>) -> Option<Self> {
        let (tag, code, body) = match env.payload {
            Payload::Request { method, body } => (TAG_REQUEST, method, body),
            Payload::Reply { status, body } => (TAG_REPLY, status, body),
            Payload::Event { body } => (TAG_EVENT, 0, body),
            Payload::Heartbeat { seq } => {
                let payload = [u64::from(TAG_HEARTBEAT), seq];
                return Some(Self::new(env, &[], payload));
            }
            Payload::GpuJob(_) | Payload::GpuPlacement(_) | Payload::ErrorReport(_) => {
                return None;
            }
        };
        if body.len() > MAX_BODY {
            return None;
        }
        // Both fit their fields: the body is at most MAX_BODY bytes.
        let pointer = -((body.len().next_multiple_of(8) + BODY_PTR_AT) as i64) as i32;
        let payload = [
            u64::from(tag) | u64::from(code) << 16 | u64::from(pointer as u32) << 32,
            body.len() as u64,
        ];
        Some(Self::new(env, body, payload))
    }

    /// The frame of `env`, its payload's two words given.
    #[inline]
    fn new(env: &Envelope<'_>, body: &'a [u8], payload: [u64; 2]) -> Self {
        let root = [
            u64::from(env.from.0) | u64::from(env.to.0) << 32,
            u64::from(env.topic.0) | u64::from(env.priority as u8) << 32,
            env.correlation,
            env.sent_ns,
            env.deadline_ns,
            payload[0],
            payload[1],
        ];
        Self { body, root }
    }

    /// The body: the frame's first bytes, before the zero padding.
    #[inline]
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// The archived envelope as seven words, each stored little-endian:
    /// the frame's last 56 bytes.
    #[inline]
    pub fn root(&self) -> &[u64; ROOT_WORDS] {
        &self.root
    }

    /// The frame's length in bytes, as [`super::encoded_len`] gives it.
    pub fn encoded_len(&self) -> usize {
        self.body.len().next_multiple_of(8) + ROOT_WORDS * 8
    }

    /// Writes the frame into `out` (8-byte aligned, checked by the
    /// caller); its length.
    pub(super) fn write(&self, out: &mut [u8]) -> Result<usize, WireError> {
        let len = self.encoded_len();
        let Some(frame) = out.get_mut(..len) else {
            return Err(WireError::TooLarge {
                needed: len,
                capacity: out.len(),
            });
        };
        let at = len - ROOT_WORDS * 8;
        let (head, tail) = frame.split_at_mut(at);
        if at > self.body.len() {
            // The body's last word, zeroed first so its padding is.
            head[at - 8..].fill(0);
        }
        head[..self.body.len()].copy_from_slice(self.body);
        for (bytes, word) in tail.chunks_exact_mut(8).zip(self.root) {
            bytes.copy_from_slice(&word.to_le_bytes());
        }
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::wire::codec::encode_rkyv;
    use crate::wire::msg::{GpuPlacement, Priority};
    use crate::wire::tests::Slot;
    use crate::wire::{AgentId, Scratch, TopicId};

    /// Bytes a slot holds before a frame is written over it: padding must
    /// come out zeroed whatever was there.
    const STALE: u8 = 0xaa;

    const ALL_PRIORITIES: [Priority; 4] = [
        Priority::Critical,
        Priority::High,
        Priority::Normal,
        Priority::Low,
    ];

    /// An in-line payload's kind, code (method or status) and body, or a
    /// heartbeat's sequence number in the code's place.
    fn payload_parts() -> impl Strategy<Value = (u8, u64, Vec<u8>)> {
        (
            0u8..4,
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..200),
        )
    }

    fn payload(kind: u8, code: u64, body: &[u8]) -> Payload<'_> {
        match kind {
            0 => Payload::Request {
                method: code as u16,
                body,
            },
            1 => Payload::Reply {
                status: code as u16,
                body,
            },
            2 => Payload::Event { body },
            _ => Payload::Heartbeat { seq: code },
        }
    }

    proptest! {
        #[test]
        fn writes_what_rkyv_writes_byte_for_byte(
            ids in any::<(u32, u32, u32)>(),
            priority in proptest::sample::select(ALL_PRIORITIES.to_vec()),
            times in any::<(u64, u64, u64)>(),
            (kind, code, body) in payload_parts(),
            capacity in 0usize..=512,
        ) {
            let env = Envelope {
                from: AgentId(ids.0),
                to: AgentId(ids.1),
                topic: TopicId(ids.2),
                priority,
                correlation: times.0,
                sent_ns: times.1,
                deadline_ns: times.2,
                payload: payload(kind, code, &body),
            };
            let (mut ours, mut rkyvs) = (Slot::filled(STALE), Slot::filled(STALE));

            let sut = InlineFrame::of(&env).map(|frame| frame.write(&mut ours.bytes_mut()[..capacity]));
            let expected = encode_rkyv(&env, &mut rkyvs.bytes_mut()[..capacity], &mut Scratch::new());

            prop_assert_eq!(sut, Some(expected));
            if let Ok(len) = expected {
                prop_assert_eq!(InlineFrame::of(&env).map(|frame| frame.encoded_len()), Some(len));
                prop_assert_eq!(&ours.bytes()[..len], &rkyvs.bytes()[..len]);
                prop_assert!(ours.bytes()[len..].iter().all(|&b| b == STALE), "wrote past the frame");
            }
        }
    }

    #[test]
    fn out_of_line_kinds_are_left_to_rkyv() {
        let env = Envelope {
            from: AgentId(1),
            to: AgentId(2),
            topic: TopicId::NONE,
            priority: Priority::Normal,
            correlation: 3,
            sent_ns: 0,
            deadline_ns: 0,
            payload: Payload::GpuPlacement(GpuPlacement {
                model: "phi-3",
                host: "pc2",
                gpu: 0,
                pinned: false,
                vram_mib: 1,
                epoch: 1,
            }),
        };
        assert_eq!(InlineFrame::of(&env), None);
    }
}
