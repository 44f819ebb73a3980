//! Limits of the live host: the CPUs this process may run on.
//!
//! Two things narrow the online CPUs: the affinity mask
//! (`sched_getaffinity(0)`, set by `taskset`, systemd `CPUAffinity=` or a
//! container runtime) and the effective cpuset of the process's cgroup.
//! [`live_limits`] reads both; `detect` intersects them with the online
//! CPUs. Reading is split from parsing: [`cgroup_cpuset`] takes the text of
//! `/proc/self/cgroup` and the cgroup mount point, so tests run it against
//! fixture trees.
//!
//! Which cgroup file applies:
//!
//! - cgroup v1 (and hybrid hosts, where `cpuset` is bound to a v1
//!   hierarchy): the `/proc/self/cgroup` line whose controller list holds
//!   `cpuset` (`3:cpuset:/a/b`, or a co-mounted `4:cpu,cpuset:/a/b`). The
//!   file is `<mount>/cpuset/<path>/cpuset.effective_cpus`; when there is no
//!   `<mount>/cpuset`, the hierarchy is looked for under its controller list
//!   as written (`<mount>/cpu,cpuset`). Kernels before `effective_cpus`
//!   existed only have `cpuset.cpus`, read in its place.
//! - cgroup v2: the `0::/a/b` line, used only when no v1 line names
//!   `cpuset`. The file is `<mount>/<path>/cpuset.cpus.effective`.
//!
//! The file may be missing (the cpuset controller is not enabled for that
//! cgroup, or the path is not visible in this mount namespace) or empty;
//! then the parent directories are tried up to the mount root, the nearest
//! ancestor with a non-empty set being the one that applies. A path with
//! `..` (a process outside its cgroup namespace's root) starts at the mount
//! root. No file anywhere, no cpuset line, or no `/proc/self/cgroup` at all
//! means no cgroup limit: `cgroup` is `None`, never an error.
//!
//! This module only reads; it never moves the process between cgroups.

use std::path::{Path, PathBuf};

use nix::sched::sched_getaffinity;
use nix::unistd::Pid;
use tracing::debug;

use super::detect::{malformed, read_optional};
use super::{CpuId, CpuSet, TopologyError};

/// Where distributions mount the cgroup file systems.
const CGROUP_MOUNT: &str = "/sys/fs/cgroup";

/// The calling process's cgroup membership.
const PROC_SELF_CGROUP: &str = "/proc/self/cgroup";

/// The CPUs this process may run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveLimits {
    /// `sched_getaffinity(0)`.
    pub affinity: CpuSet,
    /// The cgroup's effective cpuset, if one applies.
    pub cgroup: Option<CpuSet>,
}

/// Reads the live process's limits: its affinity mask and its cgroup's
/// effective cpuset. A host without a cpuset controller gives
/// `cgroup: None`.
pub fn live_limits() -> Result<LiveLimits, TopologyError> {
    let affinity = affinity()?;
    let cgroup = match read_optional(Path::new(PROC_SELF_CGROUP))? {
        Some(text) => cgroup_cpuset(&text, Path::new(CGROUP_MOUNT))?,
        None => {
            debug!(
                path = PROC_SELF_CGROUP,
                "no cgroup membership file, no cgroup limit"
            );
            None
        }
    };
    Ok(LiveLimits { affinity, cgroup })
}

/// This process's affinity mask.
fn affinity() -> Result<CpuSet, TopologyError> {
    let mask = sched_getaffinity(Pid::from_raw(0)).map_err(|errno| TopologyError::Affinity {
        source: errno.into(),
    })?;
    let cpus = (0..nix::sched::CpuSet::count())
        .filter(|&bit| matches!(mask.is_set(bit), Ok(true)))
        .filter_map(|bit| u32::try_from(bit).ok())
        .map(CpuId)
        .collect();
    Ok(cpus)
}

/// The hierarchy that holds the cpuset controller, from
/// `/proc/self/cgroup`.
#[derive(Debug, PartialEq, Eq)]
enum Hierarchy<'a> {
    /// A v1 hierarchy with `cpuset` in its controller list.
    V1 {
        /// The controller list as written (`cpuset` or `cpu,cpuset`).
        controllers: &'a str,
        /// The cgroup path (`/a/b`).
        path: &'a str,
    },
    /// The v2 unified hierarchy.
    V2 {
        /// The cgroup path (`/a/b`).
        path: &'a str,
    },
}

/// Picks the hierarchy to read: a v1 `cpuset` line wins over the v2 line.
fn cpuset_hierarchy(proc_self_cgroup: &str) -> Option<Hierarchy<'_>> {
    let mut unified = None;
    for line in proc_self_cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if controllers.split(',').any(|c| c == "cpuset") {
            return Some(Hierarchy::V1 { controllers, path });
        }
        if id == "0" && controllers.is_empty() {
            unified = Some(Hierarchy::V2 { path });
        }
    }
    unified
}

/// The effective cpuset of the cgroup `proc_self_cgroup` (the text of
/// `/proc/self/cgroup`) names, under the cgroup mount `cgroup_mount`
/// (`/sys/fs/cgroup`). `None` when no cpuset controller applies; see the
/// module doc for the files tried.
pub(super) fn cgroup_cpuset(
    proc_self_cgroup: &str,
    cgroup_mount: &Path,
) -> Result<Option<CpuSet>, TopologyError> {
    match cpuset_hierarchy(proc_self_cgroup) {
        None => {
            debug!("no cgroup hierarchy with a cpuset controller");
            Ok(None)
        }
        Some(Hierarchy::V1 { controllers, path }) => {
            let base = [cgroup_mount.join("cpuset"), cgroup_mount.join(controllers)]
                .into_iter()
                .find(|dir| dir.is_dir());
            match base {
                Some(base) => walk_up(&base, path, &["cpuset.effective_cpus", "cpuset.cpus"]),
                None => {
                    debug!(mount = %cgroup_mount.display(), controllers, "cpuset hierarchy not mounted");
                    Ok(None)
                }
            }
        }
        Some(Hierarchy::V2 { path }) => walk_up(cgroup_mount, path, &["cpuset.cpus.effective"]),
    }
}

/// Reads the first non-empty `files` entry from `base/<path>` upward to
/// `base`.
fn walk_up(base: &Path, path: &str, files: &[&str]) -> Result<Option<CpuSet>, TopologyError> {
    let parts = path_parts(path);
    for depth in (0..=parts.len()).rev() {
        let dir: PathBuf = parts[..depth]
            .iter()
            .fold(base.to_path_buf(), |dir, part| dir.join(part));
        for file in files {
            let file = dir.join(file);
            let Some(text) = read_optional(&file)? else {
                continue;
            };
            if text.trim().is_empty() {
                continue;
            }
            let cpus = CpuSet::parse_list(&text).map_err(|e| malformed(&file, &text, e))?;
            return Ok(Some(cpus));
        }
    }
    debug!(base = %base.display(), path, "no effective cpuset up to the cgroup root");
    Ok(None)
}

/// The components of a cgroup path below the mount root. A path that
/// climbs out with `..` is not visible in this mount: it gives none, so
/// the walk starts at the root.
fn path_parts(path: &str) -> Vec<&str> {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.contains(&"..") {
        Vec::new()
    } else {
        parts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/cgroup")
            .join(name)
    }

    fn list(text: &str) -> CpuSet {
        CpuSet::parse_list(text).unwrap()
    }

    /// `/proc/self/cgroup` of a v1 host, like this one: cpuset on its own
    /// hierarchy, a v2 line for the empty unified hierarchy.
    fn v1_proc(cpuset_path: &str) -> String {
        format!("9:name=systemd:/\n4:memory:/job\n3:cpuset:{cpuset_path}\n1:cpu:/\n0::/\n")
    }

    #[test]
    fn v1_reads_the_cgroup_effective_cpus() {
        let sut = cgroup_cpuset(&v1_proc("/pinwheel"), &mount("v1")).unwrap();
        assert_eq!(sut, Some(list("2-3")));
    }

    #[test]
    fn v1_root_cgroup_reads_the_hierarchy_root() {
        let sut = cgroup_cpuset(&v1_proc("/"), &mount("v1")).unwrap();
        assert_eq!(sut, Some(list("0-7")));
    }

    #[test]
    fn v1_empty_file_walks_up_to_the_parent() {
        let sut = cgroup_cpuset(&v1_proc("/pinwheel/unset"), &mount("v1")).unwrap();
        assert_eq!(sut, Some(list("2-3")));
    }

    #[test]
    fn v1_cgroup_missing_from_the_mount_walks_up_to_the_root() {
        let sut = cgroup_cpuset(&v1_proc("/docker/0123abcd"), &mount("v1")).unwrap();
        assert_eq!(sut, Some(list("0-7")));
    }

    #[test]
    fn v1_without_effective_cpus_reads_cpuset_cpus() {
        let sut = cgroup_cpuset(&v1_proc("/old-kernel"), &mount("v1")).unwrap();
        assert_eq!(sut, Some(list("4-5")));
    }

    #[test]
    fn v1_co_mounted_hierarchy_is_found_by_its_controller_list() {
        let proc = "5:cpu,cpuset:/batch\n0::/\n";
        let sut = cgroup_cpuset(proc, &mount("v1-comounted")).unwrap();
        assert_eq!(sut, Some(list("6-7")));
    }

    #[test]
    fn v1_line_wins_over_the_v2_line_on_hybrid_hosts() {
        let sut = cpuset_hierarchy("0::/user.slice\n3:cpuset:/a\n");
        assert_eq!(
            sut,
            Some(Hierarchy::V1 {
                controllers: "cpuset",
                path: "/a"
            })
        );
    }

    #[test]
    fn v2_reads_cpuset_cpus_effective() {
        let sut = cgroup_cpuset("0::/pinwheel.slice/pinwheel.service\n", &mount("v2")).unwrap();
        assert_eq!(sut, Some(list("4-7")));
    }

    #[test]
    fn v2_cgroup_without_the_controller_enabled_walks_up() {
        let sut = cgroup_cpuset(
            "0::/user.slice/user-1000.slice/session-1.scope\n",
            &mount("v2"),
        )
        .unwrap();
        assert_eq!(sut, Some(list("0-15")));
    }

    #[test]
    fn v2_host_without_a_cpuset_controller_has_no_cgroup_limit() {
        let sut = cgroup_cpuset(
            "0::/system.slice/pinwheel.service\n",
            &mount("v2-no-cpuset"),
        )
        .unwrap();
        assert_eq!(sut, None);
    }

    #[test]
    fn path_outside_the_cgroup_namespace_reads_the_root() {
        let sut = cgroup_cpuset("0::/../../pinwheel.slice\n", &mount("v2")).unwrap();
        assert_eq!(sut, Some(list("0-15")));
    }

    #[test]
    fn text_without_cpuset_or_v2_line_has_no_cgroup_limit() {
        let sut = cgroup_cpuset("4:memory:/a\n1:cpu:/\n", &mount("v1")).unwrap();
        assert_eq!(sut, None);
    }

    #[test]
    fn v1_line_whose_hierarchy_is_not_mounted_has_no_cgroup_limit() {
        let sut = cgroup_cpuset(&v1_proc("/"), &mount("v2-no-cpuset")).unwrap();
        assert_eq!(sut, None);
    }

    #[test]
    fn garbage_in_an_effective_cpuset_is_malformed() {
        let sut = cgroup_cpuset("0::/broken\n", &mount("v2"));
        assert!(
            matches!(sut, Err(TopologyError::Malformed { .. })),
            "{sut:?}"
        );
    }

    #[test]
    fn live_limits_read_a_non_empty_affinity_mask() {
        let sut = live_limits().unwrap();
        assert!(!sut.affinity.is_empty());
        if let Some(cgroup) = &sut.cgroup {
            assert!(!cgroup.is_empty());
        }
    }
}
