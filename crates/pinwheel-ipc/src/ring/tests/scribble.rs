//! A hostile peer that writes the ring's control block and frame headers
//! in a loop while both ends keep working. The peer is a thread
//! writing through the memfd with `pwrite`, so its stores come from the
//! kernel, outside anything Rust's model could reason about, exactly like
//! another process's. Every call must answer normally (a frame, nothing,
//! `Full`, `Timeout`) or with `RingError::Corrupt`: never a panic, a read
//! out of bounds (the region's bounds checks would panic), or a wait past
//! its timeout (the test would hang). After corruption the exporting end
//! resets the ring and the other end reattaches, so every run keeps frames
//! flowing between scribbles instead of stopping at the first one.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use nix::sys::uio::pwrite;

use crate::ring::layout::CONTROL_FIELDS;
use crate::ring::{
    Consumer, DATA_OFFSET, RingConfig, RingError, RingHandoff, SLOT_BYTES, WaitStrategy,
    export_consumer, export_producer,
};

const SLOTS: u64 = 16;
const MAX_FRAME: usize = 200;
const ROUNDS: u64 = 8;
const FRAMES: usize = 8_000;

fn config() -> RingConfig {
    RingConfig {
        slots: SLOTS,
        max_frame: MAX_FRAME,
        wait: WaitStrategy::Park,
        spin_us: 0,
    }
}

/// A small deterministic generator (xorshift64*), so a failing round can
/// be replayed from its seed.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Every place the peer writes: each control-block field, and each slot's
/// frame header (length and kind words).
fn targets() -> Vec<(usize, usize)> {
    let fields = CONTROL_FIELDS
        .iter()
        .map(|(_, offset, size)| (*offset, *size));
    let frames = (0..SLOTS as usize).map(|slot| (DATA_OFFSET + slot * SLOT_BYTES, 8));
    fields.chain(frames).collect()
}

/// Values a hostile peer would try: edges, plausible counters, plausible
/// frame headers, and noise.
fn hostile_value(noise: &mut Noise) -> u64 {
    let data = u64::from(u32::from_le_bytes(*b"DATA")) << 32;
    match noise.below(6) {
        0 => [0, 1, SLOTS, SLOTS + 1, u64::MAX][noise.below(5) as usize],
        1 => noise.below(1 << 20),
        2 => data | noise.below(MAX_FRAME as u64 * 2),
        _ => noise.next(),
    }
}

/// Writes hostile values until `stop`, pausing up to a thousand spins
/// between writes so frames also get through; counts its writes in
/// `writes`.
fn scribbler(memfd: OwnedFd, seed: u64, stop: Arc<AtomicBool>, writes: Arc<AtomicU64>) {
    let targets = targets();
    let mut noise = Noise(seed);
    while !stop.load(Ordering::Relaxed) {
        let (offset, size) = targets[noise.below(targets.len() as u64) as usize];
        let value = hostile_value(&mut noise).to_le_bytes();
        pwrite(&memfd, &value[..size], offset as i64).expect("pwrite into the ring memfd");
        writes.fetch_add(1, Ordering::Relaxed);
        for _ in 0..noise.below(1024) {
            std::hint::spin_loop();
        }
    }
}

/// What a run saw.
#[derive(Debug, Default)]
struct Seen {
    frames: u64,
    corrupt: u64,
}

impl Seen {
    /// Counts a producer's answer; true when it was corruption.
    fn sent(&mut self, result: Result<(), RingError>) -> bool {
        match result {
            Ok(()) | Err(RingError::Full | RingError::Timeout { .. }) => false,
            Err(RingError::Corrupt { .. }) => {
                self.corrupt += 1;
                true
            }
            Err(other) => panic!("producer: unexpected {other}"),
        }
    }

    /// Drains what the consumer has; true when it met corruption.
    fn drain(&mut self, consumer: &mut Consumer) -> bool {
        match consumer.wait(Duration::from_micros(200)) {
            Ok(_) => {}
            Err(RingError::Corrupt { .. }) => {
                self.corrupt += 1;
                return true;
            }
            Err(other) => panic!("consumer wait: unexpected {other}"),
        }
        for _ in 0..2 * SLOTS {
            match consumer.try_recv(|bytes| bytes.len()) {
                Ok(Some(len)) => {
                    assert!(len <= MAX_FRAME, "a frame of {len} bytes");
                    self.frames += 1;
                }
                Ok(None) => break,
                Err(RingError::Corrupt { .. }) => {
                    self.corrupt += 1;
                    return true;
                }
                Err(other) => panic!("consumer recv: unexpected {other}"),
            }
        }
        false
    }
}

/// Attaches a handoff, retrying while the scribbler's header writes make
/// the attach refuse it (as a real peer would be refused).
fn attach<T>(
    mut handoff: impl FnMut() -> RingHandoff,
    into: fn(RingHandoff) -> Result<T, RingError>,
) -> T {
    for _ in 0..10_000 {
        match into(handoff()) {
            Ok(end) => return end,
            Err(RingError::Handoff { .. }) => thread::yield_now(),
            Err(other) => panic!("attach: unexpected {other}"),
        }
    }
    panic!("no attach got past the scribbler")
}

/// One run on a fresh exported ring with the scribbler writing it. This
/// thread drives both ends, as the daemon and a peer would: on
/// corruption the exporting end resets the ring and the other end
/// reattaches, as after a peer is disconnected and replaced.
/// `daemon_produces` picks which end is exported.
fn run(seed: u64, daemon_produces: bool) -> Seen {
    let (mut producer, mut consumer, memfd) = if daemon_produces {
        let (producer, handoff) = export_producer(config()).unwrap();
        let memfd = handoff.memfd().try_clone_to_owned().unwrap();
        (producer, handoff.into_consumer().unwrap(), memfd)
    } else {
        let (consumer, handoff) = export_consumer(config()).unwrap();
        let memfd = handoff.memfd().try_clone_to_owned().unwrap();
        (handoff.into_producer().unwrap(), consumer, memfd)
    };
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let peer = {
        let (stop, writes) = (Arc::clone(&stop), Arc::clone(&writes));
        thread::spawn(move || scribbler(memfd, seed, stop, writes))
    };
    let mut seen = Seen::default();
    for i in 0..FRAMES {
        if i % 16 == 0 {
            // However busy the machine, the peer writes at least once
            // every 16 frames.
            let next = writes.load(Ordering::Relaxed) + 1;
            while writes.load(Ordering::Relaxed) < next {
                thread::yield_now();
            }
        }
        let frame = vec![i as u8; 1 + i * 37 % MAX_FRAME];
        let corrupt = if i % 64 == 0 {
            seen.sent(producer.push(&frame, Duration::from_millis(1)))
        } else {
            seen.sent(producer.try_push(&frame))
        } || (i % 8 == 7 && seen.drain(&mut consumer));
        if !corrupt {
            continue;
        }
        if daemon_produces {
            consumer = attach(|| producer.reset().unwrap(), RingHandoff::into_consumer);
        } else {
            producer = attach(|| consumer.reset().unwrap(), RingHandoff::into_producer);
        }
    }
    stop.store(true, Ordering::Relaxed);
    peer.join().expect("scribbler thread");
    seen
}

#[test]
fn a_peer_scribbling_on_the_header_while_both_ends_run_gets_corrupt_never_a_panic() {
    let mut total = Seen::default();
    for round in 1..=ROUNDS {
        let seen = run(round.wrapping_mul(0x9e37_79b9_7f4a_7c15), round % 2 == 0);
        total.frames += seen.frames;
        total.corrupt += seen.corrupt;
    }
    assert!(total.corrupt > 0, "the scribbles were noticed: {total:?}");
    assert!(
        total.frames > 0,
        "frames got through between them: {total:?}"
    );
}
