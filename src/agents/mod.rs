//! The agents the daemon runs: the parts of the seed system that pinwheel
//! runs itself instead of as separate processes, simulated stand-ins for
//! the rest, and the load that drives them.
//!
//! * [`registry`] replaces the seed's `ServiceRegistry` and
//!   `SystemDigitalTwin`: agent registration, discovery by name or id,
//!   health from heartbeats, and an atomically written snapshot so that a
//!   restarted daemon has the registry back at once (the seed kept it in
//!   SQLite and Redis, and losing either broke discovery for every agent).
//! * [`coordinator`] replaces the seed's `RequestCoordinator`: a priority
//!   queue of pending requests, a circuit breaker and a bulkhead per
//!   downstream, retries with backoff inside the request's deadline.
//! * [`synthetic`] stands in for every other agent of the seed: a service
//!   time drawn from the manifest's distribution, then its calls and
//!   publications, as the seed's flows make them.
//! * [`load`] is the mesh's users: requests into the coordinator at a
//!   rate, frames into the audio capture stream.
//! * [`protocol`] is what they say to each other; [`mesh`] builds them all
//!   from the manifests and is the one agent type the runtime runs.
//!
//! The decision logic of the native agents (`registry::Registry`,
//! `coordinator::CoordinatorPolicy` and their parts) is sans-IO and
//! single-threaded: time comes in as `now_ns`, randomness from a caller's
//! RNG, and tests drive it directly. Their `agent` files connect that logic
//! to the runtime. Steady-state calls (lookup, heartbeat, admit, push, pop,
//! retry decisions) never allocate: every structure is sized when it is
//! built.

pub mod coordinator;
pub mod load;
pub mod mesh;
pub mod protocol;
pub mod registry;
pub mod synthetic;

pub use coordinator::{
    Admission, AfterCall, BreakerConfig, BreakerState, Bulkhead, CallOutcome, CircuitBreaker,
    CoordinatorError, CoordinatorPolicy, Decision, DownstreamConfig, DownstreamId, GiveUpReason,
    Jitter, Permit, Popped, RejectReason, RequestQueue, RetryPolicy, Ticket,
};
pub use registry::{
    Entry, Health, HealthThresholds, Record, RegisterOutcome, Registry, RegistryConfig,
    RegistryError,
};
