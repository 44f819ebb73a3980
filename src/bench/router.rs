//! `pinwheel bench router`: what the runtime adds to a message on top of
//! the ring it travels on.
//!
//! Three round trips are timed in one run, on the same two CPUs with the
//! same wait strategy and body size:
//!
//! * the bare ring: two pinned threads, one envelope each way, encoded and
//!   checked (`bench ring --threads`'s ping-pong);
//! * a runtime call across CPUs: an agent on executor A calls an agent on
//!   executor B with [`Ctx::call`] and B's worker replies; each way the
//!   message is encoded by the router, crosses the ring, is taken by the
//!   pump, checked, copied into a pool frame, queued in the inbox by
//!   priority, and handed to a worker task (the reply completes a pending
//!   call and wakes the caller's task);
//! * a runtime call on one CPU: the same through the local queue only.
//!
//! Per-hop overhead is half the difference between the cross-CPU call and
//! the bare ring at the same percentile.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::BenchError;
use super::harness::{BenchAgent as AgentSpec, Harness};
use super::json::render_json;
use super::report::wait_name;
use super::ring::RingBench;
use crate::config::{AgentSet, SourceFile};
use crate::latency::{LatencySummary, new_histogram, record_duration};
use crate::runtime::RuntimeError;
use crate::runtime::agent::{Agent, Message};
use crate::runtime::ctx::Ctx;
use crate::runtime::node::STATUS_OK;
use crate::runtime::stats::StatsSnapshot;
use crate::topology;
use crate::topology::{ClassSettings, CpuId, TaskQueue};
use pinwheel_ipc::ring::WaitStrategy;
use pinwheel_ipc::wire::{AgentId, Priority};

const FAR: AgentId = AgentId(1);
const NEAR: AgentId = AgentId(2);
/// Longest the whole runtime part may take before the bench gives up.
const RUN_LIMIT: Duration = Duration::from_secs(300);

/// What to run.
#[derive(Debug, Clone)]
pub struct RouterBench {
    /// Caller CPU, then callee CPU.
    pub cpus: [CpuId; 2],
    /// How consumers (ring threads, executors' pumps) wait.
    pub wait: WaitStrategy,
    /// Request body bytes.
    pub size: usize,
    /// Round trips per case.
    pub msgs: u64,
}

/// The three cases' round trips.
#[derive(Debug)]
pub struct RouterReport {
    /// What ran.
    pub bench: RouterBench,
    /// The bare ring.
    pub ring: Histogram<u64>,
    /// A runtime call across CPUs.
    pub far: Histogram<u64>,
    /// A runtime call on one CPU.
    pub near: Histogram<u64>,
    /// What the executors did meanwhile (both runtime cases).
    pub executors: ExecutorWork,
}

/// What the executors did during the runtime cases: where a message's
/// time can go besides the ring and the handler.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ExecutorWork {
    /// Runtime calls made (both cases, warm-up included).
    pub calls: u64,
    /// glommio reactor passes the pumps let happen while idle.
    pub reactor_passes: u64,
    /// Reactor passes that fell between a ring message and its handler.
    pub late_passes: u64,
    /// Times a pump parked on its bell.
    pub parks: u64,
    /// glommio task-queue selections.
    pub scheduler_runs: u64,
    /// Tasks glommio ran.
    pub tasks: u64,
}

impl ExecutorWork {
    pub(super) fn of(snapshots: &[StatsSnapshot], calls: u64) -> Self {
        snapshots.iter().fold(
            Self {
                calls,
                ..Self::default()
            },
            |a, s| Self {
                calls: a.calls,
                reactor_passes: a.reactor_passes + s.router.reactor_passes,
                late_passes: a.late_passes + s.router.late_passes,
                parks: a.parks + s.router.parks,
                scheduler_runs: a.scheduler_runs + s.executor.scheduler_runs,
                tasks: a.tasks + s.executor.tasks,
            },
        )
    }

    /// `n` per 1000 calls.
    pub(super) fn per_1000(&self, n: u64) -> f64 {
        n as f64 * 1000.0 / self.calls.max(1) as f64
    }
}

impl RouterBench {
    /// Runs the three cases.
    pub fn run(&self) -> Result<RouterReport, BenchError> {
        let ring = RingBench {
            cpus: self.cpus,
            peer_exe: None,
            wait: self.wait,
            size: self.size,
            msgs: self.msgs,
            spin_us: 50,
        }
        .round_trips()?;
        let ([far, near], executors) = self.runtime_calls()?;
        Ok(RouterReport {
            bench: self.clone(),
            ring,
            far,
            near,
            executors,
        })
    }

    /// Starts executors on the two CPUs and times calls from the caller: a
    /// caller on the first CPU, a far echo on the second, a near echo on
    /// the first.
    pub(super) fn runtime_calls(&self) -> Result<([Histogram<u64>; 2], ExecutorWork), BenchError> {
        let [a, b] = self.cpus;
        let harness = Harness {
            cpus: vec![a, b],
            settings: ClassSettings {
                wait: self.wait,
                spin_before_park_us: 50,
                preempt_timer_us: 100,
                task_queue: TaskQueue::Latency,
                rt_priority: 0,
            },
            agents: vec![
                AgentSpec {
                    name: "Caller",
                    cpu: a,
                    calls: &["Far", "Near"],
                },
                AgentSpec {
                    name: "Far",
                    cpu: b,
                    calls: &[],
                },
                AgentSpec {
                    name: "Near",
                    cpu: a,
                    calls: &[],
                },
            ],
            privileged: false,
            limit: RUN_LIMIT,
        };
        let results = Arc::new(Results::default());
        let make = {
            let (results, bench) = (Arc::clone(&results), self.clone());
            Arc::new(move |id: AgentId| match id.0 {
                0 => BenchAgent::Caller(Arc::clone(&results), bench.clone()),
                _ => BenchAgent::Echo,
            })
        };
        let snapshots = harness.run(make, &results.done)?;
        let mut slots = results.histograms.lock().map_err(|_| BenchError::Peer {
            reason: "the caller panicked".into(),
        })?;
        let calls = 2 * (self.msgs + warmup(self.msgs));
        match (slots[0].take(), slots[1].take()) {
            (Some(far), Some(near)) => Ok(([far, near], ExecutorWork::of(&snapshots, calls))),
            _ => Err(BenchError::Peer {
                reason: "a runtime call failed or the run hit its time limit".into(),
            }),
        }
    }
}

/// Untimed calls before the timed ones.
fn warmup(count: u64) -> u64 {
    (count / 10).min(10_000)
}

/// A bench's topology (one uniform class on `cpus`, waiting by `wait`)
/// and its manifest from `manifest`.
pub(super) fn bench_mesh(
    cpus: [CpuId; 2],
    wait: WaitStrategy,
    manifest: &str,
) -> Result<(topology::Topology, AgentSet), BenchError> {
    let [a, b] = cpus;
    let wait = wait_name(wait);
    let topology = format!(
        "schema = 1\n[host]\nname = \"bench\"\ncpus = {{ uniform = \"{a},{b}\" }}\n[class.uniform]\nwait = \"{wait}\"\npreempt_timer_us = 100\nrt_priority = 0\n"
    );
    let invalid = |err: String| BenchError::Peer {
        reason: format!("bench mesh: {err}"),
    };
    let file = SourceFile::from_text(Path::new("bench-topology.toml"), &topology);
    let raw = file.parse().map_err(|e| invalid(e.to_string()))?;
    let topology = topology::validate(raw, &file, None).map_err(|e| invalid(e.to_string()))?;
    let agents = AgentSet::from_sources(&[SourceFile::from_text(
        Path::new("bench-agents.toml"),
        manifest,
    )])
    .map_err(|e| invalid(e.to_string()))?;
    Ok((topology, agents))
}

/// What the caller leaves for the bench's thread.
#[derive(Debug, Default)]
struct Results {
    done: AtomicBool,
    histograms: Mutex<[Option<Histogram<u64>>; 2]>,
}

enum BenchAgent {
    Caller(Arc<Results>, RouterBench),
    Echo,
}

/// Times `count` calls to `to` after a warm-up; `None` if one fails.
pub(super) async fn time_calls(
    ctx: &Ctx,
    to: AgentId,
    body: &[u8],
    count: u64,
) -> Option<Histogram<u64>> {
    let warmup = warmup(count);
    let mut histogram = new_histogram();
    for i in 0..warmup + count {
        let start = Instant::now();
        let reply = ctx
            .call(to, 1, body, Priority::High, Duration::from_secs(5))
            .await
            .ok()?;
        if reply.head().code != STATUS_OK || reply.body().len() != body.len() {
            return None;
        }
        if i >= warmup {
            record_duration(&mut histogram, start.elapsed());
        }
    }
    Some(histogram)
}

impl Agent for BenchAgent {
    async fn handle(&self, ctx: &Ctx, msg: &Message) -> Result<(), RuntimeError> {
        let mut body = [0u8; 1024];
        let len = {
            let bytes = msg.body();
            let len = bytes.len().min(body.len());
            body[..len].copy_from_slice(&bytes[..len]);
            len
        };
        ctx.reply(msg, STATUS_OK, &body[..len]).await
    }

    async fn run(&self, ctx: &Ctx) {
        let BenchAgent::Caller(results, bench) = self else {
            return;
        };
        let body = vec![0x5a; bench.size];
        let far = time_calls(ctx, FAR, &body, bench.msgs).await;
        let near = time_calls(ctx, NEAR, &body, bench.msgs).await;
        if let Ok(mut slots) = results.histograms.lock() {
            *slots = [far, near];
        }
        // SYNC: Release pairs with the Acquire load in runtime_calls.
        results.done.store(true, Ordering::Release);
    }
}

impl RouterReport {
    fn overhead_ns(&self, quantile: f64) -> i64 {
        let far = self.far.value_at_quantile(quantile) as i64;
        let ring = self.ring.value_at_quantile(quantile) as i64;
        (far - ring) / 2
    }

    /// The report as a table.
    pub fn to_table(&self) -> String {
        let b = &self.bench;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "pinwheel bench router: CPUs {} and {}, {}-byte bodies, {} round trips per case",
            b.cpus[0], b.cpus[1], b.size, b.msgs
        );
        super::percentile_titles(&mut out, "round trip", 34);
        let _ = writeln!(out);
        for (name, histogram) in [
            ("bare ring (2 threads)", &self.ring),
            ("runtime call, across CPUs", &self.far),
            ("runtime call, same CPU", &self.near),
        ] {
            super::percentile_cells(&mut out, name, 34, histogram);
            let _ = writeln!(out);
        }
        let _ = writeln!(
            out,
            "\nrouter overhead per hop (cross-CPU call minus bare ring, halved): p50 {} ns, p99 {} ns",
            self.overhead_ns(0.5),
            self.overhead_ns(0.99)
        );
        let w = &self.executors;
        let _ = writeln!(
            out,
            "executors, per 1000 calls: {:.2} reactor passes while idle, {:.3} between a message and its handler, {:.2} parks, {:.0} scheduler runs, {:.0} tasks run",
            w.per_1000(w.reactor_passes),
            w.per_1000(w.late_passes),
            w.per_1000(w.parks),
            w.per_1000(w.scheduler_runs),
            w.per_1000(w.tasks)
        );
        out
    }

    /// The report as JSON ([`RouterJson`]).
    pub fn to_json(&self) -> String {
        let b = &self.bench;
        render_json(&RouterJson {
            cpus: b.cpus,
            size: b.size,
            msgs: b.msgs,
            ring_rtt_ns: LatencySummary::of(&self.ring),
            call_far_rtt_ns: LatencySummary::of(&self.far),
            call_near_rtt_ns: LatencySummary::of(&self.near),
            overhead_per_hop_ns: Overhead {
                p50: self.overhead_ns(0.5),
                p99: self.overhead_ns(0.99),
            },
            executors: self.executors,
        })
    }
}

/// `pinwheel bench router --json`.
#[derive(Debug, Serialize)]
pub struct RouterJson {
    /// Caller CPU, then callee CPU.
    pub cpus: [CpuId; 2],
    /// Request body bytes.
    pub size: usize,
    /// Round trips per case.
    pub msgs: u64,
    /// The bare ring's round trips.
    pub ring_rtt_ns: LatencySummary,
    /// Runtime calls across CPUs.
    pub call_far_rtt_ns: LatencySummary,
    /// Runtime calls on one CPU.
    pub call_near_rtt_ns: LatencySummary,
    /// Cross-CPU call minus bare ring, halved.
    pub overhead_per_hop_ns: Overhead,
    /// What the executors did meanwhile.
    pub executors: ExecutorWork,
}

/// Router overhead per hop at two percentiles, ns.
#[derive(Debug, Serialize)]
pub struct Overhead {
    /// At the median.
    pub p50: i64,
    /// At p99.
    pub p99: i64,
}
