//! How late a parked thread wakes for its deadline, and which deadlines
//! are too near to park for.
//!
//! A park whose timer fires returns after its deadline: the kernel's timer
//! slack, the idle state the CPU left, and on a VM the host's scheduler,
//! which must run the vCPU again. On this project's CI VM that is ~45 us
//! at the median and milliseconds at the tail (`bench wakeup`); on bare
//! metal a few microseconds. A waiter that parks for a deadline nearer
//! than that wakes after it anyway, so it loses the lateness and saves
//! next to no CPU: it spins to such a deadline instead.
//!
//! [`Lateness`] keeps the lateness of the thread's timed-out parks, an
//! exponentially weighted mean (weight 1/8), each one counted at most
//! [`LATE_MAX`]: a host that once woke the thread milliseconds late
//! does not make it spin that long. It starts at zero, so a thread parks
//! until its own wake-ups say otherwise, and it follows the host as it
//! changes. A deadline within it is near ([`Lateness::near`]).
//!
//! The executor's pump waits this way for its timers (its tasks' sleeps,
//! the load generator's due times). Before, a pump that found its next
//! timer 33 us away parked, and the messages that came meanwhile waited
//! for the wake-up (once 8 ms). `bench mesh --overhead` on `vm-2cpu` at
//! 20,000 req/s, six alternating runs, medians: p50 74.5 -> 45.5 us, p99
//! 838 -> 613 us; at 40,000 and 64,000 no change beyond the host's noise,
//! and no more CPU at 1,000 and 5,000 req/s (the executors measured ~50 us
//! of lateness there). A waiter whose thread owes the CPU idle time parks
//! anyway (`idle.rs`), so spinning to near deadlines never takes a
//! real-time thread past its share.

use std::time::{Duration, Instant};

/// The most one wake-up's lateness counts for.
const LATE_MAX: Duration = Duration::from_micros(250);

/// The lateness of a thread's timed-out parks (see the module's doc).
#[derive(Debug, Default)]
pub(super) struct Lateness {
    /// The weighted mean, in nanoseconds.
    mean_ns: u32,
}

impl Lateness {
    /// Counts a park whose deadline came `late` before it returned.
    pub(super) fn woke(&mut self, late: Duration) {
        let late = u32::try_from(late.min(LATE_MAX).as_nanos()).unwrap_or(u32::MAX);
        let mean = i64::from(self.mean_ns);
        let next = mean + (i64::from(late) - mean) / 8;
        self.mean_ns = u32::try_from(next).unwrap_or(0);
    }

    /// The thread's usual lateness now.
    pub(super) fn mean(&self) -> Duration {
        Duration::from_nanos(u64::from(self.mean_ns))
    }

    /// Whether `deadline`, seen at `now`, comes sooner than a park would
    /// wake for it.
    pub(super) fn near(&self, now: Instant, deadline: Instant) -> bool {
        deadline.saturating_duration_since(now) <= self.mean()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn a_thread_that_never_woke_late_finds_no_deadline_near() {
        let sut = Lateness::default();
        let now = Instant::now();
        assert!(!sut.near(now, now + Duration::from_nanos(1)));
        assert!(sut.near(now, now), "a deadline that has come is near");
    }

    #[test]
    fn deadlines_within_the_usual_lateness_are_near() {
        let mut sut = Lateness::default();
        for _ in 0..100 {
            sut.woke(us(60));
        }
        let mean = sut.mean();
        assert!(mean > us(59) && mean <= us(60), "{mean:?}");
        let now = Instant::now();
        assert!(sut.near(now, now + us(50)));
        assert!(!sut.near(now, now + us(100)));
    }

    #[test]
    fn one_wake_up_milliseconds_late_counts_as_the_cap() {
        let mut sut = Lateness::default();
        for _ in 0..100 {
            sut.woke(us(40));
        }
        sut.woke(Duration::from_millis(8));
        let mean = sut.mean();
        assert!(
            mean <= us(40) + (LATE_MAX - us(40)) / 8 + us(1),
            "one outlier moves the mean an eighth of the way to the cap: {mean:?}"
        );
        let now = Instant::now();
        assert!(!sut.near(now, now + us(100)));
    }

    #[test]
    fn the_mean_follows_a_host_that_wakes_promptly_again() {
        let mut sut = Lateness::default();
        for _ in 0..100 {
            sut.woke(Duration::from_millis(5));
        }
        assert!(sut.mean() > LATE_MAX - us(1), "{:?}", sut.mean());
        for _ in 0..100 {
            sut.woke(us(2));
        }
        let now = Instant::now();
        assert!(!sut.near(now, now + us(10)), "{:?}", sut.mean());
    }
}
