//! Trace replay: the optimizer and two baselines on the same simulated
//! host, deterministically, with no GPU (`pinwheel vram replay`).
//!
//! * [`trace`]: the JSON-lines trace format and its checks.
//! * `world.rs`: the harness, a [`SimBackend`] host that carries out
//!   decisions and grades them with its own books.
//! * `lru.rs`, `ollama.rs`: the baselines, sharing `base.rs`.
//! * `oracle.rs`: Belady's furthest-in-future eviction with the whole
//!   trace in view, the yardstick (a heuristic bound: see its docs for
//!   how model sizes are handled).
//!
//! A hit is a use admitted on arrival; a miss is a use that had to wait
//! for a load; `wait_ms` covers every admitted use (hits wait 0). Loads
//! count preloads too. Replay reads only the topology's GPU and `[vram]`
//! sections, so it runs on any host.

mod base;
mod lru;
mod ollama;
mod oracle;
pub mod trace;
mod world;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use clap::ValueEnum;
use serde::Serialize;

use super::VramError;
use crate::gpu::backend::GpuBackend;
use crate::gpu::sim::SimBackend;
use crate::topology::{GpuSections, VramPolicy};

pub use trace::{Trace, TraceOp};

/// Which policy decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum PolicyKind {
    /// The VRAM optimizer.
    Pinwheel,
    /// A least-recently-used cache.
    Lru,
    /// Ollama's scheduler with its defaults.
    Ollama,
    /// Belady's furthest-in-future eviction over the whole trace.
    Oracle,
}

impl PolicyKind {
    /// Every policy, the optimizer first and the oracle last.
    pub const ALL: [PolicyKind; 4] = [
        PolicyKind::Pinwheel,
        PolicyKind::Lru,
        PolicyKind::Ollama,
        PolicyKind::Oracle,
    ];

    /// The name on the command line and in output.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::Pinwheel => "pinwheel",
            PolicyKind::Lru => "lru",
            PolicyKind::Ollama => "ollama",
            PolicyKind::Oracle => "oracle",
        }
    }
}

/// Percentiles of the time uses waited for admission, ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WaitPercentiles {
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
}

/// What a replay counted. Serializes to the JSON shape.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Loads started, preloads included.
    pub loads: u64,
    /// Models evicted, for any reason.
    pub evictions: u64,
    /// Uses admitted on arrival.
    pub hits: u64,
    /// Uses that waited for a load.
    pub misses: u64,
    /// Loads started on a prediction.
    pub preloads: u64,
    /// Uses refused, or never served.
    pub denied: u64,
    /// Admission waits.
    pub wait_ms: WaitPercentiles,
    /// Peak VRAM in use per GPU (ours and other programs'), MiB.
    pub max_used_mib: BTreeMap<String, u64>,
    /// Loads started beyond the GPU's budget.
    pub budget_violations: u64,
    /// Evictions of pinned models.
    pub pinned_evictions: u64,
    /// Evictions of models with a use in progress.
    pub busy_evictions: u64,
    /// Loads that started within the minimum residency of the same
    /// model's previous load. Not in the JSON; the tests read it.
    #[serde(skip)]
    pub early_reloads: u64,
}

/// The simulated host a replay runs on: the GPUs a topology file
/// (`path`, for errors) declares, each with its `vram_mib`.
pub fn replay_host(path: &Path, sections: &GpuSections) -> Result<SimBackend, VramError> {
    let gpus_error = |message: String| VramError::Gpus {
        path: path.to_path_buf(),
        message,
    };
    let sim = SimBackend::from_plan(&sections.gpus).map_err(|err| gpus_error(err.to_string()))?;
    if sim.gpus().is_empty() {
        return Err(gpus_error(
            "replay needs the GPUs declared: add [[gpu]] entries with vram_mib (gpus = \"nvml\" declares none)"
                .to_owned(),
        ));
    }
    Ok(sim)
}

/// Replays `trace` on `host` (from [`replay_host`]) under `kind`.
pub fn replay(
    policy: &VramPolicy,
    host: &SimBackend,
    trace: &Trace,
    kind: PolicyKind,
) -> Result<Report, VramError> {
    world::run(policy, host.clone(), trace, kind)
}

/// The reports as JSON: the one report's object for one policy, else an
/// object keyed by policy name.
pub fn render_json(reports: &[(PolicyKind, Report)]) -> String {
    let value = match reports {
        [(_, report)] => serde_json::to_value(report),
        many => many
            .iter()
            .map(|(kind, report)| Ok((kind.as_str().to_owned(), serde_json::to_value(report)?)))
            .collect::<Result<serde_json::Map<_, _>, serde_json::Error>>()
            .map(serde_json::Value::Object),
    };
    let mut text = serde_json::to_string_pretty(&value.unwrap_or_default()).unwrap_or_default();
    text.push('\n');
    text
}

/// The reports as a table, one row per policy.
pub fn render_table(reports: &[(PolicyKind, Report)]) -> String {
    let mut text = String::from(
        "policy    loads  evictions   hits  misses  preloads  denied  wait p50 ms  wait p99 ms  max used MiB  budget viol.  pinned ev.  busy ev.\n",
    );
    for (kind, r) in reports {
        let max_used = r
            .max_used_mib
            .iter()
            .map(|(gpu, mib)| format!("{gpu}:{mib}"))
            .collect::<Vec<_>>()
            .join(",");
        let _ = writeln!(
            text,
            "{:<8} {:>6} {:>10} {:>6} {:>7} {:>9} {:>7} {:>12} {:>12} {:>13} {:>13} {:>11} {:>9}",
            kind.as_str(),
            r.loads,
            r.evictions,
            r.hits,
            r.misses,
            r.preloads,
            r.denied,
            r.wait_ms.p50,
            r.wait_ms.p99,
            max_used,
            r.budget_violations,
            r.pinned_evictions,
            r.busy_evictions
        );
    }
    text
}
