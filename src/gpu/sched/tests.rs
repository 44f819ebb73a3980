//! Unit tests of the scheduler through its public surface: a few hosts
//! wired together by hand, reports passed directly.

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

fn host(name: &str, incarnation: u64, free: &[u64]) -> GpuScheduler {
    let mut sut = GpuScheduler::cluster(HostName::from(name), incarnation, SchedConfig::default())
        .expect("default config is valid");
    sut.set_local_gpus(&gpus(free));
    sut
}

fn pinned(model: &str, vram_mib: u64, priority: u8) -> ModelRequest {
    ModelRequest {
        model: ModelName::from(model),
        vram_mib,
        pinned: true,
        priority,
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

/// Every host hears every other's current report, with 500 µs links.
fn gossip(hosts: &mut [&mut GpuScheduler], now_ms: u64) {
    let reports: Vec<HostReport> = hosts.iter().map(|h| h.local_report()).collect();
    for h in hosts.iter_mut() {
        for r in &reports {
            if &r.host != h.host() {
                h.observe(r.clone(), 500, now_ms, &mut Vec::new())
                    .expect("cluster mode");
            }
        }
    }
}

fn tick(h: &mut GpuScheduler, now_ms: u64) -> Vec<Decision> {
    let mut out = Vec::new();
    h.tick(now_ms, &mut out);
    out
}

#[test]
fn a_single_host_places_everything_locally_and_refuses_peers() {
    let mut sut =
        GpuScheduler::single_host(HostName::from("solo"), SchedConfig::default()).expect("valid");
    sut.set_local_gpus(&gpus(&[10 * GIB, 4 * GIB]));
    let mut out = Vec::new();

    let placed = sut
        .place(&pinned("llm", 3 * GIB, 1), 0, &mut out)
        .expect("fits");
    let peer = host("other", 1, &[GIB]).local_report();

    assert_eq!(
        (placed[0].host.0.as_str(), placed[0].gpu),
        ("solo", GpuIndex(1))
    );
    assert!(matches!(
        out[..],
        [Decision::Load {
            gpu: GpuIndex(1),
            ..
        }]
    ));
    assert!(matches!(
        sut.observe(peer, 0, 0, &mut out),
        Err(SchedError::SingleHost { .. })
    ));
}

#[test]
fn a_resident_model_is_placed_where_it_is_without_a_new_load() {
    let mut sut = host("a", 1, &[20 * GIB]);
    let mut out = Vec::new();
    sut.place(&pinned("stt", 3 * GIB, 0), 0, &mut out)
        .expect("fits");
    out.clear();

    let again = sut
        .place(&pinned("stt", 3 * GIB, 0), 10, &mut out)
        .expect("resident");

    assert!(out.is_empty(), "{out:?}");
    assert!(again[0].loaded);
}

#[test]
fn a_placement_on_a_peer_is_taken_up_from_the_deciders_report() {
    let mut a = host("a", 1, &[GIB]);
    let mut b = host("b", 2, &[20 * GIB]);
    gossip(&mut [&mut a, &mut b], 0);
    let mut out = Vec::new();

    let placed = a
        .place(&pinned("llm", 8 * GIB, 1), 0, &mut out)
        .expect("fits on b");
    gossip(&mut [&mut a, &mut b], 50);
    let on_b = tick(&mut b, 50);

    assert_eq!((placed[0].host.0.as_str(), placed[0].loaded), ("b", false));
    assert!(matches!(out[..], [Decision::Assigned { .. }]));
    assert!(
        on_b.iter()
            .any(|d| matches!(d, Decision::Load { vram_mib, .. } if *vram_mib == 8 * GIB))
    );
    assert_eq!(b.holder(&slot("llm", 0)), Some(HostName::from("b")));
}

#[test]
fn a_silent_host_is_lost_after_its_missed_heartbeats_and_its_pinned_models_move_in_priority_order()
{
    let mut a = host("a", 1, &[6 * GIB]);
    let mut b = host("b", 2, &[20 * GIB]);
    let mut c = host("c", 3, &[20 * GIB]);
    gossip(&mut [&mut a, &mut b, &mut c], 0);
    let mut out = Vec::new();
    let on_c = |req: ModelRequest| ModelRequest {
        host: Some(HostName::from("c")),
        ..req
    };
    c.place(&on_c(pinned("low", 5 * GIB, 3)), 0, &mut out)
        .expect("fits");
    c.place(&on_c(pinned("high", 5 * GIB, 0)), 0, &mut out)
        .expect("fits");
    gossip(&mut [&mut a, &mut b, &mut c], 0);
    b.set_local_gpus(&gpus(&[0]));
    gossip(&mut [&mut a, &mut b], 900);

    let before = tick(&mut a, 1000);
    let at_loss = tick(&mut a, 1001);

    assert!(
        !before
            .iter()
            .any(|d| matches!(d, Decision::HostLost { .. })),
        "{before:?}"
    );
    assert!(at_loss.contains(&Decision::HostLost {
        host: HostName::from("c")
    }));
    assert!(at_loss.contains(&Decision::Degraded(true)));
    // Only a has room, for one of the two: the higher priority goes first.
    let loads: Vec<_> = at_loss
        .iter()
        .filter_map(|d| match d {
            Decision::Load { slot, epoch, .. } => Some((slot.model.0.as_str(), *epoch)),
            _ => None,
        })
        .collect();
    assert_eq!(loads, [("high", Epoch(2))]);
    assert!(at_loss.contains(&Decision::Unplaced {
        slot: slot("low", 0),
        vram_mib: 5 * GIB
    }));
}

#[test]
fn after_a_partition_heals_the_lower_epoch_yields() {
    let mut a = host("a", 1, &[20 * GIB]);
    let mut b = host("b", 2, &[20 * GIB]);
    gossip(&mut [&mut a, &mut b], 0);
    let mut out = Vec::new();
    b.place(&pinned("tts", 2 * GIB, 1), 0, &mut out)
        .expect("fits");
    gossip(&mut [&mut a, &mut b], 0);
    // Partition: each side hears nothing; a re-places b's pinned model.
    let a_side = tick(&mut a, 1500);
    let b_side = tick(&mut b, 1500);
    assert!(a_side.iter().any(|d| matches!(
        d,
        Decision::Load {
            epoch: Epoch(2),
            ..
        }
    )));
    assert!(b_side.contains(&Decision::Degraded(true)));
    assert!(b.holder(&slot("tts", 0)).is_some(), "b keeps what it holds");

    gossip(&mut [&mut a, &mut b], 1600);
    let healed_b = tick(&mut b, 1600);
    let healed_a = tick(&mut a, 1600);

    assert!(healed_b.iter().any(|d| matches!(
        d,
        Decision::Yield {
            epoch: Epoch(1),
            ..
        }
    )));
    assert!(!healed_a.iter().any(|d| matches!(d, Decision::Yield { .. })));
    assert!(healed_b.contains(&Decision::Degraded(false)));
}

#[test]
fn replicas_go_to_distinct_hosts_while_hosts_have_room() {
    let mut a = host("a", 1, &[20 * GIB]);
    let mut b = host("b", 2, &[10 * GIB]);
    gossip(&mut [&mut a, &mut b], 0);
    let req = ModelRequest {
        replicas: 2,
        ..pinned("embed", GIB, 2)
    };

    let placed = a.place(&req, 0, &mut Vec::new()).expect("fits");

    let hosts: Vec<&str> = placed.iter().map(|p| p.host.0.as_str()).collect();
    // b first: a tighter fit outweighs its 0.5 ms link; then a, the other host.
    assert_eq!(hosts, ["b", "a"]);
}

#[test]
fn a_model_that_fits_nowhere_is_refused_with_the_most_room_named() {
    let mut sut = host("a", 1, &[3 * GIB, 5 * GIB]);

    let refused = sut.place(&pinned("huge", 40 * GIB, 0), 0, &mut Vec::new());

    assert_eq!(
        refused,
        Err(SchedError::NoRoom {
            model: ModelName::from("huge"),
            vram_mib: 40 * GIB,
            largest_free_mib: 5 * GIB
        })
    );
}

#[test]
fn a_job_runs_where_its_model_is_resident_and_keeps_it_active_for_its_hold() {
    let mut sut = host("a", 1, &[20 * GIB]);
    let job = JobRequest {
        model: ModelName::from("whisper"),
        vram_mib: 3 * GIB,
        priority: 1,
        hold_ms: 1500,
        policy: Policy::Spread,
    };
    let mut out = Vec::new();
    sut.place_job(&job, 0, &mut out).expect("fits");
    out.clear();

    let again = sut.place_job(&job, 100, &mut out).expect("resident");
    tick(&mut sut, 1200);
    let active_at_1200 = sut.local_report().owned[0].active;
    tick(&mut sut, 1600);
    let active_at_1600 = sut.local_report().owned[0].active;

    assert!(again.loaded && out.is_empty());
    assert!(active_at_1200 && !active_at_1600);
}

#[test]
fn the_link_going_down_makes_the_view_degraded_until_it_returns() {
    let mut sut = host("a", 1, &[GIB]);

    sut.set_link_up(false);
    let down = tick(&mut sut, 10);
    sut.set_link_up(true);
    let up = tick(&mut sut, 20);

    assert_eq!(down, [Decision::Degraded(true)]);
    assert_eq!(up, [Decision::Degraded(false)]);
}

#[test]
fn a_restarted_host_is_up_again_and_its_old_pinned_models_are_placed_again() {
    let mut a = host("a", 1, &[2 * GIB]);
    let mut b = host("b", 2, &[20 * GIB]);
    gossip(&mut [&mut a, &mut b], 0);
    b.place(&pinned("vision", 4 * GIB, 1), 0, &mut Vec::new())
        .expect("fits");
    gossip(&mut [&mut a, &mut b], 0);
    let mut b2 = host("b", 3, &[20 * GIB]);

    let mut out = Vec::new();
    a.observe(b2.local_report(), 500, 100, &mut out)
        .expect("cluster");
    a.tick(100, &mut out);
    gossip(&mut [&mut a, &mut b2], 150);
    let on_b2 = tick(&mut b2, 150);

    assert!(out.contains(&Decision::HostUp {
        host: HostName::from("b")
    }));
    assert!(out.iter().any(|d| matches!(
        d,
        Decision::Assigned {
            epoch: Epoch(2),
            ..
        }
    )));
    assert!(on_b2.iter().any(|d| matches!(d, Decision::Load { .. })));
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
        let mut sut = GpuScheduler::single_host(HostName::from("solo"), SchedConfig::default()).expect("valid");
        let mut used = [0u64; 2];
        for (i, &(mib, spread, prio)) in sizes.iter().enumerate() {
            let total = [24 * GIB, 12 * GIB];
            let report: Vec<GpuReport> = (0..2).map(|g| GpuReport {
                gpu: GpuIndex(g as u32), total_mib: total[g], free_mib: total[g] - used[g],
            }).collect();
            sut.set_local_gpus(&report);
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
            let placed = sut.place(&req, i as u64, &mut out);
            for d in &out {
                if let Decision::Load { gpu, vram_mib, .. } = d {
                    used[gpu.0 as usize] += vram_mib;
                    prop_assert!(used[gpu.0 as usize] <= total[gpu.0 as usize]);
                }
            }
            prop_assert_eq!(placed.is_ok(), could_fit);
        }
    }
}

#[test]
fn a_model_pinned_after_placement_moves_on_loss_and_an_unpinned_one_does_not() {
    let mut a = host("a", 1, &[20 * GIB]);
    let mut b = host("b", 2, &[20 * GIB]);
    gossip(&mut [&mut a, &mut b], 0);
    let mut out = Vec::new();
    let unpinned = |model: &str| ModelRequest {
        pinned: false,
        host: Some(HostName::from("b")),
        ..pinned(model, 2 * GIB, 1)
    };
    b.place(&unpinned("kept"), 0, &mut out).expect("fits");
    b.place(&unpinned("dropped"), 0, &mut out).expect("fits");

    let held = b.set_pinned(&ModelName::from("kept"), true);
    let elsewhere = a.set_pinned(&ModelName::from("kept"), true);
    gossip(&mut [&mut a, &mut b], 0);
    let at_loss = tick(&mut a, 1500);

    assert_eq!((held, elsewhere), (1, 0));
    assert_eq!(a.holder(&slot("kept", 0)), Some(HostName::from("a")));
    assert_eq!(a.holder(&slot("dropped", 0)), None, "{at_loss:?}");
}
