//! An agent's inbox: four priority lanes, bounded, with starvation bounded.
//!
//! Messages wait in the lane of their envelope's priority (CRITICAL, HIGH,
//! NORMAL, LOW), each a FIFO of fixed capacity reserved at boot. A worker
//! takes from the highest non-empty lane, except that a non-empty lane
//! passed over [`STARVE_LIMIT`] times in a row is served next: under any
//! load, a waiting message's lane is served within `STARVE_LIMIT + 3`
//! takes, so LOW traffic slows down under CRITICAL pressure but never stops.
//!
//! Workers waiting on an empty inbox park their wakers in a list reserved
//! for the agent's concurrency; a push wakes one, and keeps its waker for
//! that worker's next wait (a worker that waits again finds its own and
//! does not clone it: a clone and its drop are an atomic add and sub on
//! its task's waker, two locked instructions a message). Closing the inbox (at
//! shutdown) wakes every worker and makes `recv` return `None` once the
//! lanes are empty. Pausing it (the supervisor isolating the agent) refuses
//! new messages and holds the workers waiting until it resumes.
//!
//! An agent whose handling of a message is a non-blocking hand-off (a
//! process agent's bridge writing a request to the process's ring) may set
//! a [`Direct`] taker: a push offers it the message first, inside the
//! sender's call, so the message costs no worker wake-up and no pass of the
//! executor's scheduler; what it declines is queued as usual.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use super::pool::FrameBuf;
use pinwheel_ipc::wire::Priority;

/// Times a non-empty lane may be passed over before it is served.
pub const STARVE_LIMIT: u32 = 8;
const LANES: usize = 4;

/// Takes an agent's messages as they are pushed, ahead of its workers.
pub trait Direct: std::fmt::Debug {
    /// Takes `frame` (handled: the agent answers it later), or gives it
    /// back to be queued for a worker.
    fn take(&self, frame: FrameBuf) -> Result<(), FrameBuf>;
}

/// An agent's inbox.
#[derive(Debug)]
pub struct Inbox {
    direct: RefCell<Option<Rc<dyn Direct>>>,
    lanes: [RefCell<VecDeque<FrameBuf>>; LANES],
    capacity: usize,
    passed_over: [Cell<u32>; LANES],
    waiters: RefCell<Vec<Waker>>,
    /// Wakers a push woke, kept for their workers' next wait.
    woken: RefCell<Vec<Waker>>,
    closed: Cell<bool>,
    paused: Cell<bool>,
}

fn lane(priority: Priority) -> usize {
    match priority {
        Priority::Critical => 0,
        Priority::High => 1,
        Priority::Normal => 2,
        Priority::Low => 3,
    }
}

impl Inbox {
    /// An inbox of `capacity` messages per lane for up to `workers` waiting
    /// workers.
    pub fn new(capacity: usize, workers: usize) -> Self {
        Self {
            direct: RefCell::new(None),
            lanes: std::array::from_fn(|_| RefCell::new(VecDeque::with_capacity(capacity))),
            capacity,
            passed_over: std::array::from_fn(|_| Cell::new(0)),
            waiters: RefCell::new(Vec::with_capacity(workers)),
            woken: RefCell::new(Vec::with_capacity(workers)),
            closed: Cell::new(false),
            paused: Cell::new(false),
        }
    }

    /// Queues a message; gives it back when its lane is full or the inbox
    /// is closed.
    pub fn push(&self, priority: Priority, frame: FrameBuf) -> Result<(), FrameBuf> {
        if self.closed.get() || self.paused.get() {
            return Err(frame);
        }
        // A clone of the Rc (no allocation), so a taker that pushes to
        // this inbox again finds it unborrowed.
        let direct = self.direct.borrow().clone();
        let frame = match direct {
            Some(direct) => match direct.take(frame) {
                Ok(()) => return Ok(()),
                Err(frame) => frame,
            },
            None => frame,
        };
        let mut lane = self.lanes[lane(priority)].borrow_mut();
        if lane.len() >= self.capacity {
            return Err(frame);
        }
        lane.push_back(frame);
        drop(lane);
        let waiter = self.waiters.borrow_mut().pop();
        if let Some(waker) = waiter {
            waker.wake_by_ref();
            self.woken.borrow_mut().push(waker);
        }
        Ok(())
    }

    /// Sets (or, with `None`, removes) the taker offered every message
    /// before it is queued.
    pub fn set_direct(&self, direct: Option<Rc<dyn Direct>>) {
        *self.direct.borrow_mut() = direct;
    }

    /// Messages waiting, all lanes.
    pub fn len(&self) -> usize {
        self.lanes.iter().map(|l| l.borrow().len()).sum()
    }

    /// Whether no message waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes the next message by the lane policy in the module doc.
    pub fn try_pop(&self) -> Option<FrameBuf> {
        let waiting: [bool; LANES] = std::array::from_fn(|i| !self.lanes[i].borrow().is_empty());
        let top = waiting.iter().position(|w| *w)?;
        let starved = (top + 1..LANES)
            .filter(|&i| waiting[i] && self.passed_over[i].get() >= STARVE_LIMIT)
            .max_by_key(|&i| self.passed_over[i].get());
        let chosen = starved.unwrap_or(top);
        for (i, is_waiting) in waiting.iter().enumerate() {
            let count = &self.passed_over[i];
            count.set(if i == chosen || !is_waiting {
                0
            } else {
                count.get() + 1
            });
        }
        self.lanes[chosen].borrow_mut().pop_front()
    }

    /// Waits for the next message; `None` once closed and drained.
    pub fn recv(&self) -> Recv<'_> {
        Recv { inbox: self }
    }

    /// Stops accepting messages and wakes every waiting worker.
    pub fn close(&self) {
        self.closed.set(true);
        for waker in self.waiters.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    /// Refuses messages and holds workers waiting, without ending them
    /// (an isolated agent).
    pub fn pause(&self) {
        self.paused.set(true);
    }

    /// Accepts messages again and wakes the workers (after a restart).
    pub fn resume(&self) {
        self.paused.set(false);
        for waker in self.waiters.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    /// Whether the inbox is closed for shutdown.
    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Whether the inbox refuses messages (closed or paused).
    pub fn refuses(&self) -> bool {
        self.closed.get() || self.paused.get()
    }

    /// Drops every waiting message; returns how many.
    pub fn clear(&self) -> usize {
        self.lanes
            .iter()
            .map(|l| l.borrow_mut().drain(..).count())
            .sum()
    }
}

/// The future of [`Inbox::recv`].
#[derive(Debug)]
pub struct Recv<'a> {
    inbox: &'a Inbox,
}

impl Future for Recv<'_> {
    type Output = Option<FrameBuf>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if !self.inbox.paused.get()
            && let Some(frame) = self.inbox.try_pop()
        {
            return Poll::Ready(Some(frame));
        }
        if self.inbox.closed.get() && !self.inbox.paused.get() {
            return Poll::Ready(None);
        }
        let waker = cx.waker();
        let mut waiters = self.inbox.waiters.borrow_mut();
        if !waiters.iter().any(|w| w.will_wake(waker)) {
            let mut woken = self.inbox.woken.borrow_mut();
            let kept = woken
                .iter()
                .position(|w| w.will_wake(waker))
                .map(|i| woken.swap_remove(i));
            waiters.push(kept.unwrap_or_else(|| waker.clone()));
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::pool::FramePool;
    use crate::runtime::test_waker::Counting;

    fn frame(pool: &std::rc::Rc<FramePool>, tag: u8) -> FrameBuf {
        let mut frame = pool.take().unwrap();
        assert!(frame.copy_from(&[tag]));
        frame
    }

    fn tag(frame: &FrameBuf) -> u8 {
        frame.bytes()[0]
    }

    /// Takes odd tags, declines even ones.
    #[derive(Debug, Default)]
    struct OddTaker(RefCell<Vec<u8>>);

    impl Direct for OddTaker {
        fn take(&self, frame: FrameBuf) -> Result<(), FrameBuf> {
            if tag(&frame) % 2 == 1 {
                self.0.borrow_mut().push(tag(&frame));
                Ok(())
            } else {
                Err(frame)
            }
        }
    }

    #[test]
    fn a_direct_taker_gets_each_message_first_and_what_it_declines_is_queued() {
        let pool = FramePool::new(16, 8);
        let sut = Inbox::new(4, 1);
        let taker = Rc::new(OddTaker::default());
        sut.set_direct(Some(Rc::clone(&taker) as Rc<dyn Direct>));
        for t in 1..=4 {
            sut.push(Priority::Normal, frame(&pool, t)).unwrap();
        }
        assert_eq!(*taker.0.borrow(), vec![1, 3]);
        let queued: Vec<u8> = std::iter::from_fn(|| sut.try_pop())
            .map(|f| tag(&f))
            .collect();
        assert_eq!(queued, vec![2, 4]);

        sut.pause();
        assert!(sut.push(Priority::Normal, frame(&pool, 5)).is_err());
        sut.resume();
        sut.set_direct(None);
        sut.push(Priority::Normal, frame(&pool, 7)).unwrap();
        assert_eq!(*taker.0.borrow(), vec![1, 3], "a paused inbox or no taker");
        assert_eq!(sut.try_pop().map(|f| tag(&f)), Some(7));
    }

    #[test]
    fn higher_priorities_are_served_first_and_each_lane_in_order() {
        let pool = FramePool::new(16, 8);
        let sut = Inbox::new(4, 1);
        sut.push(Priority::Low, frame(&pool, 1)).unwrap();
        sut.push(Priority::Normal, frame(&pool, 2)).unwrap();
        sut.push(Priority::Critical, frame(&pool, 3)).unwrap();
        sut.push(Priority::Critical, frame(&pool, 4)).unwrap();
        sut.push(Priority::High, frame(&pool, 5)).unwrap();
        let order: Vec<u8> = std::iter::from_fn(|| sut.try_pop())
            .map(|f| tag(&f))
            .collect();
        assert_eq!(order, vec![3, 4, 5, 2, 1]);
    }

    #[test]
    fn a_full_lane_gives_the_message_back_and_other_lanes_still_accept() {
        let pool = FramePool::new(8, 8);
        let sut = Inbox::new(2, 1);
        sut.push(Priority::Normal, frame(&pool, 1)).unwrap();
        sut.push(Priority::Normal, frame(&pool, 2)).unwrap();
        let back = sut.push(Priority::Normal, frame(&pool, 3)).unwrap_err();
        assert_eq!(tag(&back), 3);
        assert!(sut.push(Priority::High, frame(&pool, 4)).is_ok());
    }

    #[test]
    fn low_priority_is_served_within_the_starvation_bound_under_constant_pressure() {
        let pool = FramePool::new(64, 8);
        let sut = Inbox::new(16, 1);
        sut.push(Priority::Low, frame(&pool, 0)).unwrap();
        let mut takes = 0;
        loop {
            // Keep every higher lane non-empty.
            for (priority, t) in [
                (Priority::Critical, 1),
                (Priority::High, 2),
                (Priority::Normal, 3),
            ] {
                if sut.lanes[lane(priority)].borrow().is_empty() {
                    sut.push(priority, frame(&pool, t)).unwrap();
                }
            }
            takes += 1;
            if tag(&sut.try_pop().unwrap()) == 0 {
                break;
            }
            assert!(takes <= STARVE_LIMIT + 3, "LOW waited {takes} takes");
        }
    }

    #[test]
    fn a_closed_inbox_refuses_messages_and_ends_receivers_once_drained() {
        let pool = FramePool::new(4, 8);
        let sut = Inbox::new(4, 1);
        sut.push(Priority::Normal, frame(&pool, 1)).unwrap();
        sut.close();
        assert!(sut.push(Priority::Normal, frame(&pool, 2)).is_err());
        let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .make()
            .unwrap();
        executor.run(async {
            assert_eq!(sut.recv().await.map(|f| tag(&f)), Some(1));
            assert!(sut.recv().await.is_none());
        });
    }

    #[test]
    fn a_paused_inbox_refuses_messages_and_holds_receivers_until_resumed() {
        let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .make()
            .unwrap();
        executor.run(async {
            let pool = FramePool::new(4, 8);
            let sut = std::rc::Rc::new(Inbox::new(4, 1));
            sut.pause();
            assert!(sut.refuses());
            assert!(sut.push(Priority::High, frame(&pool, 1)).is_err());
            let inbox = std::rc::Rc::clone(&sut);
            let receiver = glommio::spawn_local(async move { inbox.recv().await.map(|f| tag(&f)) });
            glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
            sut.resume();
            sut.push(Priority::High, frame(&pool, 2)).unwrap();
            assert_eq!(receiver.await, Some(2));
        });
    }

    #[test]
    fn a_worker_waiting_again_finds_its_waker_kept_by_the_push_that_woke_it() {
        use std::sync::Arc;
        let pool = FramePool::new(4, 8);
        let sut = Inbox::new(4, 1);
        let (counting, waker) = Counting::waker();
        let mut cx = Context::from_waker(&waker);
        let mut seen = Vec::new();
        for n in 0..3 {
            let mut recv = std::pin::pin!(sut.recv());
            assert!(recv.as_mut().poll(&mut cx).is_pending());
            sut.push(Priority::High, frame(&pool, n)).unwrap();
            let Poll::Ready(Some(got)) = recv.as_mut().poll(&mut cx) else {
                panic!("the push's message");
            };
            seen.push((tag(&got), counting.wakes(), Arc::strong_count(&counting)));
        }
        // Ours, the waker, and the one clone the inbox keeps.
        assert_eq!(seen, [(0, 1, 3), (1, 2, 3), (2, 3, 3)]);
    }

    #[test]
    fn a_waiting_receiver_is_woken_by_a_push() {
        let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .make()
            .unwrap();
        executor.run(async {
            let pool = FramePool::new(4, 8);
            let sut = std::rc::Rc::new(Inbox::new(4, 1));
            let inbox = std::rc::Rc::clone(&sut);
            let receiver = glommio::spawn_local(async move { inbox.recv().await.map(|f| tag(&f)) });
            glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
            sut.push(Priority::High, frame(&pool, 9)).unwrap();
            assert_eq!(receiver.await, Some(9));
        });
    }
}
