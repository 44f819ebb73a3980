//! The coordinator as an agent of the mesh: what the daemon runs for a
//! manifest entry with `native = "coordinator"`.
//!
//! Intake and processing are separate. The agent's workers only take
//! requests off the inbox into the [`RequestQueue`] (by priority, then
//! deadline) and defer their answers ([`Ctx::defer`]); a full queue is
//! answered "overloaded" at once. `processors` tasks, started by `run`,
//! pop the most urgent request that is still in time (an expired one is
//! answered "timed out" without work) and serve it: each downstream in
//! `calls` in turn, skipping agents already on the request's trace,
//! through the [`CoordinatorPolicy`] (bulkhead, then circuit breaker,
//! then the call, then retry with backoff and jitter if it fits before the
//! deadline). A downstream that is rejected or given up on ends the
//! request with that status; otherwise it is answered OK. The voice path's
//! requests carry the audio frame's time, so the coordinator records the
//! voice-to-response latency when it answers one.
//!
//! Events on subscribed topics (the seed's interrupts) are counted; the
//! synthetic mesh has no speech to cut short.
//!
//! A processor waits on a glommio semaphore counting queued requests; at
//! shutdown, once the inbox is closed and the queue is empty, the
//! semaphore is closed and the processors end.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::future::{join, join_all};
use glommio::sync::Semaphore;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tracing::{info, warn};

use super::{
    AfterCall, BreakerConfig, BreakerState, CallOutcome, CoordinatorPolicy, Decision,
    DownstreamConfig, DownstreamId, Popped, RequestQueue, RetryPolicy, deadline_from_wire,
    priority_from_wire,
};
use crate::agents::protocol::{METHOD_WORK, STATUS_REJECTED, TRACE_BYTES, Trace};
use crate::agents::synthetic::{CALL_TIMEOUT, status_of};
use crate::runtime::RuntimeError;
use crate::runtime::agent::{Agent, Head, Message};
use crate::runtime::ctx::{Ctx, Request};
use crate::runtime::node::{STATUS_OK, STATUS_OVERLOADED, STATUS_TIMEOUT, STATUS_UNAVAILABLE};
use pinwheel_ipc::wire::{AgentId, PayloadKind, Priority};

/// How a coordinator protects its downstreams.
#[derive(Debug, Clone, Copy)]
pub struct CoordinatorConfig {
    /// Each downstream's breaker.
    pub breaker: BreakerConfig,
    /// Retries.
    pub retry: RetryPolicy,
    /// Calls in flight to one downstream at once.
    pub max_in_flight: usize,
    /// Requests waiting at once.
    pub queue_capacity: usize,
    /// Requests served at once.
    pub processors: usize,
}

impl CoordinatorConfig {
    /// The defaults, with `processors` requests served at once.
    pub fn with_processors(processors: usize) -> Self {
        Self {
            breaker: BreakerConfig::DEFAULT,
            retry: RetryPolicy::DEFAULT,
            max_in_flight: 64,
            queue_capacity: 1024,
            processors: processors.max(1),
        }
    }
}

/// What a coordinator did, for the daemon's report.
#[derive(Debug, Default)]
pub struct CoordinatorCounters {
    /// Requests queued.
    pub accepted: AtomicU64,
    /// Refused because the queue was full.
    pub overloaded: AtomicU64,
    /// Expired in the queue.
    pub expired: AtomicU64,
    /// Answered OK.
    pub completed: AtomicU64,
    /// Answered with a failure.
    pub failed: AtomicU64,
    /// Downstream calls retried.
    pub retries: AtomicU64,
    /// Downstream calls refused by a breaker or bulkhead.
    pub rejected: AtomicU64,
    /// Times a breaker opened.
    pub breaker_opened: AtomicU64,
    /// Times a breaker closed again.
    pub breaker_closed: AtomicU64,
    /// Interrupt events seen.
    pub interrupts: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    // SYNC: Relaxed; a report counter, read after the executors are joined.
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A queued request: what answering it needs.
#[derive(Debug, Clone, Copy)]
struct Job {
    head: Head,
    trace: Trace,
}

/// A coordinator agent.
#[derive(Debug)]
pub struct CoordinatorAgent {
    downstreams: Vec<AgentId>,
    names: Vec<String>,
    priority: Priority,
    config: CoordinatorConfig,
    counters: Arc<CoordinatorCounters>,
    policy: RefCell<CoordinatorPolicy>,
    queue: RefCell<RequestQueue<Job>>,
    ready: Rc<Semaphore>,
    rng: RefCell<SmallRng>,
}

impl CoordinatorAgent {
    /// A coordinator calling `downstreams` (with their display `names`),
    /// sending at `priority`.
    pub fn new(
        downstreams: Vec<AgentId>,
        names: Vec<String>,
        priority: Priority,
        config: CoordinatorConfig,
        counters: Arc<CoordinatorCounters>,
    ) -> Self {
        Self {
            policy: RefCell::new(policy(&config, downstreams.len())),
            queue: RefCell::new(RequestQueue::new(config.queue_capacity)),
            ready: Rc::new(Semaphore::new(0)),
            rng: RefCell::new(SmallRng::seed_from_u64(downstreams.len() as u64)),
            downstreams,
            names,
            priority,
            config,
            counters,
        }
    }

    /// Takes one request into the queue, or refuses it at once.
    async fn intake(&self, ctx: &Ctx, msg: &Message) -> Result<(), RuntimeError> {
        let head = *msg.head();
        let trace = Trace::decode(&msg.body()).unwrap_or_else(|| Trace::new(head.sent_ns, false));
        let pushed = self.queue.borrow_mut().push(
            Job { head, trace },
            priority_from_wire(head.priority),
            deadline_from_wire(head.deadline_ns),
        );
        if pushed.is_err() {
            bump(&self.counters.overloaded);
            return ctx.reply(msg, STATUS_OVERLOADED, &[]).await;
        }
        bump(&self.counters.accepted);
        ctx.defer();
        self.ready.signal(1);
        Ok(())
    }

    /// One processor: serves queued requests until the queue closes.
    async fn process(&self, ctx: Ctx) {
        while self.ready.acquire(1).await.is_ok() {
            let popped = self.queue.borrow_mut().pop_ready(ctx.now_ns());
            let status = match popped {
                None => continue,
                Some(Popped::Expired(job)) => {
                    bump(&self.counters.expired);
                    let _ = ctx.answer(&job.head, STATUS_TIMEOUT, &[]).await;
                    continue;
                }
                Some(Popped::Ready(job)) => {
                    let status = self.serve(&ctx, &job).await;
                    if job.trace.voice() {
                        let took = ctx.now_ns().saturating_sub(job.trace.origin_ns());
                        ctx.stats().record_voice(took);
                    }
                    let _ = ctx.answer(&job.head, status, &[]).await;
                    status
                }
            };
            bump(if status == STATUS_OK {
                &self.counters.completed
            } else {
                &self.counters.failed
            });
        }
    }

    /// Calls every downstream not on the trace; the first failure's status.
    async fn serve(&self, ctx: &Ctx, job: &Job) -> u16 {
        let Some(child) = job.trace.through(ctx.head()) else {
            return STATUS_OK;
        };
        let mut buf = [0; TRACE_BYTES];
        let body = child.encode(&mut buf);
        let deadline_ns = deadline_from_wire(job.head.deadline_ns);
        for (i, &target) in self.downstreams.iter().enumerate() {
            if child.visited(target) {
                continue;
            }
            let downstream = (DownstreamId(i as u16), target, child.session());
            let status = self.call(ctx, downstream, body, deadline_ns).await;
            if status != STATUS_OK {
                return status;
            }
        }
        STATUS_OK
    }

    /// Calls one downstream (its id, its agent and the request's session
    /// key) through its bulkhead and breaker, retrying as the policy
    /// allows.
    async fn call(
        &self,
        ctx: &Ctx,
        (id, target, key): (DownstreamId, AgentId, Option<u64>),
        body: &[u8],
        deadline_ns: u64,
    ) -> u16 {
        let mut attempt = 1;
        loop {
            let now = ctx.now_ns();
            let decision = self
                .policy
                .borrow_mut()
                .before_call(id, attempt, now, deadline_ns);
            let ticket = match decision {
                Ok(Decision::Call(ticket)) => ticket,
                Ok(Decision::Reject(_)) => {
                    bump(&self.counters.rejected);
                    return STATUS_REJECTED;
                }
                Ok(Decision::GiveUp(_)) => return STATUS_TIMEOUT,
                Err(_) => return STATUS_UNAVAILABLE,
            };
            let until_ns = deadline_ns.min(now + CALL_TIMEOUT.as_nanos() as u64);
            let request = Request {
                method: METHOD_WORK,
                body,
                priority: self.priority,
                sent_ns: now,
                deadline_ns: until_ns,
            };
            let status = match ctx.call_keyed(target, key, request).await {
                Ok(reply) => reply.head().code,
                Err(err) => status_of(&err),
            };
            let outcome = match status {
                STATUS_OK => CallOutcome::Success,
                STATUS_REJECTED => CallOutcome::Refused,
                _ => CallOutcome::Failure,
            };
            let before = self.breaker_state(id);
            let after = self.policy.borrow_mut().after_call(
                ticket,
                outcome,
                ctx.now_ns(),
                &mut *self.rng.borrow_mut(),
            );
            self.note_breaker(id, before);
            match after {
                Ok(AfterCall::Done) => return status,
                Ok(AfterCall::Retry {
                    delay_ns,
                    attempt: next,
                }) => {
                    bump(&self.counters.retries);
                    ctx.sleep(Duration::from_nanos(delay_ns)).await;
                    attempt = next;
                }
                Ok(AfterCall::GiveUp(_)) | Err(_) => return status,
            }
        }
    }

    fn breaker_state(&self, id: DownstreamId) -> Option<BreakerState> {
        self.policy.borrow().breaker(id).ok().map(|b| b.state())
    }

    /// Counts and logs a breaker's change of state.
    fn note_breaker(&self, id: DownstreamId, before: Option<BreakerState>) {
        let after = self.breaker_state(id);
        if before == after {
            return;
        }
        let downstream = self
            .names
            .get(usize::from(id.0))
            .map_or("?", String::as_str);
        match after {
            Some(BreakerState::Open) if before != Some(BreakerState::HalfOpen) => {
                bump(&self.counters.breaker_opened);
                warn!(downstream, "circuit breaker opened");
            }
            Some(BreakerState::Closed) => {
                bump(&self.counters.breaker_closed);
                info!(downstream, "circuit breaker closed");
            }
            _ => {}
        }
    }

    /// Closes the queue once the inbox is closed and nothing waits.
    async fn close_when_drained(&self, ctx: &Ctx) {
        let inbox = ctx.node().inbox(ctx.me());
        while !(ctx.draining() && inbox.is_closed() && self.queue.borrow().is_empty()) {
            ctx.sleep(Duration::from_millis(5)).await;
        }
        self.ready.close();
    }
}

fn policy(config: &CoordinatorConfig, downstreams: usize) -> CoordinatorPolicy {
    let each = DownstreamConfig {
        breaker: config.breaker,
        max_in_flight: config.max_in_flight,
    };
    CoordinatorPolicy::new(&vec![each; downstreams], config.retry)
        .expect("a manifest agent has far fewer than 65536 calls")
}

impl Agent for CoordinatorAgent {
    async fn handle(&self, ctx: &Ctx, msg: &Message) -> Result<(), RuntimeError> {
        match msg.head().kind {
            PayloadKind::Request => self.intake(ctx, msg).await,
            PayloadKind::Event => {
                bump(&self.counters.interrupts);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn reset(&self) {
        *self.policy.borrow_mut() = policy(&self.config, self.downstreams.len());
    }

    async fn run(&self, ctx: &Ctx) {
        // The processors run inside this future (not spawned), so they
        // may borrow the agent; they are built once, at start.
        let processors = (0..self.config.processors).map(|_| self.process(ctx.fork()));
        join(join_all(processors), self.close_when_drained(ctx)).await;
    }
}
