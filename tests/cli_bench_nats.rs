#![cfg(test)]
//! `pinwheel bench nats` (the real binary) against a real nats-server: a
//! call between hosts over NATS request/reply, and ZeroMQ REQ/REP over TCP
//! beside it in the same run. Checks that every round trip was timed, not
//! how long any took.

use std::process::Command;

use pinwheel::test_support::NatsServer;
use serde_json::Value;

const PINWHEEL: &str = env!("CARGO_BIN_EXE_pinwheel");

#[test]
fn bench_nats_times_every_round_trip_and_zeromq_tcp_beside_it() {
    let nats = NatsServer::start();
    let args = [
        "bench",
        "nats",
        "--msgs",
        "2000",
        "--json",
        "--baseline",
        "zmq",
    ];

    let out = Command::new(PINWHEEL)
        .args(args)
        .args(["--nats", &nats.url()])
        .output()
        .expect("pinwheel runs");

    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["nats_rtt_ns"]["count"], 2000, "{report}");
    assert!(report["nats_rtt_ns"]["p50"].as_u64() > Some(0), "{report}");
    assert_eq!(report["zmq_tcp_rtt_ns"]["count"], 2000, "{report}");
}

#[test]
fn bench_nats_refuses_a_url_that_is_not_nats_with_exit_2() {
    let out = Command::new(PINWHEEL)
        .args(["bench", "nats", "--nats", "http://127.0.0.1:1"])
        .output()
        .expect("pinwheel runs");

    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not a NATS URL"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
