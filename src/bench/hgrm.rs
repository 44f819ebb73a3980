//! HdrHistogram percentile distributions as text: the `.hgrm` files of
//! `pinwheel bench --out`, and a reader for them.
//!
//! The format is the one HdrHistogram's `outputPercentileDistribution`
//! prints (Java, C and Rust ports alike) and that its online plotter and
//! HistogramLogAnalyzer read:
//!
//! ```text
//!        Value     Percentile TotalCount 1/(1-Percentile)
//!
//!        3.071 0.000000000000          1           1.00
//!        3.195 0.100000000000        512           1.11
//!        ...
//!       48.127 1.000000000000       5000
//! #[Mean    =        3.412, StdDeviation   =        0.950]
//! #[Max     =       48.127, Total count    =         5000]
//! #[Buckets =           27, SubBuckets     =         2048]
//! ```
//!
//! One row per percentile tick, [`TICKS_PER_HALF_DISTANCE`] ticks in each
//! half of the distance left to 100% (0%, 10%, .. 50%, 55%, .. 75%, 77.5%,
//! ..), so the tail gets as many rows as the body. The last row (100%) has
//! no `1/(1-Percentile)` column. Values are **microseconds** with as many
//! decimals as the histogram has significant digits: pinwheel's histograms
//! record nanoseconds with 3 digits, so a value prints to the nanosecond.
//!
//! [`Distribution`] is the same table in memory: built from a histogram,
//! written out, parsed back. The plots are drawn from it, so a plot shows
//! exactly what its file says.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use super::BenchError;

/// Ticks per half distance to 100%, HdrHistogram's usual 5.
pub const TICKS_PER_HALF_DISTANCE: u32 = 5;
/// Nanoseconds per unit of the values in an `.hgrm` file (microseconds).
pub const NS_PER_UNIT: f64 = 1_000.0;

/// One row: the value at a percentile tick.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PercentileRow {
    /// The highest value equivalent to the one at this percentile,
    /// microseconds.
    pub value_us: f64,
    /// The percentile, as a fraction (0.99 is p99).
    pub quantile: f64,
    /// Values recorded up to and including this one.
    pub total_count: u64,
}

/// The footer of an `.hgrm` file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Footer {
    /// Mean, microseconds.
    pub mean_us: f64,
    /// Standard deviation, microseconds.
    pub stdev_us: f64,
    /// Largest value, microseconds.
    pub max_us: f64,
    /// Values recorded.
    pub total_count: u64,
    /// Buckets of the histogram.
    pub buckets: u64,
    /// Sub-buckets per bucket.
    pub sub_buckets: u64,
}

/// A percentile distribution: the rows and the footer.
#[derive(Debug, Clone, PartialEq)]
pub struct Distribution {
    rows: Vec<PercentileRow>,
    footer: Footer,
    decimals: usize,
}

impl Distribution {
    /// The distribution of a histogram of nanoseconds.
    pub fn of(histogram: &Histogram<u64>) -> Self {
        let mut total_count = 0u64;
        let rows = histogram
            .iter_quantiles(TICKS_PER_HALF_DISTANCE)
            .map(|v| {
                total_count += v.count_since_last_iteration();
                PercentileRow {
                    value_us: v.value_iterated_to() as f64 / NS_PER_UNIT,
                    quantile: v.quantile_iterated_to(),
                    total_count,
                }
            })
            .collect();
        let empty = histogram.is_empty();
        let footer = Footer {
            mean_us: if empty {
                0.0
            } else {
                histogram.mean() / NS_PER_UNIT
            },
            stdev_us: if empty {
                0.0
            } else {
                histogram.stdev() / NS_PER_UNIT
            },
            max_us: histogram.max() as f64 / NS_PER_UNIT,
            total_count: histogram.len(),
            buckets: u64::from(histogram.buckets()),
            sub_buckets: sub_buckets(histogram.sigfig()),
        };
        Self {
            rows,
            footer,
            decimals: usize::from(histogram.sigfig()),
        }
    }

    /// The rows, by ascending percentile.
    pub fn rows(&self) -> &[PercentileRow] {
        &self.rows
    }

    /// The footer.
    pub fn footer(&self) -> &Footer {
        &self.footer
    }

    /// The value at `quantile`, microseconds: the first row at or above it
    /// (a row's percentile may be one rounding step under its tick, hence
    /// the tolerance). `None` for an empty distribution.
    pub fn value_at_quantile(&self, quantile: f64) -> Option<f64> {
        self.rows
            .iter()
            .find(|row| row.quantile >= quantile - 1e-9)
            .or(self.rows.last())
            .map(|row| row.value_us)
    }

    /// The distribution in HdrHistogram's text format.
    pub fn to_hgrm(&self) -> String {
        let d = self.decimals;
        let mut out = format!(
            "{:>12} {:>14} {:>10} {:>14}\n\n",
            "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
        );
        for row in &self.rows {
            let _ = write!(
                out,
                "{:>12.d$} {:>2.12} {:>10}",
                row.value_us, row.quantile, row.total_count
            );
            if row.quantile < 1.0 {
                let _ = write!(out, " {:>14.2}", 1.0 / (1.0 - row.quantile));
            }
            out.push('\n');
        }
        let f = &self.footer;
        let _ = writeln!(
            out,
            "#[Mean    = {:>12.d$}, StdDeviation   = {:>12.d$}]",
            f.mean_us, f.stdev_us
        );
        let _ = writeln!(
            out,
            "#[Max     = {:>12.d$}, Total count    = {:>12}]",
            f.max_us, f.total_count
        );
        let _ = writeln!(
            out,
            "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
            f.buckets, f.sub_buckets
        );
        out
    }

    /// Reads a distribution back from HdrHistogram's text format.
    pub fn parse(text: &str) -> Result<Self, BenchError> {
        let mut rows = Vec::new();
        let mut fields = FooterFields::default();
        let mut decimals = 0;
        for (index, line) in text.lines().enumerate() {
            let line_no = index + 1;
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with("Value") {
                continue;
            }
            if let Some(inner) = trimmed.strip_prefix("#[") {
                fields.read(inner, line_no)?;
                continue;
            }
            let row = parse_row(trimmed, line_no)?;
            if let Some(last) = rows.last().map(|r: &PercentileRow| r.quantile)
                && row.quantile < last
            {
                return Err(hgrm_error(line_no, "percentiles must not go down"));
            }
            let first = trimmed.split_whitespace().next().unwrap_or_default();
            decimals = first.split_once('.').map_or(0, |(_, frac)| frac.len());
            rows.push(row);
        }
        Ok(Self {
            rows,
            footer: fields.finish(text.lines().count())?,
            decimals,
        })
    }
}

/// HdrHistogram's sub-bucket count for `sigfig` significant digits: the
/// power of two that holds 2 × 10^sigfig distinct values.
fn sub_buckets(sigfig: u8) -> u64 {
    let largest = 2 * 10u64.pow(u32::from(sigfig));
    largest.next_power_of_two()
}

fn hgrm_error(line: usize, reason: impl Into<String>) -> BenchError {
    BenchError::Hgrm {
        line,
        reason: reason.into(),
    }
}

fn parse_row(line: &str, line_no: usize) -> Result<PercentileRow, BenchError> {
    let columns: Vec<&str> = line.split_whitespace().collect();
    if !(3..=4).contains(&columns.len()) {
        return Err(hgrm_error(
            line_no,
            format!(
                "expected Value, Percentile, TotalCount and 1/(1-Percentile), found {} columns",
                columns.len()
            ),
        ));
    }
    let number = |i: usize, name: &str| {
        columns[i]
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| hgrm_error(line_no, format!("{name} {:?} is not a number", columns[i])))
    };
    let row = PercentileRow {
        value_us: number(0, "value")?,
        quantile: number(1, "percentile")?,
        total_count: columns[2].parse().map_err(|_| {
            hgrm_error(
                line_no,
                format!("total count {:?} is not a whole number", columns[2]),
            )
        })?,
    };
    if row.quantile > 1.0 {
        return Err(hgrm_error(line_no, "percentile is a fraction, at most 1"));
    }
    Ok(row)
}

/// Footer values as they are found.
#[derive(Debug, Default)]
struct FooterFields {
    mean_us: Option<f64>,
    stdev_us: Option<f64>,
    max_us: Option<f64>,
    total_count: Option<u64>,
    buckets: Option<u64>,
    sub_buckets: Option<u64>,
}

impl FooterFields {
    /// Reads `Key = value, Key = value]`.
    fn read(&mut self, inner: &str, line_no: usize) -> Result<(), BenchError> {
        let inner = inner.trim_end_matches(']');
        for pair in inner.split(',') {
            let Some((key, value)) = pair.split_once('=') else {
                return Err(hgrm_error(
                    line_no,
                    format!("{pair:?} is not `Key = value`"),
                ));
            };
            let (key, value) = (key.trim(), value.trim());
            let float = || {
                value
                    .parse::<f64>()
                    .map_err(|_| hgrm_error(line_no, format!("{key} {value:?} is not a number")))
            };
            let whole = || {
                value.parse::<u64>().map_err(|_| {
                    hgrm_error(line_no, format!("{key} {value:?} is not a whole number"))
                })
            };
            match key {
                "Mean" => self.mean_us = Some(float()?),
                "StdDeviation" => self.stdev_us = Some(float()?),
                "Max" => self.max_us = Some(float()?),
                "Total count" => self.total_count = Some(whole()?),
                "Buckets" => self.buckets = Some(whole()?),
                "SubBuckets" => self.sub_buckets = Some(whole()?),
                _ => return Err(hgrm_error(line_no, format!("unknown footer field {key:?}"))),
            }
        }
        Ok(())
    }

    /// The footer; a missing field is reported at the file's last line.
    fn finish(self, last_line: usize) -> Result<Footer, BenchError> {
        let missing = |name: &str| hgrm_error(last_line, format!("the footer has no {name}"));
        Ok(Footer {
            mean_us: self.mean_us.ok_or_else(|| missing("Mean"))?,
            stdev_us: self.stdev_us.ok_or_else(|| missing("StdDeviation"))?,
            max_us: self.max_us.ok_or_else(|| missing("Max"))?,
            total_count: self.total_count.ok_or_else(|| missing("Total count"))?,
            buckets: self.buckets.ok_or_else(|| missing("Buckets"))?,
            sub_buckets: self.sub_buckets.ok_or_else(|| missing("SubBuckets"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::new_histogram;

    fn skewed() -> Histogram<u64> {
        let mut histogram = new_histogram();
        for i in 1..=5_000u64 {
            histogram.record(3_000 + (i * 7) % 1_000).unwrap();
        }
        histogram.record(48_127).unwrap();
        histogram
    }

    #[test]
    fn the_text_has_hdrhistograms_header_columns_and_footer() {
        let text = Distribution::of(&skewed()).to_hgrm();
        let mut lines = text.lines();
        assert_eq!(
            lines.next().unwrap(),
            "       Value     Percentile TotalCount 1/(1-Percentile)"
        );
        assert_eq!(lines.next().unwrap(), "");
        let first = lines.next().unwrap();
        assert_eq!(first.split_whitespace().count(), 4, "{first}");
        assert!(first.contains(" 0.000000000000 "), "{first}");
        let last_row = text.lines().rev().nth(3).unwrap();
        assert_eq!(last_row.split_whitespace().count(), 3, "{last_row}");
        assert!(last_row.contains(" 1.000000000000 "), "{last_row}");
        assert!(text.contains("#[Max     =       48.127, Total count    =         5001]"));
        assert!(text.contains("SubBuckets     =         2048]"), "{text}");
    }

    #[test]
    fn a_written_distribution_parses_back_to_the_same_rows() {
        let sut = Distribution::of(&skewed());
        let back = Distribution::parse(&sut.to_hgrm()).unwrap();
        assert_eq!(back.rows().len(), sut.rows().len());
        for (a, b) in back.rows().iter().zip(sut.rows()) {
            assert!((a.value_us - b.value_us).abs() < 5e-4, "{a:?} {b:?}");
            assert!((a.quantile - b.quantile).abs() < 1e-11, "{a:?} {b:?}");
            assert_eq!(a.total_count, b.total_count);
        }
        assert_eq!(back.footer().total_count, 5_001);
    }

    #[test]
    fn an_empty_histogram_has_a_footer_and_no_rows() {
        let sut = Distribution::parse(&Distribution::of(&new_histogram()).to_hgrm()).unwrap();
        assert!(sut.rows().is_empty());
        assert_eq!(sut.footer().total_count, 0);
        assert_eq!(sut.value_at_quantile(0.5), None);
    }

    #[test]
    fn a_garbled_row_is_reported_with_its_line() {
        let err = Distribution::parse("Value Percentile\n\n1.0 0.5 x 2.0\n").unwrap_err();
        assert!(err.to_string().contains("line 3"), "{err}");
        let err = Distribution::parse("1.0 0.5 3 2.0\n").unwrap_err();
        assert!(err.to_string().contains("no Mean"), "{err}");
    }
}
