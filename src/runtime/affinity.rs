//! Pinning threads to CPUs and asking which CPU a thread is on.
//!
//! `sched_setaffinity` comes through nix's safe wrapper; `sched_getcpu`
//! has none, so this file calls libc directly. It is on the unsafe
//! allow-list for that one call.

use nix::sched::{CpuSet, sched_setaffinity};
use nix::unistd::Pid;

use crate::topology::CpuId;

/// Pins the calling thread to `cpu`.
pub fn pin_current_thread(cpu: CpuId) -> std::io::Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu.0 as usize).map_err(std::io::Error::from)?;
    sched_setaffinity(Pid::from_raw(0), &set).map_err(std::io::Error::from)
}

/// The CPU the calling thread is running on now.
pub fn current_cpu() -> std::io::Result<CpuId> {
    // SAFETY: sched_getcpu takes no arguments and touches no memory of ours.
    let cpu = unsafe { nix::libc::sched_getcpu() };
    u32::try_from(cpu)
        .map(CpuId)
        .map_err(|_| std::io::Error::last_os_error())
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
}
