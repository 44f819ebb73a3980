//! `pinwheel bench` with no subcommand as a user runs it: one table for
//! ring, wakeup and mesh, `--out` files (HdrHistogram `.hgrm`
//! distributions read back, SVG plots parsed as XML), `--vs` ratios, and
//! bad input. Runs are tiny and unprivileged; they check shapes, never
//! speed.

// The crate is test code as a whole; marking it so lets the lints that
// keep `unwrap` and `#[test]` inside test modules see that.
#![cfg(test)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::OnceLock;

use pinwheel::bench::Distribution;
use pinwheel::latency::{LatencySummary, format_ns, new_histogram};

const VM_2CPU: &str = "topology/vm-2cpu.toml";
const CASES: [&str; 5] = [
    "ring round trip",
    "wakeup glommio executor",
    "wakeup clock_nanosleep thread",
    "mesh voice frame to response",
    "mesh request end to end",
];
const SLUGS: [&str; 5] = [
    "ring-rtt",
    "wakeup-executor",
    "wakeup-thread",
    "mesh-voice",
    "mesh-request",
];
/// Which plot each case is drawn in.
const PLOTS: [(&str, &[&str]); 3] = [
    ("ring", &["ring round trip"]),
    (
        "wakeup",
        &["wakeup glommio executor", "wakeup clock_nanosleep thread"],
    ),
    (
        "mesh",
        &["mesh voice frame to response", "mesh request end to end"],
    ),
];

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pinwheel"))
        .arg("bench")
        .args(args)
        .output()
        .unwrap()
}

/// A tiny suite run: a few hundred messages and wake-ups, one second of
/// mesh.
fn tiny_suite(extra: &[&str]) -> String {
    let mut args = vec![
        "--msgs",
        "300",
        "--loops",
        "40",
        "--period-us",
        "500",
        "--mesh-duration",
        "1",
        "--unprivileged",
    ];
    args.extend_from_slice(extra);
    let out = bench(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// One single-topology run with `--out`, shared by the tests that read
/// its table and files: the directory and the table.
fn single_run() -> &'static (tempfile::TempDir, String) {
    static RUN: OnceLock<(tempfile::TempDir, String)> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("reports");
        let table = tiny_suite(&["--topology", VM_2CPU, "--out", out.to_str().unwrap()]);
        (dir, table)
    })
}

/// The table's row for a case (the first, for the first topology).
fn row<'a>(table: &'a str, case: &str) -> Vec<&'a str> {
    let line = table
        .lines()
        .find(|l| l.starts_with(case))
        .unwrap_or_else(|| panic!("no row {case} in {table}"));
    line[case.len()..].split_whitespace().collect()
}

fn read_distribution(path: &Path) -> Distribution {
    let text = std::fs::read_to_string(path).unwrap();
    Distribution::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Non-black polylines of a plot by stroke colour (black ones are axes),
/// and the plot's text.
fn plot_lines(path: &Path) -> (BTreeMap<String, Vec<usize>>, Vec<String>) {
    let text = std::fs::read_to_string(path).unwrap();
    let doc = roxmltree::Document::parse(&text)
        .unwrap_or_else(|e| panic!("{} is not well-formed XML: {e}", path.display()));
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let mut lines: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for node in doc.descendants().filter(|n| n.has_tag_name("polyline")) {
        let stroke = node.attribute("stroke").unwrap_or_default();
        if stroke != "#000000" {
            let points = node.attribute("points").unwrap_or_default();
            lines
                .entry(stroke.to_owned())
                .or_default()
                .push(points.split_whitespace().count());
        }
    }
    let texts = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .map(|t| t.trim().to_owned())
        .collect();
    (lines, texts)
}

#[test]
fn the_suite_prints_one_table_and_writes_a_distribution_per_case_and_a_plot_per_bench() {
    let (dir, table) = single_run();
    let out_dir = dir.path().join("reports");
    let header = table.lines().find(|l| l.starts_with("case")).unwrap();
    let titles: Vec<&str> = header.split_whitespace().collect();
    assert_eq!(
        titles,
        ["case", "count", "p50", "p90", "p99", "p99.9", "max"]
    );
    for case in CASES {
        assert_eq!(row(table, case).len(), 11, "count + 5 values with units");
    }
    assert!(table.contains("wrote 8 files to"), "{table}");
    for slug in SLUGS {
        assert!(out_dir.join(format!("{slug}.hgrm")).is_file(), "{slug}");
    }
    for (bench, _) in PLOTS {
        assert!(out_dir.join(format!("{bench}.svg")).is_file(), "{bench}");
    }
}

#[test]
fn hgrm_files_read_back_to_the_tables_counts_and_maxima() {
    let (dir, table) = single_run();
    let out_dir = dir.path().join("reports");
    for (case, slug) in CASES.iter().zip(SLUGS) {
        let sut = read_distribution(&out_dir.join(format!("{slug}.hgrm")));
        let columns = row(table, case);
        let count: u64 = columns[0].parse().unwrap();
        assert_eq!(sut.footer().total_count, count, "{case}");
        let max_ns = (sut.footer().max_us * 1e3).round() as u64;
        let max_in_table = columns[columns.len() - 2..].join(" ");
        assert_eq!(format_ns(max_ns), max_in_table, "{case}");
        let rows = sut.rows();
        assert!(
            rows.windows(2).all(|w| w[0].quantile <= w[1].quantile
                && w[0].value_us <= w[1].value_us
                && w[0].total_count <= w[1].total_count),
            "{case}: rows ascend"
        );
        if let Some(last) = rows.last() {
            assert_eq!(last.quantile, 1.0, "{case}");
            assert_eq!(last.total_count, count, "{case}");
        }
    }
}

#[test]
fn an_hgrm_file_reads_back_to_the_histograms_percentiles_within_its_precision() {
    let mut histogram = new_histogram();
    // A body around 20 us and a tail out to 9 ms, like a wake-up bench.
    for i in 0..20_000u64 {
        let ns = 20_000 + (i * 7_919) % 5_000 + if i % 97 == 0 { i * 450 } else { 0 };
        histogram.record(ns).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("case.hgrm");
    std::fs::write(&path, Distribution::of(&histogram).to_hgrm()).unwrap();
    let sut = read_distribution(&path);
    assert!(sut.rows().len() > 50, "ticks reach into the tail");
    let len = histogram.len() as f64;
    for row in sut.rows() {
        // Each row says how many values are at or below its value, and
        // that count covers its percentile: the histogram agrees exactly.
        let read = (row.value_us * 1e3).round() as u64;
        assert_eq!(
            histogram.count_between(0, read),
            row.total_count,
            "at {}: {read} ns",
            row.quantile
        );
        assert!(
            row.total_count as f64 >= row.quantile * len - 1.0,
            "{row:?}"
        );
    }
    // The named percentiles, within one bucket: a tick's quantile, summed
    // in floating point, can land one count past the quantile it names.
    let within_precision =
        |read: u64, expected: u64| read.abs_diff(expected) <= histogram.equivalent_range(expected);
    let summary = LatencySummary::of(&histogram);
    for (quantile, expected) in [(0.5, summary.p50), (0.9, summary.p90)] {
        let read = (sut.value_at_quantile(quantile).unwrap() * 1e3).round() as u64;
        assert!(within_precision(read, expected), "p{quantile}");
    }
    assert_eq!((sut.footer().max_us * 1e3).round() as u64, histogram.max());
    assert_eq!(sut.footer().total_count, 20_000);
    let mean_ns = sut.footer().mean_us * 1e3;
    assert!((mean_ns - histogram.mean()).abs() < 1.0, "{mean_ns}");
}

#[test]
fn svg_plots_are_well_formed_xml_with_a_line_and_a_legend_entry_per_case() {
    let out_dir = single_run().0.path().join("reports");
    for (bench, cases) in PLOTS {
        let (lines, texts) = plot_lines(&out_dir.join(format!("{bench}.svg")));
        assert_eq!(lines.len(), cases.len(), "{bench}: one colour per case");
        for case in cases {
            assert!(texts.iter().any(|t| t == case), "{bench}: legend {case}");
        }
        for (colour, polylines) in &lines {
            assert!(polylines.contains(&2), "{bench} {colour}: a legend sample");
        }
        for axis in ["percentile", "latency (µs)", "0%", "90%", "99%"] {
            assert!(texts.iter().any(|t| t == axis), "{bench}: {axis}");
        }
        let title = format!("pinwheel bench {bench}:");
        assert!(texts.iter().any(|t| t.starts_with(&title)), "{bench}");
    }
    let (wakeup, _) = plot_lines(&out_dir.join("wakeup.svg"));
    assert!(
        wakeup.values().all(|p| p.iter().any(|&n| n > 10)),
        "40 wake-ups draw a line of many ticks: {wakeup:?}"
    );
}

#[test]
fn vs_runs_both_topologies_and_prints_the_ratio_of_each_case() {
    let dir = tempfile::tempdir().unwrap();
    let park = dir.path().join("vm-2cpu-park.toml");
    let text = std::fs::read_to_string(VM_2CPU)
        .unwrap()
        .replace("wait = \"adaptive\"", "wait = \"park\"");
    std::fs::write(&park, text).unwrap();
    let out_dir = dir.path().join("out");
    let table = tiny_suite(&[
        "--topology",
        VM_2CPU,
        "--vs",
        park.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(table.contains("wait adaptive"), "{table}");
    assert!(table.contains("wait park"), "{table}");
    let lines: Vec<&str> = table.lines().collect();
    for case in CASES {
        let at = lines.iter().position(|l| l.starts_with(case)).unwrap();
        let a: Vec<&str> = lines[at].split_whitespace().collect();
        assert!(a.contains(&"vm-2cpu"), "{}", lines[at]);
        assert!(lines[at + 1].contains("vm-2cpu-park"), "{}", lines[at + 1]);
        let ratios: Vec<&str> = lines[at + 2].split_whitespace().collect();
        assert_eq!(ratios[0], "b/a", "{}", lines[at + 2]);
        assert_eq!(ratios.len(), 6, "five ratios: {}", lines[at + 2]);
        assert!(
            ratios[1..].iter().all(|r| *r == "-" || r.ends_with('x')),
            "{}",
            lines[at + 2]
        );
    }
    for slug in SLUGS {
        for label in ["vm-2cpu", "vm-2cpu-park"] {
            let file = out_dir.join(format!("{slug}.{label}.hgrm"));
            assert!(file.is_file(), "{}", file.display());
        }
    }
    let (wakeup, texts) = plot_lines(&out_dir.join("wakeup.svg"));
    assert_eq!(wakeup.len(), 4, "two cases under two topologies");
    assert!(
        texts
            .iter()
            .any(|t| t == "wakeup glommio executor (vm-2cpu-park)")
    );
}

fn assert_bad_input(args: &[&str], message: &str) {
    let out = bench(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(message), "{message} in {stderr}");
    assert!(out.stdout.is_empty(), "nothing ran");
}

#[test]
fn a_missing_topology_exits_2_naming_its_flag() {
    assert_bad_input(
        &["--topology", "topology/nope.toml"],
        "--topology topology/nope.toml: no such file",
    );
    assert_bad_input(
        &["--topology", VM_2CPU, "--vs", "nope.toml"],
        "--vs nope.toml: no such file; pass a topology file",
    );
}

#[test]
fn an_out_path_that_is_a_file_exits_2_before_any_bench_runs() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let path = file.path().to_str().unwrap();
    assert_bad_input(
        &["--topology", VM_2CPU, "--out", path],
        "is a file, not a directory",
    );
    let below = format!("{path}/reports");
    assert_bad_input(
        &["--topology", VM_2CPU, "--out", &below],
        "cannot create it",
    );
}

#[test]
fn numbers_out_of_range_exit_2_naming_the_flag() {
    for (args, message) in [
        (["--loops", "0"], "--loops 0"),
        (["--period-us", "0"], "--period-us 0"),
        (["--mesh-duration", "-1"], "--mesh-duration -1"),
        (["--mesh-rate", "-5"], "--mesh-rate -5 is out of range"),
    ] {
        let mut all = vec!["--topology", VM_2CPU];
        all.extend(args);
        assert_bad_input(&all, message);
    }
}

#[test]
fn a_topology_with_an_error_exits_2_pointing_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    let text = std::fs::read_to_string(VM_2CPU)
        .unwrap()
        .replace("wait = \"adaptive\"", "wait = \"sometimes\"");
    std::fs::write(&bad, text).unwrap();
    assert_bad_input(
        &["--topology", VM_2CPU, "--vs", bad.to_str().unwrap()],
        "bad.toml:",
    );
}
