//! Host CPUs and the validated topology file.
//!
//! Two things live here. [`HostCpus`] is what [`detect`] finds under a sysfs
//! root: every online CPU with its class (P, E or uniform), core, package,
//! NUMA node, SMT siblings and the CPUs sharing its L2 and L3. [`Topology`]
//! is a topology file after validation: the host it describes, which CPU
//! plays which role, per-class executor settings, GPUs, and the admin,
//! tuning and cluster sections.
//!
//! A topology file describes one host. Planning is pure and works on any
//! machine; only `pinwheel run` compares the file with the live host
//! ([`Topology::check_live`]). Detection takes a root path so tests run
//! against fixture trees; it never writes anything.

mod classify;
mod cpuset;
mod detect;
mod error;
mod legacy;
mod live;
mod render;
mod roles;
mod validate;
mod vram;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use pinwheel_ipc::ring::WaitStrategy;
use serde::Serialize;

pub use cpuset::{CpuId, CpuSet, CpuSetError, MAX_CPU_ID};
pub use detect::detect;
pub use error::{HostMismatch, TopologyError};
pub use legacy::{
    DEFAULT_LEGACY_TIMEOUT, DEFAULT_MAX_MESSAGE_BYTES, LegacyEdge, MAX_MESSAGE_BYTES,
};
pub use live::{LiveLimits, live_limits};
pub use render::{render_detect_json, render_detect_toml};
pub use validate::{DEFAULT_ADMIN_ADDR, load, validate};
pub use vram::{GpuSections, VramPin, VramPolicy, load_gpu_sections};

/// The root that stands for the live host's `/sys`.
pub const LIVE_SYSFS: &str = "/sys";

/// Detects the CPUs under `sysfs_root`. On the live host (`/sys`) it also
/// leaves out CPUs outside this process's affinity mask and cgroup cpuset,
/// which glommio would otherwise fail to pin to.
pub fn detect_host(sysfs_root: &Path) -> Result<HostCpus, TopologyError> {
    if sysfs_root == Path::new(LIVE_SYSFS) {
        detect(sysfs_root, Some(&live_limits()?))
    } else {
        detect(sysfs_root, None)
    }
}

/// The class of a CPU: a performance core, an efficiency core, or a core of
/// a host whose CPUs are all alike.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
pub enum CpuClass {
    /// Performance core (Intel P-core, ARM big core).
    P,
    /// Efficiency core (Intel E-core, ARM LITTLE core).
    E,
    /// No detectable difference between this host's CPUs.
    #[serde(rename = "uniform")]
    Uniform,
}

impl CpuClass {
    /// The name used in files and output: `P`, `E` or `uniform`.
    pub fn as_str(self) -> &'static str {
        match self {
            CpuClass::P => "P",
            CpuClass::E => "E",
            CpuClass::Uniform => "uniform",
        }
    }
}

impl fmt::Display for CpuClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A NUMA node as the kernel numbers it (`/sys/devices/system/node/nodeN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct NumaNode(pub u32);

/// The detection rung that decided the CPU classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClassSource {
    /// Intel hybrid PMU lists `devices/cpu_core/cpus` and `devices/cpu_atom/cpus`.
    HybridPmu,
    /// `cpuN/cpu_capacity` (ARM big.LITTLE).
    CpuCapacity,
    /// `cpufreq/base_frequency`.
    BaseFrequency,
    /// `cpufreq/cpuinfo_max_freq`.
    CpuinfoMaxFreq,
    /// Nothing separated the CPUs: all are uniform.
    Uniform,
}

impl ClassSource {
    /// The name used in output.
    pub fn as_str(self) -> &'static str {
        match self {
            ClassSource::HybridPmu => "hybrid_pmu",
            ClassSource::CpuCapacity => "cpu_capacity",
            ClassSource::BaseFrequency => "base_frequency",
            ClassSource::CpuinfoMaxFreq => "cpuinfo_max_freq",
            ClassSource::Uniform => "uniform",
        }
    }
}

/// One online CPU as detection found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CpuInfo {
    /// Kernel CPU number.
    pub cpu: CpuId,
    /// P, E or uniform.
    pub class: CpuClass,
    /// `topology/core_id` (unique within a package).
    pub core: u32,
    /// `topology/physical_package_id`.
    pub package: u32,
    /// The NUMA node whose `cpulist` holds this CPU; `None` when the tree
    /// has NUMA nodes but none lists it.
    pub numa: Option<NumaNode>,
    /// SMT siblings, this CPU included (online CPUs only).
    pub siblings: CpuSet,
    /// CPUs sharing this CPU's L2 cache (online only; empty if unknown).
    pub l2: CpuSet,
    /// CPUs sharing this CPU's L3 cache (online only; empty if none).
    pub l3: CpuSet,
}

/// The CPUs of a host, as detected under a sysfs root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCpus {
    /// The rung that decided the classes.
    pub source: ClassSource,
    /// Online (and, on the live host, usable) CPUs, ascending.
    pub cpus: Vec<CpuInfo>,
    /// Online CPUs left out because this process may not run on them
    /// (affinity mask or cgroup cpuset); empty for fixture trees.
    pub excluded: CpuSet,
}

impl HostCpus {
    /// All detected CPUs.
    pub fn cpu_set(&self) -> CpuSet {
        self.cpus.iter().map(|c| c.cpu).collect()
    }

    /// The detected CPUs of one class.
    pub fn class_set(&self, class: CpuClass) -> CpuSet {
        self.cpus
            .iter()
            .filter(|c| c.class == class)
            .map(|c| c.cpu)
            .collect()
    }

    /// Looks up one CPU.
    pub fn get(&self, cpu: CpuId) -> Option<&CpuInfo> {
        self.cpus.iter().find(|c| c.cpu == cpu)
    }
}

/// What a CPU is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Runs agent executors.
    DataPlane,
    /// Runs the control runtime (core loop, admin HTTP, cluster link).
    Control,
    /// Runs the control runtime's blocking calls (NVML polling).
    Housekeeping,
}

impl Role {
    /// The key used in topology files.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::DataPlane => "data_plane",
            Role::Control => "control",
            Role::Housekeeping => "housekeeping",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which kind of glommio task queue an executor's agents run in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskQueue {
    /// `Latency::Matters`: preempts other queues within the preempt timer.
    Latency,
    /// `Shares::Static(shares)`: a proportional share of the CPU.
    Shares(u16),
}

/// Executor settings for the data-plane CPUs of one class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ClassSettings {
    /// How consumers on this class wait.
    pub wait: WaitStrategy,
    /// Longest spin before parking (the `adaptive` wait's full spin),
    /// microseconds.
    pub spin_before_park_us: u32,
    /// glommio `preempt_timer`, microseconds.
    pub preempt_timer_us: u32,
    /// Task queue for agents on this class.
    pub task_queue: TaskQueue,
    /// SCHED_FIFO priority (1-99) for data-plane executors; 0 keeps
    /// SCHED_OTHER.
    pub rt_priority: u8,
}

/// Where a GPU comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GpuSource {
    /// An NVML device by index.
    NvmlIndex(u32),
    /// An NVML device by UUID.
    NvmlUuid(String),
    /// A simulated GPU (no driver needed).
    Simulated,
}

/// One GPU the topology declares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GpuSpec {
    /// Where it comes from.
    pub source: GpuSource,
    /// Display name (expected NVML name, or the simulated GPU's).
    pub name: String,
    /// Expected total VRAM, MiB. Required for simulated GPUs; for NVML
    /// GPUs it is what a simulated stand-in gets when there is no driver.
    pub vram_mib: Option<u64>,
}

/// Which GPUs the host has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GpuPlan {
    /// Exactly the GPUs the file lists.
    Declared(Vec<GpuSpec>),
    /// Every GPU NVML reports; none without a driver.
    Nvml,
}

/// The optional cluster section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterSpec {
    /// Cluster name, the `<cluster>` in NATS subjects.
    pub name: String,
    /// NATS server URL.
    pub nats_url: String,
    /// Host state period, ms.
    pub heartbeat_ms: u64,
    /// Heartbeats a host may miss before it is lost.
    pub missed_heartbeats: u32,
    /// How this host proves who it is to NATS.
    pub auth: ClusterAuth,
    /// TLS settings, for a `tls://` URL.
    pub tls: ClusterTls,
    /// JetStream replicas of the cluster's KV buckets (1 on one server, 3
    /// on a three-node NATS cluster).
    pub kv_replicas: u8,
}

/// How a host proves who it is to NATS: files read when the link starts,
/// through the root daemon's secret check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub enum ClusterAuth {
    /// No credentials: a NATS server without authorization.
    #[default]
    None,
    /// An nkey seed file (`pinwheel cluster init` writes one per host).
    Nkey(PathBuf),
    /// A file holding `user:password`.
    Password(PathBuf),
}

/// TLS files for the NATS connection; used when the URL is `tls://`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct ClusterTls {
    /// The CA that signs the server's certificate (else the system's).
    pub ca: Option<PathBuf>,
    /// A client certificate and its key.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// A validated topology file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Topology {
    path: PathBuf,
    host: String,
    classes: Vec<(CpuClass, CpuSet)>,
    isolated: bool,
    data_plane: CpuSet,
    control: Option<CpuId>,
    housekeeping: CpuSet,
    settings: Vec<(CpuClass, ClassSettings)>,
    gpus: GpuPlan,
    vram: VramPolicy,
    admin_addr: SocketAddr,
    tuning_profile: Option<PathBuf>,
    cluster: Option<ClusterSpec>,
    legacy: Option<LegacyEdge>,
}

impl Topology {
    /// The file this topology was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The host the file describes.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// All CPUs of the host.
    pub fn cpus(&self) -> CpuSet {
        self.classes
            .iter()
            .fold(CpuSet::new(), |all, (_, set)| all.union(set))
    }

    /// The class of a CPU, if the host has it.
    pub fn class_of(&self, cpu: CpuId) -> Option<CpuClass> {
        self.classes
            .iter()
            .find(|(_, set)| set.contains(cpu))
            .map(|(class, _)| *class)
    }

    /// The CPUs of one class (empty if the host has none).
    pub fn class_cpus(&self, class: CpuClass) -> CpuSet {
        self.classes
            .iter()
            .find(|(c, _)| *c == class)
            .map(|(_, set)| set.clone())
            .unwrap_or_default()
    }

    /// Whether data-plane CPUs are isolated from the kernel scheduler.
    pub fn isolated(&self) -> bool {
        self.isolated
    }

    /// CPUs that run agent executors.
    pub fn data_plane(&self) -> &CpuSet {
        &self.data_plane
    }

    /// The CPU of the core loop; `None` runs it as a background task queue
    /// on the first data-plane executor (hosts too small to spare a CPU).
    pub fn control(&self) -> Option<CpuId> {
        self.control
    }

    /// CPUs of the control runtime's blocking thread (NVML calls); empty
    /// leaves it on the control thread's CPUs.
    pub fn housekeeping(&self) -> &CpuSet {
        &self.housekeeping
    }

    /// The role of a CPU, if it has one.
    pub fn role_of(&self, cpu: CpuId) -> Option<Role> {
        if self.data_plane.contains(cpu) {
            Some(Role::DataPlane)
        } else if self.control == Some(cpu) {
            Some(Role::Control)
        } else if self.housekeeping.contains(cpu) {
            Some(Role::Housekeeping)
        } else {
            None
        }
    }

    /// Executor settings for a class.
    pub fn settings(&self, class: CpuClass) -> ClassSettings {
        self.settings
            .iter()
            .find(|(c, _)| *c == class)
            .map(|(_, s)| *s)
            .unwrap_or_else(|| validate::default_settings(class))
    }

    /// The GPUs.
    pub fn gpus(&self) -> &GpuPlan {
        &self.gpus
    }

    /// The VRAM optimizer's policy (`[vram]`).
    pub fn vram(&self) -> &VramPolicy {
        &self.vram
    }

    /// Where the admin API listens.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The tuning profile to apply at start, if any.
    pub fn tuning_profile(&self) -> Option<&Path> {
        self.tuning_profile.as_deref()
    }

    /// The cluster section, if any.
    pub fn cluster(&self) -> Option<&ClusterSpec> {
        self.cluster.as_ref()
    }

    /// The legacy ZeroMQ gateway's section, if any.
    pub fn legacy(&self) -> Option<&LegacyEdge> {
        self.legacy.as_ref()
    }

    /// This topology with its gateway bound on `bind` (`pinwheel run
    /// --legacy-bind`): the section's other settings stay, or are the
    /// defaults when the file has none.
    pub fn with_legacy_bind(mut self, bind: std::net::IpAddr) -> Self {
        let edge = match self.legacy.take() {
            Some(edge) => LegacyEdge { bind, ..edge },
            None => LegacyEdge::on(bind),
        };
        self.legacy = Some(edge);
        self
    }

    /// This topology under another host name (`pinwheel run --host`): one
    /// file can serve several hosts alike. The caller checks the name.
    pub fn with_host(mut self, host: String) -> Self {
        self.host = host;
        self
    }

    /// This topology with `cluster` in place of its own section
    /// (`pinwheel run --nats`). The caller checks the spec.
    pub fn with_cluster(mut self, cluster: ClusterSpec) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// Checks that the live host has what this file describes: every CPU of
    /// the file online and usable here, with the class the file gives it.
    pub fn check_live(&self, live: &HostCpus) -> Result<(), TopologyError> {
        let here = live.cpu_set();
        let missing = self.cpus().difference(&here);
        let mismatched: CpuSet = self
            .cpus()
            .intersection(&here)
            .iter()
            .filter(|cpu| live.get(*cpu).map(|c| c.class) != self.class_of(*cpu))
            .collect();
        if missing.is_empty() && mismatched.is_empty() {
            return Ok(());
        }
        Err(TopologyError::HostMismatch(Box::new(HostMismatch {
            path: self.path.clone(),
            host: self.host.clone(),
            file_cpus: describe_classes(&self.classes),
            live_cpus: describe_classes(&[
                (CpuClass::P, live.class_set(CpuClass::P)),
                (CpuClass::E, live.class_set(CpuClass::E)),
                (CpuClass::Uniform, live.class_set(CpuClass::Uniform)),
            ]),
            missing,
            mismatched,
        })))
    }
}

fn describe_classes(classes: &[(CpuClass, CpuSet)]) -> String {
    let parts: Vec<String> = classes
        .iter()
        .filter(|(_, set)| !set.is_empty())
        .map(|(class, set)| format!("{class} {set}"))
        .collect();
    if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SourceFile;

    fn host(classes: &[(CpuClass, &str)]) -> HostCpus {
        let cpus = classes
            .iter()
            .flat_map(|(class, list)| {
                CpuSet::parse_list(list)
                    .unwrap()
                    .iter()
                    .map(move |cpu| (cpu, *class))
                    .collect::<Vec<_>>()
            })
            .map(|(cpu, class)| CpuInfo {
                cpu,
                class,
                core: cpu.0,
                package: 0,
                numa: Some(NumaNode(0)),
                siblings: [cpu].into_iter().collect(),
                l2: CpuSet::new(),
                l3: CpuSet::new(),
            })
            .collect();
        HostCpus {
            source: ClassSource::Uniform,
            cpus,
            excluded: CpuSet::new(),
        }
    }

    fn sut(text: &str) -> Topology {
        let file = SourceFile::from_text(Path::new("topology/mainpc.toml"), text);
        validate(file.parse().unwrap(), &file, None).unwrap()
    }

    const MAINPC: &str =
        "schema = 1\n[host]\nname = \"mainpc\"\ncpus = { P = \"0-15\", E = \"16-31\" }\n";

    #[test]
    fn check_live_accepts_the_host_the_file_describes() {
        let live = host(&[(CpuClass::P, "0-15"), (CpuClass::E, "16-31")]);
        assert!(sut(MAINPC).check_live(&live).is_ok());
    }

    #[test]
    fn check_live_on_another_host_names_the_file_to_use() {
        let live = host(&[(CpuClass::Uniform, "0-1")]);
        let err = sut(MAINPC).check_live(&live).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(
                "describes host mainpc with CPUs P 0-15, E 16-31, but this host has uniform 0-1"
            ),
            "{text}"
        );
        assert!(
            text.contains("CPUs 2-31 are not online and usable here"),
            "{text}"
        );
        assert!(text.contains("use topology/auto.toml"), "{text}");
    }

    #[test]
    fn check_live_notices_a_class_that_differs() {
        let live = host(&[(CpuClass::Uniform, "0-31")]);
        let err = sut(MAINPC).check_live(&live).unwrap_err();
        assert!(
            err.to_string()
                .contains("CPUs 0-31 have another class here"),
            "{err}"
        );
    }
}
