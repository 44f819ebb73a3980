//! A peer in another process may write anything anywhere in the ring's
//! memory. The untrusted end must answer with frames, nothing, or
//! `RingError::Corrupt`: never a panic, a hang, or a read out of bounds.

use std::os::fd::OwnedFd;

use nix::sys::uio::pwrite;
use proptest::prelude::*;

use crate::ring::{
    Consumer, DATA_OFFSET, Producer, RingConfig, RingError, WaitStrategy, export_consumer,
    export_producer, ring_bytes,
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

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
