//! Latency as every layer records and prints it: the HdrHistogram the
//! executors, the run report and the benches record nanoseconds into, the
//! one percentile summary of such a histogram, and the one way a duration
//! in nanoseconds prints for people.
//!
//! It sits in the bottom layer, beside `config` and `topology`, and imports
//! nothing from the crate: the runtime records into these histograms, the
//! daemon's run report and status line summarize and print them, and the
//! benches (which sit above the daemon and run it) print the same numbers
//! the same way. A helper both sides share has to live below both, and
//! below `runtime` is the lowest place the runtime can reach.
//!
//! Invariants: every histogram comes from [`new_histogram`], so any two
//! can be added together without a bounds error; values are clamped into
//! the histogram's range when recorded ([`record_ns`]), never dropped.
//!
//! It does not export anything: Prometheus buckets (`observe::metrics`)
//! and `.hgrm` files (`bench::hgrm`) are read from the histograms by their
//! owners.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest value a histogram records, nanoseconds (60 s).
pub const HISTOGRAM_MAX_NS: u64 = 60_000_000_000;

/// A histogram of nanoseconds from 1 ns to 60 s with 3 significant digits
/// (0.1% resolution), so p99.99 of a sub-microsecond distribution is as
/// exact as its median.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_NS, 3).expect("constant bounds are valid")
}

/// A histogram of nanoseconds from 1 ns to 60 s with 2 significant digits
/// (1% resolution), for what an executor keeps per route and per agent
/// and copies every second for the live view: a 3-digit one is 220 KB,
/// and copying one per route and agent of a seed mesh held each executor
/// for 7-15 ms every second (the mesh's p99 at 1,000 req/s was 6 ms).
/// This one is 31 KB.
pub fn new_live_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_NS, 2).expect("constant bounds are valid")
}

/// Records `ns` into a histogram from [`new_histogram`]: 0 counts as 1 ns
/// (the lowest trackable value) and anything past 60 s as 60 s, so a
/// sample is never lost to the bounds.
pub fn record_ns(histogram: &mut Histogram<u64>, ns: u64) {
    histogram.saturating_record(ns.max(1));
}

/// Records a measured [`Duration`], as [`record_ns`] does.
pub fn record_duration(histogram: &mut Histogram<u64>, duration: Duration) {
    record_ns(
        histogram,
        u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX),
    );
}

/// Percentiles of one latency distribution, nanoseconds. Serializes as
/// `{"count", "p50", "p90", "p99", "p999", "p9999", "max"}`, the shape of
/// every latency in the run report and the benches' JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct LatencySummary {
    /// Number of values.
    pub count: u64,
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
}

impl LatencySummary {
    /// Summarizes a histogram.
    pub fn of(histogram: &Histogram<u64>) -> Self {
        let at = |q: f64| histogram.value_at_quantile(q);
        Self {
            count: histogram.len(),
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
            p9999: at(0.9999),
            max: histogram.max(),
        }
    }

    /// The percentiles in table order, titled by [`PERCENTILE_TITLES`].
    pub fn columns(&self) -> [u64; 6] {
        [
            self.p50, self.p90, self.p99, self.p999, self.p9999, self.max,
        ]
    }
}

/// Column titles matching [`LatencySummary::columns`].
pub const PERCENTILE_TITLES: [&str; 6] = ["p50", "p90", "p99", "p99.9", "p99.99", "max"];

/// Nanoseconds for people: `412 ns`, `1.31 us`, `21.4 us`, `323.0 us`,
/// `3.20 ms`, `1.24 s`. Every duration pinwheel prints for people goes
/// through here, so a bench table, the run report, the status line and
/// `pinwheel status` read alike.
pub fn format_ns(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns} ns"),
        1_000..10_000 => format!("{:.2} us", ns as f64 / 1e3),
        10_000..1_000_000 => format!("{:.1} us", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2} ms", ns as f64 / 1e6),
        _ => format!("{:.2} s", ns as f64 / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_reads_percentiles_of_the_histogram() {
        let mut histogram = new_histogram();
        for ns in 1..=10_000u64 {
            record_ns(&mut histogram, ns);
        }
        let sut = LatencySummary::of(&histogram);
        assert_eq!(sut.count, 10_000);
        assert!((4_990..=5_010).contains(&sut.p50), "{sut:?}");
        assert!((8_990..=9_010).contains(&sut.p90), "{sut:?}");
        assert!((9_890..=9_910).contains(&sut.p99), "{sut:?}");
        assert!((9_995..=10_007).contains(&sut.max), "{sut:?}");
        assert_eq!(sut.columns()[5], sut.max);
    }

    #[test]
    fn an_empty_histogram_summarizes_to_zeros() {
        let sut = LatencySummary::of(&new_histogram());
        assert_eq!(sut, LatencySummary::default());
    }

    #[test]
    fn the_summary_serializes_count_then_percentiles_then_max() {
        let mut histogram = new_histogram();
        record_ns(&mut histogram, 500);
        let sut = serde_json::to_string(&LatencySummary::of(&histogram)).unwrap();
        assert_eq!(
            sut,
            r#"{"count":1,"p50":500,"p90":500,"p99":500,"p999":500,"p9999":500,"max":500}"#
        );
    }

    #[test]
    fn recording_clamps_into_the_histograms_range_instead_of_dropping() {
        let mut sut = new_histogram();
        record_ns(&mut sut, 0);
        record_ns(&mut sut, u64::MAX);
        record_duration(&mut sut, Duration::MAX);
        assert_eq!(sut.len(), 3);
        assert_eq!(sut.min(), 1);
        assert!(sut.max() >= HISTOGRAM_MAX_NS, "{}", sut.max());
    }

    #[test]
    fn histograms_from_the_constructor_add_together() {
        let (mut sut, mut other) = (new_histogram(), new_histogram());
        record_ns(&mut sut, 1_000);
        record_ns(&mut other, 2_000_000);
        sut.add(&other).unwrap();
        assert_eq!(sut.len(), 2);
    }

    #[test]
    fn nanoseconds_print_in_readable_units() {
        assert_eq!(format_ns(0), "0 ns");
        assert_eq!(format_ns(412), "412 ns");
        assert_eq!(format_ns(1_314), "1.31 us");
        assert_eq!(format_ns(21_400), "21.4 us");
        assert_eq!(format_ns(323_000), "323.0 us");
        assert_eq!(format_ns(3_200_000), "3.20 ms");
        assert_eq!(format_ns(1_236_000_000), "1.24 s");
    }
}
