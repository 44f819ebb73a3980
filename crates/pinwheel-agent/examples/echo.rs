//! The echo agent: for every request, call each agent of its manifest's
//! `calls` in order with the same method and body, then reply status 0
//! with the request's body (or, when a call fails, that call's status and
//! no body). It exits when the daemon closes its link.
//!
//! ```text
//! cargo build --release -p pinwheel-agent --example echo
//! pinwheel run --topology topology/vm-2cpu.toml --agents agents/echo-chain.toml
//! ```

#![allow(clippy::print_stderr)]

use std::process::ExitCode;
use std::time::Duration;

use pinwheel_agent::{Agent, AgentError, now_ns};

/// A call's timeout when the request has no deadline.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);
/// Status answered when a downstream call timed out or failed to send.
const STATUS_TIMEOUT: u16 = 504;

/// Serves requests until the daemon closes the link.
pub fn main() -> ExitCode {
    let agent = match Agent::from_env() {
        Ok(agent) => agent,
        Err(err) => {
            eprintln!("echo: {err}");
            return ExitCode::FAILURE;
        }
    };
    let calls: Vec<String> = agent.calls().map(str::to_owned).collect();
    loop {
        let request = match agent.recv(Duration::from_secs(1)) {
            Ok(Some(request)) => request,
            Ok(None) => continue,
            Err(AgentError::Disconnected) => return ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("echo: {err}");
                return ExitCode::FAILURE;
            }
        };
        let timeout = match request.deadline_ns() {
            0 => CALL_TIMEOUT,
            deadline => Duration::from_nanos(deadline.saturating_sub(now_ns())),
        };
        let mut status = 0;
        for callee in &calls {
            match agent.call(callee, request.method(), request.body(), timeout) {
                Ok(reply) if reply.status == 0 => {}
                Ok(reply) => status = reply.status,
                Err(_) => status = STATUS_TIMEOUT,
            }
            if status != 0 {
                break;
            }
        }
        let body = if status == 0 {
            request.body().to_vec()
        } else {
            Vec::new()
        };
        if let Err(err) = request.reply(status, &body) {
            eprintln!("echo: {err}");
            return ExitCode::FAILURE;
        }
    }
}
