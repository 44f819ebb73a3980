//! What an executor reports of the time its thread was awake and did not
//! run, and the live view's copy of its statistics: an agent that blocks
//! its executor's thread three times (a blocking system call, as a badly
//! written handler would make) shows as three stretches off the CPU, in
//! the final statistics and in the live view, which also carries the
//! agent's call and counts, copied a part a tick.
//!
//! Both agents are on CPU 0. The host may add stretches of its own, so the
//! checks are lower bounds.

// The crate is test code as a whole; marking it so lets the lints that
// keep `unwrap` and `#[test]` inside test modules see that.
#![cfg(test)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pinwheel::runtime::RuntimeError;
use pinwheel::runtime::agent::{Agent, Message};
use pinwheel::runtime::ctx::Ctx;
use pinwheel::runtime::node::STATUS_OK;
use pinwheel::runtime::stats::StatsSnapshot;
use pinwheel::test_support::runtime::{TWO_CPUS, boot, call_status, counts, wait_for};
use pinwheel_ipc::wire::AgentId;

const AGENTS: &str = r#"schema = 1
[[agent]]
name = "Blocker"
host = "t"
role = "calls Echo once, then blocks its executor's thread three times"
kind = "synthetic"
cpu = 0
calls = ["Echo"]

[[agent]]
name = "Echo"
host = "t"
role = "answers at once"
kind = "synthetic"
cpu = 0
"#;

const BLOCKER: AgentId = AgentId(0);
const ECHO: AgentId = AgentId(1);

/// How long each block holds the thread.
const BLOCK: Duration = Duration::from_millis(3);
const BLOCKS: u64 = 3;
const TEST_LIMIT: Duration = Duration::from_secs(20);

enum TestAgent {
    Blocker(Arc<AtomicBool>),
    Echo,
    /// The load generator's id: nothing to generate here.
    Idle,
}

impl Agent for TestAgent {
    async fn handle(&self, ctx: &Ctx, msg: &Message) -> Result<(), RuntimeError> {
        match self {
            TestAgent::Echo => ctx.reply(msg, STATUS_OK, &[]).await,
            TestAgent::Blocker(_) | TestAgent::Idle => Ok(()),
        }
    }

    async fn run(&self, ctx: &Ctx) {
        let TestAgent::Blocker(done) = self else {
            return;
        };
        ctx.sleep(Duration::from_millis(20)).await;
        if call_status(ctx, ECHO, 1, Duration::from_secs(5)).await != STATUS_OK {
            return;
        }
        for _ in 0..BLOCKS {
            std::thread::sleep(BLOCK);
            ctx.sleep(Duration::from_millis(2)).await;
        }
        // SYNC: Release pairs with the Acquire load in `wait_for`.
        done.store(true, Ordering::Release);
    }
}

/// Executor 0's statistics in `snapshots`.
fn executor_0(snapshots: &[StatsSnapshot]) -> &StatsSnapshot {
    snapshots
        .iter()
        .find(|s| s.executor.index == 0)
        .expect("executor 0 reported")
}

/// Whether executor 0's live statistics show the blocks and the call.
fn live_view_caught_up(recent: &[StatsSnapshot]) -> bool {
    recent.iter().any(|s| {
        s.executor.index == 0
            && s.executor.off_cpu.count >= BLOCKS
            && s.routes
                .iter()
                .any(|(from, to, h)| (*from, *to) == (BLOCKER, ECHO) && h.len() == 1)
    })
}

#[test]
fn a_blocked_executor_thread_is_reported_off_the_cpu_in_the_live_view_and_at_the_end() {
    let done = Arc::new(AtomicBool::new(false));
    let blocker = Arc::clone(&done);
    let runtime = boot(TWO_CPUS, AGENTS, move |id: AgentId| match id {
        BLOCKER => TestAgent::Blocker(Arc::clone(&blocker)),
        ECHO => TestAgent::Echo,
        _ => TestAgent::Idle,
    });
    let finished = wait_for(&done, TEST_LIMIT);
    // The live view is published every second, copied over a few ticks.
    let give_up = Instant::now() + TEST_LIMIT;
    let mut recent = runtime.control().recent();
    while finished && !live_view_caught_up(&recent) && Instant::now() < give_up {
        std::thread::sleep(Duration::from_millis(50));
        recent = runtime.control().recent();
    }
    let snapshots = runtime.stop().unwrap();
    assert!(finished, "the blocker ended");

    assert!(
        live_view_caught_up(&recent),
        "the live view shows the blocks and the call: {:?}",
        recent.iter().map(|s| s.executor).collect::<Vec<_>>()
    );
    let live = executor_0(&recent);
    assert!(
        live.routes.iter().all(|(_, _, h)| !h.is_empty()),
        "routes that carried nothing are left out of the live view"
    );
    assert_eq!(counts(&recent, ECHO).handled, 1);

    let off = executor_0(&snapshots).executor.off_cpu;
    let block_ns = u64::try_from(BLOCK.as_nanos()).unwrap();
    assert!(off.count >= BLOCKS, "{off:?}");
    // Each block is counted whole, less what the thread ran of it (a
    // system call's entry and exit).
    assert!(off.longest_ns >= block_ns * 9 / 10, "{off:?}");
    assert!(off.total_ns >= BLOCKS * block_ns * 9 / 10, "{off:?}");
    assert!(off.total_ns >= off.longest_ns, "{off:?}");
}
