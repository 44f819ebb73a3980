//! [`VramOptimizer`]: the inputs, and the order of work in a tick.
//!
//! A tick runs five steps, each over state the earlier ones left: idle
//! models past their keep-alive are unloaded; GPUs over their high-water
//! mark shed idle models; pinned models that are absent are loaded;
//! waiting uses are admitted, given a load, or left waiting, in class
//! order; and, when no use waits for room, predicted models are preloaded
//! into idle VRAM. Denials go out last. Decisions are appended to the
//! caller's vector, which it reuses, and the optimizer's scratch space is
//! reused too, so a tick allocates only when a table grows.

use std::collections::HashMap;

use super::evict::{self, Candidate, REUSE_HORIZON_MS};
use super::model::{Gpu, Model, Residency};
use super::predict::{Prediction, Predictor};
use super::{Decision, DenyReason, EvictReason, ModelId, RequestId, UseRequest, VramError};
use crate::gpu::backend::{GpuEvent, GpuIndex, GpuInfo, GpuSample};
use crate::topology::VramPolicy;

/// Extra time before a predicted use at which its preload starts, ms.
pub(super) const PRELOAD_MARGIN_MS: u64 = 5_000;
/// Failed loads in a row after which a model's uses are denied.
pub(super) const MAX_FAILURES: u32 = 3;

/// What the optimizer has decided so far, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VramStats {
    /// Loads started, preloads included.
    pub loads: u64,
    /// Loads started on a prediction.
    pub preloads: u64,
    /// Evictions to make room for a load.
    pub evictions_make_room: u64,
    /// Evictions under pressure.
    pub evictions_pressure: u64,
    /// Evictions at keep-alive expiry.
    pub evictions_keep_alive: u64,
    /// Uses admitted at once (model resident).
    pub hits: u64,
    /// Uses admitted after waiting for a load.
    pub misses: u64,
    /// Uses that waited.
    pub queued: u64,
    /// Uses and pins refused.
    pub denied: u64,
}

/// A use not yet admitted.
#[derive(Debug, Clone, Copy)]
pub(super) struct Waiting {
    pub request: RequestId,
    pub model: ModelId,
    pub priority: super::Priority,
    /// Whether a Queue decision went out for it.
    pub queued: bool,
}

/// Reused buffers.
#[derive(Debug, Default)]
pub(super) struct Scratch {
    pub candidates: Vec<Candidate>,
    pub chosen: Vec<ModelId>,
    pub best: Vec<ModelId>,
    pub predictions: Vec<Prediction>,
    /// Per model, this tick: the highest chance a prediction gives it
    /// within the reuse horizon (0 if none), and whether any prediction
    /// names it at all.
    pub chance: Vec<(f64, bool)>,
    /// Per model, this tick: a placement already found no room for it
    /// (later uses of it rank no higher, and room only shrinks).
    pub no_room: Vec<bool>,
}

/// The VRAM optimizer of one host. See the module docs for the policy.
#[derive(Debug)]
pub struct VramOptimizer {
    pub(super) policy: VramPolicy,
    pub(super) gpus: Vec<Gpu>,
    pub(super) models: Vec<Model>,
    names: HashMap<Box<str>, ModelId>,
    pub(super) waiting: Vec<Waiting>,
    active: HashMap<RequestId, ModelId>,
    pub(super) pins: Vec<ModelId>,
    pending: Vec<Decision>,
    pub(super) predictor: Predictor,
    next_request: u64,
    pub(super) stats: VramStats,
    pub(super) scratch: Scratch,
}

impl VramOptimizer {
    /// An optimizer for `gpus` under `policy`, with the policy's pins.
    /// Pins are checked against the GPUs' real sizes (the topology may
    /// not know them).
    pub fn new(policy: VramPolicy, gpus: &[GpuInfo]) -> Result<Self, VramError> {
        let books = gpus
            .iter()
            .map(|g| Gpu::new(g.index, g.total_mib, &policy))
            .collect();
        let pins = policy.pins.clone();
        let mut sut = Self {
            policy,
            gpus: books,
            models: Vec::new(),
            names: HashMap::new(),
            waiting: Vec::new(),
            active: HashMap::new(),
            pins: Vec::new(),
            pending: Vec::new(),
            predictor: Predictor::default(),
            next_request: 0,
            stats: VramStats::default(),
            scratch: Scratch::default(),
        };
        for pin in pins {
            let gpu = sut
                .gpus
                .get_mut(pin.gpu as usize)
                .ok_or(VramError::PinNoGpu {
                    model: pin.model.clone(),
                    gpu: pin.gpu,
                    count: gpus.len(),
                })?;
            gpu.pinned_mib += pin.vram_mib;
            if gpu.pinned_mib > gpu.budget_mib {
                return Err(VramError::PinOverCommit {
                    gpu: gpu.index,
                    pinned_mib: gpu.pinned_mib,
                    budget_mib: gpu.budget_mib,
                });
            }
            let id = sut.model(&pin.model, pin.vram_mib);
            let model = &mut sut.models[id.0 as usize];
            model.pinned = true;
            model.pin_gpu = Some(GpuIndex(pin.gpu));
            sut.pins.push(id);
        }
        Ok(sut)
    }

    /// The id of the model called `name`, known from now on. `vram_mib`
    /// is its size until a load of it is measured.
    pub fn model(&mut self, name: &str, vram_mib: u64) -> ModelId {
        if let Some(&id) = self.names.get(name) {
            self.estimate(id, vram_mib);
            return id;
        }
        let id = ModelId(self.models.len() as u32);
        self.models.push(Model::new(name, vram_mib, &self.policy));
        self.names.insert(name.into(), id);
        id
    }

    /// Takes a requester's size estimate while no load was measured.
    fn estimate(&mut self, id: ModelId, vram_mib: u64) {
        let model = &mut self.models[id.0 as usize];
        if !model.measured && model.residency == Residency::Absent {
            model.size_mib = vram_mib;
        }
    }

    /// The name of a model.
    pub fn model_name(&self, model: ModelId) -> &str {
        &self.models[model.0 as usize].name
    }

    /// Where a model is resident, if it is (a load in flight is not).
    pub fn resident(&self, model: ModelId) -> Option<GpuIndex> {
        match self.models[model.0 as usize].residency {
            Residency::Resident { gpu, .. } => Some(gpu),
            Residency::Absent | Residency::Loading { .. } => None,
        }
    }

    /// VRAM in use on a GPU as the optimizer reckons it, MiB.
    pub fn used_mib(&self, gpu: GpuIndex) -> u64 {
        self.gpus[gpu.0 as usize].used_mib()
    }

    /// The decisions made so far, counted.
    pub fn stats(&self) -> VramStats {
        self.stats
    }

    /// The policy in force.
    pub fn policy(&self) -> &VramPolicy {
        &self.policy
    }

    /// A use arrives. It is answered on the next tick (Admit, Queue or
    /// Deny).
    pub fn submit(&mut self, now_ms: u64, request: UseRequest) -> RequestId {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        self.estimate(request.model, request.vram_mib);
        self.models[request.model.0 as usize].arrive(now_ms, request.priority);
        self.predictor.observe(request.model, now_ms);
        if self.waiting.len() >= self.policy.queue_len {
            self.deny(
                Some(id),
                request.model,
                DenyReason::QueueFull {
                    queue_len: self.policy.queue_len,
                },
            );
            return id;
        }
        self.models[request.model.0 as usize].wanted += 1;
        let at = self
            .waiting
            .partition_point(|w| w.priority >= request.priority);
        self.waiting.insert(
            at,
            Waiting {
                request: id,
                model: request.model,
                priority: request.priority,
                queued: false,
            },
        );
        id
    }

    /// Uses that ran on `model` without asking, because the executor
    /// found it granted (resident): `started` of them began since the
    /// last call, and `holding` hold it now. Each is a hit (and an
    /// arrival for the history); a held model is busy, never evicted.
    /// Uses of a model no longer resident (it was evicted as they began:
    /// the executor's unload waits for them) are not hits.
    pub fn note_held(
        &mut self,
        now_ms: u64,
        model: ModelId,
        priority: super::Priority,
        started: u64,
        holding: u32,
    ) {
        let Some(m) = self.models.get_mut(model.0 as usize) else {
            return;
        };
        let resident = matches!(m.residency, Residency::Resident { .. });
        m.held = if resident { holding } else { 0 };
        if holding > 0 || started > 0 {
            m.last_used_ms = now_ms;
        }
        if started == 0 || !resident {
            return;
        }
        m.arrive(now_ms, priority);
        if m.preload_unused {
            m.preload_unused = false;
            m.preloads_used += 1;
        }
        self.stats.hits += started;
        self.predictor.observe(model, now_ms);
    }

    /// Takes back a use submitted earlier: dropped from the queue if it
    /// still waits, released if it was admitted.
    pub fn withdraw(&mut self, now_ms: u64, request: RequestId) {
        if let Some(at) = self.waiting.iter().position(|w| w.request == request) {
            let w = self.waiting.remove(at);
            let m = &mut self.models[w.model.0 as usize];
            m.wanted = m.wanted.saturating_sub(1);
            return;
        }
        self.release(now_ms, request);
    }

    /// An admitted use is done with its model.
    pub fn release(&mut self, now_ms: u64, request: RequestId) {
        if let Some(model) = self.active.remove(&request) {
            let model = &mut self.models[model.0 as usize];
            model.busy = model.busy.saturating_sub(1);
            model.last_used_ms = now_ms;
        }
    }

    /// A Load or Preload finished; `pid` is the process holding the
    /// model, if known (its VRAM in samples then corrects the size).
    pub fn loaded(&mut self, now_ms: u64, model: ModelId, pid: Option<u32>) {
        let m = &mut self.models[model.0 as usize];
        if let Residency::Loading {
            gpu,
            since_ms,
            preload,
        } = m.residency
        {
            let took = now_ms.saturating_sub(since_ms);
            m.reload_ms = (m.reload_ms + took) / 2;
            m.residency = Residency::Resident {
                gpu,
                since_ms: now_ms,
            };
            m.pid = pid;
            m.failures = 0;
            m.preload_unused = preload;
        }
    }

    /// A Load or Preload failed; the model is absent again and its uses
    /// are placed anew (denied after three failures in a row).
    pub fn load_failed(&mut self, _now_ms: u64, model: ModelId) {
        let m = &mut self.models[model.0 as usize];
        if let Residency::Loading { gpu, .. } = m.residency {
            m.residency = Residency::Absent;
            m.failures += 1;
            self.gpus[gpu.0 as usize].release(m.size_mib);
        }
    }

    /// Pins a model the optimizer knows (its size from [`Self::model`]):
    /// it is loaded when it fits and never evicted. Denied when its size
    /// next to the pins already on the roomiest GPU would over-commit it.
    pub fn pin(&mut self, _now_ms: u64, model: ModelId) {
        let m = &self.models[model.0 as usize];
        if m.pinned {
            return;
        }
        let size = m.size_mib;
        let home = m.residency.gpu();
        let gpu = self
            .gpus
            .iter()
            .filter(|g| !g.lost && home.is_none_or(|h| h == g.index))
            .max_by_key(|g| {
                (
                    g.budget_mib.saturating_sub(g.pinned_mib),
                    std::cmp::Reverse(g.index),
                )
            });
        match gpu {
            Some(g) if g.pinned_mib + size <= g.budget_mib => {
                let index = g.index;
                self.gpus[index.0 as usize].pinned_mib += size;
                let m = &mut self.models[model.0 as usize];
                m.pinned = true;
                m.pin_gpu = Some(index);
                self.pins.push(model);
            }
            other => {
                let pinned_mib = other.map_or(0, |g| g.pinned_mib);
                self.deny(
                    None,
                    model,
                    DenyReason::PinOverCommit {
                        pinned_mib,
                        vram_mib: size,
                    },
                );
            }
        }
    }

    /// A fresh reading of one GPU.
    pub fn sample(&mut self, _now_ms: u64, sample: &GpuSample) {
        let Some(gpu) = self.gpus.get_mut(sample.gpu.0 as usize) else {
            return;
        };
        if gpu.lost {
            return;
        }
        if gpu.total_mib != sample.total_mib {
            gpu.resize(sample.total_mib, &self.policy);
        }
        let in_flight: u64 = self
            .models
            .iter()
            .filter(|m| matches!(m.residency, Residency::Loading { gpu: g, .. } if g == sample.gpu))
            .map(|m| m.size_mib)
            .sum();
        self.gpus[sample.gpu.0 as usize].sample(sample.free_mib, in_flight);
        if let Some(processes) = &sample.processes {
            self.measure(sample.gpu, processes);
        }
    }

    /// Corrects predicted sizes from per-process VRAM; a process holding
    /// several models is not split between them.
    fn measure(&mut self, gpu: GpuIndex, processes: &[crate::gpu::ProcessUse]) {
        for p in processes {
            let Some(used) = p.used_mib else { continue };
            let mut holders = self.models.iter().enumerate().filter(|(_, m)| {
                m.pid == Some(p.pid)
                    && matches!(m.residency, Residency::Resident { gpu: g, .. } if g == gpu)
            });
            let (Some((slot, _)), None) = (holders.next(), holders.next()) else {
                continue;
            };
            let model = &mut self.models[slot];
            let books = &mut self.gpus[gpu.0 as usize];
            books.predicted_mib = books.predicted_mib - model.size_mib + used;
            model.size_mib = used;
            model.measured = true;
        }
    }

    /// Feeds one event of the GPU poller: the core loop's entry point for
    /// readings (`GpuPoller`'s receiver, drained with `try_recv` each
    /// tick).
    pub fn observe(&mut self, now_ms: u64, event: &GpuEvent) {
        match event {
            GpuEvent::Sample(sample) => self.sample(now_ms, sample),
            GpuEvent::Lost { gpu } => self.gpu_lost(now_ms, *gpu),
        }
    }

    /// A GPU is gone: its models with it. Their uses in progress are
    /// forgotten (their releases are ignored); waiting uses are placed
    /// elsewhere.
    pub fn gpu_lost(&mut self, _now_ms: u64, gpu: GpuIndex) {
        let Some(books) = self.gpus.get_mut(gpu.0 as usize) else {
            return;
        };
        books.lost = true;
        books.predicted_mib = 0;
        books.pressure = false;
        for m in &mut self.models {
            if m.residency.gpu() == Some(gpu) {
                m.residency = Residency::Absent;
                m.busy = 0;
                m.pid = None;
                // Reloading elsewhere is recovery, not thrashing.
                m.last_load_ms = None;
            }
        }
        let models = &self.models;
        self.active.retain(|_, m| models[m.0 as usize].busy > 0);
    }

    /// Decides, at `now_ms`; appends the decisions to `out`.
    pub fn tick(&mut self, now_ms: u64, out: &mut Vec<Decision>) {
        let horizon = self
            .policy
            .keep_alive_ms
            .unwrap_or(0)
            .max(REUSE_HORIZON_MS as u64);
        let mut predictions = std::mem::take(&mut self.scratch.predictions);
        self.predictor.predict(now_ms, horizon, &mut predictions);
        let scratch = &mut self.scratch;
        scratch.chance.clear();
        scratch.chance.resize(self.models.len(), (0.0, false));
        scratch.no_room.clear();
        scratch.no_room.resize(self.models.len(), false);
        for p in &predictions {
            let slot = &mut scratch.chance[p.model.0 as usize];
            slot.1 = true;
            if p.at_ms <= now_ms + REUSE_HORIZON_MS as u64 {
                slot.0 = slot.0.max(p.chance);
            }
        }
        scratch.predictions = predictions;
        self.expire(now_ms, out);
        self.relieve(now_ms, out);
        self.ensure_pins(now_ms, out);
        let starved = self.serve(now_ms, out);
        if self.policy.preload && !starved {
            self.preload(now_ms, out);
        }
        out.append(&mut self.pending);
    }

    /// Queues a denial; the tick under way, or the next, sends it.
    pub(super) fn deny(&mut self, request: Option<RequestId>, model: ModelId, reason: DenyReason) {
        self.stats.denied += 1;
        if request.is_some() && !matches!(reason, DenyReason::QueueFull { .. }) {
            let m = &mut self.models[model.0 as usize];
            m.wanted = m.wanted.saturating_sub(1);
        }
        self.pending.push(Decision::Deny {
            request,
            model,
            reason,
        });
    }

    /// Admits a waiting use to its resident model.
    pub(super) fn admit(&mut self, w: Waiting, gpu: GpuIndex, out: &mut Vec<Decision>) {
        let m = &mut self.models[w.model.0 as usize];
        m.busy += 1;
        m.wanted = m.wanted.saturating_sub(1);
        if m.preload_unused {
            m.preload_unused = false;
            m.preloads_used += 1;
        }
        self.active.insert(w.request, w.model);
        if w.queued {
            self.stats.misses += 1;
        } else {
            self.stats.hits += 1;
        }
        out.push(Decision::Admit {
            request: w.request,
            model: w.model,
            gpu,
        });
    }

    /// Starts a load of `model` on `gpu`.
    pub(super) fn start_load(
        &mut self,
        model: ModelId,
        gpu: GpuIndex,
        now_ms: u64,
        preload: bool,
        out: &mut Vec<Decision>,
    ) {
        let m = &mut self.models[model.0 as usize];
        m.residency = Residency::Loading {
            gpu,
            since_ms: now_ms,
            preload,
        };
        m.last_load_ms = Some(now_ms);
        let vram_mib = m.size_mib;
        self.gpus[gpu.0 as usize].claim(vram_mib);
        self.stats.loads += 1;
        if preload {
            self.stats.preloads += 1;
            out.push(Decision::Preload {
                model,
                gpu,
                vram_mib,
            });
        } else {
            out.push(Decision::Load {
                model,
                gpu,
                vram_mib,
            });
        }
    }

    /// Evicts a resident model.
    pub(super) fn evict(&mut self, model: ModelId, reason: EvictReason, out: &mut Vec<Decision>) {
        let m = &mut self.models[model.0 as usize];
        let Some(gpu) = m.residency.gpu() else {
            return;
        };
        m.residency = Residency::Absent;
        m.pid = None;
        if m.preload_unused {
            m.preload_unused = false;
            m.preloads_wasted += 1;
        }
        self.gpus[gpu.0 as usize].release(m.size_mib);
        match reason {
            EvictReason::MakeRoom => self.stats.evictions_make_room += 1,
            EvictReason::Pressure => self.stats.evictions_pressure += 1,
            EvictReason::KeepAlive => self.stats.evictions_keep_alive += 1,
        }
        out.push(Decision::Evict { model, gpu, reason });
    }

    /// The chance a current prediction gives `model` within the reuse
    /// horizon (computed once per tick).
    pub(super) fn predicted_chance(&self, model: ModelId) -> f64 {
        self.scratch
            .chance
            .get(model.0 as usize)
            .map_or(0.0, |c| c.0)
    }

    /// Whether any current prediction names `model`.
    pub(super) fn predicted(&self, model: ModelId) -> bool {
        self.scratch
            .chance
            .get(model.0 as usize)
            .is_some_and(|c| c.1)
    }

    /// The cost of evicting `model` now.
    pub(super) fn evict_cost(&self, model: ModelId, now_ms: u64) -> f64 {
        evict::evict_cost(
            &self.models[model.0 as usize],
            now_ms,
            self.predicted_chance(model),
        )
    }
}
