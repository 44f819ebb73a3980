//! The admin API's place, pin and unpin, as the cluster side answers them:
//! the scheduler decides where a model goes, the VRAM optimizer of the
//! host it goes to loads and pins it.
//!
//! * **Place** (`POST /v1/gpu/place`): one replica, normal priority,
//!   binpack, pinned if asked. On a single host the placement store answers
//!   at once and the model is loaded through the optimizer: the answer
//!   carries the optimizer's state (`resident`, or `waiting` for room). In
//!   a cluster the placement is `placing` until the bucket takes the
//!   write, then `assigned` until its host loads it.
//! * **Pin / unpin**: in the placement store (any host may ask; the store
//!   orders concurrent changes), which every host follows: the owner's
//!   optimizer pins it (never evicted), and a pinned placement is placed
//!   again on a survivor if its host is lost. A model held here is pinned
//!   in the optimizer at once.
//!
//! Answers: the first replica's placement flattened (`model`, `host`,
//! `gpu`, `vram_mib`, `pinned`, `state`, ...) and every replica under
//! `placements`.

use std::time::Instant;

use super::render;
use super::side::ClusterSide;
use crate::config::name_problem;
use crate::daemon::gpus::GpuSide;
use crate::gpu::sched::{HostName, ModelName, ModelRequest, Placement, Policy, SchedError};
use crate::observe::admin::{Answer, Command};
use crate::observe::api::ModelAnswer;
use crate::observe::view::DaemonView;
use pinwheel_ipc::wire::Priority;

impl ClusterSide {
    /// Answers an admin command about GPU placement.
    pub fn answer(
        &mut self,
        command: &Command,
        now: Instant,
        view: &DaemonView,
        gpus: &mut GpuSide,
    ) -> Answer {
        let answer = match command {
            Command::Place {
                model,
                vram_mib,
                pin,
                host,
            } => self.place(model, *vram_mib, *pin, host.as_deref(), now, gpus),
            Command::Pin { model } => self.pin(model, true, now, gpus),
            Command::Unpin { model } => self.pin(model, false, now, gpus),
        };
        // Peers learn of a change at once, not at the next period.
        self.next_state = now;
        self.after_change(now, view, true);
        answer
    }

    fn place(
        &mut self,
        model: &str,
        vram_mib: u64,
        pinned: bool,
        host: Option<&str>,
        now: Instant,
        gpus: &mut GpuSide,
    ) -> Answer {
        if let Some(problem) = name_problem(model) {
            return Err((400, format!("model name {model:?} {problem}")));
        }
        if crate::cluster::slot_key(model, 0).is_none() {
            return Err((
                400,
                format!("model name {model:?} may not end with '.' or hold '..'"),
            ));
        }
        let request = ModelRequest {
            model: ModelName::from(model),
            vram_mib,
            pinned,
            priority: Priority::Normal as u8,
            policy: Policy::Binpack,
            replicas: 1,
            host: host.map(HostName::from),
        };
        let now_ms = self.ms(now);
        let placed = self
            .sched
            .place(&request, now_ms, &mut self.decisions)
            .map_err(|err| (status_of(&err), err.to_string()))?;
        let loads = self.carry_out(now_ms, gpus);
        let mut states = Vec::with_capacity(placed.len());
        let mut settled = Vec::with_capacity(placed.len());
        for p in placed {
            // The write may have been answered already (a single host).
            let p = self.sched.where_is(&p.slot).unwrap_or(p);
            let state = match loads.iter().find(|(slot, _)| *slot == p.slot) {
                Some((_, Err(refused))) => return Err(refused.clone()),
                Some((_, Ok(local))) => local.state.clone(),
                // Not in the store yet: the write is on its way.
                None if p.revision == 0 => "placing".to_owned(),
                // Resident here already: a pin reaches the optimizer too.
                None if p.host == *self.sched.host() && p.loaded && pinned => {
                    gpus.pin(model)?.state
                }
                None if p.loaded => "resident".to_owned(),
                None => "assigned".to_owned(),
            };
            states.push(state);
            settled.push(p);
        }
        answer(model, &settled, &states)
    }

    fn pin(&mut self, model: &str, pinned: bool, now: Instant, gpus: &mut GpuSide) -> Answer {
        let name = ModelName::from(model);
        let now_ms = self.ms(now);
        let placed_anywhere = self
            .sched
            .set_pinned(&name, pinned, now_ms, &mut self.decisions);
        self.carry_out(now_ms, gpus);
        let placed: Vec<Placement> = self
            .sched
            .placements()
            .into_iter()
            .filter(|p| p.slot.model == name)
            .collect();
        let held_here = placed
            .iter()
            .any(|p| p.host == *self.sched.host() && p.loaded);
        let elsewhere = placed.first().filter(|_| !held_here && placed_anywhere > 0);
        let mut local = match elsewhere {
            Some(first) => ModelAnswer {
                model: model.to_owned(),
                host: Some(first.host.0.clone()),
                gpu: Some(first.gpu.0),
                vram_mib: Some(first.vram_mib),
                pinned,
                state: if first.loaded { "resident" } else { "assigned" }.to_owned(),
                placements: Vec::new(),
            },
            None if pinned => gpus.pin(model)?,
            None => gpus.unpin(model)?,
        };
        local.placements = render::placements(&placed);
        Ok(local)
    }
}

/// The first replica's placement and state, and every replica with its
/// state.
fn answer(model: &str, placed: &[Placement], states: &[String]) -> Answer {
    let mut all = render::placements(placed);
    for (p, state) in all.iter_mut().zip(states) {
        p.state = Some(state.clone());
    }
    let Some(first) = all.first() else {
        return Err((500, format!("the scheduler placed no replica of {model}")));
    };
    Ok(ModelAnswer {
        model: first.model.clone(),
        host: Some(first.host.clone()),
        gpu: Some(first.gpu),
        vram_mib: Some(first.vram_mib),
        pinned: first.pinned,
        state: states.first().cloned().unwrap_or_default(),
        placements: all.clone(),
    })
}

/// The HTTP status for a refused placement.
fn status_of(err: &SchedError) -> u16 {
    match err {
        SchedError::Vram { .. } | SchedError::Replicas { .. } => 400,
        SchedError::UnknownHost { .. } => 404,
        SchedError::NoRoom { .. } => 409,
        _ => 500,
    }
}
