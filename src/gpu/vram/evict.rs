//! Which models to evict: what each would cost, and the cheapest set that
//! frees enough.
//!
//! The cost of evicting a model is the time users would lose reloading it,
//! weighted by how much they would mind: `class weight x reload ms x
//! (0.05 + chance of reuse within the horizon)`. The chance comes from the
//! model's mean gap between uses, cooled by how long it has been idle (a
//! model used every minute but idle for an hour is no longer used every
//! minute), or from a prediction when that is higher. The 0.05 floor keeps
//! reload cost and size in play for models nobody is expected to use.
//!
//! Choosing the set is a covering knapsack (free at least `need` MiB at
//! least cost), NP-hard in general; the optimizer takes the better of two
//! cheap answers: greedy by cost per MiB then pruned of any member the
//! rest can spare (largest cost first), and the cheapest single model big
//! enough alone. Both are exact on the common cases (one model suffices;
//! all small models are cheap) and run in O(n log n).

use super::model::Model;
use super::{ModelId, Priority};

/// How far ahead reuse is judged, ms.
pub(super) const REUSE_HORIZON_MS: f64 = 600_000.0;

/// One model that may be evicted.
#[derive(Debug, Clone, Copy)]
pub(super) struct Candidate {
    pub model: ModelId,
    pub size_mib: u64,
    pub cost: f64,
}

/// How much a class's reloads matter.
pub(super) fn class_weight(class: Priority) -> f64 {
    match class {
        Priority::Batch => 1.0,
        Priority::Interactive => 3.0,
        Priority::Realtime => 9.0,
    }
}

/// The chance `model` is used again within the horizon, from its history
/// alone.
pub(super) fn reuse_chance(model: &Model, now_ms: u64) -> f64 {
    let Some(gap) = model.mean_gap_ms else {
        return 0.0;
    };
    let idle = now_ms.saturating_sub(model.last_used_ms) as f64;
    let rate = 1.0 / gap.max(idle).max(1.0);
    1.0 - (-REUSE_HORIZON_MS * rate).exp()
}

/// The cost of evicting `model`, given the chance a prediction gives it.
pub(super) fn evict_cost(model: &Model, now_ms: u64, predicted: f64) -> f64 {
    let reuse = reuse_chance(model, now_ms).max(predicted);
    class_weight(model.class) * model.reload_ms as f64 * (0.05 + reuse)
}

/// Picks the cheapest set of `candidates` freeing at least `need_mib`
/// into `chosen`; returns its cost, or `None` when all of them together
/// free too little. Reorders `candidates`.
pub(super) fn cover(
    candidates: &mut [Candidate],
    need_mib: u64,
    chosen: &mut Vec<ModelId>,
) -> Option<f64> {
    chosen.clear();
    if need_mib == 0 {
        return Some(0.0);
    }
    let total: u64 = candidates.iter().map(|c| c.size_mib).sum();
    if total < need_mib {
        return None;
    }
    let single = candidates
        .iter()
        .filter(|c| c.size_mib >= need_mib)
        .min_by(|a, b| order(a.cost, b.cost, a, b))
        .copied();
    candidates.sort_by(|a, b| {
        let ra = a.cost / a.size_mib.max(1) as f64;
        let rb = b.cost / b.size_mib.max(1) as f64;
        order(ra, rb, a, b)
    });
    let mut freed = 0;
    let mut taken = 0;
    while freed < need_mib {
        freed += candidates[taken].size_mib;
        taken += 1;
    }
    let greedy = &mut candidates[..taken];
    greedy.sort_by(|a, b| order(b.cost, a.cost, a, b));
    let mut cost = 0.0;
    for c in greedy.iter() {
        if freed - c.size_mib >= need_mib {
            freed -= c.size_mib;
        } else {
            chosen.push(c.model);
            cost += c.cost;
        }
    }
    match single {
        Some(s) if s.cost < cost || (s.cost == cost && chosen.len() > 1) => {
            chosen.clear();
            chosen.push(s.model);
            Some(s.cost)
        }
        _ => Some(cost),
    }
}

/// Orders by a float key, then by model id so ties are deterministic.
fn order(a: f64, b: f64, ca: &Candidate, cb: &Candidate) -> std::cmp::Ordering {
    a.total_cmp(&b).then(ca.model.cmp(&cb.model))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: u32, size_mib: u64, cost: f64) -> Candidate {
        Candidate {
            model: ModelId(id),
            size_mib,
            cost,
        }
    }

    #[test]
    fn one_cheap_model_that_suffices_beats_several() {
        let mut sut = [c(0, 1000, 1.0), c(1, 1000, 1.0), c(2, 3000, 1.5)];
        let mut chosen = Vec::new();
        assert_eq!(cover(&mut sut, 2500, &mut chosen), Some(1.5));
        assert_eq!(chosen, [ModelId(2)]);
    }

    #[test]
    fn greedy_drops_members_the_rest_can_spare() {
        // By cost per MiB: 0 (0.0001), 1 (0.0002), 2 (0.0005). Taking 0
        // and 1 frees 1100 of 1000 needed; 0 alone is short, 1 alone is
        // enough, so 0 is dropped.
        let mut sut = [c(0, 100, 0.01), c(1, 1000, 0.2), c(2, 2000, 1.0)];
        let mut chosen = Vec::new();
        assert_eq!(cover(&mut sut, 1000, &mut chosen), Some(0.2));
        assert_eq!(chosen, [ModelId(1)]);
    }

    #[test]
    fn too_little_to_free_is_none() {
        let mut sut = [c(0, 100, 1.0)];
        assert_eq!(cover(&mut sut, 101, &mut Vec::new()), None);
    }

    #[test]
    fn a_model_idle_far_past_its_gap_is_cheap_to_evict() {
        let policy = crate::topology::VramPolicy::default();
        let mut model = Model::new("m", 2000, &policy);
        model.mean_gap_ms = Some(60_000.0);
        model.last_used_ms = 0;
        let fresh = reuse_chance(&model, 1_000);
        let stale = reuse_chance(&model, 36_000_000);
        assert!(fresh > 0.99 && stale < 0.02, "{fresh} {stale}");
    }
}
