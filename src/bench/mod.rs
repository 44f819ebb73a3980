//! `pinwheel bench`: latency and throughput measured the way users tune a
//! host, with HdrHistogram percentiles and, optionally, baselines measured
//! in the same run.
//!
//! * `ring` ([`ring`]): round trips and streaming of real envelopes over
//!   rings between two pinned CPUs, two processes by default.
//! * `zmq` (feature `zmq-baseline`): the same over ZeroMQ `ipc://`, REQ/REP
//!   and PUSH/PULL, with the same envelopes, so ratios compare like with
//!   like.
//!
//! Benchmarks never assert a time; they report. What they do check is that
//! every message arrived intact, so a fast wrong run cannot pass for a
//! result.

mod report;
pub mod ring;
pub mod router;
mod summary;
#[cfg(feature = "zmq-baseline")]
pub mod zmq;

use std::path::PathBuf;

pub use report::{Case, RingReport, render_ring_json, render_ring_table};
pub use summary::{LatencySummary, format_ns, format_rate, new_histogram};

use crate::ring::RingError;
use crate::topology::CpuId;

/// Errors of benchmarks.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A ring operation failed.
    #[error("{what}: {source}")]
    Ring {
        /// What was being done.
        what: &'static str,
        /// The ring's error.
        source: RingError,
    },
    /// A thread could not be pinned.
    #[error("cannot pin to CPU {cpu}: {source} (pick CPUs this process may use with --cpus)")]
    Pin {
        /// The CPU.
        cpu: CpuId,
        /// Why.
        source: std::io::Error,
    },
    /// The peer process could not be started or waited for.
    #[error("cannot run peer {}: {source}", exe.display())]
    Spawn {
        /// Its executable.
        exe: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The peer misbehaved or vanished.
    #[error("benchmark peer: {reason}")]
    Peer {
        /// What happened.
        reason: String,
    },
    /// A ZeroMQ call failed.
    #[error("zeromq {what}: {reason}")]
    Zmq {
        /// What was being done.
        what: &'static str,
        /// zmq's message.
        reason: String,
    },
}
