//! Shared test fixtures, behind the `test-support` feature (tests enable it
//! through the crate's dev-dependency on itself).
//!
//! * [`CountingAlloc`]: a global allocator that counts the allocations of
//!   one thread, for tests that prove a path allocates nothing per message.
//! * [`NatsServer`]: a real `nats-server` on a free loopback port, for the
//!   cluster tests.
//! * [`DaemonProcess`]: a `pinwheel run` child with its admin API on a
//!   free port, for tests that watch a running daemon from outside.
//! * [`process_daemon::TestDaemon`]: `pinwheel run` in a subprocess with
//!   its files in a temporary directory, for the agent-process tests.
//! * [`traces::generate`]: the VRAM traces of `tests/fixtures/traces/`,
//!   from the seed's agent manifests.
//! * [`control_runtime`]: a control runtime for tests that start executors
//!   without a daemon (their wake-up guard runs on it).
//! * [`runtime::boot`]: executors for a small plan with the test's own
//!   agents, started and with every phase open.

#[allow(unsafe_code)]
mod alloc;
mod daemon;
mod nats;
pub mod process_daemon;
pub mod runtime;

pub use alloc::{Counting, CountingAlloc, allocations_during};
pub use daemon::{DaemonProcess, HANG_GUARD};
pub use nats::{NatsCluster, NatsServer};
pub mod traces;

/// A control runtime shared by the tests of one binary, started on first
/// use and left running until the process exits (executors started with
/// it need it until they have stopped).
pub fn control_runtime() -> &'static tokio::runtime::Handle {
    static CONTROL: std::sync::OnceLock<crate::runtime::control::ControlRuntime> =
        std::sync::OnceLock::new();
    CONTROL
        .get_or_init(|| {
            crate::runtime::control::ControlRuntime::start(None, &Default::default())
                .expect("a control thread")
        })
        .handle()
}
