//! Encoding envelopes into caller-owned slots and reading them back: the
//! only caller of rkyv's serialize and access APIs in the crate.
//!
//! Built on rkyv's low-level API (`rkyv::api::low`), which needs no
//! shared-pointer map and so never allocates:
//! * [`encode_into`] serializes straight into the caller's slot through
//!   `rkyv::ser::writer::Buffer`, with a `SubAllocator` over the sender's
//!   [`Scratch`] for rkyv's temporary space. The four kinds whose payload
//!   is in line (request, reply, event, heartbeat) skip the serializer:
//!   `inline.rs` writes the same bytes directly.
//! * [`decode`] runs bytecheck over the frame (`rkyv::api::low::access`)
//!   before handing out `&ArchivedEnvelope`: any bytes give `Ok` or `Err`,
//!   never a panic or undefined behaviour. It checks with rancor's
//!   `Failure`, an error of no size, and only when that fails checks
//!   again with a [`Fault`] for the reason. With `Fault` on the success
//!   path every step of the check returned its 88-byte error slot through
//!   memory: a request with a 64-byte body took 10.4 ns to check, against
//!   2.2 ns now, and a GPU placement 20.8 ns against 7.8 ns (`cargo bench
//!   --bench wire`, this VM).
//!
//! There is deliberately no unchecked decode. For a request with a 64-byte
//! body, checked decoding costs under 2 ns more than rkyv's
//! `access_unchecked` (2.2 ns against 0.5 ns; `cargo bench --bench wire`),
//! far under what would justify `unsafe` here, so in-process frames are
//! checked too and this module stays off the unsafe allow-list.
//!
//! rkyv zeroes padding as it writes, so a reused slot never leaks an
//! earlier message's bytes to the reader.
//!
//! Frame invariants, which the ring layer must keep:
//! * A frame starts on an [`ENVELOPE_ALIGN`] boundary. rkyv computes
//!   padding from offset 0, so a frame moved to a less aligned address is
//!   refused, not misread.
//! * A frame is exactly the `len` bytes [`encode_into`] returned: rkyv puts
//!   the root at the end, so trailing bytes would move it. Rings store the
//!   length next to the frame.
//!
//! This file does not frame, copy or transport bytes; the ring layer does.

use core::mem::{MaybeUninit, align_of, size_of};

use rkyv::api::low;
use rkyv::rancor::Failure;
use rkyv::ser::allocator::SubAllocator;
use rkyv::ser::writer::Buffer;
use rkyv::ser::{Positional, Writer};

use super::WireError;
use super::fault::{Fault, Reason};
use super::inline::InlineFrame;
use super::msg::{ArchivedEnvelope, Envelope};

/// The alignment a frame must start on (the alignment of
/// [`ArchivedEnvelope`]: 8, for its `u64` fields).
pub const ENVELOPE_ALIGN: usize = align_of::<ArchivedEnvelope<'static>>();

/// The smallest possible frame (56 bytes): an envelope alone, with an
/// in-line payload and an empty body. Out-of-line payloads add their
/// archived struct. Anything shorter is refused before bytecheck runs.
pub const ENVELOPE_MIN_LEN: usize = size_of::<ArchivedEnvelope<'static>>();

/// Size of a sender's [`Scratch`], bytes. The current message types use
/// none of it (rkyv copies `[u8]` and `str` straight to the output); it is
/// there for future types that archive slices of non-`Copy` values.
pub const SCRATCH_BYTES: usize = 1024;

// Ring slots are 8-byte aligned; a wider archived type would need a layout
// change in `ring/layout.rs` too.
const _: () = assert!(ENVELOPE_ALIGN <= 8, "ring slots are only 8-byte aligned");

/// Temporary space for rkyv while it serializes. Create one per sender at
/// boot and reuse it for every message; it holds nothing between calls.
pub struct Scratch {
    bytes: [MaybeUninit<u8>; SCRATCH_BYTES],
}

impl Scratch {
    /// A fresh scratch area.
    pub const fn new() -> Self {
        Scratch {
            bytes: [MaybeUninit::uninit(); SCRATCH_BYTES],
        }
    }
}

impl core::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Scratch")
            .field("bytes", &SCRATCH_BYTES)
            .finish()
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

/// Encodes `env` into `out`, which must start on an [`ENVELOPE_ALIGN`]
/// boundary. Returns the frame's length: the frame is `out[..len]`.
///
/// Never allocates. Fails with [`WireError::TooLarge`] (carrying the exact
/// size needed) when `out` is too small, and [`WireError::Misaligned`] when
/// `out` is misaligned. Requests, replies, events and heartbeats are
/// written by [`InlineFrame`], the other kinds by rkyv; the bytes are
/// rkyv's either way.
pub fn encode_into(
    env: &Envelope<'_>,
    out: &mut [u8],
    scratch: &mut Scratch,
) -> Result<usize, WireError> {
    check_aligned(out)?;
    match InlineFrame::of(env) {
        Some(frame) => frame.write(out),
        None => encode_rkyv(env, out, scratch),
    }
}

/// [`encode_into`] through rkyv's serializer, whatever the payload.
pub(super) fn encode_rkyv(
    env: &Envelope<'_>,
    out: &mut [u8],
    scratch: &mut Scratch,
) -> Result<usize, WireError> {
    let capacity = out.len();
    let result = low::to_bytes_in_with_alloc::<_, _, Fault>(
        env,
        Buffer::from(out),
        SubAllocator::new(&mut scratch.bytes),
    );
    match result {
        Ok(written) => Ok(written.len()),
        Err(fault) => Err(encode_error(env, scratch, capacity, fault.reason())),
    }
}

/// The length of `env`'s frame, computed by a serializing pass that writes
/// nothing. For sizing slots; senders normally call [`encode_into`] and
/// handle [`WireError::TooLarge`].
pub fn encoded_len(env: &Envelope<'_>, scratch: &mut Scratch) -> Result<usize, WireError> {
    low::to_bytes_in_with_alloc::<_, _, Fault>(env, Tally(0), SubAllocator::new(&mut scratch.bytes))
        .map(|tally| tally.0)
        .map_err(|fault| WireError::Encode {
            reason: fault.reason(),
        })
}

/// Works out why [`encode_into`] failed: if the envelope encodes without
/// an output limit, the slot was too small.
#[cold]
fn encode_error(
    env: &Envelope<'_>,
    scratch: &mut Scratch,
    capacity: usize,
    reason: Reason,
) -> WireError {
    match encoded_len(env, scratch) {
        Ok(needed) if needed > capacity => WireError::TooLarge { needed, capacity },
        Ok(_) | Err(_) => WireError::Encode { reason },
    }
}

/// Checks `bytes` as an envelope frame and returns it, borrowed in place.
///
/// For frames from outside this process (copied to private memory first,
/// so the peer cannot change them during or after the check). Never
/// allocates. Fails with [`WireError::Misaligned`],
/// [`WireError::Truncated`] or [`WireError::Invalid`]; never panics.
///
/// Always in line: its own checks are a few instructions, and a call
/// returned its result through memory; rkyv's validator stays one call.
#[inline(always)]
pub fn decode(bytes: &[u8]) -> Result<&ArchivedEnvelope<'_>, WireError> {
    check_aligned(bytes)?;
    if bytes.len() < ENVELOPE_MIN_LEN {
        return Err(WireError::Truncated {
            len: bytes.len(),
            min: ENVELOPE_MIN_LEN,
        });
    }
    // Checked twice only when it fails: first with an error that carries
    // nothing, then again for the reason.
    match low::access::<ArchivedEnvelope<'_>, Failure>(bytes) {
        Ok(env) => Ok(env),
        Err(Failure) => Err(invalid(bytes)),
    }
}

/// Why bytecheck refuses `bytes`: the check again, this time with a
/// [`Fault`] to say why.
#[cold]
fn invalid(bytes: &[u8]) -> WireError {
    let reason = match low::access::<ArchivedEnvelope<'_>, Fault>(bytes) {
        Ok(_) => Reason::empty(),
        Err(fault) => fault.reason(),
    };
    WireError::Invalid {
        len: bytes.len(),
        reason,
    }
}

/// Refuses a buffer that does not start on an [`ENVELOPE_ALIGN`] boundary.
fn check_aligned(bytes: &[u8]) -> Result<(), WireError> {
    let addr = bytes.as_ptr().addr();
    if addr.is_multiple_of(ENVELOPE_ALIGN) {
        Ok(())
    } else {
        Err(WireError::Misaligned {
            addr,
            align: ENVELOPE_ALIGN,
        })
    }
}

/// A writer that only counts, for [`encoded_len`].
struct Tally(usize);

impl Positional for Tally {
    fn pos(&self) -> usize {
        self.0
    }
}

impl<E> Writer<E> for Tally {
    fn write(&mut self, bytes: &[u8]) -> Result<(), E> {
        self.0 += bytes.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::tests::Slot;
    use crate::wire::{AgentId, Payload, Priority, TopicId};

    fn request(body: &[u8]) -> Envelope<'_> {
        Envelope {
            from: AgentId(1),
            to: AgentId(2),
            topic: TopicId::NONE,
            correlation: 42,
            priority: Priority::Normal,
            sent_ns: 10,
            deadline_ns: 20,
            payload: Payload::Request { method: 3, body },
        }
    }

    #[test]
    fn an_encoded_request_decodes_to_the_same_envelope() {
        let env = request(b"hello");
        let mut slot = Slot::new();
        let len = encode_into(&env, slot.bytes_mut(), &mut Scratch::new()).expect("fits");

        let sut = decode(&slot.bytes()[..len]).expect("valid");

        assert_eq!(sut.to_envelope(), env);
        assert_eq!(sut.body(), b"hello");
    }

    #[test]
    fn a_request_with_a_64_byte_body_encodes_to_120_bytes() {
        let env = request(&[7; 64]);
        let mut slot = Slot::new();

        let sut = encode_into(&env, slot.bytes_mut(), &mut Scratch::new()).expect("fits");

        // With the ring's 8-byte frame header: 128 bytes, two 64-byte slots.
        assert_eq!(sut, 120);
    }

    #[test]
    fn the_smallest_frame_is_an_envelope_alone() {
        let env = Envelope {
            payload: Payload::Heartbeat { seq: 1 },
            ..request(b"")
        };
        let mut slot = Slot::new();

        let sut = encode_into(&env, slot.bytes_mut(), &mut Scratch::new()).expect("fits");

        assert_eq!((sut, ENVELOPE_MIN_LEN), (56, 56));
        assert_eq!(
            encode_into(&request(b""), slot.bytes_mut(), &mut Scratch::new()),
            Ok(56)
        );
    }

    #[test]
    fn encoded_len_matches_what_encode_into_writes() {
        let env = request(&[7; 100]);
        let mut slot = Slot::new();
        let mut scratch = Scratch::new();
        let written = encode_into(&env, slot.bytes_mut(), &mut scratch).expect("fits");

        let sut = encoded_len(&env, &mut scratch).expect("encodes");

        assert_eq!(sut, written);
    }

    #[test]
    fn a_small_slot_gives_too_large_with_the_exact_size_needed() {
        let env = request(&[7; 100]);
        let mut scratch = Scratch::new();
        let needed_len = encoded_len(&env, &mut scratch).expect("encodes");
        let mut slot = Slot::new();

        let sut = encode_into(&env, &mut slot.bytes_mut()[..64], &mut scratch);

        assert!(
            matches!(sut, Err(WireError::TooLarge { needed, capacity: 64 }) if needed == needed_len),
            "{sut:?}"
        );
    }

    #[test]
    fn a_misaligned_slot_is_refused() {
        let mut slot = Slot::new();

        let sut = encode_into(
            &request(b""),
            &mut slot.bytes_mut()[1..],
            &mut Scratch::new(),
        );

        assert!(
            matches!(sut, Err(WireError::Misaligned { align: 8, .. })),
            "{sut:?}"
        );
    }

    #[test]
    fn a_misaligned_frame_is_refused_before_it_is_read() {
        let slot = Slot::new();

        let sut = decode(&slot.bytes()[4..]);

        assert!(matches!(sut, Err(WireError::Misaligned { .. })), "{sut:?}");
    }

    #[test]
    fn a_frame_shorter_than_an_envelope_is_truncated() {
        let slot = Slot::new();

        let sut = decode(&slot.bytes()[..8]);

        assert!(
            matches!(
                sut,
                Err(WireError::Truncated {
                    len: 8,
                    min: ENVELOPE_MIN_LEN
                })
            ),
            "{sut:?}"
        );
    }

    #[test]
    fn a_bad_payload_tag_is_invalid_and_says_why() {
        let env = request(b"abc");
        let mut slot = Slot::new();
        let len = encode_into(&env, slot.bytes_mut(), &mut Scratch::new()).expect("fits");
        let tag_at = len - size_of::<crate::wire::ArchivedPayload<'static>>();
        slot.bytes_mut()[tag_at] = 0xee;

        let sut = decode(&slot.bytes()[..len]);

        let Err(WireError::Invalid {
            len: bad_len,
            reason,
        }) = sut
        else {
            panic!("expected an invalid frame, got {sut:?}");
        };
        assert_eq!(bad_len, len);
        assert!(reason.as_str().contains("238"), "{reason}");
    }

    #[test]
    fn a_body_pointing_outside_the_frame_is_invalid() {
        let env = request(b"abc");
        let mut slot = Slot::new();
        let len = encode_into(&env, slot.bytes_mut(), &mut Scratch::new()).expect("fits");
        // A request payload is: tag, pad, method (u16), body's relative
        // pointer (i32), body's length (u32).
        let ptr_at = len - size_of::<crate::wire::ArchivedPayload<'static>>() + 4;
        slot.bytes_mut()[ptr_at..ptr_at + 4].copy_from_slice(&(-4096i32).to_le_bytes());

        let sut = decode(&slot.bytes()[..len]);

        assert!(matches!(sut, Err(WireError::Invalid { .. })), "{sut:?}");
    }

    #[test]
    fn the_alignment_requirement_is_eight_bytes() {
        assert_eq!(ENVELOPE_ALIGN, 8);
    }
}
