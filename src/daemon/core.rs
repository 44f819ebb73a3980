//! The core loop: a task on the control runtime (the daemon's one
//! control thread, pinned to the control CPU), ticking at a fixed rate.
//!
//! Each tick ([`TICK`], a `tokio::time::interval`) it ticks the VRAM
//! optimizer ([`GpuSide`]) and the cross-host GPU scheduler
//! ([`ClusterSide`], which carries its decisions out through the
//! optimizer), and checks the executors' heartbeats (the watchdog); each
//! second it turns the executors' published statistics into the live view
//! the API serves (rates, p99s, agent states), checks pinned threads for
//! migrations, and tells systemd it is alive while no executor is stalled.
//! Between ticks it answers the admin API's commands as they arrive, from
//! a bounded channel.
//!
//! A tick that comes late (the thread was busy with an admin response or
//! the link) is followed by the next one a whole period later
//! (`MissedTickBehavior::Delay`), never by a burst of catch-up ticks:
//! every tick reads the current state and the clocks the state machines
//! are given, so a missed tick loses nothing, and two back to back would
//! only repeat the work.
//!
//! It never blocks the runtime it shares with the admin server, the NATS
//! link and the wake-up guard: its inputs arrive on channels and atomics
//! (GPU samples from the poller, which calls the driver through
//! `spawn_blocking`), its outputs go to the view and to logs.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::time::MissedTickBehavior;
use tracing::{error, info};

use super::cluster::ClusterSide;
use super::gpus::GpuSide;
use super::twin::Twin;
use crate::observe::admin::Request;
use crate::observe::api::{AgentState, AgentStatus, ExecutorStatus, Signal};
use crate::observe::view::{DaemonView, LiveView};
use crate::observe::watchdog::{Systemd, Watchdog};
use crate::process::{ProcessSide, ProcessStatus};
use crate::runtime::control::{ControlRuntime, ControlTask};
use crate::runtime::ctx::now_ns;
use crate::runtime::stats::{AgentCounts, StatsSnapshot};
use pinwheel_ipc::wire::AgentId;

/// The core loop's period.
pub const TICK: Duration = Duration::from_millis(10);
/// How often the live view is refreshed.
pub const VIEW_PERIOD: Duration = Duration::from_secs(1);
/// A heartbeat older than this is a stall.
pub const STALL_THRESHOLD: Duration = Duration::from_millis(250);

/// The running core loop.
#[derive(Debug)]
pub struct CoreLoop {
    task: ControlTask,
}

impl CoreLoop {
    /// Starts the loop as a task on `control`.
    pub fn start(
        control: &ControlRuntime,
        view: Arc<DaemonView>,
        commands: mpsc::Receiver<Request>,
        gpus: GpuSide,
        cluster: ClusterSide,
        processes: Arc<Mutex<ProcessSide>>,
    ) -> CoreLoop {
        let state = State::new(view, commands, gpus, cluster, processes);
        CoreLoop {
            task: control.spawn(|stopped| state.run(stopped)),
        }
    }

    /// Stops the loop and waits for it (from outside the control runtime).
    pub fn stop(self) {
        self.task.stop();
    }
}

struct State {
    view: Arc<DaemonView>,
    commands: mpsc::Receiver<Request>,
    gpus: GpuSide,
    cluster: ClusterSide,
    processes: Arc<Mutex<ProcessSide>>,
    twin: Twin,
    watchdog: Watchdog,
    /// The executors' heartbeats at the watchdog's last look.
    beats: Vec<u64>,
    systemd: Option<Systemd>,
    /// Handled counts per agent at the last refresh, and when.
    last: (Instant, Vec<u64>, Vec<u64>),
    /// When the live view and systemd's watchdog are next due.
    next_view: Instant,
    next_alive: Instant,
}

impl State {
    fn new(
        view: Arc<DaemonView>,
        commands: mpsc::Receiver<Request>,
        gpus: GpuSide,
        cluster: ClusterSide,
        processes: Arc<Mutex<ProcessSide>>,
    ) -> Self {
        let executors = view.executor_cpus.len();
        let agents = view.routes.agent_count();
        let now = Instant::now();
        Self {
            watchdog: Watchdog::new(executors, STALL_THRESHOLD),
            beats: Vec::with_capacity(executors),
            systemd: Systemd::from_env(),
            last: (now, vec![0; agents], vec![0; executors]),
            next_view: now,
            next_alive: now,
            twin: Twin::new(&view),
            view,
            commands,
            gpus,
            cluster,
            processes,
        }
    }

    async fn run(mut self, mut stopped: oneshot::Receiver<()>) {
        if let Some(systemd) = &self.systemd {
            systemd.ready();
        }
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // Stop first, then the tick, then commands: a burst of
                // commands cannot hold the tick off.
                biased;
                _ = &mut stopped => break,
                _ = ticks.tick() => self.tick(),
                Some(request) = self.commands.recv() => self.answer(request),
            }
        }
        // The run report reads the last counts.
        self.view.set_gpus(self.gpus.view());
        if let Some(systemd) = &self.systemd {
            systemd.stopping();
        }
    }

    fn tick(&mut self) {
        let tick = Instant::now();
        self.gpus.tick();
        self.cluster.tick(tick, &self.view, &mut self.gpus);
        if let Ok(mut processes) = self.processes.lock() {
            processes.tick(now_ns());
        }
        let stalled = self.check_heartbeats();
        if tick >= self.next_view {
            self.refresh_view();
            self.check_migrations();
            self.next_view = tick + VIEW_PERIOD;
        }
        if let Some(systemd) = &self.systemd
            && let Some(every) = systemd.watchdog_every()
            && tick >= self.next_alive
            && stalled == 0
        {
            systemd.alive();
            self.next_alive = tick + every;
        }
    }

    fn answer(&mut self, Request { command, reply }: Request) {
        // Place, pin and unpin: the cluster decides where, the VRAM
        // optimizer loads and pins.
        let answer = self
            .cluster
            .answer(&command, Instant::now(), &self.view, &mut self.gpus);
        let _ = reply.send(answer);
    }

    /// The watchdog; returns how many executors are stalled now.
    fn check_heartbeats(&mut self) -> usize {
        self.view.control.running_heartbeats(&mut self.beats);
        let check = self.watchdog.check(now_ns(), &self.beats);
        for stall in &check.new_stalls {
            let cpu = self.view.executor_cpus[stall.executor];
            error!(
                cpu,
                silent_ms = stall.silent_ns / 1_000_000,
                "executor stalled: its ticker has not run; a handler is blocking or spinning without yielding"
            );
        }
        for &executor in &check.recovered {
            info!(
                cpu = self.view.executor_cpus[executor],
                "executor recovered"
            );
        }
        if check.stalled > 0 {
            self.view.health.raise(
                "stalled_executor",
                format!(
                    "{} executor(s) stalled over {STALL_THRESHOLD:?}",
                    check.stalled
                ),
            );
        } else {
            self.view.health.clear("stalled_executor");
        }
        check.stalled
    }

    fn check_migrations(&mut self) {
        for (cpu, count) in self.view.perf.check_migrations() {
            error!(
                cpu = cpu.0,
                migrations = count,
                "pinned executor thread migrated off its CPU; something changed its affinity or the CPU went offline"
            );
            self.view.health.raise(
                "executor_migrated",
                format!(
                    "the executor pinned to CPU {} migrated {count} time(s)",
                    cpu.0
                ),
            );
        }
    }

    fn refresh_view(&mut self) {
        let snapshots = self.view.control.recent();
        let now = Instant::now();
        let seconds = now.duration_since(self.last.0).as_secs_f64().max(1e-3);
        let processes = self
            .processes
            .lock()
            .map(|p| p.statuses())
            .unwrap_or_default();
        let view = Arc::clone(&self.view);
        self.twin.refresh(&view, &snapshots);
        let agents = self.agent_statuses(&snapshots, seconds, &processes);
        let executors = self.executor_statuses(&snapshots, seconds);
        self.last.0 = now;
        self.view.set_gpus(self.gpus.view());
        self.view.set_live(LiveView {
            agents,
            processes,
            executors,
            snapshots,
        });
    }

    fn agent_statuses(
        &mut self,
        snapshots: &[StatsSnapshot],
        seconds: f64,
        processes: &[ProcessStatus],
    ) -> Vec<AgentStatus> {
        let count = self.view.routes.agent_count();
        let mut counts: Vec<Option<AgentCounts>> = vec![None; count];
        let mut p50_p99 = vec![(0u64, 0u64); count];
        for snapshot in snapshots {
            for &(AgentId(id), c) in &snapshot.agents {
                counts[id as usize] = Some(c);
            }
            for (AgentId(id), histogram) in &snapshot.service {
                p50_p99[*id as usize] = (
                    histogram.value_at_quantile(0.5),
                    histogram.value_at_quantile(0.99),
                );
            }
        }
        let view = Arc::clone(&self.view);
        view.agents
            .iter()
            .map(|facts| {
                let id = facts.id;
                let c = counts[id].unwrap_or_default();
                let before = std::mem::replace(&mut self.last.1[id], c.handled);
                let process = processes.iter().find(|p| p.agent == facts.name);
                let state = match (
                    process,
                    facts.kind,
                    counts[id].is_some(),
                    c.isolated,
                    c.cpu_seen,
                ) {
                    (Some(p), ..) => p.state,
                    (None, "external", ..) => AgentState::Detached,
                    (None, _, _, true, _) => AgentState::Isolated,
                    (None, _, true, false, Some(_)) => AgentState::Up,
                    _ => AgentState::Starting,
                };
                AgentStatus {
                    name: facts.name.clone(),
                    cpu: facts.cpu,
                    observed_cpu: if process.is_some() { None } else { c.cpu_seen },
                    state,
                    msgs_per_s: c.handled.saturating_sub(before) as f64 / seconds,
                    p50_ns: p50_p99[id].0,
                    p99_ns: p50_p99[id].1,
                    handled: c.handled,
                    failures: c.failures,
                    restarts: process.map_or(c.restarts, |p| p.restarts),
                    pid: process.and_then(|p| p.pid),
                    user: process.and_then(|p| p.user.clone()),
                    last_exit: process.and_then(|p| p.last_exit.clone()),
                    anomalies: [Signal::Latency, Signal::Errors]
                        .into_iter()
                        .filter(|&s| self.twin.anomalous(id, s))
                        .collect(),
                    fault: Some(view.routes.board().drill(AgentId(id as u32)))
                        .filter(|d| !d.is_none())
                        .map(|d| d.to_string()),
                }
            })
            .collect()
    }

    fn executor_statuses(
        &mut self,
        snapshots: &[StatsSnapshot],
        seconds: f64,
    ) -> Vec<ExecutorStatus> {
        let readings = self.view.perf.read();
        let stalls = self.watchdog.stalls().to_vec();
        self.view
            .executor_cpus
            .iter()
            .enumerate()
            .map(|(i, &cpu)| {
                let snapshot = snapshots
                    .iter()
                    .find(|s| usize::from(s.executor.index) == i);
                let busy_ns = snapshot.map_or(0, |s| s.executor.busy_ns);
                let before = std::mem::replace(&mut self.last.2[i], busy_ns);
                let migrations = readings
                    .iter()
                    .find(|r| r.cpu.0 == cpu)
                    .and_then(|r| {
                        r.counts
                            .iter()
                            .find(|(e, _)| *e == crate::observe::perf::PerfEvent::CpuMigrations)
                    })
                    .map(|(_, v)| *v);
                ExecutorStatus {
                    cpu,
                    busy: (busy_ns.saturating_sub(before) as f64 / 1e9 / seconds).min(1.0),
                    stalls: stalls.get(i).copied().unwrap_or(0),
                    migrations,
                    ring_backlog_slots: snapshot.map_or(0, |s| s.router.ring_backlog),
                    parks: snapshot.map_or(0, |s| s.router.parks),
                }
            })
            .collect()
    }
}
