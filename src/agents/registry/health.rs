//! Health from silence: how long since an agent was last heard from, against
//! two thresholds. Pure; the registry supplies the times.

use super::RegistryError;

/// How recently an agent was heard from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Health {
    /// Heard from within the stale threshold.
    Up,
    /// Silent past the stale threshold, or not heard from since the daemon
    /// restarted: calls may still work, but the agent may be gone.
    Stale,
    /// Silent past the down threshold: treat as gone.
    Down,
}

/// When silence makes an agent stale, then down. Validated: `0 < stale <
/// down`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthThresholds {
    stale_after_ns: u64,
    down_after_ns: u64,
}

impl HealthThresholds {
    /// Stale after 3 s, down after 10 s: a heartbeat a second survives two
    /// lost heartbeats before an agent looks stale.
    pub const DEFAULT: Self = Self {
        stale_after_ns: 3_000_000_000,
        down_after_ns: 10_000_000_000,
    };

    /// Thresholds with `0 < stale_after_ns < down_after_ns`.
    pub fn try_new(stale_after_ns: u64, down_after_ns: u64) -> Result<Self, RegistryError> {
        if stale_after_ns == 0 || stale_after_ns >= down_after_ns {
            return Err(RegistryError::Thresholds {
                stale_after_ns,
                down_after_ns,
            });
        }
        Ok(Self {
            stale_after_ns,
            down_after_ns,
        })
    }

    /// Silence after which an agent is [`Health::Stale`].
    pub fn stale_after_ns(&self) -> u64 {
        self.stale_after_ns
    }

    /// Silence after which an agent is [`Health::Down`].
    pub fn down_after_ns(&self) -> u64 {
        self.down_after_ns
    }

    /// The health of an agent silent for `silent_ns`.
    pub fn classify(&self, silent_ns: u64) -> Health {
        if silent_ns >= self.down_after_ns {
            Health::Down
        } else if silent_ns >= self.stale_after_ns {
            Health::Stale
        } else {
            Health::Up
        }
    }
}

impl Default for HealthThresholds {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_below_stale_is_up_then_stale_then_down() {
        let sut = HealthThresholds::try_new(100, 200).unwrap();

        assert_eq!(sut.classify(0), Health::Up);
        assert_eq!(sut.classify(99), Health::Up);
        assert_eq!(sut.classify(100), Health::Stale);
        assert_eq!(sut.classify(199), Health::Stale);
        assert_eq!(sut.classify(200), Health::Down);
        assert_eq!(sut.classify(u64::MAX), Health::Down);
    }

    #[test]
    fn thresholds_out_of_order_are_refused() {
        assert!(HealthThresholds::try_new(200, 200).is_err());
        assert!(HealthThresholds::try_new(300, 200).is_err());
        assert!(HealthThresholds::try_new(0, 200).is_err());
    }

    #[test]
    fn the_default_is_stale_after_three_seconds_and_down_after_ten() {
        let sut = HealthThresholds::default();

        assert_eq!(sut.stale_after_ns(), 3_000_000_000);
        assert_eq!(sut.down_after_ns(), 10_000_000_000);
    }
}
