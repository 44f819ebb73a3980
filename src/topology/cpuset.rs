//! Sets of CPU ids in the kernel's list syntax (`0-3,8,10-11`) and mask
//! syntax (`ff,00000001`).
//!
//! A `CpuSet` is kept sorted and free of duplicates, so equality, display and
//! iteration are deterministic. Sets are small (at most the host's CPU count)
//! and built at boot, so a sorted `Vec` beats a bitmap for clarity.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// A CPU as the kernel numbers it (`/sys/devices/system/cpu/cpuN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct CpuId(pub u32);

impl fmt::Display for CpuId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The largest CPU id pinwheel accepts (the kernel's `NR_CPUS` ceiling).
pub const MAX_CPU_ID: u32 = 8191;

/// Why a CPU list or mask did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CpuSetError {
    /// A part of the list is not a number or a range.
    #[error("`{part}` is not a CPU number or range (write lists like \"0-3,8\")")]
    BadPart {
        /// The offending part of the list.
        part: String,
    },
    /// A range whose end is below its start.
    #[error("range `{part}` ends before it starts")]
    Backwards {
        /// The offending range.
        part: String,
    },
    /// A CPU id above [`MAX_CPU_ID`].
    #[error("CPU {cpu} is above the largest CPU id {MAX_CPU_ID}")]
    TooLarge {
        /// The offending id.
        cpu: u64,
    },
    /// A hex mask word that is not hex.
    #[error("`{word}` is not a hexadecimal CPU mask word")]
    BadMask {
        /// The offending word.
        word: String,
    },
}

/// A sorted, duplicate-free set of CPUs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct CpuSet(Vec<CpuId>);

impl CpuSet {
    /// The empty set.
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// Parses the kernel's list syntax: `0-3,8,10-11`. Whitespace around
    /// parts is ignored and an empty string is the empty set (the kernel
    /// writes `offline` that way).
    pub fn parse_list(text: &str) -> Result<Self, CpuSetError> {
        let mut cpus = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = || CpuSetError::BadPart {
                part: part.to_owned(),
            };
            let (low, high) = match part.split_once('-') {
                Some((low, high)) => (low.trim(), high.trim()),
                None => (part, part),
            };
            let low: u64 = low.parse().map_err(|_| bad())?;
            let high: u64 = high.parse().map_err(|_| bad())?;
            if high < low {
                return Err(CpuSetError::Backwards {
                    part: part.to_owned(),
                });
            }
            if high > u64::from(MAX_CPU_ID) {
                return Err(CpuSetError::TooLarge { cpu: high });
            }
            cpus.extend((low..=high).map(|cpu| CpuId(cpu as u32)));
        }
        Ok(cpus.into_iter().collect())
    }

    /// Parses the kernel's mask syntax: comma-separated 32-bit hex words,
    /// most significant first (`shared_cpu_map`, `thread_siblings`).
    pub fn parse_mask(text: &str) -> Result<Self, CpuSetError> {
        let words: Vec<&str> = text.trim().split(',').collect();
        let mut cpus = Vec::new();
        for (index, word) in words.iter().rev().enumerate() {
            let bits = u32::from_str_radix(word.trim(), 16).map_err(|_| CpuSetError::BadMask {
                word: (*word).to_owned(),
            })?;
            for bit in 0..32 {
                if bits & (1 << bit) != 0 {
                    let cpu = index as u64 * 32 + bit;
                    if cpu > u64::from(MAX_CPU_ID) {
                        return Err(CpuSetError::TooLarge { cpu });
                    }
                    cpus.push(CpuId(cpu as u32));
                }
            }
        }
        Ok(cpus.into_iter().collect())
    }

    /// Whether `cpu` is in the set.
    pub fn contains(&self, cpu: CpuId) -> bool {
        self.0.binary_search(&cpu).is_ok()
    }

    /// Adds `cpu`, keeping the set sorted.
    pub fn insert(&mut self, cpu: CpuId) {
        if let Err(at) = self.0.binary_search(&cpu) {
            self.0.insert(at, cpu);
        }
    }

    /// Number of CPUs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The CPUs in ascending order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = CpuId> + '_ {
        self.0.iter().copied()
    }

    /// The lowest CPU.
    pub fn first(&self) -> Option<CpuId> {
        self.0.first().copied()
    }

    /// CPUs in both sets.
    pub fn intersection(&self, other: &CpuSet) -> CpuSet {
        self.iter().filter(|cpu| other.contains(*cpu)).collect()
    }

    /// CPUs in `self` but not in `other`.
    pub fn difference(&self, other: &CpuSet) -> CpuSet {
        self.iter().filter(|cpu| !other.contains(*cpu)).collect()
    }

    /// CPUs in either set.
    pub fn union(&self, other: &CpuSet) -> CpuSet {
        self.iter().chain(other.iter()).collect()
    }
}

impl FromIterator<CpuId> for CpuSet {
    fn from_iter<I: IntoIterator<Item = CpuId>>(iter: I) -> Self {
        let mut cpus: Vec<CpuId> = iter.into_iter().collect();
        cpus.sort_unstable();
        cpus.dedup();
        Self(cpus)
    }
}

impl FromStr for CpuSet {
    type Err = CpuSetError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse_list(text)
    }
}

/// Writes the compact list syntax: `0-3,8,10-11`.
impl fmt::Display for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut i = 0;
        while i < self.0.len() {
            let start = self.0[i].0;
            let mut end = start;
            while i + 1 < self.0.len() && self.0[i + 1].0 == end + 1 {
                end += 1;
                i += 1;
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
            i += 1;
        }
        Ok(())
    }
}

/// Serializes as an array of CPU numbers (`[0, 1]`), the form JSON readers
/// expect.
impl Serialize for CpuSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(cpus: &[u32]) -> CpuSet {
        cpus.iter().map(|&c| CpuId(c)).collect()
    }

    #[test]
    fn parse_list_reads_ranges_singles_and_spaces() {
        let sut = CpuSet::parse_list(" 0-3, 8,10-11\n").unwrap();
        assert_eq!(sut, set(&[0, 1, 2, 3, 8, 10, 11]));
    }

    #[test]
    fn parse_list_of_empty_text_is_empty() {
        assert!(CpuSet::parse_list("\n").unwrap().is_empty());
    }

    #[test]
    fn parse_list_rejects_garbage_and_backwards_ranges() {
        assert!(matches!(
            CpuSet::parse_list("0-x"),
            Err(CpuSetError::BadPart { .. })
        ));
        assert!(matches!(
            CpuSet::parse_list("5-2"),
            Err(CpuSetError::Backwards { .. })
        ));
        assert!(matches!(
            CpuSet::parse_list("0-99999"),
            Err(CpuSetError::TooLarge { .. })
        ));
    }

    #[test]
    fn parse_mask_reads_words_most_significant_first() {
        let sut = CpuSet::parse_mask("00000001,80000003\n").unwrap();
        assert_eq!(sut, set(&[0, 1, 31, 32]));
    }

    #[test]
    fn display_compacts_runs() {
        assert_eq!(set(&[0, 1, 2, 3, 8, 10, 11]).to_string(), "0-3,8,10-11");
        assert_eq!(set(&[]).to_string(), "");
    }

    #[test]
    fn display_round_trips_through_parse() {
        let sut = set(&[0, 2, 3, 4, 9, 63, 64]);
        assert_eq!(CpuSet::parse_list(&sut.to_string()).unwrap(), sut);
    }

    #[test]
    fn set_operations_keep_order() {
        let a = set(&[0, 1, 2, 5]);
        let b = set(&[1, 5, 7]);
        assert_eq!(a.intersection(&b), set(&[1, 5]));
        assert_eq!(a.difference(&b), set(&[0, 2]));
        assert_eq!(a.union(&b), set(&[0, 1, 2, 5, 7]));
    }
}
