//! Bounds on what a manifest can make long, and on VRAM sizes wherever
//! they come from (a manifest, an admin request, a peer).
//!
//! Every list is sized at boot from these files, and the rings, tables and
//! frames built from them are fixed in size, so a list without a bound is a
//! way to make the daemon allocate without limit. Each bound is a named
//! constant, far above what the seed's mesh needs (79 agents, at most 4
//! calls, 2 ports and 2 models an agent); past one, validation names the
//! first entry too many with its file and line.
//!
//! Lists a peer sends have their own bounds where the frames are decoded
//! (`cluster::proto`, `cluster::link`).

use std::ops::Range;

use toml::Spanned;

use super::agents_file::AgentEntry;
use super::{ConfigError, SourceFile};

/// The most agents all loaded manifests may define together.
pub const MAX_AGENTS: usize = 1024;
/// The most `calls` one agent may make.
pub const MAX_CALLS: usize = 64;
/// The most topics one agent may list in `publishes`, and in `subscribes`.
pub const MAX_TOPICS: usize = 64;
/// The longest topic name, bytes.
pub const MAX_TOPIC_BYTES: usize = 128;
/// The most `models` one agent may need.
pub const MAX_MODELS: usize = 16;
/// The most legacy `ports` one agent may list.
pub const MAX_PORTS: usize = 16;
/// The most VRAM one model, one load or one GPU may have, MiB (16 TiB).
/// Anything larger is a typo or a hostile peer; with every value below it,
/// no sum over the lists above (or a peer's frame) can overflow a `u64`.
pub const MAX_VRAM_MIB: u64 = 1 << 24;

/// Refuses a list longer than `max`, pointing at its first entry past the
/// bound. `spans` are the entries' spans in `file`.
pub fn check_len(
    file: &SourceFile,
    spans: &[Range<usize>],
    max: usize,
    what: &str,
) -> Result<(), ConfigError> {
    match spans.get(max) {
        None => Ok(()),
        Some(span) => Err(ConfigError::Invalid {
            at: file.locate(span.clone()),
            message: format!(
                "{what}: {} entries; at most {max} are accepted",
                spans.len()
            ),
        }),
    }
}

/// Refuses the first agent of `entries` past [`MAX_AGENTS`], counting
/// the `before` agents of earlier manifests.
pub(super) fn check_agent_count(
    file: &SourceFile,
    entries: &[Spanned<AgentEntry>],
    before: usize,
) -> Result<(), ConfigError> {
    match entries.get(MAX_AGENTS.saturating_sub(before)) {
        None => Ok(()),
        Some(extra) => Err(ConfigError::Invalid {
            at: file.locate(extra.span()),
            message: format!(
                "agent {} is one too many: the manifests may define at most {MAX_AGENTS} agents",
                MAX_AGENTS + 1
            ),
        }),
    }
}

/// The bounds on one `[[agent]]`'s lists; the topic and model entries
/// themselves are checked where they are validated.
pub(super) fn check_agent_lists(
    raw: &AgentEntry,
    file: &SourceFile,
    name: &str,
) -> Result<(), ConfigError> {
    let spans = |list: &[Spanned<String>]| list.iter().map(Spanned::span).collect::<Vec<_>>();
    let lists = [
        (spans(&raw.calls), MAX_CALLS, "calls"),
        (spans(&raw.publishes), MAX_TOPICS, "publishes"),
        (spans(&raw.subscribes), MAX_TOPICS, "subscribes"),
        (
            raw.models.iter().map(Spanned::span).collect(),
            MAX_MODELS,
            "models",
        ),
    ];
    for (spans, max, what) in lists {
        check_len(file, &spans, max, &format!("agent {name}: {what}"))?;
    }
    if raw.ports.len() > MAX_PORTS {
        return Err(ConfigError::Invalid {
            at: file.locate(raw.name.span()),
            message: format!(
                "agent {name}: ports lists {} ports; at most {MAX_PORTS} are accepted",
                raw.ports.len()
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn a_list_past_its_bound_points_at_the_first_entry_too_many() {
        let file = SourceFile::from_text(Path::new("a.toml"), "a\nb\nc\n");
        let spans = [0..1, 2..3, 4..5];

        let err = check_len(&file, &spans, 2, "agent A calls").unwrap_err();

        assert_eq!(
            err.to_string(),
            "a.toml:3:1: agent A calls: 3 entries; at most 2 are accepted"
        );
        check_len(&file, &spans, 3, "agent A calls").unwrap();
    }
}
