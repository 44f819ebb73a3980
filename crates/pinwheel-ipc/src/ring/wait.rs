//! How a consumer waits for frames: the spin phase of each strategy.
//!
//! * `spin`: poll the ring until the deadline; never park, so the producer
//!   never pays the doorbell fence. For dedicated cores only.
//! * `park`: no spin; declare itself asleep and block on the doorbell.
//! * `adaptive`: spin for the class's `spin_before_park_us` while spinning
//!   pays, else only [`MIN_SPIN`] (which still catches a producer's
//!   back-to-back batches), then park. Spinning pays when it catches the
//!   next frame: the waiter keeps the share of recent waits that ended
//!   within a full spin (an exponentially weighted share, weight 1/8), and
//!   spins the full length while at least [`SPIN_WHILE_CAUGHT`] of them
//!   did. The share counts a wait only when its outcome is known: caught
//!   within its spin (any length), or a full spin that ran out. A wait
//!   that parked after a short spin says nothing of what a full one would
//!   have caught, so in short mode every [`PROBE_EVERY`]th wait spins the
//!   full length to find out.
//!
//!   Spinning never takes the whole CPU of a real-time thread, though: an
//!   executor thread runs under SCHED_FIFO, and such a thread that never
//!   sleeps gets the kernel's real-time throttling (no RT task on that CPU
//!   for the last 50 ms of each second: requests stall 50 ms). So in each
//!   [`IDLE_WINDOW`], once a tenth of it has passed, a waiter on a
//!   real-time thread spins only while the thread has left at least
//!   [`IDLE_SHARE`] of the window idle; below that it parks at each gap
//!   until it has. Idle is what the kernel counts: the window's wall time
//!   less the CPU time the thread used in it ([`thread_cpu_time`], read at
//!   most every [`LOOK_EVERY`]), not the time spent in sleeps. The two
//!   differ a lot on a VM: entering and leaving a short sleep there costs
//!   ~20 us of the thread's CPU time (a 1 us `ppoll` between 80 us spins
//!   measured 23 us asleep by the wall clock and left the thread at 95%
//!   CPU), and a waiter that counted its sleeps as idle believed it had
//!   parked 18% of each second while the kernel charged it 95% and
//!   throttled it (`bench mesh` at 20,000 req/s: p99 34 ms; 0.6 ms now). Whether the
//!   thread is real-time is asked of the kernel (`sched_getscheduler`)
//!   at the start of each window, so a thread moved to or from SCHED_FIFO
//!   (`chrt`, a tuning profile) is followed within one window; a
//!   SCHED_OTHER thread is never throttled and keeps no share. Under a
//!   dense stream the gaps are too short to park in (a park finds the
//!   next frame already there), so a thread below that share also naps,
//!   frames or not ([`ConsumerGroup::nap`](super::ConsumerGroup::nap),
//!   asked by an executor's pump between batches, for the idle time it
//!   is short of): many naps of tens of microseconds instead of one
//!   50 ms stall. (`bench mesh` at 24,000
//!   req/s with neither: p99 38.5 ms, max 49.6 ms.)
//!
//!   Why not the mean wait (what this followed before): traffic in chains
//!   (a request's calls, each answered in microseconds) separated by idle
//!   gaps has a mean wait far above any spin, though most single waits
//!   are short. One gap in twenty waits moved the mean past the cap, the
//!   chain's next hops parked, and parked waits (they include the wake-up)
//!   kept the mean there: every hop of the chain paid a wake-up.
//!
//! The clock is read only when a wait has to spin: frames found by the
//! first [`CLOCK_EVERY`] polls count as caught and cost no clock read, so
//! dense traffic pays nothing for adaptation. While spinning, time is read
//! every [`CLOCK_EVERY`] polls: a clock read costs about as much as 20
//! polls of an idle ring.

use std::time::{Duration, Instant};

use super::RingError;
use super::WaitStrategy;
use super::layout::ConsumerEnd;
use super::thread::{thread_cpu_time, thread_is_realtime};

/// Shortest adaptive spin.
pub(super) const MIN_SPIN: Duration = Duration::from_micros(1);
/// Polls between clock reads while spinning.
const CLOCK_EVERY: u32 = 64;
/// The share of recent waits (in 1/256ths) a full spin must catch to be
/// kept: one in eight. A full spin costs at most `spin_before_park_us` of
/// CPU; each catch saves a park and a wake-up (two system calls, a context
/// switch, and tens of microseconds of latency on a VM).
const SPIN_WHILE_CAUGHT: u32 = 256 / 8;
/// In short mode, every this many waits spins the full length.
const PROBE_EVERY: u32 = 8;
/// The window over which an adaptive waiter keeps its thread's idle
/// share.
const IDLE_WINDOW: Duration = Duration::from_millis(100);
/// The share (percent) of each window an adaptive waiter on a real-time
/// thread leaves idle. The kernel's default real-time throttling demands
/// 5% of each second. Idle is read from the kernel's own count, so the
/// margin only has to cover a window's first tenth (unchecked: at most
/// 0.7 ms owed at each end of a second) and the time between two looks:
/// 2% (20 ms a second) does. Each point of share is a point of CPU the
/// busiest executor cannot use (`bench mesh` at 24,000 req/s, with the
/// pump's naps then a fixed 50 us, p99: 1.7-1.8 ms at 7%, 2.6-3.2 ms at
/// 10%).
const IDLE_SHARE: u32 = 7;
/// How often, at most, the waiter reads its thread's CPU time (a system
/// call) to know whether it owes the CPU idle time; the answer holds in
/// between.
const LOOK_EVERY: Duration = Duration::from_micros(500);

/// The spin-phase state of a consumer.
#[derive(Debug)]
pub(super) struct Waiter {
    strategy: WaitStrategy,
    /// Whether the waiting thread was real-time ([`thread_is_realtime`])
    /// at the start of the current window: only a real-time thread keeps
    /// an idle share.
    realtime: bool,
    /// Whether the thread owed the CPU idle time at the last look.
    owes: bool,
    /// Tests answer for the kernel. (Only there: see the size check
    /// below.)
    #[cfg(test)]
    kernel: Kernel,
    /// An adaptive waiter's full spin.
    full: Duration,
    /// Recent waits that ended within a full spin, in 1/256ths.
    caught: u32,
    /// Short-mode waits since the last full spin.
    since_probe: u32,
    /// When the current [`IDLE_WINDOW`] began.
    window: Instant,
    /// The thread's CPU time then.
    cpu_at_window: Duration,
    /// When, in nanoseconds into the window, the thread's CPU time is
    /// next read.
    next_look_ns: u32,
}

// A consumer's waiter sits beside its ring indices, in every consumer: it
// stays within 64 bytes (at 72, a runtime call cost ~100 ns more at p50 in
// `bench router`).
#[cfg(not(test))]
const _: () = assert!(std::mem::size_of::<Waiter>() <= 64);

/// What tests make the kernel say of the waiting thread.
#[cfg(test)]
#[derive(Debug, Clone, Copy)]
struct Kernel {
    realtime: fn() -> bool,
    cpu_time: fn() -> Duration,
}

impl Waiter {
    pub(super) fn new(strategy: WaitStrategy, max_spin: Duration) -> Self {
        Self {
            strategy,
            realtime: false,
            owes: false,
            #[cfg(test)]
            kernel: Kernel {
                realtime: thread_is_realtime,
                cpu_time: thread_cpu_time,
            },
            full: max_spin.max(MIN_SPIN),
            caught: 256,
            since_probe: 0,
            // A window that has already ended: the first wait opens the
            // next one and asks the kernel from the waiting thread (a
            // waiter may be built on another).
            window: Instant::now()
                .checked_sub(IDLE_WINDOW)
                .unwrap_or_else(Instant::now),
            cpu_at_window: Duration::ZERO,
            next_look_ns: 0,
        }
    }

    /// A waiter whose thread the kernel answers for as `kernel` says.
    #[cfg(test)]
    fn asking(strategy: WaitStrategy, max_spin: Duration, kernel: Kernel) -> Self {
        Self {
            kernel,
            ..Self::new(strategy, max_spin)
        }
    }

    /// Whether the waiting thread is real-time now.
    fn ask_realtime(&self) -> bool {
        #[cfg(test)]
        return (self.kernel.realtime)();
        #[cfg(not(test))]
        thread_is_realtime()
    }

    /// The waiting thread's CPU time.
    fn ask_cpu_time(&self) -> Duration {
        #[cfg(test)]
        return (self.kernel.cpu_time)();
        #[cfg(not(test))]
        thread_cpu_time()
    }

    /// Whether the thread, real-time, left less than [`IDLE_SHARE`] of
    /// the current window idle, once a tenth of it has passed (a new
    /// window starts afresh and asks the kernel again). Reads the
    /// thread's CPU time at most every [`LOOK_EVERY`].
    fn owes_idle(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.window);
        if elapsed >= IDLE_WINDOW {
            self.window = now;
            self.realtime = self.ask_realtime();
            self.owes = false;
            if self.realtime {
                self.cpu_at_window = self.ask_cpu_time();
            }
            self.next_look_ns = nanos(IDLE_WINDOW / 10);
            return false;
        }
        if !self.realtime || nanos(elapsed) < self.next_look_ns {
            return self.owes;
        }
        let used = self.ask_cpu_time().saturating_sub(self.cpu_at_window);
        let idle = elapsed.saturating_sub(used);
        self.owes = idle * 100 < elapsed * IDLE_SHARE;
        self.next_look_ns = nanos(elapsed + LOOK_EVERY);
        self.owes
    }

    /// Whether the waiter owes the CPU a park: a real-time thread that
    /// left less than [`IDLE_SHARE`] of the window idle.
    fn owes_park(&mut self, now: Instant) -> bool {
        self.owes_idle(now)
    }

    /// The idle time the thread owes the CPU now, work or not: zero
    /// unless it is real-time with less than [`IDLE_SHARE`] of the window
    /// idle, though the waiter parks at every gap then (the gaps were too
    /// short to park in: a park finds the next frame already there). A
    /// thread that spins never owes a nap. When it owes one, the amount is
    /// read afresh (a system call), and the next question reads the CPU
    /// time again: the nap that follows pays some of it back. (Asked by
    /// [`ConsumerGroup`](super::ConsumerGroup)'s owner only.)
    #[cfg(any(test, feature = "glommio"))]
    pub(super) fn owed_nap(&mut self, now: Instant) -> Duration {
        if self.strategy == WaitStrategy::Spin || !self.owes_idle(now) {
            return Duration::ZERO;
        }
        let elapsed = now.saturating_duration_since(self.window);
        let used = self.ask_cpu_time().saturating_sub(self.cpu_at_window);
        let idle = elapsed.saturating_sub(used);
        self.next_look_ns = 0;
        (elapsed * IDLE_SHARE / 100).saturating_sub(idle)
    }

    /// Records a wait that ended with a frame within its spin.
    pub(super) fn caught(&mut self) {
        if self.strategy == WaitStrategy::Adaptive {
            self.caught += (256 - self.caught) / 8;
        }
    }

    /// Records a spin that ran out after `spun` without a frame: a miss
    /// when it was a full spin (one cut short by the caller's deadline,
    /// or a short-mode spin, tells nothing).
    pub(super) fn ran_out(&mut self, spun: Duration) {
        if self.strategy == WaitStrategy::Adaptive && spun >= self.full {
            self.caught -= self.caught / 8;
        }
    }

    /// Polls the ring a few times without reading the clock: frames that
    /// are there, or arrive within [`CLOCK_EVERY`] polls, count as caught.
    /// `park` polls once.
    pub(super) fn poll_first(&mut self, end: &mut ConsumerEnd) -> Result<bool, RingError> {
        let polls = if self.strategy == WaitStrategy::Park {
            1
        } else {
            CLOCK_EVERY
        };
        for _ in 0..polls {
            if end.has_frames()? {
                self.caught();
                return Ok(true);
            }
            std::hint::spin_loop();
        }
        Ok(false)
    }

    /// How long a wait starting `now` spins before parking (`None`: until
    /// its deadline).
    pub(super) fn budget(&mut self, now: Instant) -> Option<Duration> {
        match self.strategy {
            WaitStrategy::Spin => None,
            WaitStrategy::Park => Some(Duration::ZERO),
            WaitStrategy::Adaptive => {
                if self.owes_park(now) {
                    return Some(MIN_SPIN);
                }
                if self.caught >= SPIN_WHILE_CAUGHT {
                    return Some(self.full);
                }
                self.since_probe += 1;
                if self.since_probe >= PROBE_EVERY {
                    self.since_probe = 0;
                    return Some(self.full);
                }
                Some(MIN_SPIN)
            }
        }
    }

    /// Spins until a frame is ready (true) or the spin phase ends (false).
    /// `started` is when the wait began (after the first polls).
    pub(super) fn spin(
        &mut self,
        end: &mut ConsumerEnd,
        started: Instant,
        deadline: Instant,
    ) -> Result<bool, RingError> {
        let stop = match self.budget(started) {
            // `park` does not spin: poll_first already looked once.
            Some(Duration::ZERO) => return Ok(false),
            None => deadline,
            Some(budget) => (started + budget).min(deadline),
        };
        let mut polls = 0u32;
        loop {
            if end.has_frames()? {
                self.caught();
                return Ok(true);
            }
            polls = polls.wrapping_add(1);
            if polls.is_multiple_of(CLOCK_EVERY) && Instant::now() >= stop {
                self.ran_out(started.elapsed());
                return Ok(false);
            }
            std::hint::spin_loop();
        }
    }

    #[cfg(feature = "glommio")]
    /// [`Waiter::spin`] on a glommio executor: yields to other tasks between
    /// polls instead of holding the CPU.
    pub(super) async fn spin_async(
        &mut self,
        end: &mut ConsumerEnd,
        started: Instant,
        deadline: Instant,
    ) -> Result<bool, RingError> {
        let stop = match self.budget(started) {
            Some(Duration::ZERO) => return Ok(false),
            None => deadline,
            Some(budget) => (started + budget).min(deadline),
        };
        loop {
            if end.has_frames()? {
                self.caught();
                return Ok(true);
            }
            if Instant::now() >= stop {
                self.ran_out(started.elapsed());
                return Ok(false);
            }
            glommio::yield_if_needed().await;
        }
    }
}

/// `d` in nanoseconds, within a window (saturating far beyond one).
fn nanos(d: Duration) -> u32 {
    u32::try_from(d.as_nanos()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::cell::Cell;

    const FULL: Duration = Duration::from_micros(50);

    thread_local! {
        /// The CPU time the kernel reports for the test's thread.
        static CPU: Cell<Duration> = const { Cell::new(Duration::ZERO) };
    }

    /// Makes the kernel report `ms` of CPU time used by this thread.
    fn cpu_used(ms: f64) {
        CPU.with(|cpu| cpu.set(Duration::from_secs_f64(ms / 1000.0)));
    }

    /// A kernel that says the thread is real-time when `realtime` does,
    /// and reports [`CPU`].
    fn kernel(realtime: fn() -> bool) -> Kernel {
        Kernel {
            realtime,
            cpu_time: || CPU.with(Cell::get),
        }
    }

    /// A waiter on a thread that counts as real-time, its first window
    /// open with no CPU time used.
    fn sut(strategy: WaitStrategy) -> Waiter {
        opened(Waiter::asking(strategy, FULL, kernel(|| true)))
    }

    fn opened(mut waiter: Waiter) -> Waiter {
        cpu_used(0.0);
        let start = waiter.window + IDLE_WINDOW;
        assert!(!waiter.owes_idle(start), "a new window");
        waiter
    }

    /// `ms` into the waiter's window.
    fn at(waiter: &Waiter, ms: f64) -> Instant {
        waiter.window + Duration::from_secs_f64(ms / 1000.0)
    }

    /// The next budget, asked at the start of the waiter's window (so
    /// the idle share plays no part).
    fn next(waiter: &mut Waiter) -> Option<Duration> {
        let at = waiter.window;
        waiter.budget(at)
    }

    /// An adaptive waiter after `n` full spins that ran out.
    fn after_misses(n: usize) -> Waiter {
        let mut waiter = sut(WaitStrategy::Adaptive);
        for _ in 0..n {
            let budget = next(&mut waiter).expect("adaptive has a budget");
            waiter.ran_out(budget);
        }
        waiter
    }

    #[test]
    fn spin_has_no_budget_and_park_has_none_to_spend() {
        assert_eq!(next(&mut sut(WaitStrategy::Spin)), None);
        assert_eq!(next(&mut sut(WaitStrategy::Park)), Some(Duration::ZERO));
    }

    #[test]
    fn adaptive_spins_the_full_length_until_full_spins_keep_running_out() {
        assert_eq!(next(&mut sut(WaitStrategy::Adaptive)), Some(FULL));
        assert_eq!(next(&mut after_misses(8)), Some(FULL));
        let mut idle = after_misses(64);
        let short = (0..PROBE_EVERY)
            .filter(|_| next(&mut idle) == Some(MIN_SPIN))
            .count();
        assert_eq!(short, PROBE_EVERY as usize - 1, "all but the probe");
    }

    #[test]
    fn chains_of_short_waits_between_long_gaps_keep_the_full_spin() {
        // A request's chain: nineteen waits caught, then one idle gap that
        // a full spin does not bridge; over and over.
        let mut sut = sut(WaitStrategy::Adaptive);
        for _ in 0..50 {
            for _ in 0..19 {
                assert_eq!(next(&mut sut), Some(FULL));
                sut.caught();
            }
            assert_eq!(next(&mut sut), Some(FULL));
            sut.ran_out(FULL);
        }
        assert_eq!(next(&mut sut), Some(FULL));
    }

    #[test]
    fn in_short_mode_every_eighth_wait_probes_and_a_catch_brings_the_full_spin_back() {
        let mut sut = after_misses(64);
        while next(&mut sut) != Some(FULL) {}
        let budgets: Vec<_> = (0..PROBE_EVERY).map(|_| next(&mut sut)).collect();
        assert_eq!(budgets[..7], [Some(MIN_SPIN); 7]);
        assert_eq!(budgets[7], Some(FULL));
        // Parks after short spins tell nothing; a probe that catches does.
        sut.ran_out(MIN_SPIN);
        assert_eq!(next(&mut sut), Some(MIN_SPIN));
        for _ in 0..4 {
            sut.caught();
        }
        assert_eq!(next(&mut sut), Some(FULL));
    }

    #[test]
    fn a_spin_cut_short_by_the_deadline_is_not_a_miss() {
        let mut sut = sut(WaitStrategy::Adaptive);
        for _ in 0..64 {
            sut.ran_out(FULL / 2);
        }
        assert_eq!(next(&mut sut), Some(FULL));
    }

    /// `ms` as a duration.
    fn ms(ms: f64) -> Duration {
        Duration::from_secs_f64(ms / 1000.0)
    }

    #[test]
    fn a_thread_that_left_too_little_of_its_window_idle_parks_until_it_has() {
        let mut sut = sut(WaitStrategy::Adaptive);
        cpu_used(5.0);
        assert_eq!(sut.budget(at(&sut, 5.0)), Some(FULL), "early in the window");
        cpu_used(50.0);
        assert_eq!(sut.budget(at(&sut, 50.0)), Some(MIN_SPIN), "nothing idle");
        cpu_used(47.5);
        assert_eq!(
            sut.budget(at(&sut, 50.2)),
            Some(MIN_SPIN),
            "the last look's answer holds until the next"
        );
        assert_eq!(sut.budget(at(&sut, 50.6)), Some(MIN_SPIN), "6% idle");
        assert_eq!(sut.budget(at(&sut, 51.2)), Some(FULL), "7% idle");
        let start = sut.window;
        cpu_used(90.0);
        assert_eq!(
            sut.budget(start + IDLE_WINDOW),
            Some(FULL),
            "a new window starts afresh"
        );
        cpu_used(101.0);
        assert_eq!(sut.budget(at(&sut, 11.0)), Some(MIN_SPIN));
    }

    #[test]
    fn time_asleep_that_the_kernel_charged_as_cpu_time_is_not_idle() {
        // A VM: each short sleep costs its thread ~20 us of CPU time.
        // Half the window spent in sleeps, 95% of it charged: 5% idle.
        let mut sut = sut(WaitStrategy::Adaptive);
        cpu_used(47.5);
        assert_eq!(
            sut.owed_nap(at(&sut, 50.0)),
            ms(1.0),
            "7% of 50 ms, less 2.5 ms"
        );
        assert_eq!(sut.budget(at(&sut, 50.0)), Some(MIN_SPIN));
    }

    #[test]
    fn a_thread_that_could_not_park_at_its_gaps_owes_the_idle_time_it_is_short_of() {
        let mut sut = sut(WaitStrategy::Adaptive);
        cpu_used(5.0);
        assert_eq!(
            sut.owed_nap(at(&sut, 5.0)),
            Duration::ZERO,
            "early in the window"
        );
        cpu_used(40.0);
        assert_eq!(
            sut.owed_nap(at(&sut, 40.0)),
            ms(2.8),
            "nothing idle: 7% of 40 ms"
        );
        // A nap of 0.4 ms: the next question looks again at once.
        assert_eq!(sut.owed_nap(at(&sut, 40.4)), ms(2.428), "0.4 ms idle");
        assert_eq!(
            sut.owed_nap(at(&sut, 43.1)),
            Duration::ZERO,
            "3.1 ms idle: 7.2%"
        );
        let mut spinner = self::sut(WaitStrategy::Spin);
        cpu_used(40.0);
        assert_eq!(spinner.owed_nap(at(&spinner, 40.0)), Duration::ZERO);
    }

    #[test]
    fn a_thread_that_is_not_real_time_keeps_no_idle_share() {
        let mut sut = opened(Waiter::asking(
            WaitStrategy::Adaptive,
            FULL,
            kernel(|| false),
        ));
        cpu_used(50.0);
        let later = at(&sut, 50.0);
        assert_eq!(
            sut.owed_nap(later),
            Duration::ZERO,
            "nothing idle, yet never throttled"
        );
        assert_eq!(sut.budget(later), Some(FULL));
    }

    #[test]
    fn the_kernel_is_asked_again_at_each_window() {
        use std::sync::atomic::{AtomicBool, Ordering};
        static REALTIME: AtomicBool = AtomicBool::new(false);
        // SYNC: Relaxed; one test thread reads and writes it.
        let mut sut = opened(Waiter::asking(
            WaitStrategy::Adaptive,
            FULL,
            kernel(|| REALTIME.load(Ordering::Relaxed)),
        ));
        let start = sut.window;
        let at = |ms| start + Duration::from_millis(ms);
        cpu_used(50.0);
        assert_eq!(sut.owed_nap(at(50)), Duration::ZERO);
        // SYNC: Relaxed, as above.
        REALTIME.store(true, Ordering::Relaxed);
        cpu_used(60.0);
        assert_eq!(
            sut.owed_nap(at(60)),
            Duration::ZERO,
            "the window's answer holds"
        );
        cpu_used(100.0);
        assert_eq!(
            sut.owed_nap(at(100)),
            Duration::ZERO,
            "a new window, asked again"
        );
        cpu_used(150.0);
        assert!(
            !sut.owed_nap(at(150)).is_zero(),
            "now real-time, nothing idle"
        );
    }

    #[test]
    fn other_strategies_keep_no_history() {
        let mut sut = sut(WaitStrategy::Park);
        sut.caught();
        sut.ran_out(FULL);
        assert_eq!(sut.caught, 256);
    }
}
