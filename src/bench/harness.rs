//! A runtime built for a bench: the daemon's executors on chosen CPUs
//! under one CPU class's settings, running a few bench agents until they
//! say they are done.
//!
//! The benches that measure the runtime (`router`, `wakeup`) run it the
//! way `pinwheel run` does — a topology and a manifest, the plan, the
//! layout, the control runtime for the wake-up guard, the phases — from a
//! topology and manifest written here, so what they time is the data
//! plane and nothing else. With `privileged`, each executor thread asks
//! for its class's policy (SCHED_FIFO priority, timer slack) as the
//! daemon's do.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::BenchError;
use crate::config::{AgentSet, SourceFile};
use crate::plan::Plan;
use crate::runtime::RuntimeError;
use crate::runtime::agent::Agent;
use crate::runtime::control::ControlRuntime;
use crate::runtime::executor::{Control, MakeAgent, ThreadSetup, start};
use crate::runtime::layout::{Layout, layout};
use crate::runtime::privileges::{ThreadPolicy, prepare_thread};
use crate::runtime::stats::StatsSnapshot;
use crate::topology::{self, ClassSettings, CpuId, TaskQueue};
use pinwheel_ipc::ring::WaitStrategy;

/// One agent of a bench's manifest (ids follow the order given, from 0).
#[derive(Debug, Clone)]
pub struct BenchAgent {
    /// Its name.
    pub name: &'static str,
    /// Its CPU.
    pub cpu: CpuId,
    /// Whom it calls.
    pub calls: &'static [&'static str],
}

/// The runtime of a bench.
#[derive(Debug, Clone)]
pub struct Harness {
    /// Executor CPUs.
    pub cpus: Vec<CpuId>,
    /// Their class's settings.
    pub settings: ClassSettings,
    /// The agents (all `high` priority: the latency queue).
    pub agents: Vec<BenchAgent>,
    /// Apply the class's thread policy on each executor thread.
    pub privileged: bool,
    /// Longest the run may take before the bench gives up.
    pub limit: Duration,
}

impl Harness {
    /// Starts the executors, waits until `done` is set (by an agent) or
    /// the limit, stops them, and returns their statistics.
    pub fn run<A: Agent + 'static>(
        &self,
        make: MakeAgent<A>,
        done: &AtomicBool,
    ) -> Result<Vec<StatsSnapshot>, BenchError> {
        let runtime_err = |err: RuntimeError| peer(format!("runtime: {err}"));
        let (topology, agents) = self.files()?;
        let plan = Plan::build(&topology, &agents).map_err(|err| peer(format!("plan: {err}")))?;
        let Layout {
            routes,
            executors,
            phases,
        } = layout(&plan, &topology, &agents).map_err(runtime_err)?;
        let control = Control::new(executors.len(), phases.len());
        // The executors' wake-up guard runs on it; it outlives them.
        let control_rt = ControlRuntime::start(None, &Default::default())
            .map_err(|err| peer(format!("control thread: {err}")))?;
        let setup: ThreadSetup = if self.privileged {
            Arc::new(|settings| {
                prepare_thread(ThreadPolicy::for_class(settings));
            })
        } else {
            Arc::new(|_| {})
        };
        let runtime = start(routes, executors, make, setup, control, control_rt.handle())
            .map_err(runtime_err)?;
        for (phase, &expected) in phases.iter().enumerate() {
            runtime.open_phase(phase);
            runtime.wait_started(phase, expected, Duration::from_secs(10));
        }
        let began = Instant::now();
        // SYNC: Acquire pairs with the agent's Release store when it is done.
        while !done.load(Ordering::Acquire) && began.elapsed() < self.limit {
            std::thread::sleep(Duration::from_millis(20));
        }
        runtime.stop().map_err(runtime_err)
    }

    /// The topology and manifest of the bench.
    fn files(&self) -> Result<(topology::Topology, AgentSet), BenchError> {
        let s = &self.settings;
        let cpus: Vec<String> = self.cpus.iter().map(|c| c.to_string()).collect();
        let wait = match s.wait {
            WaitStrategy::Spin => "spin",
            WaitStrategy::Park => "park",
            WaitStrategy::Adaptive => "adaptive",
        };
        let queue = match s.task_queue {
            TaskQueue::Latency => "task_queue = \"latency\"".to_owned(),
            TaskQueue::Shares(shares) => format!("task_queue = \"shares\"\nshares = {shares}"),
        };
        let topology = format!(
            "schema = 1\n[host]\nname = \"bench\"\ncpus = {{ uniform = \"{}\" }}\n[class.uniform]\nwait = \"{wait}\"\nspin_before_park_us = {}\npreempt_timer_us = {}\n{queue}\nrt_priority = {}\n",
            cpus.join(","),
            s.spin_before_park_us,
            s.preempt_timer_us,
            s.rt_priority
        );
        let mut manifest = String::from("schema = 1\n");
        for agent in &self.agents {
            let calls: Vec<String> = agent.calls.iter().map(|c| format!("\"{c}\"")).collect();
            manifest.push_str(&format!(
                "[[agent]]\nname = \"{}\"\nhost = \"bench\"\nrole = \"bench\"\nkind = \"synthetic\"\npriority = \"high\"\ncpu = {}\ncalls = [{}]\n",
                agent.name,
                agent.cpu,
                calls.join(", ")
            ));
        }
        let invalid = |err: String| peer(format!("bench mesh: {err}"));
        let file = SourceFile::from_text(Path::new("bench-topology.toml"), &topology);
        let raw = file.parse().map_err(|e| invalid(e.to_string()))?;
        let topology = topology::validate(raw, &file, None).map_err(|e| invalid(e.to_string()))?;
        let agents = AgentSet::from_sources(&[SourceFile::from_text(
            Path::new("bench-agents.toml"),
            &manifest,
        )])
        .map_err(|e| invalid(e.to_string()))?;
        Ok((topology, agents))
    }
}

fn peer(reason: String) -> BenchError {
    BenchError::Peer { reason }
}
