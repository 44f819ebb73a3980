//! Decision time of the VRAM optimizer: one `tick` that answers a new use
//! on a busy host, for 20 models on 4 GPUs and 100 models on 16.
//!
//! The host is kept in a steady state where decisions are not trivial:
//! the models add up to about 1.5x the VRAM, so most misses evict; every
//! iteration submits a use of a model drawn from a skewed distribution,
//! ticks, and completes the loads and uses the tick started (loaded and
//! released at once, so the state does not drift). Besides criterion's
//! statistics, the bench prints the p50/p99/max of the tick alone, the
//! figure the issue sets targets for (p99 < 1 ms at 20x4, < 10 ms at
//! 100x16).

#![allow(clippy::print_stdout)] // The bench prints its percentiles.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use pinwheel::gpu::vram::{Decision, ModelId, Priority, UseRequest};
use pinwheel::gpu::{GpuIndex, GpuInfo, VramOptimizer};
use pinwheel::topology::VramPolicy;

struct Host {
    sut: VramOptimizer,
    models: Vec<(ModelId, u64)>,
    out: Vec<Decision>,
    now: u64,
    rng: u64,
}

impl Host {
    fn new(models: usize, gpus: usize) -> Self {
        let infos: Vec<GpuInfo> = (0..gpus)
            .map(|i| GpuInfo {
                index: GpuIndex(i as u32),
                name: "sim".to_owned(),
                uuid: format!("GPU-sim-{i}"),
                total_mib: 24_576,
            })
            .collect();
        let policy = VramPolicy {
            min_residency_ms: 2_000,
            ..VramPolicy::default()
        };
        let mut sut = VramOptimizer::new(policy, &infos).expect("no pins");
        let capacity = 24_576 * gpus as u64 * 3 / 2;
        let each = capacity / models as u64;
        let models = (0..models)
            .map(|i| {
                let mib = each / 2 + (i as u64 * 7919) % each;
                (sut.model(&format!("model-{i}"), mib), mib)
            })
            .collect();
        let mut host = Self {
            sut,
            models,
            out: Vec::new(),
            now: 0,
            rng: 0x5EED,
        };
        for _ in 0..5_000 {
            host.step();
        }
        host
    }

    fn next(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// One use: submit, tick (timed), carry out. Returns the tick's time.
    fn step(&mut self) -> Duration {
        self.now += 50;
        let r = self.next();
        // Skewed: half the uses go to the first tenth of the models.
        let n = self.models.len() as u64;
        let draw = r >> 1;
        let pick = if r.is_multiple_of(2) {
            draw % (n / 10).max(1)
        } else {
            draw % n
        };
        let (model, vram_mib) = self.models[pick as usize];
        let priority =
            [Priority::Realtime, Priority::Interactive, Priority::Batch][(r % 3) as usize];
        let request = UseRequest {
            model,
            vram_mib,
            priority,
            hold_ms: 20,
        };
        self.sut.submit(self.now, request);
        self.out.clear();
        let start = Instant::now();
        self.sut.tick(black_box(self.now), &mut self.out);
        let took = start.elapsed();
        for &d in &self.out {
            match d {
                Decision::Load { model, .. } | Decision::Preload { model, .. } => {
                    self.sut.loaded(self.now, model, None);
                }
                Decision::Admit { request, .. } => self.sut.release(self.now, request),
                _ => {}
            }
        }
        took
    }
}

fn percentiles(models: usize, gpus: usize) {
    let mut host = Host::new(models, gpus);
    let mut times: Vec<Duration> = (0..20_000).map(|_| host.step()).collect();
    times.sort_unstable();
    let at = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
    let stats = host.sut.stats();
    println!(
        "vram/tick/{models}x{gpus}: p50 {:?} p99 {:?} max {:?} over {} ticks ({} hits, {} misses, {} loads, {} evictions, {} denied, {} queued in all)",
        at(0.50),
        at(0.99),
        times[times.len() - 1],
        times.len(),
        stats.hits,
        stats.misses,
        stats.loads,
        stats.evictions_make_room + stats.evictions_pressure + stats.evictions_keep_alive,
        stats.denied,
        stats.queued,
    );
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("vram");
    for (models, gpus) in [(20usize, 4usize), (100, 16)] {
        percentiles(models, gpus);
        let mut host = Host::new(models, gpus);
        group.bench_with_input(
            BenchmarkId::new("tick", format!("{models}x{gpus}")),
            &(),
            |b, _| b.iter(|| host.step()),
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
