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
//!   [`PARK_WINDOW`], once a tenth of it has passed, a waiter on a
//!   real-time thread spins only while it has spent at least
//!   [`PARKED_SHARE`] of the window parked; below that it parks at each
//!   gap until it has. Whether the thread is real-time is asked of the
//!   kernel (`sched_getscheduler`) at the start of each window, so a
//!   thread moved to or from SCHED_FIFO (`chrt`, a tuning profile) is
//!   followed within one window; a SCHED_OTHER thread is never throttled
//!   and keeps no share. Under a dense stream the gaps are too short
//!   to park in (a park finds the next frame already there), so a thread
//!   below that share also naps, frames or not
//!   ([`ConsumerGroup::nap`](super::ConsumerGroup::nap), asked by an
//!   executor's pump between batches): many naps of tens of microseconds
//!   instead of one 50 ms stall. (`bench mesh` at 24,000 req/s with
//!   neither: p99 38.5 ms, max 49.6 ms.)
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
use super::thread::thread_is_realtime;

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
/// The window over which an adaptive waiter keeps its parked share.
const PARK_WINDOW: Duration = Duration::from_millis(100);
/// The share of each window an adaptive waiter keeps parked (when there
/// are gaps to park in): twice the idle time the kernel's default
/// real-time throttling demands (5%).
const PARKED_SHARE: u32 = 10;

/// The spin-phase state of a consumer.
#[derive(Debug)]
pub(super) struct Waiter {
    strategy: WaitStrategy,
    /// Whether the waiting thread was real-time ([`thread_is_realtime`])
    /// at the start of the current window: only a real-time thread keeps
    /// a parked share.
    realtime: bool,
    /// Tests answer for the kernel. (Only there: a consumer's waiter sits
    /// beside its ring indices, and eight more bytes in every one cost a
    /// runtime call ~60 ns in `bench router`.)
    #[cfg(test)]
    realtime_now: fn() -> bool,
    /// An adaptive waiter's full spin.
    full: Duration,
    /// Recent waits that ended within a full spin, in 1/256ths.
    caught: u32,
    /// Short-mode waits since the last full spin.
    since_probe: u32,
    /// When the current [`PARK_WINDOW`] began.
    window: Instant,
    /// Time parked in it.
    parked: Duration,
}

impl Waiter {
    pub(super) fn new(strategy: WaitStrategy, max_spin: Duration) -> Self {
        Self {
            strategy,
            realtime: false,
            #[cfg(test)]
            realtime_now: thread_is_realtime,
            full: max_spin.max(MIN_SPIN),
            caught: 256,
            since_probe: 0,
            // A window that has already ended: the first wait opens the
            // next one and asks the kernel from the waiting thread (a
            // waiter may be built on another).
            window: Instant::now()
                .checked_sub(PARK_WINDOW)
                .unwrap_or_else(Instant::now),
            parked: Duration::ZERO,
        }
    }

    /// A waiter whose thread counts as real-time when `realtime_now` says.
    #[cfg(test)]
    fn asking(strategy: WaitStrategy, max_spin: Duration, realtime_now: fn() -> bool) -> Self {
        Self {
            realtime_now,
            ..Self::new(strategy, max_spin)
        }
    }

    /// Whether the waiting thread is real-time now.
    fn ask_realtime(&self) -> bool {
        #[cfg(test)]
        return (self.realtime_now)();
        #[cfg(not(test))]
        thread_is_realtime()
    }

    /// Records time spent parked.
    pub(super) fn parked(&mut self, slept: Duration) {
        self.parked += slept;
    }

    /// Whether less than `percent` of the current window was parked, once
    /// a tenth of it has passed, on a real-time thread (a new window
    /// starts afresh and asks the kernel again).
    fn parked_below(&mut self, now: Instant, percent: u32) -> bool {
        let elapsed = now.saturating_duration_since(self.window);
        if elapsed >= PARK_WINDOW {
            (self.window, self.parked) = (now, Duration::ZERO);
            self.realtime = self.ask_realtime();
            return false;
        }
        self.realtime && elapsed >= PARK_WINDOW / 10 && self.parked * 100 < elapsed * percent
    }

    /// Whether the waiter owes the CPU a park: a real-time thread with
    /// less than [`PARKED_SHARE`] of the window parked.
    fn owes_park(&mut self, now: Instant) -> bool {
        self.parked_below(now, PARKED_SHARE)
    }

    /// Whether the thread owes the CPU a nap, work or not: real-time, less than
    /// [`PARKED_SHARE`] of the window parked, though the waiter parks at
    /// every gap then (the gaps were too short to park in: a park finds
    /// the next frame already there). A thread that spins never naps.
    /// (Asked by [`ConsumerGroup`](super::ConsumerGroup)'s owner only.)
    #[cfg(any(test, feature = "glommio"))]
    pub(super) fn owes_nap(&mut self, now: Instant) -> bool {
        self.strategy != WaitStrategy::Spin && self.parked_below(now, PARKED_SHARE)
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

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: Duration = Duration::from_micros(50);

    /// A waiter on a thread that counts as real-time, its first window
    /// open.
    fn sut(strategy: WaitStrategy) -> Waiter {
        opened(Waiter::asking(strategy, FULL, || true))
    }

    fn opened(mut waiter: Waiter) -> Waiter {
        let start = waiter.window + PARK_WINDOW;
        assert!(!waiter.parked_below(start, PARKED_SHARE), "a new window");
        waiter
    }

    /// The next budget, asked at the start of the waiter's window (so
    /// the parked share plays no part).
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

    #[test]
    fn a_waiter_that_parked_too_little_of_its_window_parks_until_it_has() {
        let mut sut = sut(WaitStrategy::Adaptive);
        let start = sut.window;
        let later = |ms| start + Duration::from_millis(ms);
        assert_eq!(sut.budget(later(5)), Some(FULL), "early in the window");
        assert_eq!(sut.budget(later(50)), Some(MIN_SPIN), "nothing parked");
        sut.parked(Duration::from_millis(4));
        assert_eq!(sut.budget(later(50)), Some(MIN_SPIN), "8% parked");
        sut.parked(Duration::from_millis(1));
        assert_eq!(sut.budget(later(50)), Some(FULL), "10% parked");
        assert_eq!(
            sut.budget(later(100)),
            Some(FULL),
            "a new window starts afresh"
        );
        assert_eq!(sut.budget(later(111)), Some(MIN_SPIN));
    }

    #[test]
    fn a_thread_that_could_not_park_at_its_gaps_owes_a_nap() {
        let mut sut = sut(WaitStrategy::Adaptive);
        let start = sut.window;
        let later = |ms| start + Duration::from_millis(ms);
        assert!(!sut.owes_nap(later(5)), "early in the window");
        assert!(sut.owes_nap(later(40)), "nothing parked");
        sut.parked(Duration::from_millis(3));
        assert!(sut.owes_nap(later(40)), "7.5% parked");
        sut.parked(Duration::from_millis(1));
        assert!(!sut.owes_nap(later(40)), "10% parked");
        let mut spinner = self::sut(WaitStrategy::Spin);
        assert!(!spinner.owes_nap(spinner.window + Duration::from_millis(40)));
    }

    #[test]
    fn a_thread_that_is_not_real_time_keeps_no_parked_share() {
        let mut sut = opened(Waiter::asking(WaitStrategy::Adaptive, FULL, || false));
        let later = sut.window + Duration::from_millis(50);
        assert!(!sut.owes_nap(later), "nothing parked, yet never throttled");
        assert_eq!(sut.budget(later), Some(FULL));
    }

    #[test]
    fn the_kernel_is_asked_again_at_each_window() {
        use std::sync::atomic::{AtomicBool, Ordering};
        static REALTIME: AtomicBool = AtomicBool::new(false);
        // SYNC: Relaxed; one test thread reads and writes it.
        let mut sut = opened(Waiter::asking(WaitStrategy::Adaptive, FULL, || {
            REALTIME.load(Ordering::Relaxed)
        }));
        let start = sut.window;
        let at = |ms| start + Duration::from_millis(ms);
        assert!(!sut.owes_nap(at(50)));
        // SYNC: Relaxed, as above.
        REALTIME.store(true, Ordering::Relaxed);
        assert!(!sut.owes_nap(at(60)), "the window's answer holds");
        assert!(!sut.owes_nap(at(100)), "a new window, asked again");
        assert!(sut.owes_nap(at(150)), "now real-time, nothing parked");
    }

    #[test]
    fn other_strategies_keep_no_history() {
        let mut sut = sut(WaitStrategy::Park);
        sut.caught();
        sut.ran_out(FULL);
        assert_eq!(sut.caught, 256);
    }
}
