//! The pure privilege decisions: from observed facts and what was asked,
//! what the process and thread steps will do. No I/O, so every case (root
//! or not, limits raisable or not, RT throttling off, spin under FIFO) is
//! a unit test.

use super::facts::{Capabilities, MemlockLimit, ProcessFacts, RtThrottling, ThreadFacts};
use super::{
    DegradedReason, GLOMMIO_MIN_MEMLOCK_BYTES, LATENCY_TIMER_SLACK_NS, PrivilegesError,
    UNLIMITED_BYTES,
};
use crate::runtime::affinity::{FIFO_PRIORITY_MAX, SchedPolicy};
use pinwheel_ipc::ring::WaitStrategy;

use crate::topology::{ClassSettings, TaskQueue};

/// What the process step will do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessPlan {
    /// The RLIMIT_MEMLOCK to set, if it changes.
    pub raise_memlock_to: Option<MemlockLimit>,
    /// Whether to call `mlockall(MCL_CURRENT | MCL_FUTURE)`.
    pub mlockall: bool,
    /// Lockable memory glommio needs, bytes.
    pub needed_bytes: u64,
}

/// Decides the process step from what was observed. Fails only when the
/// memory glommio needs cannot be had.
pub fn decide_process(
    facts: &ProcessFacts,
    memlock_needed_bytes: u64,
) -> Result<ProcessPlan, PrivilegesError> {
    let needed_bytes = memlock_needed_bytes.max(GLOMMIO_MIN_MEMLOCK_BYTES);
    let raise_memlock_to = memlock_target(facts);
    let after = raise_memlock_to.unwrap_or(facts.memlock);
    check_memlock(after, facts.creds.caps, needed_bytes)?;
    Ok(ProcessPlan {
        raise_memlock_to,
        mlockall: mlock_allowed(facts.creds.caps, after),
        needed_bytes,
    })
}

/// The highest RLIMIT_MEMLOCK the process may set, or `None` when it is
/// already there: unlimited with CAP_SYS_RESOURCE, else the hard limit.
pub fn memlock_target(facts: &ProcessFacts) -> Option<MemlockLimit> {
    let current = facts.memlock;
    let target = if facts.creds.caps.sys_resource {
        MemlockLimit {
            soft_bytes: UNLIMITED_BYTES,
            hard_bytes: UNLIMITED_BYTES,
        }
    } else {
        MemlockLimit {
            soft_bytes: current.hard_bytes,
            hard_bytes: current.hard_bytes,
        }
    };
    (target != current).then_some(target)
}

/// Whether glommio can lock `needed_bytes` under `limit`. CAP_IPC_LOCK
/// exempts the process from the limit (io_uring does not account locked
/// buffers against it then).
pub fn check_memlock(
    limit: MemlockLimit,
    caps: Capabilities,
    needed_bytes: u64,
) -> Result<(), PrivilegesError> {
    if caps.ipc_lock || limit.soft_bytes >= needed_bytes {
        return Ok(());
    }
    Err(PrivilegesError::MemlockTooLow {
        soft_bytes: limit.soft_bytes,
        hard_bytes: limit.hard_bytes,
        needed_bytes,
    })
}

/// Whether `mlockall(MCL_CURRENT | MCL_FUTURE)` is safe: only when no limit
/// applies, since under a finite one `MCL_FUTURE` makes every allocation
/// past it fail.
pub fn mlock_allowed(caps: Capabilities, limit: MemlockLimit) -> bool {
    caps.ipc_lock || limit.soft_bytes == UNLIMITED_BYTES
}

/// What a data-plane executor thread asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadPolicy {
    /// SCHED_FIFO priority (1-99, higher is clamped to 99); 0 keeps
    /// SCHED_OTHER.
    pub rt_priority: u8,
    /// Whether this is a latency thread (timer slack 1 ns).
    pub latency: bool,
    /// How the thread's consumers wait; `spin` never gets SCHED_FIFO.
    pub wait: WaitStrategy,
}

impl ThreadPolicy {
    /// The policy for an executor of a CPU class: its priority and wait,
    /// and latency when its agents run in latency task queues.
    pub fn for_class(settings: &ClassSettings) -> Self {
        Self {
            rt_priority: settings.rt_priority,
            latency: settings.task_queue == TaskQueue::Latency,
            wait: settings.wait,
        }
    }
}

/// What the thread step will do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadPlan {
    /// The policy to run under: `Other` or `Fifo`.
    pub policy: SchedPolicy,
    /// Timer slack to set, nanoseconds.
    pub timer_slack_ns: Option<u64>,
    /// Why SCHED_FIFO was asked for but will not be tried.
    pub refusal: Option<DegradedReason>,
}

/// Decides the thread step from what was asked and what was observed.
pub fn decide_thread(policy: ThreadPolicy, facts: &ThreadFacts) -> ThreadPlan {
    let timer_slack_ns = policy.latency.then_some(LATENCY_TIMER_SLACK_NS);
    let refuse = |reason| ThreadPlan {
        policy: SchedPolicy::Other,
        timer_slack_ns,
        refusal: Some(reason),
    };
    if policy.rt_priority == 0 {
        return ThreadPlan {
            policy: SchedPolicy::Other,
            timer_slack_ns,
            refusal: None,
        };
    }
    let priority = policy.rt_priority.min(FIFO_PRIORITY_MAX);
    let spins = policy.wait != WaitStrategy::Park;
    if policy.wait == WaitStrategy::Spin {
        return refuse(DegradedReason::SpinUnderFifo);
    }
    match facts.rt_throttling {
        RtThrottling::Disabled if spins => return refuse(DegradedReason::RtThrottlingDisabled),
        RtThrottling::Unknown if spins => return refuse(DegradedReason::RtThrottlingUnknown),
        _ => {}
    }
    if !facts.creds.caps.sys_nice && facts.rtprio_limit < u64::from(priority) {
        return refuse(DegradedReason::NoRtPriority);
    }
    ThreadPlan {
        policy: SchedPolicy::Fifo { priority },
        timer_slack_ns,
        refusal: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::privileges::Credentials;

    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;

    fn root() -> Credentials {
        Credentials {
            euid: 0,
            caps: Capabilities::ALL,
        }
    }

    fn user() -> Credentials {
        Credentials {
            euid: 1000,
            caps: Capabilities::NONE,
        }
    }

    /// Root in a container that dropped CAP_SYS_RESOURCE but kept
    /// CAP_IPC_LOCK and CAP_SYS_NICE.
    fn container_root() -> Credentials {
        Credentials {
            euid: 0,
            caps: Capabilities {
                sys_resource: false,
                ..Capabilities::ALL
            },
        }
    }

    fn limit(soft_bytes: u64, hard_bytes: u64) -> MemlockLimit {
        MemlockLimit {
            soft_bytes,
            hard_bytes,
        }
    }

    fn process(creds: Credentials, memlock: MemlockLimit) -> ProcessFacts {
        ProcessFacts { creds, memlock }
    }

    const THROTTLED: RtThrottling = RtThrottling::Enabled {
        runtime_us: 950_000,
        period_us: 1_000_000,
    };

    fn thread(creds: Credentials, rt_throttling: RtThrottling) -> ThreadFacts {
        ThreadFacts {
            creds,
            rtprio_limit: 0,
            rt_throttling,
        }
    }

    fn wants(rt_priority: u8, wait: WaitStrategy) -> ThreadPolicy {
        ThreadPolicy {
            rt_priority,
            latency: true,
            wait,
        }
    }

    #[test]
    fn root_raises_memlock_to_unlimited_and_locks_memory() {
        let sut = decide_process(&process(root(), limit(8 * MIB, 8 * MIB)), 0).unwrap();
        assert_eq!(
            sut.raise_memlock_to,
            Some(limit(UNLIMITED_BYTES, UNLIMITED_BYTES))
        );
        assert!(sut.mlockall);
        assert_eq!(sut.needed_bytes, GLOMMIO_MIN_MEMLOCK_BYTES);
    }

    #[test]
    fn root_with_an_unlimited_memlock_changes_no_limit() {
        let facts = process(root(), limit(UNLIMITED_BYTES, UNLIMITED_BYTES));
        let sut = decide_process(&facts, 0).unwrap();
        assert_eq!(sut.raise_memlock_to, None);
        assert!(sut.mlockall);
    }

    #[test]
    fn root_without_cap_sys_resource_raises_only_to_the_hard_limit_and_still_locks() {
        let facts = process(container_root(), limit(64 * KIB, 8 * MIB));
        let sut = decide_process(&facts, 0).unwrap();
        assert_eq!(sut.raise_memlock_to, Some(limit(8 * MIB, 8 * MIB)));
        assert!(sut.mlockall, "CAP_IPC_LOCK lifts the limit");
    }

    #[test]
    fn cap_ipc_lock_makes_a_tiny_unraisable_limit_no_error() {
        let facts = process(container_root(), limit(64 * KIB, 64 * KIB));
        let sut = decide_process(&facts, 4 * MIB).unwrap();
        assert_eq!(sut.raise_memlock_to, None);
        assert!(sut.mlockall);
    }

    #[test]
    fn a_user_raises_the_soft_memlock_limit_to_the_hard_one() {
        let sut = decide_process(&process(user(), limit(64 * KIB, 8 * MIB)), 0).unwrap();
        assert_eq!(sut.raise_memlock_to, Some(limit(8 * MIB, 8 * MIB)));
    }

    #[test]
    fn a_user_under_a_finite_limit_never_locks_memory() {
        let sut = decide_process(&process(user(), limit(8 * MIB, 8 * MIB)), 0).unwrap();
        assert_eq!(sut.raise_memlock_to, None);
        assert!(
            !sut.mlockall,
            "MCL_FUTURE under a finite limit breaks malloc"
        );
    }

    #[test]
    fn a_user_with_an_unlimited_hard_limit_gets_unlimited_and_locks_memory() {
        let facts = process(user(), limit(64 * KIB, UNLIMITED_BYTES));
        let sut = decide_process(&facts, 0).unwrap();
        assert_eq!(
            sut.raise_memlock_to,
            Some(limit(UNLIMITED_BYTES, UNLIMITED_BYTES))
        );
        assert!(sut.mlockall);
    }

    #[test]
    fn a_user_below_glommios_minimum_gets_an_error_saying_how_to_fix_it() {
        let facts = process(user(), limit(64 * KIB, 256 * KIB));
        let sut = decide_process(&facts, 0).unwrap_err();
        assert!(matches!(
            sut,
            PrivilegesError::MemlockTooLow {
                soft_bytes: 262_144,
                hard_bytes: 262_144,
                needed_bytes: 524_288,
            }
        ));
        let message = sut.to_string();
        for hint in [
            "LimitMEMLOCK=infinity",
            "ulimit -l unlimited",
            "CAP_IPC_LOCK",
            "524288",
        ] {
            assert!(message.contains(hint), "{message:?} lacks {hint:?}");
        }
    }

    #[test]
    fn the_callers_need_counts_when_larger_than_glommios_minimum() {
        let facts = process(user(), limit(8 * MIB, 8 * MIB));
        assert!(decide_process(&facts, 8 * MIB).is_ok());
        let sut = decide_process(&facts, 8 * MIB + 1).unwrap_err();
        assert!(matches!(
            sut,
            PrivilegesError::MemlockTooLow { needed_bytes, .. } if needed_bytes == 8 * MIB + 1
        ));
    }

    #[test]
    fn a_low_soft_limit_under_a_sufficient_hard_one_is_no_error() {
        let facts = process(user(), limit(0, GLOMMIO_MIN_MEMLOCK_BYTES));
        assert!(decide_process(&facts, 0).is_ok());
    }

    #[test]
    fn mlockall_needs_cap_ipc_lock_or_no_limit() {
        let finite = limit(8 * MIB, 8 * MIB);
        let unlimited = limit(UNLIMITED_BYTES, UNLIMITED_BYTES);
        assert!(!mlock_allowed(Capabilities::NONE, finite));
        assert!(mlock_allowed(Capabilities::NONE, unlimited));
        assert!(mlock_allowed(container_root().caps, finite));
    }

    #[test]
    fn root_gets_sched_fifo_at_the_topology_priority() {
        let sut = decide_thread(
            wants(10, WaitStrategy::Adaptive),
            &thread(root(), THROTTLED),
        );
        assert_eq!(sut.policy, SchedPolicy::Fifo { priority: 10 });
        assert_eq!(sut.refusal, None);
        assert_eq!(sut.timer_slack_ns, Some(LATENCY_TIMER_SLACK_NS));
    }

    #[test]
    fn priority_zero_keeps_sched_other_without_a_refusal() {
        let sut = decide_thread(wants(0, WaitStrategy::Spin), &thread(root(), THROTTLED));
        assert_eq!(sut.policy, SchedPolicy::Other);
        assert_eq!(sut.refusal, None);
    }

    #[test]
    fn spin_under_sched_fifo_is_refused_even_for_root() {
        let sut = decide_thread(wants(10, WaitStrategy::Spin), &thread(root(), THROTTLED));
        assert_eq!(sut.policy, SchedPolicy::Other);
        assert_eq!(sut.refusal, Some(DegradedReason::SpinUnderFifo));
        assert_eq!(sut.timer_slack_ns, Some(LATENCY_TIMER_SLACK_NS));
    }

    #[test]
    fn disabled_rt_throttling_refuses_sched_fifo_to_adaptive_threads() {
        let facts = thread(root(), RtThrottling::Disabled);
        let sut = decide_thread(wants(10, WaitStrategy::Adaptive), &facts);
        assert_eq!(sut.policy, SchedPolicy::Other);
        assert_eq!(sut.refusal, Some(DegradedReason::RtThrottlingDisabled));
    }

    #[test]
    fn disabled_rt_throttling_still_gives_sched_fifo_to_park_threads() {
        let facts = thread(root(), RtThrottling::Disabled);
        let sut = decide_thread(wants(10, WaitStrategy::Park), &facts);
        assert_eq!(sut.policy, SchedPolicy::Fifo { priority: 10 });
    }

    #[test]
    fn unreadable_rt_throttling_counts_as_disabled_for_spinning_threads() {
        let facts = thread(root(), RtThrottling::Unknown);
        let sut = decide_thread(wants(10, WaitStrategy::Adaptive), &facts);
        assert_eq!(sut.refusal, Some(DegradedReason::RtThrottlingUnknown));
        let park = decide_thread(wants(10, WaitStrategy::Park), &facts);
        assert_eq!(park.policy, SchedPolicy::Fifo { priority: 10 });
    }

    #[test]
    fn a_user_without_cap_sys_nice_is_refused_sched_fifo() {
        let sut = decide_thread(wants(10, WaitStrategy::Park), &thread(user(), THROTTLED));
        assert_eq!(sut.policy, SchedPolicy::Other);
        assert_eq!(sut.refusal, Some(DegradedReason::NoRtPriority));
    }

    #[test]
    fn rlimit_rtprio_lets_a_user_reach_its_priority_and_no_higher() {
        let facts = ThreadFacts {
            rtprio_limit: 10,
            ..thread(user(), THROTTLED)
        };
        let sut = decide_thread(wants(10, WaitStrategy::Park), &facts);
        assert_eq!(sut.policy, SchedPolicy::Fifo { priority: 10 });
        let higher = decide_thread(wants(11, WaitStrategy::Park), &facts);
        assert_eq!(higher.refusal, Some(DegradedReason::NoRtPriority));
    }

    #[test]
    fn priorities_above_99_are_clamped_to_99() {
        let sut = decide_thread(wants(200, WaitStrategy::Park), &thread(root(), THROTTLED));
        assert_eq!(sut.policy, SchedPolicy::Fifo { priority: 99 });
    }

    #[test]
    fn only_latency_threads_get_timer_slack() {
        let policy = ThreadPolicy {
            latency: false,
            ..wants(0, WaitStrategy::Park)
        };
        let sut = decide_thread(policy, &thread(user(), THROTTLED));
        assert_eq!(sut.timer_slack_ns, None);
    }

    #[test]
    fn a_class_with_latency_queues_makes_a_latency_policy() {
        let settings = ClassSettings {
            wait: WaitStrategy::Adaptive,
            spin_before_park_us: 50,
            preempt_timer_us: 500,
            task_queue: TaskQueue::Latency,
            rt_priority: 10,
        };
        let sut = ThreadPolicy::for_class(&settings);
        assert_eq!(sut, wants(10, WaitStrategy::Adaptive));
        let shares = ThreadPolicy::for_class(&ClassSettings {
            task_queue: TaskQueue::Shares(100),
            ..settings
        });
        assert!(!shares.latency);
    }
}
