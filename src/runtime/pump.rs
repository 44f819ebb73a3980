//! The pump: the task that drives an executor. It moves frames from the
//! executor's incoming rings into its router, fires its timers, and, when
//! nothing is ready, holds the thread until the next ring message or due
//! time.
//!
//! Each pass takes at most [`BATCH`] frames per ring, so one busy ring
//! cannot starve the others. When the frame pool is nearly empty the pump
//! leaves frames in the rings: producers find them full and slow down,
//! which is the backpressure the design asks for (every queue bounded,
//! nothing dropped for lack of a frame).
//!
//! Ready work goes first: whenever the census ([`super::tasks`]) counts a
//! task ready (a handler woken by a frame, a sleeper by a timer), the pump
//! lets glommio run it now. The pump lives in the latency queue with the
//! CRITICAL/HIGH agents and the ticker. When frames woke them, it yields
//! as a task does (to the back of the queue): their handlers run next,
//! with no switch of task queue, whose accounting reads the clock twice
//! (~20 ns each on a VM) on every hop. When local work woke them (timers,
//! calls between agents of this executor), it steps behind the whole
//! queue ([`super::relay`]) so as not to run between each of those tasks.
//! It yields the queue when a task of another queue is ready, or glommio's
//! preempt timer has fired. Its own bookkeeping (the clock read, timers,
//! watched rings, counters, quiet-slot naps) waits for those handlers:
//! after a loop that yielded to them, the next one does it, ready tasks
//! or not. (Deferring it up to eight loops under load raised `bench mesh
//! --overhead`'s p50 at 100,000 req/s from 17 us to 88-95 us: everything
//! it serves waited that much longer.) Otherwise the pump waits
//! in [`ConsumerGroup::wait_until_also`], holding the thread: spin by the
//! class's strategy, then `ppoll` on the executor's bell (and the bells of
//! rings its tasks wait on, [`super::watch`]) with the next timer's due
//! time as the deadline (a due time nearer than the executor's parks
//! usually wake late is spun to instead, and after a write that woke
//! another executor the spin lasts at least that long: its answer comes
//! after its wake-up). The ring, the kernel and the task
//! are all there is between a message (or a due time) and its handler.
//!
//! glommio's own reactor (io_uring completions, its timer wheel, wakes
//! from other threads) runs only in a reactor pass, which costs tens of
//! microseconds on a VM. The pump keeps passes off the message path: it
//! lets one happen ([`reactor_pass`]) only while idle: when glommio's
//! preempt timer has fired (the pass would otherwise come at the next
//! yield, between a message and its handler), at least every
//! [`PASS_PERIOD`], and before waiting
//! again after a pass came at a yield (that pass may have armed a latency
//! queue's shorter preempt timer; the pump's own passes come when nothing
//! else is ready, so they arm the executor's default, [`PREEMPT`], which
//! outlasts any wait of the pump; they wait in the helper's queue,
//! [`super::relay`], for that).
//! Passes that still fell between a message and its handler are counted
//! ([`super::node::RouterCounters::late_passes`]).
//!
//! An executor thread runs under SCHED_FIFO (when it may), and one that
//! never sleeps meets the kernel's real-time throttling: nothing of it
//! runs for the last 50 ms of a second. Under a stream too dense to park
//! in (every park finds a frame already there), the pump naps, work or
//! not, whenever its group says it owes the CPU idle time
//! ([`ConsumerGroup::owed_nap`]: only a real-time thread does, as the
//! kernel reports its policy and its CPU time). It naps only in the
//! host's quiet slots, the first [`QUIET`] of every [`QUIET_PERIOD`] of
//! CLOCK_MONOTONIC: from the loop that finds itself in one, with at least
//! [`NAP`] of it left, to the slot's end (or for what it owes, up to
//! [`NAP_MAX`], when that is longer). Every executor reads the same clock,
//! so their naps coincide. A request's hops cross the executors back and
//! forth (about twenty in the seed's mesh), and while each executor napped
//! at its own times a request waited out the naps of each in turn; now it
//! waits out one slot at most. (`bench mesh --overhead --find-max` on
//! `vm-2cpu`, alternating runs: 50,000-62,000 req/s with naps of their
//! own, 76,000-80,000 in shared slots.) The slots are 10% of the time and
//! the waiter keeps 7% idle (`idle.rs`); a shorter nap than [`NAP`] costs
//! a VM's thread nearly as much CPU time as it sleeps (~20 us to enter
//! and leave it), and a longer slot holds each request it catches longer.
//! Handlers that hold the thread past a slot's first part leave the
//! share to the parks at their gaps. Naps are counted
//! ([`super::node::RouterCounters::naps`]).

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::clock::duration_ns;
use super::node::Node;
use super::offcpu::OffCpu;
use super::relay::Relay;
use super::tasks::Census;
use pinwheel_ipc::ring::ConsumerGroup;

/// Frames taken from one ring per pass.
pub const BATCH: usize = 32;
/// Pool frames kept free for local traffic and fan-out before the pump
/// stops draining.
pub const RESERVE: usize = 64;
/// Longest the pump lets glommio's reactor go without a pass (I/O
/// completions, foreign wakes): the longest idle park, too.
pub const PASS_PERIOD: Duration = Duration::from_millis(10);
/// The executors' default preempt timer: longer than any park, so it
/// never fires while the pump holds the thread.
pub const PREEMPT: Duration = Duration::from_millis(40);
/// How long glommio spins before parking its own reactor: only the pump's
/// reactor pass waits on glommio, for a timer of
/// [`super::relay::PASS_TIMER`].
pub const REACTOR_SPIN: Duration = Duration::from_micros(100);
/// How often the host's executors have a quiet slot to nap in, ns of
/// CLOCK_MONOTONIC.
const QUIET_PERIOD: u64 = 1_000_000;
/// How long each quiet slot lasts, from the start of its period, ns.
const QUIET: u64 = 100_000;
/// The shortest nap the pump takes when its thread owes the CPU idle
/// time: it naps only while at least this much of a slot is left.
const NAP: Duration = Duration::from_micros(50);
/// The longest, when it owes more than a slot.
const NAP_MAX: Duration = Duration::from_micros(200);

/// What the pump drives.
pub struct Pump {
    /// The executor's router (and its timers).
    pub node: Rc<Node>,
    /// Its incoming rings.
    pub group: ConsumerGroup,
    /// Its task census.
    pub census: Arc<Census>,
    /// Set when the executor is done: the pump ends once the rings are
    /// empty.
    pub stop: Rc<Cell<bool>>,
    /// Its helper, in a task queue of its own.
    pub relay: Relay,
    /// Its thread's off-CPU stretches while awake.
    pub off_cpu: OffCpu,
}

/// Moves frames and fires timers until `stop` is set and the rings are
/// empty.
pub async fn run_pump(mut pump: Pump) {
    let mut last_pass_ns = pump.node.clock().now_ns();
    // Whether a reactor pass may have come at a yield since the last one
    // the pump let happen: it may have armed a latency queue's shorter
    // preempt timer, which must not fire during a park.
    let mut exposed = false;
    // Whether the last loop yielded without its bookkeeping.
    let mut deferred = false;
    loop {
        // Tasks woken from other threads are woken here first (a load when
        // there are none).
        pump.census.take_foreign();
        let moved = pass(&pump.node, &mut pump.group);
        if moved > 0 {
            let _ = pump.node.flush();
        }
        // The handlers of what came run first: the clock read, the timers
        // and the counters below wait for the next loop.
        if pump.census.ready() > 0 && !deferred {
            deferred = true;
            exposed |= run_ready(&pump, moved > 0).await;
            continue;
        }
        deferred = false;
        let now = pump.node.clock().now_ns();
        pump.off_cpu.awake(now);
        let fired = pump.node.timers().fire(now);
        // A SCHED_FIFO thread that never sleeps is throttled by the kernel
        // (50 ms with nothing run, once a second); under a stream too dense
        // to park in, the pump sleeps a little instead, work or not, when
        // the other executors do too.
        if let Some(left) = quiet_left(now) {
            let owed = pump.group.owed_nap();
            if !owed.is_zero() {
                let slice = left.max(owed.min(NAP_MAX));
                pump.group.nap(slice);
                let due_ns = now.saturating_add(duration_ns(slice));
                pump.off_cpu.woke(pump.node.clock().now_ns(), due_ns);
                // `now` is stale: start over from the rings.
                continue;
            }
        }
        let counters = pump.node.counters();
        counters
            .ring_backlog
            .set(pump.group.consumers_mut().iter().map(|c| c.backlog()).sum());
        counters.parks.set(pump.group.parks());
        counters.naps.set(pump.group.naps());
        counters.off_cpu.set(pump.off_cpu.totals());
        let woken = pump.node.watches().wake_ready();
        let preempt = glommio::executor().need_preempt();
        let ready = fired > 0 || woken > 0 || pump.census.ready() > 0;
        if preempt && !ready {
            reactor_pass(&pump).await;
            (last_pass_ns, exposed) = (pump.node.clock().now_ns(), false);
            continue;
        }
        if ready {
            exposed |= run_ready(&pump, moved > 0).await;
            continue;
        }
        if pump.stop.get() {
            return;
        }
        if pump.node.pool().available() < RESERVE {
            glommio::executor().yield_task_queue_now().await;
            continue;
        }
        let since_pass = Duration::from_nanos(now.saturating_sub(last_pass_ns));
        if exposed || since_pass >= PASS_PERIOD {
            reactor_pass(&pump).await;
            (last_pass_ns, exposed) = (pump.node.clock().now_ns(), false);
            continue;
        }
        let due_ns = idle(&mut pump, now, PASS_PERIOD - since_pass);
        pump.off_cpu.woke(pump.node.clock().now_ns(), due_ns);
    }
}

/// Lets glommio run the ready tasks; `frames`: ring frames woke them.
/// Returns whether glommio passes first (its preempt timer has fired).
async fn run_ready(pump: &Pump, frames: bool) -> bool {
    let preempt = glommio::executor().need_preempt();
    if preempt && frames {
        bump(&pump.node.counters().late_passes);
    }
    if preempt || pump.census.ready_apart() > 0 {
        glommio::executor().yield_task_queue_now().await;
    } else if frames {
        YieldNow(false).await;
    } else {
        pump.relay.behind().await;
    }
    preempt
}

/// What is left of the quiet slot `now_ns` falls in, when at least
/// [`NAP`] is (`None`: outside a slot, or near its end).
fn quiet_left(now_ns: u64) -> Option<Duration> {
    let left = QUIET.saturating_sub(now_ns % QUIET_PERIOD);
    let left = Duration::from_nanos(left);
    (left >= NAP).then_some(left)
}

/// Holds the thread until a frame, the next due time (or `cap` after
/// `now_ns`), or a task made ready from another thread. Returns the due
/// time it waited for, ns.
fn idle(pump: &mut Pump, now_ns: u64, cap: Duration) -> u64 {
    let wait = match pump.node.timers().next_deadline() {
        Some(due_ns) => Duration::from_nanos(due_ns.saturating_sub(now_ns)).min(cap),
        None => cap,
    };
    let due_ns = now_ns.saturating_add(duration_ns(wait));
    let deadline = Instant::now() + wait;
    let census = &pump.census;
    let watches = pump.node.watches();
    match watches.arm() {
        Ok(true) => {}
        // A watched ring has a frame: the next loop wakes its task.
        Ok(false) => return due_ns,
        // Nothing armed: the park is the executor's own.
        Err(err) => {
            tracing::error!(executor = pump.node.executor(), error = %err, "cannot arm a watched ring");
        }
    }
    if pump.node.take_woke_peer() {
        pump.group.woke_a_peer();
    }
    census.set_parked(true);
    let wake = pump.group.wait_until_also(
        deadline,
        || census.ready() > 0 || glommio::executor().need_preempt() || watches.any_frames(),
        &watches.armed(),
    );
    census.set_parked(false);
    watches.disarm();
    if let Err(err) = wake {
        tracing::error!(executor = pump.node.executor(), error = %err, "cannot wait on the executor's rings");
    }
    due_ns
}

/// Lets glommio run one reactor pass (through the relay; module doc).
async fn reactor_pass(pump: &Pump) {
    bump(&pump.node.counters().reactor_passes);
    pump.relay.pass().await;
}

fn bump(counter: &Cell<u64>) {
    counter.set(counter.get() + 1);
}

/// One pass over the rings; returns the frames moved.
fn pass(node: &Node, group: &mut ConsumerGroup) -> usize {
    let mut moved = 0;
    for consumer in group.consumers_mut() {
        for _ in 0..BATCH {
            if node.pool().available() < RESERVE {
                return moved;
            }
            match consumer.try_recv(|bytes| node.accept(bytes)) {
                Ok(Some(_)) => moved += 1,
                Ok(None) => break,
                Err(err) => {
                    tracing::error!(executor = node.executor(), error = %err, "ring from another executor is corrupt");
                    break;
                }
            }
        }
    }
    moved
}

/// Yields once to the executor's other tasks.
pub struct YieldNow(pub bool);

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naps_fall_in_the_first_part_of_each_period_and_end_with_its_slot() {
        let us = |n: u64| Duration::from_micros(n);
        let period = 7 * QUIET_PERIOD;
        assert_eq!(quiet_left(period), Some(us(100)));
        assert_eq!(quiet_left(period + 30_000), Some(us(70)));
        assert_eq!(quiet_left(period + 50_000), Some(us(50)));
        assert_eq!(quiet_left(period + 50_001), None, "under NAP left");
        assert_eq!(quiet_left(period + QUIET), None);
        assert_eq!(quiet_left(period + QUIET_PERIOD - 1), None);
        assert_eq!(quiet_left(period + QUIET_PERIOD + 1_000), Some(us(99)));
    }
}
