#![cfg(test)]
//! NATS' own authentication and authorization for a cluster, on a real
//! nats-server run with the configuration `pinwheel cluster init` writes:
//! each host connects with its nkey, speaks only as itself, and a client
//! without credentials gets nowhere. Each test runs `pinwheel cluster
//! init` (the real binary) into a temporary directory and starts its own
//! server with the result; waits are generous "eventually" loops.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::{ConnectOptions, Event, ServerError};
use pinwheel::cluster::{
    AgentRecord, ClusterConfig, ClusterEvent, ClusterLink, Credentials, GpuState, Health,
    HostState, LinkIo, encode_state,
};
use pinwheel::test_support::NatsServer;
use tokio::sync::{mpsc, watch};

const PINWHEEL: &str = env!("CARGO_BIN_EXE_pinwheel");
const PATIENCE: Duration = Duration::from_secs(20);

/// `pinwheel cluster init --cluster home --hosts mainpc,pc2 --out dir`.
fn init(dir: &Path) {
    let out = Command::new(PINWHEEL)
        .args([
            "cluster",
            "init",
            "--cluster",
            "home",
            "--hosts",
            "mainpc,pc2",
            "--out",
        ])
        .arg(dir)
        .output()
        .expect("pinwheel runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Node {
    link: ClusterLink,
    events: mpsc::Receiver<ClusterEvent>,
    _state: watch::Sender<HostState>,
    _writes: mpsc::Sender<pinwheel::gpu::sched::WriteRequest>,
}

async fn node(url: &str, host: &str, dir: &Path) -> Node {
    let credentials =
        Credentials::nkey_file(&dir.join(format!("{host}.nk"))).expect("a seed written by init");
    let config = ClusterConfig::try_new("home", host, url, 100, 4)
        .expect("valid")
        .with_credentials(credentials);
    let (state, source) = watch::channel(HostState {
        host: host.to_owned(),
        incarnation: 1,
        gpus: vec![GpuState {
            index: 0,
            total_mib: 8192,
            free_mib: 8192,
        }],
        ..HostState::default()
    });
    let (tx, events) = mpsc::channel(4096);
    let (writes, writes_rx) = mpsc::channel(8);
    let io = LinkIo {
        source,
        events: tx,
        writes: writes_rx,
    };
    let link = ClusterLink::start(config, io, None).await.expect("starts");
    Node {
        link,
        events,
        _state: state,
        _writes: writes,
    }
}

impl Node {
    /// Waits until each of `wanted` has matched an event, in any order.
    async fn expect_each(&mut self, what: &str, wanted: &[&dyn Fn(&ClusterEvent) -> bool]) {
        let mut seen = vec![false; wanted.len()];
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while seen.iter().any(|s| !s) {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) => {
                    for (s, want) in seen.iter_mut().zip(wanted) {
                        *s |= want(&event);
                    }
                }
                Ok(None) => panic!("event channel closed waiting for {what}"),
                Err(_) => panic!("not all of {what} within {PATIENCE:?}: {seen:?}"),
            }
        }
    }

    async fn expect(&mut self, what: &str, want: impl Fn(&ClusterEvent) -> bool) -> ClusterEvent {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) if want(&event) => return event,
                Ok(Some(_)) => {}
                Ok(None) => panic!("event channel closed waiting for {what}"),
                Err(_) => panic!("no {what} within {PATIENCE:?}"),
            }
        }
    }
}

/// A raw client with `host`'s identity, and the server errors it hears.
async fn raw_as(
    url: &str,
    host: &str,
    dir: &Path,
) -> (async_nats::Client, Arc<Mutex<Vec<String>>>) {
    let seed = std::fs::read_to_string(dir.join(format!("{host}.nk"))).expect("a seed");
    let heard = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&heard);
    let client = ConnectOptions::with_nkey(seed.trim().to_owned())
        .event_callback(move |event| {
            let sink = Arc::clone(&sink);
            async move {
                if let Event::ServerError(ServerError::Other(message)) = event {
                    sink.lock()
                        .expect("not poisoned")
                        .push(message.to_lowercase());
                }
            }
        })
        .connect(url)
        .await
        .expect("a host's identity connects");
    (client, heard)
}

async fn refused(heard: &Mutex<Vec<String>>, what: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let errors = heard.lock().expect("not poisoned").clone();
        if errors
            .iter()
            .any(|e| e.contains("permissions violation") && e.contains(what))
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server never refused {what}; heard {errors:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn cluster_init_writes_private_seeds_and_a_config_whose_hosts_work_together() {
    let dir = tempfile::tempdir().expect("a directory");
    init(dir.path());
    let mode = |name: &str| {
        std::fs::metadata(dir.path().join(name))
            .expect("written")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!((mode("mainpc.nk"), mode("pc2.nk")), (0o600, 0o600));
    let nats = NatsServer::start_with_config(&dir.path().join("nats-server.conf"));
    let mut main = node(&nats.url(), "mainpc", dir.path()).await;
    let mut pc2 = node(&nats.url(), "pc2", dir.path()).await;
    let record = AgentRecord {
        agent: "MemoryOrchestratorService".to_owned(),
        host: "pc2".to_owned(),
        ports: vec![7140],
        health: Health::Healthy,
    };

    pc2.link.register(record.clone()).expect("its own agent");

    let synced = |e: &ClusterEvent| *e == ClusterEvent::PlacementsSynced(true);
    let up = |host: &'static str| {
        move |e: &ClusterEvent| {
            *e == ClusterEvent::PeerUp {
                host: host.to_owned(),
            }
        }
    };
    let got_record = |e: &ClusterEvent| *e == ClusterEvent::Agent(record.clone());
    main.expect_each(
        "pc2 up, its record, placements synced",
        &[&up("pc2"), &got_record, &synced],
    )
    .await;
    pc2.expect_each("mainpc up, placements synced", &[&up("mainpc"), &synced])
        .await;
    assert_eq!(
        pinwheel::cluster::LinkStats::get(&main.link.stats().nats_errors),
        0,
        "every operation the links need is permitted"
    );
}

#[tokio::test]
async fn a_client_without_credentials_cannot_connect_to_publish_host_state() {
    let dir = tempfile::tempdir().expect("a directory");
    init(dir.path());
    let nats = NatsServer::start_with_config(&dir.path().join("nats-server.conf"));

    let anonymous = async_nats::ConnectOptions::new().connect(nats.url()).await;

    let Err(err) = anonymous else {
        panic!("an anonymous client connected");
    };
    assert!(
        err.to_string().to_lowercase().contains("authorization"),
        "{err}"
    );
}

#[tokio::test]
async fn pc2s_identity_cannot_speak_as_mainpc_nor_read_its_replies() {
    let dir = tempfile::tempdir().expect("a directory");
    init(dir.path());
    let nats = NatsServer::start_with_config(&dir.path().join("nats-server.conf"));
    let _main = node(&nats.url(), "mainpc", dir.path()).await;
    let mut pc2 = node(&nats.url(), "pc2", dir.path()).await;
    pc2.expect("mainpc up", |e| {
        *e == ClusterEvent::PeerUp {
            host: "mainpc".to_owned(),
        }
    })
    .await;
    let (raw, heard) = raw_as(&nats.url(), "pc2", dir.path()).await;
    let forged = encode_state(&HostState {
        host: "mainpc".to_owned(),
        incarnation: 2,
        seq: 1,
        sent_ms: 3,
        ..HostState::default()
    })
    .expect("encodes");

    raw.publish("pinwheel.home.host.mainpc.state", forged.into())
        .await
        .expect("queued");
    raw.publish(
        "$KV.pinwheel-home-registry.mainpc.Fake",
        b"x".to_vec().into(),
    )
    .await
    .expect("queued");
    let _inbox = raw
        .subscribe("pinwheel.home.inbox.mainpc.>")
        .await
        .expect("queued");
    raw.flush().await.expect("flushed");

    refused(&heard, "publish to \"pinwheel.home.host.mainpc.state\"").await;
    refused(
        &heard,
        "publish to \"$kv.pinwheel-home-registry.mainpc.fake\"",
    )
    .await;
    refused(&heard, "subscription to \"pinwheel.home.inbox.mainpc.>\"").await;
    // mainpc is still heard as itself, at its own incarnation.
    for _ in 0..5 {
        let event = pc2
            .expect(
                "mainpc's state",
                |e| matches!(e, ClusterEvent::PeerState { state, .. } if state.host == "mainpc"),
            )
            .await;
        let ClusterEvent::PeerState { state, .. } = event else {
            unreachable!("matched above")
        };
        assert_eq!(state.incarnation, 1, "the forged frame never arrived");
    }
}
