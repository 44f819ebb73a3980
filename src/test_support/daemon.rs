//! [`DaemonProcess`]: a `pinwheel run` child process with its admin API
//! on a free loopback port, for tests that look at a running daemon from
//! outside (`pinwheel top`, the dashboards' metrics). SIGTERMed on drop.
//!
//! The binary is the test's `env!("CARGO_BIN_EXE_pinwheel")`, passed in:
//! only integration tests know it.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::cli::AdminClient;
use crate::observe::api::{AgentState, AgentsResponse};

/// Longest wait for anything a daemon should do within seconds; only a
/// hang reaches it.
pub const HANG_GUARD: Duration = Duration::from_secs(120);

/// A running `pinwheel run`.
#[derive(Debug)]
pub struct DaemonProcess {
    child: Child,
    addr: SocketAddr,
}

impl DaemonProcess {
    /// Starts `exe run ARGS --admin-addr <free port> --duration 600` in
    /// `dir` and waits until every agent of `/v1/agents` is up (external
    /// agents detached).
    pub fn start(exe: &Path, dir: &Path, args: &[&str]) -> DaemonProcess {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let child = Command::new(exe)
            .current_dir(dir)
            .arg("run")
            .args(args)
            .args(["--duration", "600", "--admin-addr", &addr.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pinwheel run starts");
        let daemon = DaemonProcess { child, addr };
        daemon.wait_for("every agent up", |client| {
            client.get::<AgentsResponse>("/v1/agents").is_ok_and(|a| {
                !a.agents.is_empty()
                    && a.agents
                        .iter()
                        .all(|a| matches!(a.state, AgentState::Up | AgentState::Detached))
            })
        });
        daemon
    }

    /// The admin API's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A client of its admin API.
    pub fn client(&self) -> AdminClient {
        AdminClient::new(self.addr)
    }

    /// Polls `done` every 100 ms; panics naming `what` after [`HANG_GUARD`].
    pub fn wait_for(&self, what: &str, done: impl Fn(&AdminClient) -> bool) {
        let client = self.client();
        let began = Instant::now();
        while !done(&client) {
            assert!(
                began.elapsed() < HANG_GUARD,
                "the daemon never got to: {what}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, and its exit status.
    pub fn terminate(mut self) -> ExitStatus {
        self.stop()
    }

    fn stop(&mut self) -> ExitStatus {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("a pid fits i32"));
        let _ = kill(pid, Signal::SIGTERM);
        let began = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if began.elapsed() > HANG_GUARD {
                let _ = self.child.kill();
                return self.child.wait().expect("a killed child can be waited for");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.stop();
        }
    }
}
