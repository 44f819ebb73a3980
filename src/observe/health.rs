//! The daemon's health: `ok`, or `degraded` with the reasons.
//!
//! Every part that can run in a lesser mode (no NVML, no PMU, not root,
//! cluster link down, a stalled executor) raises its reason here when it
//! starts degraded and clears it when it recovers. A reason is a stable
//! snake_case name, for alerts, and a sentence for people. Raising a
//! reason that is already raised does nothing, so a part may report its
//! state every tick and `/health` still shows one line per cause.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::api::{HealthReport, HealthStatus, Reason};

/// The daemon's degraded reasons.
#[derive(Debug, Default)]
pub struct Health {
    reasons: Mutex<BTreeMap<String, String>>,
}

impl Health {
    /// Raises `reason`; true if it was not raised before.
    pub fn raise(&self, reason: &str, detail: impl Into<String>) -> bool {
        let mut reasons = self.lock();
        let fresh = !reasons.contains_key(reason);
        reasons.insert(reason.to_owned(), detail.into());
        fresh
    }

    /// Clears `reason`; true if it was raised.
    pub fn clear(&self, reason: &str) -> bool {
        self.lock().remove(reason).is_some()
    }

    /// Whether `reason` is raised.
    pub fn has(&self, reason: &str) -> bool {
        self.lock().contains_key(reason)
    }

    /// The current state.
    pub fn report(&self) -> HealthReport {
        let reasons: Vec<Reason> = self
            .lock()
            .iter()
            .map(|(reason, detail)| Reason {
                reason: reason.clone(),
                detail: detail.clone(),
            })
            .collect();
        HealthReport {
            status: if reasons.is_empty() {
                HealthStatus::Ok
            } else {
                HealthStatus::Degraded
            },
            reasons,
        }
    }

    /// The raised reasons' names.
    pub fn names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        // A panic while holding the lock cannot leave the map half-written
        // (insert and remove are single calls), so a poisoned map is fine.
        self.reasons
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_reasons_is_ok_and_any_reason_is_degraded() {
        let health = Health::default();
        assert_eq!(health.report().status, HealthStatus::Ok);
        assert!(health.raise("no_pmu", "no hardware counters"));
        let report = health.report();
        assert_eq!(report.status, HealthStatus::Degraded);
        assert_eq!(report.reasons[0].reason, "no_pmu");
    }

    #[test]
    fn raising_twice_keeps_one_reason_and_clearing_restores_ok() {
        let health = Health::default();
        assert!(health.raise("cluster_link_down", "a"));
        assert!(!health.raise("cluster_link_down", "b"));
        assert_eq!(health.report().reasons.len(), 1);
        assert_eq!(health.report().reasons[0].detail, "b");
        assert!(health.clear("cluster_link_down"));
        assert!(!health.clear("cluster_link_down"));
        assert_eq!(health.report().status, HealthStatus::Ok);
    }
}
