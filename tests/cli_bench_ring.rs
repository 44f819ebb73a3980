//! `pinwheel bench ring` as a user runs it: the JSON the issue specifies,
//! two processes and two threads, the ZeroMQ and hand-ring baselines, and
//! bad arguments.
//! Runs are short; they check shapes and sanity, never speed.

// The crate is test code as a whole; marking it so lets the lints that
// keep `unwrap` and `#[test]` inside test modules see that.
#![cfg(test)]

use std::process::{Command, Output};

use serde_json::Value;

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pinwheel"))
        .args(["bench", "ring"])
        .args(args)
        .output()
        .unwrap()
}

fn json_of(args: &[&str]) -> Value {
    let out = bench(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn assert_percentiles(rtt: &Value) {
    let keys = ["p50", "p90", "p99", "p999", "p9999", "max"];
    let values: Vec<u64> = keys
        .iter()
        .map(|k| rtt[k].as_u64().unwrap_or_else(|| panic!("{k} in {rtt}")))
        .collect();
    assert!(values[0] > 0, "{rtt}");
    assert!(
        values.windows(2).all(|w| w[0] <= w[1]),
        "percentiles ascend: {rtt}"
    );
}

#[test]
fn two_processes_report_percentiles_throughput_and_setup_as_json() {
    let json = json_of(&["--msgs", "3000", "--wait", "adaptive", "--json"]);
    assert_percentiles(&json["rtt_ns"]);
    assert!(json["throughput_msgs_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(json["wait"], "adaptive");
    assert_eq!(json["cpus"], serde_json::json!([0, 1]));
    assert_eq!(json["processes"], 2);
    let idle = json["idle_cpu_percent"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&idle), "{idle}");
}

#[test]
fn threads_mode_reports_one_process() {
    let json = json_of(&["--msgs", "3000", "--threads", "--wait", "park", "--json"]);
    assert_percentiles(&json["rtt_ns"]);
    assert_eq!(json["processes"], 1);
    assert_eq!(json["wait"], "park");
}

#[test]
fn the_table_names_the_case_and_the_percentiles() {
    let out = bench(&["--msgs", "2000", "--threads"]);
    let text = String::from_utf8(out.stdout).unwrap();
    for word in [
        "pinwheel ring (spin)",
        "p50",
        "p99.99",
        "max",
        "stream",
        "idle CPU",
    ] {
        assert!(text.contains(word), "{word} in {text}");
    }
}

#[test]
fn the_zeromq_baseline_runs_in_the_same_run_and_gives_ratios() {
    let json = json_of(&["--msgs", "2000", "--baseline", "zmq", "--json"]);
    assert_percentiles(&json["baseline"]["zmq"]["rtt_ns"]);
    assert!(
        json["baseline"]["zmq"]["throughput_msgs_per_s"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(json["baseline"]["ratio"]["rtt_p50"].as_f64().unwrap() > 0.0);
}

#[test]
fn the_hand_ring_baseline_runs_in_the_same_run_under_its_own_name() {
    let json = json_of(&["--msgs", "2000", "--baseline", "hand", "--json"]);
    assert_percentiles(&json["baseline"]["hand"]["rtt_ns"]);
    assert!(json["baseline"].get("zmq").is_none(), "{json}");
    assert!(
        json["baseline"]["hand"]["throughput_msgs_per_s"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(json["baseline"]["ratio"]["rtt_p50"].as_f64().unwrap() > 0.0);
    // A 64-byte body's frame takes two slots: the hand ring runs again
    // moving two a message.
    let frame = &json["baseline"]["hand_frame"];
    assert_eq!(frame["slots_per_message"], 2, "{json}");
    assert_percentiles(&frame["rtt_ns"]);
    assert!(frame["ratio"]["rtt_p50"].as_f64().unwrap() > 0.0);
    // The cases take turns over rounds; every case still times every
    // round trip of the run.
    for case in [&json, &json["baseline"]["hand"], frame] {
        assert_eq!(case["rtt_ns"]["count"], 2000, "{json}");
    }

    let out = bench(&["--msgs", "2000", "--baseline", "hand"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for row in [
        "hand ring (spin)",
        "hand / pinwheel",
        "hand ring, 2 slots",
        "hand 2-slot / pinwheel",
        "hand: a minimal SPSC ring",
        "takes turns with pinwheel's rings",
    ] {
        assert!(text.contains(row), "{row} in {text}");
    }
}

#[test]
fn an_empty_body_fits_one_slot_so_the_hand_ring_runs_once() {
    let json = json_of(&[
        "--msgs",
        "2000",
        "--size",
        "0",
        "--baseline",
        "hand",
        "--json",
    ]);
    assert_percentiles(&json["baseline"]["hand"]["rtt_ns"]);
    assert!(json["baseline"].get("hand_frame").is_none(), "{json}");
}

#[test]
fn a_body_larger_than_the_rings_carry_is_bad_input() {
    let out = bench(&["--size", "64513", "--msgs", "10", "--baseline", "hand"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--size 64513") && stderr.contains("at most 64512 bytes"),
        "{stderr}"
    );
}

#[test]
fn bad_cpus_are_bad_input() {
    for cpus in ["0", "0,0", "0,x", "0,4096"] {
        let out = bench(&["--cpus", cpus, "--msgs", "10"]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "--cpus {cpus}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--cpus"),
            "{cpus}"
        );
    }
}
