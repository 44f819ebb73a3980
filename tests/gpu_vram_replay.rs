#![cfg(test)]
//! The VRAM optimizer against the LRU and Ollama baselines on the traces
//! of `tests/fixtures/traces/` (generated from the seed's agents by
//! `pinwheel::test_support::traces`; `PINWHEEL_BLESS=1` rewrites them).
//!
//! Targets from the issue: on each realistic trace at least 30% fewer
//! misses than the better baseline, with at most 1.2x its loads, and no
//! budget violation, pinned eviction or busy eviction. Counts are
//! deterministic, so they are asserted exactly where it matters.

use std::path::PathBuf;

use pinwheel::gpu::vram::replay::{PolicyKind, Report, Trace, replay, replay_host};
use pinwheel::test_support::traces;
use pinwheel::topology::load_gpu_sections;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(trace_file: &str, kind: PolicyKind) -> Report {
    let topology = repo().join("topology/mainpc.toml");
    let sections = load_gpu_sections(&topology).unwrap();
    let host = replay_host(&topology, &sections).unwrap();
    let trace = Trace::read(&repo().join("tests/fixtures/traces").join(trace_file), 1).unwrap();
    replay(&sections.vram, &host, &trace, kind).unwrap()
}

fn check_targets(trace_file: &str) {
    let sut = run(trace_file, PolicyKind::Pinwheel);
    let lru = run(trace_file, PolicyKind::Lru);
    let ollama = run(trace_file, PolicyKind::Ollama);
    let better = if lru.misses <= ollama.misses {
        &lru
    } else {
        &ollama
    };
    let summary = format!("{trace_file}\npinwheel {sut:?}\nlru {lru:?}\nollama {ollama:?}");
    assert!(
        sut.misses as f64 <= 0.7 * better.misses as f64,
        "misses not 30% below the better baseline: {summary}"
    );
    assert!(
        sut.loads as f64 <= 1.2 * better.loads as f64,
        "loads above 1.2x the better baseline: {summary}"
    );
    assert_eq!(
        (
            sut.budget_violations,
            sut.pinned_evictions,
            sut.busy_evictions
        ),
        (0, 0, 0),
        "{summary}"
    );
    assert_eq!(sut.early_reloads, 0, "{summary}");
    assert_eq!(sut.denied, 0, "{summary}");
}

#[test]
fn the_trace_fixtures_are_what_the_generator_makes() {
    let dir = repo().join("tests/fixtures/traces");
    for (name, text) in traces::generate(&repo()).unwrap() {
        let path = dir.join(name);
        if std::env::var_os("PINWHEEL_BLESS").is_some() {
            std::fs::write(&path, &text).unwrap();
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == text,
            "{} differs from the generator; rerun with PINWHEEL_BLESS=1",
            path.display()
        );
    }
}

#[test]
fn over_a_voice_assistant_day_pinwheel_misses_30_percent_less_than_the_baselines() {
    check_targets("voice-day.jsonl");
}

#[test]
fn in_a_burst_pinwheel_misses_30_percent_less_than_the_baselines() {
    check_targets("voice-burst.jsonl");
}

#[test]
fn under_memory_pressure_pinwheel_misses_30_percent_less_than_the_baselines() {
    check_targets("memory-pressure.jsonl");
}

#[test]
fn replay_is_deterministic() {
    assert_eq!(
        run("voice-burst.jsonl", PolicyKind::Pinwheel),
        run("voice-burst.jsonl", PolicyKind::Pinwheel)
    );
}

#[test]
fn the_baselines_know_no_pins() {
    for kind in [PolicyKind::Lru, PolicyKind::Ollama] {
        let report = run("memory-pressure.jsonl", kind);
        assert!(report.pinned_evictions > 0, "{kind:?}: {report:?}");
    }
}
