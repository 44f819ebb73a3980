//! The message format: one [`Envelope`] type for every message between
//! agents, encoded with rkyv so a receiver reads it in place.
//!
//! ```text
//!  sender                                   receiver
//!  Envelope<'a> (borrows body, strings)
//!     | encode_into(env, slot, scratch)     ring slot / private copy
//!     v                                        | decode(frame)  (checked)
//!  ring slot  ---------- ring layer ------->   v
//!                                           &ArchivedEnvelope (in place)
//! ```
//!
//! Design:
//! * **No allocation per message.** A sender builds an `Envelope<'a>` that
//!   borrows its body and strings, and encodes it into a slot the ring
//!   hands it, with a [`Scratch`] made once at boot. A receiver gets
//!   `&ArchivedEnvelope` pointing into the frame. Errors are inline values
//!   ([`Reason`]), so even a flood of bad frames does not allocate.
//! * **Untrusted bytes are checked.** [`decode`] runs rkyv's bytecheck over
//!   the whole frame before handing it out; any input gives `Ok` or `Err`,
//!   never a panic or undefined behaviour.
//! * **Frames are position-dependent.** A frame must start on an
//!   [`ENVELOPE_ALIGN`] boundary and be exactly the length [`encode_into`]
//!   returned.
//! * **Versions match exactly** ([`check_version`]), once per ring or peer
//!   connection; the envelope carries no version of its own.
//!
//! What this module does not do: framing, transport, routing or copying
//! frames out of shared memory (the ring layer), and the meaning of bodies
//! (each agent's own).

mod codec;
mod fault;
mod inline;
mod msg;
mod version;

pub use codec::{
    ENVELOPE_ALIGN, ENVELOPE_MIN_LEN, SCRATCH_BYTES, Scratch, decode, encode_into, encoded_len,
};
pub use fault::{REASON_BYTES, Reason};
pub use inline::InlineFrame;
pub use msg::{
    AgentId, ArchivedAgentId, ArchivedEnvelope, ArchivedErrorReport, ArchivedGpuJob,
    ArchivedGpuPlacement, ArchivedPayload, ArchivedPriority, ArchivedTopicId, Envelope,
    ErrorReport, GpuJob, GpuPlacement, Payload, PayloadKind, Priority, TopicId,
};
pub use version::{WIRE_VERSION, check_version};

/// Errors from encoding, decoding and version checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The envelope does not fit the slot.
    #[error("envelope needs {needed} bytes; the slot holds {capacity}")]
    TooLarge {
        /// Bytes the frame needs.
        needed: usize,
        /// Bytes the slot has.
        capacity: usize,
    },
    /// rkyv could not encode the envelope for a reason other than size.
    #[error("cannot encode envelope: {reason}")]
    Encode {
        /// rkyv's reason.
        reason: Reason,
    },
    /// A slot or frame does not start on an [`ENVELOPE_ALIGN`] boundary.
    #[error("buffer at {addr:#x} is not aligned to {align} bytes")]
    Misaligned {
        /// The buffer's address.
        addr: usize,
        /// The alignment frames need.
        align: usize,
    },
    /// A frame is shorter than the smallest envelope.
    #[error("frame of {len} bytes is shorter than the smallest envelope ({min} bytes)")]
    Truncated {
        /// The frame's length.
        len: usize,
        /// The smallest envelope's length.
        min: usize,
    },
    /// A frame failed validation: corrupt, or not an envelope of this
    /// wire version.
    #[error("frame of {len} bytes is not a valid envelope: {reason}")]
    Invalid {
        /// The frame's length.
        len: usize,
        /// What bytecheck found.
        reason: Reason,
    },
    /// A peer speaks another wire version.
    #[error("peer speaks wire version {found}; this build speaks {expected}")]
    Version {
        /// The peer's version.
        found: u16,
        /// This build's version.
        expected: u16,
    },
}

#[cfg(test)]
mod tests {
    /// An 8-byte aligned slot, as the ring layer hands out.
    #[repr(C, align(8))]
    pub(crate) struct Slot([u8; 512]);

    impl Slot {
        pub(crate) fn new() -> Self {
            Self::filled(0)
        }

        pub(crate) fn filled(byte: u8) -> Self {
            Slot([byte; 512])
        }

        pub(crate) fn bytes(&self) -> &[u8] {
            &self.0
        }

        pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
            &mut self.0
        }
    }

    #[test]
    fn errors_stay_small_enough_to_return_cheaply() {
        assert!(size_of::<super::WireError>() <= 112);
    }
}
