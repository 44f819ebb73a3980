//! Bad input to `pinwheel validate` and `pinwheel plan`: one clear message
//! naming the file, line and column and what to change; exit code 2; no
//! output on stdout.

// The crate is test code as a whole; marking it so lets the lints that
// keep `unwrap` and `#[test]` inside test modules see that.
#![cfg(test)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const TOPOLOGY: &str = r#"schema = 1
[host]
name = "box"
cpus = { P = "0-3", E = "4-7" }
[roles]
data_plane = { cpus = "0-5" }
control = { cpus = "7" }
housekeeping = { cpus = "6" }
"#;

const AGENTS: &str = r#"schema = 1
[[agent]]
name = "ModelManagerSuite"
host = "box"
role = "models"
kind = "synthetic"

[[agent]]
name = "STTService"
host = "box"
role = "speech-to-text"
kind = "synthetic"
calls = ["ModelManagerSuite"]
"#;

struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn new(topology: &str, agents: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("topo.toml"), topology).unwrap();
        std::fs::write(dir.path().join("agents.toml"), agents).unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run(&self, command: &str) -> Output {
        Command::new(env!("CARGO_BIN_EXE_pinwheel"))
            .arg(command)
            .arg("--topology")
            .arg(self.path("topo.toml"))
            .arg("--agents")
            .arg(self.path("agents.toml"))
            .output()
            .unwrap()
    }

    /// Runs both commands and checks the common contract; returns stderr.
    fn rejects(&self, file: &str, line: usize) -> String {
        let mut last = String::new();
        for command in ["validate", "plan"] {
            let out = self.run(command);
            let stderr = String::from_utf8(out.stderr).unwrap();
            assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
            assert!(
                out.stdout.is_empty(),
                "{command} printed {:?}",
                String::from_utf8_lossy(&out.stdout)
            );
            let at = format!("error: {}:{line}:", self.path(file).display());
            assert!(
                stderr.starts_with(&at),
                "{command}: expected {at:?} in {stderr}"
            );
            assert!(
                stderr.contains(&format!("\n{line} | ")),
                "no source line in {stderr}"
            );
            assert!(stderr.contains('^'), "no caret in {stderr}");
            last = stderr;
        }
        last
    }
}

fn with_line(text: &str, after: &str, added: &str) -> String {
    text.replacen(after, &format!("{after}{added}"), 1)
}

#[test]
fn good_files_validate_and_plan() {
    let case = Case::new(TOPOLOGY, AGENTS);
    let out = case.run("validate");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("define 2 agents; 2 planned on host box with 0 warnings"),
        "{stdout}"
    );
    assert_eq!(case.run("plan").status.code(), Some(0));
}

#[test]
fn malformed_toml_is_rejected_with_its_line() {
    let case = Case::new(&TOPOLOGY.replace("[roles]", "[roles"), AGENTS);
    let stderr = case.rejects("topo.toml", 5);
    assert!(stderr.contains("unclosed table, expected `]`"), "{stderr}");
}

#[test]
fn an_unknown_key_is_rejected_with_the_keys_that_exist() {
    let case = Case::new(
        TOPOLOGY,
        &with_line(AGENTS, "role = \"models\"\n", "colour = \"red\"\n"),
    );
    let stderr = case.rejects("agents.toml", 6);
    assert!(
        stderr.contains("unknown field `colour`, expected one of"),
        "{stderr}"
    );
}

#[test]
fn an_unknown_agent_in_calls_suggests_the_closest_name() {
    let case = Case::new(
        TOPOLOGY,
        &AGENTS.replace(
            "calls = [\"ModelManagerSuite\"]",
            "calls = [\"ModelManagerSuit\"]",
        ),
    );
    let stderr = case.rejects("agents.toml", 13);
    assert!(stderr.contains("agent STTService calls unknown agent \"ModelManagerSuit\"; did you mean \"ModelManagerSuite\"?"), "{stderr}");
}

#[test]
fn a_role_cpu_the_host_does_not_have_is_rejected() {
    let case = Case::new(
        &TOPOLOGY.replace(
            "data_plane = { cpus = \"0-5\" }",
            "data_plane = { cpus = \"0-5,12\" }",
        ),
        AGENTS,
    );
    let stderr = case.rejects("topo.toml", 6);
    assert!(
        stderr.contains("CPU 12 is not a CPU of host box (its CPUs: P 0-3, E 4-7)"),
        "{stderr}"
    );
}

#[test]
fn an_agent_pinned_to_a_cpu_the_host_does_not_have_is_rejected() {
    let case = Case::new(
        TOPOLOGY,
        &with_line(AGENTS, "role = \"models\"\n", "cpu = 12\n"),
    );
    let stderr = case.rejects("agents.toml", 6);
    assert!(
        stderr.contains("pinned to CPU 12, which host box does not have (data-plane CPUs: 0-5)"),
        "{stderr}"
    );
}

#[test]
fn a_duplicate_agent_is_rejected_naming_the_first() {
    let case = Case::new(
        TOPOLOGY,
        &AGENTS
            .replace("name = \"STTService\"", "name = \"ModelManagerSuite\"")
            .replace("calls = [\"ModelManagerSuite\"]\n", ""),
    );
    let stderr = case.rejects("agents.toml", 8);
    assert!(
        stderr.contains("agent ModelManagerSuite on host box is defined twice (first at"),
        "{stderr}"
    );
    assert!(stderr.contains("agents.toml:2:1"), "{stderr}");
}

#[test]
fn two_roles_claiming_one_cpu_are_rejected() {
    let case = Case::new(
        &TOPOLOGY.replace(
            "housekeeping = { cpus = \"6\" }",
            "housekeeping = { cpus = \"5-6\" }",
        ),
        AGENTS,
    );
    let stderr = case.rejects("topo.toml", 8);
    assert!(
        stderr.contains("CPU 5 is claimed by both data_plane and housekeeping"),
        "{stderr}"
    );
}

#[test]
fn an_agent_pinned_to_a_cpu_its_role_forbids_is_rejected() {
    let case = Case::new(
        TOPOLOGY,
        &with_line(AGENTS, "role = \"models\"\n", "cpu = 6\n"),
    );
    let stderr = case.rejects("agents.toml", 6);
    assert!(
        stderr.contains("pinned to CPU 6, which has role housekeeping"),
        "{stderr}"
    );
    assert!(
        stderr.contains("pin it to one of those, or move CPU 6 to the data plane"),
        "{stderr}"
    );
}

#[test]
fn a_gpu_with_no_vram_is_rejected() {
    let topology = format!("{TOPOLOGY}[[gpu]]\nsimulated = true\nname = \"sim\"\nvram_mib = 0\n");
    let case = Case::new(&topology, AGENTS);
    let stderr = case.rejects("topo.toml", 12);
    assert!(
        stderr.contains("GPU 0 (sim) has no VRAM; set `vram_mib`"),
        "{stderr}"
    );
}

#[test]
fn a_missing_file_is_bad_input_too() {
    let out = Command::new(env!("CARGO_BIN_EXE_pinwheel"))
        .args(["validate", "--topology"])
        .arg(Path::new("/nonexistent/topo.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/topo.toml"));
}

#[test]
fn a_manifest_with_too_many_calls_is_rejected_at_the_first_call_too_many() {
    let max = pinwheel::config::limits::MAX_CALLS;
    let mut agents = AGENTS.to_owned();
    let mut calls = Vec::new();
    for i in 0..=max {
        agents.push_str(&format!(
            "\n[[agent]]\nname = \"Callee{i}\"\nhost = \"box\"\nrole = \"x\"\nkind = \"synthetic\"\n"
        ));
        calls.push(format!("\"Callee{i}\""));
    }
    agents.push_str(&format!(
        "\n[[agent]]\nname = \"Caller\"\nhost = \"box\"\nrole = \"x\"\nkind = \"synthetic\"\ncalls = [{}]\n",
        calls.join(", ")
    ));
    let line = agents.lines().count();
    let case = Case::new(TOPOLOGY, &agents);

    let stderr = case.rejects("agents.toml", line);

    assert!(
        stderr.contains(&format!(
            "agent Caller: calls: {} entries; at most {max} are accepted",
            max + 1
        )),
        "{stderr}"
    );
}

#[test]
fn a_plan_rate_out_of_range_is_rejected_and_a_good_one_is_the_request_load() {
    let case = Case::new(TOPOLOGY, AGENTS);
    let plan = |rate: &str| {
        Command::new(env!("CARGO_BIN_EXE_pinwheel"))
            .args(["plan", "--format", "json", "--rate", rate, "--topology"])
            .arg(case.path("topo.toml"))
            .arg("--agents")
            .arg(case.path("agents.toml"))
            .output()
            .unwrap()
    };
    for bad in ["-1", "NaN", "2000000"] {
        let out = plan(bad);
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}: {stderr}");
        assert!(out.stdout.is_empty(), "{bad}");
        assert!(stderr.contains("--rate"), "{stderr}");
        assert!(stderr.contains("requests a second"), "{stderr}");
    }
    // These agents have no coordinator for requests to enter by: no load.
    let out = plan("1000");
    assert_eq!(out.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(json.get("request_load").is_none(), "{json}");
    let agents = with_line(
        AGENTS,
        "role = \"models\"\nkind = \"synthetic\"\n",
        "\n[[agent]]\nname = \"RequestCoordinator\"\nhost = \"box\"\nrole = \"requests\"\nkind = \"native\"\nnative = \"coordinator\"\ncalls = [\"STTService\"]\n",
    );
    let case = Case::new(TOPOLOGY, &agents);
    let out = Command::new(env!("CARGO_BIN_EXE_pinwheel"))
        .args(["plan", "--format", "json", "--rate", "1000", "--topology"])
        .arg(case.path("topo.toml"))
        .arg("--agents")
        .arg(case.path("agents.toml"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let load = &json["request_load"];
    assert_eq!(load["rate_per_s"], 1000.0);
    assert_eq!(load["entry"], "RequestCoordinator");
    // Two calls a request, each 2 messages at each end: 8,000 a second,
    // and more for each call that crosses CPUs.
    let total: f64 = load["messages_per_s"]
        .as_array()
        .unwrap()
        .iter()
        .map(|cpu| cpu["per_s"].as_f64().unwrap())
        .sum();
    assert!(total >= 8000.0, "{load}");
}
