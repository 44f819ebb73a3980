//! The call plane: calls between this host's executors and other hosts'
//! agents, carried as NATS request/reply on the control runtime.
//!
//! ```text
//!  caller host                                            callee host
//!  executor ─uplink─▶ request  pinwheel.<c>.call.<to>.<me>.<agent>  ──▶ serve: rewrite from=PROXY,
//!           (envelope as is; NATS timeout = what is left       │        correlation=token; downlink
//!            of its deadline; budget header)                   │        to the agent's executor
//!  executor ◀downlink─ finish: check, rewrite to the caller ◀──┘◀─ answer: agent replies to PROXY,
//!                      (or an error reply: timeout, lost,            uplink; rewrite back; publish
//!                       breaker open, no responders)                 on the request's reply subject
//! ```
//!
//! * **The envelope is the wire envelope.** The request's payload is the
//!   caller's frame as its executor encoded it; the reply's is the
//!   callee's reply re-encoded with the caller's own ids and correlation.
//!   Both ends decode what NATS hands them with the checked decoder
//!   (bytes from another host are untrusted), into an aligned buffer.
//! * **Deadlines.** Monotonic clocks differ between hosts, so the request
//!   carries what is left of its deadline (`Pinwheel-Budget-Us`, at most
//!   [`MAX_BUDGET`]), which is also its NATS timeout; the callee sets the
//!   deadline its agent sees from its own clock.
//! * **Failures answer at once.** A call to a host the link has declared
//!   lost, or whose breaker (one [`CircuitBreaker`] per remote host:
//!   timeouts, no responders and transport errors trip it) is open, is
//!   answered with [`STATUS_UNAVAILABLE`] without being sent; when a host is
//!   declared lost, every call in flight to it is answered so at once, not
//!   at its timeout. A timeout answers [`STATUS_TIMEOUT`].
//! * **A dead caller gets nothing late.** The callee keeps each request it
//!   serves in a bounded table ([`MAX_REMOTE_IN_FLIGHT`]) until its agent
//!   answers or its budget runs out; when the caller's host is declared
//!   lost its entries are dropped, and so are their replies when they come.
//! * **Bounded.** Calls in flight each way are at most
//!   [`MAX_REMOTE_IN_FLIGHT`]; past that a call is answered
//!   [`STATUS_OVERLOADED`]. The rings to and from the executors are fixed
//!   (`runtime::remote`); a full downlink drops the message, counted, and
//!   the caller times out.
//!
//! Allocation: per call, the NATS payload (`Bytes`), its headers and the
//! boxed request future on the caller's side, and the payload on the
//! callee's; none on the data plane, where frames are encoded into rings.
//!
//! [`CircuitBreaker`]: crate::runtime::breaker::CircuitBreaker
//! [`STATUS_UNAVAILABLE`]: crate::runtime::node::STATUS_UNAVAILABLE
//! [`STATUS_TIMEOUT`]: crate::runtime::node::STATUS_TIMEOUT
//! [`STATUS_OVERLOADED`]: crate::runtime::node::STATUS_OVERLOADED

mod incoming;
mod outgoing;

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use rkyv::util::AlignedVec;

use self::incoming::Inbound;
use self::outgoing::{Outgoing, Pending};
use super::link::{LinkStats, Shared};
use crate::runtime::breaker::BreakerConfig;
use crate::runtime::remote::{CallRings, CallStats};
use crate::runtime::routes::Routes;
use pinwheel_ipc::wire::{Envelope, Scratch};

/// Calls in flight each way, at most.
pub const MAX_REMOTE_IN_FLIGHT: usize = 4096;
/// The header that carries what is left of a call's deadline, µs.
pub const BUDGET_HEADER: &str = "Pinwheel-Budget-Us";
/// A call without a deadline gets this long.
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(2);
/// The longest budget a request may carry; more is cut to this.
pub const MAX_BUDGET: Duration = Duration::from_secs(60);
/// Frames taken from one uplink before the others get a turn.
const UPLINK_BATCH: usize = 64;
/// How often served requests whose budget ran out are forgotten.
const SWEEP_EVERY: Duration = Duration::from_millis(50);

/// The breaker before each remote host: five transport failures in a row
/// open it for a second, then one probe decides.
pub const HOST_BREAKER: BreakerConfig = BreakerConfig {
    failure_threshold: 5,
    open_for_ns: 1_000_000_000,
    half_open_probes: 1,
};

/// What the daemon hands the link so that it carries calls: the routing
/// table (which id is which agent where) and the control runtime's ends
/// of the executors' call rings.
#[derive(Debug)]
pub struct CallPlane {
    routes: Arc<Routes>,
    rings: CallRings,
    stats: Arc<CallStats>,
}

impl CallPlane {
    /// A plane over `routes` and `rings`.
    pub fn new(routes: Arc<Routes>, rings: CallRings) -> Self {
        CallPlane {
            routes,
            rings,
            stats: Arc::new(CallStats::default()),
        }
    }

    /// Its counters.
    pub fn stats(&self) -> Arc<CallStats> {
        Arc::clone(&self.stats)
    }
}

/// The plane's state on the control runtime.
struct Plane {
    shared: Arc<Shared>,
    routes: Arc<Routes>,
    downlinks: Vec<pinwheel_ipc::ring::Producer>,
    stats: Arc<CallStats>,
    outgoing: Outgoing,
    inbound: Inbound,
    /// Decoding needs an aligned copy of bytes that come from NATS.
    aligned: AlignedVec<16>,
    /// Encoding replies for NATS.
    encoded: AlignedVec<16>,
    scratch: Box<Scratch>,
}

impl Plane {
    /// Encodes `env` into the plane's buffer for NATS.
    fn encode(&mut self, env: &Envelope<'_>) -> Option<Vec<u8>> {
        let len = pinwheel_ipc::wire::encoded_len(env, &mut self.scratch).ok()?;
        self.encoded.clear();
        self.encoded.resize(len, 0);
        let written =
            pinwheel_ipc::wire::encode_into(env, self.encoded.as_mut_slice(), &mut self.scratch)
                .ok()?;
        Some(self.encoded[..written].to_vec())
    }

    /// Hands `env` to the executor of `env.to`; false (counted by the
    /// caller) when there is none or its downlink is full.
    fn deliver(&mut self, env: &Envelope<'_>) -> bool {
        let executor = usize::from(self.routes.executor_of(env.to));
        self.downlinks
            .get_mut(executor)
            .is_some_and(|ring| ring.try_send(env).is_ok())
    }
}

/// The plane's task: runs until the link stops.
pub(super) async fn task(
    shared: Arc<Shared>,
    plane: CallPlane,
    mut incoming: async_nats::Subscriber,
) {
    let CallPlane {
        routes,
        rings,
        stats,
    } = plane;
    let CallRings {
        mut uplinks,
        downlinks,
        wake,
    } = rings;
    let mut plane = Plane {
        shared,
        routes,
        downlinks,
        stats,
        outgoing: Outgoing::default(),
        inbound: Inbound::new(MAX_REMOTE_IN_FLIGHT),
        aligned: AlignedVec::new(),
        encoded: AlignedVec::new(),
        scratch: Box::new(Scratch::new()),
    };
    let mut pending: FuturesUnordered<Pending> = FuturesUnordered::new();
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = wake.notified() => {
                for uplink in &mut uplinks {
                    for _ in 0..UPLINK_BATCH {
                        match uplink.try_recv(<[u8]>::to_vec) {
                            Ok(Some(frame)) => plane.on_uplink(frame, &mut pending).await,
                            Ok(None) | Err(_) => break,
                        }
                    }
                }
                // Frames left behind a full batch: come back at once.
                if uplinks.iter().any(|u| u.backlog() > 0) {
                    wake.notify_one();
                }
            }
            Some((id, result)) = pending.next(), if !pending.is_empty() => {
                plane.finish(id, result);
            }
            msg = incoming.next() => match msg {
                Some(msg) => plane.serve(msg).await,
                None => return,
            },
            () = plane.shared.peers_changed.notified() => plane.peers_changed(),
            _ = sweep.tick() => plane.sweep(),
        }
    }
}

impl Plane {
    /// A frame an executor sent up: a call to another host, a one-way
    /// message, or a local agent's reply to another host's caller.
    async fn on_uplink(&mut self, frame: Vec<u8>, pending: &mut FuturesUnordered<Pending>) {
        self.aligned.clear();
        self.aligned.extend_from_slice(&frame);
        let Ok(env) = pinwheel_ipc::wire::decode(&self.aligned) else {
            LinkStats::bump(&self.stats.bad);
            return;
        };
        let env = env.to_envelope();
        if env.to == crate::runtime::remote::PROXY {
            let (correlation, payload) = (env.correlation, env.payload);
            if let pinwheel_ipc::wire::Payload::Reply { status, body } = payload {
                let body = body.to_vec();
                self.answer(correlation, status, &body).await;
            }
            return;
        }
        let call = outgoing::Call::of(&env);
        self.call(call, frame, pending).await;
    }

    /// The link's peers changed: calls to hosts now lost are answered, and
    /// requests from them forgotten.
    fn peers_changed(&mut self) {
        self.fail_lost_hosts();
        self.drop_lost_callers();
    }
}
