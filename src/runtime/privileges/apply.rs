//! Carrying out the privilege decisions on the live process and thread,
//! reading back what the kernel has afterwards, and logging each kind of
//! shortfall once per process.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sys::mman::{MlockAllFlags, mlockall};
use nix::sys::prctl;
use nix::sys::resource::{Resource, setrlimit};
use tracing::{debug, info, warn};

use super::decide::{ThreadPolicy, check_memlock, decide_process, decide_thread, mlock_allowed};
use super::facts::{Capabilities, MemlockLimit, ProcessFacts, ThreadFacts};
use super::{DegradedReason, PrivilegesError};
use crate::runtime::affinity::{self, SchedPolicy};

/// Where procfs is mounted on a live host.
const PROC_ROOT: &str = "/proc";

/// What the process step achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessPrivileges {
    /// Whether the effective uid is 0.
    pub root: bool,
    /// RLIMIT_MEMLOCK after the step.
    pub memlock: MemlockLimit,
    /// Whether all current and future memory is locked.
    pub mlocked: bool,
    /// What is missing, for health reporting.
    pub degraded: Vec<DegradedReason>,
}

/// Raises RLIMIT_MEMLOCK and locks memory; run once at boot, before any
/// executor starts. Missing privilege is logged and recorded; the only
/// error is a memory limit glommio cannot start under.
pub fn prepare_process(memlock_needed_bytes: u64) -> Result<ProcessPrivileges, PrivilegesError> {
    let facts = ProcessFacts::detect(Path::new(PROC_ROOT))?;
    let plan = decide_process(&facts, memlock_needed_bytes)?;
    let mut degraded = Vec::new();
    let root = facts.creds.is_root();
    if !root {
        let caps = facts.creds.caps;
        if WARNINGS.first(DegradedReason::NotRoot) {
            warn!(
                euid = facts.creds.euid,
                ipc_lock = caps.ipc_lock,
                sys_nice = caps.sys_nice,
                sys_resource = caps.sys_resource,
                "not running as root, privileges limited to granted capabilities"
            );
        }
        degraded.push(DegradedReason::NotRoot);
    }
    if let Some(target) = plan.raise_memlock_to {
        raise_memlock(target, facts.memlock);
    }
    let memlock = MemlockLimit::detect()?;
    check_memlock(memlock, facts.creds.caps, plan.needed_bytes)?;
    let mlocked = lock_memory(facts.creds.caps, memlock);
    if !mlocked {
        degraded.push(DegradedReason::NoMlock);
    }
    info!(
        root,
        memlock_soft_bytes = memlock.soft_bytes,
        memlock_hard_bytes = memlock.hard_bytes,
        mlocked,
        "process privileges prepared"
    );
    Ok(ProcessPrivileges {
        root,
        memlock,
        mlocked,
        degraded,
    })
}

/// Sets RLIMIT_MEMLOCK to `target`; if that is refused (a uid-0 process
/// without CAP_SYS_RESOURCE whose capabilities could not be read), settles
/// for soft = hard.
fn raise_memlock(target: MemlockLimit, current: MemlockLimit) {
    let Err(err) = setrlimit(
        Resource::RLIMIT_MEMLOCK,
        target.soft_bytes,
        target.hard_bytes,
    ) else {
        return;
    };
    let fallback = current.hard_bytes;
    let retried = fallback != target.soft_bytes
        && fallback > current.soft_bytes
        && setrlimit(Resource::RLIMIT_MEMLOCK, fallback, fallback).is_ok();
    warn!(
        error = %err,
        target_soft_bytes = target.soft_bytes,
        soft_raised_to_hard = retried,
        "cannot raise rlimit_memlock as planned"
    );
}

/// Calls `mlockall` when it is safe; reports whether memory is locked.
fn lock_memory(caps: Capabilities, memlock: MemlockLimit) -> bool {
    if !mlock_allowed(caps, memlock) {
        if WARNINGS.first(DegradedReason::NoMlock) {
            warn!(
                memlock_soft_bytes = memlock.soft_bytes,
                ipc_lock = caps.ipc_lock,
                fix = "LimitMEMLOCK=infinity or CAP_IPC_LOCK",
                "memory not locked, page faults can stall the data plane"
            );
        }
        return false;
    }
    match mlockall(MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE) {
        Ok(()) => true,
        Err(err) => {
            if WARNINGS.first(DegradedReason::NoMlock) {
                warn!(error = %err, "mlockall failed, memory not locked");
            }
            false
        }
    }
}

/// What the thread step achieved, as read back from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadPrivileges {
    /// The thread's policy afterwards.
    pub policy: SchedPolicy,
    /// The thread's timer slack afterwards, nanoseconds; `None` if it could
    /// not be read. Kernels from 6.11 report 0 for real-time threads.
    pub timer_slack_ns: Option<u64>,
    /// What is missing, for health reporting.
    pub degraded: Vec<DegradedReason>,
}

/// Applies `policy` to the calling thread: timer slack, then SCHED_FIFO.
/// Never fails; what could not be done is logged once per kind for the
/// whole process and recorded.
pub fn prepare_thread(policy: ThreadPolicy) -> ThreadPrivileges {
    let facts = ThreadFacts::detect(Path::new(PROC_ROOT));
    let plan = decide_thread(policy, &facts);
    let mut degraded = Vec::new();
    if let Some(reason) = plan.refusal {
        warn_refusal(reason, policy, &facts);
        degraded.push(reason);
    }
    let timer_slack_ns = apply_timer_slack(plan.timer_slack_ns, &mut degraded);
    let now = apply_policy(plan.policy, &mut degraded);
    debug!(
        ?now,
        timer_slack_ns,
        ?degraded,
        "thread privileges prepared"
    );
    ThreadPrivileges {
        policy: now,
        timer_slack_ns,
        degraded,
    }
}

fn warn_refusal(reason: DegradedReason, policy: ThreadPolicy, facts: &ThreadFacts) {
    if !WARNINGS.first(reason) {
        return;
    }
    let priority = policy.rt_priority;
    // decide_thread refuses with the three reasons named here or with
    // NoRtPriority, the last arm.
    match reason {
        DegradedReason::SpinUnderFifo => warn!(
            priority,
            wait = ?policy.wait,
            "spin wait under sched_fifo refused, executor stays sched_other"
        ),
        DegradedReason::RtThrottlingDisabled => warn!(
            priority,
            wait = ?policy.wait,
            "rt throttling is off, spinning executor stays sched_other"
        ),
        DegradedReason::RtThrottlingUnknown => warn!(
            priority,
            wait = ?policy.wait,
            "rt throttling unreadable, spinning executor stays sched_other"
        ),
        _ => warn!(
            priority,
            euid = facts.creds.euid,
            sys_nice = facts.creds.caps.sys_nice,
            rtprio_limit = facts.rtprio_limit,
            "sched_fifo not permitted, executor stays sched_other"
        ),
    }
}

/// Sets timer slack when asked; returns the value read back.
fn apply_timer_slack(wanted_ns: Option<u64>, degraded: &mut Vec<DegradedReason>) -> Option<u64> {
    let set = wanted_ns.map(prctl::set_timerslack);
    let now = prctl::get_timerslack()
        .ok()
        .and_then(|ns| u64::try_from(ns).ok());
    // Real-time threads read 0 on recent kernels: less slack than asked
    // for is the point.
    let short_enough = match (wanted_ns, now) {
        (None, _) => true,
        (Some(wanted), Some(now)) => now <= wanted,
        (Some(_), None) => false,
    };
    if !short_enough {
        if WARNINGS.first(DegradedReason::NoTimerSlack) {
            warn!(
                error = ?set.and_then(Result::err),
                wanted_ns,
                now_ns = now,
                "cannot set timer slack"
            );
        }
        degraded.push(DegradedReason::NoTimerSlack);
    }
    now
}

/// Puts the thread under `target`; returns the policy read back.
fn apply_policy(target: SchedPolicy, degraded: &mut Vec<DegradedReason>) -> SchedPolicy {
    let before = affinity::current_policy().unwrap_or(SchedPolicy::Other);
    let (result, expected) = match target {
        SchedPolicy::Fifo { priority } => (
            affinity::set_fifo(priority).map_err(|err| (DegradedReason::NoRtPriority, err)),
            target,
        ),
        // Leave an inherited real-time policy: the decision said this
        // thread must not run real-time.
        _ if before.is_real_time() => (
            affinity::set_other().map_err(|err| (DegradedReason::InheritedRtPolicy, err)),
            SchedPolicy::Other,
        ),
        _ => (Ok(()), before),
    };
    let expected = match result {
        Ok(()) => expected,
        Err((reason, err)) => {
            if WARNINGS.first(reason) {
                warn!(
                    error = %err,
                    ?target,
                    ?before,
                    "cannot set scheduling policy, executor keeps its current one"
                );
            }
            degraded.push(reason);
            before
        }
    };
    // The read cannot fail for the calling thread; if it did, what the
    // calls above reported is the best knowledge there is.
    affinity::current_policy().unwrap_or(expected)
}

/// One flag per [`DegradedReason`] (there are fewer than 32): whether its
/// warning was logged.
struct WarnOnce(AtomicU32);

impl WarnOnce {
    const fn new() -> Self {
        Self(AtomicU32::new(0))
    }

    /// True for the first caller per reason, false ever after.
    fn first(&self, reason: DegradedReason) -> bool {
        let bit = 1u32 << (reason as u32);
        // SYNC: Relaxed; the flag guards one log line and publishes no
        // other memory, and fetch_or alone guarantees one caller sees the
        // bit clear.
        self.0.fetch_or(bit, Ordering::Relaxed) & bit == 0
    }
}

/// Warnings already logged by this process.
static WARNINGS: WarnOnce = WarnOnce::new();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_warning_is_logged_once_however_many_threads_ask() {
        let sut = std::sync::Arc::new(WarnOnce::new());
        let firsts: usize = (0..16)
            .map(|_| {
                let sut = std::sync::Arc::clone(&sut);
                std::thread::spawn(move || sut.first(DegradedReason::NoRtPriority))
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|handle| usize::from(handle.join().unwrap()))
            .sum();
        assert_eq!(firsts, 1);
        assert!(sut.first(DegradedReason::NoTimerSlack));
        assert!(!sut.first(DegradedReason::NoTimerSlack));
    }
}
