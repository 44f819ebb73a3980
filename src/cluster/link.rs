//! [`ClusterLink`]: the tasks that carry host state, the error bus and the
//! registry between this host and NATS, and the handle the daemon holds.
//!
//! Tasks, all on the caller's tokio runtime:
//! * **connection**: turns async-nats events into `Connection` events and
//!   the `connected` flag, and wakes the registry after a reconnect;
//! * **heartbeat**: every `heartbeat_ms` (and when the core loop's state
//!   changes, at most five times a heartbeat) publishes the host state,
//!   skipping beats while disconnected, and declares silent peers lost;
//! * **states**: receives peers' states, checks them, measures latency;
//!   keeps at most [`MAX_PEERS`] peers (a new one past that is a bad frame);
//! * **errors**: publishes this host's error reports and receives peers';
//! * **registry** (`registry.rs`): the KV bucket and its local copy.
//!
//! Shared state sits behind `std::sync::Mutex`es held for a few map
//! operations, never across an `.await`. Events to the core loop go through
//! a bounded channel with `try_send`: a core loop that stops draining costs
//! dropped events (counted), never a stalled link.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_nats::{Client, ConnectOptions, Event, HeaderMap};
use futures_util::StreamExt;
use rkyv::util::AlignedVec;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::proto::{self, Ack, AgentRecord, HostState};
use super::registry;
use super::{ClusterConfig, ClusterError, ClusterEvent};
use crate::gpu::sched::MAX_PEERS;

/// The NATS header naming the host that published an error report.
const HOST_HEADER: &str = "Pinwheel-Host";
/// Error reports waiting to go out.
const OUTBOX: usize = 256;
/// This host's heartbeats remembered for round-trip measurement.
const SENT_KEPT: usize = 64;
/// At most one warning about bad frames per this long.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Counters of one link. Read with [`ClusterLink::stats`].
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Heartbeats published.
    pub published: AtomicU64,
    /// Heartbeats skipped while disconnected.
    pub skipped: AtomicU64,
    /// Peer heartbeats accepted.
    pub received: AtomicU64,
    /// Frames refused by validation (state, error and registry).
    pub bad_frames: AtomicU64,
    /// Heartbeats older than one already seen from the same peer.
    pub stale_frames: AtomicU64,
    /// Events dropped because the core loop's channel was full.
    pub dropped_events: AtomicU64,
    /// Publishes or registry writes NATS refused or timed out.
    pub nats_errors: AtomicU64,
}

impl LinkStats {
    pub(super) fn bump(counter: &AtomicU64) {
        // SYNC: Relaxed: a statistics counter; no other memory is published
        // through it, and readers only need an eventually exact count.
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The value of a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        // SYNC: Relaxed: pairs with the Relaxed increments in `bump`; a
        // reading may lag by a few increments, which counters allow.
        counter.load(Ordering::Relaxed)
    }
}

/// What one peer's link looks like from here.
#[derive(Debug)]
struct PeerLink {
    incarnation: u64,
    seq: u64,
    last_seen: Instant,
    lost: bool,
    latency_us: u64,
}

/// State the tasks share.
pub(super) struct Shared {
    pub config: ClusterConfig,
    pub client: Client,
    pub stats: LinkStats,
    connected: AtomicBool,
    peers: Mutex<BTreeMap<String, PeerLink>>,
    sent: Mutex<VecDeque<(u64, Instant)>>,
    pub reconnected: Notify,
    pub registry: Mutex<BTreeMap<String, AgentRecord>>,
    pub own_records: Mutex<BTreeMap<String, AgentRecord>>,
    events: mpsc::Sender<ClusterEvent>,
}

impl Shared {
    pub fn emit(&self, event: ClusterEvent) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.events.try_send(event) {
            LinkStats::bump(&self.stats.dropped_events);
        }
    }

    pub fn is_connected(&self) -> bool {
        // SYNC: Acquire pairs with the Release store in `set_connected`; the
        // flag guards no other data, Acquire only keeps readers current.
        self.connected.load(Ordering::Acquire)
    }

    fn set_connected(&self, up: bool) {
        // SYNC: Release pairs with the Acquire load in `is_connected`.
        self.connected.store(up, Ordering::Release);
    }
}

/// Locks a mutex; a task that panicked holding it aborted the process
/// (`panic = "abort"`), so poisoning cannot be observed.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A running cluster link. Dropping it stops its tasks.
pub struct ClusterLink {
    shared: Arc<Shared>,
    outbox: mpsc::Sender<Vec<u8>>,
    tasks: Vec<JoinHandle<()>>,
}

impl ClusterLink {
    /// Connects (in the background: NATS down at start is the ordinary
    /// disconnected state) and starts the link's tasks on the current tokio
    /// runtime. `source` is the core loop's latest host state; `events`
    /// receives what the link learns.
    pub async fn start(
        config: ClusterConfig,
        source: watch::Receiver<HostState>,
        events: mpsc::Sender<ClusterEvent>,
    ) -> Result<ClusterLink, ClusterError> {
        let (conn_tx, conn_rx) = mpsc::channel(64);
        let client = connect(&config, conn_tx).await?;
        let states = subscribe(&client, config.all_states_subject()).await?;
        let errors = subscribe(&client, config.errors_subject()).await?;
        let shared = Arc::new(Shared {
            config,
            client,
            stats: LinkStats::default(),
            connected: AtomicBool::new(false),
            peers: Mutex::new(BTreeMap::new()),
            sent: Mutex::new(VecDeque::with_capacity(SENT_KEPT)),
            reconnected: Notify::new(),
            registry: Mutex::new(BTreeMap::new()),
            own_records: Mutex::new(BTreeMap::new()),
            events,
        });
        let (outbox, outbox_rx) = mpsc::channel(OUTBOX);
        let tasks = vec![
            tokio::spawn(connection_task(shared.clone(), conn_rx)),
            tokio::spawn(heartbeat_task(shared.clone(), source)),
            tokio::spawn(states_task(shared.clone(), states)),
            tokio::spawn(errors_in_task(shared.clone(), errors)),
            tokio::spawn(errors_out_task(shared.clone(), outbox_rx)),
            tokio::spawn(registry::task(shared.clone())),
        ];
        info!(
            cluster = shared.config.cluster(),
            host = shared.config.host(),
            url = shared.config.nats_url(),
            "cluster link started"
        );
        Ok(ClusterLink {
            shared,
            outbox,
            tasks,
        })
    }

    /// Whether NATS is connected now. While it is not, this host is
    /// degraded: it keeps serving local work and hears no peers.
    pub fn is_connected(&self) -> bool {
        self.shared.is_connected()
    }

    /// The link's counters.
    pub fn stats(&self) -> &LinkStats {
        &self.shared.stats
    }

    /// Publishes an error report on the cluster's error bus. Never waits:
    /// the report is queued, and dropped with [`ClusterError::Busy`] if the
    /// queue is full. While NATS is down, async-nats holds it until the
    /// connection returns.
    pub fn report_error(&self, agent: u32, code: u32, message: &str) -> Result<(), ClusterError> {
        let frame =
            proto::encode_error(agent, code, message).map_err(|problem| ClusterError::Encode {
                what: "error report",
                problem,
            })?;
        self.outbox
            .try_send(frame)
            .map_err(|_| ClusterError::Busy { capacity: OUTBOX })
    }

    /// Adds or updates one of this host's agents in the registry. Never
    /// waits: the registry task writes it now if NATS is up, and again
    /// after every reconnect.
    pub fn register(&self, record: AgentRecord) -> Result<(), ClusterError> {
        registry::check_own(&self.shared.config, &record)?;
        lock(&self.shared.own_records).insert(record.key(), record);
        self.shared.reconnected.notify_one();
        Ok(())
    }

    /// Every registry record this host knows, from its local copy.
    pub fn registry(&self) -> Vec<AgentRecord> {
        lock(&self.shared.registry).values().cloned().collect()
    }

    /// The registry records of agents named `agent`, on any host.
    pub fn lookup(&self, agent: &str) -> Vec<AgentRecord> {
        lock(&self.shared.registry)
            .values()
            .filter(|r| r.agent == agent)
            .cloned()
            .collect()
    }

    /// Stops the tasks and flushes what async-nats still holds, waiting at
    /// most one heartbeat for it.
    pub async fn stop(mut self) {
        self.abort();
        let wait = Duration::from_millis(self.shared.config.heartbeat_ms());
        let _ = tokio::time::timeout(wait, self.shared.client.flush()).await;
    }

    fn abort(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }
}

impl Drop for ClusterLink {
    fn drop(&mut self) {
        self.abort();
    }
}

async fn connect(
    config: &ClusterConfig,
    events: mpsc::Sender<Event>,
) -> Result<Client, ClusterError> {
    let heartbeat = Duration::from_millis(config.heartbeat_ms());
    ConnectOptions::new()
        .name(format!("pinwheel {}", config.host()))
        .no_echo()
        .retry_on_initial_connect()
        .max_reconnects(None)
        // Reconnect soon: a restarted server should be found within about
        // a second, not after async-nats's default back-off of up to 4 s.
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((100 * attempts as u64).min(1000))
        })
        .connection_timeout(Duration::from_secs(2))
        // A server that vanishes without closing the socket is noticed
        // after two unanswered pings.
        .ping_interval(heartbeat * config.missed_heartbeats().max(2))
        .event_callback(move |event| {
            let events = events.clone();
            async move {
                let _ = events.try_send(event);
            }
        })
        .connect(config.nats_url())
        .await
        .map_err(|e| ClusterError::Connect {
            url: config.nats_url().to_owned(),
            reason: e.to_string(),
        })
}

async fn subscribe(
    client: &Client,
    subject: String,
) -> Result<async_nats::Subscriber, ClusterError> {
    client
        .subscribe(subject.clone())
        .await
        .map_err(|e| ClusterError::Subscribe {
            subject,
            reason: e.to_string(),
        })
}

async fn connection_task(shared: Arc<Shared>, mut events: mpsc::Receiver<Event>) {
    if shared.client.connection_state() == async_nats::connection::State::Connected {
        set_connection(&shared, true);
    }
    while let Some(event) = events.recv().await {
        match event {
            Event::Connected => set_connection(&shared, true),
            Event::Disconnected | Event::Closed => set_connection(&shared, false),
            Event::SlowConsumer(sid) => warn!(sid, "nats slow consumer, messages dropped"),
            Event::LameDuckMode => warn!("nats server entering lame duck mode"),
            other => debug!(event = %other, "nats event"),
        }
    }
}

fn set_connection(shared: &Shared, up: bool) {
    if shared.is_connected() == up {
        return;
    }
    shared.set_connected(up);
    // Either way the registry starts over: on a new connection, or waiting
    // for one.
    shared.reconnected.notify_one();
    if up {
        info!(url = shared.config.nats_url(), "cluster link connected");
    } else {
        warn!(
            url = shared.config.nats_url(),
            "cluster link disconnected, degraded"
        );
    }
    shared.emit(ClusterEvent::Connection { connected: up });
}

async fn heartbeat_task(shared: Arc<Shared>, mut source: watch::Receiver<HostState>) {
    let period = Duration::from_millis(shared.config.heartbeat_ms());
    let min_gap = period / 5;
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

fn detect_lost(shared: &Shared) {
    let lost_after =
        Duration::from_millis(shared.config.heartbeat_ms()) * shared.config.missed_heartbeats();
    let mut lost = Vec::new();
    for (host, peer) in lock(&shared.peers).iter_mut() {
        if !peer.lost && peer.last_seen.elapsed() > lost_after {
            peer.lost = true;
            lost.push(host.clone());
        }
    }
    for host in lost {
        warn!(peer = %host, "cluster peer lost");
        shared.emit(ClusterEvent::PeerLost { host });
    }
}

pub(super) fn nats_error(shared: &Shared, what: &'static str, reason: &str) {
    LinkStats::bump(&shared.stats.nats_errors);
    debug!(what, reason, "nats operation failed");
}

/// Counts a refused frame and warns, at most once per [`WARN_EVERY`].
pub(super) fn bad_frame(
    shared: &Shared,
    last_warn: &mut Option<Instant>,
    from: &str,
    problem: &proto::FrameProblem,
) {
    LinkStats::bump(&shared.stats.bad_frames);
    if last_warn.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
        *last_warn = Some(Instant::now());
        let total = LinkStats::get(&shared.stats.bad_frames);
        warn!(from, %problem, total, "bad cluster frame dropped");
    }
}

async fn states_task(shared: Arc<Shared>, mut sub: async_nats::Subscriber) {
    let mut aligned = AlignedVec::new();
    let mut last_warn = None;
    while let Some(msg) = sub.next().await {
        // pinwheel.<cluster>.host.<host>.state: the host is token 3.
        let from = msg.subject.split('.').nth(3).unwrap_or("").to_owned();
        match proto::decode_state(&msg.payload, &mut aligned) {
            Ok(state) if state.host == from => {
                if let Err(problem) = accept_state(&shared, state) {
                    bad_frame(&shared, &mut last_warn, &from, &problem);
                }
            }
            Ok(state) => {
                let problem = proto::FrameProblem::Name {
                    what: "host",
                    name: state.host,
                    problem: "differs from the host in the subject",
                };
                bad_frame(&shared, &mut last_warn, &from, &problem);
            }
            Err(problem) => bad_frame(&shared, &mut last_warn, &from, &problem),
        }
    }
}

/// Takes in a checked state; refuses a new peer past [`MAX_PEERS`].
fn accept_state(shared: &Shared, state: HostState) -> Result<(), proto::FrameProblem> {
    let now = Instant::now();
    let rtt = own_ack(shared, &state, now);
    let mut peers = lock(&shared.peers);
    let fresh = |p: &PeerLink| (state.incarnation, state.seq) > (p.incarnation, p.seq);
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

async fn errors_out_task(shared: Arc<Shared>, mut outbox: mpsc::Receiver<Vec<u8>>) {
    let mut headers = HeaderMap::new();
    headers.insert(HOST_HEADER, shared.config.host());
    while let Some(frame) = outbox.recv().await {
        let subject = shared.config.errors_subject();
        let publish = shared
            .client
            .publish_with_headers(subject, headers.clone(), frame.into());
        if let Err(e) = publish.await {
            nats_error(&shared, "publish error report", &e.to_string());
        }
    }
}

async fn errors_in_task(shared: Arc<Shared>, mut sub: async_nats::Subscriber) {
    let mut aligned = AlignedVec::new();
    let mut last_warn = None;
    while let Some(msg) = sub.next().await {
        let host = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(HOST_HEADER))
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        match proto::decode_error(&host, &msg.payload, &mut aligned) {
            Ok(report) => shared.emit(ClusterEvent::Error(report)),
            Err(problem) => bad_frame(&shared, &mut last_warn, &host, &problem),
        }
    }
}
