//! `pinwheel bench mesh`: the daemon's mesh under a load, with the load's
//! counts beside its latencies; `--overhead` (no service time) and
//! `--find-max` (the highest rate served within the bar) come from
//! [`crate::bench::mesh`], which also renders the table and the JSON.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use super::CliError;
use super::run::MAX_RATE;
use crate::bench::json::render_json;
use crate::bench::mesh::MeshBench;
use crate::error::DaemonError;
use crate::topology::LIVE_SYSFS;

/// Longest `--duration` of one mesh run, seconds.
const MAX_SECONDS: f64 = 3_600.0;

/// `pinwheel bench mesh`.
#[derive(Debug, Args)]
pub struct BenchMeshArgs {
    /// Topology file.
    #[arg(long, value_name = "FILE", default_value = "topology/auto.toml")]
    pub topology: PathBuf,
    /// Agent manifests (the seed's two by default).
    #[arg(
        long,
        value_name = "FILE",
        num_args = 1..,
        default_values = ["agents/mainpc.toml", "agents/pc2.toml"]
    )]
    pub agents: Vec<PathBuf>,
    /// How long each run's load lasts, seconds.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 5.0,
        allow_negative_numbers = true
    )]
    pub duration: f64,
    /// Offered requests a second (ignored with --find-max).
    #[arg(
        long,
        value_name = "REQ_PER_S",
        default_value_t = 1_000.0,
        allow_negative_numbers = true
    )]
    pub rate: f64,
    /// Zero service time for every synthetic agent, and no model uses
    /// (their waits are the simulated GPU's loads): pinwheel's overhead.
    #[arg(long)]
    pub overhead: bool,
    /// Search the highest rate with p99 under 1 ms and nothing unsent.
    #[arg(long)]
    pub find_max: bool,
    /// Do not ask for SCHED_FIFO, locked memory or timer slack.
    #[arg(long)]
    pub unprivileged: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub(super) fn mesh(args: &BenchMeshArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let bench = args.bench()?;
    let text = match (args.find_max, args.json) {
        (true, true) => render_json(&bench.find_max()?),
        (true, false) => bench.find_max()?.to_table(&bench),
        (false, true) => render_json(&bench.run()?.to_json(&bench)),
        (false, false) => bench.run()?.to_json(&bench).to_table(),
    };
    out.write_all(text.as_bytes())?;
    Ok(())
}

impl BenchMeshArgs {
    fn bench(&self) -> Result<MeshBench, DaemonError> {
        let usage = |message: String| Err(DaemonError::Usage { message });
        let seconds = self.duration;
        if !(seconds.is_finite() && seconds > 0.0 && seconds <= MAX_SECONDS) {
            return usage(format!(
                "--duration {seconds}: pass a number of seconds above 0 and at most {MAX_SECONDS}"
            ));
        }
        let rate_ok = self.rate.is_finite() && self.rate > 0.0 && self.rate <= MAX_RATE;
        if !self.find_max && !rate_ok {
            return usage(format!(
                "--rate {} is out of range; pass above 0 to {MAX_RATE} requests a second",
                self.rate
            ));
        }
        for path in std::iter::once(&self.topology).chain(&self.agents) {
            if !path.is_file() {
                return usage(format!("{}: no such file", path.display()));
            }
        }
        Ok(MeshBench {
            topology: self.topology.clone(),
            agents: self.agents.clone(),
            sysfs_root: Path::new(LIVE_SYSFS).to_owned(),
            duration: Duration::from_secs_f64(seconds),
            rate_per_s: self.rate,
            privileged: !self.unprivileged,
            overhead: self.overhead,
        })
    }
}
