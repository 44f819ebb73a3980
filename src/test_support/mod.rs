//! Shared test fixtures, behind the `test-support` feature (tests enable it
//! through the crate's dev-dependency on itself).
//!
//! * [`CountingAlloc`]: a global allocator that counts the allocations of
//!   one thread, for tests that prove a path allocates nothing per message.
//! * [`NatsServer`]: a real `nats-server` on a free loopback port, for the
//!   cluster tests.
//! * [`daemon::TestDaemon`]: `pinwheel run` in a subprocess, for the
//!   agent-process tests.
//! * [`traces::generate`]: the VRAM traces of `tests/fixtures/traces/`,
//!   from the seed's agent manifests.

#[allow(unsafe_code)]
mod alloc;
pub mod daemon;
mod nats;

pub use alloc::{Counting, CountingAlloc, allocations_during};
pub use nats::NatsServer;
pub mod traces;
