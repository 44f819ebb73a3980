//! `pinwheel bench nats`: the round trip of a call between hosts, NATS
//! request/reply through a nats-server on loopback, against ZeroMQ REQ/REP
//! over TCP on loopback in the same run, with the
//! same work per message.
//!
//! Each round trip carries what the cluster link's call plane carries: a
//! wire envelope (a request with a `--size` body) encoded into a reused
//! buffer, sent; the responder copies it to an aligned buffer, checks it
//! with the checked decoder (bytes from another host are untrusted),
//! encodes the reply and sends it back; the caller checks the reply the
//! same way and that its correlation matches. NATS adds the server hop
//! (client -> nats-server -> responder and back) that ZeroMQ's direct TCP
//! connection does not have; that hop is what the cluster pays for
//! identity, permissions, subject routing and JetStream beside it.
//!
//! The caller and the responder are pinned to `--cpus`, each on its own
//! current-thread tokio runtime with its own NATS connection (as two
//! daemons would be); the nats-server process is not pinned.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use rkyv::util::AlignedVec;

use super::BenchError;
use crate::latency::{LatencySummary, new_histogram, record_duration};
use crate::runtime::affinity::pin_current_thread;
use crate::runtime::node::reply_to;
use crate::topology::CpuId;
use pinwheel_ipc::wire::{
    self, AgentId, Envelope, Payload, PayloadKind, Priority, Scratch, TopicId,
};

/// The subject the responder serves (a call from host `bench` to agent
/// `Echo` on host `peer`, as the call plane would name it).
const SUBJECT: &str = "pinwheel.bench.call.peer.bench.Echo";
/// Longest wait for the responder or a reply.
const PATIENCE: Duration = Duration::from_secs(10);
/// The correlation of the last request, which stops the responder.
const STOP: u64 = u64::MAX;

/// A `bench nats` run.
#[derive(Debug, Clone)]
pub struct NatsBench {
    /// The nats-server to go through.
    pub url: String,
    /// The caller's CPU, then the responder's.
    pub cpus: [CpuId; 2],
    /// Request body bytes.
    pub size: usize,
    /// Round trips timed (after a warm-up of a tenth, at most 10,000).
    pub msgs: u64,
    /// Also time ZeroMQ REQ/REP over TCP.
    pub zmq: bool,
}

/// What a run measured.
#[derive(Debug)]
pub struct NatsReport {
    /// What ran.
    pub bench: NatsBench,
    /// NATS request/reply round trips.
    pub nats: Histogram<u64>,
    /// ZeroMQ REQ/REP over TCP round trips, when asked for.
    pub zmq: Option<Histogram<u64>>,
}

/// The JSON of a run.
#[derive(Debug, serde::Serialize)]
struct NatsJson<'a> {
    url: &'a str,
    cpus: [u32; 2],
    size: usize,
    msgs: u64,
    nats_rtt_ns: LatencySummary,
    zmq_tcp_rtt_ns: Option<LatencySummary>,
}

fn nats_err(what: &'static str) -> impl FnOnce(String) -> BenchError {
    move |reason| BenchError::Nats { what, reason }
}

fn runtime() -> Result<tokio::runtime::Runtime, BenchError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| nats_err("runtime")(e.to_string()))
}

fn pin(cpu: CpuId) -> Result<(), BenchError> {
    pin_current_thread(cpu).map_err(|source| BenchError::Pin { cpu, source })
}

/// Encodes `env` into `buffer` and returns the bytes as a NATS payload.
fn encode(
    env: &Envelope<'_>,
    buffer: &mut AlignedVec<16>,
    scratch: &mut Scratch,
) -> Result<Vec<u8>, BenchError> {
    let len = wire::encoded_len(env, scratch).map_err(|e| nats_err("encode")(e.to_string()))?;
    buffer.clear();
    buffer.resize(len, 0);
    let written = wire::encode_into(env, buffer.as_mut_slice(), scratch)
        .map_err(|e| nats_err("encode")(e.to_string()))?;
    Ok(buffer[..written].to_vec())
}

/// Checks `bytes` as an envelope (copied to an aligned buffer first) and
/// returns its kind and correlation.
fn check(bytes: &[u8], aligned: &mut AlignedVec<16>) -> Result<(PayloadKind, u64), BenchError> {
    aligned.clear();
    aligned.extend_from_slice(bytes);
    let env = wire::decode(aligned).map_err(|e| nats_err("decode")(e.to_string()))?;
    Ok((env.kind(), env.correlation()))
}

fn request(correlation: u64, body: &[u8]) -> Envelope<'_> {
    Envelope {
        from: AgentId(1),
        to: AgentId(2),
        topic: TopicId::NONE,
        correlation,
        priority: Priority::High,
        sent_ns: 0,
        deadline_ns: 0,
        payload: Payload::Request { method: 1, body },
    }
}

impl NatsBench {
    /// Times NATS round trips, then ZeroMQ's if asked.
    pub fn run(&self) -> Result<NatsReport, BenchError> {
        let nats = self.nats_round_trips()?;
        let zmq = if self.zmq {
            Some(self.zmq_round_trips()?)
        } else {
            None
        };
        Ok(NatsReport {
            bench: self.clone(),
            nats,
            zmq,
        })
    }

    fn nats_round_trips(&self) -> Result<Histogram<u64>, BenchError> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (url, cpu) = (self.url.clone(), self.cpus[1]);
        let responder = std::thread::spawn(move || respond(&url, cpu, &ready_tx));
        ready_rx
            .recv_timeout(PATIENCE)
            .map_err(|_| nats_err("responder")("never subscribed".to_owned()))??;
        pin(self.cpus[0])?;
        let timed = runtime()?.block_on(self.call_loop());
        let answered = responder
            .join()
            .map_err(|_| nats_err("responder")("panicked".to_owned()))?;
        let histogram = timed?;
        answered?;
        Ok(histogram)
    }

    async fn call_loop(&self) -> Result<Histogram<u64>, BenchError> {
        let client = async_nats::connect(self.url.as_str())
            .await
            .map_err(|e| nats_err("connect")(e.to_string()))?;
        let (mut buffer, mut aligned, mut scratch) =
            (AlignedVec::new(), AlignedVec::new(), Scratch::new());
        let body = vec![0x5a; self.size];
        let warmup = (self.msgs / 10).min(10_000);
        let mut histogram = new_histogram();
        for i in 0..=warmup + self.msgs {
            let last = i == warmup + self.msgs;
            let correlation = if last { STOP } else { i };
            let start = Instant::now();
            let bytes = encode(&request(correlation, &body), &mut buffer, &mut scratch)?;
            let reply = tokio::time::timeout(PATIENCE, client.request(SUBJECT, bytes.into()))
                .await
                .map_err(|_| nats_err("request")("timed out".to_owned()))?
                .map_err(|e| nats_err("request")(e.to_string()))?;
            let (kind, seq) = check(&reply.payload, &mut aligned)?;
            if kind != PayloadKind::Reply || seq != correlation {
                return Err(nats_err("reply")(format!("the reply to {i} is wrong")));
            }
            if i >= warmup && !last {
                record_duration(&mut histogram, start.elapsed());
            }
        }
        Ok(histogram)
    }

    fn zmq_round_trips(&self) -> Result<Histogram<u64>, BenchError> {
        let zmq = super::zmq::ZmqBench {
            cpus: self.cpus,
            peer_exe: None,
            size: self.size,
            msgs: self.msgs,
        };
        zmq.tcp_round_trips()
    }
}

/// The responder: pinned, its own runtime and connection; answers every
/// request with a reply carrying its body back, until the stop request.
fn respond(
    url: &str,
    cpu: CpuId,
    ready: &std::sync::mpsc::Sender<Result<(), BenchError>>,
) -> Result<(), BenchError> {
    let setup = pin(cpu).and_then(|()| runtime());
    let rt = match setup {
        Ok(rt) => rt,
        Err(err) => {
            let _ = ready.send(Err(nats_err("responder")(err.to_string())));
            return Err(err);
        }
    };
    rt.block_on(async {
        let subscribed = async {
            let client = async_nats::connect(url).await.map_err(|e| e.to_string())?;
            let sub = client.subscribe(SUBJECT).await.map_err(|e| e.to_string())?;
            client.flush().await.map_err(|e| e.to_string())?;
            Ok::<_, String>((client, sub))
        };
        match subscribed.await {
            Ok((client, sub)) => {
                let _ = ready.send(Ok(()));
                echo(&client, sub).await
            }
            Err(reason) => {
                let _ = ready.send(Err(nats_err("subscribe")(reason.clone())));
                Err(nats_err("subscribe")(reason))
            }
        }
    })
}

/// Answers every request on `sub` with a reply carrying its body back,
/// until the stop request.
async fn echo(
    client: &async_nats::Client,
    mut sub: async_nats::Subscriber,
) -> Result<(), BenchError> {
    let (mut buffer, mut aligned, mut scratch) =
        (AlignedVec::new(), AlignedVec::<16>::new(), Scratch::new());
    while let Some(msg) = sub.next().await {
        aligned.clear();
        aligned.extend_from_slice(&msg.payload);
        let env = wire::decode(&aligned).map_err(|e| nats_err("decode")(e.to_string()))?;
        let stop = env.correlation() == STOP;
        let reply = reply_to(env, 0, env.body());
        let bytes = encode(&reply, &mut buffer, &mut scratch)?;
        let Some(to) = msg.reply else { continue };
        client
            .publish(to, bytes.into())
            .await
            .map_err(|e| nats_err("reply")(e.to_string()))?;
        if stop {
            return client
                .flush()
                .await
                .map_err(|e| nats_err("flush")(e.to_string()));
        }
    }
    Err(nats_err("subscription")("ended".to_owned()))
}

impl NatsReport {
    /// The report as a table, with ZeroMQ's row and the ratio when run.
    pub fn to_table(&self) -> String {
        use std::fmt::Write as _;
        let b = &self.bench;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "pinwheel bench nats: CPUs {} and {}, {}-byte bodies, {} round trips each, via {}",
            b.cpus[0], b.cpus[1], b.size, b.msgs, b.url
        );
        super::percentile_titles(&mut out, "round trip", 36);
        let _ = writeln!(out);
        let mut rows = vec![("NATS request/reply (loopback)", &self.nats)];
        if let Some(zmq) = &self.zmq {
            rows.push(("ZeroMQ REQ/REP tcp (loopback)", zmq));
        }
        for (name, histogram) in rows {
            super::percentile_cells(&mut out, name, 36, histogram);
            let _ = writeln!(out);
        }
        if let Some(zmq) = &self.zmq {
            let ratio = |q: f64| {
                self.nats.value_at_quantile(q) as f64 / zmq.value_at_quantile(q).max(1) as f64
            };
            let _ = writeln!(
                out,
                "\nNATS / ZeroMQ: p50 {:.2}x, p99 {:.2}x",
                ratio(0.5),
                ratio(0.99)
            );
        }
        out
    }

    /// The report as JSON.
    pub fn to_json(&self) -> String {
        let b = &self.bench;
        let json = NatsJson {
            url: &b.url,
            cpus: [b.cpus[0].0, b.cpus[1].0],
            size: b.size,
            msgs: b.msgs,
            nats_rtt_ns: LatencySummary::of(&self.nats),
            zmq_tcp_rtt_ns: self.zmq.as_ref().map(LatencySummary::of),
        };
        let mut text = serde_json::to_string_pretty(&json).expect("plain data");
        text.push('\n');
        text
    }
}
