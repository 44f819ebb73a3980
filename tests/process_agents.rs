//! Agent processes under a real `pinwheel run`: children started from the
//! test agent binary (`src/bin/test_agent.rs`, the SDK's echo example
//! among its modes), pinned, unprivileged, supervised, disconnected when
//! hostile, stopped with SIGTERM then SIGKILL. One daemon at a time (they
//! all want CPUs 0 and 1); durations are never asserted.

#![cfg(test)]

use std::os::unix::fs::MetadataExt;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pinwheel::observe::api::AgentState;
use pinwheel::test_support::process_daemon::{TestDaemon, alive, dev_shm, proc_status};
use serde_json::Value;

const PINWHEEL: &str = env!("CARGO_BIN_EXE_pinwheel");
const AGENT: &str = env!("CARGO_BIN_EXE_pinwheel-test-agent");
const CRATE: &str = env!("CARGO_MANIFEST_DIR");

static ONE: Mutex<()> = Mutex::new(());

fn one_daemon_at_a_time() -> MutexGuard<'static, ()> {
    ONE.lock().unwrap_or_else(|p| p.into_inner())
}

fn coordinator(calls: &str) -> String {
    format!(
        "[[agent]]\nname = \"Coord\"\nhost = \"h\"\nrole = \"r\"\nkind = \"native\"\nnative = \"coordinator\"\nconcurrency = 64\ncalls = [{calls}]\n\n"
    )
}

fn process(name: &str, cpu: u32, mode: &str, extra: &str) -> String {
    let args: String = mode
        .split_whitespace()
        .map(|w| format!(", \"{w}\""))
        .collect();
    format!(
        "[[agent]]\nname = \"{name}\"\nhost = \"h\"\nrole = \"r\"\nkind = \"process\"\ncpu = {cpu}\ncommand = [\"{AGENT}\"{args}]\nuser = \"nobody\"\n{extra}\n\n"
    )
}

fn manifest(parts: &[String]) -> String {
    format!("schema = 1\n\n{}", parts.concat())
}

fn running(daemon: &TestDaemon, name: &str) -> bool {
    daemon
        .agent(name)
        .is_some_and(|a| a.state == AgentState::Running && a.pid.is_some())
}

fn pid_of(daemon: &TestDaemon, name: &str) -> u32 {
    daemon.agent(name).unwrap().pid.unwrap()
}

fn process_report<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["agent"] == name)
        .unwrap_or_else(|| panic!("no process {name} in {report:#}"))
}

fn assert_every_request_accounted_for(report: &Value) {
    let r = &report["requests"];
    let n = |k: &str| r[k].as_u64().unwrap();
    assert_eq!(n("lost"), 0, "{r}");
    assert_eq!(
        n("sent"),
        n("completed") + n("failed") + n("timed_out"),
        "{r}"
    );
    assert!(n("completed") > 0, "{r}");
}

#[test]
fn a_process_agent_runs_pinned_as_its_user_with_credentials_as_files_only() {
    let _one = one_daemon_at_a_time();
    let shm_before = dev_shm();
    let secrets = tempfile::tempdir().unwrap();
    let secret = "pw-secret-4f9a7c";
    let source = secrets.path().join("token");
    std::fs::write(&source, secret).unwrap();
    let extra = format!(
        "credentials = {{ token = \"{}\" }}\nenv = {{ GREETING = \"hi\" }}",
        source.display()
    );
    let text = manifest(&[coordinator("\"Echo\""), process("Echo", 1, "echo", &extra)]);
    let daemon = TestDaemon::start(PINWHEEL, CRATE, &text, &["--rate", "50"]);
    daemon.wait_for("Echo running", |d| running(d, "Echo"));
    let pid = pid_of(&daemon, "Echo");

    assert_eq!(proc_status(pid, "Cpus_allowed_list").unwrap(), "1");
    let uid = proc_status(pid, "Uid").unwrap();
    assert!(uid.starts_with("65534"), "Uid: {uid}");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ).replace('\0', "\n");
    for needed in ["GREETING=hi", "PINWHEEL_AGENT=Echo", "PINWHEEL_AGENT_FD=3"] {
        assert!(
            environ.lines().any(|l| l == needed),
            "{needed} in {environ}"
        );
    }
    assert!(
        !environ.contains(secret),
        "the secret is in the environment"
    );
    let dir = environ
        .lines()
        .find_map(|l| l.strip_prefix("CREDENTIALS_DIRECTORY="))
        .expect("CREDENTIALS_DIRECTORY")
        .to_owned();
    let file = std::fs::metadata(format!("{dir}/token")).unwrap();
    assert_eq!((file.mode() & 0o777, file.uid()), (0o400, 65534));
    assert_eq!(
        std::fs::read_to_string(format!("{dir}/token")).unwrap(),
        secret
    );
    for path in ["/v1/agents", "/v1/plan", "/metrics", "/health"] {
        assert!(!daemon.get_text(path).contains(secret), "secret in {path}");
    }

    let ended = daemon.stop(Signal::SIGTERM);
    assert!(ended.status.success(), "{}", ended.log);
    assert!(!ended.log.contains(secret), "the secret is in the log");
    assert!(
        !ended.report.to_string().contains(secret),
        "secret in the report"
    );
    let echo = process_report(&ended.report, "Echo");
    assert_eq!(
        (echo["uid"].as_u64(), echo["cpu"].as_u64()),
        (Some(65534), Some(1))
    );
    assert_eq!(ended.report["placement_violations"], 0);
    assert!(!alive(pid), "Echo's process outlived the daemon");
    assert!(
        !std::path::Path::new(&dir).exists(),
        "credentials left behind"
    );
    assert_every_request_accounted_for(&ended.report);
    assert_eq!(dev_shm(), shm_before);
}

#[test]
fn a_child_killed_under_load_restarts_and_every_request_is_accounted_for() {
    let _one = one_daemon_at_a_time();
    let text = manifest(&[
        coordinator("\"Front\""),
        process("Front", 1, "echo", "calls = [\"Back\"]"),
        process("Back", 0, "echo", ""),
    ]);
    let daemon = TestDaemon::start(
        PINWHEEL,
        CRATE,
        &text,
        &["--rate", "1000", "--duration", "8"],
    );
    daemon.wait_for("Back running", |d| running(d, "Back"));
    std::thread::sleep(Duration::from_secs(2));
    let pid = pid_of(&daemon, "Back");
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    daemon.wait_for("Back restarted", |d| {
        d.agent("Back")
            .is_some_and(|a| a.restarts >= 1 && a.state == AgentState::Running)
    });
    assert_ne!(pid_of(&daemon, "Back"), pid);

    let ended = daemon.wait();
    assert!(ended.status.success(), "{}", ended.log);
    assert_every_request_accounted_for(&ended.report);
    let back = process_report(&ended.report, "Back");
    assert!(back["restarts"].as_u64() >= Some(1), "{back}");
    let exits = back["exits"].as_array().unwrap();
    assert!(
        exits
            .iter()
            .any(|e| e[0] == "signal" && e[1].as_u64() >= Some(1)),
        "{back}"
    );
}

#[test]
fn restarting_too_often_fails_the_agent_with_a_health_reason() {
    let _one = one_daemon_at_a_time();
    let text = manifest(&[process(
        "Crashy",
        1,
        "exit 3",
        "max_restarts = 2\nrestart_window_s = 60",
    )]);
    let daemon = TestDaemon::start(PINWHEEL, CRATE, &text, &["--rate", "0"]);
    daemon.wait_for("Crashy failed", |d| {
        d.agent("Crashy")
            .is_some_and(|a| a.state == AgentState::Failed)
    });
    let health = daemon.health().unwrap();
    assert!(
        health
            .reasons
            .iter()
            .any(|r| r.reason == "agent_failed:Crashy"),
        "{health:?}"
    );
    let crashy = daemon.agent("Crashy").unwrap();
    assert_eq!(crashy.restarts, 2, "{crashy:?}");
    assert_eq!(
        crashy.last_exit.as_deref(),
        Some("exited with status 3"),
        "{crashy:?}"
    );
    let ended = daemon.stop(Signal::SIGTERM);
    assert!(ended.status.success(), "{}", ended.log);
}

#[test]
fn a_hostile_child_is_disconnected_and_the_daemon_keeps_serving() {
    let _one = one_daemon_at_a_time();
    let text = manifest(&[
        coordinator("\"Echo\""),
        process("Echo", 1, "echo", ""),
        process("Hostile", 0, "hostile", "max_restarts = 2"),
    ]);
    let daemon = TestDaemon::start(
        PINWHEEL,
        CRATE,
        &text,
        &["--rate", "200", "--duration", "5"],
    );
    daemon.wait_for("Hostile disconnected", |d| {
        d.agent("Hostile").is_some_and(|a| {
            a.last_exit
                .as_deref()
                .is_some_and(|e| e.contains("protocol"))
        })
    });
    assert!(running(&daemon, "Echo"));
    let ended = daemon.wait();
    assert!(ended.status.success(), "{}", ended.log);
    assert_every_request_accounted_for(&ended.report);
    assert_eq!(ended.report["requests"]["failed"], 0);
    let hostile = process_report(&ended.report, "Hostile");
    let exits = hostile["exits"].as_array().unwrap();
    assert!(
        exits
            .iter()
            .any(|e| e[0] == "corrupt" && e[1].as_u64() >= Some(1)),
        "{hostile}"
    );
}

#[test]
fn a_child_that_stops_answering_is_disconnected_as_silent_and_restarted() {
    let _one = one_daemon_at_a_time();
    let text = manifest(&[
        coordinator("\"Silent\""),
        process("Silent", 1, "silent", "max_restarts = 1"),
    ]);
    let daemon = TestDaemon::start(
        PINWHEEL,
        CRATE,
        &text,
        &["--rate", "50", "--timeout-ms", "100"],
    );
    daemon.wait_for("Silent disconnected", |d| {
        d.agent("Silent").is_some_and(|a| {
            a.last_exit
                .as_deref()
                .is_some_and(|e| e.contains("stopped answering"))
        })
    });
    let ended = daemon.stop(Signal::SIGTERM);
    assert!(ended.status.success(), "{}", ended.log);
    let silent = process_report(&ended.report, "Silent");
    let exits = silent["exits"].as_array().unwrap();
    assert!(
        exits
            .iter()
            .any(|e| e[0] == "silent" && e[1].as_u64() >= Some(1)),
        "{silent}"
    );
    assert_eq!(ended.report["requests"]["lost"], 0);
}

#[test]
fn sigterm_stops_children_with_sigterm_then_sigkill_and_reaps_them() {
    let _one = one_daemon_at_a_time();
    let shm_before = dev_shm();
    let text = manifest(&[
        process("Polite", 1, "echo", ""),
        process("Stubborn", 0, "stubborn", "stop_timeout_ms = 300"),
    ]);
    let daemon = TestDaemon::start(PINWHEEL, CRATE, &text, &["--rate", "0"]);
    daemon.wait_for("both running", |d| {
        running(d, "Polite") && running(d, "Stubborn")
    });
    let pids = [pid_of(&daemon, "Polite"), pid_of(&daemon, "Stubborn")];
    let ended = daemon.stop(Signal::SIGTERM);
    assert!(ended.status.success(), "{}", ended.log);
    assert_eq!(
        process_report(&ended.report, "Polite")["last_exit"],
        "killed by signal 15"
    );
    assert_eq!(
        process_report(&ended.report, "Stubborn")["last_exit"],
        "killed by signal 9"
    );
    for pid in pids {
        assert!(!alive(pid), "child {pid} outlived the daemon");
    }
    assert_eq!(dev_shm(), shm_before);
}

/// CPU time `pid` has used, in clock ticks (utime + stime).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command's closing parenthesis: state is field 3,
    // utime 14 and stime 15.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn a_process_waits_as_its_manifest_says_whatever_its_cpu_class_does() {
    let _one = one_daemon_at_a_time();
    // vm-2cpu's class adapts; one echo is told to spin, one to park.
    let text = manifest(&[
        process("Spinner", 1, "echo", "wait = \"spin\""),
        process("Sleeper", 0, "echo", "wait = \"park\""),
    ]);
    let daemon = TestDaemon::start(PINWHEEL, CRATE, &text, &["--rate", "0"]);
    daemon.wait_for("both running", |d| {
        running(d, "Spinner") && running(d, "Sleeper")
    });
    let pids = [pid_of(&daemon, "Spinner"), pid_of(&daemon, "Sleeper")];
    let before = pids.map(cpu_ticks);
    std::thread::sleep(Duration::from_secs(2));
    let [spun, slept] = [0, 1].map(|i| cpu_ticks(pids[i]) - before[i]);
    // With no requests at all, a spinning reader keeps its CPU busy and a
    // parked one sleeps: the spinner used most of the two seconds' ticks.
    assert!(
        spun > 10 * slept.max(1),
        "idle CPU ticks: spinning {spun}, parked {slept}"
    );
    let ended = daemon.stop(Signal::SIGTERM);
    assert!(ended.status.success(), "{}", ended.log);
}
