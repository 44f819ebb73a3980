//! The wake-up guard: a task on the control runtime that nudges executors
//! whose ticker is late.
//!
//! It exists only because glommio needs it. glommio 0.9 can miss a timer
//! wake-up when its preempt timer is short (the topology sets it to
//! hundreds of microseconds so a latency task's 1 ms timer fires on time;
//! upstream issue #547): an idle executor then sleeps in `io_uring_enter`
//! with nothing to complete, its 1 ms ticker stops, pending calls stop
//! expiring and a drain never ends. Reproduced with glommio alone (one
//! executor per CPU looping on 100 µs-1 ms `timer::sleep`, spin 50 µs,
//! preempt 500 µs): a stall in most runs on this 2-vCPU VM under load.
//! Remove this module, and the `guard_on` argument of
//! [`super::executor::start`], once a glommio release fixes the lost
//! wake-up and the reproduction no longer stalls.
//!
//! The guard reads every running executor's heartbeat once each
//! [`GUARD_PERIOD`] ([`Control::running_heartbeats`]: one not started or
//! already ended is left alone); one older than [`LATE`] is nudged twice
//! over: its ticker's waker is woken from the guard's thread (glommio
//! queues a foreign wake and writes the executor's own eventfd, which its
//! reactor watches in every state, so the executor wakes and runs its due
//! timers), and its data bell gets a write (completing the read its pump
//! parks on). The bell alone was not
//! enough: an executor whose pump spins (`wait = "spin"`) never has that
//! read pending, so one that fell asleep stayed asleep (a bench with a
//! spinning executor and two parked agent processes hung in about one run
//! of ten). Every executor beats once when it starts, so one that falls
//! asleep before its ticker first runs is seen late too. An executor that
//! is busy is never late, and one that is asleep by design (parked on its
//! bell) wakes to a spurious bell and a spurious tick it already handles,
//! so the cost is a wake and one `write(2)` per late executor per period,
//! and nothing on the hot path. Nudges are
//! counted ([`Control::nudges`]) so a host where they are frequent shows
//! it.
//!
//! A nudge does not always wake an executor: one sometimes sleeps in
//! glommio's `io_uring_enter` through every nudge, and only a signal ends
//! that wait. So an executor whose heartbeat is older than [`STUCK`] has
//! its wait interrupted as well ([`super::interrupt`]), at most once per
//! [`STUCK`] (counted as a nudge), and the guard warns once per silence.
//! A thread that was not asleep (a handler that holds it, a vCPU the host
//! took away) gets a signal that does nothing.
//!
//! It used to own a thread; as a task on the control runtime
//! ([`super::control`]) it is as prompt. The control CPU is never a
//! data-plane CPU (a role overlap is a topology error), so no SCHED_FIFO
//! executor can starve it, and without a control CPU it floats as the
//! thread did. The runtime's tasks never block (driver calls go through
//! `spawn_blocking`), so a period is late by at most one core tick's or
//! one admin response's work, well under [`LATE`]. The executors' owner
//! must keep the control runtime running from before the executors start
//! until after they have all ended (boot, phases and the drain are when a
//! lost wake-up hurts most).

use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tracing::warn;

use super::ctx::now_ns;
use super::executor::Control;
use super::interrupt;
use pinwheel_ipc::ring::DataBell;

/// How often the guard looks.
pub const GUARD_PERIOD: Duration = Duration::from_millis(5);
/// A heartbeat older than this gets a nudge (the ticker beats every 1 ms).
pub const LATE: Duration = Duration::from_millis(20);
/// A heartbeat older than this, after nudges every [`GUARD_PERIOD`], has
/// its executor's wait interrupted, and so again each time this passes.
pub const STUCK: Duration = Duration::from_millis(100);

/// The running guard. Dropping it stops the guard.
#[derive(Debug)]
pub struct Guard {
    task: JoinHandle<()>,
}

impl Guard {
    /// Starts guarding the executors whose bells are `bells` (by index),
    /// as a task on the control runtime `on`.
    pub fn spawn(on: &Handle, control: Arc<Control>, bells: Vec<DataBell>) -> Guard {
        let mut interrupted = match interrupt::install() {
            Ok(()) => Some(vec![0; bells.len()]),
            Err(err) => {
                warn!(error = %err, signal = %interrupt::SIGNAL, "cannot handle the signal that interrupts a stuck executor's wait; the wake-up guard only nudges");
                None
            }
        };
        let task = on.spawn(async move {
            let mut period = tokio::time::interval(GUARD_PERIOD);
            // A late look is followed by the next on the grid, never by a
            // burst of looks at the same heartbeats.
            period.set_missed_tick_behavior(MissedTickBehavior::Skip);
            let mut beats = Vec::with_capacity(bells.len());
            loop {
                period.tick().await;
                let now = now_ns();
                control.running_heartbeats(&mut beats);
                nudge_late(&control, &bells, &beats, now);
                if let Some(last) = &mut interrupted {
                    interrupt_stuck(&control, &beats, now, last);
                }
            }
        });
        Guard { task }
    }

    /// Stops the guard; a look in progress finishes on its own.
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Nudges each executor whose heartbeat in `beats` (0: not running) is
/// older than [`LATE`] at `now`.
fn nudge_late(control: &Control, bells: &[DataBell], beats: &[u64], now: u64) {
    let late = LATE.as_nanos() as u64;
    for (index, (&beat, bell)) in beats.iter().zip(bells).enumerate() {
        if beat != 0 && now.saturating_sub(beat) > late {
            // Both: the ticker's wake reaches the executor's reactor in any
            // state; the bell completes the pump's read when it parks.
            let woke = control.wake_ticker(index);
            if bell.nudge().is_ok() || woke {
                control.count_nudge(index);
            }
        }
    }
}

/// Interrupts the wait of each executor whose heartbeat in `beats` (0:
/// not running) is older than [`STUCK`] at `now`, unless `last` (when each
/// was last interrupted) says that was under [`STUCK`] ago.
fn interrupt_stuck(control: &Control, beats: &[u64], now: u64, last: &mut [u64]) {
    let stuck = STUCK.as_nanos() as u64;
    for (index, (&beat, last)) in beats.iter().zip(last).enumerate() {
        let silent = now.saturating_sub(beat);
        if beat == 0 || silent <= stuck || now.saturating_sub(*last) <= stuck {
            continue;
        }
        let Some(tid) = control.thread(index) else {
            continue;
        };
        // The first interrupt of this silence (the last came before the
        // last heartbeat).
        let first = *last < beat;
        *last = now;
        match interrupt::interrupt(tid) {
            Ok(()) => {
                control.count_nudge(index);
                if first {
                    warn!(
                        executor = index,
                        silent_ms = silent / 1_000_000,
                        "executor silent through the wake-up guard's nudges: interrupting its wait (again every {STUCK:?} while it stays silent)"
                    );
                }
            }
            // It ended between the look and the signal.
            Err(nix::errno::Errno::ESRCH) => {}
            Err(err) => {
                warn!(executor = index, error = %err, "cannot interrupt a stuck executor's wait")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::interrupt::tests::until;
    use std::sync::atomic::Ordering;

    #[test]
    fn only_an_executor_whose_heartbeat_is_late_is_nudged() {
        let control = Control::new(3, 1);
        let bells: Vec<DataBell> = (0..3).map(|_| DataBell::new().unwrap()).collect();
        let now = 10_000_000_000;
        let late = LATE.as_nanos() as u64;
        let beats = [now - 1_000_000, now - late - 1, 0];
        nudge_late(&control, &bells, &beats, now);
        assert_eq!(control.nudges(), vec![0, 1, 0]);
        nudge_late(&control, &bells, &beats, now);
        assert_eq!(control.nudges(), vec![0, 2, 0]);
    }

    /// Counts its wakes.
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_late_executor_s_ticker_is_woken_once_per_registration() {
        let control = Control::new(2, 1);
        let bells: Vec<DataBell> = (0..2).map(|_| DataBell::new().unwrap()).collect();
        let wakes: Vec<Arc<Wakes>> = (0..2)
            .map(|_| Arc::new(Wakes(std::sync::atomic::AtomicUsize::new(0))))
            .collect();
        for (index, wake) in wakes.iter().enumerate() {
            control.register_ticker(index, &Arc::clone(wake).into());
        }
        let now = 10_000_000_000;
        let beats = [now, now - LATE.as_nanos() as u64 - 1];
        nudge_late(&control, &bells, &beats, now);
        nudge_late(&control, &bells, &beats, now);
        let woken: Vec<usize> = wakes.iter().map(|w| w.0.load(Ordering::Relaxed)).collect();
        // The second look finds no waker until the ticker waits again.
        assert_eq!(woken, [0, 1]);
    }

    /// An executor thread marked in `control` as `index`, waiting for
    /// ever in `poll(2)`; it sends what the wait returned, then ends.
    fn waiting_executor(
        control: &Arc<Control>,
        index: u16,
    ) -> std::sync::mpsc::Receiver<nix::Result<i32>> {
        let (tx, rx) = std::sync::mpsc::channel();
        let (marked_tx, marked_rx) = std::sync::mpsc::channel();
        let control = Arc::clone(control);
        std::thread::spawn(move || {
            let _mark = control.mark_thread(index);
            marked_tx.send(()).unwrap();
            let mut none: [nix::poll::PollFd<'_>; 0] = [];
            let _ = tx.send(nix::poll::poll(&mut none, nix::poll::PollTimeout::NONE));
        });
        marked_rx.recv().unwrap();
        rx
    }

    #[test]
    fn a_stuck_executor_s_wait_is_interrupted_at_most_once_per_stuck_period() {
        interrupt::install().unwrap();
        let control = Control::new(3, 1);
        let (late, stuck) = (LATE.as_nanos() as u64, STUCK.as_nanos() as u64);
        let mut now = 10_000_000_000;
        let beats = [now - 1_000_000, now - late - 1, now - stuck - 1];
        let woke = waiting_executor(&control, 2);
        let mut last = [0; 3];
        interrupt_stuck(&control, &beats, now, &mut last);
        // Only the one silent for over STUCK (and no thread is marked for
        // the first two).
        assert_eq!(last, [0, 0, now]);
        assert_eq!(control.nudges(), vec![0, 0, 1]);
        interrupt_stuck(&control, &beats, now + stuck, &mut last);
        assert_eq!(last, [0, 0, now], "again within STUCK");
        // The signal may have come before the thread was in its wait: the
        // guard signals again each STUCK until the wait ends.
        let mut result = None;
        until("the waiter's interrupt", || {
            result = woke.try_recv().ok();
            if result.is_none() {
                now += stuck + 1;
                interrupt_stuck(&control, &beats, now, &mut last);
            }
            result.is_some()
        });
        assert_eq!(result, Some(Err(nix::errno::Errno::EINTR)));
    }

    #[test]
    fn an_executor_that_is_only_late_is_not_interrupted_and_one_that_ended_has_no_thread() {
        interrupt::install().unwrap();
        let control = Control::new(2, 1);
        let now = 10_000_000_000;
        let late = LATE.as_nanos() as u64;
        let woke = waiting_executor(&control, 0);
        let mut last = [0; 2];
        interrupt_stuck(&control, &[now - late - 1; 2], now, &mut last);
        assert_eq!(last, [0, 0]);
        assert_eq!(control.nudges(), vec![0, 0]);
        // End the waiter: its mark goes with it, and a stuck heartbeat
        // then gets no signal.
        let tid = control.thread(0).unwrap();
        let mut ended = false;
        until("the waiter's end", || {
            ended |= woke.try_recv().is_ok();
            let _ = interrupt::interrupt(tid);
            ended && control.thread(0).is_none()
        });
        let stuck = STUCK.as_nanos() as u64;
        interrupt_stuck(&control, &[now - stuck - 1, 0], now, &mut last);
        assert_eq!(last, [0, 0]);
        assert_eq!(control.nudges(), vec![0, 0]);
    }
}
