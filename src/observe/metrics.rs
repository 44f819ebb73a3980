//! `/metrics`: the daemon in Prometheus text format.
//!
//! One [`prometheus_client`] collector reads the [`DaemonView`] on each
//! scrape, so nothing is counted twice and the data plane keeps no
//! Prometheus state of its own. Latencies are HdrHistograms in the
//! executors; a scrape turns each into a Prometheus histogram with fixed
//! bucket bounds ([`BUCKETS_S`], 1 µs to 10 s), which is what dashboards
//! and `histogram_quantile` expect. Everything is in base units: seconds,
//! and `_total` for counters.
//!
//! | metric | labels |
//! | --- | --- |
//! | `pinwheel_agent_handler_seconds` (histogram) | agent, cpu |
//! | `pinwheel_agent_messages_total`, `_failures_total`, `_restarts_total`, `_expired_total` | agent |
//! | `pinwheel_agent_isolated` (1 while the supervisor holds it out) | agent |
//! | `pinwheel_agent_process_restarts_total` | agent |
//! | `pinwheel_agent_process_exits_total` | agent, reason (`exit_ok`, `exit_error`, `signal`, `corrupt`, `silent`, `no_hello`, `spawn_failed`) |
//! | `pinwheel_agent_anomaly` (1 while the signal is anomalous) | agent, signal |
//! | `pinwheel_route_call_seconds` (histogram) | from, to, path (`local`, `remote`: over NATS to another host, or `legacy`: through the gateway to a `zmq` agent) |
//! | `pinwheel_legacy_messages_total`, `pinwheel_legacy_errors_total` (with the gateway) | port, agent, kind (`rep`, `pub`) |
//! | `pinwheel_legacy_request_seconds` (histogram) | port, agent, kind |
//! | `pinwheel_legacy_zmq_calls_total` | agent, outcome (sent, errors, timed_out, reconnects) |
//! | `pinwheel_legacy_zmq_call_seconds` (histogram) | agent |
//! | `pinwheel_requests_total` | outcome |
//! | `pinwheel_cluster_calls_total` (in a cluster) | outcome (sent, completed, timed_out, host_lost, breaker_open, failed, served, answered, dropped_replies, bad) |
//! | `pinwheel_request_e2e_seconds` (histogram) | |
//! | `pinwheel_ring_backlog_slots`, `pinwheel_ring_parks_total`, `pinwheel_router_dropped_total`, `pinwheel_router_messages_total` | cpu (and path) |
//! | `pinwheel_executor_busy_seconds_total`, `_tasks_total`, `_stalls_total`, `_heartbeat_age_seconds` | cpu |
//! | `pinwheel_perf_<event>_total` | cpu |
//! | `pinwheel_health_degraded` | reason |
//! | `pinwheel_vram_budget_mib`, `pinwheel_vram_planned_mib` | gpu |
//! | `pinwheel_cluster_host_up` (0 once lost), `pinwheel_cluster_host_latency_seconds` | host |
//!
//! The GPU readings themselves (`DCGM_FI_DEV_*`) and the optimizer's
//! counters (`pinwheel_vram_*_total`) are registered by
//! [`crate::gpu::metrics`].

mod legacy;

use std::sync::Arc;

use hdrhistogram::Histogram;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::api::Signal;
use super::view::DaemonView;
use crate::runtime::ctx::now_ns;

/// Upper bounds of the exported histogram buckets, seconds.
pub const BUCKETS_S: [f64; 22] = [
    1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1,
    0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

type Labels = Vec<(&'static str, String)>;

/// Registers the daemon's collector in `registry`.
pub fn register(registry: &mut Registry, view: Arc<DaemonView>) {
    registry.register_collector(Box::new(DaemonCollector { view }));
}

/// Encodes `registry` in Prometheus text format.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; an encoder error would be a bug in
    // a collector, and an empty scrape says so.
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        out.clear();
    }
    out
}

#[derive(Debug)]
struct DaemonCollector {
    view: Arc<DaemonView>,
}

impl Collector for DaemonCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        agents(&self.view, &mut encoder)?;
        processes(&self.view, &mut encoder)?;
        routes(&self.view, &mut encoder)?;
        executors(&self.view, &mut encoder)?;
        perf(&self.view, &mut encoder)?;
        health(&self.view, &mut encoder)?;
        vram(&self.view, &mut encoder)?;
        cluster(&self.view, &mut encoder)
    }
}

/// A precomputed histogram: an HdrHistogram in Prometheus buckets.
#[derive(Debug)]
struct Buckets {
    sum_s: f64,
    count: u64,
    buckets: Vec<(f64, u64)>,
}

impl Buckets {
    fn of(histogram: &Histogram<u64>) -> Self {
        let mut buckets: Vec<(f64, u64)> = BUCKETS_S.iter().map(|&b| (b, 0)).collect();
        let mut sum_ns = 0f64;
        for value in histogram.iter_recorded() {
            let at = value.value_iterated_to();
            let count = value.count_at_value();
            sum_ns += histogram.median_equivalent(at) as f64 * count as f64;
            // The bucket holds every value of the histogram's bin.
            let s = histogram.lowest_equivalent(at) as f64 / 1e9;
            // Per-bucket counts: the text encoder makes them cumulative.
            if let Some(bucket) = buckets.iter_mut().find(|(bound, _)| s <= *bound) {
                bucket.1 += count;
            }
        }
        let bounded: u64 = buckets.iter().map(|(_, c)| c).sum();
        buckets.push((f64::INFINITY, histogram.len() - bounded));
        Self {
            sum_s: sum_ns / 1e9,
            count: histogram.len(),
            buckets,
        }
    }

    fn merge(&mut self, other: &Buckets) {
        self.sum_s += other.sum_s;
        self.count += other.count;
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            mine.1 += theirs.1;
        }
    }
}

/// One metric family written through a descriptor.
fn family<'a>(
    encoder: &'a mut DescriptorEncoder,
    name: &'static str,
    help: &str,
    kind: MetricType,
) -> Result<prometheus_client::encoding::MetricEncoder<'a>, std::fmt::Error> {
    encoder.encode_descriptor(name, help, None, kind)
}

fn counters(
    encoder: &mut DescriptorEncoder,
    name: &'static str,
    help: &str,
    rows: &[(Labels, u64)],
) -> Result<(), std::fmt::Error> {
    let mut metric = family(encoder, name, help, MetricType::Counter)?;
    for (labels, value) in rows {
        metric
            .encode_family(labels)?
            .encode_counter::<NoLabelSet, _, u64>(value, None)?;
    }
    Ok(())
}

fn gauges(
    encoder: &mut DescriptorEncoder,
    name: &'static str,
    help: &str,
    rows: &[(Labels, f64)],
) -> Result<(), std::fmt::Error> {
    let mut metric = family(encoder, name, help, MetricType::Gauge)?;
    for (labels, value) in rows {
        metric.encode_family(labels)?.encode_gauge(value)?;
    }
    Ok(())
}

fn histograms(
    encoder: &mut DescriptorEncoder,
    name: &'static str,
    help: &str,
    rows: &[(Labels, Buckets)],
) -> Result<(), std::fmt::Error> {
    let mut metric = family(encoder, name, help, MetricType::Histogram)?;
    for (labels, b) in rows {
        metric
            .encode_family(labels)?
            .encode_histogram::<NoLabelSet>(b.sum_s, b.count, &b.buckets, None)?;
    }
    Ok(())
}

fn agents(view: &DaemonView, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let live = view.live();
    let mut service = Vec::new();
    for snapshot in &live.snapshots {
        for (id, histogram) in &snapshot.service {
            let name = view.routes.name(*id).to_owned();
            let cpu = view
                .executor_cpus
                .get(usize::from(view.routes.executor_of(*id)))
                .map_or_else(String::new, u32::to_string);
            service.push((vec![("agent", name), ("cpu", cpu)], Buckets::of(histogram)));
        }
    }
    histograms(
        encoder,
        "pinwheel_agent_handler_seconds",
        "Time an agent's handler ran per message.",
        &service,
    )?;
    let per_agent = |get: fn(&super::api::AgentStatus) -> u64| -> Vec<(Labels, u64)> {
        live.agents
            .iter()
            .map(|a| (vec![("agent", a.name.clone())], get(a)))
            .collect()
    };
    counters(
        encoder,
        "pinwheel_agent_messages",
        "Messages an agent handled.",
        &per_agent(|a| a.handled),
    )?;
    counters(
        encoder,
        "pinwheel_agent_failures",
        "Handler failures and overruns.",
        &per_agent(|a| a.failures),
    )?;
    counters(
        encoder,
        "pinwheel_agent_restarts",
        "Restarts after the supervisor isolated the agent.",
        &per_agent(|a| a.restarts),
    )?;
    let isolated: Vec<(Labels, f64)> = live
        .agents
        .iter()
        .map(|a| {
            let held = a.state == super::api::AgentState::Isolated;
            (vec![("agent", a.name.clone())], f64::from(u8::from(held)))
        })
        .collect();
    gauges(
        encoder,
        "pinwheel_agent_isolated",
        "1 while the supervisor holds the agent out after failures.",
        &isolated,
    )?;
    let mut anomaly: Vec<(Labels, f64)> = Vec::new();
    for a in &live.agents {
        for signal in [Signal::Latency, Signal::Errors] {
            let labels = vec![
                ("agent", a.name.clone()),
                ("signal", signal.as_str().to_owned()),
            ];
            anomaly.push((labels, f64::from(u8::from(a.anomalies.contains(&signal)))));
        }
    }
    gauges(
        encoder,
        "pinwheel_agent_anomaly",
        "1 while the anomaly detector holds the agent's signal (latency, errors) anomalous.",
        &anomaly,
    )
}

/// Process agents: restarts, and exits by reason.
fn processes(view: &DaemonView, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let live = view.live();
    let restarts: Vec<(Labels, u64)> = live
        .processes
        .iter()
        .map(|p| (vec![("agent", p.agent.clone())], p.restarts))
        .collect();
    counters(
        encoder,
        "pinwheel_agent_process_restarts",
        "Restarts of an agent's process by its supervisor.",
        &restarts,
    )?;
    let exits: Vec<(Labels, u64)> = live
        .processes
        .iter()
        .flat_map(|p| {
            p.exits.iter().map(|(reason, n)| {
                (
                    vec![("agent", p.agent.clone()), ("reason", reason.clone())],
                    *n,
                )
            })
        })
        .collect();
    counters(
        encoder,
        "pinwheel_agent_process_exits",
        "Ends of an agent's process, by reason.",
        &exits,
    )
}

fn routes(view: &DaemonView, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let live = view.live();
    let mut calls = Vec::new();
    let mut e2e: Option<Buckets> = None;
    let (mut sent, mut completed, mut failed, mut timed_out) = (0, 0, 0, 0);
    for snapshot in &live.snapshots {
        for (from, to, histogram) in &snapshot.routes {
            let (callee, path) = path_of(view, *to);
            let labels = vec![
                ("from", view.routes.name(*from).to_owned()),
                ("to", callee),
                ("path", path.to_owned()),
            ];
            calls.push((labels, Buckets::of(histogram)));
        }
        let buckets = Buckets::of(&snapshot.e2e);
        match &mut e2e {
            Some(total) => total.merge(&buckets),
            None => e2e = Some(buckets),
        }
        let r = snapshot.requests;
        (sent, completed, failed, timed_out) = (
            sent + r.sent,
            completed + r.completed,
            failed + r.failed,
            timed_out + r.timed_out,
        );
    }
    histograms(
        encoder,
        "pinwheel_route_call_seconds",
        "Round trip of a call from one agent to another.",
        &calls,
    )?;
    let e2e: Vec<(Labels, Buckets)> = e2e.into_iter().map(|b| (Vec::new(), b)).collect();
    histograms(
        encoder,
        "pinwheel_request_e2e_seconds",
        "Load generator requests, sent to answered.",
        &e2e,
    )?;
    let outcome = |o: &str, v: u64| (vec![("outcome", o.to_owned())], v);
    counters(
        encoder,
        "pinwheel_requests",
        "Load generator requests by outcome.",
        &[
            outcome("sent", sent),
            outcome("completed", completed),
            outcome("failed", failed),
            outcome("timed_out", timed_out),
        ],
    )?;
    cluster_calls(view, encoder)?;
    legacy::legacy(view, encoder)
}

/// A callee's name and the path calls to it take: `local`, `remote`
/// (NATS) or `legacy` (the gateway).
fn path_of(view: &DaemonView, to: pinwheel_ipc::wire::AgentId) -> (String, &'static str) {
    let (callee, remote) = view.routes.callee(to);
    let path = match (remote, view.routes.is_legacy(to)) {
        (true, _) => "remote",
        (_, true) => "legacy",
        _ => "local",
    };
    (callee, path)
}

/// The cluster link's call counters, in a cluster.
fn cluster_calls(
    view: &DaemonView,
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    let Some(stats) = view.cluster_calls() else {
        return Ok(());
    };
    let c = stats.totals();
    let outcome = |o: &str, v: u64| (vec![("outcome", o.to_owned())], v);
    counters(
        encoder,
        "pinwheel_cluster_calls",
        "Calls between this host and others, over NATS, by outcome.",
        &[
            outcome("sent", c.sent),
            outcome("completed", c.completed),
            outcome("timed_out", c.timed_out),
            outcome("host_lost", c.host_lost),
            outcome("breaker_open", c.breaker_open),
            outcome("failed", c.failed),
            outcome("served", c.served),
            outcome("answered", c.answered),
            outcome("dropped_replies", c.dropped_replies),
            outcome("bad", c.bad),
        ],
    )
}

fn executors(view: &DaemonView, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let live = view.live();
    let cpu = |i: usize| -> Labels {
        vec![(
            "cpu",
            view.executor_cpus
                .get(i)
                .map_or_else(String::new, u32::to_string),
        )]
    };
    let mut busy = Vec::new();
    let mut tasks = Vec::new();
    let mut backlog = Vec::new();
    let mut parks = Vec::new();
    let mut dropped = Vec::new();
    let mut messages = Vec::new();
    for s in &live.snapshots {
        let i = usize::from(s.executor.index);
        busy.push((cpu(i), s.executor.busy_ns as f64 / 1e9));
        tasks.push((cpu(i), s.executor.tasks));
        backlog.push((cpu(i), s.router.ring_backlog as f64));
        parks.push((cpu(i), s.router.parks));
        dropped.push((cpu(i), s.router.dropped));
        for (path, v) in [
            ("local", s.router.local),
            ("remote", s.router.remote),
            ("accepted", s.router.accepted),
        ] {
            let mut labels = cpu(i);
            labels.push(("path", path.to_owned()));
            messages.push((labels, v));
        }
    }
    counters(
        encoder,
        "pinwheel_executor_tasks",
        "Tasks the executor ran.",
        &tasks,
    )?;
    let busy_rows: Vec<(Labels, f64)> = busy;
    let mut metric = family(
        encoder,
        "pinwheel_executor_busy_seconds",
        "Time the executor ran tasks or polled I/O (a spinning pump counts).",
        MetricType::Counter,
    )?;
    for (labels, value) in &busy_rows {
        metric
            .encode_family(labels)?
            .encode_counter::<NoLabelSet, _, f64>(value, None)?;
    }
    gauges(
        encoder,
        "pinwheel_ring_backlog_slots",
        "Slots waiting in the executor's incoming rings after the pump's last pass.",
        &backlog,
    )?;
    counters(
        encoder,
        "pinwheel_ring_parks",
        "Times the executor's pump parked on its doorbell (each is a wake-up later).",
        &parks,
    )?;
    counters(
        encoder,
        "pinwheel_router_dropped",
        "Messages dropped for lack of room (inbox, pool or ring).",
        &dropped,
    )?;
    counters(
        encoder,
        "pinwheel_router_messages",
        "Messages routed: to a local agent, into a ring, or accepted from a ring.",
        &messages,
    )?;
    let stalls: Vec<(Labels, u64)> = live
        .executors
        .iter()
        .enumerate()
        .map(|(i, e)| (cpu(i), e.stalls))
        .collect();
    counters(
        encoder,
        "pinwheel_executor_stalls",
        "Times the watchdog found the executor's heartbeat too old.",
        &stalls,
    )?;
    let nudges: Vec<(Labels, u64)> = view
        .control
        .nudges()
        .into_iter()
        .enumerate()
        .map(|(i, n)| (cpu(i), n))
        .collect();
    counters(
        encoder,
        "pinwheel_executor_nudges",
        "Times the wake-up guard woke the executor because its ticker was late (nudges, and interrupts of a wait it slept through).",
        &nudges,
    )?;
    let now = now_ns();
    let ages: Vec<(Labels, f64)> = view
        .control
        .live()
        .iter()
        .enumerate()
        // SYNC: Relaxed; a heartbeat is a clock value, read for display.
        .map(|(i, l)| {
            let beat = l.heartbeat_ns.load(std::sync::atomic::Ordering::Relaxed);
            (cpu(i), now.saturating_sub(beat) as f64 / 1e9)
        })
        .collect();
    gauges(
        encoder,
        "pinwheel_executor_heartbeat_age_seconds",
        "Time since the executor's ticker last ran.",
        &ages,
    )
}

fn perf(view: &DaemonView, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let readings = view.perf.read();
    for event in super::perf::PerfEvent::ALL {
        let rows: Vec<(Labels, u64)> = readings
            .iter()
            .filter_map(|r| {
                let (_, v) = r.counts.iter().find(|(e, _)| *e == event)?;
                Some((vec![("cpu", r.cpu.0.to_string())], *v))
            })
            .collect();
        if rows.is_empty() {
            continue;
        }
        counters(
            encoder,
            perf_name(event),
            "perf event count on the executor's thread.",
            &rows,
        )?;
    }
    Ok(())
}

fn perf_name(event: super::perf::PerfEvent) -> &'static str {
    use super::perf::PerfEvent::*;
    match event {
        Cycles => "pinwheel_perf_cycles",
        Instructions => "pinwheel_perf_instructions",
        CacheMisses => "pinwheel_perf_cache_misses",
        TaskClock => "pinwheel_perf_task_clock_ns",
        ContextSwitches => "pinwheel_perf_context_switches",
        CpuMigrations => "pinwheel_perf_cpu_migrations",
        PageFaults => "pinwheel_perf_page_faults",
    }
}

fn health(view: &DaemonView, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let rows: Vec<(Labels, f64)> = view
        .health
        .names()
        .into_iter()
        .map(|reason| (vec![("reason", reason)], 1.0))
        .collect();
    gauges(
        encoder,
        "pinwheel_health_degraded",
        "1 for each reason the daemon is degraded.",
        &rows,
    )
}

fn vram(view: &DaemonView, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let gpus = view.gpus().gpus;
    let per_gpu = |get: fn(&super::api::GpuStatus) -> u64| -> Vec<(Labels, f64)> {
        gpus.iter()
            .map(|g| (vec![("gpu", g.gpu.to_string())], get(g) as f64))
            .collect()
    };
    gauges(
        encoder,
        "pinwheel_vram_budget_mib",
        "The most VRAM the optimizer places on the GPU ([vram] budget), MiB.",
        &per_gpu(|g| g.budget_mib),
    )?;
    gauges(
        encoder,
        "pinwheel_vram_planned_mib",
        "VRAM the optimizer has placed on the GPU, MiB.",
        &per_gpu(|g| g.planned_mib),
    )
}

fn cluster(view: &DaemonView, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let hosts = view.cluster().hosts;
    let up: Vec<(Labels, f64)> = hosts
        .iter()
        .map(|h| {
            let alive = h.state != super::api::HostState::Lost;
            (vec![("host", h.host.clone())], f64::from(u8::from(alive)))
        })
        .collect();
    gauges(
        encoder,
        "pinwheel_cluster_host_up",
        "1 while the host is heard (up or degraded), 0 once it is lost.",
        &up,
    )?;
    let latency: Vec<(Labels, f64)> = hosts
        .iter()
        .map(|h| (vec![("host", h.host.clone())], h.latency_us as f64 / 1e6))
        .collect();
    gauges(
        encoder,
        "pinwheel_cluster_host_latency_seconds",
        "Latency of the cluster link to the host (0 for this host).",
        &latency,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_sample_lands_in_the_first_bucket_that_holds_it() {
        let mut h = crate::latency::new_histogram();
        h.record(500).unwrap(); // 0.5 us
        h.record(3_000).unwrap(); // 3 us
        h.record(2_000_000).unwrap(); // 2 ms
        let b = Buckets::of(&h);
        assert_eq!(b.count, 3);
        assert_eq!(b.buckets[0], (1e-6, 1));
        let at = |bound: f64| b.buckets.iter().find(|(x, _)| *x == bound).unwrap().1;
        assert_eq!(at(5e-6), 1);
        assert_eq!(at(1e-3), 0);
        assert_eq!(at(2e-3), 1);
        assert_eq!(b.buckets.last().unwrap(), &(f64::INFINITY, 0));
        assert!((b.sum_s - 0.0020035).abs() < 1e-5, "{}", b.sum_s);
    }
}
