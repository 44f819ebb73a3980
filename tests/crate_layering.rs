//! The crate's modules depend one way (README, "Dependencies point one
//! way"). Each top-level module under `src/` may name another module
//! (`crate::x::..`, a `crate::{x, ..}` group, or a `super::` chain that
//! climbs to the crate root) only if that module sits in a lower layer of
//! [`LAYERS`], or the pair is one of the few [`SIDEWAYS`] edges inside a
//! layer, and the graph of those references has no cycle. A new module
//! fails the test until it is given a place in the table.
//!
//! The table mirrors ARCHITECTURE's order. `latency` (histograms,
//! percentile summaries, the duration formatter) is a bottom-layer helper
//! because the runtime records into it and both the daemon and the benches
//! print from it. `error` (`DaemonError`) wraps the errors of everything
//! below it and is returned by the daemon, so it sits between the two; the
//! benches sit above the daemon (the mesh bench runs it), and the CLI, with
//! `CliError` holding a daemon's or a bench's error, above everything.
//! `main.rs` uses only `pinwheel::cli`; `lib.rs` only declares modules.
//! Comments are not references: only code is scanned.

#![cfg(test)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first. `gateway` is where the architecture puts it
/// before it exists.
const LAYERS: &[&[&str]] = &[
    &["config", "topology", "latency"],
    &["plan"],
    &["runtime"],
    &[
        "agents", "process", "gpu", "cluster", "observe", "tuning", "gateway",
    ],
    &["error"],
    &["daemon"],
    &["bench"],
    &["cli", "test_support"],
];

/// Edges allowed inside one layer: (from, to, why).
const SIDEWAYS: &[(&str, &str, &str)] = &[
    (
        "topology",
        "config",
        "a topology file is config's raw serde struct, validated into a Topology; config never sees a Topology",
    ),
    (
        "cluster",
        "gpu",
        "the cluster link carries the GPU scheduler's host state; gpu never sees the link",
    ),
    (
        "agents",
        "process",
        "the mesh builds each process agent's bridge; process never sees the mesh",
    ),
    (
        "process",
        "observe",
        "a process raises health reasons and reports the API's agent states; observe never sees a process",
    ),
    (
        "test_support",
        "cli",
        "a test daemon is queried with the CLI's admin client; the CLI never uses test support",
    ),
];

/// For each module, the modules it names and the files that name them.
type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<PathBuf>>>;

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("src/ is readable").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Top-level modules of `src` and their files; `lib.rs`, `main.rs` and
/// `bin/` (binaries, which link the library as `main.rs` does) are not
/// modules.
fn modules(src: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    let mut modules = BTreeMap::new();
    for entry in std::fs::read_dir(src).expect("src/ is readable") {
        let path = entry.expect("src/ is readable").path();
        let name = path
            .file_stem()
            .expect("a directory entry has a name")
            .to_string_lossy()
            .into_owned();
        let mut files = Vec::new();
        if path.is_dir() && name == "bin" {
            continue;
        } else if path.is_dir() {
            rust_files(&path, &mut files);
        } else if path.extension().is_some_and(|e| e == "rs") && name != "lib" && name != "main" {
            files.push(path);
        } else {
            continue;
        }
        modules.insert(name, files);
    }
    modules
}

/// How many `super::` reach the crate root from a file's top level:
/// `error.rs` and `daemon/mod.rs` 1, `daemon/report.rs` 2.
fn depth(src: &Path, file: &Path) -> usize {
    let parts = file
        .strip_prefix(src)
        .expect("files come from under src/")
        .components()
        .count();
    if file.file_name().is_some_and(|n| n == "mod.rs") {
        parts - 1
    } else {
        parts
    }
}

/// The text without `//` comments (doc comments included); a `//` inside
/// a string literal (an odd number of quotes before it) is kept.
fn code(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut cut = line.len();
        let mut from = 0;
        while let Some(at) = line[from..].find("//") {
            let at = from + at;
            if line[..at].matches('"').count() % 2 == 0 {
                cut = at;
                break;
            }
            from = at + 2;
        }
        out.push_str(&line[..cut]);
        out.push('\n');
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn leading_ident(text: &str) -> &str {
    let text = text.trim_start();
    &text[..text.find(|c| !is_ident(c)).unwrap_or(text.len())]
}

/// The first names of the paths in a `{..}` group (`rest` starts after
/// the `{`): `a::b, c::{d, e}, f` gives a, c, f.
fn group_heads(rest: &str) -> Vec<&str> {
    let (mut heads, mut nesting, mut start) = (Vec::new(), 0, 0);
    for (i, c) in rest.char_indices() {
        match c {
            '{' => nesting += 1,
            '}' if nesting == 0 => {
                heads.push(leading_ident(&rest[start..i]));
                break;
            }
            '}' => nesting -= 1,
            ',' if nesting == 0 => {
                heads.push(leading_ident(&rest[start..i]));
                start = i + 1;
            }
            _ => {}
        }
    }
    heads.retain(|h| !h.is_empty() && *h != "self");
    heads
}

/// The top-level module names a file's code refers to through the crate
/// root (`depth` as [`depth`] gives it).
fn references(code: &str, depth: usize) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let bytes = code.as_bytes();
    let mut at = 0;
    while at < code.len() {
        let starts_path =
            at == 0 || !(is_ident(bytes[at - 1] as char) || b":$".contains(&bytes[at - 1]));
        let rest = &code[at..];
        let root = if !starts_path {
            None
        } else if let Some(after) = rest.strip_prefix("crate::") {
            Some(after)
        } else if rest.starts_with("super::") {
            let mut after = rest;
            let mut climbed = 0;
            while let Some(next) = after.strip_prefix("super::") {
                (after, climbed) = (next, climbed + 1);
            }
            (climbed >= depth).then_some(after)
        } else {
            None
        };
        if let Some(after) = root {
            match after.strip_prefix('{') {
                Some(group) => found.extend(group_heads(group).into_iter().map(str::to_owned)),
                None => {
                    found.insert(leading_ident(after).to_owned());
                }
            }
        }
        at += rest.chars().next().map_or(1, char::len_utf8);
    }
    found.retain(|name| !name.is_empty());
    found
}

fn graph(src: &Path) -> Graph {
    let modules = modules(src);
    let mut graph = Graph::new();
    for (module, files) in &modules {
        let edges = graph.entry(module.clone()).or_default();
        for file in files {
            let text = std::fs::read_to_string(file).expect("a source file is UTF-8");
            for target in references(&code(&text), depth(src, file)) {
                if target != *module && modules.contains_key(&target) {
                    let relative = file
                        .strip_prefix(src)
                        .expect("files come from under src/")
                        .to_owned();
                    edges.entry(target).or_default().insert(relative);
                }
            }
        }
    }
    graph
}

/// Every edge that does not point to a lower layer and is not a listed
/// sideways edge, as `from -> to (files)`.
fn upward_edges(graph: &Graph) -> Vec<String> {
    let mut wrong = Vec::new();
    for (from, edges) in graph {
        for (to, files) in edges {
            let (Some(a), Some(b)) = (layer_of(from), layer_of(to)) else {
                continue;
            };
            let sideways = SIDEWAYS.iter().any(|(f, t, _)| f == from && t == to);
            if b > a || (b == a && !sideways) {
                wrong.push(format!("{from} -> {to} ({files:?})"));
            }
        }
    }
    wrong
}

/// A cycle in the graph, as the modules along it, if there is one.
fn cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flat_map(BTreeMap::keys) {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

fn crate_graph() -> Graph {
    graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

#[test]
fn every_module_under_src_has_a_place_in_the_layers() {
    let sut = crate_graph();
    let unplaced: Vec<&String> = sut.keys().filter(|m| layer_of(m).is_none()).collect();
    assert!(
        unplaced.is_empty(),
        "give these modules a layer in tests/crate_layering.rs and README: {unplaced:?}"
    );
}

#[test]
fn every_module_names_only_modules_below_it() {
    let wrong = upward_edges(&crate_graph());
    assert!(
        wrong.is_empty(),
        "imports against the layering (move the code to the layer that owns it):\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_module_graph_has_no_cycle() {
    let sut = crate_graph();
    assert_eq!(cycle(&sut), None);
    assert!(sut["daemon"].contains_key("runtime"), "the scan sees edges");
}

#[test]
fn an_upward_import_and_a_cycle_are_caught() {
    let mut sut = Graph::new();
    let file = BTreeSet::from([PathBuf::from("daemon/report.rs")]);
    sut.entry("daemon".into())
        .or_default()
        .insert("bench".into(), file.clone());
    sut.entry("bench".into())
        .or_default()
        .insert("daemon".into(), file);
    assert_eq!(upward_edges(&sut).len(), 1, "{:?}", upward_edges(&sut));
    assert!(upward_edges(&sut)[0].starts_with("daemon -> bench"));
    assert_eq!(
        cycle(&sut),
        Some(vec!["bench".into(), "daemon".into(), "bench".into()])
    );
}

#[test]
fn the_scan_reads_paths_groups_and_super_chains_but_not_comments() {
    let text = "use crate::plan::Plan;\n\
                use crate::{config::{A, B}, topology, self};\n\
                //! see crate::bench\n\
                let x = y::crate::nope; // crate::daemon\n\
                let s = \"http://host\"; crate::gpu::f();\n\
                use super::super::runtime::X;\n\
                use super::sibling;\n";
    let at_depth_2: Vec<String> = references(&code(text), 2).into_iter().collect();
    assert_eq!(at_depth_2, ["config", "gpu", "plan", "runtime", "topology"]);
    assert!(!references(&code(text), 3).contains("runtime"));
}
