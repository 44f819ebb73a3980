//! `pinwheel bench`: the benchmark commands, and the hidden peer commands
//! a two-process benchmark starts.

use std::io::Write;

use clap::{Args, Subcommand, ValueEnum};

use crate::bench::ring::{PeerMode, RingBench, serve_peer};
use crate::bench::router::RouterBench;
use crate::bench::{RingReport, render_ring_json, render_ring_table};
use crate::error::DaemonError;
use crate::ring::WaitStrategy;
use crate::topology::{CpuId, CpuSet, LIVE_SYSFS};

/// `pinwheel bench ...`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Round trips and one-way streaming of envelopes over rings between two CPUs.
    Ring(BenchRingArgs),
    /// What the runtime adds per message: a call between agents on two
    /// executors against the bare ring between two threads, same CPUs.
    Router(BenchRouterArgs),
    /// The server side of a two-process ring benchmark (started by `bench ring`).
    #[command(hide = true)]
    RingPeer(RingPeerArgs),
    /// The server side of a two-process ZeroMQ baseline (started by `bench ring`).
    #[cfg(feature = "zmq-baseline")]
    #[command(hide = true)]
    ZmqPeer(ZmqPeerArgs),
}

/// How consumers wait, on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WaitArg {
    /// Busy-poll.
    Spin,
    /// Sleep on an eventfd doorbell.
    Park,
    /// Spin for a budget that follows the traffic, then park.
    Adaptive,
}

impl From<WaitArg> for WaitStrategy {
    fn from(wait: WaitArg) -> Self {
        match wait {
            WaitArg::Spin => WaitStrategy::Spin,
            WaitArg::Park => WaitStrategy::Park,
            WaitArg::Adaptive => WaitStrategy::Adaptive,
        }
    }
}

/// A baseline to measure in the same run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Baseline {
    /// ZeroMQ ipc:// REQ/REP and PUSH/PULL (build with --features zmq-baseline).
    Zmq,
}

/// `pinwheel bench ring`.
#[derive(Debug, Args)]
pub struct BenchRingArgs {
    /// The client's and the server's CPU.
    #[arg(long, value_name = "A,B", default_value = "0,1")]
    pub cpus: String,
    /// Run the server on a thread of this process instead of a second process.
    #[arg(long)]
    pub threads: bool,
    /// How consumers wait for messages.
    #[arg(long, value_enum, default_value_t = WaitArg::Spin)]
    pub wait: WaitArg,
    /// Request body size, bytes.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Round trips to time, and messages to stream.
    #[arg(long, default_value_t = 200_000)]
    pub msgs: u64,
    /// Longest adaptive spin before parking, microseconds.
    #[arg(long, default_value_t = 50)]
    pub spin_us: u32,
    /// Also measure this baseline in the same run and print the ratios.
    #[arg(long, value_enum)]
    pub baseline: Option<Baseline>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `pinwheel bench router`.
#[derive(Debug, Args)]
pub struct BenchRouterArgs {
    /// The caller's and the callee's CPU.
    #[arg(long, value_name = "A,B", default_value = "0,1")]
    pub cpus: String,
    /// How ring consumers and executors wait for messages.
    #[arg(long, value_enum, default_value_t = WaitArg::Spin)]
    pub wait: WaitArg,
    /// Request body size, bytes (at most 512).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Round trips per case.
    #[arg(long, default_value_t = 100_000)]
    pub msgs: u64,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `pinwheel bench ring-peer`.
#[derive(Debug, Args)]
pub struct RingPeerArgs {
    /// What to do with requests.
    #[arg(long, value_enum)]
    pub mode: PeerMode,
    /// CPU to pin to.
    #[arg(long)]
    pub cpu: u32,
}

/// `pinwheel bench zmq-peer`.
#[cfg(feature = "zmq-baseline")]
#[derive(Debug, Args)]
pub struct ZmqPeerArgs {
    /// What to do with requests.
    #[arg(long, value_enum)]
    pub mode: PeerMode,
    /// ZeroMQ endpoint to connect to.
    #[arg(long)]
    pub endpoint: String,
    /// CPU to pin to.
    #[arg(long)]
    pub cpu: u32,
    /// Body size, bytes.
    #[arg(long)]
    pub size: usize,
}

/// Runs a bench command.
pub(super) fn run(command: BenchCommand, out: &mut dyn Write) -> Result<(), DaemonError> {
    match command {
        BenchCommand::Ring(args) => ring(&args, out),
        BenchCommand::Router(args) => router(&args, out),
        BenchCommand::RingPeer(args) => Ok(serve_peer(args.mode, CpuId(args.cpu))?),
        #[cfg(feature = "zmq-baseline")]
        BenchCommand::ZmqPeer(args) => Ok(crate::bench::zmq::serve_peer(
            args.mode,
            &args.endpoint,
            CpuId(args.cpu),
            args.size,
        )?),
    }
}

fn ring(args: &BenchRingArgs, out: &mut dyn Write) -> Result<(), DaemonError> {
    let cpus = bench_cpus(&args.cpus)?;
    let peer_exe = if args.threads {
        None
    } else {
        Some(
            std::env::current_exe().map_err(|source| DaemonError::Usage {
                message: format!("cannot find this executable to start the peer: {source}"),
            })?,
        )
    };
    let bench = RingBench {
        cpus,
        peer_exe,
        wait: args.wait.into(),
        size: args.size,
        msgs: args.msgs.max(1),
        spin_us: args.spin_us,
    };
    let zmq = match args.baseline {
        None => None,
        Some(Baseline::Zmq) => Some(zmq_baseline(&bench)?),
    };
    let ring = bench.run()?;
    let report = RingReport { bench, ring, zmq };
    let text = if args.json {
        render_ring_json(&report)
    } else {
        render_ring_table(&report)
    };
    out.write_all(text.as_bytes())?;
    Ok(())
}

fn router(args: &BenchRouterArgs, out: &mut dyn Write) -> Result<(), DaemonError> {
    if args.size > MAX_ROUTER_BODY {
        return Err(DaemonError::Usage {
            message: format!(
                "--size {}: runtime messages carry at most {MAX_ROUTER_BODY} body bytes",
                args.size
            ),
        });
    }
    let bench = RouterBench {
        cpus: bench_cpus(&args.cpus)?,
        wait: args.wait.into(),
        size: args.size,
        msgs: args.msgs.max(1),
    };
    let report = bench.run()?;
    let text = if args.json {
        report.to_json()
    } else {
        report.to_table()
    };
    out.write_all(text.as_bytes())?;
    Ok(())
}

/// Largest body `bench router` sends (frames are 1 KiB with the envelope).
const MAX_ROUTER_BODY: usize = 512;

#[cfg(feature = "zmq-baseline")]
fn zmq_baseline(bench: &RingBench) -> Result<crate::bench::Case, DaemonError> {
    let zmq = crate::bench::zmq::ZmqBench {
        cpus: bench.cpus,
        peer_exe: bench.peer_exe.clone(),
        size: bench.size,
        msgs: bench.msgs,
    };
    Ok(zmq.run()?)
}

#[cfg(not(feature = "zmq-baseline"))]
fn zmq_baseline(_bench: &RingBench) -> Result<crate::bench::Case, DaemonError> {
    Err(DaemonError::Usage {
        message: "this pinwheel was built without the ZeroMQ baseline; install libzmq3-dev and rebuild with `cargo build --release --features zmq-baseline`".into(),
    })
}

/// Two distinct CPUs this process may run on.
fn bench_cpus(text: &str) -> Result<[CpuId; 2], DaemonError> {
    let usage = |message: String| DaemonError::Usage { message };
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    let [a, b] = parts.as_slice() else {
        return Err(usage(format!(
            "--cpus {text:?}: give two CPUs, like --cpus 0,1"
        )));
    };
    let parse = |p: &str| {
        p.parse::<u32>()
            .map(CpuId)
            .map_err(|_| usage(format!("--cpus {text:?}: {p:?} is not a CPU number")))
    };
    let (a, b) = (parse(a)?, parse(b)?);
    if a == b {
        return Err(usage(format!(
            "--cpus {text:?}: the client and the server need two different CPUs"
        )));
    }
    let host = crate::topology::detect_host(std::path::Path::new(LIVE_SYSFS))?;
    let usable: CpuSet = host.cpu_set();
    for cpu in [a, b] {
        if !usable.contains(cpu) {
            return Err(usage(format!(
                "--cpus {text:?}: CPU {cpu} is not online and usable here (usable: {usable})"
            )));
        }
    }
    Ok([a, b])
}
