//! Fault drills on an agent process, from outside: `pinwheel fault` and
//! `--fault` put a `process` agent (the test agent's `drilled` mode, which
//! answers with the drill its SDK holds) under a drill, its SDK applies it
//! to the replies a caller gets, and `/v1/agents` shows it. The caller is
//! an external agent attached from this test. Durations are never
//! asserted: each change is waited for, up to the hang guard.

#![cfg(test)]

use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pinwheel::observe::api::AgentState;
use pinwheel::test_support::HANG_GUARD;
use pinwheel::test_support::process_daemon::TestDaemon;
use pinwheel_agent::{Agent, AgentError, STATUS_DRILL_ERROR};

const PINWHEEL: &str = env!("CARGO_BIN_EXE_pinwheel");
const AGENT: &str = env!("CARGO_BIN_EXE_pinwheel-test-agent");
const CRATE: &str = env!("CARGO_MANIFEST_DIR");
/// What the bridge answers a request whose deadline passed in the agent.
const STATUS_TIMEOUT: u16 = 504;

static ONE: Mutex<()> = Mutex::new(());

fn one_daemon_at_a_time() -> MutexGuard<'static, ()> {
    ONE.lock().unwrap_or_else(|p| p.into_inner())
}

fn manifest() -> String {
    format!(
        r#"schema = 1

[[agent]]
name = "Prober"
host = "h"
role = "the test, attached"
kind = "external"
cpu = 0
user = "root"
calls = ["Drilled"]

[[agent]]
name = "Drilled"
host = "h"
role = "answers with its drill"
kind = "process"
cpu = 1
command = ["{AGENT}", "drilled"]
user = "nobody"
"#
    )
}

fn start(args: &[&str]) -> (TestDaemon, Agent) {
    let daemon = TestDaemon::start(PINWHEEL, CRATE, &manifest(), args);
    daemon.wait_for("Drilled running", |d| running(d, "Drilled"));
    daemon.wait_for("the attach socket", |d| d.socket().exists());
    let prober = Agent::connect(&daemon.socket(), "Prober").expect("the test attaches");
    (daemon, prober)
}

fn running(daemon: &TestDaemon, name: &str) -> bool {
    daemon
        .agent(name)
        .is_some_and(|a| a.state == AgentState::Running && a.pid.is_some())
}

/// What one call to Drilled came back as: its status and body, or
/// `None` when it timed out in the caller.
fn probe(prober: &Agent, timeout: Duration) -> Option<(u16, String)> {
    match prober.call("Drilled", "probe", b"", timeout) {
        Ok(reply) => Some((reply.status, String::from_utf8(reply.body).unwrap())),
        Err(AgentError::Timeout { .. }) => None,
        Err(err) => panic!("the call failed: {err}"),
    }
}

/// Calls Drilled until a reply is `wanted`; that reply.
fn probe_until(
    daemon: &TestDaemon,
    prober: &Agent,
    what: &str,
    wanted: impl Fn(&Option<(u16, String)>) -> bool,
) -> Option<(u16, String)> {
    let began = Instant::now();
    loop {
        let got = probe(prober, Duration::from_millis(300));
        if wanted(&got) {
            return got;
        }
        assert!(
            began.elapsed() < HANG_GUARD,
            "Drilled never answered {what} (last: {got:?}); the daemon's log:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn fault(daemon: &TestDaemon, args: &[&str]) -> String {
    let out = Command::new(PINWHEEL)
        .arg("fault")
        .args(args)
        .args(["--admin", &daemon.addr().to_string(), "--token-file"])
        .arg(daemon.token_file())
        .output()
        .expect("pinwheel fault runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Waits until `/v1/agents` (refreshed once a second) shows Drilled
/// under `fault`.
fn shows(daemon: &TestDaemon, fault: Option<&str>) {
    daemon.wait_for(&format!("/v1/agents showing fault {fault:?}"), |d| {
        d.agent("Drilled")
            .is_some_and(|a| a.fault.as_deref() == fault)
    });
}

fn healthy(got: &Option<(u16, String)>) -> bool {
    got.as_ref().is_some_and(|(s, b)| *s == 0 && b == "none")
}

fn failed(got: &Option<(u16, String)>) -> bool {
    got.as_ref()
        .is_some_and(|(s, b)| *s == STATUS_DRILL_ERROR && b.is_empty())
}

#[test]
fn pinwheel_fault_on_a_process_agent_fails_slows_stalls_and_clears_its_replies() {
    let _one = one_daemon_at_a_time();
    let (daemon, prober) = start(&["--rate", "0"]);
    assert!(healthy(&probe(&prober, Duration::from_secs(5))));
    let pid = daemon.agent("Drilled").unwrap().pid;

    assert_eq!(
        fault(&daemon, &["Drilled", "--error", "1"]).trim(),
        "Drilled: error=1"
    );
    probe_until(&daemon, &prober, "the injected error", failed);
    shows(&daemon, Some("error=1"));

    fault(&daemon, &["Drilled", "--clear"]);
    probe_until(&daemon, &prober, "as usual after --clear", healthy);
    shows(&daemon, None);

    fault(&daemon, &["Drilled", "--slow", "10x"]);
    let slowed = probe_until(&daemon, &prober, "under slow=10x", |got| {
        got.as_ref()
            .is_some_and(|(s, b)| *s == 0 && b == "slow=10x")
    });
    assert!(slowed.is_some());
    shows(&daemon, Some("slow=10x"));

    fault(&daemon, &["Drilled", "--stall"]);
    let stalled =
        |got: &Option<(u16, String)>| got.as_ref().is_none_or(|(s, _)| *s == STATUS_TIMEOUT);
    probe_until(&daemon, &prober, "nothing under stall", stalled);
    // More deadlines missed in a row than make an agent silent: a drilled
    // agent is left running.
    for _ in 0..5 {
        let got = probe(&prober, Duration::from_millis(200));
        assert!(stalled(&got), "a stalled agent answered: {got:?}");
    }
    shows(&daemon, Some("stall"));

    fault(&daemon, &["Drilled", "--error", "1", "--for", "1s"]);
    probe_until(&daemon, &prober, "the error drill", failed);
    probe_until(&daemon, &prober, "as usual once --for ran out", healthy);
    shows(&daemon, None);

    let drilled = daemon.agent("Drilled").unwrap();
    assert_eq!(
        (drilled.pid, drilled.restarts, drilled.state),
        (pid, 0, AgentState::Running),
        "the drills never got the agent disconnected"
    );
    drop(prober);
    let ended = daemon.stop(Signal::SIGTERM);
    assert!(ended.status.success(), "{}", ended.log);
    assert!(
        ended.log.contains("fault drill sent to the agent"),
        "{}",
        ended.log
    );
}

#[test]
fn a_fault_given_at_start_reaches_a_process_agent_and_each_of_its_incarnations() {
    let _one = one_daemon_at_a_time();
    let (daemon, prober) = start(&["--rate", "0", "--fault", "Drilled:error=1"]);
    probe_until(&daemon, &prober, "the error given at start", failed);
    shows(&daemon, Some("error=1"));

    let pid = daemon.agent("Drilled").unwrap().pid.unwrap();
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    daemon.wait_for("Drilled restarted", |d| {
        running(d, "Drilled") && d.agent("Drilled").unwrap().pid != Some(pid)
    });
    probe_until(&daemon, &prober, "the error in its new incarnation", failed);
    assert!(
        (0..20).all(|_| failed(&probe(&prober, Duration::from_secs(2)))),
        "every reply of the new incarnation fails under error=1"
    );
    drop(prober);
    let ended = daemon.stop(Signal::SIGTERM);
    assert!(ended.status.success(), "{}", ended.log);
}
