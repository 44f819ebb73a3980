//! Consumer groups: one thread parked on one bell for several rings.

use std::thread;
use std::time::{Duration, Instant};

use crate::ring::{
    ConsumerGroup, DataBell, GroupWake, Producer, RingConfig, RingError, WaitStrategy, shm_ring,
    shm_ring_into,
};

fn config(wait: WaitStrategy) -> RingConfig {
    RingConfig {
        slots: 64,
        max_frame: 256,
        wait,
        spin_us: 10,
    }
}

#[test]
fn a_group_wakes_for_a_frame_on_any_of_its_rings() {
    let bell = DataBell::new().unwrap();
    let mut group = ConsumerGroup::new(bell.clone(), WaitStrategy::Park, 0);
    let mut producers = Vec::new();
    for _ in 0..3 {
        let (producer, consumer) = shm_ring_into(config(WaitStrategy::Park), &bell).unwrap();
        group.add(consumer).unwrap();
        producers.push(producer);
    }
    let writer = thread::spawn(move || {
        for round in 0..30usize {
            thread::sleep(Duration::from_millis(1));
            producers[round % 3].try_push(&[round as u8]).unwrap();
        }
    });
    let mut got = Vec::new();
    while got.len() < 30 {
        assert!(
            group.wait(Duration::from_secs(5)).unwrap(),
            "woken within the timeout"
        );
        for consumer in group.consumers_mut() {
            while let Some(byte) = consumer.try_recv(|b| b[0]).unwrap() {
                got.push(byte);
            }
        }
    }
    writer.join().unwrap();
    got.sort_unstable();
    assert_eq!(got, (0..30).collect::<Vec<u8>>());
    assert!(group.parks() > 0, "the group parked between frames");
}

#[test]
fn an_adaptive_group_spins_then_parks_and_wakes_for_every_frame() {
    let bell = DataBell::new().unwrap();
    let mut group = ConsumerGroup::new(bell.clone(), WaitStrategy::Adaptive, 20);
    let (mut a, ca) = shm_ring_into(config(WaitStrategy::Adaptive), &bell).unwrap();
    let (mut b, cb) = shm_ring_into(config(WaitStrategy::Adaptive), &bell).unwrap();
    group.add(ca).unwrap();
    group.add(cb).unwrap();
    let writer = thread::spawn(move || {
        for i in 0..40u8 {
            thread::sleep(Duration::from_millis(1));
            if i % 2 == 0 {
                a.push(&[i], Duration::from_secs(5)).unwrap()
            } else {
                b.push(&[i], Duration::from_secs(5)).unwrap()
            }
        }
    });
    let mut count = 0;
    while count < 40 {
        let deadline = Instant::now() + Duration::from_secs(5);
        if group.wait_until(deadline, || false).unwrap() == GroupWake::Frames {
            for consumer in group.consumers_mut() {
                count += consumer.recv_batch(64, |_| {}).unwrap();
            }
        }
    }
    writer.join().unwrap();
    assert_eq!(count, 40);
    assert!(group.parks() > 0, "it parked on the shared bell");
}

#[test]
fn an_interrupt_ends_a_spinning_wait() {
    let bell = DataBell::new().unwrap();
    let mut group = ConsumerGroup::new(bell.clone(), WaitStrategy::Spin, 0);
    let (_producer, consumer) = shm_ring_into(config(WaitStrategy::Spin), &bell).unwrap();
    group.add(consumer).unwrap();
    let mut asked = 0;
    let sut = group.wait_until(Instant::now() + Duration::from_secs(5), || {
        asked += 1;
        asked > 100
    });
    assert_eq!(sut.unwrap(), GroupWake::Interrupted);
}

#[test]
fn a_nudge_wakes_a_parked_group_that_then_asks_its_interrupt() {
    let bell = DataBell::new().unwrap();
    let mut group = ConsumerGroup::new(bell.clone(), WaitStrategy::Park, 0);
    let (_producer, consumer) = shm_ring_into(config(WaitStrategy::Park), &bell).unwrap();
    group.add(consumer).unwrap();
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (nudger_flag, nudger_bell) = (flag.clone(), bell.clone());
    let nudger = thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        nudger_flag.store(true, std::sync::atomic::Ordering::SeqCst);
        nudger_bell.nudge().unwrap();
    });
    let sut = group.wait_until(Instant::now() + Duration::from_secs(5), || {
        flag.load(std::sync::atomic::Ordering::SeqCst)
    });
    nudger.join().unwrap();
    assert_eq!(sut.unwrap(), GroupWake::Interrupted);
    assert_eq!(group.parks(), 1);
}

#[test]
fn a_deadline_under_a_millisecond_ends_the_park_as_a_deadline() {
    let bell = DataBell::new().unwrap();
    let mut group = ConsumerGroup::new(bell.clone(), WaitStrategy::Park, 0);
    let (_producer, consumer) = shm_ring_into(config(WaitStrategy::Park), &bell).unwrap();
    group.add(consumer).unwrap();
    let deadline = Instant::now() + Duration::from_micros(300);
    assert_eq!(
        group.wait_until(deadline, || false).unwrap(),
        GroupWake::Deadline
    );
}

/// An adaptive group with one empty ring.
fn adaptive_group() -> (ConsumerGroup, Producer) {
    let bell = DataBell::new().unwrap();
    let mut group = ConsumerGroup::new(bell.clone(), WaitStrategy::Adaptive, 10);
    let (producer, consumer) = shm_ring_into(config(WaitStrategy::Adaptive), &bell).unwrap();
    group.add(consumer).unwrap();
    (group, producer)
}

#[test]
fn timed_out_parks_teach_a_group_how_late_its_thread_wakes() {
    let (mut group, _producer) = adaptive_group();
    assert_eq!(
        group.wake_lateness(),
        Duration::ZERO,
        "nothing measured yet"
    );
    for _ in 0..5 {
        assert!(!group.wait(Duration::from_millis(2)).unwrap());
    }
    assert!(group.parks() >= 5, "every wait parked: {}", group.parks());
    assert!(
        group.wake_lateness() > Duration::ZERO,
        "a park returns after its deadline"
    );
}

#[test]
fn an_adaptive_group_spins_to_a_deadline_nearer_than_its_wake_ups_and_parks_for_a_far_one() {
    let (mut group, _producer) = adaptive_group();
    group.woke_late(Duration::from_micros(250), 64);
    let near = Instant::now() + Duration::from_micros(100);
    assert_eq!(
        group.wait_until(near, || false).unwrap(),
        GroupWake::Deadline
    );
    assert_eq!(
        group.parks(),
        0,
        "a park would have woken after the deadline"
    );
    let far = Instant::now() + Duration::from_millis(50);
    assert_eq!(
        group.wait_until(far, || false).unwrap(),
        GroupWake::Deadline
    );
    assert_eq!(group.parks(), 1);
}

#[test]
fn after_waking_a_peer_a_group_spins_as_long_as_its_own_wake_ups_take() {
    let (mut group, _producer) = adaptive_group();
    group.woke_late(Duration::from_micros(250), 64);
    let lateness = group.wake_lateness();
    let start = Instant::now();
    let far = start + Duration::from_secs(1);
    let full = start + Duration::from_micros(10);
    assert_eq!(group.spin_stop(start, far, false), (Some(full), false));
    assert_eq!(
        group.spin_stop(start, far, true),
        (Some(start + lateness), false)
    );
    // Never past the deadline; a near one is spun to all the same.
    let soon = start + lateness * 2;
    assert_eq!(
        group.spin_stop(start, soon, true),
        (Some(start + lateness), false)
    );
    let near = start + lateness / 2;
    assert_eq!(group.spin_stop(start, near, true), (Some(near), true));
}

#[test]
fn a_woken_peer_never_shortens_a_spin_nor_makes_a_parking_group_spin() {
    let (mut group, _producer) = adaptive_group();
    group.woke_late(Duration::from_micros(2), 64);
    let start = Instant::now();
    let far = start + Duration::from_secs(1);
    assert_eq!(
        group.spin_stop(start, far, true),
        (Some(start + Duration::from_micros(10)), false),
        "a wake-up shorter than the full spin leaves the spin as it is"
    );
    let bell = DataBell::new().unwrap();
    let mut parking = ConsumerGroup::new(bell.clone(), WaitStrategy::Park, 0);
    parking.woke_late(Duration::from_micros(250), 64);
    assert_eq!(parking.spin_stop(start, far, true), (None, false));
}

#[test]
fn a_ring_on_another_bell_cannot_join() {
    let mut group = ConsumerGroup::new(DataBell::new().unwrap(), WaitStrategy::Park, 0);
    let (_producer, consumer) = shm_ring(config(WaitStrategy::Park)).unwrap();
    assert!(matches!(group.add(consumer), Err(RingError::Config { .. })));
}

#[test]
fn an_idle_group_times_out() {
    let bell = DataBell::new().unwrap();
    let mut group = ConsumerGroup::new(bell.clone(), WaitStrategy::Park, 0);
    let (_producer, consumer) = shm_ring_into(config(WaitStrategy::Park), &bell).unwrap();
    group.add(consumer).unwrap();
    assert!(!group.wait(Duration::from_millis(5)).unwrap());
}

#[test]
fn a_park_beside_many_watched_bells_ends_when_the_last_one_rings() {
    // 15 watched bells fit the park's descriptor set on the stack; 16 and
    // more take the other path.
    for watched in [1, 15, 16, 40] {
        let bell = DataBell::new().unwrap();
        let mut group = ConsumerGroup::new(bell.clone(), WaitStrategy::Park, 0);
        let (_producer, consumer) = shm_ring_into(config(WaitStrategy::Park), &bell).unwrap();
        group.add(consumer).unwrap();
        let mut others = Vec::new();
        let mut producers = Vec::new();
        for _ in 0..watched {
            let other_bell = DataBell::new().unwrap();
            let mut other = ConsumerGroup::new(other_bell.clone(), WaitStrategy::Park, 0);
            let (producer, consumer) =
                shm_ring_into(config(WaitStrategy::Park), &other_bell).unwrap();
            other.add(consumer).unwrap();
            assert!(other.arm().unwrap(), "nothing published yet");
            others.push(other);
            producers.push(producer);
        }
        let bells: Vec<DataBell> = others.iter().map(|g| g.bell().clone()).collect();
        let mut last = producers.pop().unwrap();
        let writer = thread::spawn(move || {
            thread::sleep(Duration::from_millis(10));
            last.try_push(&[1]).unwrap();
        });
        let woke = group.wait_until_also(Instant::now() + Duration::from_secs(5), || false, &bells);
        writer.join().unwrap();
        assert_eq!(woke.unwrap(), GroupWake::Interrupted, "{watched} watched");
        for other in &mut others {
            other.disarm();
        }
        assert!(others.last_mut().unwrap().any_frames().unwrap());
    }
}
