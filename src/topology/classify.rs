//! The P/E classification ladder.
//!
//! Detection reads, for every online CPU, the values the kernel offers to
//! tell performance cores from efficiency cores; this module decides the
//! classes from those values alone. It does no I/O, so every rung is unit
//! tested without files (the sysfs side lives in `detect.rs`).
//!
//! The rungs, tried in order; the FIRST one that separates the online CPUs
//! decides, and the rest are not consulted:
//!
//! 1. Intel hybrid PMU lists (`devices/cpu_core/cpus` = P,
//!    `devices/cpu_atom/cpus` = E). They apply only when both lists exist,
//!    both hold at least one online CPU, and every online CPU is in exactly
//!    one of them. Offline CPUs in the lists are ignored. When at least one
//!    list exists but the rule fails, a warning says so and the ladder goes
//!    on; a host with neither list (every non-hybrid host) falls through
//!    silently.
//! 2. `cpuN/cpu_capacity` (ARM big.LITTLE, DynamIQ).
//! 3. `cpufreq/base_frequency` (intel_pstate on hybrid parts).
//! 4. `cpufreq/cpuinfo_max_freq`.
//! 5. Nothing separated the CPUs: all are [`CpuClass::Uniform`].
//!
//! Rungs 2 to 4 share one splitting rule, [`split_at_largest_gap`]:
//!
//! - The rung applies only if every online CPU has a value. A value of 0
//!   counts as missing (the kernel writes 0 where it does not know).
//! - Sort the distinct values and find the largest ratio between two
//!   consecutive ones. If that ratio is above 1.10, CPUs below the gap are
//!   E and CPUs above it are P; otherwise the rung does not separate.
//! - When two gaps have exactly the same largest ratio, the lowest gap wins,
//!   so the result never depends on iteration order.
//!
//! The 10% threshold keeps cores that differ only by binning or turbo
//! preference together: capacities 1024 and 998 of the same big cluster,
//! or favoured P-cores at 5.2 GHz next to P-cores at 5.0 GHz. A real class
//! boundary is far wider (E-cores near 3.9 GHz, LITTLE capacities near 400).
//! On a three-cluster ARM part (LITTLE, mid, big) the largest gap is the
//! LITTLE/mid one, so mid and big cores are both P.
//!
//! Ratios are compared by cross-multiplying in `u128`, never in floating
//! point, so equal inputs always give equal answers.

use tracing::warn;

use super::{ClassSource, CpuClass, CpuId, CpuSet};

/// Ratio threshold as a fraction: a gap separates when `high / low` is
/// above `GAP_NUMERATOR / GAP_DENOMINATOR` (1.10).
const GAP_NUMERATOR: u128 = 110;
/// See [`GAP_NUMERATOR`].
const GAP_DENOMINATOR: u128 = 100;

/// The per-CPU values rungs 2 to 4 look at; `None` when the file is absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct RungValues {
    /// `cpuN/cpu_capacity`.
    pub capacity: Option<u64>,
    /// `cpufreq/base_frequency`, kHz.
    pub base_khz: Option<u64>,
    /// `cpufreq/cpuinfo_max_freq`, kHz.
    pub max_khz: Option<u64>,
}

/// Picks one rung's value out of a CPU's [`RungValues`].
type RungPick = fn(&RungValues) -> Option<u64>;

/// The Intel hybrid PMU lists, as read; `None` when a file is absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct PmuLists {
    /// `devices/cpu_core/cpus`.
    pub core: Option<CpuSet>,
    /// `devices/cpu_atom/cpus`.
    pub atom: Option<CpuSet>,
}

/// The outcome of the ladder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Classification {
    /// The rung that decided.
    pub source: ClassSource,
    /// Performance CPUs (empty when uniform).
    pub p: CpuSet,
    /// Efficiency CPUs (empty when uniform).
    pub e: CpuSet,
}

impl Classification {
    /// Every CPU uniform.
    fn uniform() -> Self {
        Self {
            source: ClassSource::Uniform,
            p: CpuSet::new(),
            e: CpuSet::new(),
        }
    }

    /// The class of one CPU. CPUs in neither set are uniform; the ladder
    /// never produces that for an online CPU when it splits.
    pub fn class_of(&self, cpu: CpuId) -> CpuClass {
        if self.p.contains(cpu) {
            CpuClass::P
        } else if self.e.contains(cpu) {
            CpuClass::E
        } else {
            CpuClass::Uniform
        }
    }
}

/// Runs the ladder over the online CPUs. `values` holds one entry per
/// online CPU; a CPU missing from it has no values.
pub(super) fn classify(
    online: &CpuSet,
    pmu: &PmuLists,
    values: &[(CpuId, RungValues)],
) -> Classification {
    if let Some((p, e)) = split_by_pmu(online, pmu) {
        return Classification {
            source: ClassSource::HybridPmu,
            p,
            e,
        };
    }
    let rungs: [(ClassSource, RungPick); 3] = [
        (ClassSource::CpuCapacity, |v| v.capacity),
        (ClassSource::BaseFrequency, |v| v.base_khz),
        (ClassSource::CpuinfoMaxFreq, |v| v.max_khz),
    ];
    for (source, pick) in rungs {
        let column: Vec<(CpuId, Option<u64>)> = online
            .iter()
            .map(|cpu| {
                let value = values
                    .iter()
                    .find(|(c, _)| *c == cpu)
                    .and_then(|(_, v)| pick(v));
                (cpu, value)
            })
            .collect();
        if let Some((e, p)) = split_at_largest_gap(&column) {
            return Classification { source, p, e };
        }
    }
    Classification::uniform()
}

/// Rung 1: returns `(P, E)` when the PMU lists partition the online CPUs.
fn split_by_pmu(online: &CpuSet, pmu: &PmuLists) -> Option<(CpuSet, CpuSet)> {
    if pmu.core.is_none() && pmu.atom.is_none() {
        return None;
    }
    let core = pmu
        .core
        .as_ref()
        .map(|s| s.intersection(online))
        .unwrap_or_default();
    let atom = pmu
        .atom
        .as_ref()
        .map(|s| s.intersection(online))
        .unwrap_or_default();
    let both = core.intersection(&atom);
    let neither = online.difference(&core.union(&atom));
    if core.is_empty() || atom.is_empty() || !both.is_empty() || !neither.is_empty() {
        warn!(
            cpu_core = %core,
            cpu_atom = %atom,
            in_both = %both,
            in_neither = %neither,
            "hybrid pmu cpu lists do not partition the online cpus, ignoring them"
        );
        return None;
    }
    Some((core, atom))
}

/// The splitting rule of rungs 2 to 4 (see the module doc). Returns
/// `(E, P)`: the CPUs below and above the largest gap, or `None` when a
/// CPU has no value or no gap is above 10%.
pub(super) fn split_at_largest_gap(values: &[(CpuId, Option<u64>)]) -> Option<(CpuSet, CpuSet)> {
    let mut distinct = Vec::with_capacity(values.len());
    for (_, value) in values {
        match value {
            Some(v) if *v > 0 => distinct.push(*v),
            _ => return None,
        }
    }
    distinct.sort_unstable();
    distinct.dedup();
    // (low, high) of the widest gap so far.
    let mut widest: Option<(u64, u64)> = None;
    for pair in distinct.windows(2) {
        let (low, high) = (pair[0], pair[1]);
        let wider = match widest {
            None => true,
            // high/low > best_high/best_low, cross-multiplied.
            Some((best_low, best_high)) => {
                u128::from(high) * u128::from(best_low) > u128::from(best_high) * u128::from(low)
            }
        };
        if wider {
            widest = Some((low, high));
        }
    }
    let (low, high) = widest?;
    if u128::from(high) * GAP_DENOMINATOR <= u128::from(low) * GAP_NUMERATOR {
        return None;
    }
    let below = values
        .iter()
        .filter(|(_, v)| v.is_some_and(|v| v <= low))
        .map(|(cpu, _)| *cpu)
        .collect();
    let above = values
        .iter()
        .filter(|(_, v)| v.is_some_and(|v| v >= high))
        .map(|(cpu, _)| *cpu)
        .collect();
    Some((below, above))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(cpus: &[u32]) -> CpuSet {
        cpus.iter().map(|&c| CpuId(c)).collect()
    }

    fn column(values: &[Option<u64>]) -> Vec<(CpuId, Option<u64>)> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| (CpuId(i as u32), *v))
            .collect()
    }

    fn capacities(values: &[u64]) -> Vec<(CpuId, RungValues)> {
        values
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                (
                    CpuId(i as u32),
                    RungValues {
                        capacity: Some(v),
                        ..RungValues::default()
                    },
                )
            })
            .collect()
    }

    #[test]
    fn values_within_ten_percent_stay_together() {
        let sut = split_at_largest_gap(&column(&[
            Some(5_200_000),
            Some(5_000_000),
            Some(4_800_000),
        ]));
        assert_eq!(sut, None);
    }

    #[test]
    fn a_gap_of_exactly_ten_percent_does_not_separate() {
        let sut = split_at_largest_gap(&column(&[Some(1000), Some(1100)]));
        assert_eq!(sut, None);
    }

    #[test]
    fn a_gap_just_above_ten_percent_separates() {
        let sut = split_at_largest_gap(&column(&[Some(1000), Some(1101)]));
        assert_eq!(sut, Some((set(&[0]), set(&[1]))));
    }

    #[test]
    fn turbo_favoured_cores_stay_with_the_other_p_cores() {
        let sut = split_at_largest_gap(&column(&[
            Some(5_000_000),
            Some(5_200_000),
            Some(5_000_000),
            Some(3_900_000),
            Some(3_900_000),
        ]));
        assert_eq!(sut, Some((set(&[3, 4]), set(&[0, 1, 2]))));
    }

    #[test]
    fn big_little_capacities_that_differ_within_a_cluster_split_by_cluster() {
        let sut = split_at_largest_gap(&column(&[
            Some(414),
            Some(414),
            Some(405),
            Some(405),
            Some(1024),
            Some(1024),
            Some(998),
            Some(998),
        ]));
        assert_eq!(sut, Some((set(&[0, 1, 2, 3]), set(&[4, 5, 6, 7]))));
    }

    #[test]
    fn three_clusters_split_at_the_biggest_gap() {
        // LITTLE 380, mid 870, big 1024: 870/380 = 2.29 beats 1024/870 = 1.18.
        let sut = split_at_largest_gap(&column(&[
            Some(380),
            Some(380),
            Some(870),
            Some(870),
            Some(1024),
        ]));
        assert_eq!(sut, Some((set(&[0, 1]), set(&[2, 3, 4]))));
    }

    #[test]
    fn three_clusters_with_the_big_gap_on_top_split_there() {
        // 300, 320, 1024: only the top gap is wide.
        let sut = split_at_largest_gap(&column(&[Some(300), Some(320), Some(1024)]));
        assert_eq!(sut, Some((set(&[0, 1]), set(&[2]))));
    }

    #[test]
    fn equal_largest_gaps_split_at_the_lowest() {
        let sut = split_at_largest_gap(&column(&[Some(100), Some(200), Some(400)]));
        assert_eq!(sut, Some((set(&[0]), set(&[1, 2]))));
    }

    #[test]
    fn a_missing_value_skips_the_rung() {
        let sut = split_at_largest_gap(&column(&[Some(414), None, Some(1024)]));
        assert_eq!(sut, None);
    }

    #[test]
    fn a_zero_value_counts_as_missing() {
        let sut = split_at_largest_gap(&column(&[Some(0), Some(1024)]));
        assert_eq!(sut, None);
    }

    #[test]
    fn identical_values_do_not_separate() {
        assert_eq!(
            split_at_largest_gap(&column(&[Some(1024), Some(1024)])),
            None
        );
        assert_eq!(split_at_largest_gap(&column(&[])), None);
    }

    #[test]
    fn pmu_lists_that_partition_the_online_cpus_win() {
        let pmu = PmuLists {
            core: Some(set(&[0, 1])),
            atom: Some(set(&[2, 3])),
        };
        let sut = classify(
            &set(&[0, 1, 2, 3]),
            &pmu,
            &capacities(&[1024, 1024, 1024, 1024]),
        );
        assert_eq!(
            sut,
            Classification {
                source: ClassSource::HybridPmu,
                p: set(&[0, 1]),
                e: set(&[2, 3])
            }
        );
    }

    #[test]
    fn pmu_lists_may_name_offline_cpus() {
        let pmu = PmuLists {
            core: Some(set(&[0, 1, 8])),
            atom: Some(set(&[2, 3, 9])),
        };
        let sut = classify(&set(&[0, 1, 2, 3]), &pmu, &[]);
        assert_eq!(sut.source, ClassSource::HybridPmu);
        assert_eq!(sut.e, set(&[2, 3]));
    }

    #[test]
    fn pmu_lists_that_miss_an_online_cpu_fall_through_to_the_next_rung() {
        let pmu = PmuLists {
            core: Some(set(&[0, 1])),
            atom: Some(set(&[2])),
        };
        let sut = classify(
            &set(&[0, 1, 2, 3]),
            &pmu,
            &capacities(&[1024, 1024, 400, 400]),
        );
        assert_eq!(
            sut,
            Classification {
                source: ClassSource::CpuCapacity,
                p: set(&[0, 1]),
                e: set(&[2, 3])
            }
        );
    }

    #[test]
    fn pmu_lists_that_overlap_fall_through() {
        let pmu = PmuLists {
            core: Some(set(&[0, 1, 2])),
            atom: Some(set(&[2, 3])),
        };
        let sut = classify(&set(&[0, 1, 2, 3]), &pmu, &[]);
        assert_eq!(sut, Classification::uniform());
    }

    #[test]
    fn a_single_pmu_list_falls_through() {
        let pmu = PmuLists {
            core: Some(set(&[0, 1])),
            atom: None,
        };
        let sut = classify(&set(&[0, 1]), &pmu, &[]);
        assert_eq!(sut.source, ClassSource::Uniform);
    }

    #[test]
    fn base_frequency_decides_when_capacity_is_uniform() {
        let values: Vec<(CpuId, RungValues)> = [(1900, 5000), (1900, 5200), (1400, 3900)]
            .iter()
            .enumerate()
            .map(|(i, &(base, max))| {
                let v = RungValues {
                    capacity: Some(1024),
                    base_khz: Some(base),
                    max_khz: Some(max),
                };
                (CpuId(i as u32), v)
            })
            .collect();
        let sut = classify(&set(&[0, 1, 2]), &PmuLists::default(), &values);
        assert_eq!(
            sut,
            Classification {
                source: ClassSource::BaseFrequency,
                p: set(&[0, 1]),
                e: set(&[2])
            }
        );
    }

    #[test]
    fn max_frequency_decides_when_base_frequency_is_missing() {
        let values: Vec<(CpuId, RungValues)> = [5_200_000, 5_000_000, 3_900_000]
            .iter()
            .enumerate()
            .map(|(i, &max)| {
                (
                    CpuId(i as u32),
                    RungValues {
                        max_khz: Some(max),
                        ..RungValues::default()
                    },
                )
            })
            .collect();
        let sut = classify(&set(&[0, 1, 2]), &PmuLists::default(), &values);
        assert_eq!(sut.source, ClassSource::CpuinfoMaxFreq);
        assert_eq!(sut.class_of(CpuId(1)), CpuClass::P);
        assert_eq!(sut.class_of(CpuId(2)), CpuClass::E);
    }

    #[test]
    fn a_cpu_without_values_makes_every_value_rung_skip() {
        let mut values = capacities(&[1024, 400]);
        values.truncate(1);
        let sut = classify(&set(&[0, 1]), &PmuLists::default(), &values);
        assert_eq!(sut.source, ClassSource::Uniform);
        assert_eq!(sut.class_of(CpuId(0)), CpuClass::Uniform);
    }
}
