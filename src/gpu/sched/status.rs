//! What this host's scheduler can tell an operator (`GET /v1/cluster`,
//! `pinwheel cluster status`): hosts with their state, and placements.

use std::collections::BTreeSet;

use super::scheduler::GpuScheduler;
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

    /// Every slot live hosts hold or are about to load, by slot.
    pub fn placements(&self) -> Vec<Placement> {
        let mut slots = BTreeSet::new();
        slots.extend(self.owned.keys());
        slots.extend(self.assignments.keys());
        for peer in self.live_peers() {
            slots.extend(peer.report.owned.iter().map(|c| &c.slot));
            slots.extend(peer.report.assignments.iter().map(|a| &a.claim.slot));
        }
        slots
            .into_iter()
            .filter_map(|slot| self.where_is(slot))
            .collect()
    }

    /// The host holding `slot` in this view, if any (for tests and status).
    pub fn holder(&self, slot: &Slot) -> Option<HostName> {
        self.where_is(slot).filter(|p| p.loaded).map(|p| p.host)
    }
}
