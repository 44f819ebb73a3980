//! [`ClusterLink`]: the tasks that carry host state, the error bus, the
//! registry, the placements and calls between this host and NATS, and the
//! handle the daemon holds.
//!
//! Tasks, all on the caller's tokio runtime:
//! * **connection**: turns async-nats events into `Connection` events and
//!   the `connected` flag, and wakes the buckets' tasks after a reconnect;
//! * **heartbeat** and **states** (`peers.rs`): host state out and in,
//!   liveness and latency;
//! * **errors**: publishes this host's error reports and receives peers';
//! * **registry** (`registry.rs`) and **placements** (`placements.rs`):
//!   the KV buckets and what the core loop learns of them;
//! * **calls** (`calls/`), when the daemon hands the link a [`CallPlane`]:
//!   calls between this host's executors and other hosts' agents.
//!
//! The connection is made as this host's identity (`auth.rs`), with an
//! inbox prefix of its own (`pinwheel.<cluster>.inbox.<host>`): replies,
//! JetStream's answers and the watches' deliveries all arrive under it,
//! which the server lets only this host subscribe to.
//!
//! Shared state sits behind `std::sync::Mutex`es held for a few map
//! operations, never across an `.await`. Events to the core loop go through
//! a bounded channel with `try_send`: a core loop that stops draining costs
//! dropped events (counted), never a stalled link.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_nats::{Client, ConnectOptions, Event};
use futures_util::StreamExt;
use rkyv::util::AlignedVec;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::calls::{self, CallPlane};
use super::peers::{self, PeerLink, SENT_KEPT};
use super::proto::{self, AgentRecord, HostState};
use super::{ClusterConfig, ClusterError, ClusterEvent, auth, placements, registry};
use crate::gpu::sched::WriteRequest;
use crate::runtime::remote::CallStats;

/// Error reports waiting to go out.
const OUTBOX: usize = 256;
/// At most one warning about bad frames per this long.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The channels between the core loop and the link.
#[derive(Debug)]
pub struct LinkIo {
    /// The core loop's latest host state.
    pub source: watch::Receiver<HostState>,
    /// Where the link's events go.
    pub events: mpsc::Sender<ClusterEvent>,
    /// The scheduler's writes to the placements bucket.
    pub writes: mpsc::Receiver<WriteRequest>,
}

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

/// State the tasks share.
pub(super) struct Shared {
    pub config: ClusterConfig,
    pub client: Client,
    pub stats: LinkStats,
    connected: AtomicBool,
    pub peers: Mutex<BTreeMap<String, PeerLink>>,
    pub sent: Mutex<VecDeque<(u64, Instant)>>,
    /// Woken on a connection change and when an own record is added.
    pub reconnected: Notify,
    /// Woken on a connection change, for the placements watch.
    pub placements_restart: Notify,
    /// Woken when a peer is lost or comes up, for the call plane.
    pub peers_changed: Notify,
    pub registry: Mutex<BTreeMap<String, AgentRecord>>,
    pub own_records: Mutex<BTreeMap<String, AgentRecord>>,
    events: mpsc::Sender<ClusterEvent>,
}

impl Shared {
    /// Hands the core loop an event; false (and counted) when its channel
    /// is full.
    pub fn emit(&self, event: ClusterEvent) -> bool {
        match self.events.try_send(event) {
            Err(mpsc::error::TrySendError::Full(_)) => {
                LinkStats::bump(&self.stats.dropped_events);
                false
            }
            _ => true,
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
    calls: Option<Arc<CallStats>>,
    tasks: Vec<JoinHandle<()>>,
}

impl ClusterLink {
    /// Connects (in the background: NATS down at start is the ordinary
    /// disconnected state) and starts the link's tasks on the current tokio
    /// runtime; with a `calls` plane, carries the executors' calls to and
    /// from other hosts too.
    pub async fn start(
        config: ClusterConfig,
        io: LinkIo,
        calls: Option<CallPlane>,
    ) -> Result<ClusterLink, ClusterError> {
        let (conn_tx, conn_rx) = mpsc::channel(64);
        let client = connect(&config, conn_tx).await?;
        let states = subscribe(&client, config.all_states_subject()).await?;
        let errors = subscribe(&client, config.all_errors_subject()).await?;
        let incoming = match &calls {
            Some(_) => Some(subscribe(&client, config.incoming_calls_subject()).await?),
            None => None,
        };
        let shared = Arc::new(Shared {
            config,
            client,
            stats: LinkStats::default(),
            connected: AtomicBool::new(false),
            peers: Mutex::new(BTreeMap::new()),
            sent: Mutex::new(VecDeque::with_capacity(SENT_KEPT)),
            reconnected: Notify::new(),
            placements_restart: Notify::new(),
            peers_changed: Notify::new(),
            registry: Mutex::new(BTreeMap::new()),
            own_records: Mutex::new(BTreeMap::new()),
            events: io.events,
        });
        let (outbox, outbox_rx) = mpsc::channel(OUTBOX);
        let mut tasks = vec![
            tokio::spawn(connection_task(shared.clone(), conn_rx)),
            tokio::spawn(peers::heartbeat_task(shared.clone(), io.source)),
            tokio::spawn(peers::states_task(shared.clone(), states)),
            tokio::spawn(errors_in_task(shared.clone(), errors)),
            tokio::spawn(errors_out_task(shared.clone(), outbox_rx)),
            tokio::spawn(registry::task(shared.clone())),
            tokio::spawn(placements::task(shared.clone(), io.writes)),
        ];
        let call_stats = match (calls, incoming) {
            (Some(plane), Some(incoming)) => {
                let stats = plane.stats();
                tasks.push(tokio::spawn(calls::task(shared.clone(), plane, incoming)));
                Some(stats)
            }
            _ => None,
        };
        info!(
            cluster = shared.config.cluster(),
            host = shared.config.host(),
            url = shared.config.nats_url(),
            "cluster link started"
        );
        Ok(ClusterLink {
            shared,
            outbox,
            calls: call_stats,
            tasks,
        })
    }

    /// The call plane's counters, if the link carries calls.
    pub fn call_stats(&self) -> Option<&Arc<CallStats>> {
        self.calls.as_ref()
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
    let options = config.credentials.apply(ConnectOptions::new());
    let options = auth::apply_tls(
        options,
        config.nats_url(),
        config.tls_ca.as_deref(),
        config.tls_client.as_ref(),
    );
    options
        .name(format!("pinwheel {}", config.host()))
        .custom_inbox_prefix(config.inbox_prefix())
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
        .connect(servers(config.nats_url())?)
        .await
        .map_err(|e| ClusterError::Connect {
            url: config.nats_url().to_owned(),
            reason: e.to_string(),
        })
}

/// The servers of a URL list (`nats://a:4222,nats://b:4222`): async-nats
/// takes one URL a string, or a list.
fn servers(urls: &str) -> Result<Vec<async_nats::ServerAddr>, ClusterError> {
    urls.split(',')
        .map(|url| {
            url.trim()
                .parse()
                .map_err(|e: std::io::Error| ClusterError::Connect {
                    url: url.trim().to_owned(),
                    reason: e.to_string(),
                })
        })
        .collect()
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
    // Either way the buckets start over: on a new connection, or waiting
    // for one.
    shared.reconnected.notify_one();
    shared.placements_restart.notify_one();
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

async fn errors_out_task(shared: Arc<Shared>, mut outbox: mpsc::Receiver<Vec<u8>>) {
    while let Some(frame) = outbox.recv().await {
        let subject = shared.config.errors_subject();
        if let Err(e) = shared.client.publish(subject, frame.into()).await {
            nats_error(&shared, "publish error report", &e.to_string());
        }
    }
}

async fn errors_in_task(shared: Arc<Shared>, mut sub: async_nats::Subscriber) {
    let mut aligned = AlignedVec::new();
    let mut last_warn = None;
    while let Some(msg) = sub.next().await {
        // pinwheel.<cluster>.errors.<host>: the host is token 3, and only
        // that host may publish there.
        let host = msg.subject.split('.').nth(3).unwrap_or("").to_owned();
        match proto::decode_error(&host, &msg.payload, &mut aligned) {
            Ok(report) => {
                shared.emit(ClusterEvent::Error(report));
            }
            Err(problem) => bad_frame(&shared, &mut last_warn, &host, &problem),
        }
    }
}
