//! `pinwheel vram replay`: replays a trace of model uses against the VRAM
//! optimizer and the LRU and Ollama baselines, on simulated GPUs.
//!
//! Only the topology's `[[gpu]]` and `[vram]` sections are read (the rest
//! must parse), so any host can replay any host's file. Everything is
//! checked before anything runs: a bad topology or trace line exits 2
//! with the file and line.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::error::DaemonError;
use crate::gpu::vram::replay::{PolicyKind, Trace, render_json, render_table, replay, replay_host};
use crate::topology::load_gpu_sections;

/// `pinwheel vram ...`.
#[derive(Debug, Subcommand)]
pub enum VramCommand {
    /// Replay a trace of model uses; compare with the LRU and Ollama baselines.
    Replay(ReplayArgs),
}

/// `pinwheel vram replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Topology file (its [[gpu]] and [vram] sections are used).
    #[arg(long, value_name = "FILE")]
    pub topology: PathBuf,
    /// Trace, one JSON object per line.
    #[arg(long, value_name = "FILE")]
    pub trace: PathBuf,
    /// Replay one policy only (default: all four, in one run).
    #[arg(long, value_enum)]
    pub policy: Option<PolicyKind>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub(super) fn run(command: VramCommand, out: &mut dyn Write) -> Result<(), DaemonError> {
    match command {
        VramCommand::Replay(args) => replay_command(&args, out),
    }
}

fn replay_command(args: &ReplayArgs, out: &mut dyn Write) -> Result<(), DaemonError> {
    let sections = load_gpu_sections(&args.topology)?;
    let host = replay_host(&args.topology, &sections)?;
    let trace = Trace::read(&args.trace, host_gpus(&host))?;
    let kinds: Vec<PolicyKind> = match args.policy {
        Some(kind) => vec![kind],
        None => PolicyKind::ALL.to_vec(),
    };
    let reports = kinds
        .into_iter()
        .map(|kind| Ok((kind, replay(&sections.vram, &host, &trace, kind)?)))
        .collect::<Result<Vec<_>, DaemonError>>()?;
    let text = if args.json {
        render_json(&reports)
    } else {
        render_table(&reports)
    };
    out.write_all(text.as_bytes())?;
    Ok(())
}

fn host_gpus(host: &crate::gpu::SimBackend) -> usize {
    use crate::gpu::GpuBackend;
    host.gpus().len()
}
