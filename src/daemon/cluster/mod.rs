//! The daemon's side of the cluster: the GPU scheduler in the core loop,
//! and the NATS link beside it, both tasks on the control runtime.
//!
//! ```text
//!  core loop task (10 ms tick)                   link task (same runtime)
//!  ┌──────────────────────────────┐  watch<HostState>  ┌──────────────────────┐
//!  │ ClusterSide::tick            │ ─────────────────> │ ClusterLink          │ <──> NATS
//!  │   events -> GpuScheduler     │ <───────────────── │  heartbeats, registry│
//!  │   tick, decisions, health    │  mpsc<ClusterEvent>│  placements (KV CAS) │
//!  │   /v1/cluster -> DaemonView  │ ─────────────────> │  call plane          │
//!  │ ClusterSide::answer (admin)  │  mpsc<WriteRequest>└──────────────────────┘
//!  └──────────────────────────────┘                      ▲ uplink/downlink rings
//!                                                  executors (data plane)
//! ```
//!
//! * **Single host by default.** With no `[cluster]` section and no
//!   `--nats`, the scheduler runs alone ([`GpuScheduler::single_host`]),
//!   no link task is started and nothing touches the network; `/v1/cluster`
//!   lists this host only.
//! * **Overrides.** `pinwheel run --host NAME` renames the host the
//!   topology file describes (one file can serve several alike hosts) and
//!   `--nats URL` replaces the section's server, or adds a cluster named
//!   [`DEFAULT_CLUSTER`] with the default heartbeats. The plan then runs
//!   only the agents whose manifest `host` is this host's; the others are
//!   found through the cluster registry (`/v1/cluster` lists it).
//! * **The core loop never waits on NATS.** It only `try_recv`s events and
//!   replaces the watched host state; the link drops events rather than
//!   block when the core loop lags (counted in its stats).
//!
//! * **Scheduler over optimizer.** The scheduler decides which host holds
//!   a model; that host's VRAM optimizer ([`GpuSide`]) loads it (pinned if
//!   the placement is), and tells the scheduler how much room each GPU has.
//!
//! * **Calls between hosts.** In a cluster, boot gives every executor an
//!   uplink and a downlink ring to the link's call plane
//!   (`runtime::remote`); calls to agents of other hosts, found in the
//!   manifests (`Name@host`, or a name whose manifest says another host)
//!   and checked against the cluster registry, travel over NATS.
//! * **Identity.** `--nats-nkey FILE` (or `[cluster] nkey_file`) names
//!   this host's nkey seed; a password file and TLS files come from the
//!   section. All are read through the root daemon's secret check at boot.
//!
//! What it does not do: choose among this host's GPUs for the optimizer,
//! which keeps its own residency.
//!
//! [`GpuScheduler::single_host`]: crate::gpu::sched::GpuScheduler::single_host
//! [`GpuSide`]: super::gpus::GpuSide

mod commands;
mod decisions;
mod link;
mod render;
mod side;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch};

use self::link::LinkInputs;
use self::side::{LinkEnds, Timing};
use super::RunOptions;
use super::boot::Booted;
use super::gpus::GpuSide;
use crate::cluster::{AgentRecord, CallPlane, ClusterConfig, Health, LinkIo, state_from_report};
use crate::config::name_problem;
use crate::error::DaemonError;
use crate::gpu::sched::{GpuScheduler, HostName, SchedConfig};
use crate::observe::health::Health as DaemonHealth;
use crate::runtime::control::ControlRuntime;
use crate::runtime::remote::{CallRings, CallStats};
use crate::topology::{ClusterAuth, ClusterSpec, ClusterTls, Topology};

pub use link::LinkTask;
pub use side::ClusterSide;

/// The cluster a daemon joins when `--nats` is given and the topology file
/// has no `[cluster]` section.
pub const DEFAULT_CLUSTER: &str = "pinwheel";

/// The health reason raised while the NATS link is down.
pub const LINK_DOWN: &str = "cluster_link_down";
/// The health reason raised while a peer is lost.
pub const PEER_LOST: &str = "cluster_peer_lost";
/// The health reason raised while another daemon reports under this
/// host's name.
pub const NAME_CLASH: &str = "cluster_name_clash";

/// The topology with `--host` and `--nats` applied, checked so that the
/// cluster link will accept its names.
pub fn apply_overrides(topology: Topology, options: &RunOptions) -> Result<Topology, DaemonError> {
    let usage = |message: String| DaemonError::Usage { message };
    let mut topology = topology;
    if let Some(host) = &options.host {
        if let Some(problem) = name_problem(host) {
            return Err(usage(format!("--host {host:?} {problem}")));
        }
        topology = topology.with_host(host.clone());
    }
    if let Some(url) = &options.nats_url {
        let rest = ["nats://", "tls://"]
            .iter()
            .find_map(|scheme| url.strip_prefix(scheme));
        if rest.is_none_or(str::is_empty) {
            return Err(usage(format!(
                "--nats {url:?} is not a NATS URL; pass e.g. nats://127.0.0.1:4222"
            )));
        }
        let spec = match topology.cluster() {
            Some(spec) => ClusterSpec {
                nats_url: url.clone(),
                ..spec.clone()
            },
            None => ClusterSpec {
                name: DEFAULT_CLUSTER.to_owned(),
                nats_url: url.clone(),
                heartbeat_ms: 250,
                missed_heartbeats: 4,
                auth: ClusterAuth::None,
                tls: ClusterTls::default(),
                kv_replicas: 1,
            },
        };
        topology = topology.with_cluster(spec);
    }
    if let Some(seed) = &options.nats_nkey {
        let Some(spec) = topology.cluster() else {
            return Err(usage(
                "--nats-nkey names a NATS identity, but there is no cluster: pass --nats too"
                    .to_owned(),
            ));
        };
        let spec = ClusterSpec {
            auth: ClusterAuth::Nkey(seed.clone()),
            ..spec.clone()
        };
        topology = topology.with_cluster(spec);
    }
    if let Some(spec) = topology.cluster() {
        ClusterConfig::from_spec(spec, topology.host()).map_err(|err| {
            let flag = if options.host.is_some() {
                " (or pass another --host)"
            } else {
                ""
            };
            usage(format!("{err}{flag}"))
        })?;
    }
    Ok(topology)
}

/// Events the link may hold for the core loop (about 40 ticks of a busy
/// cluster's heartbeats).
const EVENT_QUEUE: usize = 1024;
/// The scheduler's writes that may wait for the link.
const WRITE_QUEUE: usize = 256;

/// What [`start`] starts.
pub struct Started {
    /// The scheduler's side of the core loop.
    pub side: ClusterSide,
    /// The link task, in a cluster.
    pub link: Option<LinkTask>,
    /// The call plane's counters, when the link carries calls.
    pub calls: Option<Arc<CallStats>>,
}

/// Starts the cluster side of `topology`: the scheduler for the core loop,
/// and, when a cluster is configured, the link task on `control`, carrying
/// the executors' calls through `calls` (their call rings) if given.
/// `gpus` tells the first heartbeat this host's room.
pub fn start(
    topology: &Topology,
    booted: &Booted,
    gpus: &GpuSide,
    health: Arc<DaemonHealth>,
    control: &ControlRuntime,
    calls: Option<CallRings>,
) -> Result<Started, DaemonError> {
    let me = HostName::from(topology.host());
    let Some(spec) = topology.cluster() else {
        return single_host(me, health);
    };
    let config = ClusterConfig::from_spec(spec, topology.host()).map_err(usage)?;
    let (sched, sched_config) = cluster_sched(spec, me, gpus)?;
    // The link's first heartbeat already says who this host is.
    let (state, source) = watch::channel(state_from_report(&sched.local_report()));
    let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
    let (writes, writes_rx) = mpsc::channel(WRITE_QUEUE);
    let timing = Timing {
        // The link publishes at most five times a heartbeat.
        state_every: Duration::from_millis((spec.heartbeat_ms / 5).max(10)),
        lost_after_ms: sched_config.lost_after_ms(),
    };
    let ends = LinkEnds {
        state,
        events,
        writes,
        url: spec.nats_url.clone(),
    };
    let side = ClusterSide::new(
        sched,
        Some((spec.name.clone(), ends)),
        timing,
        Arc::clone(&health),
    );
    let plane = calls.map(|rings| CallPlane::new(Arc::clone(&booted.routes), rings));
    let call_stats = plane.as_ref().map(CallPlane::stats);
    let io = LinkIo {
        source,
        events: events_tx,
        writes: writes_rx,
    };
    let link = LinkTask::spawn(
        control,
        LinkInputs {
            config,
            io,
            calls: plane,
            records: own_agents(topology, booted),
            health,
        },
    );
    Ok(Started {
        side,
        link: Some(link),
        calls: call_stats,
    })
}

/// The scheduler of a host of the cluster `spec` describes, with this
/// host's room.
fn cluster_sched(
    spec: &ClusterSpec,
    me: HostName,
    gpus: &GpuSide,
) -> Result<(GpuScheduler, SchedConfig), DaemonError> {
    let config = SchedConfig {
        heartbeat_ms: spec.heartbeat_ms,
        missed_heartbeats: spec.missed_heartbeats,
        assignment_timeout_ms: spec.heartbeat_ms.saturating_mul(8).max(2000),
        ..SchedConfig::default()
    };
    let mut sched = GpuScheduler::cluster(me, incarnation(), config).map_err(usage)?;
    sched.set_local_gpus(&gpus.room());
    Ok((sched, config))
}

/// The side of a host with no cluster: the scheduler alone, its store in
/// memory, no link.
fn single_host(me: HostName, health: Arc<DaemonHealth>) -> Result<Started, DaemonError> {
    let config = SchedConfig::default();
    let sched = GpuScheduler::single_host(me, config).map_err(usage)?;
    let timing = Timing {
        state_every: Duration::from_millis(config.heartbeat_ms),
        lost_after_ms: config.lost_after_ms(),
    };
    Ok(Started {
        side: ClusterSide::new(sched, None, timing, health),
        link: None,
        calls: None,
    })
}

/// A configuration the scheduler or the link refuses, as bad input.
fn usage(err: impl std::fmt::Display) -> DaemonError {
    DaemonError::Usage {
        message: err.to_string(),
    }
}

/// This host's planned agents as registry records.
fn own_agents(topology: &Topology, booted: &Booted) -> Vec<AgentRecord> {
    booted
        .plan
        .placements()
        .iter()
        .map(|p| {
            let spec = booted.agents.get(p.agent);
            AgentRecord {
                agent: spec.name().to_owned(),
                host: topology.host().to_owned(),
                ports: spec.ports().to_vec(),
                health: Health::Healthy,
            }
        })
        .collect()
}

/// Grows each time the daemon starts: its start time, Unix ms.
fn incarnation() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use super::*;
    use crate::config::SourceFile;

    fn topology(extra: &str) -> Topology {
        let text =
            format!("schema = 1\n[host]\nname = \"h\"\ncpus = {{ uniform = \"0-1\" }}\n{extra}");
        let file = SourceFile::from_text(Path::new("t.toml"), &text);
        crate::topology::validate(file.parse().expect("TOML"), &file, None).expect("valid")
    }

    fn options(host: Option<&str>, nats: Option<&str>) -> RunOptions {
        RunOptions {
            topology: PathBuf::from("t.toml"),
            agents: Vec::new(),
            sysfs_root: PathBuf::from("/sys"),
            tuning_root: None,
            duration: None,
            rate_per_s: 0.0,
            request_timeout: Duration::from_secs(1),
            report: None,
            state_dir: None,
            privileged: false,
            admin_addr: None,
            admin_token_file: PathBuf::from("t"),
            host: host.map(str::to_owned),
            nats_url: nats.map(str::to_owned),
            overhead: false,
            nats_nkey: None,
            run_dir: PathBuf::from("/run/pinwheel"),
            faults: Vec::new(),
            legacy_bind: None,
        }
    }

    #[test]
    fn no_flags_leave_the_topology_alone_and_single_host() {
        let sut = apply_overrides(topology(""), &options(None, None)).expect("valid");

        assert_eq!((sut.host(), sut.cluster()), ("h", None));
    }

    #[test]
    fn host_and_nats_flags_rename_the_host_and_join_the_default_cluster() {
        let sut = apply_overrides(
            topology(""),
            &options(Some("pc2"), Some("nats://10.0.0.1:4222")),
        )
        .expect("valid");

        let spec = sut.cluster().expect("a cluster");
        assert_eq!(sut.host(), "pc2");
        assert_eq!(
            (
                spec.name.as_str(),
                spec.nats_url.as_str(),
                spec.heartbeat_ms
            ),
            (DEFAULT_CLUSTER, "nats://10.0.0.1:4222", 250)
        );
    }

    #[test]
    fn the_nats_flag_keeps_the_sections_name_and_heartbeats() {
        let section = "[cluster]\nname = \"home\"\nnats_url = \"nats://a:1\"\nheartbeat_ms = 100\n";

        let sut =
            apply_overrides(topology(section), &options(None, Some("tls://b:2"))).expect("valid");

        let spec = sut.cluster().expect("a cluster");
        assert_eq!(
            (
                spec.name.as_str(),
                spec.nats_url.as_str(),
                spec.heartbeat_ms
            ),
            ("home", "tls://b:2", 100)
        );
    }

    #[test]
    fn a_url_that_is_not_nats_and_a_dotted_clustered_host_are_usage_errors() {
        let url = apply_overrides(topology(""), &options(None, Some("http://x:4222")));
        let dotted = apply_overrides(topology(""), &options(Some("pc.2"), Some("nats://x:1")));

        let Err(DaemonError::Usage { message }) = url else {
            panic!("expected a usage error, got {url:?}");
        };
        assert!(message.contains("--nats \"http://x:4222\""), "{message}");
        let Err(DaemonError::Usage { message }) = dotted else {
            panic!("expected a usage error, got {dotted:?}");
        };
        assert!(
            message.contains("'.'") && message.contains("--host"),
            "{message}"
        );
    }
}
