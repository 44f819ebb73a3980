//! `pinwheel plan` output: a table for people, JSON for programs.

use std::fmt::Write as _;

use serde_json::json;

use super::{Plan, Route, RouteKind};
use crate::config::AgentSet;
use crate::topology::{CpuClass, Topology};

/// The plan as JSON: `{"placements": [..], "rings": [..], "start_order":
/// [..], "warnings": [..], ..}`.
pub fn render_json(plan: &Plan, topology: &Topology, agents: &AgentSet) -> String {
    let name = |i| agents.display_name(i);
    let route = |r: &Route| {
        let mut v = json!({"from": name(r.from), "to": name(r.to), "kind": kind_word(&r.kind)});
        if let RouteKind::Topic(topic) = &r.kind {
            v["topic"] = json!(topic);
        }
        v
    };
    let value = json!({
        "host": plan.host(),
        "topology": topology.path().display().to_string(),
        "agents": plan.placements().len(),
        "placements": plan.placements().iter().map(|p| json!({
            "agent": name(p.agent),
            "host": agents.get(p.agent).host(),
            "cpu": p.cpu,
            "class": p.class,
            "phase": p.phase,
        })).collect::<Vec<_>>(),
        "rings": plan.rings().iter().map(|r| json!({
            "from_cpu": r.from_cpu,
            "to_cpu": r.to_cpu,
            "routes": r.routes.iter().map(route).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "local_routes": plan.local_routes().iter().map(route).collect::<Vec<_>>(),
        "remote_routes": plan.remote_routes().iter().map(|r| json!({
            "from": name(r.from),
            "to": agents.target_name(&r.to),
        })).collect::<Vec<_>>(),
        "start_order": plan.start_order().iter().map(|&i| name(i)).collect::<Vec<_>>(),
        "warnings": plan.warnings(agents),
    });
    let mut text = serde_json::to_string_pretty(&value).expect("a JSON value always serializes");
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
        "data plane: CPUs {} ({})   control: {control}   housekeeping: {housekeeping}\n",
        topology.data_plane(),
        classes.join(", ")
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
