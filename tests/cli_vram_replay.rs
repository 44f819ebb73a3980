//! `pinwheel vram replay` as a user runs it: the issue's JSON shape, one
//! table row per policy, and bad input (a trace line, a topology without
//! GPU sizes, pins that over-commit) exiting 2 with the file and line.

#![cfg(test)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn replay(topology: &Path, trace: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pinwheel"))
        .args(["vram", "replay", "--topology"])
        .arg(topology)
        .arg("--trace")
        .arg(trace)
        .args(extra)
        .output()
        .unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

const TRACE: &str = r#"{"t_ms": 0, "op": "use", "agent": "STTService", "model": "whisper-large-v3", "vram_mib": 3100, "hold_ms": 800, "priority": "realtime"}
{"t_ms": 5000, "op": "use", "agent": "STTService", "model": "whisper-large-v3", "vram_mib": 3100, "hold_ms": 800, "priority": "realtime"}
"#;

#[test]
fn json_for_one_policy_has_the_issues_keys_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let trace = write(dir.path(), "t.jsonl", TRACE);
    let out = replay(
        &repo().join("topology/mainpc.toml"),
        &trace,
        &["--policy", "lru", "--json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    let keys: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "loads",
            "evictions",
            "hits",
            "misses",
            "preloads",
            "denied",
            "wait_ms",
            "max_used_mib",
            "budget_violations",
            "pinned_evictions",
            "busy_evictions"
        ]
    );
    assert_eq!(value["loads"], 1);
    assert_eq!(
        (value["hits"].clone(), value["misses"].clone()),
        (1.into(), 1.into())
    );
    assert_eq!(value["wait_ms"]["p99"], 2050);
    assert_eq!(value["max_used_mib"]["0"], 3100);
}

#[test]
fn without_a_policy_every_policy_runs_and_gets_a_row() {
    let dir = tempfile::tempdir().unwrap();
    let trace = write(dir.path(), "t.jsonl", TRACE);
    let out = replay(&repo().join("topology/mainpc.toml"), &trace, &[]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for policy in ["pinwheel", "lru", "ollama"] {
        assert!(
            text.lines().any(|l| l.starts_with(policy)),
            "{policy} missing:\n{text}"
        );
    }
}

#[test]
fn a_bad_trace_line_exits_2_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let trace = write(
        dir.path(),
        "t.jsonl",
        &format!(
            "{TRACE}{{\"t_ms\": 9000, \"op\": \"use\", \"agent\": \"a\", \"model\": \"m\", \"vram_mib\": 1, \"hold_ms\": 1, \"priority\": \"urgent\"}}\n"
        ),
    );
    let out = replay(&repo().join("topology/mainpc.toml"), &trace, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("t.jsonl:3: unknown variant `urgent`"), "{err}");
}

#[test]
fn a_topology_whose_gpus_only_nvml_knows_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let topology = write(
        dir.path(),
        "t.toml",
        "schema = 1\n[host]\nname = \"h\"\ncpus = \"auto\"\ngpus = \"nvml\"\n",
    );
    let trace = write(dir.path(), "t.jsonl", TRACE);
    let out = replay(&topology, &trace, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("replay needs the GPUs declared"), "{err}");
}

#[test]
fn pins_that_over_commit_the_gpu_exit_2_at_the_pin() {
    let dir = tempfile::tempdir().unwrap();
    let topology = write(
        dir.path(),
        "t.toml",
        "schema = 1\n[host]\nname = \"h\"\ncpus = \"auto\"\n[[gpu]]\nsimulated = true\nvram_mib = 8192\n[vram]\npin = [\n  { model = \"a\", vram_mib = 5000 },\n  { model = \"b\", vram_mib = 5000 },\n]\n",
    );
    let trace = write(dir.path(), "t.jsonl", TRACE);
    let out = replay(&topology, &trace, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("t.toml:11:3: pins on GPU 0 add up to 10000 MiB"),
        "{err}"
    );
    assert!(err.contains("11 |   { model = \"b\""), "{err}");
}
