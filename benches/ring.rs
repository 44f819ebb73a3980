//! Ring micro-benchmarks (criterion). Cross-core cases pin the producer to
//! CPU 0 and the consumer to CPU 1 and print that they did.
//!
//! * `ring/push_pop/<bytes>`: one thread writes and reads one frame.
//! * `ring/push_pop_envelope/<body>`: the same with an envelope.
//! * `ring/push_pop_exported/<bytes>` and
//!   `ring/push_pop_envelope_exported/<body>`: the same on a ring handed to
//!   another process (here attached by the same thread), where frames are
//!   staged in private memory and copied with atomic word copies.
//! * `ring/stream_bytes/<bytes>`: frames of raw bytes, CPU 0 -> CPU 1,
//!   published in batches of 32; time per frame.
//! * `ring/stream_envelope/<body>`: the same with real envelopes encoded
//!   into the slot and checked on receipt.
//! * `ring/ping_pong_envelope/<body>`: one request and one reply between
//!   the two CPUs; time per round trip.

#![allow(
    clippy::print_stderr,
    reason = "STYLE: cross-core benches print which cores they pinned"
)]

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use pinwheel::runtime::affinity::pin_current_thread;
use pinwheel::topology::CpuId;
use pinwheel_ipc::ring::{
    Consumer, Producer, RingConfig, RingError, WaitStrategy, export_producer, shm_ring,
};
use pinwheel_ipc::wire::{AgentId, Envelope, Payload, Priority, TopicId};

const BATCH: u64 = 32;

fn config() -> RingConfig {
    RingConfig {
        slots: 4096,
        max_frame: 2048,
        wait: WaitStrategy::Spin,
        spin_us: 0,
    }
}

fn envelope(i: u64, body: &[u8]) -> Envelope<'_> {
    Envelope {
        from: AgentId(1),
        to: AgentId(2),
        topic: TopicId::NONE,
        correlation: i,
        priority: Priority::High,
        sent_ns: 0,
        deadline_ns: 0,
        payload: Payload::Request { method: 1, body },
    }
}

fn pin(cpu: u32) {
    pin_current_thread(CpuId(cpu)).expect("benchmarks pin CPU 0 and CPU 1");
}

fn push_pop(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring/push_pop");
    for size in [64usize, 512] {
        let (mut producer, mut consumer) = shm_ring(config()).expect("ring");
        let bytes = vec![7u8; size];
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| {
                producer.try_push(black_box(&bytes)).expect("room");
                consumer
                    .try_recv(|frame| black_box(frame.len()))
                    .expect("ring")
                    .expect("frame")
            });
        });
    }
    group.finish();
    let mut group = c.benchmark_group("ring/push_pop_envelope");
    let (mut producer, mut consumer) = shm_ring(config()).expect("ring");
    let body = [7u8; 64];
    group.bench_function(BenchmarkId::from_parameter(64), |b| {
        let mut i = 0;
        b.iter(|| {
            i += 1;
            producer
                .try_send(&envelope(i, black_box(&body)))
                .expect("room");
            consumer
                .try_recv_envelope(|env| black_box(env.correlation()))
                .expect("valid")
                .expect("frame")
        });
    });
    group.finish();
}

/// A ring whose consumer attached through a handoff, as an agent process
/// does: both ends treat the memory as writable by a peer.
fn exported_ring() -> (Producer, Consumer) {
    let (producer, handoff) = export_producer(config()).expect("ring");
    (producer, handoff.into_consumer().expect("attach"))
}

fn push_pop_exported(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring/push_pop_exported");
    for size in [64usize, 512] {
        let (mut producer, mut consumer) = exported_ring();
        let bytes = vec![7u8; size];
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| {
                producer.try_push(black_box(&bytes)).expect("room");
                consumer
                    .try_recv(|frame| black_box(frame.len()))
                    .expect("ring")
                    .expect("frame")
            });
        });
    }
    group.finish();
    let mut group = c.benchmark_group("ring/push_pop_envelope_exported");
    let (mut producer, mut consumer) = exported_ring();
    let body = [7u8; 64];
    group.bench_function(BenchmarkId::from_parameter(64), |b| {
        let mut i = 0;
        b.iter(|| {
            i += 1;
            producer
                .try_send(&envelope(i, black_box(&body)))
                .expect("room");
            consumer
                .try_recv_envelope(|env| black_box(env.correlation()))
                .expect("valid")
                .expect("frame")
        });
    });
    group.finish();
}

/// Runs `iters` frames from CPU 0 to a consumer on CPU 1; returns the time
/// the producer took, from the first write to the consumer's last read.
fn stream(
    iters: u64,
    write: impl Fn(&mut Producer, u64) -> Result<(), RingError>,
    read: fn(&mut Consumer) -> bool,
) -> Duration {
    let (mut producer, mut consumer) = shm_ring(config()).expect("ring");
    let start = Arc::new(Barrier::new(2));
    let done = Arc::new(AtomicBool::new(false));
    let (start2, done2) = (Arc::clone(&start), Arc::clone(&done));
    let reader = thread::spawn(move || {
        pin(1);
        start2.wait();
        let mut seen = 0;
        while seen < iters {
            if read(&mut consumer) {
                seen += 1;
            } else {
                consumer
                    .wait(Duration::from_secs(10))
                    .expect("frames keep coming");
            }
        }
        done2.store(true, Ordering::Release);
    });
    pin(0);
    start.wait();
    let began = Instant::now();
    for i in 0..iters {
        while let Err(RingError::Full) = write(&mut producer, i) {
            producer.flush().expect("flush");
            std::hint::spin_loop();
        }
        if i % BATCH == BATCH - 1 {
            producer.flush().expect("flush");
        }
    }
    producer.flush().expect("flush");
    while !done.load(Ordering::Acquire) {
        std::hint::spin_loop();
    }
    let elapsed = began.elapsed();
    reader.join().expect("reader");
    elapsed
}

#[allow(
    clippy::print_stderr,
    reason = "cross-core benches print the cores they pinned (STYLE rule 9); stderr keeps it out of criterion's report"
)]
fn streaming(c: &mut Criterion) {
    eprintln!("ring/stream_*: producer pinned to CPU 0, consumer to CPU 1");
    let mut group = c.benchmark_group("ring/stream_bytes");
    group.throughput(Throughput::Elements(1));
    group.bench_function(BenchmarkId::from_parameter(64), |b| {
        let bytes = [9u8; 64];
        b.iter_custom(|iters| {
            stream(
                iters,
                |p, _| p.try_write_bytes(black_box(&bytes)),
                |c| c.try_recv(|f| black_box(f.len())).expect("ring").is_some(),
            )
        });
    });
    group.finish();
    let mut group = c.benchmark_group("ring/stream_envelope");
    group.throughput(Throughput::Elements(1));
    group.bench_function(BenchmarkId::from_parameter(64), |b| {
        let body = [9u8; 64];
        b.iter_custom(|iters| {
            stream(
                iters,
                |p, i| p.try_write_envelope(&envelope(i, black_box(&body))),
                |c| {
                    c.try_recv_envelope(|env| black_box(env.body().len()))
                        .expect("valid envelope")
                        .is_some()
                },
            )
        });
    });
    group.finish();
}

#[allow(
    clippy::print_stderr,
    reason = "cross-core benches print the cores they pinned (STYLE rule 9); stderr keeps it out of criterion's report"
)]
fn ping_pong(c: &mut Criterion) {
    eprintln!("ring/ping_pong_envelope: client pinned to CPU 0, server to CPU 1");
    let mut group = c.benchmark_group("ring/ping_pong_envelope");
    group.bench_function(BenchmarkId::from_parameter(64), |b| {
        let (mut requests, mut server_in) = shm_ring(config()).expect("ring");
        let (mut server_out, mut replies) = shm_ring(config()).expect("ring");
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let server = thread::spawn(move || {
            pin(1);
            while !stop2.load(Ordering::Relaxed) {
                let served = server_in.try_recv_envelope(|env| {
                    let reply = Envelope {
                        payload: Payload::Reply {
                            status: 0,
                            body: env.body(),
                        },
                        ..envelope(env.correlation(), &[])
                    };
                    server_out.try_send(&reply).expect("reply ring has room");
                });
                if served.expect("valid request").is_none() {
                    server_in.wait(Duration::from_millis(10)).expect("ring");
                }
            }
        });
        pin(0);
        let body = [5u8; 64];
        let mut i = 0;
        b.iter(|| {
            i += 1;
            requests
                .try_send(&envelope(i, &body))
                .expect("request ring has room");
            loop {
                if let Some(correlation) = replies
                    .try_recv_envelope(|env| env.correlation())
                    .expect("valid reply")
                {
                    break black_box(correlation);
                }
                replies.wait(Duration::from_secs(10)).expect("reply comes");
            }
        });
        stop.store(true, Ordering::Relaxed);
        server.join().expect("server");
    });
    group.finish();
}

criterion_group!(benches, push_pop, push_pop_exported, streaming, ping_pong);
criterion_main!(benches);
