//! Settings, and what they mean on one host: a list of steps, each one
//! knob file and its target value.
//!
//! A setting is host-independent (`cpu.governor = "performance"`); a step
//! is concrete (`/sys/devices/system/cpu/cpu3/cpufreq/scaling_governor` ->
//! `performance`). Expanding reads the host tree (globs, the online CPUs,
//! current interrupt affinities) but writes nothing. A setting that cannot
//! mean anything here becomes one step that is skipped with the reason, so
//! the report still lists it.
//!
//! Interrupts and workqueues keep whatever non-data-plane CPUs they already
//! had; only one that would otherwise be left with none gets every
//! housekeeping CPU (online minus data plane).

use std::path::{Path, PathBuf};

use super::knob;
use super::report::SkipReason;
use crate::config::Location;
use crate::topology::{CpuId, CpuSet};

/// The online-CPU list, relative to the root.
const ONLINE: &str = "/sys/devices/system/cpu/online";
/// The PM QoS device.
pub const DMA_LATENCY: &str = "/dev/cpu_dma_latency";
/// Unbound workqueues' CPUs.
const WORKQUEUE_MASK: &str = "/sys/devices/virtual/workqueue/cpumask";
/// Where new interrupts go.
const IRQ_DEFAULT: &str = "/proc/irq/default_smp_affinity";

/// The host a profile is applied to.
#[derive(Debug, Clone)]
pub struct Host {
    /// Prefix of every path: `/` on a live host, a fake tree in tests.
    pub root: PathBuf,
    /// The CPUs that run agents, if known (needed by `[isolation]`).
    pub data_plane: Option<CpuSet>,
}

impl Host {
    /// The live host.
    pub fn live(data_plane: Option<CpuSet>) -> Self {
        Self {
            root: PathBuf::from("/"),
            data_plane,
        }
    }

    /// The file that stands for `logical` (an absolute path) on this host.
    pub fn path(&self, logical: &str) -> PathBuf {
        knob::resolve(&self.root, logical)
    }
}

/// How a current value is compared with a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    /// Words, whitespace-insensitive; a `[selected]` word stands for a
    /// selector file (`always [madvise] never` reads as `madvise`).
    Text,
    /// CPU lists (`0-3` equals `0,1,2,3`).
    CpuList,
    /// CPU masks (`f` equals `0000000f`).
    CpuMask,
}

/// One host-independent setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setting {
    /// Write `value` to every file matching `pattern`.
    File {
        /// Name shown when the pattern matches one file, or none.
        name: String,
        /// Absolute path; `*` matches within one component.
        pattern: String,
        /// The value to write.
        value: String,
        /// How to tell whether the knob already has it.
        compare: Compare,
    },
    /// Hold `/dev/cpu_dma_latency` open at this many microseconds.
    DmaLatency {
        /// The latency bound.
        us: u32,
    },
    /// Move every interrupt off the data-plane CPUs.
    IrqsOffDataPlane,
    /// Keep unbound workqueues off the data-plane CPUs.
    WorkqueuesOffDataPlane,
    /// Print the kernel command line that isolates the data plane.
    KernelCmdline,
}

impl Setting {
    /// A file setting.
    pub fn file(name: &str, pattern: &str, value: &str, compare: Compare) -> Self {
        Setting::File {
            name: name.to_owned(),
            pattern: pattern.to_owned(),
            value: value.to_owned(),
            compare,
        }
    }

    /// What the setting sets; an including profile's setting with the same
    /// key replaces the included one.
    pub fn key(&self) -> String {
        match self {
            Setting::File { pattern, .. } => pattern.clone(),
            Setting::DmaLatency { .. } => DMA_LATENCY.to_owned(),
            Setting::IrqsOffDataPlane => "isolation.irqs_off_data_plane".to_owned(),
            Setting::WorkqueuesOffDataPlane => "isolation.workqueues_off_data_plane".to_owned(),
            Setting::KernelCmdline => "isolation.suggest_kernel_cmdline".to_owned(),
        }
    }
}

/// A setting and where the profile set it.
#[derive(Debug, Clone)]
pub struct Entry {
    setting: Setting,
    at: Location,
}

impl Entry {
    /// Pairs a setting with its place in a profile.
    pub fn new(setting: Setting, at: Location) -> Self {
        Self { setting, at }
    }

    /// The setting.
    pub fn setting(&self) -> &Setting {
        &self.setting
    }

    /// Where the profile sets it.
    pub fn at(&self) -> &Location {
        &self.at
    }
}

/// One knob on this host.
#[derive(Debug, Clone)]
pub struct Step {
    /// Shown in reports.
    pub name: String,
    /// The knob's absolute path on the host (before the root prefix).
    pub path: String,
    /// What to do with it.
    pub action: Action,
    /// Where the profile sets it (`file.toml:7`).
    pub from: String,
}

/// What a step does.
#[derive(Debug, Clone)]
pub enum Action {
    /// Write `target` unless the knob already has it.
    Write {
        /// The value.
        target: String,
        /// How to compare.
        compare: Compare,
        /// Whether the kernel refusing the write (EIO, EINVAL) means "this
        /// knob is not movable" rather than a failure: interrupts whose
        /// affinity the kernel manages.
        refusal_skips: bool,
    },
    /// Hold the PM QoS device open at `us`.
    Hold {
        /// The latency bound.
        us: u32,
    },
    /// Nothing can be done here.
    Skip {
        /// Why.
        reason: SkipReason,
        /// The value that would have been written, as shown.
        wanted: String,
    },
}

/// A profile on one host.
#[derive(Debug, Default)]
pub struct Expanded {
    /// The knobs, in profile order.
    pub steps: Vec<Step>,
    /// Lines to print (the kernel command line).
    pub suggestions: Vec<String>,
}

/// Turns settings into steps on `host`.
pub fn expand(entries: &[Entry], host: &Host) -> Expanded {
    let mut out = Expanded::default();
    for entry in entries {
        let first = out.steps.len();
        match entry.setting() {
            Setting::File {
                name,
                pattern,
                value,
                compare,
            } => expand_file(host, name, pattern, value, *compare, &mut out.steps),
            Setting::DmaLatency { us } => out.steps.push(Step {
                name: DMA_LATENCY.to_owned(),
                path: DMA_LATENCY.to_owned(),
                action: Action::Hold { us: *us },
                from: String::new(),
            }),
            Setting::IrqsOffDataPlane => expand_irqs(host, &mut out.steps),
            Setting::WorkqueuesOffDataPlane => {
                expand_cpus(
                    host,
                    WORKQUEUE_MASK,
                    Compare::CpuMask,
                    false,
                    &mut out.steps,
                );
            }
            Setting::KernelCmdline => expand_cmdline(host, &mut out),
        }
        let at = entry.at();
        let file = at.path().file_name().unwrap_or(at.path().as_os_str());
        let from = format!("{}:{}", file.to_string_lossy(), at.line());
        for step in &mut out.steps[first..] {
            step.from.clone_from(&from);
        }
    }
    out
}

fn expand_file(
    host: &Host,
    name: &str,
    pattern: &str,
    value: &str,
    compare: Compare,
    steps: &mut Vec<Step>,
) {
    let found = glob(&host.root, pattern);
    if found.is_empty() {
        steps.push(Step {
            name: name.to_owned(),
            path: pattern.to_owned(),
            action: Action::Skip {
                reason: knob::missing(&host.root, pattern),
                wanted: value.to_owned(),
            },
            from: String::new(),
        });
        return;
    }
    let single = found.len() == 1 && !pattern.contains('*');
    for path in found {
        steps.push(Step {
            name: if single {
                name.to_owned()
            } else {
                path.clone()
            },
            path,
            action: Action::Write {
                target: value.to_owned(),
                compare,
                refusal_skips: false,
            },
            from: String::new(),
        });
    }
}

/// The CPUs that may take interrupts and workqueues, or why there are none.
fn housekeeping(host: &Host) -> Result<(CpuSet, CpuSet), SkipReason> {
    let data_plane = host.data_plane.clone().ok_or(SkipReason::NoDataPlane)?;
    let online = std::fs::read_to_string(host.path(ONLINE))
        .ok()
        .and_then(|text| CpuSet::parse_list(&text).ok())
        .ok_or_else(|| knob::missing(&host.root, ONLINE))?;
    let spare = online.difference(&data_plane);
    if spare.is_empty() {
        return Err(SkipReason::NoHousekeeping);
    }
    Ok((data_plane, spare))
}

fn expand_irqs(host: &Host, steps: &mut Vec<Step>) {
    let dir = host.path("/proc/irq");
    let mut irqs: Vec<u32> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    irqs.sort_unstable();
    expand_cpus(host, IRQ_DEFAULT, Compare::CpuMask, false, steps);
    for irq in irqs {
        let path = format!("/proc/irq/{irq}/smp_affinity_list");
        expand_cpus(host, &path, Compare::CpuList, true, steps);
    }
}

/// A step that moves one CPU list or mask knob off the data plane.
fn expand_cpus(
    host: &Host,
    path: &str,
    compare: Compare,
    refusal_skips: bool,
    steps: &mut Vec<Step>,
) {
    let action = match housekeeping(host).and_then(|(data_plane, spare)| {
        let current = std::fs::read_to_string(host.path(path))
            .ok()
            .and_then(|text| parse_cpus(&text, compare))
            .ok_or_else(|| knob::missing(&host.root, path))?;
        let kept = current.difference(&data_plane);
        Ok(if kept.is_empty() { spare } else { kept })
    }) {
        Ok(target) => Action::Write {
            target: format_cpus(&target, compare),
            compare,
            refusal_skips,
        },
        Err(reason) => Action::Skip {
            reason,
            wanted: "-".to_owned(),
        },
    };
    steps.push(Step {
        name: path.to_owned(),
        path: path.to_owned(),
        action,
        from: String::new(),
    });
}

fn expand_cmdline(host: &Host, out: &mut Expanded) {
    let name = "kernel command line";
    let Some(data_plane) = host.data_plane.as_ref().filter(|d| !d.is_empty()) else {
        out.steps.push(Step {
            name: name.to_owned(),
            path: "/proc/cmdline".to_owned(),
            action: Action::Skip {
                reason: SkipReason::NoDataPlane,
                wanted: "-".to_owned(),
            },
            from: String::new(),
        });
        return;
    };
    let current = std::fs::read_to_string(host.path("/proc/cmdline")).unwrap_or_default();
    let words: Vec<&str> = current.split_whitespace().collect();
    let wanted = [
        format!("isolcpus=managed_irq,domain,{data_plane}"),
        format!("nohz_full={data_plane}"),
        format!("rcu_nocbs={data_plane}"),
    ];
    let missing: Vec<&str> = wanted
        .iter()
        .map(String::as_str)
        .filter(|w| !words.contains(w))
        .collect();
    out.suggestions.push(if missing.is_empty() {
        format!("the kernel command line already isolates CPUs {data_plane}")
    } else {
        format!(
            "to isolate CPUs {data_plane}, add to the kernel command line and reboot (pinwheel never edits the bootloader): {}",
            missing.join(" ")
        )
    });
}

/// Parses a CPU list or mask.
pub fn parse_cpus(text: &str, compare: Compare) -> Option<CpuSet> {
    match compare {
        Compare::CpuList => CpuSet::parse_list(text.trim()).ok(),
        Compare::CpuMask => CpuSet::parse_mask(text.trim()).ok(),
        Compare::Text => None,
    }
}

fn format_cpus(set: &CpuSet, compare: Compare) -> String {
    match compare {
        Compare::CpuMask => format_mask(set),
        Compare::CpuList | Compare::Text => set.to_string(),
    }
}

/// The kernel's mask syntax: 32-bit hex words, most significant first,
/// separated by commas (`1,00000003`).
pub fn format_mask(set: &CpuSet) -> String {
    let top = set.iter().last().map_or(0, |CpuId(cpu)| cpu / 32);
    let mut words = vec![0u32; top as usize + 1];
    for CpuId(cpu) in set.iter() {
        words[(cpu / 32) as usize] |= 1 << (cpu % 32);
    }
    let mut text = format!("{:x}", words[top as usize]);
    for word in words[..top as usize].iter().rev() {
        text.push_str(&format!(",{word:08x}"));
    }
    text
}

/// The existing files (absolute, root-less paths) that `pattern` matches,
/// in natural order (`cpu2` before `cpu10`).
pub fn glob(root: &Path, pattern: &str) -> Vec<String> {
    let mut found = vec![String::new()];
    for part in pattern.split('/').filter(|p| !p.is_empty()) {
        let mut next = Vec::new();
        for prefix in &found {
            if !part.contains('*') {
                next.push(format!("{prefix}/{part}"));
                continue;
            }
            let Ok(entries) = std::fs::read_dir(knob::resolve(root, prefix)) else {
                continue;
            };
            let mut names: Vec<String> = entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|name| wildcard(part, name))
                .collect();
            names.sort_by_key(|name| natural_key(name));
            next.extend(names.into_iter().map(|name| format!("{prefix}/{name}")));
        }
        found = next;
    }
    found.retain(|path| knob::resolve(root, path).exists());
    found
}

fn natural_key(name: &str) -> (String, u64, String) {
    let stem = name.trim_end_matches(|c: char| c.is_ascii_digit());
    let number = name[stem.len()..].parse().unwrap_or(0);
    (stem.to_owned(), number, name.to_owned())
}

/// Whether `name` matches `pattern`, where `*` matches any run of
/// characters.
fn wildcard(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let tail: Vec<&str> = parts.collect();
    for (i, part) in tail.iter().enumerate() {
        if i + 1 == tail.len() {
            return rest.len() >= part.len() && rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(text: &str) -> CpuSet {
        CpuSet::parse_list(text).unwrap()
    }

    #[test]
    fn wildcard_matches_stars_within_a_name() {
        assert!(wildcard("cpu*", "cpu12"));
        assert!(wildcard("cpu*", "cpu"));
        assert!(wildcard("*freq*", "cpufreq"));
        assert!(wildcard("a*b*c", "aXbYc"));
        assert!(!wildcard("cpu*", "node0"));
        assert!(!wildcard("a*bc", "abcX"));
        assert!(wildcard("exact", "exact"));
        assert!(!wildcard("exact", "exactly"));
    }

    #[test]
    fn format_mask_writes_32_bit_words_most_significant_first() {
        assert_eq!(format_mask(&set("0-1")), "3");
        assert_eq!(format_mask(&set("0,33")), "2,00000001");
        assert_eq!(format_mask(&CpuSet::new()), "0");
        assert_eq!(
            CpuSet::parse_mask(&format_mask(&set("1,40-45"))).unwrap(),
            set("1,40-45")
        );
    }

    #[test]
    fn glob_lists_matches_in_natural_order_and_only_existing_files() {
        let dir = tempfile::tempdir().unwrap();
        for cpu in [10, 2, 0] {
            let d = dir.path().join(format!("sys/cpu/cpu{cpu}/cpufreq"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("gov"), "x").unwrap();
        }
        std::fs::create_dir_all(dir.path().join("sys/cpu/cpu5")).unwrap();
        let sut = glob(dir.path(), "/sys/cpu/cpu*/cpufreq/gov");
        assert_eq!(
            sut,
            [
                "/sys/cpu/cpu0/cpufreq/gov",
                "/sys/cpu/cpu2/cpufreq/gov",
                "/sys/cpu/cpu10/cpufreq/gov"
            ]
        );
    }

    #[test]
    fn an_interrupt_keeps_its_housekeeping_cpus_and_one_with_none_gets_them_all() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("sys/devices/system/cpu")).unwrap();
        std::fs::write(root.join("sys/devices/system/cpu/online"), "0-3\n").unwrap();
        for (irq, list) in [(9, "1-2"), (10, "3"), (11, "0")] {
            std::fs::create_dir_all(root.join(format!("proc/irq/{irq}"))).unwrap();
            std::fs::write(root.join(format!("proc/irq/{irq}/smp_affinity_list")), list).unwrap();
        }
        std::fs::write(root.join("proc/irq/default_smp_affinity"), "f\n").unwrap();
        let host = Host {
            root: root.to_path_buf(),
            data_plane: Some(set("2-3")),
        };
        let mut steps = Vec::new();
        expand_irqs(&host, &mut steps);
        let targets: Vec<(String, String)> = steps
            .iter()
            .map(|s| match &s.action {
                Action::Write { target, .. } => (s.path.clone(), target.clone()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            targets,
            [
                ("/proc/irq/default_smp_affinity".to_owned(), "3".to_owned()),
                ("/proc/irq/9/smp_affinity_list".to_owned(), "1".to_owned()),
                (
                    "/proc/irq/10/smp_affinity_list".to_owned(),
                    "0-1".to_owned()
                ),
                ("/proc/irq/11/smp_affinity_list".to_owned(), "0".to_owned()),
            ]
        );
    }

    #[test]
    fn isolation_with_every_cpu_in_the_data_plane_is_skipped_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("sys/devices/system/cpu")).unwrap();
        std::fs::write(root.join("sys/devices/system/cpu/online"), "0-1\n").unwrap();
        let host = Host {
            root: root.to_path_buf(),
            data_plane: Some(set("0-1")),
        };
        let mut steps = Vec::new();
        expand_cpus(&host, WORKQUEUE_MASK, Compare::CpuMask, false, &mut steps);
        assert!(matches!(
            steps[0].action,
            Action::Skip {
                reason: SkipReason::NoHousekeeping,
                ..
            }
        ));
    }

    #[test]
    fn the_kernel_cmdline_suggestion_names_only_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc")).unwrap();
        std::fs::write(dir.path().join("proc/cmdline"), "quiet nohz_full=2-3\n").unwrap();
        let host = Host {
            root: dir.path().to_path_buf(),
            data_plane: Some(set("2-3")),
        };
        let mut out = Expanded::default();
        expand_cmdline(&host, &mut out);
        let line = &out.suggestions[0];
        assert!(
            line.ends_with("isolcpus=managed_irq,domain,2-3 rcu_nocbs=2-3"),
            "{line}"
        );
    }
}
