//! [`NatsServer`]: a real `nats-server` child process for tests of the
//! cluster link and of clustered daemons, on a free loopback port with
//! JetStream in a temporary directory, killed on drop; optionally with a
//! configuration file (`pinwheel cluster init`'s, for authorization).
//! [`NatsCluster`]: three (or more) such servers routed to each other on
//! loopback, JetStream clustered, one of which a test can kill.
//!
//! The binary is Debian's `nats-server` (`.ci/run` installs it). A test
//! that needs one fails, not skips, when it is missing: [`NatsServer::start`]
//! panics saying how to install it.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
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
        NatsServer::start_on(free_port())
    }

    /// Starts a server on `port` (a restart on the port of one stopped),
    /// with empty JetStream storage, and waits until it listens.
    pub fn start_on(port: u16) -> NatsServer {
        NatsServer::spawn(port, &[])
    }

    /// Starts a server with the configuration file `conf` (as `pinwheel
    /// cluster init` writes it: its JetStream store and authorization; the
    /// port is the test's).
    pub fn start_with_config(conf: &Path) -> NatsServer {
        let conf = conf.to_str().expect("a UTF-8 path").to_owned();
        NatsServer::spawn(free_port(), &["-c".to_owned(), conf])
    }

    /// A server on `port` with `extra` arguments; JetStream in a temporary
    /// directory unless a configuration file (`-c`) says where.
    fn spawn(port: u16, extra: &[String]) -> NatsServer {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut command = Command::new(nats_server_binary());
        command
            .args(extra)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()]);
        if !extra.iter().any(|a| a == "-c") {
            command.arg("-js").arg("-sd").arg(dir.path());
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        wait_listening(port);
        NatsServer {
            child,
            port,
            _dir: dir,
        }
    }

    /// Its client port.
    pub fn port(&self) -> u16 {
        self.port
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

/// A free loopback port (free when asked; the server takes it at once).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

fn wait_listening(port: u16) {
    let deadline = Instant::now() + PATIENCE;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nats-server never listened on port {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Servers routed to each other on loopback, JetStream clustered (each
/// with its own storage), so buckets can have three replicas. Killed on
/// drop.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<Option<NatsServer>>,
    _store: TempDir,
}

impl NatsCluster {
    /// `n` servers (3 for replicas 3), with the users and permissions of
    /// `auth` (an `auth.conf` of `pinwheel cluster init`) if given; waits
    /// until each listens. Each node's configuration (its store, and the
    /// included `auth.conf`) is written beside `auth`, or in a temporary
    /// directory.
    pub fn start(n: usize, auth: Option<&Path>) -> NatsCluster {
        let clients: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let routes: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let all_routes = routes
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let store = tempfile::tempdir().expect("a temporary directory");
        let conf_dir = auth
            .and_then(Path::parent)
            .map_or_else(|| store.path().to_owned(), Path::to_owned);
        let nodes = (0..n)
            .map(|i| {
                let conf = conf_dir.join(format!("node-{i}.conf"));
                let include = if auth.is_some() {
                    "include \"auth.conf\"\n"
                } else {
                    ""
                };
                let text = format!(
                    "jetstream {{\n  store_dir: {:?}\n}}\n{include}",
                    store.path().join(format!("node-{i}")).display().to_string()
                );
                std::fs::write(&conf, text).expect("a node configuration");
                let extra = vec![
                    "-c".to_owned(),
                    conf.to_str().expect("UTF-8").to_owned(),
                    "-n".to_owned(),
                    format!("node-{i}"),
                    "--cluster_name".to_owned(),
                    "pinwheel-test".to_owned(),
                    "--cluster".to_owned(),
                    format!("nats://127.0.0.1:{}", routes[i]),
                    "--routes".to_owned(),
                    all_routes.clone(),
                ];
                Some(NatsServer::spawn(clients[i], &extra))
            })
            .collect();
        NatsCluster {
            nodes,
            _store: store,
        }
    }

    /// Every live node's client URL, comma-separated (as `--nats` takes
    /// them).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .flatten()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Kills node `i` with SIGKILL.
    pub fn kill(&mut self, i: usize) {
        if let Some(node) = self.nodes[i].take() {
            node.stop();
        }
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
