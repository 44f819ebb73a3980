//! Host state between the hosts: this host's heartbeats out, peers'
//! states in, and the link's map of peers (liveness, latency).
//!
//! * **Heartbeat task.** Every `heartbeat_ms` (and when the core loop's
//!   state changes, at most [`STATES_PER_HEARTBEAT`] times a heartbeat)
//!   publishes the host state stamped with its sequence, the time and
//!   acknowledgements of peers' heartbeats, skipping beats while
//!   disconnected; and declares silent peers lost.
//! * **States task.** Receives peers' states, checks them (the frame, the
//!   host in the subject, the clock: [`check_time`]), measures latency.
//!   Keeps at most [`MAX_PEERS`] peers: a new one past that is a bad
//!   frame.
//! * **Pruning.** A lost peer stays in the map for [`PRUNE_AFTER`] (so its
//!   loss is remembered: calls from it that are still answered here are
//!   dropped), then is forgotten; its return is a new peer.
//!
//! A frame is "fresh" if its (incarnation, sequence) is past the last one
//! taken from its host; a stale one is counted and dropped. A frame from a
//! host that is lost is taken whatever its incarnation: a host whose clock
//! went back still comes back. Frames from the future are refused before
//! they are compared, so a forged far-future frame can never make the real
//! host's frames look stale.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use rkyv::util::AlignedVec;
use tokio::sync::watch;
use tracing::{info, warn};

use super::ClusterEvent;
use super::link::{LinkStats, Shared, bad_frame, lock, nats_error};
use super::proto::{self, Ack, HostState, STATES_PER_HEARTBEAT, check_time};
use crate::gpu::sched::MAX_PEERS;

/// This host's heartbeats remembered for round-trip measurement.
pub(super) const SENT_KEPT: usize = 64;
/// How long a lost peer is remembered before it is forgotten.
pub const PRUNE_AFTER: Duration = Duration::from_secs(60);

/// What one peer's link looks like from here.
#[derive(Debug)]
pub(super) struct PeerLink {
    incarnation: u64,
    seq: u64,
    last_seen: Instant,
    pub lost: bool,
    latency_us: u64,
}

/// Unix time now, ms.
pub(super) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub(super) async fn heartbeat_task(shared: Arc<Shared>, mut source: watch::Receiver<HostState>) {
    let period = Duration::from_millis(shared.config.heartbeat_ms());
    let min_gap = period / (STATES_PER_HEARTBEAT as u32);
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut seq = 0;
    let mut last_beat = Instant::now();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            changed = source.changed() => {
                if changed.is_err() {
                    info!("host state source closed, heartbeats stop");
                    return;
                }
                if last_beat.elapsed() < min_gap {
                    continue;
                }
            }
        }
        detect_lost(&shared);
        if !shared.is_connected() {
            LinkStats::bump(&shared.stats.skipped);
            continue;
        }
        seq += 1;
        last_beat = Instant::now();
        let state = source.borrow_and_update().clone();
        publish_state(&shared, state, seq).await;
    }
}

async fn publish_state(shared: &Shared, mut state: HostState, seq: u64) {
    let now = Instant::now();
    state.host = shared.config.host().to_owned();
    state.seq = seq;
    state.sent_ms = unix_ms();
    state.acks = acks(shared, now);
    let frame = match proto::encode_state(&state) {
        Ok(frame) => frame,
        Err(problem) => {
            warn!(%problem, "cannot encode host state");
            return;
        }
    };
    {
        let mut sent = lock(&shared.sent);
        if sent.len() == SENT_KEPT {
            sent.pop_front();
        }
        sent.push_back((seq, now));
    }
    let wait = Duration::from_millis(shared.config.heartbeat_ms());
    let publish = shared
        .client
        .publish(shared.config.state_subject(), frame.into());
    match tokio::time::timeout(wait, publish).await {
        Ok(Ok(())) => LinkStats::bump(&shared.stats.published),
        Ok(Err(e)) => nats_error(shared, "publish host state", &e.to_string()),
        Err(_) => nats_error(shared, "publish host state", "timed out"),
    }
}

/// Acknowledgements of each live peer's latest heartbeat.
fn acks(shared: &Shared, now: Instant) -> Vec<Ack> {
    lock(&shared.peers)
        .iter()
        .filter(|(_, p)| !p.lost)
        .map(|(host, p)| Ack {
            host: host.clone(),
            seq: p.seq,
            held_us: u32::try_from(now.duration_since(p.last_seen).as_micros()).unwrap_or(u32::MAX),
        })
        .collect()
}

/// Declares silent peers lost and forgets those lost for [`PRUNE_AFTER`].
fn detect_lost(shared: &Shared) {
    let lost_after = Duration::from_millis(shared.config.lost_after_ms());
    let mut lost = Vec::new();
    {
        let mut peers = lock(&shared.peers);
        for (host, peer) in peers.iter_mut() {
            if !peer.lost && peer.last_seen.elapsed() > lost_after {
                peer.lost = true;
                lost.push(host.clone());
            }
        }
        peers.retain(|_, p| !p.lost || p.last_seen.elapsed() <= PRUNE_AFTER + lost_after);
    }
    if !lost.is_empty() {
        shared.peers_changed.notify_one();
    }
    for host in lost {
        warn!(peer = %host, "cluster peer lost");
        shared.emit(ClusterEvent::PeerLost { host });
    }
}

pub(super) async fn states_task(shared: Arc<Shared>, mut sub: async_nats::Subscriber) {
    let mut aligned = AlignedVec::new();
    let mut last_warn = None;
    while let Some(msg) = sub.next().await {
        // pinwheel.<cluster>.host.<host>.state: the host is token 3.
        let from = msg.subject.split('.').nth(3).unwrap_or("").to_owned();
        let checked = proto::decode_state(&msg.payload, &mut aligned).and_then(|state| {
            if state.host != from {
                return Err(proto::FrameProblem::Name {
                    what: "host",
                    name: state.host,
                    problem: "differs from the host in the subject",
                });
            }
            check_time(&state, unix_ms(), shared.config.heartbeat_ms())?;
            Ok(state)
        });
        if let Err(problem) = checked.and_then(|state| accept_state(&shared, state)) {
            bad_frame(&shared, &mut last_warn, &from, &problem);
        }
    }
}

/// Takes in a checked state; refuses a new peer past [`MAX_PEERS`].
fn accept_state(shared: &Shared, state: HostState) -> Result<(), proto::FrameProblem> {
    let now = Instant::now();
    let rtt = own_ack(shared, &state, now);
    let mut peers = lock(&shared.peers);
    let fresh = |p: &PeerLink| p.lost || (state.incarnation, state.seq) > (p.incarnation, p.seq);
    if peers.get(&state.host).is_some_and(|p| !fresh(p)) {
        drop(peers);
        LinkStats::bump(&shared.stats.stale_frames);
        return Ok(());
    }
    if !peers.contains_key(&state.host) && peers.len() >= MAX_PEERS {
        return Err(proto::FrameProblem::TooMany {
            what: "peers",
            len: peers.len() + 1,
            max: MAX_PEERS,
        });
    }
    let peer = peers.entry(state.host.clone()).or_insert(PeerLink {
        incarnation: 0,
        seq: 0,
        last_seen: now,
        lost: true,
        latency_us: 0,
    });
    let up = peer.lost || peer.incarnation != state.incarnation;
    if let Some(rtt) = rtt {
        let half = u64::try_from(rtt.as_micros() / 2).unwrap_or(u64::MAX);
        // An exponential average over about 8 heartbeats.
        peer.latency_us = if peer.latency_us == 0 {
            half
        } else {
            (peer.latency_us.saturating_mul(7).saturating_add(half)) / 8
        };
    }
    peer.incarnation = state.incarnation;
    peer.seq = state.seq;
    peer.last_seen = now;
    peer.lost = false;
    let latency_us = peer.latency_us;
    drop(peers);
    LinkStats::bump(&shared.stats.received);
    if up {
        info!(peer = %state.host, "cluster peer up");
        shared.peers_changed.notify_one();
        shared.emit(ClusterEvent::PeerUp {
            host: state.host.clone(),
        });
    }
    shared.emit(ClusterEvent::PeerState { state, latency_us });
    Ok(())
}

/// The round trip of this host's heartbeat that `state` acknowledges.
fn own_ack(shared: &Shared, state: &HostState, now: Instant) -> Option<Duration> {
    let ack = state.acks.iter().find(|a| a.host == shared.config.host())?;
    let sent = lock(&shared.sent)
        .iter()
        .find(|(seq, _)| *seq == ack.seq)?
        .1;
    now.duration_since(sent)
        .checked_sub(Duration::from_micros(u64::from(ack.held_us)))
}

/// Whether `host` is live in the link's view: `Some(true)` heard and not
/// lost, `Some(false)` lost, `None` never heard of (or forgotten).
pub(super) fn liveness(shared: &Shared, host: &str) -> Option<bool> {
    lock(&shared.peers).get(host).map(|p| !p.lost)
}
