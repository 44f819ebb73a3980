//! `--find-max`'s search over offered rates: which rates to run, given
//! how each run went, and which passing rate is the highest.
//!
//! A run either passes the bar, fails it only by its p99 ([`Verdict::Slow`]),
//! or shows that the mesh could not keep up: requests unsent or timed out
//! ([`Verdict::Saturated`]). The two failures say different things. A
//! saturated mesh only gets worse at higher rates. A slow p99 need not: on
//! a VM a lightly loaded mesh parks its executors between requests and
//! pays a wake-up at many hops, and its p99 at 1,000 req/s can be worse
//! than at 16,000 (measured on vm-2cpu: 0.97-1.48 ms at 1,000 req/s,
//! 0.18-0.37 ms at 8,000). So the search doubles the rate from
//! [`FIRST_RATE`] past a slow run, and stops at a saturated one, at a
//! second failure in a row after a pass, or at [`HIGHEST_RATE`]. Slow runs
//! before any pass do not count towards the two: on a day the host wakes
//! threads slowly (61 us at p50 where it took 16-27 us), 1,000 and 2,000
//! req/s were both slow while 8,000 passed (p99 0.45 ms), and stopping
//! at the second of them reported a maximum of 0. When nothing passed on
//! the way up it halves the rate from [`FIRST_RATE`] until a run passes,
//! down to [`MIN_RATE`]. Then it bisects [`REFINE_STEPS`] times between
//! the highest pass and the first failure above it. Every run is kept in
//! the probes, so a slow run below the maximum stays in sight.

use serde::Serialize;

/// The rate `--find-max` starts from, requests a second.
pub const FIRST_RATE: f64 = 1_000.0;
/// Halvings of the interval between the highest passing rate and the
/// first failing one above it.
pub const REFINE_STEPS: u32 = 4;
/// Highest rate `--find-max` tries: [`FIRST_RATE`] doubled ten times
/// (above `--rate`'s limit, which is for a run people ask for).
pub const HIGHEST_RATE: f64 = 1_024_000.0;
/// Lowest rate `--find-max` tries when nothing passed on the way up.
pub const MIN_RATE: f64 = FIRST_RATE / 64.0;
/// Failures in a row, after a pass, that end the way up.
const MISSES_UP: u32 = 2;

/// How one run went (`verdict` in `--find-max --json`'s probes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Met the bar.
    Pass,
    /// Everything sent and answered, but the p99 was over the bar.
    Slow,
    /// Requests unsent or timed out (or none completed): the mesh could
    /// not keep up.
    Saturated,
}

/// Runs `probe` at the rates the search picks and returns the highest
/// rate that passed (`None` when even [`MIN_RATE`] failed). That rate is
/// always the last one that passed: each pass is above every earlier one
/// (a caller keeps the run of its last pass).
pub fn highest_passing<E>(
    mut probe: impl FnMut(f64) -> Result<Verdict, E>,
) -> Result<Option<f64>, E> {
    let (mut best, mut failed_above) = (None, None);
    let (mut rate, mut misses) = (FIRST_RATE, 0);
    while rate <= HIGHEST_RATE {
        match probe(rate)? {
            Verdict::Pass => (best, failed_above, misses) = (Some(rate), None, 0),
            verdict => {
                failed_above.get_or_insert(rate);
                if best.is_some() {
                    misses += 1;
                }
                if verdict == Verdict::Saturated || misses >= MISSES_UP {
                    break;
                }
            }
        }
        rate *= 2.0;
    }
    rate = FIRST_RATE / 2.0;
    while best.is_none() && rate >= MIN_RATE {
        match probe(rate)? {
            Verdict::Pass => best = Some(rate),
            _ => failed_above = Some(rate),
        }
        rate /= 2.0;
    }
    if let (Some(mut low), Some(mut high)) = (best, failed_above) {
        for _ in 0..REFINE_STEPS {
            let mid = ((low + high) / 2.0).round();
            match probe(mid)? {
                Verdict::Pass => (low, best) = (mid, Some(mid)),
                _ => high = mid,
            }
        }
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rates a search ran, and what it found, against a mesh that
    /// answers `verdict(rate)`; checks that the highest rate found is the
    /// last that passed.
    fn search(verdict: impl Fn(f64) -> Verdict) -> (Vec<f64>, Option<f64>) {
        let (mut ran, mut last_pass) = (Vec::new(), None);
        let best = highest_passing(|rate| {
            ran.push(rate);
            let v = verdict(rate);
            if v == Verdict::Pass {
                last_pass = Some(rate);
            }
            Ok::<_, ()>(v)
        })
        .expect("the fake never fails");
        assert_eq!(best, last_pass, "the highest pass is the last: {ran:?}");
        (ran, best)
    }

    /// A mesh that passes up to `max` and saturates above it.
    fn capacity(max: f64) -> impl Fn(f64) -> Verdict {
        move |rate| {
            if rate <= max {
                Verdict::Pass
            } else {
                Verdict::Saturated
            }
        }
    }

    #[test]
    fn a_saturated_run_ends_the_way_up_and_the_gap_below_it_is_bisected() {
        let (ran, best) = search(capacity(21_000.0));
        assert_eq!(
            ran,
            [1e3, 2e3, 4e3, 8e3, 16e3, 32e3, 24e3, 20e3, 22e3, 21e3]
        );
        assert_eq!(best, Some(21_000.0));
    }

    #[test]
    fn a_slow_run_at_a_low_rate_does_not_hide_the_higher_rates_that_pass() {
        // The VM's low-load tail: 1,000 req/s over the bar, 2,000 up to
        // 20,000 under it.
        let (ran, best) = search(|rate| match rate {
            r if r <= 1_000.0 => Verdict::Slow,
            r if r <= 20_000.0 => Verdict::Pass,
            _ => Verdict::Slow,
        });
        assert_eq!(
            ran,
            [1e3, 2e3, 4e3, 8e3, 16e3, 32e3, 64e3, 24e3, 20e3, 22e3, 21e3]
        );
        assert_eq!(best, Some(20_000.0), "bisected against 32,000, not 1,000");
    }

    #[test]
    fn slow_runs_before_any_pass_do_not_end_the_way_up() {
        // A host that wakes threads slowly: 1,000 and 2,000 req/s over the
        // bar, 4,000 to 16,000 under it, saturated above.
        let (ran, best) = search(|rate| match rate {
            r if r <= 2_000.0 => Verdict::Slow,
            r if r <= 16_000.0 => Verdict::Pass,
            _ => Verdict::Saturated,
        });
        assert_eq!(ran[..6], [1e3, 2e3, 4e3, 8e3, 16e3, 32e3]);
        assert_eq!(ran[6..], [24e3, 20e3, 18e3, 17e3]);
        assert_eq!(
            best,
            Some(16_000.0),
            "not 0: the slow low rates say nothing of the limit"
        );
    }

    #[test]
    fn two_slow_runs_in_a_row_end_the_way_up() {
        let (ran, best) = search(|rate| {
            if rate <= 4_000.0 {
                Verdict::Pass
            } else {
                Verdict::Slow
            }
        });
        assert_eq!(ran[..5], [1e3, 2e3, 4e3, 8e3, 16e3]);
        assert_eq!(ran[5..], [6e3, 5e3, 4.5e3, 4.25e3]);
        assert_eq!(best, Some(4_000.0));
    }

    #[test]
    fn when_nothing_passes_on_the_way_up_the_rate_is_halved_until_one_does() {
        let (ran, best) = search(capacity(300.0));
        assert_eq!(ran[..4], [1e3, 500.0, 250.0, 375.0]);
        assert_eq!(best, Some(298.0), "bisected between 250 and 500");
        let (ran, best) = search(|_| Verdict::Saturated);
        assert_eq!(ran.last(), Some(&MIN_RATE));
        assert_eq!(best, None);
    }

    #[test]
    fn a_mesh_that_passes_everything_stops_at_the_highest_rate() {
        let (ran, best) = search(|_| Verdict::Pass);
        assert_eq!(ran.last(), Some(&HIGHEST_RATE));
        assert_eq!(best, Some(HIGHEST_RATE));
    }
}
