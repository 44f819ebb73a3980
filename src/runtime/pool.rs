//! Frame buffers of one executor, allocated at boot.
//!
//! A message waiting in an agent's inbox, or a reply waiting for its
//! caller, lives in a [`FrameBuf`]: one of a fixed number of aligned
//! buffers of the ring's largest frame. Frames arriving on a ring are
//! copied out of it here, so a slow handler never holds a ring slot (which
//! would stall every other agent behind it); local messages are encoded
//! straight into one. Taking and returning a buffer is a push and pop on a
//! free list: nothing is allocated per message. When the pool runs dry the
//! executor stops draining its rings, and backpressure reaches the senders.
//!
//! Single-threaded: a pool belongs to one executor. Each buffer has its own
//! `RefCell`, and only the `FrameBuf` that owns a buffer borrows it, so the
//! borrows never conflict.

use std::cell::{Ref, RefCell};
use std::rc::Rc;

use rkyv::util::AlignedVec;

/// A fixed set of frame buffers.
#[derive(Debug)]
pub struct FramePool {
    bufs: Vec<RefCell<AlignedVec<16>>>,
    free: RefCell<Vec<u32>>,
    frame_bytes: usize,
}

impl FramePool {
    /// `count` buffers of `frame_bytes` each.
    pub fn new(count: usize, frame_bytes: usize) -> Rc<Self> {
        let bufs = (0..count)
            .map(|_| {
                let mut buf = AlignedVec::with_capacity(frame_bytes);
                buf.resize(frame_bytes, 0);
                RefCell::new(buf)
            })
            .collect();
        let free = RefCell::new((0..count as u32).rev().collect());
        Rc::new(Self {
            bufs,
            free,
            frame_bytes,
        })
    }

    /// A free buffer, empty; `None` when all are in use.
    pub fn take(self: &Rc<Self>) -> Option<FrameBuf> {
        let idx = self.free.borrow_mut().pop()?;
        Some(FrameBuf {
            pool: Rc::clone(self),
            idx,
            len: 0,
        })
    }

    /// Buffers free now.
    pub fn available(&self) -> usize {
        self.free.borrow().len()
    }

    /// Buffers in all.
    pub fn capacity(&self) -> usize {
        self.bufs.len()
    }

    /// Bytes per buffer.
    pub fn frame_bytes(&self) -> usize {
        self.frame_bytes
    }
}

/// One frame in a pool buffer; the buffer returns to the pool on drop.
#[derive(Debug)]
pub struct FrameBuf {
    pool: Rc<FramePool>,
    idx: u32,
    len: u32,
}

impl FrameBuf {
    /// Fills the buffer with `write`, which gets all of it and returns how
    /// many bytes it used, or `None` if they were too few. Returns whether
    /// it fitted.
    pub fn fill(&mut self, write: impl FnOnce(&mut [u8]) -> Option<usize>) -> bool {
        let mut buf = self.pool.bufs[self.idx as usize].borrow_mut();
        match write(&mut buf[..]) {
            Some(len) if len <= buf.len() => {
                self.len = len as u32;
                true
            }
            _ => false,
        }
    }

    /// Copies `bytes` in; false if they do not fit.
    pub fn copy_from(&mut self, bytes: &[u8]) -> bool {
        self.fill(|buf| {
            let dst = buf.get_mut(..bytes.len())?;
            dst.copy_from_slice(bytes);
            Some(bytes.len())
        })
    }

    /// The frame's bytes (8-byte aligned, as envelopes need).
    pub fn bytes(&self) -> Ref<'_, [u8]> {
        Ref::map(self.pool.bufs[self.idx as usize].borrow(), |buf| {
            &buf[..self.len as usize]
        })
    }

    /// The frame's length.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the frame is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for FrameBuf {
    fn drop(&mut self) {
        self.pool.free.borrow_mut().push(self.idx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_to_the_pool_when_dropped() {
        let sut = FramePool::new(2, 64);
        let a = sut.take().unwrap();
        let b = sut.take().unwrap();
        assert!(sut.take().is_none());
        drop(a);
        assert_eq!(sut.available(), 1);
        drop(b);
        assert_eq!(sut.available(), 2);
    }

    #[test]
    fn a_frame_holds_what_was_copied_in_and_refuses_what_does_not_fit() {
        let sut = FramePool::new(1, 16);
        let mut frame = sut.take().unwrap();
        assert!(frame.copy_from(b"hello"));
        assert_eq!(&*frame.bytes(), b"hello");
        assert!(!frame.copy_from(&[0; 17]));
        assert_eq!(
            &*frame.bytes(),
            b"hello",
            "a refused copy leaves the frame as it was"
        );
    }

    #[test]
    fn frames_are_aligned_for_envelopes() {
        let sut = FramePool::new(3, 64);
        let frames: Vec<FrameBuf> = (0..3).map(|_| sut.take().unwrap()).collect();
        for frame in &frames {
            assert_eq!(
                frame.bytes().as_ptr() as usize % pinwheel_ipc::wire::ENVELOPE_ALIGN,
                0
            );
        }
    }
}
