//! The `[vram]` section: the VRAM optimizer's policy, validated.
//!
//! The policy is plain data; `gpu::vram` reads it. Validation checks each
//! value's range and that the pinned models fit: pins on one GPU may not
//! add up to more than its budget, since a pin is never evicted and an
//! over-committed GPU could serve nothing else. GPUs whose size only NVML
//! knows (`gpus = "nvml"`) are checked when the optimizer starts.
//!
//! [`load_gpu_sections`] reads only the GPU and policy sections of a file,
//! so `pinwheel vram replay` works on any host, whatever CPUs the file
//! describes.

use std::ops::Range;
use std::path::Path;

use serde::Serialize;
use toml::Spanned;

use super::validate::{gpus, invalid};
use super::{GpuPlan, GpuSpec, TopologyError};
use crate::config::SourceFile;
use crate::config::topology_file::{PinEntry, TopologyFile, VramSection};

/// How the VRAM optimizer spends each GPU's memory.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VramPolicy {
    /// Share of a GPU's total VRAM the optimizer may fill.
    pub budget_fraction: f64,
    /// MiB of each GPU always left free (CUDA contexts, other programs).
    pub reserve_mib: u64,
    /// Share of the budget above which idle models are evicted.
    pub high_water: f64,
    /// Share of the budget that eviction returns to; loads after pressure,
    /// and preloads, must stay under it.
    pub low_water: f64,
    /// A loaded model is not evicted before this, so nothing thrashes.
    pub min_residency_ms: u64,
    /// An idle model no use is expected for is unloaded after this; `None`
    /// keeps idle models until their VRAM is needed.
    pub keep_alive_ms: Option<u64>,
    /// Load predicted models into idle VRAM.
    pub preload: bool,
    /// Expected load speed, MiB/s: the reload cost of a model until its
    /// loads are measured, and the speed of loads in replay.
    pub load_mib_per_s: u64,
    /// Fixed cost of each load, milliseconds.
    pub load_overhead_ms: u64,
    /// Most `use` requests waiting at once; more are denied.
    pub queue_len: usize,
    /// Core-loop tick period, milliseconds.
    pub tick_ms: u64,
    /// Models loaded at start and never evicted.
    pub pins: Vec<VramPin>,
}

/// A model that stays resident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VramPin {
    /// Model name.
    pub model: String,
    /// Its VRAM, MiB.
    pub vram_mib: u64,
    /// The GPU (index in the topology's GPU list).
    pub gpu: u32,
}

impl Default for VramPolicy {
    /// 95% of VRAM less a 512 MiB reserve; loads fill up to all of it and
    /// other programs taking more trigger eviction (high water 1.0); cold
    /// models are shed, and preloads fill, down to / up to 90% of it (low
    /// water); 30 s minimum residency;
    /// no keep-alive (idle models stay until their VRAM is needed: pressure
    /// relief hands VRAM back to other programs when they take it);
    /// preloading on; loads at 2000 MiB/s plus 500 ms; 1024 waiting uses;
    /// a 100 ms tick; no pins.
    fn default() -> Self {
        Self {
            budget_fraction: 0.95,
            reserve_mib: 512,
            high_water: 1.0,
            low_water: 0.9,
            min_residency_ms: 30_000,
            keep_alive_ms: None,
            preload: true,
            load_mib_per_s: 2000,
            load_overhead_ms: 500,
            queue_len: 1024,
            tick_ms: 100,
            pins: Vec::new(),
        }
    }
}

impl VramPolicy {
    /// The MiB the optimizer may fill on a GPU of `total_mib`:
    /// `min(total x budget_fraction, total - reserve_mib)`.
    pub fn budget_mib(&self, total_mib: u64) -> u64 {
        let by_fraction = (total_mib as f64 * self.budget_fraction).floor() as u64;
        by_fraction.min(total_mib.saturating_sub(self.reserve_mib))
    }

    /// The expected time to load `vram_mib`, milliseconds.
    pub fn load_ms(&self, vram_mib: u64) -> u64 {
        self.load_overhead_ms + vram_mib.saturating_mul(1000) / self.load_mib_per_s.max(1)
    }
}

/// The GPU and policy sections of a topology file.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuSections {
    /// The GPUs.
    pub gpus: GpuPlan,
    /// The VRAM policy.
    pub vram: VramPolicy,
}

/// Reads a topology file and validates only its schema, `[[gpu]]` and
/// `[vram]` sections (the whole file must still parse).
pub fn load_gpu_sections(path: &Path) -> Result<GpuSections, TopologyError> {
    let file = SourceFile::read(path).map_err(TopologyError::File)?;
    let raw: TopologyFile = file.parse().map_err(TopologyError::File)?;
    let schema = *raw.schema.get_ref();
    if schema != 1 {
        return Err(TopologyError::Schema {
            at: file.locate(raw.schema.span()),
            found: schema,
        });
    }
    let gpus = gpus(raw.host.gpus.as_ref(), &raw.gpu, &file)?;
    let vram = vram_policy(raw.vram.as_ref(), &gpus, &file)?;
    Ok(GpuSections { gpus, vram })
}

/// Validates `[vram]` against the GPUs the file declares.
pub(super) fn vram_policy(
    raw: Option<&VramSection>,
    gpus: &GpuPlan,
    file: &SourceFile,
) -> Result<VramPolicy, TopologyError> {
    let Some(raw) = raw else {
        return Ok(VramPolicy::default());
    };
    let d = VramPolicy::default();
    let budget_fraction = fraction(raw.budget_fraction.as_ref(), d.budget_fraction, file)?;
    let high_water = fraction(raw.high_water.as_ref(), d.high_water, file)?;
    let low_water = fraction(raw.low_water.as_ref(), d.low_water, file)?;
    if low_water >= high_water {
        let span = raw
            .low_water
            .as_ref()
            .or(raw.high_water.as_ref())
            .map_or(0..0, Spanned::span);
        return Err(invalid(
            file,
            span,
            format!(
                "low_water ({low_water}) must be below high_water ({high_water}), or eviction would stop where it starts"
            ),
        ));
    }
    let policy = VramPolicy {
        budget_fraction,
        reserve_mib: raw
            .reserve_mib
            .as_ref()
            .map_or(d.reserve_mib, |v| *v.get_ref()),
        high_water,
        low_water,
        min_residency_ms: seconds(raw.min_residency_s.as_ref(), d.min_residency_ms),
        keep_alive_ms: match raw.keep_alive_s.as_ref().map(|v| *v.get_ref()) {
            None => d.keep_alive_ms,
            Some(0) => None,
            Some(s) => Some(s.saturating_mul(1000)),
        },
        preload: raw.preload.unwrap_or(d.preload),
        load_mib_per_s: positive(raw.load_mib_per_s.as_ref(), d.load_mib_per_s, file)?,
        load_overhead_ms: raw
            .load_overhead_ms
            .as_ref()
            .map_or(d.load_overhead_ms, |v| *v.get_ref()),
        queue_len: match raw.queue_len.as_ref() {
            None => d.queue_len,
            Some(v) if *v.get_ref() > 0 => *v.get_ref() as usize,
            Some(v) => return Err(invalid(file, v.span(), "must be greater than 0")),
        },
        tick_ms: positive(raw.tick_ms.as_ref(), d.tick_ms, file)?,
        pins: Vec::new(),
    };
    let pins = pins(&raw.pin, gpus, &policy, file)?;
    Ok(VramPolicy { pins, ..policy })
}

fn fraction(
    value: Option<&Spanned<f64>>,
    default: f64,
    file: &SourceFile,
) -> Result<f64, TopologyError> {
    let Some(value) = value else {
        return Ok(default);
    };
    let v = *value.get_ref();
    if v > 0.0 && v <= 1.0 {
        Ok(v)
    } else {
        Err(invalid(
            file,
            value.span(),
            format!("{v} is not a fraction in (0, 1]; write e.g. 0.9 for 90%"),
        ))
    }
}

fn seconds(value: Option<&Spanned<u64>>, default_ms: u64) -> u64 {
    value.map_or(default_ms, |v| v.get_ref().saturating_mul(1000))
}

fn positive(
    value: Option<&Spanned<u64>>,
    default: u64,
    file: &SourceFile,
) -> Result<u64, TopologyError> {
    match value {
        None => Ok(default),
        Some(v) if *v.get_ref() > 0 => Ok(*v.get_ref()),
        Some(v) => Err(invalid(file, v.span(), "must be greater than 0")),
    }
}

fn pins(
    entries: &[Spanned<PinEntry>],
    gpus: &GpuPlan,
    policy: &VramPolicy,
    file: &SourceFile,
) -> Result<Vec<VramPin>, TopologyError> {
    let declared: &[GpuSpec] = match gpus {
        GpuPlan::Declared(specs) => specs,
        GpuPlan::Nvml => &[],
    };
    let mut out: Vec<VramPin> = Vec::new();
    for entry in entries {
        let raw = entry.get_ref();
        let pin = pin(raw, declared, gpus, file)?;
        if out.iter().any(|p| p.model == pin.model) {
            return Err(invalid(
                file,
                raw.model.span(),
                format!("model {} is pinned twice; remove one entry", pin.model),
            ));
        }
        if let Some(total) = declared
            .get(pin.gpu as usize)
            .and_then(|spec| spec.vram_mib)
        {
            over_commit(&out, &pin, total, policy, file, entry.span())?;
        }
        out.push(pin);
    }
    Ok(out)
}

fn pin(
    raw: &PinEntry,
    declared: &[GpuSpec],
    gpus: &GpuPlan,
    file: &SourceFile,
) -> Result<VramPin, TopologyError> {
    let model = raw.model.get_ref().trim().to_owned();
    if model.is_empty() {
        return Err(invalid(file, raw.model.span(), "a pin needs a model name"));
    }
    if *raw.vram_mib.get_ref() == 0 {
        return Err(invalid(
            file,
            raw.vram_mib.span(),
            "a pinned model needs its VRAM in MiB (greater than 0)",
        ));
    }
    let gpu = raw.gpu.as_ref().map_or(0, |g| *g.get_ref());
    if matches!(gpus, GpuPlan::Declared(_)) && gpu as usize >= declared.len() {
        let span = raw.gpu.as_ref().map_or(raw.model.span(), Spanned::span);
        return Err(invalid(
            file,
            span,
            format!(
                "pin of {model} names GPU {gpu}, but the file declares {} GPU(s); use an index below {}",
                declared.len(),
                declared.len()
            ),
        ));
    }
    Ok(VramPin {
        model,
        vram_mib: *raw.vram_mib.get_ref(),
        gpu,
    })
}

fn over_commit(
    earlier: &[VramPin],
    pin: &VramPin,
    total_mib: u64,
    policy: &VramPolicy,
    file: &SourceFile,
    span: Range<usize>,
) -> Result<(), TopologyError> {
    let budget = policy.budget_mib(total_mib);
    let pinned: u64 = earlier
        .iter()
        .filter(|p| p.gpu == pin.gpu)
        .map(|p| p.vram_mib)
        .sum::<u64>()
        + pin.vram_mib;
    if pinned <= budget {
        return Ok(());
    }
    Err(TopologyError::PinOverCommit {
        at: file.locate(span),
        gpu: pin.gpu,
        pinned_mib: pinned,
        budget_mib: budget,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sut(vram: &str) -> Result<GpuSections, TopologyError> {
        let text = format!(
            "schema = 1\n[host]\nname = \"h\"\ncpus = \"auto\"\n[[gpu]]\nsimulated = true\nvram_mib = 12288\n[vram]\n{vram}"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(&path, text).unwrap();
        load_gpu_sections(&path)
    }

    #[test]
    fn an_absent_section_gives_the_defaults_and_auto_cpus_need_no_host() {
        let sections = sut("").unwrap();
        assert_eq!(sections.vram, VramPolicy::default());
        assert_eq!(sections.vram.budget_mib(24564), 23335);
        assert_eq!(sections.vram.budget_mib(12288), 11673);
    }

    #[test]
    fn keep_alive_zero_keeps_idle_models() {
        let sections = sut("keep_alive_s = 0\nmin_residency_s = 5\n").unwrap();
        assert_eq!(sections.vram.keep_alive_ms, None);
        assert_eq!(sections.vram.min_residency_ms, 5000);
        let sections = sut("keep_alive_s = 600\n").unwrap();
        assert_eq!(sections.vram.keep_alive_ms, Some(600_000));
    }

    #[test]
    fn a_fraction_out_of_range_names_its_line() {
        let err = sut("budget_fraction = 1.5\n").unwrap_err();
        assert_eq!(err.location().unwrap().line(), 9);
        assert!(err.to_string().contains("not a fraction"), "{err}");
    }

    #[test]
    fn low_water_above_high_water_is_rejected() {
        let err = sut("high_water = 0.8\nlow_water = 0.9\n").unwrap_err();
        assert!(
            err.to_string().contains("must be below high_water"),
            "{err}"
        );
    }

    #[test]
    fn pins_that_over_commit_a_gpu_are_rejected_at_the_pin_that_overflows() {
        let err = sut(
            "pin = [\n  { model = \"a\", vram_mib = 8000 },\n  { model = \"b\", vram_mib = 4000 },\n]\n",
        )
        .unwrap_err();
        let TopologyError::PinOverCommit {
            at,
            gpu: 0,
            pinned_mib: 12000,
            budget_mib: 11673,
        } = &err
        else {
            panic!("expected an over-commit, got {err}");
        };
        assert_eq!(at.line(), 11);
        assert!(err.to_string().contains("unpin a model"), "{err}");
    }

    #[test]
    fn a_pin_on_a_gpu_the_file_lacks_is_rejected() {
        let err = sut("pin = [{ model = \"a\", vram_mib = 100, gpu = 3 }]\n").unwrap_err();
        assert!(err.to_string().contains("declares 1 GPU(s)"), "{err}");
    }

    #[test]
    fn pins_that_fit_are_kept_in_order() {
        let sections =
            sut("pin = [{ model = \"a\", vram_mib = 3000 }, { model = \"b\", vram_mib = 2000 }]\n")
                .unwrap();
        let names: Vec<&str> = sections
            .vram
            .pins
            .iter()
            .map(|p| p.model.as_str())
            .collect();
        assert_eq!(names, ["a", "b"]);
    }
}
