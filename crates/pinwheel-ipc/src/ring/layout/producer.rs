//! The producer end of a ring: finds room for frames, writes them, and
//! publishes `head`.
//!
//! Writing a frame whose length is known up front ([`ProducerEnd::write_bytes`])
//! is one copy into the slots: a `memcpy` on a ring only this process maps,
//! atomic words on one a peer maps. A frame the caller serializes
//! ([`ProducerEnd::write_frame`]) is written in place on a ring only this
//! process maps, and into private staging memory first on a ring a peer
//! maps: rkyv writes through a `&mut [u8]`, and such a reference to bytes a
//! peer may write at the same moment would be undefined behaviour. The
//! staging buffer is allocated once, at the largest frame. A frame known
//! as a byte prefix and words ([`ProducerEnd::write_words`]: an envelope
//! of an in-line kind) is written straight in on either kind of ring.

use std::sync::Arc;

use rkyv::util::AlignedVec;

use super::{
    FRAME_HEADER_BYTES, KIND_DATA, KIND_PAD, Reach, SLOT_BYTES, Shared, WORD_BYTES, frame_slots,
};
use crate::ring::RingError;
use crate::ring::sync::{Ordering, fence};

/// How far ahead of `head` the producer prefetches slots for writing
/// while it writes a batch, and how many: far enough that the line has
/// arrived by the time it is written, near enough that it is still there.
const PREFETCH_AHEAD: u64 = 16;
const PREFETCH_SLOTS: u64 = 4;
/// Slots from `head` prefetched for the next frame, after a publish and
/// before a staged frame is built: two hold a request with a 64-byte body.
const NEXT_FRAME_SLOTS: u64 = 2;

/// Bytes of a frame of `prefix`, zero padding to a whole word, and
/// `words` words.
fn words_len(prefix: &[u8], words: usize) -> usize {
    prefix.len().next_multiple_of(WORD_BYTES) + words * WORD_BYTES
}

/// Where a writer may put one frame.
struct Room {
    slot: u64,
    capacity: usize,
    limit: Limit,
}

/// What limited a [`Room`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Limit {
    MaxFrame,
    EndOfRing,
    FreeSpace,
}

/// Why a frame could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::ring) enum WriteFail {
    /// No room until the consumer frees slots.
    Full,
    /// Larger than the ring's largest frame.
    TooLarge,
}

/// The producer side: writes frames, publishes `head`.
pub(in crate::ring) struct ProducerEnd {
    shared: Arc<Shared>,
    head: u64,
    published: u64,
    tail_cache: u64,
    max_frame_slots: u64,
    /// Whether a peer maps the ring: then every index it writes is checked
    /// and frames are staged in private memory.
    untrusted: bool,
    /// The epoch this end expects in the header.
    epoch: u64,
    /// Private memory where serialized frames are built before they are
    /// copied into a ring a peer maps; empty on in-process rings.
    staging: AlignedVec<16>,
}

impl ProducerEnd {
    /// The producer end of `shared`, continuing from its current head.
    pub(in crate::ring) fn new(shared: Arc<Shared>, max_frame: usize) -> Self {
        let control = shared.control();
        // SYNC: Acquire pairs with the consumer's Release store of tail.
        let tail = control.consumer.tail.load(Ordering::Acquire);
        // SYNC: Relaxed; only this end writes head.
        let head = control.producer.head.load(Ordering::Relaxed);
        let max_frame_slots = frame_slots(max_frame).min(shared.slots());
        let untrusted = shared.reach() == Reach::Peers;
        let mut staging = AlignedVec::new();
        if untrusted {
            staging.resize(
                max_frame_slots as usize * SLOT_BYTES - FRAME_HEADER_BYTES,
                0,
            );
        }
        Self {
            epoch: shared.epoch(),
            shared,
            head,
            published: head,
            tail_cache: tail,
            max_frame_slots,
            untrusted,
            staging,
        }
    }

    /// Reads and checks the consumer's tail.
    fn refresh_tail(&mut self) -> Result<(), RingError> {
        // SYNC: Acquire pairs with the Release store in ConsumerEnd::publish_tail:
        // slots below tail are no longer read.
        let tail = self.shared.control().consumer.tail.load(Ordering::Acquire);
        if self.untrusted && (tail < self.tail_cache || tail > self.published) {
            let expected = format!("{}..={}", self.tail_cache, self.published);
            return Err(RingError::Corrupt {
                what: "tail",
                value: tail,
                expected,
            });
        }
        self.tail_cache = tail;
        Ok(())
    }

    /// Free slots. Wrapping and saturating: an end attached to a ring a
    /// peer scribbled on may start from a `head` below, or too far above,
    /// the tail it read; that shows as no room, and the tail then read
    /// is refused as corrupt, instead of an overflow.
    fn free(&self) -> u64 {
        self.shared
            .slots()
            .saturating_sub(self.head.wrapping_sub(self.tail_cache))
    }

    /// Prefetches, for writing, slots a little ahead of `head` that the
    /// consumer has already given back (a stale tail only makes this more
    /// cautious), while frames are written ahead of their publish (a
    /// batch: streaming), so that frames written later do not stall on
    /// taking their lines back from the consumer's core. Not for a frame
    /// published on its own (a round trip): there nothing is ahead to
    /// hide, and taking the lines just before the write cost the hand ring
    /// 13-20 ns a round trip on the 2-vCPU VM; [`ProducerEnd::publish`]
    /// asks for the next frame's lines instead, once the frame is out.
    #[inline(always)]
    fn prefetch_batch(&self) {
        if self.head == self.published {
            return;
        }
        let end = (PREFETCH_AHEAD + PREFETCH_SLOTS).min(self.free());
        for ahead in PREFETCH_AHEAD..end {
            self.shared
                .data
                .prefetch_write(self.shared.offset(self.head.wrapping_add(ahead)));
        }
    }

    /// Prefetches, for writing, the `slots` slots from `head` if they are
    /// all free now (else none: a constant count unrolls to straight
    /// prefetches).
    #[inline(always)]
    fn prefetch_next(&self, slots: u64) {
        if self.free() < slots {
            return;
        }
        for ahead in 0..slots {
            self.shared
                .data
                .prefetch_write(self.shared.offset(self.head.wrapping_add(ahead)));
        }
    }

    fn room(&self) -> Room {
        let to_end = self.shared.to_end(self.head);
        let free = self.free();
        // Plain comparisons: an iterator over (slots, limit) tuples here
        // compiled to stack shuffles that stalled store forwarding.
        let (mut slots, mut limit) = (self.max_frame_slots, Limit::MaxFrame);
        if to_end < slots {
            (slots, limit) = (to_end, Limit::EndOfRing);
        }
        if free < slots {
            (slots, limit) = (free, Limit::FreeSpace);
        }
        let capacity = (slots as usize * SLOT_BYTES).saturating_sub(FRAME_HEADER_BYTES);
        Room {
            slot: self.head,
            capacity,
            limit,
        }
    }

    /// Writes one frame: `write` gets the payload bytes to fill and returns
    /// how many it used, or `None` if they were too few. In place it may be
    /// called again with more room (after a wrap); staged it is called once
    /// with room for the largest frame. The frame is not visible until
    /// [`ProducerEnd::publish`].
    #[cfg(not(loom))]
    pub(in crate::ring) fn write_frame(
        &mut self,
        mut write: impl FnMut(&mut [u8]) -> Option<usize>,
    ) -> Result<Result<(), WriteFail>, RingError> {
        if self.shared.data.in_place().is_none() {
            return self.write_staged(write);
        }
        if self.free() < self.max_frame_slots {
            self.refresh_tail()?;
        }
        self.prefetch_batch();
        loop {
            let room = self.room();
            if room.capacity > 0 {
                let memory = self.shared.data.in_place().expect("checked above");
                let offset = self.shared.offset(room.slot) + FRAME_HEADER_BYTES;
                // SAFETY: no other process maps the ring (`in_place` proves
                // it), and slots in [head, tail + N) belong to this end, the
                // only producer, until published; `room` lies inside them.
                let payload = unsafe { memory.slice_mut(offset, room.capacity) };
                if let Some(len) = write(payload) {
                    assert!(
                        len <= room.capacity,
                        "writer claims {len} bytes of {}",
                        room.capacity
                    );
                    self.commit(room.slot, len);
                    return Ok(Ok(()));
                }
            }
            match self.after_no_fit(room.limit)? {
                Some(fail) => return Ok(Err(fail)),
                None => continue,
            }
        }
    }

    /// Builds the frame in private staging memory, then copies it in: the
    /// path for rings a peer maps, where no reference to slot bytes may
    /// exist.
    #[cfg(not(loom))]
    fn write_staged(
        &mut self,
        mut write: impl FnMut(&mut [u8]) -> Option<usize>,
    ) -> Result<Result<(), WriteFail>, RingError> {
        // Ask for the first slots now, so taking their lines back from the
        // consumer's core overlaps with building the frame instead of
        // stalling the copy after it.
        self.prefetch_next(NEXT_FRAME_SLOTS);
        let mut staging = std::mem::take(&mut self.staging);
        let result = match write(&mut staging) {
            Some(len) => {
                assert!(
                    len <= staging.len(),
                    "writer claims {len} bytes of {}",
                    staging.len()
                );
                self.write_bytes(&staging[..len])
            }
            None => Ok(Err(WriteFail::TooLarge)),
        };
        self.staging = staging;
        result
    }

    /// Copies `bytes` in as one frame.
    pub(in crate::ring) fn write_bytes(
        &mut self,
        bytes: &[u8],
    ) -> Result<Result<(), WriteFail>, RingError> {
        let slot = match self.reserve(bytes.len())? {
            Ok(slot) => slot,
            Err(fail) => return Ok(Err(fail)),
        };
        self.copy_payload(self.shared.offset(slot) + FRAME_HEADER_BYTES, bytes);
        self.commit(slot, bytes.len());
        Ok(Ok(()))
    }

    /// Writes one frame from its parts: `prefix`, zero padding to a whole
    /// word, then `words`, each stored little-endian. A sender that knows
    /// its frame as such parts (an envelope of an in-line kind) writes them
    /// straight into the slots, with no staging copy on a peer's ring, and
    /// with atomic words on either kind of ring (they zero the padding in
    /// the prefix's last word, which a `memcpy` would leave stale).
    ///
    /// The slow path: senders try [`ProducerEnd::write_words_now`] first,
    /// and come here when the frame does not fit by the cached tail before
    /// the ring's end (refresh the tail, pad, or fail).
    pub(in crate::ring) fn write_words<const N: usize>(
        &mut self,
        prefix: &[u8],
        words: &[u64; N],
    ) -> Result<Result<(), WriteFail>, RingError> {
        let len = words_len(prefix, N);
        if let Err(fail) = self.reserve(len)? {
            return Ok(Err(fail));
        }
        self.store_words(len, prefix, words);
        Ok(Ok(()))
    }

    /// [`ProducerEnd::write_words`] in its common case only: writes the
    /// frame and returns true if it fits now, by the cached tail and before
    /// the ring's end; else writes nothing and returns false.
    #[inline(always)]
    pub(in crate::ring) fn write_words_now<const N: usize>(
        &mut self,
        prefix: &[u8],
        words: &[u64; N],
    ) -> bool {
        let len = words_len(prefix, N);
        if !self.fits_now(frame_slots(len)) {
            return false;
        }
        self.prefetch_batch();
        self.store_words(len, prefix, words);
        true
    }

    /// Stores the frame of `prefix` and `words`, `len` bytes, at `head`
    /// (room found) and moves `head` past it.
    #[inline(always)]
    fn store_words<const N: usize>(&mut self, len: usize, prefix: &[u8], words: &[u64; N]) {
        let header = u64::from(KIND_DATA) << 32 | len as u64;
        self.shared
            .data
            .store_frame(self.shared.offset(self.head), header, prefix, words);
        self.head += frame_slots(len);
    }

    /// Whether a frame of `slots` slots fits at `head` now: free by the
    /// cached tail, before the ring's end, and no larger than the largest.
    #[inline(always)]
    fn fits_now(&self, slots: u64) -> bool {
        slots <= self.free()
            && slots <= self.shared.to_end(self.head)
            && slots <= self.max_frame_slots
    }

    /// Finds room for a frame of `len` bytes: the slot it starts at
    /// (always `head`), after padding to the ring's end if it would not
    /// fit before it. The common case, room before the ring's end by the
    /// cached tail, is a few comparisons; refreshing the tail and padding
    /// are the slow path.
    #[inline(always)]
    fn reserve(&mut self, len: usize) -> Result<Result<u64, WriteFail>, RingError> {
        let slots = frame_slots(len);
        if self.fits_now(slots) {
            self.prefetch_batch();
            return Ok(Ok(self.head));
        }
        if slots > self.max_frame_slots {
            return Ok(Err(WriteFail::TooLarge));
        }
        if self.free() < slots {
            self.refresh_tail()?;
        }
        self.prefetch_batch();
        loop {
            let room = self.room();
            if room.capacity >= len {
                return Ok(Ok(room.slot));
            }
            if let Some(fail) = self.after_no_fit(room.limit)? {
                return Ok(Err(fail));
            }
        }
    }

    /// Copies a payload into unpublished slots of this end (`[head, tail +
    /// N)`): one `memcpy` on a ring only this process maps, atomic words on
    /// one a peer maps.
    fn copy_payload(&self, offset: usize, bytes: &[u8]) {
        #[cfg(not(loom))]
        if let Some(memory) = self.shared.data.in_place() {
            // SAFETY: no other process maps the ring (`in_place` proves
            // it), and the consumer does not read these slots before head
            // is published past them; the borrow ends with this statement.
            unsafe { memory.slice_mut(offset, bytes.len()) }.copy_from_slice(bytes);
            return;
        }
        self.shared.data.copy_in(offset, bytes);
    }

    /// Decides what to do when a frame did not fit: fail, or make room
    /// (pad to the ring's end, or see newer tail) and try again (`None`).
    fn after_no_fit(&mut self, limit: Limit) -> Result<Option<WriteFail>, RingError> {
        match limit {
            Limit::MaxFrame => Ok(Some(WriteFail::TooLarge)),
            Limit::EndOfRing => {
                let to_end = self.shared.to_end(self.head);
                if self.free() < to_end {
                    self.refresh_tail()?;
                }
                if self.free() < to_end {
                    return Ok(Some(WriteFail::Full));
                }
                self.write_header(
                    self.head,
                    KIND_PAD,
                    to_end as usize * SLOT_BYTES - FRAME_HEADER_BYTES,
                );
                self.head += to_end;
                Ok(None)
            }
            Limit::FreeSpace => {
                let before = self.free();
                self.refresh_tail()?;
                Ok((self.free() == before).then_some(WriteFail::Full))
            }
        }
    }

    fn commit(&mut self, slot: u64, len: usize) {
        self.write_header(slot, KIND_DATA, len);
        self.head += frame_slots(len);
    }

    fn write_header(&self, slot: u64, kind: u32, len: usize) {
        let header = u64::from(kind) << 32 | len as u64;
        // The frame's first slot, an unpublished slot of this end.
        self.shared.data.store_u64(self.shared.offset(slot), header);
    }

    /// Frames written but not yet published.
    #[cfg(not(loom))]
    pub(in crate::ring) fn pending(&self) -> bool {
        self.head != self.published
    }

    /// Publishes every frame written so far. Returns true when the consumer
    /// was parked and must be woken (its `waiting` flag is now cleared).
    /// With `doorbell` false (a spinning consumer) no fence is paid.
    #[inline]
    pub(in crate::ring) fn publish(&mut self, doorbell: bool) -> bool {
        if self.head == self.published {
            return false;
        }
        let lines = self.shared.control();
        // SYNC: Release pairs with the Acquire load of head in
        // ConsumerEnd::refresh_head: frame bytes written before are visible.
        lines.producer.head.store(self.head, Ordering::Release);
        self.published = self.head;
        // The next frame's first slots are taken back from the consumer's
        // core now, while this thread goes on (waits for a reply, builds
        // its next message), not when that frame is written: on a round
        // trip, that write is on the critical path.
        self.prefetch_next(NEXT_FRAME_SLOTS);
        if !doorbell {
            return false;
        }
        // SYNC: SeqCst fence orders the head store before the waiting load;
        // pairs with the fence in ConsumerEnd::arm (Dekker).
        fence(Ordering::SeqCst);
        // SYNC: Relaxed; the fence above orders it, and the doorbell syscall
        // orders the wake-up.
        lines.consumer.waiting.load(Ordering::Relaxed) != 0
            && lines.consumer.waiting.swap(0, Ordering::Relaxed) != 0
    }

    /// Declares the producer asleep until the consumer frees slots. Returns
    /// false (and undeclares) if slots were freed meanwhile. A peer's ring
    /// has its header checked first: parking is rare enough to afford it.
    pub(in crate::ring) fn arm(&mut self) -> Result<bool, RingError> {
        if self.untrusted {
            self.shared.check_header(self.epoch)?;
        }
        let lines = self.shared.control();
        // SYNC: Relaxed store, ordered by the fence below.
        lines.producer.waiting.store(1, Ordering::Relaxed);
        // SYNC: pairs with the fence in ConsumerEnd::publish_tail (Dekker).
        fence(Ordering::SeqCst);
        let before = self.free();
        self.refresh_tail()?;
        if self.free() > before || self.free() >= self.max_frame_slots {
            self.disarm();
            return Ok(false);
        }
        Ok(true)
    }

    /// Clears the producer's waiting flag.
    pub(in crate::ring) fn disarm(&self) {
        // SYNC: Relaxed; a stale flag only costs one spare doorbell.
        self.shared
            .control()
            .producer
            .waiting
            .store(0, Ordering::Relaxed);
    }

    /// Empties the ring under a new epoch (after the consumer died).
    #[cfg(not(loom))]
    pub(in crate::ring) fn reset(&mut self, epoch: u64) {
        self.shared.reset(epoch);
        self.epoch = epoch;
        self.head = 0;
        self.published = 0;
        self.tail_cache = 0;
    }
}
