//! The data-plane half of a process (or external) agent: the mesh agent
//! that stands for it on an executor and carries messages between the
//! runtime's router and the agent's rings.
//!
//! ```text
//!  router ─ handle(request) ─▶ in-flight table ─▶ ring to the agent ─▶ agent
//!  router ◀─ ctx.answer ◀──── in-flight table ◀─ reply  ◀─ ring from the agent
//!  router ◀─ call workers (ctx.call_until) ◀───── request ◀┘   (untrusted:
//!  router ◀─ ctx.publish ◀─────────────────────── event   ◀┘    copied, checked)
//! ```
//!
//! Requests. A request to the agent takes a slot of a fixed in-flight
//! table, is written to the agent's ring as it is (the frame the router
//! queued, no re-encoding), and is answered (`Ctx::answer`, from the head
//! the bridge kept, never from what the agent claims) when the agent's
//! reply comes back with the request's correlation id. While the agent is down, a request is
//! answered `STATUS_UNAVAILABLE` at once; when it goes down, every request
//! in flight to it is answered the same at once; a request whose deadline
//! passes in the agent is answered `STATUS_TIMEOUT`, and an agent that
//! lets [`SILENT_AFTER`] deadlines pass in a row without one reply is
//! reported silent and disconnected, unless an operator put it under a
//! drill (a stalled or slowed agent misses deadlines because it was told
//! to, and is left running so the drill shows how the mesh copes).
//!
//! What the agent sends is untrusted: every frame is copied and checked
//! (the ring is an untrusted consumer), a call may go only to an agent its
//! manifest's `calls` name and an event only to a topic its `publishes`
//! name (refused with [`STATUS_FORBIDDEN`], counted), replies must carry a
//! token of a live slot (others are dropped), and a frame that is not a
//! valid envelope, or a ring whose indices are broken, gets the agent
//! reported corrupt and disconnected. The agent's calls are made by a
//! fixed set of call workers fed through a bounded channel, so a flood of
//! calls is refused (`STATUS_OVERLOADED`), never queued without bound.
//!
//! The bridge owns the daemon's ends of the current incarnation's rings
//! (taken from its [`ProcessSlot`]); the control side never touches them.
//! Only the pump task (and `start`, before it runs) looks at the slot and
//! the ring from the agent; `handle` only writes to the agent's ring, and
//! answers "unavailable" when there is no live incarnation.

use std::cell::RefCell;
use std::collections::HashMap;
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::{join, select};
use futures_util::stream::FuturesUnordered;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use pinwheel_ipc::ring::{ConsumerGroup, Producer, RingError, WaitStrategy};
use pinwheel_ipc::wire::{self, AgentId, Envelope, Payload, PayloadKind, Priority, TopicId};

use super::slot::{Attachment, ProcessSlot};
use super::supervisor::ExitReason;
use crate::runtime::RuntimeError;
use crate::runtime::agent::{Head, Message};
use crate::runtime::ctx::{Ctx, now_ns};
use crate::runtime::inbox::Direct;
use crate::runtime::node::{STATUS_FAILED, STATUS_OVERLOADED, STATUS_TIMEOUT, STATUS_UNAVAILABLE};
use crate::runtime::pool::FrameBuf;
use crate::runtime::pump::YieldNow;
use crate::runtime::watch::SharedGroup;

/// Requests in flight to one agent at most.
pub const IN_FLIGHT: usize = 1024;
/// Deadlines missed in a row, with no reply between, that make an agent
/// silent.
pub const SILENT_AFTER: u32 = 3;
/// Calls the agent may have waiting for a call worker.
pub const CALL_QUEUE: usize = 256;
/// Call workers per agent.
pub const CALL_WORKERS: usize = 16;
/// Frames taken from the agent's ring per pass.
const BATCH: usize = 64;
/// Longest wait for the agent's ring before the bridge looks at its slot.
const IDLE_CHECK: Duration = Duration::from_millis(2);
/// How often the in-flight table is scanned for passed deadlines.
const EXPIRY_PERIOD_NS: u64 = 1_000_000;
/// Longest a process agent's start waits for its first incarnation.
pub const FIRST_ATTACH: Duration = Duration::from_secs(10);
/// Reply status: the agent's manifest does not allow that call or topic.
pub const STATUS_FORBIDDEN: u16 = 403;

/// What the bridge was built with.
#[derive(Debug, Clone)]
pub struct BridgeSpec {
    /// The agent.
    pub me: AgentId,
    /// The slot shared with the control side.
    pub slot: Arc<ProcessSlot>,
    /// Agents it may call.
    pub calls: Vec<AgentId>,
    /// Topics it may publish.
    pub publishes: Vec<TopicId>,
    /// Priority of its calls and events.
    pub priority: Priority,
    /// Whether `start` waits for the first incarnation (kind `process`).
    pub wait_first: bool,
}

/// One request in the agent's hands.
#[derive(Debug)]
struct InFlight {
    head: Head,
}

/// The current incarnation, as the bridge serves it.
#[derive(Debug)]
struct Live {
    epoch: u64,
    to_agent: Producer,
}

#[derive(Debug)]
struct State {
    live: Option<Live>,
    /// The epoch the bridge last acted on.
    seen: (u64, bool),
    slots: Vec<Option<InFlight>>,
    free: Vec<u16>,
    /// Slots by the request's correlation id (sized at boot: never grows).
    index: HashMap<u64, u16>,
    missed_in_a_row: u32,
    /// When the in-flight table is next scanned for passed deadlines.
    next_expiry_ns: u64,
}

impl State {
    /// Writes a request (`bytes`, its frame as the router queued it: no
    /// re-encoding) to the live incarnation's ring and files it in
    /// flight: 0, or the status to answer it with at once.
    fn forward(&mut self, head: &Head, bytes: &[u8]) -> u16 {
        let (Some(live), slot) = (&mut self.live, self.free.pop()) else {
            return STATUS_UNAVAILABLE;
        };
        let Some(slot) = slot else {
            return STATUS_OVERLOADED;
        };
        // The frame's correlation (unique among calls in flight: it names
        // the caller's executor and call slot) comes back on the reply.
        let sent = if self.index.contains_key(&head.correlation) {
            Err(RingError::Full)
        } else {
            live.to_agent.try_push(bytes)
        };
        match sent {
            Ok(()) => {
                self.slots[usize::from(slot)] = Some(InFlight { head: *head });
                self.index.insert(head.correlation, slot);
                0
            }
            Err(err) => {
                self.free.push(slot);
                if matches!(err, RingError::Full) {
                    STATUS_OVERLOADED
                } else {
                    STATUS_FAILED
                }
            }
        }
    }
}

/// The bridge's [`Direct`] taker: a request goes to the agent's ring inside
/// the caller's send, with no worker woken for it. A request it cannot
/// forward at once (no live incarnation, table or ring full) is declined
/// and queued, and `handle` answers it.
#[derive(Debug)]
struct Forward {
    state: Rc<RefCell<State>>,
    slot: Arc<ProcessSlot>,
    ctx: Ctx,
}

impl Direct for Forward {
    fn take(&self, frame: FrameBuf) -> Result<(), FrameBuf> {
        let began = self.ctx.now_ns();
        let head = {
            let bytes = frame.bytes();
            wire::decode(&bytes).map(Head::of)
        };
        let Ok(head) = head else {
            return Err(frame);
        };
        if head.kind != PayloadKind::Request {
            return Err(frame);
        }
        let Ok(mut state) = self.state.try_borrow_mut() else {
            return Err(frame);
        };
        if state.forward(&head, &frame.bytes()) != 0 {
            return Err(frame);
        }
        drop(state);
        bump(&self.slot.counters.forwarded);
        // Held until answered, as `Ctx::defer` holds a request a handler
        // took over (`Ctx::answer` releases it).
        self.ctx.node().hold();
        // As a worker counts a message its handler took.
        let me = self.ctx.me();
        let stats = self.ctx.stats();
        stats.record_service(me, self.ctx.now_ns().saturating_sub(began));
        stats.update_agent(me, |c| c.handled += 1);
        Ok(())
    }
}

/// A call the agent made, waiting for a call worker.
struct AgentCall {
    epoch: u64,
    frame: FrameBuf,
}

/// The call workers' channel: its sender (dropped to end them) and receiver.
type CallChannel = (LocalSender<AgentCall>, Rc<LocalReceiver<AgentCall>>);

/// The bridge of one process agent.
pub struct ProcessBridge {
    spec: BridgeSpec,
    state: Rc<RefCell<State>>,
    group: SharedGroup,
    calls: RefCell<Option<CallChannel>>,
}

impl std::fmt::Debug for ProcessBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessBridge")
            .field("me", &self.spec.me)
            .finish_non_exhaustive()
    }
}

fn bump(counter: &std::sync::atomic::AtomicU64) {
    // SYNC: Relaxed; a counter read for views.
    counter.fetch_add(1, Ordering::Relaxed);
}

impl ProcessBridge {
    /// A bridge (built on its executor's thread).
    pub fn new(spec: BridgeSpec) -> Self {
        // The group never waits by itself: the executor's pump watches it
        // (spinning or parked as the executor's class says).
        let group = ConsumerGroup::new(spec.slot.bell().clone(), WaitStrategy::Park, 0);
        let (tx, rx) = local_channel::new_bounded(CALL_QUEUE);
        Self {
            state: Rc::new(RefCell::new(State {
                live: None,
                seen: (0, false),
                slots: (0..IN_FLIGHT).map(|_| None).collect(),
                free: (0..IN_FLIGHT as u16).rev().collect(),
                index: HashMap::with_capacity(IN_FLIGHT),
                missed_in_a_row: 0,
                next_expiry_ns: 0,
            })),
            group: Rc::new(RefCell::new(Some(group))),
            calls: RefCell::new(Some((tx, Rc::new(rx)))),
            spec,
        }
    }

    /// Waits (a process agent, up to [`FIRST_ATTACH`]) for the first
    /// incarnation's rings, so that agents started in later phases find
    /// it up; an external agent attaches whenever it comes.
    pub async fn start(&self, ctx: &Ctx) -> Result<(), RuntimeError> {
        if !self.spec.wait_first {
            return Ok(());
        }
        let deadline = now_ns() + FIRST_ATTACH.as_nanos() as u64;
        while now_ns() < deadline && !ctx.draining() {
            self.sync_slot(ctx).await;
            if self.state.borrow().live.is_some() {
                return Ok(());
            }
            ctx.sleep(Duration::from_millis(1)).await;
        }
        Ok(())
    }

    /// A message for the agent.
    pub async fn handle(&self, ctx: &Ctx, msg: &Message) -> Result<(), RuntimeError> {
        match msg.head().kind {
            PayloadKind::Request => self.forward_request(ctx, msg).await,
            PayloadKind::Event => {
                self.forward_event(msg);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Forgets nothing: in-flight requests are answered, never dropped.
    pub fn reset(&self) {}

    /// The pump from the agent's ring and the call workers, until the
    /// executor closes the agent's inbox at the end of the drain.
    pub async fn run(&self, ctx: &Ctx) {
        let receiver = self.calls.borrow().as_ref().map(|(_, rx)| Rc::clone(rx));
        // FuturesUnordered polls a worker only when its own waker fired: the
        // pump's spinning (which wakes this task) does not poll them all.
        let mut workers: FuturesUnordered<_> = receiver
            .into_iter()
            .flat_map(|rx| std::iter::repeat_n(rx, CALL_WORKERS))
            .map(|rx| self.call_worker(ctx.fork(), rx))
            .collect();
        let pump = async {
            self.pump(ctx).await;
            // Closing the channel ends the workers.
            self.calls.borrow_mut().take();
        };
        let workers = async { while workers.next().await.is_some() {} };
        let inbox = ctx.node().inbox(ctx.me());
        inbox.set_direct(Some(Rc::new(Forward {
            state: Rc::clone(&self.state),
            slot: Arc::clone(&self.spec.slot),
            ctx: ctx.fork(),
        })));
        join(pump, workers).await;
        inbox.set_direct(None);
    }

    async fn forward_request(&self, ctx: &Ctx, msg: &Message) -> Result<(), RuntimeError> {
        let status = self.state.borrow_mut().forward(msg.head(), &msg.bytes());
        if status == 0 {
            bump(&self.spec.slot.counters.forwarded);
            ctx.defer();
            return Ok(());
        }
        if status == STATUS_UNAVAILABLE {
            bump(&self.spec.slot.counters.unavailable);
        }
        ctx.reply(msg, status, &[]).await
    }

    fn forward_event(&self, msg: &Message) {
        let mut state = self.state.borrow_mut();
        if let Some(live) = &mut state.live {
            // An event the agent has no room for is dropped, as for any
            // subscriber whose inbox is full.
            let _ = live.to_agent.try_push(&msg.bytes());
        }
    }

    /// Takes a new incarnation's rings, or lets a gone one go.
    async fn sync_slot(&self, ctx: &Ctx) {
        let now = self.spec.slot.generation();
        if now == self.state.borrow().seen {
            return;
        }
        let (epoch, up) = now;
        if self
            .state
            .borrow()
            .live
            .as_ref()
            .is_some_and(|l| l.epoch != epoch)
            || !up
        {
            self.drop_live(ctx, STATUS_UNAVAILABLE).await;
        }
        if up {
            let Some(Attachment {
                epoch,
                to_agent,
                from_agent,
            }) = self.spec.slot.take(epoch)
            else {
                // Not handed over yet (or the lock was busy): next pass.
                return;
            };
            if let Some(group) = self.group.borrow_mut().as_mut() {
                group.clear();
                // Built on the group's bell by the control side.
                let _ = group.add(from_agent);
            }
            self.state.borrow_mut().live = Some(Live { epoch, to_agent });
        }
        self.state.borrow_mut().seen = now;
    }

    /// Drops the current incarnation: its rings, and every request in
    /// flight to it, answered with `status` at once.
    async fn drop_live(&self, ctx: &Ctx, status: u16) {
        if let Some(group) = self.group.borrow_mut().as_mut() {
            group.clear();
        }
        let orphans: Vec<Head> = {
            let mut state = self.state.borrow_mut();
            state.live = None;
            state.missed_in_a_row = 0;
            state.index.clear();
            let state = &mut *state;
            let mut heads = Vec::new();
            for (i, slot) in state.slots.iter_mut().enumerate() {
                if let Some(flight) = slot.take() {
                    heads.push(flight.head);
                    state.free.push(i as u16);
                }
            }
            heads
        };
        for head in orphans {
            bump(&self.spec.slot.counters.unavailable);
            let _ = ctx.answer(&head, status, &[]).await;
        }
    }

    /// Serves the agent until its inbox closes. Draining alone does not
    /// end it, nor does an empty in-flight table: a request sent before
    /// the drain may still be calling this agent (a caller between two of
    /// its calls has nothing in flight here), and the inbox closes only
    /// when every executor is quiet, or at the drain limit, when what is
    /// still in flight is answered unavailable.
    async fn pump(&self, ctx: &Ctx) {
        let inbox = ctx.node().inbox(ctx.me());
        loop {
            self.sync_slot(ctx).await;
            let moved = self.drain(ctx).await;
            self.expire(ctx).await;
            if inbox.is_closed() {
                self.drop_live(ctx, STATUS_UNAVAILABLE).await;
                return;
            }
            if moved > 0 {
                // Callers just answered run before the pump looks again.
                YieldNow(false).await;
                continue;
            }
            if self.state.borrow().live.is_none() {
                ctx.sleep(IDLE_CHECK).await;
                continue;
            }
            // The executor's pump watches the ring from the agent (and
            // parks on its bell) while this waits.
            let frames = pin!(ctx.node().watches().wait(&self.group));
            let _ = select(frames, pin!(ctx.sleep(IDLE_CHECK))).await;
        }
    }

    /// Reads up to a batch of the agent's frames and acts on them.
    async fn drain(&self, ctx: &Ctx) -> usize {
        let mut moved = 0;
        while moved < BATCH {
            let Some(frame) = self.next_frame(ctx) else {
                break;
            };
            moved += 1;
            match frame {
                Ok(frame) => self.act(ctx, frame).await,
                Err(()) => {
                    self.disconnect(ctx, ExitReason::Corrupt).await;
                    break;
                }
            }
        }
        moved
    }

    /// The next frame from the agent, copied into a pool frame and
    /// checked; `Err` when the ring or the frame is corrupt.
    fn next_frame(&self, ctx: &Ctx) -> Option<Result<FrameBuf, ()>> {
        let mut group = self.group.borrow_mut();
        let consumer = group.as_mut()?.consumers_mut().first_mut()?;
        let mut frame = ctx.node().pool().take()?;
        match consumer.try_recv(|bytes| wire::decode(bytes).is_ok() && frame.copy_from(bytes)) {
            Ok(Some(true)) => Some(Ok(frame)),
            Ok(None) => None,
            Ok(Some(false)) | Err(_) => Some(Err(())),
        }
    }

    /// Acts on one frame from the agent, checked once in `next_frame` and
    /// read here from the private pool frame.
    // The frame's RefCell belongs to this task alone (a pool frame taken
    // for this message); no other borrow can meet the one held here.
    #[allow(clippy::await_holding_refcell_ref)]
    async fn act(&self, ctx: &Ctx, frame: FrameBuf) {
        let bytes = frame.bytes();
        let env = wire::decode(&bytes).expect("next_frame checked this frame");
        match env.to_envelope().payload {
            Payload::Reply { status, body } => {
                if let Some(head) = self.complete(env.correlation()) {
                    bump(&self.spec.slot.counters.answered);
                    let _ = ctx.answer(&head, status, body).await;
                }
            }
            Payload::Request { .. } => {
                let (correlation, to) = (env.correlation(), env.to());
                drop(bytes);
                self.queue_call(ctx, correlation, to, frame).await;
            }
            Payload::Event { body } if self.spec.publishes.contains(&env.topic()) => {
                let _ = ctx.publish(env.topic(), body, self.spec.priority).await;
            }
            _ => {}
        }
    }

    /// The agent answered the request of `correlation`: its head, if that
    /// request is still in flight (others are dropped).
    fn complete(&self, correlation: u64) -> Option<Head> {
        let mut state = self.state.borrow_mut();
        let slot = state.index.remove(&correlation)?;
        state.missed_in_a_row = 0;
        state.free.push(slot);
        state.slots[usize::from(slot)].take().map(|f| f.head)
    }

    /// The agent called someone: checked, then handed to a call worker.
    async fn queue_call(&self, ctx: &Ctx, correlation: u64, to: AgentId, frame: FrameBuf) {
        let epoch = self.state.borrow().live.as_ref().map_or(0, |l| l.epoch);
        let refused = if !self.spec.calls.contains(&to) {
            Some(STATUS_FORBIDDEN)
        } else {
            let calls = self.calls.borrow();
            match calls
                .as_ref()
                .map(|(tx, _)| tx.try_send(AgentCall { epoch, frame }))
            {
                Some(Ok(())) => None,
                _ => Some(STATUS_OVERLOADED),
            }
        };
        if let Some(status) = refused {
            self.reply_to_agent(ctx, epoch, correlation, status, &[]);
        }
    }

    /// One call worker: makes the agent's calls, one at a time.
    // The frame's RefCell belongs to this task alone (a pool frame taken
    // for this message); no other borrow can meet the one held here.
    #[allow(clippy::await_holding_refcell_ref)]
    async fn call_worker(&self, ctx: Ctx, calls: Rc<LocalReceiver<AgentCall>>) {
        while let Some(AgentCall { epoch, frame }) = calls.recv().await {
            let (to, method, correlation, deadline_ns) = {
                let bytes = frame.bytes();
                let env = wire::decode(&bytes).expect("checked");
                let method = match env.to_envelope().payload {
                    Payload::Request { method, .. } => method,
                    _ => 0,
                };
                (env.to(), method, env.correlation(), env.deadline_ns())
            };
            bump(&self.spec.slot.counters.calls);
            let deadline_ns = deadline_ns.min(now_ns() + Duration::from_secs(60).as_nanos() as u64);
            let reply = {
                let bytes = frame.bytes();
                let body = wire::decode(&bytes).expect("checked").body().to_vec();
                drop(bytes);
                ctx.call_until(to, method, &body, self.spec.priority, deadline_ns)
                    .await
            };
            match reply {
                Ok(reply) => {
                    let status = reply.head().code;
                    let body = reply.body();
                    self.reply_to_agent(&ctx, epoch, correlation, status, &body);
                }
                Err(RuntimeError::TimedOut) => {
                    self.reply_to_agent(&ctx, epoch, correlation, STATUS_TIMEOUT, &[]);
                }
                Err(_) => self.reply_to_agent(&ctx, epoch, correlation, STATUS_FAILED, &[]),
            }
        }
    }

    /// Writes a reply to the agent's call, if the incarnation that made it
    /// is still the live one (a reply never crosses incarnations).
    fn reply_to_agent(&self, ctx: &Ctx, epoch: u64, correlation: u64, status: u16, body: &[u8]) {
        let mut state = self.state.borrow_mut();
        let Some(live) = state.live.as_mut().filter(|l| l.epoch == epoch) else {
            return;
        };
        let now = now_ns();
        let reply = Envelope {
            from: AgentId(0),
            to: ctx.me(),
            topic: TopicId::NONE,
            priority: self.spec.priority,
            correlation,
            sent_ns: now,
            deadline_ns: 0,
            payload: Payload::Reply { status, body },
        };
        // A full ring drops the reply; the agent's call times out.
        let _ = live.to_agent.try_send(&reply);
    }

    /// Answers requests whose deadline passed in the agent.
    async fn expire(&self, ctx: &Ctx) {
        let now = now_ns();
        let expired: Vec<Head> = {
            let mut state = self.state.borrow_mut();
            let state = &mut *state;
            // Once a millisecond, as the executor's ticker expires calls;
            // never on an empty table.
            if now < state.next_expiry_ns || state.free.len() == IN_FLIGHT {
                return;
            }
            state.next_expiry_ns = now + EXPIRY_PERIOD_NS;
            let mut heads = Vec::new();
            for (i, slot) in state.slots.iter_mut().enumerate() {
                if slot
                    .as_ref()
                    .is_some_and(|f| f.head.deadline_ns != 0 && f.head.deadline_ns <= now)
                    && let Some(flight) = slot.take()
                {
                    state.index.remove(&flight.head.correlation);
                    heads.push(flight.head);
                    state.free.push(i as u16);
                }
            }
            if ctx.node().routes().board().drill(ctx.me()).is_none() {
                state.missed_in_a_row = state.missed_in_a_row.saturating_add(heads.len() as u32);
            }
            heads
        };
        if expired.is_empty() {
            return;
        }
        for head in &expired {
            bump(&self.spec.slot.counters.missed);
            let _ = ctx.answer(head, STATUS_TIMEOUT, &[]).await;
        }
        if self.state.borrow().missed_in_a_row >= SILENT_AFTER {
            self.disconnect(ctx, ExitReason::Silent).await;
        }
    }

    /// Reports the live incarnation to the control side (which kills it)
    /// and stops serving it now.
    async fn disconnect(&self, ctx: &Ctx, reason: ExitReason) {
        let Some(epoch) = self.state.borrow().live.as_ref().map(|l| l.epoch) else {
            return;
        };
        self.spec.slot.report(epoch, reason);
        self.drop_live(ctx, STATUS_UNAVAILABLE).await;
    }
}
