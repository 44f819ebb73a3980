//! What hosts tell each other over NATS, and how its bytes are framed and
//! checked: the only caller of rkyv's serialize and access APIs in
//! `cluster` (as `wire/codec.rs` is for envelopes).
//!
//! ```text
//!  frame = header (8 bytes) + body
//!   0  magic "PWC"  3  kind u8  4  version u16 LE  6  reserved u16 = 0
//!   8  body: rkyv bytes, root at the end
//!
//!  kind 1 HostState    version CLUSTER_VERSION   pinwheel.<cluster>.host.<host>.state
//!  kind 2 ErrorReport  version WIRE_VERSION      pinwheel.<cluster>.errors.<host> (a wire Envelope)
//!  kind 3 AgentRecord  version CLUSTER_VERSION   KV pinwheel-<cluster>-registry, key <host>.<agent>
//!  kind 4 Ownership    version CLUSTER_VERSION   KV pinwheel-<cluster>-placements, key <replica>.<model>
//! ```
//!
//! Keys and subjects put the host first, so that a NATS permission on
//! `<prefix>.<host>.>` lets a host write only its own (host names hold no
//! `.`). Calls between hosts carry plain wire envelopes (`calls.rs`), not
//! frames: the envelope has its own version and checks.
//!
//! Invariants:
//! * Bytes from NATS are untrusted. [`decode_state`] and friends check the
//!   length, the header, then run bytecheck over a private, aligned copy of
//!   the body, then check names, counts ([`MAX_ENTRIES`] a list) and VRAM
//!   sizes ([`MAX_VRAM_MIB`] each); any input gives `Ok` or `Err`, never a
//!   panic, and nothing a frame holds can overflow a sum downstream.
//! * Host state carries time: its incarnation (start) and `sent_ms`, Unix
//!   ms. [`check_time`] refuses a frame sent in the future (past
//!   [`MAX_SKEW_MS`]) or with more heartbeats than its host can have sent
//!   since it started, so a forged frame cannot claim a later incarnation
//!   or sequence than the real host will reach, and so silence it.
//! * The version travels in every frame, since NATS has no connection
//!   handshake between peers; it must match exactly (see `wire/version.rs`
//!   for why). Bump [`CLUSTER_VERSION`] whenever a type here changes; the
//!   golden-bytes test fails until you do.
//! * Encoding allocates: this runs on the control thread a few times a
//!   second per peer, never on the data plane.

use rkyv::rancor;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

use crate::config::limits::MAX_VRAM_MIB;
use crate::config::name_problem;
use pinwheel_ipc::wire::{self, Envelope, ErrorReport, Payload, Priority, Scratch, TopicId};

/// The version of the types in this file.
pub const CLUSTER_VERSION: u16 = 2;

/// The largest frame accepted, bytes. A host state with a few hundred
/// models and agents is a few tens of KiB.
pub const MAX_FRAME_BYTES: usize = 256 * 1024;

/// The most entries any list in a host state may hold.
pub const MAX_ENTRIES: usize = 4096;

/// How far ahead of this host's clock a peer's clock may be, ms: hosts
/// are expected to run NTP; a minute covers a host that has not synced yet.
pub const MAX_SKEW_MS: u64 = 60_000;

/// The most host states a host publishes per heartbeat (one per beat, and
/// at most four more when its state changes: the link's `min_gap`).
pub const STATES_PER_HEARTBEAT: u64 = 5;

const MAGIC: &[u8; 3] = b"PWC";
const HEADER_BYTES: usize = 8;

/// What a frame holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// A [`HostState`].
    HostState = 1,
    /// A wire envelope carrying an error report.
    ErrorReport = 2,
    /// An [`AgentRecord`].
    AgentRecord = 3,
    /// An [`OwnershipRecord`].
    Ownership = 4,
}

/// One GPU of a host.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuState {
    /// Its index on the host.
    pub index: u32,
    /// Its VRAM, MiB.
    pub total_mib: u64,
    /// VRAM free for new models, MiB.
    pub free_mib: u64,
}

/// Requests waiting at one agent.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct QueueDepth {
    /// The agent.
    pub agent: String,
    /// Requests queued.
    pub depth: u32,
}

/// An agent's health.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum Health {
    /// Starting; not serving yet.
    Starting,
    /// Serving.
    Healthy,
    /// Running but failing its checks.
    Unhealthy,
    /// Not running.
    Stopped,
}

/// One agent's health on a host.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AgentHealth {
    /// The agent.
    pub agent: String,
    /// Its health.
    pub health: Health,
}

/// The receipt of a peer's heartbeat, echoed back so the peer can measure
/// the round trip without synchronized clocks.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The peer whose heartbeat this acknowledges.
    pub host: String,
    /// Its sequence number.
    pub seq: u64,
    /// How long it was held here before this heartbeat went out, µs.
    pub held_us: u32,
}

/// Everything a host publishes each heartbeat. The core loop fills all but
/// `seq`, `sent_ms` and `acks`, which the link stamps. Which host owns
/// which model is not here: that is the placement store's.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct HostState {
    /// The host.
    pub host: String,
    /// Grows each time the host starts (its start time, Unix ms).
    pub incarnation: u64,
    /// Heartbeat number within this incarnation, from 1.
    pub seq: u64,
    /// When it was sent, Unix ms.
    pub sent_ms: u64,
    /// Whether the host sees itself as degraded.
    pub degraded: bool,
    /// Its GPUs.
    pub gpus: Vec<GpuState>,
    /// Its agents' queues.
    pub queues: Vec<QueueDepth>,
    /// Its agents' health.
    pub agents: Vec<AgentHealth>,
    /// Heartbeats of peers it received since its last one.
    pub acks: Vec<Ack>,
}

/// One agent in the cross-host registry.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AgentRecord {
    /// The agent.
    pub agent: String,
    /// Its host.
    pub host: String,
    /// Its ports there (the legacy mesh's, if any).
    pub ports: Vec<u16>,
    /// Its health when written.
    pub health: Health,
}

impl AgentRecord {
    /// Its key in the registry bucket, `<host>.<agent>`: the host first
    /// (it holds no `.`), so that a permission on `<host>.>` covers
    /// exactly this host's records.
    pub fn key(&self) -> String {
        format!("{}.{}", self.host, self.agent)
    }
}

/// A slot's entry in the placement store: who owns it. The key names the
/// slot ([`slot_key`]).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct OwnershipRecord {
    /// The owner.
    pub host: String,
    /// Its GPU there.
    pub gpu: u32,
    /// VRAM, MiB.
    pub vram_mib: u64,
    /// Pinned.
    pub pinned: bool,
    /// Serving a job.
    pub active: bool,
    /// 0 is the highest.
    pub priority: u8,
    /// Spread rather than binpack when placed again.
    pub spread: bool,
    /// Loaded by its owner (false: assigned).
    pub loaded: bool,
}

/// The placement store's key of `model` replica `replica`:
/// `<replica>.<model>`, or `None` for a model name that cannot end a
/// NATS subject (empty tokens: a `.` at the end or two in a row).
pub fn slot_key(model: &str, replica: u8) -> Option<String> {
    subject_tail(model).then(|| format!("{replica}.{model}"))
}

/// The model and replica a placement key names, if it is one.
pub fn parse_slot_key(key: &str) -> Option<(String, u8)> {
    let (replica, model) = key.split_once('.')?;
    let replica = replica.parse().ok()?;
    (name_problem(model).is_none() && subject_tail(model)).then(|| (model.to_owned(), replica))
}

/// Whether a name (already a valid name) can be the last tokens of a
/// subject: no empty token.
pub fn subject_tail(name: &str) -> bool {
    !name.is_empty() && name.split('.').all(|t| !t.is_empty())
}

/// An error report from the error bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorEvent {
    /// The host that published it.
    pub host: String,
    /// The agent it is about, as that host numbers them.
    pub agent: u32,
    /// The agent's error code.
    pub code: u32,
    /// What happened.
    pub message: String,
}

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameProblem {
    /// Too short or too long.
    #[error("{len} bytes, outside {HEADER_BYTES}..={MAX_FRAME_BYTES}")]
    Length {
        /// The frame's length.
        len: usize,
    },
    /// Not a pinwheel frame of the expected kind.
    #[error("header {found:02x?} is not a {expected:?} frame")]
    Header {
        /// The first 4 bytes.
        found: [u8; 4],
        /// The kind expected.
        expected: FrameKind,
    },
    /// Another version.
    #[error("version {found}; this build speaks {expected}")]
    Version {
        /// The frame's version.
        found: u16,
        /// This build's.
        expected: u16,
    },
    /// The body failed bytecheck.
    #[error("invalid body: {reason}")]
    Body {
        /// What bytecheck or the wire decoder found.
        reason: String,
    },
    /// A name that cannot be a host, agent or model name.
    #[error("{what} {name:?} {problem}")]
    Name {
        /// Which name.
        what: &'static str,
        /// The name, cut to 64 bytes.
        name: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// A list (or map) longer than its bound.
    #[error("{what} has {len} entries; at most {max} are accepted")]
    TooMany {
        /// Which list.
        what: &'static str,
        /// Its length (or the length it would reach).
        len: usize,
        /// Its bound ([`MAX_ENTRIES`] for the lists of a frame).
        max: usize,
    },
    /// A time or a count ahead of what the clock allows.
    #[error("{what} {value} is past {bound}, which this host's clock allows")]
    Future {
        /// Which value.
        what: &'static str,
        /// The value.
        value: u64,
        /// The most allowed.
        bound: u64,
    },
    /// A VRAM size no GPU has.
    #[error("{what} of {mib} MiB is above {MAX_VRAM_MIB} MiB")]
    Vram {
        /// Which value.
        what: &'static str,
        /// The value.
        mib: u64,
    },
}

/// Encodes a host state as a frame.
pub fn encode_state(state: &HostState) -> Result<Vec<u8>, FrameProblem> {
    let body = rkyv::to_bytes::<rancor::Error>(state).map_err(|e| FrameProblem::Body {
        reason: e.to_string(),
    })?;
    Ok(frame(FrameKind::HostState, CLUSTER_VERSION, &body))
}

/// Encodes an agent record as a frame.
pub fn encode_record(record: &AgentRecord) -> Result<Vec<u8>, FrameProblem> {
    let body = rkyv::to_bytes::<rancor::Error>(record).map_err(|e| FrameProblem::Body {
        reason: e.to_string(),
    })?;
    Ok(frame(FrameKind::AgentRecord, CLUSTER_VERSION, &body))
}

/// Encodes a placement entry as a frame.
pub fn encode_ownership(record: &OwnershipRecord) -> Result<Vec<u8>, FrameProblem> {
    let body = rkyv::to_bytes::<rancor::Error>(record).map_err(|e| FrameProblem::Body {
        reason: e.to_string(),
    })?;
    Ok(frame(FrameKind::Ownership, CLUSTER_VERSION, &body))
}

fn frame(kind: FrameKind, version: u16, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(HEADER_BYTES + body.len());
    frame.extend_from_slice(&header(kind, version));
    frame.extend_from_slice(body);
    frame
}

fn header(kind: FrameKind, version: u16) -> [u8; HEADER_BYTES] {
    let v = version.to_le_bytes();
    [MAGIC[0], MAGIC[1], MAGIC[2], kind as u8, v[0], v[1], 0, 0]
}

/// Checks a frame's length, header and version, and copies its body into
/// `aligned` (cleared first; reused between calls so a steady stream of
/// frames does not allocate).
fn body<'b>(
    frame: &[u8],
    kind: FrameKind,
    version: u16,
    aligned: &'b mut AlignedVec,
) -> Result<&'b [u8], FrameProblem> {
    if frame.len() < HEADER_BYTES || frame.len() > MAX_FRAME_BYTES {
        return Err(FrameProblem::Length { len: frame.len() });
    }
    let want = header(kind, version);
    if frame[..4] != want[..4] || frame[6..8] != [0, 0] {
        let mut found = [0; 4];
        found.copy_from_slice(&frame[..4]);
        return Err(FrameProblem::Header {
            found,
            expected: kind,
        });
    }
    let found = u16::from_le_bytes([frame[4], frame[5]]);
    if found != version {
        return Err(FrameProblem::Version {
            found,
            expected: version,
        });
    }
    aligned.clear();
    aligned.extend_from_slice(&frame[HEADER_BYTES..]);
    Ok(aligned.as_slice())
}

/// Checks and decodes a host state frame.
pub fn decode_state(frame: &[u8], aligned: &mut AlignedVec) -> Result<HostState, FrameProblem> {
    let bytes = body(frame, FrameKind::HostState, CLUSTER_VERSION, aligned)?;
    let archived = rkyv::access::<ArchivedHostState, rancor::Error>(bytes).map_err(|e| {
        FrameProblem::Body {
            reason: e.to_string(),
        }
    })?;
    let state = rkyv::deserialize::<HostState, rancor::Error>(archived).map_err(|e| {
        FrameProblem::Body {
            reason: e.to_string(),
        }
    })?;
    check_state(&state)?;
    Ok(state)
}

/// Checks and decodes an agent record frame.
pub fn decode_record(frame: &[u8], aligned: &mut AlignedVec) -> Result<AgentRecord, FrameProblem> {
    let bytes = body(frame, FrameKind::AgentRecord, CLUSTER_VERSION, aligned)?;
    let archived = rkyv::access::<ArchivedAgentRecord, rancor::Error>(bytes).map_err(|e| {
        FrameProblem::Body {
            reason: e.to_string(),
        }
    })?;
    let record = rkyv::deserialize::<AgentRecord, rancor::Error>(archived).map_err(|e| {
        FrameProblem::Body {
            reason: e.to_string(),
        }
    })?;
    check_name("host", &record.host)?;
    check_name("agent", &record.agent)?;
    check_len("ports", record.ports.len())?;
    Ok(record)
}

/// Checks and decodes a placement entry frame.
pub fn decode_ownership(
    frame: &[u8],
    aligned: &mut AlignedVec,
) -> Result<OwnershipRecord, FrameProblem> {
    let bytes = body(frame, FrameKind::Ownership, CLUSTER_VERSION, aligned)?;
    let archived = rkyv::access::<ArchivedOwnershipRecord, rancor::Error>(bytes).map_err(|e| {
        FrameProblem::Body {
            reason: e.to_string(),
        }
    })?;
    let record = rkyv::deserialize::<OwnershipRecord, rancor::Error>(archived).map_err(|e| {
        FrameProblem::Body {
            reason: e.to_string(),
        }
    })?;
    check_name("host", &record.host)?;
    check_vram("vram_mib", record.vram_mib)?;
    Ok(record)
}

/// Checks a decoded host state's clock against this host's, `now_ms`
/// (Unix ms): not sent in the future, not started after it was sent, and
/// no more heartbeats than a host beating every `heartbeat_ms` can have
/// sent since it started ([`STATES_PER_HEARTBEAT`] a beat, plus one).
pub fn check_time(state: &HostState, now_ms: u64, heartbeat_ms: u64) -> Result<(), FrameProblem> {
    let latest = now_ms.saturating_add(MAX_SKEW_MS);
    if state.sent_ms > latest || state.incarnation > state.sent_ms {
        return Err(FrameProblem::Future {
            what: "sent or started",
            value: state.sent_ms.max(state.incarnation),
            bound: latest.min(state.sent_ms),
        });
    }
    let beats = (state.sent_ms - state.incarnation) / heartbeat_ms.max(1) + 1;
    let bound = beats.saturating_mul(STATES_PER_HEARTBEAT).saturating_add(1);
    if state.seq > bound {
        return Err(FrameProblem::Future {
            what: "heartbeat sequence",
            value: state.seq,
            bound,
        });
    }
    Ok(())
}

/// Encodes an error report as a wire envelope in a frame. `agent` is the
/// reporting host's own agent number.
pub fn encode_error(agent: u32, code: u32, message: &str) -> Result<Vec<u8>, FrameProblem> {
    let env = Envelope {
        from: wire::AgentId(agent),
        to: wire::AgentId(0),
        topic: TopicId::NONE,
        priority: Priority::High,
        correlation: 0,
        sent_ns: 0,
        deadline_ns: 0,
        payload: Payload::ErrorReport(ErrorReport {
            code,
            agent: wire::AgentId(agent),
            message,
        }),
    };
    let mut scratch = Scratch::new();
    let len = wire::encoded_len(&env, &mut scratch).map_err(|e| FrameProblem::Body {
        reason: e.to_string(),
    })?;
    let mut slot = AlignedVec::<16>::with_capacity(len);
    slot.resize(len, 0);
    let written = wire::encode_into(&env, slot.as_mut_slice(), &mut scratch).map_err(|e| {
        FrameProblem::Body {
            reason: e.to_string(),
        }
    })?;
    Ok(frame(
        FrameKind::ErrorReport,
        wire::WIRE_VERSION,
        &slot[..written],
    ))
}

/// Checks and decodes an error bus frame published by `host`.
pub fn decode_error(
    host: &str,
    frame: &[u8],
    aligned: &mut AlignedVec,
) -> Result<ErrorEvent, FrameProblem> {
    check_name("host", host)?;
    let bytes = body(frame, FrameKind::ErrorReport, wire::WIRE_VERSION, aligned)?;
    let env = wire::decode(bytes).map_err(|e| FrameProblem::Body {
        reason: e.to_string(),
    })?;
    match env.payload.to_payload() {
        Payload::ErrorReport(report) => Ok(ErrorEvent {
            host: host.to_owned(),
            agent: report.agent.0,
            code: report.code,
            message: report.message.to_owned(),
        }),
        other => Err(FrameProblem::Body {
            reason: format!("payload {:?} is not an error report", other.kind()),
        }),
    }
}

fn check_state(s: &HostState) -> Result<(), FrameProblem> {
    check_name("host", &s.host)?;
    check_len("gpus", s.gpus.len())?;
    check_len("queues", s.queues.len())?;
    check_len("agents", s.agents.len())?;
    check_len("acks", s.acks.len())?;
    for g in &s.gpus {
        check_vram("gpu total_mib", g.total_mib)?;
        check_vram("gpu free_mib", g.free_mib)?;
    }
    for h in s.acks.iter().map(|a| &a.host) {
        check_name("host", h)?;
    }
    let agents = s
        .queues
        .iter()
        .map(|q| &q.agent)
        .chain(s.agents.iter().map(|a| &a.agent));
    for a in agents {
        check_name("agent", a)?;
    }
    Ok(())
}

fn check_name(what: &'static str, name: &str) -> Result<(), FrameProblem> {
    match name_problem(name) {
        None => Ok(()),
        Some(problem) => Err(FrameProblem::Name {
            what,
            name: name.chars().take(64).collect(),
            problem,
        }),
    }
}

fn check_len(what: &'static str, len: usize) -> Result<(), FrameProblem> {
    if len > MAX_ENTRIES {
        Err(FrameProblem::TooMany {
            what,
            len,
            max: MAX_ENTRIES,
        })
    } else {
        Ok(())
    }
}

/// Every VRAM size a peer sends is at most [`MAX_VRAM_MIB`], so no sum of
/// them over a frame's lists (fewer than 2^15 values of at most 2^24) or
/// over [`MAX_PEERS`](crate::gpu::sched::MAX_PEERS) peers' frames can
/// overflow a `u64`.
fn check_vram(what: &'static str, mib: u64) -> Result<(), FrameProblem> {
    if mib > MAX_VRAM_MIB {
        Err(FrameProblem::Vram { what, mib })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn state() -> HostState {
        HostState {
            host: "mainpc".to_owned(),
            incarnation: 1_700_000_000_000,
            seq: 9,
            sent_ms: 1_700_000_002_500,
            degraded: false,
            gpus: vec![GpuState {
                index: 0,
                total_mib: 24_564,
                free_mib: 20_000,
            }],
            queues: vec![QueueDepth {
                agent: "STTService".to_owned(),
                depth: 2,
            }],
            agents: vec![AgentHealth {
                agent: "STTService".to_owned(),
                health: Health::Healthy,
            }],
            acks: vec![Ack {
                host: "pc2".to_owned(),
                seq: 4,
                held_us: 120,
            }],
        }
    }

    #[test]
    fn a_host_state_comes_back_as_it_went() {
        let frame = encode_state(&state()).expect("encodes");

        let sut = decode_state(&frame, &mut AlignedVec::new());

        assert_eq!(sut, Ok(state()));
    }

    /// The layout of version 2, a host state with one GPU and nothing
    /// else. If this fails you changed a type here: bump CLUSTER_VERSION,
    /// then update these bytes.
    #[test]
    fn the_version_2_layout_has_not_changed() {
        let small = HostState {
            host: "h".to_owned(),
            incarnation: 2,
            seq: 3,
            sent_ms: 6,
            gpus: vec![GpuState {
                index: 1,
                total_mib: 4,
                free_mib: 5,
            }],
            ..HostState::default()
        };

        let sut = encode_state(&small).expect("encodes");

        assert_eq!(
            sut, GOLDEN_V2,
            "the archived layout changed: bump CLUSTER_VERSION and update GOLDEN_V2"
        );
    }

    #[rustfmt::skip]
    const GOLDEN_V2: &[u8] = &[
        // 0: header: "PWC", kind 1 (host state), version 2, reserved
        b'P', b'W', b'C', 1, 2, 0, 0, 0,
        // 8: the one GpuState: index 1, padding, total_mib 4, free_mib 5
        1, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0,
        // 32: the root. host "h", inline (an rkyv string of up to 8 bytes)
        b'h', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        // 40: incarnation 2, seq 3, sent_ms 6
        2, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0,
        // 64: degraded false and padding
        0, 0, 0, 0,
        // 68: gpus: pointer -60 (to 8), length 1
        0xc4, 0xff, 0xff, 0xff, 1, 0, 0, 0,
        // 76: queues, agents, acks: empty vectors (a relative pointer and
        // length 0 each)
        0xd4, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0xcc, 0xff, 0xff, 0xff, 0, 0, 0, 0,
        0xc4, 0xff, 0xff, 0xff, 0, 0, 0, 0,
        // 100: padding to the root's alignment
        0, 0, 0, 0,
    ];

    #[test]
    fn another_version_is_refused_with_both_numbers() {
        let mut frame = encode_state(&state()).expect("encodes");
        frame[4] = 1;

        let sut = decode_state(&frame, &mut AlignedVec::new());

        assert_eq!(
            sut,
            Err(FrameProblem::Version {
                found: 1,
                expected: CLUSTER_VERSION
            })
        );
    }

    #[test]
    fn a_record_frame_is_not_taken_for_a_host_state() {
        let record = AgentRecord {
            agent: "STTService".to_owned(),
            host: "mainpc".to_owned(),
            ports: vec![5580],
            health: Health::Healthy,
        };
        let frame = encode_record(&record).expect("encodes");

        let sut = decode_state(&frame, &mut AlignedVec::new());

        assert!(
            matches!(
                sut,
                Err(FrameProblem::Header {
                    expected: FrameKind::HostState,
                    ..
                })
            ),
            "{sut:?}"
        );
        assert_eq!(decode_record(&frame, &mut AlignedVec::new()), Ok(record));
    }

    #[test]
    fn a_name_that_cannot_be_a_host_name_is_refused_after_bytecheck() {
        let bad = HostState {
            host: "no spaces".to_owned(),
            ..state()
        };
        let frame = encode_state(&bad).expect("encodes");

        let sut = decode_state(&frame, &mut AlignedVec::new());

        assert!(
            matches!(sut, Err(FrameProblem::Name { what: "host", .. })),
            "{sut:?}"
        );
    }

    #[test]
    fn an_error_report_travels_as_a_wire_envelope() {
        let frame = encode_error(12, 503, "model load failed").expect("encodes");

        let sut = decode_error("pc2", &frame, &mut AlignedVec::new());

        assert_eq!(
            sut,
            Ok(ErrorEvent {
                host: "pc2".to_owned(),
                agent: 12,
                code: 503,
                message: "model load failed".to_owned()
            })
        );
    }

    #[test]
    fn a_state_with_one_gpu_too_many_is_refused() {
        let crowded = HostState {
            gpus: (0..=MAX_ENTRIES)
                .map(|i| GpuState {
                    index: i as u32,
                    total_mib: 1,
                    free_mib: 1,
                })
                .collect(),
            ..state()
        };
        let frame = encode_state(&crowded).expect("encodes");
        assert!(frame.len() <= MAX_FRAME_BYTES, "{} bytes", frame.len());

        let sut = decode_state(&frame, &mut AlignedVec::new());

        assert_eq!(
            sut,
            Err(FrameProblem::TooMany {
                what: "gpus",
                len: MAX_ENTRIES + 1,
                max: MAX_ENTRIES
            })
        );
    }

    #[test]
    fn vram_sizes_that_could_overflow_a_sum_are_refused() {
        let huge_gpu = HostState {
            gpus: vec![GpuState {
                index: 0,
                total_mib: MAX_VRAM_MIB + 1,
                free_mib: 0,
            }],
            ..state()
        };
        let huge_model = OwnershipRecord {
            vram_mib: u64::MAX,
            ..ownership()
        };

        let state = decode_state(
            &encode_state(&huge_gpu).expect("encodes"),
            &mut AlignedVec::new(),
        );
        let record = decode_ownership(
            &encode_ownership(&huge_model).expect("encodes"),
            &mut AlignedVec::new(),
        );

        assert_eq!(
            state,
            Err(FrameProblem::Vram {
                what: "gpu total_mib",
                mib: MAX_VRAM_MIB + 1
            })
        );
        assert_eq!(
            record,
            Err(FrameProblem::Vram {
                what: "vram_mib",
                mib: u64::MAX
            })
        );
    }

    fn ownership() -> OwnershipRecord {
        OwnershipRecord {
            host: "pc2".to_owned(),
            gpu: 0,
            vram_mib: 3100,
            pinned: true,
            active: false,
            priority: 0,
            spread: false,
            loaded: true,
        }
    }

    #[test]
    fn an_ownership_record_comes_back_and_its_key_names_replica_then_model() {
        let frame = encode_ownership(&ownership()).expect("encodes");

        let sut = decode_ownership(&frame, &mut AlignedVec::new());
        let key = slot_key("whisper.large", 1);

        assert_eq!(sut, Ok(ownership()));
        assert_eq!(key.as_deref(), Some("1.whisper.large"));
        assert_eq!(
            parse_slot_key("1.whisper.large"),
            Some(("whisper.large".to_owned(), 1))
        );
        assert_eq!(slot_key("trailing.", 0), None);
        assert_eq!(parse_slot_key("x.m"), None);
        assert_eq!(parse_slot_key("0.a..b"), None);
    }

    #[test]
    fn a_state_sent_in_the_future_or_with_more_beats_than_time_allows_is_refused() {
        let now = 1_700_000_003_000;
        let sane = state();
        let far_future = HostState {
            incarnation: u64::MAX - 1,
            sent_ms: u64::MAX,
            ..state()
        };
        let started_after_sent = HostState {
            incarnation: sane.sent_ms + 1,
            ..state()
        };
        let too_many_beats = HostState {
            seq: 1_000,
            ..state()
        };

        assert_eq!(check_time(&sane, now, 250), Ok(()));
        assert!(matches!(
            check_time(&far_future, now, 250),
            Err(FrameProblem::Future { .. })
        ));
        assert!(matches!(
            check_time(&started_after_sent, now, 250),
            Err(FrameProblem::Future { .. })
        ));
        assert_eq!(
            check_time(&too_many_beats, now, 250),
            Err(FrameProblem::Future {
                what: "heartbeat sequence",
                value: 1_000,
                bound: 56
            })
        );
    }

    /// VRAM sizes: mostly plausible, often hostile.
    fn mib() -> impl Strategy<Value = u64> {
        prop_oneof![0..=MAX_VRAM_MIB, MAX_VRAM_MIB..=u64::MAX, Just(u64::MAX)]
    }

    fn hostile_state() -> impl Strategy<Value = HostState> {
        let gpus = proptest::collection::vec(
            (0u32..4, mib(), mib()).prop_map(|(index, total_mib, free_mib)| GpuState {
                index,
                total_mib,
                free_mib,
            }),
            0..4,
        );
        gpus.prop_map(|gpus| HostState {
            host: "peer".to_owned(),
            incarnation: 1,
            gpus,
            ..HostState::default()
        })
    }

    proptest! {
        #[test]
        fn a_hostile_state_is_refused_unless_every_vram_size_is_bounded_and_the_scheduler_takes_it(sent in hostile_state()) {
            use crate::gpu::sched::{Decision, GpuReport, GpuScheduler, HostName, SchedConfig};
            let bounded = sent.gpus.iter().all(|g| g.total_mib <= MAX_VRAM_MIB && g.free_mib <= MAX_VRAM_MIB);

            let sut = decode_state(&encode_state(&sent).expect("encodes"), &mut AlignedVec::new());

            prop_assert_eq!(sut.is_ok(), bounded, "{:?}", sut);
            if let Ok(state) = sut {
                let mut sched = GpuScheduler::cluster(HostName::from("me"), 2, SchedConfig::default())
                    .expect("valid");
                sched.set_local_gpus(&[GpuReport { gpu: crate::gpu::sched::GpuIndex(0), total_mib: 8192, free_mib: 8192 }]);
                sched.set_synced(true, 0);
                let mut out: Vec<Decision> = Vec::new();
                sched.observe(crate::cluster::report_from_state(&state), 100, 0, &mut out).expect("taken");
                let req = crate::gpu::sched::ModelRequest {
                    model: crate::gpu::sched::ModelName::from("m"),
                    vram_mib: MAX_VRAM_MIB,
                    pinned: true,
                    priority: 0,
                    policy: crate::gpu::sched::Policy::Spread,
                    replicas: 2,
                    host: None,
                };
                let _ = sched.place(&req, 1, &mut out);
                sched.tick(10_000, &mut out);
            }
        }

        #[test]
        fn any_bytes_give_a_record_or_a_refusal_never_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut aligned = AlignedVec::new();
            let _ = decode_ownership(&bytes, &mut aligned);
        }

        #[test]
        fn any_bytes_give_a_state_or_a_refusal_never_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut aligned = AlignedVec::new();
            let _ = decode_state(&bytes, &mut aligned);
            let _ = decode_record(&bytes, &mut aligned);
            let _ = decode_error("h", &bytes, &mut aligned);
        }

        #[test]
        fn any_byte_flipped_in_a_valid_state_gives_a_state_or_a_refusal(at in 0usize..10_000, to in any::<u8>()) {
            let mut frame = encode_state(&state()).expect("encodes");
            let at = at % frame.len();
            frame[at] = to;

            let sut = decode_state(&frame, &mut AlignedVec::new());

            if let Ok(decoded) = sut {
                prop_assert!(name_problem(&decoded.host).is_none());
            }
        }
    }
}
