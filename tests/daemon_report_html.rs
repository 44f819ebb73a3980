#![cfg(test)]
//! `pinwheel run --report-html FILE`: one self-contained HTML page with
//! the latency tables and the SVG percentile plot, read back with an HTML
//! parser (scraper, html5ever underneath) the way a browser reads it.

use std::path::Path;
use std::process::Command;

use scraper::{Html, Selector};

const CRATE: &str = env!("CARGO_MANIFEST_DIR");
const PINWHEEL: &str = env!("CARGO_BIN_EXE_pinwheel");

fn select<'a>(page: &'a Html, css: &str) -> Vec<scraper::ElementRef<'a>> {
    page.select(&Selector::parse(css).unwrap()).collect()
}

fn cells(row: &scraper::ElementRef<'_>) -> Vec<String> {
    row.select(&Selector::parse("td").unwrap())
        .map(|td| td.text().collect::<String>())
        .collect()
}

#[test]
fn the_html_report_is_one_page_with_tables_and_a_percentile_plot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.html");
    let out = Command::new(PINWHEEL)
        .current_dir(CRATE)
        .args([
            "run",
            "--topology",
            "topology/vm-2cpu.toml",
            "--agents",
            "agents/voice-pipeline.toml",
            "--duration",
            "2",
            "--rate",
            "200",
            "--admin-addr",
            "127.0.0.1:0",
            "--report-html",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let page = Html::parse_document(&std::fs::read_to_string(&path).unwrap());

    assert!(page.errors.is_empty(), "HTML errors: {:?}", page.errors);
    assert_eq!(
        select(&page, "title")[0].text().collect::<String>(),
        "pinwheel run report"
    );
    let summary = select(&page, "#summary")[0].text().collect::<String>();
    assert!(summary.contains("agents started"), "{summary}");
    let latency = select(&page, "#latency tbody tr");
    assert_eq!(latency.len(), 2);
    let e2e = cells(&latency[0]);
    assert_eq!(e2e[0], "request, end to end");
    assert!(
        e2e[1].parse::<u64>().unwrap() > 0,
        "requests were timed: {e2e:?}"
    );
    assert!(
        ["ns", "us", "ms"].iter().any(|unit| e2e[2].ends_with(unit)),
        "p50 is a duration: {e2e:?}"
    );
    assert!(
        !select(&page, "#routes tbody tr").is_empty(),
        "routes are listed"
    );
    assert!(
        select(&page, "#agents tbody tr").len() >= 5,
        "agents are listed"
    );
    let svg = select(&page, "figure#percentiles svg");
    assert_eq!(svg.len(), 1, "one inline SVG plot");
    assert!(
        !select(
            &page,
            "figure#percentiles svg polyline, figure#percentiles svg path"
        )
        .is_empty(),
        "the plot draws lines"
    );
    let plot_text: String = svg[0].text().collect();
    assert!(
        plot_text.contains("request, end to end"),
        "the legend names the case"
    );
    assert!(plot_text.contains("99%"), "the x axis counts the nines");
    for external in [
        "script", "link", "img", "iframe", "object", "embed", "[src]", "[href]",
    ] {
        assert!(
            select(&page, external).is_empty(),
            "self-contained: no {external}"
        );
    }
}

#[test]
fn a_report_html_in_a_missing_directory_is_bad_input_before_anything_starts() {
    let out = Command::new(PINWHEEL)
        .current_dir(CRATE)
        .args([
            "run",
            "--topology",
            "topology/vm-2cpu.toml",
            "--duration",
            "1",
            "--report-html",
            "/nonexistent-dir/report.html",
        ])
        .output()
        .unwrap();

    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--report-html"), "{stderr}");
    assert!(!Path::new("/nonexistent-dir").exists());
}

/// A coordinator calling a four-replica service that uses a GPU model.
const REPLICAS_WITH_A_MODEL: &str = r#"
schema = 1

[[agent]]
name = "RequestCoordinator"
host = "vm"
role = "Task coordination"
kind = "native"
native = "coordinator"
class = "P"
priority = "high"
concurrency = 64
calls = ["Svc"]

[[agent]]
name = "Svc"
host = "vm"
role = "A replicated service with a model"
kind = "synthetic"
class = "P"
priority = "high"
service = { median_us = 1000, p99_us = 3000 }
concurrency = 16
replicas = 4
models = [{ name = "svc-model", vram_mib = 2000 }]
"#;

#[test]
fn the_html_report_shows_the_vram_counts_and_the_anomalies_the_run_had() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("replicas.toml");
    std::fs::write(&manifest, REPLICAS_WITH_A_MODEL).unwrap();
    let path = dir.path().join("report.html");
    let out = Command::new(PINWHEEL)
        .current_dir(CRATE)
        .args(["run", "--topology", "topology/vm-2cpu.toml", "--agents"])
        .arg(&manifest)
        .args([
            "--unprivileged",
            "--duration",
            "6",
            "--rate",
            "200",
            "--fault",
            "Svc#1:slow=20x",
            "--admin-addr",
            "127.0.0.1:0",
            "--report-html",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let page = Html::parse_document(&std::fs::read_to_string(&path).unwrap());
    assert!(page.errors.is_empty(), "HTML errors: {:?}", page.errors);
    let vram = select(&page, "table#vram tbody tr");
    assert_eq!(vram.len(), 1, "one row of VRAM counts");
    let counts = cells(&vram[0]);
    let hits: u64 = counts[3].parse().unwrap();
    assert!(hits > 0, "the model's uses were counted: {counts:?}");
    let anomalies: Vec<Vec<String>> = select(&page, "table#anomalies tbody tr")
        .iter()
        .map(cells)
        .collect();
    assert!(
        anomalies
            .iter()
            .any(|a| a[0] == "Svc#1" && a[1] == "latency"),
        "the slowed replica's anomaly is listed: {anomalies:?}"
    );
}
