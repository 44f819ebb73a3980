//! `pinwheel bench`: the benchmark commands, and the hidden peer commands
//! a two-process benchmark starts.
//!
//! With no subcommand, `pinwheel bench` runs the suite (ring, wakeup,
//! mesh) under `--topology`, and `--vs` a second one. Every input is
//! checked before any bench runs: both topology files against this host,
//! the mesh's manifest and plan, the numbers, and the `--out` directory
//! (created if missing). A problem with any of them exits 2 naming the
//! flag.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};

use super::CliError;
use super::run::check_rate;
use crate::bench::agent::{AgentBench, default_echo_exe};
use crate::bench::legacy::LegacyBench;
use crate::bench::mesh::MeshBench;
use crate::bench::ring::{PeerMode, RingBench, frame_slots_of, serve_peer};
use crate::bench::router::RouterBench;
use crate::bench::suite::{SuiteOptions, Target, run_suite};
use crate::bench::turns::ring_and_hand;
use crate::bench::wakeup::WakeupBench;
use crate::bench::{
    BaselineKind, FrameSized, RingReport, render_ring_json, render_ring_table, render_suite_table,
    write_suite_files,
};
use crate::daemon::boot;
use crate::error::DaemonError;
use crate::topology::{CpuId, CpuSet, LIVE_SYSFS};
use pinwheel_ipc::ring::WaitStrategy;

/// `pinwheel bench [SUBCOMMAND]`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    /// One bench in detail; none runs ring, wakeup and mesh in one table.
    #[command(subcommand)]
    pub command: Option<BenchCommand>,
    /// The suite's flags.
    #[command(flatten)]
    pub suite: BenchSuiteArgs,
}

/// `pinwheel bench` with no subcommand: ring, wakeup and mesh.
#[derive(Debug, Args)]
pub struct BenchSuiteArgs {
    /// Topology whose CPUs and class settings the benches use.
    #[arg(long, value_name = "FILE", default_value = "topology/auto.toml")]
    pub topology: PathBuf,
    /// A second topology to run every bench under too, in the same run;
    /// each row then gets its ratio to the first (b/a).
    #[arg(long, value_name = "FILE")]
    pub vs: Option<PathBuf>,
    /// Write each histogram as an HdrHistogram percentile distribution
    /// (.hgrm, microseconds) and each bench as an SVG percentile plot.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Ring round trips.
    #[arg(long, default_value_t = 20_000)]
    pub msgs: u64,
    /// Ring request body size, bytes.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Wake-ups per wakeup case.
    #[arg(long, default_value_t = 2_000)]
    pub loops: u64,
    /// Time between wake-up deadlines, microseconds.
    #[arg(long, value_name = "US", default_value_t = 1_000)]
    pub period_us: u64,
    /// The voice pipeline's manifest, for the mesh.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "agents/voice-pipeline.toml"
    )]
    pub mesh_agents: PathBuf,
    /// How long the mesh runs, seconds.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 10.0,
        allow_negative_numbers = true
    )]
    pub mesh_duration: f64,
    /// Requests a second the mesh's load generator sends.
    #[arg(
        long,
        value_name = "REQ_PER_S",
        default_value_t = 100.0,
        allow_negative_numbers = true
    )]
    pub mesh_rate: f64,
    /// Do not ask for SCHED_FIFO, locked memory or timer slack.
    #[arg(long)]
    pub unprivileged: bool,
}

/// `pinwheel bench ...`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Round trips and one-way streaming of envelopes over rings between two CPUs.
    Ring(BenchRingArgs),
    /// What the runtime adds per message: a call between agents on two
    /// executors against the bare ring between two threads, same CPUs.
    Router(BenchRouterArgs),
    /// How late an agent sleeping in an executor wakes, against a plain
    /// clock_nanosleep thread on the same CPU.
    Wakeup(BenchWakeupArgs),
    /// The daemon's mesh under an offered load: what was offered, sent,
    /// completed, and how long it took; `--overhead`, `--find-max`.
    Mesh(super::bench_mesh::BenchMeshArgs),
    /// A round trip to an agent process (the SDK's echo example) against
    /// the in-daemon call across CPUs, same run, same CPUs.
    Agent(BenchAgentArgs),
    /// A call between hosts: NATS request/reply through a nats-server on
    /// loopback, against ZeroMQ REQ/REP over TCP (`--baseline zmq`).
    Nats(BenchNatsArgs),
    /// The legacy gateway: a pyzmq client through it to a native agent,
    /// against pyzmq client to pyzmq REP server (the seed), same run, same
    /// CPUs.
    Legacy(BenchLegacyArgs),
    /// The server side of a two-process ring benchmark (started by `bench ring`).
    #[command(hide = true)]
    RingPeer(RingPeerArgs),
    /// The server side of a two-process ZeroMQ baseline (started by `bench ring`).
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
    /// ZeroMQ ipc:// REQ/REP and PUSH/PULL (libzmq, built from source).
    Zmq,
    /// A minimal hand-written SPSC ring (64-byte slots, two threads
    /// spinning): the least a ring between the two CPUs costs; again moving
    /// as many slots a message as pinwheel's frame, when that is more
    /// than one.
    Hand,
}

/// `--json`, which every bench that prints a report takes.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl OutputArgs {
    /// Writes the report as JSON or as a table, as asked.
    fn write(
        &self,
        out: &mut dyn Write,
        json: impl FnOnce() -> String,
        table: impl FnOnce() -> String,
    ) -> Result<(), CliError> {
        let text = if self.json { json() } else { table() };
        out.write_all(text.as_bytes())?;
        Ok(())
    }
}

/// `--size` and `--msgs` of the benches that call through the runtime
/// (`bench router`, `bench agent`): the same limit and count for both.
#[derive(Debug, Args)]
pub struct CallLoadArgs {
    /// Request body size, bytes (at most 512).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Round trips per case.
    #[arg(long, default_value_t = 100_000)]
    pub msgs: u64,
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
    /// Table or JSON.
    #[command(flatten)]
    pub output: OutputArgs,
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
    /// Body size and round trips.
    #[command(flatten)]
    pub load: CallLoadArgs,
    /// Table or JSON.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `pinwheel bench agent`.
#[derive(Debug, Args)]
pub struct BenchAgentArgs {
    /// The caller's CPU and the echo process's.
    #[arg(long, value_name = "A,B", default_value = "0,1")]
    pub cpus: String,
    /// How executors and the process wait for messages.
    #[arg(long, value_enum, default_value_t = WaitArg::Spin)]
    pub wait: WaitArg,
    /// How the echo processes wait (their manifest's `wait`; default: as
    /// --wait). `--wait spin --agent-wait park` is a spinning caller and
    /// parked agents: the daemon's side polls, each agent sleeps until a
    /// request wakes it.
    #[arg(long, value_enum)]
    pub agent_wait: Option<WaitArg>,
    /// Body size and round trips.
    #[command(flatten)]
    pub load: CallLoadArgs,
    /// How the echo process parks when it waits (with --wait park or
    /// adaptive): one io_uring wait, or poll(2) then read(2).
    #[arg(long, value_parser = ["uring", "poll"], default_value = "uring")]
    pub park: String,
    /// The echo agent (default: examples/echo beside this executable,
    /// from `cargo build --release -p pinwheel-agent --example echo`).
    #[arg(long, value_name = "FILE")]
    pub echo: Option<std::path::PathBuf>,
    /// Table or JSON.
    #[command(flatten)]
    pub output: OutputArgs,
    /// The echo is python/examples/echo.py run by --python-exe (the
    /// `pinwheel` package installed there), and the same run times pyzmq
    /// REQ/REP between Python processes (python/bench/zmq_chain.py; pyzmq
    /// installed there too).
    #[arg(long)]
    pub python: bool,
    /// With --python: the interpreter, a venv's (`pip install
    /// './python[bench]'`); the agent runs as `nobody`, who must be able to
    /// execute it.
    #[arg(long, value_name = "FILE", default_value = "/usr/bin/python3")]
    pub python_exe: std::path::PathBuf,
    /// With --python: the repository's python/ directory.
    #[arg(long, value_name = "DIR", default_value = "python")]
    pub python_dir: std::path::PathBuf,
}

/// `pinwheel bench legacy`.
#[derive(Debug, Args)]
pub struct BenchLegacyArgs {
    /// The pyzmq client's CPU, and the server side's (the gateway and the
    /// native agent, or the pyzmq REP server).
    #[arg(long, value_name = "A,B", default_value = "0,1")]
    pub cpus: String,
    /// How the agent's executor waits (it shares its CPU with the gateway
    /// thread, so it parks by default).
    #[arg(long, value_enum, default_value_t = WaitArg::Park)]
    pub wait: WaitArg,
    /// The gateway thread's CPU, as a topology's control CPU (default:
    /// the server's, B).
    #[arg(long, value_name = "CPU")]
    pub gateway_cpu: Option<u32>,
    /// JSON bytes of each request's data (at most 512).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Round trips per case.
    #[arg(long, default_value_t = 20_000)]
    pub msgs: u64,
    /// The Python interpreter, with pyzmq (`pip install
    /// './python[bench]'`).
    #[arg(long, value_name = "FILE", default_value = "/usr/bin/python3")]
    pub python_exe: std::path::PathBuf,
    /// The repository's python/ directory.
    #[arg(long, value_name = "DIR", default_value = "python")]
    pub python_dir: std::path::PathBuf,
    /// Table or JSON.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `pinwheel bench nats`.
#[derive(Debug, Args)]
pub struct BenchNatsArgs {
    /// The nats-server to go through.
    #[arg(long, value_name = "URL", default_value = "nats://127.0.0.1:4222")]
    pub nats: String,
    /// The caller's and the responder's CPU.
    #[arg(long, value_name = "A,B", default_value = "0,1")]
    pub cpus: String,
    /// Request body size, bytes.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Round trips per transport.
    #[arg(long, default_value_t = 20_000)]
    pub msgs: u64,
    /// Also measure this baseline in the same run (ZeroMQ REQ/REP over
    /// TCP on loopback).
    #[arg(long, value_enum)]
    pub baseline: Option<Baseline>,
    /// Table or JSON.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `pinwheel bench wakeup`.
#[derive(Debug, Args)]
pub struct BenchWakeupArgs {
    /// Topology whose first data-plane CPU and its class settings the
    /// bench uses.
    #[arg(long, value_name = "FILE", default_value = "topology/auto.toml")]
    pub topology: PathBuf,
    /// Wake-ups per case.
    #[arg(long, default_value_t = 2_000)]
    pub loops: u64,
    /// Time between deadlines, microseconds.
    #[arg(long, value_name = "US", default_value_t = 1_000)]
    pub period_us: u64,
    /// Do not ask for SCHED_FIFO, locked memory or timer slack.
    #[arg(long)]
    pub unprivileged: bool,
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

/// Runs a bench command, or the suite when there is none.
pub(super) fn run(args: BenchArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let Some(command) = args.command else {
        return suite(&args.suite, out);
    };
    match command {
        BenchCommand::Ring(args) => ring(&args, out),
        BenchCommand::Router(args) => router(&args, out),
        BenchCommand::Wakeup(args) => wakeup(&args, out),
        BenchCommand::Mesh(args) => super::bench_mesh::mesh(&args, out),
        BenchCommand::Agent(args) => agent(&args, out),
        BenchCommand::Legacy(args) => legacy(&args, out),
        BenchCommand::Nats(args) => nats(&args, out),
        BenchCommand::RingPeer(args) => Ok(serve_peer(args.mode, CpuId(args.cpu))?),
        BenchCommand::ZmqPeer(args) => Ok(crate::bench::zmq::serve_peer(
            args.mode,
            &args.endpoint,
            CpuId(args.cpu),
            args.size,
        )?),
    }
}

fn ring(args: &BenchRingArgs, out: &mut dyn Write) -> Result<(), CliError> {
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
    bench.check_size().map_err(|source| DaemonError::Usage {
        message: format!(
            "--size {}: {source}; the bench's rings carry bodies of at most {} bytes",
            bench.size,
            RingBench::MAX_SIZE
        ),
    })?;
    let (ring, baseline) = match args.baseline {
        None => (bench.run()?, None),
        Some(Baseline::Zmq) => {
            let zmq = zmq_baseline(&bench)?;
            (bench.run()?, Some((BaselineKind::Zmq, zmq)))
        }
        Some(Baseline::Hand) => {
            let slots = frame_slots_of(bench.size)?;
            let turns = ring_and_hand(&bench, slots)?;
            let frame_sized = turns.frame_sized.map(|case| FrameSized { slots, case });
            (
                turns.ring,
                Some((BaselineKind::Hand { frame_sized }, turns.hand)),
            )
        }
    };
    let report = RingReport {
        bench,
        ring,
        baseline,
    };
    args.output.write(
        out,
        || render_ring_json(&report),
        || render_ring_table(&report),
    )
}

fn router(args: &BenchRouterArgs, out: &mut dyn Write) -> Result<(), CliError> {
    check_router_body(args.load.size)?;
    let bench = RouterBench {
        cpus: bench_cpus(&args.cpus)?,
        wait: args.wait.into(),
        size: args.load.size,
        msgs: args.load.msgs.max(1),
    };
    let report = bench.run()?;
    args.output
        .write(out, || report.to_json(), || report.to_table())
}

fn agent(args: &BenchAgentArgs, out: &mut dyn Write) -> Result<(), CliError> {
    check_router_body(args.load.size)?;
    let (echo_exe, echo_args, pyzmq_script) = if args.python {
        let dir = std::path::absolute(&args.python_dir)?;
        let echo = dir.join("examples/echo.py");
        (
            args.python_exe.clone(),
            vec![echo.display().to_string()],
            Some(dir.join("bench/zmq_chain.py")),
        )
    } else {
        (
            args.echo.clone().unwrap_or_else(default_echo_exe),
            Vec::new(),
            None,
        )
    };
    let report = AgentBench {
        cpus: bench_cpus(&args.cpus)?,
        wait: args.wait.into(),
        agent_wait: args.agent_wait.unwrap_or(args.wait).into(),
        size: args.load.size,
        msgs: args.load.msgs.max(1),
        echo_exe,
        echo_args,
        pyzmq_script,
        park: if args.park == "poll" { "poll" } else { "uring" },
    }
    .run()?;
    args.output
        .write(out, || report.to_json(), || report.to_table())
}

fn legacy(args: &BenchLegacyArgs, out: &mut dyn Write) -> Result<(), CliError> {
    check_router_body(args.size)?;
    let dir = std::path::absolute(&args.python_dir)?;
    let report = LegacyBench {
        cpus: bench_cpus(&args.cpus)?,
        wait: args.wait.into(),
        gateway_cpu: args.gateway_cpu.map(CpuId),
        size: args.size,
        msgs: args.msgs.max(1),
        python_exe: args.python_exe.clone(),
        script: dir.join("bench/zmq_chain.py"),
    }
    .run()?;
    args.output
        .write(out, || report.to_json(), || report.to_table())
}

fn nats(args: &BenchNatsArgs, out: &mut dyn Write) -> Result<(), CliError> {
    if !["nats://", "tls://"]
        .iter()
        .any(|s| args.nats.starts_with(s))
    {
        return Err(DaemonError::Usage {
            message: format!(
                "--nats {:?} is not a NATS URL; pass e.g. nats://127.0.0.1:4222",
                args.nats
            ),
        }
        .into());
    }
    let bench = crate::bench::nats::NatsBench {
        url: args.nats.clone(),
        cpus: bench_cpus(&args.cpus)?,
        size: args.size,
        msgs: args.msgs.max(1),
        zmq: args.baseline == Some(Baseline::Zmq),
    };
    let report = bench.run()?;
    args.output
        .write(out, || report.to_json(), || report.to_table())
}

fn wakeup(args: &BenchWakeupArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let usage = |message: String| DaemonError::Usage { message };
    if args.loops == 0 || !(1..=MAX_PERIOD_US).contains(&args.period_us) {
        return Err(usage(format!(
            "--loops {} --period-us {}: pass at least 1 wake-up and 1 to {MAX_PERIOD_US} microseconds",
            args.loops, args.period_us
        ))
        .into());
    }
    existing_file(
        "--topology",
        &args.topology,
        "a topology file (see topology/*.toml, or write one with `pinwheel topo detect`)",
    )?;
    let sysfs = Path::new(LIVE_SYSFS);
    let topology = crate::topology::load(&args.topology, sysfs).map_err(DaemonError::from)?;
    let host = crate::topology::detect_host(sysfs).map_err(DaemonError::from)?;
    topology.check_live(&host).map_err(DaemonError::from)?;
    let bench = WakeupBench::for_topology(
        &topology,
        Duration::from_micros(args.period_us),
        args.loops,
        !args.unprivileged,
    )?;
    let report = bench.run()?;
    let text = if args.json {
        report.to_json(&bench)
    } else {
        report.to_table(&bench)
    };
    out.write_all(text.as_bytes())?;
    Ok(())
}

/// Largest body `bench router` sends (frames are 1 KiB with the envelope).
const MAX_ROUTER_BODY: usize = 512;

/// Refuses a `--size` larger than a runtime message carries (`bench
/// router`, `agent` and `legacy` all send runtime messages).
fn check_router_body(size: usize) -> Result<(), DaemonError> {
    if size > MAX_ROUTER_BODY {
        return Err(DaemonError::Usage {
            message: format!(
                "--size {size}: runtime messages carry at most {MAX_ROUTER_BODY} body bytes"
            ),
        });
    }
    Ok(())
}

fn zmq_baseline(bench: &RingBench) -> Result<crate::bench::Case, CliError> {
    let zmq = crate::bench::zmq::ZmqBench {
        cpus: bench.cpus,
        peer_exe: bench.peer_exe.clone(),
        size: bench.size,
        msgs: bench.msgs,
    };
    Ok(zmq.run()?)
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

/// Longest wake-up period, microseconds (1 s).
const MAX_PERIOD_US: u64 = 1_000_000;
/// Longest mesh run, seconds (an hour).
const MAX_MESH_SECONDS: f64 = 3_600.0;

impl BenchSuiteArgs {
    /// The checked numbers and paths every topology's benches share.
    fn options(&self) -> Result<SuiteOptions, DaemonError> {
        let usage = |message: String| Err(DaemonError::Usage { message });
        if self.msgs == 0 || self.loops == 0 {
            return usage(format!(
                "--msgs {} --loops {}: each bench needs at least 1",
                self.msgs, self.loops
            ));
        }
        if !(1..=MAX_PERIOD_US).contains(&self.period_us) {
            return usage(format!(
                "--period-us {}: pass 1 to {MAX_PERIOD_US} microseconds",
                self.period_us
            ));
        }
        let seconds = self.mesh_duration;
        if !(seconds.is_finite() && seconds > 0.0 && seconds <= MAX_MESH_SECONDS) {
            return usage(format!(
                "--mesh-duration {seconds}: pass a number of seconds above 0 and at most {MAX_MESH_SECONDS}"
            ));
        }
        check_rate("--mesh-rate", self.mesh_rate)?;
        existing_file(
            "--mesh-agents",
            &self.mesh_agents,
            "the voice pipeline's manifest, agents/voice-pipeline.toml",
        )?;
        Ok(SuiteOptions {
            agents: self.mesh_agents.clone(),
            sysfs_root: PathBuf::from(LIVE_SYSFS),
            size: self.size,
            msgs: self.msgs,
            period: Duration::from_micros(self.period_us),
            loops: self.loops,
            mesh_duration: Duration::from_secs_f64(seconds),
            rate_per_s: self.mesh_rate,
            privileged: !self.unprivileged,
        })
    }
}

fn existing_file(flag: &str, path: &Path, what: &str) -> Result<(), DaemonError> {
    if path.is_file() {
        Ok(())
    } else {
        Err(DaemonError::Usage {
            message: format!("{flag} {}: no such file; pass {what}", path.display()),
        })
    }
}

/// Creates (or reuses) the `--out` directory.
fn out_dir(dir: &Path) -> Result<PathBuf, DaemonError> {
    let usage = |why: String| DaemonError::Usage {
        message: format!(
            "--out {}: {why}; pass a directory to write the .hgrm files and plots into",
            dir.display()
        ),
    };
    if dir.exists() && !dir.is_dir() {
        return Err(usage("it is a file, not a directory".into()));
    }
    std::fs::create_dir_all(dir).map_err(|err| usage(format!("cannot create it ({err})")))?;
    Ok(dir.to_owned())
}

/// Names for the topologies: their file stems, or `a` and `b` when the
/// stems are alike.
fn labels(paths: &[&Path]) -> Vec<String> {
    let stems: Vec<String> = paths
        .iter()
        .map(|p| {
            p.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    let distinct = stems.iter().all(|s| !s.is_empty()) && (stems.len() < 2 || stems[0] != stems[1]);
    if distinct {
        stems
    } else {
        ["a", "b"]
            .iter()
            .take(paths.len())
            .map(|s| (*s).to_owned())
            .collect()
    }
}

/// Loads and checks one topology (with the mesh's manifest and plan, as
/// `pinwheel run` would) and derives its benches.
fn target(
    flag: &str,
    path: &Path,
    label: String,
    options: &SuiteOptions,
) -> Result<Target, DaemonError> {
    existing_file(
        flag,
        path,
        "a topology file (see topology/*.toml, or write one with `pinwheel topo detect`)",
    )?;
    let probe = MeshBench {
        topology: path.to_owned(),
        agents: vec![options.agents.clone()],
        sysfs_root: options.sysfs_root.clone(),
        duration: options.mesh_duration,
        rate_per_s: options.rate_per_s,
        privileged: options.privileged,
        overhead: false,
    };
    let (topology, _, _) = boot::load(&probe.options())?;
    Target::new(label, &topology, options).map_err(|err| DaemonError::Usage {
        message: format!("{flag} {}: {err}", path.display()),
    })
}

fn suite(args: &BenchSuiteArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let options = args.options()?;
    let mut files = vec![("--topology", args.topology.as_path())];
    if let Some(vs) = &args.vs {
        files.push(("--vs", vs.as_path()));
    }
    let paths: Vec<&Path> = files.iter().map(|(_, p)| *p).collect();
    let targets = files
        .iter()
        .zip(labels(&paths))
        .map(|((flag, path), label)| target(flag, path, label, &options))
        .collect::<Result<Vec<_>, _>>()?;
    let dir = args.out.as_deref().map(out_dir).transpose()?;
    let results = run_suite(targets)?;
    out.write_all(render_suite_table(&results).as_bytes())?;
    if let Some(dir) = dir {
        let written = write_suite_files(&results, &dir)?;
        writeln!(out, "\nwrote {} files to {}:", written.len(), dir.display())?;
        for path in written {
            writeln!(out, "  {}", path.display())?;
        }
    }
    Ok(())
}
