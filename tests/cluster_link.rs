#![cfg(test)]
//! The cluster link against a real nats-server (Debian's `nats-server`;
//! `.ci/run` installs it). Each test starts its own server on a free
//! loopback port with JetStream in a temporary directory ([`NatsServer`]),
//! and fails, not skips, when the binary is missing. Waits are generous
//! "eventually" loops; nothing asserts how long anything took.

use std::time::{Duration, Instant};

use pinwheel::cluster::{
    AgentRecord, ClusterConfig, ClusterEvent, ClusterLink, GpuState, Health, HostState, LinkIo,
    LinkStats, MAX_ENTRIES, encode_state,
};
use pinwheel::gpu::sched::{
    GpuIndex, HostName, MAX_PEERS, ModelName, Ownership, Policy, Slot, Write, WriteOutcome,
    WriteRequest,
};
use pinwheel::test_support::NatsServer;
use tokio::sync::{mpsc, watch};

const PATIENCE: Duration = Duration::from_secs(20);

/// A link for `host` with 100 ms heartbeats, lost after 4 missed.
struct Node {
    link: ClusterLink,
    state: watch::Sender<HostState>,
    events: mpsc::Receiver<ClusterEvent>,
    writes: mpsc::Sender<WriteRequest>,
}

async fn node(url: &str, host: &str) -> Node {
    let config = ClusterConfig::try_new("test", host, url, 100, 4).expect("valid config");
    node_with(config).await
}

async fn node_with(config: ClusterConfig) -> Node {
    let (state, source) = watch::channel(HostState {
        host: config.host().to_owned(),
        incarnation: 1,
        gpus: vec![GpuState {
            index: 0,
            total_mib: 24_576,
            free_mib: 20_000,
        }],
        ..HostState::default()
    });
    let (tx, events) = mpsc::channel(4096);
    let (writes, writes_rx) = mpsc::channel(64);
    let io = LinkIo {
        source,
        events: tx,
        writes: writes_rx,
    };
    let link = ClusterLink::start(config, io, None)
        .await
        .expect("link starts");
    Node {
        link,
        state,
        events,
        writes,
    }
}

/// Unix time now, ms.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
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

#[tokio::test]
async fn hostile_host_states_are_dropped_and_counted_and_peers_are_bounded() {
    let nats = NatsServer::start();
    let mut b = node(&nats.url(), "beta").await;
    eventually("connected", || b.link.is_connected()).await;
    let raw = async_nats::connect(nats.url())
        .await
        .expect("raw client connects");
    let eve = |gpus: Vec<GpuState>| {
        encode_state(&HostState {
            host: "eve".to_owned(),
            gpus,
            ..HostState::default()
        })
        .expect("encodes")
    };
    let gpu = |total_mib| GpuState {
        index: 0,
        total_mib,
        free_mib: 0,
    };
    let crowded = eve((0..=MAX_ENTRIES).map(|_| gpu(1)).collect());
    let overflowing = eve(vec![gpu(u64::MAX), gpu(u64::MAX)]);

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
            sent_ms: unix_ms(),
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

#[tokio::test]
async fn a_forged_far_future_state_is_refused_and_does_not_silence_the_real_host() {
    let nats = NatsServer::start();
    let _alpha = node(&nats.url(), "alpha").await;
    let mut b = node(&nats.url(), "beta").await;
    b.expect("alpha up", |e| {
        *e == ClusterEvent::PeerUp {
            host: "alpha".to_owned(),
        }
    })
    .await;
    let raw = async_nats::connect(nats.url())
        .await
        .expect("raw client connects");
    let forged = encode_state(&HostState {
        host: "alpha".to_owned(),
        incarnation: u64::MAX - 1,
        seq: u64::MAX,
        sent_ms: u64::MAX,
        ..HostState::default()
    })
    .expect("encodes");

    raw.publish("pinwheel.test.host.alpha.state", forged.into())
        .await
        .expect("publish");
    raw.flush().await.expect("flush");
    eventually("the forged frame counted as bad", || {
        LinkStats::get(&b.link.stats().bad_frames) >= 1
    })
    .await;
    let mut real_after = 0;
    while real_after < 10 {
        let event = b
            .expect("alpha's states, or its loss", |e| {
                state_from(e, "alpha").is_some() || matches!(e, ClusterEvent::PeerLost { .. })
            })
            .await;
        assert!(
            state_from(&event, "alpha").is_some_and(|(s, _)| s.incarnation == 1),
            "the real alpha still heard: {event:?}"
        );
        real_after += 1;
    }
}

fn owner(host: &str) -> Ownership {
    Ownership {
        host: HostName::from(host),
        gpu: GpuIndex(0),
        vram_mib: 3100,
        pinned: true,
        active: false,
        priority: 0,
        policy: Policy::Binpack,
        loaded: true,
    }
}

impl Node {
    /// Writes `write` to `slot` and waits for the bucket's answer.
    async fn write(&mut self, slot: &Slot, write: Write) -> WriteOutcome {
        let req = WriteRequest {
            slot: slot.clone(),
            write,
            id: 1,
        };
        self.writes.send(req).await.expect("the link takes writes");
        let answer = self
            .expect(
                "the write's outcome",
                |e| matches!(e, ClusterEvent::Written { slot: s, .. } if s == slot),
            )
            .await;
        let ClusterEvent::Written { outcome, .. } = answer else {
            unreachable!("matched above")
        };
        outcome
    }
}

#[tokio::test]
async fn placements_change_only_by_compare_and_set_and_every_link_sees_each_change() {
    let nats = NatsServer::start();
    let mut a = node(&nats.url(), "alpha").await;
    let mut b = node(&nats.url(), "beta").await;
    for n in [&mut a, &mut b] {
        n.expect("placements synced", |e| {
            *e == ClusterEvent::PlacementsSynced(true)
        })
        .await;
    }
    let slot = Slot {
        model: ModelName::from("whisper-large-v3"),
        replica: 0,
    };

    let created = a.write(&slot, Write::Create(owner("alpha"))).await;
    let WriteOutcome::Written { revision } = created else {
        panic!("the first create wins: {created:?}");
    };
    b.expect("alpha's entry", |e| {
        *e == ClusterEvent::Placement {
            slot: slot.clone(),
            revision,
            owner: Some(owner("alpha")),
        }
    })
    .await;
    let second_create = b.write(&slot, Write::Create(owner("beta"))).await;
    let moved = b
        .write(
            &slot,
            Write::Update {
                owner: owner("beta"),
                revision,
            },
        )
        .await;
    let stale = a
        .write(
            &slot,
            Write::Update {
                owner: owner("alpha"),
                revision,
            },
        )
        .await;
    let WriteOutcome::Written { revision: moved_at } = moved else {
        panic!("beta's update on the current revision wins: {moved:?}");
    };
    let deleted = a.write(&slot, Write::Delete { revision: moved_at }).await;

    assert_eq!(second_create, WriteOutcome::Conflict);
    assert_eq!(stale, WriteOutcome::Conflict, "alpha's revision is gone");
    assert!(matches!(deleted, WriteOutcome::Written { .. }));
    b.expect(
        "the deletion",
        |e| matches!(e, ClusterEvent::Placement { slot: s, owner: None, .. } if *s == slot),
    )
    .await;
    // A link that starts now replays the bucket, deletion included.
    let mut c = node(&nats.url(), "gamma").await;
    c.expect(
        "the deletion, replayed",
        |e| matches!(e, ClusterEvent::Placement { slot: s, owner: None, .. } if *s == slot),
    )
    .await;
    c.expect("synced after the replay", |e| {
        *e == ClusterEvent::PlacementsSynced(true)
    })
    .await;
}
