//! Configuration files: raw serde structs and the agent manifests.
//!
//! Every file goes through one pipeline: read ([`SourceFile`], which a root
//! process opens only through [`trust`]'s ownership and mode checks), parse
//! into a raw struct with `deny_unknown_fields` and spans, then validate
//! into a type with private fields. Code past the boundary sees only
//! validated types. [`limits`] holds the bounds on every list a manifest
//! can make long.

pub mod agents;
pub mod agents_file;
mod calls;
pub mod legacy;
pub mod limits;
pub mod process;
pub mod replicas;
mod source;
pub mod topology_file;
pub mod trust;

use std::path::PathBuf;

pub use agents::{
    AgentIndex, AgentKind, AgentSet, AgentSpec, Behaviour, CallTarget, DEFAULT_WEIGHT, Hint,
    MAX_ROLE_BYTES, ModelNeed, Placement,
};
pub use agents_file::{Balance, ClassWish, NativeName, Priority, RestartMode};
pub use legacy::{LegacySpec, ZmqEndpoint};
pub use process::{Account, ProcessSpec};
pub use replicas::{MAX_REPLICAS, ReplicaSet};
pub use source::{Location, SourceFile, suggest};

/// Why a host, agent or cluster name is unusable, if it is. Names start
/// with a letter or digit and hold letters, digits, `_`, `-` and `.`, at
/// most 64 of them, so they fit NATS subjects, file names and URLs.
pub fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name.len() > 64 {
        Some("is longer than 64 characters")
    } else if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        Some("must start with a letter or digit")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        Some("may hold only letters, digits, '_', '-' and '.'")
    } else {
        None
    }
}

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
    /// A file a root process may not trust: others could change it.
    #[error("{}: {flaw}", path.display())]
    Untrusted {
        /// The file as named.
        path: PathBuf,
        /// What is wrong, where, and the command that fixes it.
        flaw: trust::Flaw,
    },
    /// A file past [`trust::MAX_CONFIG_BYTES`].
    #[error("{}: longer than {max_bytes} bytes; a config file is far smaller", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        max_bytes: u64,
    },
    /// TOML syntax error, unknown key or wrong type.
    #[error("{at}: {message}")]
    Parse {
        /// Where.
        at: Location,
        /// The parser's message.
        message: String,
    },
    /// The file's schema version is not one this pinwheel reads.
    #[error(
        "{at}: schema {found} is not supported; this pinwheel reads schema 1 (set `schema = 1`)"
    )]
    Schema {
        /// The `schema` value.
        at: Location,
        /// What the file says.
        found: i64,
    },
    /// A value that parsed but makes no sense.
    #[error("{at}: {message}")]
    Invalid {
        /// The value.
        at: Location,
        /// What is wrong and what to write instead.
        message: String,
    },
    /// Two agents with one name on one host.
    #[error(
        "{at}: agent {name} on host {host} is defined twice (first at {first}); rename or remove one"
    )]
    DuplicateAgent {
        /// The second definition.
        at: Location,
        /// The name.
        name: String,
        /// The host.
        host: String,
        /// The first definition.
        first: Location,
    },
    /// A call to an agent no loaded manifest defines.
    #[error("{at}: agent {agent} calls unknown agent {target:?}; {hint}")]
    UnknownCall {
        /// The call.
        at: Location,
        /// The caller.
        agent: String,
        /// The target as written.
        target: String,
        /// A likely fix.
        hint: Hint,
    },
    /// A call whose name fits agents on several hosts.
    #[error(
        "{at}: agent {agent} calls {target:?}, which runs on hosts {hosts}; write it as {target}@<host>"
    )]
    AmbiguousCall {
        /// The call.
        at: Location,
        /// The caller.
        agent: String,
        /// The target as written.
        target: String,
        /// Hosts that have an agent of that name.
        hosts: String,
    },
}

impl ConfigError {
    /// The place in a file this error points at, if any.
    pub fn location(&self) -> Option<&Location> {
        match self {
            ConfigError::Read { .. }
            | ConfigError::Untrusted { .. }
            | ConfigError::TooLarge { .. } => None,
            ConfigError::Parse { at, .. }
            | ConfigError::Schema { at, .. }
            | ConfigError::Invalid { at, .. }
            | ConfigError::DuplicateAgent { at, .. }
            | ConfigError::UnknownCall { at, .. }
            | ConfigError::AmbiguousCall { at, .. } => Some(at),
        }
    }
}
