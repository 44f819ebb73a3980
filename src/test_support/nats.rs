//! [`NatsServer`]: a real `nats-server` child process for tests of the
//! cluster link and of clustered daemons, on a free loopback port with
//! JetStream in a temporary directory, killed on drop.
//!
//! The binary is Debian's `nats-server` (`.ci/run` installs it). A test
//! that needs one fails, not skips, when it is missing: [`NatsServer::start`]
//! panics saying how to install it.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a server may take to listen.
const PATIENCE: Duration = Duration::from_secs(20);

/// A nats-server child process, killed on drop.
#[derive(Debug)]
pub struct NatsServer {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl NatsServer {
    /// Starts a server on a free loopback port and waits until it listens.
    pub fn start() -> NatsServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        NatsServer::start_on(port)
    }

    /// Starts a server on `port` (a restart on the port of one stopped),
    /// with empty JetStream storage, and waits until it listens.
    pub fn start_on(port: u16) -> NatsServer {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let child = Command::new(nats_server_binary())
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        let deadline = Instant::now() + PATIENCE;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server never listened on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        NatsServer {
            child,
            port,
            _dir: dir,
        }
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server; returns its port, for a restart on it.
    pub fn stop(mut self) -> u16 {
        self.kill();
        self.port
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The nats-server binary: on PATH, or where Debian puts it. Panics if
/// neither exists: the tests that need it must fail, not skip, without it.
fn nats_server_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("nats-server"))
        .chain([
            PathBuf::from("/usr/sbin/nats-server"),
            PathBuf::from("/usr/bin/nats-server"),
        ]);
    on_path
        .into_iter()
        .find(|p| p.is_file())
        .expect("nats-server is not installed; `apt-get install nats-server` (.ci/run does)")
}
