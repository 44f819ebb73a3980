//! A circuit breaker for one downstream: stop calling a downstream that keeps
//! failing, and find out cheaply when it is back.
//!
//! ```text
//!            failure_threshold consecutive failures
//!   Closed ------------------------------------------> Open { until }
//!     ^                                                  |
//!     | a probe succeeds                                 | now >= until (on admit)
//!     |                                                  v
//!     +------------------------------------------- HalfOpen { probes out }
//!                     a probe fails: Open { until = now + open_for }
//! ```
//!
//! * Closed admits every call ([`Admission::Allowed`]) and counts consecutive
//!   failures; a success resets the count.
//! * Open rejects every call without it being made, and says how long until
//!   it would admit one ([`Admission::Rejected`]).
//! * HalfOpen admits up to `half_open_probes` calls ([`Admission::Probe`])
//!   and rejects the rest. The first probe to succeed closes the breaker (as
//!   the seed's breaker did: one answer shows the downstream is back); the
//!   first to fail reopens it for another `open_for_ns`.
//!
//! Transitions happen only in the calls: Open becomes HalfOpen when `admit`
//! sees the time has come, so [`CircuitBreaker::state`] may still say Open
//! after `open_for_ns`. Nothing runs on a timer.
//!
//! Probes that never report (the caller lost the call) must not wedge the
//! breaker in HalfOpen: after `open_for_ns` in HalfOpen with every probe
//! still out, the breaker lets a fresh set of probes through.
//!
//! Results arrive without saying which admission they belong to, so a late
//! result of a call admitted before the breaker opened is read as follows:
//! in Open it is ignored (the decision to open stands until the probes
//! say otherwise); in HalfOpen it counts as a probe's result, which is
//! sound, since it is as fresh a sign of the downstream's health as a probe.

/// How a breaker trips and recovers. Zero thresholds and probe counts are
/// read as 1, so that a breaker always can open and always can close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open a closed breaker.
    pub failure_threshold: u32,
    /// How long an open breaker rejects calls before it probes.
    pub open_for_ns: u64,
    /// Calls let through at once while half open.
    pub half_open_probes: u32,
}

impl BreakerConfig {
    /// Five consecutive failures, 5 s open, one probe at a time: an in-host
    /// downstream that fails five times running is restarting or wedged,
    /// and a restart takes seconds.
    pub const DEFAULT: Self = Self {
        failure_threshold: 5,
        open_for_ns: 5_000_000_000,
        half_open_probes: 1,
    };
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The breaker's state, for metrics and the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls flow.
    Closed,
    /// Calls are rejected.
    Open,
    /// A few probe calls decide whether to close again.
    HalfOpen,
}

/// Whether a call may be made now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Make the call.
    Allowed,
    /// Make the call; it is a probe that decides whether the breaker closes.
    Probe,
    /// Do not call; the breaker may admit a call in `retry_after_ns`.
    Rejected {
        /// Nanoseconds until it may admit one.
        retry_after_ns: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inner {
    Closed { failures: u32 },
    Open { until_ns: u64 },
    HalfOpen { since_ns: u64, probes_out: u32 },
}

/// A circuit breaker for one downstream. See the module doc.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    inner: Inner,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        let config = BreakerConfig {
            failure_threshold: config.failure_threshold.max(1),
            open_for_ns: config.open_for_ns,
            half_open_probes: config.half_open_probes.max(1),
        };
        Self {
            config,
            inner: Inner::Closed { failures: 0 },
        }
    }

    /// The configuration in force (zeros raised to 1).
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// The state as of the last call into the breaker.
    pub fn state(&self) -> BreakerState {
        match self.inner {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { .. } => BreakerState::Open,
            Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Consecutive failures counted while closed (0 in other states).
    pub fn consecutive_failures(&self) -> u32 {
        match self.inner {
            Inner::Closed { failures } => failures,
            Inner::Open { .. } | Inner::HalfOpen { .. } => 0,
        }
    }

    /// Asks to make a call at `now_ns`. `Allowed` and `Probe` are promises
    /// to report the call's result with [`CircuitBreaker::on_success`] or
    /// [`CircuitBreaker::on_failure`].
    pub fn admit(&mut self, now_ns: u64) -> Admission {
        match self.inner {
            Inner::Closed { .. } => Admission::Allowed,
            Inner::Open { until_ns } if now_ns < until_ns => Admission::Rejected {
                retry_after_ns: until_ns - now_ns,
            },
            Inner::Open { .. } => {
                self.inner = Inner::HalfOpen {
                    since_ns: now_ns,
                    probes_out: 1,
                };
                Admission::Probe
            }
            Inner::HalfOpen {
                since_ns,
                probes_out,
            } => self.admit_half_open(now_ns, since_ns, probes_out),
        }
    }

    fn admit_half_open(&mut self, now_ns: u64, since_ns: u64, probes_out: u32) -> Admission {
        let stuck_until_ns = since_ns.saturating_add(self.config.open_for_ns);
        let (since_ns, probes_out) =
            if probes_out >= self.config.half_open_probes && now_ns >= stuck_until_ns {
                // Every probe is out and none has reported in a whole open
                // period: presume them lost and start a fresh set.
                (now_ns, 0)
            } else {
                (since_ns, probes_out)
            };
        if probes_out >= self.config.half_open_probes {
            return Admission::Rejected {
                retry_after_ns: stuck_until_ns.saturating_sub(now_ns),
            };
        }
        self.inner = Inner::HalfOpen {
            since_ns,
            probes_out: probes_out + 1,
        };
        Admission::Probe
    }

    /// How long until [`CircuitBreaker::admit`] would admit a call: 0 if it
    /// would now. Changes nothing.
    pub fn retry_after_ns(&self, now_ns: u64) -> u64 {
        match self.inner {
            Inner::Closed { .. } => 0,
            Inner::Open { until_ns } => until_ns.saturating_sub(now_ns),
            Inner::HalfOpen {
                since_ns,
                probes_out,
            } if probes_out >= self.config.half_open_probes => since_ns
                .saturating_add(self.config.open_for_ns)
                .saturating_sub(now_ns),
            Inner::HalfOpen { .. } => 0,
        }
    }

    /// Reports that an admitted call succeeded.
    pub fn on_success(&mut self, _now_ns: u64) {
        match self.inner {
            Inner::Closed { .. } | Inner::HalfOpen { .. } => {
                self.inner = Inner::Closed { failures: 0 };
            }
            // A late answer to a call made before the breaker opened.
            Inner::Open { .. } => {}
        }
    }

    /// Reports that an admitted call failed (timed out, could not connect,
    /// or the downstream said it is unwell).
    pub fn on_failure(&mut self, now_ns: u64) {
        match self.inner {
            Inner::Closed { failures } => {
                let failures = failures.saturating_add(1);
                self.inner = if failures >= self.config.failure_threshold {
                    self.open_at(now_ns)
                } else {
                    Inner::Closed { failures }
                };
            }
            Inner::HalfOpen { .. } => self.inner = self.open_at(now_ns),
            // A late failure of a call made before the breaker opened.
            Inner::Open { .. } => {}
        }
    }

    fn open_at(&self, now_ns: u64) -> Inner {
        Inner::Open {
            until_ns: now_ns.saturating_add(self.config.open_for_ns),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN_FOR_NS: u64 = 1_000;

    fn config(failure_threshold: u32, half_open_probes: u32) -> BreakerConfig {
        BreakerConfig {
            failure_threshold,
            open_for_ns: OPEN_FOR_NS,
            half_open_probes,
        }
    }

    fn opened_at(now_ns: u64) -> CircuitBreaker {
        let mut sut = CircuitBreaker::new(config(2, 1));
        sut.on_failure(now_ns);
        sut.on_failure(now_ns);
        sut
    }

    #[test]
    fn a_new_breaker_is_closed_and_allows_calls() {
        let mut sut = CircuitBreaker::new(config(3, 1));

        assert_eq!(sut.state(), BreakerState::Closed);
        assert_eq!(sut.admit(0), Admission::Allowed);
        assert_eq!(sut.retry_after_ns(0), 0);
    }

    #[test]
    fn a_closed_breaker_opens_after_the_threshold_of_consecutive_failures() {
        let mut sut = CircuitBreaker::new(config(3, 1));

        sut.on_failure(10);
        sut.on_failure(20);
        assert_eq!(sut.state(), BreakerState::Closed);
        assert_eq!(sut.consecutive_failures(), 2);
        sut.on_failure(30);

        assert_eq!(sut.state(), BreakerState::Open);
        assert_eq!(
            sut.admit(30),
            Admission::Rejected {
                retry_after_ns: OPEN_FOR_NS
            }
        );
    }

    #[test]
    fn a_success_resets_the_failure_count_of_a_closed_breaker() {
        let mut sut = CircuitBreaker::new(config(2, 1));

        sut.on_failure(0);
        sut.on_success(1);
        sut.on_failure(2);

        assert_eq!(sut.state(), BreakerState::Closed);
        assert_eq!(sut.consecutive_failures(), 1);
    }

    #[test]
    fn an_open_breaker_rejects_without_calling_and_counts_down() {
        let mut sut = opened_at(100);
        let mut calls = 0;

        for now_ns in [100, 500, 1_099] {
            match sut.admit(now_ns) {
                Admission::Allowed | Admission::Probe => calls += 1,
                Admission::Rejected { retry_after_ns } => {
                    assert_eq!(retry_after_ns, 1_100 - now_ns);
                    assert_eq!(sut.retry_after_ns(now_ns), retry_after_ns);
                }
            }
        }

        assert_eq!(calls, 0);
        assert_eq!(sut.state(), BreakerState::Open);
    }

    #[test]
    fn an_open_breaker_turns_half_open_and_probes_once_the_open_period_passes() {
        let mut sut = opened_at(100);

        assert_eq!(sut.admit(1_100), Admission::Probe);

        assert_eq!(sut.state(), BreakerState::HalfOpen);
    }

    #[test]
    fn a_half_open_breaker_lets_only_its_probes_through() {
        let mut sut = CircuitBreaker::new(config(1, 2));
        sut.on_failure(0);

        assert_eq!(sut.admit(OPEN_FOR_NS), Admission::Probe);
        assert_eq!(sut.admit(OPEN_FOR_NS), Admission::Probe);
        assert_eq!(
            sut.admit(OPEN_FOR_NS + 10),
            Admission::Rejected {
                retry_after_ns: OPEN_FOR_NS - 10
            }
        );
    }

    #[test]
    fn a_successful_probe_closes_the_breaker() {
        let mut sut = opened_at(0);
        assert_eq!(sut.admit(OPEN_FOR_NS), Admission::Probe);

        sut.on_success(OPEN_FOR_NS + 5);

        assert_eq!(sut.state(), BreakerState::Closed);
        assert_eq!(sut.consecutive_failures(), 0);
        assert_eq!(sut.admit(OPEN_FOR_NS + 6), Admission::Allowed);
    }

    #[test]
    fn a_failed_probe_reopens_the_breaker_for_another_period() {
        let mut sut = opened_at(0);
        assert_eq!(sut.admit(OPEN_FOR_NS), Admission::Probe);

        sut.on_failure(OPEN_FOR_NS + 5);

        assert_eq!(sut.state(), BreakerState::Open);
        assert_eq!(
            sut.admit(OPEN_FOR_NS + 5),
            Admission::Rejected {
                retry_after_ns: OPEN_FOR_NS
            }
        );
        assert_eq!(sut.admit(2 * OPEN_FOR_NS + 5), Admission::Probe);
    }

    #[test]
    fn probes_that_never_report_are_replaced_after_an_open_period() {
        let mut sut = opened_at(0);
        assert_eq!(sut.admit(OPEN_FOR_NS), Admission::Probe);
        assert!(matches!(
            sut.admit(2 * OPEN_FOR_NS - 1),
            Admission::Rejected { retry_after_ns: 1 }
        ));

        assert_eq!(sut.admit(2 * OPEN_FOR_NS), Admission::Probe);
    }

    #[test]
    fn late_results_do_not_change_an_open_breaker() {
        let mut sut = opened_at(0);

        sut.on_success(10);
        sut.on_failure(20);

        assert_eq!(sut.state(), BreakerState::Open);
        assert_eq!(sut.retry_after_ns(10), OPEN_FOR_NS - 10);
    }

    #[test]
    fn zero_thresholds_are_read_as_one() {
        let mut sut = CircuitBreaker::new(config(0, 0));

        sut.on_failure(0);

        assert_eq!(sut.state(), BreakerState::Open);
        assert_eq!(sut.admit(OPEN_FOR_NS), Admission::Probe);
        assert_eq!(sut.config().half_open_probes, 1);
    }
}
