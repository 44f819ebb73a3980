//! Handlers served on the caller's task: a local call to an agent with an
//! idle worker runs the agent's handler inside the caller's send, so a
//! handler that does not wait has answered before the call first waits
//! (also through a chain of such calls); a handler that waits is finished
//! by one of the agent's workers; and inline or not, an agent never runs
//! more handlers at once than its concurrency, and a handler that overruns
//! its deadline is answered and counted as timed out.
//!
//! Every agent is on CPU 0, one executor. The driver runs the checks as
//! its `run` task and writes down what it saw; the test thread asserts
//! once the runtime has stopped, so no assertion fires on an executor
//! thread.

// The crate is test code as a whole; marking it so lets the lints that
// keep `unwrap` and `#[test]` inside test modules see that.
#![cfg(test)]

use std::cell::Cell;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_util::future::join_all;
use pinwheel::runtime::RuntimeError;
use pinwheel::runtime::agent::{Agent, Message};
use pinwheel::runtime::ctx::Ctx;
use pinwheel::runtime::node::{STATUS_OK, STATUS_TIMEOUT};
use pinwheel::runtime::stats::StatsSnapshot;
use pinwheel::test_support::runtime::{boot, call_status as call, counts, wait_for};
use pinwheel_ipc::wire::AgentId;

use pinwheel::test_support::runtime::TWO_CPUS as TOPOLOGY;

const AGENTS: &str = r#"schema = 1
[[agent]]
name = "Driver"
host = "t"
role = "calls the others and writes down what it saw"
kind = "synthetic"
cpu = 0
calls = ["Leaf", "Relay", "Sleeper"]

[[agent]]
name = "Leaf"
host = "t"
role = "answers at once, or after a sleep; one handler at a time"
kind = "synthetic"
cpu = 0

[[agent]]
name = "Relay"
host = "t"
role = "calls Leaf and answers with its answer"
kind = "synthetic"
cpu = 0
concurrency = 2
calls = ["Leaf"]

[[agent]]
name = "Sleeper"
host = "t"
role = "sleeps before it answers; two handlers at a time"
kind = "synthetic"
cpu = 0
concurrency = 2
"#;

const DRIVER: AgentId = AgentId(0);
const LEAF: AgentId = AgentId(1);
const RELAY: AgentId = AgentId(2);
const SLEEPER: AgentId = AgentId(3);

/// Answer at once.
const METHOD_NOW: u16 = 1;
/// Sleep a little, then answer.
const METHOD_NAP: u16 = 2;
/// Sleep far past any deadline.
const METHOD_SLOW: u16 = 3;

const NAP: Duration = Duration::from_millis(2);
/// Calls the driver sends at once to test the concurrency bound.
const CROWD: usize = 12;
const PATIENCE: Duration = Duration::from_secs(10);
/// Longest a test waits for its driver; a hang fails, it does not block.
const TEST_LIMIT: Duration = Duration::from_secs(60);

/// What the driver saw.
#[derive(Debug, Default, Clone)]
struct Seen {
    /// The first poll of a call to Leaf: its status if it was ready.
    leaf_first_poll: Option<u16>,
    /// The same for a call to Relay, which calls Leaf.
    relay_first_poll: Option<u16>,
    /// The first poll of a call to Sleeper (its handler waits).
    sleeper_first_poll: Option<u16>,
    /// That call's status once it ended.
    sleeper_status: u16,
    /// Every status of [`CROWD`] calls at once to Leaf (napping) and as
    /// many to Sleeper.
    crowd: Vec<u16>,
    /// A call whose handler overran its deadline.
    overrun: u16,
}

/// State the agents share with the test thread.
#[derive(Debug, Default)]
struct Shared {
    seen: Mutex<Option<Seen>>,
    done: AtomicBool,
}

/// Handlers running now on one agent's executor, and the most seen at
/// once, which the test thread reads after the stop.
#[derive(Debug)]
struct Gauge {
    now: Cell<u32>,
    most: &'static AtomicU32,
}

impl Gauge {
    fn new(most: &'static AtomicU32) -> Self {
        Self {
            now: Cell::new(0),
            most,
        }
    }

    fn enter(&self) -> GaugeGuard<'_> {
        self.now.set(self.now.get() + 1);
        // SYNC: Relaxed; the test thread reads it after the executors
        // have been joined.
        self.most.fetch_max(self.now.get(), Ordering::Relaxed);
        GaugeGuard(self)
    }
}

struct GaugeGuard<'a>(&'a Gauge);

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.now.set(self.0.now.get() - 1);
    }
}

static MOST_LEAF: AtomicU32 = AtomicU32::new(0);
static MOST_SLEEPER: AtomicU32 = AtomicU32::new(0);

enum TestAgent {
    Driver(Arc<Shared>),
    Leaf(Gauge),
    Relay,
    Sleeper(Gauge),
    /// The load generator's id: nothing to generate here.
    Idle,
}

impl Agent for TestAgent {
    async fn handle(&self, ctx: &Ctx, msg: &Message) -> Result<(), RuntimeError> {
        match self {
            TestAgent::Leaf(gauge) | TestAgent::Sleeper(gauge) => {
                let _running = gauge.enter();
                let nap = match (self, msg.head().code) {
                    (_, METHOD_SLOW) => Some(Duration::from_secs(3_600)),
                    (TestAgent::Sleeper(_), _) | (_, METHOD_NAP) => Some(NAP),
                    _ => None,
                };
                if let Some(nap) = nap {
                    ctx.sleep(nap).await;
                }
                ctx.reply(msg, STATUS_OK, &[]).await
            }
            TestAgent::Relay => {
                let status = call(ctx, LEAF, METHOD_NOW, PATIENCE).await;
                ctx.reply(msg, status, &[]).await
            }
            TestAgent::Driver(_) | TestAgent::Idle => Ok(()),
        }
    }

    async fn run(&self, ctx: &Ctx) {
        let TestAgent::Driver(shared) = self else {
            return;
        };
        let seen = drive(ctx).await;
        *shared.seen.lock().unwrap() = Some(seen);
        // SYNC: Release pairs with the Acquire load in `run_checks`.
        shared.done.store(true, Ordering::Release);
    }
}

/// Polls a call once without a waker: its status if it was ready then.
/// Then waits for it, and returns its status too.
async fn first_poll(ctx: &Ctx, to: AgentId, method: u16) -> (Option<u16>, u16) {
    let mut call = pin!(call(ctx, to, method, PATIENCE));
    let first = match call.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(status) => return (Some(status), status),
        Poll::Pending => None,
    };
    (first, call.await)
}

async fn drive(ctx: &Ctx) -> Seen {
    // Let every worker reach its inbox first.
    ctx.sleep(Duration::from_millis(20)).await;
    let mut seen = Seen {
        leaf_first_poll: first_poll(ctx, LEAF, METHOD_NOW).await.0,
        relay_first_poll: first_poll(ctx, RELAY, METHOD_NOW).await.0,
        ..Seen::default()
    };
    (seen.sleeper_first_poll, seen.sleeper_status) = first_poll(ctx, SLEEPER, METHOD_NOW).await;

    let forks: Vec<Ctx> = (0..2 * CROWD).map(|_| ctx.fork()).collect();
    let calls = forks.iter().enumerate().map(|(i, ctx)| async move {
        let to = if i % 2 == 0 { LEAF } else { SLEEPER };
        call(ctx, to, METHOD_NAP, PATIENCE).await
    });
    seen.crowd = join_all(calls).await;

    seen.overrun = call(ctx, SLEEPER, METHOD_SLOW, Duration::from_millis(30)).await;
    seen
}

fn run_checks(shared: &Arc<Shared>) -> Vec<StatsSnapshot> {
    let driver = Arc::clone(shared);
    let runtime = boot(TOPOLOGY, AGENTS, move |id: AgentId| match id {
        DRIVER => TestAgent::Driver(Arc::clone(&driver)),
        LEAF => TestAgent::Leaf(Gauge::new(&MOST_LEAF)),
        RELAY => TestAgent::Relay,
        SLEEPER => TestAgent::Sleeper(Gauge::new(&MOST_SLEEPER)),
        _ => TestAgent::Idle,
    });
    wait_for(&shared.done, TEST_LIMIT);
    runtime.stop().unwrap()
}

#[test]
fn local_calls_are_served_on_the_caller_s_task_within_each_agent_s_concurrency_and_deadlines() {
    let shared = Arc::new(Shared::default());

    let snapshots = run_checks(&shared);

    let seen = shared
        .seen
        .lock()
        .unwrap()
        .clone()
        .expect("the driver ended");
    assert_eq!(
        seen.leaf_first_poll,
        Some(STATUS_OK),
        "a handler that does not wait answered inside the call's first poll"
    );
    assert_eq!(
        seen.relay_first_poll,
        Some(STATUS_OK),
        "so did a handler whose own call was answered that way"
    );
    assert_eq!(
        (seen.sleeper_first_poll, seen.sleeper_status),
        (None, STATUS_OK),
        "a handler that waits is finished by a worker"
    );
    assert_eq!(seen.crowd, vec![STATUS_OK; 2 * CROWD]);
    assert_eq!(
        (
            MOST_LEAF.load(Ordering::Relaxed),
            MOST_SLEEPER.load(Ordering::Relaxed)
        ),
        (1, 2),
        "never more handlers at once than the agent's concurrency (and as many)"
    );
    assert_eq!(seen.overrun, STATUS_TIMEOUT);

    let sleeper = counts(&snapshots, SLEEPER);
    assert_eq!(sleeper.handled, 1 + CROWD as u64 + 1, "{sleeper:?}");
    assert_eq!(sleeper.failures, 1, "the overrun counts: {sleeper:?}");
    let leaf = counts(&snapshots, LEAF);
    assert_eq!(leaf.handled, 2 + CROWD as u64, "{leaf:?}");
    assert_eq!(leaf.failures, 0, "{leaf:?}");
}
