//! How every bench prints JSON (`pinwheel bench ... --json`).
//!
//! Each bench has one serde struct for its output (no ad-hoc JSON values),
//! and every measured case in it is a [`LatencySummary`] in nanoseconds —
//! `{"count", "p50", "p90", "p99", "p999", "p9999", "max"}` — under a key
//! that names the case and ends in `_ns` (`rtt_ns`, `call_far_rtt_ns`,
//! `executor_ns`, `e2e_ns`). Counts beside a case are plain numbers named
//! for what they count; the load generator's are the run report's
//! [`crate::daemon::report::RequestsReport`], flattened (`offered`, `sent`,
//! `not_sent`, `completed`, `failed`, `timed_out`, `lost`). A bench
//! added later (`bench agent`) builds its struct from the same two types
//! and prints it with [`render_json`].

use serde::Serialize;

pub use crate::latency::LatencySummary;

/// A bench's JSON: pretty, one trailing newline.
pub fn render_json<T: Serialize>(report: &T) -> String {
    let mut text = serde_json::to_string_pretty(report).expect("bench reports always serialize");
    text.push('\n');
    text
}
