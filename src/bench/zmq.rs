//! The ZeroMQ baseline: the seed system's transport, measured in the same
//! run as the rings, with the same work per message.
//!
//! Round trips go over REQ/REP and streaming over PUSH/PULL, both on
//! `ipc://` sockets in a private temporary directory (removed afterwards;
//! nothing is left in /dev/shm or /tmp). Each message is the same envelope
//! the ring benchmark sends: encoded into a reused buffer, copied by
//! ZeroMQ, and checked on receipt, so the ratio measures the transport. The
//! peer is a thread, or a second process (`pinwheel bench zmq-peer`) like
//! the ring benchmark's.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use hdrhistogram::Histogram;

use super::BenchError;
use super::report::Case;
use super::ring::{PeerMode, STOP, SYNC, pin, sink_counted, warmup};
use crate::latency::{new_histogram, record_duration};
use crate::topology::CpuId;
use pinwheel_ipc::wire::{
    self, AgentId, Envelope, Payload, PayloadKind, Priority, Scratch, TopicId,
};

/// How long a receive may wait before the peer counts as gone.
const WAIT_MS: i32 = 10_000;

/// A ZeroMQ run.
#[derive(Debug, Clone)]
pub struct ZmqBench {
    /// Client CPU, then server CPU.
    pub cpus: [CpuId; 2],
    /// The server's executable for two-process runs (`None`: threads).
    pub peer_exe: Option<PathBuf>,
    /// Request body bytes.
    pub size: usize,
    /// Round trips, and messages streamed.
    pub msgs: u64,
}

fn zmq_err(what: &'static str) -> impl FnOnce(zmq::Error) -> BenchError {
    move |err| BenchError::Zmq {
        what,
        reason: err.to_string(),
    }
}

/// Encodes envelopes into one reused, aligned buffer.
struct Codec {
    buffer: rkyv::util::AlignedVec<16>,
    scratch: Box<Scratch>,
}

impl Codec {
    fn new(size: usize) -> Self {
        let mut buffer = rkyv::util::AlignedVec::new();
        buffer.resize(size + 1024, 0);
        Self {
            buffer,
            scratch: Box::new(Scratch::new()),
        }
    }

    fn encode(&mut self, env: &Envelope<'_>) -> Result<&[u8], BenchError> {
        let len = wire::encode_into(env, &mut self.buffer, &mut self.scratch).map_err(|err| {
            BenchError::Peer {
                reason: format!("encode: {err}"),
            }
        })?;
        Ok(&self.buffer[..len])
    }
}

/// Checks a received message (copied to an aligned buffer, as a ring's
/// untrusted end does) and returns its kind, correlation and body length.
fn check(
    message: &[u8],
    aligned: &mut rkyv::util::AlignedVec<16>,
) -> Result<(PayloadKind, u64, usize), BenchError> {
    aligned.clear();
    aligned.extend_from_slice(message);
    let env = wire::decode(aligned).map_err(|err| BenchError::Peer {
        reason: format!("decode: {err}"),
    })?;
    let seq = match env.to_envelope().payload {
        Payload::Heartbeat { seq } => seq,
        _ => env.correlation(),
    };
    Ok((env.kind(), seq, env.body().len()))
}

fn envelope(i: u64, payload: Payload<'_>) -> Envelope<'_> {
    Envelope {
        from: AgentId(1),
        to: AgentId(2),
        topic: TopicId::NONE,
        correlation: i,
        priority: Priority::High,
        sent_ns: 0,
        deadline_ns: 0,
        payload,
    }
}

impl ZmqBench {
    /// Runs REQ/REP round trips, then PUSH/PULL streaming.
    pub fn run(&self) -> Result<Case, BenchError> {
        let dir = tempfile::Builder::new()
            .prefix("pinwheel-zmq-")
            .tempdir()
            .map_err(|source| BenchError::Spawn {
                exe: PathBuf::from("tempdir"),
                source,
            })?;
        let rtt = self.ping_pong(&format!("ipc://{}/reqrep", dir.path().display()))?;
        let throughput_msgs_per_s =
            self.stream(&format!("ipc://{}/pushpull", dir.path().display()))?;
        Ok(Case {
            rtt,
            throughput_msgs_per_s,
            idle_cpu_percent: None,
        })
    }

    /// REQ/REP round trips over TCP on loopback (the transport the seed's
    /// hosts use between them), for `bench nats`.
    pub fn tcp_round_trips(&self) -> Result<Histogram<u64>, BenchError> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|source| BenchError::Spawn {
                exe: PathBuf::from("tcp port"),
                source,
            })?
            .port();
        self.ping_pong(&format!("tcp://127.0.0.1:{port}"))
    }

    fn ping_pong(&self, endpoint: &str) -> Result<Histogram<u64>, BenchError> {
        let context = zmq::Context::new();
        let socket = context.socket(zmq::REQ).map_err(zmq_err("socket"))?;
        socket.set_rcvtimeo(WAIT_MS).map_err(zmq_err("timeout"))?;
        socket.bind(endpoint).map_err(zmq_err("bind"))?;
        let peer = self.start_peer(PeerMode::Echo, endpoint)?;
        pin(self.cpus[0])?;
        let (mut codec, mut aligned, mut reply) = (
            Codec::new(self.size),
            rkyv::util::AlignedVec::new(),
            zmq::Message::new(),
        );
        let body = vec![0x5a; self.size];
        let warmup = warmup(self.msgs);
        let mut histogram = new_histogram();
        for i in 0..=warmup + self.msgs {
            let last = i == warmup + self.msgs;
            let start = Instant::now();
            let env = if last {
                envelope(STOP, Payload::Heartbeat { seq: STOP })
            } else {
                envelope(
                    i,
                    Payload::Request {
                        method: 1,
                        body: &body,
                    },
                )
            };
            socket
                .send(codec.encode(&env)?, 0)
                .map_err(zmq_err("send request"))?;
            socket
                .recv(&mut reply, 0)
                .map_err(zmq_err("receive reply"))?;
            let (kind, seq, len) = check(&reply, &mut aligned)?;
            if last {
                break;
            }
            if kind != PayloadKind::Reply || seq != i || len != self.size {
                return Err(BenchError::Peer {
                    reason: format!("zeromq reply to {i} is wrong"),
                });
            }
            if i >= warmup {
                record_duration(&mut histogram, start.elapsed());
            }
        }
        peer.wait()?;
        Ok(histogram)
    }

    fn stream(&self, endpoint: &str) -> Result<f64, BenchError> {
        let context = zmq::Context::new();
        let push = context.socket(zmq::PUSH).map_err(zmq_err("socket"))?;
        push.bind(endpoint).map_err(zmq_err("bind"))?;
        let ack = context.socket(zmq::PULL).map_err(zmq_err("socket"))?;
        ack.set_rcvtimeo(WAIT_MS).map_err(zmq_err("timeout"))?;
        let ack_endpoint = format!("{endpoint}-ack");
        ack.bind(&ack_endpoint).map_err(zmq_err("bind"))?;
        let peer = self.start_peer(PeerMode::Sink, endpoint)?;
        pin(self.cpus[0])?;
        let mut stream = Stream {
            push,
            ack,
            codec: Codec::new(self.size),
            body: vec![0xa5; self.size],
        };
        let warmup = warmup(self.msgs);
        stream.send(0..warmup)?;
        sink_counted(stream.ask(SYNC)?, warmup)?;
        let start = Instant::now();
        stream.send(warmup..warmup + self.msgs)?;
        let count = stream.ask(STOP)?;
        let elapsed = start.elapsed();
        peer.wait()?;
        sink_counted(count, warmup + self.msgs)?;
        Ok(self.msgs as f64 / elapsed.as_secs_f64())
    }

    fn start_peer(&self, mode: PeerMode, endpoint: &str) -> Result<Peer, BenchError> {
        let (cpu, size) = (self.cpus[1], self.size);
        match &self.peer_exe {
            None => {
                let endpoint = endpoint.to_owned();
                Ok(Peer::Thread(std::thread::spawn(move || {
                    serve_peer(mode, &endpoint, cpu, size)
                })))
            }
            Some(exe) => {
                let mode = match mode {
                    PeerMode::Echo => "echo",
                    PeerMode::Sink => "sink",
                };
                let child = Command::new(exe)
                    .args([
                        "bench",
                        "zmq-peer",
                        "--mode",
                        mode,
                        "--endpoint",
                        endpoint,
                        "--cpu",
                        &cpu.to_string(),
                        "--size",
                        &size.to_string(),
                    ])
                    .stdin(Stdio::null())
                    .spawn()
                    .map_err(|source| BenchError::Spawn {
                        exe: exe.clone(),
                        source,
                    })?;
                Ok(Peer::Process(child))
            }
        }
    }
}

enum Peer {
    Thread(std::thread::JoinHandle<Result<(), BenchError>>),
    Process(std::process::Child),
}

impl Peer {
    fn wait(self) -> Result<(), BenchError> {
        match self {
            Peer::Thread(handle) => handle.join().map_err(|_| BenchError::Peer {
                reason: "zeromq peer thread panicked".into(),
            })?,
            Peer::Process(mut child) => {
                let status = child.wait().map_err(|source| BenchError::Spawn {
                    exe: PathBuf::from("zmq-peer"),
                    source,
                })?;
                if status.success() {
                    Ok(())
                } else {
                    Err(BenchError::Peer {
                        reason: format!("zmq-peer exited with {status}"),
                    })
                }
            }
        }
    }
}

/// The server side (`pinwheel bench zmq-peer`): connects, pins, serves
/// until the stop heartbeat.
pub fn serve_peer(
    mode: PeerMode,
    endpoint: &str,
    cpu: CpuId,
    size: usize,
) -> Result<(), BenchError> {
    pin(cpu)?;
    let context = zmq::Context::new();
    let socket = context
        .socket(if mode == PeerMode::Echo {
            zmq::REP
        } else {
            zmq::PULL
        })
        .map_err(zmq_err("socket"))?;
    socket.set_rcvtimeo(WAIT_MS).map_err(zmq_err("timeout"))?;
    socket.connect(endpoint).map_err(zmq_err("connect"))?;
    let (mut codec, mut aligned, mut message) = (
        Codec::new(size),
        rkyv::util::AlignedVec::new(),
        zmq::Message::new(),
    );
    let body = vec![0x5a; size];
    let mut count = 0u64;
    let mut ack = None;
    loop {
        socket.recv(&mut message, 0).map_err(zmq_err("receive"))?;
        let (kind, seq, len) = check(&message, &mut aligned)?;
        let heartbeat = kind == PayloadKind::Heartbeat;
        let stop = heartbeat && seq != SYNC;
        match mode {
            PeerMode::Echo => socket
                .send(codec.encode(&echo(stop, seq, &body[..len]))?, 0)
                .map_err(zmq_err("reply"))?,
            PeerMode::Sink if heartbeat => {
                let ack = match &mut ack {
                    Some(ack) => ack,
                    None => {
                        let socket = context.socket(zmq::PUSH).map_err(zmq_err("socket"))?;
                        socket
                            .connect(&format!("{endpoint}-ack"))
                            .map_err(zmq_err("connect"))?;
                        ack.insert(socket)
                    }
                };
                // The context's default linger delivers the last answer
                // before it closes.
                ack.send(
                    codec.encode(&envelope(count, Payload::Heartbeat { seq: count }))?,
                    0,
                )
                .map_err(zmq_err("acknowledge"))?;
            }
            PeerMode::Sink => count += 1,
        }
        if stop {
            return Ok(());
        }
    }
}

/// The client's side of a streaming run.
struct Stream {
    push: zmq::Socket,
    ack: zmq::Socket,
    codec: Codec,
    body: Vec<u8>,
}

impl Stream {
    /// Pushes requests numbered `numbers`.
    fn send(&mut self, numbers: std::ops::Range<u64>) -> Result<(), BenchError> {
        for i in numbers {
            let request = envelope(
                i,
                Payload::Request {
                    method: 1,
                    body: &self.body,
                },
            );
            self.push
                .send(self.codec.encode(&request)?, 0)
                .map_err(zmq_err("push"))?;
        }
        Ok(())
    }

    /// Pushes the heartbeat `seq` ([`SYNC`] or [`STOP`]) and returns the
    /// sink's count, which it sends once it has read every request before.
    fn ask(&mut self, seq: u64) -> Result<u64, BenchError> {
        self.push
            .send(
                self.codec
                    .encode(&envelope(seq, Payload::Heartbeat { seq }))?,
                0,
            )
            .map_err(zmq_err("push heartbeat"))?;
        let mut message = zmq::Message::new();
        self.ack
            .recv(&mut message, 0)
            .map_err(zmq_err("receive count"))?;
        let (_, count, _) = check(&message, &mut rkyv::util::AlignedVec::new())?;
        Ok(count)
    }
}

/// The echo peer's answer: the same sequence and length back, or the stop
/// marker returned so the driver knows the peer saw it.
fn echo(stop: bool, seq: u64, body: &[u8]) -> Envelope<'_> {
    if stop {
        envelope(STOP, Payload::Heartbeat { seq: STOP })
    } else {
        envelope(seq, Payload::Reply { status: 0, body })
    }
}
