//! The callee's side of the call plane: a request from another host goes
//! to its agent here as if [`PROXY`] called it; the agent's reply goes
//! back on the request's reply subject, rewritten to the caller's ids.
//!
//! Requests served are kept in a fixed table of [`MAX_REMOTE_IN_FLIGHT`]
//! slots; the correlation id the agent sees names the slot and its
//! generation, so a reply that comes after its slot was freed (budget
//! spent, caller's host lost) finds another generation and is dropped.

use std::time::{Duration, Instant};

use async_nats::Subject;

use super::{BUDGET_HEADER, DEFAULT_BUDGET, MAX_BUDGET, Plane};
use crate::cluster::link::LinkStats;
use crate::cluster::peers::liveness;
use crate::runtime::ctx::now_ns;
use crate::runtime::node::{STATUS_OVERLOADED, STATUS_UNAVAILABLE};
use crate::runtime::remote::PROXY;
use pinwheel_ipc::wire::{AgentId, Envelope, Payload, PayloadKind, Priority, TopicId};

/// A request from another host, being served here.
#[derive(Debug)]
struct Served {
    reply: Subject,
    caller: String,
    /// The caller's own ids and correlation, to answer with.
    from: AgentId,
    to: AgentId,
    correlation: u64,
    priority: Priority,
    sent_ns: u64,
    deadline_ns: u64,
    /// When the caller stops waiting (its budget, on this host's clock).
    expires: Instant,
}

/// The table of requests being served.
#[derive(Debug)]
pub(super) struct Inbound {
    slots: Vec<(u32, Option<Served>)>,
    free: Vec<u16>,
}

impl Inbound {
    /// A table of `capacity` slots (at most 65536).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.min(1 << 16);
        Inbound {
            slots: (0..capacity).map(|_| (0, None)).collect(),
            free: (0..capacity as u32).rev().map(|s| s as u16).collect(),
        }
    }

    fn insert(&mut self, served: Served) -> Option<u64> {
        let slot = self.free.pop()?;
        let entry = &mut self.slots[usize::from(slot)];
        entry.0 = entry.0.wrapping_add(1);
        entry.1 = Some(served);
        Some(u64::from(entry.0) << 16 | u64::from(slot))
    }

    fn take(&mut self, token: u64) -> Option<Served> {
        let slot = (token & 0xffff) as usize;
        let generation = (token >> 16) as u32;
        let entry = self.slots.get_mut(slot).filter(|e| e.0 == generation)?;
        let served = entry.1.take()?;
        self.free.push(slot as u16);
        Some(served)
    }

    /// Frees every slot `drop` picks; returns how many.
    fn drop_where(&mut self, mut drop: impl FnMut(&Served) -> bool) -> usize {
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

/// The caller's host and the agent of a call subject,
/// `pinwheel.<cluster>.call.<me>.<caller>.<agent...>`.
fn parse_subject(subject: &str) -> Option<(&str, &str)> {
    let mut parts = subject.splitn(6, '.');
    let caller = parts.nth(4)?;
    let agent = parts.next()?;
    Some((caller, agent))
}

/// The budget a request carries, bounded.
fn budget(msg: &async_nats::Message) -> Duration {
    msg.headers
        .as_ref()
        .and_then(|h| h.get(BUDGET_HEADER))
        .and_then(|v| v.as_str().parse::<u64>().ok())
        .map_or(DEFAULT_BUDGET, Duration::from_micros)
        .min(MAX_BUDGET)
}

impl Plane {
    /// A message from another host to one of this host's agents.
    pub(super) async fn serve(&mut self, msg: async_nats::Message) {
        // Decoded from a buffer taken out of the plane, so that the
        // envelope does not borrow the plane while it is answered.
        let mut aligned = std::mem::take(&mut self.aligned);
        aligned.clear();
        aligned.extend_from_slice(&msg.payload);
        match pinwheel_ipc::wire::decode(&aligned) {
            Ok(env) => self.serve_envelope(&msg, &env.to_envelope()).await,
            Err(_) => LinkStats::bump(&self.stats.bad),
        }
        self.aligned = aligned;
    }

    async fn serve_envelope(&mut self, msg: &async_nats::Message, env: &Envelope<'_>) {
        let Some((caller, agent)) = parse_subject(&msg.subject) else {
            return LinkStats::bump(&self.stats.bad);
        };
        let Some(local) = self.routes.remote().local(agent) else {
            LinkStats::bump(&self.stats.refused);
            return self.refuse(msg, env, STATUS_UNAVAILABLE).await;
        };
        let budget = budget(msg);
        let now = now_ns();
        let budget_ns = u64::try_from(budget.as_nanos()).unwrap_or(u64::MAX);
        let token = match (&msg.reply, env.payload.kind()) {
            (Some(reply), PayloadKind::Request) => self.inbound.insert(Served {
                reply: reply.clone(),
                caller: caller.to_owned(),
                from: env.from,
                to: env.to,
                correlation: env.correlation,
                priority: env.priority,
                sent_ns: env.sent_ns,
                deadline_ns: env.deadline_ns,
                expires: Instant::now() + budget,
            }),
            // A one-way message (or a request nobody waits for).
            _ => Some(0),
        };
        let Some(token) = token else {
            LinkStats::bump(&self.stats.refused);
            return self.refuse(msg, env, STATUS_OVERLOADED).await;
        };
        let forwarded = Envelope {
            from: PROXY,
            to: local,
            topic: TopicId::NONE,
            correlation: token,
            sent_ns: now,
            deadline_ns: now.saturating_add(budget_ns),
            ..*env
        };
        if self.deliver(&forwarded) {
            LinkStats::bump(&self.stats.served);
        } else {
            let _ = self.inbound.take(token);
            LinkStats::bump(&self.stats.refused);
            self.refuse(msg, env, STATUS_OVERLOADED).await;
        }
    }

    /// Answers a request from another host with `status` at once.
    async fn refuse(&mut self, msg: &async_nats::Message, env: &Envelope<'_>, status: u16) {
        let (Some(reply), PayloadKind::Request) = (&msg.reply, env.payload.kind()) else {
            return;
        };
        let answer = Envelope {
            from: env.to,
            to: env.from,
            topic: TopicId::NONE,
            correlation: env.correlation,
            priority: env.priority,
            sent_ns: env.sent_ns,
            deadline_ns: env.deadline_ns,
            payload: Payload::Reply { status, body: &[] },
        };
        let reply = reply.clone();
        if let Some(bytes) = self.encode(&answer) {
            let _ = self.shared.client.publish(reply, bytes.into()).await;
        }
    }

    /// A local agent's reply to the request `token` names.
    pub(super) async fn answer(&mut self, token: u64, status: u16, body: &[u8]) {
        let Some(served) = self.inbound.take(token) else {
            return LinkStats::bump(&self.stats.dropped_replies);
        };
        if liveness(&self.shared, &served.caller) == Some(false) {
            return LinkStats::bump(&self.stats.dropped_replies);
        }
        let env = Envelope {
            from: served.to,
            to: served.from,
            topic: TopicId::NONE,
            correlation: served.correlation,
            priority: served.priority,
            sent_ns: served.sent_ns,
            deadline_ns: served.deadline_ns,
            payload: Payload::Reply { status, body },
        };
        let Some(bytes) = self.encode(&env) else {
            return LinkStats::bump(&self.stats.dropped_replies);
        };
        match self.shared.client.publish(served.reply, bytes.into()).await {
            Ok(()) => LinkStats::bump(&self.stats.answered),
            Err(_) => LinkStats::bump(&self.stats.dropped_replies),
        }
    }

    /// Forgets requests whose caller stopped waiting.
    pub(super) fn sweep(&mut self) {
        let now = Instant::now();
        let dropped = self.inbound.drop_where(|s| s.expires <= now);
        self.stats
            .dropped_replies
            .fetch_add(dropped as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Forgets requests from hosts now declared lost: their replies are
    /// dropped, not delivered late.
    pub(super) fn drop_lost_callers(&mut self) {
        let shared = &self.shared;
        let dropped = self
            .inbound
            .drop_where(|s| liveness(shared, &s.caller) == Some(false));
        // SYNC: Relaxed: a statistics counter, as in `LinkStats::bump`.
        self.stats
            .dropped_replies
            .fetch_add(dropped as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(caller: &str) -> Served {
        Served {
            reply: Subject::from("r"),
            caller: caller.to_owned(),
            from: AgentId(1),
            to: AgentId(2),
            correlation: 9,
            priority: Priority::Normal,
            sent_ns: 0,
            deadline_ns: 0,
            expires: Instant::now(),
        }
    }

    #[test]
    fn a_token_finds_its_request_once_and_a_reused_slot_refuses_the_old_token() {
        let mut sut = Inbound::new(1);

        let first = sut.insert(served("a")).expect("room");
        let full = sut.insert(served("b"));
        let taken = sut.take(first).map(|s| s.caller);
        let second = sut.insert(served("c")).expect("room again");

        assert_eq!(full, None);
        assert_eq!(taken.as_deref(), Some("a"));
        assert_ne!(first, second);
        assert!(sut.take(first).is_none(), "the old generation");
        assert_eq!(sut.take(second).map(|s| s.caller).as_deref(), Some("c"));
    }

    #[test]
    fn requests_from_one_caller_are_dropped_together() {
        let mut sut = Inbound::new(4);
        let a = sut.insert(served("lost")).expect("room");
        let b = sut.insert(served("live")).expect("room");

        let dropped = sut.drop_where(|s| s.caller == "lost");

        assert_eq!(dropped, 1);
        assert!(sut.take(a).is_none());
        assert!(sut.take(b).is_some());
    }

    #[test]
    fn a_call_subject_names_the_caller_then_the_agent_with_its_dots() {
        assert_eq!(
            parse_subject("pinwheel.home.call.pc2.mainpc.Memory.Service"),
            Some(("mainpc", "Memory.Service"))
        );
        assert_eq!(parse_subject("pinwheel.home.call.pc2"), None);
    }
}
