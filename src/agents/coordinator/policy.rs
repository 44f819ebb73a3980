//! The coordinator's decisions: one breaker and one bulkhead per downstream
//! and one retry policy, asked before and after every downstream call.
//!
//! ```text
//!   before_call(ds, attempt, now, deadline)
//!     now >= deadline ............................ GiveUp(DeadlinePassed)
//!     attempt > max_attempts ..................... GiveUp(AttemptsExhausted)
//!     bulkhead full .............................. Reject(Saturated)
//!     breaker open / probes out .................. Reject(BreakerOpen)
//!     else ....................................... Call(ticket)
//!   after_call(ticket, outcome, now)
//!     Success | Refused .......................... Done
//!     Failure, retry fits before the deadline .... Retry { delay, attempt + 1 }
//!     Failure, otherwise ......................... GiveUp(..)
//! ```
//!
//! The bulkhead is asked before the breaker: taking a permit is undone by
//! dropping it, but a half-open breaker's probe, once handed out, is not.
//! The [`Ticket`] holds the permit, so the slot is freed when the call
//! reports (or the ticket is dropped), never held across a retry's sleep.
//! A retry waits for the longer of its backoff and the breaker's remaining
//! open time, since an earlier retry would only be rejected; if that does
//! not fit before the deadline, the request gives up now.

use rand::Rng;

use super::{
    Admission, BreakerConfig, Bulkhead, CircuitBreaker, CoordinatorError, Permit, RetryPolicy,
};

/// The wire's "no deadline" (0) as the coordinator's (`u64::MAX`), so that
/// "no deadline" sorts last and never expires.
pub const fn deadline_from_wire(deadline_ns: u64) -> u64 {
    if deadline_ns == 0 {
        u64::MAX
    } else {
        deadline_ns
    }
}

/// A downstream, numbered `0..n` in the order given to
/// [`CoordinatorPolicy::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DownstreamId(pub u16);

/// How one downstream is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownstreamConfig {
    /// Its circuit breaker.
    pub breaker: BreakerConfig,
    /// The most calls in flight to it at once.
    pub max_in_flight: usize,
}

/// What a downstream call came to, as the breaker and the retries see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallOutcome {
    /// It answered.
    Success,
    /// No usable answer: timed out, unreachable, or it said it is unwell.
    /// Counts against the breaker and may be retried.
    Failure,
    /// It answered that the request itself is bad. The downstream is
    /// healthy (a breaker success) and a retry would get the same answer.
    Refused,
}

/// Why a call is not made now, though the request may still be answered
/// later or by someone else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// The breaker is open, or its probes are out.
    BreakerOpen {
        /// When it may admit a call again.
        retry_after_ns: u64,
    },
    /// The bulkhead's calls are all in flight.
    Saturated {
        /// Its limit.
        max_in_flight: usize,
    },
}

/// Why a request is abandoned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GiveUpReason {
    /// Its deadline has passed.
    DeadlinePassed,
    /// It has had every attempt the retry policy allows.
    AttemptsExhausted,
    /// A retry would not end before the deadline.
    NoTimeForRetry,
}

/// What to do before a call.
#[derive(Debug)]
pub enum Decision {
    /// Make the call, then report it with [`CoordinatorPolicy::after_call`].
    Call(Ticket),
    /// Answer "unavailable" at once.
    Reject(RejectReason),
    /// Answer "timed out" or "failed" at once.
    GiveUp(GiveUpReason),
}

/// What to do after a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterCall {
    /// Forward the answer.
    Done,
    /// Wait `delay_ns`, then ask [`CoordinatorPolicy::before_call`] again
    /// with `attempt`.
    Retry {
        /// How long to wait.
        delay_ns: u64,
        /// The attempt number to call with.
        attempt: u32,
    },
    /// Answer "failed" or "timed out".
    GiveUp(GiveUpReason),
}

/// One admitted call. Holds its bulkhead slot until it is reported or
/// dropped.
#[derive(Debug)]
#[must_use = "report the call with after_call; dropping the ticket frees its slot"]
pub struct Ticket {
    downstream: DownstreamId,
    attempt: u32,
    deadline_ns: u64,
    probe: bool,
    _permit: Permit,
}

impl Ticket {
    /// The downstream to call.
    pub fn downstream(&self) -> DownstreamId {
        self.downstream
    }

    /// Which attempt this is (1 for the first).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The request's deadline.
    pub fn deadline_ns(&self) -> u64 {
        self.deadline_ns
    }

    /// Whether the call is a half-open breaker's probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

#[derive(Debug)]
struct Downstream {
    breaker: CircuitBreaker,
    bulkhead: Bulkhead,
}

/// The breakers, bulkheads and retry policy of one coordinator. See the
/// module doc.
#[derive(Debug)]
pub struct CoordinatorPolicy {
    downstreams: Vec<Downstream>,
    retry: RetryPolicy,
}

impl CoordinatorPolicy {
    /// One breaker and bulkhead per entry of `downstreams`, which are then
    /// [`DownstreamId`] `0..downstreams.len()`.
    pub fn new(
        downstreams: &[DownstreamConfig],
        retry: RetryPolicy,
    ) -> Result<Self, CoordinatorError> {
        if downstreams.len() > usize::from(u16::MAX) + 1 {
            return Err(CoordinatorError::TooManyDownstreams {
                count: downstreams.len(),
            });
        }
        let downstreams = downstreams
            .iter()
            .map(|config| Downstream {
                breaker: CircuitBreaker::new(config.breaker),
                bulkhead: Bulkhead::new(config.max_in_flight),
            })
            .collect();
        Ok(Self { downstreams, retry })
    }

    /// How many downstreams there are.
    pub fn downstreams(&self) -> usize {
        self.downstreams.len()
    }

    /// The retry policy.
    pub fn retry(&self) -> &RetryPolicy {
        &self.retry
    }

    /// A downstream's breaker, for metrics.
    pub fn breaker(&self, id: DownstreamId) -> Result<&CircuitBreaker, CoordinatorError> {
        self.get(id).map(|downstream| &downstream.breaker)
    }

    /// A downstream's bulkhead, for metrics.
    pub fn bulkhead(&self, id: DownstreamId) -> Result<&Bulkhead, CoordinatorError> {
        self.get(id).map(|downstream| &downstream.bulkhead)
    }

    /// Whether to call downstream `id` now, for attempt `attempt` (1 for
    /// the first) of a request due by `deadline_ns` (`u64::MAX` for none).
    pub fn before_call(
        &mut self,
        id: DownstreamId,
        attempt: u32,
        now_ns: u64,
        deadline_ns: u64,
    ) -> Result<Decision, CoordinatorError> {
        let max_attempts = self.retry.max_attempts.max(1);
        let downstream = self.get_mut(id)?;
        if now_ns >= deadline_ns {
            return Ok(Decision::GiveUp(GiveUpReason::DeadlinePassed));
        }
        if attempt > max_attempts {
            return Ok(Decision::GiveUp(GiveUpReason::AttemptsExhausted));
        }
        let Some(permit) = downstream.bulkhead.try_acquire() else {
            return Ok(Decision::Reject(RejectReason::Saturated {
                max_in_flight: downstream.bulkhead.max_in_flight(),
            }));
        };
        let probe = match downstream.breaker.admit(now_ns) {
            Admission::Allowed => false,
            Admission::Probe => true,
            Admission::Rejected { retry_after_ns } => {
                return Ok(Decision::Reject(RejectReason::BreakerOpen {
                    retry_after_ns,
                }));
            }
        };
        Ok(Decision::Call(Ticket {
            downstream: id,
            attempt: attempt.max(1),
            deadline_ns,
            probe,
            _permit: permit,
        }))
    }

    /// Reports a call made on `ticket`, and says whether to retry. Frees
    /// the ticket's bulkhead slot.
    pub fn after_call<R: Rng + ?Sized>(
        &mut self,
        ticket: Ticket,
        outcome: CallOutcome,
        now_ns: u64,
        rng: &mut R,
    ) -> Result<AfterCall, CoordinatorError> {
        let retry = self.retry;
        let breaker = &mut self.get_mut(ticket.downstream)?.breaker;
        if outcome != CallOutcome::Failure {
            breaker.on_success(now_ns);
            return Ok(AfterCall::Done);
        }
        breaker.on_failure(now_ns);
        let attempt = ticket.attempt;
        let deadline_ns = ticket.deadline_ns;
        drop(ticket);
        if attempt >= retry.max_attempts.max(1) {
            return Ok(AfterCall::GiveUp(GiveUpReason::AttemptsExhausted));
        }
        let Some(backoff_ns) = retry.next_delay(attempt, now_ns, deadline_ns, rng) else {
            return Ok(AfterCall::GiveUp(GiveUpReason::NoTimeForRetry));
        };
        let delay_ns = backoff_ns.max(breaker.retry_after_ns(now_ns));
        let ends_ns = now_ns
            .saturating_add(delay_ns)
            .saturating_add(retry.min_attempt_ns);
        if ends_ns > deadline_ns {
            return Ok(AfterCall::GiveUp(GiveUpReason::NoTimeForRetry));
        }
        Ok(AfterCall::Retry {
            delay_ns,
            attempt: attempt + 1,
        })
    }

    fn get(&self, id: DownstreamId) -> Result<&Downstream, CoordinatorError> {
        let count = self.downstreams.len();
        self.downstreams
            .get(usize::from(id.0))
            .ok_or(CoordinatorError::UnknownDownstream { id: id.0, count })
    }

    fn get_mut(&mut self, id: DownstreamId) -> Result<&mut Downstream, CoordinatorError> {
        let count = self.downstreams.len();
        self.downstreams
            .get_mut(usize::from(id.0))
            .ok_or(CoordinatorError::UnknownDownstream { id: id.0, count })
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::agents::coordinator::{BreakerState, Jitter};

    const OPEN_FOR_NS: u64 = 1_000;
    const LLM: DownstreamId = DownstreamId(0);
    const MEMORY: DownstreamId = DownstreamId(1);

    fn retry() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            base_ns: 100,
            max_ns: 400,
            jitter: Jitter::None,
            min_attempt_ns: 10,
        }
    }

    fn sut() -> CoordinatorPolicy {
        let downstream = DownstreamConfig {
            breaker: BreakerConfig {
                failure_threshold: 2,
                open_for_ns: OPEN_FOR_NS,
                half_open_probes: 1,
            },
            max_in_flight: 2,
        };
        CoordinatorPolicy::new(&[downstream, downstream], retry()).unwrap()
    }

    fn call(sut: &mut CoordinatorPolicy, id: DownstreamId, attempt: u32, now_ns: u64) -> Ticket {
        match sut.before_call(id, attempt, now_ns, u64::MAX).unwrap() {
            Decision::Call(ticket) => ticket,
            other => panic!("expected a call, got {other:?}"),
        }
    }

    #[test]
    fn a_healthy_downstream_is_called_and_a_success_is_done() {
        let mut sut = sut();
        let mut rng = StdRng::seed_from_u64(1);

        let ticket = call(&mut sut, LLM, 1, 0);
        assert!(!ticket.is_probe());
        assert_eq!(sut.bulkhead(LLM).unwrap().in_flight(), 1);
        let after = sut.after_call(ticket, CallOutcome::Success, 5, &mut rng);

        assert_eq!(after.unwrap(), AfterCall::Done);
        assert_eq!(sut.bulkhead(LLM).unwrap().in_flight(), 0);
    }

    #[test]
    fn a_failure_is_retried_with_backoff_until_the_attempts_run_out() {
        let mut sut = sut();
        let mut rng = StdRng::seed_from_u64(1);

        let first = call(&mut sut, LLM, 1, 0);
        let after = sut
            .after_call(first, CallOutcome::Failure, 10, &mut rng)
            .unwrap();
        assert_eq!(
            after,
            AfterCall::Retry {
                delay_ns: 100,
                attempt: 2
            }
        );
        let second = call(&mut sut, LLM, 2, 110);
        let other = call(&mut sut, MEMORY, 1, 110);
        sut.after_call(other, CallOutcome::Success, 111, &mut rng)
            .unwrap();
        let after = sut
            .after_call(second, CallOutcome::Failure, 120, &mut rng)
            .unwrap();

        // The breaker opened on the second failure; the retry waits it out.
        assert_eq!(sut.breaker(LLM).unwrap().state(), BreakerState::Open);
        assert_eq!(
            after,
            AfterCall::Retry {
                delay_ns: OPEN_FOR_NS,
                attempt: 3
            }
        );
        let third = call(&mut sut, LLM, 3, 120 + OPEN_FOR_NS);
        assert!(third.is_probe());
        let after = sut.after_call(third, CallOutcome::Failure, 1_200, &mut rng);
        assert_eq!(
            after.unwrap(),
            AfterCall::GiveUp(GiveUpReason::AttemptsExhausted)
        );
    }

    #[test]
    fn a_refused_request_is_not_retried_and_does_not_trip_the_breaker() {
        let mut sut = sut();
        let mut rng = StdRng::seed_from_u64(1);

        for now_ns in 0..5 {
            let ticket = call(&mut sut, LLM, 1, now_ns);
            let after = sut.after_call(ticket, CallOutcome::Refused, now_ns, &mut rng);
            assert_eq!(after.unwrap(), AfterCall::Done);
        }

        assert_eq!(sut.breaker(LLM).unwrap().state(), BreakerState::Closed);
    }

    #[test]
    fn an_open_breaker_rejects_fast_and_leaves_the_other_downstream_alone() {
        let mut sut = sut();
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..2 {
            let ticket = call(&mut sut, LLM, 1, 0);
            sut.after_call(ticket, CallOutcome::Failure, 0, &mut rng)
                .unwrap();
        }

        let decision = sut.before_call(LLM, 1, 400, u64::MAX).unwrap();

        assert!(matches!(
            decision,
            Decision::Reject(RejectReason::BreakerOpen {
                retry_after_ns: 600
            })
        ));
        assert_eq!(sut.bulkhead(LLM).unwrap().in_flight(), 0);
        assert!(!call(&mut sut, MEMORY, 1, 400).is_probe());
    }

    #[test]
    fn a_saturated_downstream_rejects_without_using_a_probe() {
        let mut sut = sut();
        let _first = call(&mut sut, LLM, 1, 0);
        let _second = call(&mut sut, LLM, 1, 0);

        let decision = sut.before_call(LLM, 1, 0, u64::MAX).unwrap();

        assert!(matches!(
            decision,
            Decision::Reject(RejectReason::Saturated { max_in_flight: 2 })
        ));
    }

    #[test]
    fn a_passed_deadline_or_used_up_attempts_give_up_before_calling() {
        let mut sut = sut();

        let late = sut.before_call(LLM, 1, 500, 500).unwrap();
        let again = sut.before_call(LLM, 4, 0, u64::MAX).unwrap();

        assert!(matches!(
            late,
            Decision::GiveUp(GiveUpReason::DeadlinePassed)
        ));
        assert!(matches!(
            again,
            Decision::GiveUp(GiveUpReason::AttemptsExhausted)
        ));
        assert_eq!(sut.bulkhead(LLM).unwrap().in_flight(), 0);
    }

    #[test]
    fn a_retry_that_would_miss_the_deadline_gives_up_now() {
        let mut sut = sut();
        let mut rng = StdRng::seed_from_u64(1);
        let Decision::Call(ticket) = sut.before_call(LLM, 1, 0, 100).unwrap() else {
            panic!("expected a call");
        };

        let after = sut.after_call(ticket, CallOutcome::Failure, 50, &mut rng);

        assert_eq!(
            after.unwrap(),
            AfterCall::GiveUp(GiveUpReason::NoTimeForRetry)
        );
    }

    #[test]
    fn a_retry_that_fits_its_backoff_but_not_the_breaker_gives_up_now() {
        let mut sut = sut();
        let mut rng = StdRng::seed_from_u64(1);
        let first = call(&mut sut, LLM, 1, 0);
        sut.after_call(first, CallOutcome::Failure, 0, &mut rng)
            .unwrap();
        let Decision::Call(second) = sut.before_call(LLM, 2, 100, 500).unwrap() else {
            panic!("expected a call");
        };

        let after = sut.after_call(second, CallOutcome::Failure, 110, &mut rng);

        assert_eq!(
            after.unwrap(),
            AfterCall::GiveUp(GiveUpReason::NoTimeForRetry)
        );
    }

    #[test]
    fn an_unknown_downstream_is_an_error() {
        let mut sut = sut();

        let err = sut
            .before_call(DownstreamId(2), 1, 0, u64::MAX)
            .unwrap_err();

        assert!(matches!(
            err,
            CoordinatorError::UnknownDownstream { id: 2, count: 2 }
        ));
        assert!(sut.breaker(DownstreamId(9)).is_err());
    }

    #[test]
    fn the_wires_zero_deadline_means_none() {
        assert_eq!(deadline_from_wire(0), u64::MAX);
        assert_eq!(deadline_from_wire(42), 42);
    }
}
