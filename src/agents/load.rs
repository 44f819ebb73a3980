//! The load generator: the mesh's users, driving its entry points.
//!
//! Requests go to the request coordinator at a fixed rate, open loop: the
//! n-th request is due at `start + n / rate` whatever happened to earlier
//! ones, and `senders` tasks take due times in turn, so up to `senders`
//! requests are in flight. A request's end-to-end latency is measured from
//! its due time, not from when a sender got to it, so a stalled mesh shows
//! up in the percentiles instead of silently lowering the rate
//! (coordinated omission). Every request ends as completed, failed or
//! timed out; the report's `sent` minus those three is what was lost.
//!
//! The generator also counts what it was asked to send. When the runtime
//! starts draining, every due time up to that moment that no sender had
//! taken yet is `not_sent`: all [`SENDERS`] were waiting for answers, so
//! a mesh that cannot keep up shows as unsent requests rather than as a
//! quietly lower rate. `offered` is `sent` plus `not_sent`: the due times
//! before the drain, less those a free sender was still waiting on (due
//! within a timer's lateness of the drain), which the drain cancelled.
//! Each request belongs to one of [`SESSIONS`] sessions, in turn (the
//! mesh's users, each coming back every `SESSIONS` requests); its trace
//! carries the session, so its calls to a `consistent_hash` agent stick to
//! the session's replica along the whole flow.
//!
//! Stream sources (`stream_hz` in a manifest: the audio capture) get one
//! frame per period, each carrying a voice [`Trace`] stamped with its due
//! time, which the coordinator uses to measure the voice path end to end.
//!
//! The generator stops taking due times once the runtime drains; requests
//! already sent are waited for by the drain.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::future::{join, join_all};

use super::protocol::{METHOD_FRAME, METHOD_WORK, TRACE_BYTES, Trace};
use crate::runtime::RuntimeError;
use crate::runtime::agent::Agent;
use crate::runtime::ctx::Ctx;
use crate::runtime::node::{STATUS_OK, STATUS_TIMEOUT};
use pinwheel_ipc::wire::{AgentId, Priority};

/// Requests in flight at most.
pub const SENDERS: usize = 256;
/// Sessions the requests take turns in.
pub const SESSIONS: u64 = 64;

/// What the generator drives.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Requests a second (0: none).
    pub rate_per_s: f64,
    /// Where requests go (the coordinator), if anywhere.
    pub requests_to: Option<AgentId>,
    /// Stream sources and their frames a second.
    pub streams: Vec<(AgentId, u32)>,
    /// Each request's and frame's deadline.
    pub timeout: Duration,
}

/// Stream frames, for the daemon's report.
#[derive(Debug, Default)]
pub struct StreamCounters {
    /// Frames sent.
    pub sent: AtomicU64,
    /// Frames the source answered OK.
    pub completed: AtomicU64,
}

/// The load generator.
#[derive(Debug)]
pub struct LoadGenerator {
    spec: LoadSpec,
    counters: Arc<StreamCounters>,
    next: Cell<u64>,
}

impl LoadGenerator {
    /// A generator driving what `spec` says.
    pub fn new(spec: LoadSpec, counters: Arc<StreamCounters>) -> Self {
        Self {
            spec,
            counters,
            next: Cell::new(0),
        }
    }

    /// Takes the next due time and its request's number; `None` once
    /// draining.
    async fn next_due(&self, ctx: &Ctx, start_ns: u64, period_ns: f64) -> Option<(u64, u64)> {
        let n = self.next.get();
        self.next.set(n + 1);
        let due = start_ns + (n as f64 * period_ns) as u64;
        let now = ctx.now_ns();
        let on_time = due <= now || ctx.pause(Duration::from_nanos(due - now)).await;
        (on_time && !ctx.draining()).then_some((due, n))
    }

    /// One sender: requests until the runtime drains.
    async fn send_requests(&self, ctx: Ctx, to: AgentId, start_ns: u64) {
        let period_ns = 1e9 / self.spec.rate_per_s;
        let mut buf = [0; TRACE_BYTES];
        while let Some((due, n)) = self.next_due(&ctx, start_ns, period_ns).await {
            let trace = Trace::new(due, false).with_session(n % SESSIONS);
            let body = trace.encode(&mut buf);
            ctx.stats().update_requests(|r| r.sent += 1);
            let outcome = ctx
                .call(to, METHOD_WORK, body, Priority::Normal, self.spec.timeout)
                .await;
            let status = outcome.as_ref().map(|reply| reply.head().code);
            match status {
                Ok(STATUS_OK) => {
                    ctx.stats().record_e2e(ctx.now_ns().saturating_sub(due));
                    ctx.stats().update_requests(|r| r.completed += 1);
                }
                Ok(STATUS_TIMEOUT) | Err(RuntimeError::TimedOut) => {
                    ctx.stats().update_requests(|r| r.timed_out += 1);
                }
                Ok(_) | Err(_) => ctx.stats().update_requests(|r| r.failed += 1),
            }
        }
    }

    /// Waits for the drain, then records how many requests were offered:
    /// those sent, and those due before the drain that no sender took.
    /// Senders send nothing once the drain is raised, so `sent` is final
    /// here.
    async fn count_offered(&self, ctx: &Ctx, start_ns: u64) {
        while ctx.pause(Duration::from_secs(3_600)).await {}
        let period_ns = 1e9 / self.spec.rate_per_s;
        let elapsed = ctx.now_ns().saturating_sub(start_ns) as f64;
        let due = (elapsed / period_ns).floor() as u64 + 1;
        let not_sent = due.saturating_sub(self.next.get());
        ctx.stats()
            .update_requests(|r| r.offered = r.sent + not_sent);
    }

    /// Frames to one stream source until the runtime drains.
    async fn send_frames(&self, ctx: Ctx, to: AgentId, hz: u32, start_ns: u64) {
        let period_ns = 1e9 / f64::from(hz);
        let mut buf = [0; TRACE_BYTES];
        let mut n = 0u64;
        while !ctx.draining() {
            let due = start_ns + (n as f64 * period_ns) as u64;
            n += 1;
            let now = ctx.now_ns();
            if due > now && !ctx.pause(Duration::from_nanos(due - now)).await {
                break;
            }
            let body = Trace::new(due, true).encode(&mut buf);
            // SYNC: Relaxed; report counters, read after the join.
            self.counters.sent.fetch_add(1, Ordering::Relaxed);
            let reply = ctx
                .call(
                    to,
                    METHOD_FRAME,
                    body,
                    Priority::Critical,
                    self.spec.timeout,
                )
                .await;
            if reply.is_ok_and(|r| r.head().code == STATUS_OK) {
                // SYNC: as above.
                self.counters.completed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl Agent for LoadGenerator {
    async fn run(&self, ctx: &Ctx) {
        let start_ns = ctx.now_ns();
        let senders = match self.spec.requests_to {
            Some(_) if self.spec.rate_per_s > 0.0 => SENDERS,
            _ => 0,
        };
        let to = self.spec.requests_to.unwrap_or(ctx.me());
        let requests = (0..senders).map(|_| self.send_requests(ctx.fork(), to, start_ns));
        let offered = async {
            if senders > 0 {
                self.count_offered(ctx, start_ns).await;
            }
        };
        let streams = self
            .spec
            .streams
            .iter()
            .map(|&(source, hz)| self.send_frames(ctx.fork(), source, hz, start_ns));
        join(join(join_all(requests), join_all(streams)), offered).await;
    }
}
