//! The supervisor in the running runtime: an agent whose handler fails or
//! overruns its deadlines is isolated and restarted on its own executor,
//! which goes on serving its other agents; a request whose deadline passed
//! while it waited is answered "timed out" without being held against the
//! agent.
//!
//! The mesh: a driver on CPU 1 calls `Flaky` and `Steady`, both on CPU 0.
//! The driver runs one scenario as its `run` task and writes down what it
//! saw; the test thread asserts once the runtime has stopped, so no
//! assertion fires on an executor thread. `Flaky`'s restart waits on a
//! gate the driver opens, so "while isolated" is a state the driver holds
//! open, not a time window it must hit: nothing here depends on how fast
//! the machine is.

// The crate is test code as a whole; marking it so lets the lints that
// keep `unwrap` and `#[test]` inside test modules see that.
#![cfg(test)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use futures_util::future::join;
use pinwheel::runtime::RuntimeError;
use pinwheel::runtime::agent::{Agent, Message};
use pinwheel::runtime::ctx::{Ctx, now_ns};
use pinwheel::runtime::node::{STATUS_FAILED, STATUS_OK, STATUS_TIMEOUT, STATUS_UNAVAILABLE};
use pinwheel::runtime::stats::StatsSnapshot;
use pinwheel::runtime::supervisor::RestartPolicy;
use pinwheel::test_support::runtime::{NO_REPLY, boot, call_status as call, counts, wait_for};
use pinwheel_ipc::wire::{AgentId, Envelope, Payload, Priority, TopicId};

use pinwheel::test_support::runtime::TWO_CPUS as TOPOLOGY;

const AGENTS: &str = r#"schema = 1
[[agent]]
name = "Driver"
host = "t"
role = "calls the others and writes down what it saw"
kind = "synthetic"
cpu = 1
calls = ["Flaky", "Steady"]

[[agent]]
name = "Flaky"
host = "t"
role = "fails, overruns or holds on command"
kind = "synthetic"
cpu = 0

[[agent]]
name = "Steady"
host = "t"
role = "always answers; shares Flaky's executor"
kind = "synthetic"
cpu = 0
"#;

const DRIVER: AgentId = AgentId(0);
const FLAKY: AgentId = AgentId(1);
const STEADY: AgentId = AgentId(2);

/// Answer OK.
const METHOD_OK: u16 = 1;
/// Return an error without answering.
const METHOD_FAIL: u16 = 2;
/// Sleep far past any deadline.
const METHOD_SLOW: u16 = 3;
/// Wait for the gate, then answer OK.
const METHOD_HOLD: u16 = 4;

/// How long the driver waits for any answer it expects.
const PATIENCE: Duration = Duration::from_secs(10);
/// Longest a test waits for its driver; a hang fails, it does not block.
const TEST_LIMIT: Duration = Duration::from_secs(60);

/// What the driver does.
#[derive(Debug, Clone, Copy)]
enum Scenario {
    /// Flaky's handler returns errors until it is isolated.
    Failures,
    /// Flaky's handler overruns its deadlines until it is isolated.
    Overruns,
    /// A request waits behind a held one until its deadline passes.
    Expiry,
}

/// What the driver saw of an isolation and restart.
#[derive(Debug, Default, Clone)]
struct Isolation {
    /// Each misbehaving call's answer, until Flaky answered "unavailable".
    misbehaving: Vec<u16>,
    /// Whether Flaky ever answered "unavailable".
    isolated: bool,
    /// While isolated: Flaky, Steady, Flaky again.
    while_isolated: Vec<u16>,
    /// Flaky's first answer other than "unavailable" after the restart
    /// gate opened.
    after_restart: u16,
}

/// What the driver saw of the expiry scenario.
#[derive(Debug, Default, Clone, Copy)]
struct Expiry {
    /// The held request's answer.
    held: u16,
    /// The answer to the request that expired behind it.
    expired: u16,
}

/// State the agents share with the test thread.
#[derive(Debug, Default)]
struct Shared {
    /// Opens Flaky's held handlers and its restart.
    gate: AtomicBool,
    /// Threads Flaky started on, once per start.
    flaky_starts: Mutex<Vec<ThreadId>>,
    /// Flaky's resets.
    flaky_resets: AtomicU64,
    /// Threads Steady started on.
    steady_starts: Mutex<Vec<ThreadId>>,
    isolation: Mutex<Option<Isolation>>,
    expiry: Mutex<Option<Expiry>>,
    done: AtomicBool,
}

impl Shared {
    fn gate_open(&self) -> bool {
        // SYNC: Acquire pairs with the Release store in `open_gate`.
        self.gate.load(Ordering::Acquire)
    }

    fn open_gate(&self) {
        // SYNC: Release pairs with the Acquire load in `gate_open`.
        self.gate.store(true, Ordering::Release);
    }

    /// Waits, on the agent's executor, until the gate opens.
    async fn wait_for_gate(&self, ctx: &Ctx) {
        while !self.gate_open() {
            ctx.sleep(Duration::from_millis(1)).await;
        }
    }
}

enum TestAgent {
    Driver(Scenario, Arc<Shared>),
    Flaky(Arc<Shared>),
    Steady(Arc<Shared>),
    /// The load generator's id: nothing to generate here.
    Idle,
}

impl Agent for TestAgent {
    async fn start(&self, ctx: &Ctx) -> Result<(), RuntimeError> {
        let thread = std::thread::current().id();
        match self {
            TestAgent::Flaky(shared) => {
                let restart = {
                    let mut starts = shared.flaky_starts.lock().unwrap();
                    starts.push(thread);
                    starts.len() > 1
                };
                // A restart takes as long as the driver wants: the agent
                // stays isolated until then.
                if restart {
                    shared.wait_for_gate(ctx).await;
                }
            }
            TestAgent::Steady(shared) => shared.steady_starts.lock().unwrap().push(thread),
            TestAgent::Driver(..) | TestAgent::Idle => {}
        }
        Ok(())
    }

    async fn handle(&self, ctx: &Ctx, msg: &Message) -> Result<(), RuntimeError> {
        match (self, msg.head().code) {
            (TestAgent::Flaky(_), METHOD_FAIL) => Err(RuntimeError::Failed {
                reason: "told to fail",
            }),
            (TestAgent::Flaky(_), METHOD_SLOW) => {
                ctx.sleep(Duration::from_secs(3_600)).await;
                ctx.reply(msg, STATUS_OK, &[]).await
            }
            (TestAgent::Flaky(shared), METHOD_HOLD) => {
                shared.wait_for_gate(ctx).await;
                ctx.reply(msg, STATUS_OK, &[]).await
            }
            _ => ctx.reply(msg, STATUS_OK, &[]).await,
        }
    }

    fn reset(&self) {
        if let TestAgent::Flaky(shared) = self {
            shared.flaky_resets.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn run(&self, ctx: &Ctx) {
        let TestAgent::Driver(scenario, shared) = self else {
            return;
        };
        match scenario {
            Scenario::Failures => {
                let seen = isolate_and_restart(ctx, shared, METHOD_FAIL, PATIENCE).await;
                *shared.isolation.lock().unwrap() = Some(seen);
            }
            Scenario::Overruns => {
                let deadline = Duration::from_millis(50);
                let seen = isolate_and_restart(ctx, shared, METHOD_SLOW, deadline).await;
                *shared.isolation.lock().unwrap() = Some(seen);
            }
            Scenario::Expiry => {
                let seen = expire_behind_a_held_request(ctx, shared).await;
                *shared.expiry.lock().unwrap() = Some(seen);
            }
        }
        // SYNC: Release pairs with the Acquire load in `run_scenario`.
        shared.done.store(true, Ordering::Release);
    }
}

/// Misbehaves with `method` until Flaky is isolated, checks who answers
/// while it is, then lets it restart and waits until it answers again.
async fn isolate_and_restart(
    ctx: &Ctx,
    shared: &Shared,
    method: u16,
    timeout: Duration,
) -> Isolation {
    let mut seen = Isolation::default();
    // Failures spread by a stall beyond the supervisor's window do not
    // isolate; keep misbehaving until they do.
    for _ in 0..100 {
        let status = call(ctx, FLAKY, method, timeout).await;
        if status == STATUS_UNAVAILABLE {
            seen.isolated = true;
            break;
        }
        seen.misbehaving.push(status);
    }
    if !seen.isolated {
        shared.open_gate();
        return seen;
    }
    for to in [FLAKY, STEADY, FLAKY] {
        seen.while_isolated
            .push(call(ctx, to, METHOD_OK, PATIENCE).await);
    }
    shared.open_gate();
    let give_up = Instant::now() + PATIENCE;
    seen.after_restart = loop {
        let status = call(ctx, FLAKY, METHOD_OK, PATIENCE).await;
        if status != STATUS_UNAVAILABLE || Instant::now() >= give_up {
            break status;
        }
        ctx.sleep(Duration::from_millis(5)).await;
    };
    seen
}

/// Holds Flaky's only worker with one request while a second, with a
/// short deadline, waits behind it; opens the gate once that deadline has
/// passed.
async fn expire_behind_a_held_request(ctx: &Ctx, shared: &Shared) -> Expiry {
    let held = call(ctx, FLAKY, METHOD_HOLD, PATIENCE);
    let late = async {
        let ctx = ctx.fork();
        let deadline_ns = now_ns() + 20_000_000;
        let status = request(&ctx, FLAKY, METHOD_OK, deadline_ns);
        let opener = async {
            // Timers never fire early, but be exact about "passed".
            while now_ns() <= deadline_ns {
                ctx.sleep(Duration::from_millis(5)).await;
            }
            shared.open_gate();
        };
        join(status, opener).await.0
    };
    let (held, expired) = join(held, late).await;
    Expiry { held, expired }
}

/// Sends a request whose envelope carries `deadline_ns`, but waits
/// [`PATIENCE`] for its answer: a caller that wants to hear "timed out"
/// from the callee rather than give up at the same instant.
async fn request(ctx: &Ctx, to: AgentId, method: u16, deadline_ns: u64) -> u16 {
    let pending = ctx.node().pending();
    let Some(id) = pending.open(now_ns() + PATIENCE.as_nanos() as u64) else {
        return NO_REPLY;
    };
    let reply = pending.wait(id);
    let envelope = Envelope {
        from: ctx.me(),
        to,
        topic: TopicId::NONE,
        correlation: pending.correlation(id),
        priority: Priority::Normal,
        sent_ns: now_ns(),
        deadline_ns,
        payload: Payload::Request { method, body: &[] },
    };
    if ctx.send(&envelope).await.is_err() {
        return NO_REPLY;
    }
    match reply.await {
        Ok(frame) => Message::new(frame).map_or(NO_REPLY, |m| m.head().code),
        Err(_) => NO_REPLY,
    }
}

/// Runs `scenario` to its end and returns the executors' statistics.
fn run_scenario(scenario: Scenario, shared: &Arc<Shared>) -> Vec<StatsSnapshot> {
    let agents = Arc::clone(shared);
    let runtime = boot(TOPOLOGY, AGENTS, move |id: AgentId| match id {
        DRIVER => TestAgent::Driver(scenario, Arc::clone(&agents)),
        FLAKY => TestAgent::Flaky(Arc::clone(&agents)),
        STEADY => TestAgent::Steady(Arc::clone(&agents)),
        _ => TestAgent::Idle,
    });
    if !wait_for(&shared.done, TEST_LIMIT) {
        // Let a stuck restart finish so that the stop can drain.
        shared.open_gate();
    }
    runtime.stop().unwrap()
}

/// What both isolation tests check once the runtime has stopped.
fn assert_isolated_then_restarted(shared: &Shared, snapshots: &[StatsSnapshot]) -> Isolation {
    let seen = shared.isolation.lock().unwrap().clone().unwrap();
    let threshold = RestartPolicy::default().max_failures as usize;
    assert!(seen.isolated, "never isolated: {seen:?}");
    assert!(seen.misbehaving.len() >= threshold, "{seen:?}");
    assert_eq!(
        seen.while_isolated,
        vec![STATUS_UNAVAILABLE, STATUS_OK, STATUS_UNAVAILABLE],
        "while Flaky was isolated, Steady on its executor still answered"
    );
    assert_eq!(
        seen.after_restart, STATUS_OK,
        "Flaky answers after its restart"
    );

    let flaky = counts(snapshots, FLAKY);
    assert_eq!(flaky.restarts, 1, "{flaky:?}");
    assert!(flaky.failures >= threshold as u64, "{flaky:?}");
    let starts = shared.flaky_starts.lock().unwrap().clone();
    assert_eq!(starts.len(), 2, "started, then restarted once");
    assert_eq!(
        starts[0], starts[1],
        "restarted on the same executor thread, which never stopped"
    );
    assert_eq!(shared.flaky_resets.load(Ordering::Relaxed), 1);

    let steady = counts(snapshots, STEADY);
    assert_eq!((steady.failures, steady.restarts), (0, 0), "{steady:?}");
    let steady_starts = shared.steady_starts.lock().unwrap().clone();
    assert_eq!(
        steady_starts,
        vec![starts[0]],
        "Steady started once, beside Flaky"
    );
    seen
}

#[test]
fn an_agent_whose_handler_keeps_failing_is_isolated_and_restarted_while_its_executor_serves_on() {
    let shared = Arc::new(Shared::default());

    let snapshots = run_scenario(Scenario::Failures, &shared);

    let seen = assert_isolated_then_restarted(&shared, &snapshots);
    assert!(
        seen.misbehaving.iter().all(|&s| s == STATUS_FAILED),
        "a handler's error is answered as failed: {seen:?}"
    );
}

#[test]
fn an_agent_that_keeps_missing_deadlines_is_isolated_and_restarted_while_its_executor_serves_on() {
    let shared = Arc::new(Shared::default());

    let snapshots = run_scenario(Scenario::Overruns, &shared);

    let seen = assert_isolated_then_restarted(&shared, &snapshots);
    assert!(
        seen.misbehaving.iter().all(|&s| s == STATUS_TIMEOUT),
        "an overrun is answered (or given up on) as timed out: {seen:?}"
    );
}

#[test]
fn a_request_that_expired_before_its_handler_started_is_answered_timed_out_and_not_held_against_the_agent()
 {
    let shared = Arc::new(Shared::default());

    let snapshots = run_scenario(Scenario::Expiry, &shared);

    let seen = shared.expiry.lock().unwrap().unwrap();
    assert_eq!(seen.held, STATUS_OK);
    assert_eq!(seen.expired, STATUS_TIMEOUT);
    let flaky = counts(&snapshots, FLAKY);
    assert_eq!(flaky.expired, 1, "{flaky:?}");
    assert_eq!(flaky.handled, 1, "only the held request ran: {flaky:?}");
    assert_eq!((flaky.failures, flaky.restarts), (0, 0), "{flaky:?}");
}
