//! GPU and VRAM metrics as prometheus-client metrics, for the admin API's
//! `/metrics` to register.
//!
//! GPU readings use the names, units and labels of NVIDIA's DCGM exporter,
//! so existing Grafana dashboards work unchanged: `DCGM_FI_DEV_FB_USED`
//! and `DCGM_FI_DEV_FB_FREE` (MiB), `DCGM_FI_DEV_GPU_UTIL` (%),
//! `DCGM_FI_DEV_GPU_TEMP` (C) and `DCGM_FI_DEV_POWER_USAGE` (W), each
//! labelled `gpu`, `UUID`, `modelName` and `Hostname`. A reading a GPU
//! does not support leaves its gauge unset, as DCGM does. The optimizer's
//! decisions are `pinwheel_vram_*` counters (the text format adds
//! `_total`), fed from [`VramStats`] by difference, so calling
//! [`GpuMetrics::observe_vram`] at any rate is correct.
//!
//! Updating a metric takes no lock the core loop could wait on for long
//! (atomics inside prometheus-client; a family's read lock once the label
//! set exists), but it does allocate the first time a GPU is seen, so
//! call it from the control thread or once per tick, not per message.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::backend::{GpuInfo, GpuSample};
use super::vram::VramStats;

/// DCGM's labels for one GPU.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
#[allow(non_snake_case)] // DCGM's label names, as dashboards expect them.
pub struct DcgmLabels {
    /// The GPU's index.
    pub gpu: String,
    /// Its UUID.
    pub UUID: String,
    /// Its product name.
    pub modelName: String,
    /// This host.
    pub Hostname: String,
}

/// One label naming a reason or an outcome.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct KindLabel {
    /// The reason or outcome.
    pub kind: &'static str,
}

/// The GPU gauges and VRAM counters of one host.
#[derive(Debug)]
pub struct GpuMetrics {
    hostname: String,
    fb_used: Family<DcgmLabels, Gauge>,
    fb_free: Family<DcgmLabels, Gauge>,
    util: Family<DcgmLabels, Gauge>,
    temp: Family<DcgmLabels, Gauge>,
    power: Family<DcgmLabels, Gauge<f64, AtomicU64>>,
    loads: Counter,
    preloads: Counter,
    evictions: Family<KindLabel, Counter>,
    uses: Family<KindLabel, Counter>,
    queued: Counter,
    denied: Counter,
    seen: VramStats,
}

impl GpuMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry, hostname: &str) -> Self {
        let metrics = Self {
            hostname: hostname.to_owned(),
            fb_used: Family::default(),
            fb_free: Family::default(),
            util: Family::default(),
            temp: Family::default(),
            power: Family::default(),
            loads: Counter::default(),
            preloads: Counter::default(),
            evictions: Family::default(),
            uses: Family::default(),
            queued: Counter::default(),
            denied: Counter::default(),
            seen: VramStats::default(),
        };
        metrics.register_gpu(registry);
        metrics.register_vram(registry);
        metrics
    }

    fn register_gpu(&self, registry: &mut Registry) {
        let gauges = [
            (
                "DCGM_FI_DEV_FB_USED",
                "Framebuffer memory used (in MiB).",
                &self.fb_used,
            ),
            (
                "DCGM_FI_DEV_FB_FREE",
                "Framebuffer memory free (in MiB).",
                &self.fb_free,
            ),
            (
                "DCGM_FI_DEV_GPU_UTIL",
                "GPU utilization (in %).",
                &self.util,
            ),
            (
                "DCGM_FI_DEV_GPU_TEMP",
                "GPU temperature (in C).",
                &self.temp,
            ),
        ];
        for (name, help, family) in gauges {
            registry.register(name, help, family.clone());
        }
        registry.register(
            "DCGM_FI_DEV_POWER_USAGE",
            "Power draw (in W).",
            self.power.clone(),
        );
    }

    fn register_vram(&self, registry: &mut Registry) {
        let counters = [
            (
                "pinwheel_vram_loads",
                "Model loads started, preloads included.",
                &self.loads,
            ),
            (
                "pinwheel_vram_preloads",
                "Model loads started on a prediction.",
                &self.preloads,
            ),
            ("pinwheel_vram_queued", "Uses that waited.", &self.queued),
            (
                "pinwheel_vram_denied",
                "Uses and pins refused.",
                &self.denied,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        let kinds = [
            (
                "pinwheel_vram_evictions",
                "Models evicted, by reason.",
                &self.evictions,
            ),
            (
                "pinwheel_vram_uses",
                "Uses admitted: hit (resident) or miss (waited for a load).",
                &self.uses,
            ),
        ];
        for (name, help, family) in kinds {
            registry.register(name, help, family.clone());
        }
    }

    /// Records a reading of `gpu`.
    pub fn observe(&self, gpu: &GpuInfo, sample: &GpuSample) {
        let labels = DcgmLabels {
            gpu: gpu.index.to_string(),
            UUID: gpu.uuid.clone(),
            modelName: gpu.name.clone(),
            Hostname: self.hostname.clone(),
        };
        self.fb_used
            .get_or_create(&labels)
            .set(sample.used_mib as i64);
        self.fb_free
            .get_or_create(&labels)
            .set(sample.free_mib as i64);
        if let Some(util) = sample.util_pct {
            self.util.get_or_create(&labels).set(i64::from(util));
        }
        if let Some(temp) = sample.temp_c {
            self.temp.get_or_create(&labels).set(i64::from(temp));
        }
        if let Some(mw) = sample.power_mw {
            self.power
                .get_or_create(&labels)
                .set(f64::from(mw) / 1000.0);
        }
    }

    /// Brings the decision counters up to `stats` (the optimizer's totals).
    pub fn observe_vram(&mut self, stats: VramStats) {
        let seen = self.seen;
        let grow = |counter: &Counter, now: u64, before: u64| {
            counter.inc_by(now.saturating_sub(before));
        };
        grow(&self.loads, stats.loads, seen.loads);
        grow(&self.preloads, stats.preloads, seen.preloads);
        grow(&self.queued, stats.queued, seen.queued);
        grow(&self.denied, stats.denied, seen.denied);
        for (kind, now, before) in [
            (
                "make_room",
                stats.evictions_make_room,
                seen.evictions_make_room,
            ),
            (
                "pressure",
                stats.evictions_pressure,
                seen.evictions_pressure,
            ),
            (
                "keep_alive",
                stats.evictions_keep_alive,
                seen.evictions_keep_alive,
            ),
        ] {
            grow(
                &self.evictions.get_or_create(&KindLabel { kind }),
                now,
                before,
            );
        }
        for (kind, now, before) in [
            ("hit", stats.hits, seen.hits),
            ("miss", stats.misses, seen.misses),
        ] {
            grow(&self.uses.get_or_create(&KindLabel { kind }), now, before);
        }
        self.seen = stats;
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::text::encode;

    use super::*;
    use crate::gpu::backend::GpuBackend;
    use crate::gpu::{GpuIndex, SimBackend};

    fn render(registry: &Registry) -> String {
        let mut text = String::new();
        encode(&mut text, registry).unwrap();
        text
    }

    #[test]
    fn readings_come_out_with_dcgm_names_units_and_labels() {
        let mut registry = Registry::default();
        let sut = GpuMetrics::register(&mut registry, "mainpc");
        let mut sim = SimBackend::new(&[("NVIDIA GeForce RTX 4090", 24564)]);
        sim.load(GpuIndex(0), 3100).unwrap();
        sim.set_telemetry(GpuIndex(0), Some(37), Some(55), Some(123_500))
            .unwrap();
        let sample = sim.sample(GpuIndex(0)).unwrap();
        sut.observe(&sim.gpus()[0], &sample);
        let text = render(&registry);
        let labels =
            r#"{gpu="0",UUID="GPU-sim-0",modelName="NVIDIA GeForce RTX 4090",Hostname="mainpc"}"#;
        for line in [
            format!("DCGM_FI_DEV_FB_USED{labels} 3100"),
            format!("DCGM_FI_DEV_FB_FREE{labels} 21464"),
            format!("DCGM_FI_DEV_GPU_UTIL{labels} 37"),
            format!("DCGM_FI_DEV_GPU_TEMP{labels} 55"),
            format!("DCGM_FI_DEV_POWER_USAGE{labels} 123.5"),
        ] {
            assert!(text.contains(&line), "{line} missing from\n{text}");
        }
    }

    #[test]
    fn unsupported_readings_leave_their_gauge_out() {
        let mut registry = Registry::default();
        let sut = GpuMetrics::register(&mut registry, "h");
        let mut sim = SimBackend::new(&[("g", 1000)]);
        sim.set_telemetry(GpuIndex(0), None, None, None).unwrap();
        let sample = sim.sample(GpuIndex(0)).unwrap();
        sut.observe(&sim.gpus()[0], &sample);
        let text = render(&registry);
        assert!(text.contains("DCGM_FI_DEV_FB_USED{"), "{text}");
        assert!(!text.contains("DCGM_FI_DEV_GPU_UTIL{"), "{text}");
    }

    #[test]
    fn decision_counters_follow_the_optimizer_totals() {
        let mut registry = Registry::default();
        let mut sut = GpuMetrics::register(&mut registry, "h");
        let mut stats = VramStats {
            loads: 3,
            hits: 5,
            misses: 2,
            evictions_pressure: 1,
            ..VramStats::default()
        };
        sut.observe_vram(stats);
        stats.loads = 4;
        sut.observe_vram(stats);
        let text = render(&registry);
        assert!(text.contains("pinwheel_vram_loads_total 4"), "{text}");
        assert!(
            text.contains("pinwheel_vram_uses_total{kind=\"hit\"} 5"),
            "{text}"
        );
        assert!(
            text.contains("pinwheel_vram_evictions_total{kind=\"pressure\"} 1"),
            "{text}"
        );
    }
}
