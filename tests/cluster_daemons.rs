#![cfg(test)]
//! Clustered `pinwheel run` daemons (the real binary) on a real
//! nats-server: what an operator sees through the admin API and the CLI
//! when a host dies, when NATS goes away and comes back, and with no
//! cluster at all.
//!
//! Each daemon runs `topology/vm-2cpu.toml` (one simulated 24 GiB GPU)
//! under its own `--host` name with `tests/fixtures/cluster/agents.toml`
//! (two agents per host), unprivileged and at a low request rate, so three
//! fit on a 2-vCPU machine. Each test starts its own nats-server and fails,
//! not skips, when the binary is missing. Waits are generous "eventually"
//! loops; nothing asserts how long anything took.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pinwheel::cluster::{OwnershipRecord, decode_ownership};
use pinwheel::observe::api::{
    AgentState, AgentStatus, AgentsResponse, ClusterResponse, GpusResponse, HealthReport,
    HealthStatus, HostState, ModelAnswer, PlacementView,
};
use pinwheel::test_support::{NatsCluster, NatsServer};
use serde::de::DeserializeOwned;
use serde_json::Value;

const CRATE: &str = env!("CARGO_MANIFEST_DIR");
const PINWHEEL: &str = env!("CARGO_BIN_EXE_pinwheel");
/// Longest wait for anything that should happen within a few seconds;
/// only a hang reaches it.
const PATIENCE: Duration = Duration::from_secs(60);

/// A `pinwheel run` child, SIGKILLed on drop.
struct Daemon {
    child: Child,
    name: String,
    addr: String,
    log: PathBuf,
}

/// How to start one daemon.
struct Launch<'a> {
    name: &'a str,
    nats: Option<&'a str>,
    topology: &'a str,
    agents: &'a [&'a str],
    rate: &'a str,
    extra: &'a [&'a str],
}

impl<'a> Launch<'a> {
    /// The cluster tests' daemon: vm-2cpu, the two-agents-a-host fixture.
    fn small(name: &'a str, nats: Option<&'a str>) -> Self {
        Launch {
            name,
            nats,
            topology: "topology/vm-2cpu.toml",
            agents: &["tests/fixtures/cluster/agents.toml"],
            rate: "20",
            extra: &[],
        }
    }
}

impl Daemon {
    /// Starts a daemon named `name`, in the cluster at `nats` if given, and
    /// waits until its coordinator is up.
    fn start(name: &str, nats: Option<&str>, dir: &Path) -> Daemon {
        Daemon::launch(&Launch::small(name, nats), dir, true)
    }

    /// Starts a daemon as `launch` says; waits until its admin API answers,
    /// and its coordinator is up if `coordinator`.
    fn launch(launch: &Launch<'_>, dir: &Path, coordinator: bool) -> Daemon {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let name = launch.name;
        let log = dir.join(format!("{name}.log"));
        let mut command = Command::new(PINWHEEL);
        command
            .current_dir(CRATE)
            .args(["run", "--topology", launch.topology, "--agents"])
            .args(launch.agents)
            .args(["--host", name, "--rate", launch.rate, "--unprivileged"])
            .args(["--admin-addr", &addr])
            .args(launch.extra)
            .arg("--admin-token-file")
            .arg(token_file(dir))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("a log file"));
        if !launch.extra.contains(&"--duration") {
            command.args(["--duration", "600"]);
        }
        if let Some(url) = launch.nats {
            command.args(["--nats", url]);
        }
        let daemon = Daemon {
            child: command.spawn().expect("pinwheel starts"),
            name: name.to_owned(),
            addr,
            log,
        };
        if coordinator {
            eventually(&format!("{name}'s coordinator up"), &[&daemon], || {
                daemon
                    .coordinator()
                    .is_some_and(|c| c.state == AgentState::Up)
            });
        } else {
            eventually(&format!("{name}'s admin API"), &[&daemon], || {
                daemon.cluster().is_some_and(|c| c.host == name)
            });
        }
        daemon
    }

    /// An admin API answer, `None` while the daemon does not answer.
    fn get<T: DeserializeOwned>(&self, path: &str) -> Option<T> {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .new_agent();
        agent
            .get(&format!("http://{}{path}", self.addr))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_json().ok())
    }

    fn cluster(&self) -> Option<ClusterResponse> {
        self.get("/v1/cluster")
    }

    fn agents(&self) -> Vec<AgentStatus> {
        self.get::<AgentsResponse>("/v1/agents")
            .map_or_else(Vec::new, |a| a.agents)
    }

    fn coordinator(&self) -> Option<AgentStatus> {
        self.agents()
            .into_iter()
            .find(|a| a.name.starts_with("RequestCoordinator"))
    }

    fn handled(&self) -> u64 {
        self.coordinator().map_or(0, |c| c.handled)
    }

    fn health(&self) -> Option<HealthReport> {
        self.get("/health")
    }

    fn reasons(&self) -> Vec<String> {
        self.health().map_or_else(Vec::new, |h| {
            h.reasons.into_iter().map(|r| r.reason).collect()
        })
    }

    /// Each host's state in this daemon's `/v1/cluster`.
    fn hosts(&self) -> Vec<(String, HostState)> {
        self.cluster().map_or_else(Vec::new, |c| {
            c.hosts.into_iter().map(|h| (h.host, h.state)).collect()
        })
    }

    /// The placements of `model` in this daemon's `/v1/cluster`.
    fn placed(&self, model: &str) -> Vec<PlacementView> {
        self.cluster().map_or_else(Vec::new, |c| {
            c.placements
                .into_iter()
                .filter(|p| p.model == model)
                .collect()
        })
    }

    /// Whether this daemon's VRAM optimizer holds `model` resident and
    /// pinned (`/v1/gpus`).
    fn holds_pinned(&self, model: &str) -> bool {
        self.get::<GpusResponse>("/v1/gpus").is_some_and(|g| {
            g.gpus
                .iter()
                .flat_map(|g| &g.resident)
                .any(|m| m.model == model && m.pinned)
        })
    }

    fn kill(&mut self) {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("the daemon runs");
    }

    /// Waits for the daemon to exit (it was given a duration).
    fn wait_exit(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("waitable") {
                assert!(status.success(), "{status}\n{}", self.log_tail());
                return;
            }
            assert!(Instant::now() < deadline, "{} never exited", self.name);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A `pinwheel_cluster_calls_total` counter from `/metrics`.
    fn cluster_calls(&self, outcome: &str) -> u64 {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .new_agent();
        let text = agent
            .get(&format!("http://{}/metrics", self.addr))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .unwrap_or_default();
        let label = format!("pinwheel_cluster_calls_total{{outcome=\"{outcome}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&label))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(60)..].join("\n");
        format!("--- {} ---\n{tail}", self.name)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The admin token file in `dir`, mode 600, written on first use.
fn token_file(dir: &Path) -> PathBuf {
    let path = dir.join("admin.token");
    if !path.exists() {
        std::fs::write(&path, "cluster-test-token\n").expect("token written");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .expect("token mode set");
    }
    path
}

/// Polls `ok` until it holds; on timeout fails with the daemons' logs.
fn eventually(what: &str, daemons: &[&Daemon], mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !ok() {
        if Instant::now() >= deadline {
            let logs: Vec<String> = daemons.iter().map(|d| d.log_tail()).collect();
            panic!("not {what} within {PATIENCE:?}\n{}", logs.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The placements bucket's entry for `model` replica 0, read with a raw
/// client at `url`.
fn placement_in_kv(url: &str, cluster: &str, model: &str) -> Option<OwnershipRecord> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let client = async_nats::connect(url).await.ok()?;
        let js = async_nats::jetstream::new(client);
        let kv = js
            .get_key_value(format!("pinwheel-{cluster}-placements"))
            .await
            .ok()?;
        let entry = kv.entry(format!("0.{model}")).await.ok()??;
        let mut aligned = rkyv::util::AlignedVec::new();
        decode_ownership(&entry.value, &mut aligned).ok()
    })
}

/// Whether the placements stream, read with a raw client at `url`, has a
/// leader and every other replica current with it (so killing one node
/// leaves a quorum that holds every entry).
fn placements_replicated(url: &str, cluster: &str, replicas: usize) -> bool {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let Ok(client) = async_nats::connect(url).await else {
            return false;
        };
        let js = async_nats::jetstream::new(client);
        let name = format!("KV_pinwheel-{cluster}-placements");
        let Ok(mut stream) = js.get_stream(name).await else {
            return false;
        };
        let Ok(info) = stream.info().await else {
            return false;
        };
        info.cluster.as_ref().is_some_and(|c| {
            c.leader.is_some()
                && c.replicas.len() + 1 == replicas
                && c.replicas.iter().all(|r| r.current && !r.offline)
        })
    })
}

/// Writes a line where `cargo test -- --nocapture` shows it.
fn note(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Runs the `pinwheel` CLI.
fn pinwheel(args: &[&str]) -> Output {
    Command::new(PINWHEEL)
        .current_dir(CRATE)
        .args(args)
        .output()
        .expect("pinwheel runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Whether every daemon sees every one of them up.
fn all_up(daemons: &[&Daemon]) -> bool {
    daemons.iter().all(|d| {
        let hosts = d.hosts();
        hosts.len() == daemons.len() && hosts.iter().all(|(_, state)| *state == HostState::Up)
    })
}

#[test]
fn a_pinned_model_of_a_sigkilled_daemon_is_placed_again_on_a_survivor() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut alpha = Daemon::start("alpha", Some(&nats.url()), dir.path());
    let beta = Daemon::start("beta", Some(&nats.url()), dir.path());
    let gamma = Daemon::start("gamma", Some(&nats.url()), dir.path());
    let all = [&alpha, &beta, &gamma];
    eventually("every daemon seeing three hosts up", &all, || all_up(&all));

    let token = token_file(dir.path());
    let placed = pinwheel(&[
        "gpu",
        "place",
        "--admin",
        &alpha.addr,
        "--model",
        "whisper-large-v3",
        "--vram-mib",
        "3100",
        "--pin",
        "--host",
        "alpha",
        "--json",
        "--token-file",
        token.to_str().expect("a UTF-8 path"),
    ]);
    assert!(placed.status.success(), "{}", text(&placed.stderr));
    let answer: ModelAnswer = serde_json::from_slice(&placed.stdout).expect("JSON");
    assert_eq!(answer.placements[0].host, "alpha", "{answer:?}");
    assert!(answer.placements[0].pinned, "{answer:?}");
    eventually(
        "every daemon seeing the model loaded on alpha",
        &all,
        || {
            all.iter().all(|d| {
                let p = d.placed("whisper-large-v3");
                p.len() == 1 && p[0].host == "alpha" && p[0].loaded
            })
        },
    );
    eventually("alpha's optimizer holding the model pinned", &all, || {
        alpha.holds_pinned("whisper-large-v3")
    });
    assert!(!beta.holds_pinned("whisper-large-v3") && !gamma.holds_pinned("whisper-large-v3"));
    let status = pinwheel(&["cluster", "status", "--admin", &beta.addr]);
    let table = text(&status.stdout);
    assert!(status.status.success(), "{}", text(&status.stderr));
    assert!(
        table.starts_with("cluster pinwheel, seen from beta: "),
        "{table}"
    );
    assert!(
        table.contains("whisper-large-v3") && table.contains("alpha"),
        "{table}"
    );

    alpha.kill();
    let killed = Instant::now();

    let survivors = [&beta, &gamma];
    let url = nats.url();
    eventually("the bucket naming a survivor, loaded", &survivors, || {
        placement_in_kv(&url, "pinwheel", "whisper-large-v3")
            .is_some_and(|o| o.loaded && (o.host == "beta" || o.host == "gamma"))
    });
    note(&format!(
        "pinned model owned by a survivor, loaded, {} ms after SIGKILL of its owner",
        killed.elapsed().as_millis()
    ));
    eventually(
        "the model loaded on one survivor, in both survivors' views",
        &survivors,
        || {
            let views: Vec<Vec<PlacementView>> = survivors
                .iter()
                .map(|d| d.placed("whisper-large-v3"))
                .collect();
            views.iter().all(|p| {
                p.len() == 1
                    && p[0].loaded
                    && p[0].pinned
                    && (p[0].host == "beta" || p[0].host == "gamma")
            }) && views[0][0].host == views[1][0].host
        },
    );
    let holder = if survivors[0].placed("whisper-large-v3")[0].host == "beta" {
        &beta
    } else {
        &gamma
    };
    eventually(
        "the model resident and pinned on its new host",
        &survivors,
        || holder.holds_pinned("whisper-large-v3"),
    );
    let other = if holder.name == "beta" { &gamma } else { &beta };
    let entry = placement_in_kv(&url, "pinwheel", "whisper-large-v3").expect("an entry");
    assert_eq!(entry.host, holder.name, "one owner: the bucket's");
    assert!(entry.pinned);
    assert!(
        !other.holds_pinned("whisper-large-v3"),
        "the other survivor does not hold it"
    );
    eventually(
        "both survivors seeing alpha lost and saying so in /health",
        &survivors,
        || {
            survivors.iter().all(|d| {
                d.hosts().contains(&("alpha".to_owned(), HostState::Lost))
                    && d.reasons().contains(&"cluster_peer_lost".to_owned())
            })
        },
    );
}

#[test]
fn daemons_serve_local_work_while_nats_is_down_report_degraded_and_reconnect_when_it_returns() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let alpha = Daemon::start("alpha", Some(&nats.url()), dir.path());
    let beta = Daemon::start("beta", Some(&nats.url()), dir.path());
    let both = [&alpha, &beta];
    eventually("both daemons seeing each other up", &both, || all_up(&both));

    let port = nats.stop();

    let link_down = |d: &Daemon| d.reasons().contains(&"cluster_link_down".to_owned());
    eventually("both reporting cluster_link_down", &both, || {
        both.iter().all(|d| link_down(d))
    });
    for daemon in both {
        assert_eq!(
            daemon.health().map(|h| h.status),
            Some(HealthStatus::Degraded)
        );
        let before = daemon.handled();
        eventually("local requests handled while NATS is down", &both, || {
            daemon.handled() > before + 20
        });
        assert!(link_down(daemon), "NATS came back on its own?");
    }

    let _nats = NatsServer::start_on(port);

    eventually("both reconnected, the reason cleared", &both, || {
        both.iter().all(|d| !link_down(d))
    });
    eventually("both seeing each other up again", &both, || all_up(&both));
}

#[test]
fn without_a_cluster_a_daemon_places_alone_and_lists_only_itself() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let solo = Daemon::start("solo", None, dir.path());
    let token = token_file(dir.path());
    let token = token.to_str().expect("a UTF-8 path");

    let cluster = solo.cluster().expect("solo answers /v1/cluster");
    let placed = pinwheel(&[
        "gpu",
        "place",
        "--admin",
        &solo.addr,
        "--model",
        "tts",
        "--vram-mib",
        "2000",
        "--token-file",
        token,
    ]);
    let too_big = pinwheel(&[
        "gpu",
        "place",
        "--admin",
        &solo.addr,
        "--model",
        "huge",
        "--vram-mib",
        "999999",
        "--token-file",
        token,
    ]);
    let zero = pinwheel(&[
        "gpu",
        "place",
        "--admin",
        &solo.addr,
        "--model",
        "none",
        "--vram-mib",
        "0",
        "--token-file",
        token,
    ]);
    let status = pinwheel(&["cluster", "status", "--admin", &solo.addr]);

    assert_eq!(cluster.cluster, None, "{cluster:?}");
    assert_eq!(
        solo.hosts(),
        [("solo".to_owned(), HostState::Up)],
        "{cluster:?}"
    );
    assert!(placed.status.success(), "{}", text(&placed.stderr));
    assert_eq!(
        text(&placed.stdout),
        "tts on solo GPU 0: 2000 MiB, resident (revision 1)\n"
    );
    assert_eq!(too_big.status.code(), Some(1));
    assert!(
        text(&too_big.stderr).contains("no GPU has 999999 MiB free"),
        "{}",
        text(&too_big.stderr)
    );
    assert_eq!(zero.status.code(), Some(2), "{}", text(&zero.stderr));
    let table = text(&status.stdout);
    assert!(
        table.starts_with("single host solo (no cluster configured): "),
        "{table}"
    );
    assert!(table.contains("tts"), "{table}");
}

#[test]
fn a_nats_flag_that_is_not_a_nats_url_exits_2_before_anything_starts() {
    let out = pinwheel(&[
        "run",
        "--topology",
        "topology/vm-2cpu.toml",
        "--agents",
        "tests/fixtures/cluster/agents.toml",
        "--nats",
        "http://127.0.0.1:4222",
    ]);

    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--nats \"http://127.0.0.1:4222\" is not a NATS URL"),
        "{}",
        text(&out.stderr)
    );
}

/// Places `model` pinned on `host` through `daemon`'s admin API.
fn place_pinned(daemon: &Daemon, dir: &Path, model: &str, host: &str) {
    let token = token_file(dir);
    let placed = pinwheel(&[
        "gpu",
        "place",
        "--admin",
        &daemon.addr,
        "--model",
        model,
        "--vram-mib",
        "2000",
        "--pin",
        "--host",
        host,
        "--token-file",
        token.to_str().expect("a UTF-8 path"),
    ]);
    assert!(placed.status.success(), "{}", text(&placed.stderr));
}

/// Whether every daemon sees `model` loaded on `host`.
fn loaded_on(daemons: &[&Daemon], model: &str, host: &str) -> bool {
    daemons.iter().all(|d| {
        let p = d.placed(model);
        p.len() == 1 && p[0].host == host && p[0].loaded
    })
}

#[test]
fn a_nats_node_killed_from_a_three_node_cluster_loses_no_placement_and_the_daemons_carry_on() {
    let mut nats = NatsCluster::start(3, None);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let base = std::fs::read_to_string(Path::new(CRATE).join("topology/vm-2cpu.toml"))
        .expect("the topology");
    let topology = dir.path().join("trio.toml");
    std::fs::write(
        &topology,
        format!(
            "{base}\n[cluster]\nname = \"trio\"\nnats_url = \"{}\"\nkv_replicas = 3\n",
            nats.urls()
        ),
    )
    .expect("written");
    let topology = topology.to_str().expect("UTF-8");
    let launch = |name| Launch {
        topology,
        ..Launch::small(name, None)
    };
    let alpha = Daemon::launch(&launch("alpha"), dir.path(), true);
    let beta = Daemon::launch(&launch("beta"), dir.path(), true);
    let both = [&alpha, &beta];
    eventually("both daemons seeing each other up", &both, || all_up(&both));
    place_pinned(&alpha, dir.path(), "stt", "alpha");
    place_pinned(&alpha, dir.path(), "tts", "beta");
    eventually("both models loaded where placed", &both, || {
        loaded_on(&both, "stt", "alpha") && loaded_on(&both, "tts", "beta")
    });
    let handled = [alpha.handled(), beta.handled()];
    let first = nats
        .urls()
        .split(',')
        .next()
        .expect("three nodes")
        .to_owned();
    eventually(
        "the placements stream replicated on all three nodes",
        &both,
        || placements_replicated(&first, "trio", 3),
    );

    nats.kill(0);

    let urls = nats.urls();
    let first_live = urls.split(',').next().expect("two nodes left").to_owned();
    eventually("both entries still in the bucket", &both, || {
        ["stt", "tts"]
            .iter()
            .all(|m| placement_in_kv(&first_live, "trio", m).is_some_and(|o| o.loaded && o.pinned))
    });
    eventually("requests handled on both hosts", &both, || {
        alpha.handled() > handled[0] + 20 && beta.handled() > handled[1] + 20
    });
    eventually("both daemons still seeing each other up", &both, || {
        all_up(&both)
    });
    place_pinned(&beta, dir.path(), "ocr", "alpha");
    // Asked for on alpha; if alpha's watch is still recovering from the
    // lost node when the assignment's wait runs out, beta places it on
    // itself (the scheduler's rule): either way it is loaded on one host.
    eventually("a placement after the loss loaded too", &both, || {
        (loaded_on(&both, "ocr", "alpha") || loaded_on(&both, "ocr", "beta"))
            && loaded_on(&both, "stt", "alpha")
            && loaded_on(&both, "tts", "beta")
    });
}

/// The seed's two hosts: pc2 first, then mainpc for `duration` seconds.
fn seed_pair<'a>(nats: &'a str, dir: &Path, mainpc_extra: &'a [&'a str]) -> (Daemon, Daemon) {
    let agents = &["agents/mainpc.toml", "agents/pc2.toml"];
    let pc2 = Daemon::launch(
        &Launch {
            agents,
            rate: "0",
            ..Launch::small("pc2", Some(nats))
        },
        dir,
        false,
    );
    eventually("pc2 connected", &[&pc2], || {
        !pc2.reasons().contains(&"cluster_link_down".to_owned())
    });
    let mainpc = Daemon::launch(
        &Launch {
            agents,
            rate: "10",
            extra: mainpc_extra,
            ..Launch::small("mainpc", Some(nats))
        },
        dir,
        true,
    );
    (pc2, mainpc)
}

#[test]
fn the_seeds_two_hosts_run_their_own_agents_and_complete_every_cross_host_call() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let report = dir.path().join("mainpc.json");
    let report_arg = report.to_str().expect("UTF-8");
    let extra = ["--duration", "10", "--report", report_arg];

    let (pc2, mut mainpc) = seed_pair(&nats.url(), dir.path(), &extra);
    let pc2_agents = pc2.agents().len();
    let mainpc_agents = mainpc.agents().len();
    mainpc.wait_exit();

    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("the report")).expect("JSON");
    let calls = &json["cluster_calls"];
    let sent = calls["sent"].as_u64().expect("a count");
    note(&format!("mainpc cluster calls: {calls}"));
    assert_eq!(
        (mainpc_agents, pc2_agents),
        (54, 25),
        "each runs its own host's agents"
    );
    assert!(sent > 50, "{calls}");
    assert_eq!(
        calls["completed"], sent,
        "every cross-host call completed: {calls}"
    );
    for lost in ["timed_out", "host_lost", "breaker_open", "failed"] {
        assert_eq!(calls[lost], 0, "{lost}: {calls}");
    }
    let remote = json["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["remote"] == true)
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(remote["from"], "SystemDigitalTwin", "{remote}");
    assert_eq!(remote["to"], "MemoryOrchestratorService@pc2", "{remote}");
    assert_eq!(pc2.cluster_calls("answered"), sent, "pc2 answered each one");
    assert_eq!(pc2.cluster_calls("dropped_replies"), 0);
}

#[test]
fn calls_in_flight_to_a_host_declared_lost_are_answered_at_once_not_at_their_timeout() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("a temporary directory");
    // Deadlines far past the loss detection (a second): a timeout would
    // count as timed_out, not host_lost.
    let extra = ["--timeout-ms", "30000"];
    let (pc2, mainpc) = seed_pair(&nats.url(), dir.path(), &extra);
    eventually("calls to pc2 completing", &[&mainpc, &pc2], || {
        mainpc.cluster_calls("completed") > 20
    });

    pc2.signal(Signal::SIGSTOP);

    eventually(
        "calls answered as lost with their host",
        &[&mainpc, &pc2],
        || mainpc.cluster_calls("host_lost") > 0,
    );
    assert_eq!(mainpc.cluster_calls("timed_out"), 0);
    pc2.signal(Signal::SIGCONT);
    let completed = mainpc.cluster_calls("completed");
    eventually(
        "calls completing again once pc2 is back",
        &[&mainpc, &pc2],
        || mainpc.cluster_calls("completed") > completed + 20,
    );
}
