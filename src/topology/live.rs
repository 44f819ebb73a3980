//! Limits of the live host: affinity mask and cgroup cpuset (placeholder).

use super::{CpuSet, TopologyError};

/// The CPUs this process may run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveLimits {
    /// `sched_getaffinity(0)`.
    pub affinity: CpuSet,
    /// The cgroup's effective cpuset, if one applies.
    pub cgroup: Option<CpuSet>,
}

/// Reads the live process's limits.
pub fn live_limits() -> Result<LiveLimits, TopologyError> {
    todo!("live limits")
}
