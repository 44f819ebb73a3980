//! Micro-benchmarks of the wire codec: encoding an envelope into a slot,
//! checked decoding, and, for comparison, rkyv's unchecked access to the
//! same frame.
//!
//! Ids are `wire/<op>/<message>`. `request_64b` is a request with a 64-byte
//! body (the common case, 120 bytes); `placement` is a GPU placement, whose
//! out-of-line struct adds a pointer check and whose two strings add UTF-8
//! validation to the checked decode.
//!
//! Each iteration keeps only whether the call succeeded: passing the whole
//! `Result` (up to 120 bytes with its error) through `black_box` made the
//! loop re-read it from the stack, and that store-forwarding stall cost
//! the harness more than the encode it measured.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use pinwheel_ipc::wire::{
    AgentId, ArchivedEnvelope, Envelope, GpuPlacement, Payload, Priority, Scratch, TopicId, decode,
    encode_into,
};

/// An 8-byte aligned slot, as the ring layer hands out.
#[repr(C, align(8))]
struct Slot([u8; 512]);

const BODY: [u8; 64] = [0x5a; 64];

fn messages() -> [(&'static str, Envelope<'static>); 2] {
    let base = Envelope {
        from: AgentId(3),
        to: AgentId(17),
        topic: TopicId::NONE,
        correlation: 0xdead_beef,
        priority: Priority::High,
        sent_ns: 1_000_000,
        deadline_ns: 2_000_000,
        payload: Payload::Request {
            method: 7,
            body: &BODY,
        },
    };
    let placement = Payload::GpuPlacement(GpuPlacement {
        model: "llama-3.1-8b-instruct-q4",
        host: "mainpc",
        gpu: 0,
        pinned: false,
        vram_mib: 6144,
        epoch: 12,
    });
    [
        ("request_64b", base),
        (
            "placement",
            Envelope {
                payload: placement,
                ..base
            },
        ),
    ]
}

/// Encodes `env` into a fresh slot.
fn frame(env: &Envelope<'_>) -> (Slot, usize) {
    let mut slot = Slot([0; 512]);
    let len = encode_into(env, &mut slot.0, &mut Scratch::new()).expect("a 512-byte slot fits");
    (slot, len)
}

fn encode(c: &mut Criterion) {
    let mut slot = Slot([0; 512]);
    let mut scratch = Scratch::new();
    for (name, env) in messages() {
        c.bench_with_input(BenchmarkId::new("wire/encode", name), &env, |b, env| {
            b.iter(|| black_box(encode_into(black_box(env), &mut slot.0, &mut scratch).is_ok()))
        });
    }
}

fn decode_checked(c: &mut Criterion) {
    for (name, env) in messages() {
        let (slot, len) = frame(&env);
        let bytes = &slot.0[..len];
        c.bench_with_input(
            BenchmarkId::new("wire/decode_checked", name),
            &bytes,
            |b, bytes| b.iter(|| black_box(decode(black_box(bytes)).is_ok())),
        );
    }
}

// The only unsafe code of the benches: the baseline that checked decoding
// is measured against.
#[allow(unsafe_code)]
fn access_unchecked(c: &mut Criterion) {
    for (name, env) in messages() {
        let (slot, len) = frame(&env);
        let bytes = &slot.0[..len];
        c.bench_with_input(
            BenchmarkId::new("wire/access_unchecked", name),
            &bytes,
            |b, &bytes| {
                b.iter(|| {
                    // SAFETY: `bytes` is a frame `encode_into` wrote into an
                    // 8-byte aligned slot just above, unmodified since, so it is
                    // a valid, aligned `ArchivedEnvelope` at rkyv's root position.
                    black_box(unsafe {
                        rkyv::access_unchecked::<ArchivedEnvelope<'_>>(black_box(bytes))
                    })
                })
            },
        );
    }
}

criterion_group!(benches, encode, decode_checked, access_unchecked);
criterion_main!(benches);
