//! The coordinator's queue of pending requests (the seed's `heapq` task
//! queue), with a fixed capacity and deadlines.
//!
//! Order: higher [`Priority`] first (Critical, High, Normal, Low; the
//! config's levels, which [`priority_from_wire`] maps a message's to), then the
//! earlier deadline, then first in, first out. A binary heap keyed on
//! `(priority, deadline, sequence)` gives that in `O(log n)` per push and
//! pop; the sequence number makes equal keys leave in arrival order, which
//! a heap alone does not.
//!
//! Capacity is fixed at construction and the heap's storage is allocated
//! then; [`RequestQueue::push`] on a full queue hands the item back instead
//! of growing, so the caller can shed load (answer "busy") at the edge.
//! Nothing here allocates after [`RequestQueue::new`].
//!
//! Expired requests are not served: [`RequestQueue::pop_ready`] returns the
//! front item as [`Popped::Expired`] if its deadline has passed, so the
//! caller answers it "timed out" and pops again. An expired item behind
//! fresher ones of a higher priority surfaces only when it reaches the
//! front; [`RequestQueue::drain_expired`] removes all of them at once, for
//! the runtime to call when the queue fills or on a coarse tick.
//!
//! Deadlines are `CLOCK_MONOTONIC` nanoseconds; `u64::MAX` means none (see
//! [`super::deadline_from_wire`] for the wire's 0).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::config::Priority;
use pinwheel_ipc::wire;

/// A message's wire priority as the queue's: the same four levels.
pub const fn priority_from_wire(priority: wire::Priority) -> Priority {
    match priority {
        wire::Priority::Critical => Priority::Critical,
        wire::Priority::High => Priority::High,
        wire::Priority::Normal => Priority::Normal,
        wire::Priority::Low => Priority::Low,
    }
}

/// What [`RequestQueue::pop_ready`] found at the front.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Popped<T> {
    /// Within its deadline: serve it.
    Ready(T),
    /// Past its deadline: answer it "timed out" without serving it.
    Expired(T),
}

/// A fixed-capacity priority queue of pending requests. See the module doc.
#[derive(Debug)]
pub struct RequestQueue<T> {
    heap: BinaryHeap<Slot<T>>,
    capacity: usize,
    next_seq: u64,
}

impl<T> RequestQueue<T> {
    /// An empty queue for `capacity` items; the only allocation it makes.
    pub fn new(capacity: usize) -> Self {
        Self {
            heap: BinaryHeap::with_capacity(capacity),
            capacity,
            next_seq: 0,
        }
    }

    /// Queues `item`, or hands it back if the queue is full.
    pub fn push(&mut self, item: T, priority: Priority, deadline_ns: u64) -> Result<(), T> {
        if self.heap.len() >= self.capacity {
            return Err(item);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Slot {
            priority,
            deadline_ns,
            seq,
            item,
        });
        Ok(())
    }

    /// Takes the front item: [`Popped::Ready`] if its deadline is after
    /// `now_ns`, [`Popped::Expired`] if not; `None` if the queue is empty.
    pub fn pop_ready(&mut self, now_ns: u64) -> Option<Popped<T>> {
        let slot = self.heap.pop()?;
        Some(if slot.deadline_ns <= now_ns {
            Popped::Expired(slot.item)
        } else {
            Popped::Ready(slot.item)
        })
    }

    /// Removes every item whose deadline is at or before `now_ns`, passing
    /// each to `expired`, and returns how many there were. `O(n)`; reuses
    /// the heap's storage.
    pub fn drain_expired(&mut self, now_ns: u64, mut expired: impl FnMut(T)) -> usize {
        let mut slots = std::mem::take(&mut self.heap).into_vec();
        let before = slots.len();
        for slot in slots.extract_if(.., |slot| slot.deadline_ns <= now_ns) {
            expired(slot.item);
        }
        let drained = before - slots.len();
        // Heapifies in place: the vector keeps its storage.
        self.heap = BinaryHeap::from(slots);
        drained
    }

    /// The priority and deadline of the front item.
    pub fn peek(&self) -> Option<(Priority, u64)> {
        self.heap
            .peek()
            .map(|slot| (slot.priority, slot.deadline_ns))
    }

    /// Items queued.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Whether a push would be refused.
    pub fn is_full(&self) -> bool {
        self.heap.len() >= self.capacity
    }

    /// The most items it holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// A queued item and its key. Ordered so that the heap's maximum is the
/// item to serve next; the item itself takes no part in the order.
#[derive(Debug)]
struct Slot<T> {
    priority: Priority,
    deadline_ns: u64,
    seq: u64,
    item: T,
}

impl<T> Ord for Slot<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        // `Priority` orders Critical first (smallest), and earlier deadlines
        // and sequence numbers go first too: every key compares reversed.
        other
            .priority
            .cmp(&self.priority)
            .then_with(|| other.deadline_ns.cmp(&self.deadline_ns))
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

impl<T> PartialOrd for Slot<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> PartialEq for Slot<T> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl<T> Eq for Slot<T> {}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: u64 = u64::MAX;

    fn drain_ready(sut: &mut RequestQueue<&'static str>, now_ns: u64) -> Vec<&'static str> {
        let mut out = Vec::new();
        while let Some(popped) = sut.pop_ready(now_ns) {
            match popped {
                Popped::Ready(item) => out.push(item),
                Popped::Expired(item) => panic!("{item} expired"),
            }
        }
        out
    }

    #[test]
    fn higher_priorities_leave_first() {
        let mut sut = RequestQueue::new(8);
        sut.push("low", Priority::Low, NONE).unwrap();
        sut.push("normal", Priority::Normal, NONE).unwrap();
        sut.push("critical", Priority::Critical, NONE).unwrap();
        sut.push("high", Priority::High, NONE).unwrap();

        assert_eq!(
            drain_ready(&mut sut, 0),
            ["critical", "high", "normal", "low"]
        );
    }

    #[test]
    fn within_a_priority_the_earlier_deadline_leaves_first() {
        let mut sut = RequestQueue::new(8);
        sut.push("later", Priority::High, 300).unwrap();
        sut.push("none", Priority::High, NONE).unwrap();
        sut.push("sooner", Priority::High, 200).unwrap();
        sut.push("urgent but low", Priority::Low, 100).unwrap();

        assert_eq!(
            drain_ready(&mut sut, 0),
            ["sooner", "later", "none", "urgent but low"]
        );
    }

    #[test]
    fn equal_keys_leave_in_arrival_order() {
        let mut sut = RequestQueue::new(8);
        for item in ["a", "b", "c", "d", "e"] {
            sut.push(item, Priority::Normal, 500).unwrap();
        }

        assert_eq!(drain_ready(&mut sut, 0), ["a", "b", "c", "d", "e"]);
    }

    #[test]
    fn a_full_queue_hands_the_item_back() {
        let mut sut = RequestQueue::new(2);
        sut.push("a", Priority::Normal, NONE).unwrap();
        sut.push("b", Priority::Normal, NONE).unwrap();

        assert_eq!(sut.push("c", Priority::Critical, NONE), Err("c"));
        assert!(sut.is_full());
        assert_eq!(sut.len(), 2);
    }

    #[test]
    fn an_item_past_its_deadline_pops_as_expired() {
        let mut sut = RequestQueue::new(4);
        sut.push("stale", Priority::High, 100).unwrap();
        sut.push("fresh", Priority::High, 900).unwrap();

        assert_eq!(sut.pop_ready(100), Some(Popped::Expired("stale")));
        assert_eq!(sut.pop_ready(100), Some(Popped::Ready("fresh")));
        assert_eq!(sut.pop_ready(100), None);
    }

    #[test]
    fn draining_removes_every_expired_item_and_keeps_the_order_of_the_rest() {
        let mut sut = RequestQueue::new(8);
        sut.push("critical", Priority::Critical, NONE).unwrap();
        sut.push("low expired", Priority::Low, 50).unwrap();
        sut.push("normal", Priority::Normal, 500).unwrap();
        sut.push("normal expired", Priority::Normal, 90).unwrap();
        sut.push("high", Priority::High, 200).unwrap();
        let mut expired = Vec::new();

        let drained = sut.drain_expired(100, |item| expired.push(item));

        expired.sort_unstable();
        assert_eq!(drained, 2);
        assert_eq!(expired, ["low expired", "normal expired"]);
        assert_eq!(drain_ready(&mut sut, 100), ["critical", "high", "normal"]);
        assert_eq!(sut.capacity(), 8);
    }

    #[test]
    fn peek_shows_the_key_of_the_next_item() {
        let mut sut = RequestQueue::new(4);
        assert_eq!(sut.peek(), None);
        sut.push("a", Priority::Low, 5).unwrap();
        sut.push("b", Priority::High, 7).unwrap();

        assert_eq!(sut.peek(), Some((Priority::High, 7)));
    }
}
