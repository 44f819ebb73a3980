//! Privileges: locked memory for the process, SCHED_FIFO and timer slack for
//! data-plane executor threads, and what the daemon does when it may not
//! have them.
//!
//! Two steps, each split into a pure decision and a thin apply:
//!
//! * [`prepare_process`], once at boot before any executor starts. It
//!   raises RLIMIT_MEMLOCK (the soft limit to the hard one; both to
//!   infinity with CAP_SYS_RESOURCE), then calls
//!   `mlockall(MCL_CURRENT | MCL_FUTURE)` when nothing can make a later
//!   allocation fail because of it: with CAP_IPC_LOCK, or an unlimited
//!   RLIMIT_MEMLOCK. Under a finite limit without CAP_IPC_LOCK,
//!   `MCL_FUTURE` would turn every allocation past the limit into `ENOMEM`,
//!   so memory stays unlocked and the step says so. glommio needs at least
//!   [`GLOMMIO_MIN_MEMLOCK_BYTES`] of lockable memory (more when the caller
//!   asks): a limit below that which cannot be raised is the one error
//!   here, [`PrivilegesError::MemlockTooLow`], and it says how to fix it.
//! * [`prepare_thread`], called by each data-plane executor thread on
//!   itself. It sets timer slack to 1 ns on latency threads
//!   (`PR_SET_TIMERSLACK`) and SCHED_FIFO at the topology's priority, with
//!   `SCHED_RESET_ON_FORK` so helper threads spawned later do not inherit a
//!   real-time policy.
//!
//! Safety rules, which the runtime enforces even though the topology
//! validator already rejects the bad combinations in files:
//!
//! * A `spin` wait never runs under SCHED_FIFO: a real-time thread that
//!   never blocks starves every SCHED_OTHER thread on its core, and on a
//!   2-CPU host that is half the machine. The thread stays SCHED_OTHER.
//! * RT throttling is never touched (`/proc/sys/kernel/sched_rt_runtime_us`
//!   is only read). When it is off (`-1`, or a runtime that fills the whole
//!   period) nothing stops a busy real-time thread, so only `park` threads,
//!   which give the CPU back whenever they are idle, get SCHED_FIFO;
//!   `adaptive` threads spin before they park and stay SCHED_OTHER. When the
//!   setting cannot be read it is treated as off.
//!
//! Missing privilege is never an error: each kind of failure is logged once
//! per process (not once per executor), recorded as a [`DegradedReason`]
//! that health reporting shows, and the daemon runs without it. Permission
//! is judged from the effective capabilities in `/proc/self/status`, not
//! from the uid alone: root in a container often lacks CAP_SYS_RESOURCE or
//! CAP_SYS_NICE, and a service may hold CAP_IPC_LOCK without being root.
//! Whatever the decision, the apply step reports what the kernel actually
//! has afterwards.
//!
//! Files: `facts.rs` observes (credentials, capabilities, limits, RT
//! throttling; procfs reads take a root path), `decide.rs` holds the pure
//! decisions, `apply.rs` carries them out and logs. None of them pins
//! threads (`affinity.rs` does, and owns the unsafe scheduler calls) or
//! touches a system-wide setting.

mod apply;
mod decide;
mod facts;

use std::fmt;

use nix::errno::Errno;
use nix::sys::resource::RLIM_INFINITY;

pub use apply::{ProcessPrivileges, ThreadPrivileges, prepare_process, prepare_thread};
pub use decide::{
    ProcessPlan, ThreadPlan, ThreadPolicy, check_memlock, decide_process, decide_thread,
    memlock_target, mlock_allowed,
};
pub use facts::{Capabilities, Credentials, MemlockLimit, ProcessFacts, RtThrottling, ThreadFacts};

/// The least lockable memory glommio can start an executor with, bytes.
pub const GLOMMIO_MIN_MEMLOCK_BYTES: u64 = 512 * 1024;
/// An RLIMIT_MEMLOCK value meaning "no limit" (`RLIM_INFINITY`).
pub const UNLIMITED_BYTES: u64 = RLIM_INFINITY;
/// Timer slack for latency threads, nanoseconds. 0 would mean "the
/// process default" to `PR_SET_TIMERSLACK`, so 1 is the least there is.
pub const LATENCY_TIMER_SLACK_NS: u64 = 1;

/// Errors of the privileges step. Missing privilege is not one of them.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegesError {
    /// Less lockable memory than glommio needs, and no way to raise it.
    #[error(
        "RLIMIT_MEMLOCK allows at most {soft_bytes} bytes of locked memory (hard limit \
         {hard_bytes}) and this process cannot raise it, but glommio needs {needed_bytes} bytes; \
         set LimitMEMLOCK=infinity in the systemd unit, run `ulimit -l unlimited` before \
         starting pinwheel, or grant CAP_IPC_LOCK"
    )]
    MemlockTooLow {
        /// The highest soft limit reachable, bytes.
        soft_bytes: u64,
        /// The hard limit in effect, bytes.
        hard_bytes: u64,
        /// What glommio needs, bytes.
        needed_bytes: u64,
    },
    /// `getrlimit(RLIMIT_MEMLOCK)` failed.
    #[error("cannot read RLIMIT_MEMLOCK: {source}")]
    ReadMemlock {
        /// The error from the kernel.
        source: Errno,
    },
}

/// Why the daemon runs with less than it asked for; health reporting shows
/// these as `degraded` reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DegradedReason {
    /// The effective uid is not 0.
    NotRoot,
    /// Memory is not locked: page faults can stall the data plane.
    NoMlock,
    /// SCHED_FIFO was wanted but is not permitted or failed.
    NoRtPriority,
    /// SCHED_FIFO was refused because the thread's wait is `spin`.
    SpinUnderFifo,
    /// SCHED_FIFO was refused for a spinning wait: RT throttling is off.
    RtThrottlingDisabled,
    /// SCHED_FIFO was refused for a spinning wait: the RT throttling
    /// setting could not be read.
    RtThrottlingUnknown,
    /// Timer slack could not be set to 1 ns.
    NoTimerSlack,
    /// The thread inherited a real-time policy and could not leave it.
    InheritedRtPolicy,
}

impl DegradedReason {
    /// The snake_case name health reporting uses.
    pub fn as_str(self) -> &'static str {
        match self {
            DegradedReason::NotRoot => "not_root",
            DegradedReason::NoMlock => "no_mlock",
            DegradedReason::NoRtPriority => "no_rt_priority",
            DegradedReason::SpinUnderFifo => "spin_under_fifo",
            DegradedReason::RtThrottlingDisabled => "rt_throttling_disabled",
            DegradedReason::RtThrottlingUnknown => "rt_throttling_unknown",
            DegradedReason::NoTimerSlack => "no_timer_slack",
            DegradedReason::InheritedRtPolicy => "inherited_rt_policy",
        }
    }
}

impl DegradedReason {
    /// What it costs, for the health report.
    pub fn describe(self) -> &'static str {
        match self {
            DegradedReason::NotRoot => {
                "not root: no SCHED_FIFO, no locked memory, no tuning; run as root or with CAP_SYS_NICE and CAP_IPC_LOCK"
            }
            DegradedReason::NoMlock => {
                "memory not locked: page faults can stall the data plane; raise RLIMIT_MEMLOCK (LimitMEMLOCK=infinity)"
            }
            DegradedReason::NoRtPriority => {
                "SCHED_FIFO not granted: data-plane threads share their CPUs with everything else"
            }
            DegradedReason::SpinUnderFifo => {
                "SCHED_FIFO refused for a spinning wait (it could starve the host); use wait = \"adaptive\""
            }
            DegradedReason::RtThrottlingDisabled => {
                "SCHED_FIFO refused for a spinning wait: RT throttling is off (kernel.sched_rt_runtime_us = -1)"
            }
            DegradedReason::RtThrottlingUnknown => {
                "SCHED_FIFO refused for a spinning wait: RT throttling could not be read"
            }
            DegradedReason::NoTimerSlack => "timer slack not set to 1 ns: timers may fire late",
            DegradedReason::InheritedRtPolicy => {
                "the thread inherited a real-time policy and could not leave it"
            }
        }
    }
}

impl fmt::Display for DegradedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degraded_reasons_have_stable_snake_case_names() {
        assert_eq!(DegradedReason::NotRoot.to_string(), "not_root");
        assert_eq!(DegradedReason::NoMlock.as_str(), "no_mlock");
        assert_eq!(DegradedReason::SpinUnderFifo.as_str(), "spin_under_fifo");
    }
}
