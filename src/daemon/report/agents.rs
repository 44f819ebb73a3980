//! The report's per-agent lines: where each agent ran, what it handled,
//! and how busy its workers were.
//!
//! `busy_share` is the agent's handler time over the run time its
//! workers had (run time x `concurrency`): near 1 an agent is saturated
//! and its inbox queues, which is what bounds a mesh's throughput long
//! before the CPUs are full when a serial agent (concurrency 1) sits on
//! the request path. Handler time includes the calls a handler awaits.
//! It comes from the executors' handler-time histograms (1% resolution),
//! so it is an estimate to two digits. It is given only where a handler
//! serves a message whole (synthetic agents, registries): the coordinator
//! hands requests to its own queue and answers them later (its queue's
//! counters tell its load), and a process, external or ZeroMQ agent's
//! handler only forwards to another process; theirs is `null`.

use hdrhistogram::Histogram;
use serde::Serialize;

use super::ReportInputs;
use crate::config::{AgentIndex, AgentKind, NativeName};
use crate::runtime::stats::AgentCounts;

/// One agent.
#[derive(Debug, Clone, Serialize)]
pub struct AgentReport {
    /// Its name (`Name@host` where two hosts share it).
    pub name: String,
    /// Its host in the manifest.
    pub host: String,
    /// native, synthetic or external.
    pub kind: &'static str,
    /// The CPU the plan gave it.
    pub planned_cpu: u32,
    /// The CPU its worker found itself on.
    pub observed_cpu: Option<u32>,
    /// Messages handled.
    pub handled: u64,
    /// Handler failures and overruns.
    pub failures: u64,
    /// Restarts after isolation.
    pub restarts: u64,
    /// Requests that expired in its inbox.
    pub expired: u64,
    /// Requests it serves at once (its workers).
    pub concurrency: u32,
    /// Handler time over the workers' run time (see the module doc);
    /// `None` where the handler is not the agent's work.
    pub busy_share: Option<f64>,
}

/// Whether an agent's handler time is its work (see the module doc).
fn handler_is_the_work(kind: AgentKind) -> bool {
    matches!(
        kind,
        AgentKind::Synthetic | AgentKind::Native(NativeName::Registry)
    )
}

/// Total time a handler-time histogram recorded, ns (its mean times its
/// count: exact to the histogram's resolution).
fn total_ns(histogram: &Histogram<u64>) -> f64 {
    histogram.mean() * histogram.len() as f64
}

pub(super) fn agent_reports(inputs: &ReportInputs<'_>) -> Vec<AgentReport> {
    let agents = inputs.routes.agent_count();
    let mut counts: Vec<Option<AgentCounts>> = vec![None; agents];
    let mut handler_ns = vec![0.0; agents];
    for snapshot in inputs.snapshots {
        for &(id, c) in &snapshot.agents {
            counts[id.0 as usize] = Some(c);
        }
        for (id, histogram) in &snapshot.service {
            handler_ns[id.0 as usize] += total_ns(histogram);
        }
    }
    let run_ns = inputs.run.as_nanos() as f64;
    inputs
        .plan
        .placements()
        .iter()
        .map(|p| {
            let spec = inputs.agents.get(p.agent);
            let c = counts[p.agent.0].unwrap_or_default();
            let name = inputs.agents.display_name(AgentIndex(p.agent.0));
            // A process agent's own CPU is its affinity (set before exec);
            // its bridge's CPU is the executor's, not the agent's.
            let observed_cpu = match inputs.processes.iter().find(|s| s.agent == name) {
                Some(process) => process.cpu_seen,
                None => c.cpu_seen,
            };
            let concurrency = spec.behaviour().concurrency;
            let capacity_ns = run_ns * f64::from(concurrency.max(1));
            let busy_share = (handler_is_the_work(spec.kind()) && capacity_ns > 0.0)
                .then(|| handler_ns[p.agent.0] / capacity_ns);
            AgentReport {
                name,
                host: spec.host().to_owned(),
                kind: spec.kind().as_str(),
                planned_cpu: p.cpu.0,
                observed_cpu,
                handled: c.handled,
                failures: c.failures,
                restarts: c.restarts,
                expired: c.expired,
                concurrency,
                busy_share,
            }
        })
        .collect()
}
