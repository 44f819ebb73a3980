//! CPU detection from a sysfs tree (placeholder until detection lands).

use std::path::Path;

use super::{HostCpus, LiveLimits, TopologyError};

/// Detects the online CPUs under `sysfs_root` (a directory standing for
/// `/sys`). With `limits`, CPUs outside the affinity mask or cgroup cpuset
/// are left out.
pub fn detect(sysfs_root: &Path, limits: Option<&LiveLimits>) -> Result<HostCpus, TopologyError> {
    let _ = (sysfs_root, limits);
    todo!("detection")
}
