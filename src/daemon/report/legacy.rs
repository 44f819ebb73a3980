//! The run report's legacy gateway part: its ports, the `zmq` agents it
//! called and the seed agents that registered, as JSON and as text rows
//! beside the ring routes.

use std::fmt::Write as _;

use serde::Serialize;

use super::Report;
use crate::latency::LatencySummary;
use crate::runtime::legacy::{LegacyTotals, PortKind, Registered};

/// The legacy gateway's traffic, beside the ring routes: per port it
/// bound, per `zmq` agent it called, and the seed agents that registered.
#[derive(Debug, Clone, Serialize)]
pub struct LegacyReport {
    /// Ports, `zmq` agents and counters.
    #[serde(flatten)]
    pub totals: LegacyTotals,
    /// Seed agents that registered with a native registry.
    pub registered: Vec<Registered>,
}

impl Report {
    /// The latency rows of the legacy edge: each REP port, each `zmq`
    /// agent.
    pub(super) fn legacy_rows(&self, row: &mut impl FnMut(&str, &LatencySummary)) {
        let Some(legacy) = &self.legacy else { return };
        for port in legacy
            .totals
            .ports
            .iter()
            .filter(|p| p.kind == PortKind::Rep)
        {
            row(
                &format!("legacy clients -> :{} {} (legacy)", port.port, port.agent),
                &port.latency_ns,
            );
        }
        for target in &legacy.totals.targets {
            row(
                &format!("gateway -> {} {} (zmq)", target.agent, target.endpoint),
                &target.latency_ns,
            );
        }
    }

    pub(super) fn legacy_text(&self, out: &mut String) {
        let Some(legacy) = &self.legacy else { return };
        for port in &legacy.totals.ports {
            let what = match port.kind {
                PortKind::Rep => "requests",
                PortKind::Pub => "messages published",
            };
            let _ = writeln!(
                out,
                "legacy port {} ({}): {} {what}, {} errors ({} refused as bad input)",
                port.port, port.agent, port.messages, port.errors, port.refused
            );
        }
        for target in &legacy.totals.targets {
            let _ = writeln!(
                out,
                "zmq agent {} at {}: {} calls, {} errors ({} timed out), {} reconnects",
                target.agent,
                target.endpoint,
                target.calls,
                target.errors,
                target.timeouts,
                target.reconnects
            );
        }
        for agent in &legacy.registered {
            let _ = writeln!(
                out,
                "legacy agent {} registered with {} at {}",
                agent.name, agent.registry, agent.endpoint
            );
        }
    }
}
