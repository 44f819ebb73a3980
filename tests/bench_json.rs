//! `pinwheel bench ring|router|wakeup|mesh --json` as a program reads it:
//! every bench prints one JSON object whose latencies are percentiles in
//! nanoseconds under the keys the issue names, and the mesh carries the
//! load generator's counts, which add up. Runs are tiny and unprivileged;
//! they check shapes and counts, never speed.

// The crate is test code as a whole; marking it so lets the lints that
// keep `unwrap` and `#[test]` inside test modules see that.
#![cfg(test)]

use std::process::Command;

use serde_json::Value;

const VM_2CPU: &str = "topology/vm-2cpu.toml";
const PERCENTILES: [&str; 5] = ["p50", "p90", "p99", "p999", "max"];

fn bench_json(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_pinwheel"))
        .arg("bench")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?}: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `report[key]` is a latency summary with every percentile, in order.
fn assert_percentiles(report: &Value, key: &str) {
    let summary = &report[key];
    let values: Vec<u64> = PERCENTILES
        .iter()
        .map(|p| {
            summary[p]
                .as_u64()
                .unwrap_or_else(|| panic!("{key}.{p}: {report:#}"))
        })
        .collect();
    assert!(values.windows(2).all(|w| w[0] <= w[1]), "{key}: {summary}");
}

fn u64_at(report: &Value, key: &str) -> u64 {
    report[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key}: {report:#}"))
}

#[test]
fn ring_json_keeps_its_keys_and_gives_every_percentile() {
    let report = bench_json(&["ring", "--threads", "--msgs", "300"]);
    assert_percentiles(&report, "rtt_ns");
    assert!(
        report["throughput_msgs_per_s"].as_f64() > Some(0.0),
        "{report:#}"
    );
}

#[test]
fn router_json_gives_the_ring_and_both_calls() {
    let report = bench_json(&["router", "--msgs", "300"]);
    for key in ["ring_rtt_ns", "call_far_rtt_ns", "call_near_rtt_ns"] {
        assert_percentiles(&report, key);
    }
}

#[test]
fn wakeup_json_gives_the_executor_and_the_thread() {
    let report = bench_json(&[
        "wakeup",
        "--topology",
        VM_2CPU,
        "--loops",
        "30",
        "--unprivileged",
    ]);
    for key in ["executor_ns", "thread_ns"] {
        assert_percentiles(&report, key);
        assert_eq!(report[key]["count"].as_u64(), Some(30), "{report:#}");
    }
}

#[test]
fn mesh_json_counts_every_offered_request_as_sent_or_not_and_every_sent_one_once() {
    let report = bench_json(&[
        "mesh",
        "--topology",
        VM_2CPU,
        "--agents",
        "agents/voice-pipeline.toml",
        "--overhead",
        "--duration",
        "1",
        "--rate",
        "200",
        "--unprivileged",
    ]);
    assert_percentiles(&report, "e2e_ns");
    let offered = u64_at(&report, "offered");
    let sent = u64_at(&report, "sent");
    assert!(offered > 0, "{report:#}");
    assert_eq!(offered, sent + u64_at(&report, "not_sent"), "{report:#}");
    let ended: u64 = ["completed", "failed", "timed_out", "lost"]
        .iter()
        .map(|k| u64_at(&report, k))
        .sum();
    assert_eq!(ended, sent, "{report:#}");
    assert_eq!(report["overhead"], Value::Bool(true), "{report:#}");
    // The busiest agents, busiest first, each with its workers' count.
    let busiest = report["busiest_agents"].as_array().expect("a list");
    assert!(!busiest.is_empty() && busiest.len() <= 3, "{report:#}");
    let shares: Vec<f64> = busiest
        .iter()
        .map(|a| a["busy_share"].as_f64().expect("a number"))
        .collect();
    assert!(shares.windows(2).all(|w| w[0] >= w[1]), "{report:#}");
    assert!(
        busiest
            .iter()
            .all(|a| a["agent"].is_string() && u64_at(a, "concurrency") >= 1),
        "{report:#}"
    ); // Each executor's stretches off the CPU while awake, one entry per
    // executor, by CPU, consistent with themselves.
    let off = report["off_cpu"].as_array().expect("a list");
    assert!(!off.is_empty() && off.len() <= 2, "{report:#}");
    let cpus: Vec<u64> = off.iter().map(|e| u64_at(e, "cpu")).collect();
    assert!(cpus.windows(2).all(|w| w[0] < w[1]), "{report:#}");
    for e in off {
        let (count, total, longest) = (
            u64_at(e, "count"),
            u64_at(e, "total_ns"),
            u64_at(e, "longest_ns"),
        );
        assert!(longest <= total && (count > 0) == (total > 0), "{report:#}");
        assert!(
            e["share"].as_f64().is_some_and(|s| (0.0..1.0).contains(&s)),
            "{report:#}"
        );
    }
}

#[test]
fn find_max_names_the_highest_passing_rate_and_that_run_s_counts() {
    let report = bench_json(&[
        "mesh",
        "--topology",
        VM_2CPU,
        "--agents",
        "agents/voice-pipeline.toml",
        "--overhead",
        "--find-max",
        "--duration",
        "0.3",
        "--unprivileged",
    ]);
    let max = report["max_rate_per_s"].as_f64().unwrap();
    let probes = report["probes"].as_array().unwrap();
    let passed: Vec<f64> = probes
        .iter()
        .filter(|p| p["passed"] == Value::Bool(true))
        .map(|p| p["rate_per_s"].as_f64().unwrap())
        .collect();
    assert_eq!(
        passed.iter().copied().fold(0.0, f64::max),
        max,
        "{report:#}"
    );
    // The search brackets the maximum: a failing rate below it failed
    // only by its p99 (a saturated run ends the way up), and when nothing
    // passed it went down to the lowest rate.
    let verdict = |p: &Value| p["verdict"].as_str().unwrap().to_owned();
    for p in probes {
        let v = verdict(p);
        assert!(["pass", "slow", "saturated"].contains(&v.as_str()), "{p:#}");
        assert_eq!(p["passed"] == Value::Bool(true), v == "pass", "{p:#}");
        // Each probe says how long the executors were off the CPU.
        assert!(
            u64_at(p, "off_cpu_longest_ns") <= u64_at(p, "off_cpu_ns"),
            "{p:#}"
        );
        if v == "saturated" {
            assert!(p["rate_per_s"].as_f64().unwrap() > max, "{report:#}");
        }
    }
    if max == 0.0 {
        let lowest = probes.iter().map(|p| p["rate_per_s"].as_f64().unwrap());
        assert_eq!(lowest.fold(f64::MAX, f64::min), 15.625, "{report:#}");
    }
    if max > 0.0 {
        assert_eq!(report["rate_per_s"].as_f64(), Some(max), "{report:#}");
        assert_percentiles(&report, "e2e_ns");
        assert!(u64_at(&report, "completed") > 0, "{report:#}");
        assert_eq!(
            u64_at(&report, "offered"),
            u64_at(&report, "sent"),
            "{report:#}"
        );
    }
}
