//! `pinwheel run` as an operator runs it: the binary in a subprocess, from
//! the crate root, on this 2-CPU host. A short run writes the full report;
//! SIGTERM and SIGINT drain and exit 0; registry snapshots survive a
//! restart; cycles in `calls` neither hang nor fail requests; bad input
//! exits 2 before anything starts; the defaults find their files; the
//! privileged path (root, SCHED_FIFO) completes.
//!
//! Only one daemon runs at a time ([`one_daemon_at_a_time`]): the harness
//! runs these tests in parallel on two CPUs, and two meshes would each
//! think they own both. Timing is never asserted; waits have a generous
//! hang guard that fails the test instead of hanging the suite.

// The crate is test code as a whole; marking it so lets the lints that
// keep `unwrap` and `#[test]` inside test modules see that.
#![cfg(test)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

const CRATE: &str = env!("CARGO_MANIFEST_DIR");
const VM_2CPU: &str = "topology/vm-2cpu.toml";
const MAINPC: &str = "agents/mainpc.toml";
const PC2: &str = "agents/pc2.toml";
/// Agents in agents/mainpc.toml, and in it and agents/pc2.toml together.
const MAINPC_AGENTS: u64 = 54;
const ALL_AGENTS: u64 = 79;
/// How long a daemon may take to reach a state before the test gives up:
/// a guard against hangs on a loaded machine, not a speed requirement.
const HANG_GUARD: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(20);

const REPORT_KEYS: [&str; 16] = [
    "agents_planned",
    "agents_started",
    "startup_ms",
    "run_s",
    "rate_per_s",
    "e2e_latency_ns",
    "requests",
    "placement_violations",
    "per_agent",
    "voice_latency_ns",
    "routes",
    "coordinators",
    "registries",
    "stream_frames",
    "router",
    "degraded",
];
const NESTED_KEYS: [(&str, &[&str]); 4] = [
    ("e2e_latency_ns", &["count", "p50", "p99", "p999", "max"]),
    (
        "requests",
        &[
            "offered",
            "sent",
            "not_sent",
            "completed",
            "failed",
            "timed_out",
            "lost",
        ],
    ),
    ("stream_frames", &["sent", "completed"]),
    (
        "router",
        &[
            "local",
            "remote",
            "accepted",
            "dropped",
            "late_replies",
            "unroutable",
        ],
    ),
];
const AGENT_KEYS: [&str; 11] = [
    "name",
    "host",
    "kind",
    "planned_cpu",
    "observed_cpu",
    "handled",
    "failures",
    "restarts",
    "expired",
    "concurrency",
    "busy_share",
];
const COORDINATOR_KEYS: [&str; 10] = [
    "name",
    "accepted",
    "overloaded",
    "expired",
    "completed",
    "failed",
    "retries",
    "rejected",
    "breaker_opened",
    "breaker_closed",
];
const REGISTRY_KEYS: [&str; 6] = [
    "name",
    "restored",
    "entries",
    "up",
    "saves",
    "snapshot_errors",
];

/// Three agents whose calls loop: Coord -> A -> B -> A.
const CYCLE: &str = r#"schema = 1

[[agent]]
name = "Coord"
host = "box"
role = "coordination"
kind = "native"
native = "coordinator"
concurrency = 16
calls = ["A"]

[[agent]]
name = "A"
host = "box"
role = "first of the loop"
kind = "synthetic"
concurrency = 8
service = { median_us = 100, p99_us = 400 }
calls = ["B"]

[[agent]]
name = "B"
host = "box"
role = "second of the loop"
kind = "synthetic"
concurrency = 8
service = { median_us = 100, p99_us = 400 }
calls = ["A"]
"#;

static DAEMON: Mutex<()> = Mutex::new(());

/// Holds the one-daemon lock; a test that failed holding it poisons
/// nothing that matters, so the others go on.
fn one_daemon_at_a_time() -> MutexGuard<'static, ()> {
    DAEMON
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How a finished `pinwheel` ended.
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Finished {
    fn assert_success(&self) {
        assert!(
            self.status.success(),
            "pinwheel exited with {}\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
    }
}

/// A temporary directory for one test's files, the daemon's output among
/// them (files, not pipes: nothing blocks however much it logs).
struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `text` to `name` in the case's directory; its path.
    fn write(&self, name: &str, text: &str) -> String {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    }

    fn report_path(&self) -> String {
        self.path("report.json").to_str().unwrap().to_owned()
    }

    /// Starts `pinwheel run ARGS` in the crate root.
    fn spawn(&self, args: &[&str]) -> Child {
        Command::new(env!("CARGO_BIN_EXE_pinwheel"))
            .arg("run")
            .args(args)
            .current_dir(CRATE)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(File::create(self.path("stdout")).unwrap())
            .stderr(File::create(self.path("stderr")).unwrap())
            .spawn()
            .unwrap()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.path("stderr")).unwrap_or_default()
    }

    /// Waits until stderr contains `needle`; fails if the daemon exits or
    /// the hang guard passes first.
    fn wait_for_stderr(&self, child: &mut Child, needle: &str) {
        let began = Instant::now();
        while !self.stderr().contains(needle) {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("exited with {status} before {needle:?}:\n{}", self.stderr());
            }
            if began.elapsed() > HANG_GUARD {
                let _ = child.kill();
                panic!("no {needle:?} after {HANG_GUARD:?}:\n{}", self.stderr());
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits for the daemon to exit (killing it past the hang guard).
    fn wait(&self, mut child: Child) -> Finished {
        let began = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if began.elapsed() > HANG_GUARD {
                let _ = child.kill();
                let _ = child.wait();
                panic!("still running after {HANG_GUARD:?}:\n{}", self.stderr());
            }
            std::thread::sleep(POLL);
        };
        Finished {
            status,
            stdout: std::fs::read_to_string(self.path("stdout")).unwrap(),
            stderr: self.stderr(),
        }
    }

    fn run(&self, args: &[&str]) -> Finished {
        self.wait(self.spawn(args))
    }

    /// The JSON report, if one was written.
    fn report(&self) -> Option<Value> {
        let text = std::fs::read_to_string(self.report_path()).ok()?;
        Some(serde_json::from_str(&text).unwrap())
    }

    /// Runs `pinwheel run ARGS --report FILE`, expecting success; what it
    /// printed and its report.
    fn run_ok(&self, args: &[&str]) -> (Finished, Value) {
        let _ = std::fs::remove_file(self.report_path());
        let report = self.report_path();
        let args: Vec<&str> = args.iter().copied().chain(["--report", &report]).collect();
        let finished = self.run(&args);
        finished.assert_success();
        let report = self.report().expect("a successful run writes its report");
        (finished, report)
    }
}

/// `pinwheel run ARGS` in a fresh case, expecting success.
fn run_pinwheel(args: &[&str]) -> (Finished, Value) {
    Case::new().run_ok(args)
}

fn u64_at(json: &Value, pointer: &str) -> u64 {
    json.pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{pointer} is not a number in {json:#}"))
}

fn array<'a>(json: &'a Value, key: &str) -> &'a Vec<Value> {
    json[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} is not an array"))
}

fn assert_keys(object: &Value, keys: &[&str], what: &str) {
    for key in keys {
        assert!(object.get(key).is_some(), "{what} has no {key:?}: {object}");
    }
}

/// Every key of the report's documented schema, at every level.
fn assert_report_schema(report: &Value) {
    assert_keys(report, &REPORT_KEYS, "the report");
    assert_keys(&report["voice_latency_ns"], NESTED_KEYS[0].1, "voice");
    for (key, inner) in NESTED_KEYS {
        assert_keys(&report[key], inner, key);
    }
    for agent in array(report, "per_agent") {
        assert_keys(agent, &AGENT_KEYS, "per_agent[]");
    }
    for route in array(report, "routes") {
        assert_keys(route, &["from", "to", "latency_ns"], "routes[]");
        assert_keys(&route["latency_ns"], NESTED_KEYS[0].1, "latency_ns");
    }
    for coordinator in array(report, "coordinators") {
        assert_keys(coordinator, &COORDINATOR_KEYS, "coordinators[]");
    }
    for registry in array(report, "registries") {
        assert_keys(registry, &REGISTRY_KEYS, "registries[]");
    }
    assert!(
        report["degraded"].is_array(),
        "degraded: {}",
        report["degraded"]
    );
}

/// Every request sent was answered OK, and none went missing; the
/// offered count is every sent one plus every one not sent.
fn assert_every_request_completed(report: &Value) {
    let sent = u64_at(report, "/requests/sent");
    assert_eq!(u64_at(report, "/requests/completed"), sent, "{report:#}");
    let offered = u64_at(report, "/requests/offered");
    let not_sent = u64_at(report, "/requests/not_sent");
    assert_eq!(offered, sent + not_sent, "{report:#}");
    assert!(offered > 0, "{report:#}");
    for outcome in ["failed", "timed_out", "lost"] {
        let count = u64_at(report, &format!("/requests/{outcome}"));
        assert_eq!(count, 0, "{outcome}: {:#}", report["requests"]);
    }
}

/// A run drained by nothing but a signal: none lost, failed or timed out.
fn assert_drained(report: &Value) {
    for outcome in ["failed", "timed_out", "lost"] {
        let count = u64_at(report, &format!("/requests/{outcome}"));
        assert_eq!(count, 0, "{outcome}: {:#}", report["requests"]);
    }
}

/// Each registry's report entry, by name.
fn registries(report: &Value) -> Vec<(String, &Value)> {
    array(report, "registries")
        .iter()
        .map(|r| (r["name"].as_str().unwrap().to_owned(), r))
        .collect()
}

fn route_pairs(report: &Value) -> Vec<(String, String)> {
    array(report, "routes")
        .iter()
        .map(|r| {
            let end = |key: &str| r[key].as_str().unwrap().to_owned();
            (end("from"), end("to"))
        })
        .collect()
}

#[test]
fn a_short_run_of_both_hosts_writes_a_complete_report() {
    let _one = one_daemon_at_a_time();
    let (finished, report) = run_pinwheel(&[
        "--topology",
        VM_2CPU,
        "--agents",
        MAINPC,
        PC2,
        "--duration",
        "2",
        "--rate",
        "200",
        "--unprivileged",
    ]);
    assert_report_schema(&report);
    assert!(
        finished.stdout.contains("79/79 agents started"),
        "{}",
        finished.stdout
    );
    assert_eq!(u64_at(&report, "/agents_planned"), ALL_AGENTS);
    assert_eq!(u64_at(&report, "/agents_started"), ALL_AGENTS);
    assert_eq!(u64_at(&report, "/placement_violations"), 0);
    for agent in array(&report, "per_agent") {
        assert!(agent["observed_cpu"].is_u64(), "never ran: {agent}");
        assert_eq!(agent["observed_cpu"], agent["planned_cpu"], "{agent}");
        // Handler time over its workers' time: some for every synthetic
        // agent that handled a message (each takes its service time),
        // never more than its workers had (a 1% histogram, and handlers
        // that finish in the drain, allow a little over).
        if agent["kind"] == "synthetic" {
            let busy = agent["busy_share"].as_f64().expect("a number");
            assert!((0.0..1.05).contains(&busy), "{agent}");
            assert_eq!(busy > 0.0, u64_at(agent, "/handled") > 0, "{agent}");
        }
    }
    // The coordinator defers its requests to its own queue: its handler
    // time is not its work, so no share is claimed for it.
    let coordinator = array(&report, "per_agent")
        .iter()
        .find(|a| a["name"] == "RequestCoordinator")
        .expect("the coordinator");
    assert_eq!(
        u64_at(coordinator, "/concurrency"),
        64,
        "as its manifest says"
    );
    assert!(coordinator["busy_share"].is_null(), "{coordinator}");
    assert!(
        u64_at(&report, "/requests/sent") > 0,
        "{:#}",
        report["requests"]
    );
    assert_every_request_completed(&report);
    assert!(
        u64_at(&report, "/voice_latency_ns/count") >= 1,
        "{:#}",
        report["voice_latency_ns"]
    );
    assert!(
        u64_at(&report, "/stream_frames/sent") > 0,
        "{:#}",
        report["stream_frames"]
    );
    let names: Vec<String> = registries(&report).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["ServiceRegistry", "SystemDigitalTwin"]);
    for (name, registry) in registries(&report) {
        assert_eq!(
            u64_at(registry, "/entries"),
            ALL_AGENTS,
            "{name}: {registry}"
        );
    }
    assert_eq!(
        u64_at(&report, "/router/dropped"),
        0,
        "{:#}",
        report["router"]
    );
}

/// Starts a run with no `--duration`, sends `signal` once the mesh is up
/// and requests flow, and checks it drained, exited 0 and reported.
fn interrupted_run_drains(signal: Signal) {
    let _one = one_daemon_at_a_time();
    let case = Case::new();
    let report_path = case.report_path();
    let mut child = case.spawn(&[
        "--topology",
        VM_2CPU,
        "--agents",
        MAINPC,
        "--rate",
        "200",
        "--unprivileged",
        "--report",
        &report_path,
    ]);
    case.wait_for_stderr(&mut child, "mesh up");
    // Let the load generator send something; how much does not matter.
    std::thread::sleep(Duration::from_secs(1));
    kill(Pid::from_raw(i32::try_from(child.id()).unwrap()), signal).unwrap();
    let finished = case.wait(child);
    finished.assert_success();
    assert!(
        finished.stderr.contains("draining") && finished.stderr.contains(signal.as_str()),
        "{}",
        finished.stderr
    );
    let report = case.report().expect("a drained run writes its report");
    assert_report_schema(&report);
    assert!(
        u64_at(&report, "/requests/sent") > 0,
        "{:#}",
        report["requests"]
    );
    assert_drained(&report);
}

#[test]
fn sigterm_drains_the_mesh_and_exits_zero_with_a_report() {
    interrupted_run_drains(Signal::SIGTERM);
}

#[test]
fn sigint_drains_the_mesh_and_exits_zero_with_a_report() {
    interrupted_run_drains(Signal::SIGINT);
}

/// Reads a registry snapshot and checks its format; its agents' names.
fn snapshot_names(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|err| panic!("no snapshot {}: {err}", path.display()));
    let json: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["version"], 1, "{}", path.display());
    array(&json, "agents")
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn registry_snapshots_are_restored_by_the_next_run() {
    let _one = one_daemon_at_a_time();
    let case = Case::new();
    let state = case.path("state");
    let state = state.to_str().unwrap();
    let args = [
        "--topology",
        VM_2CPU,
        "--agents",
        MAINPC,
        "--duration",
        "1",
        "--state-dir",
        state,
        "--unprivileged",
    ];
    let (_, first) = case.run_ok(&args);
    let registered: Vec<(String, u64)> = registries(&first)
        .into_iter()
        .map(|(name, r)| (name, u64_at(r, "/entries")))
        .collect();
    assert_eq!(registered.len(), 2, "{:#}", first["registries"]);
    for (name, entries) in &registered {
        assert_eq!(*entries, MAINPC_AGENTS, "{name}");
        let names = snapshot_names(&case.path(&format!("state/{name}.registry.json")));
        assert_eq!(names.len() as u64, *entries, "{name}: {names:?}");
        assert!(
            names.iter().any(|n| n == "AudioCapture"),
            "{name}: {names:?}"
        );
    }
    let (_, second) = case.run_ok(&args);
    for (name, registry) in registries(&second) {
        let (_, entries) = registered.iter().find(|(n, _)| *n == name).unwrap();
        assert_eq!(
            u64_at(registry, "/restored"),
            *entries,
            "{name}: {registry}"
        );
        assert_eq!(
            u64_at(registry, "/snapshot_errors"),
            0,
            "{name}: {registry}"
        );
    }
}

#[test]
fn a_host_alone_serves_its_pipeline_and_warns_of_the_calls_to_another_host_it_cannot_make() {
    // voice-pipeline.toml's SystemDigitalTwin calls
    // MemoryOrchestratorService@pc2, which no file given defines; with no
    // cluster that call has nowhere to go and must not fail the requests
    // that reach the twin.
    let _one = one_daemon_at_a_time();
    let (finished, report) = run_pinwheel(&[
        "--topology",
        VM_2CPU,
        "--agents",
        "agents/voice-pipeline.toml",
        "--rate",
        "200",
        "--duration",
        "2",
        "--unprivileged",
    ]);
    assert!(
        u64_at(&report, "/requests/sent") > 0,
        "{:#}",
        report["requests"]
    );
    assert_every_request_completed(&report);
    let warning =
        "no cluster: this call is not made (SystemDigitalTwin -> MemoryOrchestratorService@pc2)";
    assert!(finished.stderr.contains(warning), "{}", finished.stderr);
}

#[test]
fn a_cycle_in_calls_is_broken_by_the_trace_and_warned_about() {
    let _one = one_daemon_at_a_time();
    let case = Case::new();
    let agents = case.write("cycle.toml", CYCLE);
    let (finished, report) = case.run_ok(&[
        "--topology",
        VM_2CPU,
        "--agents",
        &agents,
        "--rate",
        "200",
        "--duration",
        "2",
        "--unprivileged",
    ]);
    assert!(
        u64_at(&report, "/requests/sent") > 0,
        "{:#}",
        report["requests"]
    );
    assert_every_request_completed(&report);
    let routes = route_pairs(&report);
    let has = |from: &str, to: &str| routes.iter().any(|(f, t)| f == from && t == to);
    assert!(has("Coord", "A"), "{routes:?}");
    assert!(has("A", "B"), "{routes:?}");
    assert!(
        !has("B", "A"),
        "B called A, which was on the trace: {routes:?}"
    );
    let warning = "calls form a cycle A -> B -> A";
    assert!(finished.stderr.contains(warning), "{}", finished.stderr);
    let plan = Command::new(env!("CARGO_BIN_EXE_pinwheel"))
        .args(["plan", "--topology", VM_2CPU, "--agents", &agents])
        .current_dir(CRATE)
        .output()
        .unwrap();
    let stdout = String::from_utf8(plan.stdout).unwrap();
    assert!(
        plan.status.success(),
        "{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    assert!(stdout.contains(warning), "{stdout}");
}

/// Runs with bad input: exit 2, nothing on stdout, nothing started, and a
/// message containing each of `expected`; the message.
fn rejects(case: &Case, args: &[&str], expected: &[&str]) -> String {
    let finished = case.run(args);
    assert_eq!(
        finished.status.code(),
        Some(2),
        "{args:?}: {}",
        finished.stderr
    );
    assert!(
        finished.stdout.is_empty(),
        "{args:?} printed {}",
        finished.stdout
    );
    assert!(
        !finished.stderr.contains("mesh up"),
        "{args:?} started: {}",
        finished.stderr
    );
    for text in expected {
        assert!(
            finished.stderr.contains(text),
            "{args:?}: no {text:?} in {}",
            finished.stderr
        );
    }
    finished.stderr
}

#[test]
fn a_negative_rate_is_rejected_before_anything_starts_or_is_written() {
    let case = Case::new();
    let report = case.report_path();
    let args = ["--topology", VM_2CPU, "--unprivileged", "--report", &report];
    rejects(
        &case,
        &[&args[..], &["--rate", "-1"]].concat(),
        &["--rate -1"],
    );
    rejects(&case, &[&args[..], &["--rate=-1"]].concat(), &["--rate -1"]);
    assert!(
        !Path::new(&report).exists(),
        "a rejected run wrote {report}"
    );
}

#[test]
fn a_zero_duration_is_rejected() {
    let case = Case::new();
    let args = ["--topology", VM_2CPU, "--unprivileged", "--duration", "0"];
    rejects(&case, &args, &["--duration 0"]);
}

#[test]
fn a_report_in_a_missing_directory_is_rejected_before_the_run() {
    let case = Case::new();
    let args = [
        "--topology",
        VM_2CPU,
        "--unprivileged",
        "--duration",
        "1",
        "--report",
        "/nonexistent-dir/r.json",
    ];
    rejects(
        &case,
        &args,
        &["--report /nonexistent-dir/r.json", "does not exist"],
    );
}

#[test]
fn a_manifest_value_out_of_range_is_rejected_with_its_file_and_line() {
    let case = Case::new();
    let mainpc = std::fs::read_to_string(Path::new(CRATE).join(MAINPC)).unwrap();
    let line = 1 + mainpc
        .lines()
        .position(|l| l.starts_with("stream_hz = 50"))
        .unwrap();
    // Only the setting's own line: the file's header comment names it too.
    let edited: Vec<String> = mainpc
        .lines()
        .enumerate()
        .map(|(i, l)| match i + 1 == line {
            true => l.replacen("stream_hz = 50", "stream_hz = 0", 1),
            false => l.to_owned(),
        })
        .collect();
    let agents = case.write("agents.toml", &edited.join("\n"));
    let args = [
        "--topology",
        VM_2CPU,
        "--agents",
        &agents,
        "--unprivileged",
        "--duration",
        "1",
    ];
    let stderr = rejects(&case, &args, &["stream_hz"]);
    assert!(
        stderr.starts_with(&format!("error: {agents}:{line}:")),
        "{stderr}"
    );
}

#[test]
fn a_topology_with_cpus_this_host_lacks_is_rejected_with_the_way_out() {
    let host_cpus = std::thread::available_parallelism().unwrap().get();
    assert!(
        host_cpus < 32,
        "topology/mainpc.toml fits this {host_cpus}-CPU host"
    );
    let case = Case::new();
    let args = [
        "--topology",
        "topology/mainpc.toml",
        "--unprivileged",
        "--duration",
        "1",
    ];
    rejects(
        &case,
        &args,
        &[
            "topology/mainpc.toml",
            "topology/auto.toml",
            "pinwheel topo detect",
        ],
    );
}

#[test]
fn with_no_files_named_it_runs_auto_topology_and_the_mainpc_manifest() {
    let _one = one_daemon_at_a_time();
    let (_, report) = run_pinwheel(&["--duration", "1", "--unprivileged"]);
    assert_eq!(u64_at(&report, "/agents_planned"), MAINPC_AGENTS);
    assert_eq!(u64_at(&report, "/agents_started"), MAINPC_AGENTS);
}

#[test]
fn a_privileged_run_completes_without_losing_requests() {
    let _one = one_daemon_at_a_time();
    let (finished, report) = run_pinwheel(&[
        "--topology",
        VM_2CPU,
        "--agents",
        MAINPC,
        PC2,
        "--duration",
        "2",
        "--rate",
        "200",
    ]);
    println!("degraded: {}", report["degraded"]);
    println!("{}", finished.stdout);
    assert_eq!(u64_at(&report, "/agents_started"), ALL_AGENTS);
    assert!(
        u64_at(&report, "/requests/sent") > 0,
        "{:#}",
        report["requests"]
    );
    assert_eq!(
        u64_at(&report, "/requests/lost"),
        0,
        "{:#}",
        report["requests"]
    );
}
