//! The wire codec from the outside: round trips of arbitrary envelopes of
//! every payload kind (in line and out of line), the two-slot size of the
//! common request, hostile bytes into `decode` (random bytes, valid frames
//! with flipped bits, cuts and junk, and out-of-line pointers aimed
//! elsewhere), and a count of heap allocations in the steady state of
//! encode and decode, which must be zero.
//!
//! The allocation count comes from `pinwheel::test_support::CountingAlloc`,
//! which counts per thread, so tests running in parallel do not disturb it.

// The crate is test code as a whole; marking it so lets the lints that
// keep `unwrap` and `#[test]` inside test modules see that.
#![cfg(test)]

use pinwheel::test_support::{CountingAlloc, allocations_during};
use pinwheel_ipc::ring::{self, FRAME_HEADER_BYTES, frame_slots};
use pinwheel_ipc::wire::{
    AgentId, ArchivedPayload, ENVELOPE_ALIGN, Envelope, ErrorReport, GpuJob, GpuPlacement, Payload,
    PayloadKind, Priority, Scratch, TopicId, WireError, decode, encode_into,
};
use proptest::prelude::*;

/// Room for the largest envelope the strategies build, and then some.
const SLOT_BYTES: usize = 8192;

/// A ring slot: 8-byte aligned, as the ring layer hands them out.
#[repr(C, align(8))]
struct Slot([u8; SLOT_BYTES]);

impl Slot {
    fn boxed() -> Box<Slot> {
        Box::new(Slot([0; SLOT_BYTES]))
    }
}

// ---- counting allocator ----------------------------------------------------

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

// ---- arbitrary envelopes ---------------------------------------------------

/// The owned data an arbitrary envelope borrows from.
#[derive(Debug, Clone)]
enum OwnedPayload {
    Request(u16, Vec<u8>),
    Reply(u16, Vec<u8>),
    Event(Vec<u8>),
    Heartbeat(u64),
    GpuJob(String, u64, u8, u32),
    GpuPlacement(String, String, u32, u64, bool, u64),
    ErrorReport(u32, u32, String),
}

#[derive(Debug, Clone)]
struct OwnedEnvelope {
    from: u32,
    to: u32,
    topic: u32,
    correlation: u64,
    priority: Priority,
    sent_ns: u64,
    deadline_ns: u64,
    payload: OwnedPayload,
}

impl OwnedEnvelope {
    fn envelope(&self) -> Envelope<'_> {
        Envelope {
            from: AgentId(self.from),
            to: AgentId(self.to),
            topic: TopicId(self.topic),
            correlation: self.correlation,
            priority: self.priority,
            sent_ns: self.sent_ns,
            deadline_ns: self.deadline_ns,
            payload: self.payload(),
        }
    }

    fn payload(&self) -> Payload<'_> {
        match &self.payload {
            OwnedPayload::Request(method, body) => Payload::Request {
                method: *method,
                body,
            },
            OwnedPayload::Reply(status, body) => Payload::Reply {
                status: *status,
                body,
            },
            OwnedPayload::Event(body) => Payload::Event { body },
            OwnedPayload::Heartbeat(seq) => Payload::Heartbeat { seq: *seq },
            OwnedPayload::GpuJob(model, vram_mib, priority, hold_ms) => Payload::GpuJob(GpuJob {
                model,
                vram_mib: *vram_mib,
                priority: *priority,
                hold_ms: *hold_ms,
            }),
            OwnedPayload::GpuPlacement(model, host, gpu, vram_mib, pinned, epoch) => {
                Payload::GpuPlacement(GpuPlacement {
                    model,
                    host,
                    gpu: *gpu,
                    pinned: *pinned,
                    vram_mib: *vram_mib,
                    epoch: *epoch,
                })
            }
            OwnedPayload::ErrorReport(code, agent, message) => Payload::ErrorReport(ErrorReport {
                code: *code,
                agent: AgentId(*agent),
                message,
            }),
        }
    }
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..1024)
}

/// Any Unicode, including multi-byte characters, up to 64 characters.
fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..64).prop_map(|chars| chars.into_iter().collect())
}

fn payload() -> impl Strategy<Value = OwnedPayload> {
    prop_oneof![
        (any::<u16>(), body()).prop_map(|(m, b)| OwnedPayload::Request(m, b)),
        (any::<u16>(), body()).prop_map(|(s, b)| OwnedPayload::Reply(s, b)),
        body().prop_map(OwnedPayload::Event),
        any::<u64>().prop_map(OwnedPayload::Heartbeat),
        (text(), any::<u64>(), any::<u8>(), any::<u32>())
            .prop_map(|(m, v, p, h)| OwnedPayload::GpuJob(m, v, p, h)),
        (
            text(),
            text(),
            any::<u32>(),
            any::<u64>(),
            any::<bool>(),
            any::<u64>()
        )
            .prop_map(|(m, h, g, v, p, e)| OwnedPayload::GpuPlacement(m, h, g, v, p, e)),
        (any::<u32>(), any::<u32>(), text())
            .prop_map(|(c, a, m)| OwnedPayload::ErrorReport(c, a, m)),
    ]
}

fn priority() -> impl Strategy<Value = Priority> {
    prop_oneof![
        Just(Priority::Critical),
        Just(Priority::High),
        Just(Priority::Normal),
        Just(Priority::Low),
    ]
}

fn envelope() -> impl Strategy<Value = OwnedEnvelope> {
    (
        (any::<u32>(), any::<u32>(), any::<u32>(), any::<u64>()),
        (priority(), any::<u64>(), any::<u64>(), payload()),
    )
        .prop_map(
            |((from, to, topic, correlation), (priority, sent_ns, deadline_ns, payload))| {
                OwnedEnvelope {
                    from,
                    to,
                    topic,
                    correlation,
                    priority,
                    sent_ns,
                    deadline_ns,
                    payload,
                }
            },
        )
}

/// Encodes `owned` into `slot`; returns the frame's length.
fn encode(owned: &OwnedEnvelope, slot: &mut Slot) -> usize {
    encode_into(&owned.envelope(), &mut slot.0, &mut Scratch::new()).unwrap()
}

/// Decodes `bytes`; if that succeeds, reads every field, as a receiver
/// would. The point is that neither step panics.
fn decode_and_read(bytes: &[u8]) -> Result<(), WireError> {
    let archived = decode(bytes)?;
    let env = archived.to_envelope();
    let _ = (archived.body().len(), archived.kind(), format!("{env:?}"));
    Ok(())
}

// ---- tests -----------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_envelope_decodes_to_the_envelope_that_was_encoded(owned in envelope()) {
        let mut slot = Slot::boxed();
        let len = encode(&owned, &mut slot);

        let sut = decode(&slot.0[..len]).unwrap();

        let env = owned.envelope();
        prop_assert_eq!(sut.to_envelope(), env);
        prop_assert_eq!(sut.from(), env.from);
        prop_assert_eq!(sut.to(), env.to);
        prop_assert_eq!(sut.topic(), env.topic);
        prop_assert_eq!(sut.correlation(), env.correlation);
        prop_assert_eq!(sut.priority(), env.priority);
        prop_assert_eq!(sut.sent_ns(), env.sent_ns);
        prop_assert_eq!(sut.deadline_ns(), env.deadline_ns);
        prop_assert_eq!(sut.kind(), env.payload.kind());
    }

    #[test]
    fn random_bytes_give_ok_or_err_and_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
        offset in 0..ENVELOPE_ALIGN,
    ) {
        let mut slot = Slot::boxed();
        slot.0[offset..offset + bytes.len()].copy_from_slice(&bytes);

        let sut = decode_and_read(&slot.0[offset..offset + bytes.len()]);

        if offset != 0 {
            let misaligned = matches!(sut, Err(WireError::Misaligned { .. }));
            prop_assert!(misaligned, "{:?}", sut);
        }
    }

    #[test]
    fn a_frame_with_flipped_bytes_gives_ok_or_err_and_never_panics(
        owned in envelope(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1..=255u8), 1..8),
    ) {
        let mut slot = Slot::boxed();
        let len = encode(&owned, &mut slot);
        for (at, xor) in flips {
            slot.0[at.index(len)] ^= xor;
        }

        let _ = decode_and_read(&slot.0[..len]);
    }

    #[test]
    fn a_cut_or_padded_frame_gives_ok_or_err_and_never_panics(
        owned in envelope(),
        new_len in 0..SLOT_BYTES,
        junk in any::<u8>(),
    ) {
        let mut slot = Slot::boxed();
        let len = encode(&owned, &mut slot);
        slot.0[len..].fill(junk);

        let _ = decode_and_read(&slot.0[..new_len]);
    }
}

/// An envelope with fixed addressing around `payload`.
fn owned(payload: OwnedPayload) -> OwnedEnvelope {
    OwnedEnvelope {
        from: 1,
        to: 2,
        topic: 3,
        correlation: 4,
        priority: Priority::Critical,
        sent_ns: 5,
        deadline_ns: 0,
        payload,
    }
}

fn gpu_job() -> OwnedPayload {
    OwnedPayload::GpuJob("whisper-large-v3".into(), 3072, 1, 500)
}

fn gpu_placement() -> OwnedPayload {
    OwnedPayload::GpuPlacement("phi-3".into(), "pc2".into(), 1, 2048, true, 4)
}

fn error_report() -> OwnedPayload {
    OwnedPayload::ErrorReport(13, 5, "out of VRAM".into())
}

#[test]
fn every_payload_kind_round_trips() {
    let kinds = [
        (OwnedPayload::Request(1, vec![1, 2]), PayloadKind::Request),
        (OwnedPayload::Reply(2, vec![]), PayloadKind::Reply),
        (OwnedPayload::Event(vec![3; 9]), PayloadKind::Event),
        (OwnedPayload::Heartbeat(7), PayloadKind::Heartbeat),
        (gpu_job(), PayloadKind::GpuJob),
        (gpu_placement(), PayloadKind::GpuPlacement),
        (error_report(), PayloadKind::ErrorReport),
    ];
    for (payload, kind) in kinds {
        let owned = owned(payload);
        let mut slot = Slot::boxed();
        let len = encode(&owned, &mut slot);

        let sut = decode(&slot.0[..len]).unwrap();

        assert_eq!(sut.kind(), kind);
        assert_eq!(sut.to_envelope(), owned.envelope());
    }
}

#[test]
fn a_request_with_a_64_byte_body_fills_exactly_two_ring_slots() {
    let owned = owned(OwnedPayload::Request(7, vec![0x5a; 64]));
    let mut slot = Slot::boxed();

    let sut = encode(&owned, &mut slot);

    assert_eq!(sut, 120);
    assert_eq!(FRAME_HEADER_BYTES + sut, 2 * ring::SLOT_BYTES);
    assert_eq!(frame_slots(sut), 2);
}

#[test]
fn out_of_line_payloads_are_read_in_place() {
    let owned = owned(gpu_placement());
    let mut slot = Slot::boxed();
    let len = encode(&owned, &mut slot);

    let sut = decode(&slot.0[..len]).unwrap();

    let ArchivedPayload::GpuPlacement(placement) = &sut.payload else {
        panic!("expected a placement, got {sut:?}");
    };
    assert_eq!(placement.host.get(), "pc2");
    assert_eq!(placement.vram_mib.to_native(), 2048);
    assert_eq!(
        placement.to_native(),
        GpuPlacement {
            model: "phi-3",
            host: "pc2",
            gpu: 1,
            pinned: true,
            vram_mib: 2048,
            epoch: 4,
        }
    );
}

#[test]
fn debug_output_shows_the_fields_of_out_of_line_payloads() {
    let expected = [
        (
            gpu_job(),
            r#"GpuJob(GpuJob { model: "whisper-large-v3", vram_mib: 3072, priority: 1, hold_ms: 500 })"#,
        ),
        (
            gpu_placement(),
            r#"GpuPlacement(GpuPlacement { model: "phi-3", host: "pc2", gpu: 1, pinned: true, vram_mib: 2048, epoch: 4 })"#,
        ),
        (
            error_report(),
            r#"ErrorReport(ErrorReport { code: 13, agent: AgentId(5), message: "out of VRAM" })"#,
        ),
    ];
    for (payload, text) in expected {
        let owned = owned(payload);
        let mut slot = Slot::boxed();
        let len = encode(&owned, &mut slot);

        let sut = format!("{:?}", decode(&slot.0[..len]).unwrap());

        assert!(sut.contains(text), "{sut}");
    }
}

#[test]
fn an_out_of_line_pointer_outside_the_frame_or_into_the_envelope_is_invalid() {
    for payload in [gpu_job(), gpu_placement(), error_report()] {
        let owned = owned(payload);
        let mut slot = Slot::boxed();
        let len = encode(&owned, &mut slot);
        // An out-of-line payload is: tag, padding, then the relative pointer
        // (i32) to its archived struct, from the pointer's own position.
        let ptr_at = len - size_of::<ArchivedPayload<'static>>() + 4;
        let envelope_at = len - size_of::<pinwheel_ipc::wire::ArchivedEnvelope<'static>>();
        let into_envelope = i32::try_from(envelope_at).unwrap() - i32::try_from(ptr_at).unwrap();
        for offset in [-4096, 4096, 0, into_envelope] {
            slot.0[ptr_at..ptr_at + 4].copy_from_slice(&offset.to_le_bytes());

            let sut = decode(&slot.0[..len]);

            assert!(
                matches!(sut, Err(WireError::Invalid { .. })),
                "{:?} at {offset}: {sut:?}",
                owned.payload
            );
        }
    }
}

#[test]
fn the_allocation_counter_sees_a_heap_allocation() {
    let sut = allocations_during(|| drop(std::hint::black_box(vec![0u8; 64])));

    assert!(sut >= 1);
}

#[test]
fn steady_state_encode_and_decode_never_allocate() {
    let body = [0x5a; 64];
    let request = Payload::Request {
        method: 9,
        body: &body,
    };
    let placement = Payload::GpuPlacement(GpuPlacement {
        model: "llama-3.1-8b-instruct-q4",
        host: "mainpc",
        gpu: 0,
        pinned: false,
        vram_mib: 6144,
        epoch: 12,
    });
    let base = Envelope {
        from: AgentId(1),
        to: AgentId(2),
        topic: TopicId::NONE,
        priority: Priority::Normal,
        correlation: 0,
        sent_ns: 0,
        deadline_ns: 0,
        payload: request,
    };
    let mut slot = Slot::boxed();
    let mut scratch = Scratch::new();
    // Alternates an in-line and an out-of-line payload.
    let mut cycle = |i: u64| {
        let payload = if i.is_multiple_of(2) {
            request
        } else {
            placement
        };
        let env = Envelope {
            correlation: i,
            payload,
            ..base
        };
        let len = encode_into(&env, &mut slot.0, &mut scratch).unwrap();
        let archived = decode(&slot.0[..len]).unwrap();
        assert_eq!(archived.correlation(), i);
        assert_eq!(archived.to_envelope(), env);
    };
    for i in 0..100 {
        cycle(i);
    }

    let sut = allocations_during(|| {
        for i in 0..10_000 {
            cycle(i);
        }
    });

    assert_eq!(sut, 0, "heap allocations in 10,000 encode+decode cycles");
}

#[test]
fn rejecting_bad_frames_and_oversized_envelopes_never_allocates() {
    let body = [0x5a; 64];
    let env = Envelope {
        from: AgentId(1),
        to: AgentId(2),
        topic: TopicId::NONE,
        correlation: 0,
        priority: Priority::Normal,
        sent_ns: 0,
        deadline_ns: 0,
        payload: Payload::Event { body: &body },
    };
    let mut slot = Slot::boxed();
    let mut scratch = Scratch::new();
    let len = encode_into(&env, &mut slot.0, &mut scratch).unwrap();
    // An invalid payload tag: bytecheck fails and builds its reason.
    let tag_at = len - size_of::<ArchivedPayload<'static>>();
    slot.0[tag_at] = 0xee;

    let sut = allocations_during(|| {
        for _ in 0..1_000 {
            assert!(matches!(
                decode(&slot.0[..len]),
                Err(WireError::Invalid { .. })
            ));
            let too_small = encode_into(&env, &mut slot.0[len..len + 64], &mut scratch);
            assert!(matches!(too_small, Err(WireError::TooLarge { .. })));
        }
    });

    assert_eq!(sut, 0, "heap allocations while rejecting 2,000 messages");
}
