//! When an agent misbehaves: the restart policy, as a pure state machine.
//!
//! A handler that returns an error or runs past its message's deadline is
//! a failure. [`RestartPolicy::max_failures`] failures within
//! [`RestartPolicy::window_ns`] isolate the agent: its inbox pauses (callers
//! are answered "unavailable" at once), for a backoff that doubles with
//! each restart up to a ceiling; then its state is reset, it starts again,
//! and the inbox resumes. An agent that then runs for ten windows without
//! being isolated is forgiven its restarts, so the backoff starts small
//! again. Other agents on the same executor never stop.
//!
//! Time is passed in (CLOCK_MONOTONIC ns), so the policy is tested without
//! clocks.

/// How failures are counted and punished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Failures within the window that isolate the agent.
    pub max_failures: u32,
    /// The window, nanoseconds.
    pub window_ns: u64,
    /// First isolation, nanoseconds.
    pub backoff_base_ns: u64,
    /// Longest isolation, nanoseconds.
    pub backoff_max_ns: u64,
}

impl Default for RestartPolicy {
    /// Five failures in one second; isolation from 100 ms up to 5 s.
    fn default() -> Self {
        Self {
            max_failures: 5,
            window_ns: 1_000_000_000,
            backoff_base_ns: 100_000_000,
            backoff_max_ns: 5_000_000_000,
        }
    }
}

/// What the supervisor decides after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep serving.
    Keep,
    /// Isolate the agent until this time, then restart it.
    Isolate {
        /// CLOCK_MONOTONIC ns.
        until_ns: u64,
    },
}

/// The supervisor of one agent.
#[derive(Debug, Clone)]
pub struct Supervisor {
    policy: RestartPolicy,
    failures: [u64; 32],
    count: usize,
    restarts: u32,
    isolated: bool,
    last_restart_ns: u64,
}

impl Supervisor {
    /// A supervisor with `policy` (`max_failures` is capped at 32).
    pub fn new(policy: RestartPolicy) -> Self {
        let policy = RestartPolicy {
            max_failures: policy.max_failures.clamp(1, 32),
            ..policy
        };
        Self {
            policy,
            failures: [0; 32],
            count: 0,
            restarts: 0,
            isolated: false,
            last_restart_ns: 0,
        }
    }

    /// Records a failure at `now_ns`.
    pub fn on_failure(&mut self, now_ns: u64) -> Verdict {
        if self.isolated {
            return Verdict::Keep;
        }
        self.forgive(now_ns);
        let slot = self.count % self.failures.len();
        self.failures[slot] = now_ns;
        self.count += 1;
        let window_start = now_ns.saturating_sub(self.policy.window_ns);
        let recent = self.failures[..self.count.min(self.failures.len())]
            .iter()
            .filter(|&&t| t >= window_start)
            .count();
        if recent < self.policy.max_failures as usize {
            return Verdict::Keep;
        }
        self.isolated = true;
        let backoff = self
            .policy
            .backoff_base_ns
            .saturating_mul(1 << self.restarts.min(20))
            .min(self.policy.backoff_max_ns);
        Verdict::Isolate {
            until_ns: now_ns + backoff,
        }
    }

    /// Records that the agent restarted at `now_ns`.
    pub fn on_restarted(&mut self, now_ns: u64) {
        self.isolated = false;
        self.restarts += 1;
        self.count = 0;
        self.last_restart_ns = now_ns;
    }

    /// Whether the agent is isolated now.
    pub fn is_isolated(&self) -> bool {
        self.isolated
    }

    /// Restarts so far (since last forgiven).
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    fn forgive(&mut self, now_ns: u64) {
        if self.restarts > 0
            && now_ns.saturating_sub(self.last_restart_ns)
                > self.policy.window_ns.saturating_mul(10)
        {
            self.restarts = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn sut() -> Supervisor {
        Supervisor::new(RestartPolicy {
            max_failures: 3,
            window_ns: 100 * MS,
            backoff_base_ns: 10 * MS,
            backoff_max_ns: 40 * MS,
        })
    }

    #[test]
    fn failures_spread_beyond_the_window_never_isolate() {
        let mut sut = sut();
        for i in 0..10 {
            assert_eq!(sut.on_failure(i * 60 * MS), Verdict::Keep);
        }
    }

    #[test]
    fn enough_failures_within_the_window_isolate_for_the_backoff() {
        let mut sut = sut();
        assert_eq!(sut.on_failure(0), Verdict::Keep);
        assert_eq!(sut.on_failure(MS), Verdict::Keep);
        assert_eq!(
            sut.on_failure(2 * MS),
            Verdict::Isolate { until_ns: 12 * MS }
        );
        assert!(sut.is_isolated());
        assert_eq!(
            sut.on_failure(3 * MS),
            Verdict::Keep,
            "no second isolation while isolated"
        );
    }

    #[test]
    fn the_backoff_doubles_per_restart_up_to_the_ceiling() {
        let mut sut = sut();
        let mut now = 0;
        let mut backoffs = Vec::new();
        for _ in 0..4 {
            let verdict = (0..3).map(|_| sut.on_failure(now)).last().unwrap();
            let Verdict::Isolate { until_ns } = verdict else {
                panic!("{verdict:?}")
            };
            backoffs.push((until_ns - now) / MS);
            now = until_ns;
            sut.on_restarted(now);
        }
        assert_eq!(backoffs, vec![10, 20, 40, 40]);
        assert_eq!(sut.restarts(), 4);
    }

    #[test]
    fn a_long_healthy_run_forgives_the_restarts() {
        let mut sut = sut();
        for _ in 0..3 {
            sut.on_failure(0);
        }
        sut.on_restarted(10 * MS);
        let later = 10 * MS + 1_001 * MS;
        for _ in 0..2 {
            sut.on_failure(later);
        }
        assert_eq!(
            sut.on_failure(later),
            Verdict::Isolate {
                until_ns: later + 10 * MS
            }
        );
    }
}
