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
//!   Spinning never takes the whole CPU of a real-time thread, though
//!   (`idle.rs`: a SCHED_FIFO thread that never sleeps is throttled by
//!   the kernel). While the thread owes the CPU idle time, an executor's
//!   pump naps, frames or not, for what is owed
//!   ([`ConsumerGroup::owed_nap`](super::ConsumerGroup::owed_nap)): many
//!   naps of 50-200 us, in slots every executor shares, instead of one
//!   50 ms stall. Once it owes more than those naps pay as they come (a
//!   thread with no pump, or a stream of handlers that hold it past the
//!   slots), the waiter parks at each gap too. (`bench mesh` at 24,000
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
use super::idle::IdleShare;
use super::layout::ConsumerEnd;

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

/// The spin-phase state of a consumer.
#[derive(Debug)]
pub(super) struct Waiter {
    strategy: WaitStrategy,
    /// An adaptive waiter's full spin, in nanoseconds (at most ~4.3 s).
    full_ns: u32,
    /// Recent waits that ended within a full spin, in 1/256ths.
    caught: u32,
    /// Short-mode waits since the last full spin.
    since_probe: u32,
    /// Whether the waiting thread owes the CPU idle time.
    idle: IdleShare,
}

// A consumer's waiter sits beside its ring indices, in every consumer: it
// stays within 64 bytes (at 72, a runtime call cost ~100 ns more at p50 in
// `bench router`).
#[cfg(not(test))]
const _: () = assert!(std::mem::size_of::<Waiter>() <= 64);

impl Waiter {
    pub(super) fn new(strategy: WaitStrategy, max_spin: Duration) -> Self {
        Self::with(strategy, max_spin, IdleShare::new())
    }

    fn with(strategy: WaitStrategy, max_spin: Duration, idle: IdleShare) -> Self {
        let full = max_spin.max(MIN_SPIN).as_nanos();
        Self {
            strategy,
            full_ns: u32::try_from(full).unwrap_or(u32::MAX),
            caught: 256,
            since_probe: 0,
            idle,
        }
    }

    /// An adaptive waiter's full spin.
    fn full(&self) -> Duration {
        Duration::from_nanos(u64::from(self.full_ns))
    }

    /// The idle time the thread owes the CPU now, work or not (zero:
    /// none; `idle.rs`): a small debt the waiter leaves to these naps, a
    /// larger one it also parks at every gap for. A thread that spins
    /// never owes a nap. (Asked by
    /// [`ConsumerGroup`](super::ConsumerGroup)'s owner only.)
    #[cfg(any(test, feature = "glommio"))]
    pub(super) fn owed_nap(&mut self, now: Instant) -> Duration {
        if self.strategy == WaitStrategy::Spin {
            return Duration::ZERO;
        }
        self.idle.owed(now)
    }

    /// Whether a wait starting `now` spins to a deadline that comes
    /// sooner than a park would wake for it (`lateness.rs`) rather than
    /// park: an adaptive waiter does, unless its thread owes the CPU idle
    /// time. (Asked by [`ConsumerGroup`](super::ConsumerGroup), which
    /// keeps how late its thread wakes.)
    #[cfg(any(test, feature = "glommio"))]
    pub(super) fn spins_to_near(&mut self, now: Instant) -> bool {
        self.strategy == WaitStrategy::Adaptive && !self.idle.owes(now)
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
        if self.strategy == WaitStrategy::Adaptive && spun >= self.full() {
            self.caught -= self.caught / 8;
        }
    }

    /// Polls the ring a few times without reading the clock: frames that
    /// are there, or arrive within [`CLOCK_EVERY`] polls, count as caught.
    /// `park` polls once.
    #[inline]
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
                if self.idle.owes(now) {
                    return Some(MIN_SPIN);
                }
                if self.caught >= SPIN_WHILE_CAUGHT {
                    return Some(self.full());
                }
                self.since_probe += 1;
                if self.since_probe >= PROBE_EVERY {
                    self.since_probe = 0;
                    return Some(self.full());
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

    use super::super::idle::test_kernel::{Kernel, cpu_used, ms};

    const FULL: Duration = Duration::from_micros(50);

    /// A waiter on a thread that is not real-time (it never owes the CPU
    /// idle time, so only the strategy decides).
    fn sut(strategy: WaitStrategy) -> Waiter {
        Waiter::with(strategy, FULL, IdleShare::asking(Kernel::fake(|| false)))
    }

    /// An adaptive waiter on a real-time thread (it may owe the CPU idle
    /// time).
    fn realtime_adaptive() -> Waiter {
        Waiter::with(
            WaitStrategy::Adaptive,
            FULL,
            IdleShare::asking(Kernel::fake(|| true)),
        )
    }

    /// The next budget.
    fn next(waiter: &mut Waiter) -> Option<Duration> {
        waiter.budget(Instant::now())
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
    fn a_real_time_thread_that_owes_idle_time_parks_at_every_gap_and_naps_unless_it_spins() {
        for strategy in [
            WaitStrategy::Adaptive,
            WaitStrategy::Park,
            WaitStrategy::Spin,
        ] {
            let mut sut = Waiter::with(strategy, FULL, IdleShare::asking(Kernel::fake(|| true)));
            cpu_used(0.0);
            let start = Instant::now();
            assert_eq!(sut.owed_nap(start), Duration::ZERO, "a new window");
            let fresh = sut.budget(start);
            cpu_used(5.0);
            assert_eq!(
                sut.budget(start + ms(5.0)),
                fresh,
                "{strategy:?}: early in the window"
            );
            cpu_used(50.0);
            let (budget, nap) = (sut.budget(start + ms(50.0)), sut.owed_nap(start + ms(50.0)));
            let expected = match strategy {
                WaitStrategy::Adaptive => (Some(MIN_SPIN), ms(3.5)),
                WaitStrategy::Park => (Some(Duration::ZERO), ms(3.5)),
                WaitStrategy::Spin => (None, Duration::ZERO),
            };
            assert_eq!((budget, nap), expected, "{strategy:?}: nothing idle");
        }
    }

    #[test]
    fn a_thread_that_owes_a_little_keeps_spinning_and_is_told_to_nap() {
        let mut sut = realtime_adaptive();
        cpu_used(0.0);
        let start = Instant::now();
        assert_eq!(sut.owed_nap(start), Duration::ZERO, "a new window");
        for _ in 0..8 {
            sut.caught();
        }
        // 7% of 20 ms is 1.4 ms, and 1.3 ms was idle.
        cpu_used(18.7);
        let at = start + ms(20.0);
        assert_eq!((sut.budget(at), sut.owed_nap(at)), (Some(FULL), ms(0.1)));
        // 2 ms later, none of it idle: 0.24 ms owed.
        cpu_used(20.7);
        let at = start + ms(22.0);
        assert_eq!(
            (sut.budget(at), sut.owed_nap(at)),
            (Some(MIN_SPIN), ms(0.24))
        );
    }

    #[test]
    fn only_an_adaptive_waiter_that_owes_nothing_spins_to_a_near_deadline() {
        let now = Instant::now();
        assert!(sut(WaitStrategy::Adaptive).spins_to_near(now));
        // `park` never spins; `spin` spins to every deadline anyway.
        assert!(!sut(WaitStrategy::Park).spins_to_near(now));
        assert!(!sut(WaitStrategy::Spin).spins_to_near(now));
        let mut owing = realtime_adaptive();
        cpu_used(0.0);
        let start = Instant::now();
        assert!(owing.spins_to_near(start), "a new window");
        cpu_used(50.0);
        assert!(
            !owing.spins_to_near(start + ms(50.0)),
            "a thread that owes the CPU idle time parks"
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
