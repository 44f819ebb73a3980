//! `pinwheel status`: a running daemon's agents, GPUs and health, read
//! from its admin API.

use std::fmt::Write as _;
use std::io::Write;
use std::net::SocketAddr;

use clap::Args;
use serde::Serialize;

use super::client::AdminClient;
use crate::error::DaemonError;
use crate::latency::format_ns;
use crate::observe::api::{AgentsResponse, GpusResponse, HealthReport};
use crate::topology::DEFAULT_ADMIN_ADDR;

/// `pinwheel status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The daemon's admin API.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_ADMIN_ADDR)]
    pub admin: SocketAddr,
    /// Print the three answers as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `pinwheel status --json`: the three answers under one object.
#[derive(Debug, Serialize)]
struct StatusJson<'a> {
    health: &'a HealthReport,
    agents: &'a AgentsResponse,
    gpus: &'a GpusResponse,
}

pub(super) fn run(args: &StatusArgs, out: &mut dyn Write) -> Result<(), DaemonError> {
    let client = AdminClient::new(args.admin);
    let health: HealthReport = client.get("/health")?;
    let agents: AgentsResponse = client.get("/v1/agents")?;
    let gpus: GpusResponse = client.get("/v1/gpus")?;
    let text = if args.json {
        let all = StatusJson {
            health: &health,
            agents: &agents,
            gpus: &gpus,
        };
        let mut text = serde_json::to_string_pretty(&all).expect("API answers always serialize");
        text.push('\n');
        text
    } else {
        render(&health, &agents, &gpus)
    };
    out.write_all(text.as_bytes())?;
    Ok(())
}

/// The three answers as tables.
pub fn render(health: &HealthReport, agents: &AgentsResponse, gpus: &GpusResponse) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "host {}: {}", agents.host, health.status.as_str());
    for reason in &health.reasons {
        let _ = writeln!(out, "  {}: {}", reason.reason, reason.detail);
    }
    let _ = writeln!(
        out,
        "\n{:<34} {:>4} {:<9} {:>10} {:>10} {:>8} {:<10} {:>8}  last exit",
        "agent", "cpu", "state", "msgs/s", "p99", "pid", "user", "restarts"
    );
    for agent in &agents.agents {
        let pid = agent.pid.map_or_else(|| "-".to_owned(), |p| p.to_string());
        let _ = writeln!(
            out,
            "{:<34} {:>4} {:<9} {:>10.1} {:>10} {:>8} {:<10} {:>8}  {}",
            agent.name,
            agent.cpu,
            agent.state.as_str(),
            agent.msgs_per_s,
            latency(agent.p99_ns),
            pid,
            agent.user.as_deref().unwrap_or("-"),
            agent.restarts,
            agent.last_exit.as_deref().unwrap_or("-"),
        );
    }
    if gpus.gpus.is_empty() {
        out.push_str("\nno GPUs\n");
        return out;
    }
    let _ = writeln!(
        out,
        "\n{:<4} {:<24} {:>10} {:>10} {:>10}  resident",
        "gpu", "name", "used MiB", "free MiB", "total MiB"
    );
    for gpu in &gpus.gpus {
        let resident: Vec<String> = gpu
            .resident
            .iter()
            .map(|m| {
                let pin = if m.pinned { " (pinned)" } else { "" };
                format!("{}{pin}", m.model)
            })
            .collect();
        let _ = writeln!(
            out,
            "{:<4} {:<24} {:>10} {:>10} {:>10}  {}",
            gpu.gpu,
            gpu.name,
            gpu.used_mib,
            gpu.free_mib,
            gpu.total_mib,
            resident.join(", ")
        );
    }
    out
}

/// A latency for a table: `-` before the first message.
pub(super) fn latency(ns: u64) -> String {
    if ns == 0 {
        "-".to_owned()
    } else {
        format_ns(ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::api::{
        AgentState, AgentStatus, GpuStatus, HealthStatus, Reason, ResidentModel,
    };

    #[test]
    fn the_tables_show_reasons_agents_and_resident_models() {
        let health = HealthReport {
            status: HealthStatus::Degraded,
            reasons: vec![Reason {
                reason: "no_pmu".into(),
                detail: "d".into(),
            }],
        };
        let agents = AgentsResponse {
            host: "vm".into(),
            agents: vec![AgentStatus {
                name: "STTService".into(),
                cpu: 1,
                observed_cpu: Some(1),
                state: AgentState::Up,
                msgs_per_s: 12.5,
                p50_ns: 1_000_000,
                p99_ns: 2_500_000,
                handled: 10,
                failures: 0,
                restarts: 2,
                pid: Some(4242),
                user: Some("nobody".into()),
                last_exit: Some("killed by SIGKILL".into()),
                anomalies: Vec::new(),
                fault: None,
            }],
            executors: Vec::new(),
            legacy: Vec::new(),
            legacy_ports: Vec::new(),
        };
        let gpus = GpusResponse {
            gpus: vec![GpuStatus {
                gpu: 0,
                name: "sim-24g".into(),
                uuid: "GPU-0".into(),
                simulated: true,
                total_mib: 24576,
                used_mib: 3100,
                free_mib: 21476,
                util_pct: None,
                planned_mib: 3100,
                budget_mib: 23000,
                resident: vec![ResidentModel {
                    model: "whisper".into(),
                    vram_mib: 3100,
                    pinned: true,
                }],
            }],
            ..GpusResponse::default()
        };
        let text = render(&health, &agents, &gpus);
        assert!(
            text.starts_with("host vm: degraded\n  no_pmu: d\n"),
            "{text}"
        );
        assert!(text.contains("STTService"), "{text}");
        assert!(text.contains("2.50 ms"), "{text}");
        assert!(text.contains("whisper (pinned)"), "{text}");
        assert!(
            text.contains("4242 nobody            2  killed by SIGKILL"),
            "{text}"
        );
    }
}
