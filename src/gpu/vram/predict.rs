//! Predicting uses from request history: chains and periodic use.
//!
//! **Chains.** When model B's use arrives within [`CHAIN_WINDOW_MS`] of
//! model A's, B "followed" that use of A. After A has been used
//! [`MIN_OBSERVATIONS`] times, B is predicted after each new use of A with
//! chance `follows(A, B) / earlier uses(A)`, at A's arrival plus the mean
//! delay.
//! The voice path makes these chains: a whisper use is followed by phi-3
//! and xtts within seconds, nearly every time.
//!
//! **Periodic use.** Uses more than [`SESSION_GAP_MS`] apart start a new
//! session. Once a model has had [`MIN_OBSERVATIONS`] gaps between
//! session starts, and they are regular (mean absolute deviation at most a
//! fifth of the mean), its next session is predicted at the last start plus
//! the mean gap, with chance 0.8.
//!
//! State is per model and bounded: a window of recent arrivals, a list of
//! successors per model, two running means per model. Nothing is stored
//! per request.

use std::collections::VecDeque;

use super::ModelId;

/// How soon after A a use of B counts as following it, ms.
pub(super) const CHAIN_WINDOW_MS: u64 = 15_000;
/// Idle time that separates two sessions of one model, ms.
pub(super) const SESSION_GAP_MS: u64 = 60_000;
/// Observations needed before a prediction is made.
const MIN_OBSERVATIONS: u32 = 3;
/// Chance a chain link needs to be predicted.
const MIN_CHAIN_CHANCE: f64 = 0.5;
/// Chance given to a regular periodic session.
const PERIODIC_CHANCE: f64 = 0.8;

#[derive(Debug, Clone, Copy)]
struct Follow {
    next: ModelId,
    count: u32,
    mean_delay_ms: f64,
    /// The use of the origin this link last counted, so one use of A is
    /// followed by B at most once.
    counted_use: u64,
}

#[derive(Debug, Clone, Default)]
struct History {
    uses: u64,
    successors: Vec<Follow>,
    last_arrival_ms: Option<u64>,
    session_start_ms: Option<u64>,
    sessions: u32,
    mean_period_ms: f64,
    mean_deviation_ms: f64,
}

impl History {
    fn next_session_ms(&self) -> Option<(u64, u64)> {
        let regular = self.sessions > MIN_OBSERVATIONS
            && self.mean_period_ms >= 2.0 * SESSION_GAP_MS as f64
            && self.mean_deviation_ms <= 0.2 * self.mean_period_ms;
        let start = self.session_start_ms?;
        regular.then(|| {
            (
                start + self.mean_period_ms as u64,
                2 * self.mean_deviation_ms as u64 + SESSION_GAP_MS,
            )
        })
    }
}

/// A use the history expects.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Prediction {
    pub model: ModelId,
    pub chance: f64,
    /// When it is expected, ms.
    pub at_ms: u64,
}

/// Request history.
#[derive(Debug, Clone, Default)]
pub(super) struct Predictor {
    models: Vec<History>,
    /// Recent arrivals: (model, arrival ms, that model's use number).
    recent: VecDeque<(ModelId, u64, u64)>,
}

impl Predictor {
    /// Records a use of `model` arriving at `now_ms`.
    pub(super) fn observe(&mut self, model: ModelId, now_ms: u64) {
        let slot = model.0 as usize;
        if self.models.len() <= slot {
            self.models.resize_with(slot + 1, History::default);
        }
        while self
            .recent
            .front()
            .is_some_and(|&(_, t, _)| now_ms.saturating_sub(t) > CHAIN_WINDOW_MS)
        {
            self.recent.pop_front();
        }
        for &(origin, t, use_no) in &self.recent {
            if origin == model {
                continue;
            }
            let delay = now_ms.saturating_sub(t) as f64;
            let links = &mut self.models[origin.0 as usize].successors;
            match links.iter_mut().find(|f| f.next == model) {
                Some(f) if f.counted_use == use_no => {}
                Some(f) => {
                    f.count += 1;
                    f.counted_use = use_no;
                    f.mean_delay_ms = 0.8 * f.mean_delay_ms + 0.2 * delay;
                }
                None => links.push(Follow {
                    next: model,
                    count: 1,
                    mean_delay_ms: delay,
                    counted_use: use_no,
                }),
            }
        }
        let history = &mut self.models[slot];
        history.uses += 1;
        session(history, now_ms);
        self.recent.push_back((model, now_ms, history.uses));
    }

    /// Uses expected from `now_ms` on: chain links of recent uses, and
    /// periodic sessions due within `horizon_ms`, into `out` (cleared).
    pub(super) fn predict(&self, now_ms: u64, horizon_ms: u64, out: &mut Vec<Prediction>) {
        out.clear();
        for &(origin, t, use_no) in &self.recent {
            if now_ms.saturating_sub(t) > CHAIN_WINDOW_MS {
                continue;
            }
            let history = &self.models[origin.0 as usize];
            // Only the latest use of an origin predicts; the uses before
            // it are the evidence.
            let evidence = history.uses - 1;
            if evidence < u64::from(MIN_OBSERVATIONS) || history.uses != use_no {
                continue;
            }
            for f in &history.successors {
                let chance = (f64::from(f.count) / evidence as f64).min(1.0);
                let after = self.models[f.next.0 as usize].last_arrival_ms;
                if chance >= MIN_CHAIN_CHANCE && after.is_none_or(|a| a < t) {
                    out.push(Prediction {
                        model: f.next,
                        chance,
                        at_ms: t + f.mean_delay_ms as u64,
                    });
                }
            }
        }
        for (slot, history) in self.models.iter().enumerate() {
            if let Some((next, slack)) = history.next_session_ms()
                && next <= now_ms + horizon_ms
                && now_ms <= next + slack
                && history
                    .last_arrival_ms
                    .is_none_or(|a| a + SESSION_GAP_MS < now_ms)
            {
                out.push(Prediction {
                    model: ModelId(slot as u32),
                    chance: PERIODIC_CHANCE,
                    at_ms: next,
                });
            }
        }
    }
}

/// Updates the session statistics of a model whose use arrives now.
fn session(history: &mut History, now_ms: u64) {
    let new_session = history
        .last_arrival_ms
        .is_none_or(|last| now_ms.saturating_sub(last) > SESSION_GAP_MS);
    history.last_arrival_ms = Some(now_ms);
    if !new_session {
        return;
    }
    if let Some(start) = history.session_start_ms {
        let period = now_ms.saturating_sub(start) as f64;
        if history.sessions <= 1 {
            history.mean_period_ms = period;
        } else {
            let deviation = (period - history.mean_period_ms).abs();
            history.mean_deviation_ms = 0.7 * history.mean_deviation_ms + 0.3 * deviation;
            history.mean_period_ms = 0.7 * history.mean_period_ms + 0.3 * period;
        }
    }
    history.sessions += 1;
    history.session_start_ms = Some(now_ms);
}

#[cfg(test)]
mod tests {
    use super::*;

    const STT: ModelId = ModelId(0);
    const LLM: ModelId = ModelId(1);
    const TTS: ModelId = ModelId(2);
    const JOB: ModelId = ModelId(3);

    #[test]
    fn a_repeated_chain_predicts_the_next_models_after_its_first() {
        let mut sut = Predictor::default();
        for turn in 0..4u64 {
            let t = turn * 600_000;
            sut.observe(STT, t);
            sut.observe(LLM, t + 900);
            sut.observe(TTS, t + 3_000);
        }
        let mut out = Vec::new();
        sut.observe(STT, 5_000_000);
        sut.predict(5_000_100, 0, &mut out);
        let models: Vec<ModelId> = out.iter().map(|p| p.model).collect();
        assert_eq!(models, [LLM, TTS]);
        assert!(out.iter().all(|p| p.chance == 1.0));
        assert!(out[0].at_ms > 5_000_000 && out[0].at_ms < 5_001_000);
    }

    #[test]
    fn a_chain_seen_once_predicts_nothing() {
        let mut sut = Predictor::default();
        sut.observe(STT, 0);
        sut.observe(LLM, 900);
        sut.observe(STT, 600_000);
        let mut out = Vec::new();
        sut.predict(600_100, 0, &mut out);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn an_hourly_job_is_predicted_before_its_next_run() {
        let mut sut = Predictor::default();
        for hour in 0..5u64 {
            sut.observe(JOB, hour * 3_600_000);
        }
        let mut out = Vec::new();
        sut.predict(5 * 3_600_000 - 20_000, 30_000, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].model, JOB);
        assert_eq!(out[0].at_ms, 5 * 3_600_000);
        sut.predict(4 * 3_600_000 + 600_000, 30_000, &mut out);
        assert!(out.is_empty(), "not due yet: {out:?}");
    }

    #[test]
    fn irregular_use_is_not_periodic() {
        let mut sut = Predictor::default();
        for t in [0u64, 500_000, 4_000_000, 4_700_000, 9_000_000, 9_200_000] {
            sut.observe(JOB, t);
        }
        let mut out = Vec::new();
        for now in (9_300_000..20_000_000).step_by(100_000) {
            sut.predict(now, 30_000, &mut out);
            assert!(out.is_empty(), "at {now}: {out:?}");
        }
    }
}
