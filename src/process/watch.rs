//! Which of the process side's descriptors (pidfds, links, log pipes, the
//! attach socket) have something, checked once per core-loop tick.
//!
//! With io_uring (the default) each descriptor is registered once with a
//! multishot `POLL_ADD`; the kernel posts a completion whenever it becomes
//! readable (a pidfd: when the child exits), and a tick reads the
//! completion queue, which is shared memory: no system call when nothing
//! happened, and none per descriptor when something did. Registrations and
//! removals are queued and submitted in one `io_uring_enter` at the next
//! check. Where io_uring is unavailable (`kernel.io_uring_disabled`, a
//! seccomp filter) the same interface runs `poll(2)` over every
//! descriptor each tick.
//!
//! io_uring ties a request to the thread that submitted it (its
//! completions are posted by that thread's task work, and its requests are
//! cancelled when it exits), so one thread only, the core loop's, may call
//! [`Watcher::ready`], which is where everything is submitted.

use std::collections::HashMap;
use std::os::fd::{BorrowedFd, RawFd};

use io_uring::{IoUring, opcode, types};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// Completion queue size; multishot polls stay armed, so this bounds the
/// completions one tick may find, not the descriptors watched.
const ENTRIES: u32 = 256;
const REMOVE: u64 = u64::MAX;

/// The descriptors watched and how.
pub enum Watcher {
    /// Multishot polls on an io_uring.
    Uring {
        /// The ring.
        ring: Box<IoUring>,
        /// Watched descriptors by token, and whether their poll is armed.
        fds: HashMap<u64, (RawFd, bool)>,
        /// Tokens whose poll must be removed.
        removals: Vec<u64>,
    },
    /// `poll(2)` each tick.
    Poll {
        /// Watched descriptors by token.
        fds: HashMap<u64, RawFd>,
    },
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Watcher {
    /// A watcher on io_uring, or on `poll(2)` when `uring` is false or
    /// io_uring is unavailable.
    pub fn new(uring: bool) -> Self {
        match uring.then(|| IoUring::new(ENTRIES)).transpose() {
            Ok(Some(ring)) => Watcher::Uring {
                ring: Box::new(ring),
                fds: HashMap::new(),
                removals: Vec::new(),
            },
            _ => Watcher::Poll {
                fds: HashMap::new(),
            },
        }
    }

    /// `uring` or `poll`.
    pub fn name(&self) -> &'static str {
        match self {
            Watcher::Uring { .. } => "uring",
            Watcher::Poll { .. } => "poll",
        }
    }

    /// Watches `fd` under `token` (its owner keeps it open until
    /// [`Watcher::forget`]).
    pub fn watch(&mut self, token: u64, fd: BorrowedFd<'_>) {
        use std::os::fd::AsRawFd;
        match self {
            Watcher::Uring { fds, .. } => {
                fds.insert(token, (fd.as_raw_fd(), false));
            }
            Watcher::Poll { fds } => {
                fds.insert(token, fd.as_raw_fd());
            }
        }
    }

    /// Stops watching `token`; call before closing its descriptor.
    pub fn forget(&mut self, token: u64) {
        match self {
            Watcher::Uring { fds, removals, .. } => {
                if let Some((_, true)) = fds.remove(&token) {
                    removals.push(token);
                }
            }
            Watcher::Poll { fds } => {
                fds.remove(&token);
            }
        }
    }

    /// Appends the tokens that became readable since the last call.
    pub fn ready(&mut self, out: &mut Vec<u64>) -> std::io::Result<()> {
        match self {
            Watcher::Uring {
                ring,
                fds,
                removals,
            } => uring_ready(ring, fds, removals, out),
            Watcher::Poll { fds } => poll_ready(fds, out),
        }
    }
}

fn uring_ready(
    ring: &mut IoUring,
    fds: &mut HashMap<u64, (RawFd, bool)>,
    removals: &mut Vec<u64>,
    out: &mut Vec<u64>,
) -> std::io::Result<()> {
    let mut queued = false;
    for token in removals.drain(..) {
        let remove = opcode::PollRemove::new(token).build().user_data(REMOVE);
        // SAFETY: a poll removal reads no user memory.
        queued |= unsafe { ring.submission().push(&remove) }.is_ok();
    }
    for (&token, (fd, armed)) in fds.iter_mut().filter(|(_, (_, armed))| !armed) {
        let add = opcode::PollAdd::new(types::Fd(*fd), nix::libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(token);
        // SAFETY: a poll reads no user memory; the owner keeps the
        // descriptor open until it calls `forget`, which removes the poll.
        if unsafe { ring.submission().push(&add) }.is_ok() {
            *armed = true;
            queued = true;
        }
    }
    if queued {
        ring.submit()?;
    }
    for cqe in ring.completion() {
        let token = cqe.user_data();
        if token == REMOVE {
            continue;
        }
        if !io_uring::cqueue::more(cqe.flags())
            && let Some((_, armed)) = fds.get_mut(&token)
        {
            // The kernel ended this multishot poll (an error, or the
            // queue overflowed): arm it again at the next check.
            *armed = false;
        }
        if fds.contains_key(&token) && !out.contains(&token) {
            out.push(token);
        }
    }
    Ok(())
}

fn poll_ready(fds: &HashMap<u64, RawFd>, out: &mut Vec<u64>) -> std::io::Result<()> {
    let tokens: Vec<u64> = fds.keys().copied().collect();
    let mut polls: Vec<PollFd<'_>> = tokens
        .iter()
        .map(|t| {
            // SAFETY: the owner keeps each watched descriptor open until it
            // calls `forget`, which is not concurrent with this call.
            let fd = unsafe { BorrowedFd::borrow_raw(fds[t]) };
            PollFd::new(fd, PollFlags::POLLIN)
        })
        .collect();
    match poll(&mut polls, PollTimeout::ZERO) {
        Ok(0) | Err(nix::errno::Errno::EINTR) => return Ok(()),
        Ok(_) => {}
        Err(errno) => return Err(errno.into()),
    }
    for (token, p) in tokens.iter().zip(&polls) {
        if p.revents().is_some_and(|r| !r.is_empty()) {
            out.push(*token);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;
    use std::time::Duration;

    use nix::sys::eventfd::{EfdFlags, EventFd};

    use super::*;

    #[test]
    fn a_readable_descriptor_is_reported_by_both_watchers_and_a_forgotten_one_is_not() {
        for uring in [true, false] {
            let mut sut = Watcher::new(uring);
            assert_eq!(sut.name(), if uring { "uring" } else { "poll" });
            let (a, b) = (
                EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC).unwrap(),
                EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC).unwrap(),
            );
            sut.watch(1, a.as_fd());
            sut.watch(2, b.as_fd());
            let mut out = Vec::new();
            sut.ready(&mut out).unwrap();
            assert!(out.is_empty());
            a.write(1).unwrap();
            sut.forget(2);
            b.write(1).unwrap();
            // Any system call returning to user space runs the task work that
            // posts the completion; the check itself makes none.
            std::thread::sleep(Duration::from_millis(5));
            sut.ready(&mut out).unwrap();
            assert_eq!(out, vec![1]);
        }
    }
}
