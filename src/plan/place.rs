//! Placement: one data-plane CPU per agent.
//!
//! Pinned agents are checked and placed first. The others are placed
//! heaviest first (ties: higher priority, then manifest order), each onto
//! a CPU of the first class in its fallback chain that has data-plane
//! CPUs. Of that class's CPUs, those at most the agent's own weight
//! heavier than the least-loaded one (at most [`DEFAULT_WEIGHT`], one
//! ordinary agent's, for a heavier agent) may take it, and the one its
//! calls pull hardest ([`Affinity`]: a serial caller and its callees
//! belong together) does; with no pull, the least-loaded one, then the one
//! with fewer agents, then the lowest id. Without calls this is the
//! longest-processing-time rule: simple, deterministic and within 4/3 of
//! the best possible spread; calls may cost one more ordinary agent's
//! weight of balance, never more (so a heavy callee does not join its
//! heavy caller while a CPU lighter by more than that stands by).
//!
//! Under a request load ([`Traffic`]: a daemon that drives requests
//! itself), the agents the load reaches are placed before the rest,
//! busiest first, by their messages a second rather than their weight:
//! each onto the CPU of its class that leaves the busiest CPU with the
//! fewest messages, a call to an agent already placed on another CPU
//! counted again at both ends ([`CROSSING`]), then the one that adds the
//! fewest in all (fewest calls across CPUs). That is the cost an executor
//! pays for them, where weights estimate work the agent itself does. The
//! rest follow by weight and affinity as above; their weights and the busy
//! agents' share one balance.
//!
//! Replicas of one agent go to distinct CPUs of their class: each replica
//! takes the least-loaded CPU that holds none of its siblings yet. Where
//! the class has fewer CPUs than replicas (or the entry pins them all to
//! one `cpu`), replicas share, and the plan says so in a warning.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use super::PlanError;
use super::affinity::Affinity;
use super::traffic::Traffic;
use crate::config::{AgentIndex, AgentSet, ClassWish, DEFAULT_WEIGHT, Placement};
use crate::topology::{CpuClass, CpuId, CpuSet, Topology};

/// The result of placement.
pub(super) struct Placed {
    /// Agent and CPU, in the order of the planned agents.
    pub cpus: Vec<(AgentIndex, CpuId)>,
    /// Warnings for agents placed outside their class.
    pub fallbacks: Vec<String>,
    /// Each data-plane CPU's messages a second under the request load
    /// (all zero without one).
    pub messages: Vec<(CpuId, f64)>,
}

/// What a call between two CPUs costs each end beyond the call's own two
/// messages, in messages: each of them once more, for its ring slot
/// written or read, its pump pass and its wake-up. (The seed's mesh at
/// 70,000 req/s: the ring's `Producer::try_send`, `next_frame`,
/// `release_idle` and `any_frames` took 15% of the executors' samples for
/// the 37% of messages that crossed, about two thirds of a local
/// message's cost again before the wake-up.)
const CROSSING: f64 = 2.0;

#[derive(Clone, Copy)]
struct Load {
    cpu: CpuId,
    weight: f64,
    /// Messages a second under the plan's request load ([`Traffic`]).
    messages: f64,
    agents: usize,
}

pub(super) fn place(
    topology: &Topology,
    agents: &AgentSet,
    planned: &[AgentIndex],
    traffic: &Traffic,
) -> Result<Placed, PlanError> {
    let data_plane = topology.data_plane();
    let mut loads: Vec<Load> = data_plane
        .iter()
        .map(|cpu| Load {
            cpu,
            weight: 0.0,
            messages: 0.0,
            agents: 0,
        })
        .collect();
    let mut chosen: Vec<(AgentIndex, CpuId)> = Vec::with_capacity(planned.len());
    let mut floating: Vec<(AgentIndex, ClassWish)> = Vec::new();
    for &index in planned {
        let agent = agents.get(index);
        match agent.placement() {
            Placement::Cpu(cpu) => {
                let cpu = pinned_cpu(topology, agents, index, cpu)?;
                add(&mut loads, cpu, agent.weight());
                carry(&mut loads, traffic, &chosen, index, cpu);
                chosen.push((index, cpu));
            }
            Placement::Class(wish) => floating.push((index, wish)),
        }
    }
    // Agents the request load reaches first, busiest first; then the
    // rest, heaviest first.
    floating.sort_by(|(a, _), (b, _)| {
        let (a_spec, b_spec) = (agents.get(*a), agents.get(*b));
        traffic
            .messages(*b)
            .total_cmp(&traffic.messages(*a))
            .then(b_spec.weight().total_cmp(&a_spec.weight()))
            .then(a_spec.priority().cmp(&b_spec.priority()))
            .then(a.cmp(b))
    });
    let affinity = Affinity::new(agents, planned);
    let mut fallbacks = Vec::new();
    for (index, wish) in floating {
        let (class, pool) = pool_for(topology, wish);
        if let Some(warning) = fallback_warning(wish, class, &agents.display_name(index)) {
            fallbacks.push(warning);
        }
        let best = if traffic.messages(index) > 0.0 {
            choose_by_traffic(agents, traffic, &loads, &chosen, index, &pool)
        } else {
            choose(agents, &affinity, &loads, &chosen, index, &pool)
        };
        add(&mut loads, best, agents.get(index).weight());
        carry(&mut loads, traffic, &chosen, index, best);
        chosen.push((index, best));
    }
    fallbacks.extend(shared_replicas(agents, &chosen));
    let order = |i: &AgentIndex| planned.iter().position(|p| p == i);
    chosen.sort_by_key(|(i, _)| order(i));
    Ok(Placed {
        cpus: chosen,
        fallbacks,
        messages: loads.iter().map(|l| (l.cpu, l.messages)).collect(),
    })
}

/// The CPUs of `pool` that may take `index`: those holding none of its
/// replicas (all of them, if every one does).
fn candidates<'a>(
    agents: &AgentSet,
    loads: &'a [Load],
    chosen: &[(AgentIndex, CpuId)],
    index: AgentIndex,
    pool: &CpuSet,
) -> Vec<&'a Load> {
    let taken = |cpu: CpuId| {
        agents
            .replicas_of(index)
            .any(|sibling| sibling != index && chosen.contains(&(sibling, cpu)))
    };
    let free: Vec<&Load> = loads
        .iter()
        .filter(|l| pool.contains(l.cpu) && !taken(l.cpu))
        .collect();
    if free.is_empty() {
        loads.iter().filter(|l| pool.contains(l.cpu)).collect()
    } else {
        free
    }
}

/// The CPU of `pool` that takes `index`, an agent the request load
/// reaches: of its [`candidates`], the one that leaves the busiest CPU
/// with the fewest messages a second, its calls to agents already placed
/// elsewhere counted at both ends ([`carry`]); then the one that adds the
/// fewest in all (the fewest calls between CPUs); then the lightest.
fn choose_by_traffic(
    agents: &AgentSet,
    traffic: &Traffic,
    loads: &[Load],
    chosen: &[(AgentIndex, CpuId)],
    index: AgentIndex,
    pool: &CpuSet,
) -> CpuId {
    let after = |cpu: CpuId| {
        let mut projected: Vec<Load> = loads.to_vec();
        carry(&mut projected, traffic, chosen, index, cpu);
        let busiest = projected.iter().map(|l| l.messages).fold(0.0, f64::max);
        let total: f64 = projected.iter().map(|l| l.messages).sum();
        (busiest, total)
    };
    candidates(agents, loads, chosen, index, pool)
        .into_iter()
        .map(|load| (after(load.cpu), load))
        .min_by(|((busy_a, total_a), a), ((busy_b, total_b), b)| {
            busy_a
                .total_cmp(busy_b)
                .then(total_a.total_cmp(total_b))
                .then(lighter(a, b))
        })
        .map(|(_, load)| load.cpu)
        .expect("validation guarantees a non-empty data plane")
}

/// Adds the messages `index` brings to `cpu`: its own, and for each call
/// between it and an agent already placed on another CPU, the call's
/// messages once more at each end ([`CROSSING`]).
fn carry(
    loads: &mut [Load],
    traffic: &Traffic,
    chosen: &[(AgentIndex, CpuId)],
    index: AgentIndex,
    cpu: CpuId,
) {
    let mut add_to = |at: CpuId, messages: f64| {
        if let Some(load) = loads.iter_mut().find(|l| l.cpu == at) {
            load.messages += messages;
        }
    };
    add_to(cpu, traffic.messages(index));
    for &(other, calls) in traffic.links(index) {
        match chosen.iter().find(|(placed, _)| *placed == other) {
            Some(&(_, there)) if there != cpu => {
                add_to(cpu, CROSSING * calls);
                add_to(there, CROSSING * calls);
            }
            _ => {}
        }
    }
}

/// The CPU of `pool` that takes `index`: of its [`candidates`], the one
/// its calls pull hardest among those at most its own weight (at most
/// [`DEFAULT_WEIGHT`]) heavier than the lightest; with no pull, the
/// lightest.
fn choose(
    agents: &AgentSet,
    affinity: &Affinity,
    loads: &[Load],
    chosen: &[(AgentIndex, CpuId)],
    index: AgentIndex,
    pool: &CpuSet,
) -> CpuId {
    let candidates = candidates(agents, loads, chosen, index, pool);
    let lightest = candidates
        .iter()
        .min_by(|a, b| lighter(a, b))
        .expect("validation guarantees a non-empty data plane");
    // Balance first, calls next: affinity may cost this agent's weight of
    // balance, at most an ordinary agent's (so two heavy agents are not
    // piled onto one CPU while another stands empty).
    let limit = lightest.weight + agents.get(index).weight().min(DEFAULT_WEIGHT);
    let pulls = affinity.pulls(index, chosen);
    let pull = |load: &Load| pulls.get(&load.cpu).copied().unwrap_or_default();
    candidates
        .iter()
        .filter(|l| l.weight <= limit)
        .max_by(|a, b| pull(a).order(&pull(b)).then(lighter(b, a)))
        .map_or(lightest.cpu, |l| l.cpu)
}

/// A warning for each replicated agent whose replicas share a CPU.
fn shared_replicas(agents: &AgentSet, chosen: &[(AgentIndex, CpuId)]) -> Vec<String> {
    let mut by_service: BTreeMap<AgentIndex, Vec<(AgentIndex, CpuId)>> = BTreeMap::new();
    for &(index, cpu) in chosen {
        if agents.get(index).replicas().count() > 1 {
            let first = agents.replicas_of(index).next().unwrap_or(index);
            by_service.entry(first).or_default().push((index, cpu));
        }
    }
    by_service
        .into_iter()
        .filter_map(|(first, mut placed)| {
            placed.sort();
            let mut cpus: Vec<u32> = placed.iter().map(|(_, cpu)| cpu.0).collect();
            cpus.sort_unstable();
            cpus.dedup();
            (cpus.len() < placed.len()).then(|| {
                let list: Vec<String> = placed
                    .iter()
                    .map(|(i, cpu)| format!("{} on {}", agents.display_name(*i), cpu.0))
                    .collect();
                format!(
                    "agent {} has {} replicas but only {} distinct CPU(s) of its class or pin; replicas share: {}",
                    agents.service_name(first),
                    placed.len(),
                    cpus.len(),
                    list.join(", ")
                )
            })
        })
        .collect()
}

fn lighter(a: &Load, b: &Load) -> Ordering {
    a.weight
        .total_cmp(&b.weight)
        .then(a.agents.cmp(&b.agents))
        .then(a.cpu.cmp(&b.cpu))
}

fn add(loads: &mut [Load], cpu: CpuId, weight: f64) {
    let load = loads
        .iter_mut()
        .find(|l| l.cpu == cpu)
        .expect("agents are placed on data-plane CPUs only");
    load.weight += weight;
    load.agents += 1;
}

fn pinned_cpu(
    topology: &Topology,
    agents: &AgentSet,
    index: AgentIndex,
    cpu: u32,
) -> Result<CpuId, PlanError> {
    let agent = agents.get(index);
    let at = agent.placement_location().clone();
    let id = CpuId(cpu);
    let data_plane = topology.data_plane().to_string();
    if topology.class_of(id).is_none() {
        return Err(PlanError::CpuNotOnHost {
            at,
            agent: agents.display_name(index),
            cpu,
            host: topology.host().to_owned(),
            data_plane,
        });
    }
    if !topology.data_plane().contains(id) {
        return Err(PlanError::ForbiddenCpu {
            at,
            agent: agents.display_name(index),
            cpu,
            role: topology
                .role_of(id)
                .map_or("none".to_owned(), |r| r.to_string()),
            topology: topology.path().display().to_string(),
            data_plane,
        });
    }
    Ok(id)
}

/// The class an agent lands on and the data-plane CPUs of that class.
fn pool_for(topology: &Topology, wish: ClassWish) -> (Option<CpuClass>, CpuSet) {
    let chain: &[CpuClass] = match wish {
        ClassWish::P => &[CpuClass::P, CpuClass::Uniform, CpuClass::E],
        ClassWish::E => &[CpuClass::E, CpuClass::Uniform, CpuClass::P],
        ClassWish::Any => return (None, topology.data_plane().clone()),
    };
    chain
        .iter()
        .map(|&class| {
            (
                Some(class),
                topology
                    .class_cpus(class)
                    .intersection(topology.data_plane()),
            )
        })
        .find(|(_, pool)| !pool.is_empty())
        .expect("validation guarantees a non-empty data plane")
}

/// Falling back to uniform is what a non-hybrid host means and goes
/// unremarked; landing on the opposite class is worth a warning.
fn fallback_warning(wish: ClassWish, got: Option<CpuClass>, agent: &str) -> Option<String> {
    let (wanted, other) = match (wish, got) {
        (ClassWish::P, Some(CpuClass::E)) => ("P", "E"),
        (ClassWish::E, Some(CpuClass::P)) => ("E", "P"),
        _ => return None,
    };
    Some(format!(
        "agent {agent} wants class {wanted}, but the data plane has no {wanted} or uniform CPU; placed on {other}"
    ))
}
