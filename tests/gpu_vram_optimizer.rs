#![cfg(test)]
//! The VRAM optimizer's policies, one behaviour per test, driven through
//! its public inputs with time passed in.

use pinwheel::gpu::vram::{
    Decision, DenyReason, EvictReason, ModelId, Priority, RequestId, UseRequest, WaitReason,
};
use pinwheel::gpu::{GpuIndex, GpuInfo, GpuSample, ProcessUse, VramOptimizer};
use pinwheel::topology::{VramPin, VramPolicy};

fn gpus(sizes: &[u64]) -> Vec<GpuInfo> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, &total_mib)| GpuInfo {
            index: GpuIndex(i as u32),
            name: "sim".to_owned(),
            uuid: format!("GPU-sim-{i}"),
            total_mib,
        })
        .collect()
}

/// A policy with round numbers: budget = total (no reserve), 10 s
/// minimum residency, preloading off unless a test turns it on.
fn policy() -> VramPolicy {
    VramPolicy {
        budget_fraction: 1.0,
        reserve_mib: 0,
        min_residency_ms: 10_000,
        preload: false,
        ..VramPolicy::default()
    }
}

struct Host {
    sut: VramOptimizer,
    out: Vec<Decision>,
}

impl Host {
    fn new(policy: VramPolicy, sizes: &[u64]) -> Self {
        Self {
            sut: VramOptimizer::new(policy, &gpus(sizes)).unwrap(),
            out: Vec::new(),
        }
    }

    fn tick(&mut self, now: u64) -> Vec<Decision> {
        self.out.clear();
        self.sut.tick(now, &mut self.out);
        self.out.clone()
    }

    fn use_model(&mut self, now: u64, name: &str, mib: u64, priority: Priority) -> RequestId {
        let model = self.sut.model(name, mib);
        self.sut.submit(
            now,
            UseRequest {
                model,
                vram_mib: mib,
                priority,
                hold_ms: 1_000,
            },
        )
    }

    /// Ticks, completes every load at once, and returns the decisions.
    fn settle(&mut self, now: u64) -> Vec<Decision> {
        let decisions = self.tick(now);
        for d in &decisions {
            if let Decision::Load { model, .. } | Decision::Preload { model, .. } = d {
                self.sut.loaded(now, *model, None);
            }
        }
        decisions
    }

    /// Uses a model once and releases it: loaded, admitted, idle.
    fn warm(&mut self, now: u64, name: &str, mib: u64, priority: Priority) -> ModelId {
        let request = self.use_model(now, name, mib, priority);
        self.settle(now);
        self.tick(now);
        self.sut.release(now, request);
        self.sut.model(name, mib)
    }
}

fn evicted(decisions: &[Decision]) -> Vec<ModelId> {
    decisions
        .iter()
        .filter_map(|d| match d {
            Decision::Evict { model, .. } => Some(*model),
            _ => None,
        })
        .collect()
}

#[test]
fn a_resident_model_is_admitted_on_the_tick_after_its_use_arrives() {
    let mut host = Host::new(policy(), &[10_000]);
    let model = host.warm(0, "m", 1_000, Priority::Interactive);
    let request = host.use_model(100, "m", 1_000, Priority::Interactive);
    assert_eq!(
        host.tick(100),
        [Decision::Admit {
            request,
            model,
            gpu: GpuIndex(0)
        }]
    );
    assert_eq!(host.sut.stats().hits, 1);
}

#[test]
fn an_absent_model_is_loaded_and_its_use_queued_once_then_admitted() {
    let mut host = Host::new(policy(), &[10_000]);
    let request = host.use_model(0, "m", 1_000, Priority::Interactive);
    let model = host.sut.model("m", 1_000);
    assert_eq!(
        host.tick(0),
        [
            Decision::Load {
                model,
                gpu: GpuIndex(0),
                vram_mib: 1_000
            },
            Decision::Queue {
                request,
                model,
                reason: WaitReason::Loading
            },
        ]
    );
    assert_eq!(host.tick(50), []);
    host.sut.loaded(800, model, None);
    assert_eq!(
        host.tick(800),
        [Decision::Admit {
            request,
            model,
            gpu: GpuIndex(0)
        }]
    );
    assert_eq!(host.sut.stats().misses, 1);
}

#[test]
fn a_load_goes_to_the_gpu_it_fits_most_snugly() {
    let mut host = Host::new(policy(), &[24_000, 8_000, 12_000]);
    host.use_model(0, "m", 7_000, Priority::Interactive);
    let decisions = host.tick(0);
    assert!(
        matches!(
            decisions[0],
            Decision::Load {
                gpu: GpuIndex(1),
                ..
            }
        ),
        "{decisions:?}"
    );
}

#[test]
fn making_room_evicts_the_cheapest_set_and_spares_a_frequently_used_model() {
    let mut host = Host::new(policy(), &[10_000]);
    // "hot" is used every minute; "cold" once; both idle now.
    let hot = host.warm(0, "hot", 4_000, Priority::Interactive);
    let cold = host.warm(0, "cold", 4_000, Priority::Interactive);
    for minute in 1..6 {
        host.warm(minute * 60_000, "hot", 4_000, Priority::Interactive);
    }
    host.use_model(400_000, "new", 4_000, Priority::Interactive);
    let decisions = host.tick(400_000);
    assert_eq!(evicted(&decisions), [cold], "{decisions:?}");
    assert!(host.sut.resident(hot).is_some());
}

#[test]
fn busy_pinned_and_young_models_are_never_evicted_to_make_room() {
    let pins = vec![VramPin {
        model: "pin".to_owned(),
        vram_mib: 3_000,
        gpu: 0,
    }];
    let mut host = Host::new(VramPolicy { pins, ..policy() }, &[10_000]);
    host.settle(0);
    host.use_model(0, "busy", 3_000, Priority::Batch);
    host.settle(0);
    host.tick(0);
    host.warm(0, "young", 3_000, Priority::Batch);
    let request = host.use_model(5_000, "new", 3_000, Priority::Realtime);
    let decisions = host.tick(5_000);
    assert_eq!(evicted(&decisions), []);
    assert!(decisions.contains(&Decision::Queue {
        request,
        model: host.sut.model("new", 3_000),
        reason: WaitReason::NoRoom
    }));
    // Once "young" is past its minimum residency, it goes.
    let decisions = host.tick(10_000);
    assert_eq!(evicted(&decisions), [host.sut.model("young", 3_000)]);
}

#[test]
fn a_batch_use_does_not_evict_a_realtime_model_that_is_in_use_every_minute() {
    let mut host = Host::new(policy(), &[8_000]);
    for minute in 0..5 {
        host.warm(minute * 60_000, "stt", 6_000, Priority::Realtime);
    }
    host.use_model(250_000, "embed", 3_000, Priority::Batch);
    let decisions = host.tick(250_000);
    assert_eq!(evicted(&decisions), []);
    // A realtime use may.
    host.use_model(250_000, "tts", 3_000, Priority::Realtime);
    let decisions = host.tick(250_000);
    assert_eq!(evicted(&decisions), [host.sut.model("stt", 6_000)]);
}

#[test]
fn waiting_uses_are_served_in_class_order() {
    let mut host = Host::new(policy(), &[4_000]);
    let blocker = host.use_model(0, "big", 4_000, Priority::Batch);
    host.settle(0);
    host.tick(0);
    let batch = host.use_model(1, "a", 2_000, Priority::Batch);
    let realtime = host.use_model(2, "b", 2_000, Priority::Realtime);
    host.tick(2);
    host.sut.release(20_000, blocker);
    let decisions = host.tick(20_000);
    let _ = (batch, realtime);
    let loads: Vec<ModelId> = decisions
        .iter()
        .filter_map(|d| match d {
            Decision::Load { model, .. } => Some(*model),
            _ => None,
        })
        .collect();
    assert_eq!(loads[0], host.sut.model("b", 2_000), "{decisions:?}");
}

#[test]
fn another_program_taking_vram_makes_idle_models_go_down_to_the_budget() {
    let mut host = Host::new(
        VramPolicy {
            budget_fraction: 0.9,
            ..policy()
        },
        &[10_000],
    );
    let a = host.warm(0, "a", 3_000, Priority::Interactive);
    let b = host.warm(0, "b", 3_000, Priority::Interactive);
    let sample = |free_mib| GpuSample {
        gpu: GpuIndex(0),
        total_mib: 10_000,
        used_mib: 10_000 - free_mib,
        free_mib,
        util_pct: None,
        temp_c: None,
        power_mw: None,
        processes: None,
    };
    // Another program takes 5000 MiB: 11000 used of 10000.
    host.sut.sample(60_000, &sample(0));
    let decisions = host.tick(60_000);
    let gone = evicted(&decisions);
    assert_eq!(gone.len(), 1, "{decisions:?}");
    assert!(decisions.iter().all(|d| matches!(
        d,
        Decision::Evict {
            reason: EvictReason::Pressure,
            ..
        }
    )));
    assert!(gone == [a] || gone == [b]);
}

#[test]
fn a_measured_process_corrects_the_predicted_size() {
    let mut host = Host::new(policy(), &[10_000]);
    let request = host.use_model(0, "m", 2_000, Priority::Interactive);
    host.tick(0);
    let model = host.sut.model("m", 2_000);
    host.sut.loaded(500, model, Some(4242));
    host.tick(500);
    host.sut.release(600, request);
    host.sut.sample(
        700,
        &GpuSample {
            gpu: GpuIndex(0),
            total_mib: 10_000,
            used_mib: 3_000,
            free_mib: 7_000,
            util_pct: None,
            temp_c: None,
            power_mw: None,
            processes: Some(vec![ProcessUse {
                pid: 4242,
                used_mib: Some(3_000),
            }]),
        },
    );
    assert_eq!(host.sut.used_mib(GpuIndex(0)), 3_000);
    // A request's estimate no longer overrides the measurement.
    host.sut.model("m", 2_000);
    assert_eq!(host.sut.used_mib(GpuIndex(0)), 3_000);
}

#[test]
fn a_model_no_gpu_can_hold_is_denied_with_the_most_any_could_give() {
    let mut host = Host::new(policy(), &[8_000, 6_000]);
    let request = host.use_model(0, "huge", 9_000, Priority::Interactive);
    let model = host.sut.model("huge", 9_000);
    assert_eq!(
        host.tick(0),
        [Decision::Deny {
            request: Some(request),
            model,
            reason: DenyReason::TooLarge {
                vram_mib: 9_000,
                largest_mib: 8_000
            }
        }]
    );
}

#[test]
fn a_full_queue_denies_the_next_use() {
    let mut host = Host::new(
        VramPolicy {
            queue_len: 1,
            ..policy()
        },
        &[1_000],
    );
    host.use_model(0, "a", 500, Priority::Batch);
    let second = host.use_model(0, "b", 500, Priority::Batch);
    let decisions = host.tick(0);
    assert!(decisions.contains(&Decision::Deny {
        request: Some(second),
        model: host.sut.model("b", 500),
        reason: DenyReason::QueueFull { queue_len: 1 }
    }));
}

#[test]
fn pins_load_at_start_and_a_runtime_pin_that_over_commits_is_denied() {
    let pins = vec![VramPin {
        model: "stt".to_owned(),
        vram_mib: 6_000,
        gpu: 0,
    }];
    let mut host = Host::new(VramPolicy { pins, ..policy() }, &[10_000]);
    let stt = host.sut.model("stt", 6_000);
    assert_eq!(
        host.tick(0),
        [Decision::Load {
            model: stt,
            gpu: GpuIndex(0),
            vram_mib: 6_000
        }]
    );
    let tts = host.sut.model("tts", 5_000);
    host.sut.pin(1, tts);
    assert_eq!(
        host.tick(1),
        [Decision::Deny {
            request: None,
            model: tts,
            reason: DenyReason::PinOverCommit {
                pinned_mib: 6_000,
                vram_mib: 5_000
            }
        }]
    );
}

#[test]
fn pins_that_over_commit_the_real_gpu_are_rejected_at_start() {
    let pins = vec![
        VramPin {
            model: "a".to_owned(),
            vram_mib: 6_000,
            gpu: 0,
        },
        VramPin {
            model: "b".to_owned(),
            vram_mib: 5_000,
            gpu: 0,
        },
    ];
    let err = VramOptimizer::new(VramPolicy { pins, ..policy() }, &gpus(&[10_000])).unwrap_err();
    assert!(
        err.to_string()
            .contains("pins on GPU 0 add up to 11000 MiB"),
        "{err}"
    );
}

#[test]
fn keep_alive_unloads_an_idle_model_nobody_is_expected_to_use() {
    let mut host = Host::new(
        VramPolicy {
            keep_alive_ms: Some(60_000),
            ..policy()
        },
        &[10_000],
    );
    let model = host.warm(0, "m", 1_000, Priority::Batch);
    assert_eq!(evicted(&host.tick(59_000)), []);
    let decisions = host.tick(60_000);
    assert_eq!(
        decisions,
        [Decision::Evict {
            model,
            gpu: GpuIndex(0),
            reason: EvictReason::KeepAlive
        }]
    );
}

#[test]
fn a_learned_chain_preloads_the_next_model_into_idle_vram() {
    let policy = VramPolicy {
        preload: true,
        keep_alive_ms: Some(60_000),
        ..policy()
    };
    let mut host = Host::new(policy, &[10_000]);
    // stt is followed by llm at irregular times (so nothing is periodic);
    // keep-alive drops both between turns.
    for t in [0, 420_000, 1_200_000, 1_560_000, 2_700_000] {
        host.warm(t, "stt", 2_000, Priority::Realtime);
        host.warm(t + 1_000, "llm", 2_500, Priority::Interactive);
        host.tick(t + 200_000);
    }
    let llm = host.sut.model("llm", 2_500);
    assert_eq!(host.sut.resident(llm), None);
    host.use_model(3_600_000, "stt", 2_000, Priority::Realtime);
    let decisions = host.tick(3_600_000);
    assert!(
        decisions.contains(&Decision::Preload {
            model: llm,
            gpu: GpuIndex(0),
            vram_mib: 2_500
        }),
        "{decisions:?}"
    );
    assert!(host.sut.stats().preloads >= 1);
}

#[test]
fn a_lost_gpu_takes_its_models_and_their_uses_go_elsewhere() {
    let mut host = Host::new(policy(), &[10_000, 10_000]);
    let model = host.warm(0, "m", 6_000, Priority::Interactive);
    let gpu = host.sut.resident(model).unwrap();
    host.sut.gpu_lost(1_000, gpu);
    assert_eq!(host.sut.resident(model), None);
    host.use_model(2_000, "m", 6_000, Priority::Interactive);
    let decisions = host.tick(2_000);
    let other = GpuIndex(1 - gpu.0);
    assert!(
        matches!(decisions[0], Decision::Load { gpu: g, .. } if g == other),
        "{decisions:?}"
    );
    host.sut.gpu_lost(3_000, other);
    let request = host.use_model(4_000, "n", 100, Priority::Interactive);
    let decisions = host.tick(4_000);
    assert!(decisions.contains(&Decision::Deny {
        request: Some(request),
        model: host.sut.model("n", 100),
        reason: DenyReason::NoGpu
    }));
}

#[test]
fn a_model_that_fails_to_load_three_times_is_denied() {
    let mut host = Host::new(policy(), &[10_000]);
    let request = host.use_model(0, "m", 1_000, Priority::Interactive);
    let model = host.sut.model("m", 1_000);
    for attempt in 0..3u64 {
        let decisions = host.tick(attempt * 20_000);
        assert!(
            matches!(decisions[0], Decision::Load { .. }),
            "{decisions:?}"
        );
        host.sut.load_failed(attempt * 20_000 + 1, model);
    }
    assert_eq!(
        host.tick(60_000),
        [Decision::Deny {
            request: Some(request),
            model,
            reason: DenyReason::LoadFailed
        }]
    );
}

#[test]
fn poller_events_reach_the_optimizer_from_another_thread() {
    use std::time::Duration;

    use pinwheel::gpu::{GpuBackend, GpuEvent, GpuPoller, SimBackend};

    let mut sim = SimBackend::new(&[("a", 10_000), ("b", 10_000)]);
    sim.set_external(GpuIndex(0), 4_000).unwrap();
    sim.lose(GpuIndex(1));
    let mut host = Host::new(policy(), &[10_000, 10_000]);
    let infos = sim.gpus().to_vec();
    assert_eq!(infos.len(), 2);
    let control = pinwheel::test_support::control_runtime();
    let (poller, mut events) =
        GpuPoller::spawn(control, Box::new(sim), Duration::from_millis(1), 16);
    let (mut samples, mut lost) = (0, 0);
    while samples == 0 || lost == 0 {
        let event = events.blocking_recv().unwrap();
        match &event {
            GpuEvent::Sample(_) => samples += 1,
            GpuEvent::Lost { .. } => lost += 1,
        }
        host.sut.observe(0, &event);
    }
    control.block_on(poller.stop());
    assert_eq!(host.sut.used_mib(GpuIndex(0)), 4_000);
    // GPU 1 is lost and GPU 0 has 6000 MiB left: 8000 MiB must wait.
    let request = host.use_model(1, "m", 8_000, Priority::Interactive);
    let model = host.sut.model("m", 8_000);
    let reason = WaitReason::NoRoom;
    assert_eq!(
        host.tick(1),
        [Decision::Queue {
            request,
            model,
            reason
        }]
    );
}
