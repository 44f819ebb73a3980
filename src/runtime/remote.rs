//! Calls that leave the data plane, the data plane's side: which ids stand
//! for agents on other hosts (carried by the cluster link) and for legacy
//! ZeroMQ agents (carried by the legacy gateway), and the rings that carry
//! them to their plane and bring the answers back.
//!
//! ```text
//!  executor i ──Uplink (SPSC ring + Notify)──▶ control runtime: cluster call plane ──▶ NATS
//!  executor i ◀═downlink (SPSC ring, i's bell)═ control runtime ◀── NATS
//!  executor i ──Uplink (SPSC ring + eventfd)──▶ legacy gateway thread ──▶ ZeroMQ
//!  executor i ◀═downlink (SPSC ring, i's bell)═ legacy gateway thread ◀── ZeroMQ
//! ```
//!
//! * **Two planes, one machinery.** Each plane ([`RemoteKind`]) gives
//!   every executor its own uplink and downlink ([`call_rings`]); the
//!   router sends a message whose target has no executor up the uplink
//!   of the target's kind ([`RemoteTable::kind_of`]). The planes differ
//!   only in how an uplink wakes its consumer: the cluster plane is a
//!   task on the control runtime and parks on a `Notify`; the gateway is
//!   a thread in `zmq_poll`, which polls an eventfd beside its sockets.
//!
//! * **Ids.** A call target on another host keeps its id in the agent set
//!   when its manifest is loaded here (both hosts load the same files);
//!   a `Name@host` whose manifest is not loaded gets an id from
//!   [`REMOTE_BASE`] up. [`PROXY`] is the sender of every request that
//!   arrives from another host: a local agent's reply to it goes up the
//!   uplink like a call. A `zmq` agent keeps its id too, on whatever host
//!   its manifest names (its endpoint is a network address the gateway
//!   here reaches), and [`GATEWAY`] is the sender of every request from a
//!   legacy ZeroMQ client.
//! * **Uplink.** One SPSC ring per executor into the control runtime, plus
//!   a `tokio::sync::Notify` the producer pokes after each frame: the
//!   control task parks on the notify, not on the ring, so it never spins
//!   and never misses a frame (a poke with no waiter is kept as a permit).
//!   Encoding goes straight into the ring, as between executors: nothing
//!   is allocated per call on the data plane, and a full ring is
//!   backpressure ([`RingError::Full`]), never a wait.
//! * **Downlink.** One ring per executor from the control runtime, rung on
//!   the executor's own bell: to the executor it is one more incoming
//!   ring, drained by its pump like the others. Replies complete the
//!   caller's pending call (in-daemon callers); requests from other hosts
//!   queue at their agent like local ones.
//!
//! What it does not do: talk to NATS (the cluster link's call plane does),
//! or decide where a name lives beyond the manifests (the call plane
//! consults the cluster registry).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::sys::eventfd::EventFd;
use tokio::sync::Notify;

use super::RuntimeError;
use crate::config::{AgentKind, AgentSet, CallTarget};
use crate::plan::Plan;
use pinwheel_ipc::ring::{
    Consumer, DataBell, Producer, RingConfig, RingError, WaitStrategy, heap_ring, shm_ring_into,
};
use pinwheel_ipc::wire::{AgentId, Envelope};

/// The id of the sender of every request from another host.
pub const PROXY: AgentId = AgentId(u32::MAX - 1);
/// The id of the sender of every request from a legacy ZeroMQ client.
pub const GATEWAY: AgentId = AgentId(u32::MAX - 2);

/// Which plane carries a message that leaves the data plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RemoteKind {
    /// To another host: the cluster link's call plane.
    Host = 0,
    /// To a legacy ZeroMQ agent or client: the legacy gateway.
    Legacy = 1,
}
/// The first id of the `Name@host` targets whose manifest is not loaded.
pub const REMOTE_BASE: u32 = 1 << 30;
/// Slots of each uplink and downlink ring (frames are at most
/// [`MAX_FRAME`](super::layout::MAX_FRAME)).
pub const CALL_RING_SLOTS: u64 = 1024;

/// Counters of the cluster link's call plane (what crossed hosts), here
/// so that the report and `/metrics` read them without knowing the link.
#[derive(Debug, Default)]
pub struct CallStats {
    /// Calls sent to other hosts.
    pub sent: AtomicU64,
    /// Replies from other hosts delivered to their callers.
    pub completed: AtomicU64,
    /// Calls that timed out.
    pub timed_out: AtomicU64,
    /// Calls answered at once because their host was declared lost.
    pub host_lost: AtomicU64,
    /// Calls refused by an open breaker.
    pub breaker_open: AtomicU64,
    /// Calls that failed otherwise: no responders, a transport error, a
    /// bad reply, no room.
    pub failed: AtomicU64,
    /// One-way messages sent to other hosts.
    pub events_sent: AtomicU64,
    /// Requests from other hosts handed to a local agent.
    pub served: AtomicU64,
    /// Replies to other hosts published.
    pub answered: AtomicU64,
    /// Requests from other hosts refused (no such agent, no room).
    pub refused: AtomicU64,
    /// Replies not sent: the caller's host was lost, or the budget ran out.
    pub dropped_replies: AtomicU64,
    /// Messages from other hosts that failed their checks.
    pub bad: AtomicU64,
}

/// [`CallStats`] at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CallTotals {
    /// Calls sent to other hosts.
    pub sent: u64,
    /// Replies delivered to their callers.
    pub completed: u64,
    /// Calls that timed out.
    pub timed_out: u64,
    /// Calls answered at once because their host was lost.
    pub host_lost: u64,
    /// Calls refused by an open breaker.
    pub breaker_open: u64,
    /// Calls that failed otherwise.
    pub failed: u64,
    /// One-way messages sent.
    pub events_sent: u64,
    /// Requests from other hosts served.
    pub served: u64,
    /// Replies to other hosts published.
    pub answered: u64,
    /// Requests from other hosts refused.
    pub refused: u64,
    /// Replies dropped for a lost caller or a spent budget.
    pub dropped_replies: u64,
    /// Messages that failed their checks.
    pub bad: u64,
}

impl CallTotals {
    /// Calls that got no reply from their callee: timed out, lost with
    /// their host, refused by a breaker, or failed in transport.
    pub fn lost(&self) -> u64 {
        self.timed_out + self.host_lost + self.breaker_open + self.failed
    }
}

impl CallStats {
    /// The counters now.
    pub fn totals(&self) -> CallTotals {
        // SYNC: Relaxed: statistics counters, incremented Relaxed by the
        // call plane; a reading may lag by a few increments.
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CallTotals {
            sent: get(&self.sent),
            completed: get(&self.completed),
            timed_out: get(&self.timed_out),
            host_lost: get(&self.host_lost),
            breaker_open: get(&self.breaker_open),
            failed: get(&self.failed),
            events_sent: get(&self.events_sent),
            served: get(&self.served),
            answered: get(&self.answered),
            refused: get(&self.refused),
            dropped_replies: get(&self.dropped_replies),
            bad: get(&self.bad),
        }
    }
}

/// An agent agents here call that no executor here runs: on another
/// host, or a legacy ZeroMQ agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteTarget {
    /// The id calls to it carry.
    pub id: AgentId,
    /// Its host, as the manifests say.
    pub host: String,
    /// Its name there.
    pub name: String,
    /// Which plane carries calls to it.
    pub kind: RemoteKind,
}

/// The remote targets of a plan, and this host's agents by name.
#[derive(Debug, Clone, Default)]
pub struct RemoteTable {
    targets: Vec<RemoteTarget>,
    by_id: HashMap<u32, usize>,
    calls: HashMap<u32, Vec<AgentId>>,
    local: HashMap<String, AgentId>,
    legacy_publishers: Vec<bool>,
}

impl RemoteTable {
    /// The table of `plan`'s calls to agents it does not run.
    pub fn new(plan: &Plan, agents: &AgentSet) -> Self {
        let mut table = RemoteTable::default();
        for route in plan.remote_routes() {
            let mut kind = RemoteKind::Host;
            let (id, host, name) = match &route.to {
                CallTarget::Local(index) => {
                    let spec = agents.get(*index);
                    if spec.kind() == AgentKind::Zmq {
                        kind = RemoteKind::Legacy;
                    }
                    (AgentId(index.0 as u32), spec.host(), spec.name())
                }
                CallTarget::Remote { name, host } => {
                    let known = table
                        .targets
                        .iter()
                        .find(|t| &t.host == host && &t.name == name)
                        .map(|t| t.id);
                    let next = AgentId(REMOTE_BASE + table.targets.len() as u32);
                    (known.unwrap_or(next), host.as_str(), name.as_str())
                }
            };
            if host == plan.host() && kind == RemoteKind::Host {
                continue;
            }
            if !table.by_id.contains_key(&id.0) {
                table.by_id.insert(id.0, table.targets.len());
                table.targets.push(RemoteTarget {
                    id,
                    host: host.to_owned(),
                    name: name.to_owned(),
                    kind,
                });
            }
            table.calls.entry(route.from.0 as u32).or_default().push(id);
        }
        for p in plan.placements() {
            let name = agents.get(p.agent).name().to_owned();
            table.local.insert(name, AgentId(p.agent.0 as u32));
        }
        table.legacy_publishers = agents
            .iter()
            .map(|(_, a)| a.kind() != AgentKind::Zmq && a.legacy().publish().is_some())
            .collect();
        table
    }

    /// Whether events of `agent` also go to the gateway (it has a legacy
    /// PUB port).
    pub fn publishes_legacy(&self, agent: AgentId) -> bool {
        self.legacy_publishers
            .get(agent.0 as usize)
            .copied()
            .unwrap_or(false)
    }

    /// The remote target `id` stands for.
    pub fn target(&self, id: AgentId) -> Option<&RemoteTarget> {
        self.by_id.get(&id.0).map(|&i| &self.targets[i])
    }

    /// The plane a message to `id` leaves by, if it leaves the data
    /// plane: a remote target's, the cluster link for the proxy of another
    /// host's caller, the gateway for a legacy client's.
    pub fn kind_of(&self, id: AgentId) -> Option<RemoteKind> {
        match id {
            PROXY => Some(RemoteKind::Host),
            GATEWAY => Some(RemoteKind::Legacy),
            _ => self.target(id).map(|t| t.kind),
        }
    }

    /// This host's agent named `name`.
    pub fn local(&self, name: &str) -> Option<AgentId> {
        self.local.get(name).copied()
    }

    /// The remote targets agent `agent` calls.
    pub fn calls(&self, agent: AgentId) -> &[AgentId] {
        self.calls.get(&agent.0).map_or(&[], Vec::as_slice)
    }

    /// Every remote target.
    pub fn targets(&self) -> &[RemoteTarget] {
        &self.targets
    }
}

/// What an uplink pokes after each frame, so that its plane wakes: a
/// `Notify` a control-runtime task parks on (the cluster plane), or a
/// non-blocking eventfd a polling thread watches beside its sockets (the
/// gateway).
pub trait Poke: std::fmt::Debug + Send + Sync {
    /// Wakes the plane; a poke nobody waits for is kept for its next wait.
    fn poke(&self);
}

impl Poke for Notify {
    fn poke(&self) {
        self.notify_one();
    }
}

impl Poke for EventFd {
    fn poke(&self) {
        // A counter at its maximum is still readable, and a non-blocking
        // write then fails with EAGAIN: the poller wakes either way.
        let _ = self.write(1);
    }
}

/// A fixed table of requests a plane serves for callers outside the data
/// plane (another host's, a legacy client's): the correlation id the
/// agent sees is a token naming the slot and its generation, so a reply
/// that comes after its slot was freed (the caller stopped waiting) finds
/// another generation and is dropped.
#[derive(Debug)]
pub struct Tokens<T> {
    slots: Vec<(u32, Option<T>)>,
    free: Vec<u16>,
}

impl<T> Tokens<T> {
    /// A table of `capacity` slots (at most 65536).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.min(1 << 16);
        Tokens {
            slots: (0..capacity).map(|_| (0, None)).collect(),
            free: (0..capacity as u32).rev().map(|s| s as u16).collect(),
        }
    }

    /// Keeps `entry`; its token, or `None` when the table is full.
    pub fn insert(&mut self, entry: T) -> Option<u64> {
        let slot = self.free.pop()?;
        let (generation, held) = &mut self.slots[usize::from(slot)];
        *generation = generation.wrapping_add(1);
        *held = Some(entry);
        Some(u64::from(*generation) << 16 | u64::from(slot))
    }

    /// The entry of `token`, once; `None` for a token of a freed slot.
    pub fn take(&mut self, token: u64) -> Option<T> {
        let slot = (token & 0xffff) as usize;
        let generation = (token >> 16) as u32;
        let entry = self.slots.get_mut(slot).filter(|e| e.0 == generation)?;
        let taken = entry.1.take()?;
        self.free.push(slot as u16);
        Some(taken)
    }

    /// The entry of `token`, if it is still held.
    pub fn get(&self, token: u64) -> Option<&T> {
        let slot = (token & 0xffff) as usize;
        let generation = (token >> 16) as u32;
        self.slots
            .get(slot)
            .filter(|e| e.0 == generation)
            .and_then(|e| e.1.as_ref())
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Frees every slot `drop` picks; returns how many.
    pub fn drop_where(&mut self, mut drop: impl FnMut(&T) -> bool) -> usize {
        let mut dropped = 0;
        for (slot, entry) in self.slots.iter_mut().enumerate() {
            if entry.1.as_ref().is_some_and(&mut drop) {
                entry.1 = None;
                self.free.push(slot as u16);
                dropped += 1;
            }
        }
        dropped
    }
}

/// An executor's end of one plane's uplink: calls (and replies to other
/// hosts' or legacy clients' callers) into that plane.
#[derive(Debug)]
pub struct Uplink {
    producer: Producer,
    wake: Arc<dyn Poke>,
}

impl Uplink {
    /// Encodes `env` into the ring and wakes the plane; a full ring is
    /// [`RingError::Full`], the message left with the caller.
    pub fn send(&mut self, env: &Envelope<'_>) -> Result<(), RingError> {
        self.producer.try_send(env)?;
        self.wake.poke();
        Ok(())
    }
}

/// One plane's ends of every executor's call rings.
#[derive(Debug)]
pub struct CallRings<W = Notify> {
    /// Each executor's uplink, by executor index.
    pub uplinks: Vec<Consumer>,
    /// Each executor's downlink, by executor index.
    pub downlinks: Vec<Producer>,
    /// What the uplinks poke.
    pub wake: Arc<W>,
}

/// An executor's uplinks, by [`RemoteKind`] (`None`: that plane is off).
pub type Uplinks = [Option<Uplink>; 2];

/// The executors' ends: each one's uplink, and the downlink consumer it
/// adds to its incoming rings.
pub type ExecutorEnds = Vec<(Uplink, Consumer)>;

/// One plane's call rings for executors whose bells are `bells`; each
/// uplink pokes `wake`.
pub fn call_rings<W: Poke + 'static>(
    bells: &[DataBell],
    wake: Arc<W>,
) -> Result<(ExecutorEnds, CallRings<W>), RuntimeError> {
    let ring = |source| RuntimeError::Ring { source };
    let config = RingConfig {
        slots: CALL_RING_SLOTS,
        max_frame: super::layout::MAX_FRAME,
        // The control side never waits on an uplink's doorbell (it parks
        // on the Notify); the executor waits on its bell as it does for
        // every incoming ring.
        wait: WaitStrategy::Park,
        spin_us: 0,
    };
    let mut ends = Vec::with_capacity(bells.len());
    let mut rings = CallRings {
        uplinks: Vec::with_capacity(bells.len()),
        downlinks: Vec::with_capacity(bells.len()),
        wake: Arc::clone(&wake),
    };
    for bell in bells {
        let (up_tx, up_rx) = heap_ring(config).map_err(ring)?;
        let (down_tx, down_rx) = shm_ring_into(config, bell).map_err(ring)?;
        ends.push((
            Uplink {
                producer: up_tx,
                wake: Arc::clone(&wake) as Arc<dyn Poke>,
            },
            down_rx,
        ));
        rings.uplinks.push(up_rx);
        rings.downlinks.push(down_tx);
    }
    Ok((ends, rings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_finds_its_entry_once_and_a_reused_slot_refuses_the_old_token() {
        let mut sut = Tokens::new(1);

        let first = sut.insert("a").expect("room");
        let full = sut.insert("b");
        let taken = sut.take(first);
        let second = sut.insert("c").expect("room again");

        assert_eq!(full, None);
        assert_eq!(taken, Some("a"));
        assert_ne!(first, second);
        assert!(sut.take(first).is_none(), "the old generation");
        assert_eq!(sut.get(second), Some(&"c"));
        assert_eq!(sut.take(second), Some("c"));
        assert!(sut.is_empty());
    }

    #[test]
    fn entries_picked_together_are_dropped_together() {
        let mut sut = Tokens::new(4);
        let a = sut.insert("lost").expect("room");
        let b = sut.insert("live").expect("room");

        let dropped = sut.drop_where(|s| *s == "lost");

        assert_eq!(dropped, 1);
        assert!(sut.take(a).is_none());
        assert!(sut.take(b).is_some());
    }
}
