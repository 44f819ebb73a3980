//! Unit tests of the scheduler through its public surface: a few hosts
//! sharing a [`MemoryKv`] by hand, writes applied and changes delivered at
//! once (the simulation adds delays and failures).

use proptest::prelude::*;

use super::*;

const GIB: u64 = 1024;

fn gpus(free: &[u64]) -> Vec<GpuReport> {
    free.iter()
        .enumerate()
        .map(|(i, &f)| GpuReport {
            gpu: GpuIndex(i as u32),
            total_mib: 24 * GIB,
            free_mib: f,
        })
        .collect()
}

fn host(name: &str, free: &[u64]) -> GpuScheduler {
    let mut sut = GpuScheduler::cluster(HostName::from(name), 1, SchedConfig::default())
        .expect("default config is valid");
    sut.set_local_gpus(&gpus(free));
    sut.set_synced(true, 0);
    sut
}

fn pinned(model: &str, vram_mib: u64) -> ModelRequest {
    ModelRequest {
        model: ModelName::from(model),
        vram_mib,
        pinned: true,
        priority: 1,
        policy: Policy::Binpack,
        replicas: 1,
        host: None,
    }
}

fn slot(model: &str, replica: u8) -> Slot {
    Slot {
        model: ModelName::from(model),
        replica,
    }
}

/// Hosts around one store: what each decided, carried out.
struct Cluster {
    kv: MemoryKv,
    hosts: Vec<GpuScheduler>,
    /// How many changes each host has been given.
    seen: Vec<usize>,
    /// Every decision each host made, in order.
    log: Vec<Vec<Decision>>,
}

impl Cluster {
    fn new(hosts: Vec<GpuScheduler>) -> Self {
        let n = hosts.len();
        Cluster {
            kv: MemoryKv::new(),
            hosts,
            seen: vec![0; n],
            log: vec![Vec::new(); n],
        }
    }

    /// Every host hears every other's report, with 500 µs links.
    fn gossip(&mut self, now_ms: u64, alive: &[usize]) {
        let reports: Vec<HostReport> = alive
            .iter()
            .map(|&i| self.hosts[i].local_report())
            .collect();
        for &i in alive {
            for r in &reports {
                if &r.host != self.hosts[i].host() {
                    self.hosts[i]
                        .observe(r.clone(), 500, now_ms, &mut Vec::new())
                        .expect("cluster mode");
                }
            }
        }
    }

    /// Carries out host `i`'s decisions: writes to the store, answers back.
    fn carry_out(&mut self, i: usize, out: Vec<Decision>, now_ms: u64) {
        let mut queue = out;
        while !queue.is_empty() {
            let mut next = Vec::new();
            for d in queue {
                if let Decision::Write(req) = &d {
                    let outcome = self.kv.apply(req);
                    self.hosts[i].written(&req.slot, req.id, outcome, now_ms, &mut next);
                }
                self.log[i].push(d);
            }
            queue = next;
        }
    }

    /// Delivers the store's changes to the hosts in `alive`.
    fn deliver(&mut self, now_ms: u64, alive: &[usize]) {
        for &i in alive {
            for change in &self.kv.changes()[self.seen[i]..] {
                self.hosts[i]
                    .saw(
                        change.slot.clone(),
                        change.revision,
                        change.owner.clone(),
                        now_ms,
                    )
                    .expect("bounded");
            }
            self.seen[i] = self.kv.changes().len();
        }
    }

    /// One round: gossip, deliver, tick and carry out, for `alive` hosts.
    fn round(&mut self, now_ms: u64, alive: &[usize]) {
        self.gossip(now_ms, alive);
        self.deliver(now_ms, alive);
        for &i in alive {
            let mut out = Vec::new();
            self.hosts[i].tick(now_ms, &mut out);
            self.carry_out(i, out, now_ms);
        }
        self.deliver(now_ms, alive);
    }

    fn place(&mut self, i: usize, req: &ModelRequest, now_ms: u64) -> Vec<Placement> {
        let mut out = Vec::new();
        let placed = self.hosts[i].place(req, now_ms, &mut out).expect("fits");
        self.carry_out(i, out, now_ms);
        self.deliver(now_ms, &(0..self.hosts.len()).collect::<Vec<_>>());
        placed
    }

    fn loads(&self, i: usize, model: &str) -> usize {
        self.log[i]
            .iter()
            .filter(|d| matches!(d, Decision::Load { slot, .. } if slot.model.0 == model))
            .count()
    }

    fn owner(&self, model: &str) -> Option<(String, bool)> {
        self.kv
            .get(&slot(model, 0))
            .map(|(_, o)| (o.host.0.clone(), o.loaded))
    }
}

#[test]
fn a_single_host_places_everything_locally_and_refuses_peers() {
    let mut sut =
        GpuScheduler::single_host(HostName::from("solo"), SchedConfig::default()).expect("valid");
    sut.set_local_gpus(&gpus(&[10 * GIB, 4 * GIB]));
    let peer = host("other", &[GIB]).local_report();
    let mut one = Cluster::new(vec![sut]);

    one.place(0, &pinned("llm", 3 * GIB), 0);
    let refused = one.hosts[0].observe(peer, 0, 0, &mut Vec::new());

    assert_eq!(one.owner("llm"), Some(("solo".to_owned(), true)));
    assert!(one.log[0].contains(&Decision::Load {
        slot: slot("llm", 0),
        gpu: GpuIndex(1),
        vram_mib: 3 * GIB,
        revision: 1
    }));
    assert!(matches!(refused, Err(SchedError::SingleHost { .. })));
}

#[test]
fn a_placement_on_a_peer_is_loaded_there_only_once_the_peers_claim_is_written() {
    let mut c = Cluster::new(vec![host("a", &[GIB]), host("b", &[20 * GIB])]);
    c.gossip(0, &[0, 1]);

    let placed = c.place(0, &pinned("vision", 4 * GIB), 0);
    let before_claim = c.loads(1, "vision");
    c.round(10, &[0, 1]);

    assert_eq!((placed[0].host.0.as_str(), placed[0].revision), ("b", 0));
    assert_eq!(before_claim, 0, "assigned, not loaded");
    assert_eq!(c.loads(1, "vision"), 1);
    assert_eq!(c.owner("vision"), Some(("b".to_owned(), true)));
    assert_eq!(
        c.hosts[0].holder(&slot("vision", 0)),
        Some(HostName::from("b"))
    );
}

#[test]
fn two_hosts_placing_one_model_at_once_make_one_owner() {
    let mut c = Cluster::new(vec![host("a", &[20 * GIB]), host("b", &[20 * GIB])]);
    c.gossip(0, &[0, 1]);
    let mut out_a = Vec::new();
    let mut out_b = Vec::new();

    c.hosts[0]
        .place(&pinned("llm", 4 * GIB), 0, &mut out_a)
        .expect("fits");
    c.hosts[1]
        .place(&pinned("llm", 4 * GIB), 0, &mut out_b)
        .expect("fits");
    c.carry_out(0, out_a, 0);
    c.carry_out(1, out_b, 0);
    for t in 1..5 {
        c.round(t * 10, &[0, 1]);
    }

    assert_eq!(c.loads(0, "llm") + c.loads(1, "llm"), 1);
    assert_eq!(
        c.owner("llm"),
        Some(("a".to_owned(), true)),
        "the first create won"
    );
}

#[test]
fn a_placement_whose_create_failed_is_asked_again_until_the_store_takes_it() {
    let mut c = Cluster::new(vec![host("a", &[20 * GIB]), host("b", &[20 * GIB])]);
    c.gossip(0, &[0, 1]);
    let mut out = Vec::new();
    c.hosts[0]
        .place(&pinned("ocr", 2 * GIB), 0, &mut out)
        .expect("fits");
    // The link failed that write (down, or the store did not answer).
    for d in &out {
        if let Decision::Write(req) = d {
            c.hosts[0].written(&req.slot, req.id, WriteOutcome::Failed, 0, &mut Vec::new());
        }
    }

    c.round(100, &[0, 1]);
    let during_backoff = c.owner("ocr");
    c.round(300, &[0, 1]);

    assert_eq!(during_backoff, None, "not asked again before its backoff");
    assert_eq!(c.owner("ocr"), Some(("a".to_owned(), true)));
    assert_eq!(c.loads(0, "ocr"), 1);
    let writes = c.log[0]
        .iter()
        .filter(|d| matches!(d, Decision::Write(r) if r.slot == slot("ocr", 0)))
        .count();
    c.round(600, &[0, 1]);
    let writes_after = c.log[0]
        .iter()
        .filter(|d| matches!(d, Decision::Write(r) if r.slot == slot("ocr", 0)))
        .count();
    assert_eq!(writes, writes_after, "asked no more once the store took it");
}

#[test]
fn a_create_refused_because_another_host_placed_the_slot_is_not_asked_again() {
    let mut c = Cluster::new(vec![host("a", &[20 * GIB]), host("b", &[20 * GIB])]);
    c.gossip(0, &[0, 1]);
    let mut out_a = Vec::new();
    c.hosts[0]
        .place(&pinned("llm", 4 * GIB), 0, &mut out_a)
        .expect("fits");
    c.place(1, &pinned("llm", 4 * GIB), 0);
    // a's create reaches the store after b's and is refused; a has not
    // seen b's entry yet.
    let mut refused = Vec::new();
    for d in &out_a {
        if let Decision::Write(req) = d {
            let outcome = c.kv.apply(req);
            assert_eq!(outcome, WriteOutcome::Conflict);
            c.hosts[0].written(&req.slot, req.id, outcome, 0, &mut refused);
        }
    }
    let mut later = Vec::new();
    c.hosts[0].tick(1_000, &mut later);

    assert!(
        !later
            .iter()
            .any(|d| matches!(d, Decision::Write(r) if r.slot == slot("llm", 0))),
        "{later:?}"
    );
    assert_eq!(c.owner("llm"), Some(("b".to_owned(), true)));
}

#[test]
fn an_active_mark_that_runs_out_after_the_store_gave_the_slot_away_is_not_written() {
    // Found by the simulation: the host's write of its expired mark on
    // the new owner's entry held back its yield, so two hosts held it.
    let mut c = Cluster::new(vec![host("a", &[20 * GIB]), host("b", &[20 * GIB])]);
    c.gossip(0, &[0, 1]);
    let job = JobRequest {
        model: ModelName::from("asr"),
        vram_mib: 2 * GIB,
        priority: 1,
        hold_ms: 100,
        policy: Policy::Binpack,
    };
    let mut out = Vec::new();
    c.hosts[0].place_job(&job, 0, &mut out).expect("fits");
    c.carry_out(0, out, 0);
    c.deliver(0, &[0, 1]);
    assert_eq!(c.loads(0, "asr"), 1);
    // The store gives the slot to b (b re-placed it while it thought a
    // lost), and a hears of it.
    let (revision, owner) = c.kv.get(&slot("asr", 0)).expect("created");
    let mut owner = owner.clone();
    owner.host = HostName::from("b");
    let moved = WriteRequest {
        slot: slot("asr", 0),
        write: Write::Update { owner, revision },
        id: 0,
    };
    assert!(matches!(c.kv.apply(&moved), WriteOutcome::Written { .. }));
    c.deliver(10, &[0, 1]);

    c.gossip(1_990, &[0, 1]);
    let mut later = Vec::new();
    c.hosts[0].tick(2_000, &mut later);

    assert!(
        !later.iter().any(|d| matches!(d, Decision::Write(_))),
        "{later:?}"
    );
    assert!(
        later
            .iter()
            .any(|d| matches!(d, Decision::Yield { slot: s, .. } if *s == slot("asr", 0))),
        "{later:?}"
    );
}

#[test]
fn a_lost_owners_pinned_model_is_placed_again_by_one_survivor_and_an_unpinned_one_deleted() {
    let mut c = Cluster::new(vec![
        host("a", &[20 * GIB]),
        host("b", &[20 * GIB]),
        host("c", &[20 * GIB]),
    ]);
    c.gossip(0, &[0, 1, 2]);
    let on_a = ModelRequest {
        host: Some(HostName::from("a")),
        ..pinned("stt", 2 * GIB)
    };
    let loose = ModelRequest {
        pinned: false,
        ..on_a.clone()
    };
    c.place(1, &on_a, 0);
    c.place(
        1,
        &ModelRequest {
            model: ModelName::from("cache"),
            ..loose
        },
        0,
    );
    c.round(10, &[0, 1, 2]);
    assert_eq!(c.owner("stt"), Some(("a".to_owned(), true)));

    for t in 0..8 {
        c.round(1_300 + t * 10, &[1, 2]);
    }

    let owner = c.owner("stt").expect("still in the store");
    assert!(owner.0 == "b" || owner.0 == "c", "{owner:?}");
    assert!(owner.1, "loaded by its new owner");
    assert_eq!(c.loads(1, "stt") + c.loads(2, "stt"), 1);
    assert_eq!(c.owner("cache"), None, "deleted, not placed again");
}

#[test]
fn a_host_that_starts_after_every_holder_died_places_the_pinned_models_it_finds() {
    let mut c = Cluster::new(vec![host("a", &[20 * GIB]), host("late", &[20 * GIB])]);
    c.hosts[1].set_synced(false, 0);
    c.place(0, &pinned("tts", 2 * GIB), 0);
    c.round(10, &[0]);

    // "a" dies; "late" starts, syncs and never hears of it.
    c.hosts[1].set_synced(true, 5_000);
    c.round(5_000, &[1]);
    let during_grace = c.owner("tts");
    for t in 1..4 {
        c.round(5_000 + t * 600, &[1]);
    }

    assert_eq!(
        during_grace,
        Some(("a".to_owned(), true)),
        "a may not have reported yet"
    );
    assert_eq!(c.owner("tts"), Some(("late".to_owned(), true)));
}

#[test]
fn a_host_yields_a_slot_the_store_gives_another_owner_and_recreates_one_the_store_lost() {
    let mut c = Cluster::new(vec![host("a", &[20 * GIB]), host("b", &[20 * GIB])]);
    c.gossip(0, &[0, 1]);
    c.place(0, &pinned("llm", 4 * GIB), 0);
    let (revision, owner) =
        c.kv.get(&slot("llm", 0))
            .map(|(r, o)| (r, o.clone()))
            .expect("placed");
    c.kv.apply(&WriteRequest {
        slot: slot("llm", 0),
        write: Write::Update {
            owner: Ownership {
                host: HostName::from("b"),
                loaded: false,
                ..owner
            },
            revision,
        },
        id: 0,
    });

    c.round(10, &[0, 1]);
    let yielded = c.log[0]
        .iter()
        .any(|d| matches!(d, Decision::Yield { to: Some(h), .. } if h.0 == "b"));
    let mut fresh = Cluster::new(vec![host("a", &[20 * GIB])]);
    fresh.place(0, &pinned("tts", GIB), 0);
    // The store restarts empty: the link reconnects and replays nothing.
    fresh.hosts[0].set_synced(false, 5);
    fresh.kv = MemoryKv::new();
    fresh.seen[0] = 0;
    fresh.hosts[0].set_synced(true, 10);
    fresh.round(10, &[0]);

    assert!(yielded, "{:?}", c.log[0]);
    assert_eq!(c.owner("llm"), Some(("b".to_owned(), true)));
    assert_eq!(fresh.owner("tts"), Some(("a".to_owned(), true)));
    assert!(
        fresh.kv.get(&slot("tts", 0)).is_some_and(|(_, o)| o.pinned),
        "still pinned"
    );
    assert_eq!(fresh.loads(0, "tts"), 1, "kept, not loaded twice");
}

#[test]
fn an_assignment_not_loaded_in_time_moves_to_another_host() {
    let mut c = Cluster::new(vec![host("a", &[20 * GIB]), host("b", &[20 * GIB])]);
    c.gossip(0, &[0, 1]);
    let on_b = ModelRequest {
        host: Some(HostName::from("b")),
        ..pinned("ocr", 3 * GIB)
    };
    c.place(0, &on_b, 0);
    // b fills up before it claims.
    c.hosts[1].set_local_gpus(&gpus(&[GIB]));

    c.round(100, &[0, 1]);
    let still_assigned = c.owner("ocr");
    c.round(2_200, &[0, 1]);
    c.round(2_210, &[0, 1]);

    assert_eq!(still_assigned, Some(("b".to_owned(), false)));
    assert_eq!(c.owner("ocr"), Some(("a".to_owned(), true)));
}

#[test]
fn replicas_land_on_distinct_hosts_while_hosts_have_room() {
    let mut c = Cluster::new(vec![host("a", &[20 * GIB]), host("b", &[20 * GIB])]);
    c.gossip(0, &[0, 1]);

    let placed = c.place(
        0,
        &ModelRequest {
            replicas: 2,
            ..pinned("llm", 4 * GIB)
        },
        0,
    );

    assert_ne!(placed[0].host, placed[1].host);
}

#[test]
fn nothing_changes_while_the_table_is_not_synced_or_the_link_is_down() {
    let mut sut = host("a", &[20 * GIB]);
    sut.set_synced(false, 0);
    let other = Ownership {
        host: HostName::from("gone"),
        gpu: GpuIndex(0),
        vram_mib: GIB,
        pinned: true,
        active: false,
        priority: 0,
        policy: Policy::Binpack,
        loaded: true,
    };
    sut.saw(slot("m", 0), 3, Some(other), 0).expect("bounded");
    let mut out = Vec::new();

    sut.tick(60_000, &mut out);
    sut.set_synced(true, 60_000);
    sut.set_link_up(false);
    sut.tick(120_000, &mut out);

    assert!(
        !out.iter().any(|d| matches!(d, Decision::Write(_))),
        "{out:?}"
    );
}

#[test]
fn peers_and_slots_past_their_bounds_are_refused() {
    let mut sut = host("a", &[GIB]);
    let mut out = Vec::new();
    for i in 0..MAX_PEERS {
        let report = host(&format!("p{i}"), &[GIB]).local_report();
        sut.observe(report, 0, 0, &mut out)
            .expect("within the bound");
    }
    let one_more = host("extra", &[GIB]).local_report();
    for i in 0..MAX_SLOTS {
        sut.saw(slot(&format!("m{i}"), 0), 1, None, 0)
            .expect("within");
    }

    assert!(matches!(
        sut.observe(one_more, 0, 0, &mut out),
        Err(SchedError::TooManyPeers { .. })
    ));
    assert!(matches!(
        sut.saw(slot("x", 0), 1, None, 0),
        Err(SchedError::TooManySlots { .. })
    ));
}

#[test]
fn a_lost_peer_is_forgotten_after_the_prune_period() {
    let mut sut = host("a", &[GIB]);
    let mut out = Vec::new();
    sut.observe(host("b", &[GIB]).local_report(), 0, 0, &mut out)
        .expect("cluster");

    sut.tick(2_000, &mut out);
    let lost = sut.hosts().len();
    sut.tick(2_000 + PRUNE_AFTER_MS + 1, &mut out);

    assert!(out.contains(&Decision::HostLost {
        host: HostName::from("b")
    }));
    assert_eq!((lost, sut.hosts().len()), (2, 1));
}

#[test]
fn bad_timing_settings_are_refused() {
    let zero = SchedConfig {
        missed_heartbeats: 0,
        ..SchedConfig::default()
    };
    let short = SchedConfig {
        assignment_timeout_ms: 10,
        ..SchedConfig::default()
    };

    assert!(matches!(
        GpuScheduler::single_host(HostName::from("a"), zero),
        Err(SchedError::Config { .. })
    ));
    assert!(matches!(
        GpuScheduler::single_host(HostName::from("a"), short),
        Err(SchedError::AssignmentTimeout { .. })
    ));
}

proptest! {
    #[test]
    fn random_requests_on_one_host_never_overfill_a_gpu(
        sizes in proptest::collection::vec((1u64..12_000, any::<bool>(), 0u8..4), 1..40),
    ) {
        let sut = GpuScheduler::single_host(HostName::from("solo"), SchedConfig::default()).expect("valid");
        let mut one = Cluster::new(vec![sut]);
        let mut used = [0u64; 2];
        let total = [24 * GIB, 12 * GIB];
        for (i, &(mib, spread, prio)) in sizes.iter().enumerate() {
            let report: Vec<GpuReport> = (0..2).map(|g| GpuReport {
                gpu: GpuIndex(g as u32), total_mib: total[g], free_mib: total[g] - used[g],
            }).collect();
            one.hosts[0].set_local_gpus(&report);
            let req = ModelRequest {
                model: ModelName(format!("m{i}")),
                vram_mib: mib,
                pinned: true,
                priority: prio,
                policy: if spread { Policy::Spread } else { Policy::Binpack },
                replicas: 1,
                host: None,
            };
            let could_fit = total.iter().zip(used).any(|(t, u)| t - u >= mib);
            let mut out = Vec::new();
            let placed = one.hosts[0].place(&req, i as u64, &mut out);
            let before = one.log[0].len();
            one.carry_out(0, out, i as u64);
            for d in &one.log[0][before..] {
                if let Decision::Load { gpu, vram_mib, .. } = d {
                    used[gpu.0 as usize] += vram_mib;
                    prop_assert!(used[gpu.0 as usize] <= total[gpu.0 as usize]);
                }
            }
            prop_assert_eq!(placed.is_ok(), could_fit);
        }
    }
}

/// Answers every write in `out` with `outcome` at `now_ms`; returns the
/// other decisions and how many writes there were.
fn answer_all(
    sut: &mut GpuScheduler,
    out: &mut Vec<Decision>,
    outcome: WriteOutcome,
    now_ms: u64,
) -> (Vec<Decision>, usize) {
    let (mut rest, mut writes) = (Vec::new(), 0);
    while !out.is_empty() {
        for d in std::mem::take(out) {
            match d {
                Decision::Write(req) => {
                    writes += 1;
                    sut.written(&req.slot, req.id, outcome, now_ms, out);
                }
                other => rest.push(other),
            }
        }
    }
    (rest, writes)
}

#[test]
fn a_placement_the_store_keeps_refusing_is_given_up_after_its_tries_and_its_patience() {
    let mut sut = host("a", &[20 * GIB]);
    let mut out = Vec::new();
    sut.place(&pinned("ocr", 2 * GIB), 0, &mut out)
        .expect("fits");
    let (mut tries, mut gave_up) = (0, Vec::new());
    let mut now = 0;
    while now <= ASK_PATIENCE_MS + 10_000 {
        let (rest, writes) = answer_all(&mut sut, &mut out, WriteOutcome::Failed, now);
        tries += writes;
        gave_up.extend(
            rest.into_iter()
                .filter(|d| matches!(d, Decision::GaveUp { .. }))
                .map(|d| (now, tries, d)),
        );
        now += 1_000;
        sut.tick(now, &mut out);
    }

    assert_eq!(gave_up.len(), 1, "{gave_up:?}");
    let (at, tried, decision) = &gave_up[0];
    assert!(*at >= ASK_PATIENCE_MS, "not before its patience: {at}");
    assert!(*tried >= ASK_TRIES as usize);
    assert!(matches!(decision, Decision::GaveUp { slot: s, .. } if *s == slot("ocr", 0)));
    assert_eq!(tries, *tried, "no create after it was given up");
    assert_eq!(sut.where_is(&slot("ocr", 0)), None);
}

#[test]
fn an_answer_that_comes_after_its_write_timed_out_is_not_taken_for_the_next_write() {
    let mut sut = host("a", &[20 * GIB]);
    let mut out = Vec::new();
    sut.place(&pinned("ocr", 2 * GIB), 0, &mut out)
        .expect("fits");
    let late = match out.as_slice() {
        [Decision::Write(req)] => req.clone(),
        other => panic!("one create: {other:?}"),
    };
    let mut again = Vec::new();
    sut.tick(WRITE_TIMEOUT_MS, &mut again);
    sut.tick(WRITE_TIMEOUT_MS + 2_000, &mut again);
    let retry = again
        .iter()
        .find_map(|d| match d {
            Decision::Write(req) => Some(req.clone()),
            _ => None,
        })
        .expect("asked again after the timeout");
    assert_ne!(retry.id, late.id);

    let mut after = Vec::new();
    let outcome = WriteOutcome::Written { revision: 1 };
    sut.written(
        &late.slot,
        late.id,
        outcome,
        WRITE_TIMEOUT_MS + 2_001,
        &mut after,
    );

    let shown = sut.where_is(&slot("ocr", 0)).expect("still placing");
    assert_eq!(
        shown.revision, 0,
        "the retry is still waiting for its answer"
    );
    assert!(after.is_empty(), "{after:?}");
    sut.written(
        &retry.slot,
        retry.id,
        outcome,
        WRITE_TIMEOUT_MS + 2_002,
        &mut after,
    );
    assert_eq!(sut.where_is(&slot("ocr", 0)).map(|p| p.revision), Some(1));
}

/// Asks `sut` to place an 8 GiB model at `now_ms`, fails that create,
/// and leaves no GPU room for it.
fn asked_then_squeezed(sut: &mut GpuScheduler, now_ms: u64) {
    let mut out = Vec::new();
    sut.place(&pinned("ocr", 8 * GIB), now_ms, &mut out)
        .expect("fits");
    answer_all(sut, &mut out, WriteOutcome::Failed, now_ms);
    sut.set_local_gpus(&gpus(&[GIB]));
}

#[test]
fn an_asked_placement_that_no_longer_fits_is_reported_once_and_placed_when_room_comes() {
    let mut sut = host("a", &[20 * GIB]);
    asked_then_squeezed(&mut sut, 0);
    let mut out = Vec::new();
    let mut unplaced = 0;
    for second in 1..10 {
        sut.tick(second * 1_000, &mut out);
        let (rest, writes) = answer_all(&mut sut, &mut out, WriteOutcome::Failed, second * 1_000);
        assert_eq!(writes, 0, "nowhere to create it");
        unplaced += rest
            .iter()
            .filter(|d| matches!(d, Decision::Unplaced { .. }))
            .count();
    }
    assert_eq!(unplaced, 1);

    sut.set_local_gpus(&gpus(&[20 * GIB]));
    sut.tick(10_000, &mut out);
    let (_, writes) = answer_all(
        &mut sut,
        &mut out,
        WriteOutcome::Written { revision: 1 },
        10_000,
    );
    assert_eq!(writes, 1, "created once room came");
}

/// Ticks `sut` each second from `from` to `to` ms, failing every write
/// with `outcome` (`None`: never answered); returns when it gave up.
fn fail_until(
    sut: &mut GpuScheduler,
    from: u64,
    to: u64,
    outcome: Option<WriteOutcome>,
) -> Option<u64> {
    let mut out = Vec::new();
    let mut now = from;
    while now <= to {
        sut.tick(now, &mut out);
        let rest = match outcome {
            Some(outcome) => answer_all(sut, &mut out, outcome, now).0,
            None => std::mem::take(&mut out),
        };
        if rest.iter().any(|d| matches!(d, Decision::GaveUp { .. })) {
            return Some(now);
        }
        now += 1_000;
    }
    None
}

#[test]
fn creates_whose_answers_never_come_count_as_failed_and_end_in_giving_up() {
    let mut sut = host("a", &[20 * GIB]);
    sut.place(&pinned("ocr", 2 * GIB), 0, &mut Vec::new())
        .expect("fits");
    let gave_up = fail_until(&mut sut, 1_000, 3 * ASK_PATIENCE_MS, None);
    assert!(
        gave_up.is_some_and(|at| at >= ASK_PATIENCE_MS),
        "{gave_up:?}"
    );
}

#[test]
fn failures_before_an_outage_do_not_give_a_placement_up_after_it() {
    let mut sut = host("a", &[20 * GIB]);
    let failed = Some(WriteOutcome::Failed);
    sut.place(&pinned("ocr", 2 * GIB), 0, &mut Vec::new())
        .expect("fits");
    assert_eq!(fail_until(&mut sut, 1_000, 30_000, failed), None);
    // The store goes away for longer than the patience, then comes back.
    let back = 31_000 + 2 * ASK_PATIENCE_MS;
    sut.set_synced(false, 31_000);
    sut.set_synced(true, back);

    let gave_up = fail_until(&mut sut, back + 1_000, back + 2 * ASK_PATIENCE_MS, failed);

    let at = gave_up.expect("given up once refused long enough again");
    assert!(
        at >= back + ASK_PATIENCE_MS,
        "{at} came too soon after {back}"
    );
}

#[test]
fn a_placement_unplaced_then_given_up_is_reported_unplaced_again_when_asked_anew() {
    let mut sut = host("a", &[20 * GIB]);
    let mut out = Vec::new();
    asked_then_squeezed(&mut sut, 0);
    sut.tick(1_000, &mut out);
    let (first, _) = answer_all(&mut sut, &mut out, WriteOutcome::Failed, 1_000);
    sut.set_local_gpus(&gpus(&[20 * GIB]));
    let failed = Some(WriteOutcome::Failed);
    let gave_up = fail_until(&mut sut, 2_000, 3 * ASK_PATIENCE_MS, failed);
    assert!(gave_up.is_some(), "the store refused it long enough");

    let now = 3 * ASK_PATIENCE_MS + 1_000;
    asked_then_squeezed(&mut sut, now);
    sut.tick(now + 1_000, &mut out);
    let (again, _) = answer_all(&mut sut, &mut out, WriteOutcome::Failed, now + 1_000);

    let unplaced = |d: &[Decision]| {
        d.iter()
            .filter(|d| matches!(d, Decision::Unplaced { .. }))
            .count()
    };
    assert_eq!((unplaced(&first), unplaced(&again)), (1, 1));
}
