//! The SDK an agent process links to talk to the pinwheel daemon over the
//! rings it hands the process.
//!
//! ```no_run
//! use std::time::Duration;
//! let agent = pinwheel_agent::Agent::from_env()?;
//! while let Some(request) = agent.recv(Duration::from_secs(1))? {
//!     let body = request.body().to_vec();
//!     for callee in agent.calls() {
//!         agent.call(callee, request.method(), &body, Duration::from_secs(1))?;
//!     }
//!     request.reply(0, &body)?;
//! }
//! # Ok::<(), pinwheel_agent::AgentError>(())
//! ```
//!
//! Attaching ([`Agent::from_env`]): a process the daemon started (kind
//! `process`) finds its link on descriptor 3 (`PINWHEEL_AGENT_FD`) and its
//! name in `PINWHEEL_AGENT`; one started by something else (kind
//! `external`) connects to the attach socket (`PINWHEEL_AGENT_SOCKET`,
//! default `/run/pinwheel/agent.sock`), where the daemon checks its uid.
//! Either way it says hello (name, wire version, pid) and receives its
//! manifest facts (whom it may call, its topics, the host's method names)
//! and two rings: requests, replies and events come in on one, its calls,
//! replies and publications go out on the other.
//!
//! Blocking, thread-safe: an [`Agent`] is `Send + Sync` and cheap to
//! clone; [`Agent::recv`], [`Agent::call`] and [`Subscription::recv`] may
//! be used from several threads at once. One thread at a time reads the
//! ring and hands what it finds to whoever waits for it (a request to a
//! `recv`, a reply to its `call`, an event to its subscription); the
//! others wait on a condition variable. The reader parks by the wait
//! strategy the daemon's topology gives the agent's CPU class (carried in
//! the ring's handoff), on the ring's doorbell and the link together
//! (`park.rs`), so a daemon that goes away ends every wait with
//! [`AgentError::Disconnected`].
//!
//! Methods are strings on the API and numbers on the wire: the daemon
//! keeps one table for the host, sent with the facts; a name or number
//! not seen yet costs one question on the link, once.
//!
//! Drills ([`FaultSpec`]): the daemon tells the agent on its link when an
//! operator puts it under one (`pinwheel fault Name --slow 10x`), and
//! [`Request::reply`] applies it (slowed, failed or withheld replies), so
//! a drill on an agent process means what it means on a synthetic agent.
//!
//! GPU models: [`Agent::model`] asks the daemon's VRAM optimizer for a
//! model the manifest names and returns a [`ModelGuard`] that holds it
//! resident until dropped (`model.rs`). How a drill shapes a reply is
//! `drill.rs`; subscriptions are `topic.rs`.
//!
//! Trust: the daemon's frames are checked (bytecheck) like any peer's,
//! and nothing in them can make the SDK panic.
//!
//! With the `async` feature, [`AsyncAgent`] offers the same as futures
//! that need no particular runtime (a reader thread wakes them).

mod agent;
mod attach;
mod drill;
#[cfg(feature = "async")]
mod future;
mod inbox;
mod model;
#[allow(unsafe_code)]
mod park;
mod pending;
mod topic;

use std::sync::Arc;

pub use agent::{Agent, Reply, Request, now_ns};
#[cfg(feature = "async")]
pub use future::AsyncAgent;
pub use model::{MODEL_WAIT, ModelGuard};
pub use park::PARK_ENV;
pub use pending::PendingCall;
pub use pinwheel_ipc::drill::{FaultSpec, STATUS_DRILL_ERROR};
pub use pinwheel_ipc::wire::WIRE_VERSION;
pub use topic::{Event, Subscription};

/// Errors of the SDK.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AgentError {
    /// The environment does not say how to reach the daemon.
    #[error("{reason}")]
    Environment {
        /// What is missing.
        reason: String,
    },
    /// The daemon refused the hello.
    #[error("the daemon refused this agent: {reason}")]
    Refused {
        /// The daemon's reason.
        reason: String,
    },
    /// The daemon closed the link (it stopped, or stopped this agent).
    #[error("the daemon closed the link")]
    Disconnected,
    /// The daemon said something this SDK does not understand.
    #[error("link protocol: {reason}")]
    Protocol {
        /// What was wrong.
        reason: String,
    },
    /// The manifest does not let this agent do that.
    #[error("{reason}")]
    NotAllowed {
        /// What, and which manifest field allows it.
        reason: String,
    },
    /// The daemon refused a model use.
    #[error("the daemon refused model {model}: {reason}")]
    ModelDenied {
        /// The model asked for.
        model: String,
        /// The daemon's reason.
        reason: String,
    },
    /// No answer in time.
    #[error("no reply within {waited_ms} ms")]
    Timeout {
        /// How long it waited, milliseconds.
        waited_ms: u64,
    },
    /// The outgoing ring stayed full.
    #[error("the ring to the daemon stayed full")]
    Full,
    /// A ring or the link failed.
    #[error("ring or link: {reason}")]
    Ring {
        /// What failed.
        reason: Arc<str>,
    },
}

impl AgentError {
    pub(crate) fn link(err: pinwheel_ipc::ring::RingError) -> Self {
        match err {
            pinwheel_ipc::ring::RingError::PeerGone => AgentError::Disconnected,
            pinwheel_ipc::ring::RingError::Full => AgentError::Full,
            pinwheel_ipc::ring::RingError::Timeout { waited } => AgentError::Timeout {
                waited_ms: waited.as_millis() as u64,
            },
            other => AgentError::Ring {
                reason: other.to_string().into(),
            },
        }
    }
}
