//! An executor's clock: CLOCK_MONOTONIC nanoseconds for the price of a
//! TSC read.
//!
//! A call's path reads the clock several times: the caller stamps its
//! request (`sent_ns`, which its deadline counts from) and times the round
//! trip; the callee's worker checks the request's deadline and times its
//! handler. Through the vDSO, `clock_gettime(CLOCK_MONOTONIC)` costs ~23 ns
//! a read on this VM, and more on a message's critical path: it orders its
//! TSC read after everything before it. Each such read added 20-30 ns to a
//! runtime call (`bench router`, alternating runs with the reads taken out
//! one at a time). A TSC read alone costs ~9 ns and orders nothing.
//!
//! [`Clock`] keeps an anchor: a CLOCK_MONOTONIC reading and the TSC at the
//! same moment (quanta's raw counter, read on either side of it). A
//! reading is the anchor's time plus the TSC ticks since, scaled to
//! nanoseconds by quanta's calibration against CLOCK_MONOTONIC (its rate
//! was within 2e-5 of it here). An anchor older than [`REANCHOR`] is taken
//! again, so a reading is at most that rate error times 1 ms (tens of
//! nanoseconds) off CLOCK_MONOTONIC: deadlines and `sent_ns` stay
//! comparable with other processes' and hosts' readings, and durations
//! between two readings are as exact as the TSC. Readings never go back:
//! one that would (a new anchor behind the last extrapolation, a TSC read
//! behind the anchor's) is the last one again.
//!
//! Without an invariant TSC, quanta's counter is CLOCK_MONOTONIC itself,
//! and so is this clock. One per executor: its thread is pinned, so its
//! TSC reads come from one core; `Cell`s, not shared.

use std::cell::Cell;
use std::fmt;
use std::time::Duration;

use super::ctx::now_ns;

/// Longest an anchor is used before CLOCK_MONOTONIC is read again.
pub const REANCHOR: Duration = Duration::from_millis(1);
const REANCHOR_NS: u64 = REANCHOR.as_nanos() as u64;

/// `duration` in nanoseconds, the way the clock counts (saturating past
/// 584 years).
pub fn duration_ns(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// An executor's clock (module doc).
pub struct Clock {
    tsc: quanta::Clock,
    reference: Box<dyn Fn() -> u64>,
    anchor: Cell<Anchor>,
    last: Cell<u64>,
}

/// A CLOCK_MONOTONIC reading and the TSC at the same moment.
#[derive(Debug, Clone, Copy)]
struct Anchor {
    raw: u64,
    ns: u64,
}

impl Clock {
    /// A clock on this core's TSC, anchored to CLOCK_MONOTONIC now. The
    /// first clock of a process calibrates the TSC (under a millisecond
    /// here, 200 ms at most).
    pub fn new() -> Self {
        Self::with(quanta::Clock::new(), Box::new(now_ns))
    }

    /// A clock on `tsc`, anchored to `reference` (ns).
    fn with(tsc: quanta::Clock, reference: Box<dyn Fn() -> u64>) -> Self {
        let anchor = take_anchor(&tsc, &*reference);
        Self {
            tsc,
            reference,
            anchor: Cell::new(anchor),
            last: Cell::new(anchor.ns),
        }
    }

    /// CLOCK_MONOTONIC now, nanoseconds.
    #[inline]
    pub fn now_ns(&self) -> u64 {
        let raw = self.tsc.raw();
        let anchor = self.anchor.get();
        let since = self.tsc.delta_as_nanos(anchor.raw, raw);
        // An anchor too old, or a TSC behind the anchor's (another core's,
        // a migrated guest's): anchor again.
        let now = if raw >= anchor.raw && since < REANCHOR_NS {
            anchor.ns + since
        } else {
            self.reanchor()
        };
        let now = now.max(self.last.get());
        self.last.set(now);
        now
    }

    #[cold]
    fn reanchor(&self) -> u64 {
        let anchor = take_anchor(&self.tsc, &*self.reference);
        self.anchor.set(anchor);
        anchor.ns
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Clock")
            .field("anchor", &self.anchor.get())
            .field("last", &self.last.get())
            .finish_non_exhaustive()
    }
}

/// Reads `reference` between two TSC reads: the anchor's TSC is their
/// middle, where the reference read most likely fell.
fn take_anchor(tsc: &quanta::Clock, reference: &dyn Fn() -> u64) -> Anchor {
    let before = tsc.raw();
    let ns = reference();
    let after = tsc.raw().max(before);
    Anchor {
        raw: before + (after - before) / 2,
        ns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::rc::Rc;
    use std::sync::Arc;

    /// A clock on a mocked TSC (in ns) whose reference reads `reference`,
    /// counting its reads in `reads`.
    fn mocked(reference: &Rc<Cell<u64>>, reads: &Rc<Cell<u32>>) -> (Clock, Arc<quanta::Mock>) {
        let (tsc, mock) = quanta::Clock::mock();
        let (reference, reads) = (Rc::clone(reference), Rc::clone(reads));
        let clock = Clock::with(
            tsc,
            Box::new(move || {
                reads.set(reads.get() + 1);
                reference.get()
            }),
        );
        (clock, mock)
    }

    #[test]
    fn readings_follow_the_tsc_from_the_anchor_without_reading_the_reference() {
        let (reference, reads) = (Rc::new(Cell::new(5_000_000)), Rc::new(Cell::new(0)));
        let (clock, mock) = mocked(&reference, &reads);
        assert_eq!(reads.get(), 1, "anchored once at creation");
        mock.increment(250_000);
        reference.set(9_999_999_999);
        assert_eq!(clock.now_ns(), 5_250_000);
        mock.increment(REANCHOR_NS - 250_001);
        assert_eq!(clock.now_ns(), 5_000_000 + REANCHOR_NS - 1);
        assert_eq!(reads.get(), 1, "no reference read inside REANCHOR");
    }

    #[test]
    fn an_anchor_as_old_as_reanchor_is_taken_again() {
        let (reference, reads) = (Rc::new(Cell::new(5_000_000)), Rc::new(Cell::new(0)));
        let (clock, mock) = mocked(&reference, &reads);
        mock.increment(REANCHOR_NS);
        reference.set(7_000_000);
        assert_eq!(clock.now_ns(), 7_000_000);
        assert_eq!(reads.get(), 2);
        mock.increment(10);
        assert_eq!(clock.now_ns(), 7_000_010, "from the new anchor");
        assert_eq!(reads.get(), 2);
    }

    #[test]
    fn readings_never_go_back() {
        let (reference, reads) = (Rc::new(Cell::new(5_000_000)), Rc::new(Cell::new(0)));
        let (clock, mock) = mocked(&reference, &reads);
        mock.increment(REANCHOR_NS - 1);
        let last = clock.now_ns();
        // The new anchor lands behind the last extrapolation.
        mock.increment(1);
        reference.set(5_000_100);
        assert_eq!(clock.now_ns(), last);
        mock.increment(last - 5_000_100 + 7);
        assert_eq!(clock.now_ns(), last + 7, "on from the new anchor");
    }

    #[test]
    fn a_tsc_behind_the_anchor_takes_a_new_one_instead_of_stopping() {
        let (reference, reads) = (Rc::new(Cell::new(5_000_000)), Rc::new(Cell::new(0)));
        let (clock, mock) = mocked(&reference, &reads);
        mock.increment(REANCHOR_NS);
        reference.set(6_000_000);
        assert_eq!(clock.now_ns(), 6_000_000);
        // The counter goes back behind the anchor (another core's TSC, a
        // migrated guest).
        mock.decrement(600_000);
        reference.set(6_100_000);
        assert_eq!(clock.now_ns(), 6_100_000);
        assert_eq!(reads.get(), 3);
        mock.increment(500);
        assert_eq!(clock.now_ns(), 6_100_500);
    }

    #[test]
    fn the_real_clock_agrees_with_clock_monotonic() {
        let clock = Clock::new();
        // Within REANCHOR and across anchors: a reading lies between
        // CLOCK_MONOTONIC readings taken before and after it, give or take
        // the calibration's error over one anchor's life (tens of ns;
        // 20 us is three orders of magnitude of room).
        const SLACK: u64 = 20_000;
        for _ in 0..2_000 {
            let before = now_ns();
            let reading = clock.now_ns();
            let after = now_ns();
            assert!(
                reading + SLACK >= before && reading <= after + SLACK,
                "{before} <= {reading} <= {after}"
            );
            std::thread::sleep(Duration::from_micros(1));
        }
    }
}
