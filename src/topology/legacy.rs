//! The topology's `[legacy]` section, validated: where the legacy ZeroMQ
//! gateway binds the seed's ports, and its bounds. `pinwheel run
//! --legacy-bind ADDR` gives the section (with its defaults) or replaces
//! its address.

use std::net::IpAddr;
use std::time::Duration;

use super::TopologyError;
use super::validate::invalid;
use crate::config::SourceFile;
use crate::config::topology_file::LegacySection;

/// The largest request the gateway takes by default: 1 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1 << 20;
/// The largest `max_message_bytes`: 64 MiB.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// The smallest `max_message_bytes`.
pub const MIN_MESSAGE_BYTES: usize = 1024;
/// A legacy request's deadline by default: the seed's ZMQ_REQUEST_TIMEOUT.
pub const DEFAULT_LEGACY_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest `timeout_ms`.
pub const MAX_LEGACY_TIMEOUT: Duration = Duration::from_secs(600);

/// The gateway's settings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LegacyEdge {
    /// The address its ports are bound on.
    pub bind: IpAddr,
    /// Largest request accepted, bytes.
    pub max_message_bytes: usize,
    /// Deadline of each legacy request (and of a call to a `zmq` agent
    /// whose caller gave none).
    pub timeout: Duration,
}

impl LegacyEdge {
    /// The defaults, bound on `bind`.
    pub fn on(bind: IpAddr) -> LegacyEdge {
        LegacyEdge {
            bind,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            timeout: DEFAULT_LEGACY_TIMEOUT,
        }
    }
}

/// Validates `[legacy]`.
pub(super) fn legacy(raw: &LegacySection, file: &SourceFile) -> Result<LegacyEdge, TopologyError> {
    let bind = raw.bind.get_ref().parse::<IpAddr>().map_err(|_| {
        invalid(
            file,
            raw.bind.span(),
            format!(
                "bind {:?} is not an IP address; write e.g. \"127.0.0.1\" (the ports come from the manifests' legacy_rep and legacy_pub)",
                raw.bind.get_ref()
            ),
        )
    })?;
    let mut edge = LegacyEdge::on(bind);
    if let Some(max) = &raw.max_message_bytes {
        let value = usize::try_from(*max.get_ref()).unwrap_or(usize::MAX);
        if !(MIN_MESSAGE_BYTES..=MAX_MESSAGE_BYTES).contains(&value) {
            return Err(invalid(
                file,
                max.span(),
                format!(
                    "max_message_bytes must be {MIN_MESSAGE_BYTES} to {MAX_MESSAGE_BYTES}, got {}",
                    max.get_ref()
                ),
            ));
        }
        edge.max_message_bytes = value;
    }
    if let Some(timeout) = &raw.timeout_ms {
        let value = Duration::from_millis(*timeout.get_ref());
        if value.is_zero() || value > MAX_LEGACY_TIMEOUT {
            return Err(invalid(
                file,
                timeout.span(),
                format!(
                    "timeout_ms must be 1 to {}, got {}",
                    MAX_LEGACY_TIMEOUT.as_millis(),
                    timeout.get_ref()
                ),
            ));
        }
        edge.timeout = value;
    }
    Ok(edge)
}
