//! What this host's scheduler can tell an operator (`GET /v1/cluster`,
//! `pinwheel cluster status`): hosts with their state, and placements.

use super::scheduler::{GpuScheduler, placement};
use super::types::{HostName, HostState, HostStatus, Placement, Slot};

impl GpuScheduler {
    /// Every host in this view, this one first.
    pub fn hosts(&self) -> Vec<HostStatus> {
        let me = HostStatus {
            host: self.me.clone(),
            state: if self.degraded {
                HostState::Degraded
            } else {
                HostState::Up
            },
            last_seen_ms: None,
            latency_us: 0,
        };
        let peers = self.peers.values().map(|p| HostStatus {
            host: p.report.host.clone(),
            state: match (p.lost, p.report.degraded) {
                (true, _) => HostState::Lost,
                (false, true) => HostState::Degraded,
                (false, false) => HostState::Up,
            },
            last_seen_ms: Some(p.last_seen_ms),
            latency_us: p.latency_us,
        });
        std::iter::once(me).chain(peers).collect()
    }

    /// Every slot the store holds, by slot, with this host's writes in
    /// flight in place of what they replace.
    pub fn placements(&self) -> Vec<Placement> {
        let stored = self
            .table
            .iter()
            .filter(|(slot, _)| !self.writing.contains_key(*slot))
            .filter_map(|(slot, seen)| {
                let owner = seen.owner.as_ref()?;
                Some(placement(slot, owner, seen.revision))
            });
        let writing = self
            .writing
            .iter()
            .filter_map(|(slot, f)| f.write.owner().map(|o| placement(slot, o, 0)));
        let mut all: Vec<Placement> = stored.chain(writing).collect();
        all.sort_by(|a, b| a.slot.cmp(&b.slot));
        all
    }

    /// The host that has `slot` loaded in the store, if any.
    pub fn holder(&self, slot: &Slot) -> Option<HostName> {
        self.where_is(slot).filter(|p| p.loaded).map(|p| p.host)
    }
}
