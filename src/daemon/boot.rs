//! Boot: from files to a running mesh, in an order where every check that
//! can fail on bad input runs before anything starts.
//!
//! 1. Check the admin token file, read and validate the topology file and
//!    the manifests (a root daemon reads only files others cannot change:
//!    `config::trust`), check the file against the live host's CPUs, plan.
//!    Bad input stops here with exit code 2 and nothing started.
//! 2. Check the outputs: the report's directory exists, the state
//!    directory can be created.
//! 3. Process privileges: locked memory (an error only if glommio's
//!    minimum is impossible), each missing privilege one warning.
//! 4. Lay out rings and executors (in a cluster, each executor's call
//!    rings to the cluster link too; with a legacy gateway, to it), build
//!    the mesh and the process side,
//!    start the executors (each applies its thread privileges first), then
//!    open the start phases one at a time: each phase's agent processes
//!    are started and attached first, then the phase opens and waits for
//!    its agents.
//!
//! Start-up time is measured from the command's start to the last phase's
//! agents being up.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::eventfd::EventFd;
use tokio::sync::Notify;
use tracing::{info, warn};

use super::RunOptions;
use crate::agents::mesh::{Mesh, MeshOptions};
use crate::agents::protocol::BUILTIN_METHODS;
use crate::config::AgentSet;
use crate::config::trust;
use crate::error::DaemonError;
use crate::gateway::{self, GatewayPlan};
use crate::observe::health::Health;
use crate::observe::perf::{self, PerfEvent, PerfSet, ThreadPerf};
use crate::plan::Plan;
use crate::process::{ProcessOptions, ProcessSide, Slots};
use crate::runtime::RuntimeError;
use crate::runtime::ctx::now_ns;
use crate::runtime::executor::{Control, IO_MEMORY, Runtime, ThreadSetup, start};
use crate::runtime::layout::{Layout, layout};
use crate::runtime::legacy::LegacyBook;
use crate::runtime::privileges::{DegradedReason, ThreadPolicy, prepare_process, prepare_thread};
use crate::runtime::remote::{CallRings, RemoteKind};
use crate::runtime::routes::Routes;
use crate::topology::{self, Topology};

/// How long one start phase may take.
pub const PHASE_TIMEOUT: Duration = Duration::from_secs(10);

/// A started mesh.
#[derive(Debug)]
pub struct Booted {
    /// The executors.
    pub runtime: Runtime,
    /// The agents' blueprints and counters.
    pub mesh: Arc<Mesh>,
    /// The routing table.
    pub routes: Arc<Routes>,
    /// The cluster link's ends of the executors' call rings, in a cluster
    /// (taken when the link starts).
    pub call_rings: Option<CallRings>,
    /// The legacy gateway's plan and its ends of the executors' call
    /// rings, when it has something to serve (taken when it starts).
    pub gateway: Option<(GatewayPlan, CallRings<EventFd>)>,
    /// The seed's discovery data the registries answer from.
    pub legacy_book: Arc<LegacyBook>,
    /// The plan.
    pub plan: Plan,
    /// The manifests.
    pub agents: AgentSet,
    /// Agents per phase.
    pub phases: Vec<usize>,
    /// Why the daemon runs degraded.
    pub health: Arc<Health>,
    /// The executor threads' perf counters.
    pub perf: Arc<PerfSet>,
    /// The agent processes (ticked by the core loop, stopped after the
    /// drain).
    pub processes: Arc<Mutex<ProcessSide>>,
    /// When boot began.
    pub began: Instant,
}

/// Step 1: the validated inputs and the plan. The admin token file, when
/// there is one, must be a secret only root can read, or the daemon does
/// not start; without one the changing endpoints are off.
pub fn load(options: &RunOptions) -> Result<(Topology, AgentSet, Plan), DaemonError> {
    trust::check_secret(&options.admin_token_file)?;
    let topology = topology::load(&options.topology, &options.sysfs_root)?;
    topology.check_live(&topology::detect_host(&options.sysfs_root)?)?;
    let topology = super::cluster::apply_overrides(topology, options)?;
    let topology = match options.legacy_bind {
        Some(bind) => topology.with_legacy_bind(bind),
        None => topology,
    };
    let agents = AgentSet::load(&options.agents)?;
    let plan = Plan::build_for_requests(&topology, &agents, options.rate_per_s)?;
    for warning in plan.warnings(&agents) {
        warn!(%warning, "plan");
    }
    Ok((topology, agents, plan))
}

/// Step 2: outputs that would fail only at the end are checked now.
pub fn check_outputs(options: &RunOptions) -> Result<(), DaemonError> {
    if let Some(report) = &options.report {
        let dir = match report.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        if !dir.is_dir() {
            return Err(DaemonError::Usage {
                message: format!(
                    "--report {}: directory {} does not exist; create it or write the report elsewhere",
                    report.display(),
                    dir.display()
                ),
            });
        }
    }
    if let Some(dir) = &options.state_dir {
        std::fs::create_dir_all(dir).map_err(|err| DaemonError::Usage {
            message: format!(
                "--state-dir {}: cannot create it ({err}); pass a writable directory",
                dir.display()
            ),
        })?;
    }
    Ok(())
}

/// Steps 3 and 4: privileges, executors, phases. The executors' wake-up
/// guard runs on `guard_on`, the control runtime.
pub fn start_mesh(
    options: &RunOptions,
    topology: &Topology,
    agents: AgentSet,
    plan: Plan,
    began: Instant,
    guard_on: &tokio::runtime::Handle,
) -> Result<Booted, DaemonError> {
    let (laid, call_rings, gateway) = lay_out(&plan, topology, &agents)?;
    let legacy_book = Arc::new(LegacyBook::new(
        gateway
            .as_ref()
            .map_or_else(Vec::new, |(plan, _)| plan.endpoints(topology.host())),
    ));
    let Layout {
        routes,
        executors,
        phases,
    } = laid;
    let health = Arc::new(Health::default());
    if options.privileged {
        let process = prepare_process((IO_MEMORY * executors.len()) as u64)?;
        note(&health, &process.degraded);
    }
    let events = perf_events(&health);
    let slots = Slots::new(&agents).map_err(|source| RuntimeError::Ring { source })?;
    let mesh = Arc::new(Mesh::new(
        &agents,
        &routes,
        &MeshOptions {
            rate_per_s: options.rate_per_s,
            request_timeout: options.request_timeout,
            state_dir: options.state_dir.clone(),
            overhead: options.overhead,
            processes: slots.clone(),
            legacy: Arc::clone(&legacy_book),
        },
    ));
    let processes = ProcessSide::new(
        &agents,
        &plan,
        &routes,
        topology,
        &slots,
        &ProcessOptions {
            attach_socket: options.run_dir.join("agent.sock"),
            run_dir: options.run_dir.clone(),
            cgroup_root: super::CGROUP_ROOT.into(),
            builtin_methods: BUILTIN_METHODS.to_vec(),
        },
        Arc::clone(&health),
    )?;
    let make = {
        let mesh = Arc::clone(&mesh);
        Arc::new(move |id| mesh.make(id))
    };
    let control = Control::new(executors.len(), phases.len());
    let perf = Arc::new(PerfSet::default());
    let setup = thread_setup(options.privileged, &health, &perf, events);
    let runtime = start(
        Arc::clone(&routes),
        executors,
        make,
        setup,
        control,
        guard_on,
    )?;
    Ok(Booted {
        runtime,
        mesh,
        routes,
        call_rings,
        gateway,
        legacy_book,
        plan,
        agents,
        phases,
        health,
        perf,
        processes: Arc::new(Mutex::new(processes)),
        began,
    })
}

/// The legacy gateway's plan and ring ends, when it has one.
type GatewayEnds = Option<(GatewayPlan, CallRings<EventFd>)>;

/// The rings and executors of `plan`; in a cluster, every executor also
/// gets call rings to the cluster link, and with a legacy gateway to it,
/// whose ends are returned.
fn lay_out(
    plan: &Plan,
    topology: &Topology,
    agents: &AgentSet,
) -> Result<(Layout, Option<CallRings>, GatewayEnds), DaemonError> {
    let mut laid = layout(plan, topology, agents)?;
    let calls = match topology.cluster() {
        Some(_) => Some(laid.add_call_rings(RemoteKind::Host, Arc::new(Notify::new()))?),
        None => None,
    };
    let gateway = match GatewayPlan::new(agents, &laid.routes, topology.legacy()) {
        Some(gateway) => {
            let rings = laid.add_call_rings(RemoteKind::Legacy, gateway::wake_fd()?)?;
            Some((gateway, rings))
        }
        None => None,
    };
    Ok((laid, calls, gateway))
}

/// Opens the phases in order; returns the manifest agents started (the
/// load generator, alone in the last phase, is not one of them).
pub fn open_phases(booted: &Booted) -> usize {
    let mut started = 0;
    let generator_phase = booted.phases.len().saturating_sub(1);
    for (phase, &expected) in booted.phases.iter().enumerate() {
        if let Ok(mut processes) = booted.processes.lock() {
            processes.start_phase(phase, now_ns());
        }
        booted.runtime.open_phase(phase);
        if !booted.runtime.wait_started(phase, expected, PHASE_TIMEOUT) {
            warn!(
                phase,
                expected,
                started = booted.runtime.control().started(phase),
                "start phase timed out; going on with the next"
            );
        }
        if phase != generator_phase {
            started += booted.runtime.control().started(phase);
        }
    }
    info!(
        agents = started,
        startup_ms = booted.began.elapsed().as_secs_f64() * 1e3,
        "mesh up"
    );
    started
}

fn note(health: &Health, reasons: &[DegradedReason]) {
    for reason in reasons {
        health.raise(reason.as_str(), reason.describe());
    }
}

/// Probes the perf events; no hardware event means no PMU, one warning.
fn perf_events(health: &Health) -> Vec<PerfEvent> {
    let probe = perf::probe();
    if !probe.has_pmu() {
        let why = probe
            .failed
            .iter()
            .find(|(e, _)| e.is_hardware())
            .map_or_else(String::new, |(_, err)| err.clone());
        warn!(error = %why, "no hardware performance counters (no PMU); counting software events only");
        health.raise(
            "no_pmu",
            format!("no hardware performance counters ({why}); software events only"),
        );
    }
    probe.available
}

/// Each executor thread's first steps: its scheduling policy and timer
/// slack, with what it did not get noted as degraded, then its perf
/// counters (glommio has pinned it by now).
fn thread_setup(
    privileged: bool,
    health: &Arc<Health>,
    perf: &Arc<PerfSet>,
    events: Vec<PerfEvent>,
) -> ThreadSetup {
    let (health, perf) = (Arc::clone(health), Arc::clone(perf));
    Arc::new(move |settings| {
        if privileged {
            let thread = prepare_thread(ThreadPolicy::for_class(settings));
            note(&health, &thread.degraded);
        }
        if let Ok(cpu) = crate::runtime::affinity::current_cpu() {
            perf.register(ThreadPerf::open(cpu, &events));
        }
    })
}
