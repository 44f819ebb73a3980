//! SIGINT and SIGTERM as readable events, through a signalfd.
//!
//! [`Signals::block`] blocks both signals in the calling thread and opens
//! a signalfd for them. It must run before the executors are spawned:
//! threads inherit the mask, so no executor (nor glommio's helper threads)
//! is interrupted, and the signals wait in the signalfd for the daemon's
//! main thread, which polls it between status lines. Dropping [`Signals`]
//! restores the thread's previous mask (tests run the daemon in-process).

use std::os::fd::AsFd;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// The shutdown signals, pending in a signalfd.
#[derive(Debug)]
pub struct Signals {
    fd: SignalFd,
    previous: SigSet,
}

impl Signals {
    /// Blocks SIGINT and SIGTERM in this thread and opens their signalfd.
    pub fn block() -> nix::Result<Self> {
        let mut set = SigSet::empty();
        set.add(Signal::SIGINT);
        set.add(Signal::SIGTERM);
        let previous = set.thread_swap_mask(SigmaskHow::SIG_BLOCK)?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .inspect_err(|_| {
                let _ = previous.thread_set_mask();
            })?;
        Ok(Self { fd, previous })
    }

    /// Waits up to `timeout` for a shutdown signal; the signal, if one came.
    pub fn wait(&mut self, timeout: Duration) -> nix::Result<Option<Signal>> {
        let millis = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(millis)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => return Ok(None),
            Ok(_) => {}
            Err(err) => return Err(err),
        }
        let Some(info) = self.fd.read_signal()? else {
            return Ok(None);
        };
        Ok(Signal::try_from(info.ssi_signo as i32).ok())
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        let _ = self.previous.thread_set_mask();
    }
}
