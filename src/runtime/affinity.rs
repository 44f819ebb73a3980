//! Pinning threads to CPUs, asking which CPU a thread is on, and setting
//! and reading a thread's scheduling policy.
//!
//! `sched_setaffinity` comes through nix's safe wrapper; `sched_getcpu`,
//! `sched_setscheduler`, `sched_getscheduler` and `sched_getparam` have
//! none, so this file calls libc directly. It is on the unsafe allow-list
//! for those calls, and each one sits behind a safe function here.
//!
//! The policy calls act on the calling thread only (pid 0 means "the
//! caller" to the kernel; on Linux every thread is its own task), never on
//! the whole process. Reads go to the kernel (`sched_getscheduler`), not to
//! glibc's per-thread cache behind `pthread_getschedparam`, so they report
//! what is really in effect. Deciding *whether* a thread may run SCHED_FIFO
//! is `privileges.rs`'s job; this file only carries the decision out.

use nix::libc;
use nix::sched::{CpuSet, sched_setaffinity};
use nix::unistd::Pid;

use crate::topology::CpuId;

/// Pins the calling thread to `cpu`.
pub fn pin_current_thread(cpu: CpuId) -> std::io::Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu.0 as usize).map_err(std::io::Error::from)?;
    sched_setaffinity(Pid::from_raw(0), &set).map_err(std::io::Error::from)
}

/// Pins the calling thread to the CPUs of `cpus` (it may run on any).
pub fn pin_current_thread_to(cpus: &crate::topology::CpuSet) -> std::io::Result<()> {
    let mut set = CpuSet::new();
    for cpu in cpus.iter() {
        set.set(cpu.0 as usize).map_err(std::io::Error::from)?;
    }
    sched_setaffinity(Pid::from_raw(0), &set).map_err(std::io::Error::from)
}

/// The CPU the calling thread is running on now.
pub fn current_cpu() -> std::io::Result<CpuId> {
    // SAFETY: sched_getcpu takes no arguments and touches no memory of ours.
    let cpu = unsafe { libc::sched_getcpu() };
    u32::try_from(cpu)
        .map(CpuId)
        .map_err(|_| std::io::Error::last_os_error())
}

/// Highest SCHED_FIFO priority Linux accepts (`sched_get_priority_max`).
pub const FIFO_PRIORITY_MAX: u8 = 99;

/// A thread's scheduling policy, as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedPolicy {
    /// SCHED_OTHER, the default time-sharing policy.
    Other,
    /// SCHED_BATCH.
    Batch,
    /// SCHED_IDLE.
    Idle,
    /// SCHED_FIFO at a real-time priority (1-99).
    Fifo {
        /// The real-time priority.
        priority: u8,
    },
    /// SCHED_RR at a real-time priority (1-99).
    RoundRobin {
        /// The real-time priority.
        priority: u8,
    },
    /// SCHED_DEADLINE.
    Deadline,
    /// A policy number this build does not know.
    Unknown(i32),
}

impl SchedPolicy {
    /// Whether the kernel runs this thread ahead of every SCHED_OTHER one.
    pub fn is_real_time(self) -> bool {
        matches!(
            self,
            SchedPolicy::Fifo { .. } | SchedPolicy::RoundRobin { .. } | SchedPolicy::Deadline
        )
    }
}

/// Puts the calling thread under SCHED_FIFO at `priority` (1-99).
///
/// The policy carries `SCHED_RESET_ON_FORK`: threads this one spawns later
/// (glommio's blocking pool, a library's helper thread) start as
/// SCHED_OTHER instead of inheriting a real-time policy nobody chose for
/// them. Fails with `EPERM` without CAP_SYS_NICE or a high enough
/// RLIMIT_RTPRIO, or when the cgroup grants no real-time runtime, and with
/// `EINVAL` for a priority outside 1-99.
pub fn set_fifo(priority: u8) -> std::io::Result<()> {
    set_policy(
        libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK,
        i32::from(priority),
    )
}

/// Puts the calling thread back under SCHED_OTHER.
pub fn set_other() -> std::io::Result<()> {
    set_policy(libc::SCHED_OTHER, 0)
}

fn set_policy(policy: libc::c_int, priority: libc::c_int) -> std::io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: pid 0 is the calling thread; `param` is a valid, initialised
    // sched_param that outlives the call, and the kernel only reads it.
    let rc = unsafe { libc::sched_setscheduler(0, policy, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The calling thread's scheduling policy and real-time priority.
pub fn current_policy() -> std::io::Result<SchedPolicy> {
    // SAFETY: pid 0 is the calling thread; the call takes no pointers.
    let policy = unsafe { libc::sched_getscheduler(0) };
    if policy < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is a valid, writable
    // sched_param that outlives the call.
    let rc = unsafe { libc::sched_getparam(0, &mut param) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // A priority outside u8 would be a kernel bug; report it as 0 rather
    // than fail the read.
    let priority = u8::try_from(param.sched_priority).unwrap_or(0);
    Ok(match policy & !libc::SCHED_RESET_ON_FORK {
        libc::SCHED_OTHER => SchedPolicy::Other,
        libc::SCHED_BATCH => SchedPolicy::Batch,
        libc::SCHED_IDLE => SchedPolicy::Idle,
        libc::SCHED_FIFO => SchedPolicy::Fifo { priority },
        libc::SCHED_RR => SchedPolicy::RoundRobin { priority },
        libc::SCHED_DEADLINE => SchedPolicy::Deadline,
        other => SchedPolicy::Unknown(other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_thread_runs_on_its_cpu() {
        let cpu = std::thread::spawn(|| {
            pin_current_thread(CpuId(0)).unwrap();
            current_cpu().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(cpu, CpuId(0));
    }

    #[test]
    fn pinning_to_a_cpu_beyond_the_mask_size_fails() {
        assert!(pin_current_thread(CpuId(100_000)).is_err());
    }

    #[test]
    fn a_new_thread_reads_back_sched_other() {
        let sut = std::thread::spawn(current_policy).join().unwrap().unwrap();
        assert_eq!(sut, SchedPolicy::Other);
        assert!(!sut.is_real_time());
    }

    #[test]
    fn a_fifo_priority_above_99_is_refused() {
        let err = std::thread::spawn(|| set_fifo(FIFO_PRIORITY_MAX + 1))
            .join()
            .unwrap()
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
    }

    #[test]
    fn set_other_on_a_time_sharing_thread_is_allowed() {
        let sut = std::thread::spawn(|| {
            set_other().unwrap();
            current_policy().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(sut, SchedPolicy::Other);
    }
}
