//! The LRU baseline: a plain least-recently-used model cache.
//!
//! A use of a resident model runs at once. A use of an absent model loads
//! it on the GPU with the most free VRAM where it fits within the same
//! budget the optimizer has; when none has room, the GPU whose idle
//! models, evicted least recently used first, make room soonest is
//! cleared that far. Its capacity is the budget less what other programs
//! hold: when they take more and a GPU goes over its budget, idle models
//! are evicted least recently used first until it fits again (what a
//! memory-aware cache such as ComfyUI's model manager does). Uses that
//! cannot be placed wait, in arrival order, without blocking the ones
//! behind them. No pins, no priorities, no keep-alive, no preloading, no
//! minimum residency.

use super::super::model::Residency;
use super::super::{Decision, EvictReason, ModelId, WaitReason};
use super::base::Base;
use crate::gpu::backend::GpuIndex;

/// The LRU baseline's state.
#[derive(Debug)]
pub(super) struct Lru {
    pub base: Base,
    idle: Vec<(u64, ModelId)>,
}

impl Lru {
    pub(super) fn new(base: Base) -> Self {
        Self {
            base,
            idle: Vec::new(),
        }
    }

    pub(super) fn tick(&mut self, now_ms: u64, out: &mut Vec<Decision>) {
        out.append(&mut self.base.pending);
        self.shed(out);
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
                    let reason = if self.place(w.model, now_ms, out) {
                        WaitReason::Loading
                    } else {
                        WaitReason::NoRoom
                    };
                    self.base.announce(i, reason, out);
                }
            }
            i += 1;
        }
    }

    /// Evicts least recently used idle models from GPUs over budget.
    fn shed(&mut self, out: &mut Vec<Decision>) {
        for slot in 0..self.base.gpus.len() {
            let gpu = self.base.gpus[slot].index;
            if self.base.gpus[slot].lost {
                continue;
            }
            self.base.idle_lru(gpu, &mut self.idle);
            for i in 0..self.idle.len() {
                let g = &self.base.gpus[slot];
                if g.used_mib() <= g.budget_mib {
                    break;
                }
                let victim = self.idle[i].1;
                self.base.evict(victim, EvictReason::Pressure, out);
            }
        }
    }

    /// Loads `model` somewhere, evicting LRU idle models if needed;
    /// returns whether a load started.
    fn place(&mut self, model: ModelId, now_ms: u64, out: &mut Vec<Decision>) -> bool {
        let size = self.base.models[model.0 as usize].size_mib;
        let fits = self
            .base
            .gpus
            .iter()
            .filter(|g| !g.lost && g.used_mib() + size <= g.budget_mib)
            .max_by_key(|g| (g.free_mib(), std::cmp::Reverse(g.index)))
            .map(|g| g.index);
        if let Some(gpu) = fits {
            self.base.start_load(model, gpu, now_ms, out);
            return true;
        }
        let mut best: Option<(usize, GpuIndex)> = None;
        for g in self.base.gpus.iter().filter(|g| !g.lost) {
            self.base.idle_lru(g.index, &mut self.idle);
            let mut used = g.used_mib();
            let mut taken = 0;
            for &(_, m) in &self.idle {
                if used + size <= g.budget_mib {
                    break;
                }
                used = used.saturating_sub(self.base.models[m.0 as usize].size_mib);
                taken += 1;
            }
            if used + size <= g.budget_mib && best.is_none_or(|(n, _)| taken < n) {
                best = Some((taken, g.index));
            }
        }
        let Some((taken, gpu)) = best else {
            return false;
        };
        self.base.idle_lru(gpu, &mut self.idle);
        let victims: Vec<ModelId> = self.idle[..taken].iter().map(|&(_, m)| m).collect();
        for victim in victims {
            self.base.evict(victim, EvictReason::MakeRoom, out);
        }
        self.base.start_load(model, gpu, now_ms, out);
        true
    }
}
