//! Retries with exponential backoff and jitter, inside the request's
//! deadline.
//!
//! The backoff before retry `n` (after `n` attempts) is capped at
//! `min(max_ns, base_ns * 2^(n-1))`, and the delay is drawn from that cap
//! by the [`Jitter`] rule. The default is equal jitter: the delay is drawn
//! uniformly from `[cap/2, cap]`. Jitter spreads the retries of the many
//! requests that failed together (one downstream restart fails every call in
//! flight), so they do not return as one wave. Full jitter (`[0, cap]`)
//! spreads them most and does the least total work, but may retry almost at
//! once; in this daemon a failure is mostly a downstream restarting or
//! wedged for a moment, and an instant retry only adds to its load and
//! trips its breaker sooner. Equal jitter keeps half the backoff as a floor
//! and still spreads the rest. [`Jitter::Full`] stays available for
//! downstreams where contention, not recovery, is the problem.
//!
//! A retry is taken only if it fits: the delay plus `min_attempt_ns` (the
//! least time an attempt needs to be worth making) must end by the
//! deadline. Otherwise [`RetryPolicy::next_delay`] says `None`, and the
//! caller answers "timed out" now instead of after a hopeless attempt. The
//! seed's retry decorator (`max_retries=3, base_delay=0.5, max_delay=10.0,
//! jitter=0.3`) slept without regard to any deadline.
//!
//! Pure: the caller passes the time and the RNG, and sleeps.

use rand::Rng;

/// How the delay is drawn from the backoff cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Jitter {
    /// Exactly the cap: for tests and for a single client.
    None,
    /// Uniform in `[cap/2, cap]`: the default (see the module doc).
    Equal,
    /// Uniform in `[0, cap]`.
    Full,
}

/// When and how often to retry a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; 1 means never retry.
    pub max_attempts: u32,
    /// The backoff cap before the first retry.
    pub base_ns: u64,
    /// The largest backoff cap.
    pub max_ns: u64,
    /// How the delay is drawn from the cap.
    pub jitter: Jitter,
    /// The least time an attempt needs; a retry that would start later than
    /// this before the deadline is not taken.
    pub min_attempt_ns: u64,
}

impl RetryPolicy {
    /// Three attempts, backoff from 50 ms to 1 s, equal jitter, and at
    /// least 10 ms left for an attempt: the seed's three tries, scaled to
    /// in-host calls whose deadlines are a few seconds.
    pub const DEFAULT: Self = Self {
        max_attempts: 3,
        base_ns: 50_000_000,
        max_ns: 1_000_000_000,
        jitter: Jitter::Equal,
        min_attempt_ns: 10_000_000,
    };

    /// Never retry.
    pub const NEVER: Self = Self {
        max_attempts: 1,
        ..Self::DEFAULT
    };

    /// The backoff cap after `attempt` attempts (at least 1):
    /// `min(max_ns, base_ns * 2^(attempt-1))`, without overflow.
    pub fn cap_ns(&self, attempt: u32) -> u64 {
        let doublings = attempt.max(1) - 1;
        let scaled = match 1u64.checked_shl(doublings) {
            Some(factor) => self.base_ns.saturating_mul(factor),
            None => u64::MAX,
        };
        scaled.min(self.max_ns)
    }

    /// The delay before the next attempt, after `attempt` attempts (the
    /// first counts as 1; 0 is read as 1) have failed, the last ending at
    /// `now_ns`. `None` when the attempts are used up or the retry would
    /// not fit before `deadline_ns` (`u64::MAX` for none). Draws at most one
    /// number from `rng`, and only when a retry is still possible.
    pub fn next_delay<R: Rng + ?Sized>(
        &self,
        attempt: u32,
        now_ns: u64,
        deadline_ns: u64,
        rng: &mut R,
    ) -> Option<u64> {
        if attempt.max(1) >= self.max_attempts {
            return None;
        }
        let cap_ns = self.cap_ns(attempt);
        let delay_ns = match self.jitter {
            Jitter::None => cap_ns,
            Jitter::Equal => cap_ns - cap_ns / 2 + rng.random_range(0..=cap_ns / 2),
            Jitter::Full => rng.random_range(0..=cap_ns),
        };
        let ends_ns = now_ns
            .saturating_add(delay_ns)
            .saturating_add(self.min_attempt_ns);
        (ends_ns <= deadline_ns).then_some(delay_ns)
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn policy(jitter: Jitter) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            base_ns: 100,
            max_ns: 1_000,
            jitter,
            min_attempt_ns: 10,
        }
    }

    #[test]
    fn the_cap_doubles_per_attempt_up_to_the_maximum() {
        let sut = policy(Jitter::None);

        let caps: Vec<u64> = (0..7).map(|attempt| sut.cap_ns(attempt)).collect();

        assert_eq!(caps, [100, 100, 200, 400, 800, 1_000, 1_000]);
        assert_eq!(sut.cap_ns(u32::MAX), 1_000);
    }

    #[test]
    fn without_jitter_the_delay_is_the_cap() {
        let sut = policy(Jitter::None);
        let mut rng = StdRng::seed_from_u64(1);

        assert_eq!(sut.next_delay(1, 0, u64::MAX, &mut rng), Some(100));
        assert_eq!(sut.next_delay(3, 0, u64::MAX, &mut rng), Some(400));
    }

    #[test]
    fn equal_jitter_stays_between_half_the_cap_and_the_cap() {
        let sut = policy(Jitter::Equal);
        let mut rng = StdRng::seed_from_u64(7);

        for _ in 0..1_000 {
            let delay_ns = sut.next_delay(3, 0, u64::MAX, &mut rng).unwrap();
            assert!((200..=400).contains(&delay_ns), "{delay_ns}");
        }
    }

    #[test]
    fn full_jitter_stays_at_or_below_the_cap() {
        let sut = policy(Jitter::Full);
        let mut rng = StdRng::seed_from_u64(7);

        for _ in 0..1_000 {
            let delay_ns = sut.next_delay(4, 0, u64::MAX, &mut rng).unwrap();
            assert!(delay_ns <= 800, "{delay_ns}");
        }
    }

    #[test]
    fn no_retry_is_offered_once_the_attempts_are_used_up() {
        let sut = policy(Jitter::None);
        let mut rng = StdRng::seed_from_u64(1);

        assert!(sut.next_delay(4, 0, u64::MAX, &mut rng).is_some());
        assert_eq!(sut.next_delay(5, 0, u64::MAX, &mut rng), None);
        assert_eq!(
            RetryPolicy::NEVER.next_delay(1, 0, u64::MAX, &mut rng),
            None
        );
    }

    #[test]
    fn a_retry_that_would_end_after_the_deadline_is_not_taken() {
        let sut = policy(Jitter::None);
        let mut rng = StdRng::seed_from_u64(1);

        // 1_000 + 100 delay + 10 minimum attempt = 1_110.
        assert_eq!(sut.next_delay(1, 1_000, 1_110, &mut rng), Some(100));
        assert_eq!(sut.next_delay(1, 1_000, 1_109, &mut rng), None);
    }

    #[test]
    fn the_same_seed_gives_the_same_delays() {
        let sut = policy(Jitter::Full);
        let mut first = StdRng::seed_from_u64(42);
        let mut second = StdRng::seed_from_u64(42);

        for attempt in 1..5 {
            assert_eq!(
                sut.next_delay(attempt, 0, u64::MAX, &mut first),
                sut.next_delay(attempt, 0, u64::MAX, &mut second)
            );
        }
    }

    fn jitters() -> impl Strategy<Value = Jitter> {
        prop_oneof![Just(Jitter::None), Just(Jitter::Equal), Just(Jitter::Full)]
    }

    proptest! {
        #[test]
        fn retries_never_pass_the_deadline_nor_the_attempt_limit(
            max_attempts in 0u32..12,
            base_ns in 0u64..1_000_000_000,
            extra_ns in 0u64..10_000_000_000,
            jitter in jitters(),
            min_attempt_ns in 0u64..100_000_000,
            start_ns in 0u64..u64::MAX / 2,
            budget_ns in 0u64..30_000_000_000,
            attempt_ns in proptest::collection::vec(0u64..2_000_000_000, 12),
            seed in any::<u64>(),
        ) {
            let sut = RetryPolicy {
                max_attempts,
                base_ns,
                max_ns: base_ns + extra_ns,
                jitter,
                min_attempt_ns,
            };
            let mut rng = StdRng::seed_from_u64(seed);
            let deadline_ns = start_ns + budget_ns;
            let mut now_ns = start_ns;
            let mut attempts = 1u32;
            loop {
                // The attempt takes at least its minimum, as the runtime
                // would have allowed it.
                now_ns += attempt_ns[attempts as usize - 1].max(min_attempt_ns);
                let Some(delay_ns) = sut.next_delay(attempts, now_ns, deadline_ns, &mut rng)
                else {
                    break;
                };
                prop_assert!(delay_ns <= sut.max_ns);
                prop_assert!(now_ns + delay_ns + min_attempt_ns <= deadline_ns);
                now_ns += delay_ns;
                attempts += 1;
            }
            prop_assert!(attempts <= max_attempts.max(1));
        }
    }
}
