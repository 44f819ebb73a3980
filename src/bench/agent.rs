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
use super::router::{RouterBench, bench_mesh, time_calls};
use crate::agents::protocol::BUILTIN_METHODS;
use crate::latency::{LatencySummary, PERCENTILE_TITLES, format_ns};
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
const RUN_LIMIT: Duration = Duration::from_secs(300);

/// What to run.
#[derive(Debug, Clone)]
pub struct AgentBench {
    /// Caller CPU, then the callee's (the echo process's) CPU.
    pub cpus: [CpuId; 2],
    /// How the executors and the process wait.
    pub wait: WaitStrategy,
    /// Request body bytes.
    pub size: usize,
    /// Round trips per case.
    pub msgs: u64,
    /// The echo agent's executable.
    pub echo_exe: PathBuf,
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
}

impl AgentBench {
    /// Runs both cases.
    pub fn run(&self) -> Result<AgentReport, BenchError> {
        let [in_daemon, _] = RouterBench {
            cpus: self.cpus,
            wait: self.wait,
            size: self.size,
            msgs: self.msgs,
        }
        .runtime_calls()?;
        let process = self.process_calls()?;
        Ok(AgentReport {
            bench: self.clone(),
            in_daemon,
            process,
        })
    }

    fn process_calls(&self) -> Result<Histogram<u64>, BenchError> {
        let failed = |what: &str, err: String| BenchError::Peer {
            reason: format!("{what}: {err}"),
        };
        let [a, b] = self.cpus;
        let manifest = format!(
            "schema = 1\n[[agent]]\nname = \"Caller\"\nhost = \"bench\"\nrole = \"bench\"\nkind = \"synthetic\"\npriority = \"high\"\ncpu = {a}\ncalls = [\"Echo\"]\n[[agent]]\nname = \"Echo\"\nhost = \"bench\"\nrole = \"bench\"\nkind = \"process\"\npriority = \"high\"\ncpu = {b}\ncommand = [{:?}]\nuser = \"nobody\"\nenv = {{ {} = \"{}\" }}\n",
            self.echo_exe.display().to_string(),
            pinwheel_agent::PARK_ENV,
            self.park
        );
        let (topology, agents) = bench_mesh(self.cpus, self.wait, &manifest)?;
        let plan = Plan::build(&topology, &agents).map_err(|e| failed("plan", e.to_string()))?;
        let Layout {
            routes,
            executors,
            phases,
        } = layout(&plan, &topology, &agents).map_err(|e| failed("layout", e.to_string()))?;
        let slots = Slots::new(&agents).map_err(|e| failed("slots", e.to_string()))?;
        let slot = slots
            .get(ECHO)
            .cloned()
            .ok_or_else(|| failed("slots", "no echo".into()))?;
        let settings = executors[usize::from(routes.executor_of(ECHO))].settings;
        let spec = bridge_spec(slot, settings.wait, settings.spin_before_park_us);
        let run_dir = std::env::temp_dir().join(format!("pinwheel-bench-{}", std::process::id()));
        let mut processes = process_side(&agents, &plan, &routes, &topology, &slots, &run_dir)?;
        let results = Arc::new(Results::default());
        let make = {
            let (results, bench) = (Arc::clone(&results), self.clone());
            Arc::new(move |id: AgentId| match id {
                CALLER => Bench::Caller(Arc::clone(&results), bench.clone()),
                ECHO => Bench::Echo(Box::new(ProcessBridge::new(spec.clone()))),
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

/// The echo's bridge, on the caller's executor.
fn bridge_spec(
    slot: Arc<crate::process::ProcessSlot>,
    wait: WaitStrategy,
    spin_us: u32,
) -> BridgeSpec {
    BridgeSpec {
        me: ECHO,
        slot,
        calls: Vec::new(),
        publishes: Vec::new(),
        priority: Priority::High,
        wait,
        wait_first: true,
        spin_us,
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

    fn reset(&self) {}

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

    /// The report as a table.
    pub fn to_table(&self) -> String {
        use std::fmt::Write as _;
        let b = &self.bench;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "pinwheel bench agent: CPUs {} and {}, {}-byte bodies, {} round trips per case, the process parks with {}",
            b.cpus[0], b.cpus[1], b.size, b.msgs, b.park
        );
        let _ = write!(out, "\n{:<34}", "round trip");
        for title in PERCENTILE_TITLES {
            let _ = write!(out, "{title:>10}");
        }
        let _ = writeln!(out);
        for (name, histogram) in [
            ("in-daemon call, across CPUs", &self.in_daemon),
            ("echo process, across CPUs", &self.process),
        ] {
            let _ = write!(out, "{name:<34}");
            for ns in LatencySummary::of(histogram).columns() {
                let _ = write!(out, "{:>10}", format_ns(ns));
            }
            let _ = writeln!(out);
        }
        let _ = writeln!(
            out,
            "\necho process p50 / in-daemon p50: {:.2}x",
            self.ratio()
        );
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
            "call_far_rtt_ns": LatencySummary::of(&self.in_daemon),
            "process_rtt_ns": LatencySummary::of(&self.process),
            "p50_ratio": self.ratio(),
        });
        let mut text =
            serde_json::to_string_pretty(&value).expect("a JSON value always serializes");
        text.push('\n');
        text
    }
}
