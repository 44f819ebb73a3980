//! Requests to the scheduler: placing a model's replicas and placing a
//! GPU job, each checked first (VRAM within bounds, a sane number of
//! replicas, a live host if one is named). A placement is created in the
//! store with this host's write; where it goes is chosen when the write
//! is issued (`room.rs`, `fit.rs`).

use super::MAX_VRAM_MIB;
use super::SchedError;
use super::scheduler::{GpuScheduler, MAX_REPLICAS, placement};
use super::types::{
    Decision, GpuIndex, HostName, JobRequest, ModelName, ModelRequest, Ownership, Placement, Slot,
};

impl GpuScheduler {
    /// Places each replica of a model: where the store has it already,
    /// else on the best GPU (see `fit.rs`), by creating its entry. The
    /// placement is decided when the store answers; until then it shows
    /// revision 0, not loaded.
    pub fn place(
        &mut self,
        req: &ModelRequest,
        now_ms: u64,
        out: &mut Vec<Decision>,
    ) -> Result<Vec<Placement>, SchedError> {
        self.check_request(&req.model, req.vram_mib, req.replicas, req.host.as_ref())?;
        let mut placed = Vec::with_capacity(usize::from(req.replicas));
        for replica in 0..req.replicas {
            let slot = Slot {
                model: req.model.clone(),
                replica,
            };
            if let Some(found) = self.where_is(&slot) {
                if req.pinned && !found.pinned {
                    self.change(&slot, |o| o.pinned = true, now_ms, out);
                }
                placed.push(found);
                continue;
            }
            let owner = Ownership {
                host: self.me.clone(),
                gpu: GpuIndex(0),
                vram_mib: req.vram_mib,
                pinned: req.pinned,
                active: false,
                priority: req.priority,
                policy: req.policy,
                loaded: false,
            };
            placed.push(self.create(&slot, owner, req.host.as_ref(), now_ms, out)?);
        }
        Ok(placed)
    }

    /// Places a GPU job: on a host where its model is resident (this host
    /// first, then the nearest), else it loads the model like an unpinned
    /// [`place`](Self::place), marked active so that it survives its
    /// host's loss while it serves. The model stays active `hold_ms` after.
    pub fn place_job(
        &mut self,
        job: &JobRequest,
        now_ms: u64,
        out: &mut Vec<Decision>,
    ) -> Result<Placement, SchedError> {
        self.check_request(&job.model, job.vram_mib, 1, None)?;
        self.touch(&job.model, job.hold_ms, now_ms, out);
        if let Some(found) = self.resident_replica(&job.model) {
            return Ok(found);
        }
        let slot = Slot {
            model: job.model.clone(),
            replica: 0,
        };
        if let Some(found) = self.where_is(&slot) {
            return Ok(found);
        }
        let owner = Ownership {
            host: self.me.clone(),
            gpu: GpuIndex(0),
            vram_mib: job.vram_mib,
            pinned: false,
            active: true,
            priority: job.priority,
            policy: job.policy,
            loaded: false,
        };
        self.create(&slot, owner, None, now_ms, out)
    }

    /// A loaded replica of `model`: this host's, else the nearest live
    /// owner's.
    fn resident_replica(&self, model: &ModelName) -> Option<Placement> {
        let mut best: Option<(u64, &HostName, Placement)> = None;
        for (slot, seen) in self.table.iter().filter(|(s, _)| &s.model == model) {
            let Some(owner) = seen.owner.as_ref().filter(|o| o.loaded) else {
                continue;
            };
            // This host first (0), then peers by latency (at least 1).
            let latency = if owner.host == self.me {
                if !self.loaded.contains_key(slot) {
                    continue;
                }
                0
            } else {
                match self.peers.get(&owner.host).filter(|p| !p.lost) {
                    Some(peer) => peer.latency_us.max(1),
                    None => continue,
                }
            };
            if best
                .as_ref()
                .is_none_or(|b| (latency, &owner.host) < (b.0, b.1))
            {
                best = Some((latency, &owner.host, placement(slot, owner, seen.revision)));
            }
        }
        best.map(|(_, _, p)| p)
    }

    fn check_request(
        &self,
        model: &ModelName,
        vram_mib: u64,
        replicas: u8,
        host: Option<&HostName>,
    ) -> Result<(), SchedError> {
        if !(1..=MAX_VRAM_MIB).contains(&vram_mib) {
            return Err(SchedError::Vram {
                model: model.clone(),
                vram_mib,
                max: MAX_VRAM_MIB,
            });
        }
        if replicas == 0 || replicas > MAX_REPLICAS {
            return Err(SchedError::Replicas {
                model: model.clone(),
                replicas,
                max: MAX_REPLICAS,
            });
        }
        match host {
            Some(h) if !self.is_live(h) => Err(SchedError::UnknownHost { host: h.clone() }),
            _ => Ok(()),
        }
    }
}
