//! The twin: the core loop's side of anomaly detection
//! ([`crate::observe::anomaly`]). Once a second, with the live view, it
//! turns each agent's counts since the last refresh (messages handled,
//! failures, handler time) into an [`Interval`], feeds the [`Detector`]
//! (replicas of one agent are each other's siblings) and acts on what
//! changed:
//!
//! * the board's flags: an anomalous latency marks the replica `SLOW`
//!   (load-aware balancers pass it over while another is usable), an
//!   anomalous error rate `FAILING` (every balancer skips it);
//! * the `agent_anomaly` health reason, naming every anomalous agent and
//!   signal, raised while any is and cleared when none is;
//! * a log of the anomalies seen, for the run report.
//!
//! A replica the balancers pass over gets no requests, so its signals
//! would never move again. After [`PROBE_AFTER`] idle refreshes the twin
//! lifts the flag (the anomaly stays raised) so calls reach it; while the
//! probe's intervals look normal (latency under [`LATENCY_RATIO`] times
//! the baseline, errors under the baseline plus [`ERROR_FLOOR`]) the flag
//! stays off and the detector's level falls until the anomaly clears; an
//! interval that still looks bad puts the flag back.
//!
//! [`LATENCY_RATIO`]: crate::observe::anomaly::LATENCY_RATIO
//! [`ERROR_FLOOR`]: crate::observe::anomaly::ERROR_FLOOR

use std::fmt::Write as _;
use std::time::Instant;

use tracing::{info, warn};

use crate::latency::format_ns;
use crate::observe::anomaly::{Change, Detector, ERROR_FLOOR, Interval, LATENCY_RATIO, Signal};
use crate::observe::api::AnomalySeen;
use crate::observe::view::DaemonView;
use crate::runtime::board::AgentFlags;
use crate::runtime::stats::StatsSnapshot;
use pinwheel_ipc::wire::AgentId;

/// Idle refreshes of a flagged replica before the twin probes it.
pub const PROBE_AFTER: u32 = 3;
/// The health reason.
pub const REASON: &str = "agent_anomaly";

/// An agent's cumulative counts at a refresh.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    handled: u64,
    failures: u64,
    samples: u64,
    sum_ns: f64,
}

/// One signal's flag state.
#[derive(Debug, Clone, Copy, Default)]
struct Probe {
    idle: u32,
    probing: bool,
}

/// The core loop's anomaly detection.
#[derive(Debug)]
pub struct Twin {
    detector: Detector,
    last: Vec<Seen>,
    probes: Vec<[Probe; 2]>,
    changes: Vec<Change>,
    seen: Vec<AnomalySeen>,
    began: Instant,
}

impl Twin {
    /// The twin of the mesh `view` shows.
    pub fn new(view: &DaemonView) -> Self {
        let agents = view.routes.agent_count();
        let groups: Vec<Vec<usize>> = view
            .routes
            .services()
            .iter()
            .filter(|s| s.replicas.len() > 1)
            .map(|s| s.replicas.iter().map(|a| a.0 as usize).collect())
            .collect();
        Self {
            detector: Detector::new(agents, &groups),
            last: vec![Seen::default(); agents],
            probes: vec![[Probe::default(); 2]; agents],
            changes: Vec::new(),
            seen: Vec::new(),
            began: Instant::now(),
        }
    }

    /// Takes in the executors' statistics, judges, and acts.
    pub fn refresh(&mut self, view: &DaemonView, snapshots: &[StatsSnapshot]) {
        let intervals = self.intervals(snapshots);
        for (agent, &interval) in intervals.iter().enumerate() {
            self.detector.observe(agent, interval);
        }
        let now_ms = u64::try_from(self.began.elapsed().as_millis()).unwrap_or(u64::MAX);
        let mut changes = std::mem::take(&mut self.changes);
        changes.clear();
        self.detector.evaluate(now_ms, &mut changes);
        for change in &changes {
            self.log(view, change);
        }
        if !changes.is_empty() {
            view.set_anomalies(self.seen.clone());
        }
        self.changes = changes;
        for (agent, interval) in intervals.into_iter().enumerate() {
            self.flag(view, agent, Signal::Latency, interval);
            self.flag(view, agent, Signal::Errors, interval);
        }
        self.publish(view);
    }

    /// Whether `agent`'s `signal` is anomalous now.
    pub fn anomalous(&self, agent: usize, signal: Signal) -> bool {
        self.detector.anomalous(agent, signal)
    }

    fn intervals(&mut self, snapshots: &[StatsSnapshot]) -> Vec<Interval> {
        let mut now = self.last.clone();
        for snapshot in snapshots {
            for &(AgentId(id), c) in &snapshot.agents {
                if let Some(n) = now.get_mut(id as usize) {
                    (n.handled, n.failures) = (c.handled, c.failures);
                }
            }
            for (AgentId(id), histogram) in &snapshot.service {
                if let Some(n) = now.get_mut(*id as usize) {
                    n.samples = histogram.len();
                    n.sum_ns = histogram.mean() * histogram.len() as f64;
                }
            }
        }
        let intervals = now
            .iter()
            .zip(&self.last)
            .map(|(n, b)| {
                let samples = n.samples.saturating_sub(b.samples);
                let requests = n.handled.saturating_sub(b.handled);
                Interval {
                    requests: if samples == 0 {
                        0
                    } else {
                        requests.max(samples)
                    },
                    errors: n.failures.saturating_sub(b.failures),
                    mean_latency_ns: if samples == 0 {
                        0.0
                    } else {
                        (n.sum_ns - b.sum_ns).max(0.0) / samples as f64
                    },
                }
            })
            .collect();
        self.last = now;
        intervals
    }

    fn log(&mut self, view: &DaemonView, change: &Change) {
        let name = view.routes.name(AgentId(change.agent as u32)).to_owned();
        let at_s = change.at_ms as f64 / 1e3;
        if change.raised {
            warn!(
                agent = %name,
                signal = change.signal.as_str(),
                level = change.level,
                baseline = change.baseline,
                "agent anomaly raised"
            );
            self.seen.push(AnomalySeen {
                agent: name,
                signal: change.signal,
                raised_s: at_s,
                cleared_s: None,
                level: change.level,
                baseline: change.baseline,
            });
        } else {
            info!(agent = %name, signal = change.signal.as_str(), "agent anomaly cleared");
            if let Some(open) = self
                .seen
                .iter_mut()
                .rev()
                .find(|s| s.agent == name && s.signal == change.signal && s.cleared_s.is_none())
            {
                open.cleared_s = Some(at_s);
            }
        }
    }

    /// Sets or lifts `agent`'s flag for `signal`, probing an idle one.
    fn flag(&mut self, view: &DaemonView, agent: usize, signal: Signal, interval: Interval) {
        let (bit, i) = match signal {
            Signal::Latency => (AgentFlags::SLOW, 0),
            Signal::Errors => (AgentFlags::FAILING, 1),
        };
        let anomalous = self.detector.anomalous(agent, signal);
        let (_, baseline) = self.detector.level(agent, signal);
        let probe = &mut self.probes[agent][i];
        if !anomalous {
            *probe = Probe::default();
        } else if interval.requests == 0 {
            probe.idle += 1;
            probe.probing |= probe.idle >= PROBE_AFTER;
        } else {
            probe.idle = 0;
            let bad = match signal {
                Signal::Latency => interval.mean_latency_ns >= baseline * LATENCY_RATIO,
                Signal::Errors => {
                    interval.errors as f64 / interval.requests as f64 >= baseline + ERROR_FLOOR
                }
            };
            probe.probing = probe.probing && !bad;
        }
        let on = anomalous && !probe.probing;
        view.routes.board().set_flag(AgentId(agent as u32), bit, on);
    }

    /// Raises or clears the health reason.
    fn publish(&self, view: &DaemonView) {
        let mut detail = String::new();
        for agent in 0..self.last.len() {
            for signal in [Signal::Latency, Signal::Errors] {
                if !self.detector.anomalous(agent, signal) {
                    continue;
                }
                let (level, baseline) = self.detector.level(agent, signal);
                let name = view.routes.name(AgentId(agent as u32));
                let sep = if detail.is_empty() { "" } else { "; " };
                let _ = match signal {
                    Signal::Latency => write!(
                        detail,
                        "{sep}{name} latency {} against {}",
                        format_ns(level as u64),
                        format_ns(baseline as u64)
                    ),
                    Signal::Errors => write!(
                        detail,
                        "{sep}{name} errors {:.1}% against {:.1}%",
                        level * 100.0,
                        baseline * 100.0
                    ),
                };
            }
        }
        if detail.is_empty() {
            view.health.clear(REASON);
        } else {
            view.health.raise(REASON, detail);
        }
    }
}
