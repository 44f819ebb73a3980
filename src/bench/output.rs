//! What `pinwheel bench` (no subcommand) shows and writes: one table for
//! people, and with `--out DIR` an `.hgrm` file per histogram and an SVG
//! plot per bench.
//!
//! Files, for each topology label `L` (the file's stem; left out of the
//! names when only one topology ran):
//!
//! ```text
//! DIR/ring-rtt[.L].hgrm  DIR/wakeup-executor[.L].hgrm  DIR/wakeup-thread[.L].hgrm
//! DIR/mesh-voice[.L].hgrm  DIR/mesh-request[.L].hgrm
//! DIR/ring.svg  DIR/wakeup.svg  DIR/mesh.svg     (every topology's lines in one plot)
//! ```
//!
//! Under `--vs` each case gets a third row, `b/a`: the second topology's
//! value over the first's at each percentile (below 1.00x, b is faster).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::BenchError;
use super::hgrm::Distribution;
use super::plot::{Series, render_svg};
use super::report::wait_name;
use super::suite::{CaseKind, TargetResults};
use crate::latency::{LatencySummary, format_ns};
use crate::runtime::affinity::SchedPolicy;
use crate::topology::TaskQueue;

/// Column titles after the case (and topology) columns.
const TITLES: [&str; 6] = ["count", "p50", "p90", "p99", "p99.9", "max"];
/// Benches, in plot order.
const BENCHES: [&str; 3] = ["ring", "wakeup", "mesh"];

fn row_values(summary: &LatencySummary) -> [u64; 5] {
    [
        summary.p50,
        summary.p90,
        summary.p99,
        summary.p999,
        summary.max,
    ]
}

pub(super) fn policy_name(policy: SchedPolicy) -> String {
    match policy {
        SchedPolicy::Other => "SCHED_OTHER".into(),
        SchedPolicy::Fifo { priority } => format!("SCHED_FIFO {priority}"),
        SchedPolicy::RoundRobin { priority } => format!("SCHED_RR {priority}"),
        other => format!("{other:?}"),
    }
}

/// The setup lines of one topology.
fn setup(out: &mut String, results: &TargetResults) {
    let t = &results.target;
    let _ = writeln!(out, "{}: {}", t.label, t.topology.display());
    let r = &t.ring;
    let _ = writeln!(
        out,
        "  ring    CPUs {} and {} (2 threads), wait {}, spin {} us, {}-byte bodies, {} round trips",
        r.cpus[0],
        r.cpus[1],
        wait_name(r.wait),
        r.spin_us,
        r.size,
        r.msgs
    );
    let w = &t.wakeup;
    let queue = match w.settings.task_queue {
        TaskQueue::Latency => "latency queue".to_owned(),
        TaskQueue::Shares(shares) => format!("{shares}-share queue"),
    };
    let _ = writeln!(
        out,
        "  wakeup  CPU {}, every {} us x {}, preempt timer {} us, spin before park {} us, {queue}, {}",
        w.cpu,
        w.period.as_micros(),
        w.loops,
        w.settings.preempt_timer_us,
        w.settings.spin_before_park_us,
        policy_name(results.wakeup_policy)
    );
    let m = &t.mesh;
    let _ = writeln!(
        out,
        "  mesh    {}, {}/{} agents started, {:.1} s at {} req/s",
        m.agents
            .iter()
            .map(|a| a.display().to_string())
            .collect::<Vec<_>>()
            .join(" "),
        results.mesh_agents.0,
        results.mesh_agents.1,
        m.duration.as_secs_f64(),
        m.rate_per_s
    );
}

/// The table: setup lines, then one row per case and topology, and a
/// `b/a` row per case when two topologies ran.
pub fn render_suite_table(results: &[TargetResults]) -> String {
    let mut out = String::from("pinwheel bench\n");
    for r in results {
        setup(&mut out, r);
    }
    let compare = results.len() > 1;
    let label_width = results
        .iter()
        .map(|r| r.target.label.len())
        .max()
        .unwrap_or(0)
        .max(8);
    let _ = write!(out, "\n{:<30}", "case");
    if compare {
        let _ = write!(out, " {:<label_width$}", "topology");
    }
    for title in TITLES {
        let _ = write!(out, "{title:>10}");
    }
    out.push('\n');
    for kind in CaseKind::ALL {
        let summaries: Vec<LatencySummary> = results
            .iter()
            .filter_map(|r| r.case(kind).map(LatencySummary::of))
            .collect();
        for (i, (r, summary)) in results.iter().zip(&summaries).enumerate() {
            let name = if i == 0 { kind.name() } else { "" };
            let _ = write!(out, "{name:<30}");
            if compare {
                let _ = write!(out, " {:<label_width$}", r.target.label);
            }
            let _ = write!(out, "{:>10}", summary.count);
            for ns in row_values(summary) {
                let _ = write!(out, "{:>10}", format_ns(ns));
            }
            out.push('\n');
        }
        if let [a, b] = summaries.as_slice() {
            let _ = write!(out, "{:<30} {:<label_width$}{:>10}", "", "b/a", "");
            for (b, a) in row_values(b).into_iter().zip(row_values(a)) {
                let ratio = if a == 0 {
                    "-".to_owned()
                } else {
                    format!("{:.2}x", b as f64 / a as f64)
                };
                let _ = write!(out, "{ratio:>10}");
            }
            out.push('\n');
        }
    }
    out
}

/// Keeps a label to characters safe in a file name.
fn file_label(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Writes every case's `.hgrm` and every bench's SVG plot into `dir`;
/// returns the files written, in order.
pub fn write_suite_files(
    results: &[TargetResults],
    dir: &Path,
) -> Result<Vec<PathBuf>, BenchError> {
    let compare = results.len() > 1;
    let mut written = Vec::new();
    let mut write = |name: String, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|source| BenchError::Write {
            path: path.clone(),
            source,
        })?;
        written.push(path);
        Ok::<_, BenchError>(())
    };
    let mut lines: Vec<(CaseKind, String, Distribution)> = Vec::new();
    for r in results {
        for (kind, histogram) in &r.cases {
            let distribution = Distribution::of(histogram);
            let (file, legend) = if compare {
                let label = &r.target.label;
                (
                    format!("{}.{}.hgrm", kind.slug(), file_label(label)),
                    format!("{} ({label})", kind.name()),
                )
            } else {
                (format!("{}.hgrm", kind.slug()), kind.name().to_owned())
            };
            write(file, &distribution.to_hgrm())?;
            lines.push((*kind, legend, distribution));
        }
    }
    for bench in BENCHES {
        let series: Vec<Series<'_>> = lines
            .iter()
            .filter(|(kind, _, _)| kind.bench() == bench)
            .map(|(_, name, distribution)| Series { name, distribution })
            .collect();
        let title = match bench {
            "ring" => "ring round trip",
            "wakeup" => "wake-up lateness",
            _ => "voice pipeline through the daemon",
        };
        let svg = render_svg(&format!("pinwheel bench {bench}: {title}"), &series)?;
        write(format!("{bench}.svg"), &svg)?;
    }
    Ok(written)
}
