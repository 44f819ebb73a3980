//! The mesh: which agent each id is, built once from the manifests and the
//! routing table, and [`MeshAgent`], the one type the runtime runs.
//!
//! [`Mesh::new`] decides, for every id on this host, what to run: a
//! [`Synthetic`] agent, a native [`RegistryAgent`] or [`CoordinatorAgent`],
//! the [`LoadGenerator`] (the last id), or, for a process or external
//! agent, the [`ProcessBridge`] that carries its messages to and from its
//! rings (answering "unavailable" while no process is attached). Each
//! executor thread then calls [`Mesh::make`] for its agents, so agent
//! state is created on the thread that owns it.
//!
//! [`MeshAgent`] is an enum, so the runtime's handlers are dispatched
//! statically: no boxed future per message. Every agent but the generator
//! also sends each registry on this host a heartbeat a second, which is
//! how registries learn who is alive.
//!
//! What the native agents and the generator count lives in shared atomics
//! ([`MeshCounters`]) that the daemon reads for its report after the
//! executors have stopped.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join;

use super::coordinator::{CoordinatorAgent, CoordinatorConfig, CoordinatorCounters};
use super::load::{LoadGenerator, LoadSpec, StreamCounters};
use super::registry::{Directory, Record, RegistryAgent, RegistryCounters};
use super::synthetic::{Synthetic, SyntheticSpec};
use crate::config::{AgentIndex, AgentKind, AgentSet, Behaviour, NativeName};
use crate::process::{BridgeSpec, ProcessBridge, Slots};
use crate::runtime::RuntimeError;
use crate::runtime::agent::{Agent, Message};
use crate::runtime::board::{AgentFlags, vram_class};
use crate::runtime::ctx::Ctx;
use crate::runtime::layout::wire_priority;
use crate::runtime::legacy::LegacyBook;
use crate::runtime::node::STATUS_UNAVAILABLE;
use crate::runtime::routes::{NOWHERE, Routes};
use pinwheel_ipc::wire::{AgentId, Envelope, Payload, PayloadKind, Priority, TopicId};

/// How often agents tell the registries they are alive.
pub const HEARTBEAT_PERIOD: Duration = Duration::from_secs(1);

/// What the daemon's flags say about the mesh.
#[derive(Debug, Clone)]
pub struct MeshOptions {
    /// Load generator requests a second.
    pub rate_per_s: f64,
    /// Deadline of each generated request and frame.
    pub request_timeout: Duration,
    /// Where registries keep their snapshots.
    pub state_dir: Option<PathBuf>,
    /// Synthetic agents serve at once: no service time, no stalls, no
    /// model uses.
    pub overhead: bool,
    /// The slots of process and external agents.
    pub processes: Slots,
    /// The seed's discovery data, for the registries' legacy actions.
    pub legacy: Arc<LegacyBook>,
}

/// Everything the native agents and the generator count.
#[derive(Debug, Default)]
pub struct MeshCounters {
    /// Each registry's.
    pub registries: Vec<(AgentId, Arc<RegistryCounters>)>,
    /// Each coordinator's.
    pub coordinators: Vec<(AgentId, Arc<CoordinatorCounters>)>,
    /// The generator's stream frames.
    pub streams: Arc<StreamCounters>,
}

/// What to build for one id.
#[derive(Debug, Clone)]
enum Blueprint {
    Synthetic(SyntheticSpec),
    Registry(
        Option<PathBuf>,
        Arc<RegistryCounters>,
        Vec<AgentId>,
        Priority,
    ),
    Coordinator(Vec<AgentId>, Priority, usize, Arc<CoordinatorCounters>),
    Load(LoadSpec),
    Process(BridgeSpec),
    Detached,
    /// A `zmq` agent: the legacy gateway carries its calls, so no executor
    /// runs it (the routing table places it nowhere).
    Gateway,
}

/// The mesh of one daemon.
#[derive(Debug)]
pub struct Mesh {
    routes: Arc<Routes>,
    blueprints: Vec<Blueprint>,
    directory: Directory,
    registries: Arc<[AgentId]>,
    counters: MeshCounters,
    legacy: Arc<LegacyBook>,
}

impl Mesh {
    /// The mesh of `agents` as `routes` places them.
    pub fn new(agents: &AgentSet, routes: &Arc<Routes>, options: &MeshOptions) -> Self {
        let mut counters = MeshCounters::default();
        let mut blueprints: Vec<Blueprint> = agents
            .iter()
            .map(|(index, _)| blueprint(agents, routes, index, options, &mut counters))
            .collect();
        blueprints.push(Blueprint::Load(load_spec(agents, routes, options)));
        for (id, blueprint) in blueprints.iter().enumerate() {
            if matches!(blueprint, Blueprint::Detached) {
                // Callers' balancers skip it until a process attaches.
                let id = AgentId(id as u32);
                routes.board().set_flag(id, AgentFlags::DOWN, true);
            }
        }
        let registries = counters.registries.iter().map(|(id, _)| *id).collect();
        Self {
            directory: directory(agents, routes),
            routes: Arc::clone(routes),
            blueprints,
            registries,
            counters,
            legacy: Arc::clone(&options.legacy),
        }
    }

    /// Builds agent `id` (on its executor's thread).
    pub fn make(&self, id: AgentId) -> MeshAgent {
        let kind = match &self.blueprints[id.0 as usize] {
            Blueprint::Synthetic(spec) => Kind::Synthetic(Synthetic::new(spec.clone())),
            Blueprint::Registry(path, counters, calls, priority) => Kind::Registry(
                RegistryAgent::new(
                    Arc::clone(&self.directory),
                    path.clone(),
                    Arc::clone(counters),
                )
                .with_calls(calls.clone(), *priority)
                .with_legacy(Arc::clone(&self.legacy), self.routes.name(id).to_owned()),
            ),
            Blueprint::Coordinator(calls, priority, processors, counters) => {
                let names = calls
                    .iter()
                    .map(|&c| self.routes.target_name(c).to_owned())
                    .collect();
                Kind::Coordinator(CoordinatorAgent::new(
                    calls.clone(),
                    names,
                    *priority,
                    CoordinatorConfig::with_processors(*processors),
                    Arc::clone(counters),
                ))
            }
            Blueprint::Load(spec) => Kind::Load(LoadGenerator::new(
                spec.clone(),
                Arc::clone(&self.counters.streams),
            )),
            Blueprint::Process(spec) => Kind::Process(Box::new(ProcessBridge::new(spec.clone()))),
            Blueprint::Detached | Blueprint::Gateway => Kind::Detached,
        };
        MeshAgent {
            kind,
            registries: Arc::clone(&self.registries),
        }
    }

    /// What the native agents and the generator count.
    pub fn counters(&self) -> &MeshCounters {
        &self.counters
    }

    /// Whether `id` is an external agent with no process attached.
    pub fn is_detached(&self, id: AgentId) -> bool {
        matches!(
            self.blueprints.get(id.0 as usize),
            Some(Blueprint::Detached)
        )
    }

    /// Whether `id` is a process or external agent (run by its bridge).
    pub fn is_process(&self, id: AgentId) -> bool {
        matches!(
            self.blueprints.get(id.0 as usize),
            Some(Blueprint::Process(_))
        )
    }
}

fn blueprint(
    agents: &AgentSet,
    routes: &Routes,
    index: AgentIndex,
    options: &MeshOptions,
    counters: &mut MeshCounters,
) -> Blueprint {
    let spec = agents.get(index);
    let id = AgentId(index.0 as u32);
    let priority = wire_priority(spec.priority());
    match spec.kind() {
        AgentKind::Synthetic => Blueprint::Synthetic(SyntheticSpec {
            me: id,
            behaviour: if options.overhead {
                Behaviour {
                    median_ns: 0,
                    p99_ns: 0,
                    stall_every: 0,
                    ..*spec.behaviour()
                }
            } else {
                *spec.behaviour()
            },
            priority,
            calls: routes.calls(id).to_vec(),
            publishes: routes.publishes(id).to_vec(),
            // A model use waits for the (simulated) GPU's loads: the
            // GPU's time, not pinwheel's.
            models: if options.overhead {
                Vec::new()
            } else {
                routes.models(id).to_vec()
            },
            model_class: vram_class(spec.priority()),
        }),
        AgentKind::Native(NativeName::Registry) => {
            let path = options
                .state_dir
                .as_ref()
                .map(|dir| dir.join(format!("{}.registry.json", spec.name())));
            let shared = Arc::new(RegistryCounters::default());
            if routes.executor_of(id) != NOWHERE {
                counters.registries.push((id, Arc::clone(&shared)));
            }
            Blueprint::Registry(path, shared, routes.calls(id).to_vec(), priority)
        }
        AgentKind::Native(NativeName::Coordinator) => {
            let shared = Arc::new(CoordinatorCounters::default());
            if routes.executor_of(id) != NOWHERE {
                counters.coordinators.push((id, Arc::clone(&shared)));
            }
            let processors = spec.behaviour().concurrency as usize;
            Blueprint::Coordinator(routes.calls(id).to_vec(), priority, processors, shared)
        }
        AgentKind::Process | AgentKind::External => match options.processes.get(id) {
            Some(slot) => Blueprint::Process(BridgeSpec {
                me: id,
                slot: Arc::clone(slot),
                calls: routes.calls(id).to_vec(),
                publishes: routes.publishes(id).to_vec(),
                priority,
                wait_first: spec.kind() == AgentKind::Process,
            }),
            None => Blueprint::Detached,
        },
        AgentKind::Zmq => Blueprint::Gateway,
    }
}

/// Requests to the first coordinator on this host, frames to every stream
/// source on it.
fn load_spec(agents: &AgentSet, routes: &Routes, options: &MeshOptions) -> LoadSpec {
    let here = |index: AgentIndex| routes.executor_of(AgentId(index.0 as u32)) != NOWHERE;
    let requests_to = agents.request_entry(here).map(|i| AgentId(i.0 as u32));
    let streams = agents
        .iter()
        .filter(|(i, a)| here(*i) && a.behaviour().stream_hz > 0)
        .map(|(i, a)| (AgentId(i.0 as u32), a.behaviour().stream_hz))
        .collect();
    LoadSpec {
        rate_per_s: options.rate_per_s,
        requests_to,
        streams,
        timeout: options.request_timeout,
    }
}

/// Each placed agent's registry name and record.
fn directory(agents: &AgentSet, routes: &Routes) -> Directory {
    let entries = (0..routes.agent_count())
        .map(|i| {
            let id = AgentId(i as u32);
            let spec = agents.agents().get(i)?;
            let executor = routes.executor_of(id);
            let cpu = *routes.executors().get(usize::from(executor))?;
            // Manifests keep roles within the registry's limit
            // (config::MAX_ROLE_BYTES).
            let record = Record {
                id,
                host: spec.host().to_owned(),
                cpu,
                role: spec.role().to_owned(),
            };
            Some((routes.name(id).to_owned(), record))
        })
        .collect();
    Arc::new(entries)
}

/// The agents the daemon runs.
#[derive(Debug)]
enum Kind {
    Synthetic(Synthetic),
    Registry(RegistryAgent),
    Coordinator(CoordinatorAgent),
    Load(LoadGenerator),
    Process(Box<ProcessBridge>),
    Detached,
}

/// One agent of the mesh, as the runtime runs it.
#[derive(Debug)]
pub struct MeshAgent {
    kind: Kind,
    registries: Arc<[AgentId]>,
}

/// Sends each registry a heartbeat every [`HEARTBEAT_PERIOD`] until the
/// runtime drains.
async fn heartbeats(ctx: Ctx, registries: &[AgentId]) {
    let mut seq = 0;
    while !ctx.draining() {
        for &to in registries {
            let beat = Envelope {
                from: ctx.me(),
                to,
                topic: TopicId::NONE,
                correlation: 0,
                priority: Priority::Low,
                sent_ns: ctx.now_ns(),
                deadline_ns: 0,
                payload: Payload::Heartbeat { seq },
            };
            // A lost heartbeat is the next one's job.
            let _ = ctx.send(&beat).await;
        }
        seq += 1;
        ctx.pause(HEARTBEAT_PERIOD).await;
    }
}

impl Agent for MeshAgent {
    async fn start(&self, ctx: &Ctx) -> Result<(), RuntimeError> {
        match &self.kind {
            Kind::Synthetic(agent) => agent.start(ctx).await,
            Kind::Registry(agent) => agent.start(ctx).await,
            Kind::Coordinator(agent) => agent.start(ctx).await,
            Kind::Load(agent) => agent.start(ctx).await,
            Kind::Process(agent) => agent.start(ctx).await,
            Kind::Detached => Ok(()),
        }
    }

    async fn handle(&self, ctx: &Ctx, msg: &Message) -> Result<(), RuntimeError> {
        match &self.kind {
            Kind::Synthetic(agent) => agent.handle(ctx, msg).await,
            Kind::Registry(agent) => agent.handle(ctx, msg).await,
            Kind::Coordinator(agent) => agent.handle(ctx, msg).await,
            Kind::Load(agent) => agent.handle(ctx, msg).await,
            Kind::Process(agent) => agent.handle(ctx, msg).await,
            Kind::Detached if msg.head().kind == PayloadKind::Request => {
                ctx.reply(msg, STATUS_UNAVAILABLE, &[]).await
            }
            Kind::Detached => Ok(()),
        }
    }

    fn reset(&self) {
        match &self.kind {
            Kind::Synthetic(agent) => agent.reset(),
            Kind::Registry(agent) => agent.reset(),
            Kind::Coordinator(agent) => agent.reset(),
            Kind::Load(agent) => agent.reset(),
            Kind::Process(agent) => agent.reset(),
            Kind::Detached => {}
        }
    }

    async fn run(&self, ctx: &Ctx) {
        let own = async {
            match &self.kind {
                Kind::Synthetic(agent) => agent.run(ctx).await,
                Kind::Registry(agent) => agent.run(ctx).await,
                Kind::Coordinator(agent) => agent.run(ctx).await,
                Kind::Load(agent) => agent.run(ctx).await,
                Kind::Process(agent) => agent.run(ctx).await,
                Kind::Detached => {}
            }
        };
        if matches!(self.kind, Kind::Load(_) | Kind::Detached) {
            own.await;
        } else {
            join(own, heartbeats(ctx.fork(), &self.registries)).await;
        }
    }
}
