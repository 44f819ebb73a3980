//! `/metrics` of the legacy gateway: per port its messages, errors and
//! request latency, per `zmq` agent its calls by outcome and latency.

use super::{Buckets, Labels, counters, histograms};
use crate::observe::view::DaemonView;
use crate::runtime::legacy::{LegacyStats, PortKind, PortStats, PortTotals};
use prometheus_client::encoding::DescriptorEncoder;

/// The legacy gateway's ports and `zmq` agents, when it runs.
pub(super) fn legacy(
    view: &DaemonView,
    encoder: &mut DescriptorEncoder,
) -> Result<(), std::fmt::Error> {
    let Some((stats, _)) = view.legacy() else {
        return Ok(());
    };
    let port = |p: &PortStats| -> Labels {
        let kind = match p.kind {
            PortKind::Rep => "rep",
            PortKind::Pub => "pub",
        };
        vec![
            ("port", p.port.to_string()),
            ("agent", p.agent.clone()),
            ("kind", kind.to_owned()),
        ]
    };
    let totals = stats.totals();
    let rows = |get: fn(&PortTotals) -> u64| -> Vec<(Labels, u64)> {
        stats
            .ports
            .iter()
            .zip(&totals.ports)
            .map(|(p, t)| (port(p), get(t)))
            .collect()
    };
    counters(
        encoder,
        "pinwheel_legacy_messages",
        "Requests a legacy port took (rep), or messages it published (pub).",
        &rows(|t| t.messages),
    )?;
    counters(
        encoder,
        "pinwheel_legacy_errors",
        "Legacy requests answered with an error (bad input, timeouts, agents' errors).",
        &rows(|t| t.errors),
    )?;
    let latency: Vec<(Labels, Buckets)> = stats
        .ports
        .iter()
        .filter(|p| p.kind == PortKind::Rep)
        .map(|p| (port(p), Buckets::of(&p.latency.snapshot())))
        .collect();
    histograms(
        encoder,
        "pinwheel_legacy_request_seconds",
        "A legacy request on a port, received to answered.",
        &latency,
    )?;
    zmq_agents(stats, encoder)
}

/// The `zmq` agents the gateway calls.
fn zmq_agents(stats: &LegacyStats, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let mut calls = Vec::new();
    let mut latency = Vec::new();
    for target in &stats.targets {
        let t = target.totals();
        for (outcome, v) in [
            ("sent", t.calls),
            ("errors", t.errors),
            ("timed_out", t.timeouts),
            ("reconnects", t.reconnects),
        ] {
            calls.push((
                vec![("agent", t.agent.clone()), ("outcome", outcome.to_owned())],
                v,
            ));
        }
        latency.push((
            vec![("agent", t.agent.clone())],
            Buckets::of(&target.latency.snapshot()),
        ));
    }
    counters(
        encoder,
        "pinwheel_legacy_zmq_calls",
        "Calls the gateway sent to zmq agents, by outcome.",
        &calls,
    )?;
    histograms(
        encoder,
        "pinwheel_legacy_zmq_call_seconds",
        "A call to a zmq agent, sent to answered.",
        &latency,
    )
}
