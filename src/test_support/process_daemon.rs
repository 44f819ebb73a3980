//! [`TestDaemon`]: a `pinwheel run` in a subprocess for the tests of
//! agent processes, which need more of it than [`super::DaemonProcess`]
//! gives: its manifest, run directory, report and log in a temporary
//! directory it owns, its admin API on a free loopback port with a token
//! for its writes ([`TestDaemon::token_file`]), the report read back when
//! it ends, and `/proc` helpers (placement, zombies,
//! `/dev/shm`) to check what it left behind.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use super::HANG_GUARD;
use crate::cli::AdminClient;
use crate::observe::api::{AgentStatus, AgentsResponse, HealthReport};

/// A running daemon.
#[derive(Debug)]
pub struct TestDaemon {
    child: Child,
    dir: tempfile::TempDir,
    addr: SocketAddr,
}

/// How a daemon ended.
#[derive(Debug)]
pub struct Ended {
    /// Its exit status.
    pub status: ExitStatus,
    /// Its JSON report.
    pub report: Value,
    /// Its log.
    pub log: String,
    /// The run directory it used.
    pub run_dir: PathBuf,
}

impl TestDaemon {
    /// Starts `pinwheel` (`exe`) with `manifest` on the 2-CPU topology of
    /// the crate at `crate_dir`, plus `args`.
    pub fn start(exe: &str, crate_dir: &str, manifest: &str, args: &[&str]) -> Self {
        let topology = Path::new("topology/vm-2cpu.toml");
        Self::start_on(exe, crate_dir, topology, manifest, args)
    }

    /// [`TestDaemon::start`] on another topology file (relative to
    /// `crate_dir`, or absolute).
    pub fn start_on(
        exe: &str,
        crate_dir: &str,
        topology: &Path,
        manifest: &str,
        args: &[&str],
    ) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        // Agents running as nobody reach the attach socket through it.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod");
        std::fs::write(dir.path().join("agents.toml"), manifest).expect("write manifest");
        let token = dir.path().join("admin.token");
        std::fs::write(&token, "process-test-token\n").expect("write token");
        std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod token");
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port");
        let log = std::fs::File::create(dir.path().join("daemon.log")).expect("log file");
        let child = Command::new(exe)
            .current_dir(crate_dir)
            .args(["run", "--topology"])
            .arg(topology)
            .arg("--agents")
            .arg(dir.path().join("agents.toml"))
            .arg("--run-dir")
            .arg(dir.path().join("run"))
            .arg("--report")
            .arg(dir.path().join("report.json"))
            .args(["--admin-addr", &addr.to_string(), "--admin-token-file"])
            .arg(&token)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start pinwheel");
        let daemon = Self { child, dir, addr };
        daemon.wait_for("the admin API", |d| d.health().is_some());
        daemon
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The admin token file (for `pinwheel fault --token-file`).
    pub fn token_file(&self) -> PathBuf {
        self.dir.path().join("admin.token")
    }

    /// The admin API's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The attach socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("run/agent.sock")
    }

    /// A client of its admin API.
    pub fn client(&self) -> AdminClient {
        AdminClient::new(self.addr)
    }

    /// The raw text of `GET path` (empty while the API is not up).
    pub fn get_text(&self, path: &str) -> String {
        self.client().text(path).unwrap_or_default()
    }

    /// `/health`, once the API is up.
    pub fn health(&self) -> Option<HealthReport> {
        self.client().get("/health").ok()
    }

    /// The `/v1/agents` entry of `name`.
    pub fn agent(&self, name: &str) -> Option<AgentStatus> {
        let all: AgentsResponse = self.client().get("/v1/agents").ok()?;
        all.agents.into_iter().find(|a| a.name == name)
    }

    /// Waits until `done`, failing the test after [`HANG_GUARD`].
    pub fn wait_for(&self, what: &str, done: impl Fn(&Self) -> bool) {
        let began = Instant::now();
        while !done(self) {
            assert!(
                began.elapsed() < HANG_GUARD,
                "the daemon never got to {what}; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Sends `signal` and waits for the exit.
    pub fn stop(self, signal: Signal) -> Ended {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("signal the daemon");
        self.wait()
    }

    /// Waits for the daemon to exit by itself (`--duration`).
    pub fn wait(mut self) -> Ended {
        let began = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(
                began.elapsed() < HANG_GUARD,
                "the daemon did not exit; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let report = std::fs::read_to_string(self.dir.path().join("report.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        Ended {
            status,
            report,
            log: self.log(),
            run_dir: self.dir.path().join("run"),
        }
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A line of `/proc/PID/status` (`Cpus_allowed_list`, `Uid`, ...).
pub fn proc_status(pid: u32, key: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().to_owned())
}

/// Children of `parent` that are zombies (exited, not reaped).
pub fn zombies_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            proc_status(pid, "PPid").is_some_and(|p| p == parent.to_string())
                && proc_status(pid, "State").is_some_and(|s| s.starts_with('Z'))
        })
        .collect()
}

/// Whether process `pid` exists (a zombie counts).
pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The names in `/dev/shm`.
pub fn dev_shm() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}
