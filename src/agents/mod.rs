//! Native agents: the parts of the seed system that pinwheel runs itself
//! instead of as separate processes.
//!
//! * [`registry`] replaces the seed's `ServiceRegistry` and
//!   `SystemDigitalTwin`: agent registration, discovery by name or id,
//!   health from heartbeats, and an atomically written snapshot so that a
//!   restarted daemon has the registry back at once (the seed kept it in
//!   SQLite and Redis, and losing either broke discovery for every agent).
//! * [`coordinator`] replaces the resilience logic of the seed's
//!   `RequestCoordinator`: a circuit breaker and a bulkhead per downstream,
//!   retries with backoff inside the request's deadline, and the priority
//!   queue of pending requests.
//!
//! Everything here is sans-IO and single-threaded. Time comes in as `now_ns`
//! (`CLOCK_MONOTONIC` nanoseconds), randomness from a caller's RNG; nothing
//! spawns threads, sleeps or touches the network. The runtime drives these
//! types from its glommio tasks, one instance per executor, so nothing here
//! locks. The only I/O is [`registry::Registry::save`] and
//! [`registry::Registry::load`], which the runtime calls off the hot path.
//!
//! Steady-state calls (lookup, heartbeat, health, admit, acquire, push, pop,
//! retry decisions) never allocate: every structure is sized when it is
//! built.

pub mod coordinator;
pub mod registry;

pub use coordinator::{
    Admission, AfterCall, BreakerConfig, BreakerState, Bulkhead, CallOutcome, CircuitBreaker,
    CoordinatorError, CoordinatorPolicy, Decision, DownstreamConfig, DownstreamId, GiveUpReason,
    Jitter, Permit, Popped, RejectReason, RequestQueue, RetryPolicy, Ticket,
};
pub use registry::{
    Entry, Health, HealthThresholds, Record, RegisterOutcome, Registry, RegistryConfig,
    RegistryError,
};
