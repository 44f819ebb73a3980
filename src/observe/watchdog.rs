//! The watchdog: notices a stalled executor, and tells systemd the daemon
//! is alive only while none is.
//!
//! Each executor's ticker stores a heartbeat (its monotonic clock) every
//! millisecond. [`Watchdog::check`] is pure: given the heartbeats and the
//! time now, it reports each executor whose heartbeat is older than the
//! threshold, once per stall (an edge, so a stall is logged and counted
//! once, not every tick), and again after it recovers and stalls anew. A
//! ticker that cannot run means its executor's task queues are blocked:
//! a handler spinning without yielding, or a blocking call.
//!
//! Under systemd ([`Systemd`]) the core loop sends `READY=1` once the mesh
//! is up and `WATCHDOG=1` at half the unit's `WatchdogSec` as long as no
//! executor is stalled, so a daemon whose data plane is stuck is restarted
//! by `Restart=on-failure` instead of lingering.

use std::time::Duration;

/// An executor that stopped beating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stall {
    /// The executor's index.
    pub executor: usize,
    /// How long since its last heartbeat, ns.
    pub silent_ns: u64,
}

/// What one check found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Check {
    /// Stalls that began since the last check.
    pub new_stalls: Vec<Stall>,
    /// Executors that beat again since the last check.
    pub recovered: Vec<usize>,
    /// Executors stalled now.
    pub stalled: usize,
}

/// Stall detection over the executors' heartbeats.
#[derive(Debug)]
pub struct Watchdog {
    threshold_ns: u64,
    stalled: Vec<bool>,
    stalls: Vec<u64>,
}

impl Watchdog {
    /// A watchdog for `executors` executors.
    pub fn new(executors: usize, threshold: Duration) -> Self {
        Self {
            threshold_ns: u64::try_from(threshold.as_nanos()).unwrap_or(u64::MAX),
            stalled: vec![false; executors],
            stalls: vec![0; executors],
        }
    }

    /// Checks `heartbeats` (ns, 0 = not started yet) at `now_ns`.
    pub fn check(&mut self, now_ns: u64, heartbeats: &[u64]) -> Check {
        let mut check = Check::default();
        for (executor, &beat) in heartbeats.iter().enumerate().take(self.stalled.len()) {
            let silent_ns = now_ns.saturating_sub(beat);
            let stalled = beat != 0 && silent_ns > self.threshold_ns;
            match (self.stalled[executor], stalled) {
                (false, true) => {
                    self.stalls[executor] += 1;
                    check.new_stalls.push(Stall {
                        executor,
                        silent_ns,
                    });
                }
                (true, false) => check.recovered.push(executor),
                _ => {}
            }
            self.stalled[executor] = stalled;
        }
        check.stalled = self.stalled.iter().filter(|s| **s).count();
        check
    }

    /// Stalls counted per executor since start.
    pub fn stalls(&self) -> &[u64] {
        &self.stalls
    }
}

/// The systemd notification socket, when the daemon runs under systemd.
#[derive(Debug)]
pub struct Systemd {
    watchdog_every: Option<Duration>,
}

impl Systemd {
    /// `None` when `NOTIFY_SOCKET` is not set (not under systemd).
    pub fn from_env() -> Option<Self> {
        std::env::var_os("NOTIFY_SOCKET")?;
        let watchdog_every = sd_notify::watchdog_enabled().map(|d| d / 2);
        Some(Self { watchdog_every })
    }

    /// How often to send `WATCHDOG=1`, if the unit asks for it.
    pub fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog_every
    }

    /// Sends `READY=1`.
    pub fn ready(&self) {
        if let Err(err) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
            tracing::warn!(error = %err, "systemd READY=1 not sent");
        }
    }

    /// Sends `WATCHDOG=1`.
    pub fn alive(&self) {
        if let Err(err) = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]) {
            tracing::warn!(error = %err, "systemd WATCHDOG=1 not sent");
        }
    }

    /// Sends `STOPPING=1`.
    pub fn stopping(&self) {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_silent_executor_is_reported_once_and_its_recovery_once() {
        let mut sut = Watchdog::new(2, Duration::from_millis(100));
        assert_eq!(sut.check(1_000 * MS, &[999 * MS, 999 * MS]).stalled, 0);
        let check = sut.check(1_200 * MS, &[1_199 * MS, 1_000 * MS]);
        assert_eq!(
            check.new_stalls,
            vec![Stall {
                executor: 1,
                silent_ns: 200 * MS
            }]
        );
        assert_eq!(check.stalled, 1);
        let again = sut.check(1_300 * MS, &[1_299 * MS, 1_000 * MS]);
        assert!(again.new_stalls.is_empty());
        assert_eq!(again.stalled, 1);
        let back = sut.check(1_400 * MS, &[1_399 * MS, 1_399 * MS]);
        assert_eq!(back.recovered, vec![1]);
        assert_eq!(back.stalled, 0);
        assert_eq!(sut.stalls(), &[0, 1]);
    }

    #[test]
    fn an_executor_that_has_not_started_is_not_stalled() {
        let mut sut = Watchdog::new(1, Duration::from_millis(100));
        assert_eq!(sut.check(10_000 * MS, &[0]).stalled, 0);
    }
}
