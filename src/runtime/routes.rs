//! The routing table: where every agent lives and who hears every topic.
//!
//! Built once from the plan and shared, read-only, by every executor.
//! Agents are numbered by their index in the agent set (their wire
//! `AgentId`); one more id, the last, is the load generator, which runs on
//! the first executor. An executor is a data-plane CPU that hosts agents
//! the daemon runs itself; an agent process is bridged by the executor of
//! its own CPU when there is one, else by its first caller's (see
//! `bridge_cpu`), and a route's ring joins the executors of its two ends.
//! Inside an executor, each agent has a slot (its inbox). Topics are numbered from
//! 1 in order of first appearance (`TopicId(0)` means none); for each topic
//! the table lists the executors with subscribers and, per executor, the
//! subscribers' slots, so a publication crosses each ring once and fans out
//! on arrival. Calls to agents on other hosts are in an agent's `calls`
//! too, with the ids [`RemoteTable`] gives them; they leave through the
//! cluster link (`remote.rs`).
//!
//! Callers name a replicated agent by its first replica (the head); the
//! table lists each such service's replicas and how calls to it are
//! balanced ([`Service`]), so an executor can pick a replica per call.
//! Beside the table, which is read-only, it carries the mesh's
//! [`Board`]: the shared words (replica states, drills, model grants and
//! use desks) that the control side writes while the mesh runs.

use std::collections::HashMap;
use std::sync::Arc;

use super::board::{Board, ModelInfo, vram_class};
use super::desk::MAX_PROCESS_USES;
use super::remote::{RemoteKind, RemoteTable};
use crate::config::{AgentIndex, AgentKind, AgentSet, Balance, CallTarget};
use crate::plan::Plan;
use crate::topology::CpuId;
use pinwheel_ipc::wire::{AgentId, TopicId};

/// "Not on this host": the executor of an agent the plan did not place.
pub const NOWHERE: u16 = u16::MAX;
/// "Not a replicated agent's head."
pub const NO_SERVICE: u16 = u16::MAX;

/// A replicated agent, as callers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// The name callers use.
    pub name: String,
    /// Its replicas, first (the head, which callers name) to last.
    pub replicas: Vec<AgentId>,
    /// How a call picks one.
    pub balance: Balance,
    /// Each replica's weight (`weighted`).
    pub weights: Vec<u32>,
}

/// The routing table.
#[derive(Debug, Clone)]
pub struct Routes {
    executors: Vec<CpuId>,
    agent_executor: Vec<u16>,
    agent_slot: Vec<u32>,
    slots: Vec<Vec<AgentId>>,
    topics: Vec<String>,
    subscribers: Vec<Vec<(u16, Vec<u32>)>>,
    publishes: Vec<Vec<TopicId>>,
    calls: Vec<Vec<AgentId>>,
    names: Vec<String>,
    remote: RemoteTable,
    services: Vec<Service>,
    service_of: Vec<u16>,
    heads: Vec<AgentId>,
    models: Vec<Vec<u16>>,
    board: Arc<Board>,
}

impl Routes {
    /// The table for `plan`.
    pub fn new(plan: &Plan, agents: &AgentSet) -> Self {
        let executors = executor_cpus(plan, agents);
        let (topics, ids) = topic_ids(agents);
        let total = agents.len() + 1;
        let mut routes = Self {
            agent_executor: vec![NOWHERE; total],
            agent_slot: vec![0; total],
            slots: vec![Vec::new(); executors.len()],
            executors,
            topics,
            subscribers: Vec::new(),
            publishes: Vec::new(),
            calls: Vec::new(),
            names: (0..agents.len())
                .map(|i| agents.display_name(AgentIndex(i)))
                .chain(["LoadGenerator".to_owned()])
                .collect(),
            remote: RemoteTable::new(plan, agents),
            services: Vec::new(),
            service_of: vec![NO_SERVICE; total],
            heads: (0..total).map(|i| AgentId(i as u32)).collect(),
            models: vec![Vec::new(); total],
            board: Arc::new(Board::new(0, Vec::new(), &[], 0)),
        };
        for &agent in plan.start_order() {
            // A zmq agent's process is on no ring: the gateway reaches it.
            if agents.get(agent).kind() == AgentKind::Zmq {
                continue;
            }
            let cpu = plan
                .placement(agent)
                .expect("started agents are placed")
                .cpu;
            let cpu = if routes.executors.binary_search(&cpu).is_ok() {
                cpu
            } else {
                bridge_cpu(plan, agents, agent, &routes.executors)
            };
            routes.place(agent.0, cpu);
        }
        if let Some(&first) = routes.executors.first() {
            routes.place(total - 1, first);
        }
        routes.fill_topics(agents, &ids);
        routes.calls = (0..total)
            .map(|i| {
                let mut calls = routes.local_calls(agents, i);
                calls.extend_from_slice(routes.remote.calls(AgentId(i as u32)));
                calls
            })
            .collect();
        routes.fill_services(agents);
        routes.fill_board(agents);
        routes
    }

    /// Lists each replicated agent placed here.
    fn fill_services(&mut self, agents: &AgentSet) {
        for (index, spec) in agents.iter() {
            let set = spec.replicas();
            if set.count() < 2 || spec.replica() != 0 || self.agent_executor[index.0] == NOWHERE {
                continue;
            }
            self.service_of[index.0] = self.services.len() as u16;
            for replica in agents.replicas_of(index) {
                self.heads[replica.0] = AgentId(index.0 as u32);
            }
            self.services.push(Service {
                name: agents.service_name(index),
                replicas: agents
                    .replicas_of(index)
                    .map(|r| AgentId(r.0 as u32))
                    .collect(),
                balance: set.balance(),
                weights: set.weights().to_vec(),
            });
        }
    }

    /// The board: every model the manifests name gets a slot, and each
    /// executor a desk with room for every use its agents can have asking
    /// at once (two per worker and model; see `desk`); the agent
    /// processes' desk has two per use an agent process may have open.
    fn fill_board(&mut self, agents: &AgentSet) {
        let mut models: Vec<ModelInfo> = Vec::new();
        let mut desk_slots = vec![0; self.executors.len()];
        let mut process_slots = 0;
        for (index, spec) in agents.iter() {
            let executor = self.agent_executor[index.0];
            let class = vram_class(spec.priority());
            // An agent process's uses go through the agent processes' desk.
            let process = matches!(spec.kind(), AgentKind::Process | AgentKind::External);
            for need in spec.models() {
                let slot = match models.iter().position(|m| m.name == need.name) {
                    Some(slot) => slot,
                    None => {
                        models.push(ModelInfo {
                            name: need.name.clone(),
                            vram_mib: need.vram_mib,
                            class,
                        });
                        models.len() - 1
                    }
                };
                models[slot].class = models[slot].class.max(class);
                self.models[index.0].push(slot as u16);
                if let Some(n) = desk_slots
                    .get_mut(usize::from(executor))
                    .filter(|_| !process)
                {
                    // One slot asking and one ended, per worker and model.
                    *n += 2 * spec.behaviour().concurrency as usize;
                }
            }
            if process && !spec.models().is_empty() && executor != NOWHERE {
                // One slot asking and one ended, per use open at once.
                process_slots += 2 * MAX_PROCESS_USES;
            }
        }
        self.board = Arc::new(Board::new(
            self.agent_executor.len(),
            models,
            &desk_slots,
            process_slots,
        ));
    }

    /// Gives agent `agent` the next slot on the executor of `cpu`.
    fn place(&mut self, agent: usize, cpu: CpuId) {
        let executor = self
            .executors
            .binary_search(&cpu)
            .expect("placements use planned CPUs");
        self.agent_executor[agent] = executor as u16;
        self.agent_slot[agent] = self.slots[executor].len() as u32;
        self.slots[executor].push(AgentId(agent as u32));
    }

    /// The call targets of agent `i` that run on this host.
    fn local_calls(&self, agents: &AgentSet, i: usize) -> Vec<AgentId> {
        let Some(agent) = agents.agents().get(i) else {
            return Vec::new();
        };
        agent
            .calls()
            .iter()
            .filter_map(|c| match c {
                CallTarget::Local(t) if self.agent_executor[t.0] != NOWHERE => {
                    Some(AgentId(t.0 as u32))
                }
                _ => None,
            })
            .collect()
    }

    fn fill_topics(&mut self, agents: &AgentSet, ids: &HashMap<String, TopicId>) {
        self.subscribers = vec![Vec::new(); self.topics.len() + 1];
        self.publishes = vec![Vec::new(); agents.len() + 1];
        for (index, agent) in agents.iter() {
            let executor = self.agent_executor[index.0];
            if executor == NOWHERE {
                continue;
            }
            self.publishes[index.0] = agent.publishes().iter().map(|t| ids[t]).collect();
            for topic in agent.subscribes() {
                let Some(id) = ids.get(topic) else { continue };
                let per_executor = &mut self.subscribers[id.0 as usize];
                let slot = self.agent_slot[index.0];
                match per_executor.iter_mut().find(|(e, _)| *e == executor) {
                    Some((_, slots)) => slots.push(slot),
                    None => per_executor.push((executor, vec![slot])),
                }
            }
        }
    }

    /// Executors, by index: their CPUs.
    pub fn executors(&self) -> &[CpuId] {
        &self.executors
    }

    /// The executor of an agent; [`NOWHERE`] if not on this host.
    pub fn executor_of(&self, agent: AgentId) -> u16 {
        self.agent_executor
            .get(agent.0 as usize)
            .copied()
            .unwrap_or(NOWHERE)
    }

    /// An agent's slot on its executor.
    pub fn slot_of(&self, agent: AgentId) -> usize {
        self.agent_slot[agent.0 as usize] as usize
    }

    /// The agents of an executor, by slot.
    pub fn agents_on(&self, executor: u16) -> &[AgentId] {
        &self.slots[executor as usize]
    }

    /// The load generator's id.
    pub fn load_generator(&self) -> AgentId {
        AgentId((self.agent_executor.len() - 1) as u32)
    }

    /// Number of ids (agents and the load generator).
    pub fn agent_count(&self) -> usize {
        self.agent_executor.len()
    }

    /// Executors with subscribers of `topic`, each with their slots.
    pub fn subscribers(&self, topic: TopicId) -> &[(u16, Vec<u32>)] {
        self.subscribers
            .get(topic.0 as usize)
            .map_or(&[], Vec::as_slice)
    }

    /// Topics an agent publishes.
    pub fn publishes(&self, agent: AgentId) -> &[TopicId] {
        self.publishes
            .get(agent.0 as usize)
            .map_or(&[], Vec::as_slice)
    }

    /// Agents an agent calls: those that run on this host, then those on
    /// other hosts.
    pub fn calls(&self, agent: AgentId) -> &[AgentId] {
        self.calls.get(agent.0 as usize).map_or(&[], Vec::as_slice)
    }

    /// A topic's id by name.
    pub fn topic(&self, name: &str) -> Option<TopicId> {
        self.topics
            .iter()
            .position(|t| t == name)
            .map(|i| TopicId(i as u32 + 1))
    }

    /// A topic's name by id.
    pub fn topic_name(&self, topic: TopicId) -> Option<&str> {
        let index = usize::try_from(topic.0).ok()?.checked_sub(1)?;
        self.topics.get(index).map(String::as_str)
    }

    /// The name to show for an id.
    pub fn name(&self, agent: AgentId) -> &str {
        match self.names.get(agent.0 as usize) {
            Some(name) => name,
            None => self.remote.target(agent).map_or("?", |t| t.name.as_str()),
        }
    }

    /// The name to show for a callee: `Name@host` when it is on another
    /// host (with whether it is), else [`name`](Self::name).
    pub fn callee(&self, to: AgentId) -> (String, bool) {
        match self.remote.target(to) {
            Some(t) if t.kind == RemoteKind::Host => (format!("{}@{}", t.name, t.host), true),
            _ => (self.name(to).to_owned(), false),
        }
    }

    /// Whether `to` is a legacy ZeroMQ agent (calls go through the
    /// gateway).
    pub fn is_legacy(&self, to: AgentId) -> bool {
        self.remote.kind_of(to) == Some(RemoteKind::Legacy)
    }

    /// The agents on other hosts this host's agents call.
    pub fn remote(&self) -> &RemoteTable {
        &self.remote
    }

    /// The name to show for a call target: a replicated agent's service
    /// name for its head, else the agent's name.
    pub fn target_name(&self, agent: AgentId) -> &str {
        match self.service(agent) {
            Some(service) => &service.name,
            None => self.name(agent),
        }
    }

    /// The replicated agents placed here, by service number.
    pub fn services(&self) -> &[Service] {
        &self.services
    }

    /// The service number of a replicated agent's head, else
    /// [`NO_SERVICE`].
    pub fn service_of(&self, agent: AgentId) -> u16 {
        self.service_of
            .get(agent.0 as usize)
            .copied()
            .unwrap_or(NO_SERVICE)
    }

    /// The replicated agent whose head is `agent`, if it is one.
    pub fn service(&self, agent: AgentId) -> Option<&Service> {
        self.services.get(usize::from(self.service_of(agent)))
    }

    /// The id callers name an agent by: a replica's head (its first
    /// replica), else the agent itself. Traces record this id, so a
    /// cycle through any replica is seen.
    pub fn head_of(&self, agent: AgentId) -> AgentId {
        self.heads.get(agent.0 as usize).copied().unwrap_or(agent)
    }

    /// The model slots (on the board) an agent uses.
    pub fn models(&self, agent: AgentId) -> &[u16] {
        self.models.get(agent.0 as usize).map_or(&[], Vec::as_slice)
    }

    /// The mesh's shared words.
    pub fn board(&self) -> &Arc<Board> {
        &self.board
    }

    /// Ordered executor pairs that need a ring: those the plan's routes
    /// use, and both ways between the load generator and every executor.
    pub fn ring_pairs(&self, plan: &Plan) -> Vec<(u16, u16)> {
        let executor = |agent: crate::config::AgentIndex| {
            Some(self.executor_of(AgentId(agent.0 as u32))).filter(|&e| e != NOWHERE)
        };
        let mut pairs: Vec<(u16, u16)> = plan
            .rings()
            .iter()
            .flat_map(|r| r.routes.iter())
            .chain(plan.local_routes())
            .filter_map(|r| Some((executor(r.from)?, executor(r.to)?)))
            .filter(|(from, to)| from != to)
            .collect();
        let generator = self.executor_of(self.load_generator());
        for executor in 0..self.executors.len() as u16 {
            if executor != generator && generator != NOWHERE {
                pairs.push((generator, executor));
                pairs.push((executor, generator));
            }
        }
        pairs.sort_unstable();
        pairs.dedup();
        pairs
    }
}

/// The CPUs executors run on: those of the agents the daemon runs itself.
/// Agent processes need no executor of their own (their CPU is theirs);
/// only when every planned agent is a process do their CPUs host the
/// executors that bridge them.
fn executor_cpus(plan: &Plan, agents: &AgentSet) -> Vec<CpuId> {
    let in_daemon = |index: AgentIndex| {
        !matches!(
            agents.get(index).kind(),
            AgentKind::Process | AgentKind::External | AgentKind::Zmq
        )
    };
    let mut cpus: Vec<CpuId> = plan
        .placements()
        .iter()
        .filter(|p| in_daemon(p.agent))
        .map(|p| p.cpu)
        .collect();
    if cpus.is_empty() {
        cpus = plan.placements().iter().map(|p| p.cpu).collect();
    }
    cpus.sort_unstable();
    cpus.dedup();
    cpus
}

/// Where an agent process whose CPU runs no executor is bridged: on the
/// executor of its first caller the daemon runs itself, else on the first
/// executor. Its own CPU stays its own, so a spinning agent never competes
/// with the executor that serves it.
fn bridge_cpu(plan: &Plan, agents: &AgentSet, agent: AgentIndex, executors: &[CpuId]) -> CpuId {
    agents
        .iter()
        .filter(|(_, a)| a.calls().contains(&CallTarget::Local(agent)))
        .filter_map(|(caller, _)| plan.placement(caller))
        .map(|p| p.cpu)
        .find(|cpu| executors.binary_search(cpu).is_ok())
        .or_else(|| executors.first().copied())
        .expect("a plan with agents has an executor")
}

fn topic_ids(agents: &AgentSet) -> (Vec<String>, HashMap<String, TopicId>) {
    let mut names: Vec<String> = Vec::new();
    for (_, agent) in agents.iter() {
        for topic in agent.publishes().iter().chain(agent.subscribes()) {
            if !names.contains(topic) {
                names.push(topic.clone());
            }
        }
    }
    let ids = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), TopicId(i as u32 + 1)))
        .collect();
    (names, ids)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::SourceFile;
    use crate::topology;

    fn sut() -> (Routes, Plan) {
        let topo_text = "schema = 1\n[host]\nname = \"h\"\ncpus = { uniform = \"0-1\" }\n";
        let file = SourceFile::from_text(Path::new("t.toml"), topo_text);
        let topology = topology::validate(file.parse().unwrap(), &file, None).unwrap();
        let agents_text = "schema = 1\n\
            [[agent]]\nname = \"Mic\"\nhost = \"h\"\nrole = \"r\"\nkind = \"synthetic\"\ncpu = 0\npublishes = [\"audio\"]\n\
            [[agent]]\nname = \"Ear\"\nhost = \"h\"\nrole = \"r\"\nkind = \"synthetic\"\ncpu = 1\nsubscribes = [\"audio\"]\ncalls = [\"Brain\"]\n\
            [[agent]]\nname = \"Brain\"\nhost = \"h\"\nrole = \"r\"\nkind = \"synthetic\"\ncpu = 1\nsubscribes = [\"audio\"]\n";
        let agents =
            AgentSet::from_sources(&[SourceFile::from_text(Path::new("a.toml"), agents_text)])
                .unwrap();
        let plan = Plan::build(&topology, &agents).unwrap();
        (Routes::new(&plan, &agents), plan)
    }

    #[test]
    fn agents_map_to_their_planned_executor_and_a_slot_each() {
        let (routes, _) = sut();
        assert_eq!(routes.executors(), &[CpuId(0), CpuId(1)]);
        assert_eq!(routes.executor_of(AgentId(0)), 0);
        assert_eq!(routes.executor_of(AgentId(1)), 1);
        assert_ne!(routes.slot_of(AgentId(1)), routes.slot_of(AgentId(2)));
        assert_eq!(routes.executor_of(routes.load_generator()), 0);
        assert_eq!(routes.name(routes.load_generator()), "LoadGenerator");
    }

    #[test]
    fn a_topic_lists_each_subscribing_executor_once_with_its_slots() {
        let (routes, _) = sut();
        let audio = routes.topic("audio").unwrap();
        let subs = routes.subscribers(audio);
        assert_eq!(subs.len(), 1);
        assert_eq!(subs[0].0, 1);
        assert_eq!(subs[0].1.len(), 2);
        assert_eq!(routes.publishes(AgentId(0)), &[audio]);
    }

    #[test]
    fn rings_cover_planned_routes_and_the_load_generator_both_ways() {
        let (routes, plan) = sut();
        assert_eq!(routes.ring_pairs(&plan), vec![(0, 1), (1, 0)]);
        assert_eq!(routes.calls(AgentId(1)), &[AgentId(2)]);
    }
}
