//! The thread-per-core runtime: pinned executors and their placement.
//!
//! So far: `affinity`, pinning threads to CPUs, reading the current CPU and
//! setting a thread's scheduling policy; and `privileges`, what the daemon
//! asks of the kernel at boot (locked memory) and on each data-plane
//! executor thread (SCHED_FIFO, timer slack), and how it runs without them.

#[allow(unsafe_code)]
pub mod affinity;
pub mod privileges;
