//! The run report as one self-contained HTML page (`pinwheel run
//! --report-html FILE`): the summary, the latency table, the SVG
//! percentile plot of the end-to-end and voice latencies (drawn by
//! [`super::plot`] from the same [`Distribution`] the `.hgrm` files hold),
//! every route, every agent, the native agents' counters, the VRAM
//! optimizer's counts (on a host with GPUs), the anomalies the detector
//! raised, and why the run was degraded.
//!
//! Self-contained means no request leaves the page: the style sheet is
//! inline, the plot is inline SVG, there are no scripts, fonts or images.
//! Every name that came from a manifest is escaped. Durations print as in
//! the text report ([`format_ns`]).

use std::fmt::Write as _;

use super::BenchError;
use super::hgrm::Distribution;
use super::plot::{Series, render_svg};
use crate::daemon::report::{LATENCY_TITLES, Report, RouteReport, latency_cells};
use crate::latency::{LatencySummary, format_ns};
use crate::observe::api::{AnomalySeen, Signal, VramCounts};

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
    if let Some(counts) = &report.vram {
        vram(&mut out, counts);
    }
    anomalies(&mut out, &report.anomalies);
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
        "<p id=\"requests\">Requests: {} offered, {} sent, {} not sent, {} completed, {} failed, \
         {} timed out, {} lost. Placement: {} violations (agents off their planned CPU).</p>",
        r.offered,
        r.sent,
        r.not_sent,
        r.completed,
        r.failed,
        r.timed_out,
        r.lost,
        report.placement_violations
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
    let _ = write!(out, "<thead><tr><th>{first}</th>");
    for title in LATENCY_TITLES {
        let _ = write!(out, "<th>{title}</th>");
    }
    out.push_str("</tr></thead>\n");
}

fn percentile_row(out: &mut String, name: &str, p: &LatencySummary) {
    let _ = write!(out, "<tr><td>{}</td>", escape(name));
    for cell in latency_cells(p) {
        let _ = write!(out, "<td>{cell}</td>");
    }
    out.push_str("</tr>\n");
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

fn vram(out: &mut String, v: &VramCounts) {
    out.push_str(
        "<h2>VRAM</h2>\n<table id=\"vram\">\n<thead><tr><th>loads</th><th>preloads</th>\
         <th>evictions</th><th>hits</th><th>misses</th><th>uses that waited</th>\
         <th>wait p99</th><th>denied</th></tr></thead>\n<tbody>\n",
    );
    let _ = writeln!(
        out,
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
         <td>{}</td></tr>",
        v.loads,
        v.preloads,
        v.evictions,
        v.hits,
        v.misses,
        v.waits,
        format_ns(v.wait_p99_ns),
        v.denied
    );
    out.push_str("</tbody>\n</table>\n");
}

fn anomalies(out: &mut String, seen: &[AnomalySeen]) {
    out.push_str("<h2>Anomalies</h2>\n");
    if seen.is_empty() {
        out.push_str("<p id=\"anomalies\">No anomaly was raised.</p>\n");
        return;
    }
    out.push_str(
        "<table id=\"anomalies\">\n<thead><tr><th>agent</th><th>signal</th><th>raised</th>\
         <th>cleared</th><th>level</th><th>baseline</th></tr></thead>\n<tbody>\n",
    );
    for a in seen {
        let cleared = a
            .cleared_s
            .map_or_else(|| "at the end".to_owned(), |s| format!("{s:.1} s"));
        let (level, baseline) = match a.signal {
            Signal::Latency => (format_ns(a.level as u64), format_ns(a.baseline as u64)),
            Signal::Errors => (
                format!("{:.1}%", a.level * 100.0),
                format!("{:.1}%", a.baseline * 100.0),
            ),
        };
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{:.1} s</td><td>{cleared}</td><td>{level}</td>\
             <td>{baseline}</td></tr>",
            escape(&a.agent),
            a.signal.as_str(),
            a.raised_s
        );
    }
    out.push_str("</tbody>\n</table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(agent: &str, signal: Signal, cleared_s: Option<f64>) -> AnomalySeen {
        AnomalySeen {
            agent: agent.into(),
            signal,
            raised_s: 2.0,
            cleared_s,
            level: 0.25,
            baseline: 0.0,
        }
    }

    #[test]
    fn the_vram_counts_are_one_table_row() {
        let mut out = String::new();
        let counts = VramCounts {
            loads: 3,
            hits: 40,
            wait_p99_ns: 1_500_000,
            ..VramCounts::default()
        };
        vram(&mut out, &counts);
        assert!(out.contains("<table id=\"vram\">"), "{out}");
        assert!(
            out.contains("<td>3</td><td>0</td><td>0</td><td>40</td>"),
            "{out}"
        );
        assert!(out.contains(&format_ns(1_500_000)), "{out}");
    }

    #[test]
    fn anomalies_are_listed_escaped_with_their_units_or_said_to_be_none() {
        let mut out = String::new();
        anomalies(&mut out, &[]);
        assert!(out.contains("No anomaly was raised"), "{out}");
        let mut out = String::new();
        anomalies(
            &mut out,
            &[
                seen("<Svc#1>", Signal::Errors, None),
                seen("Svc#2", Signal::Latency, Some(5.0)),
            ],
        );
        assert!(
            out.contains("<td>&lt;Svc#1&gt;</td><td>errors</td>"),
            "{out}"
        );
        assert!(out.contains("<td>at the end</td><td>25.0%</td>"), "{out}");
        assert!(out.contains("<td>5.0 s</td>"), "{out}");
    }

    #[test]
    fn markup_in_names_is_escaped() {
        assert_eq!(
            escape("<b>\"A&B\"</b>'"),
            "&lt;b&gt;&quot;A&amp;B&quot;&lt;/b&gt;&#39;"
        );
    }
}
