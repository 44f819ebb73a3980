#![cfg(test)]
//! Deterministic simulation of the cross-host GPU scheduler and its
//! placement store: N hosts, each with its own `GpuScheduler`, exchange
//! reports over a simulated network in virtual time, and share one
//! [`MemoryKv`] (the JetStream bucket's compare-and-set rules) that they
//! reach with delays: writes arrive 1-3 ticks after they are decided,
//! their answers 1-3 ticks later, and each change reaches each host's
//! watch 1-3 ticks after it was made, in order. A seeded RNG kills and
//! revives hosts, splits the network in two (the side away from the store
//! reaches neither it nor the other side) and heals it, asks for
//! placements and jobs, and pins and unpins. Every tick checks:
//!
//! * no GPU holds more than its VRAM (each host loads what its scheduler
//!   decides, on a ground-truth GPU);
//! * every load follows a write that made the loader the slot's owner: the
//!   store's change at the load's revision names that host, loaded;
//! * no double owners: no slot is loaded on two hosts that have both been
//!   in sync with the store for longer than the settle window (a host cut
//!   off from the store keeps what it holds until it hears again);
//!
//! and at the end, after the last heal and revival and a settle period:
//!
//! * no pinned placement was forgotten: every entry the store holds pinned
//!   is loaded on its owner, a live host, and nowhere else, and no pinned
//!   entry was ever deleted.
//!
//! A run is a pure function of its seed.

use std::collections::BTreeMap;

use pinwheel::gpu::sched::{
    Decision, GpuIndex, GpuReport, GpuScheduler, HostName, HostReport, JobRequest, MemoryKv,
    ModelName, ModelRequest, Policy, SchedConfig, Slot, WriteOutcome, WriteRequest,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const TICK_MS: u64 = 50;
const HEARTBEAT_TICKS: u64 = 5;
const GPU_MIB: u64 = 24_576;
const GPUS_PER_HOST: u32 = 2;
/// Ticks a host in sync with the store needs to act on a change: the
/// watch's largest delay, a tick to act, a write and its answer, twice.
const SETTLE_TICKS: u64 = 2 * (3 + 1 + 3 + 3);

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
    /// Which side of a partition it is on; side 0 reaches the store.
    side: u8,
    revive_at: Option<u64>,
    /// How many of the store's changes its watch has delivered.
    cursor: usize,
    /// Since when it has been in sync with the store.
    synced_since: Option<u64>,
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

/// A write on its way to the store, or its answer on its way back.
struct InFlight {
    at: u64,
    host: usize,
    req: WriteRequest,
    outcome: Option<WriteOutcome>,
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
    pin_changes: u64,
    writes: u64,
    conflicts: u64,
    failed_writes: u64,
    loads: u64,
    yields: u64,
    capacity_checks: u64,
    owner_checks: u64,
    double_owners: u64,
    illegal_loads: u64,
    /// Pinned slots of killed hosts, and how many were placed again.
    orphaned: u64,
    replaced: u64,
    /// The slowest re-placement after a kill, ticks (kill to loaded on a
    /// survivor; includes the loss detection, 20 ticks).
    replace_ticks_max: u64,
    replace_ticks_sum: u64,
    final_pinned: u64,
    forgotten: u64,
    pinned_deleted: u64,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        macro_rules! sum {
            ($($f:ident),*) => { $(self.$f += o.$f;)* };
        }
        sum!(
            ticks,
            kills,
            revivals,
            partitions,
            requests,
            jobs,
            pin_changes,
            writes,
            conflicts,
            failed_writes,
            loads,
            yields,
            capacity_checks,
            owner_checks,
            double_owners,
            illegal_loads,
            orphaned,
            replaced,
            replace_ticks_sum,
            final_pinned,
            forgotten,
            pinned_deleted
        );
        self.replace_ticks_max = self.replace_ticks_max.max(o.replace_ticks_max);
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
    kv: MemoryKv,
    /// When each change of the store becomes visible to watches.
    visible_at: Vec<u64>,
    writes: Vec<InFlight>,
    partitioned_until: Option<u64>,
    /// Pinned slots of dead hosts, with the tick their host died.
    orphans: BTreeMap<Slot, u64>,
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
                cursor: 0,
                synced_since: None,
            })
            .collect();
        Sim {
            rng,
            tick: 0,
            hosts,
            latency_us,
            in_flight: Vec::new(),
            last_at: BTreeMap::new(),
            kv: MemoryKv::new(),
            visible_at: Vec::new(),
            writes: Vec::new(),
            partitioned_until: None,
            orphans: BTreeMap::new(),
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

    fn reaches_store(&self, i: usize) -> bool {
        self.alive(i) && self.hosts[i].side == 0
    }

    fn can_talk(&self, a: usize, b: usize) -> bool {
        self.alive(a) && self.alive(b) && self.hosts[a].side == self.hosts[b].side
    }

    fn delay(&mut self) -> u64 {
        self.rng.random_range(1..=3)
    }

    fn step(&mut self, chaos: bool) {
        self.tick += 1;
        self.tally.ticks += 1;
        if chaos {
            self.chaos();
        }
        self.revive_due();
        self.store_writes();
        self.answer_writes();
        self.deliver_reports();
        for i in 0..self.hosts.len() {
            self.watch(i);
        }
        for i in 0..self.hosts.len() {
            self.tick_host(i);
        }
        self.publish();
        self.check_owners();
        self.track_orphans();
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
        if self.rng.random_ratio(1, 120) {
            self.pin_change();
        }
    }

    fn kill(&mut self, i: usize) {
        self.tally.kills += 1;
        let name = self.hosts[i].name.clone();
        for (slot, _, owner) in self.kv.entries() {
            if owner.host == name && owner.pinned && !self.orphans.contains_key(slot) {
                self.orphans.insert(slot.clone(), self.tick);
                self.tally.orphaned += 1;
            }
        }
        let host = &mut self.hosts[i];
        host.sched = None;
        host.loaded.clear();
        host.last_sent = None;
        host.cursor = 0;
        host.synced_since = None;
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

    /// Writes due at the store: applied if their host reaches it.
    fn store_writes(&mut self) {
        let tick = self.tick;
        let due: Vec<usize> = (0..self.writes.len())
            .filter(|&w| self.writes[w].outcome.is_none() && self.writes[w].at <= tick)
            .collect();
        for w in due {
            let host = self.writes[w].host;
            let outcome = if self.reaches_store(host) {
                let before = self.kv.get(&self.writes[w].req.slot).map(|(_, o)| o.pinned);
                let outcome = self.kv.apply(&self.writes[w].req);
                if let WriteOutcome::Written { .. } = outcome {
                    let at = self
                        .visible_at
                        .last()
                        .copied()
                        .unwrap_or(0)
                        .max(tick + self.delay());
                    self.visible_at.push(at);
                    if self.writes[w].req.write.owner().is_none() && before == Some(true) {
                        self.tally.pinned_deleted += 1;
                    }
                }
                outcome
            } else {
                WriteOutcome::Failed
            };
            match outcome {
                WriteOutcome::Conflict => self.tally.conflicts += 1,
                WriteOutcome::Failed => self.tally.failed_writes += 1,
                WriteOutcome::Written { .. } => {}
            }
            let delay = self.delay();
            let write = &mut self.writes[w];
            write.outcome = Some(outcome);
            write.at = tick + delay;
        }
    }

    /// Answers due at their hosts (a host that died meanwhile gets none).
    fn answer_writes(&mut self) {
        let tick = self.tick;
        let (due, later): (Vec<InFlight>, Vec<InFlight>) = std::mem::take(&mut self.writes)
            .into_iter()
            .partition(|w| w.outcome.is_some() && w.at <= tick);
        self.writes = later;
        let now = self.now_ms();
        for w in due {
            let Some(sched) = self.hosts[w.host].sched.as_mut() else {
                continue;
            };
            let mut out = Vec::new();
            let outcome = w.outcome.expect("answered");
            sched.written(&w.req.slot, w.req.id, outcome, now, &mut out);
            self.apply(w.host, &out);
        }
    }

    fn deliver_reports(&mut self) {
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
            let seen = sched.observe(m.report, latency, now, &mut Vec::new());
            assert!(seen.is_ok(), "seed {}: {seen:?}", self.seed);
        }
    }

    /// Host `i`'s watch: cut off, it is not synced; in reach, it gets the
    /// changes now visible, and is synced once it has all of them.
    fn watch(&mut self, i: usize) {
        let (tick, now) = (self.tick, self.now_ms());
        let reaches = self.reaches_store(i);
        let host = &mut self.hosts[i];
        let Some(sched) = host.sched.as_mut() else {
            return;
        };
        sched.set_link_up(reaches);
        if !reaches {
            if host.synced_since.take().is_some() {
                sched.set_synced(false, now);
            }
            return;
        }
        let changes = self.kv.changes();
        while host.cursor < changes.len() && self.visible_at[host.cursor] <= tick {
            let c = &changes[host.cursor];
            sched
                .saw(c.slot.clone(), c.revision, c.owner.clone(), now)
                .expect("bounded");
            host.cursor += 1;
        }
        if host.synced_since.is_none() && host.cursor == changes.len() {
            host.synced_since = Some(tick);
            sched.set_synced(true, now);
        }
    }

    fn tick_host(&mut self, i: usize) {
        let now = self.now_ms();
        let gpus = self.hosts[i].gpus();
        let Some(sched) = self.hosts[i].sched.as_mut() else {
            return;
        };
        sched.set_local_gpus(&gpus);
        let mut out = Vec::new();
        sched.tick(now, &mut out);
        self.apply(i, &out);
    }

    /// Carries out decisions on host `i`: writes go to the store, loads
    /// and yields to its ground-truth GPUs.
    fn apply(&mut self, i: usize, out: &[Decision]) {
        let seed = self.seed;
        for d in out {
            match d {
                Decision::Write(req) => {
                    self.tally.writes += 1;
                    let at = self.tick + self.delay();
                    self.writes.push(InFlight {
                        at,
                        host: i,
                        req: req.clone(),
                        outcome: None,
                    });
                }
                Decision::Load {
                    slot,
                    gpu,
                    vram_mib,
                    revision,
                } => {
                    self.tally.loads += 1;
                    let change = &self.kv.changes()[*revision as usize - 1];
                    let owner = change.owner.as_ref();
                    let legit = change.slot == *slot
                        && owner.is_some_and(|o| o.host == self.hosts[i].name && o.loaded);
                    if !legit {
                        self.tally.illegal_loads += 1;
                    }
                    self.hosts[i].loaded.insert(slot.clone(), (*gpu, *vram_mib));
                }
                Decision::Yield { slot, .. } => {
                    self.tally.yields += 1;
                    assert!(
                        self.hosts[i].loaded.remove(slot).is_some(),
                        "seed {seed}: yield of {slot} not loaded"
                    );
                }
                _ => {}
            }
        }
        for g in self.hosts[i].gpus() {
            self.tally.capacity_checks += 1;
            assert!(
                g.free_mib <= g.total_mib,
                "seed {seed}: {} gpu {} over capacity",
                self.hosts[i].name,
                g.gpu
            );
        }
        let used: u64 = self.hosts[i].loaded.values().map(|(_, mib)| mib).sum();
        assert!(
            used <= GPU_MIB * u64::from(GPUS_PER_HOST),
            "seed {seed}: {} over capacity",
            self.hosts[i].name
        );
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
                let delay = self.delay();
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

    /// No slot loaded on two hosts that have both been in sync with the
    /// store for the settle window.
    fn check_owners(&mut self) {
        let settled = |h: &Host| {
            h.synced_since
                .is_some_and(|t| self.tick >= t + SETTLE_TICKS)
        };
        let mut owners: BTreeMap<&Slot, Vec<usize>> = BTreeMap::new();
        for (i, h) in self.hosts.iter().enumerate().filter(|(_, h)| settled(h)) {
            for slot in h.loaded.keys() {
                owners.entry(slot).or_default().push(i);
            }
        }
        self.tally.owner_checks += owners.len() as u64;
        let doubles = owners.values().filter(|hs| hs.len() > 1).count();
        self.tally.double_owners += doubles as u64;
    }

    /// Pinned slots of dead hosts: placed again once a live host has them
    /// loaded as the store's owner.
    fn track_orphans(&mut self) {
        let tick = self.tick;
        let mut done = Vec::new();
        for (slot, since) in &self.orphans {
            let placed = self.kv.get(slot).is_none_or(|(_, o)| {
                let owner = self.hosts.iter().position(|h| h.name == o.host);
                owner.is_some_and(|j| self.alive(j) && self.hosts[j].loaded.contains_key(slot))
            });
            if placed {
                done.push((slot.clone(), tick - since));
            }
        }
        for (slot, ticks) in done {
            self.orphans.remove(&slot);
            self.tally.replaced += 1;
            self.tally.replace_ticks_sum += ticks;
            self.tally.replace_ticks_max = self.tally.replace_ticks_max.max(ticks);
        }
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
        let _ = sched.place(&req, now, &mut out);
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

    fn pin_change(&mut self) {
        let Some(i) = self.random_alive() else { return };
        let n = self.rng.random_range(0..24);
        let pinned = self.rng.random_bool(0.5);
        self.tally.pin_changes += 1;
        let now = self.now_ms();
        let mut out = Vec::new();
        let sched = self.hosts[i].sched.as_mut().expect("alive");
        sched.set_pinned(&ModelName(format!("model-{n}")), pinned, now, &mut out);
        self.apply(i, &out);
    }

    /// Heals, revives everyone, lets the cluster settle, and checks that
    /// every pinned entry is loaded on its owner and nowhere else.
    fn finish(&mut self) {
        self.partitioned_until = None;
        for h in &mut self.hosts {
            h.side = 0;
            if h.sched.is_none() {
                h.revive_at = Some(0);
            }
        }
        let lost_ticks = config().lost_after_ms() / TICK_MS;
        for _ in 0..(3 * lost_ticks + 4 * SETTLE_TICKS) {
            self.step(false);
        }
        let entries: Vec<(Slot, HostName, bool)> = self
            .kv
            .entries()
            .map(|(s, _, o)| (s.clone(), o.host.clone(), o.pinned))
            .collect();
        for (slot, owner, pinned) in entries.into_iter().filter(|e| e.2) {
            let _ = pinned;
            let holders: Vec<&HostName> = self
                .hosts
                .iter()
                .filter(|h| h.loaded.contains_key(&slot))
                .map(|h| &h.name)
                .collect();
            if holders == [&owner] {
                self.tally.final_pinned += 1;
            } else {
                self.tally.forgotten += 1;
                panic!(
                    "seed {}: pinned {slot} owned by {owner} in the store but loaded on {holders:?}",
                    self.seed
                );
            }
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
fn a_hundred_random_kill_and_partition_schedules_forget_no_pinned_placement_and_make_no_double_owner()
 {
    let mut total = Tally::default();
    for seed in 0..100 {
        total.add(&run(seed, 5, 2_000));
    }
    // The schedules must have exercised what they claim to.
    assert!(total.kills >= 100 && total.partitions >= 50, "{total:?}");
    assert!(total.orphaned >= 100 && total.yields >= 10, "{total:?}");
    assert!(total.conflicts >= 10, "concurrent writes raced: {total:?}");
    assert!(total.final_pinned >= 500, "{total:?}");
    assert_eq!(
        (total.double_owners, total.illegal_loads),
        (0, 0),
        "{total:?}"
    );
    assert_eq!((total.forgotten, total.pinned_deleted), (0, 0), "{total:?}");
    tracing_free_report(&total);
}

#[test]
fn a_larger_cluster_keeps_every_invariant_too() {
    let mut total = Tally::default();
    for seed in 1_000..1_010 {
        total.add(&run(seed, 9, 2_000));
    }
    assert!(total.kills >= 10 && total.orphaned >= 10, "{total:?}");
    assert_eq!(
        (
            total.double_owners,
            total.illegal_loads,
            total.forgotten,
            total.pinned_deleted
        ),
        (0, 0, 0, 0),
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
