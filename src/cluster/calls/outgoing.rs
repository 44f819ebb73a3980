//! The caller's side of the call plane: a call from an executor becomes a
//! NATS request to the callee's host; its reply, or the reason it got
//! none, goes back down the caller's executor's downlink.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::{HeaderMap, Request, RequestErrorKind};
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;

use super::{BUDGET_HEADER, DEFAULT_BUDGET, HOST_BREAKER, MAX_BUDGET, MAX_REMOTE_IN_FLIGHT, Plane};
use crate::cluster::link::{LinkStats, lock};
use crate::cluster::peers::liveness;
use crate::runtime::breaker::{Admission, CircuitBreaker};
use crate::runtime::ctx::now_ns;
use crate::runtime::node::{STATUS_FAILED, STATUS_OVERLOADED, STATUS_TIMEOUT, STATUS_UNAVAILABLE};
use pinwheel_ipc::wire::{AgentId, Envelope, Payload, PayloadKind, Priority, TopicId};

/// A request on its way: its id and what NATS answered.
pub(super) type Pending =
    BoxFuture<'static, (u64, Result<async_nats::Message, async_nats::RequestError>)>;

/// What the caller's side keeps of a call: enough to answer its caller.
#[derive(Debug, Clone)]
pub(super) struct Call {
    from: AgentId,
    to: AgentId,
    correlation: u64,
    priority: Priority,
    sent_ns: u64,
    deadline_ns: u64,
    kind: PayloadKind,
}

impl Call {
    /// The call `env` makes.
    pub fn of(env: &Envelope<'_>) -> Call {
        Call {
            from: env.from,
            to: env.to,
            correlation: env.correlation,
            priority: env.priority,
            sent_ns: env.sent_ns,
            deadline_ns: env.deadline_ns,
            kind: env.payload.kind(),
        }
    }

    /// The reply to this call with `status` and `body`.
    fn reply<'b>(&self, status: u16, body: &'b [u8]) -> Envelope<'b> {
        Envelope {
            from: self.to,
            to: self.from,
            topic: TopicId::NONE,
            correlation: self.correlation,
            priority: self.priority,
            sent_ns: self.sent_ns,
            deadline_ns: self.deadline_ns,
            payload: Payload::Reply { status, body },
        }
    }
}

/// Calls in flight, and a breaker per remote host.
#[derive(Debug, Default)]
pub(super) struct Outgoing {
    calls: HashMap<u64, (String, Call)>,
    next: u64,
    breakers: HashMap<String, CircuitBreaker>,
}

impl Plane {
    /// Sends `call` (whose frame is `frame`) to its host, or answers it at
    /// once when it cannot be sent.
    pub(super) async fn call(
        &mut self,
        call: Call,
        frame: Vec<u8>,
        pending: &mut FuturesUnordered<Pending>,
    ) {
        let Some((host, subject)) = self.subject_of(call.to) else {
            LinkStats::bump(&self.stats.failed);
            return self.answer_caller(&call, STATUS_FAILED);
        };
        if call.kind != PayloadKind::Request {
            match self.shared.client.publish(subject, frame.into()).await {
                Ok(()) => LinkStats::bump(&self.stats.events_sent),
                Err(_) => LinkStats::bump(&self.stats.failed),
            }
            return;
        }
        let now = now_ns();
        let refusal = if liveness(&self.shared, &host) == Some(false) {
            Some((&self.stats.host_lost, STATUS_UNAVAILABLE))
        } else if self.outgoing.calls.len() >= MAX_REMOTE_IN_FLIGHT {
            Some((&self.stats.failed, STATUS_OVERLOADED))
        } else if call.deadline_ns != 0 && call.deadline_ns <= now {
            Some((&self.stats.timed_out, STATUS_TIMEOUT))
        } else {
            let breaker = self
                .outgoing
                .breakers
                .entry(host.clone())
                .or_insert_with(|| CircuitBreaker::new(HOST_BREAKER));
            match breaker.admit(now) {
                Admission::Rejected { .. } => Some((&self.stats.breaker_open, STATUS_UNAVAILABLE)),
                Admission::Allowed | Admission::Probe => None,
            }
        };
        if let Some((counter, status)) = refusal {
            LinkStats::bump(counter);
            return self.answer_caller(&call, status);
        }
        let budget = match call.deadline_ns {
            0 => DEFAULT_BUDGET,
            deadline => Duration::from_nanos(deadline - now).min(MAX_BUDGET),
        };
        let mut headers = HeaderMap::new();
        headers.insert(BUDGET_HEADER, budget.as_micros().to_string().as_str());
        let request = Request::new()
            .payload(frame.into())
            .headers(headers)
            .timeout(Some(budget));
        let id = self.outgoing.next;
        self.outgoing.next += 1;
        self.outgoing.calls.insert(id, (host, call));
        let client = self.shared.client.clone();
        pending.push(Box::pin(async move {
            (id, client.send_request(subject, request).await)
        }));
        LinkStats::bump(&self.stats.sent);
    }

    /// The host and subject of a call to `to`: the host the manifests
    /// name, unless the cluster registry has the agent only elsewhere.
    fn subject_of(&self, to: AgentId) -> Option<(String, String)> {
        let target = self.routes.remote().target(to)?;
        let registry = lock(&self.shared.registry);
        let listed = |host: &str| registry.contains_key(&format!("{host}.{}", target.name));
        let host = if listed(&target.host) {
            target.host.clone()
        } else {
            registry
                .values()
                .find(|r| r.agent == target.name && r.host != self.shared.config.host())
                .map_or_else(|| target.host.clone(), |r| r.host.clone())
        };
        drop(registry);
        let subject = self.shared.config.call_subject(&host, &target.name)?;
        Some((host, subject))
    }

    /// What NATS answered to call `id`.
    pub(super) fn finish(
        &mut self,
        id: u64,
        result: Result<async_nats::Message, async_nats::RequestError>,
    ) {
        // Gone: answered already, when its host was declared lost.
        let Some((host, call)) = self.outgoing.calls.remove(&id) else {
            return;
        };
        let now = now_ns();
        let breaker = self.outgoing.breakers.get_mut(&host);
        let msg = match result {
            Ok(msg) => {
                if let Some(breaker) = breaker {
                    breaker.on_success(now);
                }
                msg
            }
            Err(err) => {
                if let Some(breaker) = breaker {
                    breaker.on_failure(now);
                }
                let (counter, status) = match err.kind() {
                    RequestErrorKind::TimedOut => (&self.stats.timed_out, STATUS_TIMEOUT),
                    RequestErrorKind::NoResponders => (&self.stats.failed, STATUS_UNAVAILABLE),
                    _ => (&self.stats.failed, STATUS_FAILED),
                };
                LinkStats::bump(counter);
                return self.answer_caller(&call, status);
            }
        };
        self.aligned.clear();
        self.aligned.extend_from_slice(&msg.payload);
        let reply = pinwheel_ipc::wire::decode(&self.aligned)
            .ok()
            .and_then(|env| {
                let ours = env.kind() == PayloadKind::Reply
                    && env.to() == call.from
                    && env.correlation() == call.correlation;
                match env.payload.to_payload() {
                    Payload::Reply { status, body } if ours => Some((status, body)),
                    _ => None,
                }
            });
        let Some((status, body)) = reply else {
            LinkStats::bump(&self.stats.bad);
            return self.answer_caller(&call, STATUS_FAILED);
        };
        let env = call.reply(status, body);
        let executor = usize::from(self.routes.executor_of(env.to));
        let delivered = self.downlinks.get_mut(executor).map(|r| r.try_send(&env));
        let counter = match delivered {
            Some(Ok(())) => &self.stats.completed,
            _ => &self.stats.failed,
        };
        LinkStats::bump(counter);
    }

    /// Answers `call` with an error `status`, so its caller fails now.
    fn answer_caller(&mut self, call: &Call, status: u16) {
        if call.kind == PayloadKind::Request {
            let env = call.reply(status, &[]);
            if !self.deliver(&env) {
                LinkStats::bump(&self.stats.dropped_replies);
            }
        }
    }

    /// Answers every call in flight to a host now declared lost.
    pub(super) fn fail_lost_hosts(&mut self) {
        let lost: Vec<u64> = self
            .outgoing
            .calls
            .iter()
            .filter(|(_, (host, _))| liveness(&self.shared, host) == Some(false))
            .map(|(id, _)| *id)
            .collect();
        for id in lost {
            if let Some((_, call)) = self.outgoing.calls.remove(&id) {
                LinkStats::bump(&self.stats.host_lost);
                self.answer_caller(&call, STATUS_UNAVAILABLE);
            }
        }
    }
}
