//! `pinwheel bench`: latency and throughput measured the way users tune a
//! host, with HdrHistogram percentiles and, optionally, baselines measured
//! in the same run.
//!
//! * `ring` ([`ring`]): round trips and streaming of real envelopes over
//!   rings between two pinned CPUs, two processes by default.
//!   With `--baseline hand` it takes turns with the hand ring ([`hand`])
//!   over a few rounds ([`turns`]).
//! * [`zmq`]: the same over ZeroMQ `ipc://` (libzmq), REQ/REP
//!   and PUSH/PULL, with the same envelopes, so ratios compare like with
//!   like.
//! * `router` ([`router`]): what the runtime adds per call on top of the
//!   bare ring.
//! * `nats` ([`nats`]): a call between hosts, NATS request/reply through a
//!   nats-server on loopback, against ZeroMQ REQ/REP over TCP.
//! * `agent` ([`agent`]): a round trip to an agent process against the
//!   in-daemon call across CPUs.
//! * `wakeup` ([`wakeup`]): how late a pinned executor wakes from a timer,
//!   against a plain `clock_nanosleep` thread (cyclictest's measurement).
//! * `mesh` ([`mesh`]): the seed's voice-to-response flow through the
//!   daemon.
//!
//! With no subcommand, [`suite`] runs ring, wakeup and mesh under one
//! topology, or two to compare, and [`output`] prints one table and, on
//! request, writes each histogram as an HdrHistogram percentile
//! distribution ([`hgrm`]) and each bench as an SVG percentile plot
//! ([`plot`]). [`html`] turns a `pinwheel run` report into one
//! self-contained HTML page with the same plots.
//!
//! Benchmarks never assert a time; they report. What they do check is that
//! every message arrived intact, so a fast wrong run cannot pass for a
//! result.

pub mod agent;
pub mod hand;
pub mod harness;
pub mod hgrm;
pub mod html;
pub mod json;
pub mod legacy;
pub mod mesh;
pub mod nats;
mod output;
pub mod plot;
mod report;
pub mod ring;
pub mod router;
pub mod search;
pub mod suite;
pub mod turns;
pub mod wakeup;
pub mod zmq;

use std::fmt::Write as _;
use std::path::PathBuf;

use hdrhistogram::Histogram;

pub use hgrm::Distribution;
pub use output::{render_suite_table, write_suite_files};
pub use report::{BaselineKind, Case, FrameSized, RingReport, render_ring_json, render_ring_table};

use crate::latency::{LatencySummary, PERCENTILE_TITLES, format_ns};
use crate::topology::CpuId;
use pinwheel_ipc::ring::RingError;

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
    /// A topology cannot host the benches.
    #[error("topology {}: {reason}", path.display())]
    Topology {
        /// The topology file.
        path: PathBuf,
        /// What it lacks.
        reason: String,
    },
    /// The wake-up bench's executor or thread failed.
    #[error("wakeup bench: {reason}")]
    Wakeup {
        /// What happened.
        reason: String,
    },
    /// The mesh bench's daemon run failed.
    #[error("mesh bench: {source}")]
    Mesh {
        /// The daemon's error.
        source: Box<crate::error::DaemonError>,
    },
    /// A plot could not be drawn.
    #[error("cannot draw the plot: {reason}")]
    Plot {
        /// plotters' message.
        reason: String,
    },
    /// A result file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An `.hgrm` file is not an HdrHistogram percentile distribution.
    #[error("percentile distribution, line {line}: {reason}")]
    Hgrm {
        /// Its line, from 1.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A NATS operation of `bench nats` failed.
    #[error("nats {what}: {reason}")]
    Nats {
        /// What was being done.
        what: &'static str,
        /// Why.
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

/// Writes a bench table's percentile title row, without its newline (a
/// table may add columns): `first` left-aligned in `width` after a blank
/// line, then [`PERCENTILE_TITLES`] right-aligned in 10 characters each.
fn percentile_titles(out: &mut String, first: &str, width: usize) {
    let _ = write!(out, "\n{first:<width$}");
    for title in PERCENTILE_TITLES {
        let _ = write!(out, "{title:>10}");
    }
}

/// Writes the start of a bench table's row, without its newline: `name`
/// left-aligned in `width`, then the histogram's
/// [`LatencySummary::columns`] as [`format_ns`] prints them, under
/// [`percentile_titles`].
fn percentile_cells(out: &mut String, name: &str, width: usize, histogram: &Histogram<u64>) {
    let _ = write!(out, "{name:<width$}");
    for ns in LatencySummary::of(histogram).columns() {
        let _ = write!(out, "{:>10}", format_ns(ns));
    }
}
