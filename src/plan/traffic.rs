//! Traffic: the messages a known request load puts on each agent and each
//! call, for placement to spread.
//!
//! A manifest's `weight` is an agent's own CPU load (a model, a DSP loop)
//! and the plan spreads it. But what an executor spends on an agent it
//! hosts is its messages: every call costs the caller a request sent and a
//! reply taken in, and the callee a request taken in and a reply sent, and
//! a call between two CPUs costs each end a ring slot, a pump pass and a
//! wake-up on top. In the seed's mesh four hubs (SystemDigitalTwin,
//! ServiceRegistry, MemoryOrchestratorService, ModelManagerSuite) serve 12
//! of each request's 19 calls, while their weights are those of any
//! service. Spread by weight, they all landed on one of `vm-2cpu`'s two
//! CPUs, which then moved 1.6 times the other's messages and capped the
//! mesh (`bench mesh --overhead --find-max`).
//!
//! When the daemon drives a request load itself (`pinwheel run --rate`,
//! `pinwheel bench mesh`), the plan knows where requests enter (the first
//! coordinator it plans: `AgentSet::request_entry`, the load generator's
//! own rule) and how many a second, and the manifests say who calls whom.
//! Each request an agent serves makes each of its calls once, as the
//! synthetic agents and the seed's synchronous REQ/REP flows do, and a
//! call to a replicated agent reaches one replica, the load split evenly.
//! Rates flow from callers to callees in the start order's phases,
//! callers first: a call the start order leaves out to break a cycle
//! carries nothing, as a synthetic agent skips a callee already on the
//! request's trace. Events (topics) and the
//! load's audio frames are not counted: they are a few hundred a second
//! beside the requests' hundreds of thousands.
//!
//! What this does not know: the rates of traffic the daemon does not
//! generate (a deployment's own clients through the gateway). Without a
//! request load every agent carries none, and placement spreads weights
//! and follows call affinity alone ([`super::affinity`]).

use std::collections::{BTreeMap, HashMap};

use crate::config::{AgentIndex, AgentSet, CallTarget};

/// Messages a call puts on each of its ends: a request and a reply.
const MESSAGES_PER_CALL: f64 = 2.0;
/// Highest rate any one call or agent is counted at, a second: a deep
/// diamond of calls multiplies rates, and the sums must stay finite.
const MAX_RATE: f64 = 1e15;

/// The messages a second a request load puts on planned agents and on the
/// calls between them.
#[derive(Debug, Clone, Default)]
pub(super) struct Traffic {
    /// Where the requests enter, and how many a second (none: no load).
    entry: Option<(AgentIndex, f64)>,
    /// Each agent's messages a second: those of the calls it serves and
    /// of those it makes.
    messages: HashMap<AgentIndex, f64>,
    /// Calls a second between two agents, both directions summed, by
    /// agent.
    links: HashMap<AgentIndex, Vec<(AgentIndex, f64)>>,
}

impl Traffic {
    /// The traffic of `rate_per_s` requests a second to the first
    /// coordinator among `planned` (none without one, or at rate 0).
    /// `phases` are the start order's (callees in lower phases).
    pub(super) fn of_requests(
        agents: &AgentSet,
        planned: &[AgentIndex],
        phases: &[(AgentIndex, usize)],
        rate_per_s: f64,
    ) -> Self {
        let entry = agents.request_entry(|i| planned.contains(&i));
        let Some(entry) = entry.filter(|_| rate_per_s > 0.0) else {
            return Self::default();
        };
        let phase: HashMap<AgentIndex, usize> = phases.iter().copied().collect();
        let mut served: HashMap<AgentIndex, f64> = HashMap::new();
        let replicas: Vec<AgentIndex> = agents.replicas_of(entry).collect();
        for &replica in &replicas {
            served.insert(replica, rate_per_s / replicas.len() as f64);
        }
        let mut callers_first: Vec<AgentIndex> = planned.to_vec();
        callers_first.sort_by_key(|i| std::cmp::Reverse(phase.get(i).copied().unwrap_or(0)));
        let mut calls: BTreeMap<(AgentIndex, AgentIndex), f64> = BTreeMap::new();
        for caller in callers_first {
            let Some(&rate) = served.get(&caller) else {
                continue;
            };
            let caller_phase = phase.get(&caller).copied().unwrap_or(0);
            for call in agents.get(caller).calls() {
                let CallTarget::Local(first) = call else {
                    continue;
                };
                let targets: Vec<AgentIndex> = agents
                    .replicas_of(*first)
                    .filter(|callee| phase.get(callee).is_some_and(|&p| p < caller_phase))
                    .collect();
                for &callee in &targets {
                    let share = rate / targets.len() as f64;
                    let served = served.entry(callee).or_default();
                    *served = (*served + share).min(MAX_RATE);
                    let call = calls.entry((caller, callee)).or_default();
                    *call = (*call + share).min(MAX_RATE);
                }
            }
        }
        let mut traffic = Self {
            entry: Some((entry, rate_per_s)),
            ..Self::default()
        };
        for (agent, rate) in served {
            *traffic.messages.entry(agent).or_default() += MESSAGES_PER_CALL * rate;
        }
        for ((caller, callee), rate) in calls {
            *traffic.messages.entry(caller).or_default() += MESSAGES_PER_CALL * rate;
            traffic
                .links
                .entry(caller)
                .or_default()
                .push((callee, rate));
            traffic
                .links
                .entry(callee)
                .or_default()
                .push((caller, rate));
        }
        traffic
    }

    /// Where the requests enter, and how many a second (none: no load).
    pub(super) fn entry(&self) -> Option<(AgentIndex, f64)> {
        self.entry
    }

    /// `agent`'s messages a second (0: none).
    pub(super) fn messages(&self, agent: AgentIndex) -> f64 {
        self.messages.get(&agent).copied().unwrap_or(0.0)
    }

    /// The agents `agent` calls or is called by, with the calls a second
    /// between them.
    pub(super) fn links(&self, agent: AgentIndex) -> &[(AgentIndex, f64)] {
        self.links.get(&agent).map_or(&[], Vec::as_slice)
    }
}
