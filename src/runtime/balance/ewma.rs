//! Peak EWMA: a replica's latency estimate, as Finagle's `PeakEwma` and
//! tower's `PeakEwma` keep it.
//!
//! A round trip longer than the estimate replaces it at once (the peak);
//! a shorter one pulls it down by an exponential moving average whose
//! weight grows with the time since the last update (`1 - e^(-dt/tau)`).
//! Reading the estimate decays it toward zero the same way, so a replica
//! that was slow and then left alone is tried again after a while instead
//! of being shunned for ever. Quick to turn away from a slow replica,
//! cautious about coming back.

/// The decay time, ns (Finagle's and Linkerd's default: 10 s).
pub const DECAY_NS: f64 = 10e9;
/// The estimate of a replica never measured, ns.
pub const DEFAULT_RTT_NS: f64 = 1e6;

/// One replica's latency estimate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeakEwma {
    rtt_ns: f64,
    stamp_ns: u64,
}

impl PeakEwma {
    /// An estimate of [`DEFAULT_RTT_NS`] as of `now_ns`.
    pub fn new(now_ns: u64) -> Self {
        Self {
            rtt_ns: DEFAULT_RTT_NS,
            stamp_ns: now_ns,
        }
    }

    /// Takes in a round trip of `rtt_ns` that ended at `now_ns`.
    pub fn observe(&mut self, now_ns: u64, rtt_ns: f64) {
        if rtt_ns > self.rtt_ns {
            self.rtt_ns = rtt_ns;
        } else {
            let w = self.weight(now_ns);
            self.rtt_ns = self.rtt_ns * w + rtt_ns * (1.0 - w);
        }
        self.stamp_ns = self.stamp_ns.max(now_ns);
    }

    /// The estimate at `now_ns`, decayed toward zero since the last
    /// update (without changing it).
    pub fn get(&self, now_ns: u64) -> f64 {
        self.rtt_ns * self.weight(now_ns)
    }

    /// The share the old estimate keeps after the time since the stamp.
    fn weight(&self, now_ns: u64) -> f64 {
        let dt = now_ns.saturating_sub(self.stamp_ns) as f64;
        (-dt / DECAY_NS).exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slower_round_trip_is_taken_at_once_and_a_faster_one_gradually() {
        let mut sut = PeakEwma::new(0);
        sut.observe(0, 10e6);
        assert_eq!(sut.get(0), 10e6);
        sut.observe(1_000_000, 1e6);
        let after = sut.get(1_000_000);
        assert!(after > 9.9e6 && after < 10e6, "{after}");
        for step in 1..=100u64 {
            sut.observe(1_000_000 + step * 1_000_000_000, 1e6);
        }
        let settled = sut.get(100_001_000_000);
        assert!((settled - 1e6).abs() < 0.01e6, "{settled}");
    }

    #[test]
    fn an_idle_estimate_decays_toward_zero() {
        let mut sut = PeakEwma::new(0);
        sut.observe(0, 10e6);
        let later = sut.get(DECAY_NS as u64);
        assert!((later - 10e6 / std::f64::consts::E).abs() < 1.0, "{later}");
        assert!(sut.get(100 * DECAY_NS as u64) < 1.0);
    }
}
