//! The registry as an agent of the mesh: what the daemon runs for a
//! manifest entry with `native = "registry"`.
//!
//! Every agent sends each registry a heartbeat a second (see
//! [`crate::agents::mesh`]). The first heartbeat from an id registers it,
//! with the name, host, role and planned CPU the daemon's directory gives
//! for that id; later ones mark it heard from, and re-register it if the
//! plan moved it. Requests: [`METHOD_LOOKUP`] finds an agent by name (the
//! body) and answers its id, CPU and health; the seed's discovery actions
//! (`register_agent`, `get_agent_endpoint`, `health_check`, from legacy
//! clients through the gateway) are answered from the host's legacy book
//! (see `legacy.rs`); [`METHOD_WORK`] is the seed's "context" call and
//! answers how many agents are registered and up, after making the
//! manifest's calls (SystemDigitalTwin asks MemoryOrchestratorService@pc2
//! for context), as a synthetic agent makes them: in turn, with the
//! request's trace and within its deadline; the first failed call's status
//! is the answer's. Any other method is answered
//! [`STATUS_UNKNOWN_METHOD`].
//!
//! Snapshot. With a state directory, the registry loads
//! `<dir>/<agent>.registry.json` when it starts, before it serves anything,
//! so a restarted daemon can answer lookups at once (entries stay stale
//! until their agents are heard from again). Changes are saved a moment
//! after they happen and once more at shutdown: encoded on the executor,
//! written and fsynced on glommio's blocking thread pool so a slow disk
//! never stalls the executor. A snapshot that cannot be read is reported
//! and the registry starts empty: discovery degrades, the daemon runs.

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tracing::warn;

use super::legacy;
use super::{Health, Record, Registry, RegistryConfig, write_snapshot};
use crate::agents::protocol::{
    METHOD_GET_AGENT_ENDPOINT, METHOD_HEALTH_CHECK, METHOD_LOOKUP, METHOD_REGISTER_AGENT,
    METHOD_WORK, STATUS_NOT_FOUND, Trace,
};
use crate::agents::synthetic::call_all;
use crate::runtime::RuntimeError;
use crate::runtime::agent::{Agent, Message};
use crate::runtime::ctx::{Ctx, now_ns};
use crate::runtime::legacy::LegacyBook;
use crate::runtime::node::{STATUS_OK, STATUS_UNKNOWN_METHOD};
use pinwheel_ipc::wire::{AgentId, PayloadKind, Priority};

/// How long a change waits before it is saved (changes come in bursts at
/// start-up).
pub const SAVE_DEBOUNCE: Duration = Duration::from_millis(200);
/// How often the registry checks whether a save is due.
const SAVE_CHECK: Duration = Duration::from_millis(100);
/// Room for agents beyond the directory (processes that attach later).
const SPARE_CAPACITY: usize = 64;

/// Who may register: for each id, its registry name and record.
pub type Directory = Arc<Vec<Option<(String, Record)>>>;

/// What a registry did, for the daemon's report.
#[derive(Debug, Default)]
pub struct RegistryCounters {
    /// Entries loaded from the snapshot at the last start.
    pub restored: AtomicU64,
    /// Entries at the end.
    pub entries: AtomicU64,
    /// Of those, heard from recently (up) at the end.
    pub up: AtomicU64,
    /// Snapshots written.
    pub saves: AtomicU64,
    /// Snapshots that could not be read or written.
    pub snapshot_errors: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    // SYNC: Relaxed; a report counter, read after the executors are joined.
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A registry agent.
#[derive(Debug)]
pub struct RegistryAgent {
    directory: Directory,
    snapshot: Option<PathBuf>,
    counters: Arc<RegistryCounters>,
    registry: RefCell<Registry>,
    saving: Cell<bool>,
    calls: Vec<AgentId>,
    priority: Priority,
    legacy: Arc<LegacyBook>,
    name: String,
}

impl RegistryAgent {
    /// A registry for the agents of `directory`, saving to `snapshot`.
    pub fn new(
        directory: Directory,
        snapshot: Option<PathBuf>,
        counters: Arc<RegistryCounters>,
    ) -> Self {
        let registry = RefCell::new(Registry::with_config(config(&directory)));
        Self {
            directory,
            snapshot,
            counters,
            registry,
            saving: Cell::new(false),
            calls: Vec::new(),
            priority: Priority::Normal,
            legacy: Arc::new(LegacyBook::default()),
            name: String::new(),
        }
    }

    /// The same registry, answering the seed's discovery actions from
    /// `book` as `name`.
    pub fn with_legacy(self, book: Arc<LegacyBook>, name: String) -> Self {
        Self {
            legacy: book,
            name,
            ..self
        }
    }

    /// The same registry, making `calls` (at `priority`) for each context
    /// request.
    pub fn with_calls(self, calls: Vec<AgentId>, priority: Priority) -> Self {
        Self {
            calls,
            priority,
            ..self
        }
    }

    /// Marks `from` heard from, registering it if it is new or moved.
    fn heard(&self, from: AgentId, now: u64) {
        let Some(Some((name, record))) = self.directory.get(from.0 as usize) else {
            return;
        };
        let mut registry = self.registry.borrow_mut();
        if registry.heartbeat_id(from, name, record, now) {
            return;
        }
        if let Err(err) = registry.register(name, record.clone(), now) {
            warn!(agent = %name, error = %err, "registry refused an agent");
        }
    }

    /// The answer to a lookup: id, CPU and health, or not found.
    fn lookup(&self, name: &[u8], now: u64) -> Option<[u8; 9]> {
        let name = std::str::from_utf8(name).ok()?;
        let registry = self.registry.borrow();
        let entry = registry.lookup(name)?;
        let health = match entry.health(now, registry.thresholds()) {
            Health::Up => 0,
            Health::Stale => 1,
            Health::Down => 2,
        };
        let mut out = [0; 9];
        out[..4].copy_from_slice(&entry.record().id.0.to_le_bytes());
        out[4..8].copy_from_slice(&entry.record().cpu.0.to_le_bytes());
        out[8] = health;
        Some(out)
    }

    /// Registered agents and those up, as the seed's context answer.
    fn census(&self, now: u64) -> (u32, u32) {
        self.registry.borrow().census(now)
    }

    /// Saves if a change is due (or, with `force`, if anything changed).
    async fn save(&self, force: bool) {
        let Some(path) = &self.snapshot else { return };
        let now = now_ns();
        let (bytes, generation) = {
            let registry = self.registry.borrow();
            let due = if force {
                registry.is_dirty()
            } else {
                registry.snapshot_due(now, SAVE_DEBOUNCE.as_nanos() as u64)
            };
            if !due || self.saving.get() {
                return;
            }
            (registry.snapshot_bytes(), registry.generation())
        };
        self.saving.set(true);
        let target = path.clone();
        let written = glommio::executor()
            .spawn_blocking(move || write_snapshot(&target, &bytes))
            .await;
        self.saving.set(false);
        match written {
            Ok(()) => {
                self.registry.borrow_mut().mark_saved(generation);
                bump(&self.counters.saves);
            }
            Err(err) => {
                bump(&self.counters.snapshot_errors);
                warn!(error = %err, "registry snapshot not saved; retrying on the next change");
            }
        }
    }
}

fn config(directory: &Directory) -> RegistryConfig {
    RegistryConfig::with_capacity(directory.len() + SPARE_CAPACITY)
}

impl Agent for RegistryAgent {
    async fn start(&self, _ctx: &Ctx) -> Result<(), RuntimeError> {
        let Some(path) = &self.snapshot else {
            return Ok(());
        };
        match Registry::load(path, config(&self.directory), now_ns()) {
            Ok(loaded) => {
                // SYNC: Relaxed; a report counter, read after the join.
                self.counters
                    .restored
                    .store(loaded.len() as u64, Ordering::Relaxed);
                *self.registry.borrow_mut() = loaded;
            }
            Err(err) => {
                bump(&self.counters.snapshot_errors);
                warn!(error = %err, "registry snapshot unreadable; starting empty");
            }
        }
        Ok(())
    }

    async fn handle(&self, ctx: &Ctx, msg: &Message) -> Result<(), RuntimeError> {
        let head = *msg.head();
        let now = ctx.now_ns();
        match head.kind {
            PayloadKind::Heartbeat => {
                self.heard(head.from, now);
                Ok(())
            }
            PayloadKind::Request if head.code == METHOD_LOOKUP => {
                let found = self.lookup(&msg.body(), now);
                match found {
                    Some(answer) => ctx.reply(msg, STATUS_OK, &answer).await,
                    None => ctx.reply(msg, STATUS_NOT_FOUND, &[]).await,
                }
            }
            PayloadKind::Request if head.code != METHOD_WORK => {
                let (entries, up) = self.census(now);
                let body = msg.body().to_vec();
                let (status, answer) = match head.code {
                    METHOD_REGISTER_AGENT => legacy::register(&self.legacy, &self.name, &body),
                    METHOD_GET_AGENT_ENDPOINT => legacy::endpoint(&self.legacy, &body),
                    METHOD_HEALTH_CHECK => legacy::health(&self.legacy, entries, up),
                    _ => (STATUS_UNKNOWN_METHOD, Vec::new()),
                };
                ctx.reply(msg, status, &answer).await
            }
            PayloadKind::Request => {
                self.heard(head.from, now);
                let status = if self.calls.is_empty() {
                    STATUS_OK
                } else {
                    let trace = Trace::decode(&msg.body())
                        .unwrap_or_else(|| Trace::new(head.sent_ns, false));
                    call_all(ctx, &self.calls, &trace, self.priority, head.deadline_ns).await
                };
                let (entries, up) = self.census(now);
                let mut answer = [0; 8];
                answer[..4].copy_from_slice(&entries.to_le_bytes());
                answer[4..].copy_from_slice(&up.to_le_bytes());
                ctx.reply(msg, status, &answer).await
            }
            _ => Ok(()),
        }
    }

    fn reset(&self) {
        *self.registry.borrow_mut() = Registry::with_config(config(&self.directory));
    }

    async fn run(&self, ctx: &Ctx) {
        while ctx.pause(SAVE_CHECK).await {
            self.save(false).await;
        }
        self.save(true).await;
        let (entries, up) = self.census(now_ns());
        // SYNC: Relaxed; report counters, read after the join.
        self.counters
            .entries
            .store(u64::from(entries), Ordering::Relaxed);
        // SYNC: as above.
        self.counters.up.store(u64::from(up), Ordering::Relaxed);
    }
}
