//! Observing the facts the privilege decisions rest on: who the process is
//! (effective uid and capabilities), its RLIMIT_MEMLOCK and RLIMIT_RTPRIO,
//! and whether the kernel throttles real-time threads. Procfs reads take a
//! root path so tests run against fixture trees; nothing here writes.

use std::path::Path;

use nix::sys::resource::{Resource, getrlimit};
use tracing::debug;

use super::PrivilegesError;

/// Capability bit numbers (linux/capability.h).
const CAP_IPC_LOCK: u32 = 14;
const CAP_SYS_NICE: u32 = 23;
const CAP_SYS_RESOURCE: u32 = 24;

/// The effective capabilities that decide what this process may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// CAP_IPC_LOCK: lock memory past RLIMIT_MEMLOCK.
    pub ipc_lock: bool,
    /// CAP_SYS_NICE: real-time policies at any priority.
    pub sys_nice: bool,
    /// CAP_SYS_RESOURCE: raise hard resource limits.
    pub sys_resource: bool,
}

impl Capabilities {
    /// Every capability this module asks about.
    pub const ALL: Self = Self {
        ipc_lock: true,
        sys_nice: true,
        sys_resource: true,
    };
    /// None of them.
    pub const NONE: Self = Self {
        ipc_lock: false,
        sys_nice: false,
        sys_resource: false,
    };

    /// Reads the `CapEff:` line of a `/proc/<pid>/status` text.
    pub fn parse_status(status: &str) -> Option<Self> {
        let hex = status
            .lines()
            .find_map(|line| line.strip_prefix("CapEff:"))?
            .trim();
        let mask = u64::from_str_radix(hex, 16).ok()?;
        let has = |bit: u32| mask & (1 << bit) != 0;
        Some(Self {
            ipc_lock: has(CAP_IPC_LOCK),
            sys_nice: has(CAP_SYS_NICE),
            sys_resource: has(CAP_SYS_RESOURCE),
        })
    }
}

/// Who this process is, for deciding what it may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credentials {
    /// The effective uid.
    pub euid: u32,
    /// The effective capabilities.
    pub caps: Capabilities,
}

impl Credentials {
    /// Probes the calling process, reading capabilities from
    /// `<proc_root>/self/status`. If that cannot be read, root is assumed
    /// to hold every capability and anyone else none: the apply steps
    /// still cope when the kernel says otherwise.
    pub fn detect(proc_root: &Path) -> Self {
        let euid = nix::unistd::geteuid().as_raw();
        let path = proc_root.join("self/status");
        let parsed = std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| Capabilities::parse_status(&text));
        let caps = parsed.unwrap_or_else(|| {
            debug!(path = %path.display(), euid, "capabilities unreadable, judging by uid");
            if euid == 0 {
                Capabilities::ALL
            } else {
                Capabilities::NONE
            }
        });
        Self { euid, caps }
    }

    /// Whether the effective uid is 0.
    pub fn is_root(&self) -> bool {
        self.euid == 0
    }
}

/// RLIMIT_MEMLOCK, bytes; [`UNLIMITED_BYTES`](super::UNLIMITED_BYTES)
/// means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemlockLimit {
    /// The soft limit: what is enforced.
    pub soft_bytes: u64,
    /// The hard limit: the ceiling for the soft one without
    /// CAP_SYS_RESOURCE.
    pub hard_bytes: u64,
}

impl MemlockLimit {
    /// Reads the calling process's limit.
    pub fn detect() -> Result<Self, PrivilegesError> {
        let (soft_bytes, hard_bytes) = getrlimit(Resource::RLIMIT_MEMLOCK)
            .map_err(|source| PrivilegesError::ReadMemlock { source })?;
        Ok(Self {
            soft_bytes,
            hard_bytes,
        })
    }
}

/// Whether the kernel throttles real-time threads (keeps back part of each
/// period for everything else).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtThrottling {
    /// Real-time threads get at most `runtime_us` of every `period_us`.
    Enabled {
        /// `sched_rt_runtime_us`.
        runtime_us: u64,
        /// `sched_rt_period_us`.
        period_us: u64,
    },
    /// Off: a busy real-time thread can hold its CPU forever.
    Disabled,
    /// The settings could not be read.
    Unknown,
}

impl RtThrottling {
    /// Classifies the two sysctl values. A runtime of -1 turns throttling
    /// off; so, in effect, does a runtime as long as the period.
    pub fn from_values(runtime_us: i64, period_us: u64) -> Self {
        match u64::try_from(runtime_us) {
            Ok(runtime_us) if runtime_us < period_us => RtThrottling::Enabled {
                runtime_us,
                period_us,
            },
            _ => RtThrottling::Disabled,
        }
    }

    /// Reads `<proc_root>/sys/kernel/sched_rt_{runtime,period}_us`; never
    /// writes them.
    pub fn detect(proc_root: &Path) -> Self {
        let dir = proc_root.join("sys/kernel");
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
        let runtime = read("sched_rt_runtime_us").and_then(|t| t.trim().parse::<i64>().ok());
        let period = read("sched_rt_period_us").and_then(|t| t.trim().parse::<u64>().ok());
        match (runtime, period) {
            (Some(runtime_us), Some(period_us)) => Self::from_values(runtime_us, period_us),
            _ => RtThrottling::Unknown,
        }
    }
}

/// What the process step observes before deciding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessFacts {
    /// Who the process is.
    pub creds: Credentials,
    /// RLIMIT_MEMLOCK before the step.
    pub memlock: MemlockLimit,
}

impl ProcessFacts {
    /// Probes the calling process.
    pub fn detect(proc_root: &Path) -> Result<Self, PrivilegesError> {
        Ok(Self {
            creds: Credentials::detect(proc_root),
            memlock: MemlockLimit::detect()?,
        })
    }
}

/// What the thread step observes before deciding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadFacts {
    /// Who the process is.
    pub creds: Credentials,
    /// RLIMIT_RTPRIO (soft): the highest real-time priority allowed
    /// without CAP_SYS_NICE.
    pub rtprio_limit: u64,
    /// The kernel's RT throttling.
    pub rt_throttling: RtThrottling,
}

impl ThreadFacts {
    /// Probes the calling thread's process.
    pub fn detect(proc_root: &Path) -> Self {
        let rtprio_limit = getrlimit(Resource::RLIMIT_RTPRIO).map_or(0, |(soft, _)| soft);
        Self {
            creds: Credentials::detect(proc_root),
            rtprio_limit,
            rt_throttling: RtThrottling::detect(proc_root),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THROTTLED: RtThrottling = RtThrottling::Enabled {
        runtime_us: 950_000,
        period_us: 1_000_000,
    };

    fn proc_tree(runtime: &str, period: &str) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("sys/kernel");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("sched_rt_runtime_us"), runtime).unwrap();
        std::fs::write(dir.join("sched_rt_period_us"), period).unwrap();
        root
    }

    #[test]
    fn capabilities_come_from_the_capeff_line() {
        // A container's root: everything but CAP_SYS_RESOURCE (bit 24).
        let status = "Name:\tpinwheel\nCapPrm:\t000001ffffffffff\nCapEff:\t000001fffeffffff\n";
        let sut = Capabilities::parse_status(status).unwrap();
        let expected = Capabilities {
            sys_resource: false,
            ..Capabilities::ALL
        };
        assert_eq!(sut, expected);
        let none = Capabilities::parse_status("CapEff:\t0000000000000000\n").unwrap();
        assert_eq!(none, Capabilities::NONE);
    }

    #[test]
    fn a_status_without_capeff_parses_to_nothing() {
        assert_eq!(Capabilities::parse_status("Name:\tx\n"), None);
        assert_eq!(Capabilities::parse_status("CapEff:\tzz\n"), None);
    }

    #[test]
    fn unreadable_capabilities_are_judged_by_uid() {
        let empty = tempfile::tempdir().unwrap();
        let sut = Credentials::detect(empty.path());
        let expected = if sut.is_root() {
            Capabilities::ALL
        } else {
            Capabilities::NONE
        };
        assert_eq!(sut.caps, expected);
    }

    #[test]
    fn rt_throttling_is_off_at_minus_one_or_a_full_period() {
        assert_eq!(
            RtThrottling::from_values(950_000, 1_000_000),
            RtThrottling::Enabled {
                runtime_us: 950_000,
                period_us: 1_000_000
            }
        );
        assert_eq!(
            RtThrottling::from_values(-1, 1_000_000),
            RtThrottling::Disabled
        );
        assert_eq!(
            RtThrottling::from_values(1_000_000, 1_000_000),
            RtThrottling::Disabled
        );
    }

    #[test]
    fn rt_throttling_is_read_from_a_proc_tree() {
        let off = proc_tree("-1\n", "1000000\n");
        assert_eq!(RtThrottling::detect(off.path()), RtThrottling::Disabled);
        let on = proc_tree("950000\n", "1000000\n");
        assert_eq!(RtThrottling::detect(on.path()), THROTTLED);
        let garbled = proc_tree("lots\n", "1000000\n");
        assert_eq!(RtThrottling::detect(garbled.path()), RtThrottling::Unknown);
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(RtThrottling::detect(empty.path()), RtThrottling::Unknown);
    }
}
