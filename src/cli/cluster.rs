//! `pinwheel cluster status` and `pinwheel gpu place`: the cluster as a
//! running daemon sees it, and placing a model through it, over the admin
//! API (`GET /v1/cluster`, `GET /health`, `POST /v1/gpu/place`).
//!
//! `--json` prints the daemon's answer unchanged (`/v1/cluster`'s shape,
//! or the placements a place decided), so scripts read the documented
//! shape; without it, tables.

use std::fmt::Write as _;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::client::AdminClient;
use crate::config::name_problem;
use crate::error::DaemonError;
use crate::latency::format_ns;
use crate::observe::admin::{Command, DEFAULT_TOKEN_FILE};
use crate::observe::api::{ClusterResponse, HealthReport, ModelAnswer, PlacementView};
use crate::topology::DEFAULT_ADMIN_ADDR;

/// `pinwheel cluster`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// The hosts (up, degraded, lost), the models placed across them and
    /// the agent registry, as a running daemon sees them.
    Status(ClusterStatusArgs),
    /// Write one NATS identity per host (DIR/<host>.nk, mode 600) and a
    /// nats-server configuration (DIR/nats-server.conf, JetStream on,
    /// including DIR/auth.conf) whose permissions let each host speak only
    /// as itself.
    Init(ClusterInitArgs),
}

/// `pinwheel cluster init`.
#[derive(Debug, Args)]
pub struct ClusterInitArgs {
    /// The cluster's name (the topologies' `[cluster] name`).
    #[arg(long, value_name = "NAME")]
    pub cluster: String,
    /// The hosts, comma-separated.
    #[arg(long, value_name = "HOST,...", value_delimiter = ',', required = true)]
    pub hosts: Vec<String>,
    /// The directory to write (created, mode 700); existing seed files are
    /// not overwritten.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// `pinwheel cluster status`.
#[derive(Debug, Args)]
pub struct ClusterStatusArgs {
    /// The daemon's admin API.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_ADMIN_ADDR)]
    pub admin: SocketAddr,
    /// Print `GET /v1/cluster` as it came.
    #[arg(long)]
    pub json: bool,
}

/// `pinwheel gpu`.
#[derive(Debug, Subcommand)]
pub enum GpuCommand {
    /// Place a model on a GPU of the cluster: where it is resident, else
    /// the best fit by free VRAM.
    Place(GpuPlaceArgs),
}

/// `pinwheel gpu place`.
#[derive(Debug, Args)]
pub struct GpuPlaceArgs {
    /// The daemon's admin API (any host of the cluster).
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_ADMIN_ADDR)]
    pub admin: SocketAddr,
    /// The model's name.
    #[arg(long, value_name = "NAME")]
    pub model: String,
    /// VRAM it needs, MiB.
    #[arg(long, value_name = "MIB")]
    pub vram_mib: u64,
    /// Keep it resident, and place it again on a survivor if its host is
    /// lost.
    #[arg(long)]
    pub pin: bool,
    /// Only on this host.
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// Print the daemon's answer as JSON.
    #[arg(long)]
    pub json: bool,
    /// File holding the daemon's admin token.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_TOKEN_FILE)]
    pub token_file: PathBuf,
}

pub(super) fn init(args: &ClusterInitArgs, out: &mut dyn Write) -> Result<(), DaemonError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = std::path::absolute(&args.out)?;
    let files = crate::cluster::init_files(&args.cluster, &args.hosts, &dir)?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    for (host, _, _) in &files.seeds {
        let path = dir.join(format!("{host}.nk"));
        if path.exists() {
            return Err(DaemonError::Usage {
                message: format!(
                    "{} exists; init writes fresh identities only (remove it, or write elsewhere)",
                    path.display()
                ),
            });
        }
    }
    let mut written = String::new();
    for (host, seed, public) in &files.seeds {
        let path = dir.join(format!("{host}.nk"));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        file.write_all(format!("{seed}\n").as_bytes())?;
        let _ = writeln!(written, "{}  {host} ({public})", path.display());
    }
    std::fs::write(dir.join("auth.conf"), &files.auth_conf)?;
    let conf = dir.join("nats-server.conf");
    std::fs::write(&conf, &files.server_conf)?;
    let _ = writeln!(
        written,
        "{}  run: nats-server -c {} -p 4222\n\ngive each host its seed (root-owned, mode 600) as [cluster] nkey_file or --nats-nkey",
        conf.display(),
        conf.display()
    );
    out.write_all(written.as_bytes())?;
    Ok(())
}

pub(super) fn status(args: &ClusterStatusArgs, out: &mut dyn Write) -> Result<(), DaemonError> {
    let client = AdminClient::new(args.admin);
    let cluster: ClusterResponse = client.get("/v1/cluster")?;
    let text = if args.json {
        pretty(&cluster)
    } else {
        render_status(&cluster, &client.get("/health")?)
    };
    out.write_all(text.as_bytes())?;
    Ok(())
}

pub(super) fn place(args: &GpuPlaceArgs, out: &mut dyn Write) -> Result<(), DaemonError> {
    let usage = |message: String| DaemonError::Usage { message };
    if let Some(problem) = name_problem(&args.model) {
        return Err(usage(format!("--model {:?} {problem}", args.model)));
    }
    if let Some(host) = &args.host
        && let Some(problem) = name_problem(host)
    {
        return Err(usage(format!("--host {host:?} {problem}")));
    }
    if args.vram_mib == 0 {
        return Err(usage(
            "--vram-mib 0: give the model's VRAM in MiB (e.g. 3100 for whisper-large-v3 in fp16)"
                .to_owned(),
        ));
    }
    let body = Command::Place {
        model: args.model.clone(),
        vram_mib: args.vram_mib,
        pin: args.pin,
        host: args.host.clone(),
    };
    let answer: ModelAnswer =
        AdminClient::new(args.admin).post("/v1/gpu/place", &body, &args.token_file)?;
    let text = if args.json {
        pretty(&answer)
    } else {
        render_placed(&answer)
    };
    out.write_all(text.as_bytes())?;
    Ok(())
}

/// An answer as pretty JSON, as the daemon sent it.
fn pretty(answer: &impl serde::Serialize) -> String {
    let mut text = serde_json::to_string_pretty(answer).expect("API answers always serialize");
    text.push('\n');
    text
}

/// `/v1/cluster` and `/health` as tables.
pub fn render_status(cluster: &ClusterResponse, health: &HealthReport) -> String {
    let mut out = String::new();
    let me = cluster.host.as_str();
    let status = health.status.as_str();
    match &cluster.cluster {
        Some(name) => writeln!(out, "cluster {name}, seen from {me}: {status}"),
        None => writeln!(out, "single host {me} (no cluster configured): {status}"),
    }
    .expect("writing to a String cannot fail");
    for reason in health
        .reasons
        .iter()
        .filter(|r| r.reason.starts_with("cluster"))
    {
        let _ = writeln!(out, "  {}: {}", reason.reason, reason.detail);
    }
    let _ = writeln!(
        out,
        "\n{:<24} {:<9} {:>10} {:>10}",
        "host", "state", "last seen", "latency"
    );
    for host in &cluster.hosts {
        let here = host.host == me;
        let (seen, latency) = if here {
            ("-".to_owned(), "-".to_owned())
        } else {
            (
                format_ns(host.last_seen_ms.saturating_mul(1_000_000)),
                match host.latency_us {
                    0 => "-".to_owned(),
                    us => format_ns(us.saturating_mul(1_000)),
                },
            )
        };
        let suffix = if here { " (here)" } else { "" };
        let _ = writeln!(
            out,
            "{:<24} {:<9} {seen:>10} {latency:>10}",
            format!("{}{suffix}", host.host),
            host.state.as_str(),
        );
    }
    render_placements(&mut out, cluster);
    render_registry(&mut out, cluster);
    out
}

fn render_registry(out: &mut String, cluster: &ClusterResponse) {
    let agents = &cluster.agents;
    if agents.is_empty() {
        return;
    }
    let mut hosts: Vec<&str> = agents.iter().map(|a| a.host.as_str()).collect();
    hosts.sort_unstable();
    hosts.dedup();
    let lost = agents.iter().filter(|a| a.health == "lost").count();
    let _ = writeln!(
        out,
        "\nregistry: {} agents on {} hosts ({lost} on lost hosts)",
        agents.len(),
        hosts.len()
    );
}

fn render_placements(out: &mut String, cluster: &ClusterResponse) {
    if cluster.placements.is_empty() {
        out.push_str("\nno models placed\n");
        return;
    }
    let _ = writeln!(
        out,
        "\n{:<28} {:<16} {:>3} {:>9}  {:<6} state",
        "model", "host", "gpu", "VRAM MiB", "pinned"
    );
    for p in &cluster.placements {
        let _ = writeln!(
            out,
            "{:<28} {:<16} {:>3} {:>9}  {:<6} {}",
            model(p),
            p.host,
            p.gpu,
            p.vram_mib,
            if p.pinned { "yes" } else { "no" },
            state(p),
        );
    }
}

/// The answer of `POST /v1/gpu/place` as one line per replica.
pub fn render_placed(answer: &ModelAnswer) -> String {
    let mut out = String::new();
    for p in &answer.placements {
        let _ = writeln!(
            out,
            "{} on {} GPU {}: {} MiB{}, {}",
            model(p),
            p.host,
            p.gpu,
            p.vram_mib,
            if p.pinned { ", pinned" } else { "" },
            state(p),
        );
    }
    out
}

fn model(p: &PlacementView) -> String {
    match p.replica {
        0 => p.model.clone(),
        r => format!("{}#{r}", p.model),
    }
}

/// A placement's state: the VRAM optimizer's word where the daemon gives
/// one (`resident`, `waiting`), else loaded or assigned.
fn state(p: &PlacementView) -> String {
    let revision = p.revision;
    match &p.state {
        Some(state) => format!("{state} (revision {revision})"),
        None if !p.loaded => format!("assigned, loading (revision {revision})"),
        None => format!("loaded (revision {revision})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::api::{ClusterHost, HealthStatus, HostState, Reason, RegistryAgent};

    fn placement(model: &str, host: &str, replica: u32, loaded: bool) -> PlacementView {
        PlacementView {
            model: model.into(),
            host: host.into(),
            gpu: 0,
            vram_mib: 3000,
            pinned: true,
            replica,
            loaded,
            revision: 2,
            state: None,
        }
    }

    fn reason(name: &str, detail: &str) -> Reason {
        Reason {
            reason: name.into(),
            detail: detail.into(),
        }
    }

    fn registry(agent: &str, host: &str, health: &str) -> RegistryAgent {
        RegistryAgent {
            agent: agent.into(),
            host: host.into(),
            ports: Vec::new(),
            health: health.into(),
        }
    }

    #[test]
    fn the_status_table_shows_hosts_placements_reasons_and_the_registry() {
        let host = |name: &str, state, last_seen_ms, latency_us| ClusterHost {
            host: name.into(),
            state,
            last_seen_ms,
            latency_us,
        };
        let cluster = ClusterResponse {
            cluster: Some("home".into()),
            host: "beta".into(),
            hosts: vec![
                host("beta", HostState::Degraded, 0, 0),
                host("alpha", HostState::Lost, 1236, 323),
            ],
            placements: vec![placement("whisper", "beta", 0, true)],
            agents: vec![
                registry("Stt", "alpha", "lost"),
                registry("Tts", "beta", "healthy"),
            ],
        };
        let health = HealthReport {
            status: HealthStatus::Degraded,
            reasons: vec![
                reason("cluster_peer_lost", "host(s) alpha missed"),
                reason("no_pmu", "software events only"),
            ],
        };

        let sut = render_status(&cluster, &health);

        assert!(
            sut.starts_with("cluster home, seen from beta: degraded\n  cluster_peer_lost: host(s) alpha missed\n\n"),
            "{sut}"
        );
        assert!(!sut.contains("no_pmu"), "{sut}");
        assert!(sut.contains("beta (here)"), "{sut}");
        assert!(sut.contains("1.24 s") && sut.contains("323.0 us"), "{sut}");
        assert!(sut.contains("loaded (revision 2)"), "{sut}");
        assert!(
            sut.contains("registry: 2 agents on 2 hosts (1 on lost hosts)"),
            "{sut}"
        );
    }

    #[test]
    fn a_single_host_says_so_and_placements_say_whether_they_are_loading_or_waiting() {
        let cluster = ClusterResponse {
            cluster: None,
            host: "solo".into(),
            hosts: Vec::new(),
            placements: Vec::new(),
            agents: Vec::new(),
        };
        let mut first = placement("llm", "pc2", 1, false);
        first.gpu = 1;
        first.vram_mib = 8000;
        first.pinned = false;
        first.revision = 1;
        let mut second = placement("llm", "solo", 0, true);
        second.vram_mib = 8000;
        second.pinned = false;
        second.revision = 1;
        second.state = Some("waiting".into());
        let answer = ModelAnswer {
            model: "llm".into(),
            host: Some("pc2".into()),
            gpu: Some(1),
            vram_mib: Some(8000),
            pinned: false,
            state: "assigned".into(),
            placements: vec![first, second],
        };
        let ok = HealthReport {
            status: HealthStatus::Ok,
            reasons: Vec::new(),
        };

        let status = render_status(&cluster, &ok);
        let placed = render_placed(&answer);

        assert!(status.starts_with("single host solo (no cluster configured): ok\n"));
        assert!(status.contains("no models placed"), "{status}");
        assert_eq!(
            placed,
            "llm#1 on pc2 GPU 1: 8000 MiB, assigned, loading (revision 1)\nllm on solo GPU 0: 8000 MiB, waiting (revision 1)\n"
        );
    }
}
