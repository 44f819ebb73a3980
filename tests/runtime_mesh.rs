//! The runtime end to end with small test agents: executors on CPU 0 and
//! CPU 1, calls across CPUs and on one CPU, start phases, placement, and a
//! clean stop that drains.

// The crate is test code as a whole; marking it so lets the lints that
// keep `unwrap` and `#[test]` inside test modules see that.
#![cfg(test)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pinwheel::config::{AgentSet, SourceFile};
use pinwheel::plan::Plan;
use pinwheel::runtime::RuntimeError;
use pinwheel::runtime::agent::{Agent, Message};
use pinwheel::runtime::ctx::Ctx;
use pinwheel::runtime::executor::{Control, Runtime, start};
use pinwheel::runtime::layout::{Layout, layout};
use pinwheel::runtime::node::STATUS_OK;
use pinwheel::runtime::stats::StatsSnapshot;
use pinwheel::topology::{self, Topology};
use pinwheel_ipc::wire::{AgentId, Priority};

use pinwheel::test_support::runtime::TWO_CPUS as TOPOLOGY;

const AGENTS: &str = r#"schema = 1
[[agent]]
name = "Pinger"
host = "t"
role = "calls"
kind = "synthetic"
cpu = 0
calls = ["Echo", "Near"]

[[agent]]
name = "Echo"
host = "t"
role = "answers"
kind = "synthetic"
cpu = 1

[[agent]]
name = "Near"
host = "t"
role = "answers on the caller's CPU"
kind = "synthetic"
cpu = 0
"#;

/// What the test agents report back to the test thread.
#[derive(Debug, Default)]
struct Tally {
    ok: AtomicU64,
    wrong: AtomicU64,
    errors: AtomicU64,
}

enum TestAgent {
    Pinger(Arc<Tally>),
    Echo,
}

impl Agent for TestAgent {
    async fn handle(&self, ctx: &Ctx, msg: &Message) -> Result<(), RuntimeError> {
        let body = msg.body().to_vec();
        ctx.reply(msg, STATUS_OK, &body).await
    }

    async fn run(&self, ctx: &Ctx) {
        let TestAgent::Pinger(tally) = self else {
            return;
        };
        for i in 0..2_000u32 {
            for target in [AgentId(1), AgentId(2)] {
                let body = i.to_le_bytes();
                match ctx
                    .call(target, 1, &body, Priority::Normal, Duration::from_secs(2))
                    .await
                {
                    Ok(reply)
                        if reply.head().code == STATUS_OK && &*reply.body() == body.as_slice() =>
                    {
                        tally.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {
                        tally.wrong.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        tally.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

fn setup() -> (Topology, AgentSet, Plan) {
    let file = SourceFile::from_text(Path::new("t.toml"), TOPOLOGY);
    let topology = topology::validate(file.parse().unwrap(), &file, None).unwrap();
    let agents =
        AgentSet::from_sources(&[SourceFile::from_text(Path::new("a.toml"), AGENTS)]).unwrap();
    let plan = Plan::build(&topology, &agents).unwrap();
    (topology, agents, plan)
}

fn run(tally: Arc<Tally>) -> (Runtime, Layout) {
    let (topology, agents, plan) = setup();
    let layout = layout(&plan, &topology, &agents).unwrap();
    let control = Control::new(layout.executors.len(), layout.phases.len());
    let make = Arc::new(move |id: AgentId| {
        if id == AgentId(0) {
            TestAgent::Pinger(Arc::clone(&tally))
        } else {
            TestAgent::Echo
        }
    });
    let Layout {
        routes,
        executors,
        phases,
    } = layout;
    let runtime = start(
        Arc::clone(&routes),
        executors,
        make,
        Arc::new(|_| {}),
        control,
        pinwheel::test_support::control_runtime(),
    )
    .unwrap();
    for (phase, &expected) in phases.iter().enumerate() {
        runtime.open_phase(phase);
        assert!(
            runtime.wait_started(phase, expected, Duration::from_secs(5)),
            "phase {phase} started"
        );
    }
    (
        runtime,
        Layout {
            routes,
            executors: Vec::new(),
            phases,
        },
    )
}

fn snapshots_agent_cpu(snapshots: &[StatsSnapshot], agent: AgentId) -> Option<u32> {
    snapshots
        .iter()
        .flat_map(|s| s.agents.iter())
        .find(|(a, _)| *a == agent)
        .and_then(|(_, c)| c.cpu_seen)
}

#[test]
fn calls_cross_cpus_and_stay_local_and_every_reply_comes_back() {
    let tally = Arc::new(Tally::default());
    let (runtime, _) = run(Arc::clone(&tally));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while tally.ok.load(Ordering::Relaxed)
        + tally.wrong.load(Ordering::Relaxed)
        + tally.errors.load(Ordering::Relaxed)
        < 4_000
    {
        assert!(
            std::time::Instant::now() < deadline,
            "calls stalled at {tally:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let snapshots = runtime.stop().unwrap();
    assert_eq!(tally.ok.load(Ordering::Relaxed), 4_000, "{tally:?}");
    assert_eq!(snapshots.len(), 2);
    let handled: u64 = snapshots
        .iter()
        .flat_map(|s| s.agents.iter())
        .map(|(_, c)| c.handled)
        .sum();
    assert_eq!(handled, 4_000, "every request handled exactly once");
}

#[test]
fn every_agent_runs_on_its_planned_cpu() {
    let tally = Arc::new(Tally::default());
    let (runtime, _) = run(tally);
    let snapshots = runtime.stop().unwrap();
    assert_eq!(snapshots_agent_cpu(&snapshots, AgentId(0)), Some(0));
    assert_eq!(snapshots_agent_cpu(&snapshots, AgentId(1)), Some(1));
    assert_eq!(snapshots_agent_cpu(&snapshots, AgentId(2)), Some(0));
}
