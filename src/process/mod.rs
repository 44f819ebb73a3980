//! Agent processes: pinwheel starts, pins, supervises and connects them
//! (kind `process`), or lets them attach (kind `external`), and carries
//! their messages between their rings and the runtime's router. A legacy
//! ZeroMQ agent with a `command` (kind `zmq`) is started, pinned and
//! supervised the same way but gets no rings: the legacy gateway reaches
//! it on its own socket, so it is up once started and never says hello.
//!
//! ```text
//!  control side (boot thread, then the core loop's tick)      data plane
//!  ProcessSide ── Managed ── Supervisor (pure restart policy)
//!      │             │── spawn (spawner thread: fork/exec setup, pidfd)
//!      │             │── cgroup leaf, credentials dir, log pipes
//!      │             └── link: hello, welcome, rings ──▶ ProcessSlot ──▶ ProcessBridge
//!      │── watch (io_uring multishot polls: pidfds, links, pipes)          (executor)
//!      └── attach socket (SO_PEERCRED) for external agents
//! ```
//!
//! * `supervisor`: restart policy (backoff, OTP intensity, states); pure.
//! * `spawn`: everything between fork and exec; the pidfd.
//! * `watch`: which descriptors are ready, once per tick.
//! * `cgroup`, `credentials`, `logs`: what an incarnation holds.
//! * `link`: the daemon's side of the link protocol; the method table.
//! * `uses`: an agent's GPU model uses, asked over its link and posted on
//!   the board's agent-process desk on its behalf.
//! * `attach`: the attach socket.
//! * `managed`, `side`: one agent's incarnations; all of them.
//! * `owed`: what a welcomed agent is sent each tick (use answers, drills).
//! * `slot`, `bridge`: the hand-over to the executor, and the mesh agent
//!   there that stands for the process.
//!
//! Drills (`pinwheel fault`, `--fault`) reach an agent process as they
//! reach a synthetic agent, through its word on the board; the control
//! side sends it on the link when it changes, and the SDK applies it
//! (slowed, failed or withheld replies). The bridge does not count the
//! deadlines a drilled agent misses as silence.
//!
//! Spawning happens on the control side only, through one spawner thread
//! that lives until every child is reaped: `PR_SET_PDEATHSIG` fires when
//! the *thread* that forked a child exits, so neither the boot thread's
//! nor the core loop's lifetime may decide it.

#[allow(unsafe_code)]
mod attach;
pub mod bridge;
mod cgroup;
mod credentials;
mod link;
mod logs;
mod managed;
mod owed;
mod side;
pub mod slot;
#[allow(unsafe_code)]
mod spawn;
pub mod supervisor;
mod uses;
#[allow(unsafe_code)]
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};

use nix::unistd::{Gid, Group, Uid, User};
use pinwheel_ipc::link::{Facts, Named};
use pinwheel_ipc::ring::{DataBell, RingConfig};
use pinwheel_ipc::wire::AgentId;
use tracing::warn;

pub use bridge::{BridgeSpec, ProcessBridge};
pub use link::MethodTable;
pub use side::ProcessSide;
use side::Resources;
pub use slot::ProcessSlot;
pub use spawn::nice_of;
pub use supervisor::{ExitReason, RestartPolicy, State, Supervisor};

use self::attach::AttachSocket;
use self::cgroup::Cgroups;
use self::managed::Managed;
use self::spawn::{Launch, Spawned};
use self::uses::ModelUses;
use crate::config::{AgentIndex, AgentKind, AgentSet, ProcessSpec};
pub use crate::observe::api::ProcessStatus;
use crate::observe::health::Health;
use crate::plan::Plan;
use crate::runtime::board::vram_class;
use crate::runtime::layout::{MAX_FRAME, RING_SLOTS};
use crate::runtime::routes::Routes;
use crate::topology::{CpuClass, Topology};

/// Errors of the process side.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// A child could not be started.
    #[error("agent {agent}: cannot start its process: {reason}")]
    Spawn {
        /// The agent.
        agent: String,
        /// Why.
        reason: String,
    },
    /// The spawner thread could not be started or is gone.
    #[error("the agent spawner thread: {reason}")]
    Spawner {
        /// Why.
        reason: String,
    },
}

/// Where the process side keeps its files, and what it may use.
#[derive(Debug, Clone)]
pub struct ProcessOptions {
    /// The run directory (`/run/pinwheel`): credentials live under it.
    pub run_dir: PathBuf,
    /// The attach socket (`<run_dir>/agent.sock`).
    pub attach_socket: PathBuf,
    /// The cgroup v2 root (`/sys/fs/cgroup`).
    pub cgroup_root: PathBuf,
    /// The native agents' method names and numbers, first in the table.
    pub builtin_methods: Vec<(&'static str, u16)>,
}

/// The bell and slot of every process and external agent, made before the
/// mesh so that its bridges share them with the control side.
#[derive(Debug, Clone, Default)]
pub struct Slots(pub Vec<(AgentId, Arc<ProcessSlot>)>);

impl Slots {
    /// A slot for each process or external agent of `agents`, and each
    /// `zmq` agent the daemon starts (its slot never gets rings).
    pub fn new(agents: &AgentSet) -> Result<Self, pinwheel_ipc::ring::RingError> {
        let mut slots = Vec::new();
        for (index, agent) in agents.iter() {
            let managed = match agent.kind() {
                AgentKind::Process | AgentKind::External => true,
                AgentKind::Zmq => agent.process().is_some(),
                AgentKind::Native(_) | AgentKind::Synthetic => false,
            };
            if managed {
                let slot = Arc::new(ProcessSlot::new(DataBell::new()?));
                slots.push((AgentId(index.0 as u32), slot));
            }
        }
        Ok(Self(slots))
    }

    /// The slot of `id`.
    pub fn get(&self, id: AgentId) -> Option<&Arc<ProcessSlot>> {
        self.0.iter().find(|(a, _)| *a == id).map(|(_, s)| s)
    }
}

/// A launch, and where its result goes.
type SpawnRequest = (Launch, mpsc::SyncSender<Result<Spawned, ProcessError>>);

/// Forks children on a thread that lives as long as they may.
#[derive(Debug)]
pub struct Spawner {
    requests: Option<mpsc::Sender<SpawnRequest>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Spawner {
    /// Starts the thread when there are processes to start (`needed`);
    /// a daemon without process agents runs no spawner thread.
    fn start(needed: bool) -> Result<Self, ProcessError> {
        if !needed {
            return Ok(Self {
                requests: None,
                thread: None,
            });
        }
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        let thread = std::thread::Builder::new()
            .name("pinwheel-spawner".into())
            .spawn(move || {
                for (launch, reply) in rx {
                    let _ = reply.send(spawn::spawn(&launch));
                }
            })
            .map_err(|err| ProcessError::Spawner {
                reason: err.to_string(),
            })?;
        Ok(Self {
            requests: Some(tx),
            thread: Some(thread),
        })
    }

    /// Starts `launch` on the spawner thread and waits for the result.
    fn spawn(&self, launch: Launch) -> Result<Spawned, ProcessError> {
        let gone = || ProcessError::Spawner {
            reason: "the spawner thread is gone".into(),
        };
        let (reply, result) = mpsc::sync_channel(1);
        self.requests
            .as_ref()
            .ok_or_else(gone)?
            .send((launch, reply))
            .map_err(|_| gone())?;
        result.recv().map_err(|_| gone())?
    }
}

impl Drop for Spawner {
    fn drop(&mut self) {
        self.requests.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl ProcessSide {
    /// The process side of a run: one managed agent per process or
    /// external agent the plan placed here.
    pub fn new(
        agents: &AgentSet,
        plan: &Plan,
        routes: &Routes,
        topology: &Topology,
        slots: &Slots,
        options: &ProcessOptions,
        health: Arc<Health>,
    ) -> Result<Self, ProcessError> {
        let mut managed = Vec::new();
        let root = nix::unistd::geteuid().is_root();
        let mut warned = false;
        for placement in plan.placements() {
            let id = AgentId(placement.agent.0 as u32);
            let Some(slot) = slots.get(id) else { continue };
            let account = resolve(agents, placement.agent, root, &mut warned, &health);
            let mut agent = managed_agent(agents, placement, routes, topology, slot, account);
            agent.position = managed.len() as u64;
            managed.push(agent);
        }
        let cgroups = cgroups_for(&managed, &options.cgroup_root, &health);
        let attach = attach_socket(&managed, &options.attach_socket, &health);
        let spawner = Spawner::start(managed.iter().any(|m| m.spec.is_some()))?;
        Ok(Self::assemble(
            managed,
            MethodTable::new(&options.builtin_methods),
            Resources {
                spawner,
                cgroups,
                credentials_root: options.run_dir.join("credentials"),
                attach,
                health,
                board: Arc::clone(routes.board()),
            },
        ))
    }
}

/// One process or external agent as the plan placed it, not started.
fn managed_agent(
    agents: &AgentSet,
    placement: &crate::plan::AgentPlacement,
    routes: &Routes,
    topology: &Topology,
    slot: &Arc<ProcessSlot>,
    account: AccountIds,
) -> Managed {
    let spec = agents.get(placement.agent);
    let id = AgentId(placement.agent.0 as u32);
    let (ids, account_error) = match account {
        Ok(ids) => (ids, None),
        Err(reason) => (None, Some(reason)),
    };
    let uses = ModelUses::new(
        routes.models(id).to_vec(),
        vram_class(spec.priority()),
        u32::try_from(spec.behaviour().median_ns / 1_000_000).unwrap_or(u32::MAX),
    );
    let settings = topology.settings(
        topology
            .class_of(placement.cpu)
            .unwrap_or(CpuClass::Uniform),
    );
    Managed {
        position: 0,
        name: agents.display_name(AgentIndex(placement.agent.0)),
        spec: spec.process().cloned(),
        ringless: spec.kind() == AgentKind::Zmq,
        ids,
        account_error,
        user: spec.account().map(|a| a.user.clone()),
        cpu: placement.cpu,
        nice: nice_of(spec.priority()),
        phase: placement.phase,
        ring: RingConfig {
            slots: RING_SLOTS,
            max_frame: MAX_FRAME,
            wait: spec
                .process()
                .and_then(ProcessSpec::wait)
                .unwrap_or(settings.wait),
            spin_us: settings.spin_before_park_us,
        },
        facts: facts(routes, id, agents, placement.agent),
        slot: Arc::clone(slot),
        supervisor: spec.process().map(|p| {
            Supervisor::new(RestartPolicy {
                mode: p.restart(),
                max_restarts: p.max_restarts(),
                window_ns: u64::from(p.restart_window_s()) * 1_000_000_000,
            })
        }),
        epoch: 0,
        last: (None, None, None),
        current: None,
        leaf: None,
        exits: [0; 7],
        last_exit: None,
        uses,
        drill_sent: pinwheel_ipc::drill::FaultSpec::NONE,
    }
}

fn cgroups_for(managed: &[Managed], root: &Path, health: &Health) -> Cgroups {
    if !managed.iter().any(|m| m.spec.is_some()) {
        return Cgroups::Unusable {
            reason: "no process agents".into(),
        };
    }
    let cgroups = Cgroups::detect(root);
    if let Cgroups::Unusable { reason } = &cgroups {
        warn!(%reason, "agent processes run without cgroups (no memory limits)");
        health.raise(
            "cgroup_unavailable",
            format!(
                "agent processes run without cgroups, so memory_max_mib is not enforced: {reason}"
            ),
        );
    }
    cgroups
}

fn attach_socket(managed: &[Managed], path: &Path, health: &Health) -> Option<AttachSocket> {
    if !managed.iter().any(|m| m.spec.is_none()) {
        return None;
    }
    match AttachSocket::bind(path) {
        Ok(socket) => Some(socket),
        Err(err) => {
            warn!(path = %path.display(), error = %err, "attach socket not opened; external agents cannot attach");
            health.raise(
                "attach_unavailable",
                format!("cannot listen at {}: {err}", path.display()),
            );
            None
        }
    }
}

/// The account an agent runs as: its manifest's, resolved on this host
/// (`Err`: it cannot run as it). Not root: every child runs as the
/// daemon's user (one warning).
type AccountIds = Result<Option<(Uid, Gid, PathBuf)>, String>;

fn resolve(
    agents: &AgentSet,
    index: AgentIndex,
    root: bool,
    warned: &mut bool,
    health: &Health,
) -> AccountIds {
    let spec = agents.get(index);
    let Some(account) = spec.account() else {
        return Ok(None);
    };
    if !root && spec.kind() == AgentKind::Process {
        if !*warned {
            *warned = true;
            warn!(
                "the daemon is not root: agent processes run as its own user, not their manifest's"
            );
            health.raise(
                "process_agents_unprivileged",
                "the daemon is not root, so agent processes run as its user; run it as root to give each its manifest's user",
            );
        }
        return Ok(None);
    }
    let user = match account.user.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)).ok().flatten(),
        Err(_) => User::from_name(&account.user).ok().flatten(),
    };
    let Some(user) = user else {
        return Err(format!(
            "user {:?} does not exist on this host",
            account.user
        ));
    };
    let gid = match &account.group {
        None => user.gid,
        Some(group) => match group.parse::<u32>() {
            Ok(gid) => Gid::from_raw(gid),
            Err(_) => {
                Group::from_name(group)
                    .ok()
                    .flatten()
                    .ok_or_else(|| format!("group {group:?} does not exist on this host"))?
                    .gid
            }
        },
    };
    let allow_root = spec.process().is_some_and(|p| p.allow_root());
    if user.uid.is_root() && spec.kind() == AgentKind::Process && !allow_root {
        return Err(format!(
            "user {:?} is root; set allow_root = true to run it as root",
            account.user
        ));
    }
    Ok(Some((user.uid, gid, user.dir)))
}

/// What an agent is told about itself, less its epoch, drill and method
/// table.
fn facts(routes: &Routes, id: AgentId, agents: &AgentSet, index: AgentIndex) -> Facts {
    let spec = agents.get(index);
    let named = |topics: &[String]| -> Vec<Named> {
        topics
            .iter()
            .filter_map(|t| {
                Some(Named {
                    name: t.clone(),
                    id: routes.topic(t)?.0,
                })
            })
            .collect()
    };
    Facts {
        agent: id.0,
        epoch: 0,
        drill: pinwheel_ipc::drill::FaultSpec::NONE,
        calls: routes
            .calls(id)
            .iter()
            .map(|&c| Named {
                name: routes.name(c).to_owned(),
                id: c.0,
            })
            .collect(),
        publishes: named(spec.publishes()),
        subscribes: named(spec.subscribes()),
        methods: Vec::new(),
    }
}
