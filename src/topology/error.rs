//! Errors of the `topology` module: detection (sysfs and procfs reads) and
//! topology file validation. Each validation variant carries the location
//! of the value to change.

use std::fmt;
use std::path::PathBuf;

use super::{CpuId, CpuSet, Role};
use crate::config::{ConfigError, Location};

/// How the live host differs from the host a topology file describes.
#[derive(Debug)]
pub struct HostMismatch {
    /// The topology file.
    pub path: PathBuf,
    /// The host it describes.
    pub host: String,
    /// The file's CPUs by class.
    pub file_cpus: String,
    /// The live host's CPUs by class.
    pub live_cpus: String,
    /// File CPUs not online and usable here.
    pub missing: CpuSet,
    /// File CPUs whose class differs here.
    pub mismatched: CpuSet,
}

impl fmt::Display for HostMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} describes host {} with CPUs {}, but this host has {}",
            self.path.display(),
            self.host,
            self.file_cpus,
            self.live_cpus
        )?;
        if !self.missing.is_empty() {
            write!(f, "; CPUs {} are not online and usable here", self.missing)?;
        }
        if !self.mismatched.is_empty() {
            write!(f, "; CPUs {} have another class here", self.mismatched)?;
        }
        f.write_str("; use topology/auto.toml, or write this host's file with `pinwheel topo detect > topology/<host>.toml`")
    }
}

/// Errors from detecting CPUs and validating topology files.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// The topology file could not be read or parsed.
    #[error(transparent)]
    File(ConfigError),
    /// A sysfs or procfs file that must exist could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A sysfs or procfs file held something unexpected.
    #[error("{path}: unexpected contents {contents:?}: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What it held (trimmed).
        contents: String,
        /// What was wrong.
        reason: String,
    },
    /// `sched_getaffinity` failed for this process.
    #[error(
        "cannot read this process's CPU affinity mask (sched_getaffinity): {source}; pinwheel reads masks of at most 1024 CPUs"
    )]
    Affinity {
        /// The errno, as an I/O error.
        source: std::io::Error,
    },
    /// Detection found no online CPU this process may use.
    #[error(
        "no usable online CPU under {root} (online: {online}; excluded by affinity or cgroup: {excluded})"
    )]
    NoCpus {
        /// The sysfs root.
        root: PathBuf,
        /// Online CPUs found.
        online: CpuSet,
        /// Online CPUs excluded by affinity or cgroup.
        excluded: CpuSet,
    },
    /// The file's schema version is not one this pinwheel reads.
    #[error(
        "{at}: topology schema {found} is not supported; this pinwheel reads schema 1 (set `schema = 1`)"
    )]
    Schema {
        /// The `schema` value.
        at: Location,
        /// What the file says.
        found: i64,
    },
    /// A value in the file is out of range or inconsistent.
    #[error("{at}: {message}")]
    Invalid {
        /// The value.
        at: Location,
        /// What is wrong and what to write instead.
        message: String,
    },
    /// A CPU the file uses that its host does not have.
    #[error(
        "{at}: CPU {cpu} is not a CPU of host {host} (its CPUs: {host_cpus}); use one of those or add it under [host.cpus]"
    )]
    CpuNotOnHost {
        /// Where the CPU is named.
        at: Location,
        /// The CPU.
        cpu: CpuId,
        /// The file's host.
        host: String,
        /// The host's CPUs by class.
        host_cpus: String,
    },
    /// One CPU claimed by two roles, or listed under two classes.
    #[error(
        "{at}: CPU {cpu} is claimed by both {first} and {second}; a CPU has one role, so remove it from one of them"
    )]
    RoleOverlap {
        /// Where the second claim is.
        at: Location,
        /// The CPU.
        cpu: CpuId,
        /// The first claimant.
        first: String,
        /// The second claimant.
        second: String,
    },
    /// A role selector that cannot be satisfied.
    #[error(
        "{at}: role {role} wants {wanted} {class} CPU(s) but only {available} are left ({left}); lower `count` or free CPUs from other roles"
    )]
    RoleShort {
        /// The selector.
        at: Location,
        /// The role.
        role: Role,
        /// The class asked for.
        class: String,
        /// How many were asked for.
        wanted: usize,
        /// How many were unclaimed.
        available: usize,
        /// The unclaimed CPUs.
        left: CpuSet,
    },
    /// A GPU entry without a VRAM size.
    #[error(
        "{at}: GPU {gpu} ({name}) has no VRAM; set `vram_mib` to its memory in MiB (e.g. 24564 for a 24 GiB card)"
    )]
    GpuWithoutVram {
        /// The GPU entry.
        at: Location,
        /// Its position in the `[[gpu]]` list.
        gpu: usize,
        /// Its name.
        name: String,
    },
    /// Pinned models that do not fit their GPU's budget.
    #[error(
        "{at}: pins on GPU {gpu} add up to {pinned_mib} MiB, over its VRAM budget of {budget_mib} MiB; unpin a model, move it to another GPU, or raise budget_fraction"
    )]
    PinOverCommit {
        /// The pin that overflows.
        at: Location,
        /// The GPU.
        gpu: u32,
        /// MiB pinned on it, this pin included.
        pinned_mib: u64,
        /// Its budget.
        budget_mib: u64,
    },
    /// The live host is not the host the file describes.
    #[error("{0}")]
    HostMismatch(Box<HostMismatch>),
}

impl TopologyError {
    /// The place in a file this error points at, if any.
    pub fn location(&self) -> Option<&Location> {
        match self {
            TopologyError::File(err) => err.location(),
            TopologyError::Schema { at, .. }
            | TopologyError::Invalid { at, .. }
            | TopologyError::CpuNotOnHost { at, .. }
            | TopologyError::RoleOverlap { at, .. }
            | TopologyError::RoleShort { at, .. }
            | TopologyError::GpuWithoutVram { at, .. }
            | TopologyError::PinOverCommit { at, .. } => Some(at),
            TopologyError::Read { .. }
            | TopologyError::Malformed { .. }
            | TopologyError::Affinity { .. }
            | TopologyError::NoCpus { .. }
            | TopologyError::HostMismatch(_) => None,
        }
    }
}
