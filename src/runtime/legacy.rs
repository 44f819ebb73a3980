//! What the legacy ZeroMQ edge shares with the rest of the daemon, here so
//! that the registries (on executors), `/v1/agents`, `/metrics` and the
//! run report read it without knowing the gateway:
//!
//! * [`LegacyStats`]: the gateway thread's counters and latencies, per
//!   port it binds and per `zmq` agent it calls. Counters are relaxed
//!   atomics; each latency histogram sits behind its own mutex, locked by
//!   the gateway for one record per request and by a reader for a copy.
//! * [`LegacyBook`]: the seed's discovery data. The endpoints the
//!   manifests give (each agent's legacy port on the gateway's address, and
//!   each `zmq` agent's endpoint), and the seed agents that registered
//!   themselves (`register_agent`) with a native registry, at most
//!   [`MAX_REGISTERED`] of them.
//!
//! * [`SeedReply`]: the seed's reply object, which the gateway writes and
//!   the registries answer legacy actions with.
//!
//! None is on the ring hot path: the gateway records once per legacy
//! request, and a registry writes the book once per registration.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::latency::{LatencySummary, new_histogram, record_ns};

/// A reply in the seed's contract: `{"status": "success" | "error",
/// "message": .., "data": ..}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SeedReply {
    /// `success` or `error`.
    pub status: String,
    /// What happened, in words.
    pub message: String,
    /// The result.
    pub data: serde_json::Value,
}

impl SeedReply {
    /// A success reply with `data`.
    pub fn success(message: impl Into<String>, data: serde_json::Value) -> Self {
        SeedReply {
            status: "success".to_owned(),
            message: message.into(),
            data,
        }
    }

    /// An error reply saying `message`.
    pub fn error(message: impl Into<String>) -> Self {
        SeedReply {
            status: "error".to_owned(),
            message: message.into(),
            data: serde_json::Value::Null,
        }
    }

    /// The reply as JSON bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a seed reply is plain data")
    }
}

/// Most seed agents a host's registries keep registered.
pub const MAX_REGISTERED: usize = 1024;

/// What a gateway port carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortKind {
    /// The seed's REQ/REP contract (a ROUTER socket).
    Rep,
    /// The agent's topics (a PUB socket).
    Pub,
}

/// A latency histogram one thread records into and others copy.
#[derive(Debug)]
pub struct SharedHistogram(Mutex<Histogram<u64>>);

impl Default for SharedHistogram {
    fn default() -> Self {
        SharedHistogram(Mutex::new(new_histogram()))
    }
}

impl SharedHistogram {
    /// Records `ns`.
    pub fn record(&self, ns: u64) {
        if let Ok(mut histogram) = self.0.lock() {
            record_ns(&mut histogram, ns);
        }
    }

    /// A copy.
    pub fn snapshot(&self) -> Histogram<u64> {
        self.0
            .lock()
            .map_or_else(|_| new_histogram(), |histogram| histogram.clone())
    }
}

/// Bumps a statistics counter.
pub fn bump(counter: &AtomicU64) {
    // SYNC: Relaxed; statistics counters, read by the view and the
    // report, which may lag by a few increments.
    counter.fetch_add(1, Ordering::Relaxed);
}

fn get(counter: &AtomicU64) -> u64 {
    // SYNC: Relaxed, as in `bump`.
    counter.load(Ordering::Relaxed)
}

/// One port the gateway binds.
#[derive(Debug)]
pub struct PortStats {
    /// The port.
    pub port: u16,
    /// The agent it stands for.
    pub agent: String,
    /// What it carries.
    pub kind: PortKind,
    /// Requests taken (REP), or messages published (PUB).
    pub messages: AtomicU64,
    /// Requests answered with an error (bad input, timeouts, agents'
    /// errors), or messages not published.
    pub errors: AtomicU64,
    /// Of the errors, requests refused for bad input before any agent saw
    /// them.
    pub refused: AtomicU64,
    /// Request to reply, as the gateway saw it (REP).
    pub latency: SharedHistogram,
}

impl PortStats {
    /// A port's counters, at zero.
    pub fn new(port: u16, agent: String, kind: PortKind) -> Self {
        PortStats {
            port,
            agent,
            kind,
            messages: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            latency: SharedHistogram::default(),
        }
    }

    /// Its counters now.
    pub fn totals(&self) -> PortTotals {
        PortTotals {
            port: self.port,
            agent: self.agent.clone(),
            kind: self.kind,
            messages: get(&self.messages),
            errors: get(&self.errors),
            refused: get(&self.refused),
            latency_ns: LatencySummary::of(&self.latency.snapshot()),
        }
    }
}

/// One `zmq` agent the gateway calls.
#[derive(Debug)]
pub struct TargetStats {
    /// Its name.
    pub agent: String,
    /// Its REP endpoint.
    pub endpoint: String,
    /// Calls to it the gateway took.
    pub calls: AtomicU64,
    /// Calls answered with an error (its error replies, unavailable,
    /// overloaded, timed out).
    pub errors: AtomicU64,
    /// Of the errors, calls that timed out.
    pub timeouts: AtomicU64,
    /// Sockets replaced after a timeout.
    pub reconnects: AtomicU64,
    /// Call to reply.
    pub latency: SharedHistogram,
}

impl TargetStats {
    /// A target's counters, at zero.
    pub fn new(agent: String, endpoint: String) -> Self {
        TargetStats {
            agent,
            endpoint,
            calls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            latency: SharedHistogram::default(),
        }
    }

    /// Its counters now.
    pub fn totals(&self) -> TargetTotals {
        TargetTotals {
            agent: self.agent.clone(),
            endpoint: self.endpoint.clone(),
            calls: get(&self.calls),
            errors: get(&self.errors),
            timeouts: get(&self.timeouts),
            reconnects: get(&self.reconnects),
            latency_ns: LatencySummary::of(&self.latency.snapshot()),
        }
    }
}

/// The gateway's counters.
#[derive(Debug, Default)]
pub struct LegacyStats {
    /// Per port, in the order the gateway binds them.
    pub ports: Vec<PortStats>,
    /// Per `zmq` agent.
    pub targets: Vec<TargetStats>,
    /// Events from `zmq` agents' PUB sockets injected into the mesh.
    pub events_in: AtomicU64,
    /// Messages on an uplink the gateway could not use.
    pub bad: AtomicU64,
}

impl LegacyStats {
    /// Everything now.
    pub fn totals(&self) -> LegacyTotals {
        LegacyTotals {
            ports: self.ports.iter().map(PortStats::totals).collect(),
            targets: self.targets.iter().map(TargetStats::totals).collect(),
            events_in: get(&self.events_in),
            bad: get(&self.bad),
        }
    }
}

/// [`PortStats`] at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortTotals {
    /// The port.
    pub port: u16,
    /// The agent it stands for.
    pub agent: String,
    /// `rep` or `pub`.
    pub kind: PortKind,
    /// Requests taken, or messages published.
    pub messages: u64,
    /// Requests answered with an error, or messages not published.
    pub errors: u64,
    /// Of the errors, requests refused for bad input.
    pub refused: u64,
    /// Request to reply, ns.
    pub latency_ns: LatencySummary,
}

/// [`TargetStats`] at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetTotals {
    /// The `zmq` agent.
    pub agent: String,
    /// Its REP endpoint.
    pub endpoint: String,
    /// Calls the gateway took.
    pub calls: u64,
    /// Calls answered with an error.
    pub errors: u64,
    /// Of those, timeouts.
    pub timeouts: u64,
    /// Sockets replaced after a timeout.
    pub reconnects: u64,
    /// Call to reply, ns.
    pub latency_ns: LatencySummary,
}

/// [`LegacyStats`] at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LegacyTotals {
    /// Per port.
    pub ports: Vec<PortTotals>,
    /// Per `zmq` agent.
    pub targets: Vec<TargetTotals>,
    /// Events from `zmq` agents injected into the mesh.
    pub events_in: u64,
    /// Uplink messages the gateway could not use.
    pub bad: u64,
}

/// A seed agent that registered itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    /// Its name.
    pub name: String,
    /// Where it listens (`tcp://host:port`).
    pub endpoint: String,
    /// The registry it registered with.
    pub registry: String,
}

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BookFull {
    /// [`MAX_REGISTERED`] agents are registered already.
    Full,
}

/// The seed's discovery data (see the module doc).
#[derive(Debug, Default)]
pub struct LegacyBook {
    known: Vec<(String, String)>,
    registered: Mutex<Vec<Registered>>,
}

impl LegacyBook {
    /// A book of the manifests' endpoints, `(name, tcp://host:port)`.
    pub fn new(known: Vec<(String, String)>) -> Self {
        LegacyBook {
            known,
            registered: Mutex::new(Vec::new()),
        }
    }

    /// Registers (or re-registers) `entry`.
    pub fn register(&self, entry: Registered) -> Result<(), BookFull> {
        let Ok(mut registered) = self.registered.lock() else {
            return Err(BookFull::Full);
        };
        if let Some(old) = registered.iter_mut().find(|r| r.name == entry.name) {
            *old = entry;
            return Ok(());
        }
        if registered.len() >= MAX_REGISTERED {
            return Err(BookFull::Full);
        }
        registered.push(entry);
        Ok(())
    }

    /// The endpoint of `name`: where it registered, else where the
    /// manifests put it.
    pub fn endpoint(&self, name: &str) -> Option<String> {
        let registered = self.registered.lock().ok().and_then(|r| {
            r.iter()
                .find(|r| r.name == name)
                .map(|r| r.endpoint.clone())
        });
        registered.or_else(|| {
            self.known
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, e)| e.clone())
        })
    }

    /// The agents that registered, in order.
    pub fn registered(&self) -> Vec<Registered> {
        self.registered
            .lock()
            .map_or_else(|_| Vec::new(), |r| r.clone())
    }

    /// The manifests' endpoints.
    pub fn known(&self) -> &[(String, String)] {
        &self.known
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, port: u16) -> Registered {
        Registered {
            name: name.to_owned(),
            endpoint: format!("tcp://10.0.0.9:{port}"),
            registry: "SystemDigitalTwin".to_owned(),
        }
    }

    #[test]
    fn a_registration_is_found_before_the_manifests_and_replaces_an_older_one() {
        let sut = LegacyBook::new(vec![("A".into(), "tcp://127.0.0.1:1".into())]);

        sut.register(entry("A", 2)).expect("room");
        sut.register(entry("A", 3)).expect("room");

        assert_eq!(sut.endpoint("A").as_deref(), Some("tcp://10.0.0.9:3"));
        assert_eq!(sut.registered().len(), 1);
        assert_eq!(sut.endpoint("B"), None);
    }

    #[test]
    fn the_book_refuses_agents_past_its_bound() {
        let sut = LegacyBook::default();
        for i in 0..MAX_REGISTERED {
            sut.register(entry(&format!("A{i}"), 1)).expect("room");
        }

        assert_eq!(sut.register(entry("one-more", 1)), Err(BookFull::Full));
        assert!(
            sut.register(entry("A0", 9)).is_ok(),
            "re-registering takes no room"
        );
    }
}
