//! `pinwheel bench` with no subcommand: `ring`, `wakeup` and `mesh` under
//! one topology, or under two (`--vs`) to compare them.
//!
//! What each bench takes from a topology:
//!
//! * ring: the first two data-plane CPUs (the first two CPUs if the data
//!   plane has fewer), and the first one's class wait strategy and
//!   spin-before-park; client and server are threads of this process.
//! * wakeup: the first data-plane CPU and its class's settings: preempt
//!   timer, spin-before-park, task queue, SCHED_FIFO priority.
//! * mesh: the whole file, as `pinwheel run` reads it.
//!
//! Under two topologies the benches interleave, `ring a, ring b, wakeup a,
//! wakeup b, mesh a, mesh b`, so that whatever else the host does drifts
//! over both sides alike instead of landing on one.

use std::path::PathBuf;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::BenchError;
use super::mesh::MeshBench;
use super::ring::RingBench;
use super::wakeup::WakeupBench;
use crate::runtime::affinity::SchedPolicy;
use crate::topology::{CpuId, Topology};

/// What every topology's benches share.
#[derive(Debug, Clone, PartialEq)]
pub struct SuiteOptions {
    /// The voice pipeline's manifest, for the mesh.
    pub agents: PathBuf,
    /// Where sysfs is.
    pub sysfs_root: PathBuf,
    /// Ring request body bytes.
    pub size: usize,
    /// Ring round trips.
    pub msgs: u64,
    /// Wake-up period.
    pub period: Duration,
    /// Wake-ups per case.
    pub loops: u64,
    /// How long the mesh runs.
    pub mesh_duration: Duration,
    /// The mesh's request rate.
    pub rate_per_s: f64,
    /// Ask for real-time priority, locked memory and timer slack.
    pub privileged: bool,
}

/// The benches of one topology.
#[derive(Debug, Clone)]
pub struct Target {
    /// Its name in tables, legends and file names.
    pub label: String,
    /// Its topology file.
    pub topology: PathBuf,
    /// The ring bench.
    pub ring: RingBench,
    /// The wake-up bench.
    pub wakeup: WakeupBench,
    /// The mesh bench.
    pub mesh: MeshBench,
}

impl Target {
    /// The benches a validated topology calls for.
    pub fn new(
        label: String,
        topology: &Topology,
        options: &SuiteOptions,
    ) -> Result<Self, BenchError> {
        let cpus: Vec<CpuId> = if topology.data_plane().len() >= 2 {
            topology.data_plane().iter().collect()
        } else {
            topology.cpus().iter().collect()
        };
        let (Some(&first), Some(&second)) = (cpus.first(), cpus.get(1)) else {
            return Err(BenchError::Topology {
                path: topology.path().to_owned(),
                reason: "it has one CPU; the ring bench needs two".into(),
            });
        };
        let class_settings = |cpu| {
            topology
                .class_of(cpu)
                .map(|class| topology.settings(class))
                .ok_or_else(|| BenchError::Topology {
                    path: topology.path().to_owned(),
                    reason: format!("CPU {cpu} has no class"),
                })
        };
        let ring_settings = class_settings(first)?;
        Ok(Self {
            label,
            topology: topology.path().to_owned(),
            ring: RingBench {
                cpus: [first, second],
                peer_exe: None,
                wait: ring_settings.wait,
                size: options.size,
                msgs: options.msgs,
                spin_us: ring_settings.spin_before_park_us,
            },
            wakeup: WakeupBench::for_topology(
                topology,
                options.period,
                options.loops,
                options.privileged,
            )?,
            mesh: MeshBench {
                topology: topology.path().to_owned(),
                agents: vec![options.agents.clone()],
                sysfs_root: options.sysfs_root.clone(),
                duration: options.mesh_duration,
                rate_per_s: options.rate_per_s,
                privileged: options.privileged,
                overhead: false,
            },
        })
    }
}

/// A measured case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaseKind {
    /// Ring round trip between two threads.
    RingRtt,
    /// Wake-up lateness of a glommio executor.
    WakeupExecutor,
    /// Wake-up lateness of a plain thread in `clock_nanosleep`.
    WakeupThread,
    /// Audio frame to response through the daemon.
    MeshVoice,
    /// A load generator request, end to end, through the daemon.
    MeshRequest,
}

impl CaseKind {
    /// Every case, in table order.
    pub const ALL: [CaseKind; 5] = [
        CaseKind::RingRtt,
        CaseKind::WakeupExecutor,
        CaseKind::WakeupThread,
        CaseKind::MeshVoice,
        CaseKind::MeshRequest,
    ];

    /// The bench it belongs to (`ring`, `wakeup`, `mesh`): one plot each.
    pub fn bench(self) -> &'static str {
        match self {
            CaseKind::RingRtt => "ring",
            CaseKind::WakeupExecutor | CaseKind::WakeupThread => "wakeup",
            CaseKind::MeshVoice | CaseKind::MeshRequest => "mesh",
        }
    }

    /// Its name in the table and the legend.
    pub fn name(self) -> &'static str {
        match self {
            CaseKind::RingRtt => "ring round trip",
            CaseKind::WakeupExecutor => "wakeup glommio executor",
            CaseKind::WakeupThread => "wakeup clock_nanosleep thread",
            CaseKind::MeshVoice => "mesh voice frame to response",
            CaseKind::MeshRequest => "mesh request end to end",
        }
    }

    /// Its file name stem.
    pub fn slug(self) -> &'static str {
        match self {
            CaseKind::RingRtt => "ring-rtt",
            CaseKind::WakeupExecutor => "wakeup-executor",
            CaseKind::WakeupThread => "wakeup-thread",
            CaseKind::MeshVoice => "mesh-voice",
            CaseKind::MeshRequest => "mesh-request",
        }
    }
}

/// One topology's results.
#[derive(Debug)]
pub struct TargetResults {
    /// What ran.
    pub target: Target,
    /// Each case's histogram, in [`CaseKind::ALL`] order.
    pub cases: Vec<(CaseKind, Histogram<u64>)>,
    /// The policy the wake-up cases ran under.
    pub wakeup_policy: SchedPolicy,
    /// Mesh agents started, of those planned.
    pub mesh_agents: (usize, usize),
}

impl TargetResults {
    /// The histogram of a case.
    pub fn case(&self, kind: CaseKind) -> Option<&Histogram<u64>> {
        self.cases.iter().find(|(k, _)| *k == kind).map(|(_, h)| h)
    }
}

/// Runs every bench for each target, interleaved; results in target order.
pub fn run_suite(targets: Vec<Target>) -> Result<Vec<TargetResults>, BenchError> {
    let mut rings = Vec::new();
    for target in &targets {
        // The client pins the thread it runs on: a thread of its own keeps
        // this one's affinity whole for the benches after it (the mesh
        // checks the topology against the CPUs this thread may use).
        let rtt = std::thread::scope(|scope| {
            scope
                .spawn(|| target.ring.round_trips())
                .join()
                .map_err(|_| BenchError::Peer {
                    reason: "the ring client panicked".into(),
                })
        })??;
        rings.push(rtt);
    }
    let mut wakeups = Vec::new();
    for target in &targets {
        wakeups.push(target.wakeup.run()?);
    }
    let mut meshes = Vec::new();
    for target in &targets {
        meshes.push(target.mesh.run()?);
    }
    Ok(targets
        .into_iter()
        .zip(rings)
        .zip(wakeups.into_iter().zip(meshes))
        .map(|((target, ring), (wakeup, mesh))| TargetResults {
            target,
            cases: vec![
                (CaseKind::RingRtt, ring),
                (CaseKind::WakeupExecutor, wakeup.executor),
                (CaseKind::WakeupThread, wakeup.thread),
                (CaseKind::MeshVoice, mesh.voice),
                (CaseKind::MeshRequest, mesh.requests),
            ],
            wakeup_policy: wakeup.policy,
            mesh_agents: mesh.agents,
        })
        .collect())
}
