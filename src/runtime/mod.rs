//! The thread-per-core runtime: pinned executors and their placement.
//!
//! So far: `affinity`, pinning threads to CPUs and reading the current CPU,
//! used by the benchmarks.

#[allow(unsafe_code)]
pub mod affinity;
