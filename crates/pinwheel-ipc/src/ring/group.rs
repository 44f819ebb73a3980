//! Waiting on several rings at once: the rings one executor consumes.
//!
//! Every ring of a group wakes the same [`DataBell`], so the group parks
//! on one eventfd. Parking follows the rings' own protocol, widened to the
//! group: publish every tail, declare every ring asleep, re-check every
//! head, and sleep only if all are still empty; a producer of any of them
//! that publishes after the declaration sees it and rings the shared bell.
//!
//! The wait ([`ConsumerGroup::wait_until`]) holds the calling thread: it
//! spins by the consumers' wait strategy (clock-free first polls
//! included), then parks in `ppoll(2)` on the bell with a nanosecond
//! deadline. An adaptive group spins to a deadline that comes sooner than
//! its thread wakes from a park (it keeps how late its timed-out parks
//! return, `lateness.rs`), and, after its thread woke a parked peer
//! ([`ConsumerGroup::woke_a_peer`]), spins at least that long before
//! parking: a reply comes after the peer's wake-up, and a thread that
//! parked sooner would pay a wake-up of its own for it. Neither, while
//! the thread owes the CPU idle time.
//!
//! An executor lends the wait its thread when it has nothing else to
//! run, so a ring message or a timer deadline wakes the executor as
//! promptly as a plain thread, with no reactor between the kernel and the
//! consumer. The caller's `interrupt` ends the spin early (other work
//! became ready); the caller wakes a park with [`DataBell::nudge`].

use std::sync::atomic::{Ordering, fence};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, ppoll};
use nix::sys::time::TimeSpec;

use super::handle::DataBell;
use super::lateness::Lateness;
use super::wait::Waiter;
use super::{Consumer, RingError, WaitStrategy, os};

/// Consumers that park together on one bell.
#[derive(Debug)]
pub struct ConsumerGroup {
    bell: DataBell,
    consumers: Vec<Consumer>,
    waiter: Waiter,
    /// How late this group's timed-out parks returned.
    lateness: Lateness,
    parks: u64,
    naps: u64,
    /// The thread woke a parked peer since its last wait.
    peer_waking: bool,
}

/// Why [`ConsumerGroup::wait_until`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupWake {
    /// A ring has a frame.
    Frames,
    /// The deadline came.
    Deadline,
    /// The caller's interrupt said to stop waiting.
    Interrupted,
}

/// Polls across the group before the clock is read.
const POLLS_FIRST: u32 = 16;
/// Spin iterations between clock reads.
const CLOCK_EVERY: u32 = 32;
/// Descriptors a park polls from the stack: the group's bell and up to 15
/// watched ones (an executor's process agents); more take a `Vec`.
const INLINE_FDS: usize = 16;

impl ConsumerGroup {
    /// An empty group woken by `bell`, waiting by `wait` with at most
    /// `spin_us` of spinning.
    pub fn new(bell: DataBell, wait: WaitStrategy, spin_us: u32) -> Self {
        let waiter = Waiter::new(wait, Duration::from_micros(u64::from(spin_us)));
        Self {
            bell,
            consumers: Vec::new(),
            waiter,
            lateness: Lateness::default(),
            parks: 0,
            naps: 0,
            peer_waking: false,
        }
    }

    /// Adds a consumer; its ring must have been built on the group's bell.
    pub fn add(&mut self, consumer: Consumer) -> Result<(), RingError> {
        if !consumer.rings(&self.bell) {
            return Err(RingError::Config {
                reason: "a ring joins a consumer group only if it rings the group's bell".into(),
            });
        }
        self.consumers.push(consumer);
        Ok(())
    }

    /// Removes every consumer (their rings are dropped).
    pub fn clear(&mut self) {
        self.consumers.clear();
    }

    /// The consumers, to read from.
    pub fn consumers_mut(&mut self) -> &mut [Consumer] {
        &mut self.consumers
    }

    /// Times the group parked on its bell.
    pub fn parks(&self) -> u64 {
        self.parks
    }

    /// How late the group's timed-out parks usually return (see
    /// `lateness.rs`): deadlines nearer than this are spun to.
    #[cfg(test)]
    pub(super) fn wake_lateness(&self) -> Duration {
        self.lateness.mean()
    }

    /// Whether any ring has a published frame.
    pub fn any_frames(&mut self) -> Result<bool, RingError> {
        for consumer in &mut self.consumers {
            if consumer.has_frames()? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The bell the group's producers ring.
    pub fn bell(&self) -> &DataBell {
        &self.bell
    }

    /// Tells the group that its thread rang a parked consumer's bell since
    /// its last wait: the next wait spins at least as long as the thread's
    /// own parks wake late before it parks. Whatever that consumer sends
    /// back comes after its wake-up, and a thread that parked before then
    /// would pay a second wake-up for it, a cascade in which every hop of
    /// a request between idle executors pays one. (`bench mesh
    /// --overhead` on `vm-2cpu`, four alternating runs each, medians: p50
    /// 240 -> 179 us at 1,000 req/s, 149 -> 116 us at 5,000; unchanged at
    /// 20,000 and 64,000 and saturated, within the host's noise. The
    /// executors' CPU at 1,000 req/s fell from 26-30% to 21-22%: fewer
    /// parks, each of which costs a VM's thread CPU time.)
    pub fn woke_a_peer(&mut self) {
        self.peer_waking = true;
    }

    /// Counts `n` timed-out parks that each returned `late`.
    #[cfg(test)]
    pub(super) fn woke_late(&mut self, late: Duration, n: usize) {
        for _ in 0..n {
            self.lateness.woke(late);
        }
    }

    /// Declares every ring asleep for a park that someone else does (an
    /// executor's pump parking on this group's bell beside its own):
    /// false, and nothing armed, if a ring has a frame. Undo it with
    /// [`ConsumerGroup::disarm`] after the park. The group's own parks
    /// arm the same way.
    pub fn arm(&mut self) -> Result<bool, RingError> {
        for consumer in &mut self.consumers {
            consumer.release_idle()?;
        }
        for i in 0..self.consumers.len() {
            if !self.consumers[i].arm()? {
                self.disarm_all();
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Declares every ring awake again after [`ConsumerGroup::arm`], and
    /// takes the bell's count so that the next park does not return at
    /// once.
    pub fn disarm(&mut self) {
        self.disarm_all();
        // A failed read leaves the count: the next park returns at once
        // and this runs again.
        let _ = self.bell.0.take();
    }

    fn disarm_all(&mut self) {
        for consumer in &mut self.consumers {
            consumer.disarm();
        }
    }

    /// Waits, holding the calling thread, until a ring has a frame, until
    /// `deadline`, or until `interrupt` returns true (asked between spins
    /// and once more just before parking; a park ends only on a frame, the
    /// bell or the deadline, so whoever makes `interrupt` true while the
    /// group may be parked must also nudge the bell). Before that last
    /// ask, a park issues a `SeqCst` fence: a caller that stores a "may be
    /// parked" flag before the wait, even `Relaxed`, and whose wakers set
    /// what `interrupt` reads and then read the flag (both `SeqCst`), has
    /// Dekker's pattern without a fence of its own on the spinning path.
    pub fn wait_until(
        &mut self,
        deadline: Instant,
        interrupt: impl FnMut() -> bool,
    ) -> Result<GroupWake, RingError> {
        self.wait_until_also(deadline, interrupt, &[])
    }

    /// [`ConsumerGroup::wait_until`], parking on `also` beside the group's
    /// own bell: the bells of other groups, armed by their owners'
    /// [`ConsumerGroup::arm`]. One of them rung ends the wait as
    /// [`GroupWake::Interrupted`]; its count stays for its owner's
    /// [`ConsumerGroup::disarm`] to take.
    pub fn wait_until_also(
        &mut self,
        deadline: Instant,
        mut interrupt: impl FnMut() -> bool,
        also: &[DataBell],
    ) -> Result<GroupWake, RingError> {
        let peer_waking = std::mem::take(&mut self.peer_waking);
        for _ in 0..POLLS_FIRST {
            if self.any_frames()? {
                self.waiter.caught();
                return Ok(GroupWake::Frames);
            }
            if interrupt() {
                return Ok(GroupWake::Interrupted);
            }
            std::hint::spin_loop();
        }
        let started = Instant::now();
        let (stop, to_deadline) = self.spin_stop(started, deadline, peer_waking);
        if let Some(stop) = stop {
            match self.spin(stop, &mut interrupt)? {
                Some(wake) => return Ok(wake),
                // Cut short by the deadline: says nothing of a full spin.
                None if to_deadline => {}
                None => self.waiter.ran_out(started.elapsed()),
            }
        }
        if Instant::now() >= deadline {
            return Ok(GroupWake::Deadline);
        }
        self.park(deadline, &mut interrupt, also)
    }

    /// When a wait whose spin starts at `started` stops spinning to park
    /// (`None`: it parks at once), and whether it spins to `deadline`
    /// because a park would wake after it; `peer_waking`: the thread woke
    /// a parked peer since its last wait.
    pub(super) fn spin_stop(
        &mut self,
        started: Instant,
        deadline: Instant,
        peer_waking: bool,
    ) -> (Option<Instant>, bool) {
        let near = self.lateness.near(started, deadline);
        // Asked once, and only when it matters: it may read the thread's
        // CPU time.
        let longer = (near || peer_waking) && self.waiter.spins_to_near(started);
        if near && longer {
            return (Some(deadline), true);
        }
        let stop = match self.waiter.budget(started) {
            None => return (Some(deadline), false),
            Some(budget) => started + budget,
        };
        let stop = if longer {
            stop.max(started + self.lateness.mean())
        } else {
            stop
        };
        if stop == started {
            return (None, false);
        }
        (Some(stop.min(deadline)), false)
    }

    /// Spins until `stop`; `None` when the spin ran out.
    fn spin(
        &mut self,
        stop: Instant,
        interrupt: &mut impl FnMut() -> bool,
    ) -> Result<Option<GroupWake>, RingError> {
        let mut polls = 0u32;
        loop {
            if self.any_frames()? {
                self.waiter.caught();
                return Ok(Some(GroupWake::Frames));
            }
            if interrupt() {
                return Ok(Some(GroupWake::Interrupted));
            }
            polls = polls.wrapping_add(1);
            if polls.is_multiple_of(CLOCK_EVERY) && Instant::now() >= stop {
                return Ok(None);
            }
            std::hint::spin_loop();
        }
    }

    fn park(
        &mut self,
        deadline: Instant,
        interrupt: &mut impl FnMut() -> bool,
        also: &[DataBell],
    ) -> Result<GroupWake, RingError> {
        loop {
            if !self.arm()? {
                return Ok(GroupWake::Frames);
            }
            // SYNC: orders the caller's flag, stored before the wait, before
            // what `interrupt` reads (Dekker with the caller's wakers; see
            // wait_until). A group without rings has no fence of its own here.
            fence(Ordering::SeqCst);
            if interrupt() {
                self.disarm_all();
                return Ok(GroupWake::Interrupted);
            }
            let now = Instant::now();
            if now >= deadline {
                self.disarm_all();
                return Ok(GroupWake::Deadline);
            }
            self.parks += 1;
            let rung = self.sleep(deadline, now, also);
            self.disarm_all();
            if rung? {
                return Ok(GroupWake::Interrupted);
            }
            if self.any_frames()? {
                return Ok(GroupWake::Frames);
            }
            if interrupt() {
                return Ok(GroupWake::Interrupted);
            }
        }
    }

    /// Sleeps on the bell (and on `also`) from `now` until `deadline` at
    /// the latest, to the nanosecond (`ppoll`; `poll`'s millisecond
    /// timeout would round a 300 µs timer up to 1 ms), and takes the
    /// bell's count when it rang; true when one of `also` rang. A sleep
    /// that timed out counts how late it returned.
    fn sleep(
        &mut self,
        deadline: Instant,
        now: Instant,
        also: &[DataBell],
    ) -> Result<bool, RingError> {
        let doorbell = &self.bell.0;
        let fd = |i: usize| match i.checked_sub(1).and_then(|i| also.get(i)) {
            Some(bell) => PollFd::new(bell.0.as_fd(), PollFlags::POLLIN),
            None => PollFd::new(doorbell.as_fd(), PollFlags::POLLIN),
        };
        // The set lives on the stack up to INLINE_FDS descriptors (the
        // group's bell first, then the watched ones): a park allocates
        // only beside more watched bells than that.
        let (mut inline, mut many);
        let fds: &mut [PollFd<'_>] = if also.len() < INLINE_FDS {
            inline = std::array::from_fn::<_, INLINE_FDS, _>(fd);
            &mut inline[..=also.len()]
        } else {
            many = (0..=also.len()).map(fd).collect::<Vec<_>>();
            &mut many
        };
        let timeout = TimeSpec::from_duration(deadline - now);
        match ppoll(fds, Some(timeout), None) {
            Ok(0) => {
                let late = Instant::now().saturating_duration_since(deadline);
                self.lateness.woke(late);
                Ok(false)
            }
            Err(nix::errno::Errno::EINTR) => Ok(false),
            Ok(_) => {
                let readable = |fd: &PollFd<'_>| {
                    fd.revents()
                        .is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLERR))
                };
                let others = fds[1..].iter().any(readable);
                if readable(&fds[0]) {
                    doorbell.take().map_err(os("take ring doorbell"))?;
                }
                Ok(others)
            }
            Err(err) => Err(RingError::Os {
                what: "wait for ring data",
                source: err.into(),
            }),
        }
    }

    /// The nap the thread that waits on this group owes the CPU (zero:
    /// none; see `idle.rs`: under a dense stream it could not park often
    /// enough for the kernel's real-time throttling): the idle time it is
    /// short of in the current window. Reads the clock, and now and then
    /// the thread's CPU time.
    pub fn owed_nap(&mut self) -> Duration {
        self.waiter.owed_nap(Instant::now())
    }

    /// Sleeps `slice`, whatever the rings hold (their frames wait): idle
    /// time the kernel sees, which the waiter reads back as the thread's
    /// CPU time.
    pub fn nap(&mut self, slice: Duration) {
        std::thread::sleep(slice);
        self.naps += 1;
    }

    /// Times the group's thread napped ([`ConsumerGroup::nap`]).
    pub fn naps(&self) -> u64 {
        self.naps
    }

    /// Waits up to `timeout` for a frame on any ring, on a plain thread
    /// (tests, tools); returns whether one is ready.
    pub fn wait(&mut self, timeout: Duration) -> Result<bool, RingError> {
        let wake = self.wait_until(Instant::now() + timeout, || false)?;
        Ok(wake == GroupWake::Frames)
    }
}
