//! The core loop's GPU side: the backend's samples in, the VRAM
//! optimizer's decisions out.
//!
//! At boot the backend is opened (NVML where the topology asks for it and
//! a driver answers; simulated GPUs otherwise, with the `no_nvml` health
//! reason) and handed to the poller task, which samples it through
//! `spawn_blocking`, off the control runtime's thread. Every model the manifests name is made known to the optimizer,
//! and the topology's `[vram]` pins are loaded first. Each tick drains the
//! poller's events into the optimizer, ticks it, and carries out its
//! decisions: on simulated GPUs a load or eviction changes the simulated
//! usage (so samples and metrics show it); on NVML GPUs the models belong
//! to the agents' processes and a load is taken as done once decided.
//! The admin API's pins and local placements arrive as commands.
//!
//! The agents' model uses arrive through the use desks ([`UseService`]):
//! each tick tells the optimizer what the executors did, then answers the
//! uses that asked. A model is granted to the executors while resident; an
//! eviction revokes the grant first, and on simulated GPUs the unload
//! waits until no use holds the model. Simulated loads complete at once,
//! so a use that misses waits a tick or two.
//!
//! `GET /v1/gpus` shows the last [`RECENT_DECISIONS`] decisions that
//! changed something (admissions of resident models left out), so an
//! operator sees why a model went or waits.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::registry::Registry;
use tokio::runtime::Handle;
use tracing::warn;

use crate::config::AgentSet;
use crate::error::DaemonError;
use crate::gpu::backend::{GpuBackend, GpuError, GpuEvent, GpuIndex, GpuInfo, GpuSample};
use crate::gpu::metrics::GpuMetrics;
use crate::gpu::vram::{Decision, ModelId, Priority, UseRequest, WaitReason};
use crate::gpu::{GpuPoller, SimBackend, VramOptimizer, open_backend};
use crate::observe::admin::Answer;
use crate::observe::api::{
    GpuStatus, GpusResponse, ModelAnswer, RECENT_DECISIONS, ResidentModel, VramCounts, VramDecision,
};
use crate::observe::health::Health;
use crate::runtime::board::Board;
use crate::topology::{GpuPlan, GpuSource, Topology};

use super::uses::UseService;

/// How often the poller samples the GPUs.
pub const POLL_PERIOD: Duration = Duration::from_millis(500);
/// Events that may wait for the core loop.
const EVENT_QUEUE: usize = 64;

/// The core loop's hold on a simulated backend the poller also samples.
type SimHandle = Arc<Mutex<SimBackend>>;

/// A simulated backend the poller samples and the core loop loads into.
#[derive(Debug)]
struct SharedSim {
    gpus: Vec<GpuInfo>,
    sim: Arc<Mutex<SimBackend>>,
    degraded: Option<String>,
}

impl GpuBackend for SharedSim {
    fn gpus(&self) -> &[GpuInfo] {
        &self.gpus
    }

    fn sample(&mut self, gpu: GpuIndex) -> Result<GpuSample, GpuError> {
        lock(&self.sim).sample(gpu)
    }

    fn degraded(&self) -> Option<&str> {
        self.degraded.as_deref()
    }
}

fn lock(sim: &Mutex<SimBackend>) -> std::sync::MutexGuard<'_, SimBackend> {
    // The simulation's state stays consistent across a panicking caller
    // (each method is one update), so a poisoned lock is still usable.
    sim.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The GPU side of the core loop.
#[derive(Debug)]
pub struct GpuSide {
    infos: Vec<GpuInfo>,
    optimizer: VramOptimizer,
    events: tokio::sync::mpsc::Receiver<GpuEvent>,
    /// Samples while it lives; dropped with the core loop, it stops.
    _poller: GpuPoller,
    sim: Option<SimHandle>,
    metrics: GpuMetrics,
    samples: Vec<Option<GpuSample>>,
    /// Simulated processes holding loaded models.
    processes: Vec<(ModelId, GpuIndex, u32)>,
    decisions: Vec<Decision>,
    uses: UseService,
    /// Evicted models whose unload waits for the uses holding them.
    unloading: Vec<(ModelId, GpuIndex, u32)>,
    /// The last decisions that changed something, for `/v1/gpus`.
    recent: VecDeque<VramDecision>,
    began: Instant,
}

impl GpuSide {
    /// Opens the backend, starts the poller on the control runtime `on`,
    /// registers the metrics.
    pub fn open(
        topology: &Topology,
        agents: &AgentSet,
        board: Arc<Board>,
        registry: &mut Registry,
        health: &Health,
        on: &Handle,
    ) -> Result<GpuSide, DaemonError> {
        let gpu_error = |err: GpuError| DaemonError::Gpu {
            reason: err.to_string(),
        };
        let (backend, sim) = open(topology.gpus(), health).map_err(gpu_error)?;
        let infos = backend.gpus().to_vec();
        let mut optimizer = VramOptimizer::new(topology.vram().clone(), &infos).map_err(|err| {
            DaemonError::Gpu {
                reason: err.to_string(),
            }
        })?;
        for (_, agent) in agents.iter() {
            for model in agent.models() {
                optimizer.model(&model.name, model.vram_mib);
            }
        }
        let uses = UseService::new(board, &mut optimizer);
        if !infos.is_empty() {
            uses.start();
        }
        let (poller, events) = GpuPoller::spawn(on, backend, POLL_PERIOD, EVENT_QUEUE);
        Ok(GpuSide {
            uses,
            unloading: Vec::new(),
            samples: vec![None; infos.len()],
            metrics: GpuMetrics::register(registry, topology.host()),
            infos,
            optimizer,
            events,
            _poller: poller,
            sim,
            processes: Vec::new(),
            decisions: Vec::new(),
            recent: VecDeque::with_capacity(RECENT_DECISIONS),
            began: Instant::now(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.began.elapsed().as_millis() as u64
    }

    /// One core-loop tick.
    pub fn tick(&mut self) {
        let now = self.now_ms();
        while let Ok(event) = self.events.try_recv() {
            match &event {
                GpuEvent::Sample(sample) => {
                    if let Some(info) = self.infos.get(sample.gpu.0 as usize) {
                        self.metrics.observe(info, sample);
                    }
                    if let Some(slot) = self.samples.get_mut(sample.gpu.0 as usize) {
                        *slot = Some(sample.clone());
                    }
                    self.optimizer.sample(now, sample);
                }
                GpuEvent::Lost { gpu } => self.optimizer.gpu_lost(now, *gpu),
            }
        }
        self.uses.serve(now, &mut self.optimizer);
        let mut decisions = std::mem::take(&mut self.decisions);
        decisions.clear();
        self.optimizer.tick(now, &mut decisions);
        for decision in &decisions {
            self.carry_out(now, decision);
            self.remember(now, decision);
        }
        self.uses.sync(&self.optimizer);
        self.uses.answer(now, &decisions);
        self.finish_unloads();
        self.metrics.observe_vram(self.optimizer.stats());
        self.decisions = decisions;
    }

    /// Unloads evicted models that no use holds any more.
    fn finish_unloads(&mut self) {
        let mut i = 0;
        while i < self.unloading.len() {
            let (model, gpu, pid) = self.unloading[i];
            if self.uses.holders(model) == 0 {
                self.unloading.swap_remove(i);
                if let Some(sim) = &self.sim {
                    let _ = lock(sim).unload(gpu, pid);
                }
            } else {
                i += 1;
            }
        }
    }

    fn carry_out(&mut self, now: u64, decision: &Decision) {
        match *decision {
            Decision::Load {
                model,
                gpu,
                vram_mib,
            }
            | Decision::Preload {
                model,
                gpu,
                vram_mib,
            } => {
                let pid = self.sim.as_ref().map(|sim| lock(sim).load(gpu, vram_mib));
                match pid {
                    Some(Ok(pid)) => {
                        self.processes.push((model, gpu, pid));
                        self.optimizer.loaded(now, model, Some(pid));
                    }
                    Some(Err(err)) => {
                        warn!(model = self.optimizer.model_name(model), error = %err, "load failed");
                        self.optimizer.load_failed(now, model);
                    }
                    None => self.optimizer.loaded(now, model, None),
                }
            }
            Decision::Evict { model, gpu, .. } => {
                self.uses.revoke(model);
                if let Some(at) = self.processes.iter().position(|p| p.0 == model) {
                    let (_, _, pid) = self.processes.swap_remove(at);
                    self.unloading.push((model, gpu, pid));
                }
            }
            Decision::Admit { .. } | Decision::Queue { .. } | Decision::Deny { .. } => {}
        }
    }

    /// Keeps `decision` in the bounded list `/v1/gpus` shows.
    fn remember(&mut self, now: u64, decision: &Decision) {
        let (kind, model, gpu, reason) = match *decision {
            Decision::Load { model, gpu, .. } => ("load", model, Some(gpu.0), None),
            Decision::Preload { model, gpu, .. } => ("preload", model, Some(gpu.0), None),
            Decision::Evict { model, gpu, reason } => {
                ("evict", model, Some(gpu.0), Some(reason.as_str()))
            }
            Decision::Queue { model, reason, .. } => {
                let why = match reason {
                    WaitReason::Loading => "loading",
                    WaitReason::NoRoom => "no_room",
                };
                ("queue", model, None, Some(why))
            }
            Decision::Deny { model, reason, .. } => ("deny", model, None, Some(reason.as_str())),
            Decision::Admit { .. } => return,
        };
        if self.recent.len() == RECENT_DECISIONS {
            self.recent.pop_front();
        }
        self.recent.push_back(VramDecision {
            at_ms: now,
            kind: kind.to_owned(),
            model: self.optimizer.model_name(model).to_owned(),
            gpu,
            reason: reason.map(str::to_owned),
        });
    }

    /// Pins `model` (known from the manifests or an earlier placement).
    pub fn pin(&mut self, model: &str) -> Answer {
        let id = self.known(model)?;
        self.optimizer.pin(self.now_ms(), id);
        self.tick();
        self.answer(id)
    }

    /// Unpins `model`.
    pub fn unpin(&mut self, model: &str) -> Answer {
        let id = self.known(model)?;
        self.optimizer.unpin(self.now_ms(), id);
        self.tick();
        self.answer(id)
    }

    /// Places `model` on this host: pinned, or one batch use of it.
    pub fn place(&mut self, model: &str, vram_mib: u64, pin: bool) -> Answer {
        let now = self.now_ms();
        let id = self.optimizer.model(model, vram_mib);
        if pin {
            self.optimizer.pin(now, id);
        } else {
            self.optimizer.submit(
                now,
                UseRequest {
                    model: id,
                    vram_mib,
                    priority: Priority::Batch,
                    hold_ms: 1,
                },
            );
        }
        self.tick();
        self.answer(id)
    }

    fn known(&self, model: &str) -> Result<ModelId, (u16, String)> {
        self.optimizer.id_of(model).ok_or_else(|| {
            (
                404,
                format!("no model {model:?}; place it first (POST /v1/gpu/place)"),
            )
        })
    }

    /// Where `model` stands after this tick's decisions.
    fn answer(&self, model: ModelId) -> Answer {
        if let Some(reason) = self.decisions.iter().find_map(|d| match d {
            Decision::Deny {
                model: m, reason, ..
            } if *m == model => Some(reason),
            _ => None,
        }) {
            return Err((409, format!("denied: {}", reason.as_str())));
        }
        let gpu = self.optimizer.resident(model);
        Ok(ModelAnswer {
            model: self.optimizer.model_name(model).to_owned(),
            host: None,
            gpu: gpu.map(|g| g.0),
            vram_mib: None,
            pinned: self.optimizer.is_pinned(model),
            state: if gpu.is_some() { "resident" } else { "waiting" }.to_owned(),
            placements: Vec::new(),
        })
    }

    /// Each GPU's size and its room for models the cluster places here:
    /// the last sample's free VRAM, and never more than the optimizer's
    /// budget leaves beside what it has planned (its loads show in samples
    /// only later).
    pub fn room(&self) -> Vec<crate::gpu::sched::GpuReport> {
        self.infos
            .iter()
            .map(|info| {
                let sampled = self.samples[info.index.0 as usize]
                    .as_ref()
                    .map_or(info.total_mib, |s| s.free_mib);
                let budget = self.optimizer.policy().budget_mib(info.total_mib);
                let unplanned = budget.saturating_sub(self.optimizer.used_mib(info.index));
                crate::gpu::sched::GpuReport {
                    gpu: crate::gpu::sched::GpuIndex(info.index.0),
                    total_mib: info.total_mib,
                    free_mib: sampled.min(unplanned),
                }
            })
            .collect()
    }

    /// `GET /v1/gpus`.
    pub fn view(&self) -> GpusResponse {
        let gpus = self
            .infos
            .iter()
            .map(|info| {
                let sample = self.samples[info.index.0 as usize].as_ref();
                let resident = self
                    .optimizer
                    .residents(info.index)
                    .into_iter()
                    .map(|(model, vram_mib)| ResidentModel {
                        model: self.optimizer.model_name(model).to_owned(),
                        vram_mib,
                        pinned: self.optimizer.is_pinned(model),
                    })
                    .collect();
                GpuStatus {
                    gpu: info.index.0,
                    name: info.name.clone(),
                    uuid: info.uuid.clone(),
                    simulated: self.sim.is_some(),
                    total_mib: info.total_mib,
                    used_mib: sample.map_or(0, |s| s.used_mib),
                    free_mib: sample.map_or(info.total_mib, |s| s.free_mib),
                    util_pct: sample.and_then(|s| s.util_pct),
                    planned_mib: self.optimizer.used_mib(info.index),
                    budget_mib: self.optimizer.policy().budget_mib(info.total_mib),
                    resident,
                }
            })
            .collect();
        let s = self.optimizer.stats();
        GpusResponse {
            gpus,
            vram: VramCounts {
                loads: s.loads,
                preloads: s.preloads,
                evictions: s.evictions_make_room + s.evictions_pressure + s.evictions_keep_alive,
                hits: s.hits,
                misses: s.misses,
                queued: s.queued,
                denied: s.denied,
                waits: self.uses.waits().len(),
                wait_p99_ns: self.uses.waits().value_at_quantile(0.99),
            },
            decisions: self.recent.iter().cloned().collect(),
        }
    }
}

/// The backend for `plan`, and the simulation handle when it is simulated.
fn open(
    plan: &GpuPlan,
    health: &Health,
) -> Result<(Box<dyn GpuBackend>, Option<SimHandle>), GpuError> {
    let declared_sim = matches!(plan, GpuPlan::Declared(specs)
        if specs.iter().all(|s| s.source == GpuSource::Simulated));
    let reason = if declared_sim {
        "the topology declares simulated GPUs; NVML is not used".to_owned()
    } else {
        let backend = open_backend(plan, None)?;
        match backend.degraded() {
            None => return Ok((backend, None)),
            Some(reason) => reason.to_owned(),
        }
    };
    health.raise("no_nvml", reason.clone());
    let sim = SimBackend::from_plan(plan)?;
    let shared = SharedSim {
        gpus: sim.gpus().to_vec(),
        sim: Arc::new(Mutex::new(sim)),
        degraded: Some(reason),
    };
    let handle = Arc::clone(&shared.sim);
    Ok((Box::new(shared), Some(handle)))
}
