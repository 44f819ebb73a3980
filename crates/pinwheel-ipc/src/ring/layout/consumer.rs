//! The consumer end of a ring: finds published frames, hands out their
//! bytes, and returns slots through `tail`.
//!
//! On a ring only this process maps a frame is read in place; on one a
//! peer maps it is copied out to private memory (atomic word copies) and
//! read only there, so the peer cannot change it while it is checked or
//! used. The copy buffer is allocated once, at the largest frame, in
//! whole words.

use std::sync::Arc;

use super::{
    FRAME_HEADER_BYTES, KIND_DATA, KIND_PAD, Reach, SLOT_BYTES, Shared, WORD_BYTES, frame_slots,
};
use crate::ring::RingError;
use crate::ring::sync::{Ordering, fence};

/// A frame found by [`ConsumerEnd::next_frame`].
#[derive(Debug, Clone, Copy)]
pub(in crate::ring) struct FrameAt {
    offset: usize,
    len: usize,
    slots: u64,
}

impl FrameAt {
    /// Payload bytes (for the models, which copy frames out themselves).
    #[cfg(loom)]
    pub(in crate::ring) fn len(&self) -> usize {
        self.len
    }
}

/// The consumer side: reads frames, returns slots through `tail`.
pub(in crate::ring) struct ConsumerEnd {
    shared: Arc<Shared>,
    tail: u64,
    published: u64,
    head_cache: u64,
    max_frame: usize,
    /// Whether a peer maps the ring: then every index it writes is checked
    /// and frames are copied out before they are read.
    untrusted: bool,
    /// The epoch this end expects in the header.
    epoch: u64,
    /// Private memory frames of a ring a peer maps are copied to, whole
    /// words (aligned for the archived envelope, which needs at most 8);
    /// empty on in-process rings.
    copy: Box<[u64]>,
}

impl ConsumerEnd {
    /// The consumer end of `shared`, continuing from its current tail.
    /// Frames longer than `max_frame` are corruption.
    pub(in crate::ring) fn new(shared: Arc<Shared>, max_frame: usize) -> Self {
        let control = shared.control();
        // SYNC: Relaxed; only this end writes tail.
        let tail = control.consumer.tail.load(Ordering::Relaxed);
        let untrusted = shared.reach() == Reach::Peers;
        let copy = if untrusted {
            vec![0; max_frame.div_ceil(WORD_BYTES)].into_boxed_slice()
        } else {
            Box::default()
        };
        Self {
            epoch: shared.epoch(),
            shared,
            tail,
            published: tail,
            head_cache: tail,
            max_frame,
            untrusted,
            copy,
        }
    }

    /// Whether frames are read in place (a ring only this process maps).
    #[cfg(not(loom))]
    pub(in crate::ring) fn reads_in_place(&self) -> bool {
        !self.untrusted
    }

    #[inline(always)]
    fn refresh_head(&mut self) -> Result<(), RingError> {
        // SYNC: Acquire pairs with the Release store in ProducerEnd::publish:
        // frames below head are fully written.
        let head = self.shared.control().producer.head.load(Ordering::Acquire);
        // Wrapping and saturating: a peer may have scribbled this end's
        // starting tail too (it is read from the header at attach).
        let ahead = head.wrapping_sub(self.tail);
        if self.untrusted && (head < self.head_cache || ahead > self.shared.slots()) {
            return Err(self.bad_head(head));
        }
        self.head_cache = head;
        Ok(())
    }

    /// The error for a head outside the range this end accepts.
    #[cold]
    fn bad_head(&self, head: u64) -> RingError {
        let last = self.tail.saturating_add(self.shared.slots());
        RingError::Corrupt {
            what: "head",
            value: head,
            expected: format!("{}..={last}", self.head_cache),
        }
    }

    /// Slots between the tail and the last head this end read.
    #[cfg(not(loom))]
    pub(in crate::ring) fn backlog(&self) -> u64 {
        self.head_cache - self.tail
    }

    /// The next published frame, skipping pads; `None` when the ring is
    /// empty. The frame stays readable until [`ConsumerEnd::release`].
    ///
    /// Inline, with the pads and the errors out of line: this runs between
    /// seeing a frame and reading it, on the round trip's critical path.
    #[inline(always)]
    pub(in crate::ring) fn next_frame(&mut self) -> Result<Option<FrameAt>, RingError> {
        loop {
            if self.tail == self.head_cache {
                self.refresh_head()?;
                if self.tail == self.head_cache {
                    return Ok(None);
                }
            }
            // Slot `tail` lies in [tail, head): published, and not written
            // by the producer until tail moves past it (a peer may write it
            // anyway: the header is checked below).
            let offset = self.shared.offset(self.tail);
            let header = self.shared.data.load_u64(offset);
            let len = (header & u64::from(u32::MAX)) as usize;
            let slots = frame_slots(len);
            if (header >> 32) as u32 == KIND_DATA
                && len <= self.max_frame
                && slots <= self.readable()
            {
                return Ok(Some(FrameAt {
                    offset: offset + FRAME_HEADER_BYTES,
                    len,
                    slots,
                }));
            }
            self.skip_pad(header)?;
        }
    }

    /// Slots from the tail that one frame may span: published, and before
    /// the ring's end (a frame never wraps).
    #[inline]
    fn readable(&self) -> u64 {
        self.shared
            .to_end(self.tail)
            .min(self.head_cache - self.tail)
    }

    /// Moves the tail past the pad whose header is `header`, or refuses
    /// the header: it is neither a data frame [`ConsumerEnd::next_frame`]
    /// can read nor a pad to the ring's end.
    #[cold]
    fn skip_pad(&mut self, header: u64) -> Result<(), RingError> {
        let len = (header & u64::from(u32::MAX)) as usize;
        let kind = (header >> 32) as u32;
        let to_end = self.shared.to_end(self.tail);
        let published = self.head_cache - self.tail;
        if kind == KIND_PAD
            && len == to_end as usize * SLOT_BYTES - FRAME_HEADER_BYTES
            && to_end <= published
        {
            self.tail += to_end;
            return Ok(());
        }
        let most = self
            .max_frame
            .min((self.readable() as usize * SLOT_BYTES).saturating_sub(FRAME_HEADER_BYTES));
        Err(RingError::Corrupt {
            what: "frame header",
            value: header,
            expected: format!("a data frame of at most {most} bytes, or a pad of {to_end} slots"),
        })
    }

    /// Hands a frame's bytes to `read`: in place on a ring only this
    /// process maps, else from a private copy the peer cannot change.
    #[cfg(not(loom))]
    #[inline]
    pub(in crate::ring) fn read<R>(&mut self, frame: &FrameAt, read: impl FnOnce(&[u8]) -> R) -> R {
        if let Some(memory) = self.shared.data.in_place() {
            // SAFETY: no other process maps the ring (`in_place` proves it);
            // next_frame checked the frame lies in published slots, which
            // the producer leaves alone until release moves tail past them,
            // and release needs `&mut self`, so not during this borrow.
            return read(unsafe { memory.slice(frame.offset, frame.len) });
        }
        // Whole words: the frame's last word lies inside its last slot,
        // published with it, so the bytes past `len` are this end's too.
        let copy = &mut self.copy[..frame.len.div_ceil(WORD_BYTES)];
        self.shared.data.load_words(frame.offset, copy);
        // SAFETY: the words are initialized private memory, and any bytes
        // are valid u8s; the view borrows `copy` and covers at most its
        // `copy.len() * 8` bytes.
        let bytes = unsafe { std::slice::from_raw_parts(copy.as_ptr().cast::<u8>(), frame.len) };
        read(bytes)
    }

    /// Copies a frame's bytes into `dst` (`dst.len()` must be the frame's
    /// length): how the models read, exercising the copy a peer's ring
    /// uses.
    #[cfg(loom)]
    pub(in crate::ring) fn copy_frame(&self, frame: &FrameAt, dst: &mut [u8]) {
        assert_eq!(
            dst.len(),
            frame.len,
            "copy_frame needs a buffer of the frame's length"
        );
        // Published, unreleased slots: the producer leaves them alone.
        self.shared.data.copy_out(frame.offset, dst);
    }

    /// Gives a frame's slots back. Returns true when the producer was
    /// parked for space and must be woken.
    #[inline]
    pub(in crate::ring) fn release(&mut self, frame: FrameAt, doorbell: bool) -> bool {
        self.tail += frame.slots;
        if self.tail - self.published >= (self.shared.slots() / 4).max(1) {
            return self.publish_tail(doorbell);
        }
        false
    }

    /// Publishes the tail now (the ring was found empty, or before
    /// parking). Returns true when the producer must be woken.
    pub(in crate::ring) fn publish_tail(&mut self, doorbell: bool) -> bool {
        if self.tail == self.published {
            return false;
        }
        let lines = self.shared.control();
        // SYNC: Release pairs with the Acquire load in ProducerEnd::refresh_tail:
        // reads of released slots happen before the producer reuses them.
        lines.consumer.tail.store(self.tail, Ordering::Release);
        self.published = self.tail;
        if !doorbell {
            return false;
        }
        // SYNC: pairs with the fence in ProducerEnd::arm (Dekker).
        fence(Ordering::SeqCst);
        // SYNC: Relaxed, ordered by the fence; see ProducerEnd::publish.
        lines.producer.waiting.load(Ordering::Relaxed) != 0
            && lines.producer.waiting.swap(0, Ordering::Relaxed) != 0
    }

    /// Declares the consumer asleep. Returns false (and undeclares) if a
    /// frame was published meanwhile, so the caller must not sleep. A
    /// peer's ring has its header checked first.
    pub(in crate::ring) fn arm(&mut self) -> Result<bool, RingError> {
        if self.untrusted {
            self.shared.check_header(self.epoch)?;
        }
        let lines = self.shared.control();
        // SYNC: Relaxed store, ordered by the fence below.
        lines.consumer.waiting.store(1, Ordering::Relaxed);
        // SYNC: pairs with the fence in ProducerEnd::publish (Dekker).
        fence(Ordering::SeqCst);
        self.refresh_head()?;
        if self.head_cache != self.tail {
            self.disarm();
            return Ok(false);
        }
        Ok(true)
    }

    /// Clears the consumer's waiting flag.
    pub(in crate::ring) fn disarm(&self) {
        // SYNC: Relaxed; a stale flag only costs one spare doorbell.
        self.shared
            .control()
            .consumer
            .waiting
            .store(0, Ordering::Relaxed);
    }

    /// The ring's memory, for tests that inspect the header.
    #[cfg(test)]
    pub(in crate::ring) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Empties the ring under a new epoch (after the producer died).
    #[cfg(not(loom))]
    pub(in crate::ring) fn reset(&mut self, epoch: u64) {
        self.shared.reset(epoch);
        self.epoch = epoch;
        self.tail = 0;
        self.published = 0;
        self.head_cache = 0;
    }

    /// Whether published frames are waiting (refreshing head).
    #[cfg(not(loom))]
    #[inline]
    pub(in crate::ring) fn has_frames(&mut self) -> Result<bool, RingError> {
        if self.tail == self.head_cache {
            self.refresh_head()?;
        }
        Ok(self.tail != self.head_cache)
    }
}
