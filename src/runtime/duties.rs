//! An executor's own tasks besides the pump ([`super::pump`]) and the
//! agents' workers: what they share ([`Local`]), the ticker (call expiry,
//! the watchdog's heartbeat, published statistics), each agent's launcher,
//! and the drain at shutdown. [`super::executor`] builds and spawns them;
//! every wait here is on the executor's own timers ([`super::timers`]),
//! which the pump fires.

use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::future::select;
use glommio::TaskQueueHandle;

use super::agent::Agent;
use super::ctx::{Ctx, Draining, now_ns};
use super::executor::{
    AgentLaunch, Control, DRAIN_LIMIT, MakeAgent, QUIET_ROUNDS, RECENT_PERIOD, STOP_LIMIT,
};
use super::node::Node;
use super::stats::{NodeStats, StatsSnapshot, copy_totals};
use super::supervisor::{RestartPolicy, Supervisor};
use super::tasks::Census;
use super::timers::{Timer, Timers};
use super::worker::{InlineServer, run_worker};

/// Everything the tasks of one executor share.
pub(super) struct Local<A> {
    pub(super) node: Rc<Node>,
    pub(super) stats: Rc<NodeStats>,
    pub(super) control: Arc<Control>,
    pub(super) draining: Rc<Draining>,
    pub(super) census: Arc<Census>,
    pub(super) make: MakeAgent<A>,
}

impl<A> Local<A> {
    pub(super) fn timers(&self) -> &Rc<Timers> {
        self.node.timers()
    }
}

/// Sleeps on `timer` for `duration`.
pub(super) async fn sleep(timer: &mut Timer, duration: Duration) {
    timer.arm(now_ns().saturating_add(duration.as_nanos() as u64));
    timer.wait().await;
}

/// Drains, closes inboxes and calls, and waits for (or cancels) agents.
pub(super) async fn shut_down<A>(
    local: &Local<A>,
    launched: Vec<glommio::Task<()>>,
    timer: &mut Timer,
) {
    local.draining.raise();
    drain(&local.node, &local.control, timer).await;
    for inbox in local.node.inboxes() {
        inbox.close();
    }
    local.node.pending().close_all();
    // Agents that ignore `draining` are cancelled: dropping a task cancels it.
    timer.arm(now_ns().saturating_add(STOP_LIMIT.as_nanos() as u64));
    let all = pin!(async move {
        for task in launched {
            task.await;
        }
    });
    let _ = select(all, pin!(timer.wait())).await;
}

/// Waits until every executor is quiet (nothing queued, running, held or
/// waiting for a reply) for [`QUIET_ROUNDS`] checks in a row, or the drain
/// limit. Quiet must be global: an executor that closed its inboxes while
/// another still served a request would drop that request's calls to it.
/// The rounds are apart by more than a pump pass, so a message still on a
/// ring is queued, and counted, before the next check.
async fn drain(node: &Node, control: &Control, timer: &mut Timer) {
    let deadline = Instant::now() + DRAIN_LIMIT;
    let mut rounds = 0;
    while Instant::now() < deadline {
        if control.all_quiet(node.executor(), node.is_quiet()) {
            rounds += 1;
            if rounds == QUIET_ROUNDS {
                return;
            }
        } else {
            rounds = 0;
        }
        sleep(timer, Duration::from_millis(2)).await;
    }
}

/// Histograms copied for the live view in one tick: ~5 us each for a
/// route's, so a tick holds the executor ~40 us (`stats.rs`).
const COPIED_PER_TICK: usize = 8;

/// The live view's copy of an executor's statistics, made a part a tick
/// into snapshots allocated at boot (`stats.rs`).
struct RecentCopy {
    /// The snapshot being filled.
    filling: Option<StatsSnapshot>,
    /// A second one for the first publication, which hands none back.
    standby: Option<StatsSnapshot>,
    /// The next histogram to copy while a copy is under way.
    next: Option<usize>,
}

impl RecentCopy {
    fn new(stats: &NodeStats) -> Self {
        Self {
            filling: Some(stats.blank_snapshot()),
            standby: Some(stats.blank_snapshot()),
            next: None,
        }
    }

    /// Starts a copy unless one is under way.
    fn start(&mut self) {
        self.next.get_or_insert(0);
    }

    /// Copies the next part and publishes a finished copy.
    fn step<A>(&mut self, local: &Local<A>, index: u16) {
        let Some(next) = self.next else {
            return;
        };
        let stats = &local.stats;
        let filling = self.filling.get_or_insert_with(|| stats.blank_snapshot());
        if let Some(next) = stats.copy_part(filling, next, COPIED_PER_TICK) {
            self.next = Some(next);
            return;
        }
        copy_totals(filling, &local.node);
        if local.control.swap_recent(index, &mut self.filling) {
            if self.filling.is_none() {
                self.filling = self.standby.take();
            }
            self.next = None;
        } else {
            // A reader holds the slot: copy afresh and try again.
            self.next = Some(0);
        }
    }
}

/// Expires calls every millisecond and beats the watchdog's heartbeat,
/// publishes live totals every 100 ms and recent statistics every
/// [`RECENT_PERIOD`], copied a part a tick ([`RecentCopy`]).
pub(super) async fn tick<A>(local: Rc<Local<A>>, index: u16) {
    let mut timer = Timer::new(local.timers());
    let mut ticks = 0u64;
    let mut recent = RecentCopy::new(&local.stats);
    let live = &local.control.live[index as usize];
    let recent_every = RECENT_PERIOD.as_millis() as u64;
    loop {
        timer.arm(now_ns().saturating_add(1_000_000));
        let mut wait = pin!(timer.wait());
        // The guard wakes this waker from its thread when the executor
        // is late (see `super::guard`).
        poll_fn(|cx| {
            local
                .control
                .register_ticker(usize::from(index), cx.waker());
            wait.as_mut().poll(cx)
        })
        .await;
        let now = now_ns();
        // SYNC: Relaxed; the watchdog only compares the value with its clock.
        live.heartbeat_ns.store(now, Ordering::Relaxed);
        local.node.pending().expire(now);
        ticks += 1;
        if ticks.is_multiple_of(100) {
            local.stats.publish(live);
        }
        if ticks.is_multiple_of(recent_every) {
            recent.start();
        }
        recent.step(&local, index);
        if local.control.stopping() {
            local.draining.raise();
            if local.node.inboxes().iter().all(|i| i.is_closed()) {
                local.stats.publish(&local.control.live[index as usize]);
                return;
            }
        }
    }
}

/// Starts one agent when its phase opens, then runs its workers.
pub(super) async fn launch_agent<A: Agent + 'static>(
    local: Rc<Local<A>>,
    launch: AgentLaunch,
    queue: TaskQueueHandle,
) {
    let mut timer = Timer::new(local.timers());
    while !local.control.phase_open(launch.phase) {
        if local.control.stopping() {
            return;
        }
        sleep(&mut timer, Duration::from_micros(200)).await;
    }
    drop(timer);
    let agent = Rc::new((local.make)(launch.id));
    let ctx = Ctx::new(
        Rc::clone(&local.node),
        Rc::clone(&local.stats),
        Rc::clone(&local.draining),
        launch.id,
    );
    if agent.start(&ctx).await.is_err() {
        local.stats.update_agent(launch.id, |c| c.failures += 1);
    }
    let cpu = super::affinity::current_cpu().ok().map(|c| c.0);
    local.stats.update_agent(launch.id, |c| c.cpu_seen = cpu);
    if let Some(counter) = local.control.started.get(launch.phase) {
        // SYNC: AcqRel; the daemon's Acquire load sees the start complete.
        counter.fetch_add(1, Ordering::AcqRel);
    }
    let supervisor = Rc::new(RefCell::new(Supervisor::new(RestartPolicy::default())));
    let mut tasks = Vec::with_capacity(launch.workers + 1);
    for _ in 0..launch.workers {
        let (agent, supervisor) = (Rc::clone(&agent), Rc::clone(&supervisor));
        let ctx = Ctx::new(
            Rc::clone(&local.node),
            Rc::clone(&local.stats),
            Rc::clone(&local.draining),
            launch.id,
        );
        let worker = async move { run_worker(&*agent, &ctx, &supervisor).await };
        if let Ok(task) = local.census.spawn(queue, worker) {
            tasks.push(task);
        }
    }
    let inline = InlineServer::new(&agent, &supervisor, &ctx, launch.workers);
    local
        .node
        .inbox(launch.id)
        .set_inline(Some(Rc::new(inline)));
    let runner = async move { agent.run(&ctx).await };
    if let Ok(task) = local.census.spawn(queue, runner) {
        tasks.push(task);
    }
    for task in tasks {
        task.await;
    }
}
