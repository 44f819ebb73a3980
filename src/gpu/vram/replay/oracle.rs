//! The oracle: Belady's furthest-in-future eviction, with the whole trace
//! in view, as the yardstick the optimizer and the baselines are set
//! against (`pinwheel vram replay --policy oracle`).
//!
//! It fetches on demand only: a use of an absent model loads it then, and
//! nothing is loaded ahead of its use (a prefetching oracle that knows the
//! future would never miss, which measures nothing). Pins are honoured as
//! the optimizer honours them: pinned models load first and are never
//! evicted. To make room it evicts idle models whose next use lies
//! furthest ahead (never used again first), on the GPU where the nearest
//! next use among the victims is furthest away; it sheds the same way when
//! another program pushes a GPU over its budget.
//!
//! Sizes. Belady's rule is optimal for pages of one size. With models of
//! different sizes (the fault model of generalized caching) no simple rule
//! is optimal, and finding the optimum is NP-hard (Chrobak, Woeginger,
//! Makino and Xu, "Caching is hard, even in the fault model", 2012). This
//! policy takes the classic furthest-first rule and breaks ties (two
//! models never used again) by size, largest first. The size-weighted
//! variant (evict by next-use distance x size) did slightly worse on the
//! repository's traces (56 and 12 misses against 55 and 11 on
//! `memory-pressure` and `voice-day`, the same on `voice-burst`), so it
//! is not used. The oracle's misses are therefore a *heuristic* bound,
//! not a proven lower bound: a cleverer offline policy might miss less,
//! and the optimizer, which may preload, can miss less than it does. Its
//! one proven floor is the compulsory misses (one per distinct model used
//! and not pinned), which every demand-fetching policy pays.

use std::collections::HashMap;

use super::super::model::Residency;
use super::super::{Decision, EvictReason, ModelId, WaitReason};
use super::base::Base;
use super::trace::{Trace, TraceOp};
use crate::gpu::backend::GpuIndex;

/// "Never used again".
const NEVER: u64 = u64::MAX;

/// The oracle's state.
#[derive(Debug)]
pub(super) struct Oracle {
    pub base: Base,
    /// Each model's use times, by name, from the trace.
    future_by_name: HashMap<String, Vec<u64>>,
    /// Each model's use times, by id, once the replay has named it.
    future: Vec<Vec<u64>>,
    /// Pinned models: loaded first, never evicted.
    pinned: Vec<ModelId>,
    idle: Vec<(u64, u64, ModelId)>,
}

impl Oracle {
    pub(super) fn new(base: Base, trace: &Trace) -> Self {
        let mut future_by_name: HashMap<String, Vec<u64>> = HashMap::new();
        for op in &trace.ops {
            if let TraceOp::Use { t_ms, model, .. } = op {
                future_by_name.entry(model.clone()).or_default().push(*t_ms);
            }
        }
        Self {
            base,
            future_by_name,
            future: Vec::new(),
            pinned: Vec::new(),
            idle: Vec::new(),
        }
    }

    /// The id of `name`, with its future uses learnt.
    pub(super) fn model(&mut self, name: &str, vram_mib: u64) -> ModelId {
        let id = self.base.model(name, vram_mib);
        let slot = id.0 as usize;
        if self.future.len() <= slot {
            self.future.resize(slot + 1, Vec::new());
            self.future[slot] = self.future_by_name.remove(name).unwrap_or_default();
        }
        id
    }

    /// Pins `model` from now on.
    pub(super) fn pin(&mut self, model: ModelId) {
        if !self.pinned.contains(&model) {
            self.pinned.push(model);
        }
    }

    /// The first use of `model` after `now_ms` ([`NEVER`] if none).
    fn next_use(&self, model: ModelId, now_ms: u64) -> u64 {
        let times = &self.future[model.0 as usize];
        let at = times.partition_point(|&t| t <= now_ms);
        times.get(at).copied().unwrap_or(NEVER)
    }

    pub(super) fn tick(&mut self, now_ms: u64, out: &mut Vec<Decision>) {
        out.append(&mut self.base.pending);
        self.shed(now_ms, out);
        for i in 0..self.pinned.len() {
            let model = self.pinned[i];
            if self.base.models[model.0 as usize].residency == Residency::Absent {
                self.place(model, now_ms, out);
            }
        }
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

    /// Idle, unpinned resident models of `gpu`, furthest next use first
    /// (largest first among equals), into `self.idle`.
    fn victims(&mut self, gpu: GpuIndex, now_ms: u64) {
        self.idle.clear();
        for (slot, m) in self.base.models.iter().enumerate() {
            let model = ModelId(slot as u32);
            if m.busy == 0
                && !self.pinned.contains(&model)
                && matches!(m.residency, Residency::Resident { gpu: g, .. } if g == gpu)
            {
                let next = self.next_use(model, now_ms);
                self.idle.push((next, m.size_mib, model));
            }
        }
        self.idle.sort_unstable_by(|a, b| b.cmp(a));
    }

    /// Evicts furthest-needed idle models from GPUs over budget.
    fn shed(&mut self, now_ms: u64, out: &mut Vec<Decision>) {
        for slot in 0..self.base.gpus.len() {
            let gpu = self.base.gpus[slot].index;
            if self.base.gpus[slot].lost {
                continue;
            }
            self.victims(gpu, now_ms);
            for i in 0..self.idle.len() {
                let g = &self.base.gpus[slot];
                if g.used_mib() <= g.budget_mib {
                    break;
                }
                let victim = self.idle[i].2;
                self.base.evict(victim, EvictReason::Pressure, out);
            }
        }
    }

    /// Loads `model` on the GPU it fits without eviction (most free
    /// first), else where the victims' nearest next use is furthest;
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
        // (nearest next use among the victims, victims, GPU)
        let mut best: Option<(u64, usize, GpuIndex)> = None;
        for slot in 0..self.base.gpus.len() {
            let g = &self.base.gpus[slot];
            if g.lost {
                continue;
            }
            let (index, budget, mut used) = (g.index, g.budget_mib, g.used_mib());
            self.victims(index, now_ms);
            let (mut taken, mut nearest) = (0, NEVER);
            for &(next, victim_mib, _) in &self.idle {
                if used + size <= budget {
                    break;
                }
                used = used.saturating_sub(victim_mib);
                nearest = nearest.min(next);
                taken += 1;
            }
            if used + size <= budget && best.is_none_or(|(n, _, _)| nearest > n) {
                best = Some((nearest, taken, index));
            }
        }
        let Some((_, taken, gpu)) = best else {
            return false;
        };
        self.victims(gpu, now_ms);
        for i in 0..taken {
            let victim = self.idle[i].2;
            self.base.evict(victim, EvictReason::MakeRoom, out);
        }
        self.base.start_load(model, gpu, now_ms, out);
        true
    }
}
