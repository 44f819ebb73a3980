//! GPUs: where models run. For now only the cross-host scheduler
//! ([`sched`]); the backends and the VRAM optimizer join it here.

pub mod sched;
