//! Anomaly detection: the seed's "digital twin" job of noticing an agent
//! that has gone wrong. Pure: the core loop feeds it one [`Interval`] per
//! agent per second and asks it to [`Detector::evaluate`]; time is passed
//! in, so tests step it.
//!
//! For each agent and each of two signals, its mean handler latency and
//! its error rate, the detector keeps an EWMA of the interval values (the
//! current level) and a window of the last [`WINDOW`] values seen while
//! the agent was normal (the baseline). The baseline is robust: its median
//! and its median absolute deviation (MAD, scaled by 1.4826 to estimate a
//! standard deviation), which one bad interval cannot drag. A signal is
//! anomalous when its EWMA exceeds the baseline by [`K`] MADs and by a
//! floor ([`LATENCY_RATIO`] times the median for latency, [`ERROR_FLOOR`]
//! above it for errors), so a quiet baseline with a MAD of zero does not
//! make every wobble an anomaly. It clears, with hysteresis, when the EWMA
//! is back under half the margin. While anomalous, values do not enter the
//! baseline, so the anomaly never becomes the new normal.
//!
//! Replicas are also held against each other: a replica whose EWMA stands
//! that far above the median of its siblings' EWMAs is anomalous even
//! before it has a baseline of its own, which catches a replica that was
//! slow from its start.
//!
//! Intervals without requests leave a signal as it was; an error rate
//! needs [`MIN_ERROR_REQUESTS`] requests in an interval to count.

/// Intervals a baseline holds.
pub const WINDOW: usize = 30;
/// Intervals a baseline needs before it judges.
pub const MIN_BASELINE: usize = 5;
/// Weight of a new interval in the EWMA.
pub const ALPHA: f64 = 0.5;
/// How many (scaled) MADs above the median is anomalous.
pub const K: f64 = 6.0;
/// Latency: anomalous only at this many times the median or more.
pub const LATENCY_RATIO: f64 = 2.0;
/// Error rate: anomalous only this far above the median or more.
pub const ERROR_FLOOR: f64 = 0.05;
/// Requests an interval needs for its error rate to count.
pub const MIN_ERROR_REQUESTS: u64 = 5;
/// MAD to standard deviation, for normally distributed values.
const MAD_SCALE: f64 = 1.4826;

/// What one agent did in one interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Interval {
    /// Requests handled.
    pub requests: u64,
    /// Of those, failed.
    pub errors: u64,
    /// Their mean handler latency, ns.
    pub mean_latency_ns: f64,
}

/// Which signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// Mean handler latency.
    Latency,
    /// Error rate.
    Errors,
}

impl Signal {
    /// Its name in health reasons, metrics and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Latency => "latency",
            Signal::Errors => "errors",
        }
    }
}

/// A signal that became anomalous or cleared.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Change {
    /// The agent.
    pub agent: usize,
    /// The signal.
    pub signal: Signal,
    /// Raised (true) or cleared.
    pub raised: bool,
    /// The signal's level (EWMA) then.
    pub level: f64,
    /// What it was judged against (own or siblings' median).
    pub baseline: f64,
    /// When, ms.
    pub at_ms: u64,
}

/// One signal of one agent.
#[derive(Debug, Clone, Copy)]
struct Track {
    window: [f64; WINDOW],
    len: usize,
    next: usize,
    ewma: Option<f64>,
    fresh: Option<f64>,
    anomalous: bool,
    baseline: f64,
}

impl Default for Track {
    fn default() -> Self {
        Self {
            window: [0.0; WINDOW],
            len: 0,
            next: 0,
            ewma: None,
            fresh: None,
            anomalous: false,
            baseline: 0.0,
        }
    }
}

impl Track {
    fn observe(&mut self, value: f64) {
        self.ewma = Some(
            self.ewma
                .map_or(value, |e| ALPHA * value + (1.0 - ALPHA) * e),
        );
        self.fresh = Some(value);
    }

    /// Median and scaled MAD of the baseline, using `scratch`.
    fn baseline(&self, scratch: &mut Vec<f64>) -> Option<(f64, f64)> {
        (self.len >= MIN_BASELINE).then(|| robust(&self.window[..self.len], scratch))
    }

    fn remember(&mut self) {
        if let Some(value) = self.fresh.take()
            && !self.anomalous
        {
            self.window[self.next] = value;
            self.next = (self.next + 1) % WINDOW;
            self.len = (self.len + 1).min(WINDOW);
        }
    }
}

/// Median and scaled MAD of `values` (not empty), using `scratch`.
fn robust(values: &[f64], scratch: &mut Vec<f64>) -> (f64, f64) {
    scratch.clear();
    scratch.extend_from_slice(values);
    let median = median_of(scratch);
    for v in scratch.iter_mut() {
        *v = (*v - median).abs();
    }
    (median, MAD_SCALE * median_of(scratch))
}

fn median_of(values: &mut [f64]) -> f64 {
    values.sort_unstable_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// The threshold above `median` (with `mad`) for `signal`; `relax`
/// scales the margin (1 to raise, 0.5 to clear).
fn threshold(signal: Signal, median: f64, mad: f64, relax: f64) -> f64 {
    let floor = match signal {
        Signal::Latency => (LATENCY_RATIO - 1.0) * median,
        Signal::Errors => ERROR_FLOOR,
    };
    median + relax * (K * mad).max(floor)
}

/// The detector for one mesh.
#[derive(Debug)]
pub struct Detector {
    tracks: Vec<[Track; 2]>,
    /// Each agent's siblings (the other replicas of its agent).
    siblings: Vec<Vec<usize>>,
    scratch: Vec<f64>,
    peers: Vec<f64>,
}

impl Detector {
    /// A detector for `agents` agents; `groups` lists each replicated
    /// agent's replicas.
    pub fn new(agents: usize, groups: &[Vec<usize>]) -> Self {
        let mut siblings = vec![Vec::new(); agents];
        for group in groups {
            for &a in group.iter().filter(|&&a| a < agents) {
                siblings[a] = group.iter().copied().filter(|&b| b != a).collect();
            }
        }
        Self {
            tracks: vec![[Track::default(); 2]; agents],
            siblings,
            scratch: Vec::with_capacity(WINDOW),
            peers: Vec::with_capacity(64),
        }
    }

    /// Takes in one interval of `agent`.
    pub fn observe(&mut self, agent: usize, interval: Interval) {
        let Some(tracks) = self.tracks.get_mut(agent) else {
            return;
        };
        if interval.requests > 0 {
            tracks[0].observe(interval.mean_latency_ns);
        }
        if interval.requests >= MIN_ERROR_REQUESTS {
            tracks[1].observe(interval.errors as f64 / interval.requests as f64);
        }
    }

    /// Judges every agent's signals at `now_ms`; what changed goes to
    /// `out`. Then the intervals observed since the last call enter the
    /// baselines of the signals that are normal.
    pub fn evaluate(&mut self, now_ms: u64, out: &mut Vec<Change>) {
        for agent in 0..self.tracks.len() {
            for (i, signal) in [Signal::Latency, Signal::Errors].into_iter().enumerate() {
                self.judge(agent, i, signal, now_ms, out);
            }
        }
        for tracks in &mut self.tracks {
            tracks.iter_mut().for_each(Track::remember);
        }
    }

    fn judge(
        &mut self,
        agent: usize,
        i: usize,
        signal: Signal,
        now_ms: u64,
        out: &mut Vec<Change>,
    ) {
        let track = self.tracks[agent][i];
        let Some(level) = track.ewma else {
            return;
        };
        let own = track.baseline(&mut self.scratch);
        self.peers.clear();
        for &s in &self.siblings[agent] {
            if let Some(e) = self.tracks.get(s).and_then(|t| t[i].ewma) {
                self.peers.push(e);
            }
        }
        let peer = (!self.peers.is_empty()).then(|| robust(&self.peers, &mut self.scratch));
        let relax = if track.anomalous { 0.5 } else { 1.0 };
        let over =
            |b: Option<(f64, f64)>| b.filter(|&(m, d)| level > threshold(signal, m, d, relax));
        let against = over(own).or_else(|| over(peer));
        let anomalous = against.is_some();
        if anomalous != track.anomalous {
            let baseline = against.or(own).or(peer).map_or(0.0, |(m, _)| m);
            out.push(Change {
                agent,
                signal,
                raised: anomalous,
                level,
                baseline,
                at_ms: now_ms,
            });
        }
        let t = &mut self.tracks[agent][i];
        t.anomalous = anomalous;
        if let Some((m, _)) = against.or(own) {
            t.baseline = m;
        }
    }

    /// Whether `agent`'s `signal` is anomalous now.
    pub fn anomalous(&self, agent: usize, signal: Signal) -> bool {
        let i = usize::from(signal == Signal::Errors);
        self.tracks.get(agent).is_some_and(|t| t[i].anomalous)
    }

    /// `agent`'s `signal` level (EWMA) and the baseline it was last
    /// judged against (0 before either exists).
    pub fn level(&self, agent: usize, signal: Signal) -> (f64, f64) {
        let i = usize::from(signal == Signal::Errors);
        self.tracks
            .get(agent)
            .map_or((0.0, 0.0), |t| (t[i].ewma.unwrap_or(0.0), t[i].baseline))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(latency_ms: f64, requests: u64, errors: u64) -> Interval {
        Interval {
            requests,
            errors,
            mean_latency_ns: latency_ms * 1e6,
        }
    }

    /// Steps `sut` one second: every agent's interval, then a judgement.
    fn step(sut: &mut Detector, second: u64, intervals: &[Interval]) -> Vec<Change> {
        for (agent, &i) in intervals.iter().enumerate() {
            sut.observe(agent, i);
        }
        let mut out = Vec::new();
        sut.evaluate(second * 1000, &mut out);
        out
    }

    #[test]
    fn a_replica_slowed_tenfold_is_raised_at_once_and_cleared_after_recovery() {
        let mut sut = Detector::new(4, &[vec![0, 1, 2, 3]]);
        let normal = |jitter: f64| at(1.0 + jitter, 50, 0);
        for s in 0..20 {
            let j = (s % 3) as f64 * 0.05;
            assert!(
                step(
                    &mut sut,
                    s,
                    &[normal(j), normal(0.1 - j), normal(j), normal(j)]
                )
                .is_empty()
            );
        }
        let raised = step(
            &mut sut,
            20,
            &[normal(0.0), at(10.0, 50, 0), normal(0.0), normal(0.0)],
        );
        assert_eq!(raised.len(), 1, "{raised:?}");
        assert_eq!(
            (raised[0].agent, raised[0].signal, raised[0].raised),
            (1, Signal::Latency, true)
        );
        assert!(sut.anomalous(1, Signal::Latency));
        let mut cleared_at = None;
        for s in 21..40 {
            let slow = if s < 30 { at(10.0, 50, 0) } else { normal(0.0) };
            let changes = step(&mut sut, s, &[normal(0.0), slow, normal(0.0), normal(0.0)]);
            if changes.iter().any(|c| c.agent == 1 && !c.raised) {
                cleared_at.get_or_insert(s);
            }
        }
        assert!(matches!(cleared_at, Some(30..=34)), "{cleared_at:?}");
        assert!(!sut.anomalous(1, Signal::Latency));
    }

    #[test]
    fn a_replica_slow_from_its_start_stands_out_from_its_siblings() {
        let mut sut = Detector::new(3, &[vec![0, 1, 2]]);
        let changes = step(&mut sut, 0, &[at(1.0, 9, 0), at(1.1, 9, 0), at(9.0, 9, 0)]);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!((changes[0].agent, changes[0].baseline), (2, 1.05e6));
    }

    #[test]
    fn a_failing_agent_is_raised_on_its_error_rate_and_a_trickle_is_not() {
        let mut sut = Detector::new(1, &[]);
        for s in 0..10 {
            assert!(step(&mut sut, s, &[at(1.0, 100, u64::from(s == 3))]).is_empty());
        }
        let changes = step(&mut sut, 10, &[at(1.0, 100, 20)]);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(
            (changes[0].signal, changes[0].raised),
            (Signal::Errors, true)
        );
    }

    #[test]
    fn idle_intervals_change_nothing_and_noise_raises_nothing() {
        let mut sut = Detector::new(1, &[]);
        for s in 0..200u64 {
            let noisy = 1.0 + ((s * 7919) % 100) as f64 / 100.0;
            let interval = if s % 5 == 0 {
                Interval::default()
            } else {
                at(noisy, 10, 0)
            };
            assert!(step(&mut sut, s, &[interval]).is_empty(), "second {s}");
        }
    }
}
