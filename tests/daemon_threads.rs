#![cfg(test)]
//! The threads of a running `pinwheel run`, from `/proc`: besides the
//! executors, the main thread and the one control runtime's thread (with
//! its blocking thread for GPU calls), whatever the control side runs
//! (core loop, admin API, a NATS link, GPU sampling, the wake-up guard).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pinwheel::runtime::control::{BLOCKING_THREAD, CONTROL_THREAD};
use pinwheel::test_support::NatsServer;
use serde_json::Value;

const CRATE: &str = env!("CARGO_MANIFEST_DIR");
/// Longest wait for anything a daemon should do within a second or two;
/// only a hang reaches it.
const HANG_GUARD: Duration = Duration::from_secs(60);
/// The name glommio's executor threads start with (`pw-exec-<cpu>`,
/// then glommio's `-<executor id>`).
const EXECUTOR_PREFIX: &str = "pw-exec-";

/// One thread of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Task {
    tid: i32,
    comm: String,
    cpus_allowed: String,
}

fn tasks(pid: u32) -> Vec<Task> {
    let mut tasks: Vec<Task> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|entry| {
            let dir = entry.unwrap().path();
            let status = std::fs::read_to_string(dir.join("status")).unwrap();
            let cpus_allowed = status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .unwrap()
                .trim()
                .to_owned();
            Task {
                tid: dir.file_name().unwrap().to_str().unwrap().parse().unwrap(),
                comm: std::fs::read_to_string(dir.join("comm"))
                    .unwrap()
                    .trim_end()
                    .to_owned(),
                cpus_allowed,
            }
        })
        .collect();
    tasks.sort_by_key(|t| t.tid);
    tasks
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn get(addr: &str, path: &str) -> Option<Value> {
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .new_agent();
    let mut response = agent.get(&format!("http://{addr}{path}")).call().ok()?;
    response.body_mut().read_json().ok()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let began = Instant::now();
    while !done() {
        assert!(began.elapsed() < HANG_GUARD, "never saw {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn terminate(mut child: Child) -> Option<i32> {
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let began = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        assert!(began.elapsed() < HANG_GUARD, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn besides_its_executors_a_clustered_daemon_has_at_most_three_named_threads() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let vm = std::fs::read_to_string(format!("{CRATE}/topology/vm-2cpu.toml")).unwrap();
    // Agents on CPU 0, the control runtime pinned to CPU 1.
    let topology = vm.replace(
        "data_plane = { cpus = \"0-1\" }",
        "data_plane = { cpus = \"0\" }\ncontrol = { cpus = \"1\" }",
    );
    assert_ne!(topology, vm, "the roles line moved in vm-2cpu.toml");
    let topology_path = dir.path().join("topology.toml");
    std::fs::write(&topology_path, topology).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_pinwheel"))
        .current_dir(CRATE)
        .arg("run")
        .arg("--topology")
        .arg(&topology_path)
        .args(["--agents", "agents/voice-pipeline.toml", "--unprivileged"])
        .args(["--rate", "100", "--duration", "120", "--admin-addr", &addr])
        .args(["--nats", &nats.url(), "--host", "mainpc"])
        .arg("--admin-token-file")
        .arg(dir.path().join("no-token"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Every control task has run: the link is up, GPUs were sampled.
    let mut executors = 0;
    wait_for("the cluster link up and agents up", || {
        let (Some(agents), Some(health)) = (get(&addr, "/v1/agents"), get(&addr, "/health")) else {
            return false;
        };
        executors = agents["executors"].as_array().map_or(0, Vec::len);
        agents["agents"][0]["state"] == "up" && !health.to_string().contains("cluster_link_down")
    });
    wait_for("a GPU sample", || {
        tasks(pid).iter().any(|t| t.comm == BLOCKING_THREAD)
    });

    let all = tasks(pid);

    // glommio names each executor thread `pw-exec-<cpu>-<id>`; the one
    // helper thread of its blocking pool is spawned unnamed from that
    // thread and so inherits the same name. Both per executor, no more.
    let (executor_threads, others): (Vec<Task>, Vec<Task>) = all
        .iter()
        .cloned()
        .partition(|t| t.comm.starts_with(EXECUTOR_PREFIX));
    let mut names: Vec<&str> = executor_threads.iter().map(|t| t.comm.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(executors, 1, "{all:?}");
    assert_eq!(names.len(), executors, "{all:?}");
    assert_eq!(executor_threads.len(), 2 * executors, "{all:?}");
    assert!(others.len() <= 3, "{others:?}");
    let main = others.iter().find(|t| t.tid == pid as i32).unwrap();
    assert_eq!(main.comm, "pinwheel");
    for thread in others.iter().filter(|t| t.tid != pid as i32) {
        assert!(thread.comm.starts_with("pinwheel-"), "{others:?}");
    }
    let control = others.iter().find(|t| t.comm == CONTROL_THREAD).unwrap();
    assert_eq!(control.cpus_allowed, "1", "{others:?}");
    let blocking = others.iter().find(|t| t.comm == BLOCKING_THREAD).unwrap();
    assert_eq!(blocking.cpus_allowed, "1", "{others:?}");
    assert_eq!(terminate(child), Some(0));
}
