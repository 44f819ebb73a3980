//! Tuning profiles: prepare a host for low latency, and put it back.
//!
//! Like Red Hat's tuned, a profile (`tuning/*.toml`, able to include
//! another) names kernel knobs and the values pinwheel wants while it runs:
//! sysctls under `/proc/sys`, sysfs files (globs over CPUs for the cpufreq
//! governor and energy preference), transparent hugepages, the PM QoS hold
//! on `/dev/cpu_dma_latency`, interrupt and workqueue affinity off the
//! data-plane CPUs, and a kernel command line printed as a suggestion.
//!
//! ```text
//!  profile.rs   tuning/*.toml + includes ──▶ Profile (ordered settings)
//!  setting.rs   Profile × host tree       ──▶ steps (one knob file each)
//!  apply.rs     diff | apply | revert     ──▶ Report (applied/skipped/failed)
//!                  │ before each write
//!                  ▼
//!  journal.rs   <root>/run/pinwheel/tuning.journal: original bytes, fsynced
//!  guard.rs     Tuning: the daemon's handle; applies at start, reverts at exit
//! ```
//!
//! Invariants:
//! * No knob is written before its original bytes are in the journal and
//!   the journal is fsynced, so a crash at any point leaves enough on disk
//!   to put the host back; `revert` replays the journal, and every apply
//!   first reverts what an earlier run left behind.
//! * The first original recorded for a knob wins: applying twice never
//!   records the first apply's value as an "original".
//! * Nothing is half-applied silently: every knob ends as applied,
//!   unchanged, skipped with a reason (not root, read-only, missing on this
//!   host, ...) or failed with the error, and a write is read back.
//! * Every path is prefixed with a root (`/` on a live host), so tests run
//!   on fake trees. Files are only ever written, never created.
//!
//! Not done here: editing the bootloader (the kernel command line is only
//! suggested), and anything that needs a reboot.

mod apply;
mod guard;
mod journal;
mod knob;
mod profile;
mod report;
mod setting;

use std::path::PathBuf;

pub use apply::{Applied, apply, diff, revert};
pub use guard::Tuning;
pub use journal::{JOURNAL_PATH, journal_path};
pub use profile::Profile;
pub use report::{Outcome, Report, Row, SkipReason, Verb};
pub use setting::Host;

use crate::config::{ConfigError, Location};

/// Errors of tuning: a bad profile, or a journal that cannot be kept.
#[derive(Debug, thiserror::Error)]
pub enum TuningError {
    /// The profile (or a file it includes) is bad input.
    #[error(transparent)]
    Profile(ConfigError),
    /// The journal could not be read or written; writes stop here, so
    /// every knob already written is in the journal.
    #[error("tuning journal {}: {source}; run `pinwheel tune revert` once it is writable", path.display())]
    Journal {
        /// The journal or its directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A journal line that is not a record.
    #[error(
        "tuning journal {}:{line} is not a record ({problem}); fix or remove the line, then run `pinwheel tune revert`",
        path.display()
    )]
    JournalCorrupt {
        /// The journal.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// Another pinwheel holds the tuning lock.
    #[error("another pinwheel is tuning this host (it holds {}); stop it first", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// Some knobs could not be set or restored; the report lists them.
    #[error("{failed} tuning settings failed to {verb}; the report above lists them")]
    Incomplete {
        /// How many.
        failed: usize,
        /// What was being done (`apply`, `revert`).
        verb: &'static str,
    },
}

impl TuningError {
    /// Whether the error is bad input (exit code 2) rather than a failure.
    pub fn is_bad_input(&self) -> bool {
        matches!(self, TuningError::Profile(_))
    }

    /// The place in a profile this error points at, if any.
    pub fn location(&self) -> Option<&Location> {
        match self {
            TuningError::Profile(err) => err.location(),
            TuningError::Journal { .. }
            | TuningError::JournalCorrupt { .. }
            | TuningError::Locked { .. }
            | TuningError::Incomplete { .. } => None,
        }
    }
}
