//! The native agents' steady-state calls allocate nothing: registry
//! lookups, heartbeats and health; breaker, bulkhead and retry decisions
//! around a call; and the request queue's push, pop and expiry.

// The crate is test code as a whole; marking it so lets the lints that
// keep `unwrap` and `#[test]` inside test modules see that.
#![cfg(test)]

use pinwheel::agents::coordinator::{
    BreakerConfig, CallOutcome, CoordinatorPolicy, Decision, DownstreamConfig, DownstreamId,
    Popped, RequestQueue, RetryPolicy,
};
use pinwheel::agents::registry::{Record, RegisterOutcome, Registry};
use pinwheel::config::Priority;
use pinwheel::test_support::{CountingAlloc, allocations_during};
use pinwheel::topology::CpuId;
use pinwheel_ipc::wire::AgentId;
use rand::SeedableRng;
use rand::rngs::SmallRng;

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn record(id: u32) -> Record {
    Record {
        id: AgentId(id),
        host: "mainpc".to_owned(),
        cpu: CpuId(2),
        role: "speech".to_owned(),
    }
}

#[test]
fn registry_lookups_heartbeats_and_health_do_not_allocate() {
    let mut sut = Registry::new(64);
    let names: Vec<String> = (0..64).map(|i| format!("agent-{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        sut.register(name, record(i as u32), 0).unwrap();
    }
    let same = record(5);
    let records: Vec<Record> = (0..64).map(record).collect();

    let allocations = allocations_during(|| {
        for now_ns in 1..1_000u64 {
            let i = (now_ns % 64) as usize;
            let name = names[i].as_str();
            assert!(sut.lookup(name).is_some());
            sut.heartbeat(name, now_ns).unwrap();
            assert!(sut.heartbeat_id(AgentId(i as u32), name, &records[i], now_ns));
            assert!(sut.health(name, now_ns).is_some());
        }
    });
    // Re-registering an unchanged record is a heartbeat too.
    let record = same.clone();
    let reregistered = allocations_during(|| {
        assert_eq!(
            sut.register("agent-5", record, 2_000).unwrap(),
            RegisterOutcome::Unchanged
        );
    });

    assert_eq!(allocations, 0);
    assert_eq!(reregistered, 0);
}

#[test]
fn call_decisions_and_the_queue_do_not_allocate() {
    let downstream = DownstreamConfig {
        breaker: BreakerConfig::DEFAULT,
        max_in_flight: 4,
    };
    let mut policy = CoordinatorPolicy::new(&[downstream; 3], RetryPolicy::DEFAULT).unwrap();
    let mut queue = RequestQueue::new(256);
    let mut rng = SmallRng::seed_from_u64(3);
    let priorities = [
        Priority::Critical,
        Priority::High,
        Priority::Normal,
        Priority::Low,
    ];

    let allocations = allocations_during(|| {
        for i in 0..10_000u64 {
            let now_ns = i * 1_000;
            queue
                .push(i, priorities[(i % 4) as usize], now_ns + 500 * (i % 7))
                .unwrap();
            queue.drain_expired(now_ns, |_| {});
            let Some(Popped::Ready(_)) = queue.pop_ready(now_ns) else {
                continue;
            };
            let id = DownstreamId((i % 3) as u16);
            let Decision::Call(ticket) = policy.before_call(id, 1, now_ns, u64::MAX).unwrap()
            else {
                continue;
            };
            let outcome = if i % 5 == 0 {
                CallOutcome::Failure
            } else {
                CallOutcome::Success
            };
            policy
                .after_call(ticket, outcome, now_ns + 1, &mut rng)
                .unwrap();
        }
    });

    assert_eq!(allocations, 0);
}
