//! A bulkhead: a limit on the calls in flight to one downstream, so that one
//! slow downstream ties up a bounded share of the coordinator and the
//! others keep flowing (the seed's semaphore bulkhead, without the thread
//! pool and queue: queueing is [`super::RequestQueue`]'s job).
//!
//! A call holds a [`Permit`] for as long as it is in flight; dropping the
//! permit frees the slot, so an early return or a cancelled task cannot
//! leak one. The count is shared through an `Rc<Cell<usize>>`: the
//! coordinator runs on one executor thread, so no atomics are needed, and
//! `Permit` is neither `Send` nor `Sync`, which keeps it on that thread.
//! Acquiring and releasing never allocate (cloning an `Rc` only counts).

use std::cell::Cell;
use std::rc::Rc;

/// A limit on concurrent calls to one downstream.
#[derive(Debug)]
pub struct Bulkhead {
    max_in_flight: usize,
    in_flight: Rc<Cell<usize>>,
}

impl Bulkhead {
    /// A bulkhead admitting `max_in_flight` calls at once (0 admits none).
    pub fn new(max_in_flight: usize) -> Self {
        Self {
            max_in_flight,
            in_flight: Rc::new(Cell::new(0)),
        }
    }

    /// A permit for one call, or `None` if `max_in_flight` are out.
    pub fn try_acquire(&self) -> Option<Permit> {
        let in_flight = self.in_flight.get();
        if in_flight >= self.max_in_flight {
            return None;
        }
        self.in_flight.set(in_flight + 1);
        Some(Permit {
            in_flight: Rc::clone(&self.in_flight),
        })
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.get()
    }

    /// The limit.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }
}

/// One call's slot in a [`Bulkhead`]; frees it when dropped. It may outlive
/// the bulkhead (the count then just goes away with the last permit).
#[derive(Debug)]
#[must_use = "dropping a permit frees its slot at once"]
pub struct Permit {
    in_flight: Rc<Cell<usize>>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        // Each permit added one when it was made, so the count is >= 1 here.
        self.in_flight.set(self.in_flight.get() - 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_are_refused_once_the_limit_is_in_flight() {
        let sut = Bulkhead::new(2);

        let first = sut.try_acquire();
        let second = sut.try_acquire();
        let third = sut.try_acquire();

        assert!(first.is_some());
        assert!(second.is_some());
        assert!(third.is_none());
        assert_eq!(sut.in_flight(), 2);
    }

    #[test]
    fn dropping_a_permit_frees_its_slot() {
        let sut = Bulkhead::new(1);
        let permit = sut.try_acquire().unwrap();
        assert!(sut.try_acquire().is_none());

        drop(permit);

        assert_eq!(sut.in_flight(), 0);
        assert!(sut.try_acquire().is_some());
    }

    #[test]
    fn a_zero_limit_admits_nothing() {
        let sut = Bulkhead::new(0);

        assert!(sut.try_acquire().is_none());
        assert_eq!(sut.max_in_flight(), 0);
    }

    #[test]
    fn a_permit_may_outlive_its_bulkhead() {
        let sut = Bulkhead::new(1);
        let permit = sut.try_acquire().unwrap();

        drop(sut);
        drop(permit);
    }
}
