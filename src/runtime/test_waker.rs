//! A waker for unit tests that counts its wakes; its clones show in its
//! `Arc`'s strong count (a test of a path that should not clone one).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Wake, Waker};

/// Counts wakes.
#[derive(Debug, Default)]
pub struct Counting(AtomicUsize);

impl Counting {
    /// A counter and a waker that wakes it.
    pub fn waker() -> (Arc<Self>, Waker) {
        let counting = Arc::new(Self::default());
        let waker = Waker::from(Arc::clone(&counting));
        (counting, waker)
    }

    /// Wakes so far.
    pub fn wakes(&self) -> usize {
        // SYNC: Relaxed; read on the thread that woke it.
        self.0.load(Ordering::Relaxed)
    }
}

impl Wake for Counting {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // SYNC: Relaxed; a count for the test's thread.
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}
