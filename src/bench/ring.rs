//! `pinwheel bench ring`: round trips and one-way streaming of real
//! envelopes over rings between two pinned CPUs.
//!
//! Both timed phases start after an un-timed warm-up of a tenth of the run
//! (at most 10 000 messages, [`warmup`]): it faults the rings' pages in on
//! both sides and brings the two CPUs up to speed.
//!
//! Ping-pong: the client on the first CPU sends a request envelope with a
//! `size`-byte body and waits for the reply; the server on the second CPU
//! echoes the body back in a reply. Every round trip after the warm-up
//! goes into an HdrHistogram.
//!
//! Streaming: the client encodes requests as fast as the ring takes them,
//! publishing every [`BATCH`] frames (batched publish); the server decodes
//! each (checked). After the warm-up the client asks the server for its
//! count ([`SYNC`]), answered once the server has read the warm-up, then
//! streams `msgs` more and asks again with the stop. The rate is `msgs` over the
//! time from the first timed send to the stop's answer.
//!
//! The server runs on a thread (`--threads`: trusted rings, frames read in
//! place) or, by default, in a second process: the same binary started as
//! `pinwheel bench ring-peer`, which attaches to the rings through a
//! `PeerLink` and reads untrusted frames the way an external agent's
//! would (copied, then checked). Every wait has a timeout, so a lost peer
//! ends the run with an error instead of a hang.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::BenchError;
use super::report::Case;
use crate::latency::{new_histogram, record_duration};
use crate::runtime::affinity::pin_current_thread;
use crate::runtime::offcpu::thread_cpu_ns;
use crate::topology::CpuId;
use pinwheel_ipc::ring::{
    Consumer, PeerLink, Producer, RingConfig, RingError, WaitStrategy, export_consumer,
    export_producer, frame_slots, shm_ring,
};
use pinwheel_ipc::wire::{
    AgentId, ArchivedEnvelope, Envelope, Payload, PayloadKind, Priority, Scratch, TopicId,
    encoded_len,
};

/// Frames per publish when streaming.
pub const BATCH: u64 = 32;
/// How long any single wait of a run may take.
const WAIT: Duration = Duration::from_secs(10);
/// Heartbeat sequence number that ends a server.
pub(super) const STOP: u64 = u64::MAX;
/// Heartbeat sequence number that asks a server for what it answers the
/// stop with (a sink's count, an echo's CPU time), and lets it go on.
pub(super) const SYNC: u64 = u64::MAX - 1;
/// Gap between round trips in the idle phase.
const IDLE_GAP: Duration = Duration::from_millis(10);
/// Round trips in the idle phase (half a second).
const IDLE_ROUNDS: u64 = 50;

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingBench {
    /// Client CPU, then server CPU.
    pub cpus: [CpuId; 2],
    /// The server's executable for two-process runs (`None`: threads).
    pub peer_exe: Option<PathBuf>,
    /// How consumers wait.
    pub wait: WaitStrategy,
    /// Request body bytes.
    pub size: usize,
    /// Round trips, and messages streamed.
    pub msgs: u64,
    /// Adaptive spin ceiling, microseconds.
    pub spin_us: u32,
}

/// What the server does with requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PeerMode {
    /// Reply to each request with its body.
    Echo,
    /// Count requests; acknowledge the count at the end.
    Sink,
}

impl RingBench {
    /// The largest `--size` its rings carry: a frame room of the body plus
    /// 1 KiB, rounded up to a power of two, must fit half of 4096 slots.
    pub const MAX_SIZE: usize = 64 * 1024 - 1024;

    /// Refuses a `size` the rings cannot carry, before anything runs.
    pub fn check_size(&self) -> Result<(), RingError> {
        self.ring_config().validate()
    }

    fn ring_config(&self) -> RingConfig {
        RingConfig {
            slots: 4096,
            max_frame: (self.size + 1024).next_power_of_two(),
            wait: self.wait,
            spin_us: self.spin_us,
        }
    }

    /// Runs ping-pong, streaming, then the idle phase.
    pub fn run(&self) -> Result<Case, BenchError> {
        let mut case = self.round_trips_and_stream()?;
        case.idle_cpu_percent = Some(self.idle_cpu()?);
        Ok(case)
    }

    /// Runs ping-pong and streaming (no idle phase).
    pub fn round_trips_and_stream(&self) -> Result<Case, BenchError> {
        Ok(Case {
            rtt: self.round_trips()?,
            throughput_msgs_per_s: self.stream()?,
            idle_cpu_percent: None,
        })
    }

    /// Times `msgs` round trips (after a warm-up) of one envelope each way.
    pub fn round_trips(&self) -> Result<Histogram<u64>, BenchError> {
        let mut link = self.connect(PeerMode::Echo)?;
        pin(self.cpus[0])?;
        let body = vec![0x5a; self.size];
        let warmup = warmup(self.msgs);
        let mut histogram = new_histogram();
        for i in 0..warmup + self.msgs {
            let start = Instant::now();
            link.requests
                .send(&request(i, &body), WAIT)
                .map_err(ring("send request"))?;
            next_envelope(&mut link.replies, |reply| check_reply(reply, i, self.size))??;
            if i >= warmup {
                record_duration(&mut histogram, start.elapsed());
            }
        }
        link.finish()?;
        Ok(histogram)
    }

    /// Sparse traffic: one round trip every [`IDLE_GAP`] for [`IDLE_ROUNDS`]
    /// rounds; returns the share of a core the server's thread used.
    pub fn idle_cpu(&self) -> Result<f64, BenchError> {
        let mut link = self.connect(PeerMode::Echo)?;
        pin(self.cpus[0])?;
        let body = vec![0x5a; self.size];
        let start = Instant::now();
        for i in 0..IDLE_ROUNDS {
            std::thread::sleep(IDLE_GAP);
            link.requests
                .send(&request(i, &body), WAIT)
                .map_err(ring("send request"))?;
            next_envelope(&mut link.replies, |reply| check_reply(reply, i, self.size))??;
        }
        let cpu_ns = link.ask(STOP)?;
        let wall = start.elapsed();
        link.wait_peer()?;
        Ok(cpu_ns as f64 / wall.as_nanos() as f64 * 100.0)
    }

    fn stream(&self) -> Result<f64, BenchError> {
        let mut link = self.connect(PeerMode::Sink)?;
        pin(self.cpus[0])?;
        let body = vec![0xa5; self.size];
        let warmup = warmup(self.msgs);
        link.stream(0..warmup, &body)?;
        sink_counted(link.ask(SYNC)?, warmup)?;
        let start = Instant::now();
        link.stream(warmup..warmup + self.msgs, &body)?;
        let count = link.ask(STOP)?;
        let elapsed = start.elapsed();
        link.wait_peer()?;
        sink_counted(count, warmup + self.msgs)?;
        Ok(self.msgs as f64 / elapsed.as_secs_f64())
    }

    fn connect(&self, mode: PeerMode) -> Result<Link, BenchError> {
        let config = self.ring_config();
        match &self.peer_exe {
            None => {
                let (requests, peer_requests) = shm_ring(config).map_err(ring("create ring"))?;
                let (peer_replies, replies) = shm_ring(config).map_err(ring("create ring"))?;
                let cpu = self.cpus[1];
                let thread = std::thread::spawn(move || {
                    pin(cpu)?;
                    serve(mode, peer_requests, peer_replies)
                });
                Ok(Link {
                    requests,
                    replies,
                    peer: Peer::Thread(Some(thread)),
                })
            }
            Some(exe) => self.spawn_peer(exe, mode, config),
        }
    }

    fn spawn_peer(
        &self,
        exe: &PathBuf,
        mode: PeerMode,
        config: RingConfig,
    ) -> Result<Link, BenchError> {
        let mode = match mode {
            PeerMode::Echo => "echo",
            PeerMode::Sink => "sink",
        };
        let mut command = Command::new(exe);
        command
            .args([
                "bench",
                "ring-peer",
                "--mode",
                mode,
                "--cpu",
                &self.cpus[1].to_string(),
            ])
            .stdin(Stdio::null());
        let (link, child) = PeerLink::spawn(&mut command).map_err(ring("start ring-peer"))?;
        let (requests, handoff) = export_producer(config).map_err(ring("export ring"))?;
        link.send(&handoff).map_err(ring("hand over requests"))?;
        let (replies, handoff) = export_consumer(config).map_err(ring("export ring"))?;
        link.send(&handoff).map_err(ring("hand over replies"))?;
        Ok(Link {
            requests,
            replies,
            peer: Peer::Process { child, _link: link },
        })
    }
}

/// The server side of a two-process run (`pinwheel bench ring-peer`):
/// attaches to the rings its parent sends, pins itself, and serves.
pub fn serve_peer(mode: PeerMode, cpu: CpuId) -> Result<(), BenchError> {
    let link = PeerLink::from_env().map_err(ring("peer link"))?;
    let requests = link.recv(WAIT).map_err(ring("receive requests ring"))?;
    let replies = link.recv(WAIT).map_err(ring("receive replies ring"))?;
    let requests = requests.into_consumer().map_err(ring("attach requests"))?;
    let replies = replies.into_producer().map_err(ring("attach replies"))?;
    pin(cpu)?;
    serve(mode, requests, replies)
}

/// Serves requests until a stop heartbeat.
fn serve(mode: PeerMode, mut requests: Consumer, mut replies: Producer) -> Result<(), BenchError> {
    let mut count = 0u64;
    let cpu_start = thread_cpu_ns();
    loop {
        if !requests.wait(WAIT).map_err(ring("wait for requests"))? {
            return Err(BenchError::Peer {
                reason: "no request for 10 s; the client is gone".into(),
            });
        }
        while let Some(step) = requests
            .try_recv_envelope(|env| handle(mode, env, &mut replies, &mut count, cpu_start))
            .map_err(ring("read request"))?
        {
            if step? {
                return Ok(());
            }
        }
    }
}

/// Handles one request; true when it was the stop. The stop, and a
/// [`SYNC`], are answered with a heartbeat: a sink's carries the count of
/// requests, an echo's the CPU time, in nanoseconds, its thread used since
/// it started serving.
fn handle(
    mode: PeerMode,
    env: &ArchivedEnvelope<'_>,
    replies: &mut Producer,
    count: &mut u64,
    cpu_start: u64,
) -> Result<bool, BenchError> {
    if env.kind() == PayloadKind::Heartbeat {
        let asked = heartbeat_answer(env)?;
        let seq = match mode {
            PeerMode::Sink => *count,
            PeerMode::Echo => thread_cpu_ns().saturating_sub(cpu_start),
        };
        replies
            .send(&heartbeat(seq), WAIT)
            .map_err(ring("acknowledge"))?;
        return Ok(asked != SYNC);
    }
    match mode {
        PeerMode::Sink => *count += 1,
        PeerMode::Echo => {
            let reply = Envelope {
                from: env.to(),
                to: env.from(),
                topic: TopicId::NONE,
                correlation: env.correlation(),
                priority: env.priority(),
                sent_ns: env.sent_ns(),
                deadline_ns: 0,
                payload: Payload::Reply {
                    status: 0,
                    body: env.body(),
                },
            };
            replies.send(&reply, WAIT).map_err(ring("reply"))?;
        }
    }
    Ok(false)
}

fn request(i: u64, body: &[u8]) -> Envelope<'_> {
    Envelope {
        from: AgentId(1),
        to: AgentId(2),
        topic: TopicId::NONE,
        correlation: i,
        priority: Priority::High,
        sent_ns: 0,
        deadline_ns: 0,
        payload: Payload::Request { method: 1, body },
    }
}

fn heartbeat(seq: u64) -> Envelope<'static> {
    Envelope {
        payload: Payload::Heartbeat { seq },
        ..request(seq, &[])
    }
}

/// Slots of pinwheel's ring that one request of this run takes: its frame
/// header and its encoded envelope, rounded up to whole slots.
pub fn frame_slots_of(size: usize) -> Result<u64, BenchError> {
    let body = vec![0; size];
    let len = encoded_len(&request(0, &body), &mut Scratch::new()).map_err(|source| {
        BenchError::Ring {
            what: "size a request",
            source: RingError::Message {
                source: Box::new(source),
            },
        }
    })?;
    Ok(frame_slots(len))
}

/// Un-timed messages before a timed phase of `msgs`: a tenth, at most
/// 10 000 (the ring's 4096 slots five times over at two slots a message).
pub(super) fn warmup(msgs: u64) -> u64 {
    (msgs / 10).min(10_000)
}

/// The number a server answers a heartbeat ([`SYNC`] or [`STOP`]) with.
fn heartbeat_answer(ack: &ArchivedEnvelope<'_>) -> Result<u64, BenchError> {
    match ack.to_envelope().payload {
        Payload::Heartbeat { seq } => Ok(seq),
        _ => Err(BenchError::Peer {
            reason: "server did not answer a heartbeat with one".into(),
        }),
    }
}

/// Fails unless the sink counted `sent` requests.
pub(super) fn sink_counted(count: u64, sent: u64) -> Result<(), BenchError> {
    if count == sent {
        Ok(())
    } else {
        Err(BenchError::Peer {
            reason: format!("sink counted {count} of {sent} messages"),
        })
    }
}

fn check_reply(reply: &ArchivedEnvelope<'_>, i: u64, size: usize) -> Result<(), BenchError> {
    if reply.kind() == PayloadKind::Reply && reply.correlation() == i && reply.body().len() == size
    {
        Ok(())
    } else {
        Err(BenchError::Peer {
            reason: format!("reply to request {i} is wrong: {:?}", reply.to_envelope()),
        })
    }
}

/// Waits for the next envelope and hands it to `read`.
pub(super) fn next_envelope<R>(
    consumer: &mut Consumer,
    mut read: impl FnMut(&ArchivedEnvelope<'_>) -> R,
) -> Result<R, BenchError> {
    loop {
        if let Some(result) = consumer
            .try_recv_envelope(&mut read)
            .map_err(ring("read reply"))?
        {
            return Ok(result);
        }
        if !consumer.wait(WAIT).map_err(ring("wait for reply"))? {
            return Err(BenchError::Peer {
                reason: "no reply for 10 s; the peer is gone".into(),
            });
        }
    }
}

pub(super) fn pin(cpu: CpuId) -> Result<(), BenchError> {
    pin_current_thread(cpu).map_err(|source| BenchError::Pin { cpu, source })
}

fn ring(what: &'static str) -> impl FnOnce(RingError) -> BenchError {
    move |source| BenchError::Ring { what, source }
}

/// The client's two rings and its server.
struct Link {
    requests: Producer,
    replies: Consumer,
    peer: Peer,
}

enum Peer {
    Thread(Option<JoinHandle<Result<(), BenchError>>>),
    Process { child: Child, _link: PeerLink },
}

impl Link {
    /// Writes requests numbered `numbers` as fast as the ring takes them,
    /// publishing every [`BATCH`] frames and at the end.
    fn stream(&mut self, numbers: std::ops::Range<u64>, body: &[u8]) -> Result<(), BenchError> {
        for i in numbers {
            let envelope = request(i, body);
            match self.requests.try_write_envelope(&envelope) {
                Ok(()) => {}
                Err(RingError::Full) => self
                    .requests
                    .send(&envelope, WAIT)
                    .map_err(ring("stream"))?,
                Err(err) => return Err(ring("stream")(err)),
            }
            if i % BATCH == BATCH - 1 {
                self.requests.flush().map_err(ring("publish"))?;
            }
        }
        self.requests.flush().map_err(ring("publish"))
    }

    /// Sends the heartbeat `seq` ([`SYNC`] or [`STOP`]) behind the requests
    /// already written, and returns the server's answer, which comes once
    /// it has read them all.
    fn ask(&mut self, seq: u64) -> Result<u64, BenchError> {
        self.requests
            .send(&heartbeat(seq), WAIT)
            .map_err(ring("send heartbeat"))?;
        next_envelope(&mut self.replies, heartbeat_answer)?
    }

    /// Stops the server and waits for it.
    fn finish(&mut self) -> Result<(), BenchError> {
        self.ask(STOP)?;
        self.wait_peer()
    }

    fn wait_peer(&mut self) -> Result<(), BenchError> {
        match &mut self.peer {
            Peer::Thread(handle) => match handle.take().map(JoinHandle::join) {
                Some(Ok(result)) => result,
                Some(Err(_)) => Err(BenchError::Peer {
                    reason: "server thread panicked".into(),
                }),
                None => Ok(()),
            },
            Peer::Process { child, .. } => {
                let status = child.wait().map_err(|source| BenchError::Spawn {
                    exe: PathBuf::from("ring-peer"),
                    source,
                })?;
                if status.success() {
                    Ok(())
                } else {
                    Err(BenchError::Peer {
                        reason: format!("ring-peer exited with {status}"),
                    })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run on threads, with 64-byte bodies.
    fn sink_bench() -> RingBench {
        RingBench {
            cpus: [CpuId(0), CpuId(1)],
            peer_exe: None,
            wait: WaitStrategy::Spin,
            size: 64,
            msgs: 0,
            spin_us: 0,
        }
    }

    /// A sink on a thread of its own, and the client's ends of its rings.
    fn sink() -> Link {
        sink_bench().connect(PeerMode::Sink).unwrap()
    }

    #[test]
    fn the_largest_size_is_the_largest_the_rings_take() {
        let with = |size| RingBench {
            size,
            ..sink_bench()
        };
        assert!(with(RingBench::MAX_SIZE).check_size().is_ok());
        assert!(matches!(
            with(RingBench::MAX_SIZE + 1).check_size(),
            Err(RingError::Config { .. })
        ));
    }

    #[test]
    fn a_request_with_a_64_byte_body_takes_two_slots_and_an_empty_one_one() {
        assert_eq!(frame_slots_of(64).unwrap(), 2);
        assert_eq!(frame_slots_of(0).unwrap(), 1);
        assert_eq!(frame_slots_of(65).unwrap(), 3);
    }

    #[test]
    fn a_sink_answers_a_sync_with_its_count_and_goes_on_until_the_stop() {
        let mut link = sink();
        let body = [0xa5; 64];

        link.stream(0..100, &body).unwrap();
        assert_eq!(link.ask(SYNC).unwrap(), 100);
        link.stream(100..250, &body).unwrap();
        assert_eq!(link.ask(SYNC).unwrap(), 250);
        assert_eq!(link.ask(STOP).unwrap(), 250);
        link.wait_peer().unwrap();
    }

    #[test]
    fn a_sink_that_counted_other_than_was_sent_fails_the_run() {
        sink_counted(7, 7).unwrap();
        let err = sink_counted(6, 7).unwrap_err().to_string();
        assert!(err.contains("counted 6 of 7"), "{err}");
    }
}
