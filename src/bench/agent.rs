//! `pinwheel bench agent`: a round trip to an agent process against the
//! in-daemon call across CPUs, in the same run, on the same two CPUs.
//!
//! * In-daemon: `bench router`'s cross-CPU call (a caller agent on CPU A
//!   calls an echo agent on CPU B's executor).
//! * Agent process: the caller on CPU A calls `Echo`, a process (the SDK's
//!   echo example) pinned to CPU B. CPU B runs no executor: the echo's
//!   bridge is on the caller's executor, so each way the message crosses
//!   one ring between CPUs, as the in-daemon call does, and the process
//!   has its CPU to itself (it spins or parks by the class's wait).
//!
//! Both cases time the same calls (`Ctx::call`, 64-byte bodies by
//! default) after the same warm-up.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::json;

use super::BenchError;
use super::report::wait_name;
use super::router::{RouterBench, bench_mesh, time_calls};
use crate::agents::protocol::BUILTIN_METHODS;
use crate::latency::LatencySummary;
use crate::observe::health::Health;
use crate::plan::Plan;
use crate::process::{BridgeSpec, ProcessBridge, ProcessOptions, ProcessSide, Slots};
use crate::runtime::RuntimeError;
use crate::runtime::agent::{Agent, Message};
use crate::runtime::control::ControlRuntime;
use crate::runtime::ctx::{Ctx, now_ns};
use crate::runtime::executor::{Control, start};
use crate::runtime::layout::{Layout, layout};
use crate::topology::CpuId;
use pinwheel_ipc::ring::WaitStrategy;
use pinwheel_ipc::wire::{AgentId, Priority};

const CALLER: AgentId = AgentId(0);
const ECHO: AgentId = AgentId(1);
/// The chain's second echo (`--python`), which `Echo` calls.
const BACK: AgentId = AgentId(2);
const RUN_LIMIT: Duration = Duration::from_secs(300);

/// What to run.
#[derive(Debug, Clone)]
pub struct AgentBench {
    /// Caller CPU, then the callee's (the echo process's) CPU.
    pub cpus: [CpuId; 2],
    /// How the executors wait.
    pub wait: WaitStrategy,
    /// How the echo processes wait (their manifest's `wait`).
    pub agent_wait: WaitStrategy,
    /// Request body bytes.
    pub size: usize,
    /// Round trips per case.
    pub msgs: u64,
    /// The echo agent's executable.
    pub echo_exe: PathBuf,
    /// Arguments after it (`--python`: the example's path after python3).
    pub echo_args: Vec<String>,
    /// `--python`: also time the seed's way, pyzmq REQ/REP (this script,
    /// run by `echo_exe`, the Python interpreter) on the same CPUs.
    pub pyzmq_script: Option<PathBuf>,
    /// How the echo process parks when it waits (`uring` or `poll`; see
    /// the SDK's `PINWHEEL_AGENT_PARK`).
    pub park: &'static str,
}

/// Both cases' round trips.
#[derive(Debug)]
pub struct AgentReport {
    /// What ran.
    pub bench: AgentBench,
    /// The in-daemon call across CPUs.
    pub in_daemon: Histogram<u64>,
    /// The call to the echo process.
    pub process: Histogram<u64>,
    /// `--python`: the caller -> Python echo -> Python echo chain.
    pub chain: Option<Histogram<u64>>,
    /// `--python`: one pyzmq REQ/REP hop between two Python processes.
    pub pyzmq: Option<Histogram<u64>>,
    /// `--python`: a pyzmq client -> Python -> Python chain.
    pub pyzmq_chain: Option<Histogram<u64>>,
}

impl AgentBench {
    /// Runs both cases.
    pub fn run(&self) -> Result<AgentReport, BenchError> {
        let ([in_daemon, _], _) = RouterBench {
            cpus: self.cpus,
            wait: self.wait,
            size: self.size,
            msgs: self.msgs,
        }
        .runtime_calls()?;
        let process = self.process_calls(false)?;
        let (chain, pyzmq, pyzmq_chain) = match &self.pyzmq_script {
            Some(script) => (
                // Two spinning Pythons beside the caller's executor are
                // three spinners on two CPUs: the chain runs with agents
                // that park (or adapt).
                (self.agent_wait != WaitStrategy::Spin)
                    .then(|| self.process_calls(true))
                    .transpose()?,
                Some(self.pyzmq_calls(script, 1)?),
                Some(self.pyzmq_calls(script, 2)?),
            ),
            None => (None, None, None),
        };
        Ok(AgentReport {
            bench: self.clone(),
            in_daemon,
            process,
            chain,
            pyzmq,
            pyzmq_chain,
        })
    }

    /// Runs `script` (python/bench/zmq_chain.py) with the interpreter and
    /// reads its round trips, one per line in ns.
    fn pyzmq_calls(&self, script: &Path, hops: u8) -> Result<Histogram<u64>, BenchError> {
        PyzmqScript {
            python: &self.echo_exe,
            script,
            what: "pyzmq baseline",
            cpus: self.cpus,
            size: self.size,
            msgs: self.msgs,
        }
        .run(&[format!("--hops={hops}")])
    }

    /// The manifest: the caller, `Echo` on CPU B and, for a chain, `Back`
    /// (the same echo) on CPU A, which `Echo` calls.
    fn manifest(&self, chain: bool) -> String {
        let [a, b] = self.cpus;
        let process = |name: &str, cpu: CpuId, calls: &str| {
            format!(
                "[[agent]]\nname = \"{name}\"\nhost = \"bench\"\nrole = \"bench\"\nkind = \"process\"\npriority = \"high\"\ncpu = {cpu}\ncommand = [{:?}{}]\nuser = \"nobody\"\ncalls = [{calls}]\nenv = {{ {} = \"{}\" }}\nwait = \"{}\"\n",
                self.echo_exe.display().to_string(),
                self.echo_args
                    .iter()
                    .map(|arg| format!(", {arg:?}"))
                    .collect::<String>(),
                pinwheel_agent::PARK_ENV,
                self.park,
                wait_name(self.agent_wait)
            )
        };
        let mut manifest = format!(
            "schema = 1\n[[agent]]\nname = \"Caller\"\nhost = \"bench\"\nrole = \"bench\"\nkind = \"synthetic\"\npriority = \"high\"\ncpu = {a}\ncalls = [\"Echo\"]\n"
        );
        if chain {
            manifest.push_str(&process("Echo", b, "\"Back\""));
            manifest.push_str(&process("Back", a, ""));
        } else {
            manifest.push_str(&process("Echo", b, ""));
        }
        manifest
    }

    fn process_calls(&self, chain: bool) -> Result<Histogram<u64>, BenchError> {
        let failed = |what: &str, err: String| BenchError::Peer {
            reason: format!("{what}: {err}"),
        };
        let (topology, agents) = bench_mesh(self.cpus, self.wait, &self.manifest(chain))?;
        let plan = Plan::build(&topology, &agents).map_err(|e| failed("plan", e.to_string()))?;
        let Layout {
            routes,
            executors,
            phases,
        } = layout(&plan, &topology, &agents).map_err(|e| failed("layout", e.to_string()))?;
        let slots = Slots::new(&agents).map_err(|e| failed("slots", e.to_string()))?;
        let spec = |me: AgentId, calls: Vec<AgentId>| {
            let slot = slots
                .get(me)
                .cloned()
                .ok_or_else(|| failed("slots", format!("no slot for agent {}", me.0)))?;
            Ok::<_, BenchError>(bridge_spec(me, slot, calls))
        };
        let echo = spec(ECHO, if chain { vec![BACK] } else { Vec::new() })?;
        let back = if chain {
            Some(spec(BACK, Vec::new())?)
        } else {
            None
        };
        let run_dir = std::env::temp_dir().join(format!("pinwheel-bench-{}", std::process::id()));
        let mut processes = process_side(&agents, &plan, &routes, &topology, &slots, &run_dir)?;
        let results = Arc::new(Results::default());
        let make = {
            let (results, bench) = (Arc::clone(&results), self.clone());
            Arc::new(move |id: AgentId| match (id, &back) {
                (CALLER, _) => Bench::Caller(Arc::clone(&results), bench.clone()),
                (ECHO, _) => Bench::Echo(Box::new(ProcessBridge::new(echo.clone()))),
                (BACK, Some(back)) => Bench::Echo(Box::new(ProcessBridge::new(back.clone()))),
                _ => Bench::Idle,
            })
        };
        let control = Control::new(executors.len(), phases.len());
        // The executors' wake-up guard runs on it; it outlives them.
        let control_rt = ControlRuntime::start(None, &Default::default())
            .map_err(|e| failed("control thread", e.to_string()))?;
        let runtime = start(
            routes,
            executors,
            make,
            Arc::new(|_| {}),
            control,
            control_rt.handle(),
        )
        .map_err(|e| failed("runtime", e.to_string()))?;
        for (phase, &expected) in phases.iter().enumerate() {
            processes.start_phase(phase, now_ns());
            runtime.open_phase(phase);
            runtime.wait_started(phase, expected, Duration::from_secs(10));
        }
        results.wait_done();
        let stopped = runtime.stop();
        processes.stop(now_ns());
        let _ = std::fs::remove_dir_all(&run_dir);
        stopped.map_err(|e| failed("runtime", e.to_string()))?;
        let histogram = results.histogram.lock().ok().and_then(|mut h| h.take());
        histogram.ok_or_else(|| {
            failed(
                "echo process",
                format!(
                    "a call failed or the run hit its time limit (is {} built? cargo build --release -p pinwheel-agent --example echo)",
                    self.echo_exe.display()
                ),
            )
        })
    }
}

/// A run of python/bench/zmq_chain.py: pyzmq round trips between Python
/// processes on two CPUs.
pub(super) struct PyzmqScript<'a> {
    /// The interpreter (with pyzmq installed).
    pub python: &'a Path,
    /// The script.
    pub script: &'a Path,
    /// What it times, for errors.
    pub what: &'a str,
    /// The client's CPU and the server's.
    pub cpus: [CpuId; 2],
    /// Body bytes.
    pub size: usize,
    /// Round trips.
    pub msgs: u64,
}

impl PyzmqScript<'_> {
    /// Runs the script with `args` after the common ones; its round trips.
    pub(super) fn run(&self, args: &[String]) -> Result<Histogram<u64>, BenchError> {
        let failed = |reason: String| BenchError::Peer {
            reason: format!("{} ({}): {reason}", self.what, self.script.display()),
        };
        let [a, b] = self.cpus;
        let output = std::process::Command::new(self.python)
            .arg(self.script)
            .arg(format!("--cpus={a},{b}"))
            .arg(format!("--size={}", self.size))
            .arg(format!("--msgs={}", self.msgs))
            .args(args)
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|e| failed(e.to_string()))?;
        if !output.status.success() {
            return Err(failed(format!(
                "{} (is pyzmq installed in that Python? pip install pyzmq)",
                output.status
            )));
        }
        ns_histogram(&output.stdout).map_err(failed)
    }
}

/// Round trips a Python script printed, one per line in ns.
fn ns_histogram(stdout: &[u8]) -> Result<Histogram<u64>, String> {
    // Bounded (1 ns to 1 h): `saturating_record` never resizes.
    let mut histogram =
        Histogram::new_with_bounds(1, 3_600_000_000_000, 3).map_err(|e| e.to_string())?;
    for line in String::from_utf8_lossy(stdout).lines() {
        let ns: u64 = line
            .trim()
            .parse()
            .map_err(|_| format!("not ns: {line:?}"))?;
        histogram.saturating_record(ns.max(1));
    }
    Ok(histogram)
}

/// The echo's bridge, on the caller's executor.
fn bridge_spec(
    me: AgentId,
    slot: Arc<crate::process::ProcessSlot>,
    calls: Vec<AgentId>,
) -> BridgeSpec {
    BridgeSpec {
        me,
        slot,
        calls,
        publishes: Vec::new(),
        priority: Priority::High,
        wait_first: true,
    }
}

/// The process side of the bench's mesh, its files under `run_dir`.
fn process_side(
    agents: &crate::config::AgentSet,
    plan: &Plan,
    routes: &crate::runtime::routes::Routes,
    topology: &crate::topology::Topology,
    slots: &Slots,
    run_dir: &Path,
) -> Result<ProcessSide, BenchError> {
    ProcessSide::new(
        agents,
        plan,
        routes,
        topology,
        slots,
        &ProcessOptions {
            attach_socket: run_dir.join("agent.sock"),
            run_dir: run_dir.to_path_buf(),
            cgroup_root: crate::daemon::CGROUP_ROOT.into(),
            builtin_methods: BUILTIN_METHODS.to_vec(),
        },
        Arc::new(Health::default()),
    )
    .map_err(|e| BenchError::Peer {
        reason: format!("agent processes: {e}"),
    })
}

/// The echo example next to this executable: `target/release/examples/echo`
/// beside `target/release/pinwheel`.
pub fn default_echo_exe() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
        .unwrap_or_default()
        .join("examples/echo")
}

#[derive(Debug, Default)]
struct Results {
    done: AtomicBool,
    histogram: Mutex<Option<Histogram<u64>>>,
}

impl Results {
    /// Waits until the caller is done, or the run limit.
    fn wait_done(&self) {
        let began = Instant::now();
        // SYNC: Acquire pairs with the Release store when the caller is done.
        while !self.done.load(Ordering::Acquire) && began.elapsed() < RUN_LIMIT {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

enum Bench {
    Caller(Arc<Results>, AgentBench),
    Echo(Box<ProcessBridge>),
    Idle,
}

impl Agent for Bench {
    async fn start(&self, ctx: &Ctx) -> Result<(), RuntimeError> {
        match self {
            Bench::Echo(bridge) => bridge.start(ctx).await,
            _ => Ok(()),
        }
    }

    async fn handle(&self, ctx: &Ctx, msg: &Message) -> Result<(), RuntimeError> {
        match self {
            Bench::Echo(bridge) => bridge.handle(ctx, msg).await,
            _ => Ok(()),
        }
    }

    async fn run(&self, ctx: &Ctx) {
        match self {
            Bench::Echo(bridge) => bridge.run(ctx).await,
            Bench::Caller(results, bench) => {
                let body = vec![0x5a; bench.size];
                let histogram = time_calls(ctx, ECHO, &body, bench.msgs).await;
                if let Ok(mut slot) = results.histogram.lock() {
                    *slot = histogram;
                }
                // SYNC: Release pairs with the Acquire load in process_calls.
                results.done.store(true, Ordering::Release);
            }
            Bench::Idle => {}
        }
    }
}

impl AgentReport {
    fn ratio(&self) -> f64 {
        let base = self.in_daemon.value_at_quantile(0.5).max(1) as f64;
        self.process.value_at_quantile(0.5) as f64 / base
    }

    /// The cases that ran, titled.
    fn rows(&self) -> Vec<(&'static str, &Histogram<u64>)> {
        let python = self.bench.pyzmq_script.is_some();
        let mut rows = vec![
            ("in-daemon call, across CPUs", &self.in_daemon),
            (
                if python {
                    "Python echo process (pinwheel)"
                } else {
                    "echo process, across CPUs"
                },
                &self.process,
            ),
        ];
        if let Some(h) = &self.chain {
            rows.push(("Python chain of 2 (pinwheel)", h));
        }
        if let Some(h) = &self.pyzmq {
            rows.push(("Python -> Python, pyzmq REQ/REP", h));
        }
        if let Some(h) = &self.pyzmq_chain {
            rows.push(("Python chain of 2, pyzmq REQ/REP", h));
        }
        rows
    }

    /// The report as a table.
    pub fn to_table(&self) -> String {
        use std::fmt::Write as _;
        let b = &self.bench;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "pinwheel bench agent: CPUs {} and {}, {}-byte bodies, {} round trips per case, executors {}, agent processes {} (parking with {})",
            b.cpus[0],
            b.cpus[1],
            b.size,
            b.msgs,
            wait_name(b.wait),
            wait_name(b.agent_wait),
            b.park
        );
        super::percentile_titles(&mut out, "round trip", 34);
        let _ = writeln!(out, "{:>10}", "calls/s");
        for (name, histogram) in self.rows() {
            super::percentile_cells(&mut out, name, 34, histogram);
            let _ = writeln!(out, "{:>10.0}", calls_per_s(histogram));
        }
        let _ = writeln!(
            out,
            "\necho process p50 / in-daemon p50: {:.2}x",
            self.ratio()
        );
        if let Some(pyzmq) = &self.pyzmq {
            let _ = writeln!(
                out,
                "pyzmq p50 / pinwheel Python echo p50: {:.2}x",
                pyzmq.value_at_quantile(0.5) as f64
                    / self.process.value_at_quantile(0.5).max(1) as f64
            );
        }
        out
    }

    /// The report as JSON: percentiles in ns per case.
    pub fn to_json(&self) -> String {
        let b = &self.bench;
        let value = json!({
            "cpus": b.cpus,
            "size": b.size,
            "msgs": b.msgs,
            "park": b.park,
            "wait": wait_name(b.wait),
            "agent_wait": wait_name(b.agent_wait),
            "call_far_rtt_ns": LatencySummary::of(&self.in_daemon),
            "process_rtt_ns": LatencySummary::of(&self.process),
            "p50_ratio": self.ratio(),
            "process_calls_per_s": calls_per_s(&self.process),
            "chain_rtt_ns": self.chain.as_ref().map(LatencySummary::of),
            "chain_calls_per_s": self.chain.as_ref().map(calls_per_s),
            "pyzmq_rtt_ns": self.pyzmq.as_ref().map(LatencySummary::of),
            "pyzmq_calls_per_s": self.pyzmq.as_ref().map(calls_per_s),
            "pyzmq_chain_rtt_ns": self.pyzmq_chain.as_ref().map(LatencySummary::of),
            "pyzmq_chain_calls_per_s": self.pyzmq_chain.as_ref().map(calls_per_s),
        });
        let mut text =
            serde_json::to_string_pretty(&value).expect("a JSON value always serializes");
        text.push('\n');
        text
    }
}

/// Sequential round trips a second: one over the mean round trip.
fn calls_per_s(histogram: &Histogram<u64>) -> f64 {
    1e9 / histogram.mean().max(1.0)
}
