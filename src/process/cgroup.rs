//! Leaf cgroups for agent processes: `pinwheel.slice/<agent>.scope` under
//! the cgroup v2 root, with `cpuset.cpus` set to the agent's planned CPU
//! and `memory.max` to its `memory_max_mib` (or `max`). The child joins
//! its leaf before `exec` (`spawn.rs`); the leaf is removed when the child
//! has been reaped, and the slice when the daemon stops.
//!
//! Usable only where the root is a writable cgroup v2 hierarchy that
//! offers the `cpuset` and `memory` controllers, with the daemon as root.
//! Anywhere else (cgroup v1 or a hybrid mount, a container without
//! delegation, not root) [`Cgroups::detect`] says why, and the daemon runs
//! its agents without cgroups (one warning, a `cgroup_unavailable` health
//! reason): placement still holds through affinity, the memory limit does
//! not.
//!
//! The root is a parameter, so tests run against a directory tree.

use std::path::{Path, PathBuf};

use crate::topology::CpuId;

/// The slice every agent's leaf sits in.
pub const SLICE: &str = "pinwheel.slice";

/// The cgroup side of the daemon.
#[derive(Debug)]
pub enum Cgroups {
    /// Leaves can be made under this slice.
    Usable {
        /// `<root>/pinwheel.slice`.
        slice: PathBuf,
    },
    /// No cgroups, and why.
    Unusable {
        /// What is missing, for the warning and the health reason.
        reason: String,
    },
}

/// One agent's leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    dir: PathBuf,
}

impl Cgroups {
    /// Checks `root` (normally `/sys/fs/cgroup`) and prepares the slice.
    pub fn detect(root: &Path) -> Self {
        match prepare(root) {
            Ok(slice) => Cgroups::Usable { slice },
            Err(reason) => Cgroups::Unusable { reason },
        }
    }

    /// Makes the leaf of `agent`.
    pub fn leaf(&self, agent: &str, cpu: CpuId, memory_max_mib: Option<u64>) -> Option<Leaf> {
        let Cgroups::Usable { slice } = self else {
            return None;
        };
        let dir = slice.join(format!("{agent}.scope"));
        let made = std::fs::create_dir(&dir)
            .or_else(|err| match err.kind() {
                std::io::ErrorKind::AlreadyExists => Ok(()),
                _ => Err(err),
            })
            .and_then(|()| std::fs::write(dir.join("cpuset.cpus"), cpu.0.to_string()))
            .and_then(|()| {
                let max =
                    memory_max_mib.map_or_else(|| "max".to_owned(), |m| (m << 20).to_string());
                std::fs::write(dir.join("memory.max"), max)
            });
        match made {
            Ok(()) => Some(Leaf { dir }),
            Err(err) => {
                tracing::warn!(agent, error = %err, "agent cgroup not made; it runs without one");
                let _ = std::fs::remove_dir(&dir);
                None
            }
        }
    }

    /// Removes the slice (every leaf must be gone).
    pub fn remove_slice(&self) {
        if let Cgroups::Usable { slice } = self {
            let _ = std::fs::remove_dir(slice);
        }
    }
}

impl Leaf {
    /// Its `cgroup.procs`, which the child writes itself into.
    pub fn procs(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// Removes the leaf once its process is reaped.
    pub fn remove(&self) {
        if let Err(err) = std::fs::remove_dir(&self.dir)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::debug!(dir = %self.dir.display(), error = %err, "agent cgroup not removed");
        }
    }
}

/// The slice under `root`, with `cpuset` and `memory` enabled for it and
/// its children.
fn prepare(root: &Path) -> Result<PathBuf, String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("the daemon is not root".into());
    }
    let controllers = std::fs::read_to_string(root.join("cgroup.controllers")).map_err(|_| {
        format!(
            "{} is not a cgroup v2 hierarchy (cgroup v1 or hybrid mount); boot with systemd.unified_cgroup_hierarchy=1",
            root.display()
        )
    })?;
    let offered: Vec<&str> = controllers.split_whitespace().collect();
    if let Some(missing) = ["cpuset", "memory"].iter().find(|c| !offered.contains(c)) {
        return Err(format!(
            "the cgroup v2 root {} does not offer the {missing} controller",
            root.display()
        ));
    }
    let enable = |dir: &Path| {
        std::fs::write(dir.join("cgroup.subtree_control"), "+cpuset +memory").map_err(|err| {
            format!(
                "cannot enable cpuset and memory under {}: {err}",
                dir.display()
            )
        })
    };
    enable(root)?;
    let slice = root.join(SLICE);
    std::fs::create_dir_all(&slice)
        .map_err(|err| format!("cannot create {}: {err}", slice.display()))?;
    enable(&slice)?;
    Ok(slice)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_v2_root_with_both_controllers_gets_a_slice_and_leaves_with_limits() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(
            root.path().join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        let sut = Cgroups::detect(root.path());
        let leaf = sut.leaf("Echo", CpuId(1), Some(64)).unwrap();
        let dir = leaf.procs().parent().unwrap().to_path_buf();
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
        assert_eq!(read("cpuset.cpus"), "1");
        assert_eq!(read("memory.max"), (64u64 << 20).to_string());
        assert_eq!(
            leaf.procs(),
            root.path().join("pinwheel.slice/Echo.scope/cgroup.procs")
        );
        let slice_control =
            std::fs::read_to_string(root.path().join("pinwheel.slice/cgroup.subtree_control"))
                .unwrap();
        assert_eq!(slice_control, "+cpuset +memory");
    }

    #[test]
    fn a_hybrid_mount_or_a_missing_controller_is_unusable_with_a_reason() {
        let root = tempfile::tempdir().unwrap();
        let Cgroups::Unusable { reason } = Cgroups::detect(root.path()) else {
            panic!("no cgroup.controllers")
        };
        assert!(reason.contains("not a cgroup v2 hierarchy"), "{reason}");
        std::fs::write(root.path().join("cgroup.controllers"), "cpu io pids\n").unwrap();
        let sut = Cgroups::detect(root.path());
        assert!(matches!(&sut, Cgroups::Unusable { reason } if reason.contains("cpuset")));
        assert!(sut.leaf("A", CpuId(0), None).is_none());
    }
}
