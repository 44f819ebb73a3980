//! `diff`, `apply` and `revert`: a profile's steps carried out on a host,
//! each knob ending as one report row.
//!
//! Apply, per knob: read the current bytes; if the knob already has the
//! target, leave it; if it cannot be written here, skip it with the reason;
//! otherwise record the original in the journal (fsynced), write the
//! target, and read it back. Knobs go one at a time in profile order, so a
//! crash leaves a prefix of the profile applied and journaled.
//!
//! Apply starts by reverting whatever an earlier run left in the journal
//! (a crash, or an earlier `apply`), so the host ends up as "originals
//! plus this profile" and the journal holds true originals. A journal
//! error stops apply at once: no knob is ever written unjournaled.
//!
//! Replay writes only kernel knobs: a record naming any other path
//! (`journal::knob_problem`) fails with the reason, is not written, and
//! stays in the journal for the operator to remove.

use std::path::Path;

use super::TuningError;
use super::journal::{self, Journal, Lock, Record, journal_path};
use super::knob::{self, DmaHold};
use super::profile::Profile;
use super::report::{Outcome, Report, Row, SkipReason, Verb};
use super::setting::{Action, Compare, Host, Step, expand};

/// The result of [`apply`]: the reports, and what must live as long as the
/// tuning does.
#[derive(Debug)]
pub struct Applied {
    /// What reverting an earlier run's leftovers did, if there were any.
    pub leftovers: Option<Report>,
    /// What applying did.
    pub report: Report,
    /// The tuning lock (`None` only when not root and `/run` is closed).
    pub(super) lock: Option<Lock>,
    /// The PM QoS hold, when one was asked for and taken.
    pub(super) hold: Option<DmaHold>,
}

/// Shows each knob's current value and what the profile would change.
/// Writes nothing.
pub fn diff(profile: &Profile, host: &Host) -> Result<Report, TuningError> {
    let expanded = expand(profile.entries(), host);
    let mut report = Report::new(Verb::Diff, title(profile));
    for step in &expanded.steps {
        let (current, outcome) = match &step.action {
            Action::Skip { reason, .. } => (None, Outcome::Skipped(reason.clone())),
            Action::Hold { us } => diff_hold(host, &step.path, *us),
            Action::Write {
                target, compare, ..
            } => diff_write(host, step, target, *compare),
        };
        report.rows.push(row(step, current, outcome));
    }
    report.notes = expanded.suggestions;
    let pending = journal::read(&host.root)?;
    if !pending.is_empty() {
        report.notes.push(format!(
            "{} holds the originals of {} knobs from an earlier apply; `pinwheel tune revert` restores them, and `apply` does first",
            journal_path(&host.root).display(),
            pending.len()
        ));
    }
    Ok(report)
}

fn diff_hold(host: &Host, logical: &str, us: u32) -> (Option<String>, Outcome) {
    match dma_state(host, logical) {
        Ok(current) => {
            let outcome = if current == Some(i64::from(us)) {
                Outcome::Unchanged
            } else {
                Outcome::Changed
            };
            (current.map(|v| format!("{v} us")), outcome)
        }
        Err(outcome) => (None, outcome),
    }
}

fn diff_write(
    host: &Host,
    step: &Step,
    target: &str,
    compare: Compare,
) -> (Option<String>, Outcome) {
    let path = host.path(&step.path);
    match knob::read(&path) {
        Err(err) => (None, failure(&err, host, &step.path)),
        Ok(bytes) => {
            let outcome = if knob::has(&bytes, target, compare) {
                Outcome::Unchanged
            } else {
                knob::unwritable(&path).map_or(Outcome::Changed, Outcome::Skipped)
            };
            (Some(knob::shown(&bytes)), outcome)
        }
    }
}

/// Applies `profile`; with `hold`, also takes the PM QoS hold, which lasts
/// as long as the returned [`Applied`].
pub fn apply(profile: &Profile, host: &Host, hold: bool) -> Result<Applied, TuningError> {
    let lock = match Lock::take(&host.root) {
        Ok(lock) => Some(lock),
        // Not root on a live host: /run is closed, and so is every knob;
        // each one is reported as skipped below.
        Err(TuningError::Journal { source, .. })
            if !knob::is_root() && source.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            None
        }
        Err(err) => return Err(err),
    };
    let leftovers = match &lock {
        Some(lock) if journal_path(&host.root).exists() => Some(replay(
            &host.root,
            "leftovers of an earlier run".to_owned(),
            lock,
        )?),
        _ => None,
    };
    let mut journal = match &lock {
        Some(_) => Some(Journal::new(&host.root, &journal::read(&host.root)?)),
        None => None,
    };
    let expanded = expand(profile.entries(), host);
    let mut report = Report::new(Verb::Apply, title(profile));
    let mut dma = None;
    for step in &expanded.steps {
        let (current, outcome) = match &step.action {
            Action::Skip { reason, .. } => (None, Outcome::Skipped(reason.clone())),
            Action::Hold { us } => take_hold(host, &step.path, *us, hold, &mut dma),
            Action::Write {
                target,
                compare,
                refusal_skips,
            } => {
                let want = Want {
                    target,
                    compare: *compare,
                    refusal_skips: *refusal_skips,
                };
                apply_write(host, step, &want, journal.as_mut())?
            }
        };
        report.rows.push(row(step, current, outcome));
    }
    report.notes = expanded.suggestions;
    Ok(Applied {
        leftovers,
        report,
        lock,
        hold: dma,
    })
}

struct Want<'a> {
    target: &'a str,
    compare: Compare,
    refusal_skips: bool,
}

fn apply_write(
    host: &Host,
    step: &Step,
    want: &Want<'_>,
    journal: Option<&mut Journal>,
) -> Result<(Option<String>, Outcome), TuningError> {
    let path = host.path(&step.path);
    let bytes = match knob::read(&path) {
        Ok(bytes) => bytes,
        Err(err) => return Ok((None, failure(&err, host, &step.path))),
    };
    let current = Some(knob::shown(&bytes));
    if knob::has(&bytes, want.target, want.compare) {
        return Ok((current, Outcome::Unchanged));
    }
    if let Some(reason) = knob::unwritable(&path) {
        return Ok((current, Outcome::Skipped(reason)));
    }
    let Some(journal) = journal else {
        return Ok((current, Outcome::Skipped(SkipReason::NotRoot)));
    };
    journal.record(&step.path, &bytes)?;
    let outcome = match knob::write(&path, format!("{}\n", want.target).as_bytes()) {
        Err(err) if want.refusal_skips && knob::is_refusal(&err) => {
            Outcome::Skipped(SkipReason::KernelManaged)
        }
        Err(err) => failure(&err, host, &step.path),
        Ok(()) => match knob::read(&path) {
            Ok(now) if knob::has(&now, want.target, want.compare) => Outcome::Changed,
            Ok(now) => Outcome::Failed(format!("the kernel kept {:?}", knob::shown(&now))),
            Err(err) => Outcome::Failed(format!("cannot read it back: {err}")),
        },
    };
    Ok((current, outcome))
}

/// The PM QoS device's current bound, or why it cannot be used.
fn dma_state(host: &Host, logical: &str) -> Result<Option<i64>, Outcome> {
    let path = host.path(logical);
    match knob::is_device(&path) {
        Ok(true) => knob::read_dma(&path)
            .map(|us| Some(i64::from(us)))
            .map_err(|err| failure(&err, host, logical)),
        Ok(false) => Err(Outcome::Skipped(SkipReason::NotDevice)),
        Err(err) => Err(failure(&err, host, logical)),
    }
}

fn take_hold(
    host: &Host,
    logical: &str,
    us: u32,
    hold: bool,
    dma: &mut Option<DmaHold>,
) -> (Option<String>, Outcome) {
    let current = match dma_state(host, logical) {
        Ok(current) => current.map(|v| format!("{v} us")),
        Err(outcome) => return (None, outcome),
    };
    if !hold {
        return (current, Outcome::Skipped(SkipReason::NotHeld));
    }
    match DmaHold::open(&host.path(logical), us) {
        Ok(taken) => {
            *dma = Some(taken);
            (current, Outcome::Changed)
        }
        Err(err) => (current, failure(&err, host, logical)),
    }
}

/// Restores every knob in the journal under `root`; takes the tuning lock.
pub fn revert(root: &Path) -> Result<Report, TuningError> {
    let path = journal_path(root);
    if !path.exists() {
        let mut report = Report::new(Verb::Revert, format!("journal {}", path.display()));
        report
            .notes
            .push("nothing to revert: there is no journal".to_owned());
        return Ok(report);
    }
    let lock = Lock::take(root)?;
    replay(root, format!("journal {}", path.display()), &lock)
}

/// Restores every knob in the journal, newest first, and keeps in the
/// journal only what could not be restored. `_lock` proves the caller
/// holds the tuning lock.
pub(super) fn replay(root: &Path, title: String, _lock: &Lock) -> Result<Report, TuningError> {
    let records = journal::read(root)?;
    let mut report = Report::new(Verb::Revert, title);
    let mut keep = Vec::new();
    let mut results: Vec<(&Record, Option<String>, Outcome)> = records
        .iter()
        .rev()
        .map(|record| {
            let (current, outcome) = restore(root, record);
            (record, current, outcome)
        })
        .collect();
    // A knob may refuse its original until a knob restored after it is
    // back (intel_pstate fixes the energy preference while the governor is
    // `performance`), so failures get a second try once the rest are done.
    for (record, _, outcome) in &mut results {
        if matches!(outcome, Outcome::Failed(_)) {
            *outcome = match restore(root, record).1 {
                // Back, whoever put it back: the first try may have.
                Outcome::Unchanged => Outcome::Changed,
                other => other,
            };
        }
    }
    for (record, current, outcome) in results {
        let gone = matches!(outcome, Outcome::Skipped(SkipReason::Missing { .. }));
        if !gone && !matches!(outcome, Outcome::Changed | Outcome::Unchanged) {
            keep.push(record.clone());
        }
        report.rows.push(Row {
            name: record.path.clone(),
            current,
            target: knob::shown(&record.original),
            outcome,
            from: String::new(),
        });
    }
    keep.reverse();
    journal::rewrite(root, &keep)?;
    Ok(report)
}

fn restore(root: &Path, record: &Record) -> (Option<String>, Outcome) {
    if let Some(problem) = journal::knob_problem(&record.path) {
        let why = format!(
            "refused: {problem}, so pinwheel never wrote it; remove its line from {}",
            journal_path(root).display()
        );
        return (None, Outcome::Failed(why));
    }
    let path = knob::resolve(root, &record.path);
    let bytes = match knob::read(&path) {
        Ok(bytes) => bytes,
        Err(err) => return (None, failure_at(&err, root, &record.path)),
    };
    let current = Some(knob::shown(&bytes));
    if bytes == record.original {
        return (current, Outcome::Unchanged);
    }
    if let Some(reason) = knob::unwritable(&path) {
        return (current, Outcome::Skipped(reason));
    }
    let outcome = match knob::restore(&path, &record.original) {
        Err(err) => failure_at(&err, root, &record.path),
        Ok(()) => match knob::read(&path) {
            Ok(now) if knob::shown(&now) == knob::shown(&record.original) => Outcome::Changed,
            Ok(now) => Outcome::Failed(format!("the kernel kept {:?}", knob::shown(&now))),
            Err(err) => Outcome::Failed(format!("cannot read it back: {err}")),
        },
    };
    (current, outcome)
}

fn failure(err: &std::io::Error, host: &Host, logical: &str) -> Outcome {
    failure_at(err, &host.root, logical)
}

fn failure_at(err: &std::io::Error, root: &Path, logical: &str) -> Outcome {
    knob::skip_for(err, root, logical)
        .map_or_else(|| Outcome::Failed(err.to_string()), Outcome::Skipped)
}

fn row(step: &Step, current: Option<String>, outcome: Outcome) -> Row {
    let target = match &step.action {
        Action::Write { target, .. } => target.clone(),
        Action::Hold { us } => format!("{us} us"),
        Action::Skip { wanted, .. } => wanted.clone(),
    };
    Row {
        name: step.name.clone(),
        current,
        target,
        outcome,
        from: step.from.clone(),
    }
}

fn title(profile: &Profile) -> String {
    let files = profile.files();
    let mut title = files
        .first()
        .map(|f| f.display().to_string())
        .unwrap_or_default();
    if files.len() > 1 {
        let included: Vec<String> = files[1..].iter().map(|f| f.display().to_string()).collect();
        title.push_str(&format!(" (includes {})", included.join(", ")));
    }
    if let Some(description) = profile.description() {
        title.push_str(&format!(": {description}"));
    }
    title
}
