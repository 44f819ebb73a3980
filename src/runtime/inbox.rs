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
//!
//! A native agent's inbox may also have an [`Inline`] server, offered a
//! message only when every lane is empty and a worker waits idle: it runs
//! the handler on the sender's task until the handler first waits. That
//! worker is lent to it meanwhile (a push wakes a waiting worker only
//! while more wait than are lent), so the agent never runs more handlers
//! than it has workers. A handler that finishes there cost no wake-up at
//! all: a local call whose reply is ready when its send returns never
//! waits. One that waits is handed to a worker as [`Work::Resume`], ahead
//! of queued messages, and the lent worker is woken for it.

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

/// A handler an [`Inline`] server started and that waits: its state lives
/// in one of the server's seats, reserved at boot.
pub trait Started {
    /// Polls the handler on.
    fn poll_rest(&mut self, cx: &mut Context<'_>) -> Poll<()>;
    /// Drops what is left of the handler and gives the seat back.
    fn release(self: Box<Self>);
}

/// The rest of a handler an [`Inline`] server started: a worker finishes
/// it. Its seat goes back to the server when it finishes or is dropped.
pub struct Resume(Option<Box<dyn Started>>);

impl Resume {
    /// Wraps a started handler.
    pub fn new(started: Box<dyn Started>) -> Self {
        Self(Some(started))
    }
}

impl Future for Resume {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(started) = self.0.as_mut() else {
            return Poll::Ready(());
        };
        let polled = started.poll_rest(cx);
        if polled.is_ready()
            && let Some(started) = self.0.take()
        {
            started.release();
        }
        polled
    }
}

impl Drop for Resume {
    fn drop(&mut self) {
        if let Some(started) = self.0.take() {
            started.release();
        }
    }
}

impl std::fmt::Debug for Resume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Resume"
        } else {
            "Resume(done)"
        })
    }
}

/// Serves an agent's messages on the sender's task while a worker of the
/// agent is idle.
pub trait Inline: std::fmt::Debug {
    /// Runs `frame`'s handler until it finishes (`Ok(None)`) or first
    /// waits (`Ok(Some(rest))`), or gives the frame back to be queued.
    fn serve(&self, frame: FrameBuf) -> Result<Option<Resume>, FrameBuf>;
}

/// What a worker takes from the inbox.
#[derive(Debug)]
pub enum Work {
    /// A message to handle.
    Message(FrameBuf),
    /// A handler started inline, to finish.
    Resume(Resume),
}

/// An agent's inbox.
#[derive(Debug)]
pub struct Inbox {
    direct: RefCell<Option<Rc<dyn Direct>>>,
    inline: RefCell<Option<Rc<dyn Inline>>>,
    /// Waiting workers lent to inline handlers now running.
    lent: Cell<usize>,
    /// Handlers started inline that wait, for the next worker.
    resumes: RefCell<VecDeque<Resume>>,
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
            inline: RefCell::new(None),
            lent: Cell::new(0),
            resumes: RefCell::new(VecDeque::with_capacity(workers)),
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
        let frame = match self.serve_inline(frame) {
            Ok(()) => return Ok(()),
            Err(frame) => frame,
        };
        let mut lane = self.lanes[lane(priority)].borrow_mut();
        if lane.len() >= self.capacity {
            return Err(frame);
        }
        lane.push_back(frame);
        drop(lane);
        self.wake_one();
        Ok(())
    }

    /// Offers `frame` to the inline server when nothing is queued and a
    /// waiting worker is not lent; gives it back otherwise.
    fn serve_inline(&self, frame: FrameBuf) -> Result<(), FrameBuf> {
        if self.waiters.borrow().len() <= self.lent.get() || !self.lanes_empty() {
            return Err(frame);
        }
        let Some(inline) = self.inline.borrow().clone() else {
            return Err(frame);
        };
        self.lent.set(self.lent.get() + 1);
        let served = inline.serve(frame);
        self.lent.set(self.lent.get() - 1);
        match served {
            Ok(None) => {
                // What was queued meanwhile woke no one: the lent worker
                // takes it.
                if !self.lanes_empty() {
                    self.wake_one();
                }
                Ok(())
            }
            Ok(Some(rest)) => {
                self.resumes.borrow_mut().push_back(rest);
                self.wake_one();
                Ok(())
            }
            Err(frame) => Err(frame),
        }
    }

    /// Wakes a waiting worker that is not lent, if there is one.
    fn wake_one(&self) {
        let mut waiters = self.waiters.borrow_mut();
        if waiters.len() <= self.lent.get() {
            return;
        }
        let Some(waker) = waiters.pop() else {
            return;
        };
        drop(waiters);
        waker.wake_by_ref();
        self.woken.borrow_mut().push(waker);
    }

    fn lanes_empty(&self) -> bool {
        self.lanes.iter().all(|l| l.borrow().is_empty())
    }

    /// Sets (or, with `None`, removes) the inline server.
    pub fn set_inline(&self, inline: Option<Rc<dyn Inline>>) {
        *self.inline.borrow_mut() = inline;
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

    /// Whether no message waits and no handler started inline waits for
    /// a worker.
    pub fn is_empty(&self) -> bool {
        self.lanes_empty() && self.resumes.borrow().is_empty()
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

    /// Stops accepting messages, drops the inline server and wakes every
    /// waiting worker.
    pub fn close(&self) {
        self.closed.set(true);
        self.inline.borrow_mut().take();
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
    type Output = Option<Work>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(rest) = self.inbox.resumes.borrow_mut().pop_front() {
            return Poll::Ready(Some(Work::Resume(rest)));
        }
        if !self.inbox.paused.get()
            && let Some(frame) = self.inbox.try_pop()
        {
            return Poll::Ready(Some(Work::Message(frame)));
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

    fn message(work: Work) -> u8 {
        match work {
            Work::Message(frame) => tag(&frame),
            Work::Resume(_) => panic!("a message, not a handler to resume"),
        }
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

    /// A started handler that ends at its `polls_left`-th poll.
    struct Rest {
        polls_left: u32,
        released: Rc<Cell<u32>>,
    }

    impl Started for Rest {
        fn poll_rest(&mut self, _: &mut Context<'_>) -> Poll<()> {
            self.polls_left -= 1;
            if self.polls_left == 0 {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }

        fn release(self: Box<Self>) {
            self.released.set(self.released.get() + 1);
        }
    }

    /// Serves tags below 10 at once, starts tags 10-19 and leaves them
    /// waiting, declines the rest; while serving tag 1 it pushes tag 30
    /// to the same inbox, and notes what it was offered.
    #[derive(Debug, Default)]
    struct Server {
        offered: RefCell<Vec<u8>>,
        inbox: RefCell<Option<Rc<Inbox>>>,
        pool: RefCell<Option<Rc<FramePool>>>,
        released: Rc<Cell<u32>>,
    }

    impl Inline for Server {
        fn serve(&self, offered: FrameBuf) -> Result<Option<Resume>, FrameBuf> {
            let t = tag(&offered);
            self.offered.borrow_mut().push(t);
            if t == 1 {
                let inbox = self.inbox.borrow().clone().unwrap();
                let pool = self.pool.borrow().clone().unwrap();
                inbox.push(Priority::Normal, frame(&pool, 30)).unwrap();
            }
            match t {
                0..10 => Ok(None),
                10..20 => Ok(Some(Resume::new(Box::new(Rest {
                    polls_left: 2,
                    released: Rc::clone(&self.released),
                })))),
                _ => Err(offered),
            }
        }
    }

    #[test]
    fn the_inline_server_is_offered_a_message_only_while_a_waiting_worker_is_not_lent() {
        let pool = FramePool::new(16, 8);
        let sut = Rc::new(Inbox::new(4, 2));
        let server = Rc::new(Server::default());
        *server.inbox.borrow_mut() = Some(Rc::clone(&sut));
        *server.pool.borrow_mut() = Some(Rc::clone(&pool));
        sut.set_inline(Some(Rc::clone(&server) as Rc<dyn Inline>));

        sut.push(Priority::Normal, frame(&pool, 2)).unwrap();
        assert!(server.offered.borrow().is_empty(), "no worker waits");
        assert_eq!(sut.try_pop().map(|f| tag(&f)), Some(2));

        let (counting, waker) = Counting::waker();
        let mut cx = Context::from_waker(&waker);
        let mut recv = std::pin::pin!(sut.recv());
        assert!(recv.as_mut().poll(&mut cx).is_pending());
        sut.push(Priority::Normal, frame(&pool, 3)).unwrap();
        assert_eq!(*server.offered.borrow(), vec![3]);
        assert_eq!(counting.wakes(), 0, "served: no worker woken");
        assert!(sut.is_empty());

        // Tag 1 pushes tag 30 while the only waiting worker is lent to it:
        // 30 is neither offered nor does it wake that worker until tag 1
        // is done.
        sut.push(Priority::Normal, frame(&pool, 1)).unwrap();
        assert_eq!(*server.offered.borrow(), vec![3, 1]);
        assert_eq!(counting.wakes(), 1, "woken once tag 1 was done");
        let Poll::Ready(Some(work)) = recv.as_mut().poll(&mut cx) else {
            panic!("tag 30 waits for the worker");
        };
        assert_eq!(message(work), 30);

        // Declined: queued, and the worker woken.
        assert!(recv.as_mut().poll(&mut cx).is_pending());
        sut.push(Priority::Normal, frame(&pool, 25)).unwrap();
        assert_eq!(counting.wakes(), 2);
        let Poll::Ready(Some(work)) = recv.as_mut().poll(&mut cx) else {
            panic!("tag 25 was queued");
        };
        assert_eq!(message(work), 25);

        // With a message queued, the next one is not offered though a
        // worker waits: it would jump the queue.
        assert!(recv.as_mut().poll(&mut cx).is_pending());
        let (other, other_waker) = Counting::waker();
        let mut other_recv = std::pin::pin!(sut.recv());
        assert!(
            other_recv
                .as_mut()
                .poll(&mut Context::from_waker(&other_waker))
                .is_pending()
        );
        sut.push(Priority::Normal, frame(&pool, 27)).unwrap();
        sut.push(Priority::Normal, frame(&pool, 4)).unwrap();
        assert_eq!(*server.offered.borrow(), vec![3, 1, 25, 27], "not 4");
        assert_eq!((counting.wakes(), other.wakes()), (3, 1), "both woken");
        let queued: Vec<u8> = std::iter::from_fn(|| sut.try_pop())
            .map(|f| tag(&f))
            .collect();
        assert_eq!(queued, vec![27, 4]);
    }

    #[test]
    fn a_handler_that_waits_goes_to_the_next_worker_ahead_of_queued_messages_and_frees_its_seat() {
        let pool = FramePool::new(16, 8);
        let sut = Rc::new(Inbox::new(4, 2));
        let server = Rc::new(Server::default());
        sut.set_inline(Some(Rc::clone(&server) as Rc<dyn Inline>));
        let (counting, waker) = Counting::waker();
        let mut cx = Context::from_waker(&waker);
        let mut recv = std::pin::pin!(sut.recv());
        assert!(recv.as_mut().poll(&mut cx).is_pending());

        sut.push(Priority::Normal, frame(&pool, 12)).unwrap();
        assert_eq!(counting.wakes(), 1, "the lent worker is woken for the rest");
        assert!(!sut.is_empty(), "the rest waits for a worker");
        sut.push(Priority::Critical, frame(&pool, 40)).unwrap();
        let Poll::Ready(Some(Work::Resume(mut rest))) = recv.as_mut().poll(&mut cx) else {
            panic!("the started handler comes first");
        };
        assert!(Pin::new(&mut rest).poll(&mut cx).is_pending());
        assert_eq!(server.released.get(), 0);
        assert!(Pin::new(&mut rest).poll(&mut cx).is_ready());
        assert_eq!(server.released.get(), 1, "its seat went back when it ended");
        drop(rest);
        assert_eq!(server.released.get(), 1, "once");
        assert_eq!(sut.try_pop().map(|f| tag(&f)), Some(40));

        // One dropped before it ends gives its seat back too.
        let mut recv = std::pin::pin!(sut.recv());
        assert!(recv.as_mut().poll(&mut cx).is_pending());
        sut.push(Priority::Normal, frame(&pool, 13)).unwrap();
        let Poll::Ready(Some(work)) = recv.as_mut().poll(&mut cx) else {
            panic!("the started handler");
        };
        drop(work);
        assert_eq!(server.released.get(), 2);
    }

    #[test]
    fn a_paused_or_closed_inbox_offers_nothing_and_closing_drops_the_server() {
        let pool = FramePool::new(16, 8);
        let sut = Inbox::new(4, 1);
        let server = Rc::new(Server::default());
        sut.set_inline(Some(Rc::clone(&server) as Rc<dyn Inline>));
        let (_counting, waker) = Counting::waker();
        let mut cx = Context::from_waker(&waker);
        let mut recv = std::pin::pin!(sut.recv());
        assert!(recv.as_mut().poll(&mut cx).is_pending());

        sut.pause();
        assert!(sut.push(Priority::Normal, frame(&pool, 2)).is_err());
        sut.resume();
        sut.close();
        assert!(sut.push(Priority::Normal, frame(&pool, 3)).is_err());
        assert!(server.offered.borrow().is_empty());
        assert_eq!(Rc::strong_count(&server), 1, "the inbox let go of it");
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
            assert_eq!(sut.recv().await.map(message), Some(1));
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
            let receiver = glommio::spawn_local(async move { inbox.recv().await.map(message) });
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
            seen.push((message(got), counting.wakes(), Arc::strong_count(&counting)));
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
            let receiver = glommio::spawn_local(async move { inbox.recv().await.map(message) });
            glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
            sut.push(Priority::High, frame(&pool, 9)).unwrap();
            assert_eq!(receiver.await, Some(9));
        });
    }
}
