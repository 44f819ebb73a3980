//! Between the link's frames and the scheduler's types: the core loop
//! turns each peer's [`HostState`] into a report for
//! `GpuScheduler::observe` and the scheduler's own report into the state
//! the link publishes (adding queue depths and agent health itself), and
//! placement store entries into [`Ownership`]s and back.

use super::proto::{GpuState, HostState, OwnershipRecord, parse_slot_key, slot_key};
use crate::gpu::sched::{
    GpuIndex, GpuReport, HostName, HostReport, ModelName, Ownership, Policy, Slot,
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
    }
}

/// This host's scheduler report as the link publishes it; queues, agents,
/// `seq`, `sent_ms` and acks are left for the core loop and the link.
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
        ..HostState::default()
    }
}

/// A placement store entry as the scheduler reads it.
pub fn ownership_from_record(record: &OwnershipRecord) -> Ownership {
    Ownership {
        host: HostName(record.host.clone()),
        gpu: GpuIndex(record.gpu),
        vram_mib: record.vram_mib,
        pinned: record.pinned,
        active: record.active,
        priority: record.priority,
        policy: if record.spread {
            Policy::Spread
        } else {
            Policy::Binpack
        },
        loaded: record.loaded,
    }
}

/// An ownership as the placement store holds it.
pub fn record_from_ownership(owner: &Ownership) -> OwnershipRecord {
    OwnershipRecord {
        host: owner.host.0.clone(),
        gpu: owner.gpu.0,
        vram_mib: owner.vram_mib,
        pinned: owner.pinned,
        active: owner.active,
        priority: owner.priority,
        spread: owner.policy == Policy::Spread,
        loaded: owner.loaded,
    }
}

/// The store key of `slot`, if its model name can be one.
pub fn key_of(slot: &Slot) -> Option<String> {
    slot_key(&slot.model.0, slot.replica)
}

/// The slot a store key names, if it names one.
pub fn slot_of(key: &str) -> Option<Slot> {
    parse_slot_key(key).map(|(model, replica)| Slot {
        model: ModelName(model),
        replica,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scheduler_report_survives_the_trip_through_a_host_state() {
        let sut = HostReport {
            host: HostName::from("a"),
            incarnation: 7,
            degraded: true,
            gpus: vec![GpuReport {
                gpu: GpuIndex(0),
                total_mib: 8192,
                free_mib: 4096,
            }],
        };

        let back = report_from_state(&state_from_report(&sut));

        assert_eq!(back, sut);
    }

    #[test]
    fn an_ownership_and_its_slot_survive_the_trip_through_the_store() {
        let owner = Ownership {
            host: HostName::from("pc2"),
            gpu: GpuIndex(1),
            vram_mib: 3100,
            pinned: true,
            active: false,
            priority: 2,
            policy: Policy::Spread,
            loaded: false,
        };
        let slot = Slot {
            model: ModelName::from("whisper-large-v3"),
            replica: 1,
        };

        let back = ownership_from_record(&record_from_ownership(&owner));
        let key = key_of(&slot).expect("a usable name");

        assert_eq!(back, owner);
        assert_eq!(slot_of(&key), Some(slot));
    }
}
