//! [`ClusterSide`]: the GPU scheduler as the core loop runs it. Once per
//! tick it takes in what the link heard and this host's room from the VRAM
//! optimizer ([`GpuSide`]), ticks the scheduler, carries its decisions out
//! through the optimizer (a model placed here is loaded there, pinned if
//! it is pinned; one yielded is unpinned, so the optimizer may evict it),
//! keeps the cluster's health reasons, hands the link this host's state
//! and publishes `/v1/cluster`. Between ticks it answers the admin API's
//! place, pin and unpin commands (`commands.rs`).
//!
//! The scheduler's placement store is the link's KV bucket in a cluster:
//! its writes go to the link, its entries and the answers come back as
//! events. On a single host it is a [`MemoryKv`] here, written at once.
//!
//! Time is the core loop's monotonic clock, as ms since the side started:
//! the scheduler's clock for heartbeats and timeouts.
//!
//! Invariants: nothing here blocks (events are `try_recv`ed, the host
//! state is replaced in a watch), and at most [`EVENTS_PER_TICK`] events
//! are taken in one tick, so a burst cannot stretch a tick.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::{NAME_CLASH, PEER_LOST, render};
use crate::cluster::{
    AgentHealth, AgentRecord, ClusterEvent, ErrorEvent, Health, HostState, MAX_REGISTRY_ENTRIES,
    report_from_state, state_from_report,
};
use crate::daemon::gpus::GpuSide;
use crate::gpu::sched::{
    Decision, GpuScheduler, HostState as SchedHostState, MemoryKv, SchedError, WriteRequest,
};
use crate::observe::api::{AgentState, ClusterResponse};
use crate::observe::health::Health as DaemonHealth;
use crate::observe::view::DaemonView;

/// Events taken from the link in one tick, at most.
const EVENTS_PER_TICK: usize = 256;
/// How often `/v1/cluster` is refreshed when nothing happened (the ages
/// of the last heartbeats move).
const VIEW_EVERY: Duration = Duration::from_millis(100);
/// How often the agents' health is read from the live view.
const AGENTS_EVERY: Duration = Duration::from_secs(1);
/// At most one log line about the error bus per this long.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

/// The core loop's ends of the link's channels.
pub(super) struct LinkEnds {
    /// This host's state, for the link to publish.
    pub state: watch::Sender<HostState>,
    /// What the link heard.
    pub events: mpsc::Receiver<ClusterEvent>,
    /// The scheduler's writes to the placements bucket.
    pub writes: mpsc::Sender<WriteRequest>,
    /// The NATS server, for health details.
    pub url: String,
}

/// The side's periods.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timing {
    /// How often this host's state is handed to the link, which publishes
    /// it when it changed and on each of its own heartbeats.
    pub state_every: Duration,
    /// How long a silent peer stays up, ms; also how long a name clash
    /// stays raised after the last clashing heartbeat.
    pub lost_after_ms: u64,
}

/// The GPU scheduler and what the core loop keeps around it.
pub struct ClusterSide {
    pub(super) sched: GpuScheduler,
    cluster: Option<String>,
    pub(super) link: Option<LinkEnds>,
    /// The placement store of a single host.
    pub(super) kv: Option<MemoryKv>,
    connected: bool,
    health: Arc<DaemonHealth>,
    started: Instant,
    timing: Timing,
    pub(super) next_state: Instant,
    next_view: Instant,
    agents: Vec<AgentHealth>,
    next_agents: Instant,
    registry: BTreeMap<String, AgentRecord>,
    clash_until_ms: Option<u64>,
    errors_heard: u64,
    last_error_log: Option<Instant>,
    pub(super) decisions: Vec<Decision>,
    /// Whether decisions were carried out since the last `after_change`.
    pub(super) decided: bool,
}

impl std::fmt::Debug for ClusterSide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSide")
            .field("host", self.sched.host())
            .field("cluster", &self.cluster)
            .field("connected", &self.connected)
            .finish_non_exhaustive()
    }
}

impl ClusterSide {
    /// A side around `sched`; `cluster` (its name and the link's ends) is
    /// `None` on a single host.
    pub(super) fn new(
        mut sched: GpuScheduler,
        cluster: Option<(String, LinkEnds)>,
        timing: Timing,
        health: Arc<DaemonHealth>,
    ) -> Self {
        let now = Instant::now();
        let (cluster, link) = cluster.unzip();
        // Not connected until the link says so.
        sched.set_link_up(link.is_none());
        let kv = link.is_none().then(MemoryKv::new);
        let side = ClusterSide {
            sched,
            cluster,
            link,
            kv,
            connected: false,
            health,
            started: now,
            timing,
            next_state: now,
            next_view: now,
            agents: Vec::new(),
            next_agents: now,
            registry: BTreeMap::new(),
            clash_until_ms: None,
            errors_heard: 0,
            last_error_log: None,
            decisions: Vec::new(),
            decided: false,
        };
        side.note_link();
        side
    }

    /// One tick of the core loop at `now`, after the optimizer's.
    pub fn tick(&mut self, now: Instant, view: &DaemonView, gpus: &mut GpuSide) {
        let now_ms = self.ms(now);
        let heard = self.take_events(now_ms);
        if now >= self.next_agents {
            self.agents = agent_health(view);
            self.next_agents = now + AGENTS_EVERY;
        }
        self.sched.set_local_gpus(&gpus.room());
        self.sched.tick(now_ms, &mut self.decisions);
        self.expire_clash(now_ms);
        self.carry_out(now_ms, gpus);
        self.after_change(now, view, heard);
    }

    /// Hands the link the host state and refreshes `/v1/cluster` if
    /// something changed (`changed`, or the scheduler decided something) or
    /// their periods ran out.
    pub(super) fn after_change(&mut self, now: Instant, view: &DaemonView, changed: bool) {
        let decided = std::mem::take(&mut self.decided);
        if decided || now >= self.next_state {
            self.hand_state();
            self.next_state = now + self.timing.state_every;
        }
        if decided || changed || now >= self.next_view {
            let json = self.json(self.ms(now));
            view.set_cluster(json);
            self.next_view = now + VIEW_EVERY;
        }
    }

    fn take_events(&mut self, now_ms: u64) -> bool {
        let mut events = Vec::new();
        if let Some(link) = &mut self.link {
            while events.len() < EVENTS_PER_TICK {
                match link.events.try_recv() {
                    Ok(event) => events.push(event),
                    Err(_) => break,
                }
            }
        }
        let heard = !events.is_empty();
        for event in events {
            match event {
                ClusterEvent::Connection { connected } => {
                    self.connected = connected;
                    self.sched.set_link_up(connected);
                    self.note_link();
                }
                ClusterEvent::PeerState { state, latency_us } => {
                    self.observe(&state, latency_us, now_ms);
                }
                // The scheduler tells up and lost by its own clock; the
                // link has logged both.
                ClusterEvent::PeerUp { .. } | ClusterEvent::PeerLost { .. } => {}
                ClusterEvent::Error(report) => self.heard_error(&report),
                ClusterEvent::Placement {
                    slot,
                    revision,
                    owner,
                } => {
                    if let Err(err) = self.sched.saw(slot, revision, owner, now_ms) {
                        debug!(error = %err, "placement not taken");
                    }
                }
                ClusterEvent::PlacementsSynced(synced) => self.sched.set_synced(synced, now_ms),
                ClusterEvent::Written { slot, id, outcome } => {
                    self.sched
                        .written(&slot, id, outcome, now_ms, &mut self.decisions);
                }
                ClusterEvent::Agent(record) => {
                    let key = record.key();
                    // The link bounds its copy, but deletions do not
                    // reach this one: bound it too.
                    if self.registry.len() < MAX_REGISTRY_ENTRIES
                        || self.registry.contains_key(&key)
                    {
                        self.registry.insert(key, record);
                    } else {
                        debug!(agent = %record.agent, "registry full, record dropped");
                    }
                }
            }
        }
        heard
    }

    fn observe(&mut self, state: &HostState, latency_us: u64, now_ms: u64) {
        let report = report_from_state(state);
        match self
            .sched
            .observe(report, latency_us, now_ms, &mut self.decisions)
        {
            Ok(()) => {}
            Err(err @ SchedError::SameName { .. }) => {
                if self.clash_until_ms.is_none() {
                    warn!(error = %err, "another daemon uses this host's name");
                }
                self.health.raise(NAME_CLASH, err.to_string());
                self.clash_until_ms = Some(now_ms + self.timing.lost_after_ms);
            }
            Err(err) => debug!(error = %err, "peer state not taken"),
        }
    }

    fn expire_clash(&mut self, now_ms: u64) {
        if self.clash_until_ms.is_some_and(|until| now_ms >= until) {
            self.clash_until_ms = None;
            self.health.clear(NAME_CLASH);
        }
    }

    fn heard_error(&mut self, report: &ErrorEvent) {
        self.errors_heard += 1;
        if self
            .last_error_log
            .is_none_or(|last| last.elapsed() >= ERROR_LOG_EVERY)
        {
            self.last_error_log = Some(Instant::now());
            info!(
                host = %report.host,
                agent = report.agent,
                code = report.code,
                message = %report.message,
                total = self.errors_heard,
                "error reported on the cluster bus"
            );
        }
    }

    fn note_link(&self) {
        let Some(link) = &self.link else { return };
        if self.connected {
            self.health.clear(super::LINK_DOWN);
        } else {
            self.health.raise(
                super::LINK_DOWN,
                format!(
                    "no connection to NATS at {}: this host serves its own agents and keeps its models, sees no peers, and reconnects on its own",
                    link.url
                ),
            );
        }
    }

    pub(super) fn note_peers(&self) {
        let lost: Vec<String> = self
            .sched
            .hosts()
            .into_iter()
            .filter(|h| h.state == SchedHostState::Lost)
            .map(|h| h.host.0)
            .collect();
        if lost.is_empty() {
            self.health.clear(PEER_LOST);
        } else {
            self.health.raise(
                PEER_LOST,
                format!(
                    "host(s) {} missed their heartbeats; their pinned models are placed again on live hosts",
                    lost.join(", ")
                ),
            );
        }
    }

    fn hand_state(&self) {
        let Some(link) = &self.link else { return };
        let mut state = state_from_report(&self.sched.local_report());
        state.agents.clone_from(&self.agents);
        // The link stamps `seq` and `acks` on its own copy, so the watched
        // value changes only when the scheduler's state does.
        link.state.send_if_modified(|current| {
            let changed = *current != state;
            if changed {
                *current = state;
            }
            changed
        });
    }

    fn json(&self, now_ms: u64) -> ClusterResponse {
        render::cluster(
            self.cluster.as_deref(),
            &self.sched.host().0,
            &self.sched.hosts(),
            &self.sched.placements(),
            self.registry.values(),
            now_ms,
        )
    }

    pub(super) fn ms(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.started).as_millis()).unwrap_or(u64::MAX)
    }
}

/// This host's agents' health, from the live view. The view names an
/// agent `Name@host` where manifests of several hosts share the name; the
/// cluster knows the host already, and names may not hold `@`.
fn agent_health(view: &DaemonView) -> Vec<AgentHealth> {
    view.live()
        .agents
        .into_iter()
        .map(|a| AgentHealth {
            health: match a.state {
                AgentState::Up | AgentState::Running | AgentState::Attached => Health::Healthy,
                AgentState::Isolated | AgentState::Failed => Health::Unhealthy,
                AgentState::Detached | AgentState::Exited | AgentState::Stopping => Health::Stopped,
                AgentState::Starting | AgentState::Backoff => Health::Starting,
            },
            agent: a.name.split('@').next().unwrap_or_default().to_owned(),
        })
        .collect()
}
