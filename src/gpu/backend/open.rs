//! Choosing the backend at boot: NVML when the topology names NVML GPUs
//! and a driver answers, simulated GPUs otherwise.
//!
//! A host without the NVIDIA driver still runs: when NVML cannot be loaded
//! (`LibloadingError`), the driver is not loaded (`DriverNotLoaded`) or
//! NVML may not talk to it (`NoPermission`), the topology's GPUs are
//! simulated from their `vram_mib`, one warning is logged, and the
//! backend's [`GpuBackend::degraded`] says why for `/health`. Any other
//! NVML failure is an error: the driver is there but broken, and guessing
//! would hide it.

use std::ffi::OsStr;

use nvml_wrapper::error::NvmlError;
use tracing::warn;

use super::{GpuBackend, GpuError};
use crate::gpu::nvml::NvmlBackend;
use crate::gpu::sim::SimBackend;
use crate::topology::{GpuPlan, GpuSource};

/// Opens the backend for `plan`. A plan of only simulated GPUs never
/// touches NVML. `lib_path` overrides where `libnvidia-ml.so` is loaded
/// from (tests load a fake one).
pub fn open_backend(
    plan: &GpuPlan,
    lib_path: Option<&OsStr>,
) -> Result<Box<dyn GpuBackend>, GpuError> {
    let simulated_only = match plan {
        GpuPlan::Declared(specs) => specs.iter().all(|s| s.source == GpuSource::Simulated),
        GpuPlan::Nvml => false,
    };
    if simulated_only {
        return Ok(Box::new(SimBackend::from_plan(plan)?));
    }
    match NvmlBackend::open(plan, lib_path) {
        Ok(backend) => Ok(Box::new(backend)),
        Err(GpuError::Nvml { source, .. }) if no_driver(&source) => {
            let sim = SimBackend::from_plan(plan)?;
            let reason = format!(
                "no usable NVIDIA driver ({source}); simulating {} GPU(s) from the topology",
                sim.gpus().len()
            );
            warn!(reason = %reason, "gpus simulated");
            Ok(Box::new(sim.degrade(reason)))
        }
        Err(err) => Err(err),
    }
}

fn no_driver(err: &NvmlError) -> bool {
    matches!(
        err,
        NvmlError::LibloadingError(_) | NvmlError::DriverNotLoaded | NvmlError::NoPermission
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::GpuSpec;

    fn plan(source: GpuSource) -> GpuPlan {
        GpuPlan::Declared(vec![GpuSpec {
            source,
            name: "NVIDIA GeForce RTX 4090".to_owned(),
            vram_mib: Some(24564),
        }])
    }

    #[test]
    fn a_missing_library_falls_back_to_simulated_gpus_and_says_why() {
        let sut = open_backend(
            &plan(GpuSource::NvmlIndex(0)),
            Some(OsStr::new("/nonexistent/libnvidia-ml.so.1")),
        )
        .unwrap();
        assert_eq!(sut.gpus().len(), 1);
        assert_eq!(sut.gpus()[0].total_mib, 24564);
        let reason = sut.degraded().unwrap();
        assert!(reason.contains("simulating 1 GPU(s)"), "{reason}");
    }

    #[test]
    fn simulated_gpus_are_not_degraded() {
        let sut = open_backend(&plan(GpuSource::Simulated), None).unwrap();
        assert_eq!(sut.degraded(), None);
    }
}
