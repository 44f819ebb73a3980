//! The daemon's control side: the core loop, the admin API and the NATS
//! link, tasks on the one control runtime, started once the mesh is up and
//! stopped before it drains.
//!
//! ```text
//!  pinwheel-ctrl thread: one current-thread tokio runtime, control CPU
//!  ┌────────────────────────────────────────────────────────────────────┐
//!  │ admin edge (hyper) ─── mpsc<Request> (64) ───▶ core loop (10 ms)   │
//!  │   /health /metrics /v1/*  ◀── DaemonView ───  optimizer, scheduler │
//!  │ NATS link ─── mpsc<ClusterEvent> (1024) ─────▶ core loop           │
//!  │           ◀── watch<HostState> ──────────────                      │
//!  │ GPU poller ── mpsc<GpuEvent> (64) ───────────▶ core loop           │
//!  │   └─ spawn_blocking ──▶ pinwheel-block thread (NVML calls)         │
//!  │ wake-up guard (runtime::guard; up with the executors, not here)    │
//!  └────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! The view they share is built here from the plan and the running
//! runtime. Every channel between the tasks is bounded: the admin API's
//! commands reach the core loop through one (a full channel answers 503,
//! never blocks the API), the link's events and the GPU samples through
//! others that drop and count when the core loop lags.
//!
//! Stopping: the admin API stops accepting first and its connections get
//! [`SHUTDOWN_GRACE`] to finish while the core loop stops, so a stuck
//! client costs the shutdown that grace at most. The link stops last,
//! after the executors have drained: their calls to other hosts finish. The runtime
//! itself (and the wake-up guard on it) outlives these tasks: the daemon
//! stops it after the executors have drained.
//!
//! [`SHUTDOWN_GRACE`]: crate::observe::admin::SHUTDOWN_GRACE

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::registry::Registry;
use tokio::sync::mpsc;
use tracing::warn;

use super::RunOptions;
use super::boot::Booted;
use super::cluster::{self, LinkTask};
use super::core::CoreLoop;
use super::gpus::GpuSide;
use crate::config::AgentIndex;
use crate::error::DaemonError;
use crate::observe::admin::{Admin, AdminConfig};
use crate::observe::metrics;
use crate::observe::view::{AgentFacts, DaemonView, ViewParts};
use crate::plan::render_json;
use crate::runtime::control::ControlRuntime;
use crate::runtime::remote::{CallRings, CallStats};
use crate::topology::Topology;

/// Commands that may wait for the core loop at once.
const COMMAND_QUEUE: usize = 64;

/// The running control side.
#[derive(Debug)]
pub struct Controls {
    /// The shared view.
    pub view: Arc<DaemonView>,
    core: CoreLoop,
    admin: Option<Admin>,
    link: Option<LinkTask>,
    calls: Option<Arc<CallStats>>,
}

impl Controls {
    /// Where the admin API listens, if it does.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(Admin::addr)
    }

    /// The cluster call plane's counters, when the link carries calls.
    pub fn call_stats(&self) -> Option<Arc<CallStats>> {
        self.calls.clone()
    }

    /// Stops the admin API: it stops accepting, then its connections get
    /// at most [`SHUTDOWN_GRACE`](crate::observe::admin::SHUTDOWN_GRACE).
    /// Returns what keeps running through the executors' drain
    /// ([`Draining`]).
    pub fn stop_admin(self) -> Draining {
        let Controls {
            admin, core, link, ..
        } = self;
        if let Some(mut admin) = admin {
            admin.begin_stop();
            admin.stop();
        }
        Draining {
            core: Some(core),
            link,
        }
    }
}

/// The control tasks the data plane still needs while it drains: the
/// core loop, which serves the agents' model uses (a request waiting for
/// a grant gets one or a denial, instead of holding the drain to its
/// budget) and supervises agent processes, and the cluster link.
#[derive(Debug)]
pub struct Draining {
    core: Option<CoreLoop>,
    link: Option<LinkTask>,
}

impl Draining {
    /// Stops the core loop (once the executors have stopped, before the
    /// agent processes are: their stop holds the process side).
    pub fn stop_core(&mut self) {
        if let Some(core) = self.core.take() {
            core.stop();
        }
    }

    /// Stops what is left: the core loop if still running, then the link.
    pub fn stop(mut self) {
        self.stop_core();
        if let Some(link) = self.link.take() {
            link.stop();
        }
    }
}

/// Starts the core loop, the admin API and the cluster link over
/// `booted`, as tasks on `control`.
pub fn start(
    options: &RunOptions,
    topology: &Topology,
    booted: &Booted,
    calls: Option<CallRings>,
    control: &ControlRuntime,
) -> Result<Controls, DaemonError> {
    let view = Arc::new(DaemonView::new(view_parts(topology, booted)));
    let mut registry = Registry::default();
    metrics::register(&mut registry, Arc::clone(&view));
    let gpus = GpuSide::open(
        topology,
        &booted.agents,
        Arc::clone(booted.routes.board()),
        &mut registry,
        &booted.health,
        control.handle(),
    )?;
    let cluster::Started {
        side: cluster,
        link,
        calls,
    } = cluster::start(
        topology,
        booted,
        &gpus,
        Arc::clone(&booted.health),
        control,
        calls,
    )?;
    if let Some(stats) = &calls {
        view.set_cluster_calls(Arc::clone(stats));
    }
    let (commands, inbox) = mpsc::channel(COMMAND_QUEUE);
    let core = CoreLoop::start(
        control,
        Arc::clone(&view),
        inbox,
        gpus,
        cluster,
        Arc::clone(&booted.processes),
    );
    let config = AdminConfig {
        addr: options.admin_addr.unwrap_or_else(|| topology.admin_addr()),
        token_file: options.admin_token_file.clone(),
    };
    let admin = match Admin::start(&config, Arc::clone(&view), registry, commands, control) {
        Ok(admin) => Some(admin),
        Err(err) => {
            warn!(error = %err, "admin API not started; the mesh runs without it");
            view.health.raise("admin_unavailable", err.to_string());
            None
        }
    };
    Ok(Controls {
        view,
        core,
        admin,
        link,
        calls,
    })
}

fn view_parts(topology: &Topology, booted: &Booted) -> ViewParts {
    let agents = booted
        .plan
        .placements()
        .iter()
        .map(|p| {
            let spec = booted.agents.get(p.agent);
            AgentFacts {
                id: p.agent.0,
                name: booted.agents.display_name(AgentIndex(p.agent.0)),
                host: spec.host().to_owned(),
                kind: spec.kind().as_str(),
                cpu: p.cpu.0,
            }
        })
        .collect();
    ViewParts {
        host: topology.host().to_owned(),
        health: Arc::clone(&booted.health),
        perf: Arc::clone(&booted.perf),
        control: Arc::clone(booted.runtime.control()),
        routes: Arc::clone(&booted.routes),
        executor_cpus: booted.runtime.cpus().iter().map(|c| c.0).collect(),
        agents,
        plan_json: render_json(&booted.plan, topology, &booted.agents),
    }
}
