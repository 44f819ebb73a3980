//! The callee's side of the call plane: a request from another host goes
//! to its agent here as if [`PROXY`] called it; the agent's reply goes
//! back on the request's reply subject, rewritten to the caller's ids.
//!
//! Requests served are kept in a fixed table of [`MAX_REMOTE_IN_FLIGHT`]
//! slots ([`Tokens`], shared with the legacy gateway); the correlation id
//! the agent sees names the slot and its generation, so a reply that comes
//! after its slot was freed (budget spent, caller's host lost) finds
//! another generation and is dropped.

use std::time::{Duration, Instant};

use async_nats::Subject;

use super::{BUDGET_HEADER, DEFAULT_BUDGET, MAX_BUDGET, Plane};
use crate::cluster::link::LinkStats;
use crate::cluster::peers::liveness;
use crate::runtime::ctx::now_ns;
use crate::runtime::node::{STATUS_OVERLOADED, STATUS_UNAVAILABLE};
use crate::runtime::remote::{PROXY, Tokens};
use pinwheel_ipc::wire::{AgentId, Envelope, Payload, PayloadKind, Priority, TopicId};

/// A request from another host, being served here.
#[derive(Debug)]
pub(super) struct Served {
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
pub(super) type Inbound = Tokens<Served>;

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

    #[test]
    fn a_call_subject_names_the_caller_then_the_agent_with_its_dots() {
        assert_eq!(
            parse_subject("pinwheel.home.call.pc2.mainpc.Memory.Service"),
            Some(("mainpc", "Memory.Service"))
        );
        assert_eq!(parse_subject("pinwheel.home.call.pc2"), None);
    }
}
