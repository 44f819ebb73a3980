//! Between the link's [`HostState`] and the scheduler's [`HostReport`]:
//! the core loop turns each peer's state into a report for
//! `GpuScheduler::observe`, and the scheduler's own report into the state
//! the link publishes (adding queue depths and agent health itself).

use super::proto::{AssignmentState, GpuState, HostState, ModelState, OrphanState};
use crate::gpu::sched::{
    Assignment, Claim, Epoch, GpuIndex, GpuReport, HostName, HostReport, ModelName, Orphan, Policy,
    Slot,
};

/// A peer's state as the scheduler reads it.
pub fn report_from_state(state: &HostState) -> HostReport {
    HostReport {
        host: HostName(state.host.clone()),
        incarnation: state.incarnation,
        degraded: state.degraded,
        gpus: state
            .gpus
            .iter()
            .map(|g| GpuReport {
                gpu: GpuIndex(g.index),
                total_mib: g.total_mib,
                free_mib: g.free_mib,
            })
            .collect(),
        owned: state.models.iter().map(claim).collect(),
        assignments: state
            .assignments
            .iter()
            .map(|a| Assignment {
                target: HostName(a.target.clone()),
                claim: claim(&a.model),
            })
            .collect(),
        orphans: state
            .orphans
            .iter()
            .map(|o| Orphan {
                host: HostName(o.host.clone()),
                claim: claim(&o.model),
            })
            .collect(),
    }
}

/// This host's scheduler report as the link publishes it; queues, agents,
/// `seq` and acks are left for the core loop and the link.
pub fn state_from_report(report: &HostReport) -> HostState {
    HostState {
        host: report.host.0.clone(),
        incarnation: report.incarnation,
        degraded: report.degraded,
        gpus: report
            .gpus
            .iter()
            .map(|g| GpuState {
                index: g.gpu.0,
                total_mib: g.total_mib,
                free_mib: g.free_mib,
            })
            .collect(),
        models: report.owned.iter().map(model).collect(),
        assignments: report
            .assignments
            .iter()
            .map(|a| AssignmentState {
                target: a.target.0.clone(),
                model: model(&a.claim),
            })
            .collect(),
        orphans: report
            .orphans
            .iter()
            .map(|o| OrphanState {
                host: o.host.0.clone(),
                model: model(&o.claim),
            })
            .collect(),
        ..HostState::default()
    }
}

fn claim(m: &ModelState) -> Claim {
    Claim {
        slot: Slot {
            model: ModelName(m.model.clone()),
            replica: m.replica,
        },
        gpu: GpuIndex(m.gpu),
        vram_mib: m.vram_mib,
        pinned: m.pinned,
        active: m.active,
        priority: m.priority,
        policy: if m.spread {
            Policy::Spread
        } else {
            Policy::Binpack
        },
        epoch: Epoch(m.epoch),
    }
}

fn model(c: &Claim) -> ModelState {
    ModelState {
        model: c.slot.model.0.clone(),
        replica: c.slot.replica,
        gpu: c.gpu.0,
        vram_mib: c.vram_mib,
        pinned: c.pinned,
        active: c.active,
        priority: c.priority,
        spread: c.policy == Policy::Spread,
        epoch: c.epoch.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::sched::{GpuScheduler, ModelRequest, SchedConfig};

    #[test]
    fn a_scheduler_report_survives_the_trip_through_a_host_state() {
        let mut sched =
            GpuScheduler::cluster(HostName::from("a"), 7, SchedConfig::default()).expect("valid");
        sched.set_local_gpus(&[GpuReport {
            gpu: GpuIndex(0),
            total_mib: 8192,
            free_mib: 8192,
        }]);
        let req = ModelRequest {
            model: ModelName::from("tts"),
            vram_mib: 2048,
            pinned: true,
            priority: 1,
            policy: Policy::Spread,
            replicas: 1,
            host: None,
        };
        sched.place(&req, 0, &mut Vec::new()).expect("fits");
        let sut = sched.local_report();

        let back = report_from_state(&state_from_report(&sut));

        assert_eq!(back, sut);
    }
}
