//! The thread-per-core runtime: one glommio executor per planned CPU, the
//! router between agents, and what it takes to run them.
//!
//! * `affinity`: pinning threads, reading the current CPU.
//! * `routes`: the routing table built from the plan.
//! * `balance`: which replica of a replicated agent a call goes to
//!   (pure; one balancer per service per executor).
//! * `board`, `desk`: the words the control side and the executors share
//!   while the mesh runs (replica states, drills), and the model-use desk
//!   through which agents ask the VRAM optimizer for their models.
//! * `pool`, `inbox`, `pending`: an executor's frame buffers, agents'
//!   priority inboxes, and calls waiting for replies; all sized at boot.
//! * `node`: an executor's router (send, accept, fan-out, replies).
//! * `pump`: the task that drives an executor: drains its incoming rings,
//!   fires its timers and, when nothing is ready, holds the thread until
//!   the next message or due time.
//! * `timers`, `tasks`: an executor's timers (fired by the pump, not by
//!   glommio's reactor) and its task census (which tasks are ready, so
//!   the pump knows when it may hold the thread); `watch`: other rings its
//!   tasks wait on (a process agent's), which the pump parks on too.
//! * `agent`, `ctx`, `worker`, `supervisor`: what an agent is to the
//!   runtime, its handle on it, the task that runs its handler, and the
//!   restart policy.
//! * `stats`: what each executor measures; `offcpu`: the stretches its
//!   thread was awake and yet did not run (the host's, the kernel's).
//! * `breaker`: the circuit breaker the coordinator puts before each
//!   downstream and the cluster link before each remote host.
//! * `remote`: calls to agents on other hosts: their ids, and the rings
//!   that hand them to the control runtime and bring their replies back.
//! * `executor`: starting, phasing and stopping the executors; `duties`:
//!   an executor's ticker, agent launchers and drain.
//! * `control`: the one control thread (a current-thread tokio runtime on
//!   the control CPU) and the tasks that run on it; `guard`: the wake-up
//!   guard, one of them, kept while glommio loses timer wake-ups;
//!   `interrupt`: its last resort, a signal that ends a stuck executor's
//!   wait.
//! * `privileges`: what the daemon asks of the kernel at boot (locked
//!   memory) and on each executor thread (SCHED_FIFO, timer slack), and
//!   how it runs without them.

#[allow(unsafe_code)]
pub mod affinity;
pub mod agent;
pub mod balance;
pub mod board;
pub mod breaker;
pub mod clock;
pub mod control;
pub mod ctx;
pub mod desk;
mod duties;
pub mod executor;
pub mod guard;
pub mod inbox;
#[allow(unsafe_code)]
pub mod interrupt;
pub mod layout;
pub mod legacy;
pub mod node;
pub mod offcpu;
pub mod pending;
pub mod pool;
pub mod privileges;
pub mod pump;
pub mod relay;
pub mod remote;
pub mod routes;
pub mod stats;
pub mod supervisor;
pub mod tasks;
#[cfg(test)]
pub(crate) mod test_waker;
pub mod timers;
pub mod watch;
pub mod worker;

use crate::topology::CpuId;
use pinwheel_ipc::ring::RingError;
use pinwheel_ipc::wire::{AgentId, WireError};

/// Errors of the runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The destination agent does not run on this host.
    #[error("no route to agent {} on this host", to.0)]
    NoRoute {
        /// The destination.
        to: AgentId,
    },
    /// The ring to the destination's executor is full.
    #[error("the ring to the destination is full")]
    Full,
    /// An inbox is full or the frame pool is empty.
    #[error("no room for the message: inbox full or frame pool empty")]
    Overloaded,
    /// An envelope could not be encoded.
    #[error("cannot encode a message: {source}")]
    Encode {
        /// The codec's error.
        source: Box<WireError>,
    },
    /// A frame on a ring is not a valid envelope.
    #[error("bad frame on a ring: {source}")]
    Decode {
        /// The codec's error.
        source: Box<WireError>,
    },
    /// A ring failed.
    #[error("ring: {source}")]
    Ring {
        /// The ring's error.
        source: RingError,
    },
    /// A call's deadline passed before its reply came.
    #[error("the call timed out")]
    TimedOut,
    /// Too many calls in flight on this executor.
    #[error("too many calls in flight on this executor")]
    Busy,
    /// The runtime is shutting down.
    #[error("the runtime is shutting down")]
    Closed,
    /// An agent's handler failed.
    #[error("handler failed: {reason}")]
    Failed {
        /// Why.
        reason: &'static str,
    },
    /// Every replica of a replicated agent is down, isolated or failing.
    #[error("no replica of agent {} can take calls now", to.0)]
    NoReplica {
        /// The agent called (its first replica).
        to: AgentId,
    },
    /// The VRAM optimizer refused an agent's model.
    #[error("the VRAM optimizer refused model {model}")]
    ModelDenied {
        /// The model's slot on the board.
        model: u16,
    },
    /// An executor could not start.
    #[error("executor on CPU {cpu} failed to start: {reason}")]
    Executor {
        /// Its CPU.
        cpu: CpuId,
        /// Why.
        reason: String,
    },
}
