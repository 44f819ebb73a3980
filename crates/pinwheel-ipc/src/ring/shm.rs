//! Ring memory in a memfd: created, sealed, mapped, and attached to from
//! another process.
//!
//! The creator makes an anonymous memfd (nothing appears in /dev/shm or any
//! file system, and the memory goes away with the last descriptor or
//! mapping), sizes it, and seals it against shrinking and growing: a peer
//! that could truncate the file would make our next access a SIGBUS. An
//! attacher refuses a memfd without those seals, or whose header does not
//! describe the ring it was promised.

use std::io::IoSliceMut;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;

use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use nix::sys::stat::{SFlag, fstat};
use nix::unistd::ftruncate;

use super::RingError;
use super::layout::{Reach, Shared, ring_bytes};

/// A shared mapping, unmapped on drop.
#[derive(Debug)]
struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; access rules are the ring's.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn new(fd: BorrowedFd<'_>, len: usize) -> Result<Self, RingError> {
        let size = NonZeroUsize::new(len).expect("rings are never empty");
        // SAFETY: a fresh shared mapping of a file we hold open; nothing
        // else in this process refers to the address range yet.
        let base = unsafe {
            mmap(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED | MapFlags::MAP_POPULATE,
                fd,
                0,
            )
        }
        .map_err(|errno| RingError::Os {
            what: "mmap ring memory",
            source: errno.into(),
        })?;
        Ok(Self {
            base: base.cast(),
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the range was mapped by Mapping::new and nothing refers to
        // it any more: every Shared holding this Mapping is gone.
        let _ = unsafe { munmap(self.base.cast(), self.len) };
    }
}

/// Bytes of the memfd for a ring: the ring rounded up to whole pages.
fn file_bytes(slots: u64) -> usize {
    ring_bytes(slots).next_multiple_of(4096)
}

/// Maps a failed system call to [`RingError::Os`].
fn errno(what: &'static str) -> impl Fn(nix::errno::Errno) -> RingError {
    move |errno| RingError::Os {
        what,
        source: errno.into(),
    }
}

/// Creates a ring in a new, sealed memfd, to hand to a peer. Returns the
/// memfd and this process's view of the ring.
pub(super) fn create(slots: u64, epoch: u64) -> Result<(OwnedFd, Shared), RingError> {
    let (fd, mapping) = create_mapped(slots)?;
    let base = mapping.base;
    // SAFETY: the mapping is page-aligned, holds at least ring_bytes(slots)
    // bytes, lives as long as the Shared that owns it, and nobody else has
    // the memfd yet; a peer will map it, as Reach::Peers says.
    let shared = unsafe { Shared::new(base, slots, Box::new(mapping), Some(epoch), Reach::Peers) };
    Ok((fd, shared))
}

/// Creates a ring in a memfd that only this process ever maps: the memfd
/// is closed before this returns, so the mapping is its only handle.
pub(super) fn create_private(slots: u64) -> Result<Shared, RingError> {
    let (fd, mapping) = create_mapped(slots)?;
    drop(fd);
    let base = mapping.base;
    // SAFETY: as in create; the memfd was never shared and is closed, so
    // no other process can map this memory (Reach::ThisProcess).
    let shared =
        unsafe { Shared::new(base, slots, Box::new(mapping), Some(1), Reach::ThisProcess) };
    Ok(shared)
}

/// A new memfd sized for `slots`, sealed against resizing, and mapped.
fn create_mapped(slots: u64) -> Result<(OwnedFd, Mapping), RingError> {
    let fd = memfd_create(
        "pinwheel-ring",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )
    .map_err(errno("memfd_create"))?;
    let len = file_bytes(slots);
    ftruncate(&fd, len as i64).map_err(errno("size ring memfd"))?;
    let seals = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL;
    fcntl(&fd, FcntlArg::F_ADD_SEALS(seals)).map_err(errno("seal ring memfd"))?;
    let mapping = Mapping::new(fd.as_fd(), len)?;
    Ok((fd, mapping))
}

/// Attaches to a ring another process created, checking that the memfd is
/// sealed and sized for `slots` and that its header says so too, at
/// `epoch`.
pub(super) fn attach(fd: &OwnedFd, slots: u64, epoch: u64) -> Result<Shared, RingError> {
    let seals = fcntl(fd, FcntlArg::F_GET_SEALS).map_err(errno("read ring memfd seals"))?;
    let needed = (SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW).bits();
    if seals & needed != needed {
        return Err(RingError::Handoff {
            reason: format!("ring memfd is not sealed against resizing (seals {seals:#x})"),
        });
    }
    let size = fstat(fd).map_err(errno("stat ring memfd"))?.st_size;
    let len = file_bytes(slots);
    if usize::try_from(size).ok() != Some(len) {
        return Err(RingError::Handoff {
            reason: format!("ring memfd has {size} bytes; a {slots}-slot ring needs {len}"),
        });
    }
    let mapping = Mapping::new(fd.as_fd(), len)?;
    let base = mapping.base;
    // SAFETY: as in create; the control block was written by the creator
    // before it sent the memfd, and the creator maps it too (Reach::Peers).
    let shared = unsafe { Shared::new(base, slots, Box::new(mapping), None, Reach::Peers) };
    shared
        .check_header(epoch)
        .map_err(|fault| RingError::Handoff {
            reason: fault.to_string(),
        })?;
    Ok(shared)
}

/// Takes over a socket descriptor inherited from a parent (its number came
/// from the environment), after checking it is an open socket.
pub(super) fn inherited_socket(fd: RawFd) -> Result<OwnedFd, RingError> {
    if fd < 3 {
        return Err(RingError::Handoff {
            reason: format!("descriptor {fd} is a standard stream, not a peer link"),
        });
    }
    // SAFETY: only used for fstat below, while fd is known to be open or
    // fstat fails with EBADF.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let stat = fstat(borrowed).map_err(|errno| RingError::Handoff {
        reason: format!("descriptor {fd}: {errno}"),
    })?;
    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFSOCK {
        return Err(RingError::Handoff {
            reason: format!("descriptor {fd} is not a socket"),
        });
    }
    // SAFETY: the parent left this open socket for this process and nothing
    // else in it owns the descriptor; from here the OwnedFd closes it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Receives one message and the descriptors sent with it (close-on-exec).
/// Truncated messages or descriptor lists are refused, closing whatever
/// descriptors did arrive.
pub(super) fn recv_with_fds(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
) -> Result<(usize, Vec<OwnedFd>), RingError> {
    recv_with_fds_flags(socket, buf, MsgFlags::empty())?.ok_or(RingError::Os {
        what: "receive ring handoff",
        source: std::io::ErrorKind::WouldBlock.into(),
    })
}

/// [`recv_with_fds`] with extra flags (`MSG_DONTWAIT`): `None` when that
/// finds nothing to read.
pub(super) fn recv_with_fds_flags(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
    flags: MsgFlags,
) -> Result<Option<(usize, Vec<OwnedFd>)>, RingError> {
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let mut iov = [IoSliceMut::new(buf)];
    let message = match recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC | flags,
    ) {
        Ok(message) => message,
        Err(nix::errno::Errno::EAGAIN) => return Ok(None),
        Err(nix::errno::Errno::ECONNRESET) => return Err(RingError::PeerGone),
        Err(errno) => {
            return Err(RingError::Os {
                what: "receive on peer link",
                source: errno.into(),
            });
        }
    };
    let mut fds = Vec::new();
    for cmsg in message.cmsgs().map_err(|errno| RingError::Os {
        what: "read handoff descriptors",
        source: errno.into(),
    })? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            // SAFETY: SCM_RIGHTS just installed these descriptors in this
            // process; nothing else refers to them.
            fds.extend(
                raw.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    if message
        .flags
        .intersects(MsgFlags::MSG_CTRUNC | MsgFlags::MSG_TRUNC)
    {
        return Err(RingError::Handoff {
            reason: "handoff message or its descriptors were truncated".into(),
        });
    }
    Ok(Some((message.bytes, fds)))
}

/// Arranges for `fd` to become descriptor `target` in the child `command`
/// starts, and in no other process: the parent's descriptors all stay
/// close-on-exec, so a child another thread spawns meanwhile cannot
/// inherit it (and keep a dead peer's link open).
pub(super) fn pass_to_child(
    command: &mut std::process::Command,
    fd: BorrowedFd<'_>,
    target: RawFd,
) {
    use std::os::unix::process::CommandExt;
    let source = fd.as_raw_fd();
    let hook = move || {
        // After fork, before exec, in the child: only async-signal-safe
        // calls. dup2 leaves the new descriptor without close-on-exec; when
        // source and target coincide it does nothing, so clear the flag.
        let result = if source == target {
            // SAFETY: a plain system call on a descriptor the child owns.
            unsafe { nix::libc::fcntl(target, nix::libc::F_SETFD, 0) }
        } else {
            // SAFETY: as above.
            unsafe { nix::libc::dup2(source, target) }
        };
        if result < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    // SAFETY: the hook only calls dup2 or fcntl, which are async-signal-safe,
    // and allocates nothing.
    unsafe { command.pre_exec(hook) };
}
