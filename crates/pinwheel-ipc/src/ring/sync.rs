//! Synchronisation primitives of the ring, switched to loom's under
//! `cfg(loom)` so the loom models run the ring's real code.
//!
//! * Atomics: `std::sync::atomic`, or `loom::sync::atomic` in models.
//! * [`DataRegion`]: the frame bytes. Normally raw memory (a shared mapping
//!   or a heap buffer) copied with `memcpy`; in models one loom `UnsafeCell`
//!   per byte, so loom reports a frame read that is not ordered after its
//!   write.
//! * [`Doorbell`]: how a parked side is woken. Normally an eventfd (one
//!   `write` to ring, `read` to wait; awaitable on glommio's io_uring
//!   reactor through a `BufferedFile` over a duplicate of the fd); in models
//!   a loom mutex and condvar with the same counting semantics.
//!
//! Bytes from another process: [`DataRegion::copy_out`] copies with a plain
//! `memcpy` even though a hostile peer may write the bytes during the copy.
//! The copy lands in private memory and is validated before use and never
//! read from shared memory again, so a torn copy can only be rejected
//! garbage, never a time-of-check/time-of-use bug.

#[cfg(loom)]
pub(super) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
#[cfg(not(loom))]
pub(super) use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

#[cfg(not(loom))]
pub(super) use self::raw::{DataRegion, Doorbell};

#[cfg(loom)]
pub(super) use self::model::{DataRegion, Doorbell};

#[cfg(not(loom))]
mod raw {
    use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
    #[cfg(feature = "glommio")]
    use std::os::fd::{FromRawFd, IntoRawFd};
    use std::ptr::NonNull;
    use std::time::Duration;

    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use nix::sys::eventfd::{EfdFlags, EventFd};

    /// The frame bytes of a ring: `len` bytes at `base`, owned by a
    /// mapping or heap buffer that outlives every `DataRegion` over it.
    #[derive(Debug)]
    pub(in crate::ring) struct DataRegion {
        base: NonNull<u8>,
        len: usize,
    }

    // SAFETY: a DataRegion is a pointer into memory that stays mapped while
    // the ring's owner (held next to it) lives; which side may touch which
    // bytes is decided by the ring protocol, not by the thread.
    unsafe impl Send for DataRegion {}

    impl DataRegion {
        /// Wraps memory.
        ///
        /// # Safety
        ///
        /// `base..base + len` must be valid for reads and writes, and stay
        /// so for as long as the region is used.
        pub(in crate::ring) unsafe fn new(base: NonNull<u8>, len: usize) -> Self {
            Self { base, len }
        }

        fn check(&self, offset: usize, len: usize) {
            assert!(
                offset.checked_add(len).is_some_and(|end| end <= self.len),
                "ring region access {offset}+{len} outside {} bytes",
                self.len
            );
        }

        /// Copies `src` into the region at `offset`.
        ///
        /// # Safety
        ///
        /// The other side must not access these bytes until they are
        /// published (the ring's head store).
        pub(in crate::ring) unsafe fn copy_in(&self, offset: usize, src: &[u8]) {
            self.check(offset, src.len());
            // SAFETY: in bounds (checked above); exclusive by the caller's
            // contract; `src` is private memory, so the ranges cannot overlap.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    src.as_ptr(),
                    self.base.as_ptr().wrapping_add(offset),
                    src.len(),
                )
            }
        }

        /// Copies bytes at `offset` into `dst`.
        ///
        /// # Safety
        ///
        /// The bytes must have been published to this side. A hostile peer
        /// may still write them; the module doc says why that is harmless.
        pub(in crate::ring) unsafe fn copy_out(&self, offset: usize, dst: &mut [u8]) {
            self.check(offset, dst.len());
            // SAFETY: in bounds (checked above); `dst` is private memory.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    self.base.as_ptr().wrapping_add(offset),
                    dst.as_mut_ptr(),
                    dst.len(),
                )
            }
        }

        /// Writes a little-endian u64 at an 8-byte aligned `offset`.
        ///
        /// # Safety
        ///
        /// As for [`DataRegion::copy_in`].
        #[inline]
        pub(in crate::ring) unsafe fn store_u64(&self, offset: usize, value: u64) {
            self.check(offset, 8);
            assert!(offset.is_multiple_of(8), "frame headers are 8-byte aligned");
            let place = self.base.as_ptr().wrapping_add(offset).cast::<u64>();
            // SAFETY: in bounds and aligned (checked above; the base is
            // 128-byte aligned); exclusive by the caller's contract.
            unsafe { place.write(value.to_le()) }
        }

        /// Reads a little-endian u64 at an 8-byte aligned `offset`.
        ///
        /// # Safety
        ///
        /// As for [`DataRegion::copy_out`].
        #[inline]
        pub(in crate::ring) unsafe fn load_u64(&self, offset: usize) -> u64 {
            self.check(offset, 8);
            assert!(offset.is_multiple_of(8), "frame headers are 8-byte aligned");
            let place = self.base.as_ptr().wrapping_add(offset).cast::<u64>();
            // SAFETY: in bounds and aligned (checked above); published by
            // the caller's contract. A racing hostile write only yields a
            // value that the caller then validates.
            u64::from_le(unsafe { place.read_volatile() })
        }

        /// Asks the CPU to fetch the line at `offset` for writing
        /// (`prefetchw`), so the store that follows does not stall on taking
        /// the line back from the other core. Out-of-range offsets are
        /// ignored; on CPUs without the instruction it is a no-op.
        #[inline]
        pub(in crate::ring) fn prefetch_write(&self, offset: usize) {
            if offset >= self.len {
                return;
            }
            #[cfg(target_arch = "x86_64")]
            // SAFETY: prefetchw is a hint: it reads no value, writes nothing,
            // cannot fault, and the address is inside the region anyway.
            unsafe {
                std::arch::asm!(
                    "prefetchw [{line}]",
                    line = in(reg) self.base.as_ptr().wrapping_add(offset),
                    options(nostack, preserves_flags, readonly)
                );
            }
        }

        /// Borrows published bytes in place (zero-copy reads on trusted
        /// rings).
        ///
        /// # Safety
        ///
        /// The bytes must be published to this side and not written by
        /// anyone until the borrow ends.
        pub(in crate::ring) unsafe fn slice(&self, offset: usize, len: usize) -> &[u8] {
            self.check(offset, len);
            // SAFETY: in bounds (checked above); immutable for the borrow
            // by the caller's contract.
            unsafe { std::slice::from_raw_parts(self.base.as_ptr().wrapping_add(offset), len) }
        }

        /// Borrows bytes to write in place (serializing into the slot).
        ///
        /// # Safety
        ///
        /// The bytes must belong to this side (unpublished producer slots)
        /// and no other borrow of them may exist.
        #[allow(
            clippy::mut_from_ref,
            reason = "exclusivity comes from the ring protocol"
        )]
        pub(in crate::ring) unsafe fn slice_mut(&self, offset: usize, len: usize) -> &mut [u8] {
            self.check(offset, len);
            // SAFETY: in bounds (checked above); exclusive by the caller's
            // contract.
            unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr().wrapping_add(offset), len) }
        }
    }

    /// An eventfd that wakes a parked side of a ring.
    #[derive(Debug)]
    pub(in crate::ring) struct Doorbell {
        fd: EventFd,
    }

    impl Doorbell {
        /// A new doorbell (blocking eventfd, close-on-exec).
        pub(in crate::ring) fn new() -> std::io::Result<Self> {
            Ok(Self {
                fd: EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC)?,
            })
        }

        /// Takes over an eventfd received from another process.
        pub(in crate::ring) fn from_fd(fd: OwnedFd) -> Self {
            // SAFETY: `fd` is an owned, open descriptor; EventFd takes over
            // closing it. A peer could send a non-eventfd descriptor: then
            // reads and writes fail with an error, which callers handle.
            let fd = unsafe { EventFd::from_owned_fd(fd) };
            Self { fd }
        }

        /// The descriptor, to hand to another process.
        pub(in crate::ring) fn as_fd(&self) -> BorrowedFd<'_> {
            self.fd.as_fd()
        }

        /// Wakes the waiter (adds one to the counter).
        pub(in crate::ring) fn ring(&self) -> std::io::Result<()> {
            self.fd.write(1).map(drop).map_err(std::io::Error::from)
        }

        /// Waits until rung or until `timeout`; true when rung.
        pub(in crate::ring) fn wait(&self, timeout: Duration) -> std::io::Result<bool> {
            let millis = u16::try_from(timeout.as_millis().max(1)).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(millis)) {
                Ok(0) | Err(nix::errno::Errno::EINTR) => Ok(false),
                Ok(_) => self.fd.read().map(|_| true).map_err(std::io::Error::from),
                Err(err) => Err(err.into()),
            }
        }

        #[cfg(feature = "glommio")]
        /// A glommio file over a duplicate of the eventfd, to await rings on
        /// the executor's io_uring reactor with [`Doorbell::wait_async`].
        pub(in crate::ring) fn async_handle(&self) -> std::io::Result<glommio::io::BufferedFile> {
            let dup = self.fd.as_fd().try_clone_to_owned()?;
            // SAFETY: `dup` is a fresh owned descriptor that nothing else
            // uses; the BufferedFile takes over closing it.
            Ok(unsafe { glommio::io::BufferedFile::from_raw_fd(dup.into_raw_fd()) })
        }
    }
}

#[cfg(loom)]
mod model {
    use std::time::Duration;

    use loom::cell::UnsafeCell;
    use loom::sync::{Condvar, Mutex};

    /// Frame bytes as loom-tracked cells.
    #[derive(Debug)]
    pub(in crate::ring) struct DataRegion {
        cells: Box<[UnsafeCell<u8>]>,
    }

    impl DataRegion {
        /// A zeroed region of `len` bytes.
        pub(in crate::ring) fn zeroed(len: usize) -> Self {
            Self {
                cells: (0..len).map(|_| UnsafeCell::new(0)).collect(),
            }
        }

        /// See the non-loom version.
        pub(in crate::ring) unsafe fn copy_in(&self, offset: usize, src: &[u8]) {
            for (cell, byte) in self.cells[offset..offset + src.len()].iter().zip(src) {
                // SAFETY: exclusive by the caller's contract; loom checks it.
                cell.with_mut(|p| unsafe { *p = *byte });
            }
        }

        /// No-op in models.
        pub(in crate::ring) fn prefetch_write(&self, _offset: usize) {}

        /// See the non-loom version.
        pub(in crate::ring) unsafe fn store_u64(&self, offset: usize, value: u64) {
            // SAFETY: the caller's contract, checked by loom.
            unsafe { self.copy_in(offset, &value.to_le_bytes()) }
        }

        /// See the non-loom version.
        pub(in crate::ring) unsafe fn load_u64(&self, offset: usize) -> u64 {
            let mut bytes = [0u8; 8];
            // SAFETY: the caller's contract, checked by loom.
            unsafe { self.copy_out(offset, &mut bytes) };
            u64::from_le_bytes(bytes)
        }

        /// See the non-loom version.
        pub(in crate::ring) unsafe fn copy_out(&self, offset: usize, dst: &mut [u8]) {
            for (cell, byte) in self.cells[offset..offset + dst.len()].iter().zip(dst) {
                // SAFETY: published by the caller's contract; loom checks it.
                *byte = cell.with(|p| unsafe { *p });
            }
        }
    }

    /// A counting doorbell on a loom mutex and condvar.
    #[derive(Debug)]
    pub(in crate::ring) struct Doorbell {
        count: Mutex<u64>,
        rung: Condvar,
    }

    impl Doorbell {
        /// A new doorbell.
        pub(in crate::ring) fn new() -> std::io::Result<Self> {
            Ok(Self {
                count: Mutex::new(0),
                rung: Condvar::new(),
            })
        }

        /// Wakes the waiter.
        pub(in crate::ring) fn ring(&self) -> std::io::Result<()> {
            *self.count.lock().expect("model mutex") += 1;
            self.rung.notify_one();
            Ok(())
        }

        /// Waits until rung. Models have no clock: a lost wake-up shows as
        /// a deadlock, which loom reports.
        pub(in crate::ring) fn wait(&self, _timeout: Duration) -> std::io::Result<bool> {
            let mut count = self.count.lock().expect("model mutex");
            while *count == 0 {
                count = self.rung.wait(count).expect("model condvar");
            }
            *count = 0;
            Ok(true)
        }
    }
}
