//! The plan: which agent runs on which CPU, which rings exist, and the order
//! agents start in. `(Topology, AgentSet) -> Plan`, pure: it plans for the
//! host the topology file describes, not the machine it runs on, so
//! `pinwheel plan --topology topology/mainpc.toml` works anywhere.
//!
//! * Placement ([`place`]): agents pinned to a CPU get it if it is a
//!   data-plane CPU of the host; the others are spread by weight (heaviest
//!   first, each onto the least-loaded CPU of its class, or onto one at
//!   most its own weight (at most 1.0) heavier that its calls pull it to:
//!   [`affinity`]). A class falls back P -> uniform -> E, and E -> uniform
//!   -> P; `any` takes any data-plane CPU. For a daemon that drives a
//!   request load ([`Plan::build_for_requests`]), the agents the load
//!   reaches go first and by their messages a second ([`traffic`]): each
//!   onto the CPU that leaves the busiest CPU least busy, a call between
//!   CPUs counted again at both ends.
//! * Rings ([`rings`]): one SPSC ring per directed pair of CPUs that carries
//!   traffic. A call A -> B across CPUs puts requests on ring cpu(A) ->
//!   cpu(B) and replies on cpu(B) -> cpu(A); a topic puts events on
//!   cpu(publisher) -> cpu(subscriber). Each ring lists the routes it
//!   carries. Routes between agents on one CPU use the executor's local
//!   queue and need no ring.
//! * Start order ([`order`]): callees before callers, in phases. Cycles of
//!   calls are broken deterministically and reported as warnings.
//!
//! Which agents: with no cluster section every agent given is planned,
//! whatever its host (the whole seed system on one box). With a cluster,
//! only the topology host's agents; calls to others become remote routes.
//! Calls to an agent named on another host (`Name@host`) that is not given
//! cannot be made by a host with no cluster to carry them: the plan keeps
//! them apart ([`Plan::unreachable`]) with a warning, so the agents that
//! make them run as if those calls were not in their manifest, rather than
//! failing every request over a call that has nowhere to go.
//!
//! An agent of kind `zmq` is an unchanged seed process the legacy gateway
//! reaches at its endpoint: it is on no ring, so calls to it are remote
//! routes too (the routing table sends them to the gateway). It is placed
//! and ordered only when the daemon starts it (`command`), for its CPU
//! and its start phase.

mod affinity;
mod order;
mod place;
mod render;
mod rings;
mod traffic;

use serde::Serialize;

use crate::config::{AgentIndex, AgentKind, AgentSet, CallTarget, Location};
use crate::topology::{CpuClass, CpuId, Topology};

pub use render::{
    CpuMessages, PlacedAgent, PlanDoc, PlannedLoad, PlannedRemote, PlannedRing, PlannedRoute,
    plan_doc, render_json, render_table,
};

/// Where one agent runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentPlacement {
    /// The agent.
    pub agent: AgentIndex,
    /// Its CPU.
    pub cpu: CpuId,
    /// The CPU's class.
    pub class: CpuClass,
    /// Start phase (0 first); agents of one phase may start together.
    pub phase: usize,
}

/// What travels on a route.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteKind {
    /// Requests of a call.
    Request,
    /// Replies of a call.
    Reply,
    /// Events of a topic.
    Topic(String),
}

/// One directed flow of messages between two agents.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    /// Sender.
    pub from: AgentIndex,
    /// Receiver.
    pub to: AgentIndex,
    /// What it carries.
    pub kind: RouteKind,
}

/// One SPSC ring between two CPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingPlan {
    /// Producer CPU.
    pub from_cpu: CpuId,
    /// Consumer CPU.
    pub to_cpu: CpuId,
    /// Routes multiplexed on it.
    pub routes: Vec<Route>,
}

/// A call to an agent this daemon does not run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteRoute {
    /// The caller.
    pub from: AgentIndex,
    /// The callee.
    pub to: CallTarget,
}

/// A call left out of the start order to break a cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CycleBreak {
    /// The cycle, first agent repeated at the end.
    pub cycle: Vec<AgentIndex>,
    /// The caller whose call was left out.
    pub caller: AgentIndex,
    /// The callee it may not find up at first.
    pub callee: AgentIndex,
}

/// The plan for one host.
#[derive(Debug, Clone)]
pub struct Plan {
    host: String,
    placements: Vec<AgentPlacement>,
    rings: Vec<RingPlan>,
    local_routes: Vec<Route>,
    remote_routes: Vec<RemoteRoute>,
    unreachable: Vec<RemoteRoute>,
    start_order: Vec<AgentIndex>,
    cycle_breaks: Vec<CycleBreak>,
    fallbacks: Vec<String>,
    request_load: Option<RequestLoad>,
}

/// The request load a plan spreads agents for ([`Plan::build_for_requests`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RequestLoad {
    /// Requests a second.
    pub rate_per_s: f64,
    /// The agent they go to: the first coordinator planned.
    pub entry: AgentIndex,
    /// Each data-plane CPU's messages a second: those of the calls its
    /// agents serve and make, a call between two CPUs counted again at
    /// each end.
    pub messages_per_s: Vec<(CpuId, f64)>,
}

impl Plan {
    /// Plans `agents` on the host `topology` describes.
    pub fn build(topology: &Topology, agents: &AgentSet) -> Result<Self, PlanError> {
        Self::build_for_requests(topology, agents, 0.0)
    }

    /// Plans `agents` for a daemon that sends `rate_per_s` requests a
    /// second to its coordinator: agents that load reaches are spread by
    /// their messages ([`traffic`]); at 0, as [`Plan::build`].
    pub fn build_for_requests(
        topology: &Topology,
        agents: &AgentSet,
        rate_per_s: f64,
    ) -> Result<Self, PlanError> {
        let planned: Vec<AgentIndex> = agents
            .iter()
            .filter(|(_, a)| topology.cluster().is_none() || a.host() == topology.host())
            .filter(|(_, a)| a.kind() != AgentKind::Zmq || a.process().is_some())
            .map(|(i, _)| i)
            .collect();
        let (start_order, phases, cycle_breaks) = order::start_order(agents, &planned);
        let traffic = traffic::Traffic::of_requests(agents, &planned, &phases, rate_per_s);
        let placed = place::place(topology, agents, &planned, &traffic)?;
        let placements = placed
            .cpus
            .iter()
            .map(|&(agent, cpu)| AgentPlacement {
                agent,
                cpu,
                class: topology
                    .class_of(cpu)
                    .expect("placement picks CPUs of the host"),
                phase: phases
                    .iter()
                    .find(|(a, _)| *a == agent)
                    .map_or(0, |(_, p)| *p),
            })
            .collect::<Vec<_>>();
        let on_rings: Vec<AgentIndex> = planned
            .iter()
            .copied()
            .filter(|&i| agents.get(i).kind() != AgentKind::Zmq)
            .collect();
        let flows = rings::routes(agents, &on_rings);
        let cpu_of =
            |agent: AgentIndex| placements.iter().find(|p| p.agent == agent).map(|p| p.cpu);
        let (rings, local_routes) = rings::group(flows.local, cpu_of);
        // Calls to a `zmq` agent given here go to the gateway, cluster or
        // not; with no cluster, calls to agents only named on another host
        // have nowhere to go.
        let (remote_routes, unreachable) = match topology.cluster() {
            Some(_) => (flows.remote, Vec::new()),
            None => flows
                .remote
                .into_iter()
                .partition(|r| matches!(r.to, CallTarget::Local(_))),
        };
        Ok(Self {
            host: topology.host().to_owned(),
            placements,
            rings,
            local_routes,
            remote_routes,
            unreachable,
            start_order,
            cycle_breaks,
            fallbacks: placed.fallbacks,
            request_load: traffic.entry().map(|(entry, rate_per_s)| RequestLoad {
                rate_per_s,
                entry,
                messages_per_s: placed.messages,
            }),
        })
    }

    /// The host planned for.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Placements, in agent order.
    pub fn placements(&self) -> &[AgentPlacement] {
        &self.placements
    }

    /// The placement of one agent, if planned here.
    pub fn placement(&self, agent: AgentIndex) -> Option<&AgentPlacement> {
        self.placements.iter().find(|p| p.agent == agent)
    }

    /// Cross-CPU rings, ordered by (from, to).
    pub fn rings(&self) -> &[RingPlan] {
        &self.rings
    }

    /// Routes between agents on one CPU.
    pub fn local_routes(&self) -> &[Route] {
        &self.local_routes
    }

    /// Calls to agents not planned here.
    pub fn remote_routes(&self) -> &[RemoteRoute] {
        &self.remote_routes
    }

    /// Calls to agents on other hosts that this plan cannot make: it has
    /// no cluster to carry them.
    pub fn unreachable(&self) -> &[RemoteRoute] {
        &self.unreachable
    }

    /// The request load the plan spreads agents for, if any.
    pub fn request_load(&self) -> Option<&RequestLoad> {
        self.request_load.as_ref()
    }

    /// Agents in start order.
    pub fn start_order(&self) -> &[AgentIndex] {
        &self.start_order
    }

    /// Calls left out of the start order to break cycles.
    pub fn cycle_breaks(&self) -> &[CycleBreak] {
        &self.cycle_breaks
    }

    /// Every warning: cycle breaks, class fallbacks, then calls no cluster
    /// carries.
    pub fn warnings(&self, agents: &AgentSet) -> Vec<String> {
        let name = |i: AgentIndex| agents.display_name(i);
        let unreachable = (!self.unreachable.is_empty()).then(|| {
            let calls: Vec<String> = self
                .unreachable
                .iter()
                .map(|r| format!("{} -> {}", name(r.from), agents.target_name(&r.to)))
                .collect();
            format!(
                "no cluster: {} not made ({}); the callee runs on another host, so give the topology a [cluster] section or run with --nats to carry it",
                if calls.len() == 1 { "this call is" } else { "these calls are" },
                calls.join(", "),
            )
        });
        self.cycle_breaks
            .iter()
            .map(|b| {
                let cycle: Vec<String> = b.cycle.iter().map(|&i| name(i)).collect();
                format!(
                    "calls form a cycle {}; the start order ignores {} -> {}, so {} starts first and its first calls to {} wait until it is up",
                    cycle.join(" -> "),
                    name(b.caller),
                    name(b.callee),
                    name(b.caller),
                    name(b.callee),
                )
            })
            .chain(self.fallbacks.iter().cloned())
            .chain(unreachable)
            .collect()
    }
}

/// Errors from planning.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// An agent pinned to a CPU the host does not have.
    #[error(
        "{at}: agent {agent} is pinned to CPU {cpu}, which host {host} does not have (data-plane CPUs: {data_plane}); pin it to one of those or use `class`"
    )]
    CpuNotOnHost {
        /// The agent's `cpu` value.
        at: Location,
        /// The agent.
        agent: String,
        /// The CPU.
        cpu: u32,
        /// The topology's host.
        host: String,
        /// The host's data-plane CPUs.
        data_plane: String,
    },
    /// An agent pinned to a CPU whose role runs no agents.
    #[error(
        "{at}: agent {agent} is pinned to CPU {cpu}, which has role {role} in {topology}; agents run on data-plane CPUs ({data_plane}): pin it to one of those, or move CPU {cpu} to the data plane"
    )]
    ForbiddenCpu {
        /// The agent's `cpu` value.
        at: Location,
        /// The agent.
        agent: String,
        /// The CPU.
        cpu: u32,
        /// The CPU's role (`control`, `housekeeping`, or `none`).
        role: String,
        /// The topology file.
        topology: String,
        /// The host's data-plane CPUs.
        data_plane: String,
    },
}

impl PlanError {
    /// The place in a file this error points at.
    pub fn location(&self) -> Option<&Location> {
        match self {
            PlanError::CpuNotOnHost { at, .. } | PlanError::ForbiddenCpu { at, .. } => Some(at),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;
    use crate::config::{DEFAULT_WEIGHT, SourceFile};
    use crate::topology;

    fn topo(text: &str) -> Topology {
        let file = SourceFile::from_text(Path::new("topo.toml"), text);
        topology::validate(file.parse().unwrap(), &file, None).unwrap()
    }

    fn hybrid() -> Topology {
        topo(
            "schema = 1\n[host]\nname = \"h\"\ncpus = { P = \"0-3\", E = \"4-7\" }\n[roles]\ndata_plane = { cpus = \"0-5\" }\ncontrol = { cpus = \"7\" }\nhousekeeping = { cpus = \"6\" }\n",
        )
    }

    fn agents(entries: &[(&str, &str)]) -> AgentSet {
        let text: String = entries
            .iter()
            .map(|(name, extra)| {
                // A native agent gives its own kind.
                let kind = if extra.contains("kind =") {
                    ""
                } else {
                    "kind = \"synthetic\"\n"
                };
                format!("[[agent]]\nname = \"{name}\"\nhost = \"h\"\nrole = \"r\"\n{kind}{extra}\n")
            })
            .collect();
        AgentSet::from_sources(&[SourceFile::from_text(
            Path::new("agents.toml"),
            format!("schema = 1\n{text}"),
        )])
        .unwrap()
    }

    fn cpu_of(plan: &Plan, set: &AgentSet, name: &str) -> u32 {
        let (index, _) = set.iter().find(|(_, a)| a.name() == name).unwrap();
        plan.placement(index).unwrap().cpu.0
    }

    fn names(set: &AgentSet, order: &[AgentIndex]) -> Vec<String> {
        order.iter().map(|&i| set.display_name(i)).collect()
    }

    #[test]
    fn heavy_agents_spread_over_their_class_first() {
        let set = agents(&[
            ("A", "class = \"P\"\nweight = 4.0"),
            ("B", "class = \"P\"\nweight = 4.0"),
            ("C", "class = \"P\"\nweight = 1.0"),
            ("D", "class = \"P\"\nweight = 4.0"),
            ("E1", "class = \"E\""),
        ]);
        let sut = Plan::build(&hybrid(), &set).unwrap();
        let mut heavy: Vec<u32> = ["A", "B", "D"]
            .iter()
            .map(|n| cpu_of(&sut, &set, n))
            .collect();
        heavy.sort_unstable();
        assert_eq!(heavy, vec![0, 1, 2]);
        assert_eq!(cpu_of(&sut, &set, "C"), 3);
        assert!([4, 5].contains(&cpu_of(&sut, &set, "E1")));
    }

    fn two_cpus() -> Topology {
        topo("schema = 1\n[host]\nname = \"h\"\ncpus = { uniform = \"0-1\" }\n")
    }

    fn loads(plan: &Plan, set: &AgentSet) -> Vec<f64> {
        let mut loads = vec![0.0; 2];
        for (index, agent) in set.iter() {
            loads[plan.placement(index).unwrap().cpu.0 as usize] += agent.weight();
        }
        loads
    }

    #[test]
    fn a_serial_caller_and_its_callee_share_a_cpu_when_balance_allows() {
        // Without the call, the least-loaded rule puts Hub and Leaf apart.
        let set = agents(&[
            ("Hub", "calls = [\"Leaf\"]"),
            ("Leaf", ""),
            ("A", ""),
            ("B", ""),
        ]);
        let sut = Plan::build(&two_cpus(), &set).unwrap();
        assert_eq!(cpu_of(&sut, &set, "Hub"), cpu_of(&sut, &set, "Leaf"));
        assert_eq!(loads(&sut, &set), vec![2.0, 2.0]);
        assert!(sut.rings().is_empty(), "the call needs no ring");
    }

    #[test]
    fn calls_cost_at_most_the_agent_s_weight_of_balance_or_an_ordinary_agent_s() {
        // Leaf (1.0) may not join Hub (2.0) against an empty CPU; a heavy
        // Leaf may not join a heavy Hub either (the agent's own weight as
        // the only bound let it: 8.0 against 0.0).
        for (hub, leaf) in [("2.0", "1.0"), ("4.0", "4.0")] {
            let hub = format!("weight = {hub}\ncalls = [\"Leaf\"]");
            let leaf = format!("weight = {leaf}");
            let set = agents(&[("Hub", &hub), ("Leaf", &leaf)]);
            let sut = Plan::build(&two_cpus(), &set).unwrap();
            assert_ne!(
                cpu_of(&sut, &set, "Hub"),
                cpu_of(&sut, &set, "Leaf"),
                "{hub} {leaf}"
            );
        }
    }

    #[test]
    fn a_hub_s_one_call_outweighs_many_calls_few_wait_on() {
        // Mem's callers: Hub, whom three agents wait on (strength 4), on
        // CPU 0; five serial agents no one calls (1 each, 5 in all) on 1,
        // the lighter one (5.0 against 6.0).
        let mut entries = vec![
            ("Hub", "cpu = 0\ncalls = [\"Mem\"]"),
            ("X1", "cpu = 0"),
            ("X2", "cpu = 0"),
            ("C1", "cpu = 0\ncalls = [\"Hub\"]"),
            ("C2", "cpu = 0\ncalls = [\"Hub\"]"),
            ("C3", "cpu = 0\ncalls = [\"Hub\"]"),
        ];
        entries.extend(["W1", "W2", "W3", "W4", "W5"].map(|w| (w, "cpu = 1\ncalls = [\"Mem\"]")));
        entries.push(("Mem", ""));
        let set = agents(&entries);
        let sut = Plan::build(&two_cpus(), &set).unwrap();
        assert_eq!(cpu_of(&sut, &set, "Mem"), 0);
    }

    #[test]
    fn a_caller_with_many_workers_pulls_its_callee_less_than_a_serial_one() {
        // Both CPUs weigh 1.0; the tie would go to CPU 0.
        let set = agents(&[
            ("Pool", "cpu = 0\nconcurrency = 8\ncalls = [\"Leaf\"]"),
            ("Serial", "cpu = 1\ncalls = [\"Leaf\"]"),
            ("Leaf", ""),
        ]);
        let sut = Plan::build(&two_cpus(), &set).unwrap();
        assert_eq!(cpu_of(&sut, &set, "Leaf"), 1);
    }

    proptest::proptest! {
        #[test]
        fn whatever_the_calls_loads_differ_by_at_most_the_heaviest_agent_and_an_ordinary_one(
            agents_spec in proptest::collection::vec(
                (1u8..=8, proptest::collection::vec(0usize..12, 0..4), 1u32..=4),
                1..12,
            )
        ) {
            let names: Vec<String> = (0..agents_spec.len()).map(|i| format!("A{i}")).collect();
            let extras: Vec<String> = agents_spec
                .iter()
                .enumerate()
                .map(|(i, (weight, calls, workers))| {
                    let mut targets: Vec<String> = calls
                        .iter()
                        .filter(|&&c| c < names.len() && c != i)
                        .map(|&c| format!("\"{}\"", names[c]))
                        .collect();
                    targets.sort();
                    targets.dedup();
                    format!(
                        "weight = {}\nconcurrency = {workers}\ncalls = [{}]",
                        f64::from(*weight) / 2.0,
                        targets.join(", ")
                    )
                })
                .collect();
            let entries: Vec<(&str, &str)> =
                names.iter().zip(&extras).map(|(n, e)| (n.as_str(), e.as_str())).collect();
            let set = agents(&entries);
            let sut = Plan::build(&two_cpus(), &set).unwrap();
            let loads = loads(&sut, &set);
            let heaviest = set.iter().map(|(_, a)| a.weight()).fold(0.0, f64::max);
            let bound = heaviest + DEFAULT_WEIGHT;
            proptest::prop_assert!((loads[0] - loads[1]).abs() <= bound, "{loads:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn under_a_request_load_each_cpu_s_messages_are_its_agents_and_their_crossings(
            calls in proptest::collection::vec(proptest::collection::vec(0usize..10, 0..4), 1..10),
            cpus in 1u32..=4,
        ) {
            let names: Vec<String> = (0..calls.len()).map(|i| format!("A{i}")).collect();
            let list = |targets: &[usize], me: Option<usize>| {
                let mut out: Vec<String> = targets
                    .iter()
                    .filter(|&&c| c < names.len() && Some(c) != me)
                    .map(|&c| format!("\"{}\"", names[c]))
                    .collect();
                out.sort();
                out.dedup();
                out.join(", ")
            };
            let entry = format!("{ENTRY}\ncalls = [{}]", list(&calls[0], None));
            let extras: Vec<String> = calls
                .iter()
                .enumerate()
                .map(|(i, targets)| format!("calls = [{}]", list(targets, Some(i))))
                .collect();
            let mut entries: Vec<(&str, &str)> = vec![("Entry", entry.as_str())];
            entries.extend(names.iter().zip(&extras).map(|(n, e)| (n.as_str(), e.as_str())));
            let set = agents(&entries);
            let topology = topo(&format!(
                "schema = 1\n[host]\nname = \"h\"\ncpus = {{ uniform = \"0-{}\" }}\n",
                cpus - 1
            ));
            let sut = Plan::build_for_requests(&topology, &set, 1000.0).unwrap();
            let traffic = traffic_of(&set, 1000.0);
            let cpu = |i: AgentIndex| sut.placement(i).unwrap().cpu;
            let mut recount: BTreeMap<CpuId, f64> = BTreeMap::new();
            for (index, _) in set.iter() {
                *recount.entry(cpu(index)).or_default() += traffic.messages(index);
                for &(other, per_s) in traffic.links(index) {
                    if cpu(other) != cpu(index) {
                        // Each end of a crossing call, once from each side.
                        *recount.entry(cpu(index)).or_default() += 2.0 * per_s;
                    }
                }
            }
            let load = sut.request_load().unwrap();
            for &(at, per_s) in &load.messages_per_s {
                let expected = recount.get(&at).copied().unwrap_or(0.0);
                proptest::prop_assert!((per_s - expected).abs() < 1e-6, "CPU {at}: {per_s} != {expected}");
            }
        }
    }

    #[test]
    fn p_agents_fall_back_to_uniform_cpus_silently() {
        let uniform = topo("schema = 1\n[host]\nname = \"h\"\ncpus = { uniform = \"0-1\" }\n");
        let set = agents(&[("A", "class = \"P\""), ("B", "class = \"E\"")]);
        let sut = Plan::build(&uniform, &set).unwrap();
        assert!(sut.warnings(&set).is_empty());
        assert_ne!(cpu_of(&sut, &set, "A"), cpu_of(&sut, &set, "B"));
    }

    #[test]
    fn a_p_agent_on_an_e_only_data_plane_is_warned_about() {
        let e_only = topo(
            "schema = 1\n[host]\nname = \"h\"\ncpus = { P = \"0\", E = \"1-2\" }\n[roles]\ndata_plane = { cpus = \"1-2\" }\ncontrol = { cpus = \"0\" }\n",
        );
        let set = agents(&[("A", "class = \"P\"")]);
        let sut = Plan::build(&e_only, &set).unwrap();
        assert_eq!(sut.warnings(&set).len(), 1);
        assert!(sut.warnings(&set)[0].contains("placed on E"));
    }

    #[test]
    fn pinned_agents_keep_their_cpu() {
        let set = agents(&[("A", "cpu = 5"), ("B", "")]);
        let sut = Plan::build(&hybrid(), &set).unwrap();
        assert_eq!(cpu_of(&sut, &set, "A"), 5);
    }

    #[test]
    fn an_agent_pinned_to_the_control_cpu_is_an_error_at_its_cpu_line() {
        let set = agents(&[("A", "cpu = 7")]);
        let err = Plan::build(&hybrid(), &set).unwrap_err();
        assert!(
            matches!(&err, PlanError::ForbiddenCpu { role, .. } if role == "control"),
            "{err}"
        );
        assert_eq!(err.location().unwrap().line(), 7);
        assert!(err.to_string().contains("data-plane CPUs (0-5)"));
    }

    #[test]
    fn an_agent_pinned_to_a_cpu_the_host_lacks_is_an_error() {
        let set = agents(&[("A", "cpu = 64")]);
        assert!(matches!(
            Plan::build(&hybrid(), &set).unwrap_err(),
            PlanError::CpuNotOnHost { cpu: 64, .. }
        ));
    }

    #[test]
    fn calls_across_cpus_get_a_ring_each_way_and_same_cpu_calls_none() {
        let set = agents(&[
            ("A", "cpu = 0\ncalls = [\"B\", \"C\"]"),
            ("B", "cpu = 1"),
            ("C", "cpu = 0"),
        ]);
        let sut = Plan::build(&hybrid(), &set).unwrap();
        let pairs: Vec<(u32, u32)> = sut
            .rings()
            .iter()
            .map(|r| (r.from_cpu.0, r.to_cpu.0))
            .collect();
        assert_eq!(pairs, vec![(0, 1), (1, 0)]);
        assert_eq!(sut.rings()[0].routes[0].kind, RouteKind::Request);
        assert_eq!(sut.rings()[1].routes[0].kind, RouteKind::Reply);
        assert_eq!(sut.local_routes().len(), 2);
    }

    #[test]
    fn topics_fan_out_to_every_subscriber_on_another_cpu() {
        let set = agents(&[
            ("Pub", "cpu = 0\npublishes = [\"audio.raw\"]"),
            ("S1", "cpu = 1\nsubscribes = [\"audio.raw\"]"),
            ("S2", "cpu = 2\nsubscribes = [\"audio.raw\"]"),
        ]);
        let sut = Plan::build(&hybrid(), &set).unwrap();
        let pairs: Vec<(u32, u32)> = sut
            .rings()
            .iter()
            .map(|r| (r.from_cpu.0, r.to_cpu.0))
            .collect();
        assert_eq!(pairs, vec![(0, 1), (0, 2)]);
        assert!(
            sut.rings()
                .iter()
                .all(|r| r.routes[0].kind == RouteKind::Topic("audio.raw".into()))
        );
    }

    #[test]
    fn callees_start_before_their_callers() {
        let set = agents(&[
            ("Caller", "calls = [\"Mid\"]"),
            ("Mid", "calls = [\"Leaf\"]"),
            ("Leaf", ""),
        ]);
        let sut = Plan::build(&hybrid(), &set).unwrap();
        assert_eq!(names(&set, sut.start_order()), ["Leaf", "Mid", "Caller"]);
        assert!(sut.warnings(&set).is_empty());
    }

    #[test]
    fn a_cycle_is_broken_the_same_way_whatever_the_manifest_order() {
        let forward = agents(&[
            ("TTS", "calls = [\"Stream\"]"),
            ("Stream", "calls = [\"TTS\"]"),
            ("Resp", "calls = [\"TTS\"]"),
        ]);
        let backward = agents(&[
            ("Resp", "calls = [\"TTS\"]"),
            ("Stream", "calls = [\"TTS\"]"),
            ("TTS", "calls = [\"Stream\"]"),
        ]);
        let a = Plan::build(&hybrid(), &forward).unwrap();
        let b = Plan::build(&hybrid(), &backward).unwrap();
        assert_eq!(
            names(&forward, a.start_order()),
            names(&backward, b.start_order())
        );
        assert_eq!(a.cycle_breaks().len(), 1);
        let warning = &a.warnings(&forward)[0];
        assert!(warning.contains("cycle TTS -> Stream -> TTS"), "{warning}");
        assert!(warning.contains("ignores Stream -> TTS"), "{warning}");
        assert_eq!(names(&forward, a.start_order()), ["Stream", "TTS", "Resp"]);
    }

    #[test]
    fn with_a_cluster_only_the_hosts_agents_are_planned_and_calls_out_are_remote() {
        let clustered = topo(
            "schema = 1\n[host]\nname = \"h\"\ncpus = { uniform = \"0-1\" }\n[cluster]\nname = \"c\"\nnats_url = \"nats://127.0.0.1:4222\"\n",
        );
        let text = "schema = 1\n[[agent]]\nname = \"A\"\nhost = \"h\"\nrole = \"r\"\nkind = \"synthetic\"\ncalls = [\"B\"]\n[[agent]]\nname = \"B\"\nhost = \"other\"\nrole = \"r\"\nkind = \"synthetic\"\n";
        let set =
            AgentSet::from_sources(&[SourceFile::from_text(Path::new("a.toml"), text)]).unwrap();
        let sut = Plan::build(&clustered, &set).unwrap();
        assert_eq!(sut.placements().len(), 1);
        assert_eq!(sut.remote_routes().len(), 1);
    }

    #[test]
    fn with_no_cluster_a_call_to_an_agent_on_another_host_is_not_made_and_warned() {
        let single = topo("schema = 1\n[host]\nname = \"h\"\ncpus = { uniform = \"0-1\" }\n");
        let text = "schema = 1\n[[agent]]\nname = \"A\"\nhost = \"h\"\nrole = \"r\"\nkind = \"synthetic\"\ncalls = [\"B@other\"]\n";
        let set =
            AgentSet::from_sources(&[SourceFile::from_text(Path::new("a.toml"), text)]).unwrap();
        let sut = Plan::build(&single, &set).unwrap();
        assert!(sut.remote_routes().is_empty());
        assert_eq!(sut.unreachable().len(), 1);
        let doc = plan_doc(&sut, &single, &set);
        assert_eq!(
            doc.unreachable_routes,
            [PlannedRemote {
                from: "A".into(),
                to: "B@other".into()
            }]
        );
        let warnings = sut.warnings(&set);
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with("no cluster") && w.contains("A -> B@other")),
            "{warnings:?}"
        );
    }

    #[test]
    fn replicas_go_to_distinct_cpus_of_their_class() {
        let set = agents(&[
            ("Svc", "class = \"P\"\nreplicas = 3\nweight = 2.0"),
            ("Other", "class = \"P\"\nweight = 5.0"),
        ]);
        let sut = Plan::build(&hybrid(), &set).unwrap();
        let mut cpus: Vec<u32> = ["Svc#0", "Svc#1", "Svc#2"]
            .iter()
            .map(|n| cpu_of(&sut, &set, n))
            .collect();
        cpus.sort_unstable();
        cpus.dedup();
        assert_eq!(cpus.len(), 3, "{cpus:?}");
        assert!(cpus.iter().all(|&c| c < 4), "P CPUs are 0-3: {cpus:?}");
        assert!(sut.warnings(&set).is_empty(), "{:?}", sut.warnings(&set));
    }

    #[test]
    fn replicas_that_outnumber_their_cpus_share_and_the_plan_says_so() {
        let uniform = topo("schema = 1\n[host]\nname = \"h\"\ncpus = { uniform = \"0-1\" }\n");
        let set = agents(&[("Svc", "replicas = 4")]);
        let sut = Plan::build(&uniform, &set).unwrap();
        let on_0 = ["Svc#0", "Svc#1", "Svc#2", "Svc#3"]
            .iter()
            .filter(|n| cpu_of(&sut, &set, n) == 0)
            .count();
        assert_eq!(on_0, 2);
        let warnings = sut.warnings(&set);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("agent Svc has 4 replicas but only 2 distinct CPU(s)"),
            "{}",
            warnings[0]
        );
    }

    #[test]
    fn a_call_to_a_replicated_agent_routes_to_every_replica_and_starts_after_them() {
        let set = agents(&[
            ("Caller", "cpu = 0\ncalls = [\"Svc\"]"),
            ("Svc", "replicas = 2\nclass = \"P\""),
        ]);
        let sut = Plan::build(&hybrid(), &set).unwrap();
        let requests: Vec<AgentIndex> = sut
            .rings()
            .iter()
            .flat_map(|r| &r.routes)
            .chain(sut.local_routes())
            .filter(|r| r.kind == RouteKind::Request)
            .map(|r| r.to)
            .collect();
        assert_eq!(requests.len(), 2, "{requests:?}");
        assert_eq!(names(&set, sut.start_order()), ["Svc#0", "Svc#1", "Caller"]);
    }

    const ENTRY: &str = "kind = \"native\"\nnative = \"coordinator\"\nconcurrency = 64";

    fn messages_of(traffic: &traffic::Traffic, set: &AgentSet, name: &str) -> f64 {
        let (index, _) = set
            .iter()
            .find(|(i, _)| set.display_name(*i) == name)
            .unwrap();
        traffic.messages(index)
    }

    fn traffic_of(set: &AgentSet, rate: f64) -> traffic::Traffic {
        let planned: Vec<AgentIndex> = set.iter().map(|(i, _)| i).collect();
        let (_, phases, _) = order::start_order(set, &planned);
        traffic::Traffic::of_requests(set, &planned, &phases, rate)
    }

    #[test]
    fn a_request_makes_each_call_once_per_request_served_and_none_that_closes_a_cycle() {
        // A -> C -> A closes a cycle; the start order breaks C -> A, and a
        // synthetic C skips A, already on the request's trace.
        let entry = format!("{ENTRY}\ncalls = [\"A\", \"B\", \"R\"]");
        let set = agents(&[
            ("Entry", &entry),
            ("A", "calls = [\"C\"]"),
            ("B", "calls = [\"C\"]"),
            ("C", "calls = [\"A\"]"),
            ("R", "replicas = 2"),
            ("Idle", "calls = [\"C\"]"),
        ]);
        let sut = traffic_of(&set, 100.0);
        // Each call: a request and a reply at each end.
        let expected = [
            ("Entry", 2.0 * (100.0 + 300.0)),
            ("A", 2.0 * (100.0 + 100.0)),
            ("B", 2.0 * (100.0 + 100.0)),
            ("C", 2.0 * 200.0),
            ("R#0", 2.0 * 50.0),
            ("R#1", 2.0 * 50.0),
            ("Idle", 0.0),
        ];
        for (name, messages) in expected {
            assert_eq!(messages_of(&sut, &set, name), messages, "{name}");
        }
        assert_eq!(sut.entry().map(|(_, rate)| rate), Some(100.0));
        assert_eq!(traffic_of(&set, 0.0).entry(), None, "no load at rate 0");
        let no_coordinator = agents(&[("A", "calls = [\"C\"]"), ("C", "")]);
        assert_eq!(traffic_of(&no_coordinator, 100.0).entry(), None);
    }

    #[test]
    fn a_request_load_spreads_the_agents_it_reaches_by_their_messages() {
        // Per request: Entry 6 messages, each hub 4, each leaf 2. Spread
        // by messages, each hub keeps its leaf and the hubs part: a hub on
        // the entry's CPU, the other with its leaf on the second. Spread by
        // weight, the idle heavy agent Big takes a CPU of its own and all
        // the traffic shares the other.
        let entry = format!("{ENTRY}\ncalls = [\"H1\", \"H2\"]");
        let set = agents(&[
            ("Entry", &entry),
            ("H1", "calls = [\"L1\"]"),
            ("H2", "calls = [\"L2\"]"),
            ("L1", ""),
            ("L2", ""),
            ("Big", "weight = 5.0"),
        ]);
        let sut = Plan::build_for_requests(&two_cpus(), &set, 1000.0).unwrap();
        let cpu = |name| cpu_of(&sut, &set, name);
        assert_eq!(cpu("H1"), cpu("L1"));
        assert_eq!(cpu("H2"), cpu("L2"));
        assert_ne!(cpu("H1"), cpu("H2"));
        let load = sut.request_load().unwrap();
        assert_eq!(load.rate_per_s, 1000.0);
        assert_eq!(set.display_name(load.entry), "Entry");
        // Entry's call to the hub on the other CPU crosses: 2 more at each
        // end (Entry, a hub and its leaf: 6 + 4 + 2 + 2; the other hub and
        // its leaf: 4 + 2 + 2).
        let mut per_cpu: Vec<f64> = load.messages_per_s.iter().map(|(_, m)| *m).collect();
        per_cpu.sort_by(f64::total_cmp);
        assert_eq!(per_cpu, vec![8000.0, 14000.0]);

        let by_weight = Plan::build(&two_cpus(), &set).unwrap();
        assert!(by_weight.request_load().is_none());
        let cpu = |name| cpu_of(&by_weight, &set, name);
        assert!(
            ["Entry", "H1", "H2", "L1", "L2"]
                .iter()
                .all(|n| cpu(n) != cpu("Big")),
            "weights alone put the traffic on one CPU"
        );
    }

    #[test]
    fn the_seed_mesh_under_a_request_load_keeps_its_serial_hub_with_its_callees_and_balances() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let topology =
            topology::load(&root.join("topology/vm-2cpu.toml"), Path::new("/sys")).unwrap();
        let set = AgentSet::load(&[
            root.join("agents/mainpc.toml"),
            root.join("agents/pc2.toml"),
        ])
        .unwrap();
        let sut = Plan::build_for_requests(&topology, &set, 100_000.0).unwrap();
        let cpu = |name| cpu_of(&sut, &set, name);
        for callee in ["ServiceRegistry", "MemoryOrchestratorService"] {
            assert_eq!(cpu(callee), cpu("SystemDigitalTwin"), "{callee}");
        }
        let load = sut.request_load().unwrap();
        let busiest = load
            .messages_per_s
            .iter()
            .map(|(_, m)| *m)
            .fold(0.0, f64::max);
        let lightest = load
            .messages_per_s
            .iter()
            .map(|(_, m)| *m)
            .fold(f64::MAX, f64::min);
        // 19 calls a request: 76 messages at their ends, plus crossings.
        assert!(busiest + lightest >= 76.0 * 100_000.0, "{load:?}");
        assert!(busiest <= 1.1 * lightest, "{load:?}");
        // Without a load the plan is the weights' and affinity's alone.
        let by_weight = Plan::build(&topology, &set).unwrap();
        let unloaded = Plan::build_for_requests(&topology, &set, 0.0).unwrap();
        assert_eq!(by_weight.placements(), unloaded.placements());
    }
}
