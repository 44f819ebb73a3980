//! Carrying out the scheduler's decisions: writes to the placement store
//! (the link's bucket, or the single host's [`MemoryKv`] at once), loads,
//! yields and pins through the VRAM optimizer ([`GpuSide`]).
//!
//! A write to the link that does not fit its queue is answered as failed
//! at once, so the scheduler backs off instead of waiting for an answer
//! that will not come. On a single host a write's answer may decide a
//! load, carried out in the same pass.
//!
//! [`MemoryKv`]: crate::gpu::sched::MemoryKv

use tracing::{debug, info, warn};

use super::side::ClusterSide;
use crate::daemon::gpus::GpuSide;
use crate::gpu::sched::{Decision, Slot, WriteOutcome, WriteRequest};
use crate::observe::admin::Answer;

/// Passes over the decisions a single host's writes may chain, at most.
const MAX_PASSES: usize = 8;

impl ClusterSide {
    /// Carries out the scheduler's decisions; returns what the optimizer
    /// answered to each load, by slot.
    pub(super) fn carry_out(&mut self, now_ms: u64, gpus: &mut GpuSide) -> Vec<(Slot, Answer)> {
        let mut loads = Vec::new();
        let mut hosts_changed = false;
        for _ in 0..MAX_PASSES {
            let decisions = std::mem::take(&mut self.decisions);
            if decisions.is_empty() {
                self.decisions = decisions;
                break;
            }
            self.decided = true;
            for decision in &decisions {
                match decision {
                    Decision::Write(req) => self.write(req, now_ms),
                    Decision::Load { slot, .. } => {
                        loads.push((slot.clone(), self.load(slot, now_ms, gpus)));
                    }
                    Decision::HostLost { host } | Decision::HostUp { host } => {
                        debug!(peer = %host, "cluster host changed state");
                        hosts_changed = true;
                    }
                    other => note(other, gpus),
                }
            }
            // Keep the vector's capacity for the next pass.
            let mut decisions = decisions;
            decisions.clear();
            decisions.append(&mut self.decisions);
            self.decisions = decisions;
        }
        if hosts_changed {
            self.note_peers();
        }
        loads
    }

    /// Hands a write to the store: the single host's at once, the link's
    /// through its queue.
    fn write(&mut self, req: &WriteRequest, now_ms: u64) {
        let outcome = match (&mut self.kv, &self.link) {
            (Some(kv), _) => kv.apply(req),
            (None, Some(link)) => match link.writes.try_send(req.clone()) {
                Ok(()) => return,
                Err(_) => WriteOutcome::Failed,
            },
            (None, None) => WriteOutcome::Failed,
        };
        self.sched
            .written(&req.slot, req.id, outcome, now_ms, &mut self.decisions);
    }

    /// Loads a slot placed here through the VRAM optimizer, pinned there if
    /// it is pinned in the cluster. A refusal gives the slot up, so that a
    /// slot which must survive is placed again elsewhere.
    fn load(&mut self, slot: &Slot, now_ms: u64, gpus: &mut GpuSide) -> Answer {
        let Some(placed) = self.sched.where_is(slot) else {
            return Err((500, format!("{slot} was placed here but is not held")));
        };
        info!(model = %slot.model, replica = slot.replica, gpu = placed.gpu.0, vram_mib = placed.vram_mib, revision = placed.revision, "model placed on this host");
        let answer = gpus.place(&slot.model.0, placed.vram_mib, placed.pinned);
        if let Err((_, why)) = &answer {
            warn!(model = %slot.model, why, "the VRAM optimizer refused a model placed here; giving it up");
            self.sched.load_failed(slot, now_ms, &mut self.decisions);
        }
        answer
    }
}

/// Decisions the optimizer only hears of, or that are only logged.
fn note(decision: &Decision, gpus: &mut GpuSide) {
    match decision {
        Decision::Yield { slot, gpu, to } => {
            let to = to.as_ref().map_or("nobody", |h| h.0.as_str());
            info!(model = %slot.model, replica = slot.replica, gpu = gpu.0, to, "model yielded: the placement store names another owner");
            if let Err((_, why)) = gpus.unpin(&slot.model.0) {
                debug!(model = %slot.model, why, "yielded model not known to the VRAM optimizer");
            }
        }
        Decision::Pinned { slot, pinned } => {
            let answer = if *pinned {
                gpus.pin(&slot.model.0)
            } else {
                gpus.unpin(&slot.model.0)
            };
            if let Err((_, why)) = answer {
                debug!(model = %slot.model, why, "pin not taken by the VRAM optimizer");
            }
        }
        Decision::Assigned {
            slot,
            host,
            gpu,
            revision,
        } => {
            info!(model = %slot.model, replica = slot.replica, host = %host, gpu = gpu.0, revision, "model assigned to a peer");
        }
        Decision::GaveUp { slot, tries } => {
            warn!(model = %slot.model, replica = slot.replica, tries, "placement given up: the placement store kept refusing to create it; place it again");
        }
        Decision::Unplaced { slot, vram_mib } => {
            warn!(model = %slot.model, replica = slot.replica, vram_mib, "no GPU in the cluster has room for a model that must stay placed; retrying each tick");
        }
        Decision::Degraded(degraded) => debug!(degraded, "cluster view"),
        Decision::Write(_)
        | Decision::Load { .. }
        | Decision::HostLost { .. }
        | Decision::HostUp { .. } => {}
    }
}
