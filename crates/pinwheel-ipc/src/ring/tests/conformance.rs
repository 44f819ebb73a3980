//! Behaviour every ring must have, whatever its memory and trust.

use std::thread;
use std::time::{Duration, Instant};

use crate::ring::{
    Consumer, Producer, RingConfig, RingError, SLOT_BYTES, WaitStrategy, export_producer,
    heap_ring, shm_ring,
};
use crate::wire::{AgentId, Envelope, Payload, Priority, TopicId};

type Factory = fn(RingConfig) -> (Producer, Consumer);

fn heap(config: RingConfig) -> (Producer, Consumer) {
    heap_ring(config).unwrap()
}

fn shm(config: RingConfig) -> (Producer, Consumer) {
    shm_ring(config).unwrap()
}

/// A memfd ring whose consumer attached through a handoff, so it copies
/// and validates every frame.
fn exported(config: RingConfig) -> (Producer, Consumer) {
    let (producer, handoff) = export_producer(config).unwrap();
    (producer, handoff.into_consumer().unwrap())
}

const FACTORIES: [(&str, Factory); 3] = [("heap", heap), ("shm", shm), ("exported", exported)];

fn config(wait: WaitStrategy) -> RingConfig {
    RingConfig {
        slots: 16,
        max_frame: 8 * SLOT_BYTES - 8,
        wait,
        spin_us: 20,
    }
}

fn recv(consumer: &mut Consumer) -> Option<Vec<u8>> {
    consumer.try_recv(<[u8]>::to_vec).unwrap()
}

fn frame(i: usize) -> Vec<u8> {
    let len = 1 + (i * 37) % 300;
    (0..len).map(|b| (b + i) as u8).collect()
}

fn each(test: impl Fn(&str, Factory)) {
    for (name, factory) in FACTORIES {
        test(name, factory);
    }
}

#[test]
fn an_empty_ring_has_nothing_to_read() {
    each(|name, make| {
        let (_producer, mut consumer) = make(config(WaitStrategy::Park));
        assert_eq!(recv(&mut consumer), None, "{name}");
    });
}

#[test]
fn frames_arrive_whole_and_in_order_across_many_wraps() {
    each(|name, make| {
        let (mut producer, mut consumer) = make(config(WaitStrategy::Park));
        for i in 0..500 {
            producer.try_push(&frame(i)).unwrap();
            assert_eq!(recv(&mut consumer), Some(frame(i)), "{name} frame {i}");
        }
    });
}

#[test]
fn unflushed_frames_are_invisible_and_a_flush_publishes_them_together() {
    each(|name, make| {
        let (mut producer, mut consumer) = make(config(WaitStrategy::Park));
        for i in 0..3 {
            producer.try_write_bytes(&frame(i)).unwrap();
        }
        assert!(producer.has_unflushed());
        assert_eq!(recv(&mut consumer), None, "{name}");
        producer.flush().unwrap();
        let got: Vec<Vec<u8>> = (0..3).filter_map(|_| recv(&mut consumer)).collect();
        assert_eq!(got, (0..3).map(frame).collect::<Vec<_>>(), "{name}");
    });
}

#[test]
fn frames_can_be_written_in_place() {
    each(|name, make| {
        let (mut producer, mut consumer) = make(config(WaitStrategy::Park));
        producer
            .try_write(|buf| {
                buf[..5].copy_from_slice(b"hello");
                Some(5)
            })
            .unwrap();
        producer.flush().unwrap();
        assert_eq!(recv(&mut consumer), Some(b"hello".to_vec()), "{name}");
    });
}

#[test]
fn a_writer_that_needs_more_room_gets_it_after_a_wrap() {
    each(|name, make| {
        let (mut producer, mut consumer) = make(config(WaitStrategy::Park));
        // Leave 2 slots before the end, then ask for a 3-slot frame.
        for _ in 0..14 {
            producer.try_push(&[7; 1]).unwrap();
            recv(&mut consumer).unwrap();
        }
        let mut offered = Vec::new();
        producer
            .try_write(|buf| {
                offered.push(buf.len());
                (buf.len() >= 150).then(|| {
                    buf[..150].fill(9);
                    150
                })
            })
            .unwrap();
        producer.flush().unwrap();
        if name == "exported" {
            // Staged in private memory: offered the largest frame at once.
            assert_eq!(offered, [8 * SLOT_BYTES - 8], "{name}");
        } else {
            assert_eq!(
                offered[0],
                2 * SLOT_BYTES - 8,
                "{name}: first offer stops at the ring's end"
            );
            assert!(
                offered[1] >= 150,
                "{name}: after the pad the frame gets its room"
            );
        }
        assert_eq!(recv(&mut consumer), Some(vec![9; 150]), "{name}");
    });
}

fn envelope(i: u64, body: &[u8]) -> Envelope<'_> {
    Envelope {
        from: AgentId(1),
        to: AgentId(2),
        topic: TopicId::NONE,
        correlation: i,
        priority: Priority::Normal,
        sent_ns: 0,
        deadline_ns: 0,
        payload: Payload::Request { method: 7, body },
    }
}

#[test]
fn envelopes_arrive_checked_and_whole_across_many_wraps() {
    each(|name, make| {
        let (mut producer, mut consumer) = make(config(WaitStrategy::Park));
        for i in 0..300u64 {
            let body = &frame(i as usize);
            producer.try_send(&envelope(i, body)).unwrap();
            let got = consumer
                .try_recv_envelope(|env| (env.correlation(), env.body().to_vec()))
                .unwrap();
            assert_eq!(got, Some((i, body.to_vec())), "{name} envelope {i}");
        }
    });
}

#[test]
fn an_envelope_larger_than_the_largest_frame_is_refused_with_its_size() {
    each(|name, make| {
        let (mut producer, mut consumer) = make(config(WaitStrategy::Park));
        let err = producer
            .try_send(&envelope(1, &[0; 8 * SLOT_BYTES]))
            .unwrap_err();
        assert!(
            matches!(err, RingError::TooLarge { len, max: 504 } if len > 512),
            "{name}: {err}"
        );
        assert!(!producer.has_unflushed(), "{name}: nothing was written");
        assert!(consumer.try_recv(|_| ()).unwrap().is_none(), "{name}");
    });
}

#[test]
fn a_full_ring_refuses_without_writing_and_accepts_once_drained() {
    each(|name, make| {
        let (mut producer, mut consumer) = make(config(WaitStrategy::Park));
        let mut pushed = 0;
        while producer.try_push(&frame(pushed)).is_ok() {
            pushed += 1;
        }
        assert!(pushed > 0, "{name}");
        assert!(
            matches!(producer.try_push(&frame(999)), Err(RingError::Full)),
            "{name}"
        );
        for i in 0..pushed {
            assert_eq!(
                recv(&mut consumer),
                Some(frame(i)),
                "{name}: nothing lost or reordered by Full"
            );
        }
        assert_eq!(
            recv(&mut consumer),
            None,
            "{name}: the refused frame was not written"
        );
        producer.try_push(&frame(1000)).unwrap();
        assert_eq!(recv(&mut consumer), Some(frame(1000)), "{name}");
    });
}

#[test]
fn a_frame_larger_than_the_largest_is_refused() {
    each(|name, make| {
        let (mut producer, _consumer) = make(config(WaitStrategy::Park));
        let err = producer.try_push(&vec![0; 8 * SLOT_BYTES]).unwrap_err();
        assert!(
            matches!(err, RingError::TooLarge { len: 512, max: 504 }),
            "{name}: {err}"
        );
    });
}

#[test]
fn push_or_drop_counts_what_it_drops() {
    each(|name, make| {
        let (mut producer, _consumer) = make(config(WaitStrategy::Park));
        let written = (0..100)
            .filter(|i| producer.push_or_drop(&frame(*i)).unwrap())
            .count();
        assert_eq!(producer.stats().drops, 100 - written as u64, "{name}");
        assert!(producer.stats().drops > 0, "{name}");
    });
}

#[test]
fn wait_times_out_on_an_empty_ring() {
    each(|name, make| {
        for wait in [
            WaitStrategy::Park,
            WaitStrategy::Adaptive,
            WaitStrategy::Spin,
        ] {
            let (_producer, mut consumer) = make(config(wait));
            assert!(
                !consumer.wait(Duration::from_millis(5)).unwrap(),
                "{name} {wait:?}"
            );
        }
    });
}

/// Streams frames from a second thread; the consumer waits by its
/// strategy, so parking, wake-ups and lazy tails are all exercised.
fn stream_across_threads(make: Factory, wait: WaitStrategy, count: usize) -> (Producer, Consumer) {
    let (mut producer, mut consumer) = make(config(wait));
    let writer = thread::spawn(move || {
        for i in 0..count {
            producer.push(&frame(i), Duration::from_secs(10)).unwrap();
            if i % 97 == 0 {
                thread::sleep(Duration::from_micros(200));
            }
        }
        producer
    });
    let mut next = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while next < count {
        assert!(Instant::now() < deadline, "stalled at frame {next}");
        if !consumer.wait(Duration::from_millis(100)).unwrap() {
            continue;
        }
        while let Some(bytes) = recv(&mut consumer) {
            assert_eq!(bytes, frame(next), "frame {next}");
            next += 1;
        }
    }
    (writer.join().unwrap(), consumer)
}

#[test]
fn frames_stream_between_threads_in_order_for_every_wait_strategy() {
    each(|name, make| {
        for wait in [
            WaitStrategy::Park,
            WaitStrategy::Adaptive,
            WaitStrategy::Spin,
        ] {
            let (producer, consumer) = stream_across_threads(make, wait, 5_000);
            assert_eq!(consumer.stats().frames, 5_000, "{name} {wait:?}");
            assert_eq!(producer.stats().frames, 5_000, "{name} {wait:?}");
        }
    });
}

#[test]
fn a_parked_consumer_is_woken_and_a_spinning_one_never_parks() {
    each(|name, make| {
        let (_, parked) = stream_across_threads(make, WaitStrategy::Park, 2_000);
        assert!(parked.stats().parks > 0, "{name}: park strategy parked");
        let (_, spinning) = stream_across_threads(make, WaitStrategy::Spin, 2_000);
        assert_eq!(
            spinning.stats().parks,
            0,
            "{name}: spin strategy never parks"
        );
    });
}

#[test]
fn push_waits_for_a_slow_consumer_instead_of_failing() {
    each(|name, make| {
        let (mut producer, mut consumer) = make(config(WaitStrategy::Park));
        let reader = thread::spawn(move || {
            let mut got = 0;
            while got < 200 {
                thread::sleep(Duration::from_micros(50));
                got += consumer.recv_batch(3, |_| {}).unwrap();
            }
            got
        });
        for i in 0..200 {
            producer.push(&frame(i), Duration::from_secs(10)).unwrap();
        }
        assert_eq!(reader.join().unwrap(), 200, "{name}");
        assert!(
            producer.stats().parks > 0,
            "{name}: the producer waited for space"
        );
    });
}

/// `send`'s slow path: past its in-line try, a full ring makes it wait
/// for space, every envelope arrives once and in order, and with no
/// reader it gives up at its timeout having written nothing.
#[test]
fn send_waits_for_space_and_gives_up_after_its_timeout() {
    each(|name, make| {
        let (mut producer, mut consumer) = make(config(WaitStrategy::Park));
        let reader = thread::spawn(move || {
            let mut seen = Vec::new();
            while seen.len() < 200 {
                thread::sleep(Duration::from_micros(50));
                while let Some(i) = consumer.try_recv_envelope(|env| env.correlation()).unwrap() {
                    seen.push(i);
                }
            }
            (seen, consumer)
        });
        for i in 0..200u64 {
            producer
                .send(&envelope(i, &frame(i as usize)), Duration::from_secs(10))
                .unwrap();
        }
        let (seen, mut consumer) = reader.join().unwrap();
        assert_eq!(seen, (0..200).collect::<Vec<_>>(), "{name}");
        assert!(
            producer.stats().parks > 0,
            "{name}: the producer waited for space"
        );

        while producer.try_send(&envelope(0, &[1; 100])).is_ok() {}
        let sent = producer.stats().frames;
        let err = producer
            .send(&envelope(1, &[1; 100]), Duration::from_millis(10))
            .unwrap_err();
        assert!(matches!(err, RingError::Timeout { .. }), "{name}: {err}");
        assert_eq!(producer.stats().frames, sent, "{name}: nothing written");
        let mut left = 0;
        while consumer.try_recv(|_| ()).unwrap().is_some() {
            left += 1;
        }
        assert_eq!(left, sent - 200, "{name}: only the frames that fitted");
    });
}

#[test]
fn push_gives_up_after_its_timeout() {
    each(|name, make| {
        let (mut producer, _consumer) = make(config(WaitStrategy::Park));
        while producer.try_push(&[1; 100]).is_ok() {}
        let err = producer
            .push(&[1; 100], Duration::from_millis(10))
            .unwrap_err();
        assert!(matches!(err, RingError::Timeout { .. }), "{name}: {err}");
    });
}

#[cfg(feature = "glommio")]
#[test]
fn wait_async_wakes_on_a_glommio_executor() {
    each(|name, make| {
        let (mut producer, mut consumer) = make(config(WaitStrategy::Park));
        let writer = thread::spawn(move || {
            for i in 0..50 {
                thread::sleep(Duration::from_millis(1));
                producer.push(&frame(i), Duration::from_secs(10)).unwrap();
            }
        });
        let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .make()
            .unwrap();
        let got = executor.run(async move {
            let bell = consumer.async_doorbell().unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut got = Vec::new();
            while got.len() < 50 {
                assert!(
                    Instant::now() < deadline,
                    "stalled after {} frames",
                    got.len()
                );
                if consumer
                    .wait_async(&bell, Duration::from_millis(100))
                    .await
                    .unwrap()
                {
                    while let Some(bytes) = recv(&mut consumer) {
                        got.push(bytes);
                    }
                }
            }
            (got, consumer.stats().parks)
        });
        writer.join().unwrap();
        assert_eq!(got.0, (0..50).map(frame).collect::<Vec<_>>(), "{name}");
        assert!(got.1 > 0, "{name}: it parked on the doorbell");
    });
}

#[test]
fn bad_configurations_are_refused() {
    for (slots, max_frame) in [(3, 8), (2, 8), (16, 0), (16, 8 * SLOT_BYTES), (1 << 21, 8)] {
        let config = RingConfig {
            slots,
            max_frame,
            wait: WaitStrategy::Park,
            spin_us: 0,
        };
        assert!(
            matches!(heap_ring(config), Err(RingError::Config { .. })),
            "{slots} {max_frame}"
        );
    }
}
