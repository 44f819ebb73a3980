//! The legacy gateway in the daemon's life: started once the executors
//! run and before the start phases open (so the first calls to `zmq`
//! agents find it connecting, and legacy clients find the ports as the
//! agents come up), pinned beside the control runtime, and stopped after
//! the executors drained (their calls to `zmq` agents get their answers),
//! before the report. The admin view gets its counters once the control
//! side is up.
//!
//! The gateway numbers actions with the host's method table, which the
//! process side owns; [`HostMethods`] lends it through the process side's
//! lock, which the gateway takes once per new name (it caches the rest).
//! A port that cannot be bound is a health reason, `legacy_port_unavailable`,
//! and the rest of the edge runs.

use std::sync::{Arc, Mutex};

use tracing::warn;

use super::boot::Booted;
use super::report::LegacyReport;
use crate::error::DaemonError;
use crate::gateway::{Gateway, GatewayParts, MethodNames};
use crate::observe::view::DaemonView;
use crate::process::ProcessSide;
use crate::runtime::legacy::LegacyBook;
use crate::topology::Topology;

/// The process side's method table, for the gateway.
struct HostMethods(Arc<Mutex<ProcessSide>>);

impl MethodNames for HostMethods {
    fn find(&mut self, name: &str) -> Option<u16> {
        self.0.lock().ok()?.methods().find(name)
    }

    fn add(&mut self, name: &str) -> Option<u16> {
        let id = self.0.lock().ok()?.methods().intern(name);
        (id != 0).then_some(id)
    }

    fn name(&mut self, id: u16) -> Option<String> {
        self.0.lock().ok()?.methods().name(id).map(str::to_owned)
    }
}

/// The running gateway, and the book the registries answer from.
#[derive(Debug)]
pub struct Running {
    gateway: Gateway,
    book: Arc<LegacyBook>,
}

impl Running {
    /// Hands the admin view the gateway's counters and the book.
    pub fn show(&self, view: &DaemonView) {
        view.set_legacy(self.gateway.stats(), Arc::clone(&self.book));
    }

    /// Stops the gateway (after the drain); its part of the report.
    pub fn finish(self) -> LegacyReport {
        let stats = self.gateway.stats();
        self.gateway.stop();
        LegacyReport {
            totals: stats.totals(),
            registered: self.book.registered(),
        }
    }
}

/// Starts the gateway when the mesh has one to serve.
pub fn start(topology: &Topology, booted: &mut Booted) -> Result<Option<Running>, DaemonError> {
    let Some((plan, rings)) = booted.gateway.take() else {
        return Ok(None);
    };
    let parts = GatewayParts {
        plan,
        rings,
        routes: Arc::clone(&booted.routes),
        names: Box::new(HostMethods(Arc::clone(&booted.processes))),
        cpu: topology.control(),
    };
    let (gateway, unbound) = Gateway::start(parts)?;
    if !unbound.is_empty() {
        let detail = format!(
            "legacy ports not bound (legacy clients cannot reach these agents): {}",
            unbound.join("; ")
        );
        warn!(%detail, "legacy gateway degraded");
        booted.health.raise("legacy_port_unavailable", detail);
    }
    Ok(Some(Running {
        gateway,
        book: Arc::clone(&booted.legacy_book),
    }))
}
