//! External agents attach through the attach socket: the kernel's
//! `SO_PEERCRED` decides who may attach as which agent. A process of the
//! wrong uid is refused with a reason; one of the manifest's user attaches
//! and serves requests, until the drain's end: a request sent before
//! the drain may still call agents that have nothing in flight.

#![cfg(test)]

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pinwheel::observe::api::AgentState;
use pinwheel::test_support::process_daemon::TestDaemon;
use pinwheel_agent::{Agent, AgentError};

const PINWHEEL: &str = env!("CARGO_BIN_EXE_pinwheel");
const AGENT: &str = env!("CARGO_BIN_EXE_pinwheel-test-agent");
const CRATE: &str = env!("CARGO_MANIFEST_DIR");

const MANIFEST: &str = r#"schema = 1

[[agent]]
name = "Coord"
host = "h"
role = "r"
kind = "native"
native = "coordinator"
cpu = 0
calls = ["Outside"]

[[agent]]
name = "Outside"
host = "h"
role = "started by something else"
kind = "external"
cpu = 1
user = "nobody"
"#;

#[test]
fn an_attach_from_the_wrong_uid_is_refused_and_the_right_one_is_served() {
    let daemon = TestDaemon::start(PINWHEEL, CRATE, MANIFEST, &["--rate", "100"]);
    daemon.wait_for("the attach socket", |d| d.socket().exists());

    let refused = Agent::connect(&daemon.socket(), "Outside").unwrap_err();
    let AgentError::Refused { reason } = &refused else {
        panic!("root attached as Outside: {refused}")
    };
    assert!(reason.contains("uid 0"), "{reason}");
    assert_eq!(daemon.agent("Outside").unwrap().state, AgentState::Detached);

    let mut child = Command::new(AGENT)
        .arg("echo")
        .env_clear()
        .env("PINWHEEL_AGENT", "Outside")
        .env("PINWHEEL_AGENT_SOCKET", daemon.socket())
        .uid(65534)
        .gid(65534)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    daemon.wait_for("Outside attached", |d| {
        d.agent("Outside")
            .is_some_and(|a| a.state == AgentState::Attached && a.pid == Some(child.id()))
    });
    let before = daemon.agent("Coord").unwrap().handled;
    daemon.wait_for("requests served through Outside", |d| {
        d.agent("Outside").is_some_and(|a| a.handled > before + 50)
    });

    let ended = daemon.stop(Signal::SIGTERM);
    assert!(ended.status.success(), "{}", ended.log);
    // The daemon closed the link: the agent's recv ended and it exited.
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(
        ended.log.contains("attach refused"),
        "the refusal is logged: {}",
        ended.log
    );
}

const CHAIN: &str = r#"schema = 1

[[agent]]
name = "Prober"
host = "h"
role = "r"
kind = "external"
cpu = 0
user = "root"
calls = ["Front"]

[[agent]]
name = "Front"
host = "h"
role = "r"
kind = "external"
cpu = 1
user = "root"
calls = ["Back"]

[[agent]]
name = "Back"
host = "h"
role = "r"
kind = "external"
cpu = 0
user = "root"
"#;

/// Serves `agent`'s requests with their own bodies until its link closes.
fn echo(agent: Agent) {
    loop {
        match agent.recv(Duration::from_millis(100)) {
            Ok(Some(request)) => {
                let body = request.body().to_vec();
                let _ = request.reply(0, &body);
            }
            Ok(None) => {}
            Err(_) => return,
        }
    }
}

#[test]
fn a_request_sent_before_the_drain_may_still_call_an_agent_with_nothing_in_flight() {
    let daemon = TestDaemon::start(PINWHEEL, CRATE, CHAIN, &["--rate", "0"]);
    daemon.wait_for("the attach socket", |d| d.socket().exists());
    let back = Agent::connect(&daemon.socket(), "Back").unwrap();
    let front = Agent::connect(&daemon.socket(), "Front").unwrap();
    let prober = Agent::connect(&daemon.socket(), "Prober").unwrap();
    let back = std::thread::spawn(move || echo(back));

    // Front calls Back once, waits for the test to start the drain, then
    // calls Back again: Back has nothing in flight while the drain begins.
    let (between, between_rx) = mpsc::channel();
    let (go, go_rx) = mpsc::channel::<()>();
    let front = std::thread::spawn(move || -> Result<(), AgentError> {
        let request = loop {
            if let Some(request) = front.recv(Duration::from_secs(1))? {
                break request;
            }
        };
        let timeout = Duration::from_secs(10);
        let first = front.call("Back", "echo", b"first", timeout)?;
        between.send(()).unwrap();
        go_rx.recv().unwrap();
        let second = front.call("Back", "echo", b"second", timeout)?;
        let status = first.status.max(second.status);
        request.reply(status, &[first.body, second.body].concat())
    });
    let call = std::thread::spawn(move || prober.call("Front", "go", b"", Duration::from_secs(20)));

    between_rx.recv().unwrap();
    kill(Pid::from_raw(daemon.pid() as i32), Signal::SIGTERM).unwrap();
    daemon.wait_for("the drain", |d| d.log().contains("draining"));
    // The executors see the stop at their next tick (a millisecond); the
    // drain waits for the Prober's call, up to its limit (1.2 s).
    std::thread::sleep(Duration::from_millis(100));
    go.send(()).unwrap();

    let reply = call.join().unwrap();
    assert!(
        matches!(&reply, Ok(r) if r.status == 0 && r.body == b"firstsecond"),
        "the call sent before the drain: {reply:?}"
    );
    let served = front.join().unwrap();
    assert!(served.is_ok(), "Front: {served:?}");
    let ended = daemon.wait();
    assert!(ended.status.success(), "{}", ended.log);
    back.join().unwrap();
}
