//! The ring path allocates nothing per message in steady state: encoding an
//! envelope into a slot, publishing it, and reading it back checked, on a
//! trusted in-process ring and on an untrusted exported one.

// The crate is test code as a whole; marking it so lets the lints that
// keep `unwrap` and `#[test]` inside test modules see that.
#![cfg(test)]

use pinwheel::test_support::{CountingAlloc, allocations_during};
use pinwheel_ipc::ring::{Consumer, Producer, RingConfig, WaitStrategy, export_producer, shm_ring};
use pinwheel_ipc::wire::{AgentId, Envelope, Payload, Priority, TopicId};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn config() -> RingConfig {
    RingConfig {
        slots: 256,
        max_frame: 2048,
        wait: WaitStrategy::Park,
        spin_us: 0,
    }
}

fn round_trips(producer: &mut Producer, consumer: &mut Consumer, count: u64) {
    let body = [3u8; 200];
    for i in 0..count {
        let env = Envelope {
            from: AgentId(1),
            to: AgentId(2),
            topic: TopicId::NONE,
            correlation: i,
            priority: Priority::Normal,
            sent_ns: i,
            deadline_ns: 0,
            payload: Payload::Request {
                method: 7,
                body: &body[..(i % 200) as usize],
            },
        };
        producer.try_send(&env).unwrap();
        let seen = consumer
            .try_recv_envelope(|got| (got.correlation(), got.body().len()))
            .unwrap();
        assert_eq!(seen, Some((i, (i % 200) as usize)));
    }
}

#[test]
fn a_trusted_ring_moves_envelopes_without_allocating() {
    let (mut producer, mut consumer) = shm_ring(config()).unwrap();
    round_trips(&mut producer, &mut consumer, 1_000);
    let allocations = allocations_during(|| round_trips(&mut producer, &mut consumer, 10_000));
    assert_eq!(allocations, 0);
}

#[test]
fn an_untrusted_ring_copies_and_checks_without_allocating() {
    let (mut producer, handoff) = export_producer(config()).unwrap();
    let mut consumer = handoff.into_consumer().unwrap();
    round_trips(&mut producer, &mut consumer, 1_000);
    let allocations = allocations_during(|| round_trips(&mut producer, &mut consumer, 10_000));
    assert_eq!(allocations, 0);
}

#[test]
fn the_counter_sees_an_allocation_when_there_is_one() {
    let allocations = allocations_during(|| drop(std::hint::black_box(vec![1u8; 64])));
    assert!(allocations >= 1);
}
