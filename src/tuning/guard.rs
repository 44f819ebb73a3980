//! [`Tuning`]: the daemon's hold on a tuned host. Created at start (after
//! reverting what a crashed run left), reverted at exit: by
//! [`Tuning::finish`] on the normal path, by `Drop` on an early return.
//!
//! The guard keeps the tuning lock, so no `pinwheel tune` can interleave
//! with the daemon, and the PM QoS hold, which the kernel drops when the
//! process ends however it ends. A crash (or `panic = "abort"`) skips
//! `Drop`; the journal then brings the host back at the next start or at
//! `pinwheel tune revert`.

use std::path::{Path, PathBuf};

use tracing::{debug, error, info, warn};

use super::TuningError;
use super::apply::{apply, replay};
use super::journal::{Lock, journal_path};
use super::knob::{self, DmaHold};
use super::profile::Profile;
use super::report::{Outcome, Report};
use super::setting::Host;
use crate::topology::{CpuSet, LIVE_SYSFS};

/// A profile applied for as long as this value lives.
#[derive(Debug)]
pub struct Tuning {
    root: PathBuf,
    lock: Option<Lock>,
    hold: Option<DmaHold>,
    finished: bool,
}

impl Tuning {
    /// The daemon's tuning: `profile` (the topology's, if it names one)
    /// read and checked, then applied to the live host (or under
    /// `tuning_root`, a test tree) with the data-plane CPUs. Not root,
    /// `--unprivileged` or a fixture sysfs with the live host: one
    /// warning, and nothing applied. A bad profile is an error before
    /// anything is touched.
    pub fn for_daemon(
        profile: Option<&Path>,
        data_plane: &CpuSet,
        privileged: bool,
        sysfs_root: &Path,
        tuning_root: Option<&Path>,
    ) -> Result<Option<Self>, TuningError> {
        let Some(path) = profile else {
            return Ok(None);
        };
        let profile = Profile::load(path)?;
        let skip = if !privileged {
            Some("--unprivileged")
        } else if tuning_root.is_none() && sysfs_root != Path::new(LIVE_SYSFS) {
            Some("the CPUs come from a fixture sysfs, not this host")
        } else if !knob::is_root() {
            Some("not root")
        } else {
            None
        };
        if let Some(reason) = skip {
            warn!(profile = %path.display(), reason, "tuning profile not applied");
            return Ok(None);
        }
        let host = match tuning_root {
            Some(root) => Host {
                root: root.to_path_buf(),
                data_plane: Some(data_plane.clone()),
            },
            None => Host::live(Some(data_plane.clone())),
        };
        Self::start(&profile, &host).map(Some)
    }

    /// Reverts an earlier run's leftovers, applies `profile` and takes the
    /// PM QoS hold; logs both reports.
    pub fn start(profile: &Profile, host: &Host) -> Result<Self, TuningError> {
        let applied = apply(profile, host, true)?;
        if let Some(leftovers) = &applied.leftovers {
            log(leftovers);
        }
        log(&applied.report);
        Ok(Self {
            root: host.root.clone(),
            lock: applied.lock,
            hold: applied.hold,
            finished: false,
        })
    }

    /// Releases the PM QoS hold and restores every journaled knob; logs
    /// and returns the report.
    pub fn finish(mut self) -> Result<Report, TuningError> {
        self.revert()
    }

    fn revert(&mut self) -> Result<Report, TuningError> {
        self.finished = true;
        drop(self.hold.take());
        let title = format!("journal {}", journal_path(&self.root).display());
        let report = match &self.lock {
            Some(lock) => replay(&self.root, title, lock)?,
            None => Report::new(super::Verb::Revert, title),
        };
        log(&report);
        Ok(report)
    }
}

impl Drop for Tuning {
    fn drop(&mut self) {
        if !self.finished
            && let Err(err) = self.revert()
        {
            error!(%err, "tuning not reverted");
        }
    }
}

/// One line per knob that did not simply change, then the summary.
fn log(report: &Report) {
    let verb = report.verb.as_str();
    for row in &report.rows {
        let result = report.result_of(row);
        let current = row.current.as_deref().unwrap_or("-");
        match &row.outcome {
            Outcome::Failed(_) => {
                warn!(verb, knob = %row.name, current, target = %row.target, result, "tuning")
            }
            Outcome::Skipped(_) => info!(verb, knob = %row.name, result, "tuning"),
            Outcome::Changed | Outcome::Unchanged => {
                debug!(verb, knob = %row.name, current, target = %row.target, result, "tuning");
            }
        }
    }
    for note in &report.notes {
        info!(verb, note = %note, "tuning");
    }
    info!(
        verb,
        what = %report.title,
        changed = report.changed(),
        unchanged = report.unchanged(),
        skipped = report.skipped(),
        failed = report.failed(),
        "tuning done"
    );
}
