#![cfg(test)]
//! The admin API's edge against clients that misbehave, from outside a
//! running `pinwheel run`: a slow-loris client, silent connections past
//! the cap, bodies too large for a client without a token. None of them
//! may hold the daemon: SIGTERM still ends it promptly, exit 0, with its
//! tuning reverted.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pinwheel::observe::admin::{MAX_BODY_BYTES, MAX_CONNECTIONS, SHUTDOWN_GRACE};
use pinwheel::tuning::journal_path;

const CRATE: &str = env!("CARGO_MANIFEST_DIR");
/// Longest wait for anything a daemon should do within seconds; only a
/// hang reaches it.
const HANG_GUARD: Duration = Duration::from_secs(60);
/// The knob the test profile sets, under the fake root, and its values.
const KNOB: &str = "proc/sys/vm/swappiness";
const ORIGINAL: &str = "60\n";
const TUNED: &str = "10\n";
const TOKEN: &str = "edge-test-token";

/// The daemons of this file run one at a time: a privileged one runs its
/// executors SCHED_FIFO on this 2-CPU machine.
fn one_daemon_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A running daemon over a temporary tree: its topology names a tuning
/// profile applied under the tree (`--tuning-root`).
struct Daemon {
    child: Child,
    addr: String,
    dir: tempfile::TempDir,
}

impl Daemon {
    fn start(privileged: bool) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let write = |rel: &str, text: &str| {
            let path = dir.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
            path
        };
        let vm = std::fs::read_to_string(format!("{CRATE}/topology/vm-2cpu.toml")).unwrap();
        let topology = write(
            "topology.toml",
            &format!("{vm}\n[tuning]\nprofile = \"profile.toml\"\n"),
        );
        write(
            "profile.toml",
            "schema = 1\n[sysctl]\n\"vm.swappiness\" = 10\n",
        );
        write(&format!("root/{KNOB}"), ORIGINAL);
        let token = write("token", TOKEN);
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
        let addr = format!(
            "127.0.0.1:{}",
            TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        );
        let mut command = Command::new(env!("CARGO_BIN_EXE_pinwheel"));
        command
            .current_dir(CRATE)
            .arg("run")
            .arg("--topology")
            .arg(&topology)
            .args(["--agents", "agents/voice-pipeline.toml", "--rate", "0"])
            .args(["--duration", "120", "--admin-addr", &addr])
            .arg("--admin-token-file")
            .arg(&token)
            .arg("--tuning-root")
            .arg(dir.path().join("root"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if !privileged {
            command.arg("--unprivileged");
        }
        let daemon = Daemon {
            child: command.spawn().unwrap(),
            addr,
            dir,
        };
        let began = Instant::now();
        while TcpStream::connect(&daemon.addr).is_err() {
            assert!(began.elapsed() < HANG_GUARD, "the admin API never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
        daemon
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn knob(&self) -> String {
        std::fs::read_to_string(self.root().join(KNOB)).unwrap()
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(&self.addr).unwrap();
        stream.set_read_timeout(Some(HANG_GUARD)).unwrap();
        stream
    }

    /// Sends `head` (and `body`) on a new connection; the answer's status.
    fn status_of(&self, head: &str, body: &[u8]) -> u16 {
        let mut stream = self.connect();
        stream.write_all(head.as_bytes()).unwrap();
        // The server may answer and close before it reads the body.
        let _ = stream.write_all(body);
        status_line(&mut stream)
    }

    /// SIGTERM; the exit status and how long the exit took.
    fn terminate(mut self) -> (ExitStatus, Duration, tempfile::TempDir) {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).unwrap();
        let began = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(began.elapsed() < HANG_GUARD, "no exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(5));
        };
        (status, began.elapsed(), self.dir)
    }
}

/// The status code of the response on `stream`.
fn status_line(stream: &mut TcpStream) -> u16 {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            other => panic!("no status line ({other:?}) after {head:?}"),
        }
    }
    let line = String::from_utf8(head).unwrap();
    line.split(' ').nth(1).unwrap().parse().unwrap()
}

/// True once the server has closed `stream` (EOF or reset).
fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Err(err) => matches!(
            err.kind(),
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
        ),
        Ok(_) => false,
    }
}

fn post_head(path: &str, extra: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: pinwheel\r\nContent-Type: application/json\r\n{extra}\r\n"
    )
}

fn journal_is_empty(root: &Path) -> bool {
    std::fs::read(journal_path(root)).map_or(true, |bytes| bytes.is_empty())
}

#[test]
fn a_slow_loris_client_and_a_full_house_do_not_hold_sigterm_and_the_tuning_is_reverted() {
    let _one = one_daemon_at_a_time();
    let sut = Daemon::start(true);
    assert_eq!(sut.knob(), TUNED, "the profile was applied");
    assert!(!journal_is_empty(&sut.root()));
    // Half a request line, then silence.
    let mut loris = sut.connect();
    loris.write_all(b"GET /hea").unwrap();
    // Idle connections past the cap: the last ones wait in the backlog.
    let idle: Vec<TcpStream> = (0..MAX_CONNECTIONS + 8).map(|_| sut.connect()).collect();

    let (status, took, dir) = sut.terminate();

    assert_eq!(status.code(), Some(0));
    // The one deadline the daemon promises: a client cannot stretch the
    // shutdown past the admin API's grace by more than the drain.
    assert!(
        took < Duration::from_secs(2),
        "exit took {took:?} (grace {SHUTDOWN_GRACE:?})"
    );
    let root = dir.path().join("root");
    assert_eq!(std::fs::read_to_string(root.join(KNOB)).unwrap(), ORIGINAL);
    assert!(journal_is_empty(&root));
    drop((loris, idle));
}

#[test]
fn a_silent_connection_is_closed_after_the_header_read_timeout() {
    let _one = one_daemon_at_a_time();
    let sut = Daemon::start(false);
    let mut silent = sut.connect();
    let mut half = sut.connect();
    half.write_all(b"GET /health HT").unwrap();

    assert!(closed_by_server(&mut silent));
    assert!(closed_by_server(&mut half));
    assert_eq!(
        sut.status_of("GET /health HTTP/1.1\r\nHost: pinwheel\r\n\r\n", b""),
        200
    );
    assert_eq!(sut.terminate().0.code(), Some(0));
}

#[test]
fn a_connection_past_the_cap_waits_until_a_slot_frees() {
    let _one = one_daemon_at_a_time();
    let sut = Daemon::start(false);
    let idle: Vec<TcpStream> = (0..MAX_CONNECTIONS).map(|_| sut.connect()).collect();
    let mut waiting = sut.connect();
    waiting
        .write_all(b"GET /health HTTP/1.1\r\nHost: pinwheel\r\n\r\n")
        .unwrap();
    waiting
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut byte = [0u8; 1];
    let early = waiting.read(&mut byte);
    assert!(
        matches!(&early, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "answered while every slot was taken: {early:?}"
    );

    drop(idle);

    waiting.set_read_timeout(Some(HANG_GUARD)).unwrap();
    assert_eq!(status_line(&mut waiting), 200);
    assert_eq!(sut.terminate().0.code(), Some(0));
}

#[test]
fn an_oversized_body_is_refused_with_413_before_the_token_is_checked() {
    let _one = one_daemon_at_a_time();
    let sut = Daemon::start(false);
    let over = MAX_BODY_BYTES + 1;
    let small = br#"{"model":"m"}"#;

    // Declared too large: refused before a byte of it is read.
    let declared = sut.status_of(
        &post_head("/v1/models/pin", &format!("Content-Length: {over}\r\n")),
        b"",
    );
    // Chunked: cut off once it passes the limit.
    let mut chunked = format!("{over:x}\r\n").into_bytes();
    chunked.extend(std::iter::repeat_n(b' ', over));
    chunked.extend(b"\r\n0\r\n\r\n");
    let streamed = sut.status_of(
        &post_head("/v1/models/pin", "Transfer-Encoding: chunked\r\n"),
        &chunked,
    );
    let no_token = sut.status_of(
        &post_head(
            "/v1/models/pin",
            &format!("Content-Length: {}\r\n", small.len()),
        ),
        small,
    );
    let with_token = sut.status_of(
        &post_head(
            "/v1/models/pin",
            &format!("Content-Length: {over}\r\nAuthorization: Bearer {TOKEN}\r\n"),
        ),
        b"",
    );

    assert_eq!(
        (declared, streamed, no_token, with_token),
        (413, 413, 401, 413)
    );
    assert_eq!(sut.terminate().0.code(), Some(0));
}
