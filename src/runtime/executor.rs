//! The executors: one glommio `LocalExecutor` per planned CPU
//! (`Placement::Fixed`), and the lifecycle the daemon drives.
//!
//! Boot. Each executor thread applies its thread privileges, builds its
//! router, statistics and consumer group, creates three task queues — a
//! `Latency::Matters` queue (the class's preempt timer) for the pump, the
//! ticker and CRITICAL/HIGH agents, a `Shares` queue for the others, and
//! one for the pump's helper (`relay.rs`) —
//! starts a launcher per agent, and reports that it is up. glommio reports
//! some failures (memlock, affinity) only when the thread is joined, so the
//! daemon waits for every report with a timeout and joins the silent ones
//! to learn why.
//!
//! Start order. The plan's phases open one at a time ([`Runtime::open_phase`]);
//! an agent's launcher waits for its phase, starts it, records the CPU it
//! finds itself on, and only then spawns its workers and its `run` task.
//!
//! Shutdown. [`Runtime::stop`] sets the stop flag; each executor marks its
//! agents draining (generators stop sending), waits up to the drain limit
//! for inboxes to empty and calls to finish, closes inboxes (workers end),
//! fails what still waits, lets the pump empty the rings, and leaves its
//! statistics for the report.
//!
//! Executors share nothing mutable but [`Control`]'s atomics and, at the
//! end, a mutex-protected slot per executor for its statistics.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use glommio::{Latency, LocalExecutorBuilder, Placement, Shares, TaskQueueHandle};

use super::RuntimeError;
use super::agent::Agent;
use super::ctx::{Draining, now_ns};
use super::duties::{Local, launch_agent, shut_down, sleep, tick};
use super::guard::Guard;
use super::interrupt;
use super::node::{Node, NodeSizes};
use super::offcpu::OffCpu;
use super::pump::{PREEMPT, Pump, REACTOR_SPIN, run_pump};
use super::relay::Relay;
use super::remote::Uplinks;
use super::routes::Routes;
use super::stats::{LiveCounters, NodeStats, StatsSnapshot};
use super::tasks::Census;
use super::timers::Timer;
use crate::topology::{ClassSettings, CpuId, TaskQueue};
use pinwheel_ipc::ring::{Consumer, ConsumerGroup, DataBell, Producer};
use pinwheel_ipc::wire::AgentId;

/// How long executors may take to report that they started.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for in-flight work at shutdown.
pub const DRAIN_LIMIT: Duration = Duration::from_millis(1_200);
/// Consecutive checks every executor must pass quiet before inboxes close.
pub const QUIET_ROUNDS: u32 = 3;
/// Longest wait, after the drain, for agents' tasks to end before they are
/// cancelled.
pub const STOP_LIMIT: Duration = Duration::from_millis(300);
/// How often each executor publishes its statistics for the admin API.
pub const RECENT_PERIOD: Duration = Duration::from_secs(1);

/// What the daemon and the executors share.
#[derive(Debug)]
pub struct Control {
    stop: AtomicBool,
    phase: AtomicUsize,
    pub(super) started: Vec<AtomicUsize>,
    quiet: Vec<AtomicBool>,
    pub(super) live: Vec<LiveCounters>,
    /// Nudges the guard gave each executor.
    nudges: Vec<AtomicU64>,
    /// Each executor's ticker, to wake from another thread (the guard's
    /// nudge; [`super::guard`]).
    tickers: Vec<AtomicWaker>,
    /// Each executor's thread id while it runs (0: none), for the guard's
    /// last resort ([`super::interrupt`]).
    threads: Vec<AtomicI32>,
    /// Each executor's statistics as of its last second, for the admin API.
    recent: Vec<Mutex<Option<StatsSnapshot>>>,
    pub(super) snapshots: Mutex<Vec<Option<StatsSnapshot>>>,
}

impl Control {
    /// Control for `executors` executors and `phases` start phases.
    pub fn new(executors: usize, phases: usize) -> Arc<Self> {
        Arc::new(Self {
            stop: AtomicBool::new(false),
            phase: AtomicUsize::new(0),
            started: (0..phases).map(|_| AtomicUsize::new(0)).collect(),
            quiet: (0..executors).map(|_| AtomicBool::new(false)).collect(),
            live: (0..executors).map(|_| LiveCounters::default()).collect(),
            nudges: (0..executors).map(|_| AtomicU64::new(0)).collect(),
            tickers: (0..executors).map(|_| AtomicWaker::new()).collect(),
            threads: (0..executors).map(|_| AtomicI32::new(0)).collect(),
            recent: (0..executors).map(|_| Mutex::new(None)).collect(),
            snapshots: Mutex::new(vec![None; executors]),
        })
    }

    /// Keeps executor `index`'s final statistics for the runtime's stop.
    fn keep_final(&self, index: u16, snapshot: StatsSnapshot) {
        if let Ok(mut slots) = self.snapshots.lock() {
            slots[usize::from(index)] = Some(snapshot);
        }
    }

    /// Whether shutdown was asked for.
    pub fn stopping(&self) -> bool {
        // SYNC: Acquire pairs with the Release store in Runtime::stop.
        self.stop.load(Ordering::Acquire)
    }

    pub(super) fn phase_open(&self, phase: usize) -> bool {
        // SYNC: Acquire pairs with the Release store in Runtime::open_phase.
        self.phase.load(Ordering::Acquire) >= phase
    }

    /// Agents started in `phase` so far.
    pub fn started(&self, phase: usize) -> usize {
        // SYNC: Acquire pairs with the AcqRel increment in launch.
        self.started
            .get(phase)
            .map_or(0, |c| c.load(Ordering::Acquire))
    }

    /// Records whether executor `index` is quiet; true if every executor
    /// last said it was.
    pub(super) fn all_quiet(&self, index: u16, quiet: bool) -> bool {
        // SYNC: Release/Acquire so an executor that reads "quiet" also
        // sees the state that executor had when it said so.
        self.quiet[usize::from(index)].store(quiet, Ordering::Release);
        // SYNC: Acquire pairs with the Release store above.
        quiet && self.quiet.iter().all(|q| q.load(Ordering::Acquire))
    }

    /// Each executor's live totals.
    pub fn live(&self) -> &[LiveCounters] {
        &self.live
    }

    /// Each executor's last heartbeat (ns, [`now_ns`] clock), or 0 for one
    /// not running: not started yet, or ended (so a watchdog does not take
    /// an executor that finished its drain for one that stalled). Written
    /// over `beats`, which a watcher keeps from one look to the next.
    pub fn running_heartbeats(&self, beats: &mut Vec<u64>) {
        beats.clear();
        beats.extend((0..self.live.len()).map(|index| match self.thread(index) {
            // SYNC: Relaxed; a clock value compared with the reader's.
            Some(_) => self.live[index].heartbeat_ns.load(Ordering::Relaxed),
            None => 0,
        }));
    }

    /// Nudges the wake-up guard gave each executor ([`super::guard`]).
    pub fn nudges(&self) -> Vec<u64> {
        // SYNC: Relaxed; monotonic counters read for metrics.
        self.nudges
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect()
    }

    /// Wakes executor `index`'s ticker from another thread: glommio
    /// queues the wake and writes the executor's own eventfd, which its
    /// reactor always watches, so a sleeping executor wakes and runs its
    /// due timers whatever its tasks wait on. False if the ticker has not
    /// waited yet (or a nudge since has not been answered).
    pub(super) fn wake_ticker(&self, index: usize) -> bool {
        let waker = self.tickers.get(index).and_then(AtomicWaker::take);
        waker.map(std::task::Waker::wake).is_some()
    }

    /// Registers `waker` as executor `index`'s ticker.
    pub(super) fn register_ticker(&self, index: usize, waker: &std::task::Waker) {
        if let Some(ticker) = self.tickers.get(index) {
            ticker.register(waker);
        }
    }

    /// Marks executor `index` as running on the calling thread until the
    /// mark is dropped.
    pub(super) fn mark_thread(self: &Arc<Self>, index: u16) -> ThreadMark {
        if let Some(thread) = self.threads.get(usize::from(index)) {
            // SYNC: Relaxed; the guard only signals the id it reads.
            thread.store(interrupt::this_thread(), Ordering::Relaxed);
        }
        ThreadMark {
            control: Arc::clone(self),
            index,
        }
    }

    /// Executor `index`'s thread id while it runs.
    pub(super) fn thread(&self, index: usize) -> Option<i32> {
        // SYNC: Relaxed; see `mark_thread`.
        let tid = self.threads.get(index)?.load(Ordering::Relaxed);
        (tid != 0).then_some(tid)
    }

    pub(super) fn count_nudge(&self, index: usize) {
        if let Some(counter) = self.nudges.get(index) {
            // SYNC: Relaxed; a counter.
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Each executor's statistics as of its last [`RECENT_PERIOD`]; an
    /// executor that has not published yet is left out. Routes that
    /// carried no call are left out too, as in a final snapshot.
    pub fn recent(&self) -> Vec<StatsSnapshot> {
        self.recent
            .iter()
            .filter_map(|slot| slot.lock().ok().and_then(|s| s.clone()))
            .map(|mut snapshot| {
                snapshot.routes.retain(|(_, _, h)| !h.is_empty());
                snapshot
            })
            .collect()
    }

    /// Publishes executor `index`'s statistics from `snapshot` and leaves
    /// there the ones they replace (for the executor to fill next period,
    /// in place); true if so. When a reader holds the slot it leaves
    /// `snapshot` as it was and returns false: the executor never waits
    /// for a reader.
    pub(super) fn swap_recent(&self, index: u16, snapshot: &mut Option<StatsSnapshot>) -> bool {
        match self.recent.get(usize::from(index)).map(Mutex::try_lock) {
            Some(Ok(mut slot)) => {
                std::mem::swap(&mut *slot, snapshot);
                true
            }
            _ => false,
        }
    }
}

/// An executor's thread, marked in [`Control`] while it runs.
pub(super) struct ThreadMark {
    control: Arc<Control>,
    index: u16,
}

impl Drop for ThreadMark {
    fn drop(&mut self) {
        if let Some(thread) = self.control.threads.get(usize::from(self.index)) {
            // SYNC: Relaxed; see `Control::mark_thread`.
            thread.store(0, Ordering::Relaxed);
        }
    }
}

/// One agent to start on an executor.
#[derive(Debug, Clone, Copy)]
pub struct AgentLaunch {
    /// Its id.
    pub id: AgentId,
    /// Its start phase.
    pub phase: usize,
    /// Workers (concurrency).
    pub workers: usize,
    /// Whether it runs in the latency queue (CRITICAL or HIGH traffic).
    pub latency: bool,
}

/// Everything one executor is built from.
#[derive(Debug)]
pub struct ExecutorPlan {
    /// Executor index.
    pub index: u16,
    /// Its CPU.
    pub cpu: CpuId,
    /// Its class's settings.
    pub settings: ClassSettings,
    /// The bell its incoming rings ring.
    pub bell: DataBell,
    /// Its incoming rings' consumer ends.
    pub incoming: Vec<Consumer>,
    /// Its outgoing rings' producer ends, by destination executor.
    pub outgoing: Vec<Option<Producer>>,
    /// Its uplinks to the cluster link (in a cluster) and to the legacy
    /// gateway (with one), by [`RemoteKind`](super::remote::RemoteKind).
    pub uplinks: Uplinks,
    /// Its agents, in start order.
    pub agents: Vec<AgentLaunch>,
    /// Table sizes.
    pub sizes: NodeSizes,
}

/// The running executors.
#[derive(Debug)]
pub struct Runtime {
    control: Arc<Control>,
    handles: Vec<(CpuId, glommio::ExecutorJoinHandle<Result<(), RuntimeError>>)>,
    guard: Option<Guard>,
}

/// Builds the agent with a given id, on its executor's thread.
pub type MakeAgent<A> = Arc<dyn Fn(AgentId) -> A + Send + Sync>;

/// Per-thread setup (privileges), run first on each executor thread.
pub type ThreadSetup = Arc<dyn Fn(&ClassSettings) + Send + Sync>;

/// Starts the executors and waits until each reports it is up; their
/// wake-up guard runs on `guard_on`, the control runtime, which must
/// outlive them.
pub fn start<A: Agent + 'static>(
    routes: Arc<Routes>,
    plans: Vec<ExecutorPlan>,
    make: MakeAgent<A>,
    setup: ThreadSetup,
    control: Arc<Control>,
    guard_on: &tokio::runtime::Handle,
) -> Result<Runtime, RuntimeError> {
    let (ready_tx, ready_rx) = mpsc::channel::<u16>();
    let mut handles = Vec::new();
    let bells: Vec<DataBell> = plans.iter().map(|p| p.bell.clone()).collect();
    for plan in plans {
        let cpu = plan.cpu;
        let spawned = spawn_executor(
            plan,
            Arc::clone(&routes),
            Arc::clone(&make),
            Arc::clone(&setup),
            Arc::clone(&control),
            ready_tx.clone(),
        )?;
        handles.push((cpu, spawned));
    }
    drop(ready_tx);
    let guard = Guard::spawn(guard_on, Arc::clone(&control), bells);
    let mut runtime = Runtime {
        control,
        handles,
        guard: Some(guard),
    };
    let deadline = Instant::now() + START_TIMEOUT;
    let mut up = 0;
    while up < runtime.handles.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match ready_rx.recv_timeout(left) {
            Ok(_) => up += 1,
            Err(_) => return Err(runtime.failed_start()),
        }
    }
    Ok(runtime)
}

/// Starts one executor's thread running [`executor_main`].
fn spawn_executor<A: Agent + 'static>(
    plan: ExecutorPlan,
    routes: Arc<Routes>,
    make: MakeAgent<A>,
    setup: ThreadSetup,
    control: Arc<Control>,
    ready: mpsc::Sender<u16>,
) -> Result<glommio::ExecutorJoinHandle<Result<(), RuntimeError>>, RuntimeError> {
    let cpu = plan.cpu;
    let failed = move |reason: String| RuntimeError::Executor { cpu, reason };
    // The class's preempt timer applies to its latency queue; the
    // executor's default is longer than any park of the pump, and glommio
    // parks its own reactor only in the pump's reactor passes (see `pump`).
    LocalExecutorBuilder::new(Placement::Fixed(cpu.0 as usize))
        .name(&format!("pw-exec-{cpu}"))
        .preempt_timer(PREEMPT)
        .spin_before_park(REACTOR_SPIN)
        .io_memory(IO_MEMORY)
        .ring_depth(RING_DEPTH)
        .spawn(move || async move {
            // Every task of the executor is counted, this one too.
            let census = Census::new(plan.bell.clone());
            let queue = glommio::executor().current_task_queue();
            let main = executor_main(
                plan,
                Arc::clone(&census),
                routes,
                make,
                setup,
                control,
                ready,
            );
            match census.spawn(queue, main) {
                Ok(task) => task.await,
                Err(err) => Err(failed(err.to_string())),
            }
        })
        .map_err(|err| failed(err.to_string()))
}

/// glommio's io memory per executor: pinwheel does no file I/O through it,
/// so the minimum keeps the locked-memory need small.
pub const IO_MEMORY: usize = 256 << 10;
const RING_DEPTH: usize = 128;

impl Runtime {
    /// Shared control.
    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// Each executor's CPU, by index.
    pub fn cpus(&self) -> Vec<CpuId> {
        self.handles.iter().map(|(cpu, _)| *cpu).collect()
    }

    /// Opens start phase `phase`: its agents start.
    pub fn open_phase(&self, phase: usize) {
        // SYNC: Release pairs with the Acquire load in Control::phase_open.
        self.control.phase.store(phase, Ordering::Release);
    }

    /// Waits until `expected` agents of `phase` have started; false on
    /// timeout.
    pub fn wait_started(&self, phase: usize, expected: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.control.started(phase) < expected {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        true
    }

    /// Stops every executor, waits for them, and returns their statistics.
    /// The guard keeps nudging until every executor has ended.
    pub fn stop(mut self) -> Result<Vec<StatsSnapshot>, RuntimeError> {
        // SYNC: Release pairs with the Acquire load in Control::stopping.
        self.control.stop.store(true, Ordering::Release);
        let mut first_error = None;
        for (cpu, handle) in self.handles {
            let outcome = handle
                .join()
                .map_err(|err| RuntimeError::Executor {
                    cpu,
                    reason: err.to_string(),
                })
                .and_then(|r| r);
            if let Err(err) = outcome {
                first_error.get_or_insert(err);
            }
        }
        if let Some(guard) = self.guard.take() {
            guard.stop();
        }
        if let Some(err) = first_error {
            return Err(err);
        }
        let mut snapshots = self
            .control
            .snapshots
            .lock()
            .map_err(|_| RuntimeError::Closed)?;
        Ok(snapshots.iter_mut().filter_map(Option::take).collect())
    }

    /// After an executor failed to report: stop the rest and name the
    /// first failure.
    fn failed_start(&mut self) -> RuntimeError {
        // SYNC: Release, as in Runtime::stop.
        self.control.stop.store(true, Ordering::Release);
        let mut reason = None;
        for (cpu, handle) in self.handles.drain(..) {
            match handle.join() {
                Err(err) => {
                    reason.get_or_insert(RuntimeError::Executor {
                        cpu,
                        reason: err.to_string(),
                    });
                }
                Ok(Err(err)) => {
                    reason.get_or_insert(err);
                }
                Ok(Ok(())) => {}
            }
        }
        reason.unwrap_or(RuntimeError::Executor {
            cpu: CpuId(0),
            reason: "no report within the start timeout".into(),
        })
    }
}

async fn executor_main<A: Agent + 'static>(
    plan: ExecutorPlan,
    census: Arc<Census>,
    routes: Arc<Routes>,
    make: MakeAgent<A>,
    setup: ThreadSetup,
    control: Arc<Control>,
    ready: mpsc::Sender<u16>,
) -> Result<(), RuntimeError> {
    setup(&plan.settings);
    let (cpu, index) = (plan.cpu, plan.index);
    // Until this returns, however it returns.
    let _thread = control.mark_thread(index);
    // A first heartbeat, so that the guard sees an executor that falls
    // asleep before its ticker ever beats.
    // SYNC: Relaxed; see `tick`.
    control.live[usize::from(index)]
        .heartbeat_ns
        .store(now_ns(), Ordering::Relaxed);
    let node = Node::new(
        index,
        Arc::clone(&routes),
        plan.sizes.clone(),
        plan.outgoing,
    );
    let local = Rc::new(Local {
        node: Rc::new(node.with_uplinks(plan.uplinks)),
        stats: Rc::new(NodeStats::new(&routes, index)),
        control,
        draining: Draining::new(),
        census,
        make,
    });
    let group = consumer_group(plan.bell, &plan.settings, plan.incoming)?;
    let spawned = spawn_tasks(&local, group, &plan.settings, plan.agents).map_err(|err| {
        RuntimeError::Executor {
            cpu,
            reason: err.to_string(),
        }
    })?;
    let _ = ready.send(index);
    let mut timer = Timer::new(local.timers());
    while !local.control.stopping() {
        sleep(&mut timer, Duration::from_millis(5)).await;
    }
    shut_down(&local, spawned.launched, &mut timer).await;
    // The pump ends last: it fires the timers everything before it waits
    // on.
    spawned.ticker.await;
    spawned.pump_done.set(true);
    spawned.pump.await;
    let snapshot = local.stats.full_snapshot(&local.node);
    local.control.keep_final(index, snapshot);
    Ok(())
}

/// An executor's tasks, spawned.
struct Spawned {
    pump: glommio::Task<()>,
    pump_done: Rc<Cell<bool>>,
    ticker: glommio::Task<()>,
    launched: Vec<glommio::Task<()>>,
}

/// Spawns the pump, the ticker and a launcher per agent, each into its
/// task queue. All but the pump (and its relay's helper) are counted by
/// the census, which is there for the pump to read: counting the pump's
/// own wakes (one per yield) cost atomic operations on every hop for
/// nothing.
fn spawn_tasks<A: Agent + 'static>(
    local: &Rc<Local<A>>,
    group: ConsumerGroup,
    settings: &ClassSettings,
    agents: Vec<AgentLaunch>,
) -> Result<Spawned, glommio::GlommioError<()>> {
    let queues = task_queues(settings);
    let pump_done = Rc::new(Cell::new(false));
    let pump = Pump {
        node: Rc::clone(&local.node),
        group,
        census: Arc::clone(&local.census),
        stop: Rc::clone(&pump_done),
        relay: Relay::spawn(queues.passes)?,
        off_cpu: OffCpu::new(),
    };
    local.census.set_pump_queue(queues.latency);
    let pump = glommio::spawn_local_into(run_pump(pump), queues.latency)?;
    let index = local.node.executor();
    let ticker = local
        .census
        .spawn(queues.latency, tick(Rc::clone(local), index))?;
    let mut launched = Vec::with_capacity(agents.len());
    for launch in agents {
        let queue = if launch.latency {
            queues.latency
        } else {
            queues.background
        };
        let launcher = launch_agent(Rc::clone(local), launch, queue);
        launched.push(local.census.spawn(queue, launcher)?);
    }
    Ok(Spawned {
        pump,
        pump_done,
        ticker,
        launched,
    })
}

/// One bell for every ring this executor consumes, so it parks once.
fn consumer_group(
    bell: DataBell,
    settings: &ClassSettings,
    incoming: Vec<Consumer>,
) -> Result<ConsumerGroup, RuntimeError> {
    let mut group = ConsumerGroup::new(bell, settings.wait, settings.spin_before_park_us);
    for consumer in incoming {
        group
            .add(consumer)
            .map_err(|source| RuntimeError::Ring { source })?;
    }
    Ok(group)
}

/// An executor's task queues.
struct Queues {
    /// The pump's, the ticker's and CRITICAL/HIGH agents'.
    latency: TaskQueueHandle,
    /// Where the pump's reactor passes wait.
    passes: TaskQueueHandle,
    /// Other agents'.
    background: TaskQueueHandle,
}

fn task_queues(settings: &ClassSettings) -> Queues {
    let preempt = Duration::from_micros(u64::from(settings.preempt_timer_us));
    let shares = match settings.task_queue {
        TaskQueue::Shares(shares) => usize::from(shares),
        TaskQueue::Latency => 100,
    };
    let executor = glommio::executor();
    Queues {
        passes: executor.create_task_queue(Shares::Static(1000), Latency::NotImportant, "passes"),
        latency: executor.create_task_queue(
            Shares::Static(1000),
            Latency::Matters(preempt),
            "latency",
        ),
        background: executor.create_task_queue(
            Shares::Static(shares),
            Latency::NotImportant,
            "background",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_running_executor_s_heartbeat_is_read() {
        let control = Control::new(2, 1);
        for live in control.live() {
            live.heartbeat_ns.store(5, Ordering::Relaxed);
        }
        let mut beats = vec![7; 3];
        control.running_heartbeats(&mut beats);
        assert_eq!(beats, [0, 0], "none started");
        let mark = control.mark_thread(1);
        control.running_heartbeats(&mut beats);
        assert_eq!(beats, [0, 5]);
        drop(mark);
        control.running_heartbeats(&mut beats);
        assert_eq!(beats, [0, 0], "ended");
    }
}
