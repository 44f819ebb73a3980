//! What the kernel says of the calling thread: whether it runs under a
//! real-time policy, and how much CPU time it has used, which a waiter's
//! idle share needs to know (`idle.rs`: a real-time thread that never
//! sleeps is throttled by the kernel, which counts its CPU time).
//!
//! The daemon reads scheduling policies in `runtime/affinity.rs`; agent
//! processes link this crate without the daemon, so the calls the ring
//! needs live here, a small module on the unsafe allow-list (nix has no
//! `sched_getscheduler`).

use std::time::Duration;

use nix::libc;
use nix::time::{ClockId, clock_gettime};

/// Whether the calling thread runs under SCHED_FIFO or SCHED_RR, the
/// policies the kernel's real-time throttling applies to. A failed read
/// counts as not real-time.
pub(super) fn thread_is_realtime() -> bool {
    // SAFETY: pid 0 is the calling thread; the call takes no pointers.
    let policy = unsafe { libc::sched_getscheduler(0) };
    policy >= 0
        && matches!(
            policy & !libc::SCHED_RESET_ON_FORK,
            libc::SCHED_FIFO | libc::SCHED_RR
        )
}

/// The CPU time the calling thread has used: what the kernel's real-time
/// throttling counts (its `sum_exec_runtime`), the cost of entering and
/// leaving every sleep included. A system call (~170 ns on a VM); `None`
/// when it fails (never seen: the clock always exists).
pub(super) fn thread_cpu_time() -> Option<Duration> {
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .ok()
        .map(Duration::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Puts the calling thread under `policy` at `priority`.
    fn set(policy: libc::c_int, priority: libc::c_int) {
        let param = libc::sched_param {
            sched_priority: priority,
        };
        // SAFETY: pid 0 is this test's own thread; `param` is valid and
        // outlives the call, and the kernel only reads it.
        let rc = unsafe { libc::sched_setscheduler(0, policy, &param) };
        assert_eq!(rc, 0, "the tests run as root");
    }

    #[test]
    fn the_kernel_says_whether_the_calling_thread_is_real_time() {
        // A thread of its own: it only reads its policy back and ends, so
        // SCHED_FIFO cannot starve the machine.
        let answers = std::thread::spawn(|| {
            set(libc::SCHED_OTHER, 0);
            let other = thread_is_realtime();
            set(libc::SCHED_FIFO, 1);
            let fifo = thread_is_realtime();
            set(libc::SCHED_RR, 1);
            (other, fifo, thread_is_realtime())
        })
        .join()
        .expect("the thread ends");
        assert_eq!(answers, (false, true, true));
    }

    #[test]
    fn a_thread_s_cpu_time_grows_while_it_runs_and_not_while_it_sleeps() {
        let cpu = || thread_cpu_time().expect("the thread's CPU clock exists");
        let (start, wall) = (cpu(), std::time::Instant::now());
        while wall.elapsed() < Duration::from_millis(20) {}
        let ran = cpu() - start;
        assert!(ran > Duration::ZERO, "a spin of 20 ms used no CPU time");
        let before_sleep = cpu();
        std::thread::sleep(Duration::from_millis(10));
        let slept = cpu() - before_sleep;
        assert!(
            slept < Duration::from_millis(5),
            "a sleep is not CPU time: {slept:?}"
        );
    }
}
