//! The request coordinator's resilience logic, sans-IO: what the seed's
//! `RequestCoordinator` did around each downstream call, as pure decisions
//! the runtime asks for before and after the call.
//!
//! # From the seed
//!
//! | seed `RequestCoordinator` (Python, ZMQ REQ/REP)        | here |
//! |---------------------------------------------------------|------|
//! | `heapq` task queue, drained by one thread               | [`RequestQueue`]: fixed capacity, priority then deadline then FIFO |
//! | interrupt signals (`StreamingInterruptHandler`, SUB)     | [`crate::config::Priority::Critical`] jumps the queue |
//! | `CircuitBreaker` per downstream (`allow_request`, `reset_timeout`) | [`CircuitBreaker`], half-open probes bounded |
//! | no retries (audit: "no retry logic for failed downstream requests") | [`RetryPolicy`]: backoff with jitter, inside the deadline |
//! | `common/resiliency/bulkhead.py` semaphore, not applied to it | [`Bulkhead`] per downstream |
//! | `ZMQ_REQUEST_TIMEOUT = 5000` hard-coded                  | each request's own deadline, checked before every attempt |
//! | `send_request_to_agent()` around all of it              | [`CoordinatorPolicy::before_call`] / [`CoordinatorPolicy::after_call`] |
//!
//! The seed's breaker was guarded by a lock and read `time.time()`; here
//! each coordinator lives on one executor and is given `now_ns`, so there is
//! no lock and tests control time. The seed processed its queue on one
//! thread and blocked on each call; here the runtime keeps many calls in
//! flight, bounded per downstream by the bulkhead.
//!
//! # Use
//!
//! The runtime pushes a request into the [`RequestQueue`], pops it when it
//! has capacity ([`Popped::Expired`] ones are answered "timed out"), then
//! loops: [`CoordinatorPolicy::before_call`] says call, reject or give up;
//! after the call, [`CoordinatorPolicy::after_call`] says done, retry after
//! a delay, or give up. Nothing here allocates after construction.

mod agent;
mod bulkhead;
mod policy;
mod queue;
mod retry;

pub use agent::{CoordinatorAgent, CoordinatorConfig, CoordinatorCounters};
// The breaker lives in the runtime: the cluster link breaks calls to
// other hosts with it too.
pub use crate::runtime::breaker::{Admission, BreakerConfig, BreakerState, CircuitBreaker};
pub use bulkhead::{Bulkhead, Permit};
pub use policy::{
    AfterCall, CallOutcome, CoordinatorPolicy, Decision, DownstreamConfig, DownstreamId,
    GiveUpReason, RejectReason, Ticket, deadline_from_wire,
};
pub use queue::{Popped, RequestQueue, priority_from_wire};
pub use retry::{Jitter, RetryPolicy};

/// Errors from the coordinator's policy: only misuse, since every
/// downstream failure is a decision, not an error.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// A downstream id outside `0..count`.
    #[error("downstream {id} does not exist; the coordinator has {count} downstreams (0..{count})")]
    UnknownDownstream {
        /// The id asked for.
        id: u16,
        /// How many downstreams there are.
        count: usize,
    },
    /// More downstreams than a [`DownstreamId`] can number.
    #[error("{count} downstreams given; at most 65536 can be numbered")]
    TooManyDownstreams {
        /// How many were given.
        count: usize,
    },
}
