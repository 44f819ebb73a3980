//! `pinwheel bench legacy`: what the legacy gateway adds to the seed's
//! round trip, in one run, on the same two CPUs.
//!
//! * Gateway: a pyzmq REQ client on CPU A (python/bench/zmq_chain.py,
//!   `--connect`) sends `{"action": "health_check", "data": ...}` to the
//!   legacy port of a native SystemDigitalTwin (the registry) on CPU B:
//!   the gateway thread, libzmq's I/O thread and the agent's executor all
//!   on CPU B, as a daemon whose control CPU is its data-plane CPU runs
//!   them.
//! * The seed today: the same client calls a pyzmq REP server on CPU B
//!   (`zmq_chain.py --hops 1`), which answers each request itself.
//!
//! Both cases time `send_json` + `recv_json` in the client after the same
//! warm-up; the ratio of their percentiles is what the gateway adds.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::BenchError;
use super::agent::PyzmqScript;
use super::router::bench_mesh;
use crate::agents::mesh::{Mesh, MeshOptions};
use crate::agents::protocol::BUILTIN_METHODS;
use crate::gateway::{Gateway, GatewayParts, GatewayPlan, MethodNames, wake_fd};
use crate::latency::LatencySummary;
use crate::plan::Plan;
use crate::process::{MethodTable, Slots};
use crate::runtime::control::ControlRuntime;
use crate::runtime::executor::{Control, Runtime, start};
use crate::runtime::layout::{Layout, layout};
use crate::runtime::legacy::LegacyBook;
use crate::runtime::remote::RemoteKind;
use crate::topology::{CpuId, LegacyEdge};
use pinwheel_ipc::ring::WaitStrategy;

/// What to run.
#[derive(Debug, Clone)]
pub struct LegacyBench {
    /// The client's CPU, then the server's (gateway and agent, or the
    /// pyzmq REP server).
    pub cpus: [CpuId; 2],
    /// How the executor waits.
    pub wait: WaitStrategy,
    /// The gateway thread's CPU (and the control thread's), as a
    /// topology's control CPU; by default the server's.
    pub gateway_cpu: Option<CpuId>,
    /// JSON bytes of `data` in each request.
    pub size: usize,
    /// Round trips per case.
    pub msgs: u64,
    /// The Python interpreter, with pyzmq.
    pub python_exe: PathBuf,
    /// python/bench/zmq_chain.py.
    pub script: PathBuf,
}

/// Both cases' round trips.
#[derive(Debug)]
pub struct LegacyReport {
    /// What ran.
    pub bench: LegacyBench,
    /// pyzmq client -> gateway -> native agent.
    pub gateway: Histogram<u64>,
    /// Of that, the gateway's own time: request in to reply out (the
    /// agent's round trip on the rings included).
    pub inside: Histogram<u64>,
    /// pyzmq client -> pyzmq REP server.
    pub pyzmq: Histogram<u64>,
}

/// `bench legacy --json`.
#[derive(Debug, Serialize)]
struct LegacyJson {
    cpus: [CpuId; 2],
    size: usize,
    msgs: u64,
    gateway_rtt_ns: LatencySummary,
    gateway_inside_ns: LatencySummary,
    pyzmq_rtt_ns: LatencySummary,
    p50_ratio: f64,
    p99_ratio: f64,
}

/// The host's method table, for the bench's gateway.
struct Table(Mutex<MethodTable>);

impl MethodNames for Table {
    fn find(&mut self, name: &str) -> Option<u16> {
        self.0.lock().ok()?.find(name)
    }
    fn add(&mut self, name: &str) -> Option<u16> {
        let id = self.0.lock().ok()?.intern(name);
        (id != 0).then_some(id)
    }
    fn name(&mut self, id: u16) -> Option<String> {
        self.0.lock().ok()?.name(id).map(str::to_owned)
    }
}

impl LegacyBench {
    /// Runs both cases.
    pub fn run(&self) -> Result<LegacyReport, BenchError> {
        let (gateway, inside) = self.gateway_calls()?;
        let pyzmq = self.client(&["--hops=1".to_owned()])?;
        Ok(LegacyReport {
            bench: self.clone(),
            gateway,
            inside,
            pyzmq,
        })
    }

    /// The client's round trips, one per line in ns, with `args` after
    /// the common ones.
    fn client(&self, args: &[String]) -> Result<Histogram<u64>, BenchError> {
        PyzmqScript {
            python: &self.python_exe,
            script: &self.script,
            what: "pyzmq client",
            cpus: self.cpus,
            size: self.size,
            msgs: self.msgs,
        }
        .run(args)
    }

    /// The gateway case: a registry on CPU B behind its legacy port; the
    /// client's round trips and the gateway's own times.
    fn gateway_calls(&self) -> Result<(Histogram<u64>, Histogram<u64>), BenchError> {
        let port = free_port()?;
        let server = self.server(port)?;
        let timed = match server.unbound.first() {
            Some(why) => Err(peer("legacy port", why.clone())),
            None => self.client(&[
                format!("--connect={port}"),
                "--action=health_check".to_owned(),
            ]),
        };
        let stats = server.gateway.stats();
        server.gateway.stop();
        server
            .runtime
            .stop()
            .map_err(|e| peer("runtime", e.to_string()))?;
        drop(server.control);
        let inside = stats
            .ports
            .first()
            .map_or_else(crate::latency::new_histogram, |p| p.latency.snapshot());
        Ok((timed?, inside))
    }

    /// The server side, up: the registry's executor, the gateway with
    /// its port bound (or the reason in `unbound`).
    fn server(&self, port: u16) -> Result<Server, BenchError> {
        let [_, b] = self.cpus;
        let manifest = format!(
            "schema = 1\n[[agent]]\nname = \"SystemDigitalTwin\"\nhost = \"bench\"\nrole = \"bench\"\nkind = \"native\"\nnative = \"registry\"\npriority = \"high\"\ncpu = {b}\nlegacy_rep = {port}\n"
        );
        let (topology, agents) = bench_mesh(self.cpus, self.wait, &manifest)?;
        let plan = Plan::build(&topology, &agents).map_err(|e| peer("plan", e.to_string()))?;
        let mut laid =
            layout(&plan, &topology, &agents).map_err(|e| peer("layout", e.to_string()))?;
        let edge = LegacyEdge::on(std::net::Ipv4Addr::LOCALHOST.into());
        let gateway_plan = GatewayPlan::new(&agents, &laid.routes, Some(&edge))
            .ok_or_else(|| peer("gateway", "nothing to serve".to_owned()))?;
        let wake = wake_fd().map_err(|e| peer("gateway", e.to_string()))?;
        let rings = laid
            .add_call_rings(RemoteKind::Legacy, wake)
            .map_err(|e| peer("gateway rings", e.to_string()))?;
        let Layout {
            routes,
            executors,
            phases,
        } = laid;
        let mesh = Arc::new(Mesh::new(&agents, &routes, &mesh_options(&agents)?));
        let gateway_cpu = self.gateway_cpu.unwrap_or(b);
        // The executors' wake-up guard runs on it; it outlives them.
        let control = ControlRuntime::start(Some(gateway_cpu), &Default::default())
            .map_err(|e| peer("control thread", e.to_string()))?;
        let runtime = start(
            Arc::clone(&routes),
            executors,
            Arc::new(move |id| mesh.make(id)),
            Arc::new(|_| {}),
            Control::new(routes.executors().len(), phases.len()),
            control.handle(),
        )
        .map_err(|e| peer("runtime", e.to_string()))?;
        let (gateway, unbound) = Gateway::start(GatewayParts {
            plan: gateway_plan,
            rings,
            routes,
            names: Box::new(Table(Mutex::new(MethodTable::new(&BUILTIN_METHODS)))),
            cpu: Some(gateway_cpu),
        })
        .map_err(|e| peer("gateway", e.to_string()))?;
        for (phase, &expected) in phases.iter().enumerate() {
            runtime.open_phase(phase);
            runtime.wait_started(phase, expected, Duration::from_secs(10));
        }
        Ok(Server {
            runtime,
            gateway,
            control,
            unbound,
        })
    }
}

/// The gateway case's server side.
struct Server {
    runtime: Runtime,
    gateway: Gateway,
    control: ControlRuntime,
    unbound: Vec<String>,
}

fn peer(what: &str, err: String) -> BenchError {
    BenchError::Peer {
        reason: format!("{what}: {err}"),
    }
}

/// A loopback port free now.
fn free_port() -> Result<u16, BenchError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|probe| probe.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| peer("a free port", e.to_string()))
}

/// The mesh's options: no load, no processes.
fn mesh_options(agents: &crate::config::AgentSet) -> Result<MeshOptions, BenchError> {
    Ok(MeshOptions {
        rate_per_s: 0.0,
        request_timeout: Duration::from_secs(2),
        state_dir: None,
        processes: Slots::new(agents).map_err(|e| peer("slots", e.to_string()))?,
        legacy: Arc::new(LegacyBook::default()),
        overhead: false,
    })
}

impl LegacyReport {
    fn ratio(&self, quantile: f64) -> f64 {
        let base = self.pyzmq.value_at_quantile(quantile).max(1) as f64;
        self.gateway.value_at_quantile(quantile) as f64 / base
    }

    /// The report as a table.
    pub fn to_table(&self) -> String {
        use std::fmt::Write as _;
        let b = &self.bench;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "pinwheel bench legacy: pyzmq REQ client on CPU {}, server side on CPU {} (the gateway thread on CPU {}, the agent's executor waits by {:?}), {}-byte data, {} round trips per case",
            b.cpus[0],
            b.cpus[1],
            b.gateway_cpu.unwrap_or(b.cpus[1]),
            b.wait,
            b.size,
            b.msgs
        );
        super::percentile_titles(&mut out, "round trip", 40);
        out.push('\n');
        for (name, histogram) in [
            ("pyzmq -> gateway -> native agent", &self.gateway),
            ("  of which in the gateway and agent", &self.inside),
            ("pyzmq -> pyzmq REP (the seed)", &self.pyzmq),
        ] {
            super::percentile_cells(&mut out, name, 40, histogram);
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "\ngateway / pyzmq: p50 {:.2}x, p99 {:.2}x (the gateway adds {:+.0}% at p50)",
            self.ratio(0.5),
            self.ratio(0.99),
            (self.ratio(0.5) - 1.0) * 100.0
        );
        out
    }

    /// The report as JSON: percentiles in ns per case, and the ratios.
    pub fn to_json(&self) -> String {
        let b = &self.bench;
        let doc = LegacyJson {
            cpus: b.cpus,
            size: b.size,
            msgs: b.msgs,
            gateway_rtt_ns: LatencySummary::of(&self.gateway),
            gateway_inside_ns: LatencySummary::of(&self.inside),
            pyzmq_rtt_ns: LatencySummary::of(&self.pyzmq),
            p50_ratio: self.ratio(0.5),
            p99_ratio: self.ratio(0.99),
        };
        let mut text = serde_json::to_string_pretty(&doc).expect("plain data serializes");
        text.push('\n');
        text
    }
}
