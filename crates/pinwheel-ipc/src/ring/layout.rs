//! The ring's shared-memory layout and its index protocol.
//!
//! One ring is a control block followed by `slots` slots of 64 bytes:
//!
//! ```text
//! offset  size  what (written by)
//!      0   128  Header: magic u64 | version u32 | slot_bytes u32 | slots u64
//!                       | epoch u64 | producer_pid u32 | consumer_pid u32
//!    128   128  ProducerLine: head u64 | waiting u32 (producer; consumer clears)
//!    256   128  ConsumerLine: tail u64 | waiting u32 (consumer; producer clears)
//!    384   64*N slots: frames
//! ```
//!
//! `head` and `tail` count slots from 0 and never wrap in practice (u64);
//! a slot's index is the count masked by `slots - 1`. Each line is 128
//! bytes because Intel's adjacent-line prefetcher pulls 64-byte lines in
//! pairs: two counters 64 bytes apart still share traffic.
//!
//! A frame is an 8-byte header (one little-endian u64: `len` in the low
//! 32 bits, `kind` in the high 32) and `len` payload
//! bytes, rounded up to whole slots, so every payload starts 8 bytes into a
//! 64-byte slot (8-byte aligned). A frame never wraps: when it does not fit
//! before the end, a pad frame fills the rest and the frame starts at slot 0.
//!
//! Protocol. The producer writes frames into slots in `[head, tail + N)`
//! and makes them visible with one Release store of `head` for any number
//! of frames (batched publish); a frame is never visible half-written, so a
//! producer that dies mid-write is never seen. The consumer reads frames in
//! `[tail, head)` and returns slots with a Release store of `tail`, lazily:
//! every quarter ring, and whenever it finds the ring empty.
//!
//! Parking (the Dekker pattern, with a SeqCst fence on both sides): the
//! consumer sets `ConsumerLine.waiting`, fences, and re-reads `head` before
//! it sleeps; the producer stores `head`, fences, and rings the doorbell
//! only if it then sees `waiting` set, clearing it so one sleep costs one
//! wake-up. At least one side sees the other's store, so no wake-up is
//! lost. A full producer waits for space the same way on its own line.
//!
//! Trust. With `untrusted` set (a peer in another process) every index read
//! from shared memory is checked (`head - tail <= slots`, counters only move
//! forward, a frame fits in what was published and before the ring's end,
//! a pad fills exactly the rest) and a violation is an error, never a panic,
//! a hang or an out-of-bounds read.
//!
//! Only this file and `sync.rs` touch ring memory.

#[cfg(not(loom))]
use std::ptr::NonNull;
use std::sync::Arc;

use super::RingError;
use super::sync::{AtomicU32, AtomicU64, DataRegion, Ordering, fence};

/// Bytes per slot: one cache line.
pub const SLOT_BYTES: usize = 64;
/// Bytes of a frame's header.
pub const FRAME_HEADER_BYTES: usize = 8;
/// `b"PWHLRING"` as a little-endian u64.
pub(super) const MAGIC: u64 = u64::from_le_bytes(*b"PWHLRING");
/// Version of this layout.
pub(super) const LAYOUT_VERSION: u32 = 1;
const KIND_DATA: u32 = u32::from_le_bytes(*b"DATA");
const KIND_PAD: u32 = u32::from_le_bytes(*b"PAD!");
/// How far ahead of `head` the producer prefetches slots for writing, and
/// how many: far enough that the line has arrived by the time it is
/// written, near enough that it is still there.
const PREFETCH_AHEAD: u64 = 16;
const PREFETCH_SLOTS: u64 = 4;

/// Ring-wide facts, written once by the creator.
#[repr(C, align(128))]
#[derive(Debug)]
pub(super) struct Header {
    pub magic: u64,
    pub version: u32,
    pub slot_bytes: u32,
    pub slots: u64,
    pub epoch: AtomicU64,
    pub producer_pid: AtomicU32,
    pub consumer_pid: AtomicU32,
}

/// The producer's line.
#[repr(C, align(128))]
#[derive(Debug)]
pub(super) struct ProducerLine {
    pub head: AtomicU64,
    pub waiting: AtomicU32,
}

/// The consumer's line.
#[repr(C, align(128))]
#[derive(Debug)]
pub(super) struct ConsumerLine {
    pub tail: AtomicU64,
    pub waiting: AtomicU32,
}

/// The control block at offset 0 of a ring.
#[repr(C)]
#[derive(Debug)]
pub(super) struct Control {
    pub header: Header,
    pub producer: ProducerLine,
    pub consumer: ConsumerLine,
}

/// Offset of slot 0.
pub const DATA_OFFSET: usize = 384;

#[cfg(not(loom))]
const _: () = {
    assert!(std::mem::size_of::<Control>() == DATA_OFFSET);
    assert!(std::mem::offset_of!(Control, producer) == 128);
    assert!(std::mem::offset_of!(Control, consumer) == 256);
};

/// Total bytes of a ring of `slots` slots.
pub fn ring_bytes(slots: u64) -> usize {
    DATA_OFFSET + slots as usize * SLOT_BYTES
}

/// Slots a frame of `len` payload bytes occupies.
pub fn frame_slots(len: usize) -> u64 {
    (FRAME_HEADER_BYTES + len).div_ceil(SLOT_BYTES) as u64
}

/// One ring's memory as seen by this process: the control block, the slots,
/// and whatever keeps them alive.
pub(super) struct Shared {
    #[cfg(not(loom))]
    control: NonNull<Control>,
    #[cfg(loom)]
    control: Control,
    data: DataRegion,
    slots: u64,
    _owner: Box<dyn Send + Sync>,
}

// SAFETY: the control block is atomics and plain values written once before
// sharing; slot access is governed by the protocol above.
#[cfg(not(loom))]
unsafe impl Send for Shared {}
// SAFETY: as above.
#[cfg(not(loom))]
unsafe impl Sync for Shared {}

impl Shared {
    /// A ring over memory at `base` of `ring_bytes(slots)` bytes. With
    /// `fresh_epoch` the creator writes a new control block (empty ring);
    /// without it the memory already holds one (attaching to a peer's ring,
    /// whose header the caller has checked).
    ///
    /// # Safety
    ///
    /// `base` must be 128-byte aligned and valid for reads and writes of
    /// `ring_bytes(slots)` bytes for as long as `owner` lives, and with
    /// `fresh_epoch` nobody else may access it yet.
    #[cfg(not(loom))]
    pub(super) unsafe fn new(
        base: NonNull<u8>,
        slots: u64,
        owner: Box<dyn Send + Sync>,
        fresh_epoch: Option<u64>,
    ) -> Self {
        if let Some(epoch) = fresh_epoch {
            let control = Control {
                header: Header {
                    magic: MAGIC,
                    version: LAYOUT_VERSION,
                    slot_bytes: SLOT_BYTES as u32,
                    slots,
                    epoch: AtomicU64::new(epoch),
                    producer_pid: AtomicU32::new(0),
                    consumer_pid: AtomicU32::new(0),
                },
                producer: ProducerLine {
                    head: AtomicU64::new(0),
                    waiting: AtomicU32::new(0),
                },
                consumer: ConsumerLine {
                    tail: AtomicU64::new(0),
                    waiting: AtomicU32::new(0),
                },
            };
            // SAFETY: `base` is aligned and valid for a Control (caller's
            // contract) and not yet visible to anyone else.
            unsafe { base.cast::<Control>().write(control) };
        }
        let data_base = base.as_ptr().wrapping_add(DATA_OFFSET);
        let data_base = NonNull::new(data_base).expect("offset of a non-null mapping is non-null");
        Self {
            control: base.cast(),
            // SAFETY: the slots follow the control block inside the
            // caller's memory, valid as long as `owner` (held here).
            data: unsafe { DataRegion::new(data_base, slots as usize * SLOT_BYTES) },
            slots,
            _owner: owner,
        }
    }

    /// A ring in heap memory (in-process rings for tests).
    #[cfg(not(loom))]
    pub(super) fn heap(slots: u64) -> Self {
        /// One 128-byte line, so the buffer is aligned like a mapping.
        #[repr(C, align(128))]
        struct Line([u8; 128]);
        let lines = ring_bytes(slots).div_ceil(128);
        let mut buffer: Box<[Line]> = (0..lines).map(|_| Line([0; 128])).collect();
        let base =
            NonNull::new(buffer.as_mut_ptr().cast::<u8>()).expect("a boxed slice is non-null");
        // SAFETY: the buffer is 128-byte aligned, holds ring_bytes(slots)
        // bytes, and moving the Box into the Shared does not move its heap
        // memory, which lives until the Shared is dropped.
        unsafe { Self::new(base, slots, Box::new(buffer), Some(1)) }
    }

    /// A ring in loom-tracked memory.
    #[cfg(loom)]
    pub(super) fn model(slots: u64) -> Self {
        Self {
            control: Control {
                header: Header {
                    magic: MAGIC,
                    version: LAYOUT_VERSION,
                    slot_bytes: SLOT_BYTES as u32,
                    slots,
                    epoch: AtomicU64::new(1),
                    producer_pid: AtomicU32::new(0),
                    consumer_pid: AtomicU32::new(0),
                },
                producer: ProducerLine {
                    head: AtomicU64::new(0),
                    waiting: AtomicU32::new(0),
                },
                consumer: ConsumerLine {
                    tail: AtomicU64::new(0),
                    waiting: AtomicU32::new(0),
                },
            },
            data: DataRegion::zeroed(slots as usize * SLOT_BYTES),
            slots,
            _owner: Box::new(()),
        }
    }

    /// The control block.
    pub(super) fn control(&self) -> &Control {
        #[cfg(not(loom))]
        {
            // SAFETY: `control` points at a control block inside memory kept
            // alive by `_owner`; it is only accessed through shared
            // references (atomics and write-once fields).
            unsafe { self.control.as_ref() }
        }
        #[cfg(loom)]
        {
            &self.control
        }
    }

    /// Slots in the ring.
    pub(super) fn slots(&self) -> u64 {
        self.slots
    }

    fn offset(&self, slot: u64) -> usize {
        (slot & (self.slots - 1)) as usize * SLOT_BYTES
    }
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
pub(super) enum WriteFail {
    /// No room until the consumer frees slots.
    Full,
    /// Larger than the ring's largest frame.
    TooLarge,
}

/// The producer side: writes frames, publishes `head`.
pub(super) struct ProducerEnd {
    shared: Arc<Shared>,
    head: u64,
    published: u64,
    tail_cache: u64,
    max_frame_slots: u64,
    untrusted: bool,
}

impl ProducerEnd {
    /// The producer end of `shared`, continuing from its current head.
    pub(super) fn new(shared: Arc<Shared>, max_frame: usize, untrusted: bool) -> Self {
        let control = shared.control();
        // SYNC: Acquire pairs with the consumer's Release store of tail.
        let tail = control.consumer.tail.load(Ordering::Acquire);
        // SYNC: Relaxed; only this end writes head.
        let head = control.producer.head.load(Ordering::Relaxed);
        let max_frame_slots = frame_slots(max_frame).min(shared.slots());
        Self {
            shared,
            head,
            published: head,
            tail_cache: tail,
            max_frame_slots,
            untrusted,
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

    fn free(&self) -> u64 {
        self.shared.slots() - (self.head - self.tail_cache)
    }

    /// Prefetches, for writing, slots a little ahead of `head` that the
    /// consumer has already given back (a stale tail only makes this more
    /// cautious), so frames written later do not stall on store misses.
    fn prefetch_ahead(&self) {
        let free = self.free();
        let end = (PREFETCH_AHEAD + PREFETCH_SLOTS).min(free);
        for ahead in PREFETCH_AHEAD..end {
            self.shared
                .data
                .prefetch_write(self.shared.offset(self.head + ahead));
        }
    }

    fn room(&self) -> Room {
        let index = self.head & (self.shared.slots() - 1);
        let to_end = self.shared.slots() - index;
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
    /// how many it used, or `None` if they were too few. It may be called
    /// again with more room (after a wrap). The frame is not visible until
    /// [`ProducerEnd::publish`].
    #[cfg(not(loom))]
    pub(super) fn write_frame(
        &mut self,
        mut write: impl FnMut(&mut [u8]) -> Option<usize>,
    ) -> Result<Result<(), WriteFail>, RingError> {
        if self.free() < self.max_frame_slots {
            self.refresh_tail()?;
        }
        self.prefetch_ahead();
        loop {
            let room = self.room();
            if room.capacity > 0 {
                let offset = self.shared.offset(room.slot) + FRAME_HEADER_BYTES;
                // SAFETY: slots in [head, tail + N) belong to the producer
                // until published; `room` lies inside them and this end is
                // the only producer.
                let payload = unsafe { self.shared.data.slice_mut(offset, room.capacity) };
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

    /// Copies `bytes` in as one frame.
    pub(super) fn write_bytes(&mut self, bytes: &[u8]) -> Result<Result<(), WriteFail>, RingError> {
        if frame_slots(bytes.len()) > self.max_frame_slots {
            return Ok(Err(WriteFail::TooLarge));
        }
        if self.free() < frame_slots(bytes.len()) {
            self.refresh_tail()?;
        }
        self.prefetch_ahead();
        loop {
            let room = self.room();
            if room.capacity >= bytes.len() {
                let offset = self.shared.offset(room.slot) + FRAME_HEADER_BYTES;
                // SAFETY: as in write_frame: unpublished producer slots.
                unsafe { self.shared.data.copy_in(offset, bytes) };
                self.commit(room.slot, bytes.len());
                return Ok(Ok(()));
            }
            match self.after_no_fit(room.limit)? {
                Some(fail) => return Ok(Err(fail)),
                None => continue,
            }
        }
    }

    /// Decides what to do when a frame did not fit: fail, or make room
    /// (pad to the ring's end, or see newer tail) and try again (`None`).
    fn after_no_fit(&mut self, limit: Limit) -> Result<Option<WriteFail>, RingError> {
        match limit {
            Limit::MaxFrame => Ok(Some(WriteFail::TooLarge)),
            Limit::EndOfRing => {
                let to_end = self.shared.slots() - (self.head & (self.shared.slots() - 1));
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
        // SAFETY: the frame's first slot is an unpublished producer slot.
        unsafe { self.shared.data.store_u64(self.shared.offset(slot), header) };
    }

    /// Frames written but not yet published.
    #[cfg(not(loom))]
    pub(super) fn pending(&self) -> bool {
        self.head != self.published
    }

    /// Publishes every frame written so far. Returns true when the consumer
    /// was parked and must be woken (its `waiting` flag is now cleared).
    /// With `doorbell` false (a spinning consumer) no fence is paid.
    pub(super) fn publish(&mut self, doorbell: bool) -> bool {
        if self.head == self.published {
            return false;
        }
        let lines = self.shared.control();
        // SYNC: Release pairs with the Acquire load of head in
        // ConsumerEnd::refresh_head: frame bytes written before are visible.
        lines.producer.head.store(self.head, Ordering::Release);
        self.published = self.head;
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
    /// false (and undeclares) if slots were freed meanwhile.
    pub(super) fn arm(&mut self) -> Result<bool, RingError> {
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
    pub(super) fn disarm(&self) {
        // SYNC: Relaxed; a stale flag only costs one spare doorbell.
        self.shared
            .control()
            .producer
            .waiting
            .store(0, Ordering::Relaxed);
    }

    /// Empties the ring under a new epoch (after the consumer died).
    #[cfg(not(loom))]
    pub(super) fn reset(&mut self, epoch: u64) {
        let control = self.shared.control();
        // SYNC: Release; the next peer learns the epoch through the fd
        // handoff, a syscall that orders everything before it.
        control.header.epoch.store(epoch, Ordering::Release);
        // SYNC: as above.
        control.producer.head.store(0, Ordering::Release);
        // SYNC: as above.
        control.consumer.tail.store(0, Ordering::Release);
        // SYNC: as above.
        control.producer.waiting.store(0, Ordering::Release);
        // SYNC: as above.
        control.consumer.waiting.store(0, Ordering::Release);
        self.head = 0;
        self.published = 0;
        self.tail_cache = 0;
    }
}

/// A frame found by [`ConsumerEnd::next_frame`].
#[derive(Debug, Clone, Copy)]
pub(super) struct FrameAt {
    offset: usize,
    len: usize,
    slots: u64,
}

impl FrameAt {
    /// Payload bytes.
    pub(super) fn len(&self) -> usize {
        self.len
    }
}

/// The consumer side: reads frames, returns slots through `tail`.
pub(super) struct ConsumerEnd {
    shared: Arc<Shared>,
    tail: u64,
    published: u64,
    head_cache: u64,
    max_frame: usize,
    untrusted: bool,
}

impl ConsumerEnd {
    /// The consumer end of `shared`, continuing from its current tail.
    /// Frames longer than `max_frame` are corruption.
    pub(super) fn new(shared: Arc<Shared>, max_frame: usize, untrusted: bool) -> Self {
        let control = shared.control();
        // SYNC: Relaxed; only this end writes tail.
        let tail = control.consumer.tail.load(Ordering::Relaxed);
        Self {
            shared,
            tail,
            published: tail,
            head_cache: tail,
            max_frame,
            untrusted,
        }
    }

    fn refresh_head(&mut self) -> Result<(), RingError> {
        // SYNC: Acquire pairs with the Release store in ProducerEnd::publish:
        // frames below head are fully written.
        let head = self.shared.control().producer.head.load(Ordering::Acquire);
        if self.untrusted && (head < self.head_cache || head - self.tail > self.shared.slots()) {
            let expected = format!("{}..={}", self.head_cache, self.tail + self.shared.slots());
            return Err(RingError::Corrupt {
                what: "head",
                value: head,
                expected,
            });
        }
        self.head_cache = head;
        Ok(())
    }

    /// Slots between the tail and the last head this end read.
    #[cfg(not(loom))]
    pub(super) fn backlog(&self) -> u64 {
        self.head_cache - self.tail
    }

    /// The next published frame, skipping pads; `None` when the ring is
    /// empty. The frame stays readable until [`ConsumerEnd::release`].
    pub(super) fn next_frame(&mut self) -> Result<Option<FrameAt>, RingError> {
        loop {
            if self.tail == self.head_cache {
                self.refresh_head()?;
                if self.tail == self.head_cache {
                    return Ok(None);
                }
            }
            let index = self.tail & (self.shared.slots() - 1);
            let offset = self.shared.offset(self.tail);
            // SAFETY: slot `tail` lies in [tail, head): published, and not
            // written by the producer until tail moves past it.
            let header = unsafe { self.shared.data.load_u64(offset) };
            let len = (header & u64::from(u32::MAX)) as usize;
            let kind = (header >> 32) as u32;
            let to_end = self.shared.slots() - index;
            let published = self.head_cache - self.tail;
            match kind {
                KIND_PAD
                    if len == to_end as usize * SLOT_BYTES - FRAME_HEADER_BYTES
                        && to_end <= published =>
                {
                    self.tail += to_end;
                }
                KIND_DATA if len <= self.max_frame && frame_slots(len) <= to_end.min(published) => {
                    return Ok(Some(FrameAt {
                        offset: offset + FRAME_HEADER_BYTES,
                        len,
                        slots: frame_slots(len),
                    }));
                }
                _ => {
                    let most = self.max_frame.min(
                        (to_end.min(published) as usize * SLOT_BYTES)
                            .saturating_sub(FRAME_HEADER_BYTES),
                    );
                    let expected =
                        format!("a data frame of at most {most} bytes, or a pad of {to_end} slots");
                    return Err(RingError::Corrupt {
                        what: "frame header",
                        value: u64::from(kind) << 32 | len as u64,
                        expected,
                    });
                }
            }
        }
    }

    /// Borrows a frame's bytes in place (trusted, in-process rings).
    #[cfg(not(loom))]
    pub(super) fn frame_bytes(&self, frame: &FrameAt) -> &[u8] {
        // SAFETY: next_frame checked the frame lies in published slots; the
        // producer does not write them until release moves tail past them,
        // which needs &mut self, so not while this borrow lives.
        unsafe { self.shared.data.slice(frame.offset, frame.len) }
    }

    /// Copies a frame's bytes into private memory (`dst.len()` must be the
    /// frame's length).
    pub(super) fn copy_frame(&self, frame: &FrameAt, dst: &mut [u8]) {
        assert_eq!(
            dst.len(),
            frame.len,
            "copy_frame needs a buffer of the frame's length"
        );
        // SAFETY: as in frame_bytes: published, unreleased slots.
        unsafe { self.shared.data.copy_out(frame.offset, dst) };
    }

    /// Gives a frame's slots back. Returns true when the producer was
    /// parked for space and must be woken.
    pub(super) fn release(&mut self, frame: FrameAt, doorbell: bool) -> bool {
        self.tail += frame.slots;
        if self.tail - self.published >= (self.shared.slots() / 4).max(1) {
            return self.publish_tail(doorbell);
        }
        false
    }

    /// Publishes the tail now (the ring was found empty, or before
    /// parking). Returns true when the producer must be woken.
    pub(super) fn publish_tail(&mut self, doorbell: bool) -> bool {
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
    /// frame was published meanwhile, so the caller must not sleep.
    pub(super) fn arm(&mut self) -> Result<bool, RingError> {
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
    pub(super) fn disarm(&self) {
        // SYNC: Relaxed; a stale flag only costs one spare doorbell.
        self.shared
            .control()
            .consumer
            .waiting
            .store(0, Ordering::Relaxed);
    }

    /// The ring's memory, for tests that inspect the header.
    #[cfg(test)]
    pub(super) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Empties the ring under a new epoch (after the producer died).
    #[cfg(not(loom))]
    pub(super) fn reset(&mut self, epoch: u64) {
        let control = self.shared.control();
        // SYNC: Release; the next peer learns the epoch through the fd
        // handoff, a syscall that orders everything before it.
        control.header.epoch.store(epoch, Ordering::Release);
        // SYNC: as above.
        control.producer.head.store(0, Ordering::Release);
        // SYNC: as above.
        control.consumer.tail.store(0, Ordering::Release);
        // SYNC: as above.
        control.producer.waiting.store(0, Ordering::Release);
        // SYNC: as above.
        control.consumer.waiting.store(0, Ordering::Release);
        self.tail = 0;
        self.published = 0;
        self.head_cache = 0;
    }

    /// Whether published frames are waiting (refreshing head).
    #[cfg(not(loom))]
    pub(super) fn has_frames(&mut self) -> Result<bool, RingError> {
        if self.tail == self.head_cache {
            self.refresh_head()?;
        }
        Ok(self.tail != self.head_cache)
    }
}
