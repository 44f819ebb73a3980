//! Synchronisation primitives of the ring, switched to loom's under
//! `cfg(loom)` so the loom models run the ring's real code.
//!
//! * Atomics: `std::sync::atomic`, or `loom::sync::atomic` in models.
//! * [`DataRegion`]: the frame bytes. Normally raw memory (a shared mapping
//!   or a heap buffer) reached only through atomic word copies, plus, for
//!   memory no other process maps, in-place borrows (`InPlace`); in models
//!   one loom `UnsafeCell` per byte, so loom reports a frame read that is
//!   not ordered after its write.
//! * [`Doorbell`]: how a parked side is woken. Normally an eventfd (one
//!   `write` to ring, `read` to wait; awaitable on glommio's io_uring
//!   reactor through a `BufferedFile` over a duplicate of the fd); in models
//!   a loom mutex and condvar with the same counting semantics.
//!
//! Memory a peer process maps ([`Reach::Peers`]). The peer may write any
//! byte at any moment, so Rust must never hold a reference that claims the
//! bytes do not change (`&[u8]`, `&mut [u8]`, `&u64`): a racing write
//! behind one is undefined behaviour, and the compiler may, for example,
//! read a length twice and get two answers. Every access is therefore a
//! `Relaxed` load or store of an `AtomicU64` over exactly the words
//! touched: racing with a peer is then defined (the value is whatever
//! some write left, possibly torn across words, never UB) and costs a
//! plain `mov` on x86-64 and aarch64. The ordering the frames need comes
//! from the ring's index protocol, not from the copies: the producer's
//! Release store of `head` after its word stores, the consumer's Acquire
//! load of `head` before its word loads (and the same for `tail` in the
//! other direction). Word copies were chosen over `read_volatile` loops
//! because a volatile access racing with a write is still a data race in
//! Rust's model, and over byte atomics because they are an eighth of the
//! operations. These loops sit on a round trip's critical path, between
//! seeing a frame and answering it, so they are kept short: bytes are
//! stored four words a step, frames are copied out as whole words into a
//! word buffer (a frame's last word lies inside its last slot), and an
//! in-line envelope is stored as one frame with one bounds check
//! (`store_frame`). What word copies cost when they replaced `memcpy` and
//! in-slot encoding, on the 2-vCPU VM:
//! `pinwheel bench ring` (two processes) 281 to 311 ns median round trip;
//! `cargo bench --bench ring`, one thread, push and pop of a 64-byte-body
//! envelope 153 to 194 ns and of 512 bytes 111 to 165 ns (both ends in
//! one thread through two mappings, which also defeats store forwarding).
//! The copy is private memory, validated before use and never read from
//! shared memory again, so a torn copy is rejected garbage, never a
//! time-of-check/time-of-use bug.
//!
//! Memory only this process maps ([`Reach::ThisProcess`]: heap rings and
//! memfd rings whose descriptor was closed at creation) may also be
//! borrowed in place through `DataRegion::in_place`, which is how
//! in-process rings encode into and read from their slots without a copy
//! (ARCHITECTURE principle 3). There the only other party is this
//! process's other end, which the ring protocol keeps off the borrowed
//! bytes.

#[cfg(loom)]
pub(super) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
#[cfg(not(loom))]
pub(super) use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

#[cfg(not(loom))]
pub(super) use self::raw::{DataRegion, Doorbell};

#[cfg(loom)]
pub(super) use self::model::{DataRegion, Doorbell};

/// Which processes map a ring's memory; fixed when the ring is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reach {
    /// Only this process: the memory was created here and never handed
    /// over. Frames may be borrowed in place and indices are trusted.
    ThisProcess,
    /// This process and a peer that may write any byte at any time:
    /// atomic word copies only, and every index is checked.
    Peers,
}

#[cfg(not(loom))]
mod raw {
    use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
    #[cfg(feature = "glommio")]
    use std::os::fd::{FromRawFd, IntoRawFd};
    use std::ptr::NonNull;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use nix::sys::eventfd::{EfdFlags, EventFd};

    use super::Reach;

    /// Bytes per word of the atomic copies.
    const WORD: usize = 8;

    /// The word whose bytes in memory are `chunk` (8 bytes).
    #[inline]
    fn word_of(chunk: &[u8]) -> u64 {
        let mut bytes = [0u8; WORD];
        bytes.copy_from_slice(chunk);
        u64::from_ne_bytes(bytes)
    }

    /// Stores `src` into `words` (`src.len().div_ceil(8)` of them), one
    /// atomic word at a time, four a step; the last word's bytes past
    /// `src` are zeroed.
    #[inline(always)]
    fn store_bytes(words: &[AtomicU64], src: &[u8]) {
        // Four words a step, unrolled: a loop of single atomic words
        // spends as much on its own compare-and-branch as on the copy.
        let mut quads = src.chunks_exact(4 * WORD);
        for (quad, bytes) in words.chunks_exact(4).zip(&mut quads) {
            for (word, chunk) in quad.iter().zip(bytes.chunks_exact(WORD)) {
                // SYNC: Relaxed; published by the Release store of head in
                // ProducerEnd::publish, which pairs with the Acquire load in
                // ConsumerEnd::refresh_head.
                word.store(word_of(chunk), Ordering::Relaxed);
            }
        }
        let rest = quads.remainder();
        let words = &words[(src.len() - rest.len()) / WORD..];
        let mut chunks = rest.chunks_exact(WORD);
        for (word, chunk) in words.iter().zip(&mut chunks) {
            // SYNC: as above.
            word.store(word_of(chunk), Ordering::Relaxed);
        }
        let tail = chunks.remainder();
        if let (false, Some(last)) = (tail.is_empty(), words.last()) {
            let mut bytes = [0u8; WORD];
            bytes[..tail.len()].copy_from_slice(tail);
            // SYNC: as above.
            last.store(u64::from_ne_bytes(bytes), Ordering::Relaxed);
        }
    }

    /// The panic of [`DataRegion::check`].
    #[cold]
    #[inline(never)]
    fn outside(offset: usize, len: usize, region: usize) -> ! {
        panic!("ring region access {offset}+{len} outside {region} bytes");
    }

    /// The frame bytes of a ring: `len` bytes at `base`, owned by a
    /// mapping or heap buffer that outlives every `DataRegion` over it.
    #[derive(Debug)]
    pub(in crate::ring) struct DataRegion {
        base: NonNull<u8>,
        len: usize,
        reach: Reach,
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
        /// so for as long as the region is used; `base` is 8-byte aligned
        /// and `len` a multiple of 8. With [`Reach::ThisProcess`] no other
        /// process may map the memory, now or later.
        pub(in crate::ring) unsafe fn new(base: NonNull<u8>, len: usize, reach: Reach) -> Self {
            assert!(
                base.as_ptr().addr().is_multiple_of(WORD) && len.is_multiple_of(WORD),
                "ring regions are whole aligned words"
            );
            Self { base, len, reach }
        }

        /// Who maps the memory.
        pub(in crate::ring) fn reach(&self) -> Reach {
            self.reach
        }

        /// Panics unless `len` bytes from `offset` lie inside the region.
        /// In line, with the panic's formatting out of line: every frame
        /// written or read passes here.
        #[inline(always)]
        fn check(&self, offset: usize, len: usize) {
            if offset.checked_add(len).is_none_or(|end| end > self.len) {
                outside(offset, len, self.len);
            }
        }

        /// The words covering `len` bytes from the 8-byte aligned `offset`,
        /// as atomics: a shared reference to them allows anyone, this
        /// process or the peer, to write them meanwhile.
        #[inline(always)]
        fn words(&self, offset: usize, len: usize) -> &[AtomicU64] {
            let count = len.div_ceil(WORD);
            self.check(offset, count * WORD);
            assert!(offset.is_multiple_of(WORD), "ring copies are word aligned");
            let first = self.base.as_ptr().wrapping_add(offset).cast::<AtomicU64>();
            // SAFETY: in bounds and 8-byte aligned (checked above; the base
            // is aligned); AtomicU64 has u64's size and alignment and every
            // bit pattern is valid; the memory lives as long as `self`. The
            // reference covers only these words, and atomics permit
            // concurrent writes, by this process or a peer.
            unsafe { std::slice::from_raw_parts(first, count) }
        }

        /// Copies `src` into the region at the 8-byte aligned `offset`, one
        /// atomic word at a time; the last word's bytes past `src` are
        /// zeroed (they are padding inside the frame's last slot).
        pub(in crate::ring) fn copy_in(&self, offset: usize, src: &[u8]) {
            store_bytes(self.words(offset, src.len()), src);
        }

        /// Copies `dst.len()` words from the 8-byte aligned `offset` into
        /// `dst`, one atomic word at a time, with one bounds check.
        #[inline]
        pub(in crate::ring) fn load_words(&self, offset: usize, dst: &mut [u64]) {
            let words = self.words(offset, dst.len() * WORD);
            // Four words a step, as `store_bytes` stores them.
            let mut quads = dst.chunks_exact_mut(4);
            let mut from = words.chunks_exact(4);
            for (values, quad) in (&mut quads).zip(&mut from) {
                for (value, word) in values.iter_mut().zip(quad) {
                    // SYNC: Relaxed; the Acquire load of head in
                    // ConsumerEnd::refresh_head (pairing with the producer's
                    // Release store) ordered the frame's stores before it.
                    *value = word.load(Ordering::Relaxed);
                }
            }
            for (value, word) in quads.into_remainder().iter_mut().zip(from.remainder()) {
                // SYNC: as above.
                *value = word.load(Ordering::Relaxed);
            }
        }

        /// Writes a whole frame at the 8-byte aligned `offset` with one
        /// bounds check: `prefix` zero-padded to a whole word from the
        /// second word on, then `words`, then `header` into the first word
        /// (all little-endian but the prefix's bytes).
        #[inline(always)]
        pub(in crate::ring) fn store_frame<const N: usize>(
            &self,
            offset: usize,
            header: u64,
            prefix: &[u8],
            words: &[u64; N],
        ) {
            let prefix_words = prefix.len().div_ceil(WORD);
            let frame = self.words(offset, (1 + prefix_words + N) * WORD);
            let (first, rest) = frame.split_first().expect("a frame has a header word");
            let (body, root) = rest.split_at(prefix_words);
            let root: &[AtomicU64; N] = root.try_into().expect("sized for N words above");
            store_bytes(body, prefix);
            for (word, value) in root.iter().zip(words) {
                // SYNC: Relaxed; published by the Release store of head
                // (see copy_in).
                word.store(value.to_le(), Ordering::Relaxed);
            }
            // SYNC: as above.
            first.store(header.to_le(), Ordering::Relaxed);
        }

        /// Writes a little-endian u64 at an 8-byte aligned `offset`.
        #[inline]
        pub(in crate::ring) fn store_u64(&self, offset: usize, value: u64) {
            // SYNC: Relaxed; a frame header is published with its frame by
            // the Release store of head (see copy_in).
            self.words(offset, WORD)[0].store(value.to_le(), Ordering::Relaxed);
        }

        /// Reads a little-endian u64 at an 8-byte aligned `offset`.
        #[inline]
        pub(in crate::ring) fn load_u64(&self, offset: usize) -> u64 {
            // SYNC: Relaxed; ordered after the frame's publication by the
            // Acquire load of head (see copy_out).
            u64::from_le(self.words(offset, WORD)[0].load(Ordering::Relaxed))
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

        /// In-place access, which only memory that no other process maps
        /// has: `None` for [`Reach::Peers`].
        pub(in crate::ring) fn in_place(&self) -> Option<InPlace<'_>> {
            (self.reach == Reach::ThisProcess).then_some(InPlace { region: self })
        }
    }

    /// Proof that a region's memory is mapped by this process alone, and
    /// the in-place borrows that proof allows. Only
    /// [`DataRegion::in_place`] makes one.
    #[derive(Debug, Clone, Copy)]
    pub(in crate::ring) struct InPlace<'a> {
        region: &'a DataRegion,
    }

    impl<'a> InPlace<'a> {
        /// Borrows published bytes in place (zero-copy reads).
        ///
        /// # Safety
        ///
        /// The bytes must be published to this side and written by no one
        /// (this process's other end) until the borrow ends.
        pub(in crate::ring) unsafe fn slice(&self, offset: usize, len: usize) -> &'a [u8] {
            self.region.check(offset, len);
            let start = self.region.base.as_ptr().wrapping_add(offset);
            // SAFETY: in bounds (checked above); no other process maps the
            // memory (the proof this type carries) and this process leaves
            // the bytes alone for the borrow (the caller's contract).
            unsafe { std::slice::from_raw_parts(start, len) }
        }

        /// Borrows bytes to write in place (serializing into the slot).
        ///
        /// # Safety
        ///
        /// The bytes must belong to this side (unpublished producer slots)
        /// and no other borrow or access of them may exist meanwhile.
        #[allow(
            clippy::mut_from_ref,
            reason = "exclusivity comes from the ring protocol"
        )]
        pub(in crate::ring) unsafe fn slice_mut(&self, offset: usize, len: usize) -> &'a mut [u8] {
            self.region.check(offset, len);
            let start = self.region.base.as_ptr().wrapping_add(offset);
            // SAFETY: in bounds (checked above); no other process maps the
            // memory (the proof this type carries) and the caller's
            // contract makes the borrow exclusive within this process.
            unsafe { std::slice::from_raw_parts_mut(start, len) }
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
        /// Takes the count if the bell was rung, without waiting; true
        /// when it was.
        pub(in crate::ring) fn take(&self) -> std::io::Result<bool> {
            let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::ZERO) {
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

    use super::Reach;

    /// Frame bytes as loom-tracked cells. The real region copies with
    /// relaxed atomic words, where a copy not ordered after its write
    /// reads a stale value; here the same copy is a race that fails the
    /// model, which is the stricter check.
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

        /// Models are in-process rings.
        pub(in crate::ring) fn reach(&self) -> Reach {
            Reach::ThisProcess
        }

        /// See the non-loom version.
        pub(in crate::ring) fn copy_in(&self, offset: usize, src: &[u8]) {
            for (cell, byte) in self.cells[offset..offset + src.len()].iter().zip(src) {
                // SAFETY: loom checks the access against every other one to
                // the cell before handing out the pointer, and fails the
                // model on a race instead.
                cell.with_mut(|p| unsafe { *p = *byte });
            }
        }

        /// No-op in models.
        pub(in crate::ring) fn prefetch_write(&self, _offset: usize) {}

        /// See the non-loom version.
        pub(in crate::ring) fn store_u64(&self, offset: usize, value: u64) {
            self.copy_in(offset, &value.to_le_bytes());
        }

        /// See the non-loom version.
        pub(in crate::ring) fn store_frame<const N: usize>(
            &self,
            offset: usize,
            header: u64,
            prefix: &[u8],
            words: &[u64; N],
        ) {
            let at = offset + size_of::<u64>();
            self.copy_in(at, prefix);
            let padded = prefix.len().next_multiple_of(size_of::<u64>());
            self.copy_in(at + prefix.len(), &[0; 8][..padded - prefix.len()]);
            for (i, value) in words.iter().enumerate() {
                self.store_u64(at + padded + i * size_of::<u64>(), *value);
            }
            self.store_u64(offset, header);
        }

        /// See the non-loom version.
        pub(in crate::ring) fn load_u64(&self, offset: usize) -> u64 {
            let mut bytes = [0u8; 8];
            self.copy_out(offset, &mut bytes);
            u64::from_le_bytes(bytes)
        }

        /// See the non-loom version.
        pub(in crate::ring) fn copy_out(&self, offset: usize, dst: &mut [u8]) {
            for (cell, byte) in self.cells[offset..offset + dst.len()].iter().zip(dst) {
                // SAFETY: as in copy_in: loom checks the access first.
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

#[cfg(test)]
#[cfg(not(loom))]
mod tests {
    use std::ptr::NonNull;

    use super::{DataRegion, Reach};

    /// A region over a test-owned buffer of `words` u64s.
    fn region(buffer: &mut [u64], reach: Reach) -> DataRegion {
        let base = NonNull::new(buffer.as_mut_ptr().cast::<u8>()).expect("a slice is non-null");
        // SAFETY: the buffer is 8-byte aligned, valid for its length, and
        // outlives the region in every test below; heap memory is this
        // process's alone.
        unsafe { DataRegion::new(base, buffer.len() * 8, reach) }
    }

    /// The bytes of `words` as they lie in memory.
    fn bytes_of(words: &[u64]) -> Vec<u8> {
        words.iter().flat_map(|word| word.to_ne_bytes()).collect()
    }

    #[test]
    fn word_copies_round_trip_every_length_and_zero_the_rest_of_the_last_word() {
        let mut buffer = [u64::MAX; 17];
        let sut = region(&mut buffer, Reach::Peers);
        for len in 0..=120_usize {
            let src: Vec<u8> = (0..len).map(|i| i as u8 ^ 0x5a).collect();
            sut.copy_in(8, &src);
            let mut back = vec![0u64; len.div_ceil(8)];
            sut.load_words(8, &mut back);
            let back = bytes_of(&back);
            assert_eq!(back[..len], src, "len {len}");
            assert!(back[len..].iter().all(|b| *b == 0), "len {len}: {back:?}");
        }
        assert_eq!(sut.load_u64(0), u64::MAX, "bytes before the copy untouched");
        assert_eq!(
            sut.load_u64(128),
            u64::MAX,
            "bytes after the copy untouched"
        );
    }

    #[test]
    fn a_frame_is_its_header_then_its_prefix_padded_to_a_word_then_its_words() {
        let mut buffer = [u64::MAX; 8];
        let sut = region(&mut buffer, Reach::Peers);
        let prefix: Vec<u8> = (1..=13).collect();
        sut.store_frame(8, 0x0102_0304_0506_0708, &prefix, &[7, 8, 9]);
        let mut back = [0u64; 6];
        sut.load_words(8, &mut back);
        assert_eq!(back[0], 0x0102_0304_0506_0708_u64.to_le());
        let body = bytes_of(&back[1..3]);
        assert_eq!(body[..13], prefix[..]);
        assert_eq!(body[13..], [0, 0, 0], "padding to the word is zero");
        assert_eq!(back[3..], [7_u64.to_le(), 8_u64.to_le(), 9_u64.to_le()]);
        assert_eq!(sut.load_u64(0), u64::MAX, "the word before is untouched");
        assert_eq!(sut.load_u64(56), u64::MAX, "the word after is untouched");
    }

    #[test]
    fn frame_headers_are_little_endian_words() {
        let mut buffer = [0u64; 8];
        let sut = region(&mut buffer, Reach::Peers);
        sut.store_u64(16, 0x0102_0304_0506_0708);
        let mut word = [0u64; 1];
        sut.load_words(16, &mut word);
        assert_eq!(bytes_of(&word), [8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(sut.load_u64(16), 0x0102_0304_0506_0708);
    }

    #[test]
    #[should_panic(expected = "outside 64 bytes")]
    fn a_copy_past_the_region_is_refused_before_any_access() {
        let mut buffer = [0u64; 8];
        region(&mut buffer, Reach::Peers).load_words(56, &mut [0u64; 2]);
    }

    #[test]
    #[should_panic(expected = "outside 64 bytes")]
    fn a_frame_past_the_region_is_refused_before_any_store() {
        let mut buffer = [0u64; 8];
        region(&mut buffer, Reach::Peers).store_frame(40, 0, &[1; 9], &[2, 3]);
    }

    #[test]
    fn only_memory_this_process_alone_maps_can_be_borrowed_in_place() {
        let mut buffer = [0u64; 8];
        assert!(region(&mut buffer, Reach::Peers).in_place().is_none());
        assert!(region(&mut buffer, Reach::ThisProcess).in_place().is_some());
    }
}
