//! What a diff, apply or revert did, knob by knob.
//!
//! Every knob a profile names gets one row: changed, unchanged, skipped
//! with a reason, or failed with the error. Rendering is plain text, one
//! row a line with aligned columns, so it reads in a terminal and greps in
//! a log.

use std::fmt;

/// What produced a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// Shows current -> target; writes nothing.
    Diff,
    /// Writes targets.
    Apply,
    /// Writes originals back from the journal.
    Revert,
}

impl Verb {
    /// The command word.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Diff => "diff",
            Verb::Apply => "apply",
            Verb::Revert => "revert",
        }
    }

    fn changed(self) -> &'static str {
        match self {
            Verb::Diff => "would change",
            Verb::Apply => "applied",
            Verb::Revert => "restored",
        }
    }
}

/// Why a knob was left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// Only root may write it.
    NotRoot,
    /// The file or its filesystem is read-only.
    ReadOnly,
    /// This host has no such knob (VMs have no cpufreq).
    Missing {
        /// A sibling with a close name, when there is one.
        hint: Option<String>,
    },
    /// `[isolation]` needs the data-plane CPUs and none were given.
    NoDataPlane,
    /// Every online CPU is data plane: nowhere to move work to.
    NoHousekeeping,
    /// The kernel keeps this interrupt's affinity (managed or per-CPU).
    KernelManaged,
    /// The PM QoS hold lasts only while a process keeps the file open.
    NotHeld,
    /// The PM QoS path is not the character device.
    NotDevice,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::NotRoot => f.write_str("not root"),
            SkipReason::ReadOnly => f.write_str("read-only"),
            SkipReason::Missing { hint: None } => f.write_str("knob missing on this host"),
            SkipReason::Missing { hint: Some(hint) } => {
                write!(
                    f,
                    "knob missing on this host (a sibling is named {hint:?}; a typo?)"
                )
            }
            SkipReason::NoDataPlane => f.write_str(
                "no data-plane CPUs given (pass --data-plane, or set [roles] in the topology)",
            ),
            SkipReason::NoHousekeeping => {
                f.write_str("every online CPU is data plane; no CPU is left to move work to")
            }
            SkipReason::KernelManaged => {
                f.write_str("the kernel keeps this interrupt's affinity (managed or per-CPU)")
            }
            SkipReason::NotHeld => f.write_str(
                "held only while a process keeps it open; `pinwheel run` holds it while it runs",
            ),
            SkipReason::NotDevice => f.write_str("not a character device"),
        }
    }
}

/// What happened to one knob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Written (for a diff: would be).
    Changed,
    /// Already had the value.
    Unchanged,
    /// Left alone, and why.
    Skipped(SkipReason),
    /// The write failed, or the knob reads back something else.
    Failed(String),
}

/// One knob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The knob (a sysctl name or a path).
    pub name: String,
    /// Its value before, as shown (`None`: absent or unreadable).
    pub current: Option<String>,
    /// The value wanted (for a revert: the original).
    pub target: String,
    /// What happened.
    pub outcome: Outcome,
    /// Where the profile sets it (`file.toml:7`); empty for a revert.
    pub from: String,
}

/// The rows of one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// What made it.
    pub verb: Verb,
    /// What it is about (the profile, or the journal).
    pub title: String,
    /// One per knob, in order.
    pub rows: Vec<Row>,
    /// Lines printed after the rows (the kernel command line).
    pub notes: Vec<String>,
}

impl Report {
    /// An empty report.
    pub fn new(verb: Verb, title: String) -> Self {
        Self {
            verb,
            title,
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Rows changed.
    pub fn changed(&self) -> usize {
        self.count(|o| *o == Outcome::Changed)
    }

    /// Rows already right.
    pub fn unchanged(&self) -> usize {
        self.count(|o| *o == Outcome::Unchanged)
    }

    /// Rows skipped.
    pub fn skipped(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Skipped(_)))
    }

    /// Rows failed.
    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Failed(_)))
    }

    fn count(&self, pick: impl Fn(&Outcome) -> bool) -> usize {
        self.rows.iter().filter(|row| pick(&row.outcome)).count()
    }

    /// The outcome as words (`applied`, `skipped: not root`, ...).
    pub fn result_of(&self, row: &Row) -> String {
        match &row.outcome {
            Outcome::Changed => self.verb.changed().to_owned(),
            Outcome::Unchanged => "unchanged".to_owned(),
            Outcome::Skipped(reason) => format!("skipped: {reason}"),
            Outcome::Failed(error) => format!("FAILED: {error}"),
        }
    }

    /// The one-line summary.
    pub fn summary(&self) -> String {
        format!(
            "{} {}, unchanged {}, skipped {}, failed {}",
            self.verb.changed(),
            self.changed(),
            self.unchanged(),
            self.skipped(),
            self.failed()
        )
    }

    /// The report as text: title, a table, the summary, the notes.
    pub fn to_text(&self) -> String {
        let values: Vec<String> = self
            .rows
            .iter()
            .map(|row| {
                let current = row.current.as_deref().unwrap_or("-");
                format!("{current} -> {}", row.target)
            })
            .collect();
        let name_w = self
            .rows
            .iter()
            .map(|r| r.name.len())
            .chain([7])
            .max()
            .unwrap_or(7);
        let value_w = values
            .iter()
            .map(String::len)
            .chain([17])
            .max()
            .unwrap_or(17);
        let mut text = format!("pinwheel tune {}: {}\n", self.verb.as_str(), self.title);
        text.push_str(&format!(
            "  {:name_w$}  {:value_w$}  result\n",
            "setting", "current -> target"
        ));
        for (row, value) in self.rows.iter().zip(&values) {
            let from = if row.from.is_empty() {
                String::new()
            } else {
                format!("  [{}]", row.from)
            };
            let line = format!(
                "  {:name_w$}  {value:value_w$}  {}{from}",
                row.name,
                self.result_of(row)
            );
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text.push_str(&self.summary());
        text.push('\n');
        for note in &self.notes {
            text.push_str(&format!("note: {note}\n"));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, outcome: Outcome) -> Row {
        Row {
            name: name.to_owned(),
            current: Some("60".to_owned()),
            target: "10".to_owned(),
            outcome,
            from: "p.toml:3".to_owned(),
        }
    }

    #[test]
    fn the_text_lists_each_knob_with_its_result_and_counts_them() {
        let mut sut = Report::new(Verb::Apply, "p.toml".to_owned());
        sut.rows.push(row("vm.swappiness", Outcome::Changed));
        sut.rows.push(row(
            "kernel.nmi_watchdog",
            Outcome::Skipped(SkipReason::ReadOnly),
        ));
        sut.rows
            .push(row("vm.x", Outcome::Failed("EINVAL".to_owned())));
        let text = sut.to_text();
        assert!(
            text.contains("vm.swappiness        60 -> 10           applied  [p.toml:3]"),
            "{text}"
        );
        assert!(text.contains("skipped: read-only"), "{text}");
        assert!(text.contains("FAILED: EINVAL"), "{text}");
        assert!(
            text.contains("applied 1, unchanged 0, skipped 1, failed 1"),
            "{text}"
        );
    }
}
