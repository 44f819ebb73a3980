//! The executor's task census: which of its tasks are ready to run, so
//! that the pump knows when it may hold the executor's thread.
//!
//! The pump ([`super::pump`]) waits for ring messages and timer deadlines
//! by holding the thread (spinning, then `ppoll` on the executor's bell)
//! instead of handing the wait to glommio's io_uring reactor, whose
//! wake-up path and per-pass timer rearming cost tens of microseconds on a
//! VM. It may do so only while no other task of its executor is ready.
//! glommio does not say that, so every other task the runtime spawns goes
//! through [`Census::spawn`], which wraps it: the wrapper polls the task
//! with a waker of its own that, when woken, marks the task queued (and
//! counts it) before waking glommio's. Polling unmarks it. The pump asks
//! [`Census::ready`]: the number of queued tasks, and
//! [`Census::ready_apart`]: how many of them are in another task queue
//! than its own (it yields the whole queue for those). The pump itself is
//! spawned around the census: it is the one task that never needs
//! counting.
//!
//! Every wake of pinwheel's own tasks comes from the executor's thread (a
//! frame taken by the pump, a reply, a timer), and so does every poll. The
//! marks and the counts are therefore the thread's own: plain loads and
//! stores, no read-modify-write. (They were compare-and-swaps and locked
//! adds, four a message on its path; `bench router`'s call across CPUs
//! was ~40 ns slower at p50 for them.) A waker may still travel to
//! another thread. A wake from there hands the task over instead: it
//! flags the task as handed (once until taken), queues it for the
//! executor, counts it in `foreign`, wakes glommio's waker (glommio
//! queues that for its next reactor pass and writes its eventfd, waking
//! an executor asleep in its reactor), and rings the executor's bell if
//! the pump may be parked on it. The pump takes the handed tasks at the top
//! of each loop ([`Census::take_foreign`]) and wakes them on its own
//! thread, where glommio runs them in the same loop, without waiting for
//! a reactor pass. `foreign` and the
//! parked flag follow Dekker's pattern: the pump sets `parked`, its wait
//! fences (`SeqCst`) before parking, and it reads `foreign` (in
//! [`Census::ready`]); a foreign waker adds to `foreign` then reads
//! `parked` (both `SeqCst`); one of them sees the other.
//!
//! The wrapper keeps glommio's waker from the task's first poll: glommio
//! polls a task only with that task's own waker, so it never changes (and
//! waking any of them schedules the same task). A task spawned around the
//! census (plain `glommio::spawn_local`) still runs; only the pump cannot
//! see it ready and may hold the thread up to its idle limit before it
//! does.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use glommio::TaskQueueHandle;

use pinwheel_ipc::ring::DataBell;

/// A task that is not queued.
const IDLE: u8 = 0;
/// Woken and not polled since.
const QUEUED: u8 = 1;
/// Finished or dropped: wakes are ignored.
const DONE: u8 = 2;

/// The census of one executor's tasks.
#[derive(Debug)]
pub struct Census {
    /// Tasks woken here and not polled since. Written by the executor's
    /// thread only (atomic to be `Sync`; plain loads and stores).
    queued: AtomicUsize,
    /// Of `queued`, those outside the pump's task queue.
    queued_apart: AtomicUsize,
    /// The pump's task queue, once it is made.
    pump_queue: OnceLock<TaskQueueHandle>,
    parked: AtomicBool,
    /// Tasks woken from other threads and not yet taken by the pump.
    foreign: AtomicUsize,
    /// Those tasks, for the pump to wake.
    handed: Mutex<Vec<Arc<TaskWaker>>>,
    bell: DataBell,
    /// The executor thread, as the address of its [`THREAD_MARK`].
    thread: usize,
}

thread_local! {
    /// A byte per thread whose address names the thread (cheaper to read
    /// than `std::thread::current()`, which clones a handle).
    static THREAD_MARK: u8 = const { 0 };
}

fn thread_mark() -> usize {
    THREAD_MARK.with(|mark| std::ptr::from_ref(mark).addr())
}

impl Census {
    /// The census of the calling executor thread, whose pump parks on
    /// `bell`.
    pub fn new(bell: DataBell) -> Arc<Self> {
        Arc::new(Self {
            queued: AtomicUsize::new(0),
            queued_apart: AtomicUsize::new(0),
            pump_queue: OnceLock::new(),
            parked: AtomicBool::new(false),
            foreign: AtomicUsize::new(0),
            handed: Mutex::new(Vec::new()),
            bell,
            thread: thread_mark(),
        })
    }

    /// Tasks woken and not yet polled (the running task is never one).
    /// Counts the tasks woken from other threads too, before the pump
    /// takes them.
    pub fn ready(&self) -> usize {
        // SYNC: Relaxed; `queued` is the executor thread's own.
        let here = self.queued.load(Ordering::Relaxed);
        // SYNC: SeqCst pairs with the SeqCst add in TaskWaker::hand_over
        // (Dekker with `parked`, see the module doc).
        here + self.foreign.load(Ordering::SeqCst)
    }

    /// Of [`Census::ready`], the tasks outside the pump's task queue.
    pub fn ready_apart(&self) -> usize {
        // SYNC: Relaxed; the count only picks how the pump yields, and a
        // stale one costs a loop of the pump, not a wake (`queued` is the
        // one that decides whether it may park).
        self.queued_apart.load(Ordering::Relaxed)
    }

    /// Names the pump's task queue. Tasks spawned from now on count apart
    /// unless they are in it; until then, every task does.
    pub fn set_pump_queue(&self, queue: TaskQueueHandle) {
        let _ = self.pump_queue.set(queue);
    }

    /// Wakes, on the executor's thread, the tasks woken from other threads
    /// since the last call; returns how many there were.
    pub fn take_foreign(&self) -> usize {
        // SYNC: Relaxed; a hand-over this misses is counted in `ready`,
        // so the pump loops (or does not park) and takes it next time.
        if self.foreign.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        let handed = {
            let mut handed = self.handed.lock().unwrap_or_else(PoisonError::into_inner);
            // SYNC: SeqCst, as every change of `foreign`; under the lock,
            // so it always matches the queue.
            self.foreign.fetch_sub(handed.len(), Ordering::SeqCst);
            std::mem::take(&mut *handed)
        };
        for task in &handed {
            // SYNC: Release; a foreign wake from now on hands the task
            // over again (at worst one spurious poll).
            task.handed.store(false, Ordering::Release);
            task.wake_here();
        }
        handed.len()
    }

    /// Declares the pump (about to be) parked on the bell, or no longer.
    /// Set before the pump's wait, which fences before it parks
    /// ([`ConsumerGroup::wait_until`](pinwheel_ipc::ring::ConsumerGroup::wait_until)),
    /// so setting it costs the spinning pump no fence: a `SeqCst` store
    /// waited, on the message's path, for the stores before it (the reply
    /// just written to a ring) to reach the other core.
    pub fn set_parked(&self, parked: bool) {
        // SYNC: Relaxed; ordered before the wait's last `ready` by the
        // group's SeqCst fence before it parks, which pairs with the
        // SeqCst add and load in TaskWaker::hand_over (Dekker).
        self.parked.store(parked, Ordering::Relaxed);
    }

    /// Spawns `future` into `queue` of the current executor, counted.
    pub fn spawn<T: 'static>(
        self: &Arc<Self>,
        queue: TaskQueueHandle,
        future: impl Future<Output = T> + 'static,
    ) -> glommio::Result<glommio::Task<T>, ()> {
        let apart = self.pump_queue.get() != Some(&queue);
        let state = Arc::new(TaskWaker {
            status: AtomicU8::new(QUEUED),
            handed: AtomicBool::new(false),
            apart,
            inner: OnceLock::new(),
            census: Arc::clone(self),
        });
        state.count(true);
        let waker = Waker::from(Arc::clone(&state));
        glommio::spawn_local_into(
            Counted {
                state,
                waker,
                future: Box::pin(future),
            },
            queue,
        )
    }
}

/// The waker a counted task is polled with.
#[derive(Debug)]
struct TaskWaker {
    /// IDLE, QUEUED or DONE. The executor thread's own (module doc).
    status: AtomicU8,
    /// Handed over by a foreign wake and not yet taken by the pump.
    handed: AtomicBool,
    /// Outside the pump's task queue.
    apart: bool,
    /// glommio's waker of the task, from its first poll.
    inner: OnceLock<Waker>,
    census: Arc<Census>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if thread_mark() == self.census.thread {
            self.wake_here();
        } else {
            self.hand_over();
        }
    }
}

impl TaskWaker {
    /// Marks the task queued and counts it, unless it is already (or
    /// gone), and wakes glommio's waker. On the executor's thread only.
    fn wake_here(&self) {
        // SYNC: Relaxed; the status is the executor thread's own.
        if self.status.load(Ordering::Relaxed) != IDLE {
            // Already queued (glommio was told) or gone.
            return;
        }
        self.status.store(QUEUED, Ordering::Relaxed);
        self.count(true);
        if let Some(waker) = self.inner.get() {
            waker.wake_by_ref();
        }
    }

    /// Hands the task to the executor's pump from another thread.
    fn hand_over(self: &Arc<Self>) {
        // SYNC: AcqRel; pairs with the Release reset in take_foreign.
        if self.handed.swap(true, Ordering::AcqRel) {
            // Handed over and not yet taken: that wake covers this one.
            return;
        }
        let census = &self.census;
        {
            let mut handed = census.handed.lock().unwrap_or_else(PoisonError::into_inner);
            handed.push(Arc::clone(self));
            // SYNC: SeqCst: Dekker with `parked` (module doc).
            census.foreign.fetch_add(1, Ordering::SeqCst);
        }
        // glommio queues the wake for its next reactor pass and writes its
        // eventfd, which wakes an executor asleep in its reactor (the
        // wake-up guard's nudge relies on it); the pump, if it takes the
        // task first, runs it sooner, and glommio's wake adds a spurious
        // poll.
        if let Some(waker) = self.inner.get() {
            waker.wake_by_ref();
        }
        // SYNC: SeqCst; pairs with the SeqCst fence the pump's wait issues
        // after Census::set_parked and before it parks (Dekker).
        if census.parked.load(Ordering::SeqCst) {
            // A spurious ring is harmless; a failed one leaves the pump to
            // its deadline, which is bounded.
            let _ = census.bell.nudge();
        }
    }

    /// Leaves the queued state; true if it was queued. On the executor's
    /// thread only.
    fn unqueue(&self, to: u8) -> bool {
        // SYNC: Relaxed; the status is the executor thread's own.
        let was = self.status.load(Ordering::Relaxed);
        self.status.store(to, Ordering::Relaxed);
        if was == QUEUED {
            self.count(false);
        }
        was == QUEUED
    }

    /// Adds the task to the census's counts (`queued`) or takes it off.
    /// On the executor's thread only: plain loads and stores.
    fn count(&self, queued: bool) {
        let bump = |count: &AtomicUsize| {
            // SYNC: Relaxed; the counts are the executor thread's own.
            let now = count.load(Ordering::Relaxed);
            let next = if queued {
                now + 1
            } else {
                now.saturating_sub(1)
            };
            count.store(next, Ordering::Relaxed);
        };
        bump(&self.census.queued);
        if self.apart {
            bump(&self.census.queued_apart);
        }
    }
}

/// A task wrapped by [`Census::spawn`].
struct Counted<F> {
    state: Arc<TaskWaker>,
    waker: Waker,
    future: Pin<Box<F>>,
}

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.state.unqueue(IDLE);
        if self.state.inner.get().is_none() {
            let _ = self.state.inner.set(cx.waker().clone());
        }
        let this = &mut *self;
        let mut counted = Context::from_waker(&this.waker);
        let poll = this.future.as_mut().poll(&mut counted);
        if poll.is_ready() {
            this.state.unqueue(DONE);
        }
        poll
    }
}

impl<F> Drop for Counted<F> {
    fn drop(&mut self) {
        self.state.unqueue(DONE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::pump::YieldNow;
    use std::sync::Mutex;

    fn on_executor<T: Send + 'static>(
        body: impl FnOnce(Arc<Census>) -> std::pin::Pin<Box<dyn Future<Output = T>>> + Send + 'static,
    ) -> T {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(move || async move { body(Census::new(DataBell::new().unwrap())).await })
            .unwrap()
            .join()
            .unwrap()
    }

    #[test]
    fn a_spawned_task_counts_as_ready_until_it_first_runs() {
        let (before, after) = on_executor(|sut| {
            Box::pin(async move {
                let queue = glommio::executor().current_task_queue();
                let task = sut.spawn(queue, async {}).unwrap();
                let before = sut.ready();
                task.await;
                (before, sut.ready())
            })
        });
        assert_eq!((before, after), (1, 0));
    }

    #[test]
    fn only_tasks_outside_the_pump_s_queue_count_apart() {
        let seen = on_executor(|sut| {
            Box::pin(async move {
                let executor = glommio::executor();
                let pump_queue = executor.current_task_queue();
                let other = executor.create_task_queue(
                    glommio::Shares::Static(100),
                    glommio::Latency::NotImportant,
                    "other",
                );
                let before = sut.spawn(other, async {}).unwrap();
                sut.set_pump_queue(pump_queue);
                let beside = sut.spawn(pump_queue, async {}).unwrap();
                let after = sut.spawn(other, async {}).unwrap();
                let counted = (sut.ready(), sut.ready_apart());
                before.await;
                beside.await;
                after.await;
                (counted, (sut.ready(), sut.ready_apart()))
            })
        });
        assert_eq!(seen, ((3, 2), (0, 0)));
    }

    #[test]
    fn a_woken_task_is_ready_until_polled_and_a_finished_one_never_again() {
        let seen = on_executor(|sut| {
            Box::pin(async move {
                let queue = glommio::executor().current_task_queue();
                let slot: std::rc::Rc<std::cell::RefCell<Option<Waker>>> = Default::default();
                let keep = std::rc::Rc::clone(&slot);
                let task = sut
                    .spawn(queue, async move {
                        std::future::poll_fn(|cx| {
                            if keep.borrow().is_some() {
                                Poll::Ready(())
                            } else {
                                *keep.borrow_mut() = Some(cx.waker().clone());
                                Poll::Pending
                            }
                        })
                        .await
                    })
                    .unwrap();
                YieldNow(false).await;
                let parked = sut.ready();
                let waker = slot.borrow().clone().unwrap();
                waker.wake_by_ref();
                waker.wake_by_ref();
                let woken = sut.ready();
                task.await;
                waker.wake_by_ref();
                (parked, woken, sut.ready())
            })
        });
        assert_eq!(seen, (0, 1, 0));
    }

    #[test]
    fn a_wake_from_another_thread_is_handed_to_the_pump_and_rings_the_bell_of_a_parked_pump() {
        let (counts, rung) = on_executor(|sut| {
            Box::pin(async move {
                let queue = glommio::executor().current_task_queue();
                let slot: Arc<Mutex<Option<Waker>>> = Default::default();
                let keep = Arc::clone(&slot);
                let _task = sut
                    .spawn(queue, async move {
                        std::future::poll_fn(|cx| {
                            *keep.lock().unwrap() = Some(cx.waker().clone());
                            Poll::<()>::Pending
                        })
                        .await
                    })
                    .unwrap();
                YieldNow(false).await;
                sut.set_parked(true);
                let waker = slot.lock().unwrap().clone().unwrap();
                let waking = std::thread::spawn(move || {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    waker.wake();
                });
                let mut group = pinwheel_ipc::ring::ConsumerGroup::new(
                    sut.bell.clone(),
                    pinwheel_ipc::ring::WaitStrategy::Park,
                    0,
                );
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
                let wake = group.wait_until(deadline, || sut.ready() > 0).unwrap();
                waking.join().unwrap();
                let rung = wake == pinwheel_ipc::ring::GroupWake::Interrupted && group.parks() == 1;
                sut.set_parked(false);
                let handed = sut.ready();
                let taken = sut.take_foreign();
                let queued = sut.ready();
                (
                    (handed, taken, queued, sut.take_foreign(), sut.ready()),
                    rung,
                )
            })
        });
        assert_eq!(
            counts,
            (1, 1, 1, 0, 1),
            "counted while handed over, then queued here once taken"
        );
        assert!(rung, "the parked pump's bell rang");
    }

    #[test]
    fn foreign_wakes_before_the_pump_takes_them_hand_the_task_over_once_and_a_gone_task_never_counts()
     {
        let seen = on_executor(|sut| {
            Box::pin(async move {
                let queue = glommio::executor().current_task_queue();
                let slot: Arc<Mutex<Option<Waker>>> = Default::default();
                let keep = Arc::clone(&slot);
                let polls = std::rc::Rc::new(std::cell::Cell::new(0u32));
                let counted = std::rc::Rc::clone(&polls);
                let task = sut
                    .spawn(queue, async move {
                        std::future::poll_fn(|cx| {
                            counted.set(counted.get() + 1);
                            if counted.get() >= 2 {
                                return Poll::Ready(());
                            }
                            *keep.lock().unwrap() = Some(cx.waker().clone());
                            Poll::Pending
                        })
                        .await
                    })
                    .unwrap();
                YieldNow(false).await;
                let waker = slot.lock().unwrap().clone().unwrap();
                let from_afar = waker.clone();
                std::thread::spawn(move || {
                    from_afar.wake_by_ref();
                    from_afar.wake_by_ref();
                    from_afar.wake();
                })
                .join()
                .unwrap();
                let handed = (sut.ready(), sut.take_foreign(), sut.ready());
                task.await;
                let after = sut.ready();
                let from_afar = waker.clone();
                std::thread::spawn(move || from_afar.wake()).join().unwrap();
                let gone = (sut.ready(), sut.take_foreign(), sut.ready());
                (handed, after, gone, polls.get())
            })
        });
        assert_eq!(seen, ((1, 1, 1), 0, (1, 1, 0), 2));
    }
}
