//! `bench ring --baseline hand` in turns: pinwheel's rings and the hand
//! ring (one slot a message, and as many as pinwheel's frame takes when
//! that is more) take turns over [`TURNS`] rounds, each case running its
//! share of the messages every round; each case's rounds then merge into
//! one: their round trips into one histogram, their streams into all the
//! messages over all the time they took.
//!
//! Why: on this VM the hand ring's round trip moves between ~100 ns and
//! ~600 ns as the host schedules the two vCPUs, often within a run, and
//! the spells of a noisy hour last seconds. Run one after the other, the
//! cases of one run met different spells, and their ratio said as much
//! about when the spell changed as about the rings: over eight runs of one
//! build in one hour, pinwheel's p50 lead over the hand ring went from 41
//! to 120 ns. In turns, a spell longer than a round falls on every case
//! alike.
//!
//! The idle phase is pinwheel's alone and runs once, after the rounds.

use hdrhistogram::Histogram;

use super::BenchError;
use super::hand::HandBench;
use super::report::Case;
use super::ring::RingBench;

/// Rounds of a run in turns.
pub const TURNS: u64 = 5;

/// The cases of one run in turns.
#[derive(Debug)]
pub struct InTurns {
    /// pinwheel's rings, with the idle phase.
    pub ring: Case,
    /// The hand ring, one slot a message.
    pub hand: Case,
    /// The hand ring moving as many slots a message as pinwheel's frame,
    /// when that is more than one.
    pub frame_sized: Option<Case>,
}

/// Runs `bench` and the hand ring in turns; `frame_slots` is how many
/// slots pinwheel's frame of `bench.size` takes.
pub fn ring_and_hand(bench: &RingBench, frame_slots: u64) -> Result<InTurns, BenchError> {
    let (mut ring, mut hand, mut frame_sized) =
        (Merged::default(), Merged::default(), Merged::default());
    for round in 0..TURNS {
        let msgs = share(bench.msgs, round);
        if msgs == 0 {
            continue;
        }
        let hand_ring = |slots_per_message| {
            HandBench {
                cpus: bench.cpus,
                msgs,
                slots_per_message,
            }
            .run()
        };
        if frame_slots > 1 {
            frame_sized.add(hand_ring(frame_slots)?, msgs);
        }
        hand.add(hand_ring(1)?, msgs);
        let part = RingBench {
            msgs,
            ..bench.clone()
        };
        ring.add(part.round_trips_and_stream()?, msgs);
    }
    let mut ring = ring.case();
    ring.idle_cpu_percent = Some(bench.idle_cpu()?);
    Ok(InTurns {
        ring,
        hand: hand.case(),
        frame_sized: (frame_slots > 1).then(|| frame_sized.case()),
    })
}

/// Messages of round `round`: `msgs` shared out, the first rounds taking
/// one more each where [`TURNS`] does not divide them.
fn share(msgs: u64, round: u64) -> u64 {
    msgs / TURNS + u64::from(round < msgs % TURNS)
}

/// The rounds of one case so far.
#[derive(Debug, Default)]
struct Merged {
    rtt: Option<Histogram<u64>>,
    msgs: u64,
    secs: f64,
}

impl Merged {
    /// Adds a round of `msgs` messages.
    fn add(&mut self, round: Case, msgs: u64) {
        match &mut self.rtt {
            None => self.rtt = Some(round.rtt),
            Some(rtt) => rtt
                .add(&round.rtt)
                .expect("every round's histogram has new_histogram's bounds"),
        }
        self.msgs += msgs;
        self.secs += msgs as f64 / round.throughput_msgs_per_s;
    }

    /// The case: every round trip, and the stream's messages over its time.
    fn case(self) -> Case {
        Case {
            rtt: self.rtt.unwrap_or_else(crate::latency::new_histogram),
            throughput_msgs_per_s: self.msgs as f64 / self.secs,
            idle_cpu_percent: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::CpuId;
    use pinwheel_ipc::ring::WaitStrategy;

    #[test]
    fn rounds_share_the_messages_out_whole() {
        for msgs in [1, 4, 5, 7, 200_000, 200_003] {
            let shares: Vec<u64> = (0..TURNS).map(|round| share(msgs, round)).collect();
            assert_eq!(shares.iter().sum::<u64>(), msgs, "{msgs}: {shares:?}");
            let (most, least) = (shares.iter().max(), shares.iter().min());
            assert!(
                most.zip(least).is_some_and(|(m, l)| m - l <= 1),
                "{shares:?}"
            );
        }
    }

    #[test]
    fn merged_rounds_keep_every_round_trip_and_the_stream_over_its_whole_time() {
        let mut merged = Merged::default();
        for (value, rate) in [(100, 1e6), (300, 3e6)] {
            let mut rtt = crate::latency::new_histogram();
            rtt.record_n(value, 10).unwrap();
            merged.add(
                Case {
                    rtt,
                    throughput_msgs_per_s: rate,
                    idle_cpu_percent: None,
                },
                10,
            );
        }

        let case = merged.case();

        assert_eq!(case.rtt.len(), 20);
        assert_eq!(case.rtt.value_at_quantile(0.25), 100);
        assert_eq!(case.rtt.max(), case.rtt.highest_equivalent(300));
        // 10 messages in 10 us, then 10 in 3.33 us: 20 in 13.33 us.
        assert!((case.throughput_msgs_per_s - 1.5e6).abs() < 1.0);
    }

    #[test]
    fn a_run_in_turns_times_every_round_trip_of_every_case() {
        let bench = RingBench {
            cpus: [CpuId(0), CpuId(1)],
            peer_exe: None,
            wait: WaitStrategy::Spin,
            size: 64,
            msgs: 1003,
            spin_us: 0,
        };

        let got = ring_and_hand(&bench, 2).unwrap();

        for case in [&got.ring, &got.hand, got.frame_sized.as_ref().unwrap()] {
            assert_eq!(case.rtt.len(), 1003);
            assert!(case.throughput_msgs_per_s > 0.0);
        }
        assert!(got.ring.idle_cpu_percent.is_some());
        assert!(got.hand.idle_cpu_percent.is_none());
    }
}
