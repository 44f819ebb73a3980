//! [`DaemonProcess`]: a `pinwheel run` child process with its admin API
//! on a free loopback port, for tests that look at a running daemon from
//! outside (`pinwheel top`, the dashboards' metrics). SIGTERMed on drop.
//! Its log (`RUST_LOG=info`) goes to a temporary file, and a wait that
//! fails shows its tail: a test that fails once in many runs on a CI
//! machine leaves what the daemon did.
//!
//! The binary is the test's `env!("CARGO_BIN_EXE_pinwheel")`, passed in:
//! only integration tests know it.

use std::cell::RefCell;
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
    child: RefCell<Child>,
    addr: SocketAddr,
    /// Holds its log (`daemon.log`) and run directory (`run`).
    dir: tempfile::TempDir,
}

/// Lines of the log a failed wait shows.
const LOG_TAIL: usize = 60;

impl DaemonProcess {
    /// Starts `exe run ARGS --admin-addr <free port> --duration 600` in
    /// `dir` (with `--run-dir <temporary>` unless ARGS name one) and waits
    /// until every agent of `/v1/agents` is up (external agents detached).
    pub fn start(exe: &Path, dir: &Path, args: &[&str]) -> DaemonProcess {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let logs = tempfile::tempdir().expect("a temporary directory");
        let log = std::fs::File::create(logs.path().join("daemon.log")).expect("a log file");
        let mut command = Command::new(exe);
        command.current_dir(dir).arg("run").args(args).args([
            "--duration",
            "600",
            "--admin-addr",
            &addr.to_string(),
        ]);
        if !names_run_dir(args) {
            // Its own attach socket: tests run side by side.
            command.arg("--run-dir").arg(logs.path().join("run"));
        }
        let child = command
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("pinwheel run starts");
        let daemon = DaemonProcess {
            child: RefCell::new(child),
            addr,
            dir: logs,
        };
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

    /// Polls `done` every 100 ms; panics naming `what` after
    /// [`HANG_GUARD`], or as soon as the daemon has exited, with the tail
    /// of its log.
    pub fn wait_for(&self, what: &str, done: impl Fn(&AdminClient) -> bool) {
        let client = self.client();
        let began = Instant::now();
        while !done(&client) {
            if let Ok(Some(status)) = self.child.borrow_mut().try_wait() {
                self.fail(&format!(
                    "the daemon exited ({status}) before it got to: {what}"
                ));
            }
            if began.elapsed() >= HANG_GUARD {
                self.fail(&format!("the daemon never got to: {what}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Panics with `why` and the last [`LOG_TAIL`] lines of its log.
    fn fail(&self, why: &str) -> ! {
        let log = std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n");
        panic!("{why}; the last {LOG_TAIL} lines of its log:\n{tail}")
    }

    /// SIGTERM, and its exit status; panics, with the tail of its log,
    /// when it does not exit within [`HANG_GUARD`] (it is killed).
    pub fn terminate(mut self) -> ExitStatus {
        match self.stop() {
            Ok(status) => status,
            Err(_) => self.fail(&format!(
                "the daemon did not exit within {HANG_GUARD:?} of SIGTERM"
            )),
        }
    }

    /// SIGTERM, and its exit status (`Err`: it did not exit within
    /// [`HANG_GUARD`] and was killed).
    fn stop(&mut self) -> Result<ExitStatus, ExitStatus> {
        let child = self.child.get_mut();
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("a pid fits i32"));
        let _ = kill(pid, Signal::SIGTERM);
        let began = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Ok(status);
            }
            if began.elapsed() > HANG_GUARD {
                let _ = child.kill();
                return Err(child.wait().expect("a killed child can be waited for"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        if matches!(self.child.get_mut().try_wait(), Ok(None)) {
            let _ = self.stop();
        }
    }
}

/// Whether `args` name a run directory, as `--run-dir DIR` or
/// `--run-dir=DIR` (a second one would make `pinwheel run` refuse).
fn names_run_dir(args: &[&str]) -> bool {
    args.iter()
        .any(|a| *a == "--run-dir" || a.starts_with("--run-dir="))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_directory_is_named_in_either_form() {
        assert!(names_run_dir(&["--agents", "a.toml", "--run-dir", "/r"]));
        assert!(names_run_dir(&["--run-dir=/r"]));
        assert!(!names_run_dir(&["--agents", "a.toml", "--run-dirt"]));
        assert!(!names_run_dir(&[]));
    }
}
