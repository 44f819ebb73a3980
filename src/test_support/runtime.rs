//! Executors for a small plan, booted the way the daemon boots them, for
//! tests that run their own agents on the runtime without a daemon.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::config::{AgentSet, SourceFile};
use crate::plan::Plan;
use crate::runtime::RuntimeError;
use crate::runtime::agent::Agent;
use crate::runtime::ctx::Ctx;
use crate::runtime::executor::{Control, Runtime, start};
use crate::runtime::layout::{Layout, layout};
use crate::runtime::node::STATUS_TIMEOUT;
use crate::runtime::stats::{AgentCounts, StatsSnapshot};
use crate::topology;
use pinwheel_ipc::wire::{AgentId, Priority};

/// A host of two CPUs, 0 and 1, one uniform class with the adaptive wait:
/// the topology of the runtime tests.
pub const TWO_CPUS: &str = "schema = 1\n[host]\nname = \"t\"\ncpus = { uniform = \"0-1\" }\n[class.uniform]\nwait = \"adaptive\"\n";

/// What a call came to when no reply came back at all.
pub const NO_REPLY: u16 = u16::MAX;

/// Plans the agents of `agents` (a manifest's text) on the topology
/// `topology` (a topology file's text), starts an executor per planned
/// CPU with the agents `make` builds, and opens every start phase,
/// panicking if one does not start within ten seconds.
pub fn boot<A: Agent + 'static>(
    topology: &str,
    agents: &str,
    make: impl Fn(AgentId) -> A + Send + Sync + 'static,
) -> Runtime {
    let file = SourceFile::from_text(Path::new("t.toml"), topology);
    let raw = file.parse().expect("a topology file");
    let topology = topology::validate(raw, &file, None).expect("a valid topology");
    let agents = AgentSet::from_sources(&[SourceFile::from_text(Path::new("a.toml"), agents)])
        .expect("a valid manifest");
    let plan = Plan::build(&topology, &agents).expect("a plan");
    let Layout {
        routes,
        executors,
        phases,
    } = layout(&plan, &topology, &agents).expect("a layout");
    let control = Control::new(executors.len(), phases.len());
    let runtime = start(
        routes,
        executors,
        Arc::new(make),
        Arc::new(|_| {}),
        control,
        super::control_runtime(),
    )
    .expect("the executors start");
    for (phase, &expected) in phases.iter().enumerate() {
        runtime.open_phase(phase);
        assert!(
            runtime.wait_started(phase, expected, Duration::from_secs(10)),
            "phase {phase} started"
        );
    }
    runtime
}

/// Waits until `done` is raised or `limit` has passed; whether it was
/// raised. A hung agent fails its test instead of blocking it.
pub fn wait_for(done: &AtomicBool, limit: Duration) -> bool {
    let give_up = Instant::now() + limit;
    // SYNC: Acquire pairs with the Release store of whoever raises it.
    while !done.load(Ordering::Acquire) {
        if Instant::now() >= give_up {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// Calls `to` with an empty body and reduces the outcome to a status: a
/// reply's code, [`STATUS_TIMEOUT`] when the call's own deadline passed
/// first, or [`NO_REPLY`].
pub async fn call_status(ctx: &Ctx, to: AgentId, method: u16, timeout: Duration) -> u16 {
    match ctx.call(to, method, &[], Priority::Normal, timeout).await {
        Ok(reply) => reply.head().code,
        Err(RuntimeError::TimedOut) => STATUS_TIMEOUT,
        Err(_) => NO_REPLY,
    }
}

/// `agent`'s counts in the executors' final statistics.
pub fn counts(snapshots: &[StatsSnapshot], agent: AgentId) -> AgentCounts {
    snapshots
        .iter()
        .flat_map(|s| s.agents.iter())
        .find(|(a, _)| *a == agent)
        .map(|(_, c)| *c)
        .expect("the agent is in the statistics")
}
