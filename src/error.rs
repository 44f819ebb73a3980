//! The daemon's error: every error of the modules below the daemon, and
//! how each one ends the process.
//!
//! It sits above `config` .. `tuning` (it wraps their errors) and below
//! `daemon`, which returns it, so it cannot wrap the errors of what sits
//! above the daemon: a benchmark's `BenchError` wraps a `DaemonError` (the
//! mesh bench runs the daemon), and `cli::CliError` holds either.
//!
//! Bad input (a config file, a flag, a fixture tree that is not sysfs) exits
//! with code 2 after one message naming the file, line and column and what
//! to change; a failure at run time exits with 1.

use crate::cluster::ClusterError;
use crate::config::{ConfigError, Location};
use crate::gpu::vram::VramError;
use crate::plan::PlanError;
use crate::runtime::RuntimeError;
use crate::runtime::privileges::PrivilegesError;
use crate::topology::TopologyError;
use crate::tuning::TuningError;

/// Exit code for bad input.
pub const EXIT_BAD_INPUT: u8 = 2;
/// Exit code for a failure at run time.
pub const EXIT_FAILURE: u8 = 1;

/// Any error that ends a pinwheel command.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// A configuration file.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// CPU detection or a topology file.
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// Planning.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A VRAM trace, or GPUs a replay cannot use.
    #[error(transparent)]
    Vram(#[from] VramError),
    /// A command-line argument that makes no sense.
    #[error("{message}")]
    Usage {
        /// What is wrong and what to pass instead.
        message: String,
    },
    /// The process cannot get the locked memory glommio needs.
    #[error(transparent)]
    Privileges(#[from] PrivilegesError),
    /// The runtime failed to start or stop.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// A tuning profile, or tuning the host.
    #[error(transparent)]
    Tuning(#[from] TuningError),
    /// The agent processes' side could not start.
    #[error(transparent)]
    Process(#[from] crate::process::ProcessError),
    /// The legacy ZeroMQ gateway could not start.
    #[error(transparent)]
    Gateway(#[from] crate::gateway::GatewayError),
    /// The shutdown signals could not be set up or read.
    #[error("cannot handle SIGINT/SIGTERM: {source}")]
    Signals {
        /// Why.
        source: nix::Error,
    },
    /// The JSON report could not be written.
    #[error("cannot write the report {}: {source}", path.display())]
    Report {
        /// The report file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A daemon thread (core loop) could not be started.
    #[error("cannot start a daemon thread: {source}")]
    Thread {
        /// Why.
        source: std::io::Error,
    },
    /// A running daemon's admin API could not be asked.
    #[error("admin API at {addr}: {reason}")]
    Admin {
        /// Its address.
        addr: std::net::SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// The GPUs could not be opened or their policy does not fit them.
    #[error("GPUs: {reason}")]
    Gpu {
        /// Why.
        reason: String,
    },
    /// The cluster link's settings, or its identity files.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// Writing the command's output.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

impl DaemonError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            DaemonError::Config(_)
            | DaemonError::Topology(_)
            | DaemonError::Plan(_)
            | DaemonError::Vram(_)
            | DaemonError::Cluster(_)
            | DaemonError::Usage { .. } => EXIT_BAD_INPUT,
            DaemonError::Tuning(err) if err.is_bad_input() => EXIT_BAD_INPUT,
            DaemonError::Privileges(_)
            | DaemonError::Runtime(_)
            | DaemonError::Tuning(_)
            | DaemonError::Process(_)
            | DaemonError::Gateway(_)
            | DaemonError::Signals { .. }
            | DaemonError::Report { .. }
            | DaemonError::Thread { .. }
            | DaemonError::Admin { .. }
            | DaemonError::Gpu { .. }
            | DaemonError::Output(_) => EXIT_FAILURE,
        }
    }

    /// The place in a file the error points at, if any.
    pub fn location(&self) -> Option<&Location> {
        match self {
            DaemonError::Config(err) => err.location(),
            DaemonError::Topology(err) => err.location(),
            DaemonError::Plan(err) => err.location(),
            DaemonError::Tuning(err) => err.location(),
            DaemonError::Usage { .. }
            | DaemonError::Vram(_)
            | DaemonError::Privileges(_)
            | DaemonError::Runtime(_)
            | DaemonError::Process(_)
            | DaemonError::Gateway(_)
            | DaemonError::Signals { .. }
            | DaemonError::Report { .. }
            | DaemonError::Thread { .. }
            | DaemonError::Admin { .. }
            | DaemonError::Gpu { .. }
            | DaemonError::Cluster(_)
            | DaemonError::Output(_) => None,
        }
    }

    /// The message as the CLI prints it: `error: ..` and, when the error
    /// points into a file, that line with a caret under the value.
    pub fn report(&self) -> String {
        let snippet = self.location().map(Location::snippet).unwrap_or_default();
        format!("error: {self}\n{snippet}")
    }
}
