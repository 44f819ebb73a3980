//! Parking an agent's reader on two descriptors at once: its ring's data
//! doorbell (an eventfd) and its link to the daemon (a socket), so that a
//! request wakes it and so does a daemon that went away.
//!
//! Two implementations, one chosen when the agent attaches:
//!
//! * [`Parker::Uring`] (the default): an io_uring with one `READ` of the
//!   eventfd and one multishot `POLL_ADD` of the link kept armed across
//!   waits. A park is one `io_uring_enter` (submit what needs re-arming,
//!   wait for one completion or the timeout), and the eventfd's counter is
//!   read by the kernel as part of the wake-up.
//! * [`Parker::Poll`]: `poll(2)` on both, then `read(2)` of the eventfd:
//!   two system calls per wake-up. Used where io_uring is unavailable
//!   (disabled by `kernel.io_uring_disabled`, or a seccomp filter), or
//!   when `PINWHEEL_AGENT_PARK=poll` asks for it (to compare the two).
//!
//! The uring keeps a pending read that targets [`Parker::Uring`]'s boxed
//! buffer, so dropping it cancels the read and waits for its completion
//! before the buffer is freed.

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use io_uring::{IoUring, opcode, types};
use pinwheel_ipc::ring::Parked;

const BELL: u64 = 1;
const LINK: u64 = 2;
const CANCEL: u64 = 3;

/// Environment variable that picks the parking implementation (`poll` or
/// `uring`).
pub const PARK_ENV: &str = "PINWHEEL_AGENT_PARK";

/// How the reader parks.
pub enum Parker {
    /// io_uring: one system call per park.
    Uring(Box<UringParker>),
    /// poll(2) and read(2).
    Poll {
        /// The link's descriptor.
        link: RawFd,
    },
}

impl std::fmt::Debug for Parker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The io_uring parker's state.
pub struct UringParker {
    ring: IoUring,
    link: RawFd,
    buf: Box<u64>,
    bell: Option<RawFd>,
    link_armed: bool,
}

impl Parker {
    /// A parker for `link`: io_uring unless unavailable or `PARK_ENV`
    /// says `poll`.
    pub fn new(link: BorrowedFd<'_>) -> Self {
        let link = link.as_raw_fd();
        if std::env::var(PARK_ENV).is_ok_and(|v| v == "poll") {
            return Parker::Poll { link };
        }
        match IoUring::new(4) {
            Ok(ring) => Parker::Uring(Box::new(UringParker {
                ring,
                link,
                buf: Box::new(0),
                bell: None,
                link_armed: false,
            })),
            Err(_) => Parker::Poll { link },
        }
    }

    /// Which implementation it is: `uring` or `poll`.
    pub fn name(&self) -> &'static str {
        match self {
            Parker::Uring(_) => "uring",
            Parker::Poll { .. } => "poll",
        }
    }

    /// Sleeps until the doorbell rings (its counter read), the link has
    /// something (a message or a hang-up), or `timeout`.
    pub fn park(&mut self, bell: BorrowedFd<'_>, timeout: Duration) -> std::io::Result<Parked> {
        match self {
            Parker::Uring(uring) => uring.park(bell.as_raw_fd(), timeout),
            Parker::Poll { link } => poll_park(bell, *link, timeout),
        }
    }
}

fn poll_park(bell: BorrowedFd<'_>, link: RawFd, timeout: Duration) -> std::io::Result<Parked> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    // SAFETY: `link` is the agent's link socket, open for as long as the
    // agent (which owns both it and this parker) lives.
    let link = unsafe { BorrowedFd::borrow_raw(link) };
    let millis = u16::try_from(timeout.as_millis().max(1)).unwrap_or(u16::MAX);
    let mut fds = [
        PollFd::new(bell, PollFlags::POLLIN),
        PollFd::new(link, PollFlags::POLLIN),
    ];
    match poll(&mut fds, PollTimeout::from(millis)) {
        Ok(0) | Err(nix::errno::Errno::EINTR) => return Ok(Parked::Timeout),
        Ok(_) => {}
        Err(errno) => return Err(errno.into()),
    }
    let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
    if ready(&fds[0]) {
        let mut counter = [0u8; 8];
        nix::unistd::read(bell, &mut counter)?;
        return Ok(Parked::Bell);
    }
    Ok(if ready(&fds[1]) {
        Parked::Other
    } else {
        Parked::Timeout
    })
}

impl UringParker {
    fn park(&mut self, bell: RawFd, timeout: Duration) -> std::io::Result<Parked> {
        self.arm(bell)?;
        let ts = types::Timespec::from(timeout);
        let args = types::SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => {}
            Err(err)
                if matches!(
                    err.raw_os_error(),
                    Some(nix::libc::ETIME | nix::libc::EINTR)
                ) => {}
            Err(err) => return Err(err),
        }
        let (mut rung, mut other) = (false, false);
        for cqe in self.ring.completion() {
            match cqe.user_data() {
                BELL => {
                    self.bell = None;
                    rung = true;
                }
                LINK => {
                    other = true;
                    if !io_uring::cqueue::more(cqe.flags()) {
                        self.link_armed = false;
                    }
                }
                _ => {}
            }
        }
        Ok(match (rung, other) {
            (_, true) => Parked::Other,
            (true, false) => Parked::Bell,
            (false, false) => Parked::Timeout,
        })
    }

    /// Queues the eventfd read and the link poll unless already pending.
    fn arm(&mut self, bell: RawFd) -> std::io::Result<()> {
        if self.bell.is_none() {
            let read = opcode::Read::new(
                types::Fd(bell),
                std::ptr::from_mut(&mut *self.buf).cast(),
                8,
            )
            .build()
            .user_data(BELL);
            // SAFETY: the buffer is boxed and lives until the read completes:
            // Drop cancels a pending read and waits for it before freeing it.
            unsafe { self.ring.submission().push(&read) }
                .map_err(|_| std::io::Error::other("io_uring submission queue full"))?;
            self.bell = Some(bell);
        }
        if !self.link_armed {
            let poll = opcode::PollAdd::new(
                types::Fd(self.link),
                (nix::libc::POLLIN | nix::libc::POLLRDHUP) as u32,
            )
            .multi(true)
            .build()
            .user_data(LINK);
            // SAFETY: a poll reads no user memory; the link outlives the ring.
            unsafe { self.ring.submission().push(&poll) }
                .map_err(|_| std::io::Error::other("io_uring submission queue full"))?;
            self.link_armed = true;
        }
        Ok(())
    }
}

impl Drop for UringParker {
    fn drop(&mut self) {
        if self.bell.is_none() {
            return;
        }
        let cancel = opcode::AsyncCancel::new(BELL).build().user_data(CANCEL);
        // SAFETY: a cancel reads no user memory.
        if unsafe { self.ring.submission().push(&cancel) }.is_err() {
            // The queue cannot be full (the read and the poll are all that
            // was ever queued); if it were, keep the buffer rather than free
            // memory the kernel may still write.
            std::mem::forget(std::mem::replace(&mut self.buf, Box::new(0)));
            return;
        }
        for _ in 0..8 {
            if self.ring.submit_and_wait(1).is_err() {
                break;
            }
            if self.ring.completion().any(|cqe| cqe.user_data() == BELL) {
                return;
            }
        }
        std::mem::forget(std::mem::replace(&mut self.buf, Box::new(0)));
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use nix::sys::eventfd::{EfdFlags, EventFd};
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};

    use super::*;

    fn both(test: impl Fn(Parker, &EventFd, std::os::fd::OwnedFd)) {
        for mode in ["uring", "poll"] {
            let (ours, theirs) = socketpair(
                AddressFamily::Unix,
                SockType::SeqPacket,
                None,
                SockFlag::SOCK_CLOEXEC,
            )
            .unwrap();
            let bell = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC).unwrap();
            let sut = if mode == "poll" {
                Parker::Poll {
                    link: ours.as_raw_fd(),
                }
            } else {
                Parker::new(ours.as_fd())
            };
            assert_eq!(sut.name(), mode);
            test(sut, &bell, theirs);
            drop(ours);
        }
    }

    #[test]
    fn a_rung_bell_wakes_the_parker_and_is_consumed() {
        both(|mut sut, bell, _theirs| {
            bell.write(1).unwrap();
            assert_eq!(
                sut.park(bell.as_fd(), Duration::from_secs(5)).unwrap(),
                Parked::Bell
            );
            assert_eq!(
                sut.park(bell.as_fd(), Duration::from_millis(5)).unwrap(),
                Parked::Timeout
            );
        });
    }

    #[test]
    fn a_closed_link_wakes_the_parker() {
        both(|mut sut, bell, theirs| {
            drop(theirs);
            assert_eq!(
                sut.park(bell.as_fd(), Duration::from_secs(5)).unwrap(),
                Parked::Other
            );
        });
    }
}
