//! A counting global allocator.
//!
//! A test crate installs it with
//! `#[global_allocator] static GLOBAL: CountingAlloc = CountingAlloc;` and
//! wraps the code under test in [`allocations_during`]. Only allocations
//! made by the measuring thread while it measures are counted, so tests
//! running in parallel on other threads do not disturb the count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Forwards to `System`, counting the measuring thread's allocations.
#[derive(Debug)]
pub struct CountingAlloc;

thread_local! {
    // `const` and without `Drop`: using them never allocates or registers a
    // destructor, so the allocator itself may. Both are per thread, so tests
    // measuring on other threads at the same time cannot disturb the count.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn note_allocation() {
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
    }
}

// SAFETY: every method forwards to `System` unchanged, so `System`'s
// guarantees hold; counting touches neither the pointer nor the layout.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: `ptr` came from this allocator, hence from `System`, with
        // `layout`; the caller upholds the rest of `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, hence from `System`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Counts this thread's allocations from [`Counting::start`] until
/// [`Counting::finish`], across awaits: for code that runs as tasks on a
/// single-threaded executor, where everything between the two calls (the
/// measured tasks and whatever else the executor runs) is on this thread.
#[derive(Debug)]
pub struct Counting {
    before: usize,
}

impl Counting {
    /// Starts counting.
    pub fn start() -> Self {
        COUNTING.set(true);
        Self {
            before: ALLOCATIONS.get(),
        }
    }

    /// Stops counting; the allocations since `start`.
    pub fn finish(self) -> usize {
        COUNTING.set(false);
        ALLOCATIONS.get() - self.before
    }
}

/// Heap allocations `f` makes on this thread (with [`CountingAlloc`]
/// installed; zero otherwise).
pub fn allocations_during(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.get();
    COUNTING.set(true);
    f();
    COUNTING.set(false);
    ALLOCATIONS.get() - before
}
