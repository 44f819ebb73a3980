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
//! A wake from another thread (none of pinwheel's own tasks do that, but
//! a waker may travel) also raises a flag the pump reads as "let glommio
//! run a reactor pass", since glommio queues foreign wakes only there, and
//! rings the executor's bell if the pump may be parked on it. The parked
//! flag and the count follow Dekker's pattern (both sides `SeqCst`): the
//! pump sets `parked` then reads the count; a waker adds to the count then
//! reads `parked`; one of them sees the other.
//!
//! Cost per task poll or wake: one compare-and-swap and one count, no
//! lock and no allocation. The wrapper keeps glommio's waker from the
//! task's first poll: glommio polls a task only with that task's own
//! waker, so it never changes (and waking any of them schedules the same
//! task). A task spawned around the census (plain `glommio::spawn_local`)
//! still runs; only the pump cannot see it ready and may hold the thread
//! up to its idle limit before it does.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
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
    queued: AtomicUsize,
    /// Of `queued`, those outside the pump's task queue.
    queued_apart: AtomicUsize,
    /// The pump's task queue, once it is made.
    pump_queue: OnceLock<TaskQueueHandle>,
    parked: AtomicBool,
    foreign: AtomicBool,
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
            foreign: AtomicBool::new(false),
            bell,
            thread: thread_mark(),
        })
    }

    /// Tasks woken and not yet polled (the running task is never one).
    pub fn ready(&self) -> usize {
        // SYNC: SeqCst pairs with the SeqCst increment in TaskWaker::wake_by_ref
        // (Dekker with `parked`, see the module doc).
        self.queued.load(Ordering::SeqCst)
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

    /// Whether a task was woken from another thread since the last call:
    /// glommio queues it only in its next reactor pass.
    pub fn take_foreign(&self) -> bool {
        // SYNC: Relaxed; the flag only asks for a reactor pass, and the
        // count it comes with is read with SeqCst.
        self.foreign.swap(false, Ordering::Relaxed)
    }

    /// Declares the pump (about to be) parked on the bell, or no longer.
    pub fn set_parked(&self, parked: bool) {
        // SYNC: SeqCst pairs with the SeqCst load in TaskWaker::wake_by_ref.
        self.parked.store(parked, Ordering::SeqCst);
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
    status: AtomicU8,
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
        // SYNC: AcqRel on the task's own status word: the poll's Release
        // reset to IDLE happens before this wake counts it again.
        let counted = self
            .status
            .compare_exchange(IDLE, QUEUED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if !counted {
            // Already queued (glommio was told) or gone.
            return;
        }
        self.count(true);
        let census = &self.census;
        if thread_mark() != census.thread {
            // SYNC: Relaxed; see Census::take_foreign.
            census.foreign.store(true, Ordering::Relaxed);
        }
        if let Some(waker) = self.inner.get() {
            waker.wake_by_ref();
        }
        // SYNC: SeqCst pairs with the SeqCst store in Census::set_parked.
        if census.parked.load(Ordering::SeqCst) {
            // A spurious ring is harmless; a failed one leaves the pump to
            // its deadline, which is bounded.
            let _ = census.bell.nudge();
        }
    }
}

impl TaskWaker {
    /// Leaves the queued state; true if it was queued.
    fn unqueue(&self, to: u8) -> bool {
        // SYNC: AcqRel on the task's status word, as in wake_by_ref.
        let was = self.status.swap(to, Ordering::AcqRel);
        if was == QUEUED {
            self.count(false);
        }
        was == QUEUED
    }

    /// Adds the task to the census's counts (`queued`) or takes it off.
    fn count(&self, queued: bool) {
        let census = &self.census;
        if queued {
            if self.apart {
                // SYNC: Relaxed; see Census::ready_apart. Counted before
                // `queued`, so that the pump, on its own thread, never
                // sees the task in `queued` alone.
                census.queued_apart.fetch_add(1, Ordering::Relaxed);
            }
            // SYNC: SeqCst: Dekker with `parked` (module doc), as every
            // change of the count.
            census.queued.fetch_add(1, Ordering::SeqCst);
        } else {
            // SYNC: SeqCst, as every change of the count.
            census.queued.fetch_sub(1, Ordering::SeqCst);
            if self.apart {
                // SYNC: Relaxed; see Census::ready_apart.
                census.queued_apart.fetch_sub(1, Ordering::Relaxed);
            }
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
    fn a_wake_from_another_thread_is_flagged_and_rings_the_bell_of_a_parked_pump() {
        let (flagged, rung) = on_executor(|sut| {
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
                (sut.take_foreign(), rung)
            })
        });
        assert!(flagged, "the foreign wake asked for a reactor pass");
        assert!(rung, "the parked pump's bell rang");
    }
}
