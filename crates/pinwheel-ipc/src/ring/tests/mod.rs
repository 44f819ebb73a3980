//! The ring conformance suite, run against every way a ring is built (heap
//! memory, a memfd, a memfd handed to an untrusted consumer) in one thread
//! and across two threads; `tests/ring_process.rs` runs it across two
//! processes. Hostile peers: `hostile.rs` (writes between calls, proptest)
//! and `scribble.rs` (writes while both ends run); `reach.rs` checks that
//! only in-process rings are reached in place. The loom models live in
//! `loom_*.rs` beside this file.

#[cfg(loom)]
mod loom_doorbell;
#[cfg(loom)]
mod loom_index;

#[cfg(not(loom))]
mod conformance;
#[cfg(all(not(loom), feature = "glommio"))]
mod group;
#[cfg(not(loom))]
mod hostile;
#[cfg(not(loom))]
mod reach;
#[cfg(not(loom))]
mod scribble;
