//! The restart policy of one agent process: pure, time passed in.
//!
//! ```text
//!             spawn              hello + rings
//!  Backoff ─────────▶ Starting ─────────────▶ Running
//!     ▲                  │ exit / no hello       │ exit, kill (corrupt, silent)
//!     │ restart          ▼                       ▼
//!     └──────────── on_exit(reason) ◀────────────┘
//!                        │ intensity exceeded        │ no restart (mode)
//!                        ▼                           ▼
//!                      Failed                      Exited
//! ```
//!
//! Restart mode (systemd's `Restart=`): `on-failure` restarts after
//! anything but a clean exit (status 0), `always` after anything, `never`
//! after nothing. Intensity (OTP's `intensity` and `period`, systemd's
//! `StartLimitBurst` and `StartLimitIntervalSec`): a restart that would be
//! the `max_restarts + 1`-th within `restart_window_s` is not made; the
//! agent is `Failed` and stays down until the daemon restarts. Backoff:
//! the n-th consecutive restart waits `BACKOFF_BASE * 2^(n-1)`, at most
//! `BACKOFF_MAX`; a child that stayed up for `BACKOFF_MAX` resets the
//! count.
//!
//! No clocks, no sleeps, no I/O: `ProcessSide` feeds it events with the
//! time, and its tests step a clock.

use std::collections::VecDeque;

use serde::Serialize;

use crate::config::RestartMode;
use crate::observe::api::AgentState;

/// The first restart's delay.
pub const BACKOFF_BASE_NS: u64 = 100_000_000;
/// The longest restart delay, and how long a child must stay up to reset
/// the backoff.
pub const BACKOFF_MAX_NS: u64 = 10_000_000_000;

/// Why an incarnation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "reason", content = "code")]
pub enum ExitReason {
    /// It exited with this status.
    Exited(i32),
    /// A signal killed it (the daemon's, for the reasons below, or another).
    Signaled(i32),
    /// It broke the ring or link protocol; the daemon killed it.
    Corrupt,
    /// It stopped answering (missed deadlines); the daemon killed it.
    Silent,
    /// It did not say hello in time; the daemon killed it.
    NoHello,
    /// It could not be started (program, user, credentials).
    SpawnFailed,
}

impl ExitReason {
    /// A short label for metrics (`exits_total{reason=...}`) and views.
    pub fn label(self) -> &'static str {
        match self {
            ExitReason::Exited(0) => "exit_ok",
            ExitReason::Exited(_) => "exit_error",
            ExitReason::Signaled(_) => "signal",
            ExitReason::Corrupt => "corrupt",
            ExitReason::Silent => "silent",
            ExitReason::NoHello => "no_hello",
            ExitReason::SpawnFailed => "spawn_failed",
        }
    }

    /// Every label, for metrics that list each.
    pub const LABELS: [&'static str; 7] = [
        "exit_ok",
        "exit_error",
        "signal",
        "corrupt",
        "silent",
        "no_hello",
        "spawn_failed",
    ];

    /// Whether it counts as a failure (for `restart = "on-failure"`).
    pub fn is_failure(self) -> bool {
        self != ExitReason::Exited(0)
    }
}

impl std::fmt::Display for ExitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitReason::Exited(code) => write!(f, "exited with status {code}"),
            ExitReason::Signaled(signal) => write!(f, "killed by signal {signal}"),
            ExitReason::Corrupt => f.write_str("disconnected: broke the ring or link protocol"),
            ExitReason::Silent => f.write_str("disconnected: stopped answering"),
            ExitReason::NoHello => f.write_str("did not say hello in time"),
            ExitReason::SpawnFailed => f.write_str("could not be started"),
        }
    }
}

/// Where an agent process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Started, not attached yet.
    Starting,
    /// Attached and serving.
    Running,
    /// Waiting to be started again.
    Backoff,
    /// Down for good: restarted too often.
    Failed,
    /// Down for good: ended, and its restart mode says so.
    Exited,
    /// The daemon is stopping it.
    Stopping,
}

impl From<State> for AgentState {
    fn from(state: State) -> AgentState {
        match state {
            State::Starting => AgentState::Starting,
            State::Running => AgentState::Running,
            State::Backoff => AgentState::Backoff,
            State::Failed => AgentState::Failed,
            State::Exited => AgentState::Exited,
            State::Stopping => AgentState::Stopping,
        }
    }
}

/// The restart policy's numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// When to restart.
    pub mode: RestartMode,
    /// Restarts allowed within the window.
    pub max_restarts: u32,
    /// The window, nanoseconds.
    pub window_ns: u64,
}

/// What to do after an exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start it again at this time.
    RestartAt(u64),
    /// Leave it down: its mode says so.
    StayDown,
    /// Leave it down: it restarted too often.
    Fail,
}

/// One agent's supervisor.
#[derive(Debug, Clone)]
pub struct Supervisor {
    policy: RestartPolicy,
    state: State,
    restarts: VecDeque<u64>,
    total_restarts: u64,
    consecutive: u32,
    up_since_ns: Option<u64>,
    restart_at_ns: u64,
    last_exit: Option<ExitReason>,
}

impl Supervisor {
    /// A supervisor whose agent is about to be started for the first time.
    pub fn new(policy: RestartPolicy) -> Self {
        Self {
            policy,
            state: State::Starting,
            restarts: VecDeque::with_capacity(policy.max_restarts as usize + 1),
            total_restarts: 0,
            consecutive: 0,
            up_since_ns: None,
            restart_at_ns: 0,
            last_exit: None,
        }
    }

    /// The state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Restarts made so far.
    pub fn restarts(&self) -> u64 {
        self.total_restarts
    }

    /// How the last incarnation ended.
    pub fn last_exit(&self) -> Option<ExitReason> {
        self.last_exit
    }

    /// The agent attached (said hello and took its rings).
    pub fn on_up(&mut self, now_ns: u64) {
        if self.state == State::Starting {
            self.state = State::Running;
            self.up_since_ns = Some(now_ns);
        }
    }

    /// The incarnation ended; decides what comes next.
    pub fn on_exit(&mut self, now_ns: u64, reason: ExitReason) -> Decision {
        self.last_exit = Some(reason);
        if self.state == State::Stopping {
            self.state = State::Exited;
            return Decision::StayDown;
        }
        if self
            .up_since_ns
            .take()
            .is_some_and(|since| now_ns.saturating_sub(since) >= BACKOFF_MAX_NS)
        {
            self.consecutive = 0;
        }
        let restart = match self.policy.mode {
            RestartMode::Always => true,
            RestartMode::OnFailure => reason.is_failure(),
            RestartMode::Never => false,
        };
        if !restart {
            self.state = State::Exited;
            return Decision::StayDown;
        }
        let window_start = now_ns.saturating_sub(self.policy.window_ns);
        while self.restarts.front().is_some_and(|&t| t < window_start) {
            self.restarts.pop_front();
        }
        if self.restarts.len() >= self.policy.max_restarts as usize {
            self.state = State::Failed;
            return Decision::Fail;
        }
        self.restarts.push_back(now_ns);
        let delay = BACKOFF_BASE_NS
            .saturating_mul(1u64 << self.consecutive.min(16))
            .min(BACKOFF_MAX_NS);
        self.consecutive = self.consecutive.saturating_add(1);
        self.restart_at_ns = now_ns.saturating_add(delay);
        self.state = State::Backoff;
        Decision::RestartAt(self.restart_at_ns)
    }

    /// Whether a restart is due now.
    pub fn due(&self, now_ns: u64) -> bool {
        self.state == State::Backoff && now_ns >= self.restart_at_ns
    }

    /// The restart was made: the new incarnation is starting.
    pub fn on_restarted(&mut self) {
        if self.state == State::Backoff {
            self.state = State::Starting;
            self.total_restarts += 1;
        }
    }

    /// The daemon is stopping it: whatever ends it next, it stays down.
    pub fn on_stop(&mut self) {
        if matches!(self.state, State::Starting | State::Running) {
            self.state = State::Stopping;
        } else if self.state == State::Backoff {
            self.state = State::Exited;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn sut(mode: RestartMode, max_restarts: u32) -> Supervisor {
        Supervisor::new(RestartPolicy {
            mode,
            max_restarts,
            window_ns: 60 * S,
        })
    }

    /// Crashes the running agent at `now` and restarts it when due.
    fn crash(sut: &mut Supervisor, now: u64) -> Decision {
        let decision = sut.on_exit(now, ExitReason::Signaled(9));
        if let Decision::RestartAt(at) = decision {
            assert!(!sut.due(at - 1) && sut.due(at));
            sut.on_restarted();
            sut.on_up(at);
        }
        decision
    }

    #[test]
    fn backoff_doubles_from_the_base_up_to_the_cap() {
        let mut sut = sut(RestartMode::OnFailure, 100);
        sut.on_up(0);
        let mut now = 0;
        let mut delays = Vec::new();
        for _ in 0..10 {
            let Decision::RestartAt(at) = crash(&mut sut, now) else {
                panic!("restarts")
            };
            delays.push(at - now);
            now = at + 1;
        }
        assert_eq!(delays[0], BACKOFF_BASE_NS);
        assert_eq!(delays[1], 2 * BACKOFF_BASE_NS);
        assert_eq!(delays[9], BACKOFF_MAX_NS);
        assert_eq!(sut.restarts(), 10);
    }

    #[test]
    fn a_child_that_stayed_up_long_enough_restarts_after_the_base_delay_again() {
        let mut sut = sut(RestartMode::OnFailure, 100);
        sut.on_up(0);
        let Decision::RestartAt(at) = crash(&mut sut, 0) else {
            panic!()
        };
        let Decision::RestartAt(at2) = crash(&mut sut, at) else {
            panic!()
        };
        let later = at2 + BACKOFF_MAX_NS;
        assert_eq!(
            crash(&mut sut, later),
            Decision::RestartAt(later + BACKOFF_BASE_NS)
        );
    }

    #[test]
    fn more_restarts_than_the_intensity_within_the_window_fail_the_agent() {
        let mut sut = sut(RestartMode::Always, 3);
        sut.on_up(0);
        let mut now = 0;
        for _ in 0..3 {
            let Decision::RestartAt(at) = crash(&mut sut, now) else {
                panic!("within intensity")
            };
            now = at;
        }
        assert_eq!(sut.on_exit(now, ExitReason::Exited(1)), Decision::Fail);
        assert_eq!(sut.state(), State::Failed);
        assert!(!sut.due(u64::MAX));
        assert_eq!(sut.last_exit(), Some(ExitReason::Exited(1)));
    }

    #[test]
    fn restarts_older_than_the_window_no_longer_count() {
        let mut sut = sut(RestartMode::Always, 2);
        sut.on_up(0);
        let Decision::RestartAt(a) = crash(&mut sut, 0) else {
            panic!()
        };
        let Decision::RestartAt(_) = crash(&mut sut, a) else {
            panic!()
        };
        assert!(matches!(crash(&mut sut, 61 * S), Decision::RestartAt(_)));
    }

    #[test]
    fn on_failure_leaves_a_clean_exit_down_and_never_leaves_everything_down() {
        let mut sut1 = sut(RestartMode::OnFailure, 5);
        sut1.on_up(0);
        assert_eq!(sut1.on_exit(S, ExitReason::Exited(0)), Decision::StayDown);
        assert_eq!(sut1.state(), State::Exited);
        let mut sut2 = sut(RestartMode::Never, 5);
        sut2.on_up(0);
        assert_eq!(sut2.on_exit(S, ExitReason::Corrupt), Decision::StayDown);
        let mut sut3 = sut(RestartMode::OnFailure, 5);
        assert!(matches!(
            sut3.on_exit(S, ExitReason::Silent),
            Decision::RestartAt(_)
        ));
    }

    #[test]
    fn a_child_being_stopped_stays_down_whatever_ends_it() {
        let mut sut = sut(RestartMode::Always, 5);
        sut.on_up(0);
        sut.on_stop();
        assert_eq!(sut.state(), State::Stopping);
        assert_eq!(sut.on_exit(S, ExitReason::Signaled(15)), Decision::StayDown);
        assert_eq!(sut.state(), State::Exited);
    }
}
