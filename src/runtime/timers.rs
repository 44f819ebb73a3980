//! The executor's timers: every sleep, deadline and period of pinwheel's
//! tasks on one executor, kept here instead of in glommio's reactor.
//!
//! glommio fires a timer only in a reactor pass, which rearms its own
//! timeouts through io_uring (tens of microseconds on a VM), and wakes a
//! sleeping executor through the io_uring timeout path (about 25 µs later
//! than a `clock_nanosleep` thread on the same CPU). Here a timer is a
//! deadline in a slot; the pump ([`super::pump`]) asks for the earliest
//! ([`Timers::next_deadline`]), holds the thread until then (or a ring
//! message), and fires what is due ([`Timers::fire`]), so a sleeping agent
//! wakes as promptly as a plain thread and no reactor pass stands between
//! a due time and the task.
//!
//! Layout: a slot per [`Timer`] (a worker's, a context's, the ticker's),
//! taken when its owner is created and reused for every arming, and a
//! min-heap of `(deadline, slot, generation)`. Arming bumps the slot's
//! generation and pushes an entry; an entry whose generation is old is
//! stale and is dropped when it reaches the top, or all at once when stale
//! entries outnumber live ones (so a worker that rearms its deadline per
//! message does not grow the heap). The heap keeps its capacity, so
//! steady-state arming allocates nothing.
//!
//! A timer also checks the clock at its first poll after each arming, so
//! a due time already past is met at once; after that the pump fires it.
//! (A worker's deadline timer is polled beside its handler at every
//! wake-up of the handler: reading the clock there each time was one read
//! per call the handler made.) Times are CLOCK_MONOTONIC nanoseconds,
//! the clock envelopes carry, read from the executor's clock
//! ([`super::clock`]), which the timers own: deadlines are armed and
//! checked on the same clock.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use super::clock::Clock;

/// Stale heap entries tolerated before a compaction, at least.
const STALE_SLACK: usize = 64;

#[derive(Debug, Default)]
struct Slot {
    generation: u32,
    /// Due time; 0 when not armed.
    deadline_ns: u64,
    fired: bool,
    /// Whether a poll since the last arming read the clock.
    checked: bool,
    waker: Option<Waker>,
}

/// One executor's timers.
#[derive(Debug, Default)]
pub struct Timers {
    slots: RefCell<Vec<Slot>>,
    free: RefCell<Vec<u32>>,
    heap: RefCell<BinaryHeap<Reverse<(u64, u32, u32)>>>,
    stale: Cell<usize>,
    clock: Clock,
}

impl Timers {
    /// No timers yet.
    pub fn new() -> Rc<Self> {
        Rc::new(Self::default())
    }

    /// The executor's clock (its tasks stamp and time messages with it).
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Wakes every timer due at `now_ns`; returns how many.
    pub fn fire(&self, now_ns: u64) -> usize {
        let mut fired = 0;
        let mut heap = self.heap.borrow_mut();
        let mut slots = self.slots.borrow_mut();
        while let Some(&Reverse((deadline, index, generation))) = heap.peek() {
            if deadline > now_ns {
                break;
            }
            heap.pop();
            let slot = &mut slots[index as usize];
            if slot.generation != generation || slot.deadline_ns != deadline {
                self.stale.set(self.stale.get().saturating_sub(1));
                continue;
            }
            slot.deadline_ns = 0;
            slot.fired = true;
            if let Some(waker) = slot.waker.take() {
                waker.wake();
            }
            fired += 1;
        }
        fired
    }

    /// The earliest armed due time, if any.
    pub fn next_deadline(&self) -> Option<u64> {
        let mut heap = self.heap.borrow_mut();
        let slots = self.slots.borrow();
        while let Some(&Reverse((deadline, index, generation))) = heap.peek() {
            let slot = &slots[index as usize];
            if slot.generation == generation && slot.deadline_ns == deadline {
                return Some(deadline);
            }
            heap.pop();
            self.stale.set(self.stale.get().saturating_sub(1));
        }
        None
    }

    /// Timers armed now.
    pub fn armed(&self) -> usize {
        self.heap.borrow().len() - self.stale.get()
    }

    fn take_slot(&self) -> u32 {
        if let Some(index) = self.free.borrow_mut().pop() {
            return index;
        }
        let mut slots = self.slots.borrow_mut();
        slots.push(Slot::default());
        u32::try_from(slots.len() - 1).expect("fewer than 4 billion timers on one executor")
    }

    fn arm(&self, index: u32, deadline_ns: u64) {
        let deadline_ns = deadline_ns.max(1);
        let generation = {
            let mut slots = self.slots.borrow_mut();
            let slot = &mut slots[index as usize];
            if slot.deadline_ns != 0 {
                self.stale.set(self.stale.get() + 1);
            }
            slot.generation = slot.generation.wrapping_add(1);
            slot.deadline_ns = deadline_ns;
            slot.fired = false;
            slot.checked = false;
            slot.generation
        };
        self.heap
            .borrow_mut()
            .push(Reverse((deadline_ns, index, generation)));
        self.compact();
    }

    fn disarm(&self, index: u32) {
        let mut slots = self.slots.borrow_mut();
        let slot = &mut slots[index as usize];
        if slot.deadline_ns != 0 {
            self.stale.set(self.stale.get() + 1);
            slot.deadline_ns = 0;
        }
        slot.generation = slot.generation.wrapping_add(1);
        slot.fired = false;
        slot.waker = None;
    }

    /// Drops every stale entry once they outnumber the live ones.
    fn compact(&self) {
        let stale = self.stale.get();
        let live = self.heap.borrow().len() - stale;
        if stale < STALE_SLACK.max(2 * live) {
            return;
        }
        let slots = self.slots.borrow();
        self.heap
            .borrow_mut()
            .retain(|&Reverse((deadline, index, generation))| {
                let slot = &slots[index as usize];
                slot.generation == generation && slot.deadline_ns == deadline
            });
        self.stale.set(0);
    }

    fn poll_slot(&self, index: u32, cx: &Context<'_>) -> Poll<()> {
        let mut slots = self.slots.borrow_mut();
        let slot = &mut slots[index as usize];
        if slot.fired || slot.deadline_ns == 0 {
            slot.fired = false;
            return Poll::Ready(());
        }
        if !slot.checked {
            slot.checked = true;
            if self.clock.now_ns() >= slot.deadline_ns {
                drop(slots);
                self.disarm(index);
                return Poll::Ready(());
            }
        }
        if !slot.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            slot.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// A reusable timer: one slot of its executor's [`Timers`].
#[derive(Debug)]
pub struct Timer {
    timers: Rc<Timers>,
    index: u32,
}

impl Timer {
    /// A timer on `timers`, not armed.
    pub fn new(timers: &Rc<Timers>) -> Self {
        Self {
            timers: Rc::clone(timers),
            index: timers.take_slot(),
        }
    }

    /// Arms it for `deadline_ns` (CLOCK_MONOTONIC), replacing any earlier
    /// arming.
    pub fn arm(&mut self, deadline_ns: u64) {
        self.timers.arm(self.index, deadline_ns);
    }

    /// Disarms it.
    pub fn disarm(&mut self) {
        self.timers.disarm(self.index);
    }

    /// Waits until the armed due time (at once if not armed).
    pub fn wait(&mut self) -> Wait<'_> {
        Wait { timer: self }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.timers.disarm(self.index);
        self.timers.free.borrow_mut().push(self.index);
    }
}

/// The future of [`Timer::wait`].
#[derive(Debug)]
pub struct Wait<'a> {
    timer: &'a mut Timer,
}

impl Future for Wait<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.timer.timers.poll_slot(self.timer.index, cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::ctx::now_ns;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll(wait: &mut Wait<'_>, waker: &Waker) -> Poll<()> {
        Pin::new(wait).poll(&mut Context::from_waker(waker))
    }

    #[test]
    fn a_timer_fires_at_its_due_time_and_not_before() {
        let timers = Timers::new();
        let mut sut = Timer::new(&timers);
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        let due = now_ns() + 3_600_000_000_000;
        sut.arm(due);
        assert!(poll(&mut sut.wait(), &waker).is_pending());
        assert_eq!(timers.next_deadline(), Some(due));
        assert_eq!(timers.fire(due - 1), 0);
        assert_eq!(timers.fire(due), 1);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(poll(&mut sut.wait(), &waker).is_ready());
        assert_eq!(timers.next_deadline(), None);
    }

    #[test]
    fn a_past_due_time_is_ready_without_being_fired() {
        let timers = Timers::new();
        let mut sut = Timer::new(&timers);
        sut.arm(1);
        let waker = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        assert!(poll(&mut sut.wait(), &waker).is_ready());
        assert_eq!(timers.armed(), 0);
    }

    #[test]
    fn only_the_first_poll_after_arming_reads_the_clock_then_the_pump_fires() {
        let timers = Timers::new();
        let mut sut = Timer::new(&timers);
        let waker = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        let due = now_ns() + 1_000_000;
        sut.arm(due);
        assert!(poll(&mut sut.wait(), &waker).is_pending());
        while now_ns() < due {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(
            poll(&mut sut.wait(), &waker).is_pending(),
            "past due, but only the pump fires it now"
        );
        assert_eq!(timers.fire(now_ns()), 1);
        assert!(poll(&mut sut.wait(), &waker).is_ready());
        sut.arm(due);
        assert!(
            poll(&mut sut.wait(), &waker).is_ready(),
            "a new arming reads the clock again"
        );
    }

    #[test]
    fn rearming_replaces_the_due_time_and_the_old_entry_never_fires() {
        let timers = Timers::new();
        let mut sut = Timer::new(&timers);
        let base = now_ns() + 3_600_000_000_000;
        sut.arm(base);
        sut.arm(base + 10);
        assert_eq!(timers.next_deadline(), Some(base + 10));
        assert_eq!(timers.fire(base + 5), 0);
        assert_eq!(timers.fire(base + 10), 1);
    }

    #[test]
    fn rearming_per_message_keeps_the_heap_bounded() {
        let timers = Timers::new();
        let mut workers: Vec<Timer> = (0..4).map(|_| Timer::new(&timers)).collect();
        let base = now_ns() + 3_600_000_000_000;
        for round in 0..10_000u64 {
            workers[(round % 4) as usize].arm(base + round);
        }
        assert_eq!(timers.armed(), 4);
        assert!(timers.heap.borrow().len() <= 4 + STALE_SLACK.max(8) + 1);
    }

    #[test]
    fn a_dropped_timer_gives_its_slot_back_and_never_fires() {
        let timers = Timers::new();
        let due = now_ns() + 3_600_000_000_000;
        let mut first = Timer::new(&timers);
        first.arm(due);
        drop(first);
        let second = Timer::new(&timers);
        assert_eq!(second.index, 0);
        assert_eq!(timers.fire(due), 0);
        assert_eq!(timers.next_deadline(), None);
    }
}
