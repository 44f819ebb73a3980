//! What the baselines share: the same inputs as the optimizer, simple
//! books, a FIFO of waiting uses, and none of the optimizer's policy.
//!
//! The baselines see the GPUs the way the optimizer does (free VRAM is the
//! smaller of the lagging sample and their own books), so the comparison
//! is between policies, not between views of memory.

use std::collections::HashMap;

use super::super::model::{Gpu, Residency};
use super::super::{Decision, DenyReason, ModelId, RequestId, UseRequest, WaitReason};
use crate::gpu::backend::{GpuIndex, GpuInfo, GpuSample};
use crate::topology::VramPolicy;

/// A model in a baseline's books.
#[derive(Debug, Clone)]
pub(super) struct BaseModel {
    pub size_mib: u64,
    pub residency: Residency,
    pub busy: u32,
    /// When it last went idle (or a use arrived), ms.
    pub last_used_ms: u64,
}

/// A waiting use.
#[derive(Debug, Clone, Copy)]
pub(super) struct BaseWaiting {
    pub request: RequestId,
    pub model: ModelId,
    pub queued: bool,
}

/// The books of a baseline.
#[derive(Debug)]
pub(super) struct Base {
    pub policy: VramPolicy,
    pub gpus: Vec<Gpu>,
    pub models: Vec<BaseModel>,
    names: HashMap<String, ModelId>,
    pub waiting: Vec<BaseWaiting>,
    active: HashMap<RequestId, ModelId>,
    next_request: u64,
    pub pending: Vec<Decision>,
}

impl Base {
    pub(super) fn new(policy: VramPolicy, gpus: &[GpuInfo]) -> Self {
        Self {
            gpus: gpus
                .iter()
                .map(|g| Gpu::new(g.index, g.total_mib, &policy))
                .collect(),
            policy,
            models: Vec::new(),
            names: HashMap::new(),
            waiting: Vec::new(),
            active: HashMap::new(),
            next_request: 0,
            pending: Vec::new(),
        }
    }

    pub(super) fn model(&mut self, name: &str, vram_mib: u64) -> ModelId {
        if let Some(&id) = self.names.get(name) {
            let m = &mut self.models[id.0 as usize];
            if m.residency == Residency::Absent {
                m.size_mib = vram_mib;
            }
            return id;
        }
        let id = ModelId(self.models.len() as u32);
        self.models.push(BaseModel {
            size_mib: vram_mib,
            residency: Residency::Absent,
            busy: 0,
            last_used_ms: 0,
        });
        self.names.insert(name.to_owned(), id);
        id
    }

    pub(super) fn submit(&mut self, now_ms: u64, request: UseRequest) -> RequestId {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        self.model_mut(request.model).last_used_ms = now_ms;
        if self.waiting.len() >= self.policy.queue_len {
            self.pending.push(Decision::Deny {
                request: Some(id),
                model: request.model,
                reason: DenyReason::QueueFull {
                    queue_len: self.policy.queue_len,
                },
            });
        } else {
            self.waiting.push(BaseWaiting {
                request: id,
                model: request.model,
                queued: false,
            });
        }
        id
    }

    pub(super) fn release(&mut self, now_ms: u64, request: RequestId) {
        if let Some(model) = self.active.remove(&request) {
            let m = self.model_mut(model);
            m.busy = m.busy.saturating_sub(1);
            m.last_used_ms = now_ms;
        }
    }

    pub(super) fn loaded(&mut self, now_ms: u64, model: ModelId) {
        let m = self.model_mut(model);
        if let Residency::Loading { gpu, .. } = m.residency {
            m.residency = Residency::Resident {
                gpu,
                since_ms: now_ms,
            };
        }
    }

    pub(super) fn load_failed(&mut self, model: ModelId) {
        let m = &mut self.models[model.0 as usize];
        if let Residency::Loading { gpu, .. } = m.residency {
            m.residency = Residency::Absent;
            self.gpus[gpu.0 as usize].release(m.size_mib);
        }
    }

    pub(super) fn sample(&mut self, sample: &GpuSample) {
        let in_flight: u64 = self
            .models
            .iter()
            .filter(|m| matches!(m.residency, Residency::Loading { gpu, .. } if gpu == sample.gpu))
            .map(|m| m.size_mib)
            .sum();
        if let Some(g) = self.gpus.get_mut(sample.gpu.0 as usize)
            && !g.lost
        {
            g.sample(sample.free_mib, in_flight);
        }
    }

    pub(super) fn gpu_lost(&mut self, gpu: GpuIndex) {
        if let Some(g) = self.gpus.get_mut(gpu.0 as usize) {
            g.lost = true;
            g.predicted_mib = 0;
        }
        for m in &mut self.models {
            if m.residency.gpu() == Some(gpu) {
                m.residency = Residency::Absent;
                m.busy = 0;
            }
        }
        let models = &self.models;
        self.active.retain(|_, m| models[m.0 as usize].busy > 0);
    }

    pub(super) fn model_mut(&mut self, model: ModelId) -> &mut BaseModel {
        &mut self.models[model.0 as usize]
    }

    /// Admits waiting use `i` to its resident model and drops it from the
    /// queue.
    pub(super) fn admit(&mut self, i: usize, gpu: GpuIndex, out: &mut Vec<Decision>) {
        let w = self.waiting.remove(i);
        self.model_mut(w.model).busy += 1;
        self.active.insert(w.request, w.model);
        out.push(Decision::Admit {
            request: w.request,
            model: w.model,
            gpu,
        });
    }

    /// Sends the one Queue decision of waiting use `i`.
    pub(super) fn announce(&mut self, i: usize, reason: WaitReason, out: &mut Vec<Decision>) {
        let w = &mut self.waiting[i];
        if !w.queued {
            w.queued = true;
            out.push(Decision::Queue {
                request: w.request,
                model: w.model,
                reason,
            });
        }
    }

    /// Denies waiting use `i` if no live GPU's budget could hold its
    /// model; returns whether it did.
    pub(super) fn refuse_if_too_large(&mut self, i: usize, out: &mut Vec<Decision>) -> bool {
        let w = self.waiting[i];
        let size = self.models[w.model.0 as usize].size_mib;
        let live = self.gpus.iter().filter(|g| !g.lost);
        let largest = live.map(|g| g.budget_mib).max();
        let reason = match largest {
            None => DenyReason::NoGpu,
            Some(largest_mib) if size > largest_mib => DenyReason::TooLarge {
                vram_mib: size,
                largest_mib,
            },
            Some(_) => return false,
        };
        self.waiting.remove(i);
        out.push(Decision::Deny {
            request: Some(w.request),
            model: w.model,
            reason,
        });
        true
    }

    /// Starts a load.
    pub(super) fn start_load(
        &mut self,
        model: ModelId,
        gpu: GpuIndex,
        now_ms: u64,
        out: &mut Vec<Decision>,
    ) {
        let m = &mut self.models[model.0 as usize];
        m.residency = Residency::Loading {
            gpu,
            since_ms: now_ms,
            preload: false,
        };
        self.gpus[gpu.0 as usize].claim(m.size_mib);
        out.push(Decision::Load {
            model,
            gpu,
            vram_mib: m.size_mib,
        });
    }

    /// Evicts a resident model.
    pub(super) fn evict(
        &mut self,
        model: ModelId,
        reason: super::super::EvictReason,
        out: &mut Vec<Decision>,
    ) {
        let m = &mut self.models[model.0 as usize];
        if let Some(gpu) = m.residency.gpu() {
            m.residency = Residency::Absent;
            self.gpus[gpu.0 as usize].release(m.size_mib);
            out.push(Decision::Evict { model, gpu, reason });
        }
    }

    /// Idle resident models of `gpu`, least recently used first.
    pub(super) fn idle_lru(&self, gpu: GpuIndex, into: &mut Vec<(u64, ModelId)>) {
        into.clear();
        for (slot, m) in self.models.iter().enumerate() {
            if m.busy == 0 && matches!(m.residency, Residency::Resident { gpu: g, .. } if g == gpu)
            {
                into.push((m.last_used_ms, ModelId(slot as u32)));
            }
        }
        into.sort_unstable();
    }
}
