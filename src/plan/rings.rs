//! Routes between agents and the rings that carry them.
//!
//! Rings are per directed CPU pair, not per agent pair: an executor is one
//! thread, so it is the single producer of every ring leaving its CPU, and a
//! host needs at most N x (N - 1) rings however many agents it runs.

use std::collections::BTreeMap;

use super::{RemoteRoute, RingPlan, Route, RouteKind};
use crate::config::{AgentIndex, AgentSet, CallTarget};
use crate::topology::CpuId;

/// Every route among planned agents, and calls leaving them.
pub(super) struct Flows {
    /// Routes between planned agents.
    pub local: Vec<Route>,
    /// Calls to agents not planned here.
    pub remote: Vec<RemoteRoute>,
}

pub(super) fn routes(agents: &AgentSet, planned: &[AgentIndex]) -> Flows {
    let mut local = Vec::new();
    let mut remote = Vec::new();
    for &from in planned {
        let agent = agents.get(from);
        for call in agent.calls() {
            match call {
                CallTarget::Local(to) if planned.contains(to) => {
                    // A call to a replicated agent may reach any replica.
                    for to in agents.replicas_of(*to).filter(|r| planned.contains(r)) {
                        local.push(Route {
                            from,
                            to,
                            kind: RouteKind::Request,
                        });
                        local.push(Route {
                            from: to,
                            to: from,
                            kind: RouteKind::Reply,
                        });
                    }
                }
                other => remote.push(RemoteRoute {
                    from,
                    to: other.clone(),
                }),
            }
        }
        for topic in agent.publishes() {
            let subscribers = planned
                .iter()
                .filter(|&&s| s != from && agents.get(s).subscribes().contains(topic));
            local.extend(subscribers.map(|&to| Route {
                from,
                to,
                kind: RouteKind::Topic(topic.clone()),
            }));
        }
    }
    local.sort();
    local.dedup();
    Flows { local, remote }
}

/// Splits routes into rings between CPUs and routes that stay on one CPU.
pub(super) fn group(
    routes: Vec<Route>,
    cpu_of: impl Fn(AgentIndex) -> Option<CpuId>,
) -> (Vec<RingPlan>, Vec<Route>) {
    let mut rings: BTreeMap<(CpuId, CpuId), Vec<Route>> = BTreeMap::new();
    let mut same_cpu = Vec::new();
    for route in routes {
        let from = cpu_of(route.from).expect("routes join planned agents");
        let to = cpu_of(route.to).expect("routes join planned agents");
        if from == to {
            same_cpu.push(route);
        } else {
            rings.entry((from, to)).or_default().push(route);
        }
    }
    let rings = rings
        .into_iter()
        .map(|((from_cpu, to_cpu), routes)| RingPlan {
            from_cpu,
            to_cpu,
            routes,
        })
        .collect();
    (rings, same_cpu)
}
