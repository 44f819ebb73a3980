#![cfg(test)]
//! Deterministic simulation of the cross-host GPU scheduler: N hosts, each
//! with its own `GpuScheduler`, exchange reports over a simulated network in
//! virtual time. A seeded RNG kills and revives hosts, splits the network
//! into two sides and heals it, and asks for placements and jobs. Every
//! tick checks the invariants:
//!
//! * no GPU holds more than its VRAM (each host loads what its scheduler
//!   decides, on a ground-truth GPU);
//! * no slot keeps two owners for longer than the settle window once the
//!   two can talk (two owners arise only from a partition, or from two
//!   hosts placing one model at once; both are reconciled by epoch);
//! * when the placer detects that a host which really died is lost, every
//!   pinned slot it knew that host held is placed on a survivor within one
//!   tick, unless no reachable GPU has room for it;
//! * after the last heal and revival, every pinned slot ever placed has
//!   exactly one owner, unless every host that knew of it died before
//!   passing it on (the sim tracks who knows what; such slots are counted
//!   as forgotten: the scheduler keeps no durable store).
//!
//! The network delivers each link in order with 1-3 ticks of delay; the
//! sides of a partition hear nothing from each other, and a dead host
//! sends nothing. A run is a pure function of its seed.

use std::collections::{BTreeMap, BTreeSet};

use pinwheel::gpu::sched::{
    Decision, GpuIndex, GpuReport, GpuScheduler, HostName, HostReport, JobRequest, ModelName,
    ModelRequest, Policy, SchedConfig, Slot,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const TICK_MS: u64 = 50;
const HEARTBEAT_TICKS: u64 = 5;
const GPU_MIB: u64 = 24_576;
const GPUS_PER_HOST: u32 = 2;
/// Ticks two hosts need, once they can talk, to reconcile: a heartbeat, the
/// largest delay, and a tick to act, twice over.
const SETTLE_TICKS: u64 = 2 * (HEARTBEAT_TICKS + 3 + 1);

fn config() -> SchedConfig {
    SchedConfig {
        heartbeat_ms: HEARTBEAT_TICKS * TICK_MS,
        ..SchedConfig::default()
    }
}

/// One simulated host: its scheduler (none while dead) and its GPUs.
struct Host {
    name: HostName,
    sched: Option<GpuScheduler>,
    /// Ground truth: what each GPU holds.
    loaded: BTreeMap<Slot, (GpuIndex, u64)>,
    /// Heartbeat phase, ticks.
    phase: u64,
    last_sent: Option<HostReport>,
    /// Which side of a partition it is on.
    side: u8,
    revive_at: Option<u64>,
}

impl Host {
    fn gpus(&self) -> Vec<GpuReport> {
        (0..GPUS_PER_HOST)
            .map(|g| {
                let used: u64 = self
                    .loaded
                    .values()
                    .filter(|(gpu, _)| gpu.0 == g)
                    .map(|(_, mib)| mib)
                    .sum();
                GpuReport {
                    gpu: GpuIndex(g),
                    total_mib: GPU_MIB,
                    free_mib: GPU_MIB - used,
                }
            })
            .collect()
    }
}

struct Msg {
    at: u64,
    from: usize,
    to: usize,
    report: HostReport,
}

/// What one schedule did and checked.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    ticks: u64,
    kills: u64,
    revivals: u64,
    partitions: u64,
    requests: u64,
    jobs: u64,
    loads: u64,
    yields: u64,
    detections_checked: u64,
    replaced_in_one_tick: u64,
    unplaced_for_room: u64,
    capacity_checks: u64,
    owner_checks: u64,
    final_pinned: u64,
    forgotten: u64,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.ticks += o.ticks;
        self.kills += o.kills;
        self.revivals += o.revivals;
        self.partitions += o.partitions;
        self.requests += o.requests;
        self.jobs += o.jobs;
        self.loads += o.loads;
        self.yields += o.yields;
        self.detections_checked += o.detections_checked;
        self.replaced_in_one_tick += o.replaced_in_one_tick;
        self.unplaced_for_room += o.unplaced_for_room;
        self.capacity_checks += o.capacity_checks;
        self.owner_checks += o.owner_checks;
        self.final_pinned += o.final_pinned;
        self.forgotten += o.forgotten;
    }
}

struct Sim {
    rng: SmallRng,
    tick: u64,
    hosts: Vec<Host>,
    /// Link latency between hosts, µs, fixed per pair.
    latency_us: Vec<Vec<u64>>,
    in_flight: Vec<Msg>,
    /// The last delivery tick per (from, to), to keep links in order.
    last_at: BTreeMap<(usize, usize), u64>,
    /// Since when each pair has been able to talk (both alive, one side).
    talking_since: BTreeMap<(usize, usize), u64>,
    /// The live hosts that know of each slot: they hold it, placed it, or
    /// heard of it in a report.
    knowers: BTreeMap<Slot, BTreeSet<usize>>,
    /// Slots every host that knew of them died before passing them on:
    /// with no durable store, no survivor can place them again.
    forgotten: BTreeSet<Slot>,
    /// The last report each host heard from each other, by (to, from).
    heard: BTreeMap<(usize, usize), HostReport>,
    /// Since when each (slot, host, host) has had two owners.
    dup_since: BTreeMap<(Slot, usize, usize), u64>,
    partitioned_until: Option<u64>,
    /// Every pinned slot ever placed.
    pinned: BTreeSet<Slot>,
    tally: Tally,
    seed: u64,
}

impl Sim {
    fn new(seed: u64, n: usize) -> Sim {
        let mut rng = SmallRng::seed_from_u64(seed);
        let latency_us = (0..n)
            .map(|_| (0..n).map(|_| rng.random_range(100..1_000)).collect())
            .collect();
        let hosts = (0..n)
            .map(|i| Host {
                name: HostName(format!("h{i}")),
                sched: Some(new_sched(i, 0)),
                loaded: BTreeMap::new(),
                phase: rng.random_range(0..HEARTBEAT_TICKS),
                last_sent: None,
                side: 0,
                revive_at: None,
            })
            .collect();
        Sim {
            rng,
            tick: 0,
            hosts,
            latency_us,
            in_flight: Vec::new(),
            last_at: BTreeMap::new(),
            talking_since: BTreeMap::new(),
            dup_since: BTreeMap::new(),
            heard: BTreeMap::new(),
            knowers: BTreeMap::new(),
            forgotten: BTreeSet::new(),
            partitioned_until: None,
            pinned: BTreeSet::new(),
            tally: Tally::default(),
            seed,
        }
    }

    fn now_ms(&self) -> u64 {
        self.tick * TICK_MS
    }

    fn alive(&self, i: usize) -> bool {
        self.hosts[i].sched.is_some()
    }

    fn can_talk(&self, a: usize, b: usize) -> bool {
        self.alive(a) && self.alive(b) && self.hosts[a].side == self.hosts[b].side
    }

    fn step(&mut self, chaos: bool) {
        self.tick += 1;
        self.tally.ticks += 1;
        if chaos {
            self.chaos();
        }
        self.revive_due();
        self.track_talking();
        self.deliver();
        for i in 0..self.hosts.len() {
            self.tick_host(i);
        }
        self.publish();
        self.check_owners();
    }

    fn chaos(&mut self) {
        let n = self.hosts.len();
        let alive = (0..n).filter(|&i| self.alive(i)).count();
        if alive > 2 && self.rng.random_ratio(1, 80) {
            let i = self.rng.random_range(0..n);
            if self.alive(i) {
                self.kill(i);
            }
        }
        match self.partitioned_until {
            Some(until) if until <= self.tick => {
                self.partitioned_until = None;
                for h in &mut self.hosts {
                    h.side = 0;
                }
            }
            None if self.rng.random_ratio(1, 150) => {
                self.tally.partitions += 1;
                self.partitioned_until = Some(self.tick + self.rng.random_range(30..200));
                for h in &mut self.hosts {
                    h.side = u8::from(self.rng.random_bool(0.5));
                }
            }
            _ => {}
        }
        if self.rng.random_ratio(1, 40) {
            self.request();
        }
        if self.rng.random_ratio(1, 25) {
            self.job();
        }
    }

    fn kill(&mut self, i: usize) {
        self.tally.kills += 1;
        self.heard.retain(|&(to, from), _| to != i && from != i);
        for (slot, knowers) in &mut self.knowers {
            knowers.remove(&i);
            let held = self
                .hosts
                .iter()
                .enumerate()
                .any(|(j, h)| j != i && h.loaded.contains_key(slot));
            if knowers.is_empty() && !held {
                self.forgotten.insert(slot.clone());
            }
        }
        let host = &mut self.hosts[i];
        host.sched = None;
        host.loaded.clear();
        host.last_sent = None;
        host.revive_at = Some(self.tick + self.rng.random_range(40..300));
    }

    fn revive_due(&mut self) {
        let tick = self.tick;
        for (i, host) in self.hosts.iter_mut().enumerate() {
            if host.sched.is_none() && host.revive_at.is_some_and(|t| t <= tick) {
                host.sched = Some(new_sched(i, tick));
                host.revive_at = None;
                self.tally.revivals += 1;
            }
        }
    }

    fn track_talking(&mut self) {
        let n = self.hosts.len();
        for a in 0..n {
            for b in a + 1..n {
                if self.can_talk(a, b) {
                    self.talking_since.entry((a, b)).or_insert(self.tick);
                } else {
                    self.talking_since.remove(&(a, b));
                }
            }
        }
    }

    fn deliver(&mut self) {
        let now = self.now_ms();
        let (due, later): (Vec<Msg>, Vec<Msg>) = std::mem::take(&mut self.in_flight)
            .into_iter()
            .partition(|m| m.at <= self.tick);
        self.in_flight = later;
        for m in due {
            if !self.can_talk(m.from, m.to) {
                continue;
            }
            let latency = self.latency_us[m.from][m.to];
            let sched = self.hosts[m.to].sched.as_mut().expect("can_talk: alive");
            let mut out = Vec::new();
            self.heard.insert((m.to, m.from), m.report.clone());
            let r = &m.report;
            let slots = r.owned.iter().chain(r.assignments.iter().map(|a| &a.claim));
            for claim in slots.chain(r.orphans.iter().map(|o| &o.claim)) {
                self.knowers
                    .entry(claim.slot.clone())
                    .or_default()
                    .insert(m.to);
            }
            let seen = sched.observe(m.report, latency, now, &mut out);
            assert!(seen.is_ok(), "seed {}: {seen:?}", self.seed);
        }
    }

    fn tick_host(&mut self, i: usize) {
        let now = self.now_ms();
        let gpus = self.hosts[i].gpus();
        let dead_unseen = self.dead_hosts();
        let Some(sched) = self.hosts[i].sched.as_mut() else {
            return;
        };
        sched.set_local_gpus(&gpus);
        let before = if dead_unseen.is_empty() {
            Vec::new()
        } else {
            sched.placements()
        };
        let mut out = Vec::new();
        sched.tick(now, &mut out);
        self.apply(i, &out);
        for d in &out {
            if let Decision::HostLost { host } = d {
                let lost = self
                    .hosts
                    .iter()
                    .position(|h| &h.name == host)
                    .expect("a host");
                if dead_unseen.contains(&lost) {
                    self.check_replaced(i, lost, &before, &out);
                }
            }
        }
    }

    fn dead_hosts(&self) -> Vec<usize> {
        (0..self.hosts.len()).filter(|&i| !self.alive(i)).collect()
    }

    /// Carries out decisions on host `i`'s ground-truth GPUs.
    fn apply(&mut self, i: usize, out: &[Decision]) {
        let seed = self.seed;
        let host = &mut self.hosts[i];
        for d in out {
            match d {
                Decision::Load {
                    slot,
                    gpu,
                    vram_mib,
                    ..
                } => {
                    self.tally.loads += 1;
                    self.knowers.entry(slot.clone()).or_default().insert(i);
                    host.loaded.insert(slot.clone(), (*gpu, *vram_mib));
                }
                Decision::Yield { slot, .. } => {
                    self.tally.yields += 1;
                    assert!(
                        host.loaded.remove(slot).is_some(),
                        "seed {seed}: yield of {slot} not loaded"
                    );
                }
                _ => {}
            }
        }
        for g in host.gpus() {
            self.tally.capacity_checks += 1;
            assert!(
                g.free_mib <= g.total_mib,
                "seed {seed}: {} gpu {} over capacity",
                host.name,
                g.gpu
            );
        }
        let used: u64 = host.loaded.values().map(|(_, mib)| mib).sum();
        assert!(
            used <= GPU_MIB * u64::from(GPUS_PER_HOST),
            "seed {seed}: {} over capacity",
            host.name
        );
    }

    /// Host `i` just declared dead host `lost` lost. If `i` is the placer,
    /// every pinned slot it knew `lost` held must now be placed on a live
    /// host, or be unplaceable for want of room.
    fn check_replaced(
        &mut self,
        i: usize,
        lost: usize,
        before: &[pinwheel::gpu::sched::Placement],
        out: &[Decision],
    ) {
        let sched = self.hosts[i].sched.as_ref().expect("alive");
        if !sched.is_placer() {
            return;
        }
        let lost_name = &self.hosts[lost].name;
        for p in before
            .iter()
            .filter(|p| &p.host == lost_name && p.pinned && p.loaded)
        {
            self.tally.detections_checked += 1;
            match sched.where_is(&p.slot) {
                Some(now) if &now.host != lost_name => self.tally.replaced_in_one_tick += 1,
                _ => {
                    let unplaced = out
                        .iter()
                        .any(|d| matches!(d, Decision::Unplaced { slot, .. } if slot == &p.slot));
                    let room = self.room_for(i, p.vram_mib, &sched.placements());
                    assert!(
                        !room,
                        "seed {} tick {}: {} not re-placed after {lost_name} was lost, though a GPU has {} MiB free (unplaced: {unplaced})",
                        self.seed, self.tick, p.slot, p.vram_mib
                    );
                    self.tally.unplaced_for_room += 1;
                }
            }
        }
    }

    /// Whether any GPU host `i` knows of has `mib` free, counting loads in
    /// flight as taken. A peer's GPU counts with the smaller of its true
    /// free VRAM and what its last report to `i` said: `i` cannot know of
    /// room freed since, nor of a host it has not heard from.
    fn room_for(&self, i: usize, mib: u64, view: &[pinwheel::gpu::sched::Placement]) -> bool {
        let gpus = |j: usize| -> Vec<GpuReport> {
            let truth = self.hosts[j].gpus();
            if j == i {
                return truth;
            }
            let Some(heard) = self.heard.get(&(i, j)).filter(|_| self.can_talk(i, j)) else {
                return Vec::new();
            };
            truth
                .into_iter()
                .map(|g| {
                    let said = heard
                        .gpus
                        .iter()
                        .find(|r| r.gpu == g.gpu)
                        .map_or(0, |r| r.free_mib);
                    GpuReport {
                        free_mib: g.free_mib.min(said),
                        ..g
                    }
                })
                .collect()
        };
        (0..self.hosts.len())
            .flat_map(|j| gpus(j).into_iter().map(move |g| (j, g)))
            .any(|(j, g)| {
                let in_flight: u64 = view
                    .iter()
                    .filter(|p| !p.loaded && p.host == self.hosts[j].name && p.gpu == g.gpu)
                    .map(|p| p.vram_mib)
                    .sum();
                g.free_mib.saturating_sub(in_flight) >= mib
            })
    }

    fn publish(&mut self) {
        let n = self.hosts.len();
        for i in 0..n {
            let Some(sched) = self.hosts[i].sched.as_ref() else {
                continue;
            };
            let report = sched.local_report();
            let beat = self.tick % HEARTBEAT_TICKS == self.hosts[i].phase;
            if !beat && self.hosts[i].last_sent.as_ref() == Some(&report) {
                continue;
            }
            for j in (0..n).filter(|&j| j != i) {
                let delay = self.rng.random_range(1..=3);
                let last = self.last_at.get(&(i, j)).copied().unwrap_or(0);
                let at = (self.tick + delay).max(last);
                self.last_at.insert((i, j), at);
                self.in_flight.push(Msg {
                    at,
                    from: i,
                    to: j,
                    report: report.clone(),
                });
            }
            self.hosts[i].last_sent = Some(report);
        }
    }

    fn check_owners(&mut self) {
        let mut owners: BTreeMap<&Slot, Vec<usize>> = BTreeMap::new();
        for (i, h) in self.hosts.iter().enumerate() {
            for slot in h.loaded.keys() {
                owners.entry(slot).or_default().push(i);
            }
        }
        let mut dups = BTreeMap::new();
        for (slot, hs) in owners {
            self.tally.owner_checks += 1;
            for (x, &a) in hs.iter().enumerate() {
                for &b in &hs[x + 1..] {
                    let key = (slot.clone(), a, b);
                    let dup_since = self.dup_since.get(&key).copied().unwrap_or(self.tick);
                    dups.insert(key, dup_since);
                    let Some(&talking) = self.talking_since.get(&(a, b)) else {
                        continue;
                    };
                    assert!(
                        self.tick < talking.max(dup_since) + SETTLE_TICKS,
                        "seed {} tick {}: {slot} owned by {} and {} since tick {dup_since}; they have talked since tick {talking}",
                        self.seed,
                        self.tick,
                        self.hosts[a].name,
                        self.hosts[b].name
                    );
                }
            }
        }
        self.dup_since = dups;
    }

    fn random_alive(&mut self) -> Option<usize> {
        let alive: Vec<usize> = (0..self.hosts.len()).filter(|&i| self.alive(i)).collect();
        (!alive.is_empty()).then(|| alive[self.rng.random_range(0..alive.len())])
    }

    fn request(&mut self) {
        let Some(i) = self.random_alive() else { return };
        let n = self.rng.random_range(0..24);
        let req = ModelRequest {
            model: ModelName(format!("model-{n}")),
            vram_mib: 512 * (1 + n % 10),
            pinned: n % 3 != 0,
            priority: (n % 4) as u8,
            policy: if n % 2 == 0 {
                Policy::Binpack
            } else {
                Policy::Spread
            },
            replicas: 1 + u8::from(n % 5 == 0),
            host: None,
        };
        self.tally.requests += 1;
        let now = self.now_ms();
        let mut out = Vec::new();
        let sched = self.hosts[i].sched.as_mut().expect("alive");
        if let Ok(placed) = sched.place(&req, now, &mut out) {
            for p in &placed {
                self.knowers.entry(p.slot.clone()).or_default().insert(i);
            }
            self.pinned
                .extend(placed.iter().filter(|p| p.pinned).map(|p| p.slot.clone()));
        }
        self.apply(i, &out);
    }

    fn job(&mut self) {
        let Some(i) = self.random_alive() else { return };
        let n = self.rng.random_range(24..32);
        let job = JobRequest {
            model: ModelName(format!("model-{n}")),
            vram_mib: 1024,
            priority: 2,
            hold_ms: self.rng.random_range(100..3_000),
            policy: Policy::Binpack,
        };
        self.tally.jobs += 1;
        let now = self.now_ms();
        let mut out = Vec::new();
        let sched = self.hosts[i].sched.as_mut().expect("alive");
        let _ = sched.place_job(&job, now, &mut out);
        self.apply(i, &out);
    }

    /// Heals, revives everyone, lets the cluster settle, and checks that
    /// every pinned slot has exactly one owner.
    fn finish(&mut self) {
        self.partitioned_until = None;
        for h in &mut self.hosts {
            h.side = 0;
            if h.sched.is_none() {
                h.revive_at = Some(0);
            }
        }
        let lost_ticks = config().lost_after_ms() / TICK_MS;
        for _ in 0..(3 * lost_ticks + 2 * SETTLE_TICKS) {
            self.step(false);
        }
        for slot in &self.pinned {
            if self.forgotten.contains(slot) {
                self.tally.forgotten += 1;
                continue;
            }
            let owners: Vec<&HostName> = self
                .hosts
                .iter()
                .filter(|h| h.loaded.contains_key(slot))
                .map(|h| &h.name)
                .collect();
            assert_eq!(
                owners.len(),
                1,
                "seed {}: pinned {slot} owned by {owners:?} at the end",
                self.seed
            );
            self.tally.final_pinned += 1;
        }
    }
}

fn new_sched(i: usize, tick: u64) -> GpuScheduler {
    // A later start gives a higher incarnation; the index keeps them unique.
    let incarnation = tick * TICK_MS * 64 + i as u64;
    GpuScheduler::cluster(HostName(format!("h{i}")), incarnation, config()).expect("valid config")
}

fn run(seed: u64, hosts: usize, ticks: u64) -> Tally {
    let mut sim = Sim::new(seed, hosts);
    for _ in 0..20 {
        sim.step(false);
    }
    for _ in 0..12 {
        sim.request();
    }
    for _ in 0..ticks {
        sim.step(true);
    }
    sim.finish();
    sim.tally
}

#[test]
fn a_hundred_random_kill_and_partition_schedules_keep_every_invariant() {
    let mut total = Tally::default();
    for seed in 0..100 {
        total.add(&run(seed, 5, 2_000));
    }
    // The schedules must have exercised what they claim to.
    assert!(total.kills >= 100 && total.partitions >= 50, "{total:?}");
    assert!(
        total.detections_checked >= 100 && total.yields >= 10,
        "{total:?}"
    );
    assert!(total.final_pinned >= 500, "{total:?}");
    // Forgetting needs every host that knew of a slot dead at once; keep
    // it the rare exception it is under this much chaos.
    assert!(total.forgotten * 20 < total.final_pinned, "{total:?}");
    tracing_free_report(&total);
}

#[test]
fn a_larger_cluster_keeps_every_invariant_too() {
    let mut total = Tally::default();
    for seed in 1_000..1_010 {
        total.add(&run(seed, 9, 2_000));
    }
    assert!(
        total.kills >= 10 && total.detections_checked >= 10,
        "{total:?}"
    );
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let a = run(7, 5, 600);
    let b = run(7, 5, 600);

    assert_eq!(format!("{a:?}"), format!("{b:?}"));
}

/// Writes the totals where `cargo test -- --nocapture` shows them.
fn tracing_free_report(total: &Tally) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "gpu_sched_sim totals: {total:?}");
}
