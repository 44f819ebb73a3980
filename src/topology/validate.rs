//! Topology file validation (placeholder).

use std::path::Path;

use super::{ClassSettings, CpuClass, HostCpus, TaskQueue, Topology, TopologyError, WaitStrategy};
use crate::config::topology_file::TopologyFile;
use crate::config::SourceFile;

/// Defaults.
pub(super) fn default_settings(class: CpuClass) -> ClassSettings {
    let _ = class;
    ClassSettings { wait: WaitStrategy::Adaptive, spin_before_park_us: 50, preempt_timer_us: 500, task_queue: TaskQueue::Latency, rt_priority: 10 }
}

/// Validate.
pub fn validate(raw: TopologyFile, file: &SourceFile, host: Option<&HostCpus>) -> Result<Topology, TopologyError> {
    let _ = (raw, file, host);
    todo!()
}

/// Load.
pub fn load(path: &Path, host: Option<&HostCpus>) -> Result<Topology, TopologyError> {
    let _ = (path, host);
    todo!()
}
