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

use serde_json::{Value, json};

use super::render;
use super::side::ClusterSide;
use crate::config::name_problem;
use crate::daemon::gpus::GpuSide;
use crate::gpu::sched::{HostName, ModelName, ModelRequest, Placement, Policy, SchedError};
use crate::observe::admin::{Answer, Command};
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
                Some((_, Ok(local))) => local["state"].as_str().unwrap_or("resident").to_owned(),
                // Not in the store yet: the write is on its way.
                None if p.revision == 0 => "placing".to_owned(),
                // Resident here already: a pin reaches the optimizer too.
                None if p.host == *self.sched.host() && p.loaded && pinned => {
                    let local = gpus.pin(model)?;
                    local["state"].as_str().unwrap_or("resident").to_owned()
                }
                None if p.loaded => "resident".to_owned(),
                None => "assigned".to_owned(),
            };
            states.push(state);
            settled.push(p);
        }
        Ok(answer(&settled, &states))
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
        let mut local = if held_here || placed_anywhere == 0 {
            if pinned {
                gpus.pin(model)?
            } else {
                gpus.unpin(model)?
            }
        } else {
            let first = &placed[0];
            json!({
                "model": model,
                "host": first.host.0,
                "gpu": first.gpu.0,
                "state": if first.loaded { "resident" } else { "assigned" },
                "pinned": pinned,
            })
        };
        local["placements"] = render::placements(&placed);
        Ok(local)
    }
}

/// The first replica flattened, with its state, and every replica.
fn answer(placed: &[Placement], states: &[String]) -> Value {
    let mut all = render::placements(placed);
    if let Some(list) = all.as_array_mut() {
        for (p, state) in list.iter_mut().zip(states) {
            p["state"] = json!(state);
        }
    }
    let mut first = all.get(0).cloned().unwrap_or_else(|| json!({}));
    first["placements"] = all;
    first
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
