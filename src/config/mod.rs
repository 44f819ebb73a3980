//! Configuration files: raw serde structs and the agent manifests.
//!
//! Every file goes through one pipeline: read ([`SourceFile`]), parse into a
//! raw struct with `deny_unknown_fields` and spans, then validate into a type
//! with private fields. Code past the boundary sees only validated types.

mod source;
pub mod topology_file;

use std::path::PathBuf;

pub use source::{Location, SourceFile, suggest};

/// Errors from reading and parsing configuration files.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax error, unknown key or wrong type.
    #[error("{at}: {message}")]
    Parse {
        /// Where.
        at: Location,
        /// The parser's message.
        message: String,
    },
}

impl ConfigError {
    /// The place in a file this error points at, if any.
    pub fn location(&self) -> Option<&Location> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Parse { at, .. } => Some(at),
        }
    }
}
