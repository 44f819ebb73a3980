//! `mesh`: the seed's voice-to-response flow through the daemon.
//!
//! The bench runs `pinwheel run` itself ([`crate::daemon::run`]): the
//! topology under test, the voice pipeline's manifest
//! (`agents/voice-pipeline.toml`: 15 agents from AudioCapture to
//! StreamingTTSAgent), the load generator's audio frames and requests, for
//! a short duration, then the usual drain. Nothing is simulated beyond
//! what `run` simulates, so the figures are what the daemon measures:
//!
//! * voice: an audio frame's origin to the coordinator's answer to the
//!   transcript it became (one per second of audio, as the manifest's
//!   `calls_every` says, so a short run has few);
//! * request: the load generator's requests to the coordinator, end to
//!   end, through its fan-out over the voice path's agents.
//!
//! The daemon's text report is discarded; its JSON report is not written.

use std::path::PathBuf;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::BenchError;
use crate::daemon::{self, RunOptions};

/// What to run.
#[derive(Debug, Clone, PartialEq)]
pub struct MeshBench {
    /// Topology file.
    pub topology: PathBuf,
    /// The voice pipeline's manifest.
    pub agents: PathBuf,
    /// Where sysfs is.
    pub sysfs_root: PathBuf,
    /// How long the mesh runs after start-up.
    pub duration: Duration,
    /// Requests a second from the load generator.
    pub rate_per_s: f64,
    /// Ask for SCHED_FIFO, locked memory and timer slack.
    pub privileged: bool,
}

/// What the mesh measured.
#[derive(Debug)]
pub struct MeshReport {
    /// Audio frame to the coordinator's answer.
    pub voice: Histogram<u64>,
    /// The load generator's requests, end to end.
    pub requests: Histogram<u64>,
    /// Agents started, of those planned.
    pub agents: (usize, usize),
}

impl MeshBench {
    /// The options `pinwheel run` would get for this bench.
    pub fn options(&self) -> RunOptions {
        RunOptions {
            topology: self.topology.clone(),
            agents: vec![self.agents.clone()],
            sysfs_root: self.sysfs_root.clone(),
            tuning_root: None,
            duration: Some(self.duration),
            rate_per_s: self.rate_per_s,
            request_timeout: Duration::from_secs(2),
            report: None,
            state_dir: None,
            privileged: self.privileged,
            // A free loopback port: the bench must not take a running
            // daemon's admin address.
            admin_addr: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
            admin_token_file: crate::observe::admin::DEFAULT_TOKEN_FILE.into(),
            host: None,
            nats_url: None,
            nats_nkey: None,
            run_dir: crate::daemon::DEFAULT_RUN_DIR.into(),
            faults: Vec::new(),
            legacy_bind: None,
        }
    }

    /// Runs the mesh and keeps its latency histograms.
    pub fn run(&self) -> Result<MeshReport, BenchError> {
        let report =
            daemon::run(&self.options(), &mut std::io::sink()).map_err(|err| BenchError::Mesh {
                source: Box::new(err),
            })?;
        Ok(MeshReport {
            voice: report.voice_histogram().clone(),
            requests: report.e2e_histogram().clone(),
            agents: (report.agents_started, report.agents_planned),
        })
    }
}
