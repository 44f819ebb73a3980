//! What the daemon asks of the optimizer besides decisions: lookups for
//! the admin API, and unpinning.

use super::model::Residency;
use super::optimizer::VramOptimizer;
use super::{GpuIndex, ModelId};

impl VramOptimizer {
    /// The id of a model by name, if it is known.
    pub fn id_of(&self, name: &str) -> Option<ModelId> {
        self.models
            .iter()
            .position(|m| &*m.name == name)
            .map(|i| ModelId(i as u32))
    }

    /// Whether a model is pinned.
    pub fn is_pinned(&self, model: ModelId) -> bool {
        self.models[model.0 as usize].pinned
    }

    /// The models resident on `gpu`, with their predicted VRAM, MiB.
    pub fn residents(&self, gpu: GpuIndex) -> Vec<(ModelId, u64)> {
        self.models
            .iter()
            .enumerate()
            .filter(|(_, m)| matches!(m.residency, Residency::Resident { gpu: g, .. } if g == gpu))
            .map(|(i, m)| (ModelId(i as u32), m.size_mib))
            .collect()
    }

    /// Unpins a model: it stays resident, and may be evicted like any
    /// other from now on.
    pub fn unpin(&mut self, _now_ms: u64, model: ModelId) {
        let m = &mut self.models[model.0 as usize];
        if !m.pinned {
            return;
        }
        m.pinned = false;
        let size = m.size_mib;
        if let Some(gpu) = m.pin_gpu.take() {
            let g = &mut self.gpus[gpu.0 as usize];
            g.pinned_mib = g.pinned_mib.saturating_sub(size);
        }
        self.pins.retain(|&p| p != model);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::backend::GpuInfo;
    use crate::gpu::vram::Decision;

    #[test]
    fn a_pinned_model_is_found_resident_and_unpinning_frees_its_pin_budget() {
        let gpus = [GpuInfo {
            index: GpuIndex(0),
            name: "sim".into(),
            uuid: "GPU-sim-0".into(),
            total_mib: 10_000,
        }];
        let mut sut = VramOptimizer::new(Default::default(), &gpus).unwrap();
        let whisper = sut.model("whisper", 3_000);
        assert_eq!(sut.id_of("whisper"), Some(whisper));
        assert_eq!(sut.id_of("nope"), None);
        sut.pin(0, whisper);
        let mut out = Vec::new();
        sut.tick(0, &mut out);
        assert!(
            out.iter()
                .any(|d| matches!(d, Decision::Load { model, .. } if *model == whisper))
        );
        sut.loaded(1, whisper, None);
        assert!(sut.is_pinned(whisper));
        assert_eq!(sut.residents(GpuIndex(0)), vec![(whisper, 3_000)]);
        sut.unpin(2, whisper);
        assert!(!sut.is_pinned(whisper));
        assert_eq!(sut.gpus[0].pinned_mib, 0);
        assert_eq!(sut.residents(GpuIndex(0)), vec![(whisper, 3_000)]);
    }
}
