//! The Ollama baseline, as its scheduler behaves with default settings.
//!
//! * Keep-alive of 5 minutes: a model idle that long is unloaded.
//! * At most 3 models loaded per GPU (`OLLAMA_MAX_LOADED_MODELS`).
//! * A model loads on the GPU with the most free VRAM, and only if it fits
//!   within 80% of that GPU's free VRAM (free as reported at load time:
//!   other programs' VRAM counts then, and never again).
//! * To make room, idle models are unloaded in keep-alive order (the one
//!   whose keep-alive ends first goes first), one at a time, until the
//!   model fits. Busy models are waited for, never unloaded.
//! * Pending requests are handled one at a time in arrival order: while
//!   the one at the head waits for room, every request behind it waits
//!   too, even for a model already loaded.
//! * No pins, no priorities, no preloading, no reaction when another
//!   program takes VRAM later.

use super::super::model::Residency;
use super::super::{Decision, EvictReason, ModelId, WaitReason};
use super::base::Base;
use crate::gpu::backend::GpuIndex;

/// Ollama's default keep-alive, ms.
pub(super) const KEEP_ALIVE_MS: u64 = 300_000;
/// Ollama's default cap on loaded models per GPU.
pub(super) const MAX_LOADED: usize = 3;
/// Share of free VRAM a load may take.
const FREE_SHARE: f64 = 0.8;

/// The Ollama baseline's state.
#[derive(Debug)]
pub(super) struct Ollama {
    pub base: Base,
    idle: Vec<(u64, ModelId)>,
}

impl Ollama {
    pub(super) fn new(base: Base) -> Self {
        Self {
            base,
            idle: Vec::new(),
        }
    }

    pub(super) fn tick(&mut self, now_ms: u64, out: &mut Vec<Decision>) {
        out.append(&mut self.base.pending);
        self.expire(now_ms, out);
        let mut i = 0;
        while i < self.base.waiting.len() {
            let w = self.base.waiting[i];
            match self.base.models[w.model.0 as usize].residency {
                Residency::Resident { gpu, .. } => {
                    self.base.admit(i, gpu, out);
                    continue;
                }
                Residency::Loading { .. } => self.base.announce(i, WaitReason::Loading, out),
                Residency::Absent => {
                    if self.base.refuse_if_too_large(i, out) {
                        continue;
                    }
                    if !self.place(w.model, now_ms, out) {
                        self.base.announce(i, WaitReason::NoRoom, out);
                        // The head of the queue blocks everything behind it.
                        for j in i + 1..self.base.waiting.len() {
                            self.base.announce(j, WaitReason::NoRoom, out);
                        }
                        return;
                    }
                    self.base.announce(i, WaitReason::Loading, out);
                }
            }
            i += 1;
        }
    }

    fn expire(&mut self, now_ms: u64, out: &mut Vec<Decision>) {
        for slot in 0..self.base.models.len() {
            let m = &self.base.models[slot];
            let idle = m.busy == 0 && matches!(m.residency, Residency::Resident { .. });
            if idle && now_ms.saturating_sub(m.last_used_ms) >= KEEP_ALIVE_MS {
                self.base
                    .evict(ModelId(slot as u32), EvictReason::KeepAlive, out);
            }
        }
    }

    /// Models loaded or loading on `gpu`.
    fn loaded(&self, gpu: GpuIndex) -> usize {
        self.base
            .models
            .iter()
            .filter(|m| m.residency.gpu() == Some(gpu))
            .count()
    }

    /// Loads `model` on the GPU with the most free VRAM, unloading idle
    /// models there in keep-alive order until it fits; returns whether a
    /// load started.
    fn place(&mut self, model: ModelId, now_ms: u64, out: &mut Vec<Decision>) -> bool {
        let size = self.base.models[model.0 as usize].size_mib;
        let Some(gpu) = self
            .base
            .gpus
            .iter()
            .filter(|g| !g.lost)
            .max_by_key(|g| (g.free_mib(), std::cmp::Reverse(g.index)))
            .map(|g| g.index)
        else {
            return false;
        };
        loop {
            let g = &self.base.gpus[gpu.0 as usize];
            let fits = size as f64 <= FREE_SHARE * g.free_mib() as f64;
            if fits && self.loaded(gpu) < MAX_LOADED {
                self.base.start_load(model, gpu, now_ms, out);
                return true;
            }
            self.base.idle_lru(gpu, &mut self.idle);
            let Some(&(_, victim)) = self.idle.first() else {
                return false;
            };
            self.base.evict(victim, EvictReason::MakeRoom, out);
        }
    }
}
