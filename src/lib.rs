//! pinwheel: a thread-per-core root daemon for hosts that run a mesh of AI
//! agents (speech-to-text, LLMs, TTS, vision, memory, monitoring).
//!
//! The crate is a library with a thin binary. Modules depend downward only:
//! `config`, `topology`, `wire` <- `plan`, `ring` <- `runtime` <- `agents`
//! <- `daemon` <- `cli`. See README.md for the architecture and each
//! module's `//!` doc for its design.

// Under `--cfg loom` only the ring's models are built: the modules that
// drive real rings and processes are left out.
#[cfg(not(loom))]
pub mod agents;
#[cfg(not(loom))]
pub mod bench;
#[cfg(not(loom))]
pub mod cli;
pub mod config;
#[cfg(not(loom))]
pub mod daemon;
#[cfg(not(loom))]
pub mod error;
#[cfg(not(loom))]
pub mod gpu;
pub mod plan;
pub mod ring;
#[cfg(not(loom))]
pub mod runtime;
#[cfg(feature = "test-support")]
pub mod test_support;
pub mod topology;
pub mod wire;
