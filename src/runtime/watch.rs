//! Rings that an executor's tasks wait on besides the pump's own: a
//! process agent's ring from its agent, read by the agent's bridge
//! ([`crate::process`]), has its own bell (the agent process rings it).
//!
//! The pump holds the executor's thread while nothing is ready
//! ([`super::pump`]), so a task may not park on a bell of its own through
//! glommio's reactor: that reactor runs only in the pump's rare passes. A
//! task waits here instead ([`Watches::wait`]): the pump looks at every
//! watched group on each loop and while it spins ([`Watches::any_frames`]),
//! arms them and parks on their bells beside its own
//! ([`Watches::arm`], [`ConsumerGroup::wait_until_also`]), and wakes the
//! waiting task when its group has a frame ([`Watches::wake_ready`]). A
//! ring message to a bridge thus wakes it as promptly as one to the
//! router.
//!
//! A watched group is shared with its owner (`Rc<RefCell<..>>`); the pump
//! borrows it only between the owner's awaits, never across one.

use std::cell::{Cell, Ref, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use pinwheel_ipc::ring::{ConsumerGroup, DataBell, RingError};

/// A group of rings shared by its owner and the pump: `None` while the
/// owner has no rings.
pub type SharedGroup = Rc<RefCell<Option<ConsumerGroup>>>;

/// The groups tasks of one executor wait on.
#[derive(Debug, Default)]
pub struct Watches {
    waiting: RefCell<Vec<Entry>>,
    armed: RefCell<Vec<DataBell>>,
    next_id: Cell<u64>,
}

#[derive(Debug)]
struct Entry {
    id: u64,
    group: SharedGroup,
    waker: Waker,
}

impl Watches {
    /// Waits until a ring of `group` has a frame (at once if one has, or
    /// if the group is gone). Dropping the future withdraws the wait, so a
    /// task may race it with a timer.
    pub fn wait<'a>(&'a self, group: &SharedGroup) -> Watch<'a> {
        Watch {
            watches: self,
            group: Rc::clone(group),
            id: None,
        }
    }

    /// Whether no task waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.borrow().is_empty()
    }

    /// Whether a watched group has a frame (cheap: the rings' heads; the
    /// pump asks while it spins).
    pub fn any_frames(&self) -> bool {
        let Ok(waiting) = self.waiting.try_borrow() else {
            return false;
        };
        waiting.iter().any(|entry| has_frames(&entry.group))
    }

    /// Wakes every task whose group has a frame (or is gone), ending its
    /// wait; returns how many.
    pub fn wake_ready(&self) -> usize {
        let Ok(mut waiting) = self.waiting.try_borrow_mut() else {
            return 0;
        };
        let mut woken = 0;
        waiting.retain(|entry| {
            if has_frames(&entry.group) {
                entry.waker.wake_by_ref();
                woken += 1;
                false
            } else {
                true
            }
        });
        woken
    }

    /// Arms every watched group for a park, their bells then in
    /// [`Watches::armed`]; false, nothing armed, when one has a frame (the
    /// pump should not park; its next [`Watches::wake_ready`] wakes the
    /// task). Call [`Watches::disarm`] after the park.
    pub fn arm(&self) -> Result<bool, RingError> {
        let waiting = self.waiting.borrow();
        let mut bells = self.armed.borrow_mut();
        bells.clear();
        for (i, entry) in waiting.iter().enumerate() {
            // A group its owner holds (never across an await, so not while
            // the pump runs) is left out of this park: the pump parks at
            // most a pass period and looks again.
            let Ok(mut slot) = entry.group.try_borrow_mut() else {
                continue;
            };
            let armed = match slot.as_mut() {
                None => Ok(false),
                Some(group) => group.arm().inspect(|&armed| {
                    if armed {
                        bells.push(group.bell().clone());
                    }
                }),
            };
            if armed.as_ref().is_ok_and(|&armed| armed) {
                continue;
            }
            drop(slot);
            bells.clear();
            disarm_all(&waiting[..i]);
            return armed;
        }
        Ok(true)
    }

    /// The bells of the groups the last [`Watches::arm`] armed (a buffer
    /// kept between parks: no new `Vec` of bells per park).
    pub fn armed(&self) -> Ref<'_, [DataBell]> {
        Ref::map(self.armed.borrow(), Vec::as_slice)
    }

    /// Declares every watched group awake after a park, taking their
    /// bells' counts.
    pub fn disarm(&self) {
        disarm_all(&self.waiting.borrow());
    }

    fn register(&self, group: &SharedGroup, waker: &Waker) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id.wrapping_add(1));
        self.waiting.borrow_mut().push(Entry {
            id,
            group: Rc::clone(group),
            waker: waker.clone(),
        });
        id
    }

    /// Whether `id` still waits; updates its waker if it does.
    fn still_waiting(&self, id: u64, waker: &Waker) -> bool {
        let mut waiting = self.waiting.borrow_mut();
        match waiting.iter_mut().find(|entry| entry.id == id) {
            Some(entry) => {
                entry.waker.clone_from(waker);
                true
            }
            None => false,
        }
    }

    fn withdraw(&self, id: u64) {
        if let Ok(mut waiting) = self.waiting.try_borrow_mut() {
            waiting.retain(|entry| entry.id != id);
        }
    }
}

fn disarm_all(entries: &[Entry]) {
    for entry in entries {
        if let Ok(mut slot) = entry.group.try_borrow_mut()
            && let Some(group) = slot.as_mut()
        {
            group.disarm();
        }
    }
}

/// Whether `group` has a frame, or is gone (its waiter should look).
fn has_frames(group: &SharedGroup) -> bool {
    match group.try_borrow_mut() {
        Ok(mut slot) => match slot.as_mut() {
            // A broken ring is its owner's to find and report.
            Some(group) => group.any_frames().unwrap_or(true),
            None => true,
        },
        Err(_) => false,
    }
}

/// A task's wait on a group ([`Watches::wait`]).
#[derive(Debug)]
pub struct Watch<'a> {
    watches: &'a Watches,
    group: SharedGroup,
    id: Option<u64>,
}

impl Future for Watch<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.id {
            Some(id) if self.watches.still_waiting(id, cx.waker()) => Poll::Pending,
            Some(_) => {
                self.id = None;
                Poll::Ready(())
            }
            None if has_frames(&self.group) => Poll::Ready(()),
            None => {
                let id = self.watches.register(&self.group, cx.waker());
                self.id = Some(id);
                Poll::Pending
            }
        }
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.watches.withdraw(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::task::Wake;
    use std::time::Instant;

    use pinwheel_ipc::ring::{RingConfig, WaitStrategy, shm_ring_into};

    use super::*;

    struct Flag(std::sync::atomic::AtomicUsize);

    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn group() -> (pinwheel_ipc::ring::Producer, SharedGroup) {
        let bell = DataBell::new().expect("eventfd");
        let config = RingConfig {
            slots: 64,
            max_frame: 256,
            wait: WaitStrategy::Park,
            spin_us: 0,
        };
        let (producer, consumer) = shm_ring_into(config, &bell).expect("ring");
        let mut group = ConsumerGroup::new(bell, WaitStrategy::Park, 0);
        group.add(consumer).expect("one ring");
        (producer, Rc::new(RefCell::new(Some(group))))
    }

    #[test]
    fn a_task_waits_until_its_group_has_a_frame_and_is_woken_once() {
        let (mut producer, shared) = group();
        let watches = Watches::default();
        let flag = Arc::new(Flag(0.into()));
        let waker = Waker::from(Arc::clone(&flag));
        let mut cx = Context::from_waker(&waker);
        let mut wait = Box::pin(watches.wait(&shared));

        assert!(wait.as_mut().poll(&mut cx).is_pending());
        assert_eq!(watches.wake_ready(), 0, "nothing sent yet");
        producer
            .push(b"hello", std::time::Duration::ZERO)
            .expect("room");
        assert!(watches.any_frames());
        assert_eq!(watches.wake_ready(), 1);
        assert_eq!(flag.0.load(std::sync::atomic::Ordering::SeqCst), 1);

        assert!(wait.as_mut().poll(&mut cx).is_ready());
        assert!(watches.is_empty());
    }

    #[test]
    fn a_dropped_wait_is_withdrawn() {
        let (_producer, shared) = group();
        let watches = Watches::default();
        let waker = Waker::from(Arc::new(Flag(0.into())));
        let mut cx = Context::from_waker(&waker);
        let mut wait = Box::pin(watches.wait(&shared));
        assert!(wait.as_mut().poll(&mut cx).is_pending());

        drop(wait);

        assert!(watches.is_empty());
    }

    #[test]
    fn a_park_on_a_watched_bell_ends_when_its_producer_sends() {
        let (mut producer, shared) = group();
        let watches = Watches::default();
        let waker = Waker::from(Arc::new(Flag(0.into())));
        let mut cx = Context::from_waker(&waker);
        let mut wait = Box::pin(watches.wait(&shared));
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        let own_bell = DataBell::new().expect("eventfd");
        let mut own = ConsumerGroup::new(own_bell, WaitStrategy::Park, 0);
        let sender = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            producer
                .push(b"wake", std::time::Duration::ZERO)
                .expect("room");
            producer
        });

        assert!(watches.arm().expect("arm"), "no frame yet");
        let woke = own
            .wait_until_also(
                Instant::now() + std::time::Duration::from_secs(10),
                || false,
                &watches.armed(),
            )
            .expect("wait");
        watches.disarm();
        let _producer = sender.join().expect("sender");

        assert_eq!(woke, pinwheel_ipc::ring::GroupWake::Interrupted);
        assert_eq!(watches.wake_ready(), 1);
    }
}
