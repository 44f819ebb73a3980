//! Start order: callees start before their callers, in phases.
//!
//! Calls can form cycles (the seed's TTSService and StreamingTTSAgent call
//! each other). A depth-first search visits agents by (priority, name), so
//! the result does not depend on manifest order; every call that closes a
//! cycle back onto the search path is left out of the ordering and reported
//! as a [`CycleBreak`]. The rest is a DAG: an agent's phase is one more than
//! the highest phase of the agents it calls, and within a phase agents start
//! by priority, then name.

use std::collections::HashMap;

use super::CycleBreak;
use crate::config::{AgentIndex, AgentSet, CallTarget};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mark {
    New,
    OnPath,
    Done,
}

/// Returns the start order, each agent's phase and the calls left out.
pub(super) fn start_order(
    agents: &AgentSet,
    planned: &[AgentIndex],
) -> (Vec<AgentIndex>, Vec<(AgentIndex, usize)>, Vec<CycleBreak>) {
    let key = |i: &AgentIndex| {
        let a = agents.get(*i);
        (a.priority(), a.name().to_owned(), a.host().to_owned())
    };
    let mut nodes: Vec<AgentIndex> = planned.to_vec();
    nodes.sort_by_key(key);
    let callees: HashMap<AgentIndex, Vec<AgentIndex>> = nodes
        .iter()
        .map(|&n| {
            let mut out: Vec<AgentIndex> = agents
                .get(n)
                .calls()
                .iter()
                .flat_map(|c| match c {
                    // Every replica of a callee starts before the caller.
                    CallTarget::Local(i) if planned.contains(i) => Some(agents.replicas_of(*i)),
                    _ => None,
                })
                .flatten()
                .filter(|i| planned.contains(i))
                .collect();
            out.sort_by_key(key);
            (n, out)
        })
        .collect();
    let breaks = find_breaks(&nodes, &callees);
    let kept = |from: AgentIndex, to: AgentIndex| {
        !breaks.iter().any(|b| b.caller == from && b.callee == to)
    };
    let mut phase: HashMap<AgentIndex, usize> = HashMap::new();
    for &n in &nodes {
        phase_of(n, &callees, &kept, &mut phase);
    }
    let mut order = nodes.clone();
    order.sort_by_key(|i| (phase[i], key(i)));
    let phases = planned.iter().map(|i| (*i, phase[i])).collect();
    (order, phases, breaks)
}

fn find_breaks(
    nodes: &[AgentIndex],
    callees: &HashMap<AgentIndex, Vec<AgentIndex>>,
) -> Vec<CycleBreak> {
    let mut mark: HashMap<AgentIndex, Mark> = nodes.iter().map(|&n| (n, Mark::New)).collect();
    let mut breaks = Vec::new();
    for &root in nodes {
        if mark[&root] != Mark::New {
            continue;
        }
        // Explicit stack of (agent, next callee to look at): no recursion,
        // so a long chain of calls cannot overflow the thread's stack.
        let mut path: Vec<(AgentIndex, usize)> = vec![(root, 0)];
        mark.insert(root, Mark::OnPath);
        while let Some(&mut (node, ref mut next)) = path.last_mut() {
            let Some(&callee) = callees[&node].get(*next) else {
                mark.insert(node, Mark::Done);
                path.pop();
                continue;
            };
            *next += 1;
            match mark[&callee] {
                Mark::New => {
                    mark.insert(callee, Mark::OnPath);
                    path.push((callee, 0));
                }
                Mark::OnPath => {
                    let start = path
                        .iter()
                        .position(|(n, _)| *n == callee)
                        .expect("on-path agents are on the path");
                    let mut cycle: Vec<AgentIndex> =
                        path[start..].iter().map(|(n, _)| *n).collect();
                    cycle.push(callee);
                    breaks.push(CycleBreak {
                        cycle,
                        caller: node,
                        callee,
                    });
                }
                Mark::Done => {}
            }
        }
    }
    breaks
}

fn phase_of(
    node: AgentIndex,
    callees: &HashMap<AgentIndex, Vec<AgentIndex>>,
    kept: &dyn Fn(AgentIndex, AgentIndex) -> bool,
    phase: &mut HashMap<AgentIndex, usize>,
) -> usize {
    if let Some(&p) = phase.get(&node) {
        return p;
    }
    // Iterative post-order over the kept (acyclic) calls.
    let mut stack: Vec<(AgentIndex, bool)> = vec![(node, false)];
    while let Some((n, expanded)) = stack.pop() {
        if phase.contains_key(&n) {
            continue;
        }
        let next: Vec<AgentIndex> = callees[&n]
            .iter()
            .copied()
            .filter(|&c| kept(n, c))
            .collect();
        if expanded {
            let p = next.iter().map(|c| phase[c] + 1).max().unwrap_or(0);
            phase.insert(n, p);
        } else {
            stack.push((n, true));
            stack.extend(
                next.into_iter()
                    .filter(|c| !phase.contains_key(c))
                    .map(|c| (c, false)),
            );
        }
    }
    phase[&node]
}
