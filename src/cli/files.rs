//! The commands that read files and the host: `topo detect`, `plan` and
//! `validate`. Each validates everything it reads before printing anything.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};

use super::SysfsArg;
use super::run::check_rate;
use crate::config::AgentSet;
use crate::error::DaemonError;
use crate::plan::{Plan, render_json, render_table};
use crate::topology::{self, HostCpus, LIVE_SYSFS, Topology};

/// `pinwheel topo ...`.
#[derive(Debug, Subcommand)]
pub enum TopoCommand {
    /// Detect CPUs and their classes (P, E or uniform); print a topology file.
    Detect(DetectArgs),
}

/// `pinwheel topo detect`.
#[derive(Debug, Args)]
pub struct DetectArgs {
    /// Where sysfs is.
    #[command(flatten)]
    pub sysfs: SysfsArg,
    /// Output format: a ready-to-edit topology file, or the raw detection.
    #[arg(long, value_enum, default_value_t = DetectFormat::Toml)]
    pub format: DetectFormat,
    /// Host name for the TOML file (default: this host's name, or the
    /// fixture directory's name with --sysfs-root).
    #[arg(long)]
    pub name: Option<String>,
}

/// `topo detect --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DetectFormat {
    /// A topology file.
    Toml,
    /// `{"source": .., "cpus": [..]}`.
    Json,
}

/// `pinwheel plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Topology file of the host to plan for.
    #[arg(long, value_name = "FILE")]
    pub topology: PathBuf,
    /// Agent manifests.
    #[arg(long, value_name = "FILE", num_args = 1.., required = true)]
    pub agents: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = PlanFormat::Table)]
    pub format: PlanFormat,
    /// Plan as a daemon sending this many requests a second to its
    /// coordinator does (`pinwheel run --rate`, `pinwheel bench mesh`):
    /// the agents that load reaches are spread by their messages.
    #[arg(
        long,
        value_name = "REQ_PER_S",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    pub rate: f64,
    /// Where sysfs is (for topology files with cpus = "auto").
    #[command(flatten)]
    pub sysfs: SysfsArg,
}

/// `plan --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    /// For people.
    Table,
    /// For programs.
    Json,
}

/// `pinwheel validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Topology file.
    #[arg(long, value_name = "FILE")]
    pub topology: PathBuf,
    /// Agent manifests; with them the plan is checked too.
    #[arg(long, value_name = "FILE", num_args = 1..)]
    pub agents: Vec<PathBuf>,
    /// Where sysfs is (for topology files with cpus = "auto").
    #[command(flatten)]
    pub sysfs: SysfsArg,
}

pub(super) fn detect(args: &DetectArgs, out: &mut dyn Write) -> Result<(), DaemonError> {
    let root = &args.sysfs.sysfs_root;
    let host: HostCpus = topology::detect_host(root)?;
    let text = match args.format {
        DetectFormat::Json => topology::render_detect_json(&host),
        DetectFormat::Toml => {
            let name = args.name.clone().unwrap_or_else(|| default_host_name(root));
            topology::render_detect_toml(&host, &name)
        }
    };
    out.write_all(text.as_bytes())?;
    Ok(())
}

/// This host's name for the live root, else the fixture tree's directory
/// name, made fit for a topology file.
pub(super) fn default_host_name(root: &Path) -> String {
    let raw = if root == Path::new(LIVE_SYSFS) {
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default()
    } else {
        let tree = if root.ends_with("sys") {
            root.parent()
        } else {
            Some(root)
        };
        tree.and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let cleaned: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let cleaned = cleaned.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
    if cleaned.is_empty() {
        "this-host".to_owned()
    } else {
        cleaned.chars().take(64).collect()
    }
}

fn load(
    topology: &Path,
    agents: &[PathBuf],
    sysfs: &SysfsArg,
) -> Result<(Topology, AgentSet), DaemonError> {
    let topology = topology::load(topology, &sysfs.sysfs_root)?;
    let agents = AgentSet::load(agents)?;
    Ok((topology, agents))
}

pub(super) fn plan(args: &PlanArgs, out: &mut dyn Write) -> Result<(), DaemonError> {
    check_rate("--rate", args.rate)?;
    let (topology, agents) = load(&args.topology, &args.agents, &args.sysfs)?;
    let plan = Plan::build_for_requests(&topology, &agents, args.rate)?;
    let text = match args.format {
        PlanFormat::Table => render_table(&plan, &topology, &agents),
        PlanFormat::Json => render_json(&plan, &topology, &agents),
    };
    out.write_all(text.as_bytes())?;
    Ok(())
}

pub(super) fn validate(args: &ValidateArgs, out: &mut dyn Write) -> Result<(), DaemonError> {
    let (topology, agents) = load(&args.topology, &args.agents, &args.sysfs)?;
    // Check everything before printing anything: a partial "ok" would lie.
    let plan = if agents.is_empty() {
        None
    } else {
        Some(Plan::build(&topology, &agents)?)
    };
    writeln!(
        out,
        "ok: {} describes host {} ({} CPUs, data plane {})",
        topology.path().display(),
        topology.host(),
        topology.cpus().len(),
        topology.data_plane()
    )?;
    if let Some(plan) = plan {
        let files: Vec<String> = agents
            .files()
            .iter()
            .map(|f| f.display().to_string())
            .collect();
        writeln!(
            out,
            "ok: {} define {} agents; {} planned on host {} with {} warnings",
            files.join(", "),
            agents.len(),
            plan.placements().len(),
            plan.host(),
            plan.warnings(&agents).len()
        )?;
    }
    Ok(())
}
