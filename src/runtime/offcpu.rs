//! Off-CPU time: stretches in which an executor's thread was awake (it had
//! work, or was spinning for it) and yet did not run.
//!
//! A request that crosses both of a host's executors waits out whatever
//! holds either of them. Some of that is pinwheel's own (a queue, a
//! handler), and the rest is not: the host's hypervisor running another
//! guest on the vCPU, the kernel's interrupts and its real-time
//! throttling, a kernel thread, a handler that blocks the thread in a
//! system call. On the 2-vCPU VM the benchmarks run on, a thread that
//! only spins loses 0.5-5 ms at a time to the host, tens of times in ten
//! seconds in a noisy spell and hardly ever in a quiet one, and each such
//! stretch holds every request in flight that long, then the backlog it
//! left. `bench mesh --find-max`'s bar (a p99 under 1 ms) cannot be met in
//! a run that loses more than about 1% of its requests' time to such
//! stretches, whatever pinwheel does. So each executor measures them, and
//! the reports put them beside the latencies they explain.
//!
//! How: the pump reads its clock at each loop ([`OffCpu::awake`]). When
//! [`OFF_CPU_MIN`] or more passed since its last loop, it reads its
//! thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`, a system call of ~200 ns
//! here) and compares it with a reference taken at most [`LOOK_EVERY`]
//! before the stretch began: the wall time the thread did not get is the
//! stretch's off-CPU time, counted when it is [`OFF_CPU_MIN`] or more. A
//! long loop the thread did run through (a busy queue of handlers) counts
//! nothing. The reference is refreshed every [`LOOK_EVERY`] of wall time
//! (~4,000 reads a second on a busy executor: under 0.1% of its CPU), and
//! after each park or nap ([`OffCpu::woke`]): time asleep is the pump's
//! own choice, not lost, up to the due time it slept for. A wake-up
//! [`OFF_CPU_MIN`] or more past that (a nap of 100 us that lasted 3 ms, a
//! park whose timer fired late) counts as a stretch too.
//!
//! What it counts is what the kernel does not charge the thread: with the
//! hypervisor's steal time accounted (KVM's paravirtual steal clock, on
//! here), a vCPU taken by the host is not the thread's CPU time. A guest
//! without it charges the thread for the host's stretches, and they show
//! only as the latencies they cause. A park that a message ends late is
//! not seen (the message's time of arrival is not known there), nor is
//! the spin before a park, and a reading may include up to
//! [`LOOK_EVERY`] of smaller losses before the stretch.

use std::time::Duration;

use serde::Serialize;

use super::clock::duration_ns;

/// The shortest stretch counted: a quarter of `bench mesh --find-max`'s
/// 1 ms bar, well above a loop of the pump's under load.
pub const OFF_CPU_MIN: Duration = Duration::from_micros(250);
const OFF_CPU_MIN_NS: u64 = OFF_CPU_MIN.as_nanos() as u64;
/// How often, at most, the reference CPU time is read while the thread is
/// awake.
pub const LOOK_EVERY: Duration = Duration::from_micros(100);
const LOOK_EVERY_NS: u64 = LOOK_EVERY.as_nanos() as u64;

/// An executor's off-CPU stretches so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct OffCpuTotals {
    /// Stretches of [`OFF_CPU_MIN`] or more.
    pub count: u64,
    /// Their off-CPU time in all, ns.
    pub total_ns: u64,
    /// The longest, ns.
    pub longest_ns: u64,
}

impl OffCpuTotals {
    /// Both executors' totals together: counts and times added, the
    /// longest of either.
    pub fn plus(self, other: Self) -> Self {
        Self {
            count: self.count + other.count,
            total_ns: self.total_ns + other.total_ns,
            longest_ns: self.longest_ns.max(other.longest_ns),
        }
    }

    fn record(&mut self, lost_ns: u64) {
        self.count += 1;
        self.total_ns += lost_ns;
        self.longest_ns = self.longest_ns.max(lost_ns);
    }
}

/// One executor thread's off-CPU meter (module doc). `C` reads the
/// thread's CPU time in ns ([`thread_cpu_ns`]; tests give their own).
pub struct OffCpu<C = fn() -> u64> {
    cpu_ns: C,
    /// The clock at the last loop.
    last_ns: u64,
    /// The clock and the thread's CPU time at the reference (`None`: none
    /// yet; the first loop takes one).
    reference: Option<(u64, u64)>,
    totals: OffCpuTotals,
}

impl OffCpu {
    /// A meter for the calling thread.
    pub fn new() -> Self {
        Self::with(thread_cpu_ns)
    }
}

impl Default for OffCpu {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: FnMut() -> u64> OffCpu<C> {
    /// A meter that reads CPU time from `cpu_ns`.
    pub fn with(cpu_ns: C) -> Self {
        Self {
            cpu_ns,
            last_ns: 0,
            reference: None,
            totals: OffCpuTotals::default(),
        }
    }

    /// The thread is awake at `now_ns` (the pump's loop): counts the
    /// stretch since the last loop when it was off the CPU long enough.
    pub fn awake(&mut self, now_ns: u64) {
        let gap_ns = now_ns.saturating_sub(self.last_ns);
        self.last_ns = now_ns;
        let Some((wall_ns, cpu_ns)) = self.reference else {
            self.look(now_ns);
            return;
        };
        if gap_ns >= OFF_CPU_MIN_NS {
            let cpu_now_ns = (self.cpu_ns)();
            let ran_ns = cpu_now_ns.saturating_sub(cpu_ns);
            let lost_ns = now_ns.saturating_sub(wall_ns).saturating_sub(ran_ns);
            if lost_ns >= OFF_CPU_MIN_NS {
                self.totals.record(lost_ns);
            }
            self.reference = Some((now_ns, cpu_now_ns));
        } else if now_ns.saturating_sub(wall_ns) >= LOOK_EVERY_NS {
            self.look(now_ns);
        }
    }

    /// The thread slept (parked or napped) until `now_ns`, for a due time
    /// of `due_ns`: a wake-up [`OFF_CPU_MIN`] or more past it counts as a
    /// stretch off the CPU (a wake-up before it, by a message, tells
    /// nothing), and the reference is taken afresh here, before the
    /// handlers the wake-up brings run.
    pub fn woke(&mut self, now_ns: u64, due_ns: u64) {
        let late_ns = now_ns.saturating_sub(due_ns);
        if late_ns >= OFF_CPU_MIN_NS {
            self.totals.record(late_ns);
        }
        self.last_ns = now_ns;
        self.look(now_ns);
    }

    /// The stretches so far.
    pub fn totals(&self) -> OffCpuTotals {
        self.totals
    }

    fn look(&mut self, now_ns: u64) {
        self.reference = Some((now_ns, (self.cpu_ns)()));
    }
}

/// The calling thread's CPU time, ns (0 if the kernel will not say, so
/// that nothing is counted).
pub fn thread_cpu_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(|t| duration_ns(Duration::from(t)))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use super::*;

    const US: u64 = 1_000;

    /// A cell the test and the meter share.
    type Shared<T> = Rc<Cell<T>>;

    /// A meter whose thread's CPU time is the returned cell, and how many
    /// times it was read.
    fn meter() -> (OffCpu<impl FnMut() -> u64>, Shared<u64>, Shared<u32>) {
        let (cpu, reads) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
        let (c, r) = (Rc::clone(&cpu), Rc::clone(&reads));
        let meter = OffCpu::with(move || {
            r.set(r.get() + 1);
            c.get()
        });
        (meter, cpu, reads)
    }

    #[test]
    fn a_gap_the_thread_did_not_run_through_is_counted() {
        let (mut m, cpu, _) = meter();
        m.awake(1_000 * US);
        cpu.set(10 * US);
        m.awake(1_010 * US);
        // 2 ms pass while the thread runs 50 us of it.
        cpu.set(60 * US);
        m.awake(3_010 * US);
        let t = m.totals();
        assert_eq!(t.count, 1);
        assert_eq!(t.total_ns, 1_950 * US);
        assert_eq!(t.longest_ns, 1_950 * US);
    }

    #[test]
    fn a_long_loop_the_thread_ran_through_counts_nothing() {
        let (mut m, cpu, _) = meter();
        m.awake(0);
        cpu.set(900 * US);
        m.awake(900 * US);
        // Under the minimum lost: 100 us of 600.
        cpu.set(1_400 * US);
        m.awake(1_500 * US);
        assert_eq!(m.totals(), OffCpuTotals::default());
    }

    #[test]
    fn sleep_is_not_off_cpu_time_but_a_late_wake_up_is() {
        let (mut m, cpu, _) = meter();
        m.awake(0);
        cpu.set(5 * US);
        // A 5 ms park, woken on time: the next loop takes a fresh
        // reference.
        m.woke(5_000 * US, 5_000 * US);
        cpu.set(20 * US);
        m.awake(5_020 * US);
        assert_eq!(m.totals().count, 0);
        // Woken by a message before its due time.
        m.woke(6_000 * US, 9_000 * US);
        m.awake(6_010 * US);
        assert_eq!(m.totals().count, 0);
        // Woken 2 ms past its due time.
        m.woke(12_000 * US, 10_000 * US);
        m.awake(12_010 * US);
        assert_eq!(m.totals().count, 1);
        assert_eq!(m.totals().total_ns, 2_000 * US);
        // Woken by a message whose handler then blocked the thread for
        // 3 ms before the next loop.
        cpu.set(30 * US);
        m.woke(20_000 * US, 25_000 * US);
        cpu.set(40 * US);
        m.awake(23_000 * US);
        assert_eq!(m.totals().count, 2);
        assert_eq!(m.totals().total_ns, 2_000 * US + 2_990 * US);
    }

    #[test]
    fn the_reference_is_read_at_most_every_look() {
        let (mut m, cpu, reads) = meter();
        for i in 0..1_000 {
            cpu.set(i * US);
            m.awake(i * US);
        }
        // 1 ms of loops 1 us apart: one read to start, then one every
        // LOOK_EVERY.
        assert_eq!(reads.get(), 1 + 999 / 100);
        assert_eq!(m.totals().count, 0);
    }

    #[test]
    fn stretches_add_up_and_the_longest_is_kept() {
        let (mut m, cpu, _) = meter();
        m.awake(0);
        let mut now = 0;
        for lost in [300 * US, 2_000 * US, 400 * US] {
            now += lost + 10 * US;
            cpu.set(cpu.get() + 10 * US);
            m.awake(now);
        }
        let t = m.totals();
        assert_eq!(t.count, 3);
        assert_eq!(t.total_ns, 2_700 * US);
        assert_eq!(t.longest_ns, 2_000 * US);
        let both = t.plus(OffCpuTotals {
            count: 1,
            total_ns: 5_000 * US,
            longest_ns: 5_000 * US,
        });
        assert_eq!((both.count, both.longest_ns), (4, 5_000 * US));
    }

    #[test]
    fn a_blocked_thread_is_off_the_cpu() {
        let mut m = OffCpu::new();
        let clock = std::time::Instant::now();
        let now = || u64::try_from(clock.elapsed().as_nanos()).expect("a short test");
        m.awake(now());
        std::thread::sleep(Duration::from_millis(3));
        m.awake(now());
        let t = m.totals();
        assert_eq!(t.count, 1, "{t:?}");
        assert!(t.longest_ns >= 2_500 * US, "{t:?}");
    }
}
