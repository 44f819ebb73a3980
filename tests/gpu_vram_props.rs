#![cfg(test)]
//! Properties of the VRAM optimizer over random traces, checked by the
//! replay harness's own books: the budget is never exceeded by a load (nor
//! left exceeded while an idle, unpinned model could be given back),
//! pinned and busy models are never evicted, and no model loads again
//! within its minimum residency.

use pinwheel::gpu::SimBackend;
use pinwheel::gpu::vram::Priority;
use pinwheel::gpu::vram::replay::{PolicyKind, Trace, TraceOp, replay};
use pinwheel::topology::VramPolicy;
use proptest::prelude::*;

const MODELS: [(&str, u64); 8] = [
    ("whisper-base", 300),
    ("whisper-large-v3", 3100),
    ("phi-3-mini-4k-instruct", 2400),
    ("tinyllama-1.1b-chat", 2200),
    ("xtts-v2", 2000),
    ("insightface-buffalo_l", 600),
    ("all-MiniLM-L6-v2", 100),
    ("llama-3-8b-q4", 5600),
];

fn priority() -> impl Strategy<Value = Priority> {
    prop_oneof![
        Just(Priority::Batch),
        Just(Priority::Interactive),
        Just(Priority::Realtime)
    ]
}

/// One operation, `gap_ms` after the previous one.
fn op(gpus: u32) -> impl Strategy<Value = (u64, TraceOp)> {
    let use_op = (0..MODELS.len(), 1u64..20_000, priority()).prop_map(|(m, hold_ms, priority)| {
        TraceOp::Use {
            t_ms: 0,
            agent: "agent".to_owned(),
            model: MODELS[m].0.to_owned(),
            vram_mib: MODELS[m].1,
            hold_ms,
            priority,
        }
    });
    let pin = (0..MODELS.len()).prop_map(|m| TraceOp::Pin {
        t_ms: 0,
        model: MODELS[m].0.to_owned(),
        vram_mib: Some(MODELS[m].1),
    });
    let external = (0..gpus, 0u64..14_000).prop_map(|(gpu, vram_mib)| TraceOp::External {
        t_ms: 0,
        gpu,
        vram_mib,
    });
    let lost = (0..gpus).prop_map(|gpu| TraceOp::GpuLost { t_ms: 0, gpu });
    let kind = prop_oneof![20 => use_op, 1 => pin, 3 => external, 1 => lost];
    (0u64..30_000, kind)
}

fn with_time(op: TraceOp, t: u64) -> TraceOp {
    match op {
        TraceOp::Use {
            agent,
            model,
            vram_mib,
            hold_ms,
            priority,
            ..
        } => TraceOp::Use {
            t_ms: t,
            agent,
            model,
            vram_mib,
            hold_ms,
            priority,
        },
        TraceOp::Pin {
            model, vram_mib, ..
        } => TraceOp::Pin {
            t_ms: t,
            model,
            vram_mib,
        },
        TraceOp::External { gpu, vram_mib, .. } => TraceOp::External {
            t_ms: t,
            gpu,
            vram_mib,
        },
        TraceOp::GpuLost { gpu, .. } => TraceOp::GpuLost { t_ms: t, gpu },
    }
}

fn host_and_trace() -> impl Strategy<Value = (Vec<u64>, Trace)> {
    prop::collection::vec(
        prop_oneof![Just(8_192u64), Just(12_288), Just(24_564)],
        1..4,
    )
    .prop_flat_map(|sizes| {
        let ops = prop::collection::vec(op(sizes.len() as u32), 1..150);
        (Just(sizes), ops)
    })
    .prop_map(|(sizes, ops)| {
        let mut t = 0;
        let ops = ops
            .into_iter()
            .map(|(gap, op)| {
                t += gap;
                with_time(op, t)
            })
            .collect();
        (sizes, Trace { ops })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_traces_keep_the_budget_pins_busy_models_and_minimum_residency(
        (sizes, trace) in host_and_trace(),
        min_residency_s in 0u64..60,
    ) {
        let names: Vec<String> = (0..sizes.len()).map(|i| format!("gpu{i}")).collect();
        let gpus: Vec<(&str, u64)> = names.iter().map(String::as_str).zip(sizes.iter().copied()).collect();
        let host = SimBackend::new(&gpus);
        let policy = VramPolicy {
            min_residency_ms: min_residency_s * 1000,
            ..VramPolicy::default()
        };
        let report = replay(&policy, &host, &trace, PolicyKind::Pinwheel).unwrap();
        prop_assert_eq!(report.budget_violations, 0, "{:?}", report);
        prop_assert_eq!(report.pinned_evictions, 0, "{:?}", report);
        prop_assert_eq!(report.busy_evictions, 0, "{:?}", report);
        prop_assert_eq!(report.early_reloads, 0, "{:?}", report);
    }
}
