//! pinwheel: a thread-per-core root daemon for hosts that run a mesh of AI
//! agents (speech-to-text, LLMs, TTS, vision, memory, monitoring).
//!
//! The crate is a library with a thin binary. The ring and the message
//! format live below it in `pinwheel-ipc`, which agent processes link too.
//! Modules depend downward only: `config`, `topology`, `latency` <- `plan`
//! <- `runtime` <- `agents`, `process`, `gpu`, `cluster`, `observe`,
//! `tuning` <- `error` <- `daemon` <- `bench` <- `cli`
//! (`tests/crate_layering.rs` checks it). See README.md for the
//! architecture and each module's `//!` doc for its design.

pub mod agents;
pub mod bench;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod error;
pub mod gateway;
pub mod gpu;
pub mod latency;
pub mod observe;
pub mod plan;
pub mod process;
pub mod runtime;
#[cfg(feature = "test-support")]
pub mod test_support;
pub mod topology;
pub mod tuning;
