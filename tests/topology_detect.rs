//! CPU detection against fixture sysfs trees: every rung of the class
//! ladder, the hwloc dumps, offline CPUs, NUMA, caches and live limits.
//!
//! The trees live in `tests/fixtures/sysfs/<name>/sys`; see the README
//! there for where each comes from.

// The crate is test code as a whole; marking it so lets the lints that
// keep `unwrap` and `#[test]` inside test modules see that.
#![cfg(test)]

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use pinwheel::topology::{
    ClassSource, CpuClass, CpuId, CpuInfo, CpuSet, HostCpus, LiveLimits, NumaNode, TopologyError,
    detect, live_limits,
};
use tracing_subscriber::fmt::MakeWriter;

fn fixture(name: &str) -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sysfs"))
        .join(name)
        .join("sys")
}

fn list(text: &str) -> CpuSet {
    CpuSet::parse_list(text).expect("test lists are valid")
}

fn detect_fixture(name: &str) -> HostCpus {
    detect(&fixture(name), None).unwrap()
}

fn cpu(host: &HostCpus, n: u32) -> &CpuInfo {
    host.get(CpuId(n))
        .unwrap_or_else(|| panic!("cpu {n} not detected"))
}

/// Copies a fixture tree (symlinks as symlinks) so a test can edit it.
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(entry.path()).unwrap(), &target).unwrap();
        } else if kind.is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A writable copy of a fixture; the `TempDir` must outlive its use.
fn editable_fixture(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("sys");
    copy_tree(&fixture(name), &root);
    (dir, root)
}

/// Collects what a `tracing` fmt subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Runs `f` and returns what it logged at warn level and above.
fn warnings_of<T>(f: impl FnOnce() -> T) -> (T, Vec<String>) {
    let sink = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(sink.clone())
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    (out, text.lines().map(str::to_owned).collect())
}

// --- rung 1: hybrid PMU lists -------------------------------------------

#[test]
fn hybrid_pmu_lists_decide_even_when_cpufreq_would_also_separate() {
    let sut = detect_fixture("intel-hybrid-pmu");
    assert_eq!(sut.source, ClassSource::HybridPmu);
    assert_eq!(sut.class_set(CpuClass::P), list("0-15"));
    assert_eq!(sut.class_set(CpuClass::E), list("16-31"));
    assert!(sut.excluded.is_empty());
}

#[test]
fn hybrid_pmu_tree_reports_p_core_threads_and_e_core_clusters() {
    let sut = detect_fixture("intel-hybrid-pmu");
    let p = cpu(&sut, 3);
    assert_eq!((p.core, p.package, p.numa), (4, 0, Some(NumaNode(0))));
    assert_eq!(p.siblings, list("2-3"));
    assert_eq!(p.l2, list("2-3"));
    assert_eq!(p.l3, list("0-31"));
    let e = cpu(&sut, 21);
    assert_eq!(e.core, 37);
    assert_eq!(e.siblings, list("21"));
    assert_eq!(e.l2, list("20-23"));
    assert_eq!(e.l3, list("0-31"));
}

#[test]
fn without_pmu_lists_the_hybrid_tree_falls_to_base_frequency() {
    let (_dir, root) = editable_fixture("intel-hybrid-pmu");
    fs::remove_dir_all(root.join("devices/cpu_core")).unwrap();
    fs::remove_dir_all(root.join("devices/cpu_atom")).unwrap();
    let (sut, warnings) = warnings_of(|| detect(&root, None).unwrap());
    assert_eq!(sut.source, ClassSource::BaseFrequency);
    assert_eq!(sut.class_set(CpuClass::P), list("0-15"));
    assert_eq!(sut.class_set(CpuClass::E), list("16-31"));
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn pmu_lists_that_miss_an_online_cpu_warn_and_fall_through() {
    let (_dir, root) = editable_fixture("intel-hybrid-pmu");
    fs::write(root.join("devices/cpu_atom/cpus"), "16-30\n").unwrap();
    let (sut, warnings) = warnings_of(|| detect(&root, None).unwrap());
    assert_eq!(sut.source, ClassSource::BaseFrequency);
    assert_eq!(sut.class_set(CpuClass::E), list("16-31"));
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("in_neither=31"), "{}", warnings[0]);
}

// --- rung 2: cpu_capacity -----------------------------------------------

#[test]
fn big_little_capacities_split_little_from_big() {
    let sut = detect_fixture("arm-biglittle-capacity");
    assert_eq!(sut.source, ClassSource::CpuCapacity);
    assert_eq!(sut.class_set(CpuClass::E), list("0-3"));
    assert_eq!(sut.class_set(CpuClass::P), list("4-7"));
}

#[test]
fn cluster_local_core_ids_become_unique_within_the_package() {
    // The tree numbers cores per cluster (0-3, 0-1, 0-1) as arm64 kernels do.
    let sut = detect_fixture("arm-biglittle-capacity");
    let cores: Vec<u32> = sut.cpus.iter().map(|c| c.core).collect();
    assert_eq!(cores, (0..8).collect::<Vec<u32>>());
    let big = cpu(&sut, 6);
    assert_eq!((big.package, big.numa), (0, Some(NumaNode(0))));
    assert_eq!(big.siblings, list("6"));
    assert_eq!(big.l2, list("6"));
    assert_eq!(big.l3, list("0-7"));
}

// --- rung 3: base_frequency ---------------------------------------------

#[test]
fn hwloc_hybrid_dump_splits_by_base_frequency() {
    let sut = detect_fixture("20em64t-hybrid-1p6c2t+2ca4co1t");
    assert_eq!(sut.source, ClassSource::BaseFrequency);
    assert_eq!(sut.class_set(CpuClass::P), list("0-11"));
    assert_eq!(sut.class_set(CpuClass::E), list("12-19"));
}

#[test]
fn hwloc_hybrid_dump_has_six_smt_p_cores_and_two_e_clusters() {
    let sut = detect_fixture("20em64t-hybrid-1p6c2t+2ca4co1t");
    let p = cpu(&sut, 11);
    assert_eq!((p.core, p.package, p.numa), (20, 0, Some(NumaNode(0))));
    assert_eq!(p.siblings, list("10-11"));
    assert_eq!(p.l2, list("10-11"));
    assert_eq!(p.l3, list("0-19"));
    assert_eq!(cpu(&sut, 12).l2, list("12-15"));
    assert_eq!(cpu(&sut, 12).siblings, list("12"));
    assert_eq!(cpu(&sut, 19).l2, list("16-19"));
    let distinct_p_cores: CpuSet = sut
        .cpus
        .iter()
        .filter(|c| c.class == CpuClass::P)
        .filter_map(|c| c.siblings.first())
        .collect();
    assert_eq!(distinct_p_cores.len(), 6);
}

// --- rung 4: cpuinfo_max_freq -------------------------------------------

#[test]
fn max_frequency_keeps_turbo_favoured_cores_with_the_p_cores() {
    let sut = detect_fixture("intel-maxfreq-turbo");
    assert_eq!(sut.source, ClassSource::CpuinfoMaxFreq);
    assert_eq!(sut.class_set(CpuClass::P), list("0-11"));
    assert_eq!(sut.class_set(CpuClass::E), list("12-15"));
    assert_eq!(cpu(&sut, 15).l2, list("12-15"));
}

// --- rung 5: uniform ----------------------------------------------------

#[test]
fn identical_cpufreq_on_two_ccds_is_uniform() {
    let sut = detect_fixture("amd-2ccd-smt");
    assert_eq!(sut.source, ClassSource::Uniform);
    assert_eq!(sut.class_set(CpuClass::Uniform), list("0-15"));
}

#[test]
fn amd_tree_pairs_cpu_n_with_n_plus_8_and_shares_l3_per_ccd() {
    let sut = detect_fixture("amd-2ccd-smt");
    let first = cpu(&sut, 1);
    assert_eq!(first.siblings, list("1,9"));
    assert_eq!(first.l2, list("1,9"));
    assert_eq!(first.l3, list("0-3,8-11"));
    let second = cpu(&sut, 12);
    assert_eq!((second.core, second.package), (8, 0));
    assert_eq!(second.siblings, list("4,12"));
    assert_eq!(second.l3, list("4-7,12-15"));
    assert_eq!(second.numa, Some(NumaNode(0)));
}

#[test]
fn two_socket_server_with_an_offline_cpu_leaves_it_out() {
    let sut = detect_fixture("server-2socket-offline");
    assert_eq!(sut.source, ClassSource::Uniform);
    assert_eq!(sut.cpu_set(), list("0-4,6-15"));
    assert!(sut.get(CpuId(5)).is_none());
    let lone = cpu(&sut, 13);
    assert_eq!(lone.siblings, list("13"));
    assert_eq!(lone.l2, list("13"));
    assert_eq!(lone.l3, list("4,6-7,12-15"));
    assert_eq!(
        (lone.core, lone.package, lone.numa),
        (1, 1, Some(NumaNode(1)))
    );
    let first = cpu(&sut, 8);
    assert_eq!(first.siblings, list("0,8"));
    assert_eq!((first.package, first.numa), (0, Some(NumaNode(0))));
}

#[test]
fn this_vm_is_two_uniform_cpus_despite_cpu_capacity() {
    let sut = detect_fixture("vm-2cpu");
    assert_eq!(sut.source, ClassSource::Uniform);
    assert_eq!(sut.cpu_set(), list("0-1"));
    let second = cpu(&sut, 1);
    assert_eq!(
        (second.core, second.package, second.numa),
        (1, 0, Some(NumaNode(0)))
    );
    assert_eq!(second.siblings, list("1"));
    assert_eq!(second.l2, list("1"));
    assert_eq!(second.l3, list("0-1"));
}

#[test]
fn hwloc_eight_node_dump_is_sixteen_uniform_cpus_two_per_node() {
    let sut = detect_fixture("16amd64-8n2c");
    assert_eq!(sut.source, ClassSource::Uniform);
    assert_eq!(sut.class_set(CpuClass::Uniform), list("0-15"));
    for node in 0..8 {
        let on_node: CpuSet = sut
            .cpus
            .iter()
            .filter(|c| c.numa == Some(NumaNode(node)))
            .map(|c| c.cpu)
            .collect();
        assert_eq!(on_node, list(&format!("{}-{}", node * 2, node * 2 + 1)));
    }
    let last = cpu(&sut, 15);
    assert_eq!((last.core, last.package), (1, 7));
    assert_eq!(last.siblings, list("15"));
    assert_eq!(last.l2, list("15"));
    assert!(last.l3.is_empty());
}

#[test]
fn hwloc_arm_dump_without_numa_nodes_puts_both_cpus_on_node_0() {
    let sut = detect_fixture("2arm-2c");
    assert_eq!(sut.source, ClassSource::Uniform);
    assert_eq!(sut.cpu_set(), list("0-1"));
    for info in &sut.cpus {
        assert_eq!(info.numa, Some(NumaNode(0)));
        assert_eq!(info.package, 3);
        assert_eq!(info.siblings, CpuSet::from_iter([info.cpu]));
        assert!(info.l2.is_empty() && info.l3.is_empty());
    }
}

#[test]
fn hwloc_offline_dump_reports_online_cpus_4_to_20_ascending() {
    let sut = detect_fixture("offline-cpu0-node0");
    let order: Vec<u32> = sut.cpus.iter().map(|c| c.cpu.0).collect();
    assert_eq!(order, (4..=20).collect::<Vec<u32>>());
    assert_eq!(sut.source, ClassSource::Uniform);
    let odd = cpu(&sut, 5);
    assert_eq!((odd.core, odd.package, odd.numa), (2, 1, Some(NumaNode(1))));
    assert_eq!(odd.l3, list("5,7,9,11,13,15,17,19"));
    let even = cpu(&sut, 20);
    assert_eq!(even.l3, list("4,6,8,10,12,14,16,18,20"));
}

#[test]
fn cpus_that_no_numa_node_lists_get_none_and_one_warning() {
    // The dump has node1 (odd CPUs) but no node0.
    let (sut, warnings) = warnings_of(|| detect_fixture("offline-cpu0-node0"));
    assert_eq!(cpu(&sut, 4).numa, None);
    assert_eq!(cpu(&sut, 20).numa, None);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("cpus=4,6,8,10,12,14,16,18,20"),
        "{}",
        warnings[0]
    );
}

// --- live limits --------------------------------------------------------

#[test]
fn limits_move_cpus_outside_affinity_and_cgroup_to_excluded() {
    let limits = LiveLimits {
        affinity: list("0-11"),
        cgroup: Some(list("4-15")),
    };
    let (sut, warnings) = warnings_of(|| detect(&fixture("amd-2ccd-smt"), Some(&limits)).unwrap());
    assert_eq!(sut.cpu_set(), list("4-11"));
    assert_eq!(sut.excluded, list("0-3,12-15"));
    assert_eq!(cpu(&sut, 4).siblings, list("4,12"));
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("excluded=0-3,12-15"),
        "{}",
        warnings[0]
    );
}

#[test]
fn limits_without_a_cgroup_apply_the_affinity_mask_alone() {
    let limits = LiveLimits {
        affinity: list("0-1,30"),
        cgroup: None,
    };
    let sut = detect(&fixture("vm-2cpu"), Some(&limits)).unwrap();
    assert_eq!(sut.cpu_set(), list("0-1"));
    assert!(sut.excluded.is_empty());
}

#[test]
fn classes_are_decided_before_limits_apply() {
    let limits = LiveLimits {
        affinity: list("16-31"),
        cgroup: None,
    };
    let sut = detect(&fixture("intel-hybrid-pmu"), Some(&limits)).unwrap();
    assert_eq!(sut.source, ClassSource::HybridPmu);
    assert_eq!(sut.class_set(CpuClass::E), list("16-31"));
    assert_eq!(sut.excluded, list("0-15"));
}

#[test]
fn limits_that_exclude_every_cpu_are_an_error() {
    let limits = LiveLimits {
        affinity: list("0-3"),
        cgroup: Some(list("4-7")),
    };
    let sut = detect(&fixture("amd-2ccd-smt"), Some(&limits));
    match sut {
        Err(TopologyError::NoCpus {
            online, excluded, ..
        }) => {
            assert_eq!(online, list("0-15"));
            assert_eq!(excluded, list("0-15"));
        }
        other => panic!("expected NoCpus, got {other:?}"),
    }
}

#[test]
fn live_host_detects_the_cpus_this_process_may_use() {
    let limits = live_limits().unwrap();
    let sut = detect(Path::new("/sys"), Some(&limits)).unwrap();
    assert!(!sut.cpus.is_empty());
    for info in &sut.cpus {
        assert!(limits.affinity.contains(info.cpu));
    }
}

// --- errors -------------------------------------------------------------

#[test]
fn a_tree_without_an_online_list_is_a_read_error() {
    let dir = tempfile::tempdir().unwrap();
    let sut = detect(dir.path(), None);
    assert!(
        matches!(sut, Err(TopologyError::Read { ref path, .. }) if path.ends_with("online")),
        "{sut:?}"
    );
}

#[test]
fn an_unparsable_online_list_is_malformed() {
    let (_dir, root) = editable_fixture("vm-2cpu");
    fs::write(root.join("devices/system/cpu/online"), "0-x\n").unwrap();
    let sut = detect(&root, None);
    assert!(
        matches!(sut, Err(TopologyError::Malformed { .. })),
        "{sut:?}"
    );
}

#[test]
fn an_unparsable_capacity_is_malformed() {
    let (_dir, root) = editable_fixture("vm-2cpu");
    fs::write(root.join("devices/system/cpu/cpu1/cpu_capacity"), "big\n").unwrap();
    let sut = detect(&root, None);
    assert!(
        matches!(sut, Err(TopologyError::Malformed { ref contents, .. }) if contents == "big"),
        "{sut:?}"
    );
}

#[test]
fn an_empty_online_list_is_no_cpus() {
    let (_dir, root) = editable_fixture("vm-2cpu");
    fs::write(root.join("devices/system/cpu/online"), "\n").unwrap();
    let sut = detect(&root, None);
    assert!(matches!(sut, Err(TopologyError::NoCpus { .. })), "{sut:?}");
}

#[test]
fn a_cpu_without_a_topology_directory_is_its_own_core_on_package_0() {
    let (_dir, root) = editable_fixture("vm-2cpu");
    fs::remove_dir_all(root.join("devices/system/cpu/cpu1/topology")).unwrap();
    let sut = detect(&root, None).unwrap();
    let second = cpu(&sut, 1);
    assert_eq!((second.core, second.package), (1, 0));
    assert_eq!(second.siblings, list("1"));
}

#[test]
fn cache_lists_fall_back_to_masks() {
    let (_dir, root) = editable_fixture("amd-2ccd-smt");
    fs::remove_file(root.join("devices/system/cpu/cpu3/cache/index3/shared_cpu_list")).unwrap();
    fs::remove_file(root.join("devices/system/cpu/cpu3/topology/thread_siblings_list")).unwrap();
    fs::remove_file(root.join("devices/system/cpu/cpu3/topology/core_cpus_list")).unwrap();
    let sut = detect(&root, None).unwrap();
    assert_eq!(cpu(&sut, 3).l3, list("0-3,8-11"));
    assert_eq!(cpu(&sut, 3).siblings, list("3,11"));
}
