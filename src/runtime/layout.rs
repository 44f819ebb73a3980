//! From a plan to executor plans: the rings, bells and launches of a run.
//!
//! Every executor gets a bell that its incoming rings ring, so it parks on
//! one eventfd. Every ordered pair of executors that the routes need gets a
//! memfd ring, waited on by the consuming executor's class strategy. Agents
//! start in the plan's phases; the load generator starts in the phase
//! after the last, once everything it drives is up.

use std::sync::Arc;

use super::RuntimeError;
use super::executor::{AgentLaunch, ExecutorPlan};
use super::node::NodeSizes;
use super::remote::{CallRings, Poke, RemoteKind, call_rings};
use super::routes::Routes;
use crate::config::AgentSet;
use crate::plan::Plan;
use crate::topology::{CpuClass, Topology};
use pinwheel_ipc::ring::{DataBell, RingConfig, shm_ring_into};
use pinwheel_ipc::wire::{AgentId, Priority};

/// Slots per ring between executors (64 KiB of frames).
pub const RING_SLOTS: u64 = 1024;
/// Largest frame on those rings, and the size of pool frames.
pub const MAX_FRAME: usize = 1024;
/// Frames in each executor's pool.
pub const POOL_FRAMES: usize = 4096;
/// Messages per inbox lane.
pub const INBOX_CAPACITY: usize = 256;
/// Calls in flight per executor.
pub const PENDING_CALLS: usize = 4096;

/// A run's executors, before they start.
#[derive(Debug)]
pub struct Layout {
    /// The routing table.
    pub routes: Arc<Routes>,
    /// One plan per executor.
    pub executors: Vec<ExecutorPlan>,
    /// Agents to start in each phase.
    pub phases: Vec<usize>,
}

/// Lays out a run of `plan`.
pub fn layout(plan: &Plan, topology: &Topology, agents: &AgentSet) -> Result<Layout, RuntimeError> {
    let routes = Arc::new(Routes::new(plan, agents));
    let bells = (0..routes.executors().len())
        .map(|_| DataBell::new())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| RuntimeError::Ring { source })?;
    let mut executors = executor_plans(&routes, topology, agents, &bells);
    for (from, to) in routes.ring_pairs(plan) {
        let settings = executors[to as usize].settings;
        let config = RingConfig {
            slots: RING_SLOTS,
            max_frame: MAX_FRAME,
            wait: settings.wait,
            spin_us: settings.spin_before_park_us,
        };
        let (producer, consumer) = shm_ring_into(config, &bells[to as usize])
            .map_err(|source| RuntimeError::Ring { source })?;
        executors[from as usize].outgoing[to as usize] = Some(producer);
        executors[to as usize].incoming.push(consumer);
    }
    let phases = launches(plan, agents, &routes, &mut executors);
    Ok(Layout {
        routes,
        executors,
        phases,
    })
}

impl Layout {
    /// Adds the call rings between each executor and the plane of `kind`
    /// (`remote.rs`): each executor gets its uplink, which pokes `wake`,
    /// and one more incoming ring, on its own bell. Returns the plane's
    /// ends.
    pub fn add_call_rings<W: Poke + 'static>(
        &mut self,
        kind: RemoteKind,
        wake: std::sync::Arc<W>,
    ) -> Result<CallRings<W>, RuntimeError> {
        let bells: Vec<DataBell> = self.executors.iter().map(|e| e.bell.clone()).collect();
        let (ends, rings) = call_rings(&bells, wake)?;
        for (plan, (uplink, downlink)) in self.executors.iter_mut().zip(ends) {
            plan.uplinks[kind as usize] = Some(uplink);
            plan.incoming.push(downlink);
        }
        Ok(rings)
    }
}

/// One plan per executor, without rings or agents yet.
fn executor_plans(
    routes: &Routes,
    topology: &Topology,
    agents: &AgentSet,
    bells: &[DataBell],
) -> Vec<ExecutorPlan> {
    let mut workers = vec![1; routes.agent_count()];
    for (index, agent) in agents.iter() {
        workers[index.0] = agent.behaviour().concurrency as usize;
    }
    let sizes = NodeSizes {
        pool_frames: POOL_FRAMES,
        frame_bytes: MAX_FRAME,
        inbox_capacity: INBOX_CAPACITY,
        pending_calls: PENDING_CALLS,
        workers,
    };
    let count = routes.executors().len();
    routes
        .executors()
        .iter()
        .enumerate()
        .map(|(index, &cpu)| ExecutorPlan {
            index: index as u16,
            cpu,
            settings: topology.settings(topology.class_of(cpu).unwrap_or(CpuClass::Uniform)),
            bell: bells[index].clone(),
            incoming: Vec::new(),
            outgoing: (0..count).map(|_| None).collect(),
            uplinks: [None, None],
            agents: Vec::new(),
            sizes: sizes.clone(),
        })
        .collect()
}

/// Adds every agent's launch to its executor, in start order, and the
/// load generator after the last phase; returns agents per phase.
fn launches(
    plan: &Plan,
    agents: &AgentSet,
    routes: &Routes,
    executors: &mut [ExecutorPlan],
) -> Vec<usize> {
    let last_phase = plan.placements().iter().map(|p| p.phase).max().unwrap_or(0);
    let mut phases = vec![0; last_phase + 2];
    for &index in plan.start_order() {
        let phase = plan
            .placement(index)
            .expect("ordered agents are placed")
            .phase;
        let spec = agents.get(index);
        let id = AgentId(index.0 as u32);
        // A zmq agent's process runs on no executor (the gateway reaches it).
        let Some(executor) = executors.get_mut(usize::from(routes.executor_of(id))) else {
            continue;
        };
        let latency = matches!(
            wire_priority(spec.priority()),
            Priority::Critical | Priority::High
        );
        let launch = AgentLaunch {
            id,
            phase,
            workers: spec.behaviour().concurrency as usize,
            latency,
        };
        executor.agents.push(launch);
        phases[phase] += 1;
    }
    let generator = routes.load_generator();
    if let Some(plan) = executors.get_mut(routes.executor_of(generator) as usize) {
        plan.agents.push(AgentLaunch {
            id: generator,
            phase: last_phase + 1,
            workers: 1,
            latency: true,
        });
        phases[last_phase + 1] += 1;
    }
    phases
}

/// The wire priority of a manifest priority.
pub fn wire_priority(priority: crate::config::Priority) -> Priority {
    match priority {
        crate::config::Priority::Critical => Priority::Critical,
        crate::config::Priority::High => Priority::High,
        crate::config::Priority::Normal => Priority::Normal,
        crate::config::Priority::Low => Priority::Low,
    }
}
