//! `wakeup`: how late a pinned executor wakes from a timer, cyclictest's
//! measurement done the way pinwheel's executors sleep.
//!
//! Two cases run one after the other on the same CPU, under the same
//! thread policy (the CPU class's SCHED_FIFO priority and timer slack, as
//! an executor thread of that class gets them):
//!
//! * a glommio executor built like the daemon's (the class's preempt
//!   timer and spin-before-park, `Placement::Fixed`, its agents' task
//!   queue) awaits `glommio::timer::sleep` to each deadline;
//! * a plain thread calls `clock_nanosleep(CLOCK_MONOTONIC,
//!   TIMER_ABSTIME)`, the reference: what the kernel alone gives.
//!
//! Deadlines are absolute, `start + i × period`, so lateness does not
//! accumulate: a late wake-up shortens the next sleep, and one later than a
//! whole period makes the next deadline already past (recorded as late,
//! not skipped), as in cyclictest. Each lateness (actual wake minus
//! deadline, nanoseconds) goes into an HdrHistogram.

use std::time::{Duration, Instant};

use glommio::{Latency, LocalExecutorBuilder, Placement, Shares};
use hdrhistogram::Histogram;
use nix::time::{ClockId, ClockNanosleepFlags, clock_gettime, clock_nanosleep};

use super::BenchError;
use crate::latency::{new_histogram, record_duration, record_ns};
use crate::runtime::affinity::{SchedPolicy, current_policy, pin_current_thread};
use crate::runtime::executor::IO_MEMORY;
use crate::runtime::privileges::{ThreadPolicy, prepare_process, prepare_thread};
use crate::topology::{ClassSettings, CpuId, TaskQueue};

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
    /// The glommio executor's.
    pub executor: Histogram<u64>,
    /// The plain thread's.
    pub thread: Histogram<u64>,
    /// The scheduling policy both ran under.
    pub policy: SchedPolicy,
}

impl WakeupBench {
    /// Runs the executor case, then the thread case.
    pub fn run(&self) -> Result<WakeupReport, BenchError> {
        if self.privileged {
            prepare_process(IO_MEMORY as u64).map_err(|err| wakeup_error(err.to_string()))?;
        }
        let (executor, policy) = self.executor_case()?;
        let thread = self.thread_case()?;
        Ok(WakeupReport {
            executor,
            thread,
            policy,
        })
    }

    fn executor_case(&self) -> Result<(Histogram<u64>, SchedPolicy), BenchError> {
        let bench = *self;
        let micros = |us: u32| Duration::from_micros(u64::from(us));
        let handle = LocalExecutorBuilder::new(Placement::Fixed(self.cpu.0 as usize))
            .name(&format!("pw-wakeup-{}", self.cpu))
            .preempt_timer(micros(self.settings.preempt_timer_us))
            .spin_before_park(micros(self.settings.spin_before_park_us))
            .io_memory(IO_MEMORY)
            .spawn(move || async move {
                let policy = bench.thread_policy();
                let (shares, latency) = match bench.settings.task_queue {
                    TaskQueue::Latency => (
                        Shares::Static(1000),
                        Latency::Matters(micros(bench.settings.preempt_timer_us)),
                    ),
                    TaskQueue::Shares(shares) => {
                        (Shares::Static(usize::from(shares)), Latency::NotImportant)
                    }
                };
                let queue = glommio::executor().create_task_queue(shares, latency, "wakeup");
                let task = glommio::spawn_local_into(sleep_on_executor(bench), queue)
                    .map_err(|err| wakeup_error(err.to_string()))?;
                Ok::<_, BenchError>((task.await, policy))
            })
            .map_err(|err| wakeup_error(format!("cannot start the executor: {err}")))?;
        handle
            .join()
            .map_err(|err| wakeup_error(format!("the executor failed: {err}")))?
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

/// The executor case's loop.
async fn sleep_on_executor(bench: WakeupBench) -> Histogram<u64> {
    let mut histogram = new_histogram();
    let period_ns = duration_ns(bench.period);
    let start = Instant::now();
    for i in 1..=bench.loops {
        let deadline = start + Duration::from_nanos(period_ns.saturating_mul(i));
        let now = Instant::now();
        if deadline > now {
            glommio::timer::sleep(deadline - now).await;
        }
        let late = Instant::now().saturating_duration_since(deadline);
        record_duration(&mut histogram, late);
    }
    histogram
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

fn duration_ns(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

fn wakeup_error(reason: String) -> BenchError {
    BenchError::Wakeup { reason }
}
