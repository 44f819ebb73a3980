//! `wakeup`: how late a pinned executor wakes from a timer, cyclictest's
//! measurement done the way pinwheel's executors sleep.
//!
//! Two cases run one after the other on the same CPU, under the same
//! thread policy (the CPU class's SCHED_FIFO priority and timer slack, as
//! an executor thread of that class gets them):
//!
//! * an agent on an executor started the way `pinwheel run` starts one
//!   (the class's wait strategy, preempt timer and task queue,
//!   `Placement::Fixed`, the pump driving its timers) sleeps to each
//!   deadline with `Ctx::sleep_until`;
//! * a plain thread calls `clock_nanosleep(CLOCK_MONOTONIC,
//!   TIMER_ABSTIME)`, the reference: what the kernel alone gives.
//!
//! Deadlines are absolute, `start + i × period`, so lateness does not
//! accumulate: a late wake-up shortens the next sleep, and one later than a
//! whole period makes the next deadline already past (recorded as late,
//! not skipped), as in cyclictest. Each lateness (actual wake minus
//! deadline, nanoseconds) goes into an HdrHistogram.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use nix::time::{ClockId, ClockNanosleepFlags, clock_gettime, clock_nanosleep};
use serde::Serialize;

use super::BenchError;
use super::harness::{BenchAgent, Harness};
use super::json::render_json;
use super::output::policy_name;
use super::router::ExecutorWork;
use super::suite::CaseKind;
use crate::latency::{LatencySummary, PERCENTILE_TITLES, format_ns, new_histogram, record_ns};
use crate::runtime::affinity::{SchedPolicy, current_policy, pin_current_thread};
use crate::runtime::agent::Agent;
use crate::runtime::clock::duration_ns;
use crate::runtime::ctx::{Ctx, now_ns};
use crate::runtime::executor::IO_MEMORY;
use crate::runtime::privileges::{ThreadPolicy, prepare_process, prepare_thread};
use crate::topology::{ClassSettings, CpuId, Topology};

/// Longest the executor case may take beyond its deadlines.
const SLACK: Duration = Duration::from_secs(30);

/// What to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WakeupBench {
    /// The CPU both cases run on.
    pub cpu: CpuId,
    /// The CPU class's executor settings.
    pub settings: ClassSettings,
    /// Time between deadlines.
    pub period: Duration,
    /// Deadlines per case.
    pub loops: u64,
    /// Ask for the class's SCHED_FIFO priority, timer slack and locked
    /// memory, as `pinwheel run` does.
    pub privileged: bool,
}

/// Lateness of both cases.
#[derive(Debug)]
pub struct WakeupReport {
    /// The executor's.
    pub executor: Histogram<u64>,
    /// The plain thread's.
    pub thread: Histogram<u64>,
    /// The scheduling policy both ran under.
    pub policy: SchedPolicy,
    /// What the executor did meanwhile (`calls` counts wake-ups).
    pub work: ExecutorWork,
}

impl WakeupBench {
    /// The bench a topology calls for: its first data-plane CPU (its first
    /// CPU if it has no data plane) and that CPU's class settings.
    pub fn for_topology(
        topology: &Topology,
        period: Duration,
        loops: u64,
        privileged: bool,
    ) -> Result<Self, BenchError> {
        let no_cpu = || BenchError::Topology {
            path: topology.path().to_owned(),
            reason: "it has no CPU".into(),
        };
        let cpu = match topology.data_plane().first() {
            Some(cpu) => cpu,
            None => topology.cpus().iter().next().ok_or_else(no_cpu)?,
        };
        let settings = topology
            .class_of(cpu)
            .map(|class| topology.settings(class))
            .ok_or_else(|| BenchError::Topology {
                path: topology.path().to_owned(),
                reason: format!("CPU {cpu} has no class"),
            })?;
        Ok(Self {
            cpu,
            settings,
            period,
            loops,
            privileged,
        })
    }

    /// Runs the executor case, then the thread case.
    pub fn run(&self) -> Result<WakeupReport, BenchError> {
        if self.privileged {
            prepare_process(IO_MEMORY as u64).map_err(|err| wakeup_error(err.to_string()))?;
        }
        let (executor, policy, work) = self.executor_case()?;
        let thread = self.thread_case()?;
        Ok(WakeupReport {
            executor,
            thread,
            policy,
            work,
        })
    }

    /// An agent on an executor of the class, alone on the CPU, sleeping
    /// to each deadline with [`Ctx::sleep_until`].
    fn executor_case(&self) -> Result<(Histogram<u64>, SchedPolicy, ExecutorWork), BenchError> {
        let harness = Harness {
            cpus: vec![self.cpu],
            settings: self.settings,
            agents: vec![BenchAgent {
                name: "Sleeper",
                cpu: self.cpu,
                calls: &[],
            }],
            privileged: self.privileged,
            limit: self
                .period
                .saturating_mul(u32::try_from(self.loops).unwrap_or(u32::MAX))
                + SLACK,
        };
        let outcome = Arc::new(Outcome::default());
        let make = {
            let (outcome, bench) = (Arc::clone(&outcome), *self);
            Arc::new(move |_| Sleeper {
                bench,
                outcome: Arc::clone(&outcome),
            })
        };
        let snapshots = harness.run(make, &outcome.done)?;
        let slot = outcome
            .result
            .lock()
            .map_err(|_| wakeup_error("the sleeper panicked".into()))?
            .take();
        let Some((histogram, policy)) = slot else {
            return Err(wakeup_error("the executor case hit its time limit".into()));
        };
        let work = ExecutorWork::of(&snapshots, self.loops);
        Ok((histogram, policy, work))
    }

    fn thread_case(&self) -> Result<Histogram<u64>, BenchError> {
        let bench = *self;
        let thread = std::thread::Builder::new()
            .name(format!("pw-wakeup-ref-{}", self.cpu))
            .spawn(move || {
                pin_current_thread(bench.cpu).map_err(|source| BenchError::Pin {
                    cpu: bench.cpu,
                    source,
                })?;
                bench.thread_policy();
                sleep_on_thread(bench.period, bench.loops)
            })
            .map_err(|err| wakeup_error(format!("cannot start the thread: {err}")))?;
        thread
            .join()
            .map_err(|_| wakeup_error("the reference thread panicked".into()))?
    }

    /// Applies the class's thread policy to the calling thread, when
    /// privileged; the policy it runs under either way.
    fn thread_policy(&self) -> SchedPolicy {
        if self.privileged {
            prepare_thread(ThreadPolicy::for_class(&self.settings)).policy
        } else {
            current_policy().unwrap_or(SchedPolicy::Other)
        }
    }
}

/// What the sleeper leaves for the bench's thread.
#[derive(Debug, Default)]
struct Outcome {
    done: AtomicBool,
    result: Mutex<Option<(Histogram<u64>, SchedPolicy)>>,
}

/// The executor case's agent.
struct Sleeper {
    bench: WakeupBench,
    outcome: Arc<Outcome>,
}

impl Agent for Sleeper {
    async fn run(&self, ctx: &Ctx) {
        let mut histogram = new_histogram();
        let period_ns = duration_ns(self.bench.period);
        let start = now_ns();
        for i in 1..=self.bench.loops {
            let deadline = start + period_ns.saturating_mul(i);
            ctx.sleep_until(deadline).await;
            record_ns(&mut histogram, now_ns().saturating_sub(deadline));
        }
        let policy = current_policy().unwrap_or(SchedPolicy::Other);
        if let Ok(mut slot) = self.outcome.result.lock() {
            *slot = Some((histogram, policy));
        }
        // SYNC: Release pairs with the Acquire load in Harness::run.
        self.outcome.done.store(true, Ordering::Release);
    }
}

/// The thread case's loop.
fn sleep_on_thread(period: Duration, loops: u64) -> Result<Histogram<u64>, BenchError> {
    let mut histogram = new_histogram();
    let period_ns = duration_ns(period);
    let start = monotonic_ns();
    for i in 1..=loops {
        let deadline = start + period_ns.saturating_mul(i);
        let request = nix::sys::time::TimeSpec::new(
            (deadline / 1_000_000_000) as i64,
            (deadline % 1_000_000_000) as i64,
        );
        loop {
            match clock_nanosleep(
                ClockId::CLOCK_MONOTONIC,
                ClockNanosleepFlags::TIMER_ABSTIME,
                &request,
            ) {
                // An absolute sleep restarts safely after a signal.
                Err(nix::errno::Errno::EINTR) => continue,
                Err(err) => return Err(wakeup_error(format!("clock_nanosleep: {err}"))),
                Ok(_) => break,
            }
        }
        record_ns(&mut histogram, monotonic_ns().saturating_sub(deadline));
    }
    Ok(histogram)
}

fn monotonic_ns() -> u64 {
    let now = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC always exists");
    (now.tv_sec() as u64).saturating_mul(1_000_000_000) + now.tv_nsec() as u64
}

fn wakeup_error(reason: String) -> BenchError {
    BenchError::Wakeup { reason }
}

impl WakeupReport {
    /// The report as a table.
    pub fn to_table(&self, bench: &WakeupBench) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "pinwheel bench wakeup: CPU {}, a deadline every {} us, {} per case, {}, preempt timer {} us, spin before park {} us",
            bench.cpu,
            bench.period.as_micros(),
            bench.loops,
            policy_name(self.policy),
            bench.settings.preempt_timer_us,
            bench.settings.spin_before_park_us
        );
        let _ = write!(out, "\n{:<34}", "lateness");
        for title in PERCENTILE_TITLES {
            let _ = write!(out, "{title:>10}");
        }
        let _ = writeln!(out);
        let executor = LatencySummary::of(&self.executor);
        let thread = LatencySummary::of(&self.thread);
        for (name, summary) in [
            (CaseKind::WakeupExecutor.name(), executor),
            (CaseKind::WakeupThread.name(), thread),
        ] {
            let _ = write!(out, "{name:<34}");
            for ns in summary.columns() {
                let _ = write!(out, "{:>10}", format_ns(ns));
            }
            let _ = writeln!(out);
        }
        let _ = write!(out, "{:<34}", "executor / thread");
        for (e, t) in executor.columns().iter().zip(thread.columns()) {
            let _ = write!(
                out,
                "{:>10}",
                format!("{:.2}x", *e as f64 / t.max(1) as f64)
            );
        }
        let _ = writeln!(out);
        let w = &self.work;
        let _ = writeln!(
            out,
            "\nexecutor, per 1000 wake-ups: {:.1} reactor passes while idle, {:.1} parks, {:.0} tasks run",
            w.per_1000(w.reactor_passes),
            w.per_1000(w.parks),
            w.per_1000(w.tasks)
        );
        out
    }

    /// The report as JSON ([`WakeupJson`]).
    pub fn to_json(&self, bench: &WakeupBench) -> String {
        render_json(&WakeupJson {
            cpu: bench.cpu,
            period_us: u64::try_from(bench.period.as_micros()).unwrap_or(u64::MAX),
            loops: bench.loops,
            policy: policy_name(self.policy),
            executor_ns: LatencySummary::of(&self.executor),
            thread_ns: LatencySummary::of(&self.thread),
            executor: self.work,
        })
    }
}

/// `pinwheel bench wakeup --json`.
#[derive(Debug, Serialize)]
pub struct WakeupJson {
    /// The CPU both cases ran on.
    pub cpu: CpuId,
    /// Time between deadlines, microseconds.
    pub period_us: u64,
    /// Deadlines per case.
    pub loops: u64,
    /// The scheduling policy both ran under.
    pub policy: String,
    /// The executor's lateness.
    pub executor_ns: LatencySummary,
    /// The `clock_nanosleep` thread's lateness.
    pub thread_ns: LatencySummary,
    /// What the executor did meanwhile (`calls` counts wake-ups).
    pub executor: ExecutorWork,
}
