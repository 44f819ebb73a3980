//! Who maps a ring decides how its bytes are reached: a ring only this
//! process maps is written and read in place; a ring handed to a peer is
//! reached only through copies, so no Rust reference ever covers bytes the
//! peer may write.

use nix::sys::uio::pwrite;

use crate::ring::{
    Consumer, DATA_OFFSET, Producer, RingConfig, SLOT_BYTES, WaitStrategy, export_consumer,
    export_producer, heap_ring, shm_ring,
};

fn config() -> RingConfig {
    RingConfig {
        slots: 16,
        max_frame: 200,
        wait: WaitStrategy::Park,
        spin_us: 0,
    }
}

/// Where `read` saw two one-slot frames.
fn addresses(producer: &mut Producer, consumer: &mut Consumer) -> [usize; 2] {
    producer.try_push(b"first").unwrap();
    producer.try_push(b"second").unwrap();
    let mut at = [0; 2];
    for place in &mut at {
        *place = consumer
            .try_recv(|bytes| bytes.as_ptr().addr())
            .unwrap()
            .unwrap();
    }
    at
}

#[test]
fn frames_of_an_in_process_ring_are_read_in_place_one_slot_apart() {
    for (mut producer, mut consumer) in [heap_ring(config()).unwrap(), shm_ring(config()).unwrap()]
    {
        let [first, second] = addresses(&mut producer, &mut consumer);
        assert_eq!(second - first, SLOT_BYTES, "consecutive slots, in place");
    }
}

#[test]
fn frames_of_an_exported_ring_are_read_from_one_private_copy() {
    let (mut producer, handoff) = export_producer(config()).unwrap();
    let mut consumer = handoff.into_consumer().unwrap();
    let [first, second] = addresses(&mut producer, &mut consumer);
    assert_eq!(first, second, "the peer's consumer reads its own buffer");
    let (mut consumer, handoff) = export_consumer(config()).unwrap();
    let mut producer = handoff.into_producer().unwrap();
    let [first, second] = addresses(&mut producer, &mut consumer);
    assert_eq!(first, second, "the daemon's consumer reads its own buffer");
}

#[test]
fn a_frame_for_an_exported_ring_is_built_in_private_memory_and_copied_in_whole() {
    let (mut producer, handoff) = export_producer(config()).unwrap();
    let memfd = handoff.memfd().try_clone_to_owned().unwrap();
    let mut consumer = handoff.into_consumer().unwrap();
    let mut offers = Vec::new();
    producer
        .try_write(|buf| {
            offers.push(buf.len());
            buf[..5].copy_from_slice(b"hello");
            // The peer writes the slot the frame is headed for while it is
            // being built: the builder's bytes are not the slot's.
            pwrite(&memfd, b"XXXXX", (DATA_OFFSET + 8) as i64).unwrap();
            assert_eq!(&buf[..5], b"hello");
            Some(5)
        })
        .unwrap();
    producer.flush().unwrap();
    assert_eq!(offers, [4 * SLOT_BYTES - 8], "one offer: the largest frame");
    assert_eq!(
        consumer.try_recv(<[u8]>::to_vec).unwrap(),
        Some(b"hello".to_vec())
    );
}
