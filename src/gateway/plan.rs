//! What the gateway serves, decided from the manifests, the routing table
//! and the topology's `[legacy]` section before its thread starts (pure):
//! the REP and PUB ports it binds for agents on this host's rings, the
//! `zmq` agents its callers here reach, and the endpoints the registries
//! answer `get_agent_endpoint` with.
//!
//! * A port is bound only for an agent this host runs (a replicated
//!   agent's once, for the service: requests go to its replicas in turn),
//!   and only with a bind address (`[legacy] bind` or `--legacy-bind`):
//!   without one the ports in the manifests stay dormant.
//! * The `zmq` agents are those this host's agents call (the routing
//!   table's legacy targets) and those whose PUB socket publishes topics
//!   agents here hear. They need no bind address.

use std::net::IpAddr;

use crate::config::{AgentIndex, AgentKind, AgentSet};
use crate::runtime::layout::wire_priority;
use crate::runtime::remote::RemoteKind;
use crate::runtime::routes::{NOWHERE, Routes};
use crate::topology::{DEFAULT_LEGACY_TIMEOUT, DEFAULT_MAX_MESSAGE_BYTES, LegacyEdge};
use pinwheel_ipc::wire::{AgentId, Priority, TopicId};

/// A REP port: the seed's REQ/REP contract into an agent here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepPort {
    /// The port.
    pub port: u16,
    /// The name legacy clients know the agent by.
    pub name: String,
    /// Where requests go: the agent, or each replica in turn.
    pub replicas: Vec<AgentId>,
    /// The priority its requests travel at (the agent's own).
    pub priority: Priority,
}

/// A PUB port: the topics an agent here publishes, for legacy
/// subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubPort {
    /// The port.
    pub port: u16,
    /// The publisher's name.
    pub name: String,
    /// Its replicas (any of them may publish).
    pub publishers: Vec<AgentId>,
}

/// A `zmq` agent this host's agents call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZmqTarget {
    /// Its id.
    pub id: AgentId,
    /// Its name.
    pub name: String,
    /// Its REP socket, `tcp://host:port`.
    pub endpoint: String,
    /// Its PUB socket, when it publishes topics the mesh hears.
    pub publish: Option<String>,
    /// The topics of its PUB socket that agents here subscribe to.
    pub topics: Vec<(String, TopicId)>,
    /// Whether agents here call it (it gets a REQ socket).
    pub called: bool,
}

/// The gateway's plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayPlan {
    /// Where ports are bound; `None`: no ports.
    pub bind: Option<IpAddr>,
    /// Largest request accepted, bytes.
    pub max_message_bytes: usize,
    /// A legacy request's deadline (and a call's without one).
    pub timeout: std::time::Duration,
    /// REP ports.
    pub reps: Vec<RepPort>,
    /// PUB ports.
    pub pubs: Vec<PubPort>,
    /// `zmq` agents.
    pub targets: Vec<ZmqTarget>,
}

impl GatewayPlan {
    /// The plan for `agents` as `routes` places them, under `edge`;
    /// `None` when there is nothing to serve.
    pub fn new(agents: &AgentSet, routes: &Routes, edge: Option<&LegacyEdge>) -> Option<Self> {
        let bind = edge.map(|e| e.bind);
        let mut plan = GatewayPlan {
            bind,
            max_message_bytes: edge.map_or(DEFAULT_MAX_MESSAGE_BYTES, |e| e.max_message_bytes),
            timeout: edge.map_or(DEFAULT_LEGACY_TIMEOUT, |e| e.timeout),
            reps: Vec::new(),
            pubs: Vec::new(),
            targets: Vec::new(),
        };
        if bind.is_some() {
            plan.ports(agents, routes);
        }
        plan.targets = agents
            .iter()
            .filter(|(_, a)| a.kind() == AgentKind::Zmq)
            .filter_map(|(index, _)| zmq_target(agents, routes, AgentId(index.0 as u32)))
            .filter(|t| t.called || (t.publish.is_some() && !t.topics.is_empty()))
            .collect();
        let idle = plan.reps.is_empty() && plan.pubs.is_empty() && plan.targets.is_empty();
        (!idle || edge.is_some()).then_some(plan)
    }

    fn ports(&mut self, agents: &AgentSet, routes: &Routes) {
        for (index, spec) in agents.iter() {
            let id = AgentId(index.0 as u32);
            if spec.replica() != 0 || routes.executor_of(id) == NOWHERE {
                continue;
            }
            let replicas: Vec<AgentId> = agents
                .replicas_of(index)
                .map(|r| AgentId(r.0 as u32))
                .filter(|&r| routes.executor_of(r) != NOWHERE)
                .collect();
            let name = agents.service_name(index);
            if let Some(port) = spec.legacy().rep() {
                self.reps.push(RepPort {
                    port,
                    name: name.clone(),
                    replicas: replicas.clone(),
                    priority: wire_priority(spec.priority()),
                });
            }
            if let Some(port) = spec.legacy().publish() {
                self.pubs.push(PubPort {
                    port,
                    name,
                    publishers: replicas,
                });
            }
        }
    }

    /// Each agent's endpoint as the registries give it: its REP port on
    /// the bind address (the host's name when bound on every address),
    /// and each `zmq` agent's own.
    pub fn endpoints(&self, host: &str) -> Vec<(String, String)> {
        let address = match self.bind {
            Some(ip) if ip.is_unspecified() => host.to_owned(),
            Some(IpAddr::V6(ip)) => format!("[{ip}]"),
            Some(IpAddr::V4(ip)) => ip.to_string(),
            None => return self.zmq_endpoints(),
        };
        self.reps
            .iter()
            .map(|r| (r.name.clone(), format!("tcp://{address}:{}", r.port)))
            .chain(self.zmq_endpoints())
            .collect()
    }

    fn zmq_endpoints(&self) -> Vec<(String, String)> {
        self.targets
            .iter()
            .map(|t| (t.name.clone(), t.endpoint.clone()))
            .collect()
    }

    /// The ZeroMQ address of `port` on the bind address.
    pub fn address(&self, port: u16) -> Option<String> {
        match self.bind? {
            IpAddr::V6(ip) => Some(format!("tcp://[{ip}]:{port}")),
            IpAddr::V4(ip) => Some(format!("tcp://{ip}:{port}")),
        }
    }
}

/// The `zmq` agent `id`, with the topics of its PUB socket agents here
/// hear.
fn zmq_target(agents: &AgentSet, routes: &Routes, id: AgentId) -> Option<ZmqTarget> {
    let spec = agents.agents().get(id.0 as usize)?;
    if spec.kind() != AgentKind::Zmq {
        return None;
    }
    let endpoint = spec.legacy().endpoint()?;
    let topics = spec
        .publishes()
        .iter()
        .filter_map(|t| Some((t.clone(), routes.topic(t)?)))
        .filter(|(_, id)| !routes.subscribers(*id).is_empty())
        .collect();
    Some(ZmqTarget {
        called: routes.remote().kind_of(id) == Some(RemoteKind::Legacy),
        id,
        name: agents.display_name(AgentIndex(id.0 as usize)),
        endpoint: endpoint.to_string(),
        publish: spec
            .legacy()
            .publish()
            .map(|port| endpoint.at_port(port).to_string()),
        topics,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::SourceFile;
    use crate::plan::Plan;
    use crate::topology;

    fn sut(agents_text: &str, edge: Option<LegacyEdge>) -> Option<GatewayPlan> {
        let topo_text = "schema = 1\n[host]\nname = \"h\"\ncpus = { uniform = \"0-1\" }\n";
        let file = SourceFile::from_text(Path::new("t.toml"), topo_text);
        let topology = topology::validate(file.parse().unwrap(), &file, None).unwrap();
        let text = format!("schema = 1\n{agents_text}");
        let agents =
            AgentSet::from_sources(&[SourceFile::from_text(Path::new("a.toml"), text)]).unwrap();
        let plan = Plan::build(&topology, &agents).unwrap();
        GatewayPlan::new(&agents, &Routes::new(&plan, &agents), edge.as_ref())
    }

    const MESH: &str = "[[agent]]\nname = \"Twin\"\nhost = \"h\"\nrole = \"r\"\nkind = \"synthetic\"\nlegacy_rep = 7220\nlegacy_pub = 7221\ncalls = [\"Old\"]\n\
        [[agent]]\nname = \"Old\"\nhost = \"h\"\nrole = \"r\"\nkind = \"zmq\"\nendpoint = \"tcp://10.0.0.2:5555\"\n";

    #[test]
    fn agents_here_get_their_ports_and_called_zmq_agents_are_targets() {
        let edge = LegacyEdge::on("127.0.0.1".parse().unwrap());
        let plan = sut(MESH, Some(edge)).expect("a gateway");

        assert_eq!(plan.reps.len(), 1);
        assert_eq!(
            (plan.reps[0].port, plan.reps[0].name.as_str()),
            (7220, "Twin")
        );
        assert_eq!(plan.pubs[0].port, 7221);
        assert_eq!(plan.targets[0].name, "Old");
        assert_eq!(
            plan.endpoints("h"),
            vec![
                ("Twin".to_owned(), "tcp://127.0.0.1:7220".to_owned()),
                ("Old".to_owned(), "tcp://10.0.0.2:5555".to_owned()),
            ]
        );
    }

    #[test]
    fn without_a_bind_address_the_ports_stay_dormant_but_zmq_agents_are_called() {
        let plan = sut(MESH, None).expect("a gateway for the zmq agent");

        assert!(plan.reps.is_empty() && plan.pubs.is_empty());
        assert_eq!(plan.targets.len(), 1);
    }

    #[test]
    fn a_zmq_agent_nobody_calls_is_served_only_for_the_topics_heard_here() {
        let agents = "[[agent]]\nname = \"News\"\nhost = \"h\"\nrole = \"r\"\nkind = \"zmq\"\nendpoint = \"tcp://10.0.0.2:5555\"\nlegacy_pub = 5556\npublishes = [\"news\", \"other\"]\n\
            [[agent]]\nname = \"Reader\"\nhost = \"h\"\nrole = \"r\"\nkind = \"synthetic\"\nsubscribes = [\"news\"]\n\
            [[agent]]\nname = \"Silent\"\nhost = \"h\"\nrole = \"r\"\nkind = \"zmq\"\nendpoint = \"tcp://10.0.0.3:5555\"\n";
        let plan = sut(agents, None).expect("a gateway for the publisher");

        assert_eq!(plan.targets.len(), 1, "{:?}", plan.targets);
        let news = &plan.targets[0];
        assert!(!news.called);
        assert_eq!(news.publish.as_deref(), Some("tcp://10.0.0.2:5556"));
        assert_eq!(news.topics.len(), 1);
        assert_eq!(news.topics[0].0, "news");
    }

    #[test]
    fn a_mesh_without_legacy_agents_or_section_needs_no_gateway() {
        let agents = "[[agent]]\nname = \"A\"\nhost = \"h\"\nrole = \"r\"\nkind = \"synthetic\"\nlegacy_rep = 7000\n";
        assert_eq!(sut(agents, None), None);
    }

    #[test]
    fn an_address_on_every_interface_is_advertised_by_host_name() {
        let edge = LegacyEdge::on("0.0.0.0".parse().unwrap());
        let plan = sut(MESH, Some(edge)).expect("a gateway");

        assert_eq!(plan.endpoints("mainpc")[0].1, "tcp://mainpc:7220");
        assert_eq!(plan.address(7220).as_deref(), Some("tcp://0.0.0.0:7220"));
    }
}
