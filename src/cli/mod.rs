//! Command-line interface: clap arguments and the commands behind them.
//!
//! Each command validates everything it reads before doing anything, and
//! writes its result to the writer it is given (stdout in the binary), so
//! tests can run commands in-process.
//!
//! The CLI is the top layer: it is the one place that sees both the
//! daemon's errors and the benchmarks' (which sit above the daemon), so
//! [`CliError`] is the error that ends the process.

mod bench;
mod bench_mesh;
mod client;
mod cluster;
mod fault;
mod files;
mod install;
mod run;
mod status;
mod top;
mod tune;
mod vram;

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use bench::{BenchArgs, BenchCommand, BenchRingArgs, BenchRouterArgs, BenchSuiteArgs};
pub use client::AdminClient;
pub use cluster::{ClusterCommand, ClusterInitArgs, ClusterStatusArgs, GpuCommand, GpuPlaceArgs};
pub use fault::FaultArgs;
pub use files::{DetectArgs, DetectFormat, PlanArgs, PlanFormat, TopoCommand, ValidateArgs};
pub use install::{InstallArgs, InstallError, UninstallArgs};
pub use run::RunArgs;
pub use status::StatusArgs;
pub use top::TopArgs;
pub use tune::{RevertArgs, TuneArgs, TuneCommand};
pub use vram::{ReplayArgs, VramCommand};

use crate::bench::BenchError;
use crate::error::{DaemonError, EXIT_BAD_INPUT, EXIT_FAILURE};
use crate::topology::LIVE_SYSFS;

/// pinwheel: a thread-per-core daemon for hosts that run a mesh of AI agents.
#[derive(Debug, Parser)]
#[command(name = "pinwheel", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Log format on stderr; the level comes from RUST_LOG (default: info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent mesh: executors per planned CPU, agents in start
    /// order, a status line each second, a report at the end.
    Run(RunArgs),
    /// Inspect this host's CPUs.
    #[command(subcommand)]
    Topo(TopoCommand),
    /// Show which agent runs on which CPU, the rings, and the start order.
    Plan(PlanArgs),
    /// Check topology and agent files without starting anything.
    Validate(ValidateArgs),
    /// Measure latency: with no subcommand, ring, wakeup and mesh in one
    /// table (and `--vs` a second topology); a subcommand for one bench in
    /// detail.
    Bench(BenchArgs),
    /// Show a running daemon's agents, GPUs and health.
    Status(StatusArgs),
    /// A live view of a running daemon: agents per CPU, GPUs, the cluster
    /// and health, refreshed every second (q quits).
    Top(TopArgs),
    /// Prepare this host for low latency with a tuning profile, and put
    /// it back.
    #[command(subcommand)]
    Tune(TuneCommand),
    /// Install pinwheel as a systemd service: the unit, /etc/pinwheel (a
    /// topology detected for this host, the manifests, an admin token) and
    /// the binary; prints the systemctl commands to run next.
    Install(InstallArgs),
    /// Remove exactly what `pinwheel install` wrote (files changed since
    /// are kept and named).
    Uninstall(UninstallArgs),
    /// The cluster as a running daemon sees it.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Place GPU work through a running daemon.
    #[command(subcommand)]
    Gpu(GpuCommand),
    /// The VRAM optimizer: replay traces against it and its baselines.
    #[command(subcommand)]
    Vram(VramCommand),
    /// Put an agent or replica of a running daemon under a fault drill
    /// (`--slow 10x`, `--error 0.2`, `--stall`, `--for 30s`), or end it.
    Fault(FaultArgs),
}

/// Where sysfs is.
#[derive(Debug, Clone, Args)]
pub struct SysfsArg {
    /// Directory standing for /sys (a fixture tree for tests).
    #[arg(long, value_name = "DIR", default_value = LIVE_SYSFS)]
    pub sysfs_root: PathBuf,
}

/// Any error that ends a pinwheel command. Like `DaemonError`, it is a
/// place where other modules' errors convert with `#[from]`: the top one.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Everything but a benchmark: bad input, the daemon, a command.
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    /// A benchmark failed.
    #[error(transparent)]
    Bench(#[from] BenchError),
    /// `pinwheel install` or `uninstall`: a command of the CLI, not of
    /// the daemon, so its error lives here rather than in `DaemonError`.
    #[error(transparent)]
    Install(#[from] InstallError),
}

impl CliError {
    /// The process exit code: the daemon's for its errors (2 for bad
    /// input), 1 for a benchmark that failed.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Daemon(err) => err.exit_code(),
            CliError::Bench(_) => EXIT_FAILURE,
            CliError::Install(err) if err.is_bad_input() => EXIT_BAD_INPUT,
            CliError::Install(_) => EXIT_FAILURE,
        }
    }

    /// The message as the CLI prints it: `error: ..` and, when the error
    /// points into a file, that line with a caret under the value.
    pub fn report(&self) -> String {
        match self {
            CliError::Daemon(err) => err.report(),
            CliError::Bench(err) => format!("error: {err}\n"),
            CliError::Install(err) => format!("error: {err}\n"),
        }
    }
}

/// Writing a command's output, as the daemon's commands report it.
impl From<std::io::Error> for CliError {
    fn from(err: std::io::Error) -> Self {
        CliError::Daemon(DaemonError::Output(err))
    }
}

/// Runs a parsed command, writing its output to `out`.
pub fn run(command: Command, out: &mut dyn Write) -> Result<(), CliError> {
    let done = match command {
        Command::Run(args) => return run::run(&args, out),
        Command::Topo(TopoCommand::Detect(args)) => files::detect(&args, out),
        Command::Plan(args) => files::plan(&args, out),
        Command::Validate(args) => files::validate(&args, out),
        Command::Bench(args) => return bench::run(args, out),
        Command::Status(args) => status::run(&args, out),
        Command::Top(args) => top::run(&args),
        Command::Tune(command) => tune::run(command, out),
        Command::Install(args) => return install::install(&args, out),
        Command::Uninstall(args) => return install::uninstall(&args, out),
        Command::Cluster(ClusterCommand::Status(args)) => cluster::status(&args, out),
        Command::Cluster(ClusterCommand::Init(args)) => cluster::init(&args, out),
        Command::Gpu(GpuCommand::Place(args)) => cluster::place(&args, out),
        Command::Vram(command) => vram::run(command, out),
        Command::Fault(args) => fault::run(&args, out),
    };
    Ok(done?)
}
