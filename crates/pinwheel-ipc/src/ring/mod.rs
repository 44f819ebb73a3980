//! Single-producer single-consumer rings of variable-length frames in
//! shared memory: pinwheel's transport between the daemon's cores and with
//! agent processes outside it.
//!
//! A ring is a memfd (or, for tests, heap memory) holding a control block
//! and a power-of-two number of 64-byte slots; see `layout.rs` for the
//! layout and the index protocol, `sync.rs` for atomics and doorbells,
//! `shm.rs` for the memfd, `wait.rs` for the consumer's wait strategies
//! (`idle.rs` for the idle time a real-time waiter owes the CPU, `thread.rs`
//! for what it asks the kernel), `group.rs` for one thread waiting on many
//! rings, and `peer.rs` for handing a ring to another process.
//!
//! Handles. [`Producer`] and [`Consumer`] are unique (not `Clone`) and own
//! all unsafe access. A producer writes frames and publishes them in
//! batches ([`Producer::try_write`] then [`Producer::flush`], or
//! [`Producer::try_push`] for one frame); a full ring is explicit:
//! `try_*` returns [`RingError::Full`] and leaves the message with the
//! caller, [`Producer::push`] waits for space on a doorbell (with a
//! timeout), [`Producer::push_or_drop`] drops and counts. A consumer reads
//! frames ([`Consumer::try_recv`]) and waits per its [`WaitStrategy`]
//! ([`Consumer::wait`] on a thread, [`Consumer::wait_async`] on a glommio
//! executor).
//!
//! Trust follows who maps the memory, fixed when the ring is made. Rings
//! made by [`heap_ring`], [`shm_ring`] and [`shm_ring_into`] are mapped by
//! this process alone (the memfd is closed at once), so frames are encoded
//! and read in place and indices are trusted. Rings made to be handed over
//! ([`export_producer`], [`export_consumer`], and the ends a peer attaches
//! from a [`RingHandoff`]) are writable by the peer at any moment, on both
//! ends: no Rust reference is ever formed over their memory. Header fields
//! are atomics; frames are built in private staging memory and copied in,
//! and copied out to private memory before anything reads them, with
//! relaxed atomic word copies ordered by the `head`/`tail` protocol; every
//! index is checked, and a violation is [`RingError::Corrupt`].
//!
//! Nothing here allocates per message: the staging and copy buffers are
//! allocated once, at the ring's largest frame.

// Under `--cfg loom` the handles, memfd and peer code are left out and only
// the models (in tests) use the layout and sync primitives; the library
// build beside them would otherwise warn about every one of those items.
#![cfg_attr(loom, allow(dead_code, unused_imports))]

#[cfg(all(not(loom), feature = "glommio"))]
mod group;
#[cfg(not(loom))]
mod handle;
#[cfg(not(loom))]
mod idle;
#[cfg(all(not(loom), feature = "glommio"))]
mod lateness;
#[allow(unsafe_code)]
mod layout;
#[cfg(not(loom))]
mod peer;
#[cfg(not(loom))]
#[allow(unsafe_code)]
mod shm;
#[allow(unsafe_code)]
mod sync;
#[cfg(not(loom))]
#[allow(unsafe_code)]
mod thread;
#[cfg(not(loom))]
mod wait;

#[cfg(test)]
mod tests;

use std::time::Duration;

#[cfg(all(not(loom), feature = "glommio"))]
pub use group::{ConsumerGroup, GroupWake};
#[cfg(not(loom))]
pub use handle::{Consumer, DataBell, Producer, heap_ring, shm_ring, shm_ring_into};
pub use layout::{DATA_OFFSET, FRAME_HEADER_BYTES, SLOT_BYTES, frame_slots, ring_bytes};
#[cfg(not(loom))]
pub use peer::{
    PEER_FD, PEER_FD_ENV, PeerLink, RingHandoff, Role, export_consumer, export_consumer_into,
    export_producer,
};

/// How a consumer waits for the next message on its rings.
///
/// The topology file names one per CPU class (`wait = "adaptive"`); with
/// the `serde` feature it reads and writes as that lower-case word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum WaitStrategy {
    /// Busy-poll; lowest latency, burns the CPU.
    Spin,
    /// Sleep on an eventfd doorbell; no CPU when idle.
    Park,
    /// Spin for a budget that follows recent traffic, then park.
    Adaptive,
}

/// How a parking hook of [`Consumer::wait_with`] woke up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parked {
    /// The doorbell rang (its counter was read).
    Bell,
    /// The time ran out.
    Timeout,
    /// Something else needs the caller: stop waiting.
    Other,
}

/// The most slots a ring may have (64 MiB of frames).
pub const MAX_SLOTS: u64 = 1 << 20;

/// How a ring is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingConfig {
    /// Number of 64-byte slots; a power of two, at least 4.
    pub slots: u64,
    /// Largest frame payload, bytes; at most half the ring.
    pub max_frame: usize,
    /// How the consumer waits.
    pub wait: WaitStrategy,
    /// Longest spin before parking (adaptive) in microseconds.
    pub spin_us: u32,
}

impl RingConfig {
    /// Checks the numbers.
    pub fn validate(&self) -> Result<(), RingError> {
        let bad = |reason: String| Err(RingError::Config { reason });
        if !self.slots.is_power_of_two() || self.slots < 4 || self.slots > MAX_SLOTS {
            return bad(format!(
                "slots must be a power of two from 4 to {MAX_SLOTS}, not {}",
                self.slots
            ));
        }
        if self.max_frame == 0 || frame_slots(self.max_frame) > self.slots / 2 {
            let most = (self.slots / 2) as usize * SLOT_BYTES - FRAME_HEADER_BYTES;
            return bad(format!(
                "max_frame must be 1 to {most} bytes for {} slots, not {}",
                self.slots, self.max_frame
            ));
        }
        Ok(())
    }
}

/// Errors of rings.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    /// No room for the frame now; nothing was written.
    #[error("ring is full")]
    Full,
    /// The frame can never fit.
    #[error("frame of {len} bytes exceeds the ring's largest frame of {max} bytes")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The ring's limit.
        max: usize,
    },
    /// The peer broke the ring's protocol; disconnect it.
    #[error("peer corrupted the ring: {what} is {value:#x}, expected {expected}")]
    Corrupt {
        /// Which value.
        what: &'static str,
        /// What it was.
        value: u64,
        /// What it may be.
        expected: String,
    },
    /// A frame is not a valid envelope (or one could not be encoded).
    #[error("bad message on ring: {source}")]
    Message {
        /// What the codec found (boxed: the error path is rare and keeps
        /// every ring `Result` small enough to return in registers).
        source: Box<crate::wire::WireError>,
    },
    /// A wait ran out.
    #[error("timed out after {waited:?}")]
    Timeout {
        /// How long it waited.
        waited: Duration,
    },
    /// The peer process is gone (its control socket closed).
    #[error("peer process is gone")]
    PeerGone,
    /// What a peer sent to attach was unusable.
    #[error("bad ring handoff: {reason}")]
    Handoff {
        /// What was wrong.
        reason: String,
    },
    /// Bad ring configuration.
    #[error("bad ring configuration: {reason}")]
    Config {
        /// What was wrong.
        reason: String,
    },
    /// A system call failed.
    #[error("{what}: {source}")]
    Os {
        /// What was being done.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

/// Maps an I/O error to [`RingError::Os`].
#[cfg(not(loom))]
fn os(what: &'static str) -> impl FnOnce(std::io::Error) -> RingError {
    move |source| RingError::Os { what, source }
}

/// Counters of one ring end, kept by the end and read by its owner.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingStats {
    /// Frames written or read.
    pub frames: u64,
    /// Frames dropped by [`Producer::push_or_drop`].
    pub drops: u64,
    /// Doorbells this end rang to wake its peer.
    pub wakeups_sent: u64,
    /// Times this end parked on its doorbell.
    pub parks: u64,
}
