//! Calls waiting for their replies, on one executor.
//!
//! A call takes a slot of a fixed table sized at boot and gets a
//! correlation id that names it: executor (16 bits), generation (32 bits),
//! slot (16 bits). The reply travels back to the caller's executor, which
//! finds the slot in O(1), checks the generation (a reply that comes after
//! its call gave up finds a newer generation or a free slot and is
//! dropped), stores the reply frame and wakes the caller.
//!
//! Deadlines are enforced by [`Pending::expire`], which the executor's
//! ticker calls every millisecond: one timer for all calls instead of one
//! per call, so waiting for a reply allocates nothing. A caller that stops
//! waiting (its future is dropped) frees its slot.
//!
//! A slot keeps the last waker it woke: freed slots are reused last in,
//! first out, so a task calling in a loop finds its own waker there and
//! does not clone it again. (A clone and its drop are an atomic add and
//! sub on the task's waker, two locked instructions a call on its path.)
//! A kept waker is only ever woken for a call of its slot that registered
//! it.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use super::pool::FrameBuf;

/// Why a call ended without a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallFailure {
    /// Its deadline passed.
    TimedOut,
    /// The table was full: too many calls in flight on this executor.
    Busy,
    /// The runtime is shutting down.
    Closed,
}

#[derive(Debug)]
enum State {
    Free,
    Waiting {
        deadline_ns: u64,
        /// Whether the slot's waker is this call's (it polled).
        registered: bool,
    },
    Done(FrameBuf),
    Failed(CallFailure),
}

#[derive(Debug)]
struct Slot {
    generation: u32,
    state: State,
    /// The waker of the call that last polled this slot (module doc).
    waker: Option<Waker>,
}

/// The pending-call table of one executor.
#[derive(Debug)]
pub struct Pending {
    executor: u16,
    slots: RefCell<Vec<Slot>>,
    free: RefCell<Vec<u16>>,
    closed: std::cell::Cell<bool>,
    /// No waiting call's deadline is before this (a lower bound: a call
    /// that ended early leaves it low until the next expiry scan).
    earliest_ns: std::cell::Cell<u64>,
}

/// A slot taken by a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallId {
    slot: u16,
    generation: u32,
}

impl Pending {
    /// A table of `capacity` slots (at most 65536) for executor `executor`.
    pub fn new(executor: u16, capacity: usize) -> Rc<Self> {
        let capacity = capacity.min(1 << 16);
        let slots = (0..capacity)
            .map(|_| Slot {
                generation: 0,
                state: State::Free,
                waker: None,
            })
            .collect();
        let free = (0..capacity as u32).rev().map(|s| s as u16).collect();
        Rc::new(Self {
            executor,
            slots: RefCell::new(slots),
            free: RefCell::new(free),
            closed: std::cell::Cell::new(false),
            earliest_ns: std::cell::Cell::new(u64::MAX),
        })
    }

    /// Opens a call that gives up at `deadline_ns`; `None` when full.
    pub fn open(&self, deadline_ns: u64) -> Option<CallId> {
        if self.closed.get() {
            return None;
        }
        let slot = self.free.borrow_mut().pop()?;
        let mut slots = self.slots.borrow_mut();
        let entry = &mut slots[slot as usize];
        entry.generation = entry.generation.wrapping_add(1);
        entry.state = State::Waiting {
            deadline_ns,
            registered: false,
        };
        self.earliest_ns
            .set(self.earliest_ns.get().min(deadline_ns));
        Some(CallId {
            slot,
            generation: entry.generation,
        })
    }

    /// The correlation id the request of call `id` carries.
    pub fn correlation(&self, id: CallId) -> u64 {
        u64::from(self.executor) << 48 | u64::from(id.generation) << 16 | u64::from(id.slot)
    }

    /// The executor a correlation id belongs to.
    pub fn executor_of(correlation: u64) -> u16 {
        (correlation >> 48) as u16
    }

    /// Delivers a reply; false (and the frame dropped) when no call waits
    /// for it any more.
    pub fn complete(&self, correlation: u64, frame: FrameBuf) -> bool {
        if Self::executor_of(correlation) != self.executor {
            return false;
        }
        let (generation, slot) = ((correlation >> 16) as u32, (correlation & 0xffff) as usize);
        let mut slots = self.slots.borrow_mut();
        let Some(entry) = slots.get_mut(slot).filter(|e| e.generation == generation) else {
            return false;
        };
        let State::Waiting { registered, .. } = entry.state else {
            return false;
        };
        entry.state = State::Done(frame);
        drop(slots);
        if registered {
            self.wake_kept(slot);
        }
        true
    }

    /// Fails every call whose deadline is before `now_ns`; returns how many.
    /// The ticker calls it every millisecond; it scans the table only
    /// when a deadline may be due.
    pub fn expire(&self, now_ns: u64) -> usize {
        if now_ns < self.earliest_ns.get() {
            return 0;
        }
        self.fail_where(CallFailure::TimedOut, |deadline| deadline <= now_ns)
    }

    /// Fails every waiting call and refuses new ones (shutdown).
    pub fn close_all(&self) -> usize {
        self.closed.set(true);
        self.fail_where(CallFailure::Closed, |_| true)
    }

    /// Whether the table refuses new calls.
    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    fn fail_where(&self, failure: CallFailure, due: impl Fn(u64) -> bool) -> usize {
        let mut woken = 0;
        let mut earliest = u64::MAX;
        let mut slots = self.slots.borrow_mut();
        for entry in slots.iter_mut() {
            let State::Waiting {
                deadline_ns,
                registered,
            } = entry.state
            else {
                continue;
            };
            if !due(deadline_ns) {
                earliest = earliest.min(deadline_ns);
                continue;
            }
            entry.state = State::Failed(failure);
            if registered && let Some(waker) = &entry.waker {
                waker.wake_by_ref();
            }
            woken += 1;
        }
        self.earliest_ns.set(earliest);
        woken
    }

    /// Wakes the waker kept in `slot` (its call registered it), with the
    /// table not borrowed while it runs, and keeps it for the slot's next
    /// call.
    fn wake_kept(&self, slot: usize) {
        let Some(waker) = self.slots.borrow_mut()[slot].waker.take() else {
            return;
        };
        waker.wake_by_ref();
        let mut slots = self.slots.borrow_mut();
        let kept = &mut slots[slot].waker;
        if kept.is_none() {
            *kept = Some(waker);
        }
    }

    /// Calls waiting now.
    pub fn in_flight(&self) -> usize {
        self.slots.borrow().len() - self.free.borrow().len()
    }

    fn poll_call(&self, id: CallId, cx: &Context<'_>) -> Poll<Result<FrameBuf, CallFailure>> {
        let mut slots = self.slots.borrow_mut();
        let entry = &mut slots[id.slot as usize];
        debug_assert_eq!(
            entry.generation, id.generation,
            "a call polls only its own slot"
        );
        match &mut entry.state {
            State::Waiting { registered, .. } => {
                *registered = true;
                if !entry
                    .waker
                    .as_ref()
                    .is_some_and(|w| w.will_wake(cx.waker()))
                {
                    entry.waker = Some(cx.waker().clone());
                }
                return Poll::Pending;
            }
            State::Free => return Poll::Ready(Err(CallFailure::Closed)),
            State::Done(_) | State::Failed(_) => {}
        }
        let result = match std::mem::replace(&mut entry.state, State::Free) {
            State::Done(frame) => Ok(frame),
            State::Failed(failure) => Err(failure),
            State::Waiting { .. } | State::Free => unreachable!("handled above"),
        };
        drop(slots);
        self.free.borrow_mut().push(id.slot);
        Poll::Ready(result)
    }

    fn abandon(&self, id: CallId) {
        let mut slots = self.slots.borrow_mut();
        let entry = &mut slots[id.slot as usize];
        if entry.generation == id.generation && !matches!(entry.state, State::Free) {
            entry.state = State::Free;
            drop(slots);
            self.free.borrow_mut().push(id.slot);
        }
    }

    /// Waits for the reply of call `id`.
    pub fn wait(self: &Rc<Self>, id: CallId) -> Reply {
        Reply {
            pending: Rc::clone(self),
            id,
            done: false,
        }
    }
}

/// The future of a call's reply; dropping it abandons the call.
#[derive(Debug)]
pub struct Reply {
    pending: Rc<Pending>,
    id: CallId,
    done: bool,
}

impl Future for Reply {
    type Output = Result<FrameBuf, CallFailure>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let result = self.pending.poll_call(self.id, cx);
        if result.is_ready() {
            self.done = true;
        }
        result
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if !self.done {
            self.pending.abandon(self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::pool::FramePool;
    use crate::runtime::test_waker::Counting;

    fn run<T>(future: impl Future<Output = T>) -> T {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .make()
            .unwrap()
            .run(future)
    }

    #[test]
    fn a_reply_reaches_its_waiting_call() {
        run(async {
            let pool = FramePool::new(4, 16);
            let sut = Pending::new(3, 8);
            let id = sut.open(u64::MAX).unwrap();
            let correlation = sut.correlation(id);
            assert_eq!(Pending::executor_of(correlation), 3);
            let waiting = sut.wait(id);
            let mut frame = pool.take().unwrap();
            frame.copy_from(b"ok");
            assert!(sut.complete(correlation, frame));
            assert_eq!(&*waiting.await.unwrap().bytes(), b"ok");
            assert_eq!(sut.in_flight(), 0);
        });
    }

    #[test]
    fn a_slot_keeps_the_waker_it_woke_and_its_next_call_from_the_task_does_not_clone_it() {
        use std::sync::Arc;
        let pool = FramePool::new(4, 16);
        let sut = Pending::new(0, 4);
        let (counting, waker) = Counting::waker();
        let mut cx = Context::from_waker(&waker);
        let mut woken_and_clones = Vec::new();
        for _ in 0..3 {
            let id = sut.open(u64::MAX).unwrap();
            let mut reply = std::pin::pin!(sut.wait(id));
            assert!(reply.as_mut().poll(&mut cx).is_pending());
            assert!(sut.complete(sut.correlation(id), pool.take().unwrap()));
            assert!(reply.as_mut().poll(&mut cx).is_ready());
            woken_and_clones.push((counting.wakes(), Arc::strong_count(&counting)));
        }
        // Ours, the waker, and the one clone the slot keeps.
        assert_eq!(woken_and_clones, [(1, 3), (2, 3), (3, 3)]);
    }

    #[test]
    fn a_call_that_never_polled_is_not_woken_with_the_slot_s_last_waker() {
        let pool = FramePool::new(4, 16);
        let sut = Pending::new(0, 1);
        let (counting, waker) = Counting::waker();
        let mut cx = Context::from_waker(&waker);
        let id = sut.open(u64::MAX).unwrap();
        let mut first = std::pin::pin!(sut.wait(id));
        assert!(first.as_mut().poll(&mut cx).is_pending());
        assert!(sut.complete(sut.correlation(id), pool.take().unwrap()));
        assert!(first.as_mut().poll(&mut cx).is_ready());
        let next = sut.open(u64::MAX).unwrap();
        assert!(sut.complete(sut.correlation(next), pool.take().unwrap()));
        assert_eq!(counting.wakes(), 1, "the kept waker is the last call's");
        let mut second = std::pin::pin!(sut.wait(next));
        assert!(second.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn a_late_reply_after_expiry_is_dropped_and_the_slot_reused() {
        run(async {
            let pool = FramePool::new(4, 16);
            let sut = Pending::new(0, 1);
            let id = sut.open(100).unwrap();
            let stale = sut.correlation(id);
            assert_eq!(sut.expire(100), 1);
            assert_eq!(sut.wait(id).await.unwrap_err(), CallFailure::TimedOut);
            let next = sut.open(u64::MAX).unwrap();
            assert!(
                !sut.complete(stale, pool.take().unwrap()),
                "stale generation"
            );
            assert!(sut.complete(sut.correlation(next), pool.take().unwrap()));
        });
    }

    #[test]
    fn a_full_table_refuses_new_calls_and_an_abandoned_call_frees_its_slot() {
        let sut = Pending::new(0, 1);
        let id = sut.open(u64::MAX).unwrap();
        assert!(sut.open(u64::MAX).is_none());
        drop(sut.wait(id));
        assert!(sut.open(u64::MAX).is_some());
    }

    #[test]
    fn replies_for_another_executor_are_refused() {
        let pool = FramePool::new(1, 16);
        let sut = Pending::new(1, 4);
        let id = sut.open(u64::MAX).unwrap();
        let foreign = sut.correlation(id) & !(0xffff << 48) | 2 << 48;
        assert!(!sut.complete(foreign, pool.take().unwrap()));
    }

    #[test]
    fn close_all_fails_every_waiting_call() {
        run(async {
            let sut = Pending::new(0, 4);
            let a = sut.open(u64::MAX).unwrap();
            let b = sut.open(u64::MAX).unwrap();
            assert_eq!(sut.close_all(), 2);
            assert_eq!(sut.wait(a).await.unwrap_err(), CallFailure::Closed);
            assert_eq!(sut.wait(b).await.unwrap_err(), CallFailure::Closed);
            assert!(sut.open(u64::MAX).is_none(), "no new calls after close");
        });
    }
}
