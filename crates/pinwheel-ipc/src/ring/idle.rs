//! A real-time thread's idle share: whether the thread that waits owes
//! the CPU idle time, so that the kernel never throttles it.
//!
//! An executor thread runs under SCHED_FIFO, and such a thread that never
//! sleeps gets the kernel's real-time throttling: by default no real-time
//! task runs on its CPU for the last 50 ms of each second once they ran
//! 950 ms of it (requests stall 50 ms). So in each [`IDLE_WINDOW`], once a
//! tenth of it has passed, a waiter on a real-time thread owes the CPU
//! idle time while the thread has left less than [`IDLE_SHARE`] of the
//! window idle: an executor's pump naps for what is owed
//! (`ConsumerGroup::owed_nap`), and once the thread owes more than
//! [`OWED_BEFORE_PARKING`] its adaptive wait also parks at every gap
//! instead of spinning (`wait.rs`).
//!
//! Idle is what the kernel counts: the window's wall time less the CPU
//! time the thread used in it ([`thread_cpu_time`], read at most every
//! [`LOOK_EVERY`] while the thread owes at most [`OWED_BEFORE_PARKING`],
//! the answer holding in between, and at each question while it owes
//! more; the pump's question reads it at any debt), not the time spent in
//! sleeps. The two differ a lot on a VM: entering and leaving a short
//! sleep there costs ~20 us of the thread's CPU time (a 1 us `ppoll`
//! between 80 us spins measured 23 us asleep by the wall clock and left
//! the thread at 95% CPU). A waiter that counted its sleeps as idle
//! believed it had parked 18% of each second while the kernel charged it
//! 95% and throttled it (`bench mesh` at 20,000 req/s: p99 35-39 ms; 0.6
//! ms since).
//!
//! Whether the thread is real-time is asked of the kernel
//! (`sched_getscheduler`) at the start of each window, so a thread moved
//! to or from SCHED_FIFO (`chrt`, a tuning profile) is followed within one
//! window; a SCHED_OTHER thread is never throttled and owes nothing. A
//! window measures one thread: a waiter used from another thread (an
//! agent's consumer, shared under a lock) starts a new window there, so
//! threads that take turns faster than a tenth of a window are never
//! held to the share (no agent thread is real-time unless its owner makes
//! it so).
//! Windows run back to back: the stretch between a window's end and the
//! first question after it (a task that held the thread, say) counts as
//! used, as far as the thread's CPU time grew (nothing read it at the
//! boundary).
//!
//! What this does not cover: the kernel throttles all the real-time tasks
//! of a CPU together (threaded interrupt handlers on a PREEMPT_RT kernel,
//! another real-time process pinned beside an executor), and it assumes
//! the default 950 ms in each 1 s (`sched_rt_runtime_us`,
//! `sched_rt_period_us`; the daemon warns when throttling is off or
//! different, `runtime/privileges`).

use std::thread::ThreadId;
use std::time::{Duration, Instant};

use super::thread::{thread_cpu_time, thread_is_realtime};

/// The window over which a thread keeps its idle share.
const IDLE_WINDOW: Duration = Duration::from_millis(100);
/// The share (percent) of each window a real-time thread leaves idle. The
/// kernel's default throttling demands 5% of each second. Idle is read
/// from the kernel's own count, so the margin only has to cover a
/// window's first tenth (unchecked: at most 0.7 ms owed at each end of a
/// second) and the time between two looks (at most 35 us a window): 2%
/// (20 ms a second) does. Each point of share is a point of CPU the
/// busiest executor cannot use (`bench mesh` at 24,000 req/s, with the
/// pump's naps then a fixed 50 us, p99: 1.7-1.8 ms at 7%, 2.6-3.2 ms at
/// 10%).
const IDLE_SHARE: u32 = 7;
/// How often, at most, the thread's CPU time is read (a system call) to
/// know whether it owes the CPU idle time.
const LOOK_EVERY: Duration = Duration::from_micros(500);
/// How much idle time the thread may owe before its waiter parks at every
/// gap. Less is left to the executor pump's naps, which pay it in the
/// quiet slots every millisecond (up to 200 us each, `runtime/pump.rs`).
/// Parking at each gap pays the debt too, but every park costs the next
/// frame a wake-up (tens of microseconds on a VM), and a busy thread owes
/// a little most of the time: its naps put it ahead, and 7% of the next
/// half millisecond puts it behind again. (`bench mesh --overhead` at
/// 64,000 req/s on `vm-2cpu`, eight alternating runs, medians: p50 60 ->
/// 26 us, p99 1.24 -> 0.82 ms, parking at any debt -> at more than
/// 200 us.) A waiter whose thread has no pump parks once it owes more
/// than this, no later than a look after it did before.
const OWED_BEFORE_PARKING: Duration = Duration::from_micros(200);

/// The idle share of the thread that waits (see the module's doc).
#[derive(Debug)]
pub(super) struct IdleShare {
    /// Whether the thread was real-time ([`thread_is_realtime`]) at the
    /// start of the current window: only a real-time thread owes idle
    /// time.
    realtime: bool,
    /// The idle time the thread owed the CPU at the last look, in
    /// nanoseconds.
    owed_ns: u32,
    /// When, in nanoseconds into the window, the thread's CPU time is
    /// next read.
    next_look_ns: u32,
    /// When the current [`IDLE_WINDOW`] began.
    window: Instant,
    /// The thread's CPU time then, in nanoseconds.
    cpu_at_window_ns: u64,
    /// The thread the window measures.
    thread: ThreadId,
    /// Tests answer for the kernel. (Only there: every consumer's waiter
    /// holds an idle share, beside its ring indices; see `wait.rs`.)
    #[cfg(test)]
    kernel: test_kernel::Kernel,
}

impl IdleShare {
    pub(super) fn new() -> Self {
        Self {
            realtime: false,
            owed_ns: 0,
            next_look_ns: 0,
            // A window that ended long ago: the first question opens the
            // next one and asks the kernel from the waiting thread (a
            // waiter may be built on another).
            window: Instant::now()
                .checked_sub(IDLE_WINDOW * 2)
                .unwrap_or_else(Instant::now),
            cpu_at_window_ns: 0,
            thread: std::thread::current().id(),
            #[cfg(test)]
            kernel: test_kernel::Kernel::real(),
        }
    }

    /// An idle share whose thread the kernel answers for as `kernel` says.
    #[cfg(test)]
    pub(super) fn asking(kernel: test_kernel::Kernel) -> Self {
        Self {
            kernel,
            ..Self::new()
        }
    }

    /// Whether the thread owes the CPU more idle time than
    /// [`OWED_BEFORE_PARKING`] now (see the module's doc). Reads its CPU
    /// time at most every [`LOOK_EVERY`], and at the first question after
    /// a nap was owed more than that.
    pub(super) fn owes(&mut self, now: Instant) -> bool {
        let Some(elapsed) = self.checked(now) else {
            return false;
        };
        if nanos(elapsed) >= self.next_look_ns {
            self.look(now, elapsed);
        }
        self.owed_ns > nanos(OWED_BEFORE_PARKING)
    }

    /// The idle time the thread owes the CPU now (zero: none). While it
    /// owes, each question reads its CPU time afresh: the nap that follows
    /// an answer pays some of it back. After a debt above
    /// [`OWED_BEFORE_PARKING`], so does the waiter's next question; a
    /// smaller one's answer (no parking) holds until the next look, so a
    /// busy thread that owes a little does not read its CPU time at every
    /// wait. (Only a group's pump naps.)
    #[cfg(any(test, feature = "glommio"))]
    pub(super) fn owed(&mut self, now: Instant) -> Duration {
        let Some(elapsed) = self.checked(now) else {
            return Duration::ZERO;
        };
        if self.owed_ns == 0 && nanos(elapsed) < self.next_look_ns {
            return Duration::ZERO;
        }
        let owed = self.look(now, elapsed);
        if owed > OWED_BEFORE_PARKING {
            self.next_look_ns = 0;
        }
        owed
    }

    /// How far into the current window `now` is, when the thread is to be
    /// held to its share: real-time, past the window's first tenth.
    /// Opens the next window when the current one has ended.
    fn checked(&mut self, now: Instant) -> Option<Duration> {
        let elapsed = now.saturating_duration_since(self.window);
        if elapsed >= IDLE_WINDOW {
            // Back to back after a window that just ended; afresh after a
            // longer silence.
            let start = if elapsed < IDLE_WINDOW * 2 {
                self.window + IDLE_WINDOW
            } else {
                now
            };
            self.open(start, now);
            return None;
        }
        (self.realtime && elapsed >= IDLE_WINDOW / 10).then_some(elapsed)
    }

    /// Starts a window at `start` (at most `now`), on the calling thread,
    /// owing nothing. The stretch from `start` to `now` counts as used,
    /// but never more than the CPU time used since the last window opened
    /// (a park across the boundary was idle).
    fn open(&mut self, start: Instant, now: Instant) {
        let previous = Duration::from_nanos(self.cpu_at_window_ns);
        self.window = start;
        self.thread = std::thread::current().id();
        self.realtime = self.ask_realtime();
        self.owed_ns = 0;
        self.next_look_ns = nanos(IDLE_WINDOW / 10);
        if self.realtime {
            let cpu = self.ask_cpu_time().unwrap_or_default();
            let since = now
                .saturating_duration_since(start)
                .min(cpu.saturating_sub(previous));
            self.cpu_at_window_ns = nanos_u64(cpu.saturating_sub(since));
        }
    }

    /// Reads the thread's CPU time: the idle time it is short of in the
    /// window (zero: none). A read that fails (never seen: the clock
    /// always exists) counts the whole window as used. Another thread
    /// than the window's starts a new window instead.
    fn look(&mut self, now: Instant, elapsed: Duration) -> Duration {
        if std::thread::current().id() != self.thread {
            self.open(now, now);
            return Duration::ZERO;
        }
        let used = self.ask_cpu_time().map_or(elapsed, |cpu| {
            cpu.saturating_sub(Duration::from_nanos(self.cpu_at_window_ns))
        });
        let idle = elapsed.saturating_sub(used);
        let owed = (elapsed * IDLE_SHARE / 100).saturating_sub(idle);
        self.owed_ns = nanos(owed);
        self.next_look_ns = nanos(elapsed + LOOK_EVERY);
        owed
    }

    /// Whether the waiting thread is real-time now.
    fn ask_realtime(&self) -> bool {
        #[cfg(test)]
        return (self.kernel.realtime)();
        #[cfg(not(test))]
        thread_is_realtime()
    }

    /// The waiting thread's CPU time.
    fn ask_cpu_time(&self) -> Option<Duration> {
        #[cfg(test)]
        return (self.kernel.cpu_time)();
        #[cfg(not(test))]
        thread_cpu_time()
    }
}

/// `d` in nanoseconds, within a window (saturating far beyond one).
fn nanos(d: Duration) -> u32 {
    u32::try_from(d.as_nanos()).unwrap_or(u32::MAX)
}

/// `d` in nanoseconds (saturating after 584 years).
fn nanos_u64(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// What tests make the kernel say of the waiting thread: whether it is
/// real-time, and a CPU time they set.
#[cfg(test)]
pub(super) mod test_kernel {
    use std::cell::Cell;
    use std::time::Duration;

    use super::{thread_cpu_time, thread_is_realtime};

    thread_local! {
        /// The CPU time the kernel reports for the test's thread.
        static CPU: Cell<Duration> = const { Cell::new(Duration::ZERO) };
    }

    /// The kernel's answers.
    #[derive(Debug, Clone, Copy)]
    pub struct Kernel {
        pub realtime: fn() -> bool,
        pub cpu_time: fn() -> Option<Duration>,
    }

    impl Kernel {
        /// The real kernel.
        pub fn real() -> Self {
            Self {
                realtime: thread_is_realtime,
                cpu_time: thread_cpu_time,
            }
        }

        /// A kernel that says the thread is real-time when `realtime`
        /// does, and reports the CPU time [`cpu_used`] set.
        pub fn fake(realtime: fn() -> bool) -> Self {
            Self {
                realtime,
                cpu_time: || Some(CPU.with(Cell::get)),
            }
        }
    }

    /// `ms` milliseconds, to the microsecond (so sums and shares of them
    /// compare exactly).
    pub fn ms(ms: f64) -> Duration {
        Duration::from_micros((ms * 1000.0).round() as u64)
    }

    /// Makes the fake kernel report `ms` of CPU time used by this thread.
    pub fn cpu_used(used_ms: f64) {
        CPU.with(|cpu| cpu.set(ms(used_ms)));
    }
}

#[cfg(test)]
mod tests {
    use super::test_kernel::{Kernel, cpu_used, ms};
    use super::*;

    /// An idle share on a thread that counts as real-time, its first
    /// window open at `start` with no CPU time used.
    fn sut(realtime: fn() -> bool) -> (IdleShare, Instant) {
        let mut sut = IdleShare::asking(Kernel::fake(realtime));
        cpu_used(0.0);
        let start = Instant::now();
        assert!(!sut.owes(start), "a new window");
        assert_eq!(sut.window, start);
        (sut, start)
    }

    /// What `sut` says it owes `at_ms` into its window, the thread
    /// having used `cpu_ms` of CPU time.
    fn owed(sut: &mut IdleShare, start: Instant, cpu_ms: f64, at_ms: f64) -> Duration {
        cpu_used(cpu_ms);
        sut.owed(start + ms(at_ms))
    }

    #[test]
    fn idle_is_the_window_less_the_cpu_time_the_kernel_charged() {
        // Half the window spent in sleeps by the wall clock, yet 95% of
        // it charged (a VM's cost of entering and leaving them): 5% idle.
        let (mut sut, start) = sut(|| true);
        let short = owed(&mut sut, start, 47.5, 50.0);
        assert_eq!(short, ms(1.0), "7% of 50 ms, less 2.5 ms");
    }

    #[test]
    fn a_thread_owes_the_idle_time_it_is_short_of_and_looks_again_after_each_nap() {
        let (mut sut, start) = sut(|| true);
        let early = owed(&mut sut, start, 5.0, 5.0);
        assert_eq!(early, Duration::ZERO, "early in the window");
        let busy = owed(&mut sut, start, 40.0, 40.0);
        assert_eq!(busy, ms(2.8), "nothing idle: 7% of 40 ms");
        let napped = owed(&mut sut, start, 40.0, 40.4);
        assert_eq!(napped, ms(2.428), "a 0.4 ms nap");
        let paid = owed(&mut sut, start, 40.0, 43.1);
        assert_eq!(paid, Duration::ZERO, "3.1 ms idle: 7.2%");
    }

    #[test]
    fn the_last_look_s_answer_holds_until_the_next_except_after_a_nap() {
        let (mut sut, start) = sut(|| true);
        cpu_used(50.0);
        assert!(sut.owes(start + ms(50.0)), "nothing idle");
        cpu_used(40.0);
        assert!(sut.owes(start + ms(50.2)), "20% idle, not looked at yet");
        assert!(!sut.owes(start + ms(50.6)), "looked at");
        // Owing 0.3 ms, then a nap of 0.3 ms: the next question looks,
        // well before the next look was due.
        assert_eq!(owed(&mut sut, start, 47.916, 51.2), ms(0.3));
        assert!(!sut.owes(start + ms(51.5)), "7% idle after the nap");
        // Owing 0.1 ms: too little to park for, so the answer holds
        // until the next look, whatever the thread ran meanwhile.
        assert_eq!(owed(&mut sut, start, 48.088, 51.6), ms(0.1));
        cpu_used(51.7);
        assert!(!sut.owes(start + ms(51.8)), "not looked at");
        assert!(sut.owes(start + ms(52.2)), "looked at: nothing idle since");
    }

    #[test]
    fn a_debt_up_to_the_slack_is_left_to_the_naps_and_a_larger_one_parks() {
        let (mut sut, start) = sut(|| true);
        // 7% of 20 ms is 1.4 ms, and 1.2 ms was idle.
        cpu_used(18.8);
        assert!(!sut.owes(start + ms(20.0)), "0.2 ms owed: no parking");
        assert_eq!(sut.owed(start + ms(20.0)), ms(0.2), "but a nap is owed");
        cpu_used(19.4);
        assert!(sut.owes(start + ms(20.6)), "0.242 ms owed: parks");
        assert_eq!(sut.owed(start + ms(20.6)), ms(0.242));
    }

    #[test]
    fn a_new_window_starts_owing_nothing_and_runs_back_to_back() {
        let (mut sut, start) = sut(|| true);
        cpu_used(99.0);
        assert!(sut.owes(start + ms(99.0)));
        // The next question comes 5 ms after the window's end: the new
        // window starts at the end, and those 5 ms count as used.
        cpu_used(104.0);
        assert!(!sut.owes(start + ms(105.0)), "early in a new window");
        assert_eq!(sut.window, start + IDLE_WINDOW);
        let short = owed(&mut sut, start, 110.0, 111.0);
        assert_eq!(short, ms(0.77), "11 ms, none idle");
        // After a longer silence the next window starts afresh.
        cpu_used(150.0);
        let later = start + ms(400.0);
        assert!(!sut.owes(later));
        assert_eq!(sut.window, later);
    }

    #[test]
    fn a_thread_that_is_not_real_time_owes_nothing() {
        let (mut sut, start) = sut(|| false);
        cpu_used(50.0);
        assert!(
            !sut.owes(start + ms(50.0)),
            "nothing idle, yet never throttled"
        );
        assert_eq!(sut.owed(start + ms(50.0)), Duration::ZERO);
    }

    #[test]
    fn the_kernel_is_asked_again_at_each_window() {
        use std::sync::atomic::{AtomicBool, Ordering};
        static REALTIME: AtomicBool = AtomicBool::new(false);
        // SYNC: Relaxed; one test thread reads and writes it.
        let (mut sut, start) = sut(|| REALTIME.load(Ordering::Relaxed));
        cpu_used(50.0);
        assert!(!sut.owes(start + ms(50.0)));
        // SYNC: Relaxed, as above.
        REALTIME.store(true, Ordering::Relaxed);
        cpu_used(60.0);
        assert!(!sut.owes(start + ms(60.0)), "the window's answer holds");
        cpu_used(100.0);
        assert!(!sut.owes(start + ms(100.0)), "a new window, asked again");
        cpu_used(150.0);
        assert!(sut.owes(start + ms(150.0)), "now real-time, nothing idle");
    }

    #[test]
    fn another_thread_asking_starts_a_window_of_its_own() {
        let (mut sut, start) = sut(|| true);
        cpu_used(50.0);
        assert!(sut.owes(start + ms(50.0)));
        // This thread used 50 ms; the next one, by its own clock, none.
        let (owed_there, window_there) = std::thread::spawn(move || {
            let owes = sut.owes(start + ms(51.0));
            let owed = sut.owed(start + ms(51.0));
            ((owed, owes), sut.window)
        })
        .join()
        .expect("the thread ends");
        assert_eq!(
            owed_there,
            (Duration::ZERO, false),
            "its own window, just opened"
        );
        assert_eq!(window_there, start + ms(51.0));
    }

    #[test]
    fn a_park_across_the_end_of_a_window_is_not_counted_as_used() {
        let mut sut = IdleShare::asking(Kernel::fake(|| true));
        // A thread that has run for 10 s opens a window, works 20 ms,
        // then parks until 150 ms, and works 11 ms more.
        cpu_used(10_000.0);
        let start = Instant::now();
        assert!(!sut.owes(start));
        cpu_used(10_020.0);
        assert!(!sut.owes(start + ms(150.0)), "a new window");
        assert_eq!(sut.window, start + IDLE_WINDOW, "back to back");
        let short = owed(&mut sut, start, 10_031.0, 161.0);
        assert_eq!(short, Duration::ZERO, "31 of 61 ms used");
    }

    #[test]
    fn a_failed_read_of_the_cpu_time_counts_the_window_as_used() {
        let mut sut = IdleShare::asking(Kernel {
            realtime: || true,
            cpu_time: || None,
        });
        let start = Instant::now();
        assert!(!sut.owes(start));
        assert_eq!(sut.owed(start + ms(20.0)), ms(1.4));
    }
}
