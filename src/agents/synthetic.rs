//! Synthetic agents: the seed's Python agents, simulated from their
//! manifest entries so the whole mesh runs on one machine without them.
//!
//! A synthetic agent serves a request by waiting out a service time drawn
//! from a log-normal distribution fitted to the manifest's median and p99
//! (time a model or a library would spend; the worker is busy meanwhile,
//! so an agent with `concurrency = 1` queues like a single-threaded Python
//! agent), then calling each of its `calls` in turn, as the seed's
//! synchronous REQ/REP flows do, then publishing its topics, then
//! answering. The first failed call fails the request with that call's
//! status. Calls carry the request's [`Trace`] with this agent added, and
//! skip agents already on it (cycles); each call's deadline is what is left
//! of the request's. An event (a topic it subscribes to) is served the same
//! way without an answer, and makes the calls only once every
//! `calls_every` events (a transcript per utterance, not per audio frame).
//!
//! Faults from the manifest apply to requests: every `fail_every`th fails
//! and every `stall_every`th stalls for `stall_ms` first, for drills and for
//! the supervisor's tests. So does the drill an operator puts the agent
//! under at run time (`--fault`, `POST /v1/agents/{name}/fault`), read
//! from the board once per request: the service time times its slow-down,
//! a failure with its chance, or no answer at all (a stall).
//!
//! An agent with `models` asks the VRAM optimizer for each of them on each
//! request, through its executor's use desk, and holds them for its
//! service time; a use that has to wait for a load waits inside the
//! request, so the wait is in its latency, and a refused use fails the
//! request.
//!
//! Service time is a sleep on the worker's timer, not a busy loop: the mesh
//! measures the runtime's overhead, and 79 agents fit on two CPUs.

use std::cell::{Cell, RefCell};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand_distr::{Distribution, LogNormal};

use super::protocol::{TRACE_BYTES, Trace};
use crate::config::Behaviour;
use crate::runtime::RuntimeError;
use crate::runtime::agent::{Agent, Message};
use crate::runtime::ctx::{Ctx, Request};
use crate::runtime::desk::{self, ModelLease};
use crate::runtime::node::{
    STATUS_FAILED, STATUS_OK, STATUS_OVERLOADED, STATUS_TIMEOUT, STATUS_UNAVAILABLE,
};
use pinwheel_ipc::wire::{AgentId, PayloadKind, Priority, TopicId};
use rand::Rng;

/// A call's timeout when the request being served has no deadline.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Most models one agent holds at once (more in a manifest are not
/// asked for).
pub const MAX_HELD: usize = 4;

/// The standard normal quantile of 0.99: p99 = median * exp(Z99 * sigma).
const Z99: f64 = 2.326_347_874_040_841;
/// Longest service time drawn, ns (the manifest's own limit, 60 s).
const MAX_SERVICE_NS: f64 = 60e9;

/// A log-normal service time with a given median and p99.
#[derive(Debug, Clone, Copy)]
pub struct ServiceTime {
    dist: LogNormal<f64>,
}

impl ServiceTime {
    /// The distribution of `behaviour`'s service time.
    pub fn of(behaviour: &Behaviour) -> Self {
        let median = behaviour.median_ns.max(1) as f64;
        let p99 = (behaviour.p99_ns as f64).max(median);
        let sigma = (p99 / median).ln() / Z99;
        Self {
            dist: LogNormal::new(median.ln(), sigma)
                .expect("a finite mean and a finite sigma of at least 0"),
        }
    }

    /// One draw.
    pub fn sample(&self, rng: &mut SmallRng) -> Duration {
        Duration::from_nanos(self.dist.sample(rng).clamp(1.0, MAX_SERVICE_NS) as u64)
    }
}

/// What a synthetic agent is built from.
#[derive(Debug, Clone)]
pub struct SyntheticSpec {
    /// Its id.
    pub me: AgentId,
    /// Service time, concurrency, faults.
    pub behaviour: Behaviour,
    /// Priority of what it sends.
    pub priority: Priority,
    /// Agents it calls (those on this host).
    pub calls: Vec<AgentId>,
    /// Topics it publishes.
    pub publishes: Vec<TopicId>,
    /// Its models' slots on the board.
    pub models: Vec<u16>,
    /// The VRAM class of its uses: 0 batch, 1 interactive, 2 realtime.
    pub model_class: u8,
}

/// A synthetic agent.
#[derive(Debug)]
pub struct Synthetic {
    spec: SyntheticSpec,
    service: ServiceTime,
    rng: RefCell<SmallRng>,
    requests: Cell<u64>,
    events: Cell<u64>,
}

impl Synthetic {
    /// The agent `spec` describes; its draws are seeded by its id, so a
    /// run is repeatable.
    pub fn new(spec: SyntheticSpec) -> Self {
        Self {
            service: ServiceTime::of(&spec.behaviour),
            rng: RefCell::new(SmallRng::seed_from_u64(u64::from(spec.me.0))),
            spec,
            requests: Cell::new(0),
            events: Cell::new(0),
        }
    }

    /// Waits out one service time, slowed by the agent's drill (none at
    /// all when the median is zero: `bench mesh --overhead`).
    async fn serve(&self, ctx: &Ctx) {
        if self.spec.behaviour.median_ns == 0 {
            return;
        }
        let time = self.service.sample(&mut self.rng.borrow_mut());
        let drill = ctx.node().routes().board().drill(ctx.me());
        let slowed = drill.service_ns(u64::try_from(time.as_nanos()).unwrap_or(u64::MAX));
        ctx.sleep(Duration::from_nanos(slowed)).await;
    }

    /// Serves a request with its models held: asks the optimizer for each
    /// (in order, so two agents never wait for each other's models
    /// crosswise), waits out the service time, lets them go.
    async fn serve_with_models(&self, ctx: &Ctx) -> Result<(), RuntimeError> {
        let hold_ms = u32::try_from(self.spec.behaviour.median_ns / 1_000_000)
            .unwrap_or(u32::MAX)
            .max(1);
        let mut leases: [Option<ModelLease<'_>>; MAX_HELD] = Default::default();
        for (slot, &model) in leases.iter_mut().zip(&self.spec.models) {
            *slot = Some(desk::acquire(ctx, model, self.spec.model_class, hold_ms).await?);
        }
        self.serve(ctx).await;
        Ok(())
    }

    /// Applies the manifest's faults, then the drill, to request `n`.
    async fn faults(&self, ctx: &Ctx, n: u64, deadline_ns: u64) -> Result<(), RuntimeError> {
        let b = &self.spec.behaviour;
        if b.fail_every > 0 && n.is_multiple_of(u64::from(b.fail_every)) {
            return Err(RuntimeError::Failed {
                reason: "fault injected by the manifest (fail_every)",
            });
        }
        if b.stall_every > 0 && n.is_multiple_of(u64::from(b.stall_every)) {
            ctx.sleep(Duration::from_nanos(b.stall_ns)).await;
        }
        let drill = ctx.node().routes().board().drill(ctx.me());
        if drill.stalls() {
            let left = deadline_ns.saturating_sub(ctx.now_ns());
            let stall = if deadline_ns == 0 {
                CALL_TIMEOUT
            } else {
                Duration::from_nanos(left)
            };
            ctx.sleep(stall).await;
        }
        if drill.fails(self.rng.borrow_mut().random()) {
            return Err(RuntimeError::Failed {
                reason: "fault injected by a drill (error)",
            });
        }
        Ok(())
    }

    /// Publishes `trace` on every topic the agent publishes.
    async fn publish_all(&self, ctx: &Ctx, trace: &Trace) -> Result<(), RuntimeError> {
        let mut buf = [0; TRACE_BYTES];
        let body = trace.encode(&mut buf);
        for &topic in &self.spec.publishes {
            ctx.publish(topic, body, self.spec.priority).await?;
        }
        Ok(())
    }
}

/// Calls each of `calls` in turn with `trace` (skipping agents on it),
/// within `deadline_ns` (0: none); the first failure's status, or OK.
pub async fn call_all(
    ctx: &Ctx,
    calls: &[AgentId],
    trace: &Trace,
    priority: Priority,
    deadline_ns: u64,
) -> u16 {
    let Some(child) = trace.through(ctx.head()) else {
        return STATUS_OK;
    };
    let mut buf = [0; TRACE_BYTES];
    let body = child.encode(&mut buf);
    for &target in calls.iter().filter(|&&t| !child.visited(t)) {
        let now = ctx.now_ns();
        let until_ns = match deadline_ns {
            0 => now + CALL_TIMEOUT.as_nanos() as u64,
            end => end,
        };
        if until_ns <= now {
            return STATUS_TIMEOUT;
        }
        let request = Request {
            method: super::protocol::METHOD_WORK,
            body,
            priority,
            sent_ns: now,
            deadline_ns: until_ns,
        };
        let status = match ctx.call_keyed(target, child.session(), request).await {
            Ok(reply) => reply.head().code,
            Err(err) => status_of(&err),
        };
        if status != STATUS_OK {
            return status;
        }
    }
    STATUS_OK
}

/// The reply status that stands for a failed call.
pub fn status_of(err: &RuntimeError) -> u16 {
    match err {
        RuntimeError::TimedOut => STATUS_TIMEOUT,
        RuntimeError::Busy | RuntimeError::Full | RuntimeError::Overloaded => STATUS_OVERLOADED,
        RuntimeError::Closed | RuntimeError::NoReplica { .. } => STATUS_UNAVAILABLE,
        RuntimeError::ModelDenied { .. } => STATUS_OVERLOADED,
        _ => STATUS_FAILED,
    }
}

impl Agent for Synthetic {
    async fn handle(&self, ctx: &Ctx, msg: &Message) -> Result<(), RuntimeError> {
        let head = *msg.head();
        let trace = Trace::decode(&msg.body()).unwrap_or_else(|| Trace::new(head.sent_ns, false));
        match head.kind {
            PayloadKind::Request => {
                let n = self.requests.get() + 1;
                self.requests.set(n);
                self.faults(ctx, n, head.deadline_ns).await?;
                self.serve_with_models(ctx).await?;
                let calls = &self.spec.calls;
                let status =
                    call_all(ctx, calls, &trace, self.spec.priority, head.deadline_ns).await;
                self.publish_all(ctx, &trace.through(ctx.head()).unwrap_or(trace))
                    .await?;
                ctx.reply(msg, status, &[]).await
            }
            PayloadKind::Event => {
                let n = self.events.get() + 1;
                self.events.set(n);
                self.serve(ctx).await;
                if n.is_multiple_of(u64::from(self.spec.behaviour.calls_every.max(1))) {
                    call_all(ctx, &self.spec.calls, &trace, self.spec.priority, 0).await;
                }
                self.publish_all(ctx, &trace.through(ctx.head()).unwrap_or(trace))
                    .await
            }
            _ => Ok(()),
        }
    }

    fn reset(&self) {
        self.requests.set(0);
        self.events.set(0);
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn quantile(mut draws: Vec<u64>, q: f64) -> u64 {
        draws.sort_unstable();
        draws[((draws.len() as f64 - 1.0) * q) as usize]
    }

    #[test]
    fn service_times_have_the_manifest_median_and_p99() {
        let behaviour = Behaviour {
            median_ns: 200_000,
            p99_ns: 1_000_000,
            ..Behaviour::default()
        };
        let sut = ServiceTime::of(&behaviour);
        let mut rng = SmallRng::seed_from_u64(1);
        let draws: Vec<u64> = (0..200_000)
            .map(|_| sut.sample(&mut rng).as_nanos() as u64)
            .collect();
        let (median, p99) = (quantile(draws.clone(), 0.5), quantile(draws, 0.99));
        assert!((190_000..210_000).contains(&median), "median {median}");
        assert!((930_000..1_070_000).contains(&p99), "p99 {p99}");
    }

    #[test]
    fn an_equal_median_and_p99_is_a_constant_service_time() {
        let behaviour = Behaviour {
            median_ns: 50_000,
            p99_ns: 50_000,
            ..Behaviour::default()
        };
        let sut = ServiceTime::of(&behaviour);
        let mut rng = SmallRng::seed_from_u64(2);
        for _ in 0..100 {
            let ns = sut.sample(&mut rng).as_nanos();
            assert!((49_999..=50_001).contains(&ns), "{ns}");
        }
    }

    #[test]
    fn call_errors_become_the_statuses_callers_see() {
        assert_eq!(status_of(&RuntimeError::TimedOut), STATUS_TIMEOUT);
        assert_eq!(status_of(&RuntimeError::Busy), STATUS_OVERLOADED);
        assert_eq!(status_of(&RuntimeError::Closed), STATUS_UNAVAILABLE);
        assert_eq!(
            status_of(&RuntimeError::Failed { reason: "x" }),
            STATUS_FAILED
        );
    }
}
