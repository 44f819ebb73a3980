//! A peer in another process may write anything anywhere in the ring's
//! memory. The untrusted end must answer with frames, nothing, or
//! `RingError::Corrupt`: never a panic, a hang, or a read out of bounds.
//! (`scribble.rs` does the same with a peer writing while both ends run.)

use std::os::fd::OwnedFd;
use std::time::Duration;

use nix::sys::uio::pwrite;
use proptest::prelude::*;

use crate::ring::layout::CONTROL_FIELDS;
use crate::ring::{
    Consumer, DATA_OFFSET, Producer, RingConfig, RingError, SLOT_BYTES, WaitStrategy,
    export_consumer, export_producer, ring_bytes,
};

const SLOTS: u64 = 16;

fn config() -> RingConfig {
    RingConfig {
        slots: SLOTS,
        max_frame: 200,
        wait: WaitStrategy::Park,
        spin_us: 0,
    }
}

/// The daemon's producer, the peer's consumer, and a descriptor to scribble
/// on the ring with.
fn untrusted_consumer() -> (Producer, Consumer, OwnedFd) {
    let (producer, handoff) = export_producer(config()).unwrap();
    let memfd = handoff.memfd().try_clone_to_owned().unwrap();
    (producer, handoff.into_consumer().unwrap(), memfd)
}

fn scribble(memfd: &OwnedFd, offset: usize, bytes: &[u8]) {
    pwrite(memfd, bytes, offset as i64).unwrap();
}

const HEAD: usize = 128;
const TAIL: usize = 256;

/// The header fields a peer must never change after the creator wrote
/// them, with a value each that differs from the real one.
const HEADER_FIELDS: [(&str, usize, &[u8]); 5] = [
    ("header magic", 0, b"NOTARING"),
    ("header version", 8, &[2, 0, 0, 0]),
    ("header slot_bytes", 12, &[128, 0, 0, 0]),
    ("header slots", 16, &[0, 1, 0, 0, 0, 0, 0, 0]),
    ("header epoch", 24, &[9, 0, 0, 0, 0, 0, 0, 0]),
];

#[test]
fn a_changed_header_field_is_corruption_when_the_consumer_parks() {
    for (field, offset, value) in HEADER_FIELDS {
        let (_producer, mut consumer, memfd) = untrusted_consumer();
        assert!(!consumer.wait(Duration::from_millis(1)).unwrap(), "{field}");
        scribble(&memfd, offset, value);
        let err = consumer.wait(Duration::from_millis(1)).unwrap_err();
        assert!(
            matches!(err, RingError::Corrupt { what, .. } if what == field),
            "{field}: {err}"
        );
    }
}

#[test]
fn a_changed_header_field_is_corruption_when_the_producer_parks() {
    for (field, offset, value) in HEADER_FIELDS {
        let (mut producer, handoff) = export_producer(config()).unwrap();
        let memfd = handoff.memfd().try_clone_to_owned().unwrap();
        while producer.try_push(&[1; 100]).is_ok() {}
        scribble(&memfd, offset, value);
        let err = producer
            .push(&[1; 100], Duration::from_millis(1))
            .unwrap_err();
        assert!(
            matches!(err, RingError::Corrupt { what, .. } if what == field),
            "{field}: {err}"
        );
    }
}

#[test]
fn a_header_changed_before_attaching_is_refused() {
    for (field, offset, value) in HEADER_FIELDS {
        let (_producer, handoff) = export_producer(config()).unwrap();
        scribble(
            &handoff.memfd().try_clone_to_owned().unwrap(),
            offset,
            value,
        );
        let err = handoff.into_consumer().unwrap_err();
        assert!(
            matches!(&err, RingError::Handoff { reason } if reason.contains(field)),
            "{field}: {err}"
        );
    }
}

#[test]
fn a_head_beyond_one_ring_of_frames_is_corruption() {
    let (_producer, mut consumer, memfd) = untrusted_consumer();
    scribble(&memfd, HEAD, &(SLOTS + 1).to_le_bytes());
    let err = consumer.try_recv(|_| ()).unwrap_err();
    assert!(
        matches!(
            err,
            RingError::Corrupt {
                what: "head",
                value: 17,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_head_that_moves_backwards_is_corruption() {
    let (mut producer, mut consumer, memfd) = untrusted_consumer();
    producer.try_push(b"one").unwrap();
    producer.try_push(b"two").unwrap();
    consumer.try_recv(|_| ()).unwrap();
    scribble(&memfd, HEAD, &0u64.to_le_bytes());
    consumer.try_recv(|_| ()).unwrap();
    let err = consumer.try_recv(|_| ()).unwrap_err();
    assert!(
        matches!(err, RingError::Corrupt { what: "head", .. }),
        "{err}"
    );
}

#[test]
fn a_frame_longer_than_what_was_published_is_corruption() {
    let (mut producer, mut consumer, memfd) = untrusted_consumer();
    producer.try_push(b"short").unwrap();
    scribble(&memfd, DATA_OFFSET, &10_000u32.to_le_bytes());
    let err = consumer.try_recv(|_| ()).unwrap_err();
    assert!(
        matches!(
            err,
            RingError::Corrupt {
                what: "frame header",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_frame_changed_after_it_was_read_does_not_change_the_copy() {
    let (mut producer, mut consumer, memfd) = untrusted_consumer();
    producer.try_push(b"original").unwrap();
    let seen = consumer
        .try_recv(|bytes| {
            scribble(&memfd, DATA_OFFSET + 8, b"tampered");
            bytes.to_vec()
        })
        .unwrap();
    assert_eq!(seen, Some(b"original".to_vec()));
}

#[test]
fn a_tail_ahead_of_what_was_published_is_corruption_for_the_producer() {
    let (mut producer, handoff) = export_producer(config()).unwrap();
    let memfd = handoff.memfd().try_clone_to_owned().unwrap();
    producer.try_push(b"x").unwrap();
    scribble(&memfd, TAIL, &1_000u64.to_le_bytes());
    let mut result = Ok(());
    for _ in 0..SLOTS {
        result = producer.try_push(b"y");
        if result.is_err() {
            break;
        }
    }
    assert!(
        matches!(result, Err(RingError::Corrupt { what: "tail", .. })),
        "{result:?}"
    );
}

#[test]
fn an_untrusted_producer_end_reads_only_what_it_checked() {
    // The peer is the producer: the daemon's consumer validates its frames.
    let (mut consumer, handoff) = export_consumer(config()).unwrap();
    let memfd = handoff.memfd().try_clone_to_owned().unwrap();
    let mut producer = handoff.into_producer().unwrap();
    producer.try_push(b"hello").unwrap();
    assert_eq!(
        consumer.try_recv(<[u8]>::to_vec).unwrap(),
        Some(b"hello".to_vec())
    );
    scribble(&memfd, HEAD, &u64::MAX.to_le_bytes());
    assert!(matches!(
        consumer.try_recv(|_| ()),
        Err(RingError::Corrupt { .. })
    ));
}

#[test]
fn a_reset_after_a_peer_scribbled_on_the_header_lets_the_next_peer_attach() {
    let (mut producer, handoff) = export_producer(config()).unwrap();
    let memfd = handoff.memfd().try_clone_to_owned().unwrap();
    for (_, offset, value) in HEADER_FIELDS {
        scribble(&memfd, offset, value);
    }
    assert!(handoff.into_consumer().is_err());
    let mut consumer = producer.reset().unwrap().into_consumer().unwrap();
    producer.try_push(b"again").unwrap();
    assert_eq!(
        consumer.try_recv(<[u8]>::to_vec).unwrap(),
        Some(b"again".to_vec())
    );
}

/// One step of a run where both ends are in this process and a hostile
/// peer writes between steps.
#[derive(Debug, Clone)]
enum Step {
    Push(usize),
    PushWaiting(usize),
    Recv,
    Park,
    /// A value written over one control-block field (index into
    /// `CONTROL_FIELDS`).
    Field(usize, u64),
    /// A value written over the frame header at the start of a slot.
    FrameHeader(u64, u64),
}

/// Values a hostile peer would try: edges, plausible counters and frame
/// headers, and noise.
fn hostile_value() -> impl Strategy<Value = u64> {
    let data = u64::from(u32::from_le_bytes(*b"DATA")) << 32;
    let pad = u64::from(u32::from_le_bytes(*b"PAD!")) << 32;
    prop_oneof![
        Just(0),
        Just(1),
        Just(SLOTS - 1),
        Just(SLOTS),
        Just(SLOTS + 1),
        Just(u64::MAX),
        (0..4 * SLOTS),
        (0..300u64).prop_map(move |len| data | len),
        (0..SLOTS).prop_map(move |slots| pad | (slots * SLOT_BYTES as u64).saturating_sub(8)),
        any::<u64>(),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (1usize..200).prop_map(Step::Push),
        (1usize..200).prop_map(Step::PushWaiting),
        Just(Step::Recv),
        Just(Step::Park),
        (0..CONTROL_FIELDS.len(), hostile_value()).prop_map(|(f, v)| Step::Field(f, v)),
        (0..SLOTS, hostile_value()).prop_map(|(s, v)| Step::FrameHeader(s, v)),
    ]
}

/// What an end may answer while a peer misbehaves.
fn acceptable(result: &Result<(), RingError>) -> bool {
    matches!(
        result,
        Ok(()) | Err(RingError::Full | RingError::Timeout { .. } | RingError::Corrupt { .. })
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn hostile_writes_between_steps_never_panic_either_end(steps in prop::collection::vec(step(), 1..48)) {
        let (mut producer, mut consumer, memfd) = untrusted_consumer();
        let wait = Duration::from_micros(100);
        for step in steps {
            let result = match step {
                Step::Push(len) => producer.try_push(&vec![len as u8; len]),
                Step::PushWaiting(len) => producer.push(&vec![len as u8; len], wait),
                Step::Recv => consumer
                    .try_recv(|bytes| bytes.len())
                    .map(|len| assert!(len.unwrap_or(0) <= 200)),
                Step::Park => consumer.wait(wait).map(drop),
                Step::Field(field, value) => {
                    let (_, offset, size) = CONTROL_FIELDS[field];
                    scribble(&memfd, offset, &value.to_le_bytes()[..size]);
                    Ok(())
                }
                Step::FrameHeader(slot, value) => {
                    let offset = DATA_OFFSET + slot as usize * SLOT_BYTES;
                    scribble(&memfd, offset, &value.to_le_bytes());
                    Ok(())
                }
            };
            prop_assert!(acceptable(&result), "{result:?}");
        }
    }

    #[test]
    fn arbitrary_scribbles_never_panic_the_consumer(
        writes in prop::collection::vec((0..ring_bytes(SLOTS), prop::collection::vec(any::<u8>(), 1..24)), 1..12),
        pushes in 0usize..40,
    ) {
        let (mut producer, mut consumer, memfd) = untrusted_consumer();
        for i in 0..pushes {
            let _ = producer.try_push(&vec![i as u8; 1 + i * 7 % 150]);
        }
        for (offset, bytes) in &writes {
            let end = (*offset + bytes.len()).min(ring_bytes(SLOTS));
            scribble(&memfd, *offset, &bytes[..end - offset]);
        }
        for _ in 0..(SLOTS * 4) {
            match consumer.try_recv(|bytes| bytes.len()) {
                Ok(Some(len)) => prop_assert!(len <= 200),
                Ok(None) | Err(RingError::Corrupt { .. }) => break,
                Err(other) => prop_assert!(false, "unexpected error {other}"),
            }
        }
    }

    #[test]
    fn arbitrary_tails_never_panic_the_producer(tail in any::<u64>(), pushes in 0usize..40) {
        let (mut producer, handoff) = export_producer(config()).unwrap();
        let memfd = handoff.memfd().try_clone_to_owned().unwrap();
        scribble(&memfd, TAIL, &tail.to_le_bytes());
        for i in 0..pushes {
            match producer.try_push(&[i as u8; 30]) {
                Ok(()) | Err(RingError::Full) => {}
                Err(RingError::Corrupt { what: "tail", .. }) => break,
                Err(other) => prop_assert!(false, "unexpected error {other}"),
            }
        }
    }
}
