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
//! when a signal interrupted it. glommio has a bug of this shape,
//! mended upstream after its last release (pull request glommio/glommio#53:
//! it parks while a task queue is runnable when its preempt timer fired
//! first), and another lost timer wake-up (issue DataDog/glommio#547,
//! which the guard itself was built for).
//!
//! A signal with a handler ends such a wait: the kernel returns the wait
//! with EINTR, which glommio takes as a wake-up (`Reactor::intr_ok`): it
//! goes round its loop again, polls its rings and runs its task queues.
//! The pump's own `ppoll` takes EINTR as a wake-up too. The handler does
//! nothing and is installed with SA_RESTART: `read`, `write` and the like
//! restart instead of failing, while the poll family, sleeps and io_uring
//! waits return EINTR whatever the flag (signal(7)).
//!
//! The signal is SIGURG: its default action is to ignore it (one sent
//! before the handler exists does nothing), and nothing in the daemon uses
//! it (no out-of-band socket data). The handler is process-wide, but only
//! the guard sends the signal, to one thread (`tgkill`, by thread id: once
//! a thread has ended and been reaped, ESRCH; a thread id reused in
//! between would take a signal that does nothing).

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
pub(super) mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use nix::poll::{PollFd, PollTimeout, poll};

    use super::*;

    /// Tries `step` every 10 ms until it says done; fails after 5 s.
    /// (The guard's tests wait the same way.)
    pub(in crate::runtime) fn until(what: &str, mut step: impl FnMut() -> bool) {
        for _ in 0..500 {
            if step() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("{what} never happened");
    }

    #[test]
    fn an_interrupt_ends_a_thread_s_wait_with_eintr() {
        install().unwrap();
        let (tid_tx, tid_rx) = mpsc::channel();
        let (woke_tx, woke_rx) = mpsc::channel();
        std::thread::spawn(move || {
            tid_tx.send(this_thread()).unwrap();
            // Nothing to wait for, for ever: only a signal ends it.
            let mut none: [PollFd<'_>; 0] = [];
            woke_tx.send(poll(&mut none, PollTimeout::NONE)).unwrap();
        });
        let tid = tid_rx.recv().unwrap();
        // The waiter may not be in its wait yet: interrupt until it wakes.
        let mut woke = None;
        until("the wake", || {
            woke = woke_rx.try_recv().ok();
            woke.is_some() || {
                let _ = interrupt(tid);
                false
            }
        });
        assert_eq!(woke, Some(Err(Errno::EINTR)));
    }

    #[test]
    fn a_read_interrupted_restarts_and_gets_its_data() {
        install().unwrap();
        let (read_end, write_end) = nix::unistd::pipe().unwrap();
        let (tid_tx, tid_rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            tid_tx.send(this_thread()).unwrap();
            let mut buf = [0u8; 4];
            nix::unistd::read(&read_end, &mut buf).map(|n| buf[..n].to_vec())
        });
        let tid = tid_rx.recv().unwrap();
        // Signals while the reader blocks (some may come before it does).
        for _ in 0..20 {
            interrupt(tid).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
        nix::unistd::write(&write_end, b"data").unwrap();
        assert_eq!(reader.join().unwrap(), Ok(b"data".to_vec()));
    }

    #[test]
    fn a_thread_that_has_ended_is_not_there_to_interrupt() {
        let tid = std::thread::spawn(this_thread).join().unwrap();
        // The id goes a little after the join returns.
        until("ESRCH", || interrupt(tid) == Err(Errno::ESRCH));
    }
}
