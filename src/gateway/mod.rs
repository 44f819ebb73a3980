//! The legacy ZeroMQ gateway: unchanged seed agents (Python, pyzmq,
//! JSON `{"action": ..}` over REQ/REP) and pinwheel's agents call each
//! other, both ways, while a deployment migrates.
//!
//! ```text
//!  legacy REQ clients ──▶ ROUTER :legacy_rep ─┐                      ┌─▶ executor i ─▶ agent
//!  legacy SUB clients ◀── PUB :legacy_pub ◀───┤  pinwheel-legacy     │   (downlink i)
//!                                             ├─ thread: zmq_poll ───┤
//!  zmq agents' REP    ◀── REQ (one per agent) ┤  over all of these   │◀── executor i's uplink
//!  zmq agents' PUB    ──▶ SUB ────────────────┘  and the eventfd     └── (calls, replies, events)
//! ```
//!
//! * **One machinery with the cluster link.** The gateway is a second
//!   remote plane ([`RemoteKind::Legacy`](crate::runtime::remote::RemoteKind)):
//!   each executor has an uplink to it and a downlink from it, as to the
//!   cluster link's call plane, and the router sends up a message whose
//!   target is a `zmq` agent or the [`GATEWAY`](crate::runtime::remote::GATEWAY)
//!   (a legacy client's requests come from it). Requests waiting for
//!   their agents live in the same token table.
//! * **Its own thread, never the data plane.** ZeroMQ sockets block and
//!   are not `Sync`, so they live on one thread, `pinwheel-legacy`, pinned
//!   beside the control runtime (the control CPU, or floating), which
//!   makes them, polls them and is the single producer of the downlinks.
//!   libzmq's I/O thread is started by it and inherits its CPUs.
//! * **The seed's contract** is `contract`: pure, and the only place that
//!   reads or writes the seed's JSON. **Untrusted input** is bounded at
//!   every step: message size (`[legacy] max_message_bytes`, 1 MiB by
//!   default, and the mesh's frame size), frames per message, requests
//!   waiting per port and in all, calls queued per `zmq` agent, new action
//!   names; each refusal is an error reply and a counter, never more.
//! * **Degrade, don't die.** A port that cannot be bound is reported (the
//!   daemon raises a health reason) and the rest runs; a `zmq` agent that
//!   is down costs its callers an `unavailable` answer, not their
//!   deadline.
//!
//! Files: `plan` (what to serve, pure), `contract`, `names` (the host's
//! method numbers), `inbound` (ROUTER ports), `outbound` (REQ to `zmq`
//! agents), `pubsub`, `poller` (the loop).

mod contract;
mod inbound;
mod names;
mod outbound;
mod plan;
mod poller;
mod pubsub;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use nix::sys::eventfd::EventFd;
use tracing::{info, warn};

pub use self::contract::{MAX_ACTION_BYTES, SeedReply};
pub use self::names::{MAX_NEW_ACTIONS, MethodNames};
pub use self::plan::{GatewayPlan, PubPort, RepPort, ZmqTarget};

use self::inbound::{Inbound, Rep};
use self::names::Names;
use self::outbound::Outbound;
use self::poller::{Edge, Sides};
use self::pubsub::{Pub, PubSub, Sub};
use crate::runtime::legacy::{LegacyStats, PortKind, PortStats, TargetStats};
use crate::runtime::remote::CallRings;
use crate::runtime::routes::Routes;
use crate::topology::CpuId;

/// The gateway thread's name.
pub const GATEWAY_THREAD: &str = "pinwheel-legacy";
/// How long a ROUTER socket may take to flush its last replies at stop.
const ROUTER_LINGER_MS: i32 = 200;
/// Clients queued on a port before the ROUTER drops their messages.
const ROUTER_HWM: i32 = 10_000;
/// A message past this many times the limit closes its connection
/// (`ZMQ_MAXMSGSIZE`) instead of getting an error reply.
const HARD_LIMIT_FACTOR: usize = 4;

/// Errors of the gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The thread could not be started.
    #[error("the legacy gateway's thread could not start: {source}")]
    Thread {
        /// Why.
        source: std::io::Error,
    },
    /// Its wake-up eventfd could not be made.
    #[error("the legacy gateway's eventfd: {reason}")]
    EventFd {
        /// Why.
        reason: String,
    },
    /// The thread ended before it was up.
    #[error("the legacy gateway's thread ended while starting")]
    Gone,
}

/// A fresh, non-blocking eventfd for the gateway's uplinks to poke.
pub fn wake_fd() -> Result<Arc<EventFd>, GatewayError> {
    use nix::sys::eventfd::EfdFlags;
    EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
        .map(Arc::new)
        .map_err(|errno| GatewayError::EventFd {
            reason: errno.to_string(),
        })
}

/// What the gateway needs to start.
pub struct GatewayParts {
    /// What it serves.
    pub plan: GatewayPlan,
    /// Its ends of the executors' legacy call rings.
    pub rings: CallRings<EventFd>,
    /// The routing table.
    pub routes: Arc<Routes>,
    /// The host's method table.
    pub names: Box<dyn MethodNames>,
    /// The CPU its thread is pinned to; `None` floats.
    pub cpu: Option<CpuId>,
}

/// The running gateway.
#[derive(Debug)]
pub struct Gateway {
    stop: Arc<AtomicBool>,
    wake: Arc<EventFd>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<LegacyStats>,
}

impl Gateway {
    /// Starts the gateway's thread, which binds its ports and connects to
    /// the `zmq` agents before this returns. Returns the gateway and the
    /// ports it could not bind, each with the reason.
    pub fn start(parts: GatewayParts) -> Result<(Gateway, Vec<String>), GatewayError> {
        let stats = Arc::new(stats_of(&parts.plan));
        let stop = Arc::new(AtomicBool::new(false));
        let wake = Arc::clone(&parts.rings.wake);
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let thread = {
            let (stats, stop, wake) = (Arc::clone(&stats), Arc::clone(&stop), Arc::clone(&wake));
            std::thread::Builder::new()
                .name(GATEWAY_THREAD.into())
                .spawn(move || run(parts, &stats, &stop, &wake, &ready_tx))
                .map_err(|source| GatewayError::Thread { source })?
        };
        let problems = ready_rx.recv().map_err(|_| GatewayError::Gone)?;
        Ok((
            Gateway {
                stop,
                wake,
                thread: Some(thread),
                stats,
            },
            problems,
        ))
    }

    /// Its counters.
    pub fn stats(&self) -> Arc<LegacyStats> {
        Arc::clone(&self.stats)
    }

    /// Answers what still waits and stops the thread. Call it after the
    /// executors drained, so that their calls to `zmq` agents finished.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        // SYNC: Release pairs with the Acquire load in `poller::serve`.
        self.stop.store(true, Ordering::Release);
        let _ = self.wake.write(1);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            warn!("the legacy gateway's thread panicked");
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Counters for every port and target of `plan`, in the order the
/// thread makes them: REP ports, PUB ports, then targets.
fn stats_of(plan: &GatewayPlan) -> LegacyStats {
    let reps = plan
        .reps
        .iter()
        .map(|r| PortStats::new(r.port, r.name.clone(), PortKind::Rep));
    let pubs = plan
        .pubs
        .iter()
        .map(|p| PortStats::new(p.port, p.name.clone(), PortKind::Pub));
    LegacyStats {
        ports: reps.chain(pubs).collect(),
        targets: plan
            .targets
            .iter()
            .map(|t| TargetStats::new(t.name.clone(), t.endpoint.clone()))
            .collect(),
        ..LegacyStats::default()
    }
}

/// The thread: pin, make the sockets, report, serve.
fn run(
    parts: GatewayParts,
    stats: &Arc<LegacyStats>,
    stop: &AtomicBool,
    wake: &EventFd,
    ready: &mpsc::SyncSender<Vec<String>>,
) {
    if let Some(cpu) = parts.cpu
        && let Err(err) = crate::runtime::affinity::pin_current_thread(cpu)
    {
        warn!(cpu = cpu.0, error = %err, "legacy gateway not pinned; it floats");
    }
    let GatewayParts {
        plan,
        rings,
        routes,
        names,
        ..
    } = parts;
    // Made here, after pinning: libzmq's I/O thread inherits the CPUs.
    let context = zmq::Context::new();
    let (sides, problems) = sides(&context, plan);
    let _ = ready.send(problems);
    let edge = Edge {
        routes,
        downlinks: rings.downlinks,
        names: Names::new(names),
        stats: Arc::clone(stats),
    };
    poller::serve(sides, edge, rings.uplinks, wake, stop);
    info!("legacy gateway stopped");
}

/// Every socket of `plan`; the ports that could not be bound.
fn sides(context: &zmq::Context, plan: GatewayPlan) -> (Sides, Vec<String>) {
    let mut problems = Vec::new();
    let hard_limit = plan.max_message_bytes.saturating_mul(HARD_LIMIT_FACTOR);
    let mut reps = Vec::new();
    for (stats, port) in plan.reps.iter().enumerate() {
        let address = plan.address(port.port).unwrap_or_default();
        let socket = context.socket(zmq::ROUTER).and_then(|s| {
            s.set_linger(ROUTER_LINGER_MS)?;
            s.set_rcvhwm(ROUTER_HWM)?;
            s.set_sndhwm(ROUTER_HWM)?;
            s.set_maxmsgsize(i64::try_from(hard_limit).unwrap_or(i64::MAX))?;
            s.bind(&address)?;
            Ok(s)
        });
        match socket {
            Ok(socket) => {
                info!(agent = %port.name, %address, "legacy rep port bound");
                reps.push(Rep::new(socket, port.clone(), stats));
            }
            Err(err) => problems.push(format!("{address} ({}): {err}", port.name)),
        }
    }
    let mut pubs = Vec::new();
    for (i, port) in plan.pubs.iter().enumerate() {
        let address = plan.address(port.port).unwrap_or_default();
        let socket = context.socket(zmq::PUB).and_then(|s| {
            s.set_linger(0)?;
            s.bind(&address)?;
            Ok(s)
        });
        match socket {
            Ok(socket) => pubs.push(Pub::new(socket, port.clone(), plan.reps.len() + i)),
            Err(err) => problems.push(format!("{address} ({}): {err}", port.name)),
        }
    }
    let mut subs = Vec::new();
    for target in &plan.targets {
        match Sub::connect(context, target) {
            Some(Ok(sub)) => subs.push(sub),
            Some(Err(err)) => problems.push(format!("SUB to {}: {err}", target.name)),
            None => {}
        }
    }
    let sides = Sides {
        inbound: Inbound::new(reps, plan.max_message_bytes, plan.timeout),
        outbound: Outbound::new(context, plan.targets, plan.max_message_bytes, plan.timeout),
        pubsub: PubSub::new(pubs, subs),
    };
    (sides, problems)
}
