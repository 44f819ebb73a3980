//! `pinwheel tune diff|apply|revert`: a tuning profile on this host (or on
//! a fake tree under `--root`), by hand.
//!
//! `diff` writes nothing. `apply` reverts an earlier apply's leftovers,
//! then applies, journaling originals; the host stays tuned after the
//! command exits, except for the PM QoS hold, which only lasts while a
//! process (the daemon) keeps it open. `revert` needs no profile: the
//! journal names every knob to put back. A bad profile exits 2 naming its
//! file and line; a knob that failed exits 1 after the report.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::error::DaemonError;
use crate::topology::CpuSet;
use crate::tuning::{self, Host, Profile, Report, TuningError};

/// `pinwheel tune`.
#[derive(Debug, Subcommand)]
pub enum TuneCommand {
    /// Show each knob's current value and the profile's target; write
    /// nothing.
    Diff(TuneArgs),
    /// Apply a profile; each original value goes to the journal first.
    Apply(TuneArgs),
    /// Put back every knob the journal holds.
    Revert(RevertArgs),
}

/// `pinwheel tune diff` and `apply`.
#[derive(Debug, Args)]
pub struct TuneArgs {
    /// The profile (`tuning/*.toml`).
    #[arg(long, value_name = "FILE")]
    pub profile: PathBuf,
    /// The data-plane CPUs, for `[isolation]` (e.g. `2-7`).
    #[arg(long, value_name = "CPUS")]
    pub data_plane: Option<CpuSet>,
    /// Directory standing for `/` (`/proc`, `/sys`, `/dev`, `/run`): a fake
    /// tree for tests.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
}

/// `pinwheel tune revert`.
#[derive(Debug, Args)]
pub struct RevertArgs {
    /// Directory standing for `/`.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
}

impl TuneArgs {
    fn host(&self) -> Host {
        Host {
            root: self.root.clone(),
            data_plane: self.data_plane.clone(),
        }
    }
}

pub(super) fn run(command: TuneCommand, out: &mut dyn Write) -> Result<(), DaemonError> {
    match command {
        TuneCommand::Diff(args) => {
            let profile = Profile::load(&args.profile)?;
            out.write_all(tuning::diff(&profile, &args.host())?.to_text().as_bytes())?;
            Ok(())
        }
        TuneCommand::Apply(args) => {
            let profile = Profile::load(&args.profile)?;
            let applied = tuning::apply(&profile, &args.host(), false)?;
            let reports: Vec<&Report> = applied.leftovers.iter().chain([&applied.report]).collect();
            finish("apply", &reports, out)
        }
        TuneCommand::Revert(args) => finish("revert", &[&tuning::revert(&args.root)?], out),
    }
}

fn finish(verb: &'static str, reports: &[&Report], out: &mut dyn Write) -> Result<(), DaemonError> {
    for report in reports {
        out.write_all(report.to_text().as_bytes())?;
    }
    let failed = reports.iter().map(|r| r.failed()).sum();
    if failed > 0 {
        return Err(TuningError::Incomplete { failed, verb }.into());
    }
    Ok(())
}
