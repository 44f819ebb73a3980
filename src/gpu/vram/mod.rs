//! The VRAM optimizer: which model is resident on which GPU, decided by a
//! pure state machine the core loop ticks.
//!
//! [`VramOptimizer`] takes inputs (GPU samples, `use` requests, releases,
//! load completions, pins, lost GPUs), each with the time passed in, and
//! on [`VramOptimizer::tick`] returns [`Decision`]s: Load, Preload, Evict,
//! Admit, Queue and Deny. It does no I/O and reads no clock, so a trace
//! replays the same way every time ([`replay`]).
//!
//! # Policy (the topology's `[vram]`, `topology::VramPolicy`)
//!
//! * **Budget.** Each GPU may be filled to `min(total x budget_fraction,
//!   total - reserve_mib)`. Free VRAM is `min(reported free, total -
//!   predicted - in flight)`: the driver's figure lags our own loads and
//!   evictions, our accounting misses other programs, so the smaller wins.
//!   When a sample shows the GPU full, what we free is not counted until
//!   the next sample: another program may be waiting to take it.
//! * **Hysteresis.** Demand loads fill up to `high_water` (a share of the
//!   budget; 1.0 by default). Above it (another program took more, or a
//!   measurement corrected a size) the GPU is under pressure: the cheapest
//!   idle models go until it is back under, then models nobody is
//!   expected to use go down to `low_water`, so a GPU that keeps bumping
//!   into its mark frees a margin once. Preloads fill only up to
//!   `low_water`, never evict, and wait until pressure has cleared; a
//!   confident one (chance 0.8 or more) that is due now stands for the
//!   demand load it anticipates and may fill up to `high_water`, in the
//!   hysteresis band too (it still evicts nothing).
//! * **Never evicted:** pinned models, busy models (a use in progress or
//!   waiting for them) and, unless nothing else can bring the GPU back
//!   under its budget, models younger than `min_residency_ms`. No model
//!   loads again within `min_residency_ms` of its previous load, so
//!   nothing thrashes.
//! * **Priority classes:** pinned > realtime (STT, TTS) > interactive
//!   (LLM) > batch. Waiting uses are served in class order; a batch use
//!   never evicts a realtime model.
//! * **Eviction score.** Evicting a model costs `class weight x reload
//!   time x (0.05 + chance of reuse within 10 minutes)`, the chance coming
//!   from its use frequency cooled by its idle time, or from a prediction.
//!   To free `need` MiB the optimizer takes the cheapest set whose sizes
//!   add up to `need` (greedy by cost per MiB, pruned of members the rest
//!   can spare, against the cheapest single model that suffices).
//! * **Keep-alive** (off by default: pressure relief already hands VRAM
//!   back when another program takes it). When set, an idle model is
//!   unloaded after `keep_alive_ms` unless a use of it is predicted.
//! * **Best fit.** A load goes to the GPU it fits most snugly without
//!   eviction; failing that, to the GPU where making room costs least.
//! * **Prediction** (`predict.rs`): chains (whisper -> phi-3 -> xtts within
//!   seconds) and periodic use (a job every hour) from request history;
//!   predicted models are preloaded into idle VRAM. Models whose preloads
//!   go unused stop being preloaded.
//! * **Measured sizes.** A sample's per-process VRAM corrects the
//!   predicted size of the model that process holds, for this load and
//!   the next.
//!
//! # Contract with the executor
//!
//! Decisions are carried out in order. An `Evict` frees its VRAM before a
//! later `Load` starts. Each `Load`/`Preload` is answered with
//! [`VramOptimizer::loaded`] or [`VramOptimizer::load_failed`]; each
//! admitted use with [`VramOptimizer::release`].

mod evict;
mod model;
mod optimizer;
mod place;
mod predict;
mod query;
pub mod replay;

use std::fmt;

use serde::{Deserialize, Serialize};

use super::backend::GpuIndex;

pub use optimizer::{VramOptimizer, VramStats};

/// A model the optimizer knows, interned by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ModelId(pub u32);

/// One `use` request, numbered by the optimizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// How urgent a use is. Pinned models rank above all of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Background work (embeddings, learning); may wait.
    Batch,
    /// A person is waiting (LLM answers).
    Interactive,
    /// Audio in or out (STT, TTS); a gap is audible.
    Realtime,
}

impl Priority {
    /// The name used in traces and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Batch => "batch",
            Priority::Interactive => "interactive",
            Priority::Realtime => "realtime",
        }
    }
}

/// A request to run `model` for about `hold_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UseRequest {
    /// The model (from [`VramOptimizer::model`]).
    pub model: ModelId,
    /// Its VRAM as the requester estimates it, MiB.
    pub vram_mib: u64,
    /// Its class.
    pub priority: Priority,
    /// How long the use is expected to hold the model, milliseconds.
    pub hold_ms: u64,
}

/// Why a model is evicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EvictReason {
    /// To make room for a load.
    MakeRoom,
    /// The GPU went over its high-water mark.
    Pressure,
    /// Idle past the keep-alive with no use predicted.
    KeepAlive,
}

impl EvictReason {
    /// The name used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            EvictReason::MakeRoom => "make_room",
            EvictReason::Pressure => "pressure",
            EvictReason::KeepAlive => "keep_alive",
        }
    }
}

/// Why a use waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WaitReason {
    /// Its model is loading.
    Loading,
    /// No GPU has room yet (pinned, busy or young models hold it).
    NoRoom,
}

/// Why a use or a pin is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyReason {
    /// No live GPU could ever hold the model next to its pins.
    TooLarge {
        /// The model's VRAM, MiB.
        vram_mib: u64,
        /// The most any live GPU could give it, MiB.
        largest_mib: u64,
    },
    /// Every GPU is lost.
    NoGpu,
    /// The wait queue is full.
    QueueFull {
        /// Its length.
        queue_len: usize,
    },
    /// The model failed to load three times in a row.
    LoadFailed,
    /// Pinning it would over-commit every GPU.
    PinOverCommit {
        /// MiB already pinned on the GPU it would go to.
        pinned_mib: u64,
        /// The model's VRAM, MiB.
        vram_mib: u64,
    },
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DenyReason::TooLarge {
                vram_mib,
                largest_mib,
            } => write!(
                f,
                "needs {vram_mib} MiB; the most any GPU can give is {largest_mib} MiB"
            ),
            DenyReason::NoGpu => f.write_str("every GPU is lost"),
            DenyReason::QueueFull { queue_len } => {
                write!(f, "{queue_len} uses already wait; raise [vram] queue_len")
            }
            DenyReason::LoadFailed => f.write_str("it failed to load three times in a row"),
            DenyReason::PinOverCommit {
                pinned_mib,
                vram_mib,
            } => write!(
                f,
                "pinning {vram_mib} MiB next to {pinned_mib} MiB of pins would over-commit the GPU"
            ),
        }
    }
}

impl DenyReason {
    /// The name used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::TooLarge { .. } => "too_large",
            DenyReason::NoGpu => "no_gpu",
            DenyReason::QueueFull { .. } => "queue_full",
            DenyReason::LoadFailed => "load_failed",
            DenyReason::PinOverCommit { .. } => "pin_over_commit",
        }
    }
}

/// What the optimizer decided; the executor carries these out in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Load a model a use waits for.
    Load {
        /// The model.
        model: ModelId,
        /// Where.
        gpu: GpuIndex,
        /// Its predicted VRAM, MiB.
        vram_mib: u64,
    },
    /// Load a model that history predicts, into idle VRAM.
    Preload {
        /// The model.
        model: ModelId,
        /// Where.
        gpu: GpuIndex,
        /// Its predicted VRAM, MiB.
        vram_mib: u64,
    },
    /// Unload a model.
    Evict {
        /// The model.
        model: ModelId,
        /// Where it was.
        gpu: GpuIndex,
        /// Why.
        reason: EvictReason,
    },
    /// Run a use now: its model is resident.
    Admit {
        /// The use.
        request: RequestId,
        /// The model.
        model: ModelId,
        /// Where it is resident.
        gpu: GpuIndex,
    },
    /// The use waits (sent once per use).
    Queue {
        /// The use.
        request: RequestId,
        /// The model.
        model: ModelId,
        /// Why.
        reason: WaitReason,
    },
    /// Refused: a use (`request`) or a pin (`request` is `None`).
    Deny {
        /// The use, if it was one.
        request: Option<RequestId>,
        /// The model.
        model: ModelId,
        /// Why.
        reason: DenyReason,
    },
}

/// Errors of the VRAM optimizer and its replay.
#[derive(Debug, thiserror::Error)]
pub enum VramError {
    /// Pins that do not fit the GPUs the backend found.
    #[error(
        "pins on GPU {gpu} add up to {pinned_mib} MiB, over its budget of {budget_mib} MiB; unpin a model in [vram] or move it to another GPU"
    )]
    PinOverCommit {
        /// The GPU.
        gpu: GpuIndex,
        /// MiB pinned there.
        pinned_mib: u64,
        /// Its budget.
        budget_mib: u64,
    },
    /// A pin on a GPU the backend does not have.
    #[error("model {model} is pinned to GPU {gpu}, but there are {count} GPU(s)")]
    PinNoGpu {
        /// The model.
        model: String,
        /// The GPU.
        gpu: u32,
        /// How many GPUs there are.
        count: usize,
    },
    /// The trace file could not be read.
    #[error("cannot read trace {}: {source}", path.display())]
    TraceRead {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A bad trace line.
    #[error("{}:{line}: {message}", path.display())]
    Trace {
        /// The file.
        path: std::path::PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong and what to write instead.
        message: String,
    },
    /// Replay needs GPUs of known size.
    #[error("{}: {message}", path.display())]
    Gpus {
        /// The topology file.
        path: std::path::PathBuf,
        /// What is missing.
        message: String,
    },
}
