//! The daemon's control side: the core loop and the admin API, started
//! once the mesh is up and stopped before it drains.
//!
//! The view they share is built here from the plan and the running
//! runtime; the admin API's commands reach the core loop through a
//! bounded channel (a full channel answers 503, never blocks the API).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc::sync_channel;

use prometheus_client::registry::Registry;
use tracing::warn;

use super::RunOptions;
use super::boot::Booted;
use super::cluster::{self, LinkThread};
use super::core::CoreLoop;
use super::gpus::GpuSide;
use crate::config::AgentIndex;
use crate::error::DaemonError;
use crate::observe::admin::{Admin, AdminConfig};
use crate::observe::metrics;
use crate::observe::view::{AgentFacts, DaemonView, ViewParts};
use crate::plan::render_json;
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
    link: Option<LinkThread>,
}

impl Controls {
    /// Where the admin API listens, if it does.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(Admin::addr)
    }

    /// Stops the API, then the core loop, then the cluster link.
    pub fn stop(self) {
        if let Some(admin) = self.admin {
            admin.stop();
        }
        self.core.stop();
        if let Some(link) = self.link {
            link.stop();
        }
    }
}

/// Starts the core loop and the admin API over `booted`.
pub fn start(
    options: &RunOptions,
    topology: &Topology,
    booted: &Booted,
) -> Result<Controls, DaemonError> {
    let view = Arc::new(DaemonView::new(view_parts(topology, booted)));
    let mut registry = Registry::default();
    metrics::register(&mut registry, Arc::clone(&view));
    let board = Arc::clone(booted.routes.board());
    let gpus = GpuSide::open(topology, &booted.agents, board, &mut registry, &booted.health)?;
    let (cluster, link) = cluster::start(topology, booted, &gpus, Arc::clone(&booted.health))?;
    let (commands, inbox) = sync_channel(COMMAND_QUEUE);
    let core = CoreLoop::start(Arc::clone(&view), inbox, gpus, cluster, topology.control())
        .map_err(|source| DaemonError::Thread { source })?;
    let config = AdminConfig {
        addr: options.admin_addr.unwrap_or_else(|| topology.admin_addr()),
        token_file: options.admin_token_file.clone(),
    };
    let admin = match Admin::start(&config, Arc::clone(&view), registry, commands) {
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
