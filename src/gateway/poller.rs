//! The gateway thread: one `zmq_poll` over every socket of the edge and
//! the eventfd the executors' uplinks poke, and what it does with each.
//!
//! ```text
//!  loop: poll(eventfd, ROUTERs, REQs awaiting replies, SUBs; until the next deadline)
//!        → uplinks: agents' replies to legacy clients, calls to zmq agents, events for PUB ports
//!        → ROUTERs: legacy requests            → REQs: zmq agents' replies
//!        → SUBs: zmq agents' events            → deadlines: answer what expired
//! ```
//!
//! Everything the thread touches is its own: the ZeroMQ context and
//! sockets (made on this thread, never shared), the downlink producers
//! (one per executor; the thread is their single producer) and the uplink
//! consumers. It wakes only for a message or a deadline: the poll's
//! timeout is the earliest deadline, at most [`IDLE_POLL`], and the
//! uplinks' eventfd is read (reset) before they are drained, so a frame
//! written after the drain pokes it again.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::eventfd::EventFd;
use pinwheel_ipc::ring::{Consumer, Producer, RingError};
use pinwheel_ipc::wire::{self, Envelope, Payload, TopicId};

use super::inbound::Inbound;
use super::names::Names;
use super::outbound::{Call, Outbound};
use super::pubsub::PubSub;
use crate::runtime::legacy::{LegacyStats, bump};
use crate::runtime::remote::GATEWAY;
use crate::runtime::routes::Routes;

/// Longest poll without a deadline (the stop flag is also poked).
pub const IDLE_POLL: Duration = Duration::from_secs(1);
/// Frames taken from one uplink before the others get a turn.
const UPLINK_BATCH: usize = 64;

/// What the gateway's sides share: where messages go, and what is
/// counted.
pub(super) struct Edge {
    pub routes: Arc<Routes>,
    pub downlinks: Vec<Producer>,
    pub names: Names,
    pub stats: Arc<LegacyStats>,
}

impl Edge {
    /// Hands `env` to the executor of `env.to`.
    pub fn deliver(&mut self, env: &Envelope<'_>) -> Result<(), RingError> {
        let executor = self.routes.executor_of(env.to);
        self.deliver_to(executor, env)
    }

    /// Hands `env` to executor `executor`.
    pub fn deliver_to(&mut self, executor: u16, env: &Envelope<'_>) -> Result<(), RingError> {
        self.downlinks
            .get_mut(usize::from(executor))
            .ok_or(RingError::PeerGone)?
            .try_send(env)
    }
}

/// The gateway's sockets, by side.
pub(super) struct Sides {
    pub inbound: Inbound,
    pub outbound: Outbound,
    pub pubsub: PubSub,
}

/// The thread's loop, until `stop`; then every waiting request and call
/// is answered.
pub(super) fn serve(
    mut sides: Sides,
    mut edge: Edge,
    mut uplinks: Vec<Consumer>,
    wake: &EventFd,
    stop: &AtomicBool,
) {
    let mut readable: Vec<bool> = Vec::new();
    let mut waiting: Vec<usize> = Vec::new();
    // SYNC: Acquire pairs with the Release store in `Gateway::stop`.
    while !stop.load(Ordering::Acquire) {
        poll(&mut sides, wake, &mut readable, &mut waiting);
        if readable[0] {
            // Reset before draining: a frame written after the drain
            // pokes the eventfd again. EAGAIN: nothing to reset.
            let _ = wake.read();
        }
        drain_uplinks(&mut uplinks, &mut sides, &mut edge);
        let reps = sides.inbound.reps.len();
        for rep in 0..reps {
            if readable[1 + rep] {
                sides.inbound.drain(rep, &mut edge);
            }
        }
        for (k, &target) in waiting.iter().enumerate() {
            if readable[1 + reps + k] {
                sides.outbound.on_readable(target, &mut edge);
            }
        }
        let subs = 1 + reps + waiting.len();
        for sub in 0..sides.pubsub.subs.len() {
            if readable[subs + sub] {
                sides.pubsub.drain(sub, &mut edge);
            }
        }
        let now = Instant::now();
        sides.inbound.sweep(now, &mut edge);
        sides.outbound.sweep(now, &mut edge);
    }
    drain_uplinks(&mut uplinks, &mut sides, &mut edge);
    sides.inbound.close(&mut edge);
    sides.outbound.close(&mut edge);
}

/// Waits for something to do; `readable` gets one flag per item:
/// the eventfd, each ROUTER, each REQ awaiting a reply (their targets in
/// `waiting`), each SUB.
fn poll(sides: &mut Sides, wake: &EventFd, readable: &mut Vec<bool>, waiting: &mut Vec<usize>) {
    let next = [
        sides.inbound.next_deadline(),
        sides.outbound.next_deadline(),
    ]
    .into_iter()
    .flatten()
    .min();
    let wait = next.map_or(IDLE_POLL, |at| {
        at.saturating_duration_since(Instant::now()).min(IDLE_POLL)
    });
    // Round up: a poll that returns just before a deadline only spins.
    let timeout_ms = i64::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(i64::MAX);
    waiting.clear();
    let mut items = vec![zmq::PollItem::from_fd(wake.as_raw_fd(), zmq::POLLIN)];
    items.extend(
        sides
            .inbound
            .reps
            .iter()
            .map(|r| r.socket.as_poll_item(zmq::POLLIN)),
    );
    for (target, socket) in sides.outbound.waiting() {
        waiting.push(target);
        items.push(socket.as_poll_item(zmq::POLLIN));
    }
    items.extend(
        sides
            .pubsub
            .subs
            .iter()
            .map(|s| s.socket.as_poll_item(zmq::POLLIN)),
    );
    readable.clear();
    match zmq::poll(&mut items, timeout_ms) {
        Ok(_) => readable.extend(items.iter().map(zmq::PollItem::is_readable)),
        // EINTR: look at everything once more.
        Err(_) => readable.resize(items.len(), false),
    }
}

/// Takes what the executors sent up.
fn drain_uplinks(uplinks: &mut [Consumer], sides: &mut Sides, edge: &mut Edge) {
    for uplink in uplinks {
        for _ in 0..UPLINK_BATCH {
            match uplink.try_recv(|bytes| dispatch(bytes, sides, edge)) {
                Ok(Some(())) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
}

/// One frame from an executor.
fn dispatch(bytes: &[u8], sides: &mut Sides, edge: &mut Edge) {
    let Ok(archived) = wire::decode(bytes) else {
        return bump(&edge.stats.bad);
    };
    let env = archived.to_envelope();
    match env.payload {
        Payload::Reply { status, body } if env.to == GATEWAY => {
            sides.inbound.on_reply(env.correlation, status, body, edge);
        }
        Payload::Request { method, body } => {
            let call = Call {
                from: env.from,
                correlation: env.correlation,
                priority: env.priority,
                sent_ns: env.sent_ns,
                deadline_ns: env.deadline_ns,
                method,
                body: body.to_vec(),
            };
            sides.outbound.call(env.to, call, edge);
        }
        Payload::Event { body } if env.topic != TopicId::NONE => {
            sides.pubsub.publish(env.from, env.topic, body, edge);
        }
        _ => bump(&edge.stats.bad),
    }
}
