//! The final report of `pinwheel run`: what started, where it ran, what
//! the load got back and how long it took, merged from every executor's
//! statistics and the native agents' counters.
//!
//! The JSON form (`--report FILE`) is for programs and CI; its top-level
//! keys are stable: `agents_planned`, `agents_started`, `startup_ms`,
//! `e2e_latency_ns` (`count`, `p50`, `p90`, `p99`, `p999`, `p9999`, `max`:
//! a [`LatencySummary`]),
//! `requests` (`offered`, `sent`, `not_sent`, `completed`, `failed`,
//! `timed_out`, `lost`),
//! `placement_violations` and `per_agent` (per agent: `name`, `host`,
//! `kind`, `planned_cpu`, `observed_cpu`, `handled`, `failures`,
//! `restarts`, `expired`, `concurrency`, `busy_share`), then `voice_latency_ns`,
//! `routes`, `coordinators`, `registries`, `stream_frames`, `router`,
//! `degraded` and `processes` (per agent process: `agent`, `pid`, `cpu`,
//! `uid`, `restarts`, `last_exit`, with `kind`, `user`, `state` and
//! `exits` by reason), and `legacy` when the legacy gateway ran (`ports`:
//! per port `messages`, `errors`, `refused`, `latency_ns`; `targets`: per
//! `zmq` agent `calls`, `errors`, `timeouts`, `reconnects`, `latency_ns`;
//! `registered`). A route's `legacy` marks a call to a `zmq` agent. The
//! text form is a summary for people.
//!
//! A placement violation is an agent whose worker found itself, with
//! `sched_getcpu`, on another CPU than the plan gave it. An agent that
//! never started has no observed CPU and is counted in `agents_started`,
//! not here.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::agents::mesh::MeshCounters;
use crate::config::AgentSet;
use crate::latency::{LatencySummary, format_ns, new_histogram};
use crate::observe::api::{AnomalySeen, VramCounts};
use crate::plan::Plan;
use crate::process::ProcessStatus;
use crate::runtime::node::RouterTotals;
use crate::runtime::remote::CallTotals;
use crate::runtime::routes::Routes;
use crate::runtime::stats::{Requests, StatsSnapshot};

mod agents;
mod legacy;

pub use self::agents::AgentReport;
pub use self::legacy::LegacyReport;

/// Routes the text report lists (the slowest by p99).
const ROUTES_SHOWN: usize = 8;

/// Titles of a latency row's columns after its name, in the text report
/// and the HTML page alike ([`latency_cells`]).
pub const LATENCY_TITLES: [&str; 5] = ["count", "p50", "p99", "p99.9", "max"];

/// A latency row's cells under [`LATENCY_TITLES`]: the count, then the
/// percentiles as people read durations. The text report and the HTML
/// page both build their rows from these, so the two show the same
/// columns.
pub fn latency_cells(p: &LatencySummary) -> [String; 5] {
    [
        p.count.to_string(),
        format_ns(p.p50),
        format_ns(p.p99),
        format_ns(p.p999),
        format_ns(p.max),
    ]
}

/// Outcomes of the load generator's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RequestsReport {
    /// Fell due before the run drained: the offered load, rate × time.
    pub offered: u64,
    /// Sent.
    pub sent: u64,
    /// Fell due but never left: every sender was busy waiting for an
    /// answer (the mesh could not keep up with the offered rate).
    pub not_sent: u64,
    /// Answered OK.
    pub completed: u64,
    /// Answered with a failure.
    pub failed: u64,
    /// Not answered in time.
    pub timed_out: u64,
    /// Sent and never accounted for (should be 0).
    pub lost: u64,
}

/// One route that carried calls.
#[derive(Debug, Clone, Serialize)]
pub struct RouteReport {
    /// Caller.
    pub from: String,
    /// Callee (`Name@host` when it is on another host).
    pub to: String,
    /// Whether the callee is on another host (the call went over NATS).
    pub remote: bool,
    /// Whether the callee is a legacy ZeroMQ agent (the call went through
    /// the gateway).
    pub legacy: bool,
    /// Round trips, nanoseconds.
    pub latency_ns: LatencySummary,
}

/// One executor's stretches off the CPU while awake
/// ([`crate::runtime::offcpu`]): time neither its work nor its sleep.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OffCpuReport {
    /// The executor's CPU.
    pub cpu: u32,
    /// Stretches of 250 us or more.
    pub count: u64,
    /// Their time in all, ns.
    pub total_ns: u64,
    /// The longest, ns.
    pub longest_ns: u64,
    /// Their time over start-up and run.
    pub share: f64,
}

impl OffCpuReport {
    /// The executors' stretches, one entry each, by CPU.
    pub fn of(routes: &Routes, snapshots: &[StatsSnapshot], run: Duration) -> Vec<Self> {
        let mut all: Vec<Self> = snapshots
            .iter()
            .map(|s| {
                let t = s.executor.off_cpu;
                Self {
                    cpu: routes
                        .executors()
                        .get(usize::from(s.executor.index))
                        .map_or(u32::from(s.executor.index), |cpu| cpu.0),
                    count: t.count,
                    total_ns: t.total_ns,
                    longest_ns: t.longest_ns,
                    share: t.total_ns as f64 / run.as_nanos().max(1) as f64,
                }
            })
            .collect();
        all.sort_by_key(|r| r.cpu);
        all
    }

    /// The executors' stretches in a line for people.
    pub fn line(all: &[Self]) -> String {
        let mut out = String::from("off CPU while awake (stretches of 250 us or more):");
        for (i, r) in all.iter().enumerate() {
            let sep = if i == 0 { " " } else { "; " };
            if r.count == 0 {
                let _ = write!(out, "{sep}CPU {} none", r.cpu);
            } else {
                let _ = write!(
                    out,
                    "{sep}CPU {} {} times, {} ({:.2}% of the run), longest {}",
                    r.cpu,
                    r.count,
                    format_ns(r.total_ns),
                    r.share * 100.0,
                    format_ns(r.longest_ns)
                );
            }
        }
        out
    }
}

/// One coordinator's counters.
#[derive(Debug, Clone, Serialize)]
pub struct CoordinatorReport {
    /// Its name.
    pub name: String,
    /// Requests queued.
    pub accepted: u64,
    /// Refused, queue full.
    pub overloaded: u64,
    /// Expired in the queue.
    pub expired: u64,
    /// Answered OK.
    pub completed: u64,
    /// Answered with a failure.
    pub failed: u64,
    /// Downstream calls retried.
    pub retries: u64,
    /// Downstream calls refused by a breaker or bulkhead.
    pub rejected: u64,
    /// Breakers opened.
    pub breaker_opened: u64,
    /// Breakers closed again.
    pub breaker_closed: u64,
}

/// One registry's counters.
#[derive(Debug, Clone, Serialize)]
pub struct RegistryReport {
    /// Its name.
    pub name: String,
    /// Entries restored from the snapshot at start.
    pub restored: u64,
    /// Entries at the end.
    pub entries: u64,
    /// Of those, up at the end.
    pub up: u64,
    /// Snapshots written.
    pub saves: u64,
    /// Snapshot reads or writes that failed.
    pub snapshot_errors: u64,
}

/// Stream frames sent by the load generator.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct FramesReport {
    /// Sent.
    pub sent: u64,
    /// Answered OK by the source.
    pub completed: u64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Agents the plan placed on this host.
    pub agents_planned: usize,
    /// Of those, started.
    pub agents_started: usize,
    /// From the command's start to the last phase started.
    pub startup_ms: f64,
    /// How long the mesh ran after start-up.
    pub run_s: f64,
    /// The load generator's request rate.
    pub rate_per_s: f64,
    /// Load generator requests, completed ones, end to end.
    pub e2e_latency_ns: LatencySummary,
    /// Request outcomes.
    pub requests: RequestsReport,
    /// Agents seen on another CPU than planned.
    pub placement_violations: usize,
    /// Each agent.
    pub per_agent: Vec<AgentReport>,
    /// Audio frame to the coordinator's answer.
    pub voice_latency_ns: LatencySummary,
    /// Routes that carried calls.
    pub routes: Vec<RouteReport>,
    /// Coordinators.
    pub coordinators: Vec<CoordinatorReport>,
    /// Registries.
    pub registries: Vec<RegistryReport>,
    /// Stream frames.
    pub stream_frames: FramesReport,
    /// Routers, summed over executors.
    pub router: RouterTotals,
    /// Each executor's stretches off the CPU while awake.
    pub off_cpu: Vec<OffCpuReport>,
    /// Why the run was degraded (privileges it did not get).
    pub degraded: Vec<String>,
    /// Calls between this host and others, in a cluster.
    pub cluster_calls: Option<CallTotals>,
    /// The legacy ZeroMQ gateway's traffic, when it ran.
    pub legacy: Option<LegacyReport>,
    /// Process and external agents: the last incarnation's pid and uid,
    /// CPU, restarts and how it last ended.
    pub processes: Vec<ProcessStatus>,
    /// Anomalies the detector raised, oldest first.
    pub anomalies: Vec<AnomalySeen>,
    /// The VRAM optimizer's counts (loads, evictions, hits, misses,
    /// waits); absent on a host without GPUs.
    pub vram: Option<VramCounts>,
    /// The merged end-to-end and voice histograms, for `pinwheel bench`'s
    /// percentile distributions; not part of the JSON.
    #[serde(skip)]
    histograms: [Histogram<u64>; 2],
}

/// What a report is made from.
#[derive(Debug)]
pub struct ReportInputs<'a> {
    /// The manifests.
    pub agents: &'a AgentSet,
    /// The plan.
    pub plan: &'a Plan,
    /// The routing table.
    pub routes: &'a Routes,
    /// Every executor's statistics.
    pub snapshots: &'a [StatsSnapshot],
    /// The native agents' counters.
    pub mesh: &'a MeshCounters,
    /// Agents started.
    pub started: usize,
    /// Start-up time.
    pub startup: Duration,
    /// Run time after start-up.
    pub run: Duration,
    /// Request rate.
    pub rate_per_s: f64,
    /// Degraded reasons.
    pub degraded: Vec<String>,
    /// Agent processes, as they ended.
    pub processes: Vec<ProcessStatus>,
    /// Anomalies seen.
    pub anomalies: Vec<AnomalySeen>,
    /// The VRAM optimizer's counts, if the host has GPUs.
    pub vram: Option<VramCounts>,
}

impl Report {
    /// Merges everything into one report.
    pub fn build(inputs: ReportInputs<'_>) -> Self {
        let snapshots = inputs.snapshots;
        let merged = |pick: fn(&StatsSnapshot) -> &Histogram<u64>| {
            let mut all = new_histogram();
            for snapshot in snapshots {
                // Same bounds everywhere, so adding cannot fail.
                let _ = all.add(pick(snapshot));
            }
            all
        };
        let (e2e, voice) = (merged(|s| &s.e2e), merged(|s| &s.voice));
        let requests = snapshots.iter().fold(Requests::default(), |a, s| Requests {
            offered: a.offered + s.requests.offered,
            sent: a.sent + s.requests.sent,
            completed: a.completed + s.requests.completed,
            failed: a.failed + s.requests.failed,
            timed_out: a.timed_out + s.requests.timed_out,
        });
        let per_agent = agents::agent_reports(&inputs);
        let placement_violations = per_agent
            .iter()
            .filter(|a| a.observed_cpu.is_some_and(|cpu| cpu != a.planned_cpu))
            .count();
        Self {
            agents_planned: inputs.plan.placements().len(),
            agents_started: inputs.started,
            startup_ms: inputs.startup.as_secs_f64() * 1e3,
            run_s: inputs.run.as_secs_f64(),
            rate_per_s: inputs.rate_per_s,
            e2e_latency_ns: LatencySummary::of(&e2e),
            requests: RequestsReport {
                offered: requests.offered,
                sent: requests.sent,
                not_sent: requests.offered.saturating_sub(requests.sent),
                completed: requests.completed,
                failed: requests.failed,
                timed_out: requests.timed_out,
                lost: requests.sent
                    - (requests.completed + requests.failed + requests.timed_out)
                        .min(requests.sent),
            },
            placement_violations,
            per_agent,
            voice_latency_ns: LatencySummary::of(&voice),
            routes: route_reports(inputs.routes, snapshots),
            coordinators: coordinator_reports(inputs.routes, inputs.mesh),
            registries: registry_reports(inputs.routes, inputs.mesh),
            stream_frames: FramesReport {
                // SYNC: Relaxed; the executors that wrote these are joined.
                sent: inputs.mesh.streams.sent.load(Ordering::Relaxed),
                // SYNC: as above.
                completed: inputs.mesh.streams.completed.load(Ordering::Relaxed),
            },
            router: router_totals(snapshots),
            off_cpu: OffCpuReport::of(inputs.routes, snapshots, inputs.startup + inputs.run),
            degraded: inputs.degraded,
            cluster_calls: None,
            legacy: None,
            processes: inputs.processes,
            anomalies: inputs.anomalies,
            vram: inputs.vram,
            histograms: [e2e, voice],
        }
    }

    /// The load generator's completed requests, end to end, as a histogram.
    pub fn e2e_histogram(&self) -> &Histogram<u64> {
        &self.histograms[0]
    }

    /// Audio frame to the coordinator's answer, as a histogram.
    pub fn voice_histogram(&self) -> &Histogram<u64> {
        &self.histograms[1]
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("the report is plain data");
        text.push('\n');
        text
    }

    /// The report for people.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let r = &self.requests;
        let _ = writeln!(
            out,
            "{}/{} agents started in {}; ran {} at {} req/s",
            self.agents_started,
            self.agents_planned,
            format_ns((self.startup_ms * 1e6) as u64),
            format_ns((self.run_s * 1e9) as u64),
            self.rate_per_s
        );
        let _ = writeln!(
            out,
            "requests: {} offered, {} sent, {} not sent, {} completed, {} failed, {} timed out, {} lost",
            r.offered, r.sent, r.not_sent, r.completed, r.failed, r.timed_out, r.lost
        );
        let _ = writeln!(
            out,
            "placement: {} violations (agents off their planned CPU)",
            self.placement_violations
        );
        let _ = writeln!(out, "{}", OffCpuReport::line(&self.off_cpu));
        let [count, p50, p99, p999, max] = LATENCY_TITLES;
        let _ = writeln!(
            out,
            "\n{:<48} {count:>8} {p50:>10} {p99:>10} {p999:>10} {max:>10}",
            "latency"
        );
        let mut row = |name: &str, p: &LatencySummary| {
            let [count, p50, p99, p999, max] = latency_cells(p);
            let _ = writeln!(
                out,
                "{name:<48} {count:>8} {p50:>10} {p99:>10} {p999:>10} {max:>10}"
            );
        };
        row("request, end to end", &self.e2e_latency_ns);
        row("voice: audio frame to response", &self.voice_latency_ns);
        self.route_rows(&mut row);
        self.legacy_rows(&mut row);
        if self.legacy.is_some() {
            out.push('\n');
        }
        self.legacy_text(&mut out);
        self.cluster_text(&mut out);
        self.native_text(&mut out);
        out
    }

    /// The routes' latency rows: every remote and legacy route, then the
    /// slowest ring ones.
    fn route_rows(&self, row: &mut impl FnMut(&str, &LatencySummary)) {
        let mut slowest: Vec<&RouteReport> = self.routes.iter().collect();
        slowest.sort_by_key(|r| std::cmp::Reverse(r.latency_ns.p99));
        let off_ring = slowest.iter().filter(|r| r.remote || r.legacy);
        let ring = slowest
            .iter()
            .filter(|r| !r.remote && !r.legacy)
            .take(ROUTES_SHOWN);
        for route in off_ring.chain(ring) {
            let mark = match (route.remote, route.legacy) {
                (true, _) => " (remote)",
                (_, true) => " (zmq)",
                _ => "",
            };
            row(
                &format!("{} -> {}{mark}", route.from, route.to),
                &route.latency_ns,
            );
        }
    }

    fn cluster_text(&self, out: &mut String) {
        let Some(c) = &self.cluster_calls else { return };
        let _ = writeln!(
            out,
            "\ncluster calls: {} sent, {} completed, {} timed out, {} lost with their host, {} refused by a breaker, {} failed; {} served for other hosts, {} answered, {} replies dropped",
            c.sent,
            c.completed,
            c.timed_out,
            c.host_lost,
            c.breaker_open,
            c.failed,
            c.served,
            c.answered,
            c.dropped_replies
        );
    }

    fn native_text(&self, out: &mut String) {
        for c in &self.coordinators {
            let _ = writeln!(
                out,
                "\n{}: {} accepted, {} completed, {} failed, {} expired, {} overloaded, {} retries, {} rejected, breakers opened {} closed {}",
                c.name,
                c.accepted,
                c.completed,
                c.failed,
                c.expired,
                c.overloaded,
                c.retries,
                c.rejected,
                c.breaker_opened,
                c.breaker_closed
            );
        }
        for g in &self.registries {
            let _ = writeln!(
                out,
                "{}: {} agents registered ({} up), {} restored from the snapshot, {} saves, {} snapshot errors",
                g.name, g.entries, g.up, g.restored, g.saves, g.snapshot_errors
            );
        }
        if let Some(v) = &self.vram {
            let _ = writeln!(
                out,
                "vram: {} loads, {} preloads, {} evictions, {} hits, {} misses, {} waited (p99 {}), {} denied",
                v.loads,
                v.preloads,
                v.evictions,
                v.hits,
                v.misses,
                v.waits,
                format_ns(v.wait_p99_ns),
                v.denied
            );
        }
        for a in &self.anomalies {
            let until = a
                .cleared_s
                .map_or_else(|| "the end".to_owned(), |s| format!("{s:.1} s"));
            let _ = writeln!(
                out,
                "anomaly: {} {} from {:.1} s to {until}",
                a.agent,
                a.signal.as_str(),
                a.raised_s
            );
        }
        if !self.degraded.is_empty() {
            let _ = writeln!(out, "degraded: {}", self.degraded.join(", "));
        }
    }
}

fn route_reports(routes: &Routes, snapshots: &[StatsSnapshot]) -> Vec<RouteReport> {
    snapshots
        .iter()
        .flat_map(|s| s.routes.iter())
        .map(|(from, to, histogram)| {
            let (callee, remote) = routes.callee(*to);
            RouteReport {
                from: routes.name(*from).to_owned(),
                to: callee,
                remote,
                legacy: routes.is_legacy(*to),
                latency_ns: LatencySummary::of(histogram),
            }
        })
        .collect()
}

fn coordinator_reports(routes: &Routes, mesh: &MeshCounters) -> Vec<CoordinatorReport> {
    // SYNC (every load below): Relaxed; the executors that wrote these
    // counters are joined.
    let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    mesh.coordinators
        .iter()
        .map(|(id, c)| CoordinatorReport {
            name: routes.name(*id).to_owned(),
            accepted: get(&c.accepted),
            overloaded: get(&c.overloaded),
            expired: get(&c.expired),
            completed: get(&c.completed),
            failed: get(&c.failed),
            retries: get(&c.retries),
            rejected: get(&c.rejected),
            breaker_opened: get(&c.breaker_opened),
            breaker_closed: get(&c.breaker_closed),
        })
        .collect()
}

fn registry_reports(routes: &Routes, mesh: &MeshCounters) -> Vec<RegistryReport> {
    // SYNC (every load below): Relaxed; the executors that wrote these
    // counters are joined.
    let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    mesh.registries
        .iter()
        .map(|(id, g)| RegistryReport {
            name: routes.name(*id).to_owned(),
            restored: get(&g.restored),
            entries: get(&g.entries),
            up: get(&g.up),
            saves: get(&g.saves),
            snapshot_errors: get(&g.snapshot_errors),
        })
        .collect()
}

fn router_totals(snapshots: &[StatsSnapshot]) -> RouterTotals {
    snapshots
        .iter()
        .fold(RouterTotals::default(), |a, s| RouterTotals {
            local: a.local + s.router.local,
            remote: a.remote + s.router.remote,
            accepted: a.accepted + s.router.accepted,
            dropped: a.dropped + s.router.dropped,
            late_replies: a.late_replies + s.router.late_replies,
            unroutable: a.unroutable + s.router.unroutable,
            cluster: a.cluster + s.router.cluster,
            parks: a.parks + s.router.parks,
            naps: a.naps + s.router.naps,
            ring_backlog: a.ring_backlog + s.router.ring_backlog,
            reactor_passes: a.reactor_passes + s.router.reactor_passes,
            late_passes: a.late_passes + s.router.late_passes,
        })
}
