#![cfg(test)]
//! The cluster link against a real nats-server (Debian's `nats-server`;
//! `.ci/run` installs it). Each test starts its own server on a free
//! loopback port with JetStream in a temporary directory ([`NatsServer`]),
//! and fails, not skips, when the binary is missing. Waits are generous
//! "eventually" loops; nothing asserts how long anything took.

use std::time::{Duration, Instant};

use pinwheel::cluster::{
    AgentRecord, ClusterConfig, ClusterEvent, ClusterLink, GpuState, Health, HostState, LinkStats,
    MAX_ENTRIES, ModelState, encode_state,
};
use pinwheel::gpu::sched::MAX_PEERS;
use pinwheel::test_support::NatsServer;
use tokio::sync::{mpsc, watch};

const PATIENCE: Duration = Duration::from_secs(20);

/// A link for `host` with 100 ms heartbeats, lost after 4 missed.
struct Node {
    link: ClusterLink,
    state: watch::Sender<HostState>,
    events: mpsc::Receiver<ClusterEvent>,
}

async fn node(url: &str, host: &str) -> Node {
    let config = ClusterConfig::try_new("test", host, url, 100, 4).expect("valid config");
    let (state, source) = watch::channel(HostState {
        host: host.to_owned(),
        incarnation: 1,
        gpus: vec![GpuState {
            index: 0,
            total_mib: 24_576,
            free_mib: 20_000,
        }],
        ..HostState::default()
    });
    let (tx, events) = mpsc::channel(4096);
    let link = ClusterLink::start(config, source, tx)
        .await
        .expect("link starts");
    Node {
        link,
        state,
        events,
    }
}

impl Node {
    /// Waits for an event `want` accepts, dropping the others.
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

async fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !ok() {
        assert!(Instant::now() < deadline, "not {what} within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn state_from<'e>(event: &'e ClusterEvent, host: &str) -> Option<(&'e HostState, u64)> {
    match event {
        ClusterEvent::PeerState { state, latency_us } if state.host == host => {
            Some((state, *latency_us))
        }
        _ => None,
    }
}

#[tokio::test]
async fn two_links_see_each_others_state_and_measure_the_link() {
    let nats = NatsServer::start();
    let mut a = node(&nats.url(), "alpha").await;
    let mut b = node(&nats.url(), "beta").await;

    b.expect("alpha up", |e| {
        *e == ClusterEvent::PeerUp {
            host: "alpha".to_owned(),
        }
    })
    .await;
    a.state.send_modify(|s| s.gpus[0].free_mib = 1234);
    let seen = b
        .expect("alpha's new state", |e| {
            state_from(e, "alpha").is_some_and(|(s, _)| s.gpus[0].free_mib == 1234)
        })
        .await;
    a.expect("beta's state", |e| state_from(e, "beta").is_some())
        .await;
    b.expect("a latency to alpha", |e| {
        state_from(e, "alpha").is_some_and(|(_, lat)| lat > 0)
    })
    .await;

    let (state, _) = state_from(&seen, "alpha").expect("alpha's state");
    assert!(state.seq > 0 && state.incarnation == 1);
    assert!(LinkStats::get(&b.link.stats().received) > 0);
    assert_eq!(LinkStats::get(&b.link.stats().bad_frames), 0);
}

#[tokio::test]
async fn a_stopped_link_is_declared_lost_after_its_missed_heartbeats() {
    let nats = NatsServer::start();
    let a = node(&nats.url(), "alpha").await;
    let mut b = node(&nats.url(), "beta").await;
    b.expect("alpha up", |e| {
        *e == ClusterEvent::PeerUp {
            host: "alpha".to_owned(),
        }
    })
    .await;

    a.link.stop().await;

    b.expect("alpha lost", |e| {
        *e == ClusterEvent::PeerLost {
            host: "alpha".to_owned(),
        }
    })
    .await;
}

#[tokio::test]
async fn corrupted_bytes_on_the_state_subject_are_rejected_and_counted() {
    let nats = NatsServer::start();
    let mut b = node(&nats.url(), "beta").await;
    eventually("connected", || b.link.is_connected()).await;
    let raw = async_nats::connect(nats.url())
        .await
        .expect("raw client connects");
    let valid = encode_state(&HostState {
        host: "mallory".to_owned(),
        ..HostState::default()
    })
    .expect("encodes");
    let mut scrambled = valid.clone();
    let end = scrambled.len();
    // The last vector's pointer and length: far outside the frame.
    scrambled[end - 16..].fill(0x7f);
    let frames: [Vec<u8>; 4] = [
        b"not a frame at all".to_vec(),
        valid[..valid.len() - 9].to_vec(),
        scrambled,
        // A valid frame, but from a host other than the subject's.
        valid,
    ];

    for frame in frames {
        raw.publish("pinwheel.test.host.eve.state", frame.into())
            .await
            .expect("publish");
    }
    raw.flush().await.expect("flush");

    eventually("4 bad frames counted", || {
        LinkStats::get(&b.link.stats().bad_frames) >= 4
    })
    .await;
    let _a = node(&nats.url(), "alpha").await;
    let first_up = b
        .expect("a peer up", |e| matches!(e, ClusterEvent::PeerUp { .. }))
        .await;
    assert_eq!(
        first_up,
        ClusterEvent::PeerUp {
            host: "alpha".to_owned()
        },
        "the link still works, and no garbage made a peer"
    );
    assert_eq!(LinkStats::get(&b.link.stats().bad_frames), 4);
}

fn model(name: String, vram_mib: u64) -> ModelState {
    ModelState {
        model: name,
        replica: 0,
        gpu: 0,
        vram_mib,
        pinned: true,
        active: false,
        priority: 0,
        spread: false,
        epoch: 1,
    }
}

#[tokio::test]
async fn hostile_host_states_are_dropped_and_counted_and_peers_are_bounded() {
    let nats = NatsServer::start();
    let mut b = node(&nats.url(), "beta").await;
    eventually("connected", || b.link.is_connected()).await;
    let raw = async_nats::connect(nats.url())
        .await
        .expect("raw client connects");
    let eve = |models: Vec<ModelState>| {
        encode_state(&HostState {
            host: "eve".to_owned(),
            models,
            ..HostState::default()
        })
        .expect("encodes")
    };
    let crowded = eve((0..=MAX_ENTRIES)
        .map(|i| model(format!("m{i}"), 1))
        .collect());
    let overflowing = eve(vec![
        model("llm".to_owned(), u64::MAX),
        model("stt".to_owned(), u64::MAX),
    ]);

    for frame in [crowded, overflowing] {
        raw.publish("pinwheel.test.host.eve.state", frame.into())
            .await
            .expect("publish");
    }
    for i in 0..=MAX_PEERS {
        let host = format!("p{i}");
        let frame = encode_state(&HostState {
            host: host.clone(),
            incarnation: 1,
            seq: 1,
            ..HostState::default()
        })
        .expect("encodes");
        raw.publish(format!("pinwheel.test.host.{host}.state"), frame.into())
            .await
            .expect("publish");
    }
    raw.flush().await.expect("flush");

    eventually("3 bad frames counted", || {
        LinkStats::get(&b.link.stats().bad_frames) >= 3
    })
    .await;
    let mut up = Vec::new();
    while let Ok(event) = b.events.try_recv() {
        if let ClusterEvent::PeerUp { host } = event {
            up.push(host);
        }
    }
    let expected: Vec<String> = (0..MAX_PEERS).map(|i| format!("p{i}")).collect();
    assert_eq!(
        up, expected,
        "eve never came up, and the peer past the bound neither"
    );
    assert_eq!(LinkStats::get(&b.link.stats().bad_frames), 3);
}

#[tokio::test]
async fn a_registry_entry_written_by_one_host_is_read_by_another() {
    let nats = NatsServer::start();
    let a = node(&nats.url(), "alpha").await;
    let mut b = node(&nats.url(), "beta").await;
    let record = AgentRecord {
        agent: "STTService".to_owned(),
        host: "alpha".to_owned(),
        ports: vec![5580, 5581],
        health: Health::Healthy,
    };

    a.link.register(record.clone()).expect("alpha's own agent");

    b.expect("the record", |e| *e == ClusterEvent::Agent(record.clone()))
        .await;
    assert_eq!(b.link.lookup("STTService"), std::slice::from_ref(&record));
    let other_host = AgentRecord {
        host: "beta".to_owned(),
        ..record
    };
    assert!(
        a.link.register(other_host).is_err(),
        "a host registers only its own agents"
    );
}

#[tokio::test]
async fn an_error_report_reaches_the_other_hosts_on_the_error_bus() {
    let nats = NatsServer::start();
    let a = node(&nats.url(), "alpha").await;
    let mut b = node(&nats.url(), "beta").await;
    b.expect("alpha up", |e| {
        *e == ClusterEvent::PeerUp {
            host: "alpha".to_owned(),
        }
    })
    .await;

    a.link
        .report_error(7, 500, "whisper crashed")
        .expect("queued");

    let got = b
        .expect("the report", |e| matches!(e, ClusterEvent::Error(_)))
        .await;
    let ClusterEvent::Error(report) = got else {
        unreachable!("matched above")
    };
    assert_eq!(
        (report.host.as_str(), report.agent, report.code),
        ("alpha", 7, 500)
    );
    assert_eq!(report.message, "whisper crashed");
}

#[tokio::test]
async fn links_report_disconnected_while_nats_is_down_and_recover_when_it_returns() {
    let nats = NatsServer::start();
    let url = nats.url();
    let mut a = node(&url, "alpha").await;
    let mut b = node(&url, "beta").await;
    let record = AgentRecord {
        agent: "TTS".to_owned(),
        host: "alpha".to_owned(),
        ports: vec![],
        health: Health::Healthy,
    };
    a.link.register(record.clone()).expect("own agent");
    b.expect("alpha up", |e| {
        *e == ClusterEvent::PeerUp {
            host: "alpha".to_owned(),
        }
    })
    .await;
    eventually("the record at beta", || {
        b.link.lookup("TTS") == std::slice::from_ref(&record)
    })
    .await;

    let port = nats.stop();

    a.expect("disconnected", |e| {
        *e == ClusterEvent::Connection { connected: false }
    })
    .await;
    b.expect("disconnected", |e| {
        *e == ClusterEvent::Connection { connected: false }
    })
    .await;
    assert!(!a.link.is_connected() && !b.link.is_connected());
    b.expect("alpha lost while nats is down", |e| {
        *e == ClusterEvent::PeerLost {
            host: "alpha".to_owned(),
        }
    })
    .await;
    eventually("heartbeats skipped", || {
        LinkStats::get(&a.link.stats().skipped) > 0
    })
    .await;

    // A new, empty server on the same port.
    let _again = NatsServer::start_on(port);

    a.expect("reconnected", |e| {
        *e == ClusterEvent::Connection { connected: true }
    })
    .await;
    b.expect("reconnected", |e| {
        *e == ClusterEvent::Connection { connected: true }
    })
    .await;
    b.expect("alpha up again", |e| {
        *e == ClusterEvent::PeerUp {
            host: "alpha".to_owned(),
        }
    })
    .await;
    // alpha wrote its record into the new server again.
    let mut c = node(&url, "gamma").await;
    c.expect("the record, from the new server", |e| {
        *e == ClusterEvent::Agent(record.clone())
    })
    .await;
}
