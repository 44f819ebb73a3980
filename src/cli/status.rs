//! `pinwheel status`: a running daemon's agents, GPUs and health, read
//! from its admin API.

use std::fmt::Write as _;
use std::io::Write;
use std::net::SocketAddr;

use clap::Args;
use serde_json::{Value, json};

use super::client::AdminClient;
use crate::error::DaemonError;
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

pub(super) fn run(args: &StatusArgs, out: &mut dyn Write) -> Result<(), DaemonError> {
    let client = AdminClient::new(args.admin);
    let health = client.get("/health")?;
    let agents = client.get("/v1/agents")?;
    let gpus = client.get("/v1/gpus")?;
    let text = if args.json {
        let all = json!({ "health": health, "agents": agents, "gpus": gpus });
        format!("{all:#}\n")
    } else {
        render(&health, &agents, &gpus)
    };
    out.write_all(text.as_bytes())?;
    Ok(())
}

/// The three answers as tables.
pub fn render(health: &Value, agents: &Value, gpus: &Value) -> String {
    let mut out = String::new();
    let host = agents["host"].as_str().unwrap_or("?");
    let status = health["status"].as_str().unwrap_or("?");
    let _ = writeln!(out, "host {host}: {status}");
    for reason in health["reasons"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  {}: {}",
            reason["reason"].as_str().unwrap_or("?"),
            reason["detail"].as_str().unwrap_or("")
        );
    }
    let _ = writeln!(
        out,
        "\n{:<34} {:>4} {:<9} {:>10} {:>10} {:>8} {:<10} {:>8}  last exit",
        "agent", "cpu", "state", "msgs/s", "p99", "pid", "user", "restarts"
    );
    for agent in agents["agents"].as_array().into_iter().flatten() {
        let pid = agent["pid"]
            .as_u64()
            .map_or_else(|| "-".to_owned(), |p| p.to_string());
        let _ = writeln!(
            out,
            "{:<34} {:>4} {:<9} {:>10.1} {:>10} {:>8} {:<10} {:>8}  {}",
            agent["name"].as_str().unwrap_or("?"),
            agent["cpu"].as_u64().unwrap_or(0),
            agent["state"].as_str().unwrap_or("?"),
            agent["msgs_per_s"].as_f64().unwrap_or(0.0),
            duration(agent["p99_ns"].as_u64().unwrap_or(0)),
            pid,
            agent["user"].as_str().unwrap_or("-"),
            agent["restarts"].as_u64().unwrap_or(0),
            agent["last_exit"].as_str().unwrap_or("-"),
        );
    }
    let gpus = gpus["gpus"].as_array().cloned().unwrap_or_default();
    if gpus.is_empty() {
        out.push_str("\nno GPUs\n");
        return out;
    }
    let _ = writeln!(
        out,
        "\n{:<4} {:<24} {:>10} {:>10} {:>10}  resident",
        "gpu", "name", "used MiB", "free MiB", "total MiB"
    );
    for gpu in &gpus {
        let resident: Vec<String> = gpu["resident"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                let pin = if m["pinned"].as_bool() == Some(true) {
                    " (pinned)"
                } else {
                    ""
                };
                format!("{}{pin}", m["model"].as_str().unwrap_or("?"))
            })
            .collect();
        let _ = writeln!(
            out,
            "{:<4} {:<24} {:>10} {:>10} {:>10}  {}",
            gpu["gpu"].as_u64().unwrap_or(0),
            gpu["name"].as_str().unwrap_or("?"),
            gpu["used_mib"].as_u64().unwrap_or(0),
            gpu["free_mib"].as_u64().unwrap_or(0),
            gpu["total_mib"].as_u64().unwrap_or(0),
            resident.join(", ")
        );
    }
    out
}

fn duration(ns: u64) -> String {
    match ns {
        0 => "-".to_owned(),
        n if n < 1_000 => format!("{n} ns"),
        n if n < 1_000_000 => format!("{:.1} us", n as f64 / 1e3),
        n => format!("{:.2} ms", n as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tables_show_reasons_agents_and_resident_models() {
        let health =
            json!({"status": "degraded", "reasons": [{"reason": "no_pmu", "detail": "d"}]});
        let agents = json!({"host": "vm", "agents": [{"name": "STTService", "cpu": 1, "state": "up", "msgs_per_s": 12.5, "p99_ns": 2_500_000}]});
        let gpus = json!({"gpus": [{"gpu": 0, "name": "sim-24g", "used_mib": 3100, "free_mib": 21476, "total_mib": 24576, "resident": [{"model": "whisper", "pinned": true}]}]});
        let text = render(&health, &agents, &gpus);
        assert!(
            text.starts_with("host vm: degraded\n  no_pmu: d\n"),
            "{text}"
        );
        assert!(text.contains("STTService"), "{text}");
        assert!(text.contains("2.50 ms"), "{text}");
        assert!(text.contains("whisper (pinned)"), "{text}");
    }
}
