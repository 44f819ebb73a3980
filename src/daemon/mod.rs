//! `pinwheel run`: boot the mesh, run it until told to stop, drain, and
//! report.
//!
//! ```text
//!  files ──load/validate/plan──▶ outputs checked ──▶ tuning ──▶ control runtime
//!    ──▶ privileges ──▶ layout ──▶ executors up ──▶ phase 0 … phase N
//!    ──▶ load generator (last phase) ──▶ core loop, admin API, NATS link
//!    ──▶ status line each second ◀── SIGINT/SIGTERM or --duration
//!    ──▶ admin stops (≤1 s) ──▶ drain (≤1.2 s; the core loop still serves
//!    model uses) ──▶ stop (≤0.3 s more) ──▶ core loop stops ──▶ agent
//!    processes: SIGTERM, SIGKILL after stop_timeout_ms, reaped ──▶ NATS
//!    link stops ──▶ control runtime stops
//!    ──▶ revert tuning ──▶ report
//!
//!  threads:  main (signals, status line)
//!            pinwheel-ctrl: one current-thread tokio runtime on the control
//!              CPU: wake-up guard, core loop tick, admin HTTP, NATS link,
//!              GPU poller; pinwheel-block, its one blocking thread (NVML)
//!            pw-exec-<cpu>-<n>: one glommio executor per data-plane CPU,
//!              each with glommio's blocking helper (same name)
//!            pinwheel-legacy: the legacy ZeroMQ gateway, when the mesh has
//!              legacy ports or zmq agents (started before the phases
//!              open, stopped after the drain; `legacy`), with libzmq's
//!              I/O and reaper threads
//! ```
//!
//! [`boot`] owns the steps up to a running mesh; [`signals`] turns SIGINT
//! and SIGTERM into events the main thread polls; [`status`] is the
//! terminal line; [`control`] starts the control side's tasks on the
//! control runtime ([`ControlRuntime`]); [`report`] merges what every
//! executor measured. The main thread does nothing per message: executors
//! run the mesh, and it only waits, redraws and, at the end, collects.
//!
//! The control runtime starts before the executors and stops after them,
//! because the executors' wake-up guard runs on it; it starts after the
//! signals are blocked, so it and its blocking thread inherit the mask.
//!
//! A signal or the end of `--duration` ends the run the same way and the
//! command exits 0: the drain lets calls in flight finish, generators stop
//! first, and whatever did not finish in time is counted, not lost.

pub mod boot;
pub mod cluster;
pub mod control;
pub mod core;
pub mod gpus;
pub mod legacy;
pub mod report;
pub mod signals;
pub mod status;
pub mod twin;
pub mod uses;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use pinwheel_ipc::drill::FaultSpec;
use tracing::info;

use self::boot::Booted;
use self::control::Draining;
use self::report::{Report, ReportInputs};
use self::signals::Signals;
use self::status::StatusLine;
use crate::config::{AgentIndex, AgentSet};
use crate::error::DaemonError;
use crate::observe::admin::agent_named;
use crate::observe::api::{AnomalySeen, VramCounts};
use crate::plan::Plan;
use crate::runtime::control::ControlRuntime;
use crate::tuning::Tuning;

/// Where the attach socket and agents' credentials live by default.
pub const DEFAULT_RUN_DIR: &str = "/run/pinwheel";
/// The cgroup v2 root agent processes' cgroups go under.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// How often the status line is redrawn.
pub const STATUS_PERIOD: Duration = Duration::from_secs(1);

/// What `pinwheel run` was asked to do.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Topology file.
    pub topology: PathBuf,
    /// Agent manifests.
    pub agents: Vec<PathBuf>,
    /// Where sysfs is.
    pub sysfs_root: PathBuf,
    /// Where the tuning profile's /proc, /sys, /dev and /run are, over
    /// the live host's `/` (a test tree; `--tuning-root`).
    pub tuning_root: Option<PathBuf>,
    /// Stop after this long (after start-up); `None`: until a signal.
    pub duration: Option<Duration>,
    /// Load generator requests a second.
    pub rate_per_s: f64,
    /// Deadline of each generated request.
    pub request_timeout: Duration,
    /// Where to write the JSON report.
    pub report: Option<PathBuf>,
    /// Where registries keep their snapshots.
    pub state_dir: Option<PathBuf>,
    /// Ask for SCHED_FIFO, locked memory and timer slack.
    pub privileged: bool,
    /// The admin API's address, over the topology's.
    pub admin_addr: Option<std::net::SocketAddr>,
    /// The admin API's token file.
    pub admin_token_file: PathBuf,
    /// This host's name, over the topology's (`--host`).
    pub host: Option<String>,
    /// The NATS server, over the topology's cluster section (`--nats`).
    pub nats_url: Option<String>,
    /// Every synthetic agent's service time (and stalls) zero: what is
    /// left is pinwheel's own cost (`pinwheel bench mesh --overhead`).
    pub overhead: bool,
    /// This host's nkey seed file, over the cluster section's
    /// (`--nats-nkey`).
    pub nats_nkey: Option<PathBuf>,
    /// The run directory: the attach socket and agents' credentials
    /// (`--run-dir`, default `/run/pinwheel`).
    pub run_dir: PathBuf,
    /// Fault drills from the start (`--fault Name#1:slow=10x`).
    pub faults: Vec<(String, FaultSpec)>,
    /// Where the legacy ZeroMQ gateway binds, over the topology's
    /// `[legacy] bind` (`--legacy-bind`).
    pub legacy_bind: Option<std::net::IpAddr>,
}

/// Runs the mesh; writes the text report to `out`.
pub fn run(options: &RunOptions, out: &mut dyn Write) -> Result<Report, DaemonError> {
    let began = Instant::now();
    let (topology, agents, plan) = boot::load(options)?;
    check_faults(options, &agents, &plan)?;
    boot::check_outputs(options)?;
    // Before any executor thread exists, so that they all inherit the mask.
    let mut signals = Signals::block().map_err(|source| DaemonError::Signals { source })?;
    // Reverted by `finish` below, or by its `Drop` on an early return.
    let tuning = Tuning::for_daemon(
        topology.tuning_profile(),
        topology.data_plane(),
        options.privileged,
        &options.sysfs_root,
        options.tuning_root.as_deref(),
    )?;
    // Stopped after the executors, by `stop` below or by its `Drop`.
    let control_rt = ControlRuntime::start(topology.control(), topology.housekeeping())
        .map_err(|source| DaemonError::Thread { source })?;
    let mut booted =
        boot::start_mesh(options, &topology, agents, plan, began, control_rt.handle())?;
    // Before the phases open: the load's first calls to zmq agents find
    // the gateway connecting to them, and legacy clients find the ports.
    let gateway = legacy::start(&topology, &mut booted)?;
    let started = boot::open_phases(&booted);
    let startup = began.elapsed();
    let up_at = Instant::now();
    let calls = booted.call_rings.take();
    let controls = control::start(options, &topology, &booted, calls, &control_rt)?;
    if let Some(gateway) = &gateway {
        gateway.show(&controls.view);
    }
    set_faults(options, &booted, &controls.view);
    let waited = wait_for_stop(options, &booted, started, &mut signals);
    let cluster_calls = controls.call_stats();
    let (anomalies, vram) = (controls.view.anomalies(), controls.view.gpus());
    let mut draining = controls.stop_admin();
    let seen = Seen {
        anomalies,
        vram: (!vram.gpus.is_empty()).then_some(vram.vram),
    };
    waited?;
    let run = up_at.elapsed();
    let finished = finish(booted, started, startup, run, options, seen, &mut draining);
    // The link stops after the drain: the executors' last calls to other
    // hosts got their replies through it.
    draining.stop();
    let mut report = finished?;
    // After the drain too: the executors' calls to zmq agents finished.
    report.legacy = gateway.map(legacy::Running::finish);
    report.cluster_calls = cluster_calls.map(|stats| stats.totals());
    control_rt.stop();
    tuning.map(Tuning::finish).transpose()?;
    out.write_all(report.to_text().as_bytes())?;
    if let Some(path) = &options.report {
        std::fs::write(path, report.to_json()).map_err(|source| DaemonError::Report {
            path: path.clone(),
            source,
        })?;
    }
    Ok(report)
}

/// Puts the `--fault` drills on the board.
fn set_faults(options: &RunOptions, booted: &Booted, view: &crate::observe::view::DaemonView) {
    for (name, spec) in &options.faults {
        if let Some(agent) = agent_named(view, name) {
            booted.routes.board().set_drill(agent, *spec);
            info!(agent = %name, fault = %spec, "fault drill set");
        }
    }
}

/// Redraws the status line until a signal or the end of the duration.
fn wait_for_stop(
    options: &RunOptions,
    booted: &Booted,
    started: usize,
    signals: &mut Signals,
) -> Result<(), DaemonError> {
    let planned = booted.plan.placements().len();
    let mut status = StatusLine::new(std::io::stderr().is_terminal());
    let deadline = options.duration.map(|d| Instant::now() + d);
    loop {
        let wait = deadline.map_or(STATUS_PERIOD, |d| {
            STATUS_PERIOD.min(d.saturating_duration_since(Instant::now()))
        });
        if let Some(signal) = signals
            .wait(wait)
            .map_err(|source| DaemonError::Signals { source })?
        {
            info!(signal = signal.as_str(), "draining");
            break;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            info!("duration reached, draining");
            break;
        }
        status.redraw(booted.runtime.control().live(), started, planned);
    }
    status.finish();
    Ok(())
}

/// Every `--fault` must name an agent or replica planned here.
fn check_faults(options: &RunOptions, agents: &AgentSet, plan: &Plan) -> Result<(), DaemonError> {
    let names: Vec<String> = plan
        .placements()
        .iter()
        .map(|p| agents.display_name(AgentIndex(p.agent.0)))
        .collect();
    match options
        .faults
        .iter()
        .find(|(name, _)| !names.contains(name))
    {
        Some((name, _)) => Err(DaemonError::Usage {
            message: format!(
                "--fault {name}: no such agent here; name one of: {} (replicas as Name#N)",
                names.join(", ")
            ),
        }),
        None => Ok(()),
    }
}

/// What the control side saw, for the report.
struct Seen {
    anomalies: Vec<AnomalySeen>,
    vram: Option<VramCounts>,
}

/// Stops the executors and builds the report.
fn finish(
    booted: Booted,
    started: usize,
    startup: Duration,
    run: Duration,
    options: &RunOptions,
    seen: Seen,
    draining: &mut Draining,
) -> Result<Report, DaemonError> {
    let Booted {
        runtime,
        mesh,
        routes,
        plan,
        agents,
        health,
        processes,
        ..
    } = booted;
    let stopping = Instant::now();
    let stopped = runtime.stop();
    info!(
        stop_ms = stopping.elapsed().as_secs_f64() * 1e3,
        "executors stopped"
    );
    draining.stop_core();
    // After the drain, so that requests in flight to agent processes
    // were answered; even when the executors failed, so that no child
    // outlives the daemon unreaped.
    let processes = match processes.lock() {
        Ok(mut side) => {
            side.stop(crate::runtime::ctx::now_ns());
            side.statuses()
        }
        Err(_) => Vec::new(),
    };
    let snapshots = stopped?;
    let degraded = health.names();
    Ok(Report::build(ReportInputs {
        agents: &agents,
        plan: &plan,
        routes: &routes,
        snapshots: &snapshots,
        mesh: mesh.counters(),
        started,
        startup,
        run,
        rate_per_s: options.rate_per_s,
        degraded,
        processes,
        anomalies: seen.anomalies,
        vram: seen.vram,
    }))
}
