//! Call affinity: how strongly the calls between agents pull them onto one
//! CPU.
//!
//! An agent that serves one request at a time (`concurrency = 1`, the
//! seed's single-threaded REP loops) and calls another holds its only slot
//! for the whole round trip. Across CPUs that round trip goes through two
//! rings and, under load, waits behind whatever the other executor is
//! running; on one CPU it is a local queue. While the slot is held, every
//! caller of that agent waits too, so a serial hub whose callees sit on
//! another CPU becomes the mesh's bottleneck long before either CPU is
//! busy. (Measured on the seed's two manifests, 2 vCPUs: moving
//! SystemDigitalTwin's two callees onto its CPU doubled the highest rate
//! whose p99 stays under 1 ms.)
//!
//! So each call `A -> B` carries a strength: `(1 + callers of A) /
//! concurrency of A`. The `1` is A's own slot; each caller of A is one more
//! agent that queues behind it; a caller with many workers loses little to
//! any one slow call. A call to a replicated agent reaches each replica.
//! Placement ([`super::place`]) weighs a CPU by the strongest link between
//! an agent and those already there, then by the sum of its links there
//! (so many calls few wait on do not outvote one serial hub's), to choose
//! among CPUs that are nearly equally loaded; it never trades more balance
//! for it than the agent's own weight, or an ordinary agent's if that is
//! less.
//!
//! What this does not know: how often each call is made. The manifests
//! give the call graph, not rates, so a hub is judged by how many wait on
//! it, not by how much traffic it carries. Where the daemon drives a
//! request load itself, the rates are known and the agents that load
//! reaches are spread by their messages instead ([`super::traffic`]);
//! affinity places the rest.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use crate::config::{AgentIndex, AgentSet, CallTarget};
use crate::topology::CpuId;

/// The strength of every call between planned agents, both directions
/// summed, by agent.
pub(super) struct Affinity {
    links: BTreeMap<AgentIndex, Vec<(AgentIndex, f64)>>,
}

impl Affinity {
    /// The calls among `planned`; calls to agents not planned here pull
    /// nothing.
    pub(super) fn new(agents: &AgentSet, planned: &[AgentIndex]) -> Self {
        let here: BTreeSet<AgentIndex> = planned.iter().copied().collect();
        let calls: Vec<(AgentIndex, Vec<AgentIndex>)> = planned
            .iter()
            .map(|&caller| {
                let callees = agents
                    .get(caller)
                    .calls()
                    .iter()
                    .filter_map(|call| match call {
                        CallTarget::Local(first) => Some(agents.replicas_of(*first)),
                        CallTarget::Remote { .. } => None,
                    })
                    .flatten()
                    .filter(|callee| *callee != caller && here.contains(callee))
                    .collect();
                (caller, callees)
            })
            .collect();
        let mut callers: BTreeMap<AgentIndex, BTreeSet<AgentIndex>> = BTreeMap::new();
        for (caller, callees) in &calls {
            for callee in callees {
                callers.entry(*callee).or_default().insert(*caller);
            }
        }
        let mut links: BTreeMap<AgentIndex, Vec<(AgentIndex, f64)>> = BTreeMap::new();
        for (caller, callees) in calls {
            let waiting = callers.get(&caller).map_or(0, BTreeSet::len);
            let workers = agents.get(caller).behaviour().concurrency.max(1);
            let strength = (1 + waiting) as f64 / f64::from(workers);
            for callee in callees {
                links.entry(caller).or_default().push((callee, strength));
                links.entry(callee).or_default().push((caller, strength));
            }
        }
        Self { links }
    }

    /// How strongly `agent` is pulled to each CPU by the agents `placed`
    /// there (a CPU it has no link to is absent): one pass over its links.
    pub(super) fn pulls(
        &self,
        agent: AgentIndex,
        placed: &[(AgentIndex, CpuId)],
    ) -> BTreeMap<CpuId, Pull> {
        let mut pulls: BTreeMap<CpuId, Pull> = BTreeMap::new();
        for (other, strength) in self.links.get(&agent).into_iter().flatten() {
            if let Some((_, cpu)) = placed.iter().find(|(placed, _)| placed == other) {
                let pull = pulls.entry(*cpu).or_default();
                pull.strongest = pull.strongest.max(*strength);
                pull.total += strength;
            }
        }
        pulls
    }
}

/// An agent's pull towards one CPU.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Pull {
    /// Its strongest link there.
    pub strongest: f64,
    /// All its links there.
    pub total: f64,
}

impl Pull {
    /// Orders pulls: the strongest link first, then the total.
    pub(super) fn order(&self, other: &Self) -> Ordering {
        self.strongest
            .total_cmp(&other.strongest)
            .then(self.total.total_cmp(&other.total))
    }
}
