//! `pinwheel-test-agent`: the agent processes the integration tests start
//! (built only with the `test-support` feature, which the tests turn on).
//!
//! * `echo` (or no argument): the SDK's echo example, compiled in as is.
//! * `hostile`: attaches, then writes garbage frames into its outgoing ring
//!   until killed.
//! * `silent`: attaches and never reads a request.
//! * `stubborn`: the echo agent with SIGTERM blocked (only SIGKILL ends it).
//! * `exit CODE`: attaches, then exits with CODE.
//! * `drilled`: answers every request status 0 with the drill it is
//!   under as its body (`none`, `slow=10x`, ...), through the SDK's
//!   `reply`, which applies that drill.
//! * `models`: method `hold` with a model's name as body asks for it
//!   (`agent.model`, waiting up to the request's deadline) and keeps the
//!   guard, answering 0, or 409 with the daemon's reason when denied (504
//!   when no answer came); method `release` drops the guards of the model
//!   named, answering 0.

#![allow(clippy::print_stderr)]

#[path = "../../crates/pinwheel-agent/examples/echo.rs"]
mod echo;

use std::process::ExitCode;
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};
use pinwheel_agent::{Agent, AgentError, ModelGuard, now_ns};
use pinwheel_ipc::link::{AGENT_ENV, AGENT_FD, LinkMessage};
use pinwheel_ipc::ring::PeerLink;
use pinwheel_ipc::wire::WIRE_VERSION;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None | Some("echo") => echo::main(),
        Some("hostile") => hostile(),
        Some("silent") => silent(),
        Some("stubborn") => {
            let mut set = SigSet::empty();
            set.add(Signal::SIGTERM);
            if set.thread_block().is_err() {
                return ExitCode::FAILURE;
            }
            echo::main()
        }
        Some("drilled") => serve(|agent, request| {
            let drill = agent.drill().to_string();
            request.reply(0, drill.as_bytes())
        }),
        Some("models") => {
            let mut held: Vec<ModelGuard> = Vec::new();
            serve(move |agent, request| {
                let model = String::from_utf8_lossy(request.body()).into_owned();
                if request.method() == "release" {
                    held.retain(|g| g.model() != model);
                    return request.reply(0, b"released");
                }
                let wait = Duration::from_nanos(request.deadline_ns().saturating_sub(now_ns()));
                match agent.model_within(&model, wait) {
                    Ok(guard) => {
                        held.push(guard);
                        request.reply(0, b"held")
                    }
                    Err(AgentError::ModelDenied { reason, .. }) => {
                        request.reply(409, reason.as_bytes())
                    }
                    Err(AgentError::Timeout { .. }) => request.reply(504, b"no answer"),
                    Err(err) => Err(err),
                }
            })
        }
        Some("exit") => {
            let code = args.get(1).and_then(|c| c.parse().ok()).unwrap_or(1);
            match Agent::from_env() {
                Ok(_) => ExitCode::from(code),
                Err(_) => ExitCode::FAILURE,
            }
        }
        Some(other) => {
            eprintln!("pinwheel-test-agent: unknown mode {other:?}");
            ExitCode::FAILURE
        }
    }
}

/// Attaches and answers each request with `answer` until the daemon
/// closes the link.
fn serve(
    mut answer: impl FnMut(&Agent, pinwheel_agent::Request) -> Result<(), AgentError>,
) -> ExitCode {
    let agent = match Agent::from_env() {
        Ok(agent) => agent,
        Err(err) => {
            eprintln!("test agent: {err}");
            return ExitCode::FAILURE;
        }
    };
    loop {
        let served = match agent.recv(Duration::from_secs(1)) {
            Ok(Some(request)) => answer(&agent, request),
            Ok(None) => Ok(()),
            Err(err) => Err(err),
        };
        match served {
            Ok(()) => {}
            Err(AgentError::Disconnected) => return ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("test agent: {err}");
                return ExitCode::FAILURE;
            }
        }
    }
}

/// Attaches with the bare link protocol, then scribbles on its ring.
fn hostile() -> ExitCode {
    let attach = || -> Result<pinwheel_ipc::ring::Producer, String> {
        let link = PeerLink::inherited(AGENT_FD).map_err(|e| e.to_string())?;
        let name = std::env::var(AGENT_ENV).map_err(|e| e.to_string())?;
        link.send_message(&LinkMessage::Hello {
            wire: WIRE_VERSION,
            pid: std::process::id(),
            name,
        })
        .map_err(|e| e.to_string())?;
        let wait = Duration::from_secs(5);
        link.recv_message(wait).map_err(|e| e.to_string())?;
        let _inbound = link.recv(wait).map_err(|e| e.to_string())?;
        let outbound = link.recv(wait).map_err(|e| e.to_string())?;
        std::mem::forget(link);
        outbound.into_producer().map_err(|e| e.to_string())
    };
    let mut producer = match attach() {
        Ok(producer) => producer,
        Err(err) => {
            eprintln!("hostile: {err}");
            return ExitCode::FAILURE;
        }
    };
    loop {
        let _ = producer.try_push(b"\xde\xad\xbe\xef not an envelope at all, just garbage bytes");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Attaches and then ignores everything.
fn silent() -> ExitCode {
    match Agent::from_env() {
        Ok(agent) => loop {
            std::thread::sleep(Duration::from_secs(60));
            let _ = agent.name();
        },
        Err(_) => ExitCode::FAILURE,
    }
}
