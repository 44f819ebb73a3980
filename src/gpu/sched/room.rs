//! Where a slot fits: this host's free VRAM (less its loads and claims in
//! flight), the VRAM promised to owners that have not loaded yet, the
//! candidate GPUs of this host and its live peers, and the choice among
//! them (`fit.rs`).

use std::collections::BTreeMap;

use super::SchedError;
use super::fit::{self, Candidate};
use super::scheduler::GpuScheduler;
use super::types::{GpuIndex, GpuReport, HostName, Ownership, Slot};

/// VRAM promised to loads in flight, per (host, GPU), MiB.
pub(super) type Reserved = BTreeMap<(HostName, GpuIndex), u64>;

impl GpuScheduler {
    /// VRAM free on a local GPU: the backend's figure less the loads
    /// decided since it was sampled, and never more than what this host's
    /// own loads leave, since the driver's figure lags loads; less the
    /// claims in flight (writes that would have this host load a slot
    /// there), which the store may grant all at once.
    pub(super) fn local_free(&self, gpu: &GpuReport) -> u64 {
        let since = self.loaded_since_sample.get(&gpu.gpu).copied().unwrap_or(0);
        let held: u64 = self
            .loaded
            .values()
            .filter(|l| l.gpu == gpu.gpu)
            .map(|l| l.vram_mib)
            .fold(0, u64::saturating_add);
        let claiming: u64 = self
            .writing
            .iter()
            .filter(|(slot, _)| !self.loaded.contains_key(*slot))
            .filter_map(|(_, f)| f.write.owner())
            .filter(|o| o.host == self.me && o.loaded && o.gpu == gpu.gpu)
            .map(|o| o.vram_mib)
            .fold(0, u64::saturating_add);
        gpu.free_mib
            .saturating_sub(since)
            .min(gpu.total_mib.saturating_sub(held))
            .saturating_sub(claiming)
    }

    /// VRAM promised to live owners that have not loaded it yet: entries
    /// not loaded, and this host's writes in flight (this host's own
    /// claims are in [`local_free`](Self::local_free) already).
    pub(super) fn reserved(&self) -> Reserved {
        let mut reserved = Reserved::new();
        let pending = self.table.iter().filter_map(|(slot, seen)| {
            let owner = seen.owner.as_ref()?;
            (!self.writing.contains_key(slot)).then_some((slot, owner))
        });
        let writes = self
            .writing
            .iter()
            .filter_map(|(slot, f)| f.write.owner().map(|o| (slot, o)));
        for (slot, owner) in pending.chain(writes) {
            let local = owner.host == self.me && (owner.loaded || self.loaded.contains_key(slot));
            if owner.loaded && owner.host != self.me || local || !self.is_live(&owner.host) {
                continue;
            }
            let taken = reserved.entry((owner.host.clone(), owner.gpu)).or_default();
            *taken = taken.saturating_add(owner.vram_mib);
        }
        reserved
    }

    /// Every GPU of this host and of live peers but `exclude`, with room
    /// after reservations, for `slot` (noting hosts that hold another
    /// replica of its model).
    pub(super) fn candidates<'s>(
        &'s self,
        reserved: &Reserved,
        slot: &Slot,
        exclude: Option<&HostName>,
    ) -> Vec<Candidate<'s>> {
        let holds_replica = |host: &HostName| {
            let other = |s: &Slot| s.model == slot.model && s.replica != slot.replica;
            let stored = self
                .table
                .iter()
                .any(|(s, seen)| other(s) && seen.owner.as_ref().is_some_and(|o| &o.host == host));
            let writing = self
                .writing
                .iter()
                .any(|(s, f)| other(s) && f.write.owner().is_some_and(|o| &o.host == host));
            stored || writing
        };
        let room = |host: &HostName, g: &GpuReport| {
            let taken = reserved.get(&(host.clone(), g.gpu)).copied().unwrap_or(0);
            g.free_mib.saturating_sub(taken)
        };
        let mut out: Vec<Candidate<'s>> = Vec::new();
        if exclude != Some(&self.me) {
            let mine = holds_replica(&self.me);
            out.extend(self.local_gpus.iter().map(|g| Candidate {
                host: &self.me,
                gpu: g.gpu,
                free_mib: room(
                    &self.me,
                    &GpuReport {
                        free_mib: self.local_free(g),
                        ..*g
                    },
                ),
                latency_us: 0,
                holds_replica: mine,
            }));
        }
        for peer in self
            .live_peers()
            .filter(|p| Some(&p.report.host) != exclude)
        {
            let host = &peer.report.host;
            let holds = holds_replica(host);
            out.extend(peer.report.gpus.iter().map(|g| Candidate {
                host,
                gpu: g.gpu,
                free_mib: room(host, g),
                latency_us: peer.latency_us,
                holds_replica: holds,
            }));
        }
        out
    }

    /// Chooses a host and GPU for `owner`'s slot among the candidates but
    /// `exclude` (and only `only`, if given); fills them into `owner`.
    pub(super) fn choose(
        &self,
        slot: &Slot,
        owner: &mut Ownership,
        only: Option<&HostName>,
        exclude: Option<&HostName>,
    ) -> Result<(), SchedError> {
        let reserved = self.reserved();
        let mut cands = self.candidates(&reserved, slot, exclude);
        cands.retain(|c| only.is_none_or(|h| c.host == h));
        let weight = self.config.latency_weight_mib_per_ms;
        let Some(chosen) = fit::choose(&cands, owner.vram_mib, owner.policy, weight) else {
            return Err(SchedError::NoRoom {
                model: slot.model.clone(),
                vram_mib: owner.vram_mib,
                largest_free_mib: cands.iter().map(|c| c.free_mib).max().unwrap_or(0),
            });
        };
        owner.host = chosen.host.clone();
        owner.gpu = chosen.gpu;
        // A slot placed here is loaded as soon as the store agrees.
        owner.loaded = owner.host == self.me;
        Ok(())
    }
}
