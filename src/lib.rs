//! pinwheel: a thread-per-core root daemon for hosts that run a mesh of AI
//! agents (speech-to-text, LLMs, TTS, vision, memory, monitoring).
//!
//! The crate is a library with a thin binary. The ring and the message
//! format live below it in `pinwheel-ipc`, which agent processes link too.
//! Modules depend downward only: `config`, `topology` <- `plan` <-
//! `runtime` <- `agents`, `process` <- `daemon` <- `cli`. See README.md for the
//! architecture and each module's `//!` doc for its design.

pub mod agents;
pub mod bench;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod error;
pub mod gpu;
pub mod observe;
pub mod plan;
pub mod process;
pub mod runtime;
#[cfg(feature = "test-support")]
pub mod test_support;
pub mod topology;
pub mod tuning;
