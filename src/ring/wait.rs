//! How a consumer waits for frames: the spin phase of each strategy.
//!
//! * `spin`: poll the ring until the deadline; never park, so the producer
//!   never pays the doorbell fence. For dedicated cores only.
//! * `park`: no spin; declare itself asleep and block on the doorbell.
//! * `adaptive`: spin for a budget that follows the recent gap between
//!   arrivals, then park. The gap is an exponentially weighted mean (weight
//!   1/8). When frames come every few microseconds the budget is four gaps,
//!   so the next frame is caught by spinning instead of a ~4 us wake-up;
//!   when the gap exceeds the class's `spin_before_park_us`, spinning would
//!   only burn the CPU, so the budget falls to [`MIN_SPIN`], which still
//!   catches a producer's back-to-back batches. The budget never exceeds
//!   `spin_before_park_us`.
//!
//! Time is read every [`CLOCK_EVERY`] polls: a clock read costs about as
//! much as 20 polls of an idle ring.

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
    gap_ns: u64,
    last_arrival: Option<Instant>,
}

impl Waiter {
    pub(super) fn new(strategy: WaitStrategy, max_spin: Duration) -> Self {
        Self {
            strategy,
            max_spin,
            gap_ns: u64::MAX,
            last_arrival: None,
        }
    }

    /// Records an arrival for the adaptive budget; the other strategies
    /// keep no history and read no clock.
    pub(super) fn note_arrival(&mut self) {
        if self.strategy == WaitStrategy::Adaptive {
            self.arrived(Instant::now());
        }
    }

    /// Polls the ring a few times without reading the clock: frames that
    /// are there, or arrive within [`CLOCK_EVERY`] polls, cost no clock
    /// read at all. `park` polls once.
    pub(super) fn poll_first(&mut self, end: &mut ConsumerEnd) -> Result<bool, RingError> {
        let polls = if self.strategy == WaitStrategy::Park {
            1
        } else {
            CLOCK_EVERY
        };
        for _ in 0..polls {
            if end.has_frames()? {
                self.note_arrival();
                return Ok(true);
            }
            std::hint::spin_loop();
        }
        Ok(false)
    }

    /// Records that frames arrived at `now`.
    pub(super) fn arrived(&mut self, now: Instant) {
        if let Some(last) = self.last_arrival {
            let gap = u64::try_from(now.duration_since(last).as_nanos()).unwrap_or(u64::MAX);
            self.gap_ns = if self.gap_ns == u64::MAX {
                gap
            } else {
                self.gap_ns - self.gap_ns / 8 + gap / 8
            };
        }
        self.last_arrival = Some(now);
    }

    /// How long the next wait spins before parking.
    pub(super) fn budget(&self) -> Option<Duration> {
        match self.strategy {
            WaitStrategy::Spin => None,
            WaitStrategy::Park => Some(Duration::ZERO),
            WaitStrategy::Adaptive => {
                let gap = Duration::from_nanos(self.gap_ns);
                let follow = Duration::from_nanos(self.gap_ns.saturating_mul(4));
                let budget = if gap <= self.max_spin {
                    follow.min(self.max_spin)
                } else {
                    MIN_SPIN
                };
                Some(budget.max(MIN_SPIN))
            }
        }
    }

    fn spin_end(&self, deadline: Instant) -> Instant {
        match self.budget() {
            None => deadline,
            Some(budget) => (Instant::now() + budget).min(deadline),
        }
    }

    /// Spins until a frame is ready (true) or the spin phase ends (false).
    pub(super) fn spin(
        &mut self,
        end: &mut ConsumerEnd,
        deadline: Instant,
    ) -> Result<bool, RingError> {
        if self.budget() == Some(Duration::ZERO) {
            // `park` does not spin: poll_first already looked once.
            return Ok(false);
        }
        let stop = self.spin_end(deadline);
        let mut polls = 0u32;
        loop {
            if end.has_frames()? {
                self.note_arrival();
                return Ok(true);
            }
            polls = polls.wrapping_add(1);
            if polls.is_multiple_of(CLOCK_EVERY) && Instant::now() >= stop {
                return Ok(false);
            }
            std::hint::spin_loop();
        }
    }

    /// [`Waiter::spin`] on a glommio executor: yields to other tasks between
    /// polls instead of holding the CPU.
    pub(super) async fn spin_async(
        &mut self,
        end: &mut ConsumerEnd,
        deadline: Instant,
    ) -> Result<bool, RingError> {
        if self.budget() == Some(Duration::ZERO) {
            return Ok(false);
        }
        let stop = self.spin_end(deadline);
        loop {
            if end.has_frames()? {
                self.note_arrival();
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

    fn with_gap(gap: Duration) -> Waiter {
        let mut waiter = sut(WaitStrategy::Adaptive);
        let start = Instant::now();
        for i in 0..64 {
            waiter.arrived(start + gap * i);
        }
        waiter
    }

    #[test]
    fn spin_has_no_budget_and_park_has_none_to_spend() {
        assert_eq!(sut(WaitStrategy::Spin).budget(), None);
        assert_eq!(sut(WaitStrategy::Park).budget(), Some(Duration::ZERO));
    }

    #[test]
    fn adaptive_budget_follows_dense_traffic() {
        assert_eq!(
            with_gap(Duration::from_micros(5)).budget(),
            Some(Duration::from_micros(20))
        );
    }

    #[test]
    fn adaptive_budget_is_capped_by_the_class_maximum() {
        assert_eq!(
            with_gap(Duration::from_micros(20)).budget(),
            Some(Duration::from_micros(50))
        );
        assert_eq!(with_gap(Duration::from_micros(60)).budget(), Some(MIN_SPIN));
    }

    #[test]
    fn adaptive_budget_falls_to_the_minimum_when_idle() {
        assert_eq!(with_gap(Duration::from_millis(10)).budget(), Some(MIN_SPIN));
        assert_eq!(sut(WaitStrategy::Adaptive).budget(), Some(MIN_SPIN));
    }
}
