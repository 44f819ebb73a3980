//! Output of `pinwheel topo detect`.
//!
//! The TOML form is a ready-to-edit topology file for the detected host:
//! the classes found, roles derived as a file without `[roles]` would get
//! them (written out so people can move CPUs), the class defaults, and a
//! comment table of every CPU's core, package, NUMA node, siblings and
//! caches to edit by. It validates back to the same topology. The JSON form
//! is the raw detection: `{"source": .., "cpus": [..]}`.

use std::fmt::Write as _;

use serde_json::json;

use super::roles::derive_roles;
use super::validate::{DEFAULT_ADMIN_ADDR, default_settings};
use pinwheel_ipc::ring::WaitStrategy;

use super::{CpuClass, CpuSet, HostCpus, TaskQueue};

/// `{"source": "<rung>", "cpus": [{"cpu": 0, "class": "P", ..}, ..]}`,
/// one CPU per line.
pub fn render_detect_json(host: &HostCpus) -> String {
    let rows: Vec<String> = host
        .cpus
        .iter()
        .map(|cpu| serde_json::to_string(cpu).expect("CpuInfo always serializes"))
        .collect();
    format!(
        "{{\n  \"source\": {},\n  \"cpus\": [\n    {}\n  ]\n}}\n",
        json!(host.source.as_str()),
        rows.join(",\n    ")
    )
}

/// A topology file (schema 1) describing `host`, named `name`.
pub fn render_detect_toml(host: &HostCpus, name: &str) -> String {
    let classes: Vec<(CpuClass, CpuSet)> = [CpuClass::P, CpuClass::E, CpuClass::Uniform]
        .into_iter()
        .map(|c| (c, host.class_set(c)))
        .filter(|(_, set)| !set.is_empty())
        .collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# pinwheel topology for host {name:?}, written by `pinwheel topo detect`."
    );
    let _ = writeln!(out, "# CPU classes decided by: {}.", host.source.as_str());
    if !host.excluded.is_empty() {
        let _ = writeln!(
            out,
            "# Left out (outside this process's affinity or cgroup cpuset): CPUs {}.",
            host.excluded
        );
    }
    let _ = writeln!(
        out,
        "# Edit it to tune the host: move CPUs between roles, change class settings.\n#"
    );
    cpu_comment_table(&mut out, host);
    let lists: Vec<String> = classes
        .iter()
        .map(|(c, set)| format!("{c} = \"{set}\""))
        .collect();
    let _ = writeln!(
        out,
        "\nschema = 1\n\n[host]\nname = {name:?}\ncpus = {{ {} }}",
        lists.join(", ")
    );
    let _ = writeln!(
        out,
        "isolated = false     # true once isolcpus/nohz_full cover the data plane"
    );
    let _ = writeln!(
        out,
        "gpus = \"nvml\"        # every GPU NVML finds, none without a driver; or \"declared\" + [[gpu]]\n"
    );
    roles(&mut out, &classes);
    for (class, _) in &classes {
        class_section(&mut out, *class);
    }
    let _ = writeln!(out, "[admin]\naddr = \"{DEFAULT_ADMIN_ADDR}\"");
    out
}

fn cpu_comment_table(out: &mut String, host: &HostCpus) {
    let _ = writeln!(
        out,
        "# {:>4}  {:<7}  {:>4}  {:>3}  {:>4}  {:<9}  {:<9}  L3",
        "cpu", "class", "core", "pkg", "numa", "siblings", "L2"
    );
    for cpu in &host.cpus {
        let numa = cpu.numa.map_or("?".to_owned(), |n| n.0.to_string());
        let _ = writeln!(
            out,
            "# {:>4}  {:<7}  {:>4}  {:>3}  {:>4}  {:<9}  {:<9}  {}",
            cpu.cpu,
            cpu.class.as_str(),
            cpu.core,
            cpu.package,
            numa,
            cpu.siblings.to_string(),
            cpu.l2.to_string(),
            cpu.l3
        );
    }
}

fn roles(out: &mut String, classes: &[(CpuClass, CpuSet)]) {
    let roles = derive_roles(classes);
    let _ = writeln!(out, "[roles]");
    let _ = writeln!(
        out,
        "# data_plane runs agent executors; control runs the core loop (VRAM optimizer,"
    );
    let _ = writeln!(
        out,
        "# GPU scheduler); housekeeping runs admin HTTP, the cluster link and NVML polling."
    );
    let _ = writeln!(out, "data_plane = {{ cpus = \"{}\" }}", roles.data_plane);
    match roles.control {
        Some(cpu) => {
            let _ = writeln!(out, "control = {{ cpus = \"{cpu}\" }}");
        }
        None => {
            let _ = writeln!(
                out,
                "# control: none; the core loop runs as a background queue on the first data-plane CPU"
            );
        }
    }
    if roles.housekeeping.is_empty() {
        let _ = writeln!(
            out,
            "# housekeeping: none; the control thread floats off the data plane\n"
        );
    } else {
        let _ = writeln!(
            out,
            "housekeeping = {{ cpus = \"{}\" }}\n",
            roles.housekeeping
        );
    }
}

fn class_section(out: &mut String, class: CpuClass) {
    let s = default_settings(class);
    let wait = match s.wait {
        WaitStrategy::Spin => "spin",
        WaitStrategy::Park => "park",
        WaitStrategy::Adaptive => "adaptive",
    };
    let _ = writeln!(out, "[class.{class}]");
    let _ = writeln!(out, "wait = \"{wait}\"            # spin | park | adaptive");
    let _ = writeln!(out, "spin_before_park_us = {}", s.spin_before_park_us);
    let _ = writeln!(out, "preempt_timer_us = {}", s.preempt_timer_us);
    match s.task_queue {
        TaskQueue::Latency => {
            let _ = writeln!(out, "task_queue = \"latency\"");
        }
        TaskQueue::Shares(shares) => {
            let _ = writeln!(out, "task_queue = \"shares\"\nshares = {shares}");
        }
    }
    let _ = writeln!(
        out,
        "rt_priority = {}        # SCHED_FIFO 1-99 for data-plane executors; 0 = SCHED_OTHER\n",
        s.rt_priority
    );
}
