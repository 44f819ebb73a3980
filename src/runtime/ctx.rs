//! An agent worker's handle on the runtime: send, call, reply, publish,
//! sleep.
//!
//! A call opens a slot in the executor's pending table, sends a request
//! carrying the slot's correlation id, and waits for the reply or the
//! deadline (enforced by the executor's ticker). Its round-trip time goes
//! into the route's histogram. A call to a replicated agent goes to the
//! replica the executor's balancer picks, and its outcome feeds the
//! balancer back, also when the call is dropped half-way (a guard
//! finishes it as failed). A caller that wants its calls to stick to one
//! replica (`balance = "consistent_hash"`) gives a key with
//! [`Ctx::call_keyed`]; synthetic flows carry theirs in their trace. A send that finds the ring to another
//! executor full retries, yielding, until the message's deadline (or
//! [`SEND_PATIENCE`]): backpressure slows senders instead of losing
//! messages. Each worker owns one reusable timer for its sleeps, a slot of
//! the executor's timers ([`super::timers`]).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::{Either, select};
use glommio::sync::Semaphore;

use super::RuntimeError;
use super::agent::{Head, Message};
use super::clock::duration_ns;
use super::node::{Node, Picked, STATUS_OK};
use super::pending::CallFailure;
use super::stats::NodeStats;
use super::timers::Timer;
use pinwheel_ipc::wire::{AgentId, Envelope, Payload, Priority, TopicId};

/// How long a send waits for room on a full ring when its message has no
/// deadline.
pub const SEND_PATIENCE: Duration = Duration::from_millis(200);

/// CLOCK_MONOTONIC now, nanoseconds: the clock envelopes carry.
pub fn now_ns() -> u64 {
    let time = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC always exists");
    (time.tv_sec() as u64).saturating_mul(1_000_000_000) + time.tv_nsec() as u64
}

/// An executor's shutdown notice: a flag tasks poll, and a wait that ends
/// when it is raised (a glommio semaphore that is never signalled, only
/// closed: closing wakes every waiter).
#[derive(Debug)]
pub struct Draining {
    flag: Cell<bool>,
    notice: Semaphore,
}

impl Draining {
    /// A notice not yet raised.
    pub fn new() -> Rc<Self> {
        Rc::new(Self {
            flag: Cell::new(false),
            notice: Semaphore::new(0),
        })
    }

    /// Whether it is raised.
    pub fn get(&self) -> bool {
        self.flag.get()
    }

    /// Raises it and wakes every task waiting for it.
    pub fn raise(&self) {
        if !self.flag.replace(true) {
            self.notice.close();
        }
    }

    async fn wait(&self) {
        // Never signalled: this returns only when `raise` closes it.
        let _ = self.notice.acquire(1).await;
    }
}

/// A worker's context.
#[derive(Debug)]
pub struct Ctx {
    node: Rc<Node>,
    stats: Rc<NodeStats>,
    draining: Rc<Draining>,
    me: AgentId,
    timer: RefCell<Option<Timer>>,
    replied: Cell<bool>,
}

impl Ctx {
    /// The context of a worker of agent `me` on `node`.
    pub fn new(node: Rc<Node>, stats: Rc<NodeStats>, draining: Rc<Draining>, me: AgentId) -> Self {
        Self {
            node,
            stats,
            draining,
            me,
            timer: RefCell::new(None),
            replied: Cell::new(false),
        }
    }

    /// A context for another task of the same agent (a generator's
    /// sender, a coordinator's processor): same router, its own timer.
    pub fn fork(&self) -> Ctx {
        Ctx::new(
            Rc::clone(&self.node),
            Rc::clone(&self.stats),
            Rc::clone(&self.draining),
            self.me,
        )
    }

    /// Takes the current request over: the agent promises to answer it
    /// later with [`Ctx::answer`], so the worker does not answer it when
    /// the handler returns.
    pub fn defer(&self) {
        self.replied.set(true);
        self.node.hold();
    }

    /// Whether the runtime is draining for shutdown: generators stop.
    pub fn draining(&self) -> bool {
        self.draining.get()
    }

    /// Sleeps for `duration` or until the runtime starts draining; true if
    /// it slept the whole time. Periodic tasks (heartbeats, saves) wait
    /// with this so that shutdown does not wait out their periods.
    pub async fn pause(&self, duration: Duration) -> bool {
        self.pause_until(self.now_ns().saturating_add(duration_ns(duration)))
            .await
    }

    /// Sleeps until `deadline_ns` (CLOCK_MONOTONIC) or until the runtime
    /// starts draining; true if it slept the whole time.
    pub async fn pause_until(&self, deadline_ns: u64) -> bool {
        if self.draining() {
            return false;
        }
        let sleep = pin!(self.sleep_until(deadline_ns));
        let notice = pin!(self.draining.wait());
        matches!(select(sleep, notice).await, Either::Left(_))
    }

    /// CLOCK_MONOTONIC now, nanoseconds, from the executor's clock
    /// ([`super::clock`]): what a handler stamps and times messages with.
    pub fn now_ns(&self) -> u64 {
        self.node.clock().now_ns()
    }

    /// The agent this worker serves.
    pub fn me(&self) -> AgentId {
        self.me
    }

    /// The id callers name this agent by: its first replica's when it is
    /// one of several ([`super::routes::Routes::head_of`]).
    pub fn head(&self) -> AgentId {
        self.node.routes().head_of(self.me)
    }

    /// The executor's router.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The executor's router, shared.
    pub fn node_rc(&self) -> &Rc<Node> {
        &self.node
    }

    /// The executor's statistics.
    pub fn stats(&self) -> &NodeStats {
        &self.stats
    }

    /// Marks the start of a message (for [`Ctx::replied`]).
    pub(super) fn begin(&self) {
        self.replied.set(false);
    }

    /// Whether the handler answered the current request.
    pub(super) fn replied(&self) -> bool {
        self.replied.get()
    }

    /// Routes an envelope, waiting for room on a full ring.
    pub async fn send(&self, env: &Envelope<'_>) -> Result<(), RuntimeError> {
        let mut give_up = 0;
        loop {
            match self.node.route(env) {
                Err(RuntimeError::Full) => {}
                other => return other,
            }
            let now = self.now_ns();
            if give_up == 0 {
                give_up = if env.deadline_ns > now {
                    env.deadline_ns
                } else {
                    now + SEND_PATIENCE.as_nanos() as u64
                };
            } else if now >= give_up {
                return Err(RuntimeError::Full);
            }
            self.sleep(Duration::from_micros(20)).await;
        }
    }

    /// Calls `to` and waits up to `timeout` for its reply.
    pub async fn call(
        &self,
        to: AgentId,
        method: u16,
        body: &[u8],
        priority: Priority,
        timeout: Duration,
    ) -> Result<Message, RuntimeError> {
        let sent_ns = self.now_ns();
        let deadline_ns = sent_ns + timeout.as_nanos() as u64;
        let request = Request {
            method,
            body,
            priority,
            sent_ns,
            deadline_ns,
        };
        self.call_at(to, None, request).await
    }

    /// Calls `to` and waits for its reply until `deadline_ns`
    /// (CLOCK_MONOTONIC). An agent serving a request calls with this, so
    /// that its calls end by the request's own deadline: a timeout
    /// computed from it would be measured from a later clock reading, and
    /// end that much after it.
    pub async fn call_until(
        &self,
        to: AgentId,
        method: u16,
        body: &[u8],
        priority: Priority,
        deadline_ns: u64,
    ) -> Result<Message, RuntimeError> {
        let request = Request {
            method,
            body,
            priority,
            sent_ns: self.now_ns(),
            deadline_ns,
        };
        self.call_at(to, None, request).await
    }

    /// [`Ctx::call_until`] with an affinity key, for a caller that has
    /// just read the clock: `request` carries its own send time. Calls with
    /// the same key to a `consistent_hash` agent go to the same replica
    /// while it is usable and not overloaded (`None`: no affinity).
    pub async fn call_keyed(
        &self,
        to: AgentId,
        key: Option<u64>,
        request: Request<'_>,
    ) -> Result<Message, RuntimeError> {
        self.call_at(to, key, request).await
    }

    /// Calls `to` (a replica of it, when it has several), recording the
    /// round trip on the route to `to`.
    async fn call_at(
        &self,
        to: AgentId,
        key: Option<u64>,
        request: Request<'_>,
    ) -> Result<Message, RuntimeError> {
        let picked = self.node.pick(to, key, request.sent_ns)?;
        let mut outcome = Outstanding {
            node: &self.node,
            picked,
            sent_ns: request.sent_ns,
            done_ns: 0,
            ok: false,
        };
        let reply = self.exchange(picked.to, request).await?;
        let done_ns = self.now_ns();
        self.stats
            .record_call(self.me, to, done_ns.saturating_sub(request.sent_ns));
        outcome.done_ns = done_ns;
        outcome.ok = reply.head().code == STATUS_OK;
        Ok(reply)
    }

    /// Sends one request to `to` and waits for its reply.
    async fn exchange(&self, to: AgentId, request: Request<'_>) -> Result<Message, RuntimeError> {
        let Request {
            method,
            body,
            priority,
            sent_ns,
            deadline_ns,
        } = request;
        let pending = self.node.pending();
        let Some(id) = pending.open(deadline_ns) else {
            return Err(if pending.is_closed() {
                RuntimeError::Closed
            } else {
                RuntimeError::Busy
            });
        };
        let reply = pending.wait(id);
        let request = Envelope {
            from: self.me,
            to,
            topic: TopicId::NONE,
            correlation: pending.correlation(id),
            priority,
            sent_ns,
            deadline_ns,
            payload: Payload::Request { method, body },
        };
        self.send(&request).await?;
        let frame = reply.await.map_err(|failure| match failure {
            CallFailure::TimedOut => RuntimeError::TimedOut,
            CallFailure::Busy => RuntimeError::Busy,
            CallFailure::Closed => RuntimeError::Closed,
        })?;
        Message::new(frame)
    }

    /// Answers a request.
    pub async fn reply(
        &self,
        request: &Message,
        status: u16,
        body: &[u8],
    ) -> Result<(), RuntimeError> {
        self.replied.set(true);
        self.send(&reply_from(request.head(), status, body)).await
    }

    /// Answers a request taken over with [`Ctx::defer`], from its head.
    /// Every deferred request must be answered exactly once: the drain at
    /// shutdown waits for them.
    pub async fn answer(
        &self,
        request: &Head,
        status: u16,
        body: &[u8],
    ) -> Result<(), RuntimeError> {
        let sent = self.send(&reply_from(request, status, body)).await;
        self.node.release();
        sent
    }

    /// Publishes an event on `topic`.
    pub async fn publish(
        &self,
        topic: TopicId,
        body: &[u8],
        priority: Priority,
    ) -> Result<(), RuntimeError> {
        let now = self.now_ns();
        let event = Envelope {
            from: self.me,
            to: self.me,
            topic,
            correlation: 0,
            priority,
            sent_ns: now,
            deadline_ns: 0,
            payload: Payload::Event { body },
        };
        self.send(&event).await
    }

    /// Sleeps for `duration` on the worker's own timer.
    pub async fn sleep(&self, duration: Duration) {
        self.sleep_until(self.now_ns().saturating_add(duration_ns(duration)))
            .await;
    }

    /// Sleeps until `deadline_ns` (CLOCK_MONOTONIC) on the worker's own
    /// timer, one of the executor's timers, which the pump fires.
    pub async fn sleep_until(&self, deadline_ns: u64) {
        self.timer
            .borrow_mut()
            .get_or_insert_with(|| Timer::new(self.node.timers()))
            .arm(deadline_ns);
        TimerWait { ctx: self }.await;
    }
}

/// The reply to the request whose head is `request`.
fn reply_from<'a>(request: &Head, status: u16, body: &'a [u8]) -> Envelope<'a> {
    Envelope {
        from: request.to,
        to: request.from,
        topic: TopicId::NONE,
        correlation: request.correlation,
        priority: request.priority,
        sent_ns: request.sent_ns,
        deadline_ns: request.deadline_ns,
        payload: Payload::Reply { status, body },
    }
}

/// What a call sends.
#[derive(Debug, Clone, Copy)]
pub struct Request<'b> {
    /// The callee's method.
    pub method: u16,
    /// The request's body.
    pub body: &'b [u8],
    /// Its priority.
    pub priority: Priority,
    /// When it is sent (CLOCK_MONOTONIC): its round trip is measured
    /// from here.
    pub sent_ns: u64,
    /// When the call gives up.
    pub deadline_ns: u64,
}

/// A call counted outstanding by a balancer: finished when dropped, so a
/// call that ends by error or by being dropped mid-way counts too.
struct Outstanding<'a> {
    node: &'a Node,
    picked: Picked,
    sent_ns: u64,
    /// When the reply came, read once for the statistics and the
    /// balancer (0: none came, and the drop reads the clock).
    done_ns: u64,
    ok: bool,
}

impl Drop for Outstanding<'_> {
    fn drop(&mut self) {
        let now = match self.done_ns {
            0 => self.node.clock().now_ns(),
            done => done,
        };
        self.node
            .finish(self.picked, now, now.saturating_sub(self.sent_ns), self.ok);
    }
}

/// Waits on the worker's timer without holding its `RefCell` borrow
/// across the suspension.
struct TimerWait<'a> {
    ctx: &'a Ctx,
}

impl Future for TimerWait<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut slot = self.ctx.timer.borrow_mut();
        let timer = slot.as_mut().expect("sleep arms the timer before waiting");
        Pin::new(&mut timer.wait()).poll(cx)
    }
}
