//! External agents attach through the attach socket: the kernel's
//! `SO_PEERCRED` decides who may attach as which agent. A process of the
//! wrong uid is refused with a reason; one of the manifest's user attaches
//! and serves requests.

#![cfg(test)]

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use nix::sys::signal::Signal;
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
