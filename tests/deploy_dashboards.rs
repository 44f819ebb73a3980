#![cfg(test)]
//! `deploy/grafana/pinwheel.json` and `deploy/prometheus/alerts.yml`
//! against a running daemon: every PromQL expression in them parses, and
//! names only metrics the daemon's `/metrics` exports (a renamed metric
//! fails here, not on an operator's blank panel). `promtool check rules`
//! (Debian's prometheus package, which .ci/deps installs) must accept the
//! alerts.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use pinwheel::test_support::DaemonProcess;
use promql_parser::parser::{self, Expr};
use promql_parser::util::{ExprVisitor, walk_expr};
use serde::Deserialize;

const CRATE: &str = env!("CARGO_MANIFEST_DIR");
const PINWHEEL: &str = env!("CARGO_BIN_EXE_pinwheel");

#[derive(Debug, Deserialize)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(Debug, Deserialize)]
struct RuleGroup {
    name: String,
    rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
struct Rule {
    alert: String,
    expr: String,
}

/// The metric names an expression selects.
#[derive(Default)]
struct Names(BTreeSet<String>);

impl ExprVisitor for Names {
    type Error = String;

    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, String> {
        let selector = match expr {
            Expr::VectorSelector(vs) => vs,
            Expr::MatrixSelector(ms) => &ms.vs,
            _ => return Ok(true),
        };
        match &selector.name {
            Some(name) => {
                self.0.insert(name.clone());
            }
            None => return Err(format!("a selector without a metric name: {selector:?}")),
        }
        Ok(true)
    }
}

fn metric_names(expr: &str) -> BTreeSet<String> {
    // Grafana's interval variables, as Grafana substitutes them.
    let expr = expr
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "1m")
        .replace("$agent", ".*");
    let parsed = parser::parse(&expr).unwrap_or_else(|err| panic!("{expr}: {err}"));
    let mut names = Names::default();
    walk_expr(&mut names, &parsed).unwrap_or_else(|err| panic!("{expr}: {err}"));
    names.0
}

/// Every `expr` of the dashboard's panels (nested rows included), and the
/// metrics its template variables' `label_values(metric, label)` read.
fn dashboard_exprs(dashboard: &serde_json::Value) -> (Vec<String>, BTreeSet<String>) {
    fn walk(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::String(expr)) = map.get("expr") {
                    out.push(expr.clone());
                }
                map.values().for_each(|v| walk(v, out));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut exprs = Vec::new();
    walk(&dashboard["panels"], &mut exprs);
    let variables = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["definition"].as_str())
        .map(|d| {
            let inner = d
                .strip_prefix("label_values(")
                .unwrap()
                .trim_end_matches(')');
            inner.split(',').next().unwrap().trim().to_owned()
        })
        .collect();
    (exprs, variables)
}

/// The series a scrape offers: each family from its `# TYPE` line with
/// the suffixes of its type, so a family with no sample yet (a GPU that
/// reports no utilisation) still counts as exported.
fn exported(scrape: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in scrape.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        let suffixes: &[&str] = match kind {
            "counter" => &["_total", "_created"],
            "histogram" => &["_bucket", "_sum", "_count", "_created"],
            "summary" => &["", "_sum", "_count"],
            _ => &[""],
        };
        names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
    }
    names
}

#[test]
fn every_dashboard_panel_and_alert_names_only_series_the_daemon_exports() {
    let daemon = DaemonProcess::start(
        Path::new(PINWHEEL),
        Path::new(CRATE),
        &["--topology", "topology/vm-2cpu.toml", "--rate", "200"],
    );
    daemon.wait_for("a GPU sample and a route in /metrics", |client| {
        client.text("/metrics").is_ok_and(|m| {
            m.contains("DCGM_FI_DEV_FB_USED{") && m.contains("pinwheel_route_call_seconds_bucket{")
        })
    });
    let scrape = daemon.client().text("/metrics").unwrap();
    let exported = exported(&scrape);
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(CRATE).join("deploy/grafana/pinwheel.json")).unwrap(),
    )
    .unwrap();
    let alerts: RuleFile = serde_saphyr::from_str(
        &std::fs::read_to_string(Path::new(CRATE).join("deploy/prometheus/alerts.yml")).unwrap(),
    )
    .unwrap();

    let (exprs, variables) = dashboard_exprs(&dashboard);
    let rules: Vec<(&str, &str)> = alerts
        .groups
        .iter()
        .flat_map(|g| g.rules.iter().map(move |r| (g.name.as_str(), r)))
        .map(|(_, r)| (r.alert.as_str(), r.expr.as_str()))
        .collect();

    assert!(
        exprs.len() >= 20,
        "the dashboard has its panels: {}",
        exprs.len()
    );
    assert!(rules.len() >= 5, "the alerts are there: {}", rules.len());
    let mut unknown = Vec::new();
    for (source, expr) in exprs
        .iter()
        .map(|e| ("dashboard", e.as_str()))
        .chain(rules.iter().copied())
    {
        for name in metric_names(expr) {
            if !exported.contains(&name) {
                unknown.push(format!("{source}: {name} in {expr}"));
            }
        }
    }
    for name in variables {
        if !exported.contains(&name) {
            unknown.push(format!("dashboard variable: {name}"));
        }
    }
    assert!(unknown.is_empty(), "not exported:\n{}", unknown.join("\n"));
    for needed in [
        "pinwheel_agent_handler_seconds_bucket",
        "pinwheel_route_call_seconds_bucket",
        "pinwheel_ring_backlog_slots",
        "pinwheel_ring_parks_total",
        "pinwheel_executor_busy_seconds_total",
        "pinwheel_executor_stalls_total",
        "pinwheel_agent_restarts_total",
        "DCGM_FI_DEV_FB_USED",
        "pinwheel_vram_evictions_total",
        "pinwheel_cluster_host_latency_seconds",
    ] {
        assert!(
            exprs.iter().any(|e| metric_names(e).contains(needed)),
            "a dashboard panel shows {needed}"
        );
    }
    for alert in [
        "PinwheelExecutorStalled",
        "PinwheelAgentFailed",
        "PinwheelLatencyAnomaly",
        "PinwheelClusterPeerLost",
        "PinwheelGpuNearBudget",
    ] {
        assert!(
            rules.iter().any(|(name, _)| *name == alert),
            "alert {alert}"
        );
    }
}

#[test]
fn promtool_accepts_the_alerting_rules() {
    let promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .expect("promtool is not installed; `apt-get install prometheus` (.ci/deps does)");

    let out = Command::new(promtool)
        .args(["check", "rules"])
        .arg(Path::new(CRATE).join("deploy/prometheus/alerts.yml"))
        .output()
        .unwrap();

    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
