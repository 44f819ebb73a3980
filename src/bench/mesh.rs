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
//! The load's counts (offered, sent, not sent, completed, failed, timed
//! out) come with the latencies, so a mesh that could not keep up with
//! the offered rate shows as unsent requests, not as a good p99.
//!
//! The daemon plans for the load it drives (`Plan::build_for_requests`):
//! the agents the requests reach are spread by their messages a second,
//! as `pinwheel plan --rate` shows.
//!
//! `pinwheel bench mesh` runs any manifests (the seed's two by default).
//! `--overhead` sets every synthetic agent's service time to zero, so what
//! is left is pinwheel's own cost; `--find-max` searches the highest
//! offered rate that the mesh serves with a p99 under [`MAX_P99_NS`] and
//! nothing unsent or timed out ([`MeshBench::find_max`]).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::BenchError;
use super::search::{self, Verdict};
use crate::daemon::report::{OffCpuReport, RequestsReport};
use crate::daemon::{self, RunOptions};
use crate::latency::{LatencySummary, PERCENTILE_TITLES, format_ns};

/// The p99 a rate must stay under to pass `--find-max`, ns.
pub const MAX_P99_NS: u64 = 1_000_000;

/// What to run.
#[derive(Debug, Clone, PartialEq)]
pub struct MeshBench {
    /// Topology file.
    pub topology: PathBuf,
    /// The manifests.
    pub agents: Vec<PathBuf>,
    /// Where sysfs is.
    pub sysfs_root: PathBuf,
    /// How long the mesh runs after start-up.
    pub duration: Duration,
    /// Requests a second from the load generator.
    pub rate_per_s: f64,
    /// Ask for SCHED_FIFO, locked memory and timer slack.
    pub privileged: bool,
    /// Every synthetic agent's service time zero.
    pub overhead: bool,
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
    /// What became of the load generator's requests.
    pub counts: RequestsReport,
    /// The agents whose workers were busiest, busiest first.
    pub busiest: Vec<BusyAgent>,
    /// Each executor's stretches off the CPU while awake.
    pub off_cpu: Vec<OffCpuReport>,
}

/// Agents listed as the busiest: where a mesh that cannot keep up queues.
pub const BUSIEST: usize = 3;

/// An agent and how busy its workers were: handler time (the calls it
/// awaits included) over run time x concurrency. Near 1 the agent is
/// saturated and requests queue in its inbox.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BusyAgent {
    /// Its name.
    pub agent: String,
    /// Requests it serves at once.
    pub concurrency: u32,
    /// Handler time over its workers' run time.
    pub busy_share: f64,
}

impl MeshBench {
    /// The options `pinwheel run` would get for this bench.
    pub fn options(&self) -> RunOptions {
        RunOptions {
            topology: self.topology.clone(),
            agents: self.agents.clone(),
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
            overhead: self.overhead,
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
        let mut busiest: Vec<BusyAgent> = report
            .per_agent
            .iter()
            .filter_map(|a| {
                a.busy_share.map(|busy_share| BusyAgent {
                    agent: a.name.clone(),
                    concurrency: a.concurrency,
                    busy_share,
                })
            })
            .collect();
        busiest.sort_by(|a, b| b.busy_share.total_cmp(&a.busy_share));
        busiest.truncate(BUSIEST);
        Ok(MeshReport {
            voice: report.voice_histogram().clone(),
            requests: report.e2e_histogram().clone(),
            agents: (report.agents_started, report.agents_planned),
            counts: report.requests,
            busiest,
            off_cpu: report.off_cpu,
        })
    }

    /// The highest offered rate the mesh serves with a p99 under
    /// [`MAX_P99_NS`] and nothing unsent or timed out, as
    /// [`search::highest_passing`] searches it. Each probe is a whole run
    /// of `duration`. The maximum is 0 when even the lowest rate fails.
    pub fn find_max(&self) -> Result<FindMax, BenchError> {
        let mut probes = Vec::new();
        let mut last_pass = None;
        let best = search::highest_passing(|rate| -> Result<Verdict, BenchError> {
            let bench = Self {
                rate_per_s: rate,
                ..self.clone()
            };
            let json = bench.run()?.to_json(&bench);
            let verdict = json.verdict();
            probes.push(Probe {
                rate_per_s: rate,
                p99_ns: json.e2e_ns.p99,
                off_cpu_ns: json.off_cpu.iter().map(|r| r.total_ns).sum(),
                off_cpu_longest_ns: json.off_cpu.iter().map(|r| r.longest_ns).max().unwrap_or(0),
                not_sent: json.requests.not_sent,
                timed_out: json.requests.timed_out,
                passed: verdict == Verdict::Pass,
                verdict,
            });
            if verdict == Verdict::Pass {
                last_pass = Some(json);
            }
            Ok(verdict)
        })?;
        Ok(FindMax {
            max_rate_per_s: best.unwrap_or(0.0),
            // The highest rate that passed is the last one (search.rs).
            at_max: last_pass,
            probes,
        })
    }
}

impl MeshReport {
    /// The report as [`MeshJson`].
    pub fn to_json(&self, bench: &MeshBench) -> MeshJson {
        MeshJson {
            topology: bench.topology.clone(),
            agents: bench.agents.clone(),
            duration_s: bench.duration.as_secs_f64(),
            rate_per_s: bench.rate_per_s,
            overhead: bench.overhead,
            agents_started: self.agents.0,
            agents_planned: self.agents.1,
            requests: self.counts,
            e2e_ns: LatencySummary::of(&self.requests),
            voice_ns: LatencySummary::of(&self.voice),
            busiest_agents: self.busiest.clone(),
            off_cpu: self.off_cpu.clone(),
        }
    }
}

/// `pinwheel bench mesh --json`: one run.
#[derive(Debug, Clone, Serialize)]
pub struct MeshJson {
    /// The topology.
    pub topology: PathBuf,
    /// The manifests.
    pub agents: Vec<PathBuf>,
    /// How long the load ran, seconds.
    pub duration_s: f64,
    /// The offered rate, requests a second.
    pub rate_per_s: f64,
    /// Whether synthetic agents' service times were zero.
    pub overhead: bool,
    /// Agents started.
    pub agents_started: usize,
    /// Agents planned.
    pub agents_planned: usize,
    /// `offered`, `sent`, `not_sent`, `completed`, `failed`, `timed_out`,
    /// `lost`, at the top level.
    #[serde(flatten)]
    pub requests: RequestsReport,
    /// Completed requests, due time to answer.
    pub e2e_ns: LatencySummary,
    /// Audio frame to the coordinator's answer.
    pub voice_ns: LatencySummary,
    /// The [`BUSIEST`] agents by busy share, busiest first.
    pub busiest_agents: Vec<BusyAgent>,
    /// Each executor's stretches off the CPU while awake (the host's, the
    /// kernel's): what the latencies waited out beyond pinwheel.
    pub off_cpu: Vec<OffCpuReport>,
}

impl MeshJson {
    /// The run for people: the load's counts, then the latencies.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let names: Vec<String> = self
            .agents
            .iter()
            .map(|a| a.display().to_string())
            .collect();
        let _ = writeln!(
            out,
            "pinwheel bench mesh: {} with {}, {}/{} agents, {} req/s for {:.1} s{}",
            self.topology.display(),
            names.join(" "),
            self.agents_started,
            self.agents_planned,
            self.rate_per_s,
            self.duration_s,
            if self.overhead {
                ", no service time (overhead)"
            } else {
                ""
            }
        );
        let r = &self.requests;
        let _ = writeln!(
            out,
            "requests: {} offered, {} sent, {} not sent, {} completed, {} failed, {} timed out, {} lost",
            r.offered, r.sent, r.not_sent, r.completed, r.failed, r.timed_out, r.lost
        );
        let _ = write!(out, "\n{:<24}", "latency");
        for title in PERCENTILE_TITLES {
            let _ = write!(out, "{title:>10}");
        }
        let _ = writeln!(out);
        for (name, summary) in [
            ("request, end to end", self.e2e_ns),
            ("voice", self.voice_ns),
        ] {
            let _ = write!(out, "{name:<24}");
            for ns in summary.columns() {
                let _ = write!(out, "{:>10}", format_ns(ns));
            }
            let _ = writeln!(out);
        }
        let busiest: Vec<String> = self
            .busiest_agents
            .iter()
            .map(|a| {
                let share = a.busy_share * 100.0;
                format!("{} {share:.0}% (concurrency {})", a.agent, a.concurrency)
            })
            .collect();
        if !busiest.is_empty() {
            let _ = writeln!(out, "\nbusiest agents: {}", busiest.join(", "));
        }
        let _ = writeln!(out, "{}", OffCpuReport::line(&self.off_cpu));
        out
    }

    /// How the run measures up to `--find-max`'s bar.
    fn verdict(&self) -> Verdict {
        let r = &self.requests;
        if r.completed == 0 || r.not_sent > 0 || r.timed_out > 0 {
            Verdict::Saturated
        } else if self.e2e_ns.p99 < MAX_P99_NS {
            Verdict::Pass
        } else {
            Verdict::Slow
        }
    }
}

impl FindMax {
    /// The search for people: every probe, then the best run.
    pub fn to_table(&self, bench: &MeshBench) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "pinwheel bench mesh --find-max: p99 under {}, nothing unsent or timed out, {:.1} s a probe",
            format_ns(MAX_P99_NS),
            bench.duration.as_secs_f64()
        );
        for p in &self.probes {
            let _ = writeln!(
                out,
                "  {:>10} req/s: p99 {:>9}, {} not sent, {} timed out: {}; off CPU {} (longest {})",
                p.rate_per_s,
                format_ns(p.p99_ns),
                p.not_sent,
                p.timed_out,
                if p.passed { "pass" } else { "fail" },
                format_ns(p.off_cpu_ns),
                format_ns(p.off_cpu_longest_ns)
            );
        }
        let _ = writeln!(out, "max rate: {} req/s\n", self.max_rate_per_s);
        if let Some(best) = &self.at_max {
            out.push_str(&best.to_table());
        }
        out
    }
}

/// One rate `--find-max` tried.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Probe {
    /// Offered rate, requests a second.
    pub rate_per_s: f64,
    /// End-to-end p99, ns.
    pub p99_ns: u64,
    /// The executors' stretches off the CPU while awake, summed, ns.
    pub off_cpu_ns: u64,
    /// The longest of them, ns.
    pub off_cpu_longest_ns: u64,
    /// Requests that never left.
    pub not_sent: u64,
    /// Requests not answered in time.
    pub timed_out: u64,
    /// Whether it met the bar.
    pub passed: bool,
    /// How it measured up: `pass`, `slow` (p99 over the bar only) or
    /// `saturated` (anything unsent or timed out, or nothing completed).
    pub verdict: Verdict,
}

/// `pinwheel bench mesh --find-max --json`.
#[derive(Debug, Clone, Serialize)]
pub struct FindMax {
    /// The highest passing rate (0 when none passed).
    pub max_rate_per_s: f64,
    /// The run at that rate: `offered`, `sent`, `completed`, `e2e_ns`, ...
    /// at the top level.
    #[serde(flatten)]
    pub at_max: Option<MeshJson>,
    /// Every rate tried, in order.
    pub probes: Vec<Probe>,
}
