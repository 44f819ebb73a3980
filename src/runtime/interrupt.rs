//! Interrupting an executor thread's wait: the wake-up guard's last
//! resort ([`super::guard`]).
//!
//! The guard's nudge (a foreign wake of the ticker, which writes the
//! executor's eventfd, and a write to its data bell) does not always wake
//! an executor. Under CPU steal on this VM (kernel 6.18, glommio 0.9), an
//! executor sometimes sleeps in `io_uring_enter` on glommio's main ring
//! (wchan `io_cqring_wait`) and stays there: its thread's CPU time did not
//! move for seconds while the guard nudged it every 5 ms, the core loop
//! saw no statistics from it, and the daemon's drain waited on it for
//! ever (a CI run's `daemon_drills` test: no anomaly flagged in 120 s, no
//! exit in another 120 s). Stopping and continuing the process woke it at
//! once, as did attaching a debugger: what the wait missed was delivered
//! when a signal interrupted it. glommio has a bug of this shape
//! upstream (glommio/glommio#53: it parks while a task queue is runnable
//! when its preempt timer fired first) and another lost timer wake-up
//! (DataDog/glommio#547, which the guard itself was built for).
//!
//! A signal with a handler ends such a wait: the kernel returns the wait
//! with EINTR, which glommio takes as a wake-up (`Reactor::intr_ok`): it
//! goes round its loop again, polls its rings and runs its task queues.
//! The pump's own `ppoll` takes EINTR as a wake-up too. The handler does
//! nothing and is installed with SA_RESTART, so a system call that is not
//! a wait (a handler's blocking read, say) restarts instead of failing;
//! waits return EINTR whatever the flag.
//!
//! The signal is SIGURG: its default action is to ignore it (one sent
//! before the handler exists does nothing), and nothing in the daemon uses
//! it (no out-of-band socket data). The handler is process-wide, but only
//! the guard sends the signal, to one thread (`tgkill`, by thread id, so
//! a thread that has ended gets nothing: ESRCH).

use nix::errno::Errno;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

/// The signal that interrupts an executor's wait.
pub const SIGNAL: Signal = Signal::SIGURG;

extern "C" fn ignore(_: nix::libc::c_int) {}

/// Installs the do-nothing handler for [`SIGNAL`] (once is enough; again
/// is harmless).
pub fn install() -> nix::Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(ignore),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: the handler does nothing, so it is async-signal-safe, and
    // SIGURG has no other owner in the process (the module's doc).
    unsafe { sigaction(SIGNAL, &action) }.map(drop)
}

/// The calling thread's id, for [`interrupt`].
pub fn this_thread() -> i32 {
    nix::unistd::gettid().as_raw()
}

/// Interrupts what thread `tid` of this process waits on ([`SIGNAL`]).
pub fn interrupt(tid: i32) -> nix::Result<()> {
    let pid = nix::unistd::getpid().as_raw();
    // SAFETY: tgkill only sends a signal; it touches no memory of ours. A
    // thread id of another process fails (the thread group must be ours).
    let sent = unsafe { nix::libc::tgkill(pid, tid, SIGNAL as nix::libc::c_int) };
    Errno::result(sent).map(drop)
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use nix::poll::{PollFd, PollTimeout, poll};

    use super::*;

    #[test]
    fn an_interrupt_ends_a_thread_s_wait_with_eintr() {
        install().unwrap();
        let (tid_tx, tid_rx) = mpsc::channel();
        let (woke_tx, woke_rx) = mpsc::channel();
        let waiter = std::thread::spawn(move || {
            tid_tx.send(this_thread()).unwrap();
            // Nothing to wait for, for ever: only a signal ends it.
            let mut none: [PollFd<'_>; 0] = [];
            woke_tx.send(poll(&mut none, PollTimeout::NONE)).unwrap();
        });
        let tid = tid_rx.recv().unwrap();
        // The waiter may not be in its wait yet: interrupt until it wakes.
        let woke = loop {
            interrupt(tid).unwrap();
            if let Ok(woke) = woke_rx.recv_timeout(Duration::from_millis(50)) {
                break woke;
            }
        };
        assert_eq!(woke, Err(Errno::EINTR));
        waiter.join().unwrap();
    }

    #[test]
    fn a_thread_that_has_ended_is_not_there_to_interrupt() {
        let tid = std::thread::spawn(this_thread).join().unwrap();
        assert_eq!(interrupt(tid), Err(Errno::ESRCH));
    }
}
