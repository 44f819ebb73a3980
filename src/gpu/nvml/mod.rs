//! [`NvmlBackend`]: real GPUs through the NVIDIA driver (nvml-wrapper).
//!
//! Opening resolves the topology's GPUs to NVML devices once (by index or
//! UUID, or every device for `gpus = "nvml"`) and reads what does not
//! change: name, UUID, total VRAM. A sample then reads memory, utilization,
//! temperature, power and the compute processes of one device.
//!
//! Errors are sorted per call. `NotSupported` (GeForce boards often lack
//! process accounting, some lack power readings) and any other failure of
//! a telemetry query make that field `None`; the memory figures the VRAM
//! optimizer needs must succeed or the sample fails. `GpuLost` marks the
//! GPU lost for good: later samples answer [`GpuError::Lost`] without
//! calling the driver. No unsafe code here: nvml-wrapper owns the FFI.
//!
//! Tests run this code against a fake `libnvidia-ml.so` (the `fake-nvml`
//! crate under `tests/`) loaded through `lib_path`, so the path is covered
//! on machines without a GPU.

use std::ffi::OsStr;

use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::error::NvmlError;
use tracing::debug;

use super::backend::{
    GpuBackend, GpuError, GpuIndex, GpuInfo, GpuSample, ProcessUse, bytes_to_mib,
};
use crate::topology::{GpuPlan, GpuSource};

/// GPUs read through NVML.
pub struct NvmlBackend {
    nvml: Nvml,
    gpus: Vec<GpuInfo>,
    devices: Vec<u32>,
    lost: Vec<bool>,
}

impl std::fmt::Debug for NvmlBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvmlBackend")
            .field("gpus", &self.gpus)
            .field("devices", &self.devices)
            .field("lost", &self.lost)
            .finish_non_exhaustive()
    }
}

impl NvmlBackend {
    /// Loads NVML (from `lib_path`, else the system's
    /// `libnvidia-ml.so.1`), initializes it and finds the GPUs `plan`
    /// names. A plan with simulated GPUs is refused ([`GpuError::MixedPlan`]).
    pub fn open(plan: &GpuPlan, lib_path: Option<&OsStr>) -> Result<Self, GpuError> {
        let mut builder = Nvml::builder();
        if let Some(path) = lib_path {
            builder.lib_path(path);
        }
        let nvml = builder.init().map_err(|source| GpuError::Nvml {
            gpu: "-".to_owned(),
            call: "nvmlInit_v2",
            source,
        })?;
        let count = nvml.device_count().map_err(|source| GpuError::Nvml {
            gpu: "-".to_owned(),
            call: "nvmlDeviceGetCount_v2",
            source,
        })?;
        let devices = match plan {
            GpuPlan::Nvml => (0..count).collect(),
            GpuPlan::Declared(specs) => specs
                .iter()
                .map(|spec| resolve(&nvml, &spec.source, count))
                .collect::<Result<Vec<u32>, GpuError>>()?,
        };
        let gpus = devices
            .iter()
            .enumerate()
            .map(|(i, &device)| describe(&nvml, GpuIndex(i as u32), device))
            .collect::<Result<Vec<GpuInfo>, GpuError>>()?;
        let lost = vec![false; gpus.len()];
        Ok(Self {
            nvml,
            gpus,
            devices,
            lost,
        })
    }

    /// Handles a failed query of `gpu`: a lost GPU stays lost.
    fn fail(&mut self, gpu: GpuIndex, call: &'static str, source: NvmlError) -> GpuError {
        if matches!(source, NvmlError::GpuLost) {
            self.lost[gpu.0 as usize] = true;
            GpuError::Lost { gpu }
        } else {
            GpuError::Nvml {
                gpu: gpu.to_string(),
                call,
                source,
            }
        }
    }
}

/// The NVML index of a declared GPU.
fn resolve(nvml: &Nvml, source: &GpuSource, count: u32) -> Result<u32, GpuError> {
    let not_found = |wanted: String| {
        let listed: Vec<String> = (0..count)
            .filter_map(|i| nvml.device_by_index(i).and_then(|d| d.uuid()).ok())
            .collect();
        GpuError::NotFound {
            wanted,
            count,
            listed: listed.join(", "),
        }
    };
    match source {
        GpuSource::NvmlIndex(i) if *i < count => Ok(*i),
        GpuSource::NvmlIndex(i) => Err(not_found(format!("nvml_index {i}"))),
        GpuSource::NvmlUuid(uuid) => nvml
            .device_by_uuid(uuid.as_str())
            .and_then(|d| d.index())
            .map_err(|_| not_found(format!("uuid {uuid}"))),
        GpuSource::Simulated => Err(GpuError::MixedPlan),
    }
}

fn describe(nvml: &Nvml, index: GpuIndex, device: u32) -> Result<GpuInfo, GpuError> {
    let fail = |call: &'static str| {
        move |source| GpuError::Nvml {
            gpu: index.to_string(),
            call,
            source,
        }
    };
    let handle = nvml
        .device_by_index(device)
        .map_err(fail("nvmlDeviceGetHandleByIndex_v2"))?;
    Ok(GpuInfo {
        index,
        name: handle.name().map_err(fail("nvmlDeviceGetName"))?,
        uuid: handle.uuid().map_err(fail("nvmlDeviceGetUUID"))?,
        total_mib: bytes_to_mib(
            handle
                .memory_info()
                .map_err(fail("nvmlDeviceGetMemoryInfo_v2"))?
                .total,
        ),
    })
}

/// A telemetry reading: `None` when the GPU does not support it or it
/// failed for another reason than a lost GPU.
fn telemetry<T>(
    gpu: GpuIndex,
    call: &'static str,
    result: Result<T, NvmlError>,
) -> Result<Option<T>, NvmlError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(NvmlError::GpuLost) => Err(NvmlError::GpuLost),
        Err(NvmlError::NotSupported) => Ok(None),
        Err(err) => {
            debug!(gpu = %gpu, call, error = %err, "gpu query failed; field left out");
            Ok(None)
        }
    }
}

impl GpuBackend for NvmlBackend {
    fn gpus(&self) -> &[GpuInfo] {
        &self.gpus
    }

    fn sample(&mut self, gpu: GpuIndex) -> Result<GpuSample, GpuError> {
        let slot = gpu.0 as usize;
        if slot >= self.gpus.len() {
            return Err(GpuError::NoSuchGpu {
                gpu,
                count: self.gpus.len(),
            });
        }
        if self.lost[slot] {
            return Err(GpuError::Lost { gpu });
        }
        match read(&self.nvml, gpu, self.devices[slot]) {
            Ok(sample) => Ok(sample),
            Err((call, source)) => Err(self.fail(gpu, call, source)),
        }
    }

    fn degraded(&self) -> Option<&str> {
        None
    }
}

/// One sample of one device; on failure, the call that failed.
fn read(nvml: &Nvml, gpu: GpuIndex, device: u32) -> Result<GpuSample, (&'static str, NvmlError)> {
    let at = |call: &'static str| move |err| (call, err);
    let handle = nvml
        .device_by_index(device)
        .map_err(at("nvmlDeviceGetHandleByIndex_v2"))?;
    let memory = handle
        .memory_info()
        .map_err(at("nvmlDeviceGetMemoryInfo_v2"))?;
    let util = telemetry(gpu, "utilization", handle.utilization_rates())
        .map_err(at("nvmlDeviceGetUtilizationRates"))?;
    let temp = telemetry(
        gpu,
        "temperature",
        handle.temperature(TemperatureSensor::Gpu),
    )
    .map_err(at("nvmlDeviceGetTemperature"))?;
    let power =
        telemetry(gpu, "power", handle.power_usage()).map_err(at("nvmlDeviceGetPowerUsage"))?;
    let processes = telemetry(gpu, "processes", handle.running_compute_processes())
        .map_err(at("nvmlDeviceGetComputeRunningProcesses_v3"))?;
    let total_mib = bytes_to_mib(memory.total);
    let free_mib = bytes_to_mib(memory.free).min(total_mib);
    Ok(GpuSample {
        gpu,
        total_mib,
        used_mib: total_mib - free_mib,
        free_mib,
        util_pct: util.map(|u| u.gpu),
        temp_c: temp,
        power_mw: power,
        processes: processes.map(|list| {
            list.iter()
                .map(|p| ProcessUse {
                    pid: p.pid,
                    used_mib: match p.used_gpu_memory {
                        UsedGpuMemory::Used(bytes) => Some(bytes_to_mib(bytes)),
                        UsedGpuMemory::Unavailable => None,
                    },
                })
                .collect()
        }),
    })
}
