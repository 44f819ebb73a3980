//! The wire version, and how a peer's version is checked.
//!
//! rkyv frames are not self-describing: a reader interprets bytes by the
//! layout of its own build's archived types. Two builds may exchange frames
//! only if their layouts are identical, so versions must match exactly;
//! there is no "compatible older version". The version travels once per
//! connection, not per message: the ring layer writes it into each ring
//! header and checks it on attach; the cluster link exchanges it in its
//! handshake. Both call [`check_version`].
//!
//! Bump [`WIRE_VERSION`] whenever an archived type in `msg.rs` changes. The
//! golden-bytes test below pins the layout of version 1 and fails on any
//! change, as a reminder.

use super::WireError;

/// The version of the archived message layout this build reads and writes.
pub const WIRE_VERSION: u16 = 1;

/// Checks that a peer (another process's ring header, a cluster peer's
/// handshake) speaks this build's wire version.
pub fn check_version(found: u16) -> Result<(), WireError> {
    if found == WIRE_VERSION {
        Ok(())
    } else {
        Err(WireError::Version {
            found,
            expected: WIRE_VERSION,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{AgentId, Envelope, Payload, Priority, Scratch, TopicId, encode_into};

    #[test]
    fn the_same_version_is_accepted() {
        assert!(check_version(WIRE_VERSION).is_ok());
    }

    #[test]
    fn another_version_is_refused_with_both_numbers() {
        let sut = check_version(WIRE_VERSION + 1);
        let Err(WireError::Version { found, expected }) = sut else {
            panic!("expected a version error, got {sut:?}");
        };
        assert_eq!((found, expected), (WIRE_VERSION + 1, WIRE_VERSION));
    }

    /// The archived layout of version 1. If this fails you changed a type in
    /// `msg.rs`: bump `WIRE_VERSION`, then update these bytes.
    #[rustfmt::skip]
    const GOLDEN_V1: [u8; 104] = [
        // 0: the body "ping", padded to 8
        b'p', b'i', b'n', b'g', 0, 0, 0, 0,
        // 8: the envelope (root, at the end). from 7, to 9, topic 0, padding
        7, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        // 24: correlation 0x0102030405060708
        8, 7, 6, 5, 4, 3, 2, 1,
        // 32: priority High (1), padding
        1, 0, 0, 0, 0, 0, 0, 0,
        // 40: sent_ns 1000, deadline_ns 0
        0xe8, 3, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0,
        // 56: payload, 48 bytes (its largest variant, GpuPlacement): tag
        // Request (0), padding, method 5, body at -60 from 60, body length 4
        0, 0, 5, 0, 0xc4, 0xff, 0xff, 0xff, 4, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];

    #[test]
    fn the_version_1_layout_has_not_changed() {
        let env = Envelope {
            from: AgentId(7),
            to: AgentId(9),
            topic: TopicId::NONE,
            correlation: 0x0102_0304_0506_0708,
            priority: Priority::High,
            sent_ns: 1000,
            deadline_ns: 0,
            payload: Payload::Request {
                method: 5,
                body: b"ping",
            },
        };
        // A used slot: padding must come out zeroed, never stale.
        let mut out = crate::wire::tests::Slot::filled(0xaa);
        let mut scratch = Scratch::new();

        let len = encode_into(&env, out.bytes_mut(), &mut scratch).expect("a slot fits 72 bytes");

        assert_eq!(
            &out.bytes()[..len],
            &GOLDEN_V1[..],
            "the archived layout changed: bump WIRE_VERSION and update GOLDEN_V1"
        );
    }
}
