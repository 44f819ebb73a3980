//! How `pinwheel bench ring` reports: a table for people, JSON for
//! programs, ratios when a baseline ran in the same run.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::json::render_json;
use super::ring::RingBench;
use crate::latency::LatencySummary;
use crate::topology::CpuId;
use pinwheel_ipc::ring::WaitStrategy;

/// One measured case.
#[derive(Debug)]
pub struct Case {
    /// Round-trip times.
    pub rtt: Histogram<u64>,
    /// One-way streaming rate.
    pub throughput_msgs_per_s: f64,
    /// Share of a core the server used under sparse traffic (one round trip
    /// every 10 ms), when measured.
    pub idle_cpu_percent: Option<f64>,
}

/// The results of `pinwheel bench ring`.
#[derive(Debug)]
pub struct RingReport {
    /// What ran.
    pub bench: RingBench,
    /// pinwheel's rings.
    pub ring: Case,
    /// The baseline that ran in the same run, if one did.
    pub baseline: Option<(BaselineKind, Case)>,
}

/// The hand ring's case with as many slots a message as pinwheel's frame
/// (`hand.rs`).
#[derive(Debug)]
pub struct FrameSized {
    /// Slots a message.
    pub slots: u64,
    /// Its round trips and stream.
    pub case: Case,
}

/// What `bench ring` compares pinwheel's rings with.
#[derive(Debug)]
pub enum BaselineKind {
    /// ZeroMQ ipc (`--baseline zmq`).
    Zmq,
    /// The minimal hand-written ring (`--baseline hand`, [`super::hand`]).
    Hand {
        /// When pinwheel's frame takes more than one slot: the hand ring
        /// moving as many slots a message.
        frame_sized: Option<FrameSized>,
    },
}

impl BaselineKind {
    /// Its row in the table.
    fn label(&self) -> &'static str {
        match self {
            BaselineKind::Zmq => "zeromq ipc",
            BaselineKind::Hand { .. } => "hand ring (spin)",
        }
    }

    /// Its short name in the ratio row.
    fn short(&self) -> &'static str {
        match self {
            BaselineKind::Zmq => "zeromq",
            BaselineKind::Hand { .. } => "hand",
        }
    }

    /// What it is, under the table.
    fn note(&self) -> &'static str {
        match self {
            BaselineKind::Zmq => {
                "zeromq: REQ/REP round trips, PUSH/PULL streaming, the same envelopes encoded and checked"
            }
            BaselineKind::Hand { .. } => {
                "hand: a minimal SPSC ring, 64-byte slots, Release head store and Acquire tail load, two threads spinning, a raw 64-byte slot per message (no envelope, no checks); it takes turns with pinwheel's rings, a share of the messages each round, so that both meet the same spells of the host"
            }
        }
    }
}

pub(super) fn wait_name(wait: WaitStrategy) -> &'static str {
    match wait {
        WaitStrategy::Spin => "spin",
        WaitStrategy::Park => "park",
        WaitStrategy::Adaptive => "adaptive",
    }
}

/// One case's JSON.
#[derive(Debug, Serialize)]
pub struct CaseJson {
    /// Round trips.
    pub rtt_ns: LatencySummary,
    /// One-way streaming rate.
    pub throughput_msgs_per_s: f64,
    /// Share of a core the server used under sparse traffic, when measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_cpu_percent: Option<f64>,
}

impl CaseJson {
    fn of(case: &Case) -> Self {
        Self {
            rtt_ns: LatencySummary::of(&case.rtt),
            throughput_msgs_per_s: case.throughput_msgs_per_s.round(),
            idle_cpu_percent: case
                .idle_cpu_percent
                .map(|idle| (idle * 10.0).round() / 10.0),
        }
    }
}

/// `pinwheel bench ring --json`: the ring's case at the top level.
#[derive(Debug, Serialize)]
pub struct RingJson {
    /// pinwheel's rings.
    #[serde(flatten)]
    pub ring: CaseJson,
    /// How consumers waited.
    pub wait: &'static str,
    /// Client CPU, then server CPU.
    pub cpus: [CpuId; 2],
    /// 2 for a peer process, 1 for a thread.
    pub processes: u8,
    /// Request body bytes.
    pub size: usize,
    /// Round trips, and messages streamed.
    pub msgs: u64,
    /// The baseline, when one ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<BaselineJson>,
}

/// A baseline's case (under its name) and its ratios to pinwheel's.
#[derive(Debug, Serialize)]
pub struct BaselineJson {
    /// ZeroMQ's case (`--baseline zmq`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zmq: Option<CaseJson>,
    /// The hand ring's case (`--baseline hand`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hand: Option<CaseJson>,
    /// Baseline over pinwheel.
    pub ratio: Ratios,
    /// The hand ring moving as many slots a message as pinwheel's frame
    /// (`--baseline hand`, when that is more than one slot).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hand_frame: Option<FrameJson>,
}

/// The frame-sized hand ring's case, its slots a message, and its ratios
/// to pinwheel's.
#[derive(Debug, Serialize)]
pub struct FrameJson {
    /// Its case.
    #[serde(flatten)]
    pub case: CaseJson,
    /// Slots a message.
    pub slots_per_message: u64,
    /// It over pinwheel.
    pub ratio: Ratios,
}

/// Baseline over pinwheel (higher is better for pinwheel, throughput
/// inverted).
#[derive(Debug, Serialize)]
pub struct Ratios {
    /// Round trip p50.
    pub rtt_p50: f64,
    /// Round trip p99.
    pub rtt_p99: f64,
    /// pinwheel's throughput over the baseline's.
    pub throughput: f64,
}

impl Ratios {
    /// `base` over `ring`.
    fn of(base: &Case, ring: &Case) -> Self {
        let (base_rtt, ring_rtt) = (LatencySummary::of(&base.rtt), LatencySummary::of(&ring.rtt));
        Self {
            rtt_p50: base_rtt.p50 as f64 / ring_rtt.p50.max(1) as f64,
            rtt_p99: base_rtt.p99 as f64 / ring_rtt.p99.max(1) as f64,
            throughput: ring.throughput_msgs_per_s / base.throughput_msgs_per_s.max(1.0),
        }
    }
}

/// `{"rtt_ns": {..}, "throughput_msgs_per_s": .., "wait": .., "cpus": [..],
/// "processes": .., ..}`, with a `baseline` object when one ran.
pub fn render_ring_json(report: &RingReport) -> String {
    let bench = &report.bench;
    let baseline = report.baseline.as_ref().map(|(kind, case)| {
        let json = Some(CaseJson::of(case));
        let (zmq, hand, frame_sized) = match kind {
            BaselineKind::Zmq => (json, None, None),
            BaselineKind::Hand { frame_sized } => (None, json, frame_sized.as_ref()),
        };
        BaselineJson {
            zmq,
            hand,
            ratio: Ratios::of(case, &report.ring),
            hand_frame: frame_sized.map(|frame| FrameJson {
                case: CaseJson::of(&frame.case),
                slots_per_message: frame.slots,
                ratio: Ratios::of(&frame.case, &report.ring),
            }),
        }
    });
    render_json(&RingJson {
        ring: CaseJson::of(&report.ring),
        wait: wait_name(bench.wait),
        cpus: bench.cpus,
        processes: if bench.peer_exe.is_some() { 2 } else { 1 },
        size: bench.size,
        msgs: bench.msgs,
        baseline,
    })
}

/// The report as a table.
pub fn render_ring_table(report: &RingReport) -> String {
    let bench = &report.bench;
    let mut out = String::new();
    let processes = if bench.peer_exe.is_some() {
        "2 processes"
    } else {
        "2 threads"
    };
    let _ = writeln!(
        out,
        "pinwheel bench ring: {processes} on CPUs {} and {}, wait {}, {}-byte bodies, {} round trips and {} streamed",
        bench.cpus[0],
        bench.cpus[1],
        wait_name(bench.wait),
        bench.size,
        bench.msgs,
        bench.msgs
    );
    super::percentile_titles(&mut out, "case", 22);
    let _ = writeln!(out, "{:>14}{:>10}", "stream", "idle CPU");
    row(
        &mut out,
        &format!("pinwheel ring ({})", wait_name(bench.wait)),
        &report.ring,
    );
    if let Some((kind, case)) = &report.baseline {
        row(&mut out, kind.label(), case);
        ratio_row(
            &mut out,
            &format!("{} / pinwheel", kind.short()),
            case,
            &report.ring,
        );
        let frame_sized = match kind {
            BaselineKind::Hand {
                frame_sized: Some(frame),
            } => Some(frame),
            _ => None,
        };
        if let Some(frame) = frame_sized {
            row(
                &mut out,
                &format!("hand ring, {} slots", frame.slots),
                &frame.case,
            );
            ratio_row(
                &mut out,
                &format!("hand {}-slot / pinwheel", frame.slots),
                &frame.case,
                &report.ring,
            );
        }
        let _ = writeln!(out, "\n{}", kind.note());
        if let Some(frame) = frame_sized {
            let _ = writeln!(
                out,
                "hand ring, {} slots: the same ring moving {} whole slots a message, as many as pinwheel's frame of a {}-byte body takes",
                frame.slots, frame.slots, bench.size
            );
        }
    }
    out
}

/// A baseline's percentiles and stream over pinwheel's.
fn ratio_row(out: &mut String, label: &str, base: &Case, ring: &Case) {
    let ring_columns = LatencySummary::of(&ring.rtt).columns();
    let base_columns = LatencySummary::of(&base.rtt).columns();
    let _ = write!(out, "{label:<22}");
    for (b, r) in base_columns.iter().zip(ring_columns) {
        let _ = write!(
            out,
            "{:>10}",
            format!("{:.1}x", *b as f64 / r.max(1) as f64)
        );
    }
    let ratio = ring.throughput_msgs_per_s / base.throughput_msgs_per_s.max(1.0);
    let _ = writeln!(out, "{:>14}", format!("{ratio:.2}x"));
}

fn row(out: &mut String, name: &str, case: &Case) {
    super::percentile_cells(out, name, 22, &case.rtt);
    let idle = case
        .idle_cpu_percent
        .map_or("-".to_owned(), |p| format!("{p:.1}%"));
    let _ = writeln!(
        out,
        "{:>14}{idle:>10}",
        format_rate(case.throughput_msgs_per_s)
    );
}

/// A rate for people: `26.1M/s`, `812k/s`.
fn format_rate(per_second: f64) -> String {
    if per_second >= 1e6 {
        format!("{:.2}M/s", per_second / 1e6)
    } else if per_second >= 1e3 {
        format!("{:.0}k/s", per_second / 1e3)
    } else {
        format!("{per_second:.0}/s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_print_in_readable_units() {
        assert_eq!(format_rate(26_100_000.0), "26.10M/s");
        assert_eq!(format_rate(812_000.0), "812k/s");
        assert_eq!(format_rate(12.0), "12/s");
    }
}
