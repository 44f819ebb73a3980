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
//! golden-bytes tests below pin the layout of version 1, in line and out of
//! line, and fail on any change, as a reminder.

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
    use crate::wire::{
        AgentId, Envelope, GpuPlacement, Payload, Priority, Scratch, TopicId, encode_into,
    };

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
    ///
    /// Version 1 was compacted before the first release (the envelope went
    /// from 96 to 56 bytes so a 64-byte request fills two ring slots); no
    /// build with the older layout ever shipped, so the version stayed 1.
    #[rustfmt::skip]
    const GOLDEN_V1: [u8; 64] = [
        // 0: the body "ping", padded to 8
        b'p', b'i', b'n', b'g', 0, 0, 0, 0,
        // 8: the envelope (root, at the end). from 7, to 9, topic 0,
        // priority High (1), padding
        7, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,
        // 24: correlation 0x0102030405060708
        8, 7, 6, 5, 4, 3, 2, 1,
        // 32: sent_ns 1000, deadline_ns 0
        0xe8, 3, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0,
        // 48: payload, 16 bytes: tag Request (0), padding, method 5,
        // body at -52 from 52, body length 4, padding
        0, 0, 5, 0, 0xcc, 0xff, 0xff, 0xff, 4, 0, 0, 0, 0, 0, 0, 0,
    ];

    /// The out-of-line half of version 1's layout: a GPU placement, whose
    /// struct sits before the envelope, behind the payload's pointer.
    #[rustfmt::skip]
    const GOLDEN_V1_PLACEMENT: [u8; 104] = [
        // 0: the strings "phi-3" and "pc2", padded to 8
        b'p', b'h', b'i', b'-', b'3', b'p', b'c', b'2',
        // 8: the placement. model at -8 from 8, length 5; host at -11 from
        // 16, length 3
        0xf8, 0xff, 0xff, 0xff, 5, 0, 0, 0, 0xf5, 0xff, 0xff, 0xff, 3, 0, 0, 0,
        // 24: gpu 1, pinned true, padding
        1, 0, 0, 0, 1, 0, 0, 0,
        // 32: vram_mib 2048, epoch 4
        0, 8, 0, 0, 0, 0, 0, 0,
        4, 0, 0, 0, 0, 0, 0, 0,
        // 48: the envelope, as in GOLDEN_V1 up to its payload
        7, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,
        8, 7, 6, 5, 4, 3, 2, 1,
        0xe8, 3, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0,
        // 88: payload: tag GpuPlacement (5), padding, the placement at -84
        // from 92, padding
        5, 0, 0, 0, 0xac, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0,
    ];

    /// `payload` in the envelope both golden frames share, encoded into a
    /// used slot: padding must come out zeroed, never stale.
    fn encode_golden(payload: Payload<'_>) -> Vec<u8> {
        let env = Envelope {
            from: AgentId(7),
            to: AgentId(9),
            topic: TopicId::NONE,
            priority: Priority::High,
            correlation: 0x0102_0304_0506_0708,
            sent_ns: 1000,
            deadline_ns: 0,
            payload,
        };
        let mut out = crate::wire::tests::Slot::filled(0xaa);
        let len =
            encode_into(&env, out.bytes_mut(), &mut Scratch::new()).expect("a slot fits 104 bytes");
        out.bytes()[..len].to_vec()
    }

    #[test]
    fn the_version_1_layout_has_not_changed() {
        let sut = encode_golden(Payload::Request {
            method: 5,
            body: b"ping",
        });

        assert_eq!(
            sut, GOLDEN_V1,
            "the archived layout changed: bump WIRE_VERSION and update GOLDEN_V1"
        );
    }

    #[test]
    fn the_version_1_out_of_line_layout_has_not_changed() {
        let sut = encode_golden(Payload::GpuPlacement(GpuPlacement {
            model: "phi-3",
            host: "pc2",
            gpu: 1,
            pinned: true,
            vram_mib: 2048,
            epoch: 4,
        }));

        assert_eq!(
            sut, GOLDEN_V1_PLACEMENT,
            "the archived layout changed: bump WIRE_VERSION and update GOLDEN_V1_PLACEMENT"
        );
    }
}
