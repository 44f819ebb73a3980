//! One executor's router: its agents' inboxes, its frame pool, its pending
//! calls, its timers, and the producer ends of its outgoing rings.
//!
//! Sending (`route`): a request, reply or heartbeat goes to the executor of
//! its `to` agent; one to an agent on another host (or a reply to another
//! host's caller, [`PROXY`](super::remote::PROXY)) goes up this
//! executor's uplink to the cluster link, one to a legacy ZeroMQ agent
//! (or a reply to a legacy client, [`GATEWAY`](super::remote::GATEWAY))
//! up its uplink to the legacy gateway (`remote.rs`). On this executor it is encoded straight into a pool
//! frame and queued in the agent's inbox by priority (a reply completes the
//! caller's pending call instead); elsewhere it is encoded straight into
//! the ring to that executor and published at once. An event goes to its
//! topic's subscribers: once per subscribing executor, fanning out on
//! arrival. Receiving (`accept`): a frame read from an incoming ring is
//! checked (bytecheck), copied into a pool frame per recipient, and queued
//! the same way.
//!
//! A call to a replicated agent picks its replica first ([`Node::pick`]):
//! the executor keeps one [`Balancer`] per replicated agent, fed by the
//! calls it makes ([`Node::finish`]) and by the replicas' states on the
//! board, read at each pick.
//!
//! The executor's clock ([`Clock`]) is its timers': its tasks stamp and
//! time messages with it.
//!
//! Nothing here allocates per message: frames come from the pool, inboxes
//! and pending tables are sized at boot, and encoding uses one scratch area
//! per executor. What cannot be delivered (no route, full inbox, empty
//! pool, full ring) is an error the caller counts; a dropped request is
//! answered with [`STATUS_OVERLOADED`] so its caller fails fast instead of
//! waiting for its deadline.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use super::RuntimeError;
use super::balance::Balancer;
use super::clock::Clock;
use super::inbox::Inbox;
use super::offcpu::OffCpuTotals;
use super::pending::Pending;
use super::pool::{FrameBuf, FramePool};
use super::remote::{RemoteKind, Uplinks};
use super::routes::{NO_SERVICE, NOWHERE, Routes};
use super::timers::Timers;
use super::watch::Watches;
use pinwheel_ipc::ring::{Producer, RingError};
use pinwheel_ipc::wire::{
    self, AgentId, ArchivedEnvelope, Envelope, Payload, PayloadKind, Scratch, TopicId,
};

/// Reply status: done.
pub const STATUS_OK: u16 = 0;
/// Reply status: the handler failed.
pub const STATUS_FAILED: u16 = 500;
/// Reply status: the agent is isolated by its supervisor.
pub const STATUS_UNAVAILABLE: u16 = 502;
/// Reply status: dropped for lack of room (inbox, pool or ring).
pub const STATUS_OVERLOADED: u16 = 503;
/// Reply status: a downstream call timed out.
pub const STATUS_TIMEOUT: u16 = 504;
/// Reply status: the agent has no such method (a legacy client's unknown
/// action).
pub const STATUS_UNKNOWN_METHOD: u16 = 501;

/// Counters of one router, read by the daemon's reports.
#[derive(Debug, Default)]
pub struct RouterCounters {
    /// Envelopes routed to an agent on this executor.
    pub local: Cell<u64>,
    /// Envelopes written to a ring to another executor.
    pub remote: Cell<u64>,
    /// Frames accepted from incoming rings.
    pub accepted: Cell<u64>,
    /// Messages dropped: inbox full, pool empty or closed inbox.
    pub dropped: Cell<u64>,
    /// Replies that found no waiting call (it had timed out).
    pub late_replies: Cell<u64>,
    /// Envelopes with no route on this host.
    pub unroutable: Cell<u64>,
    /// Envelopes handed to the cluster link for another host.
    pub cluster: Cell<u64>,
    /// Times the pump parked on the executor's doorbell.
    pub parks: Cell<u64>,
    /// Times the pump napped, work waiting or not, to give the CPU the idle
    /// time real-time throttling demands (see `ConsumerGroup::nap`).
    pub naps: Cell<u64>,
    /// Slots still published in the incoming rings after the pump's last
    /// pass: the rings' depth.
    pub ring_backlog: Cell<u64>,
    /// The pump's thread's stretches off the CPU while awake
    /// ([`super::offcpu`]); reported per executor, not in the totals.
    pub off_cpu: Cell<OffCpuTotals>,
    /// glommio reactor passes the pump let happen while idle.
    pub reactor_passes: Cell<u64>,
    /// Reactor passes that fell between a ring message and its handler
    /// (glommio's preempt timer had fired as the message came).
    pub late_passes: Cell<u64>,
}

impl RouterCounters {
    /// The counters' values.
    pub fn totals(&self) -> RouterTotals {
        RouterTotals {
            local: self.local.get(),
            remote: self.remote.get(),
            accepted: self.accepted.get(),
            dropped: self.dropped.get(),
            late_replies: self.late_replies.get(),
            unroutable: self.unroutable.get(),
            cluster: self.cluster.get(),
            parks: self.parks.get(),
            naps: self.naps.get(),
            ring_backlog: self.ring_backlog.get(),
            reactor_passes: self.reactor_passes.get(),
            late_passes: self.late_passes.get(),
        }
    }
}

/// A router's counters at one moment (see [`RouterCounters`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RouterTotals {
    /// Envelopes routed to an agent on this executor.
    pub local: u64,
    /// Envelopes written to a ring to another executor.
    pub remote: u64,
    /// Frames accepted from incoming rings.
    pub accepted: u64,
    /// Messages dropped.
    pub dropped: u64,
    /// Replies that found no waiting call.
    pub late_replies: u64,
    /// Envelopes with no route on this host.
    pub unroutable: u64,
    /// Envelopes handed to the cluster link for another host.
    pub cluster: u64,
    /// Times the pump parked on the executor's doorbell.
    pub parks: u64,
    /// Times the pump napped, work waiting or not.
    pub naps: u64,
    /// Slots still published in the incoming rings after the pump's last
    /// pass.
    pub ring_backlog: u64,
    /// glommio reactor passes the pump let happen while idle.
    pub reactor_passes: u64,
    /// Reactor passes between a ring message and its handler.
    pub late_passes: u64,
}

fn bump(counter: &Cell<u64>) {
    counter.set(counter.get() + 1);
}

/// A ring write's outcome as the node's: counted in `counter` when it went.
fn counted(sent: Result<(), RingError>, counter: &Cell<u64>) -> Result<(), RuntimeError> {
    match sent {
        Ok(()) => {
            bump(counter);
            Ok(())
        }
        Err(RingError::Full) => Err(RuntimeError::Full),
        Err(source) => Err(RuntimeError::Ring { source }),
    }
}

/// One executor's router.
#[derive(Debug)]
pub struct Node {
    executor: u16,
    routes: Arc<Routes>,
    pool: Rc<FramePool>,
    inboxes: Vec<Inbox>,
    pending: Rc<Pending>,
    timers: Rc<Timers>,
    watches: Watches,
    outgoing: RefCell<Vec<Option<Producer>>>,
    /// A write to another executor rang its bell since the pump last
    /// waited.
    woke_peer: Cell<bool>,
    uplinks: RefCell<Uplinks>,
    scratch: RefCell<Box<Scratch>>,
    counters: RouterCounters,
    busy: Cell<u64>,
    /// Handlers running inline inside one another now.
    inline_depth: Cell<u32>,
    balancers: RefCell<Vec<Balancer>>,
}

/// One level of handlers running inline ([`Node::enter_inline`]); left
/// when dropped.
#[derive(Debug)]
pub struct InlineLevel<'a> {
    depth: &'a Cell<u32>,
}

impl Drop for InlineLevel<'_> {
    fn drop(&mut self) {
        self.depth.set(self.depth.get() - 1);
    }
}

/// The replica a call goes to, and what finishing it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Picked {
    /// The agent the envelope is sent to.
    pub to: AgentId,
    service: u16,
    replica: u8,
}

impl Node {
    /// A router for `executor` with `pool_frames` frames of `frame_bytes`,
    /// inboxes of `inbox_capacity` per lane, and the given outgoing rings
    /// (by destination executor).
    pub fn new(
        executor: u16,
        routes: Arc<Routes>,
        sizes: NodeSizes,
        outgoing: Vec<Option<Producer>>,
    ) -> Self {
        let workers = |agent: &AgentId| sizes.workers.get(agent.0 as usize).copied().unwrap_or(1);
        let inboxes = routes
            .agents_on(executor)
            .iter()
            .map(|agent| Inbox::new(sizes.inbox_capacity, workers(agent)))
            .collect();
        Self {
            executor,
            pool: FramePool::new(sizes.pool_frames, sizes.frame_bytes),
            pending: Pending::new(executor, sizes.pending_calls),
            timers: Timers::new(),
            watches: Watches::default(),
            inboxes,
            outgoing: RefCell::new(outgoing),
            woke_peer: Cell::new(false),
            uplinks: RefCell::new([None, None]),
            scratch: RefCell::new(Box::new(Scratch::new())),
            counters: RouterCounters::default(),
            busy: Cell::new(0),
            inline_depth: Cell::new(0),
            balancers: RefCell::new(balancers(&routes, executor)),
            routes,
        }
    }

    /// Where a call to `to` goes: itself, or for a replicated agent's head
    /// the replica its balancer picks at `now_ns` among the usable ones
    /// (`key` for `consistent_hash`). Counts the call outstanding until
    /// [`Node::finish`]. An error when no replica is usable.
    pub fn pick(&self, to: AgentId, key: Option<u64>, now_ns: u64) -> Result<Picked, RuntimeError> {
        let service = self.routes.service_of(to);
        let Some(replicas) = self.routes.service(to).map(|s| &s.replicas) else {
            return Ok(Picked {
                to,
                service: NO_SERVICE,
                replica: 0,
            });
        };
        let board = self.routes.board();
        let (mut usable, mut suspect) = (0u64, 0u64);
        for (i, &replica) in replicas.iter().enumerate() {
            let flags = board.flags(replica);
            usable |= u64::from(flags.usable()) << i;
            suspect |= u64::from(flags.slow()) << i;
        }
        let mut balancers = self.balancers.borrow_mut();
        let chosen = balancers
            .get_mut(usize::from(service))
            .and_then(|b| b.pick(now_ns, key, usable, suspect))
            .ok_or(RuntimeError::NoReplica { to })?;
        Ok(Picked {
            to: replicas[chosen],
            service,
            replica: chosen as u8,
        })
    }

    /// A call [`Node::pick`] sent ended at `now_ns` after `rtt_ns`; `ok`
    /// if it succeeded.
    pub fn finish(&self, picked: Picked, now_ns: u64, rtt_ns: u64, ok: bool) {
        if picked.service == NO_SERVICE {
            return;
        }
        if let Some(balancer) = self
            .balancers
            .borrow_mut()
            .get_mut(usize::from(picked.service))
        {
            balancer.finish(usize::from(picked.replica), now_ns, rtt_ns, ok);
        }
    }

    /// The router with its uplinks to the cluster link and the legacy
    /// gateway, where they are on: messages to agents on other hosts and
    /// to legacy agents leave through them.
    pub fn with_uplinks(self, uplinks: Uplinks) -> Self {
        *self.uplinks.borrow_mut() = uplinks;
        self
    }

    /// Counts a piece of work in progress: a handler running, or a
    /// request an agent took over and has not answered yet.
    pub fn hold(&self) {
        self.busy.set(self.busy.get() + 1);
    }

    /// Ends a piece of work counted by [`Node::hold`].
    pub fn release(&self) {
        self.busy.set(self.busy.get().saturating_sub(1));
    }

    /// Enters one more level of handlers run inline on the current task,
    /// unless `max` levels are running already.
    pub fn enter_inline(&self, max: u32) -> Option<InlineLevel<'_>> {
        let depth = self.inline_depth.get();
        if depth >= max {
            return None;
        }
        self.inline_depth.set(depth + 1);
        Some(InlineLevel {
            depth: &self.inline_depth,
        })
    }

    /// Whether nothing is in progress here: no handler running, no
    /// request held, no call waiting, no message queued.
    pub fn is_quiet(&self) -> bool {
        self.busy.get() == 0
            && self.pending.in_flight() == 0
            && self.inboxes.iter().all(Inbox::is_empty)
    }

    /// This executor's index.
    pub fn executor(&self) -> u16 {
        self.executor
    }

    /// The routing table.
    pub fn routes(&self) -> &Arc<Routes> {
        &self.routes
    }

    /// The inbox of a local agent.
    pub fn inbox(&self, agent: AgentId) -> &Inbox {
        &self.inboxes[self.routes.slot_of(agent)]
    }

    /// Every local inbox.
    pub fn inboxes(&self) -> &[Inbox] {
        &self.inboxes
    }

    /// The pending-call table.
    pub fn pending(&self) -> &Rc<Pending> {
        &self.pending
    }

    /// The executor's timers.
    pub fn timers(&self) -> &Rc<Timers> {
        &self.timers
    }

    /// The executor's clock: CLOCK_MONOTONIC for a TSC read.
    pub fn clock(&self) -> &Clock {
        self.timers.clock()
    }

    /// The rings its tasks wait on besides the pump's.
    pub fn watches(&self) -> &Watches {
        &self.watches
    }

    /// The frame pool.
    pub fn pool(&self) -> &Rc<FramePool> {
        &self.pool
    }

    /// Counters.
    pub fn counters(&self) -> &RouterCounters {
        &self.counters
    }

    /// Routes an envelope sent by an agent of this executor.
    pub fn route(&self, env: &Envelope<'_>) -> Result<(), RuntimeError> {
        if env.topic != TopicId::NONE && env.payload.kind() == PayloadKind::Event {
            return self.publish(env);
        }
        let executor = self.routes.executor_of(env.to);
        if executor == NOWHERE {
            return self.write_cluster(env);
        }
        if executor == self.executor {
            let frame = self.encode(env)?;
            bump(&self.counters.local);
            return self.queue(
                frame,
                env.payload.kind(),
                env.to,
                env.priority,
                env.correlation,
            );
        }
        self.write_remote(executor, env)
    }

    fn publish(&self, env: &Envelope<'_>) -> Result<(), RuntimeError> {
        let mut result = Ok(());
        for (executor, slots) in self.routes.subscribers(env.topic) {
            let sent = if *executor == self.executor {
                slots.iter().try_for_each(|&slot| {
                    let frame = self.encode(env)?;
                    bump(&self.counters.local);
                    self.push(slot as usize, env.priority, frame)
                })
            } else {
                self.write_remote(*executor, env)
            };
            if sent.is_err() {
                result = sent;
            }
        }
        if self.routes.remote().publishes_legacy(env.from) {
            let sent = self.write_legacy_pub(env);
            if sent.is_err() {
                result = sent;
            }
        }
        result
    }

    /// Hands an event of an agent with a legacy PUB port to the gateway,
    /// when this executor has an uplink to it.
    fn write_legacy_pub(&self, env: &Envelope<'_>) -> Result<(), RuntimeError> {
        let mut uplinks = self.uplinks.borrow_mut();
        let Some(uplink) = uplinks[RemoteKind::Legacy as usize].as_mut() else {
            return Ok(());
        };
        counted(uplink.send(env), &self.counters.cluster)
    }

    fn write_remote(&self, executor: u16, env: &Envelope<'_>) -> Result<(), RuntimeError> {
        let mut outgoing = self.outgoing.borrow_mut();
        let Some(producer) = outgoing.get_mut(executor as usize).and_then(Option::as_mut) else {
            bump(&self.counters.unroutable);
            return Err(RuntimeError::NoRoute { to: env.to });
        };
        let rang = producer.stats().wakeups_sent;
        let sent = producer.try_send(env);
        if producer.stats().wakeups_sent != rang {
            self.woke_peer.set(true);
        }
        counted(sent, &self.counters.remote)
    }

    /// Whether a write to another executor rang its bell (it was parked)
    /// since the last question: the pump's next wait then spins as long
    /// as a wake-up takes (`ConsumerGroup::woke_a_peer`).
    pub fn take_woke_peer(&self) -> bool {
        self.woke_peer.replace(false)
    }

    /// Hands a message for another host to the cluster link, or one for a
    /// legacy agent or client to the gateway, if it is one and this
    /// executor has an uplink to that plane.
    fn write_cluster(&self, env: &Envelope<'_>) -> Result<(), RuntimeError> {
        let mut uplinks = self.uplinks.borrow_mut();
        let uplink = self
            .routes
            .remote()
            .kind_of(env.to)
            .and_then(|kind| uplinks[kind as usize].as_mut());
        let Some(uplink) = uplink else {
            bump(&self.counters.unroutable);
            return Err(RuntimeError::NoRoute { to: env.to });
        };
        counted(uplink.send(env), &self.counters.cluster)
    }

    fn encode(&self, env: &Envelope<'_>) -> Result<FrameBuf, RuntimeError> {
        let Some(mut frame) = self.pool.take() else {
            bump(&self.counters.dropped);
            return Err(RuntimeError::Overloaded);
        };
        let scratch = &mut **self.scratch.borrow_mut();
        let mut failure = None;
        let fitted = frame.fill(|out| match wire::encode_into(env, out, scratch) {
            Ok(len) => Some(len),
            Err(err) => {
                failure = Some(err);
                None
            }
        });
        match (fitted, failure) {
            (true, _) => Ok(frame),
            (false, Some(source)) => Err(RuntimeError::Encode {
                source: Box::new(source),
            }),
            (false, None) => Err(RuntimeError::Overloaded),
        }
    }

    /// Accepts a frame read from an incoming ring. Returns how many pool
    /// frames it took (0 when dropped).
    pub fn accept(&self, bytes: &[u8]) -> Result<usize, RuntimeError> {
        let env = wire::decode(bytes).map_err(|source| RuntimeError::Decode {
            source: Box::new(source),
        })?;
        bump(&self.counters.accepted);
        if env.kind() == PayloadKind::Event && env.topic() != TopicId::NONE {
            let mut taken = 0;
            let local = self
                .routes
                .subscribers(env.topic())
                .iter()
                .find(|(e, _)| *e == self.executor);
            for &slot in local.map_or(&[][..], |(_, slots)| slots.as_slice()) {
                if self
                    .push(slot as usize, env.priority(), self.copy(bytes)?)
                    .is_ok()
                {
                    taken += 1;
                }
            }
            return Ok(taken);
        }
        if self.routes.executor_of(env.to()) != self.executor {
            bump(&self.counters.unroutable);
            return Err(RuntimeError::NoRoute { to: env.to() });
        }
        let frame = self.copy(bytes)?;
        self.queue(
            frame,
            env.kind(),
            env.to(),
            env.priority(),
            env.correlation(),
        )
        .map(|()| 1)
    }

    fn copy(&self, bytes: &[u8]) -> Result<FrameBuf, RuntimeError> {
        let Some(mut frame) = self.pool.take() else {
            bump(&self.counters.dropped);
            return Err(RuntimeError::Overloaded);
        };
        if frame.copy_from(bytes) {
            Ok(frame)
        } else {
            Err(RuntimeError::Overloaded)
        }
    }

    /// Queues a frame for a local agent, or completes the call it answers.
    fn queue(
        &self,
        frame: FrameBuf,
        kind: PayloadKind,
        to: AgentId,
        priority: wire::Priority,
        correlation: u64,
    ) -> Result<(), RuntimeError> {
        if kind == PayloadKind::Reply {
            if !self.pending.complete(correlation, frame) {
                bump(&self.counters.late_replies);
            }
            return Ok(());
        }
        self.push(self.routes.slot_of(to), priority, frame)
    }

    fn push(
        &self,
        slot: usize,
        priority: wire::Priority,
        frame: FrameBuf,
    ) -> Result<(), RuntimeError> {
        match self.inboxes[slot].push(priority, frame) {
            Ok(()) => Ok(()),
            Err(frame) => {
                bump(&self.counters.dropped);
                self.refuse(&frame);
                Err(RuntimeError::Overloaded)
            }
        }
    }

    /// Answers a request that could not be queued with
    /// [`STATUS_OVERLOADED`] (or [`STATUS_UNAVAILABLE`] when the agent is
    /// isolated), so its caller fails fast.
    fn refuse(&self, frame: &FrameBuf) {
        let bytes = frame.bytes();
        let Ok(env) = wire::decode(&bytes) else {
            return;
        };
        if env.kind() != PayloadKind::Request {
            return;
        }
        let refusing =
            self.routes.executor_of(env.to()) == self.executor && self.inbox(env.to()).refuses();
        let status = if refusing {
            STATUS_UNAVAILABLE
        } else {
            STATUS_OVERLOADED
        };
        let reply = reply_to(env, status, &[]);
        drop(bytes);
        let _ = self.route(&reply);
    }

    /// Publishes every outgoing ring's written frames (after a batch).
    pub fn flush(&self) -> Result<(), RuntimeError> {
        for producer in self.outgoing.borrow_mut().iter_mut().flatten() {
            producer
                .flush()
                .map_err(|source| RuntimeError::Ring { source })?;
        }
        Ok(())
    }
}

/// One balancer per replicated agent, seeded by the executor so that
/// executors do not pick in step.
fn balancers(routes: &Routes, executor: u16) -> Vec<Balancer> {
    let now = super::ctx::now_ns();
    routes
        .services()
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let seed = u64::from(executor) << 32 | i as u64;
            Balancer::new(s.balance, s.replicas.len(), &s.weights, seed, now)
        })
        .collect()
}

/// Sizes of a router's tables, fixed at boot.
#[derive(Debug, Clone)]
pub struct NodeSizes {
    /// Frames in the pool.
    pub pool_frames: usize,
    /// Bytes per frame (the rings' largest frame).
    pub frame_bytes: usize,
    /// Messages per inbox lane.
    pub inbox_capacity: usize,
    /// Calls in flight at once.
    pub pending_calls: usize,
    /// Workers per agent id (inbox waiter capacity).
    pub workers: Vec<usize>,
}

/// The reply to `request` with `status` and `body`.
pub fn reply_to<'a>(request: &ArchivedEnvelope<'_>, status: u16, body: &'a [u8]) -> Envelope<'a> {
    Envelope {
        from: request.to(),
        to: request.from(),
        topic: TopicId::NONE,
        correlation: request.correlation(),
        priority: request.priority(),
        sent_ns: request.sent_ns(),
        deadline_ns: request.deadline_ns(),
        payload: Payload::Reply { status, body },
    }
}
