//! A running daemon under drills, from outside: the models its agents use
//! become resident in `/v1/gpus` and the report counts them; a replica
//! slowed through `pinwheel fault` is flagged as an anomaly (in
//! `/v1/agents`, `/health` and `/metrics`) and cleared once the drill
//! ends, and the report lists it.

#![cfg(test)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use pinwheel::observe::api::{AgentsResponse, GpusResponse, HealthReport, Signal};
use pinwheel::test_support::DaemonProcess;
use serde_json::Value;

const CRATE: &str = env!("CARGO_MANIFEST_DIR");
const PINWHEEL: &str = env!("CARGO_BIN_EXE_pinwheel");

/// A coordinator calling a four-replica service.
const REPLICAS: &str = r#"
schema = 1

[[agent]]
name = "RequestCoordinator"
host = "vm"
role = "Task coordination"
ports = [26002]
kind = "native"
native = "coordinator"
class = "P"
priority = "high"
concurrency = 64
calls = ["Svc"]

[[agent]]
name = "Svc"
host = "vm"
role = "A replicated service"
ports = [27000]
kind = "synthetic"
class = "P"
priority = "high"
service = { median_us = 1000, p99_us = 3000 }
concurrency = 16
replicas = 4
"#;

fn token_file(dir: &Path) -> PathBuf {
    let path = dir.join("admin.token");
    std::fs::write(&path, "drill-test-token\n").expect("token written");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .expect("token mode set");
    path
}

fn agent_anomalies(daemon: &DaemonProcess, name: &str) -> Option<(Vec<Signal>, Option<String>)> {
    let agents: AgentsResponse = daemon.client().get("/v1/agents").ok()?;
    let agent = agents.agents.into_iter().find(|a| a.name == name)?;
    Some((agent.anomalies, agent.fault))
}

fn reasons(daemon: &DaemonProcess) -> Vec<String> {
    let health: HealthReport = daemon.client().get("/health").expect("/health answers");
    health.reasons.into_iter().map(|r| r.reason).collect()
}

fn fault(daemon: &DaemonProcess, token: &Path, args: &[&str]) -> String {
    let out = Command::new(PINWHEEL)
        .arg("fault")
        .args(args)
        .args(["--admin", &daemon.addr().to_string(), "--token-file"])
        .arg(token)
        .output()
        .expect("pinwheel fault runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn report(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("the report is written"))
        .expect("the report is JSON")
}

#[test]
fn models_the_agents_use_are_resident_in_v1_gpus_during_a_run_and_the_report_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let report_path = dir.path().join("report.json");
    let daemon = DaemonProcess::start(
        Path::new(PINWHEEL),
        Path::new(CRATE),
        &[
            "--topology",
            "topology/vm-2cpu.toml",
            "--agents",
            "agents/mainpc.toml",
            "--unprivileged",
            "--report",
            report_path.to_str().unwrap(),
        ],
    );

    daemon.wait_for("a model resident and used", |client| {
        client
            .get::<GpusResponse>("/v1/gpus")
            .is_ok_and(|g| g.gpus.iter().any(|gpu| !gpu.resident.is_empty()) && g.vram.hits > 0)
    });
    let gpus: GpusResponse = daemon.client().get("/v1/gpus").unwrap();
    assert!(daemon.terminate().success());

    assert!(gpus.vram.loads + gpus.vram.preloads > 0, "{:?}", gpus.vram);
    let vram = &report(&report_path)["vram"];
    for key in [
        "loads",
        "evictions",
        "hits",
        "misses",
        "waits",
        "wait_p99_ns",
    ] {
        assert!(vram[key].is_u64(), "vram.{key} in {vram}");
    }
    assert!(vram["hits"].as_u64().unwrap() >= gpus.vram.hits, "{vram}");
}

#[test]
fn a_replica_slowed_by_a_drill_is_flagged_as_an_anomaly_and_cleared_after_it_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("replicas.toml");
    std::fs::write(&manifest, REPLICAS).unwrap();
    let token = token_file(dir.path());
    let report_path = dir.path().join("report.json");
    let daemon = DaemonProcess::start(
        Path::new(PINWHEEL),
        Path::new(CRATE),
        &[
            "--topology",
            "topology/vm-2cpu.toml",
            "--agents",
            manifest.to_str().unwrap(),
            "--unprivileged",
            "--rate",
            "200",
            "--admin-token-file",
            token.to_str().unwrap(),
            "--report",
            report_path.to_str().unwrap(),
        ],
    );

    let said = fault(&daemon, &token, &["Svc#1", "--slow", "20x"]);
    assert_eq!(said.trim(), "Svc#1: slow=20x");
    daemon.wait_for("Svc#1 flagged", |_| {
        agent_anomalies(&daemon, "Svc#1")
            .is_some_and(|(a, f)| a.contains(&Signal::Latency) && f.as_deref() == Some("slow=20x"))
    });
    assert!(reasons(&daemon).contains(&"agent_anomaly".to_owned()));
    let metrics = daemon.client().text("/metrics").unwrap();
    assert!(
        metrics.contains("pinwheel_agent_anomaly{agent=\"Svc#1\",signal=\"latency\"} 1"),
        "{metrics}"
    );
    assert_eq!(
        agent_anomalies(&daemon, "Svc#0").map(|(a, _)| a),
        Some(Vec::new())
    );

    let said = fault(&daemon, &token, &["Svc#1", "--clear"]);
    assert_eq!(said.trim(), "Svc#1: none");
    daemon.wait_for("Svc#1 cleared", |_| {
        agent_anomalies(&daemon, "Svc#1").is_some_and(|(a, f)| a.is_empty() && f.is_none())
            && !reasons(&daemon).contains(&"agent_anomaly".to_owned())
    });
    assert!(daemon.terminate().success());

    let report = report(&report_path);
    let seen = report["anomalies"].as_array().expect("anomalies listed");
    assert!(
        seen.iter()
            .any(|a| a["agent"] == "Svc#1" && a["signal"] == "latency" && a["cleared_s"].is_f64()),
        "{seen:?}"
    );
}
