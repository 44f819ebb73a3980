//! The coordinator agent end to end through the running runtime: its
//! circuit breaker opens, rejects without calling, probes after its
//! cool-down and closes; its retries back off and stay inside the
//! request's deadline; its queue serves higher priorities first and
//! answers a request that expired in it as timed out.
//!
//! The mesh: a client on CPU 1 sends requests to the coordinator on CPU 0,
//! which calls one backend on CPU 1. The backend is a test agent the test
//! steers (healthy, failing, failing the next few calls, holding calls)
//! and that writes down every call it gets: the request's tag (the
//! origin of the trace the coordinator passes on), and the call's sent
//! time and deadline as the envelope carries them. The client runs one
//! scenario and writes down each answer and whether the backend was
//! reached; the test thread asserts once the runtime has stopped.
//!
//! Nothing asserts how long anything took. Where a scenario needs time to
//! have passed (a cool-down, a deadline), the client sleeps, and timers
//! never fire early; where it needs requests to be queued, it waits for
//! the coordinator's counters to say so. The backoff checks are lower
//! bounds between envelope timestamps, which a slow machine only widens.

// The crate is test code as a whole; marking it so lets the lints that
// keep `unwrap` and `#[test]` inside test modules see that.
#![cfg(test)]

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pinwheel::agents::coordinator::{
    BreakerConfig, CoordinatorAgent, CoordinatorConfig, CoordinatorCounters, Jitter, RetryPolicy,
};
use pinwheel::agents::protocol::{METHOD_WORK, STATUS_REJECTED, TRACE_BYTES, Trace};
use pinwheel::runtime::RuntimeError;
use pinwheel::runtime::agent::{Agent, Message};
use pinwheel::runtime::ctx::{Ctx, now_ns};
use pinwheel::runtime::node::{STATUS_FAILED, STATUS_OK, STATUS_TIMEOUT};
use pinwheel::runtime::pending::Reply;
use pinwheel::test_support::runtime::{NO_REPLY, boot, wait_for};
use pinwheel_ipc::wire::{AgentId, Envelope, Payload, Priority, TopicId};

use pinwheel::test_support::runtime::TWO_CPUS as TOPOLOGY;

const AGENTS: &str = r#"schema = 1
[[agent]]
name = "Client"
host = "t"
role = "sends requests and writes down the answers"
kind = "synthetic"
cpu = 1
calls = ["Coordinator"]

[[agent]]
name = "Coordinator"
host = "t"
role = "the coordinator under test"
kind = "synthetic"
cpu = 0
calls = ["Backend"]

[[agent]]
name = "Backend"
host = "t"
role = "a downstream the test steers"
kind = "synthetic"
cpu = 1
"#;

const CLIENT: AgentId = AgentId(0);
const COORDINATOR: AgentId = AgentId(1);
const BACKEND: AgentId = AgentId(2);

/// How long the client waits for any answer or state it expects.
const PATIENCE: Duration = Duration::from_secs(10);
/// Longest a test waits for its client; a hang fails, it does not block.
const TEST_LIMIT: Duration = Duration::from_secs(60);
/// The breaker scenario's cool-down.
const OPEN_FOR: Duration = Duration::from_millis(300);
const MS: u64 = 1_000_000;

/// What the client does.
#[derive(Debug, Clone, Copy)]
enum Scenario {
    Breaker,
    Retry,
    RetryPastDeadline,
    Priorities,
    Expiry,
}

/// One call the backend got.
#[derive(Debug, Clone, Copy)]
struct Call {
    /// The client request it serves.
    tag: u64,
    /// When the coordinator sent it (its envelope's `sent_ns`).
    sent_ns: u64,
    /// Its envelope's deadline.
    deadline_ns: u64,
    /// When the backend took it.
    at_ns: u64,
}

/// One request the client made.
#[derive(Debug, Clone, Copy)]
struct Step {
    what: &'static str,
    tag: u64,
    deadline_ns: u64,
    status: u16,
    /// Whether the backend got a call while this request was served.
    reached: bool,
}

/// State the agents share with the test thread.
#[derive(Debug, Default)]
struct Shared {
    /// The backend answers OK (else failed).
    healthy: AtomicBool,
    /// The backend fails this many more calls, healthy or not.
    fail_next: AtomicU32,
    /// The backend holds calls until this is cleared.
    hold: AtomicBool,
    calls: Mutex<Vec<Call>>,
    coordinator: Arc<CoordinatorCounters>,
    steps: Mutex<Vec<Step>>,
    done: AtomicBool,
}

impl Shared {
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn calls_for(&self, tag: u64) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.tag == tag).collect()
    }

    fn accepted(&self) -> u64 {
        self.coordinator.accepted.load(Ordering::Relaxed)
    }

    fn set(flag: &AtomicBool, value: bool) {
        // SYNC: Release pairs with the Acquire loads in `serve`.
        flag.store(value, Ordering::Release);
    }
}

enum TestAgent {
    Client(Scenario, Arc<Shared>),
    /// Boxed: it is far larger than the other variants.
    Coordinator(Box<CoordinatorAgent>),
    Backend(Arc<Shared>),
    /// The load generator's id: nothing to generate here.
    Idle,
}

impl Agent for TestAgent {
    async fn start(&self, ctx: &Ctx) -> Result<(), RuntimeError> {
        match self {
            TestAgent::Coordinator(agent) => agent.start(ctx).await,
            _ => Ok(()),
        }
    }

    async fn handle(&self, ctx: &Ctx, msg: &Message) -> Result<(), RuntimeError> {
        match self {
            TestAgent::Coordinator(agent) => agent.handle(ctx, msg).await,
            TestAgent::Backend(shared) => serve(ctx, msg, shared).await,
            TestAgent::Client(..) | TestAgent::Idle => Ok(()),
        }
    }

    fn reset(&self) {
        if let TestAgent::Coordinator(agent) = self {
            agent.reset();
        }
    }

    async fn run(&self, ctx: &Ctx) {
        match self {
            TestAgent::Coordinator(agent) => agent.run(ctx).await,
            TestAgent::Client(scenario, shared) => {
                let client = Client { ctx, shared };
                match scenario {
                    Scenario::Breaker => client.breaker().await,
                    Scenario::Retry => client.retry().await,
                    Scenario::RetryPastDeadline => client.retry_past_deadline().await,
                    Scenario::Priorities => client.priorities().await,
                    Scenario::Expiry => client.expiry().await,
                }
                // SYNC: Release pairs with the Acquire load in `run_scenario`.
                shared.done.store(true, Ordering::Release);
            }
            TestAgent::Backend(_) | TestAgent::Idle => {}
        }
    }
}

/// The backend: writes the call down, holds it if told to, and answers
/// as it is told.
async fn serve(ctx: &Ctx, msg: &Message, shared: &Shared) -> Result<(), RuntimeError> {
    let head = *msg.head();
    let tag = Trace::decode(&msg.body()).map_or(u64::MAX, |t| t.origin_ns());
    shared.calls.lock().unwrap().push(Call {
        tag,
        sent_ns: head.sent_ns,
        deadline_ns: head.deadline_ns,
        at_ns: now_ns(),
    });
    // SYNC: Acquire pairs with the Release store in `Shared::set`.
    while shared.hold.load(Ordering::Acquire) {
        ctx.sleep(Duration::from_millis(1)).await;
    }
    let fail = shared
        .fail_next
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
        // SYNC: Acquire pairs with the Release store in `Shared::set`.
        || !shared.healthy.load(Ordering::Acquire);
    let status = if fail { STATUS_FAILED } else { STATUS_OK };
    ctx.reply(msg, status, &[]).await
}

/// The client's side of a scenario.
struct Client<'a> {
    ctx: &'a Ctx,
    shared: &'a Shared,
}

impl Client<'_> {
    /// Sends request `tag` to the coordinator with `deadline_ns` in its
    /// envelope, but waits [`PATIENCE`] for the answer, so that an answer
    /// "timed out" is heard rather than raced.
    async fn post(&self, tag: u64, priority: Priority, deadline_ns: u64) -> Option<Reply> {
        let pending = self.ctx.node().pending();
        let id = pending.open(now_ns() + PATIENCE.as_nanos() as u64)?;
        let reply = pending.wait(id);
        let mut buf = [0; TRACE_BYTES];
        let envelope = Envelope {
            from: self.ctx.me(),
            to: COORDINATOR,
            topic: TopicId::NONE,
            correlation: pending.correlation(id),
            priority,
            sent_ns: now_ns(),
            deadline_ns,
            payload: Payload::Request {
                method: METHOD_WORK,
                body: Trace::new(tag, false).encode(&mut buf),
            },
        };
        self.ctx.send(&envelope).await.ok()?;
        Some(reply)
    }

    /// Sends request `tag`, due in `timeout`, waits for its answer and
    /// writes the step down.
    async fn ask(&self, what: &'static str, tag: u64, timeout: Duration) -> Step {
        let before = self.shared.calls().len();
        let deadline_ns = now_ns() + timeout.as_nanos() as u64;
        let reply = self.post(tag, Priority::Normal, deadline_ns).await;
        let status = settle(reply).await;
        let step = Step {
            what,
            tag,
            deadline_ns,
            status,
            reached: self.shared.calls().len() > before,
        };
        self.shared.steps.lock().unwrap().push(step);
        step
    }

    /// Waits until `ready` holds; false after [`PATIENCE`].
    async fn until(&self, ready: impl Fn() -> bool) -> bool {
        let give_up = Instant::now() + PATIENCE;
        while !ready() {
            if Instant::now() >= give_up {
                return false;
            }
            self.ctx.sleep(Duration::from_millis(1)).await;
        }
        true
    }

    /// Asks until the breaker rejects one; a request that was not
    /// rejected (a stall outlasted the cool-down, so it went out as a
    /// probe and failed) is written down as such.
    async fn until_rejected(&self, what: &'static str, tag: &mut u64) {
        for _ in 0..20 {
            *tag += 1;
            let step = self.ask(what, *tag, PATIENCE).await;
            if step.status == STATUS_REJECTED {
                return;
            }
            self.shared.steps.lock().unwrap().last_mut().unwrap().what = "stalled probe";
        }
    }

    async fn breaker(&self) {
        let mut tag = 0;
        for _ in 0..3 {
            tag += 1;
            self.ask("failing", tag, PATIENCE).await;
        }
        self.until_rejected("open", &mut tag).await;
        self.ctx.sleep(2 * OPEN_FOR).await;
        tag += 1;
        self.ask("probe, still failing", tag, PATIENCE).await;
        self.until_rejected("open again", &mut tag).await;
        Shared::set(&self.shared.healthy, true);
        self.ctx.sleep(2 * OPEN_FOR).await;
        tag += 1;
        self.ask("probe, healthy", tag, PATIENCE).await;
        for _ in 0..5 {
            tag += 1;
            self.ask("closed", tag, PATIENCE).await;
        }
    }

    async fn retry(&self) {
        Shared::set(&self.shared.healthy, true);
        self.shared.fail_next.store(2, Ordering::Relaxed);
        self.ask("fails twice, then answers", 1, Duration::from_secs(5))
            .await;
    }

    async fn retry_past_deadline(&self) {
        self.ask("always fails", 1, Duration::from_millis(600))
            .await;
    }

    /// Holds the only processor with one request, queues four more in
    /// the worst order, and lets them go once the coordinator has them.
    async fn priorities(&self) {
        Shared::set(&self.shared.healthy, true);
        Shared::set(&self.shared.hold, true);
        let due = || now_ns() + PATIENCE.as_nanos() as u64;
        let blocker = self.post(100, Priority::Normal, due()).await;
        self.until(|| self.shared.calls().len() == 1).await;
        let mut replies = vec![(100, blocker)];
        for (tag, priority) in [
            (1, Priority::Low),
            (2, Priority::Normal),
            (3, Priority::High),
            (4, Priority::Critical),
        ] {
            replies.push((tag, self.post(tag, priority, due()).await));
        }
        self.until(|| self.shared.accepted() == 5).await;
        Shared::set(&self.shared.hold, false);
        self.settle_all("queued", replies).await;
    }

    /// Holds the only processor while one queued request's deadline
    /// passes and another's does not.
    async fn expiry(&self) {
        Shared::set(&self.shared.healthy, true);
        Shared::set(&self.shared.hold, true);
        let due = now_ns() + PATIENCE.as_nanos() as u64;
        let blocker = self.post(100, Priority::Normal, due).await;
        self.until(|| self.shared.calls().len() == 1).await;
        let short_ns = now_ns() + 30 * MS;
        let short = self.post(7, Priority::Critical, short_ns).await;
        let patient = self.post(8, Priority::Low, due).await;
        self.until(|| self.shared.accepted() == 3).await;
        while now_ns() <= short_ns {
            self.ctx.sleep(Duration::from_millis(5)).await;
        }
        Shared::set(&self.shared.hold, false);
        let replies = vec![(100, blocker), (7, short), (8, patient)];
        self.settle_all("queued", replies).await;
    }

    async fn settle_all(&self, what: &'static str, replies: Vec<(u64, Option<Reply>)>) {
        for (tag, reply) in replies {
            let status = settle(reply).await;
            self.shared.steps.lock().unwrap().push(Step {
                what,
                tag,
                deadline_ns: 0,
                status,
                reached: self.shared.calls().iter().any(|c| c.tag == tag),
            });
        }
    }
}

/// The status of a reply, or [`NO_REPLY`].
async fn settle(reply: Option<Reply>) -> u16 {
    match reply {
        Some(reply) => match reply.await {
            Ok(frame) => Message::new(frame).map_or(NO_REPLY, |m| m.head().code),
            Err(_) => NO_REPLY,
        },
        None => NO_REPLY,
    }
}

/// Runs `scenario` with a coordinator configured as `config`.
fn run_scenario(scenario: Scenario, config: CoordinatorConfig) -> Arc<Shared> {
    let shared = Arc::new(Shared::default());
    let agents = Arc::clone(&shared);
    let runtime = boot(TOPOLOGY, AGENTS, move |id: AgentId| match id {
        CLIENT => TestAgent::Client(scenario, Arc::clone(&agents)),
        COORDINATOR => TestAgent::Coordinator(Box::new(CoordinatorAgent::new(
            vec![BACKEND],
            vec!["Backend".to_owned()],
            Priority::Normal,
            config,
            Arc::clone(&agents.coordinator),
        ))),
        BACKEND => TestAgent::Backend(Arc::clone(&agents)),
        _ => TestAgent::Idle,
    });
    wait_for(&shared.done, TEST_LIMIT);
    Shared::set(&shared.hold, false);
    runtime.stop().unwrap();
    shared
}

/// One processor, no retries, a roomy queue: each test changes what it
/// is about.
fn config() -> CoordinatorConfig {
    CoordinatorConfig {
        breaker: BreakerConfig {
            failure_threshold: 1_000,
            ..BreakerConfig::DEFAULT
        },
        retry: RetryPolicy::NEVER,
        max_in_flight: 64,
        queue_capacity: 64,
        processors: 1,
    }
}

fn steps(shared: &Shared) -> Vec<Step> {
    shared.steps.lock().unwrap().clone()
}

fn count(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// The `(status, reached)` of each step named `what`.
fn outcomes(steps: &[Step], what: &str) -> Vec<(u16, bool)> {
    steps
        .iter()
        .filter(|s| s.what == what)
        .map(|s| (s.status, s.reached))
        .collect()
}

#[test]
fn the_breaker_opens_on_failures_rejects_without_calling_probes_after_its_cool_down_and_closes_once_the_backend_is_healthy()
 {
    let sut = CoordinatorConfig {
        breaker: BreakerConfig {
            failure_threshold: 3,
            open_for_ns: OPEN_FOR.as_nanos() as u64,
            half_open_probes: 1,
        },
        ..config()
    };

    let shared = run_scenario(Scenario::Breaker, sut);

    let steps = steps(&shared);
    let failed = (STATUS_FAILED, true);
    let rejected = (STATUS_REJECTED, false);
    assert_eq!(outcomes(&steps, "failing"), vec![failed; 3], "{steps:#?}");
    assert_eq!(outcomes(&steps, "open"), vec![rejected], "{steps:#?}");
    assert_eq!(
        outcomes(&steps, "probe, still failing"),
        vec![failed],
        "after the cool-down one call went through, failed, and reopened it: {steps:#?}"
    );
    assert_eq!(outcomes(&steps, "open again"), vec![rejected], "{steps:#?}");
    assert!(
        outcomes(&steps, "stalled probe")
            .iter()
            .all(|&o| o == failed),
        "{steps:#?}"
    );
    assert_eq!(
        outcomes(&steps, "probe, healthy"),
        vec![(STATUS_OK, true)],
        "{steps:#?}"
    );
    assert_eq!(
        outcomes(&steps, "closed"),
        vec![(STATUS_OK, true); 5],
        "{steps:#?}"
    );
    let counters = &shared.coordinator;
    assert_eq!(count(&counters.breaker_opened), 1);
    assert_eq!(count(&counters.breaker_closed), 1);
    assert_eq!(count(&counters.rejected), 2);
    assert_eq!(count(&counters.completed), 6);
    assert_eq!(count(&counters.retries), 0);
}

#[test]
fn a_failed_call_is_retried_with_backoff_inside_the_requests_deadline_until_it_succeeds() {
    let retry = RetryPolicy {
        max_attempts: 4,
        base_ns: 20 * MS,
        max_ns: 200 * MS,
        jitter: Jitter::Equal,
        min_attempt_ns: 5 * MS,
    };
    let sut = CoordinatorConfig { retry, ..config() };

    let shared = run_scenario(Scenario::Retry, sut);

    let steps = steps(&shared);
    assert_eq!(
        outcomes(&steps, "fails twice, then answers"),
        vec![(STATUS_OK, true)]
    );
    let request = steps[0];
    let calls = shared.calls_for(request.tag);
    assert_eq!(calls.len(), 3, "two failures, then a success: {calls:#?}");
    for (i, pair) in calls.windows(2).enumerate() {
        let floor_ns = retry.cap_ns(i as u32 + 1) / 2;
        assert!(
            pair[1].sent_ns >= pair[0].at_ns + floor_ns,
            "retry {} waited at least its backoff's floor of {floor_ns} ns: {calls:#?}",
            i + 1
        );
    }
    for call in &calls {
        assert!(
            call.sent_ns < request.deadline_ns,
            "{call:?} vs {request:?}"
        );
        assert!(
            call.deadline_ns <= request.deadline_ns,
            "{call:?} vs {request:?}"
        );
    }
    let counters = &shared.coordinator;
    assert_eq!(count(&counters.retries), 2);
    assert_eq!(count(&counters.completed), 1);
}

#[test]
fn retries_of_a_backend_that_keeps_failing_stop_inside_the_requests_deadline() {
    let retry = RetryPolicy {
        max_attempts: 10,
        base_ns: 50 * MS,
        max_ns: 400 * MS,
        jitter: Jitter::Equal,
        min_attempt_ns: 20 * MS,
    };
    let sut = CoordinatorConfig { retry, ..config() };

    let shared = run_scenario(Scenario::RetryPastDeadline, sut);

    let steps = steps(&shared);
    let request = steps[0];
    assert!(
        [STATUS_FAILED, STATUS_TIMEOUT].contains(&request.status),
        "{request:?}"
    );
    let calls = shared.calls_for(request.tag);
    assert!(calls.len() >= 2, "it retried: {calls:#?}");
    assert!(
        calls.len() < retry.max_attempts as usize,
        "the deadline, not the attempt limit, ended it: {calls:#?}"
    );
    for call in &calls {
        assert!(
            call.sent_ns < request.deadline_ns,
            "{call:?} vs {request:?}"
        );
        assert!(
            call.deadline_ns <= request.deadline_ns,
            "{call:?} vs {request:?}"
        );
    }
    let counters = &shared.coordinator;
    assert_eq!(count(&counters.retries), calls.len() as u64 - 1);
    assert_eq!(count(&counters.failed), 1);
}

#[test]
fn queued_requests_are_served_highest_priority_first() {
    let shared = run_scenario(Scenario::Priorities, config());

    let steps = steps(&shared);
    let order: Vec<u64> = shared.calls().iter().map(|c| c.tag).collect();
    assert_eq!(order, vec![100, 4, 3, 2, 1], "critical, high, normal, low");
    assert!(
        steps
            .iter()
            .filter(|s| s.tag != 100)
            .all(|s| s.status == STATUS_OK),
        "{steps:#?}"
    );
}

#[test]
fn a_queued_request_whose_deadline_passes_is_answered_timed_out_without_reaching_the_backend() {
    let shared = run_scenario(Scenario::Expiry, config());

    let steps = steps(&shared);
    let status_of = |tag| steps.iter().find(|s| s.tag == tag).unwrap().status;
    assert_eq!(status_of(7), STATUS_TIMEOUT, "{steps:#?}");
    assert_eq!(status_of(8), STATUS_OK, "{steps:#?}");
    let order: Vec<u64> = shared.calls().iter().map(|c| c.tag).collect();
    assert_eq!(order, vec![100, 8], "the expired request never went out");
    assert_eq!(count(&shared.coordinator.expired), 1);
}
