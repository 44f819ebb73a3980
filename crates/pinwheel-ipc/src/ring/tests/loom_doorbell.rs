//! Loom model of the doorbell protocol: a consumer that parks when the ring
//! is empty and a producer that parks when it is full are always woken.
//! Doorbells here never time out, so a lost wake-up leaves both threads
//! blocked and loom reports a deadlock: checked to deadlock without the
//! SeqCst fence in `ConsumerEnd::arm`.

use std::sync::Arc;

use loom::thread;

use crate::ring::layout::{ConsumerEnd, ProducerEnd, Shared, WriteFail};
use crate::ring::sync::Doorbell;

/// Two-slot frames in a 4-slot ring: the producer fills it with two frames
/// and must park for space before the third.
const FRAMES: usize = 3;
const FRAME_BYTES: usize = 100;

#[test]
fn parked_consumers_and_producers_are_always_woken() {
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(3);
    model.check(|| {
        let shared = Arc::new(Shared::model(4));
        let data = Arc::new(Doorbell::new().expect("model doorbell"));
        let space = Arc::new(Doorbell::new().expect("model doorbell"));
        let mut producer = ProducerEnd::new(Arc::clone(&shared), 120);
        let mut consumer = ConsumerEnd::new(shared, 120);
        let (data_w, space_w) = (Arc::clone(&data), Arc::clone(&space));
        let writer = thread::spawn(move || {
            for i in 0..FRAMES {
                loop {
                    match producer
                        .write_bytes(&[i as u8; FRAME_BYTES])
                        .expect("trusted ring")
                    {
                        Ok(()) => break,
                        Err(WriteFail::Full) => {
                            if producer.publish(true) {
                                data_w.ring().expect("model doorbell");
                            }
                            if producer.arm().expect("trusted ring") {
                                space_w
                                    .wait(std::time::Duration::MAX)
                                    .expect("model doorbell");
                                producer.disarm();
                            }
                        }
                        Err(WriteFail::TooLarge) => panic!("frame fits"),
                    }
                }
                if producer.publish(true) {
                    data_w.ring().expect("model doorbell");
                }
            }
        });
        let mut next = 0;
        while next < FRAMES {
            match consumer.next_frame().expect("trusted ring") {
                Some(frame) => {
                    let mut bytes = vec![0; frame.len()];
                    consumer.copy_frame(&frame, &mut bytes);
                    assert_eq!(bytes, vec![next as u8; FRAME_BYTES]);
                    if consumer.release(frame, true) {
                        space.ring().expect("model doorbell");
                    }
                    next += 1;
                }
                None => {
                    if consumer.publish_tail(true) {
                        space.ring().expect("model doorbell");
                    }
                    if consumer.arm().expect("trusted ring") {
                        data.wait(std::time::Duration::MAX).expect("model doorbell");
                        consumer.disarm();
                    }
                }
            }
        }
        writer.join().expect("writer thread");
    });
}
