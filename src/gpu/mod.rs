//! GPUs: reading them, and deciding which models live in their VRAM.
//!
//! * [`backend`]: the [`GpuBackend`] trait, the poller that runs it off
//!   the control runtime's thread, and the choice between NVML and
//!   simulation.
//! * [`nvml`]: [`NvmlBackend`], the NVIDIA driver through nvml-wrapper.
//! * [`sim`]: [`SimBackend`], GPUs from the topology, in memory.
//! * [`vram`]: [`VramOptimizer`], the pure state machine the core loop
//!   ticks, its replay harness and the LRU and Ollama baselines.
//! * [`metrics`]: DCGM-named gauges and `pinwheel_vram_*` counters as
//!   prometheus-client metrics.
//!
//! Wiring into the daemon (a sketch of what the lead's core loop does):
//! `open_backend(topology.gpus(), None)` at boot, `GpuPoller::spawn` on
//! the control runtime, then each core-loop tick drains the poller's
//! receiver into `VramOptimizer::sample`/`gpu_lost`, feeds `use` requests
//! and releases, calls `VramOptimizer::tick` and carries out the
//! decisions. Nothing here blocks the core loop.
//!
//! * [`sched`]: [`sched::GpuScheduler`], the cross-host placement state
//!   machine the cluster link feeds.

pub mod backend;
pub mod metrics;
pub mod nvml;
pub mod sched;
pub mod sim;
pub mod vram;

pub use backend::{
    GpuBackend, GpuError, GpuEvent, GpuIndex, GpuInfo, GpuPoller, GpuSample, PollStats, ProcessUse,
    open_backend,
};
pub use nvml::NvmlBackend;
pub use sim::SimBackend;
pub use vram::VramOptimizer;
