//! The [`GpuBackend`] trait: what pinwheel reads from a GPU, whoever
//! provides it.
//!
//! Two implementations: `NvmlBackend` asks the NVIDIA driver through
//! nvml-wrapper; `SimBackend` simulates the GPUs a topology declares. Both
//! answer the same questions with the same types, and one conformance
//! suite (`tests/gpu_backends.rs`) runs on both.
//!
//! Backends block (NVML calls take the driver's locks), so they never run
//! on the control runtime's thread: [`GpuPoller`] calls them through
//! `spawn_blocking` (the runtime's one blocking thread) and sends
//! [`GpuEvent`]s to the core loop over a bounded channel.
//!
//! Per-call failures are data, not errors: a GPU that cannot report its
//! utilization, temperature, power or processes (`NotSupported`) gives
//! `None` for that field and the sample still arrives. A GPU that fell off
//! the bus (`GpuLost`) answers [`GpuError::Lost`] from then on; the others
//! keep working.

mod open;
mod poller;

use std::fmt;

use serde::Serialize;

pub use open::open_backend;
pub use poller::{GpuEvent, GpuPoller, PollStats};

/// A GPU's position in its backend's list (the topology's `[[gpu]]` order,
/// or NVML's order for `gpus = "nvml"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct GpuIndex(pub u32);

impl fmt::Display for GpuIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What does not change about a GPU while it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GpuInfo {
    /// Its position in the backend's list.
    pub index: GpuIndex,
    /// Product name, as `nvidia-smi` prints it.
    pub name: String,
    /// Device UUID (`GPU-...`; `GPU-sim-N` for simulated GPUs).
    pub uuid: String,
    /// Total VRAM, MiB.
    pub total_mib: u64,
}

/// A process holding VRAM on a GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ProcessUse {
    /// Its process id.
    pub pid: u32,
    /// VRAM it holds, MiB; `None` when the driver cannot tell (Windows
    /// WDDM, some MIG setups).
    pub used_mib: Option<u64>,
}

/// One reading of one GPU.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuSample {
    /// The GPU.
    pub gpu: GpuIndex,
    /// Total VRAM, MiB.
    pub total_mib: u64,
    /// VRAM in use by anyone, MiB.
    pub used_mib: u64,
    /// VRAM free, MiB.
    pub free_mib: u64,
    /// GPU busy share over the driver's last interval, percent.
    pub util_pct: Option<u32>,
    /// Core temperature, degrees Celsius.
    pub temp_c: Option<u32>,
    /// Board power draw, milliwatts.
    pub power_mw: Option<u32>,
    /// Compute processes and their VRAM; `None` when the GPU cannot list
    /// them.
    pub processes: Option<Vec<ProcessUse>>,
}

/// A source of GPU readings. Calls may block; run them off the core loop.
pub trait GpuBackend: Send + fmt::Debug {
    /// The GPUs, in index order.
    fn gpus(&self) -> &[GpuInfo];

    /// Reads one GPU now.
    fn sample(&mut self, gpu: GpuIndex) -> Result<GpuSample, GpuError>;

    /// Why this backend is a stand-in for what the topology asked for
    /// (`None` when it is what was asked for), for `/health`.
    fn degraded(&self) -> Option<&str>;
}

/// Errors of the GPU backends.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// The GPU fell off the bus or stopped answering; it stays lost.
    #[error("GPU {gpu} is lost (fell off the bus or stopped answering); its models are gone")]
    Lost {
        /// The GPU.
        gpu: GpuIndex,
    },
    /// An index past the backend's list.
    #[error("GPU {gpu} does not exist; this backend has {count} GPU(s)")]
    NoSuchGpu {
        /// The index asked for.
        gpu: GpuIndex,
        /// How many there are.
        count: usize,
    },
    /// A GPU the topology declares that NVML does not list.
    #[error(
        "the topology declares GPU {wanted}, but NVML lists {count} device(s) ({listed}); fix the [[gpu]] entry"
    )]
    NotFound {
        /// The declared NVML index or UUID.
        wanted: String,
        /// How many devices NVML lists.
        count: u32,
        /// Their UUIDs.
        listed: String,
    },
    /// A simulated GPU needs a size.
    #[error(
        "GPU {gpu} ({name}) has no vram_mib, so it cannot be simulated; set vram_mib in its [[gpu]] entry"
    )]
    NoSize {
        /// Its position in the topology.
        gpu: usize,
        /// Its name.
        name: String,
    },
    /// A declared GPU list that mixes simulated and NVML GPUs.
    #[error(
        "the topology mixes simulated and NVML GPUs; declare either only `simulated = true` GPUs or only NVML ones"
    )]
    MixedPlan,
    /// A simulated load that does not fit.
    #[error("GPU {gpu} cannot hold {wanted_mib} MiB more: {free_mib} MiB free")]
    OutOfMemory {
        /// The GPU.
        gpu: GpuIndex,
        /// What was asked for.
        wanted_mib: u64,
        /// What was free.
        free_mib: u64,
    },
    /// A simulated process that does not exist.
    #[error("GPU {gpu} has no process {pid}")]
    NoSuchProcess {
        /// The GPU.
        gpu: GpuIndex,
        /// The pid.
        pid: u32,
    },
    /// An NVML call failed in a way that is not handled per call.
    #[error("NVML {call} on GPU {gpu}: {source}")]
    Nvml {
        /// The GPU, or `-` for library-wide calls.
        gpu: String,
        /// The call.
        call: &'static str,
        /// nvml-wrapper's error.
        source: nvml_wrapper::error::NvmlError,
    },
}

/// Converts bytes to whole MiB, rounding down.
pub(crate) fn bytes_to_mib(bytes: u64) -> u64 {
    bytes / (1024 * 1024)
}
