//! The run report as one self-contained HTML page (`pinwheel run
//! --report-html FILE`): the summary, the latency table, the SVG
//! percentile plot of the end-to-end and voice latencies (drawn by
//! [`super::plot`] from the same [`Distribution`] the `.hgrm` files hold),
//! every route, every agent, the native agents' counters and why the run
//! was degraded.
//!
//! Self-contained means no request leaves the page: the style sheet is
//! inline, the plot is inline SVG, there are no scripts, fonts or images.
//! Every name that came from a manifest is escaped. Durations print as in
//! the text report ([`format_ns`]).

use std::fmt::Write as _;

use super::BenchError;
use super::hgrm::Distribution;
use super::plot::{Series, render_svg};
use crate::daemon::report::{Report, RouteReport};
use crate::latency::{LatencySummary, format_ns};

/// The page's style sheet: plain tables, readable without colour.
const STYLE: &str = "body{font-family:sans-serif;margin:2em;max-width:70em}\
table{border-collapse:collapse;margin:1em 0}\
th,td{border:1px solid #999;padding:.2em .6em;text-align:right}\
th:first-child,td:first-child{text-align:left}\
thead th{background:#eee}\
figure{margin:1em 0}";

/// The report as an HTML page.
pub fn render_html(report: &Report) -> Result<String, BenchError> {
    let mut out = String::new();
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str("<title>pinwheel run report</title>\n");
    let _ = writeln!(out, "<style>{STYLE}</style>\n</head>\n<body>");
    out.push_str("<h1>pinwheel run report</h1>\n");
    summary(&mut out, report);
    latency_table(&mut out, report);
    plot(&mut out, report)?;
    routes(&mut out, &report.routes);
    agents(&mut out, report);
    native(&mut out, report);
    out.push_str("</body>\n</html>\n");
    Ok(out)
}

/// `<`, `>`, `&` and quotes escaped, for text and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn summary(out: &mut String, report: &Report) {
    let r = &report.requests;
    let _ = writeln!(
        out,
        "<p id=\"summary\">{}/{} agents started in {:.1} ms; ran {:.1} s at {} req/s.</p>",
        report.agents_started,
        report.agents_planned,
        report.startup_ms,
        report.run_s,
        report.rate_per_s
    );
    let _ = writeln!(
        out,
        "<p id=\"requests\">Requests: {} sent, {} completed, {} failed, {} timed out, {} lost. \
         Placement: {} violations (agents off their planned CPU).</p>",
        r.sent, r.completed, r.failed, r.timed_out, r.lost, report.placement_violations
    );
    if !report.degraded.is_empty() {
        let _ = writeln!(
            out,
            "<p id=\"degraded\">Degraded: {}.</p>",
            escape(&report.degraded.join(", "))
        );
    }
}

fn percentile_header(out: &mut String, first: &str) {
    let _ = writeln!(
        out,
        "<thead><tr><th>{first}</th><th>count</th><th>p50</th><th>p99</th><th>p99.9</th><th>max</th></tr></thead>"
    );
}

fn percentile_row(out: &mut String, name: &str, p: &LatencySummary) {
    let _ = writeln!(
        out,
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        escape(name),
        p.count,
        format_ns(p.p50),
        format_ns(p.p99),
        format_ns(p.p999),
        format_ns(p.max)
    );
}

fn latency_table(out: &mut String, report: &Report) {
    out.push_str("<h2>Latency</h2>\n<table id=\"latency\">\n");
    percentile_header(out, "latency");
    out.push_str("<tbody>\n");
    percentile_row(out, "request, end to end", &report.e2e_latency_ns);
    percentile_row(
        out,
        "voice: audio frame to response",
        &report.voice_latency_ns,
    );
    out.push_str("</tbody>\n</table>\n");
}

fn plot(out: &mut String, report: &Report) -> Result<(), BenchError> {
    let e2e = Distribution::of(report.e2e_histogram());
    let voice = Distribution::of(report.voice_histogram());
    let series: Vec<Series<'_>> = [
        ("request, end to end", &e2e, report.e2e_latency_ns.count),
        (
            "voice: audio frame to response",
            &voice,
            report.voice_latency_ns.count,
        ),
    ]
    .into_iter()
    .filter(|(_, _, count)| *count > 0)
    .map(|(name, distribution, _)| Series { name, distribution })
    .collect();
    out.push_str("<h2>Percentiles</h2>\n");
    if series.is_empty() {
        out.push_str("<p>No latencies were recorded (no load: --rate 0).</p>\n");
        return Ok(());
    }
    let svg = render_svg("pinwheel run: latency by percentile", &series)?;
    let _ = writeln!(
        out,
        "<figure id=\"percentiles\">\n{svg}\n<figcaption>Latency by percentile (log scale of \
         1/(1-p)), as in HdrHistogram's plotter.</figcaption>\n</figure>"
    );
    Ok(())
}

fn routes(out: &mut String, routes: &[RouteReport]) {
    out.push_str("<h2>Routes</h2>\n");
    if routes.is_empty() {
        out.push_str("<p>No route carried calls.</p>\n");
        return;
    }
    let mut slowest: Vec<&RouteReport> = routes.iter().collect();
    slowest.sort_by_key(|r| std::cmp::Reverse(r.latency_ns.p99));
    out.push_str("<table id=\"routes\">\n");
    percentile_header(out, "route (slowest p99 first)");
    out.push_str("<tbody>\n");
    for route in slowest {
        let name = format!("{} -> {}", route.from, route.to);
        percentile_row(out, &name, &route.latency_ns);
    }
    out.push_str("</tbody>\n</table>\n");
}

fn agents(out: &mut String, report: &Report) {
    out.push_str(
        "<h2>Agents</h2>\n<table id=\"agents\">\n<thead><tr><th>agent</th><th>host</th>\
        <th>kind</th><th>planned CPU</th><th>observed CPU</th><th>handled</th><th>failures</th>\
        <th>restarts</th><th>expired</th></tr></thead>\n<tbody>\n",
    );
    for a in &report.per_agent {
        let observed = a
            .observed_cpu
            .map_or_else(|| "-".to_owned(), |c| c.to_string());
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{observed}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&a.name),
            escape(&a.host),
            a.kind,
            a.planned_cpu,
            a.handled,
            a.failures,
            a.restarts,
            a.expired
        );
    }
    out.push_str("</tbody>\n</table>\n");
}

fn native(out: &mut String, report: &Report) {
    if report.coordinators.is_empty() && report.registries.is_empty() {
        return;
    }
    out.push_str("<h2>Native agents</h2>\n<ul id=\"native\">\n");
    for c in &report.coordinators {
        let _ = writeln!(
            out,
            "<li>{}: {} accepted, {} completed, {} failed, {} expired, {} overloaded, {} retries, \
             {} rejected, breakers opened {} closed {}</li>",
            escape(&c.name),
            c.accepted,
            c.completed,
            c.failed,
            c.expired,
            c.overloaded,
            c.retries,
            c.rejected,
            c.breaker_opened,
            c.breaker_closed
        );
    }
    for g in &report.registries {
        let _ = writeln!(
            out,
            "<li>{}: {} agents registered ({} up), {} restored from the snapshot, {} saves, \
             {} snapshot errors</li>",
            escape(&g.name),
            g.entries,
            g.up,
            g.restored,
            g.saves,
            g.snapshot_errors
        );
    }
    out.push_str("</ul>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_names_is_escaped() {
        assert_eq!(
            escape("<b>\"A&B\"</b>'"),
            "&lt;b&gt;&quot;A&amp;B&quot;&lt;/b&gt;&#39;"
        );
    }
}
