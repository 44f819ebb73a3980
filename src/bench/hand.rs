//! `pinwheel bench ring --baseline hand`: the least a ring between two
//! CPUs can cost, measured in the same run as pinwheel's rings.
//!
//! The hand ring is the minimal single-producer single-consumer ring the
//! data-plane issue names: 64-byte slots, a producer that writes a slot
//! and publishes it with a Release store of its head, a consumer that
//! sees it with an Acquire load and frees it with a Release store of its
//! tail; both sides spin. Nothing else: no envelope (a message is one raw
//! 64-byte slot whatever `--size` says), no frame header, no checks, no
//! doorbell, no batching. Its two ends are threads over one heap
//! allocation: for two threads a memfd mapping would be the same memory
//! and the same cache lines (a memfd mapping, and two processes over it,
//! measured the same). What pinwheel's ring costs above it is its
//! envelope, frames and (between processes) the copy and check of every
//! untrusted frame.
//!
//! A second case moves as many whole slots per message as pinwheel's
//! frame of that `--size` takes (two for a 64-byte body: an 8-byte frame
//! header, the body and the 56-byte archived envelope), every word of
//! each written and read. A further cache line a message crosses costs
//! the round trip on its own (on this VM a second line added 0-30 ns to
//! the hand ring's 100-130 ns), so this case says how much of pinwheel's
//! cost is moving its frame's bytes at all, and how much is the ring's
//! and the envelope's work on them.
//!
//! Slots are words of `AtomicU64` written and read `Relaxed` (plain moves
//! on x86-64), so the ring needs no `unsafe`; the head and tail, each on a
//! cache line of its own, carry the ordering.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::BenchError;
use super::report::Case;
use super::ring::{pin, warmup};
use crate::latency::{new_histogram, record_duration};
use crate::topology::CpuId;

/// Slots of each hand ring (as many as pinwheel's bench rings).
const SLOTS: usize = 4096;
/// Words of one 64-byte slot.
const WORDS: usize = 8;
/// Longest a side spins for the other before the run fails.
const WAIT: Duration = Duration::from_secs(10);

/// A cache line of its own.
#[repr(align(64))]
#[derive(Debug, Default)]
struct Line(AtomicU64);

/// One slot: 64 bytes on a cache line.
#[repr(align(64))]
#[derive(Debug, Default)]
struct Slot([AtomicU64; WORDS]);

/// The hand ring.
#[derive(Debug)]
struct HandRing {
    head: Line,
    tail: Line,
    slots: Box<[Slot]>,
}

impl HandRing {
    fn new() -> Arc<Self> {
        Arc::new(HandRing {
            head: Line::default(),
            tail: Line::default(),
            slots: (0..SLOTS).map(|_| Slot::default()).collect(),
        })
    }

    /// Writes `message` into the `lines` slots at `*at` once there is
    /// room, and publishes them.
    fn push(&self, at: &mut u64, message: &[u64; WORDS], lines: u64) -> Result<(), BenchError> {
        let mut waiting = Waiting::default();
        // SYNC: Acquire pairs with the consumer's Release store of its
        // tail: the slots it freed are not read again.
        while *at + lines - self.tail.0.load(Ordering::Acquire) > SLOTS as u64 {
            waiting.spin()?;
        }
        for line in *at..*at + lines {
            let slot = &self.slots[line as usize % SLOTS];
            for (word, value) in slot.0.iter().zip(message) {
                // SYNC: Relaxed; published by the Release store of the head.
                word.store(*value, Ordering::Relaxed);
            }
        }
        *at += lines;
        // SYNC: Release publishes the slot's words to the Acquire load in
        // `pop`.
        self.head.0.store(*at, Ordering::Release);
        Ok(())
    }

    /// Waits until the consumer has read every message below `head`.
    fn drained(&self, head: u64) -> Result<(), BenchError> {
        let mut waiting = Waiting::default();
        // SYNC: Acquire pairs with the consumer's Release store of its tail.
        while self.tail.0.load(Ordering::Acquire) < head {
            waiting.spin()?;
        }
        Ok(())
    }

    /// Reads the message in the `lines` slots at `*at` once they are
    /// published, and frees them. Every word is read; the message is the
    /// first slot's, and a later slot that differs from it is an error.
    fn pop(&self, at: &mut u64, message: &mut [u64; WORDS], lines: u64) -> Result<(), BenchError> {
        let mut waiting = Waiting::default();
        // SYNC: Acquire pairs with the producer's Release store of its head.
        while self.head.0.load(Ordering::Acquire) < *at + lines {
            waiting.spin()?;
        }
        let slot = &self.slots[*at as usize % SLOTS];
        for (value, word) in message.iter_mut().zip(&slot.0) {
            // SYNC: Relaxed; ordered by the Acquire load of the head.
            *value = word.load(Ordering::Relaxed);
        }
        let mut differ = 0;
        for line in *at + 1..*at + lines {
            let slot = &self.slots[line as usize % SLOTS];
            for (value, word) in message.iter().zip(&slot.0) {
                // SYNC: as above.
                differ |= word.load(Ordering::Relaxed) ^ value;
            }
        }
        if differ != 0 {
            return Err(BenchError::Peer {
                reason: "hand ring: the slots of one message differ".into(),
            });
        }
        *at += lines;
        // SYNC: Release; the producer's Acquire load of the tail sees the
        // slot read before it writes it again.
        self.tail.0.store(*at, Ordering::Release);
        Ok(())
    }
}

/// Spins between clock reads: a clock read costs as much as a round
/// trip's share of the ring, so a wait reads it rarely, and not at all
/// when the other side is there at once.
const SPINS_PER_CLOCK: u32 = 4096;

/// One side's wait for the other, failing after [`WAIT`].
#[derive(Debug, Default)]
struct Waiting {
    spins: u32,
    since: Option<Instant>,
}

impl Waiting {
    fn spin(&mut self) -> Result<(), BenchError> {
        std::hint::spin_loop();
        self.spins = self.spins.wrapping_add(1);
        if self.spins.is_multiple_of(SPINS_PER_CLOCK) {
            let since = *self.since.get_or_insert_with(Instant::now);
            if since.elapsed() > WAIT {
                return Err(BenchError::Peer {
                    reason: "the hand ring's other side stopped for 10 s".into(),
                });
            }
        }
        Ok(())
    }
}

/// The hand ring's case of a `bench ring` run.
#[derive(Debug, Clone, Copy)]
pub struct HandBench {
    /// The client's CPU, then the server's.
    pub cpus: [CpuId; 2],
    /// Round trips, and messages streamed.
    pub msgs: u64,
    /// Whole slots each message takes: 1 for the hand ring, or as
    /// many as pinwheel's frame takes ([`super::ring::frame_slots_of`]).
    pub slots_per_message: u64,
}

impl HandBench {
    /// Ping-pong then streaming, as pinwheel's case runs them.
    pub fn run(&self) -> Result<Case, BenchError> {
        let most = SLOTS as u64 / 4;
        if !(1..=most).contains(&self.slots_per_message) {
            return Err(BenchError::Peer {
                reason: format!(
                    "hand ring: a message of {} slots does not fit; at most {most}",
                    self.slots_per_message
                ),
            });
        }
        Ok(Case {
            rtt: self.round_trips()?,
            throughput_msgs_per_s: self.stream()?,
            idle_cpu_percent: None,
        })
    }

    fn round_trips(&self) -> Result<hdrhistogram::Histogram<u64>, BenchError> {
        let (requests, replies) = (HandRing::new(), HandRing::new());
        let lines = self.slots_per_message;
        let warmup = warmup(self.msgs);
        let total = warmup + self.msgs;
        let server = {
            let (requests, replies, cpu) =
                (Arc::clone(&requests), Arc::clone(&replies), self.cpus[1]);
            std::thread::spawn(move || -> Result<(), BenchError> {
                pin(cpu)?;
                let (mut read, mut write) = (0, 0);
                let mut message = [0; WORDS];
                for _ in 0..total {
                    requests.pop(&mut read, &mut message, lines)?;
                    replies.push(&mut write, &message, lines)?;
                }
                Ok(())
            })
        };
        pin(self.cpus[0])?;
        let mut histogram = new_histogram();
        let (mut write, mut read) = (0, 0);
        let mut reply = [0; WORDS];
        for i in 0..total {
            let message = [i; WORDS];
            let start = Instant::now();
            requests.push(&mut write, &message, lines)?;
            replies.pop(&mut read, &mut reply, lines)?;
            if reply != message {
                return Err(BenchError::Peer {
                    reason: format!("hand ring: round trip {i} came back changed"),
                });
            }
            if i >= warmup {
                record_duration(&mut histogram, start.elapsed());
            }
        }
        join(server)?;
        Ok(histogram)
    }

    /// Streams a warm-up, waits until the sink has read it, then times
    /// `msgs` more, as pinwheel's case does.
    fn stream(&self) -> Result<f64, BenchError> {
        let ring = HandRing::new();
        let lines = self.slots_per_message;
        let warmup = warmup(self.msgs);
        let msgs = warmup + self.msgs;
        let sink = {
            let (ring, cpu) = (Arc::clone(&ring), self.cpus[1]);
            std::thread::spawn(move || -> Result<(), BenchError> {
                pin(cpu)?;
                let mut read = 0;
                let mut message = [0; WORDS];
                for i in 0..msgs {
                    ring.pop(&mut read, &mut message, lines)?;
                    if message[0] != i {
                        return Err(BenchError::Peer {
                            reason: format!("hand ring: message {i} came out of order"),
                        });
                    }
                }
                Ok(())
            })
        };
        pin(self.cpus[0])?;
        let mut write = 0;
        for i in 0..warmup {
            ring.push(&mut write, &[i; WORDS], lines)?;
        }
        ring.drained(write)?;
        let started = Instant::now();
        for i in warmup..msgs {
            ring.push(&mut write, &[i; WORDS], lines)?;
        }
        join(sink)?;
        Ok(self.msgs as f64 / started.elapsed().as_secs_f64().max(1e-9))
    }
}

fn join(side: std::thread::JoinHandle<Result<(), BenchError>>) -> Result<(), BenchError> {
    side.join().map_err(|_| BenchError::Peer {
        reason: "the hand ring's other side panicked".into(),
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_come_out_in_order_across_a_wrap_of_the_ring() {
        let ring = HandRing::new();
        let (mut write, mut read) = (0, 0);
        let mut out = [0; WORDS];
        for i in 0..(3 * SLOTS as u64) {
            ring.push(&mut write, &[i; WORDS], 1).unwrap();
            ring.pop(&mut read, &mut out, 1).unwrap();
            assert_eq!(out, [i; WORDS]);
        }
    }

    #[test]
    fn a_message_of_several_slots_comes_out_whole_across_a_wrap() {
        let ring = HandRing::new();
        let (mut write, mut read) = (0, 0);
        let mut out = [0; WORDS];
        // 3 does not divide the ring's slots: messages straddle its end.
        for i in 0..SLOTS as u64 {
            ring.push(&mut write, &[i; WORDS], 3).unwrap();
            ring.pop(&mut read, &mut out, 3).unwrap();
            assert_eq!(out, [i; WORDS]);
        }
        assert_eq!((write, read), (3 * SLOTS as u64, 3 * SLOTS as u64));
    }

    #[test]
    fn a_message_whose_slots_differ_is_an_error() {
        let ring = HandRing::new();
        let (mut write, mut read) = (0, 0);
        ring.push(&mut write, &[7; WORDS], 2).unwrap();
        ring.slots[1].0[5].store(8, Ordering::Relaxed);

        let got = ring.pop(&mut read, &mut [0; WORDS], 2);

        assert!(
            matches!(&got, Err(BenchError::Peer { reason }) if reason.contains("differ")),
            "{got:?}"
        );
    }

    #[test]
    fn a_message_larger_than_a_quarter_ring_is_refused_before_running() {
        let got = HandBench {
            cpus: [CpuId(0), CpuId(1)],
            msgs: 10,
            slots_per_message: SLOTS as u64 / 4 + 1,
        }
        .run();

        assert!(
            matches!(&got, Err(BenchError::Peer { reason }) if reason.contains("does not fit")),
            "{got:?}"
        );
    }

    #[test]
    fn a_run_on_two_cpus_times_every_round_trip_and_streams() {
        for slots_per_message in [1, 2] {
            let case = HandBench {
                cpus: [CpuId(0), CpuId(1)],
                msgs: 1000,
                slots_per_message,
            }
            .run()
            .unwrap();

            assert_eq!(case.rtt.len(), 1000);
            assert!(case.throughput_msgs_per_s > 0.0);
        }
    }
}
