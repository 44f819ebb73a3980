//! How a consumer waits for frames: the spin phase of each strategy.
//!
//! * `spin`: poll the ring until the deadline; never park, so the producer
//!   never pays the doorbell fence. For dedicated cores only.
//! * `park`: no spin; declare itself asleep and block on the doorbell.
//! * `adaptive`: spin for a budget that follows the recent traffic, then
//!   park. The budget follows the *wait*: how long the consumer recently
//!   had to wait for each arrival, an exponentially weighted mean (weight
//!   1/8). The wait is the idle part of the gap between arrivals, and it is
//!   what spinning is for: when frames come every few microseconds the
//!   budget is four waits, so the next frame is caught by spinning instead
//!   of a wake-up; when waits exceed the class's `spin_before_park_us`,
//!   spinning would only burn the CPU, so the budget falls to [`MIN_SPIN`],
//!   which still catches a producer's back-to-back batches. The budget never
//!   exceeds `spin_before_park_us`.
//!
//! The clock is read only when a wait has to spin: frames found by the
//! first [`CLOCK_EVERY`] polls count as no wait and cost no clock read, so
//! dense traffic pays nothing for adaptation. While spinning, time is read
//! every [`CLOCK_EVERY`] polls: a clock read costs about as much as 20
//! polls of an idle ring.

use std::time::{Duration, Instant};

use super::RingError;
use super::WaitStrategy;
use super::layout::ConsumerEnd;

/// Shortest adaptive spin.
pub(super) const MIN_SPIN: Duration = Duration::from_micros(1);
/// Polls between clock reads while spinning.
const CLOCK_EVERY: u32 = 64;

/// The spin-phase state of a consumer.
#[derive(Debug)]
pub(super) struct Waiter {
    strategy: WaitStrategy,
    max_spin: Duration,
    /// Mean wait per arrival, nanoseconds; `None` before the first.
    wait_ns: Option<u64>,
}

impl Waiter {
    pub(super) fn new(strategy: WaitStrategy, max_spin: Duration) -> Self {
        Self {
            strategy,
            max_spin,
            wait_ns: None,
        }
    }

    /// Records how long the consumer waited for an arrival.
    pub(super) fn waited(&mut self, wait: Duration) {
        if self.strategy != WaitStrategy::Adaptive {
            return;
        }
        let wait = u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX);
        self.wait_ns = Some(match self.wait_ns {
            None => wait,
            Some(mean) => mean - mean / 8 + wait / 8,
        });
    }

    /// Polls the ring a few times without reading the clock: frames that
    /// are there, or arrive within [`CLOCK_EVERY`] polls, count as no wait.
    /// `park` polls once.
    pub(super) fn poll_first(&mut self, end: &mut ConsumerEnd) -> Result<bool, RingError> {
        let polls = if self.strategy == WaitStrategy::Park {
            1
        } else {
            CLOCK_EVERY
        };
        for _ in 0..polls {
            if end.has_frames()? {
                self.waited(Duration::ZERO);
                return Ok(true);
            }
            std::hint::spin_loop();
        }
        Ok(false)
    }

    /// How long the next wait spins before parking.
    pub(super) fn budget(&self) -> Option<Duration> {
        match self.strategy {
            WaitStrategy::Spin => None,
            WaitStrategy::Park => Some(Duration::ZERO),
            WaitStrategy::Adaptive => {
                let Some(wait_ns) = self.wait_ns else {
                    return Some(MIN_SPIN);
                };
                let wait = Duration::from_nanos(wait_ns);
                let follow = Duration::from_nanos(wait_ns.saturating_mul(4));
                let budget = if wait <= self.max_spin {
                    follow.min(self.max_spin)
                } else {
                    MIN_SPIN
                };
                Some(budget.max(MIN_SPIN))
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
        let stop = match self.budget() {
            // `park` does not spin: poll_first already looked once.
            Some(Duration::ZERO) => return Ok(false),
            None => deadline,
            Some(budget) => (started + budget).min(deadline),
        };
        let mut polls = 0u32;
        loop {
            if end.has_frames()? {
                self.waited(started.elapsed());
                return Ok(true);
            }
            polls = polls.wrapping_add(1);
            if polls.is_multiple_of(CLOCK_EVERY) && Instant::now() >= stop {
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
        let stop = match self.budget() {
            Some(Duration::ZERO) => return Ok(false),
            None => deadline,
            Some(budget) => (started + budget).min(deadline),
        };
        loop {
            if end.has_frames()? {
                self.waited(started.elapsed());
                return Ok(true);
            }
            if Instant::now() >= stop {
                return Ok(false);
            }
            glommio::yield_if_needed().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sut(strategy: WaitStrategy) -> Waiter {
        Waiter::new(strategy, Duration::from_micros(50))
    }

    fn with_wait(wait: Duration) -> Waiter {
        let mut waiter = sut(WaitStrategy::Adaptive);
        for _ in 0..64 {
            waiter.waited(wait);
        }
        waiter
    }

    #[test]
    fn spin_has_no_budget_and_park_has_none_to_spend() {
        assert_eq!(sut(WaitStrategy::Spin).budget(), None);
        assert_eq!(sut(WaitStrategy::Park).budget(), Some(Duration::ZERO));
    }

    #[test]
    fn adaptive_budget_follows_short_waits() {
        assert_eq!(
            with_wait(Duration::from_micros(5)).budget(),
            Some(Duration::from_micros(20))
        );
    }

    #[test]
    fn adaptive_budget_is_capped_by_the_class_maximum() {
        assert_eq!(
            with_wait(Duration::from_micros(20)).budget(),
            Some(Duration::from_micros(50))
        );
        assert_eq!(
            with_wait(Duration::from_micros(60)).budget(),
            Some(MIN_SPIN)
        );
    }

    #[test]
    fn adaptive_budget_falls_to_the_minimum_when_idle_or_dense() {
        assert_eq!(
            with_wait(Duration::from_millis(10)).budget(),
            Some(MIN_SPIN)
        );
        assert_eq!(with_wait(Duration::ZERO).budget(), Some(MIN_SPIN));
        assert_eq!(sut(WaitStrategy::Adaptive).budget(), Some(MIN_SPIN));
    }

    #[test]
    fn the_mean_wait_moves_an_eighth_of_the_way_per_arrival() {
        let mut sut = with_wait(Duration::from_micros(8));
        sut.waited(Duration::ZERO);
        assert_eq!(sut.wait_ns, Some(7_000));
    }

    #[test]
    fn other_strategies_keep_no_history() {
        let mut sut = sut(WaitStrategy::Park);
        sut.waited(Duration::from_micros(3));
        assert_eq!(sut.wait_ns, None);
    }
}
