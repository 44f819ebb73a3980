//! Latency summaries from HdrHistograms (made by
//! `runtime::stats::new_histogram`) and how they print.

use hdrhistogram::Histogram;
use serde_json::{Value, json};

pub use crate::runtime::stats::new_histogram;

/// Percentiles of one latency distribution, nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencySummary {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// 99.99th percentile.
    pub p9999: u64,
    /// Largest value.
    pub max: u64,
    /// Number of values.
    pub count: u64,
}

impl LatencySummary {
    /// Summarizes a histogram.
    pub fn of(histogram: &Histogram<u64>) -> Self {
        let at = |q: f64| histogram.value_at_quantile(q);
        Self {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
            p9999: at(0.9999),
            max: histogram.max(),
            count: histogram.len(),
        }
    }

    /// `{"p50": .., "p90": .., "p99": .., "p999": .., "p9999": .., "max": ..}`.
    pub fn to_json(&self) -> Value {
        json!({
            "p50": self.p50, "p90": self.p90, "p99": self.p99,
            "p999": self.p999, "p9999": self.p9999, "max": self.max,
        })
    }

    /// The percentiles in table order.
    pub fn columns(&self) -> [u64; 6] {
        [
            self.p50, self.p90, self.p99, self.p999, self.p9999, self.max,
        ]
    }
}

/// Column titles matching [`LatencySummary::columns`].
pub const PERCENTILE_TITLES: [&str; 6] = ["p50", "p90", "p99", "p99.9", "p99.99", "max"];

/// Nanoseconds for people: `412 ns`, `1.31 us`, `21.4 us`, `3.20 ms`.
pub fn format_ns(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns} ns"),
        1_000..10_000 => format!("{:.2} us", ns as f64 / 1e3),
        10_000..1_000_000 => format!("{:.1} us", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2} ms", ns as f64 / 1e6),
        _ => format!("{:.2} s", ns as f64 / 1e9),
    }
}

/// A rate for people: `26.1M/s`, `812k/s`.
pub fn format_rate(per_second: f64) -> String {
    if per_second >= 1e6 {
        format!("{:.2}M/s", per_second / 1e6)
    } else if per_second >= 1e3 {
        format!("{:.0}k/s", per_second / 1e3)
    } else {
        format!("{per_second:.0}/s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_reads_percentiles_of_the_histogram() {
        let mut histogram = new_histogram();
        for ns in 1..=10_000u64 {
            histogram.record(ns).unwrap();
        }
        let sut = LatencySummary::of(&histogram);
        assert_eq!(sut.count, 10_000);
        assert!((4_990..=5_010).contains(&sut.p50), "{sut:?}");
        assert!((9_890..=9_910).contains(&sut.p99), "{sut:?}");
        assert!((9_995..=10_007).contains(&sut.max), "{sut:?}");
    }

    #[test]
    fn nanoseconds_and_rates_print_in_readable_units() {
        assert_eq!(format_ns(412), "412 ns");
        assert_eq!(format_ns(1_314), "1.31 us");
        assert_eq!(format_ns(21_400), "21.4 us");
        assert_eq!(format_ns(3_200_000), "3.20 ms");
        assert_eq!(format_rate(26_100_000.0), "26.10M/s");
        assert_eq!(format_rate(812_000.0), "812k/s");
    }
}
