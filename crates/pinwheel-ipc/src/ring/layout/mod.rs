//! The ring's shared-memory layout and its index protocol.
//!
//! One ring is a control block followed by `slots` slots of 64 bytes.
//! Every field of the control block is an atomic, and the bytes between
//! fields are [`Pad`]s (inside an `UnsafeCell`), so a shared reference to
//! the control block asserts nothing about any byte a peer may write:
//!
//! ```text
//! offset  size  field          written by / when
//! ------  ----  -------------  ------------------------------------------
//!      0     8  magic    u64   creator, before handing over ("PWHLRING")
//!      8     4  version  u32   creator, before handing over
//!     12     4  slot_bytes u32 creator, before handing over (64)
//!     16     8  slots    u64   creator, before handing over
//!     24     8  epoch    u64   creator; the exporter again on reset
//!     32     4  producer_pid   producer end, on attach (diagnostics only)
//!     36     4  consumer_pid   consumer end, on attach (diagnostics only)
//!     40    88  (pad)
//!    128     8  head     u64   producer (Release); read by the consumer
//!    136     4  waiting  u32   producer sets; consumer clears
//!    140   116  (pad)
//!    256     8  tail     u64   consumer (Release); read by the producer
//!    264     4  waiting  u32   consumer sets; producer clears
//!    268   116  (pad)
//!    384  64*N  slots: frames (8-byte frame header + payload, see below)
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
//! Reach and trust. A ring's memory is mapped either by this process only
//! ([`Reach::ThisProcess`]: heap rings, and memfd rings whose descriptor is
//! closed at creation) or by a peer process too ([`Reach::Peers`]: rings
//! handed over with `peer.rs`). The peer may write any byte at any time:
//! its frames, its own counter, but also our counter, the header and the
//! slots we are filling, since both ends map the memfd read-write (the
//! consumer must write `tail`, and one memfd cannot be mapped read-only for
//! the slots and read-write for the lines). So on a `Peers` ring:
//! * every access to slot bytes is an atomic word copy (`sync.rs`), never
//!   a Rust reference over them: the producer encodes a frame into private
//!   staging memory and copies it in, the consumer copies it out to
//!   private memory before anything reads it;
//! * every index read from shared memory is checked (`head - tail <=
//!   slots`, counters only move forward, a frame fits in what was
//!   published and before the ring's end, a pad fills exactly the rest),
//!   and the header is re-checked before each park; a violation is
//!   [`RingError::Corrupt`], never a panic, a hang or an out-of-bounds
//!   read. The slot count and size this process uses are its own copies,
//!   checked once at attach and never re-read from the header.
//!
//! On a `ThisProcess` ring the other end is this process's own code, so
//! frames are encoded and read in place ([`DataRegion::in_place`], which
//! exists only for such memory) and indices are trusted.
//!
//! Only this module and `sync.rs` touch ring memory; `producer.rs` and
//! `consumer.rs` hold the two ends.

mod consumer;
mod producer;

#[cfg(not(loom))]
use std::ptr::NonNull;

use super::RingError;
pub(super) use super::sync::Reach;
use super::sync::{AtomicU32, AtomicU64, DataRegion, Ordering};
pub(super) use consumer::ConsumerEnd;
pub(super) use producer::{ProducerEnd, WriteFail};

/// Bytes per slot: one cache line.
pub const SLOT_BYTES: usize = 64;
/// Bytes of a frame's header.
pub const FRAME_HEADER_BYTES: usize = 8;
/// Bytes of a word: frames are written and copied out in whole words
/// (the header is one).
const WORD_BYTES: usize = 8;
/// `b"PWHLRING"` as a little-endian u64.
pub(super) const MAGIC: u64 = u64::from_le_bytes(*b"PWHLRING");
/// Version of this layout. The layout of version 1 is unchanged; only how
/// this process reaches it is.
pub(super) const LAYOUT_VERSION: u32 = 1;
const KIND_DATA: u32 = u32::from_le_bytes(*b"DATA");
const KIND_PAD: u32 = u32::from_le_bytes(*b"PAD!");

/// Bytes the layout leaves unused, inside an `UnsafeCell`: a shared
/// reference to the control block then claims nothing about them, so a
/// peer that writes them violates no aliasing rule. Never read or written
/// by this process after creation.
#[repr(transparent)]
pub(super) struct Pad<const N: usize>(std::cell::UnsafeCell<[u8; N]>);

// SAFETY: this process never accesses the bytes, so sharing the (unused)
// cell between threads cannot race.
unsafe impl<const N: usize> Sync for Pad<N> {}

impl<const N: usize> Pad<N> {
    const fn new() -> Self {
        Self(std::cell::UnsafeCell::new([0; N]))
    }
}

impl<const N: usize> std::fmt::Debug for Pad<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pad<{N}>")
    }
}

/// Ring-wide facts, written once by the creator (the epoch again on reset).
#[repr(C, align(128))]
#[derive(Debug)]
pub(super) struct Header {
    pub magic: AtomicU64,
    pub version: AtomicU32,
    pub slot_bytes: AtomicU32,
    pub slots: AtomicU64,
    pub epoch: AtomicU64,
    pub producer_pid: AtomicU32,
    pub consumer_pid: AtomicU32,
    _pad: Pad<88>,
}

/// The producer's line.
#[repr(C, align(128))]
#[derive(Debug)]
pub(super) struct ProducerLine {
    pub head: AtomicU64,
    pub waiting: AtomicU32,
    _pad: Pad<116>,
}

/// The consumer's line.
#[repr(C, align(128))]
#[derive(Debug)]
pub(super) struct ConsumerLine {
    pub tail: AtomicU64,
    pub waiting: AtomicU32,
    _pad: Pad<116>,
}

/// The control block at offset 0 of a ring.
#[repr(C)]
#[derive(Debug)]
pub(super) struct Control {
    pub header: Header,
    pub producer: ProducerLine,
    pub consumer: ConsumerLine,
}

impl Control {
    /// The control block of a new, empty ring.
    fn fresh(slots: u64, epoch: u64) -> Self {
        Self {
            header: Header {
                magic: AtomicU64::new(MAGIC),
                version: AtomicU32::new(LAYOUT_VERSION),
                slot_bytes: AtomicU32::new(SLOT_BYTES as u32),
                slots: AtomicU64::new(slots),
                epoch: AtomicU64::new(epoch),
                producer_pid: AtomicU32::new(0),
                consumer_pid: AtomicU32::new(0),
                _pad: Pad::new(),
            },
            producer: ProducerLine {
                head: AtomicU64::new(0),
                waiting: AtomicU32::new(0),
                _pad: Pad::new(),
            },
            consumer: ConsumerLine {
                tail: AtomicU64::new(0),
                waiting: AtomicU32::new(0),
                _pad: Pad::new(),
            },
        }
    }
}

/// Offset of slot 0.
pub const DATA_OFFSET: usize = 384;

/// Where each control-block field lies: (name, offset, bytes), as the
/// diagram above draws them; checked against the structs below.
#[cfg(test)]
pub(super) const CONTROL_FIELDS: [(&str, usize, usize); 11] = [
    ("magic", 0, 8),
    ("version", 8, 4),
    ("slot_bytes", 12, 4),
    ("slots", 16, 8),
    ("epoch", 24, 8),
    ("producer_pid", 32, 4),
    ("consumer_pid", 36, 4),
    ("head", 128, 8),
    ("producer waiting", 136, 4),
    ("tail", 256, 8),
    ("consumer waiting", 264, 4),
];

#[cfg(not(loom))]
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<Control>() == DATA_OFFSET);
    assert!(size_of::<Header>() == 128 && size_of::<ProducerLine>() == 128);
    assert!(size_of::<ConsumerLine>() == 128);
    assert!(offset_of!(Header, magic) == 0);
    assert!(offset_of!(Header, version) == 8);
    assert!(offset_of!(Header, slot_bytes) == 12);
    assert!(offset_of!(Header, slots) == 16);
    assert!(offset_of!(Header, epoch) == 24);
    assert!(offset_of!(Header, producer_pid) == 32);
    assert!(offset_of!(Header, consumer_pid) == 36);
    assert!(offset_of!(Header, _pad) == 40);
    assert!(offset_of!(Control, producer) + offset_of!(ProducerLine, head) == 128);
    assert!(offset_of!(Control, producer) + offset_of!(ProducerLine, waiting) == 136);
    assert!(offset_of!(ProducerLine, _pad) == 12);
    assert!(offset_of!(Control, consumer) + offset_of!(ConsumerLine, tail) == 256);
    assert!(offset_of!(Control, consumer) + offset_of!(ConsumerLine, waiting) == 264);
    assert!(offset_of!(ConsumerLine, _pad) == 12);
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

// SAFETY: the control block is all atomics and unused padding; slot access
// is governed by the protocol above.
#[cfg(not(loom))]
unsafe impl Send for Shared {}
// SAFETY: as above.
#[cfg(not(loom))]
unsafe impl Sync for Shared {}

impl Shared {
    /// A ring over memory at `base` of `ring_bytes(slots)` bytes. With
    /// `fresh_epoch` the creator writes a new control block (empty ring);
    /// without it the memory already holds one (attaching to a peer's ring,
    /// whose header the caller checks with [`Shared::check_header`]).
    ///
    /// # Safety
    ///
    /// `base` must be 128-byte aligned and valid for reads and writes of
    /// `ring_bytes(slots)` bytes for as long as `owner` lives; with
    /// `fresh_epoch` nobody else may access it yet; with
    /// [`Reach::ThisProcess`] no other process may ever map it.
    #[cfg(not(loom))]
    pub(super) unsafe fn new(
        base: NonNull<u8>,
        slots: u64,
        owner: Box<dyn Send + Sync>,
        fresh_epoch: Option<u64>,
        reach: Reach,
    ) -> Self {
        if let Some(epoch) = fresh_epoch {
            // SAFETY: `base` is aligned and valid for a Control (caller's
            // contract) and not yet visible to anyone else.
            unsafe { base.cast::<Control>().write(Control::fresh(slots, epoch)) };
        }
        let data_base = base.as_ptr().wrapping_add(DATA_OFFSET);
        let data_base = NonNull::new(data_base).expect("offset of a non-null mapping is non-null");
        Self {
            control: base.cast(),
            // SAFETY: the slots follow the control block inside the
            // caller's memory, valid as long as `owner` (held here), and
            // mapped by whom `reach` says (caller's contract).
            data: unsafe { DataRegion::new(data_base, slots as usize * SLOT_BYTES, reach) },
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
        // memory, which lives until the Shared is dropped; heap memory is
        // this process's alone.
        unsafe { Self::new(base, slots, Box::new(buffer), Some(1), Reach::ThisProcess) }
    }

    /// A ring in loom-tracked memory.
    #[cfg(loom)]
    pub(super) fn model(slots: u64) -> Self {
        Self {
            control: Control::fresh(slots, 1),
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
            // alive by `_owner`. Every byte of it is an atomic or a Pad (an
            // UnsafeCell), so this shared reference allows the concurrent
            // writes a peer may make to any of them.
            unsafe { self.control.as_ref() }
        }
        #[cfg(loom)]
        {
            &self.control
        }
    }

    /// Slots in the ring: this process's own number, never re-read from
    /// the header.
    pub(super) fn slots(&self) -> u64 {
        self.slots
    }

    /// Who maps the ring's memory.
    pub(super) fn reach(&self) -> Reach {
        self.data.reach()
    }

    fn offset(&self, slot: u64) -> usize {
        (slot & (self.slots - 1)) as usize * SLOT_BYTES
    }

    /// Slots from `slot` to the ring's end: the most one frame starting
    /// there may span (a frame never wraps).
    #[inline]
    fn to_end(&self, slot: u64) -> u64 {
        self.slots - (slot & (self.slots - 1))
    }

    /// Checks the header against this ring: magic, version, slot size, slot
    /// count, and `epoch`. The header is written by the creator before any
    /// peer sees the ring (and the epoch by the exporter on reset, with no
    /// peer attached), so any difference is a peer's doing.
    pub(super) fn check_header(&self, epoch: u64) -> Result<(), RingError> {
        let header = &self.control().header;
        // SYNC: Relaxed, all five loads: the creator's stores reached this
        // process through the memfd handoff (sendmsg, recvmsg), which
        // orders them; what this check looks for is a peer's later write,
        // which no ordering could prevent.
        let found = [
            ("header magic", header.magic.load(Ordering::Relaxed), MAGIC),
            (
                "header version",
                u64::from(header.version.load(Ordering::Relaxed)),
                u64::from(LAYOUT_VERSION),
            ),
            (
                "header slot_bytes",
                u64::from(header.slot_bytes.load(Ordering::Relaxed)),
                SLOT_BYTES as u64,
            ),
            (
                "header slots",
                header.slots.load(Ordering::Relaxed),
                self.slots,
            ),
            ("header epoch", header.epoch.load(Ordering::Relaxed), epoch),
        ];
        match found.into_iter().find(|(_, value, want)| value != want) {
            None => Ok(()),
            Some((what, value, want)) => Err(RingError::Corrupt {
                what,
                value,
                expected: want.to_string(),
            }),
        }
    }

    /// The epoch in the header, as this end starts out.
    fn epoch(&self) -> u64 {
        // SYNC: Relaxed; written before the ring was handed to this end
        // (see check_header).
        self.control().header.epoch.load(Ordering::Relaxed)
    }

    /// Empties the ring under a new epoch (after the peer died), and
    /// rewrites the whole header: the peer that left may have scribbled on
    /// it, and the next one must find it intact.
    #[cfg(not(loom))]
    fn reset(&self, epoch: u64) {
        let Control {
            header,
            producer,
            consumer,
        } = self.control();
        // SYNC: Release, every store below; the next peer learns the
        // epoch through the fd handoff, a syscall that orders everything
        // before it.
        header.magic.store(MAGIC, Ordering::Release);
        header.version.store(LAYOUT_VERSION, Ordering::Release);
        header
            .slot_bytes
            .store(SLOT_BYTES as u32, Ordering::Release);
        header.slots.store(self.slots, Ordering::Release);
        header.epoch.store(epoch, Ordering::Release);
        producer.head.store(0, Ordering::Release);
        consumer.tail.store(0, Ordering::Release);
        producer.waiting.store(0, Ordering::Release);
        consumer.waiting.store(0, Ordering::Release);
    }
}

#[cfg(test)]
#[cfg(not(loom))]
mod tests {
    use std::mem::offset_of;

    use super::*;

    #[test]
    fn the_field_table_matches_the_structs() {
        let producer = offset_of!(Control, producer);
        let consumer = offset_of!(Control, consumer);
        let offsets = [
            offset_of!(Header, magic),
            offset_of!(Header, version),
            offset_of!(Header, slot_bytes),
            offset_of!(Header, slots),
            offset_of!(Header, epoch),
            offset_of!(Header, producer_pid),
            offset_of!(Header, consumer_pid),
            producer + offset_of!(ProducerLine, head),
            producer + offset_of!(ProducerLine, waiting),
            consumer + offset_of!(ConsumerLine, tail),
            consumer + offset_of!(ConsumerLine, waiting),
        ];
        let table: Vec<usize> = CONTROL_FIELDS.iter().map(|(_, at, _)| *at).collect();
        assert_eq!(table, offsets);
    }

    #[test]
    fn a_changed_header_field_is_corruption_naming_it() {
        let sut = Shared::heap(16);
        assert!(sut.check_header(1).is_ok());
        assert!(matches!(
            sut.check_header(2),
            Err(RingError::Corrupt {
                what: "header epoch",
                value: 1,
                ..
            })
        ));
        sut.control().header.slots.store(32, Ordering::Relaxed);
        assert!(matches!(
            sut.check_header(1),
            Err(RingError::Corrupt {
                what: "header slots",
                value: 32,
                ..
            })
        ));
    }

    #[test]
    fn a_reset_restores_a_scribbled_header_under_the_new_epoch() {
        let sut = Shared::heap(16);
        let header = &sut.control().header;
        header.magic.store(0, Ordering::Relaxed);
        header.slots.store(u64::MAX, Ordering::Relaxed);
        sut.control().producer.head.store(7, Ordering::Relaxed);
        sut.reset(5);
        assert!(sut.check_header(5).is_ok());
        assert_eq!(sut.control().producer.head.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_heap_ring_is_reached_by_this_process_only() {
        assert_eq!(Shared::heap(16).reach(), Reach::ThisProcess);
    }
}
