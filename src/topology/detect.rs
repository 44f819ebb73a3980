//! CPU detection from a sysfs tree.
//!
//! [`detect`] takes the directory that stands for `/sys` (the live `/sys`,
//! or a fixture tree in tests), reads what the kernel says about every
//! online CPU and hands the class inputs to the ladder in `classify.rs`. It
//! only reads; it never writes to sysfs and keeps no state between calls.
//!
//! What is read, relative to the root, and what happens when it is absent
//! (real trees vary by kernel version, architecture and hotplug state):
//!
//! - `devices/system/cpu/online` lists the CPUs detection reports; it is
//!   the one file every tree must have. The per-CPU `cpuN/online` files are
//!   not used (cpu0 usually has none), and a `cpuN` directory of an offline
//!   CPU is ignored.
//! - `cpuN/topology/{core_id,physical_package_id}`. When `topology/` is
//!   missing (some ARM kernels, CPUs brought up without a topology driver),
//!   the core is the CPU number and the package 0. When the directory
//!   exists the kernel always writes both files, so a missing one is an
//!   error; a negative value (`-1` on older arm64 kernels) takes the same
//!   fallback as a missing directory.
//! - Core ids must be unique within a package ([`CpuInfo::core`]). ARM
//!   device-tree hosts number cores within each cluster, so two clusters
//!   both have a core 0. When two CPUs of one package share a core id
//!   without being SMT siblings, every CPU's core becomes the lowest CPU of
//!   its sibling set, which is unique and keeps siblings together.
//! - SMT siblings: `thread_siblings_list`, else `core_cpus_list`, else the
//!   masks `thread_siblings` and `core_cpus`, else the CPU alone.
//! - Caches: the first `cache/indexK` (in K order) with `level` 2 or 3 and
//!   `type` Unified or Data; its `shared_cpu_list`, else `shared_cpu_map`.
//!   No such index (or no `cache/` at all) gives an empty set.
//! - NUMA: `devices/system/node/nodeM/cpulist` (else `cpumap`). A tree
//!   without `devices/system/node`, or with no `nodeM` in it, is a non-NUMA
//!   host: every CPU is on node 0. A CPU that no node lists gets `None`, and
//!   one warning names all such CPUs.
//! - Class inputs: `cpuN/cpu_capacity`, the PMU lists `devices/cpu_core/cpus`
//!   and `devices/cpu_atom/cpus`, and the cpufreq files below.
//! - cpufreq: `cpuN/cpufreq/<file>` (on live hosts a link to its policy).
//!   Without that directory, the policy whose `related_cpus` (else
//!   `affected_cpus`) lists N: first `cpu/cpufreq/policyM/`, then any other
//!   CPU's own `cpuK/cpufreq/` (old kernels and hwloc dumps keep only
//!   cpu0's). Policy lists are read in list syntax or space-separated
//!   (`0 1`).
//!
//! Every set (siblings, caches, PMU lists) is cut down to online CPUs. An
//! absent optional file takes its fallback; a file that exists but cannot
//! be read is [`TopologyError::Read`], and one that does not parse is
//! [`TopologyError::Malformed`]: a class decided on half the inputs would
//! be silently wrong.
//!
//! Classes are decided over all online CPUs, before `limits` apply, so a
//! cgroup never changes which rung wins. Limits then drop CPUs from
//! [`HostCpus::cpus`] into [`HostCpus::excluded`]; the sibling and cache
//! sets of the CPUs that stay still name excluded CPUs, because they
//! describe the hardware the CPU shares, not what this process may use.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use tracing::{debug, warn};

use super::classify::{self, PmuLists, RungValues};
use super::{CpuClass, CpuId, CpuInfo, CpuSet, HostCpus, LiveLimits, NumaNode, TopologyError};

/// Detects the online CPUs under `sysfs_root` (a directory standing for
/// `/sys`). With `limits`, CPUs outside the affinity mask or cgroup cpuset
/// are left out of [`HostCpus::cpus`] and listed in [`HostCpus::excluded`].
///
/// Fails with [`TopologyError::NoCpus`] when no online CPU is left, and with
/// [`TopologyError::Read`] or [`TopologyError::Malformed`] when a file the
/// kernel always writes is missing or holds garbage.
pub fn detect(sysfs_root: &Path, limits: Option<&LiveLimits>) -> Result<HostCpus, TopologyError> {
    let cpu_dir = sysfs_root.join("devices/system/cpu");
    let online = read_list(&cpu_dir.join("online"))?;
    let numa = NumaMap::read(&sysfs_root.join("devices/system/node"))?;
    let policies = read_policies(&cpu_dir, &online)?;
    let mut cpus = Vec::with_capacity(online.len());
    let mut values = Vec::with_capacity(online.len());
    for cpu in online.iter() {
        let dir = cpu_dir.join(format!("cpu{cpu}"));
        cpus.push(read_cpu(&dir, cpu, &online)?);
        values.push((cpu, read_rung_values(&dir, cpu, &policies)?));
    }
    make_cores_unique(&mut cpus);
    let pmu = PmuLists {
        core: read_optional_list(&sysfs_root.join("devices/cpu_core/cpus"))?,
        atom: read_optional_list(&sysfs_root.join("devices/cpu_atom/cpus"))?,
    };
    let classes = classify::classify(&online, &pmu, &values);
    numa.assign(&mut cpus);
    for info in &mut cpus {
        info.class = classes.class_of(info.cpu);
    }
    let (cpus, excluded) = apply_limits(cpus, &online, limits);
    if cpus.is_empty() {
        return Err(TopologyError::NoCpus {
            root: sysfs_root.to_owned(),
            online,
            excluded,
        });
    }
    Ok(HostCpus {
        source: classes.source,
        cpus,
        excluded,
    })
}

/// Reads one online CPU's topology and caches. Class and NUMA node are
/// filled in later (they need every CPU).
fn read_cpu(dir: &Path, cpu: CpuId, online: &CpuSet) -> Result<CpuInfo, TopologyError> {
    let (core, package) = read_core_and_package(&dir.join("topology"), cpu)?;
    let siblings = read_siblings(&dir.join("topology"), cpu, online)?;
    let (l2, l3) = read_caches(&dir.join("cache"), online)?;
    Ok(CpuInfo {
        cpu,
        class: CpuClass::Uniform,
        core,
        package,
        numa: None,
        siblings,
        l2,
        l3,
    })
}

/// `(core_id, physical_package_id)`, with the fallbacks of the module doc.
fn read_core_and_package(topology: &Path, cpu: CpuId) -> Result<(u32, u32), TopologyError> {
    if !topology.is_dir() {
        debug!(cpu = %cpu, dir = %topology.display(), "no topology directory, core is the cpu number");
        return Ok((cpu.0, 0));
    }
    let core_path = topology.join("core_id");
    let core: i64 = parse_number(&core_path, &read_required(&core_path)?)?;
    let package_path = topology.join("physical_package_id");
    let package: i64 = parse_number(&package_path, &read_required(&package_path)?)?;
    let core = non_negative(&core_path, core)?.unwrap_or(cpu.0);
    let package = non_negative(&package_path, package)?.unwrap_or(0);
    Ok((core, package))
}

/// A topology id as `u32`; `None` for the kernel's "unknown" (negative).
fn non_negative(path: &Path, value: i64) -> Result<Option<u32>, TopologyError> {
    if value < 0 {
        return Ok(None);
    }
    u32::try_from(value)
        .map(Some)
        .map_err(|_| malformed(path, &value.to_string(), "id does not fit in 32 bits"))
}

/// SMT siblings, this CPU included, online CPUs only.
fn read_siblings(topology: &Path, cpu: CpuId, online: &CpuSet) -> Result<CpuSet, TopologyError> {
    let lists = ["thread_siblings_list", "core_cpus_list"];
    let masks = ["thread_siblings", "core_cpus"];
    let mut found = None;
    for name in lists {
        found = read_optional_list(&topology.join(name))?;
        if found.is_some() {
            break;
        }
    }
    if found.is_none() {
        for name in masks {
            found = read_optional_mask(&topology.join(name))?;
            if found.is_some() {
                break;
            }
        }
    }
    let mut siblings = found.unwrap_or_default().intersection(online);
    siblings.insert(cpu);
    Ok(siblings)
}

/// The L2 and L3 sharing sets, online CPUs only; empty when unknown.
fn read_caches(cache: &Path, online: &CpuSet) -> Result<(CpuSet, CpuSet), TopologyError> {
    let mut l2 = None;
    let mut l3 = None;
    for (_, index) in numbered_entries(cache, "index")? {
        let Some(level) = read_optional_number::<u32>(&index.join("level"))? else {
            continue;
        };
        let Some(kind) = read_optional(&index.join("type"))? else {
            continue;
        };
        if !matches!(kind.trim(), "Unified" | "Data") {
            continue;
        }
        let slot = match level {
            2 => &mut l2,
            3 => &mut l3,
            _ => continue,
        };
        if slot.is_some() {
            continue;
        }
        let shared = match read_optional_list(&index.join("shared_cpu_list"))? {
            Some(list) => list,
            None => read_optional_mask(&index.join("shared_cpu_map"))?.unwrap_or_default(),
        };
        *slot = Some(shared.intersection(online));
    }
    Ok((l2.unwrap_or_default(), l3.unwrap_or_default()))
}

/// Makes core ids unique within each package (see the module doc).
fn make_cores_unique(cpus: &mut [CpuInfo]) {
    let mut seen: BTreeMap<(u32, u32), &CpuSet> = BTreeMap::new();
    let mut collision = None;
    for info in cpus.iter() {
        match seen.get(&(info.package, info.core)) {
            Some(siblings) if **siblings != info.siblings => {
                collision = Some((info.package, info.core));
                break;
            }
            Some(_) => {}
            None => {
                seen.insert((info.package, info.core), &info.siblings);
            }
        }
    }
    let Some((package, core)) = collision else {
        return;
    };
    debug!(
        package,
        core, "core ids repeat within a package, numbering cores by their first sibling"
    );
    for info in cpus.iter_mut() {
        info.core = info.siblings.first().unwrap_or(info.cpu).0;
    }
}

/// Where the NUMA nodes say each CPU lives.
enum NumaMap {
    /// No `devices/system/node` or no `nodeM` in it: everything is node 0.
    NonNuma,
    /// Each node's CPUs, by node number.
    Nodes(Vec<(NumaNode, CpuSet)>),
}

impl NumaMap {
    /// Reads `devices/system/node` (passed as `node_dir`).
    fn read(node_dir: &Path) -> Result<Self, TopologyError> {
        let entries = numbered_entries(node_dir, "node")?;
        if entries.is_empty() {
            return Ok(NumaMap::NonNuma);
        }
        let mut nodes = Vec::with_capacity(entries.len());
        for (number, dir) in entries {
            let list = dir.join("cpulist");
            let cpus = match read_optional_list(&list)? {
                Some(cpus) => cpus,
                None => match read_optional_mask(&dir.join("cpumap"))? {
                    Some(cpus) => cpus,
                    None => return Err(read_error(&list, io::ErrorKind::NotFound.into())),
                },
            };
            nodes.push((NumaNode(number), cpus));
        }
        Ok(NumaMap::Nodes(nodes))
    }

    /// Fills in each CPU's node; warns once about CPUs no node lists.
    fn assign(&self, cpus: &mut [CpuInfo]) {
        let mut unlisted = CpuSet::new();
        for info in cpus.iter_mut() {
            info.numa = match self {
                NumaMap::NonNuma => Some(NumaNode(0)),
                NumaMap::Nodes(nodes) => nodes
                    .iter()
                    .find(|(_, set)| set.contains(info.cpu))
                    .map(|(node, _)| *node),
            };
            if info.numa.is_none() {
                unlisted.insert(info.cpu);
            }
        }
        if !unlisted.is_empty() {
            warn!(cpus = %unlisted, "online cpus that no numa node lists, their node is unknown");
        }
    }
}

/// A cpufreq policy directory and the CPUs it governs.
struct Policy {
    dir: PathBuf,
    cpus: CpuSet,
}

/// The policies a CPU without its own `cpufreq/` may borrow from, in the
/// order of the module doc.
///
/// Empty when every online CPU has its own `cpufreq/` (every live host with
/// a cpufreq driver): then nothing needs borrowing and no policy file is
/// read.
fn read_policies(cpu_dir: &Path, online: &CpuSet) -> Result<Vec<Policy>, TopologyError> {
    let own = |cpu: CpuId| cpu_dir.join(format!("cpu{cpu}/cpufreq"));
    if online.iter().all(|cpu| own(cpu).is_dir()) {
        return Ok(Vec::new());
    }
    let mut dirs: Vec<PathBuf> = numbered_entries(&cpu_dir.join("cpufreq"), "policy")?
        .into_iter()
        .map(|(_, dir)| dir)
        .collect();
    dirs.extend(online.iter().map(own).filter(|dir| dir.is_dir()));
    let mut policies = Vec::with_capacity(dirs.len());
    for dir in dirs {
        let mut cpus = None;
        for name in ["related_cpus", "affected_cpus"] {
            let path = dir.join(name);
            if let Some(text) = read_optional(&path)? {
                cpus = Some(parse_policy_cpus(&path, &text)?);
                break;
            }
        }
        match cpus {
            Some(cpus) => policies.push(Policy { dir, cpus }),
            None => debug!(dir = %dir.display(), "cpufreq policy lists no cpus, skipping it"),
        }
    }
    Ok(policies)
}

/// Parses a policy's CPU list: list syntax (`0-3`) or space-separated
/// numbers (`0 1`), which older kernels write.
fn parse_policy_cpus(path: &Path, text: &str) -> Result<CpuSet, TopologyError> {
    let as_list = text.split_whitespace().collect::<Vec<_>>().join(",");
    CpuSet::parse_list(&as_list).map_err(|e| malformed(path, text, e))
}

/// Reads the class inputs of one CPU (`dir` is its `cpuN`).
fn read_rung_values(
    dir: &Path,
    cpu: CpuId,
    policies: &[Policy],
) -> Result<RungValues, TopologyError> {
    let cpufreq = cpufreq_dir(dir, cpu, policies);
    let freq = |file: &str| match &cpufreq {
        Some(cpufreq) => read_optional_number::<u64>(&cpufreq.join(file)),
        None => Ok(None),
    };
    Ok(RungValues {
        capacity: read_optional_number(&dir.join("cpu_capacity"))?,
        base_khz: freq("base_frequency")?,
        max_khz: freq("cpuinfo_max_freq")?,
    })
}

/// The cpufreq directory that governs `cpu` (whose directory is `dir`).
fn cpufreq_dir(dir: &Path, cpu: CpuId, policies: &[Policy]) -> Option<PathBuf> {
    let own = dir.join("cpufreq");
    if own.is_dir() {
        return Some(own);
    }
    policies
        .iter()
        .find(|p| p.cpus.contains(cpu))
        .map(|p| p.dir.clone())
}

/// Splits CPUs into usable and excluded; warns once about the excluded.
fn apply_limits(
    cpus: Vec<CpuInfo>,
    online: &CpuSet,
    limits: Option<&LiveLimits>,
) -> (Vec<CpuInfo>, CpuSet) {
    let Some(limits) = limits else {
        return (cpus, CpuSet::new());
    };
    let allowed = match &limits.cgroup {
        Some(cgroup) => limits.affinity.intersection(cgroup),
        None => limits.affinity.clone(),
    };
    let excluded = online.difference(&allowed);
    if !excluded.is_empty() {
        warn!(
            excluded = %excluded,
            affinity = %limits.affinity,
            cgroup = %limits.cgroup.as_ref().map(ToString::to_string).unwrap_or_else(|| "none".to_owned()),
            "online cpus outside the affinity mask or cgroup cpuset, leaving them out"
        );
    }
    let cpus = cpus
        .into_iter()
        .filter(|info| allowed.contains(info.cpu))
        .collect();
    (cpus, excluded)
}

/// The entries `<prefix><number>` of `dir`, sorted by number; empty when
/// `dir` does not exist.
fn numbered_entries(dir: &Path, prefix: &str) -> Result<Vec<(u32, PathBuf)>, TopologyError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if is_absent(&e) => return Ok(Vec::new()),
        Err(e) => return Err(read_error(dir, e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| read_error(dir, e))?;
        let name = entry.file_name();
        let number = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|n| n.parse().ok());
        if let Some(number) = number {
            found.push((number, entry.path()));
        }
    }
    found.sort_unstable();
    Ok(found)
}

/// Whether an I/O error means "the file is not there".
fn is_absent(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// Reads a file that may be absent.
pub(super) fn read_optional(path: &Path) -> Result<Option<String>, TopologyError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if is_absent(&e) => Ok(None),
        Err(e) => Err(read_error(path, e)),
    }
}

/// Reads a file that must exist.
fn read_required(path: &Path) -> Result<String, TopologyError> {
    fs::read_to_string(path).map_err(|e| read_error(path, e))
}

/// Reads a mandatory CPU list.
fn read_list(path: &Path) -> Result<CpuSet, TopologyError> {
    let text = read_required(path)?;
    CpuSet::parse_list(&text).map_err(|e| malformed(path, &text, e))
}

/// Reads an optional CPU list.
fn read_optional_list(path: &Path) -> Result<Option<CpuSet>, TopologyError> {
    read_optional(path)?
        .map(|text| CpuSet::parse_list(&text).map_err(|e| malformed(path, &text, e)))
        .transpose()
}

/// Reads an optional CPU mask.
fn read_optional_mask(path: &Path) -> Result<Option<CpuSet>, TopologyError> {
    read_optional(path)?
        .map(|text| CpuSet::parse_mask(&text).map_err(|e| malformed(path, &text, e)))
        .transpose()
}

/// Reads an optional number.
fn read_optional_number<T>(path: &Path) -> Result<Option<T>, TopologyError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    read_optional(path)?
        .map(|text| parse_number(path, &text))
        .transpose()
}

/// Parses a number that fills a whole file.
fn parse_number<T>(path: &Path, text: &str) -> Result<T, TopologyError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    text.trim().parse().map_err(|e| malformed(path, text, e))
}

/// A [`TopologyError::Read`] for `path`.
pub(super) fn read_error(path: &Path, source: io::Error) -> TopologyError {
    TopologyError::Read {
        path: path.to_owned(),
        source,
    }
}

/// A [`TopologyError::Malformed`] for `path`.
pub(super) fn malformed(path: &Path, text: &str, reason: impl fmt::Display) -> TopologyError {
    TopologyError::Malformed {
        path: path.to_owned(),
        contents: text.trim().to_owned(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/sysfs")
            .join(name)
            .join("sys")
    }

    fn set(cpus: &[u32]) -> CpuSet {
        cpus.iter().map(|&c| CpuId(c)).collect()
    }

    #[test]
    fn policy_cpus_read_space_separated_numbers() {
        let sut = parse_policy_cpus(Path::new("related_cpus"), "0 1\n").unwrap();
        assert_eq!(sut, set(&[0, 1]));
    }

    #[test]
    fn policy_cpus_read_list_syntax() {
        let sut = parse_policy_cpus(Path::new("related_cpus"), "0-3,8\n").unwrap();
        assert_eq!(sut, set(&[0, 1, 2, 3, 8]));
    }

    #[test]
    fn a_cpu_without_cpufreq_borrows_the_policy_of_another_cpu_that_lists_it() {
        // The 2arm-2c dump keeps only cpu0/cpufreq, whose related_cpus is "0 1".
        let cpu_dir = fixture("2arm-2c").join("devices/system/cpu");
        let policies = read_policies(&cpu_dir, &set(&[0, 1])).unwrap();
        let sut = read_rung_values(&cpu_dir.join("cpu1"), CpuId(1), &policies).unwrap();
        assert_eq!(sut.max_khz, Some(800_000));
        assert_eq!(sut.base_khz, None);
    }

    #[test]
    fn a_cpu_without_cpufreq_reads_the_policy_directory_that_lists_it() {
        let cpu_dir = fixture("20em64t-hybrid-1p6c2t+2ca4co1t").join("devices/system/cpu");
        let online = CpuSet::parse_list("0-19").unwrap();
        let policies = read_policies(&cpu_dir, &online).unwrap();
        let sut = read_rung_values(&cpu_dir.join("cpu12"), CpuId(12), &policies).unwrap();
        assert_eq!(sut.base_khz, Some(1_400_000));
        assert_eq!(sut.max_khz, Some(3_900_000));
    }

    #[test]
    fn negative_topology_ids_mean_unknown() {
        assert_eq!(non_negative(Path::new("core_id"), -1).unwrap(), None);
        assert_eq!(non_negative(Path::new("core_id"), 7).unwrap(), Some(7));
        assert!(non_negative(Path::new("core_id"), i64::from(u32::MAX) + 1).is_err());
    }

    #[test]
    fn numbered_entries_sort_by_number_not_by_name() {
        let cpu_dir = fixture("20em64t-hybrid-1p6c2t+2ca4co1t").join("devices/system/cpu");
        let sut = numbered_entries(&cpu_dir.join("cpufreq"), "policy").unwrap();
        let numbers: Vec<u32> = sut.iter().map(|(n, _)| *n).collect();
        assert_eq!(numbers, (0..20).collect::<Vec<u32>>());
    }

    #[test]
    fn a_missing_directory_has_no_numbered_entries() {
        let sut = numbered_entries(Path::new("/nonexistent/pinwheel"), "node").unwrap();
        assert!(sut.is_empty());
    }
}
