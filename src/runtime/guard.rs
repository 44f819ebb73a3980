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
//! The guard checks every executor's heartbeat each [`GUARD_PERIOD`]; one
//! older than [`LATE`] gets a write on its data bell, the eventfd its pump
//! parks on through io_uring. The completion wakes the executor, which
//! then runs its expired timers. An executor that is busy is never late,
//! and one that is asleep by design (parked on its bell) wakes to a
//! spurious bell it already handles, so the cost is one `write(2)` per
//! late executor per period and nothing on the hot path. Nudges are
//! counted ([`Control::nudges`]) so a host where they are frequent shows
//! it.
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
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::ctx::now_ns;
use super::executor::Control;
use pinwheel_ipc::ring::DataBell;

/// How often the guard looks.
pub const GUARD_PERIOD: Duration = Duration::from_millis(5);
/// A heartbeat older than this gets a nudge (the ticker beats every 1 ms).
pub const LATE: Duration = Duration::from_millis(20);

/// The running guard. Dropping it stops the guard.
#[derive(Debug)]
pub struct Guard {
    task: JoinHandle<()>,
}

impl Guard {
    /// Starts guarding the executors whose bells are `bells` (by index),
    /// as a task on the control runtime `on`.
    pub fn spawn(on: &Handle, control: Arc<Control>, bells: Vec<DataBell>) -> Guard {
        let task = on.spawn(async move {
            let mut period = tokio::time::interval(GUARD_PERIOD);
            // A late look is followed by the next on the grid, never by a
            // burst of looks at the same heartbeats.
            period.set_missed_tick_behavior(MissedTickBehavior::Skip);
            loop {
                period.tick().await;
                nudge_late(&control, &bells, now_ns());
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

/// Nudges each executor whose heartbeat is older than [`LATE`] at `now`.
fn nudge_late(control: &Control, bells: &[DataBell], now: u64) {
    let late = LATE.as_nanos() as u64;
    for (index, (live, bell)) in control.live().iter().zip(bells).enumerate() {
        // SYNC: Relaxed; a clock value compared with ours.
        let beat = live.heartbeat_ns.load(Ordering::Relaxed);
        if beat != 0 && now.saturating_sub(beat) > late && bell.nudge().is_ok() {
            control.count_nudge(index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_executor_whose_heartbeat_is_late_is_nudged() {
        let control = Control::new(3, 1);
        let bells: Vec<DataBell> = (0..3).map(|_| DataBell::new().unwrap()).collect();
        let now = 10_000_000_000;
        let late = LATE.as_nanos() as u64;
        let beats = [now - 1_000_000, now - late - 1, 0];
        for (live, beat) in control.live().iter().zip(beats) {
            live.heartbeat_ns.store(beat, Ordering::Relaxed);
        }
        nudge_late(&control, &bells, now);
        assert_eq!(control.nudges(), vec![0, 1, 0]);
        nudge_late(&control, &bells, now);
        assert_eq!(control.nudges(), vec![0, 2, 0]);
    }
}
