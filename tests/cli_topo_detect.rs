//! `pinwheel topo detect` as a user runs it: the JSON schema, and a TOML
//! file that validates and plans as written.

// The crate is test code as a whole; marking it so lets the lints that
// keep `unwrap` and `#[test]` inside test modules see that.
#![cfg(test)]

use std::process::{Command, Output};

use serde_json::Value;

const HYBRID: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/sysfs/20em64t-hybrid-1p6c2t+2ca4co1t/sys"
);
const VOICE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/agents/voice-pipeline.toml");

fn pinwheel(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_pinwheel"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pinwheel {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn json_lists_online_cpus_ascending_with_the_deciding_rung() {
    let out = pinwheel(&["topo", "detect", "--sysfs-root", HYBRID, "--format", "json"]);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["source"], "base_frequency");
    let cpus = json["cpus"].as_array().unwrap();
    assert_eq!(cpus.len(), 20);
    let ids: Vec<u64> = cpus.iter().map(|c| c["cpu"].as_u64().unwrap()).collect();
    assert_eq!(ids, (0..20).collect::<Vec<u64>>());
    let first = &cpus[0];
    assert_eq!(first["class"], "P");
    assert_eq!(first["core"], 0);
    assert_eq!(first["package"], 0);
    assert_eq!(first["numa"], 0);
    assert_eq!(first["siblings"], serde_json::json!([0, 1]));
    assert_eq!(first["l2"], serde_json::json!([0, 1]));
    assert_eq!(first["l3"].as_array().unwrap().len(), 20);
    assert_eq!(cpus[12]["class"], "E");
    assert_eq!(cpus[12]["l2"], serde_json::json!([12, 13, 14, 15]));
}

#[test]
fn toml_output_is_a_topology_file_that_validates_and_plans() {
    let out = pinwheel(&["topo", "detect", "--sysfs-root", HYBRID]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("cpus = { P = \"0-11\", E = \"12-19\" }"),
        "{text}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("laptop.toml");
    std::fs::write(&path, &text).unwrap();
    let path = path.to_str().unwrap();
    let validate = pinwheel(&["validate", "--topology", path, "--agents", VOICE]);
    let stdout = String::from_utf8(validate.stdout).unwrap();
    assert!(
        stdout.contains("describes host 20em64t-hybrid-1p6c2t-2ca4co1t (20 CPUs, data plane 0-17)"),
        "{stdout}"
    );
    let plan = pinwheel(&[
        "plan",
        "--topology",
        path,
        "--agents",
        VOICE,
        "--format",
        "json",
    ]);
    let json: Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(json["placements"].as_array().unwrap().len(), 15);
    assert!(
        json["placements"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["class"] == "P")
    );
}

#[test]
fn the_live_host_is_detected_within_this_process_affinity() {
    let out = pinwheel(&["topo", "detect", "--format", "json"]);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let cpus = json["cpus"].as_array().unwrap();
    assert!(!cpus.is_empty());
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    let count = std::thread::available_parallelism().unwrap().get();
    assert!(
        cpus.len() <= count,
        "{} CPUs detected, {count} available (online {online})",
        cpus.len()
    );
}

#[test]
fn auto_topology_plans_the_mainpc_agents_on_this_host() {
    let topology = concat!(env!("CARGO_MANIFEST_DIR"), "/topology/auto.toml");
    let agents = concat!(env!("CARGO_MANIFEST_DIR"), "/agents/mainpc.toml");
    let plan = pinwheel(&[
        "plan",
        "--topology",
        topology,
        "--agents",
        agents,
        "--format",
        "json",
    ]);
    let json: Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(json["placements"].as_array().unwrap().len(), 54);
}
