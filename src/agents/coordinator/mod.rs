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
//!
//! The seed's breaker was guarded by a lock and read `time.time()`; here
//! each coordinator lives on one executor and is given `now_ns`, so there is
//! no lock and tests control time. The seed processed its queue on one
//! thread and blocked on each call; here the runtime keeps many calls in
//! flight, bounded per downstream by the bulkhead.

mod breaker;
mod bulkhead;
mod queue;
mod retry;

pub use breaker::{Admission, BreakerConfig, BreakerState, CircuitBreaker};
pub use bulkhead::{Bulkhead, Permit};
pub use queue::{Popped, RequestQueue, priority_from_wire};
pub use retry::{Jitter, RetryPolicy};
