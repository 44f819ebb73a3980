//! Rings across two processes: the peer is the real `pinwheel` binary
//! started as `bench ring-peer --mode echo`, attached through a `PeerLink`,
//! reading untrusted frames. Covers order and wraps across processes, a
//! peer killed mid-stream and a new one reattached under a new epoch, and
//! nothing left behind in /dev/shm.

// The crate is test code as a whole; marking it so lets the lints that
// keep `unwrap` and `#[test]` inside test modules see that.
#![cfg(test)]

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pinwheel_ipc::ring::{
    Consumer, PeerLink, Producer, RingConfig, RingHandoff, WaitStrategy, export_consumer,
    export_producer,
};
use pinwheel_ipc::wire::{AgentId, Envelope, Payload, PayloadKind, Priority, TopicId};

const WAIT: Duration = Duration::from_secs(10);

fn config() -> RingConfig {
    RingConfig {
        slots: 256,
        max_frame: 2048,
        wait: WaitStrategy::Adaptive,
        spin_us: 20,
    }
}

/// Starts an echo peer and hands it the two rings.
fn start_peer(requests: RingHandoff, replies: RingHandoff) -> (Child, PeerLink) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pinwheel"));
    command
        .args(["bench", "ring-peer", "--mode", "echo", "--cpu", "1"])
        .stdin(Stdio::null());
    let (link, child) = PeerLink::spawn(&mut command).unwrap();
    link.send(&requests).unwrap();
    link.send(&replies).unwrap();
    (child, link)
}

fn body(i: u64) -> Vec<u8> {
    let len = (i * 37 % 1500) as usize;
    (0..len).map(|b| (b as u64 + i) as u8).collect()
}

fn send(requests: &mut Producer, i: u64) {
    let body = body(i);
    let env = Envelope {
        from: AgentId(1),
        to: AgentId(2),
        topic: TopicId::NONE,
        correlation: i,
        priority: Priority::Normal,
        sent_ns: 0,
        deadline_ns: 0,
        payload: Payload::Request {
            method: 1,
            body: &body,
        },
    };
    requests.send(&env, WAIT).unwrap();
}

/// The next reply's correlation, checking its body is the echo of that
/// request's.
fn reply(replies: &mut Consumer) -> u64 {
    loop {
        let got = replies
            .try_recv_envelope(|env| {
                assert_eq!(env.kind(), PayloadKind::Reply);
                assert_eq!(
                    env.body(),
                    body(env.correlation()).as_slice(),
                    "echo of {}",
                    env.correlation()
                );
                env.correlation()
            })
            .unwrap();
        if let Some(correlation) = got {
            return correlation;
        }
        assert!(replies.wait(WAIT).unwrap(), "peer stopped replying");
    }
}

fn stop(requests: &mut Producer, mut child: Child) {
    let env = Envelope {
        from: AgentId(1),
        to: AgentId(2),
        topic: TopicId::NONE,
        correlation: 0,
        priority: Priority::Normal,
        sent_ns: 0,
        deadline_ns: 0,
        payload: Payload::Heartbeat { seq: u64::MAX },
    };
    requests.send(&env, WAIT).unwrap();
    assert!(child.wait().unwrap().success());
}

#[test]
fn envelopes_of_every_size_cross_to_another_process_and_back_in_order() {
    let (mut requests, requests_handoff) = export_producer(config()).unwrap();
    let (mut replies, replies_handoff) = export_consumer(config()).unwrap();
    let (child, _link) = start_peer(requests_handoff, replies_handoff);
    for i in 0..2_000 {
        send(&mut requests, i);
        assert_eq!(reply(&mut replies), i);
    }
    // Pipelined: several requests in flight, so rings batch, wrap and
    // fill. Bodies reach 24 slots, so 8 in flight fit the 256-slot rings
    // both ways (more would have client and peer each wait on a full ring).
    for round in 0..100u64 {
        let first = 10_000 + round * 8;
        for i in first..first + 8 {
            send(&mut requests, i);
        }
        for i in first..first + 8 {
            assert_eq!(reply(&mut replies), i);
        }
    }
    stop(&mut requests, child);
}

#[test]
fn a_killed_peer_is_noticed_and_a_new_one_reattaches_under_a_new_epoch() {
    let (mut requests, requests_handoff) = export_producer(config()).unwrap();
    let (mut replies, replies_handoff) = export_consumer(config()).unwrap();
    let (mut child, link) = start_peer(requests_handoff, replies_handoff);
    for i in 0..200 {
        send(&mut requests, i);
        assert_eq!(reply(&mut replies), i);
    }
    for i in 200..230 {
        send(&mut requests, i);
    }
    child.kill().unwrap();
    assert!(
        link.wait_gone(WAIT).unwrap(),
        "the link reports the peer gone"
    );
    child.wait().unwrap();

    let (requests_handoff, replies_handoff) = (requests.reset().unwrap(), replies.reset().unwrap());
    assert!(requests_handoff.epoch > 1 && replies_handoff.epoch > 1);
    let (child, _link) = start_peer(requests_handoff, replies_handoff);
    for i in 1_000..1_300 {
        send(&mut requests, i);
        assert_eq!(
            reply(&mut replies),
            i,
            "no stale reply from the killed peer"
        );
    }
    stop(&mut requests, child);
}

fn dev_shm() -> BTreeSet<String> {
    std::fs::read_dir("/dev/shm")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn rings_leave_nothing_in_dev_shm() {
    let before = dev_shm();
    {
        let (mut requests, requests_handoff) = export_producer(config()).unwrap();
        let (mut replies, replies_handoff) = export_consumer(config()).unwrap();
        let (child, _link) = start_peer(requests_handoff, replies_handoff);
        send(&mut requests, 1);
        assert_eq!(reply(&mut replies), 1);
        assert_eq!(dev_shm(), before, "nothing appears while the rings live");
        stop(&mut requests, child);
    }
    assert_eq!(dev_shm(), before);
}
