//! `pinwheel plan` output: a table for people, JSON for programs.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::{Plan, RemoteRoute, Route, RouteKind};
use crate::config::AgentSet;
use crate::topology::{CpuClass, Topology};

/// The plan as `pinwheel plan --format json` prints it and `GET /v1/plan`
/// serves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanDoc {
    /// The host it was planned for.
    pub host: String,
    /// The topology file.
    pub topology: String,
    /// Agents placed.
    pub agents: usize,
    /// Each agent's CPU, class and start phase.
    pub placements: Vec<PlacedAgent>,
    /// Rings between CPUs and the routes each carries.
    pub rings: Vec<PlannedRing>,
    /// Routes between agents on one CPU (local queues).
    pub local_routes: Vec<PlannedRoute>,
    /// Calls to agents of other hosts.
    pub remote_routes: Vec<PlannedRemote>,
    /// Calls to agents of other hosts that are not made: the topology has
    /// no `[cluster]` to carry them (the plan warns of each).
    #[serde(default)]
    pub unreachable_routes: Vec<PlannedRemote>,
    /// The request load agents were spread for (`pinwheel plan --rate`,
    /// a daemon driving requests), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_load: Option<PlannedLoad>,
    /// Agents in start order.
    pub start_order: Vec<String>,
    /// What the planner had to bend (cycle breaks, ...).
    pub warnings: Vec<String>,
}

/// One agent's place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlacedAgent {
    /// Its name.
    pub agent: String,
    /// Its host in the manifest.
    pub host: String,
    /// Its CPU.
    pub cpu: u32,
    /// That CPU's class.
    pub class: CpuClass,
    /// Its start phase.
    pub phase: usize,
}

/// A ring between two CPUs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedRing {
    /// Producer's CPU.
    pub from_cpu: u32,
    /// Consumer's CPU.
    pub to_cpu: u32,
    /// Routes it carries.
    pub routes: Vec<PlannedRoute>,
}

/// A route between two agents of this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedRoute {
    /// Sender.
    pub from: String,
    /// Receiver.
    pub to: String,
    /// `request`, `reply` or `topic`.
    pub kind: String,
    /// The topic of a `topic` route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
}

/// The request load a plan spreads agents for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedLoad {
    /// Requests a second.
    pub rate_per_s: f64,
    /// The agent they go to.
    pub entry: String,
    /// Each data-plane CPU's messages a second, a call between two CPUs
    /// counted again at each end.
    pub messages_per_s: Vec<CpuMessages>,
}

/// One CPU's messages a second under a plan's request load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuMessages {
    /// The CPU.
    pub cpu: u32,
    /// Its messages a second.
    pub per_s: f64,
}

/// A call to an agent on another host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedRemote {
    /// Caller.
    pub from: String,
    /// Callee (`Name@host`).
    pub to: String,
}

/// The plan as a [`PlanDoc`].
pub fn plan_doc(plan: &Plan, topology: &Topology, agents: &AgentSet) -> PlanDoc {
    let name = |i| agents.display_name(i);
    let route = |r: &Route| PlannedRoute {
        from: name(r.from),
        to: name(r.to),
        kind: kind_word(&r.kind).to_owned(),
        topic: match &r.kind {
            RouteKind::Topic(topic) => Some(topic.clone()),
            _ => None,
        },
    };
    let remote = |r: &RemoteRoute| PlannedRemote {
        from: name(r.from),
        to: agents.target_name(&r.to),
    };
    PlanDoc {
        host: plan.host().to_string(),
        topology: topology.path().display().to_string(),
        agents: plan.placements().len(),
        placements: plan
            .placements()
            .iter()
            .map(|p| PlacedAgent {
                agent: name(p.agent),
                host: agents.get(p.agent).host().to_owned(),
                cpu: p.cpu.0,
                class: p.class,
                phase: p.phase,
            })
            .collect(),
        rings: plan
            .rings()
            .iter()
            .map(|r| PlannedRing {
                from_cpu: r.from_cpu.0,
                to_cpu: r.to_cpu.0,
                routes: r.routes.iter().map(route).collect(),
            })
            .collect(),
        local_routes: plan.local_routes().iter().map(route).collect(),
        remote_routes: plan.remote_routes().iter().map(remote).collect(),
        unreachable_routes: plan.unreachable().iter().map(remote).collect(),
        request_load: plan.request_load().map(|load| PlannedLoad {
            rate_per_s: load.rate_per_s,
            entry: name(load.entry),
            messages_per_s: load
                .messages_per_s
                .iter()
                .map(|&(cpu, per_s)| CpuMessages { cpu: cpu.0, per_s })
                .collect(),
        }),
        start_order: plan.start_order().iter().map(|&i| name(i)).collect(),
        warnings: plan.warnings(agents),
    }
}

/// The plan as JSON: [`PlanDoc`], pretty-printed.
pub fn render_json(plan: &Plan, topology: &Topology, agents: &AgentSet) -> String {
    let doc = plan_doc(plan, topology, agents);
    let mut text = serde_json::to_string_pretty(&doc).expect("a plan document always serializes");
    text.push('\n');
    text
}

fn kind_word(kind: &RouteKind) -> &'static str {
    match kind {
        RouteKind::Request => "request",
        RouteKind::Reply => "reply",
        RouteKind::Topic(_) => "topic",
    }
}

/// The plan as a table.
pub fn render_table(plan: &Plan, topology: &Topology, agents: &AgentSet) -> String {
    let mut out = String::new();
    header(&mut out, plan, topology, agents);
    cpu_table(&mut out, plan, topology, agents);
    rings(&mut out, plan, agents);
    start_order(&mut out, plan, agents);
    let warnings = plan.warnings(agents);
    if !warnings.is_empty() {
        let _ = writeln!(out, "\nwarnings ({}):", warnings.len());
        for warning in warnings {
            let _ = writeln!(out, "  - {warning}");
        }
    }
    out
}

fn header(out: &mut String, plan: &Plan, topology: &Topology, agents: &AgentSet) {
    let files: Vec<String> = agents
        .files()
        .iter()
        .map(|f| f.display().to_string())
        .collect();
    let _ = writeln!(
        out,
        "plan for host {} ({}): {} agents from {}",
        plan.host(),
        topology.path().display(),
        plan.placements().len(),
        files.join(", ")
    );
    let classes: Vec<String> = [CpuClass::P, CpuClass::E, CpuClass::Uniform]
        .into_iter()
        .map(|c| {
            (
                c,
                topology.class_cpus(c).intersection(topology.data_plane()),
            )
        })
        .filter(|(_, set)| !set.is_empty())
        .map(|(c, set)| format!("{c} {set}"))
        .collect();
    let control = match topology.control() {
        Some(cpu) => format!("CPU {cpu}"),
        None => format!(
            "shares CPU {}",
            topology.data_plane().first().map_or(0, |c| c.0)
        ),
    };
    let housekeeping = if topology.housekeeping().is_empty() {
        "floats off the data plane".to_owned()
    } else {
        format!("CPU {}", topology.housekeeping())
    };
    let _ = writeln!(
        out,
        "data plane: CPUs {} ({})   control: {control}   housekeeping: {housekeeping}",
        topology.data_plane(),
        classes.join(", ")
    );
    request_load(out, plan, agents);
    out.push('\n');
}

/// The request load's line: requests in, and each CPU's messages.
fn request_load(out: &mut String, plan: &Plan, agents: &AgentSet) {
    let Some(load) = plan.request_load() else {
        return;
    };
    let cpus: Vec<String> = load
        .messages_per_s
        .iter()
        .map(|(cpu, per_s)| format!("CPU {cpu} {per_s:.0}"))
        .collect();
    let _ = writeln!(
        out,
        "request load: {} req/s to {}; messages/s (calls between CPUs counted at both ends): {}",
        load.rate_per_s,
        agents.display_name(load.entry),
        cpus.join(", ")
    );
}

fn cpu_table(out: &mut String, plan: &Plan, topology: &Topology, agents: &AgentSet) {
    let _ = writeln!(out, "{:>4}  {:<7}  {:>5}  AGENTS", "CPU", "CLASS", "LOAD");
    for cpu in topology.data_plane().iter() {
        let here: Vec<_> = plan.placements().iter().filter(|p| p.cpu == cpu).collect();
        let load: f64 = here.iter().map(|p| agents.get(p.agent).weight()).sum();
        let names: Vec<String> = here.iter().map(|p| agents.display_name(p.agent)).collect();
        let class = topology.class_of(cpu).map_or("?", CpuClass::as_str);
        let prefix = format!("{cpu:>4}  {class:<7}  {load:>5.1}  ");
        out.push_str(&wrapped(&prefix, &names, ","));
    }
}

/// `prefix` then `items`, each but the last followed by `separator`, wrapped at [`WIDTH`]
/// columns with continuation lines indented under the first item.
fn wrapped(prefix: &str, items: &[String], separator: &str) -> String {
    let indent = " ".repeat(prefix.len());
    let mut out = String::from(prefix);
    let mut column = prefix.len();
    for (i, item) in items.iter().enumerate() {
        let piece = if i + 1 < items.len() {
            format!("{item}{separator}")
        } else {
            item.clone()
        };
        if column > indent.len() && column + 1 + piece.len() > WIDTH {
            out.push('\n');
            out.push_str(&indent);
            column = indent.len();
        } else if column > indent.len() {
            out.push(' ');
            column += 1;
        }
        out.push_str(&piece);
        column += piece.len();
    }
    out.push('\n');
    out
}

/// Line width of the table.
const WIDTH: usize = 100;

fn rings(out: &mut String, plan: &Plan, agents: &AgentSet) {
    let routes: usize = plan.rings().iter().map(|r| r.routes.len()).sum();
    let _ = writeln!(
        out,
        "\nrings: {} between CPUs carrying {routes} routes; {} routes stay on one CPU (local queue)",
        plan.rings().len(),
        plan.local_routes().len()
    );
    for ring in plan.rings() {
        let routes: Vec<String> = ring
            .routes
            .iter()
            .map(|r| {
                let what = match &r.kind {
                    RouteKind::Topic(topic) => format!("topic {topic}"),
                    other => kind_word(other).to_owned(),
                };
                format!(
                    "{} -> {} {what}",
                    agents.display_name(r.from),
                    agents.display_name(r.to)
                )
            })
            .collect();
        let prefix = format!("  {:>3} -> {:<3}  ", ring.from_cpu, ring.to_cpu);
        out.push_str(&wrapped(&prefix, &routes, ";"));
    }
    if !plan.remote_routes().is_empty() {
        let _ = writeln!(out, "\nremote calls (through the cluster):");
        for remote in plan.remote_routes() {
            let _ = writeln!(
                out,
                "  {} -> {}",
                agents.display_name(remote.from),
                agents.target_name(&remote.to)
            );
        }
    }
    if !plan.unreachable().is_empty() {
        let _ = writeln!(out, "\ncalls to other hosts, not made (no cluster):");
        for remote in plan.unreachable() {
            let _ = writeln!(
                out,
                "  {} -> {}",
                agents.display_name(remote.from),
                agents.target_name(&remote.to)
            );
        }
    }
}

fn start_order(out: &mut String, plan: &Plan, agents: &AgentSet) {
    let phases = plan
        .placements()
        .iter()
        .map(|p| p.phase)
        .max()
        .map_or(0, |m| m + 1);
    let _ = writeln!(out, "\nstart order ({phases} phases):");
    for phase in 0..phases {
        let names: Vec<String> = plan
            .start_order()
            .iter()
            .filter(|&&i| plan.placement(i).is_some_and(|p| p.phase == phase))
            .map(|&i| agents.display_name(i))
            .collect();
        out.push_str(&wrapped(&format!("  {phase:>2}: "), &names, ","));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_keeps_lines_within_the_width_and_every_item() {
        let items: Vec<String> = (0..40).map(|i| format!("Agent{i}")).collect();
        let sut = wrapped("   0  P  ", &items, ",");
        assert!(sut.lines().all(|l| l.len() <= WIDTH), "{sut}");
        assert!(
            sut.lines().skip(1).all(|l| l.starts_with("         A")),
            "{sut}"
        );
        let joined: String = sut.split_whitespace().skip(2).collect();
        assert_eq!(joined, items.join(","));
    }
}
