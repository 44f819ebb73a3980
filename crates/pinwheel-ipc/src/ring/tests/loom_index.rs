//! Loom model of the index protocol: frames written by one thread are read
//! by another whole, in order, and never before they are published, across
//! a wrap with a pad frame. Slot bytes are loom-tracked cells, so a read
//! not ordered after its write (a weaker head or tail ordering) fails:
//! checked to fail with a Relaxed head store in `ProducerEnd::publish`
//! (causality violation). The real region copies relaxed atomic words;
//! the model's cells are the stricter stand-in (see `sync.rs`).

use std::sync::Arc;

use loom::thread;

use crate::ring::layout::{ConsumerEnd, ProducerEnd, Shared, WriteFail};

/// Sizes chosen so the third frame does not fit before the end of a
/// 4-slot ring: 1 slot, 2 slots, then a pad and 2 slots from slot 0.
const FRAMES: [usize; 3] = [40, 100, 100];

fn payload(i: usize) -> Vec<u8> {
    vec![i as u8 + 1; FRAMES[i]]
}

#[test]
fn frames_cross_threads_whole_and_in_order_across_a_wrap() {
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(3);
    model.check(|| {
        let shared = Arc::new(Shared::model(4));
        let mut producer = ProducerEnd::new(Arc::clone(&shared), 120);
        let mut consumer = ConsumerEnd::new(shared, 120);
        let writer = thread::spawn(move || {
            for i in 0..FRAMES.len() {
                loop {
                    match producer.write_bytes(&payload(i)).expect("trusted ring") {
                        Ok(()) => break,
                        Err(WriteFail::Full) => {
                            producer.publish(false);
                            thread::yield_now();
                        }
                        Err(WriteFail::TooLarge) => panic!("frame {i} is within max_frame"),
                    }
                }
                producer.publish(false);
            }
        });
        let mut next = 0;
        while next < FRAMES.len() {
            match consumer.next_frame().expect("trusted ring") {
                Some(frame) => {
                    let mut bytes = vec![0; frame.len()];
                    consumer.copy_frame(&frame, &mut bytes);
                    assert_eq!(bytes, payload(next), "frame {next}");
                    consumer.release(frame, false);
                    next += 1;
                }
                None => {
                    consumer.publish_tail(false);
                    thread::yield_now();
                }
            }
        }
        writer.join().expect("writer thread");
    });
}
