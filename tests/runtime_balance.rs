//! The balancers' distributions, with a stepped clock and no runtime:
//! round robin even, weighted in proportion, consistent hashing sticky
//! and moving about 1/N keys when a replica goes, least outstanding and
//! p2c away from a slow replica, unusable replicas skipped by every
//! algorithm, and no allocation per decision (a counting allocator counts
//! this thread's allocations).

#![cfg(test)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use pinwheel::config::Balance;
use pinwheel::runtime::balance::Balancer;
use pinwheel::test_support::{CountingAlloc, allocations_during};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

const ALL: [Balance; 5] = [
    Balance::P2cEwma,
    Balance::LeastOutstanding,
    Balance::RoundRobin,
    Balance::Weighted,
    Balance::ConsistentHash,
];

/// Picks per replica over `calls` calls that each finish at once.
fn counts(
    sut: &mut Balancer,
    calls: u64,
    usable: u64,
    key: impl Fn(u64) -> Option<u64>,
) -> Vec<u64> {
    let mut out = vec![0; sut.len()];
    for i in 0..calls {
        let now = i * 1_000;
        let r = sut.pick(now, key(i), usable, 0).unwrap();
        out[r] += 1;
        sut.finish(r, now, 1_000, true);
    }
    out
}

/// Calls arriving every `gap_ns` to replicas with the given service
/// times, each finishing after its replica's time (no queueing): the share
/// of calls each replica got.
fn simulate(kind: Balance, service_ns: &[u64], gap_ns: u64, calls: u64) -> Vec<f64> {
    let mut sut = Balancer::new(kind, service_ns.len(), &[], 7, 0);
    let mut in_flight: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
    let mut picked = vec![0u64; service_ns.len()];
    for i in 0..calls {
        let now = i * gap_ns;
        while let Some(&Reverse((end, r))) = in_flight.peek() {
            if end > now {
                break;
            }
            in_flight.pop();
            sut.finish(r, end, service_ns[r], true);
        }
        let r = sut.pick(now, None, sut.all(), 0).unwrap();
        picked[r] += 1;
        in_flight.push(Reverse((now + service_ns[r], r)));
    }
    picked.iter().map(|&n| n as f64 / calls as f64).collect()
}

#[test]
fn round_robin_is_even() {
    let mut sut = Balancer::new(Balance::RoundRobin, 4, &[], 1, 0);
    assert_eq!(counts(&mut sut, 4_000, 0b1111, |_| None), [1000; 4]);
}

#[test]
fn weighted_is_in_proportion_and_interleaved() {
    let mut sut = Balancer::new(Balance::Weighted, 4, &[3, 1, 1, 1], 1, 0);
    assert_eq!(
        counts(&mut sut, 6_000, 0b1111, |_| None),
        [3000, 1000, 1000, 1000]
    );
    let mut sut = Balancer::new(Balance::Weighted, 2, &[2, 1], 1, 0);
    let order: Vec<usize> = (0..6)
        .map(|_| {
            let r = sut.pick(0, None, 0b11, 0).unwrap();
            sut.finish(r, 0, 1, true);
            r
        })
        .collect();
    assert_eq!(order, [0, 1, 0, 0, 1, 0], "smooth, not 0, 0, 1");
}

#[test]
fn consistent_hash_is_sticky_and_moves_about_a_quarter_when_one_of_four_goes() {
    let mut sut = Balancer::new(Balance::ConsistentHash, 4, &[], 1, 0);
    let keys = 20_000u64;
    let place = |sut: &mut Balancer, usable: u64| -> Vec<usize> {
        (0..keys)
            .map(|k| {
                let r = sut.pick(0, Some(k), usable, 0).unwrap();
                sut.finish(r, 0, 1, true);
                r
            })
            .collect()
    };
    let before = place(&mut sut, 0b1111);
    assert_eq!(before, place(&mut sut, 0b1111), "a key keeps its replica");
    let share = |r: usize| before.iter().filter(|&&x| x == r).count() as f64 / keys as f64;
    for r in 0..4 {
        assert!(
            (0.18..0.32).contains(&share(r)),
            "replica {r}: {}",
            share(r)
        );
    }
    let after = place(&mut sut, 0b1011);
    let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
    let on_gone = before.iter().filter(|&&r| r == 2).count();
    assert_eq!(moved, on_gone, "only the removed replica's keys move");
    assert!(after.iter().all(|&r| r != 2));
    assert_eq!(before, place(&mut sut, 0b1111), "and they move back");
}

#[test]
fn consistent_hash_bounds_a_hot_keys_load() {
    let mut sut = Balancer::new(Balance::ConsistentHash, 4, &[], 1, 0);
    // 40 calls of one key in flight at once: no replica holds more than
    // ceil(1.25 x 40 / 4) = 13 of them.
    let picks: Vec<usize> = (0..40)
        .map(|_| sut.pick(0, Some(42), 0b1111, 0).unwrap())
        .collect();
    for r in 0..4 {
        assert!(
            sut.outstanding(r) <= 13,
            "replica {r}: {}",
            sut.outstanding(r)
        );
    }
    assert!(picks.iter().filter(|&&r| r == picks[0]).count() >= 10);
}

#[test]
fn least_outstanding_and_p2c_send_little_to_a_ten_times_slower_replica() {
    let service = [1_000_000, 1_000_000, 1_000_000, 10_000_000];
    let rr = simulate(Balance::RoundRobin, &service, 400_000, 20_000);
    let least = simulate(Balance::LeastOutstanding, &service, 400_000, 20_000);
    let p2c = simulate(Balance::P2cEwma, &service, 400_000, 20_000);
    assert!((rr[3] - 0.25).abs() < 0.001, "round robin {rr:?}");
    assert!(least[3] < 0.08, "least outstanding {least:?}");
    assert!(p2c[3] < 0.01, "p2c {p2c:?}");
}

#[test]
fn every_algorithm_skips_unusable_replicas_and_prefers_unsuspected_ones() {
    for kind in ALL {
        let mut sut = Balancer::new(kind, 4, &[1, 1, 1, 1], 3, 0);
        let got = counts(&mut sut, 400, 0b1011, Some);
        assert_eq!(got[2], 0, "{kind:?}: {got:?}");
        assert!(
            sut.pick(0, Some(1), 0, 0).is_none(),
            "{kind:?}: none usable"
        );
        if matches!(kind, Balance::P2cEwma | Balance::LeastOutstanding) {
            let mut sut = Balancer::new(kind, 4, &[], 3, 0);
            for _ in 0..100 {
                let r = sut.pick(0, None, 0b1111, 0b0100).unwrap();
                assert_ne!(r, 2, "{kind:?}");
                sut.finish(r, 0, 1, true);
            }
            assert_eq!(
                sut.pick(0, None, 0b0100, 0b0100),
                Some(2),
                "{kind:?}: the last resort"
            );
        }
    }
}

#[test]
fn a_replica_that_fails_fast_does_not_attract_p2c() {
    let mut sut = Balancer::new(Balance::P2cEwma, 2, &[], 5, 0);
    let mut to_failing = 0;
    for i in 0..2_000u64 {
        let now = i * 1_000_000;
        let r = sut.pick(now, None, 0b11, 0).unwrap();
        // Replica 1 answers in 10 us, always with an error; replica 0
        // takes 1 ms and succeeds.
        let (rtt, ok) = if r == 1 {
            (10_000, false)
        } else {
            (1_000_000, true)
        };
        sut.finish(r, now + rtt, rtt, ok);
        to_failing += u64::from(r == 1);
    }
    assert!(
        to_failing < 400,
        "{to_failing} of 2000 to the failing replica"
    );
}

#[test]
fn a_decision_allocates_nothing() {
    let mut balancers: Vec<Balancer> = ALL
        .iter()
        .map(|&kind| Balancer::new(kind, 8, &[1, 2, 3, 4, 5, 6, 7, 8], 9, 0))
        .collect();
    let allocations = allocations_during(|| {
        for i in 0..10_000u64 {
            for sut in &mut balancers {
                let r = sut.pick(i * 1_000, Some(i), 0xff, 0b10).unwrap();
                sut.finish(r, i * 1_000 + 500, 500, i % 7 != 0);
            }
        }
    });
    assert_eq!(allocations, 0);
}
