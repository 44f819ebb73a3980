//! Pinwheel into unchanged seed agents: a call to a `zmq` agent is sent on
//! a REQ socket as the seed's JSON request, and its JSON reply comes back
//! as the reply body.
//!
//! ```text
//!  caller ─uplink─▶ queue (≤ MAX_QUEUE) ─▶ REQ ─{"action": method, ..}─▶ legacy REP agent
//!  caller ◀downlink─ Reply{status, json} ◀─ REQ ◀──────── {"status": .., ..}
//! ```
//!
//! * **Lockstep.** A REQ socket holds one request at a time, as the
//!   seed's single-threaded REP loops serve them: calls queue behind it,
//!   bounded, and a call whose deadline passes in the queue is answered
//!   `timed out` without being sent.
//! * **Never wedged.** The call in flight has its deadline (the caller's,
//!   or the gateway's timeout when it gave none); when it passes, the
//!   caller is answered `timed out`, and the socket is closed (linger 0)
//!   and replaced by a fresh one at once, so a lost request or a dead
//!   agent never holds the route. The new socket reconnects by itself
//!   (ZeroMQ retries every 100 ms), so the route recovers when the agent
//!   is back.
//! * **Fail fast.** Sockets are `ZMQ_IMMEDIATE`: while the agent is not
//!   connected a send fails at once and the call is answered
//!   `unavailable` instead of waiting for its deadline. A fresh socket
//!   gets [`CONNECT_GRACE`] to connect first (its calls wait, retried
//!   every [`RETRY_EVERY`]), so the first calls after the daemon starts
//!   or a socket is replaced do not fail while TCP connects.
//! * A reply over the gateway's message limit closes the connection
//!   (`ZMQ_MAXMSGSIZE`); one that does not fit the mesh's frames is
//!   answered as a failure.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::contract::{reply_status, request_for};
use super::plan::ZmqTarget;
use super::poller::Edge;
use crate::runtime::ctx::now_ns;
use crate::runtime::legacy::bump;
use crate::runtime::node::{
    STATUS_FAILED, STATUS_OK, STATUS_OVERLOADED, STATUS_TIMEOUT, STATUS_UNAVAILABLE,
};
use pinwheel_ipc::wire::{AgentId, Envelope, Payload, Priority, TopicId};

/// Calls waiting for one `zmq` agent, at most.
pub const MAX_QUEUE: usize = 256;
/// How long a fresh socket's calls wait for it to connect.
pub const CONNECT_GRACE: Duration = Duration::from_millis(250);
/// How often they try while it connects.
pub const RETRY_EVERY: Duration = Duration::from_millis(5);

/// A call to a `zmq` agent.
pub(super) struct Call {
    pub from: AgentId,
    pub correlation: u64,
    pub priority: Priority,
    pub sent_ns: u64,
    pub deadline_ns: u64,
    pub method: u16,
    pub body: Vec<u8>,
}

/// A call and when it expires.
struct Queued {
    call: Call,
    deadline: Instant,
}

/// One `zmq` agent.
struct Target {
    plan: ZmqTarget,
    socket: Option<zmq::Socket>,
    queue: VecDeque<Queued>,
    in_flight: Option<(Queued, Instant)>,
    /// Until when a send that finds no connection waits for one.
    connecting_until: Instant,
    /// When the calls waiting for a connection try again.
    retry_at: Option<Instant>,
    stats: usize,
}

/// The outbound side.
pub(super) struct Outbound {
    context: zmq::Context,
    targets: Vec<Target>,
    by_id: HashMap<u32, usize>,
    max_bytes: usize,
    timeout: Duration,
}

impl Outbound {
    /// Targets of `plan`, each with its socket connecting; target `i`'s
    /// counters are the gateway's `targets[i]`.
    pub fn new(
        context: &zmq::Context,
        plan: Vec<ZmqTarget>,
        max_bytes: usize,
        timeout: Duration,
    ) -> Self {
        let mut out = Outbound {
            context: context.clone(),
            targets: Vec::with_capacity(plan.len()),
            by_id: HashMap::new(),
            max_bytes,
            timeout,
        };
        for (i, plan) in plan.into_iter().enumerate() {
            out.by_id.insert(plan.id.0, i);
            out.targets.push(Target {
                plan,
                socket: None,
                queue: VecDeque::new(),
                in_flight: None,
                connecting_until: Instant::now(),
                retry_at: None,
                stats: i,
            });
            // A publisher nobody here calls needs no REQ socket.
            if out.targets[i].plan.called {
                out.reconnect(i);
            }
        }
        out
    }

    /// A fresh REQ socket for target `i`, connecting.
    fn reconnect(&mut self, i: usize) {
        let target = &mut self.targets[i];
        target.socket = None;
        target.connecting_until = Instant::now() + CONNECT_GRACE;
        let socket = self.context.socket(zmq::REQ).and_then(|s| {
            s.set_linger(0)?;
            s.set_immediate(true)?;
            s.set_maxmsgsize(i64::try_from(self.max_bytes).unwrap_or(i64::MAX))?;
            s.connect(&target.plan.endpoint)?;
            Ok(s)
        });
        match socket {
            Ok(socket) => target.socket = Some(socket),
            Err(err) => {
                tracing::debug!(agent = %target.plan.name, error = %err, "zmq agent socket not made")
            }
        }
    }

    /// The sockets waiting for a reply, with their target's index.
    pub fn waiting(&self) -> impl Iterator<Item = (usize, &zmq::Socket)> {
        self.targets.iter().enumerate().filter_map(|(i, t)| {
            t.in_flight.as_ref()?;
            Some((i, t.socket.as_ref()?))
        })
    }

    /// A call from the mesh to the `zmq` agent `to`.
    pub fn call(&mut self, to: AgentId, call: Call, edge: &mut Edge) {
        let Some(&i) = self.by_id.get(&to.0) else {
            bump(&edge.stats.bad);
            answer(to, &call, STATUS_UNAVAILABLE, &[], edge);
            return;
        };
        let target = &mut self.targets[i];
        bump(&edge.stats.targets[target.stats].calls);
        if target.queue.len() >= MAX_QUEUE {
            bump(&edge.stats.targets[target.stats].errors);
            answer(to, &call, STATUS_OVERLOADED, &[], edge);
            return;
        }
        let left = match call.deadline_ns {
            0 => self.timeout,
            deadline => Duration::from_nanos(deadline.saturating_sub(now_ns())),
        };
        target.queue.push_back(Queued {
            call,
            deadline: Instant::now() + left,
        });
        self.pump(i, edge);
    }

    /// Sends target `i`'s next call if none is in flight (and none waits
    /// for the socket to connect).
    fn pump(&mut self, i: usize, edge: &mut Edge) {
        loop {
            let target = &mut self.targets[i];
            if target.in_flight.is_some() || target.retry_at.is_some() {
                return;
            }
            let Some(queued) = target.queue.pop_front() else {
                return;
            };
            let (id, stats) = (target.plan.id, target.stats);
            let now = Instant::now();
            if queued.deadline <= now {
                bump(&edge.stats.targets[stats].timeouts);
                bump(&edge.stats.targets[stats].errors);
                answer(id, &queued.call, STATUS_TIMEOUT, &[], edge);
                continue;
            }
            let request = request_for(&edge.names.name(queued.call.method), &queued.call.body);
            let sent = match &target.socket {
                Some(socket) => socket.send(request, zmq::DONTWAIT),
                None => Err(zmq::Error::ENOTSOCK),
            };
            match sent {
                Ok(()) => {
                    target.in_flight = Some((queued, now));
                }
                // Not connected yet, but the socket is fresh: wait a bit.
                Err(zmq::Error::EAGAIN) if now < target.connecting_until => {
                    target.queue.push_front(queued);
                    target.retry_at = Some(now + RETRY_EVERY);
                    return;
                }
                Err(err) => {
                    bump(&edge.stats.targets[stats].errors);
                    // EAGAIN: not connected (ZMQ_IMMEDIATE); anything else
                    // breaks the socket, which is replaced.
                    if err != zmq::Error::EAGAIN {
                        self.reconnect(i);
                    }
                    answer(id, &queued.call, STATUS_UNAVAILABLE, &[], edge);
                }
            }
        }
    }

    /// Target `i`'s socket is readable: its reply.
    pub fn on_readable(&mut self, i: usize, edge: &mut Edge) {
        let target = &mut self.targets[i];
        let Some(socket) = &target.socket else { return };
        let reply = match socket.recv_bytes(zmq::DONTWAIT) {
            Ok(reply) => reply,
            Err(zmq::Error::EAGAIN) => return,
            Err(_) => {
                // The in-flight call is answered at its deadline.
                return self.reconnect(i);
            }
        };
        let Some((queued, started)) = target.in_flight.take() else {
            return;
        };
        let stats = &edge.stats.targets[target.stats];
        stats
            .latency
            .record(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX));
        let status = reply_status(&reply);
        if status != STATUS_OK {
            bump(&stats.errors);
        }
        let id = target.plan.id;
        if !answer(id, &queued.call, status, &reply, edge) {
            bump(&edge.stats.targets[self.targets[i].stats].errors);
        }
        self.pump(i, edge);
    }

    /// Answers calls whose deadline passed by `now`: the one in flight
    /// (its socket is replaced), and those still queued.
    pub fn sweep(&mut self, now: Instant, edge: &mut Edge) {
        for i in 0..self.targets.len() {
            let target = &mut self.targets[i];
            let (id, stats) = (target.plan.id, target.stats);
            let expired = target
                .in_flight
                .as_ref()
                .is_some_and(|(q, _)| q.deadline <= now);
            if expired && let Some((queued, _)) = target.in_flight.take() {
                bump(&edge.stats.targets[stats].timeouts);
                bump(&edge.stats.targets[stats].errors);
                bump(&edge.stats.targets[stats].reconnects);
                answer(id, &queued.call, STATUS_TIMEOUT, &[], edge);
                self.reconnect(i);
            }
            let target = &mut self.targets[i];
            if target.retry_at.is_some_and(|at| at <= now) {
                target.retry_at = None;
            }
            while let Some(at) = target.queue.iter().position(|q| q.deadline <= now) {
                if let Some(queued) = target.queue.remove(at) {
                    bump(&edge.stats.targets[stats].timeouts);
                    bump(&edge.stats.targets[stats].errors);
                    answer(id, &queued.call, STATUS_TIMEOUT, &[], edge);
                }
            }
            self.pump(i, edge);
        }
    }

    /// When the next call expires or retries, if any waits.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.targets
            .iter()
            .flat_map(|t| {
                t.in_flight
                    .iter()
                    .map(|(q, _)| q.deadline)
                    .chain(t.queue.iter().map(|q| q.deadline))
                    .chain(t.retry_at)
            })
            .min()
    }

    /// Answers every call still waiting: the daemon is stopping.
    pub fn close(&mut self, edge: &mut Edge) {
        for target in &mut self.targets {
            let id = target.plan.id;
            let waiting = target.in_flight.take().map(|(q, _)| q);
            for queued in waiting.into_iter().chain(target.queue.drain(..)) {
                answer(id, &queued.call, STATUS_UNAVAILABLE, &[], edge);
            }
        }
    }
}

/// Answers `call` from `from` with `status` and `body`; false when the
/// reply could not be delivered (no room, or too large for a frame: then
/// the caller gets a bodiless failure if that fits).
fn answer(from: AgentId, call: &Call, status: u16, body: &[u8], edge: &mut Edge) -> bool {
    let reply = |status, body| Envelope {
        from,
        to: call.from,
        topic: TopicId::NONE,
        correlation: call.correlation,
        priority: call.priority,
        sent_ns: call.sent_ns,
        deadline_ns: call.deadline_ns,
        payload: Payload::Reply { status, body },
    };
    match edge.deliver(&reply(status, body)) {
        Ok(()) => true,
        Err(pinwheel_ipc::ring::RingError::TooLarge { .. }) => {
            let _ = edge.deliver(&reply(STATUS_FAILED, &[]));
            false
        }
        Err(_) => false,
    }
}
