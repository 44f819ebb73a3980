//! The replay harness: a simulated host that carries out a policy's
//! decisions and checks them independently.
//!
//! Time moves in steps: to the next trace line, the next load completion
//! or release, or the next tick (every `tick_ms`), whichever is first.
//! At each step the harness applies what happens then, feeds the policy a
//! fresh sample of each GPU (from a [`SimBackend`]: loads hold VRAM from
//! the moment they start, other programs' VRAM is injected), ticks it,
//! and carries out its decisions in order. A load takes
//! `load_overhead_ms + vram_mib / load_mib_per_s`; a use holds its model
//! for `hold_ms` from its admission.
//!
//! The harness keeps its own books, so a policy cannot grade itself:
//! a budget violation is a load started when the GPU's real usage (ours
//! and other programs') plus the load exceeds the budget, or a stretch of
//! more than [`GRACE_MS`] over the budget (after another program took
//! more) during which the policy kept an idle, unpinned model loaded that
//! it could have given back; an eviction of
//! a model the trace or topology pinned, or of one with a use in
//! progress, is counted as such; so is a load that starts within the
//! minimum residency of the same model's previous load (a GPU loss
//! excepted). Uses still waiting an hour after the last trace
//! line are counted as denied.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

use super::super::{Decision, ModelId, RequestId, UseRequest, VramOptimizer};
use super::base::Base;
use super::lru::Lru;
use super::ollama::Ollama;
use super::oracle::Oracle;
use super::trace::{Trace, TraceOp};
use super::{PolicyKind, Report};
use crate::gpu::backend::{GpuBackend, GpuIndex, GpuInfo};
use crate::gpu::sim::SimBackend;
use crate::topology::VramPolicy;

/// How long after the last trace line waiting uses are given, ms.
const DRAIN_MS: u64 = 3_600_000;
/// How long a policy may stay over budget before it counts, ms.
pub(super) const GRACE_MS: u64 = 10_000;

/// The policy under test.
#[derive(Debug)]
enum Subject {
    Pinwheel(Box<VramOptimizer>),
    Lru(Lru),
    Ollama(Ollama),
    Oracle(Oracle),
}

impl Subject {
    fn base(&mut self) -> Option<&mut Base> {
        match self {
            Subject::Pinwheel(_) => None,
            Subject::Lru(p) => Some(&mut p.base),
            Subject::Ollama(p) => Some(&mut p.base),
            Subject::Oracle(p) => Some(&mut p.base),
        }
    }

    fn model(&mut self, name: &str, vram_mib: u64) -> ModelId {
        match self {
            Subject::Pinwheel(o) => o.model(name, vram_mib),
            Subject::Lru(p) => p.base.model(name, vram_mib),
            Subject::Ollama(p) => p.base.model(name, vram_mib),
            Subject::Oracle(p) => p.model(name, vram_mib),
        }
    }

    /// Pins a model, for the policies that honour pins (the baselines
    /// model caches that have none).
    fn pin(&mut self, now: u64, model: ModelId) {
        match self {
            Subject::Pinwheel(o) => o.pin(now, model),
            Subject::Oracle(p) => p.pin(model),
            Subject::Lru(_) | Subject::Ollama(_) => {}
        }
    }

    fn submit(&mut self, now: u64, request: UseRequest) -> RequestId {
        match self {
            Subject::Pinwheel(o) => o.submit(now, request),
            Subject::Lru(p) => p.base.submit(now, request),
            Subject::Ollama(p) => p.base.submit(now, request),
            Subject::Oracle(p) => p.base.submit(now, request),
        }
    }

    fn release(&mut self, now: u64, request: RequestId) {
        match self {
            Subject::Pinwheel(o) => o.release(now, request),
            Subject::Lru(p) => p.base.release(now, request),
            Subject::Ollama(p) => p.base.release(now, request),
            Subject::Oracle(p) => p.base.release(now, request),
        }
    }

    fn loaded(&mut self, now: u64, model: ModelId, pid: u32) {
        match self {
            Subject::Pinwheel(o) => o.loaded(now, model, Some(pid)),
            Subject::Lru(p) => p.base.loaded(now, model),
            Subject::Ollama(p) => p.base.loaded(now, model),
            Subject::Oracle(p) => p.base.loaded(now, model),
        }
    }

    fn load_failed(&mut self, now: u64, model: ModelId) {
        match self {
            Subject::Pinwheel(o) => o.load_failed(now, model),
            Subject::Lru(p) => p.base.load_failed(model),
            Subject::Ollama(p) => p.base.load_failed(model),
            Subject::Oracle(p) => p.base.load_failed(model),
        }
    }

    fn tick(&mut self, now: u64, out: &mut Vec<Decision>) {
        match self {
            Subject::Pinwheel(o) => o.tick(now, out),
            Subject::Lru(p) => p.tick(now, out),
            Subject::Ollama(p) => p.tick(now, out),
            Subject::Oracle(p) => p.tick(now, out),
        }
    }
}

/// Something the harness scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    /// A load finishes (the model's load generation, to skip stale ones).
    Loaded(ModelId, u64),
    /// A use ends.
    Release(RequestId),
}

/// A use the harness follows.
#[derive(Debug, Clone, Copy)]
struct Use {
    model: ModelId,
    arrival_ms: u64,
    hold_ms: u64,
    queued: bool,
}

/// Where a model is, as the harness saw it happen.
#[derive(Debug, Clone, Copy)]
struct Placed {
    gpu: GpuIndex,
    pid: u32,
    /// When its load finished; `None` while loading.
    resident_since: Option<u64>,
    generation: u64,
}

/// The simulated host and its books.
struct World {
    policy: VramPolicy,
    subject: Subject,
    sim: SimBackend,
    infos: Vec<GpuInfo>,
    lost: Vec<bool>,
    due: BinaryHeap<Reverse<(u64, u64, Due)>>,
    seq: u64,
    uses: HashMap<RequestId, Use>,
    busy: HashMap<ModelId, u32>,
    placed: HashMap<ModelId, Placed>,
    pinned: HashSet<ModelId>,
    /// When each model's latest load started.
    load_started: HashMap<ModelId, u64>,
    generation: u64,
    decisions: Vec<Decision>,
    waits: Vec<u64>,
    /// Per GPU: since when it is over budget, and whether that stretch
    /// was counted.
    over: Vec<(Option<u64>, bool)>,
    report: Report,
}

/// Replays `trace` on `infos` under `kind`.
pub(super) fn run(
    policy: &VramPolicy,
    sim: SimBackend,
    trace: &Trace,
    kind: PolicyKind,
) -> Result<Report, super::super::VramError> {
    let infos = sim.gpus().to_vec();
    let subject = match kind {
        PolicyKind::Pinwheel => {
            Subject::Pinwheel(Box::new(VramOptimizer::new(policy.clone(), &infos)?))
        }
        PolicyKind::Lru => Subject::Lru(Lru::new(Base::new(policy.clone(), &infos))),
        PolicyKind::Ollama => Subject::Ollama(Ollama::new(Base::new(policy.clone(), &infos))),
        PolicyKind::Oracle => {
            Subject::Oracle(Oracle::new(Base::new(policy.clone(), &infos), trace))
        }
    };
    let mut world = World {
        policy: policy.clone(),
        subject,
        sim,
        lost: vec![false; infos.len()],
        infos,
        due: BinaryHeap::new(),
        seq: 0,
        uses: HashMap::new(),
        busy: HashMap::new(),
        placed: HashMap::new(),
        pinned: HashSet::new(),
        load_started: HashMap::new(),
        generation: 0,
        decisions: Vec::new(),
        waits: Vec::new(),
        over: Vec::new(),
        report: Report::default(),
    };
    for pin in &policy.pins {
        let model = world.subject.model(&pin.model, pin.vram_mib);
        if !matches!(world.subject, Subject::Pinwheel(_)) {
            // The optimizer took the topology's pins at construction.
            world.subject.pin(0, model);
        }
        world.pinned.insert(model);
    }
    world.run(trace);
    Ok(world.finish())
}

impl World {
    fn run(&mut self, trace: &Trace) {
        let tick_ms = self.policy.tick_ms.max(1);
        let end = trace.ops.last().map_or(0, TraceOp::t_ms) + DRAIN_MS;
        let mut next_op = 0;
        let mut next_tick = 0;
        loop {
            let op_at = trace.ops.get(next_op).map(TraceOp::t_ms);
            let due_at = self.due.peek().map(|Reverse((t, _, _))| *t);
            if op_at.is_none() && due_at.is_none() && self.uses.is_empty() {
                break;
            }
            let now = [op_at, due_at, Some(next_tick)]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(next_tick);
            if now > end {
                break;
            }
            while let Some(op) = trace.ops.get(next_op).filter(|op| op.t_ms() == now) {
                self.apply_op(now, op);
                next_op += 1;
            }
            while let Some(&Reverse((t, _, due))) = self.due.peek() {
                if t != now {
                    break;
                }
                self.due.pop();
                self.apply_due(now, due);
            }
            self.step(now);
            if now >= next_tick {
                next_tick = now + tick_ms;
            }
        }
        self.report.denied += self.uses.len() as u64;
    }

    fn schedule(&mut self, at: u64, due: Due) {
        self.seq += 1;
        self.due.push(Reverse((at, self.seq, due)));
    }

    fn apply_op(&mut self, now: u64, op: &TraceOp) {
        match op {
            TraceOp::Use {
                model,
                vram_mib,
                hold_ms,
                priority,
                ..
            } => {
                let id = self.subject.model(model, *vram_mib);
                let request = UseRequest {
                    model: id,
                    vram_mib: *vram_mib,
                    priority: *priority,
                    hold_ms: *hold_ms,
                };
                let request = self.subject.submit(now, request);
                self.uses.insert(
                    request,
                    Use {
                        model: id,
                        arrival_ms: now,
                        hold_ms: *hold_ms,
                        queued: false,
                    },
                );
            }
            TraceOp::Pin {
                model, vram_mib, ..
            } => {
                // The trace checked that an earlier use gave the size.
                let id = self.subject.model(model, vram_mib.unwrap_or(1));
                self.pinned.insert(id);
                self.subject.pin(now, id);
            }
            TraceOp::External { gpu, vram_mib, .. } => {
                // A lost GPU has no other programs either.
                let _ = self.sim.set_external(GpuIndex(*gpu), *vram_mib);
            }
            TraceOp::GpuLost { gpu, .. } => self.lose(now, GpuIndex(*gpu)),
        }
    }

    fn lose(&mut self, now: u64, gpu: GpuIndex) {
        self.sim.lose(gpu);
        self.lost[gpu.0 as usize] = true;
        let gone: Vec<ModelId> = self
            .placed
            .iter()
            .filter(|(_, p)| p.gpu == gpu)
            .map(|(m, _)| *m)
            .collect();
        for model in gone {
            self.placed.remove(&model);
            self.load_started.remove(&model);
        }
        let gone: Vec<ModelId> = self.busy.keys().copied().collect();
        for model in gone {
            if !self.placed.contains_key(&model) {
                self.busy.remove(&model);
            }
        }
        match &mut self.subject {
            Subject::Pinwheel(o) => o.gpu_lost(now, gpu),
            other => {
                if let Some(base) = other.base() {
                    base.gpu_lost(gpu);
                }
            }
        }
    }

    fn apply_due(&mut self, now: u64, due: Due) {
        match due {
            Due::Loaded(model, generation) => {
                let Some(p) = self.placed.get_mut(&model) else {
                    return;
                };
                if p.generation == generation && p.resident_since.is_none() {
                    p.resident_since = Some(now);
                    let pid = p.pid;
                    self.subject.loaded(now, model, pid);
                }
            }
            Due::Release(request) => {
                if let Some(count) = self.busy.get_mut(&request_model(&self.uses, request)) {
                    *count = count.saturating_sub(1);
                }
                self.uses.remove(&request);
                self.subject.release(now, request);
            }
        }
    }

    /// Samples every GPU, ticks the policy and carries out its decisions.
    fn step(&mut self, now: u64) {
        for gpu in 0..self.infos.len() {
            if self.lost[gpu] {
                continue;
            }
            if let Ok(sample) = self.sim.sample(GpuIndex(gpu as u32)) {
                match &mut self.subject {
                    Subject::Pinwheel(o) => o.sample(now, &sample),
                    other => {
                        if let Some(base) = other.base() {
                            base.sample(&sample);
                        }
                    }
                }
            }
        }
        let mut decisions = std::mem::take(&mut self.decisions);
        decisions.clear();
        self.subject.tick(now, &mut decisions);
        for &decision in &decisions {
            self.carry_out(now, decision);
        }
        self.decisions = decisions;
        for i in 0..self.infos.len() {
            if let Ok(used) = self.sim.used_mib(GpuIndex(i as u32)) {
                let max = self.report.max_used_mib.entry(i.to_string()).or_default();
                *max = (*max).max(used);
                self.watch_budget(now, i, used);
            }
        }
    }

    /// Counts a stretch over budget that outlasts the grace period while
    /// an idle, unpinned model of the policy's sits on the GPU.
    fn watch_budget(&mut self, now: u64, gpu: usize, used: u64) {
        if self.over.len() <= gpu {
            self.over.resize(gpu + 1, (None, false));
        }
        let budget = self.policy.budget_mib(self.infos[gpu].total_mib);
        if used <= budget {
            self.over[gpu] = (None, false);
            return;
        }
        let (since, counted) = self.over[gpu];
        let since = since.unwrap_or(now);
        let idle_held = self.placed.iter().any(|(model, p)| {
            p.gpu.0 as usize == gpu
                && p.resident_since.is_some()
                && !self.pinned.contains(model)
                && self.busy.get(model).is_none_or(|&n| n == 0)
        });
        let late = now - since > GRACE_MS;
        if late && idle_held && !counted {
            self.report.budget_violations += 1;
        }
        self.over[gpu] = (Some(since), counted || (late && idle_held));
    }
}

/// The model a use is for (a default id when the use is unknown).
fn request_model(uses: &HashMap<RequestId, Use>, request: RequestId) -> ModelId {
    uses.get(&request).map_or(ModelId(u32::MAX), |u| u.model)
}

impl World {
    fn carry_out(&mut self, now: u64, decision: Decision) {
        match decision {
            Decision::Load {
                model,
                gpu,
                vram_mib,
            } => self.load(now, model, gpu, vram_mib),
            Decision::Preload {
                model,
                gpu,
                vram_mib,
            } => {
                self.report.preloads += 1;
                self.load(now, model, gpu, vram_mib);
            }
            Decision::Evict { model, gpu, .. } => self.evict(model, gpu),
            Decision::Admit { request, model, .. } => {
                let Some(u) = self.uses.get_mut(&request) else {
                    return;
                };
                let wait = now - u.arrival_ms;
                if u.queued || wait > 0 {
                    self.report.misses += 1;
                } else {
                    self.report.hits += 1;
                }
                self.waits.push(wait);
                *self.busy.entry(model).or_default() += 1;
                let hold = u.hold_ms;
                self.schedule(now + hold, Due::Release(request));
            }
            Decision::Queue { request, .. } => {
                if let Some(u) = self.uses.get_mut(&request) {
                    u.queued = true;
                }
            }
            Decision::Deny { request, model, .. } => match request {
                Some(request) => {
                    if self.uses.remove(&request).is_some() {
                        self.report.denied += 1;
                    }
                }
                // A refused pin protects nothing.
                None => {
                    self.pinned.remove(&model);
                }
            },
        }
    }

    fn load(&mut self, now: u64, model: ModelId, gpu: GpuIndex, vram_mib: u64) {
        self.report.loads += 1;
        let previous = self.load_started.insert(model, now);
        if previous.is_some_and(|t| now - t < self.policy.min_residency_ms) {
            self.report.early_reloads += 1;
        }
        let budget = self.policy.budget_mib(self.infos[gpu.0 as usize].total_mib);
        let used = self.sim.used_mib(gpu).unwrap_or(0);
        if used + vram_mib > budget {
            self.report.budget_violations += 1;
        }
        match self.sim.load(gpu, vram_mib) {
            Ok(pid) => {
                self.generation += 1;
                self.placed.insert(
                    model,
                    Placed {
                        gpu,
                        pid,
                        resident_since: None,
                        generation: self.generation,
                    },
                );
                let generation = self.generation;
                self.schedule(
                    now + self.policy.load_ms(vram_mib),
                    Due::Loaded(model, generation),
                );
            }
            Err(_) => self.subject.load_failed(now, model),
        }
    }

    fn evict(&mut self, model: ModelId, gpu: GpuIndex) {
        self.report.evictions += 1;
        if self.pinned.contains(&model) {
            self.report.pinned_evictions += 1;
        }
        if self.busy.get(&model).is_some_and(|&n| n > 0) {
            self.report.busy_evictions += 1;
        }
        if let Some(p) = self.placed.remove(&model) {
            let _ = self.sim.unload(gpu, p.pid);
        }
    }

    fn finish(mut self) -> Report {
        self.waits.sort_unstable();
        self.report.wait_ms.p50 = percentile(&self.waits, 50.0);
        self.report.wait_ms.p99 = percentile(&self.waits, 99.0);
        for i in 0..self.infos.len() {
            self.report.max_used_mib.entry(i.to_string()).or_default();
        }
        self.report
    }
}

/// Nearest-rank percentile of sorted values; 0 when there are none.
fn percentile(sorted: &[u64], pct: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((pct / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
