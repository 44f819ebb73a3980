//! GPU model uses of agent processes, from outside: agents in the test
//! agent's `models` mode take `agent.model(..)` guards when asked, on the
//! simulated 24 GiB GPU of `topology/vm-2cpu.toml` (with no minimum
//! residency and no preloads, so each eviction the test asks for can
//! happen at once), where the two 14 000 MiB models cannot be resident
//! together. A held model is resident in
//! `/v1/gpus` and is never evicted for another; it goes once its guard
//! drops or its agent is killed; a model outside the manifest or larger
//! than the GPU is an error to the agent. The caller is an external agent
//! attached from this test. Durations are never asserted.

#![cfg(test)]

use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pinwheel::observe::api::{AgentState, GpusResponse};
use pinwheel::test_support::process_daemon::TestDaemon;
use pinwheel_agent::{Agent, Reply};

const PINWHEEL: &str = env!("CARGO_BIN_EXE_pinwheel");
const AGENT: &str = env!("CARGO_BIN_EXE_pinwheel-test-agent");
const CRATE: &str = env!("CARGO_MANIFEST_DIR");
/// Longer than any wait for a model here.
const CALL: Duration = Duration::from_secs(30);

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
calls = ["Holder", "Waiter"]

[[agent]]
name = "Holder"
host = "h"
role = "holds models when asked"
kind = "process"
cpu = 1
command = ["{AGENT}", "models"]
user = "nobody"
models = [{{ name = "big-a", vram_mib = 14000 }}, {{ name = "huge", vram_mib = 30000 }}]

[[agent]]
name = "Waiter"
host = "h"
role = "holds models when asked"
kind = "process"
cpu = 1
command = ["{AGENT}", "models"]
user = "nobody"
models = [{{ name = "big-b", vram_mib = 14000 }}]
"#
    )
}

fn running(daemon: &TestDaemon, name: &str) -> bool {
    daemon
        .agent(name)
        .is_some_and(|a| a.state == AgentState::Running && a.pid.is_some())
}

fn resident(daemon: &TestDaemon) -> Vec<String> {
    daemon
        .client()
        .get::<GpusResponse>("/v1/gpus")
        .map(|g| {
            g.gpus
                .into_iter()
                .flat_map(|gpu| gpu.resident)
                .map(|m| m.model)
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until `/v1/gpus` (refreshed once a second) shows exactly
/// `models` resident.
fn shows_resident(daemon: &TestDaemon, models: &[&str]) {
    daemon.wait_for(&format!("{models:?} resident"), |d| resident(d) == models);
}

fn queued(daemon: &TestDaemon, model: &str) -> bool {
    daemon
        .client()
        .get::<GpusResponse>("/v1/gpus")
        .is_ok_and(|g| {
            g.decisions
                .iter()
                .any(|d| d.kind == "queue" && d.model == model)
        })
}

fn ask(prober: &Agent, agent: &str, method: &str, model: &str) -> Reply {
    prober
        .call(agent, method, model.as_bytes(), CALL)
        .unwrap_or_else(|err| panic!("{agent}.{method}({model}): {err}"))
}

fn assert_held(reply: &Reply) {
    assert_eq!(
        (reply.status, reply.body.as_slice()),
        (0, &b"held"[..]),
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
}

#[test]
fn a_held_model_stays_resident_and_goes_once_released_or_its_agent_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let topology = dir.path().join("topology.toml");
    let base = std::fs::read_to_string(format!("{CRATE}/topology/vm-2cpu.toml")).unwrap();
    std::fs::write(
        &topology,
        format!(
            "{base}
[vram]
min_residency_s = 0
preload = false
"
        ),
    )
    .unwrap();
    let daemon = TestDaemon::start_on(PINWHEEL, CRATE, &topology, &manifest(), &["--rate", "0"]);
    daemon.wait_for("both agents running", |d| {
        running(d, "Holder") && running(d, "Waiter")
    });
    daemon.wait_for("the attach socket", |d| d.socket().exists());
    let prober = Agent::connect(&daemon.socket(), "Prober").expect("the test attaches");

    assert_held(&ask(&prober, "Holder", "hold", "big-a"));
    shows_resident(&daemon, &["big-a"]);

    let too_large = ask(&prober, "Holder", "hold", "huge");
    let why = String::from_utf8_lossy(&too_large.body);
    assert_eq!(too_large.status, 409, "{why}");
    assert!(why.contains("refused model \"huge\""), "{why}");
    let unknown = ask(&prober, "Holder", "hold", "big-b");
    let why = String::from_utf8_lossy(&unknown.body);
    assert_eq!(unknown.status, 409, "{why}");
    assert!(why.contains("not one of this agent's `models`"), "{why}");

    let waiter = {
        let prober = prober.clone();
        std::thread::spawn(move || ask(&prober, "Waiter", "hold", "big-b"))
    };
    daemon.wait_for("big-b waiting for room", |d| queued(d, "big-b"));
    let now = resident(&daemon);
    assert!(
        now.contains(&"big-a".to_owned()) && !now.contains(&"big-b".to_owned()),
        "the held model stays: {now:?}"
    );

    let holder = daemon.agent("Holder").unwrap().pid.unwrap();
    kill(Pid::from_raw(holder as i32), Signal::SIGKILL).unwrap();
    assert_held(&waiter.join().expect("the waiting call returns"));
    // The killed agent's use went, and its model with it.
    shows_resident(&daemon, &["big-b"]);

    daemon.wait_for("Holder restarted", |d| {
        running(d, "Holder") && d.agent("Holder").unwrap().pid != Some(holder)
    });
    let released = ask(&prober, "Waiter", "release", "big-b");
    assert_eq!(released.status, 0);
    assert_held(&ask(&prober, "Holder", "hold", "big-a"));
    // The dropped guard's model went for it.
    shows_resident(&daemon, &["big-a"]);

    drop(prober);
    let ended = daemon.stop(Signal::SIGTERM);
    assert!(ended.status.success(), "{}", ended.log);
}
