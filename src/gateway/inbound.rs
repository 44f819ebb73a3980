//! Legacy clients into pinwheel: one ROUTER socket per REP port, so many
//! REQ (or DEALER) clients share a port, each request a call from
//! [`GATEWAY`] to the port's agent.
//!
//! ```text
//!  REQ client ─[id, "", json]─▶ ROUTER :port ─ check ─ Tokens ─ Request{action→method, json}
//!                                                          │      ─downlink─▶ agent's executor
//!  REQ client ◀[id, "", reply]─ ROUTER ◀─ seed reply ◀─ take(token) ◀─uplink─ agent's Reply
//! ```
//!
//! * Each request waits in a [`Tokens`] table whose token is the call's
//!   correlation id; its routing frames wait with it, so the reply finds
//!   its client. Bounds: [`MAX_WAITING`] in all, [`MAX_PER_PORT`] per
//!   port, [`MAX_PARTS`] frames read per message (more are drained and
//!   refused), the gateway's message limit per request. Past any bound
//!   the client gets an error reply at once.
//! * Deadlines are all the same length, so they expire in arrival order:
//!   a queue of `(deadline, token)` finds the next one without a scan. A
//!   request its agent has not answered a moment after its deadline is
//!   answered `timed out` by the gateway, and a late reply is dropped.
//! * Sends never block: a ROUTER drops a reply to a client that is gone
//!   or whose queue is full.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::contract::{Refusal, SeedReply, check_request, reply_for};
use super::plan::RepPort;
use super::poller::Edge;
use crate::runtime::ctx::now_ns;
use crate::runtime::legacy::bump;
use crate::runtime::node::STATUS_OK;
use crate::runtime::remote::{GATEWAY, Tokens};
use pinwheel_ipc::ring::RingError;
use pinwheel_ipc::wire::{Envelope, Payload, TopicId};

/// Requests waiting for their agents, at most.
pub const MAX_WAITING: usize = 4096;
/// Requests waiting per port, at most.
pub const MAX_PER_PORT: usize = 1024;
/// Frames of one message kept (routing frames, delimiter, body).
pub const MAX_PARTS: usize = 8;
/// How long after its deadline a request is answered by the gateway, so
/// that its agent's own timeout reply comes first.
const GRACE: Duration = Duration::from_millis(20);
/// Messages taken from one port before the others get a turn.
const BATCH: usize = 64;

/// A REP port's socket.
pub(super) struct Rep {
    pub socket: zmq::Socket,
    pub port: RepPort,
    /// Its counters' index in the gateway's stats.
    pub stats: usize,
    waiting: usize,
    next: usize,
}

impl Rep {
    pub fn new(socket: zmq::Socket, port: RepPort, stats: usize) -> Self {
        Rep {
            socket,
            port,
            stats,
            waiting: 0,
            next: 0,
        }
    }
}

/// A request waiting for its agent.
struct Waiting {
    rep: usize,
    route: Vec<Vec<u8>>,
    delimited: bool,
    action: String,
    started: Instant,
}

/// The inbound side.
pub(super) struct Inbound {
    pub reps: Vec<Rep>,
    table: Tokens<Waiting>,
    deadlines: VecDeque<(Instant, u64)>,
    max_bytes: usize,
    timeout: Duration,
}

/// A message as read: its kept frames and how many it had.
struct Parts {
    frames: Vec<Vec<u8>>,
    count: usize,
}

/// Reads one message without waiting; `None` when there is none.
fn recv_parts(socket: &zmq::Socket) -> Result<Option<Parts>, zmq::Error> {
    let first = match socket.recv_bytes(zmq::DONTWAIT) {
        Ok(frame) => frame,
        Err(zmq::Error::EAGAIN) => return Ok(None),
        Err(err) => return Err(err),
    };
    let mut parts = Parts {
        frames: vec![first],
        count: 1,
    };
    // The rest of a multipart message is already here.
    while socket.get_rcvmore()? {
        let frame = socket.recv_bytes(0)?;
        parts.count += 1;
        if parts.frames.len() < MAX_PARTS {
            parts.frames.push(frame);
        }
    }
    Ok(Some(parts))
}

impl Inbound {
    pub fn new(reps: Vec<Rep>, max_bytes: usize, timeout: Duration) -> Self {
        Inbound {
            reps,
            table: Tokens::new(MAX_WAITING),
            deadlines: VecDeque::new(),
            max_bytes,
            timeout,
        }
    }

    /// Takes the messages waiting on port `rep`.
    pub fn drain(&mut self, rep: usize, edge: &mut Edge) {
        for _ in 0..BATCH {
            match recv_parts(&self.reps[rep].socket) {
                Ok(Some(parts)) => self.request(rep, parts, edge),
                Ok(None) => return,
                Err(_) => {
                    bump(&edge.stats.bad);
                    return;
                }
            }
        }
    }

    /// One message from a legacy client.
    fn request(&mut self, rep: usize, parts: Parts, edge: &mut Edge) {
        let stats = &edge.stats.ports[self.reps[rep].stats];
        bump(&stats.messages);
        let mut frames = parts.frames;
        // [route..., "", body]: a REQ client's; [id, body]: a DEALER's
        // without a delimiter, answered the same way.
        let (route, body, delimited) = match frames.iter().position(Vec::is_empty) {
            Some(at) => {
                let body = frames.split_off(at + 1);
                frames.pop();
                (frames, body, true)
            }
            None => {
                let body = frames.split_off(1.min(frames.len()));
                (frames, body, false)
            }
        };
        let started = Instant::now();
        let waiting = Waiting {
            rep,
            route,
            delimited,
            action: String::new(),
            started,
        };
        let body_parts = parts.count - (waiting.route.len() + usize::from(delimited));
        if body_parts != 1 {
            return self.refuse(waiting, &Refusal::Frames(body_parts).to_string(), edge);
        }
        let action = match check_request(&body[0], self.max_bytes) {
            Ok(action) => action,
            Err(why) => return self.refuse(waiting, &why.to_string(), edge),
        };
        let method = match edge.names.number(&action) {
            Ok(method) => method,
            Err(why) => return self.refuse(waiting, &why, edge),
        };
        let waiting = Waiting { action, ..waiting };
        let full = if self.table.len() >= MAX_WAITING {
            Some(format!(
                "overloaded: {MAX_WAITING} legacy requests wait; retry later"
            ))
        } else if self.reps[rep].waiting >= MAX_PER_PORT {
            Some(format!(
                "overloaded: {MAX_PER_PORT} requests wait on this port; retry later"
            ))
        } else {
            None
        };
        match full {
            Some(why) => self.answer(waiting, &SeedReply::error(why).to_bytes(), false, edge),
            None => self.forward(waiting, method, &body[0], edge),
        }
    }

    /// Sends a checked request to the port's agent (the table has room).
    fn forward(&mut self, waiting: Waiting, method: u16, body: &[u8], edge: &mut Edge) {
        let rep = waiting.rep;
        let Some(to) = self.pick(rep, edge) else {
            let reply = SeedReply::error("the agent does not run here").to_bytes();
            return self.answer(waiting, &reply, false, edge);
        };
        let token = self.table.insert(waiting).expect("room was checked");
        let now = now_ns();
        let timeout_ns = u64::try_from(self.timeout.as_nanos()).unwrap_or(u64::MAX);
        let env = Envelope {
            from: GATEWAY,
            to,
            topic: TopicId::NONE,
            correlation: token,
            priority: self.reps[rep].port.priority,
            sent_ns: now,
            deadline_ns: now.saturating_add(timeout_ns),
            payload: Payload::Request { method, body },
        };
        match edge.deliver(&env) {
            Ok(()) => {
                self.reps[rep].waiting += 1;
                // Answered requests leave the queue when they reach its
                // front; a long run of them behind a slow one is dropped
                // here, so the queue stays within a multiple of the table.
                if self.deadlines.len() >= 4 * MAX_WAITING {
                    let table = &self.table;
                    self.deadlines.retain(|(_, t)| table.get(*t).is_some());
                }
                self.deadlines
                    .push_back((Instant::now() + self.timeout + GRACE, token));
            }
            Err(err) => {
                let why = match err {
                    RingError::TooLarge { max, .. } => format!(
                        "the request does not fit the mesh's frames of {max} bytes; send less"
                    ),
                    _ => "overloaded: the agent's executor is full; retry later".to_owned(),
                };
                if let Some(waiting) = self.table.take(token) {
                    self.answer(waiting, &SeedReply::error(why).to_bytes(), false, edge);
                }
            }
        }
    }

    /// The replica of port `rep` the next request goes to: each usable
    /// one in turn, else the next one (which answers for itself).
    fn pick(&mut self, rep: usize, edge: &Edge) -> Option<pinwheel_ipc::wire::AgentId> {
        let port = &mut self.reps[rep];
        let count = port.port.replicas.len();
        let board = edge.routes.board();
        let start = port.next;
        let chosen = (0..count)
            .map(|i| (start + i) % count)
            .find(|&i| board.flags(port.port.replicas[i]).usable())
            .or((count > 0).then_some(start % count.max(1)))?;
        port.next = chosen + 1;
        Some(port.port.replicas[chosen])
    }

    /// Refuses a request for bad input: an error reply, counted.
    fn refuse(&mut self, waiting: Waiting, why: &str, edge: &mut Edge) {
        bump(&edge.stats.ports[self.reps[waiting.rep].stats].refused);
        self.answer(waiting, &SeedReply::error(why).to_bytes(), false, edge);
    }

    /// Sends `reply` to the client of `waiting`; `ok` when it is a
    /// success (anything else counts as an error).
    fn answer(&mut self, waiting: Waiting, reply: &[u8], ok: bool, edge: &mut Edge) {
        let rep = &self.reps[waiting.rep];
        let stats = &edge.stats.ports[rep.stats];
        if !ok {
            bump(&stats.errors);
        }
        let empty: &[u8] = &[];
        let frames: Vec<&[u8]> = waiting
            .route
            .iter()
            .map(Vec::as_slice)
            .chain(waiting.delimited.then_some(empty))
            .chain([reply])
            .collect();
        // A client that is gone, or whose queue is full, loses its reply:
        // a ROUTER drops it rather than block.
        let _ = rep.socket.send_multipart(frames, zmq::DONTWAIT);
        let elapsed = waiting.started.elapsed();
        stats
            .latency
            .record(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
    }

    /// An agent's reply to the request `token` names.
    pub fn on_reply(&mut self, token: u64, status: u16, body: &[u8], edge: &mut Edge) {
        let Some(waiting) = self.table.take(token) else {
            // Answered already, as timed out.
            return;
        };
        self.reps[waiting.rep].waiting -= 1;
        let reply = reply_for(status, body, &waiting.action);
        self.answer(waiting, &reply, status == STATUS_OK, edge);
    }

    /// Answers the requests whose deadline (and grace) passed by `now`.
    pub fn sweep(&mut self, now: Instant, edge: &mut Edge) {
        while let Some(&(deadline, token)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            if let Some(waiting) = self.table.take(token) {
                self.reps[waiting.rep].waiting -= 1;
                let why = format!(
                    "timed out: the agent did not answer within {} ms",
                    self.timeout.as_millis()
                );
                self.answer(waiting, &SeedReply::error(why).to_bytes(), false, edge);
            }
        }
    }

    /// When the next request expires, if one waits.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        // Entries answered already stay until their time; drop them from
        // the front so the queue follows the table.
        while let Some(&(_, token)) = self.deadlines.front() {
            if self.table.get(token).is_some() {
                break;
            }
            self.deadlines.pop_front();
        }
        self.deadlines.front().map(|(at, _)| *at)
    }

    /// Answers every waiting request: the daemon is stopping.
    pub fn close(&mut self, edge: &mut Edge) {
        while let Some((_, token)) = self.deadlines.pop_front() {
            if let Some(waiting) = self.table.take(token) {
                let reply = SeedReply::error("the daemon is shutting down").to_bytes();
                self.answer(waiting, &reply, false, edge);
            }
        }
    }
}
