//! The agent registry: the seed's `ServiceRegistry` (register, discover)
//! and the registration half of `SystemDigitalTwin` (who is alive).
//!
//! # Design
//!
//! * Discovery is by name through a `HashMap<String, Entry>`, looked up with
//!   a borrowed `&str`, so a lookup hashes once and never allocates. A
//!   second map from [`AgentId`](pinwheel_ipc::wire::AgentId) to name serves the runtime, which knows a
//!   sender by the id in its envelope.
//! * The registry holds at most `capacity` agents, fixed at construction;
//!   both maps are sized for it up front. A full registry refuses new names
//!   with [`RegistryError::Full`] rather than growing.
//! * Health is derived, never stored: each entry keeps the time it was last
//!   heard from, and [`Registry::health`] compares that with `now_ns` and the
//!   [`HealthThresholds`] (by default stale after 3 s, down after 10 s of
//!   silence). Registering counts as being heard from. Nothing sweeps the
//!   table, so nothing runs on a timer.
//! * Names are checked with [`crate::config::name_problem`], as in the
//!   config files, and an id belongs to one name at a time: the id is the
//!   wire address, so two names on one id would make replies ambiguous.
//!
//! # Snapshot
//!
//! [`Registry::save`] writes JSON to a temporary file next to the target,
//! fsyncs it, renames it over the target and fsyncs the directory. A crash
//! at any point leaves either the previous snapshot or the new one, never a
//! torn file; a stray temporary file is ignored by [`Registry::load`] and
//! overwritten by the next save. The file carries a `version`, and a
//! version this build does not know is refused, not guessed at.
//!
//! Heartbeat times are `CLOCK_MONOTONIC` readings, meaningless in another
//! boot or process, so they are not saved. A loaded entry comes back as
//! registered but not yet heard from: it reports [`Health::Stale`] until its
//! first heartbeat, and [`Health::Down`] once the down threshold has passed
//! since the load without one. That gives every agent one full down period
//! to reconnect after a daemon restart, and still lets an agent that died
//! with the old daemon fall out of the healthy set.
//!
//! The registry counts changes that a snapshot would record (a
//! [`Registry::generation`]); heartbeats are not among them. The runtime
//! asks [`Registry::snapshot_due`], saves, then calls
//! [`Registry::mark_saved`] with the generation it saved, so that a change
//! made while the write was in progress is not lost.
//!
//! This module does no I/O besides `save` and `load`, and keeps no clock.

mod agent;
mod health;
mod legacy;
mod snapshot;
mod table;

use std::path::PathBuf;

pub use agent::{Directory, RegistryAgent, RegistryCounters, SAVE_DEBOUNCE};
pub use health::{Health, HealthThresholds};
pub use snapshot::{SNAPSHOT_VERSION, write_snapshot};
pub use table::{Entry, MAX_ROLE_LEN, Record, RegisterOutcome, Registry, RegistryConfig};

/// Errors from the registry and its snapshot.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry already holds `capacity` agents.
    #[error(
        "cannot register {name}: the registry is full ({capacity} agents); deregister one or raise the capacity"
    )]
    Full {
        /// The agent that did not fit.
        name: String,
        /// The registry's capacity.
        capacity: usize,
    },
    /// An agent or host name that is not usable.
    #[error("{what} name {name:?} {problem}")]
    BadName {
        /// `"agent"` or `"host"`.
        what: &'static str,
        /// The name.
        name: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The role text is too long.
    #[error("agent {name}: role is {len} bytes; at most {max} are allowed")]
    RoleTooLong {
        /// The agent.
        name: String,
        /// The role's length in bytes.
        len: usize,
        /// [`MAX_ROLE_LEN`].
        max: usize,
    },
    /// Another agent already holds the id.
    #[error("agent {name} wants id {id}, which agent {holder} holds; deregister {holder} first")]
    IdTaken {
        /// The agent that asked.
        name: String,
        /// The id.
        id: u32,
        /// The agent that holds it.
        holder: String,
    },
    /// No agent of that name is registered.
    #[error("agent {name} is not registered")]
    Unknown {
        /// The name asked for.
        name: String,
    },
    /// Health thresholds out of order.
    #[error(
        "health thresholds: stale after {stale_after_ns} ns must be above 0 and below down after {down_after_ns} ns"
    )]
    Thresholds {
        /// The stale threshold given.
        stale_after_ns: u64,
        /// The down threshold given.
        down_after_ns: u64,
    },
    /// The snapshot path has no file name to write next to.
    #[error("registry snapshot path {path} does not name a file")]
    BadPath {
        /// The path.
        path: PathBuf,
    },
    /// Reading or writing a snapshot failed.
    #[error("cannot {op} registry snapshot {path}: {source}")]
    Io {
        /// What was being done (`"read"`, `"write"`, `"rename"`, ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The snapshot is not valid JSON of the expected shape, or its contents
    /// contradict each other.
    #[error("registry snapshot {path} is corrupt: {message}; move it aside to start empty")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The snapshot was written by a pinwheel with another format.
    #[error(
        "registry snapshot {path} has version {found}; this pinwheel reads version {supported}"
    )]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: u64,
        /// [`SNAPSHOT_VERSION`].
        supported: u32,
    },
    /// The snapshot holds more agents than the registry may.
    #[error(
        "registry snapshot {path} holds {agents} agents; the registry's capacity is {capacity}"
    )]
    SnapshotTooBig {
        /// The file.
        path: PathBuf,
        /// Agents in the file.
        agents: usize,
        /// The capacity asked for.
        capacity: usize,
    },
}
