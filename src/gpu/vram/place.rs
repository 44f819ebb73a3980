//! The steps of a tick that move models: keep-alive expiry, pressure
//! relief, pins, serving waiting uses, preloading; and placement, which
//! they share.
//!
//! Placement of a model of `size` MiB: a GPU can ever hold it when `size`
//! fits under its high-water mark next to its pins. Among GPUs where it
//! fits now, under the high-water mark, the one left with the least
//! headroom wins (best fit, so big gaps stay whole for big models). Otherwise the GPU where making room
//! costs least wins, with the evicted set chosen by `evict::cover`.
//! Lower classes may evict a higher class's model only when it is not
//! expected again soon (reuse chance under one half).

use super::evict::{self, Candidate};
use super::model::Residency;
use super::optimizer::{MAX_FAILURES, PRELOAD_MARGIN_MS, VramOptimizer, Waiting};
use super::{Decision, DenyReason, EvictReason, ModelId, Priority, WaitReason};
use crate::gpu::backend::GpuIndex;

/// Reuse chance under which a model counts as cold.
const COLD: f64 = 0.1;
/// Chance from which a due prediction preloads like a demand load: a
/// regular periodic session (0.8) or a chain seen at least four times in
/// five.
const CONFIDENT_CHANCE: f64 = 0.8;

/// Where a model can go.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Placement {
    /// Fits now.
    Fits(GpuIndex),
    /// Fits after evicting `scratch.best`.
    Evict(GpuIndex),
    /// Could fit once busy, pinned or young models make way.
    Wait,
    /// No live GPU can ever hold it; the most any could give.
    Never(u64),
}

impl VramOptimizer {
    /// Unloads idle models past their keep-alive that no prediction wants.
    pub(super) fn expire(&mut self, now_ms: u64, out: &mut Vec<Decision>) {
        let Some(keep_alive) = self.policy.keep_alive_ms else {
            return;
        };
        for slot in 0..self.models.len() {
            let m = &self.models[slot];
            let Some(gpu) = m.residency.gpu() else {
                continue;
            };
            let model = ModelId(slot as u32);
            if m.evictable(gpu, now_ms, self.policy.min_residency_ms)
                && now_ms.saturating_sub(m.last_used_ms) >= keep_alive
                && !self.predicted(model)
            {
                self.evict(model, EvictReason::KeepAlive, out);
            }
        }
    }

    /// Sheds idle models from GPUs over their high-water mark: the
    /// cheapest set that gets back under it, then models nobody is
    /// expected to use (reuse chance under [`COLD`]) down to the low-water
    /// mark, so a GPU that keeps bumping into its mark frees a margin once
    /// instead of one model per bump. Models younger than the minimum
    /// residency go only when the others cannot bring the GPU back under
    /// its budget: the budget is a promise to other programs, residency
    /// only a guard against thrashing (and a model evicted young may not
    /// load again until its residency would have ended).
    pub(super) fn relieve(&mut self, now_ms: u64, out: &mut Vec<Decision>) {
        let min_age = self.policy.min_residency_ms;
        for slot in 0..self.gpus.len() {
            let gpu = &mut self.gpus[slot];
            if gpu.lost {
                continue;
            }
            let used = gpu.used_mib();
            if used > gpu.high_mib {
                gpu.pressure = true;
            } else if used <= gpu.low_mib {
                gpu.pressure = false;
            }
            if !gpu.pressure {
                continue;
            }
            // Count what is shed here rather than re-reading usage: on a
            // saturated GPU the driver's figure will not show it until the
            // next sample.
            let (index, high, low, budget) = (gpu.index, gpu.high_mib, gpu.low_mib, gpu.budget_mib);
            let mut used = used;
            used -= self.shed(
                index,
                now_ms,
                used.saturating_sub(high),
                min_age,
                false,
                out,
            );
            used -= self.shed(index, now_ms, used.saturating_sub(budget), 0, false, out);
            self.shed(index, now_ms, used.saturating_sub(low), min_age, true, out);
        }
    }

    /// Evicts idle models of `gpu` at least `min_age_ms` old (only cold
    /// ones if `cold_only`), the cheapest set freeing `need` MiB, or all
    /// of them if they free less. Returns the MiB freed.
    fn shed(
        &mut self,
        gpu: GpuIndex,
        now_ms: u64,
        need: u64,
        min_age_ms: u64,
        cold_only: bool,
        out: &mut Vec<Decision>,
    ) -> u64 {
        if need == 0 {
            return 0;
        }
        self.candidates_aged(gpu, now_ms, None, min_age_ms);
        if cold_only {
            let models = &self.models;
            let predictions = &self.scratch.predictions;
            self.scratch.candidates.retain(|c| {
                let m = &models[c.model.0 as usize];
                evict::reuse_chance(m, now_ms) < COLD
                    && !predictions.iter().any(|p| p.model == c.model)
            });
        }
        let all: u64 = self.scratch.candidates.iter().map(|c| c.size_mib).sum();
        let mut chosen = std::mem::take(&mut self.scratch.chosen);
        evict::cover(&mut self.scratch.candidates, need.min(all), &mut chosen);
        let mut freed = 0;
        for &model in &chosen {
            freed += self.models[model.0 as usize].size_mib;
            self.evict(model, EvictReason::Pressure, out);
        }
        self.scratch.chosen = chosen;
        freed
    }

    /// Loads pinned models that are absent, where they fit.
    pub(super) fn ensure_pins(&mut self, now_ms: u64, out: &mut Vec<Decision>) {
        for i in 0..self.pins.len() {
            let model = self.pins[i];
            let m = &self.models[model.0 as usize];
            if m.residency != Residency::Absent
                || m.failures >= MAX_FAILURES
                || !m.may_load(now_ms, self.policy.min_residency_ms)
            {
                continue;
            }
            let home = m.pin_gpu;
            match self.place(model, now_ms, None, home) {
                Placement::Fits(gpu) => self.start_load(model, gpu, now_ms, false, out),
                Placement::Evict(gpu) => self.make_room_and_load(model, gpu, now_ms, out),
                Placement::Wait | Placement::Never(_) => {}
            }
        }
    }

    /// Serves waiting uses in class order. Returns whether any waits for
    /// room (preloads then hold off).
    pub(super) fn serve(&mut self, now_ms: u64, out: &mut Vec<Decision>) -> bool {
        let mut starved = false;
        let mut i = 0;
        while i < self.waiting.len() {
            let w = self.waiting[i];
            let m = &self.models[w.model.0 as usize];
            let wait = match m.residency {
                Residency::Resident { gpu, .. } => {
                    self.waiting.remove(i);
                    self.admit(w, gpu, out);
                    continue;
                }
                Residency::Loading { .. } => WaitReason::Loading,
                Residency::Absent if m.failures >= MAX_FAILURES => {
                    self.waiting.remove(i);
                    self.deny(Some(w.request), w.model, DenyReason::LoadFailed);
                    continue;
                }
                Residency::Absent
                    if !m.may_load(now_ms, self.policy.min_residency_ms)
                        || self.scratch.no_room[w.model.0 as usize] =>
                {
                    starved = true;
                    WaitReason::NoRoom
                }
                Residency::Absent => match self.place(w.model, now_ms, Some(w.priority), m.pin_gpu)
                {
                    Placement::Fits(gpu) => {
                        self.start_load(w.model, gpu, now_ms, false, out);
                        WaitReason::Loading
                    }
                    Placement::Evict(gpu) => {
                        self.make_room_and_load(w.model, gpu, now_ms, out);
                        WaitReason::Loading
                    }
                    Placement::Wait => {
                        starved = true;
                        self.scratch.no_room[w.model.0 as usize] = true;
                        WaitReason::NoRoom
                    }
                    Placement::Never(largest_mib) => {
                        self.waiting.remove(i);
                        self.refuse(w, largest_mib);
                        continue;
                    }
                },
            };
            self.announce(i, wait, out);
            i += 1;
        }
        starved
    }

    /// Denies a use no GPU can hold.
    fn refuse(&mut self, w: Waiting, largest_mib: u64) {
        let reason = if self.gpus.iter().all(|g| g.lost) {
            DenyReason::NoGpu
        } else {
            DenyReason::TooLarge {
                vram_mib: self.models[w.model.0 as usize].size_mib,
                largest_mib,
            }
        };
        self.deny(Some(w.request), w.model, reason);
    }

    /// Sends the one Queue decision of waiting use `i`.
    fn announce(&mut self, i: usize, reason: WaitReason, out: &mut Vec<Decision>) {
        let w = &mut self.waiting[i];
        if !w.queued {
            w.queued = true;
            self.stats.queued += 1;
            out.push(Decision::Queue {
                request: w.request,
                model: w.model,
                reason,
            });
        }
    }

    /// Preloads predicted models into idle VRAM, under the low-water mark,
    /// without evicting anything.
    pub(super) fn preload(&mut self, now_ms: u64, out: &mut Vec<Decision>) {
        for i in 0..self.scratch.predictions.len() {
            let p = self.scratch.predictions[i];
            let m = &self.models[p.model.0 as usize];
            let due = p.at_ms <= now_ms + m.reload_ms + PRELOAD_MARGIN_MS;
            if !due
                || m.residency != Residency::Absent
                || m.failures > 0
                || !m.worth_preloading()
                || !m.may_load(now_ms, self.policy.min_residency_ms)
            {
                continue;
            }
            let size = m.size_mib;
            let home = m.pin_gpu;
            // A confident prediction due now is the demand load it
            // anticipates, moved a few seconds earlier: it may fill up to
            // the high-water mark as that load would, pressure's
            // hysteresis band included (it still evicts nothing).
            let confident = p.chance >= CONFIDENT_CHANCE;
            let best = self
                .gpus
                .iter()
                .filter(|g| {
                    !g.lost && (confident || !g.pressure) && home.is_none_or(|h| h == g.index)
                })
                .filter_map(|g| {
                    let mark = if confident { g.high_mib } else { g.low_mib };
                    mark.checked_sub(g.used_mib() + size)
                        .map(|left| (left, g.index))
                })
                .min();
            if let Some((_, gpu)) = best {
                self.start_load(p.model, gpu, now_ms, true, out);
            }
        }
    }

    /// Evicts `scratch.best` from `gpu`, then loads `model` there.
    fn make_room_and_load(
        &mut self,
        model: ModelId,
        gpu: GpuIndex,
        now_ms: u64,
        out: &mut Vec<Decision>,
    ) {
        let best = std::mem::take(&mut self.scratch.best);
        for &victim in &best {
            self.evict(victim, EvictReason::MakeRoom, out);
        }
        self.scratch.best = best;
        self.start_load(model, gpu, now_ms, false, out);
    }

    /// Where `model` can go for a use of class `class` (`None`: a pin,
    /// which may evict any class), on `only` if given.
    fn place(
        &mut self,
        model: ModelId,
        now_ms: u64,
        class: Option<Priority>,
        only: Option<GpuIndex>,
    ) -> Placement {
        let m = &self.models[model.0 as usize];
        let size = m.size_mib;
        let own_pin = if m.pinned { size } else { 0 };
        let mut largest = 0;
        let mut fit: Option<(u64, GpuIndex)> = None;
        for g in self
            .gpus
            .iter()
            .filter(|g| !g.lost && only.is_none_or(|o| o == g.index))
        {
            let room = room_mib(g, own_pin);
            largest = largest.max(room);
            let headroom = g.high_mib.saturating_sub(g.used_mib());
            if size <= room && size <= headroom {
                let here = (headroom - size, g.index);
                if fit.is_none_or(|best| here < best) {
                    fit = Some(here);
                }
            }
        }
        if let Some((_, gpu)) = fit {
            return Placement::Fits(gpu);
        }
        if size > largest {
            return Placement::Never(largest);
        }
        self.cheapest_room(size, own_pin, now_ms, class, only)
    }

    /// The GPU where evicting makes room for `size` MiB at least cost;
    /// the set goes to `scratch.best`.
    fn cheapest_room(
        &mut self,
        size: u64,
        own_pin: u64,
        now_ms: u64,
        class: Option<Priority>,
        only: Option<GpuIndex>,
    ) -> Placement {
        let mut best: Option<(f64, GpuIndex)> = None;
        for slot in 0..self.gpus.len() {
            let g = &self.gpus[slot];
            if g.lost || only.is_some_and(|o| o != g.index) || size > room_mib(g, own_pin) {
                continue;
            }
            let headroom = g.high_mib.saturating_sub(g.used_mib());
            let (index, need) = (g.index, size - headroom.min(size));
            self.candidates(index, now_ms, class);
            let mut chosen = std::mem::take(&mut self.scratch.chosen);
            let cost = evict::cover(&mut self.scratch.candidates, need, &mut chosen);
            if let Some(cost) = cost
                && best.is_none_or(|(b, _)| cost < b)
            {
                best = Some((cost, index));
                std::mem::swap(&mut self.scratch.best, &mut chosen);
            }
            self.scratch.chosen = chosen;
        }
        match best {
            Some((_, gpu)) => Placement::Evict(gpu),
            None => Placement::Wait,
        }
    }

    /// Fills `scratch.candidates` with the models of `gpu` that may be
    /// evicted now for a use of `class` (`None`: any class).
    pub(super) fn candidates(&mut self, gpu: GpuIndex, now_ms: u64, class: Option<Priority>) {
        self.candidates_aged(gpu, now_ms, class, self.policy.min_residency_ms);
    }

    /// As [`Self::candidates`], for models at least `min_age_ms` old.
    fn candidates_aged(
        &mut self,
        gpu: GpuIndex,
        now_ms: u64,
        class: Option<Priority>,
        min_age_ms: u64,
    ) {
        let mut candidates = std::mem::take(&mut self.scratch.candidates);
        candidates.clear();
        for (slot, m) in self.models.iter().enumerate() {
            if !m.evictable(gpu, now_ms, min_age_ms) {
                continue;
            }
            let model = ModelId(slot as u32);
            let outranked = class.is_some_and(|c| m.class > c);
            if outranked && evict::reuse_chance(m, now_ms).max(self.predicted_chance(model)) >= 0.5
            {
                continue;
            }
            candidates.push(Candidate {
                model,
                size_mib: m.size_mib,
                cost: self.evict_cost(model, now_ms),
            });
        }
        self.scratch.candidates = candidates;
    }
}

/// The most `g` could ever give a model, next to the pins other than the
/// model's own (`own_pin` MiB, 0 when it is not pinned).
fn room_mib(g: &super::model::Gpu, own_pin: u64) -> u64 {
    g.high_mib
        .saturating_sub(g.pinned_mib.saturating_sub(own_pin))
}
