//! [`SimBackend`]: GPUs that exist only in memory, built from a topology's
//! `[[gpu]]` entries.
//!
//! It stands in where there is no driver (CI, laptops, `pinwheel vram
//! replay`) and behaves like the driver where pinwheel looks: a load is a
//! process holding VRAM, listed with its pid until it is unloaded; other
//! programs' VRAM ([`SimBackend::set_external`]) counts as used but lists
//! no process of ours. Memory is physical: other programs get what they
//! ask for only as far as it is free, and take back what we free (as a
//! program retrying its allocations would), so usage never exceeds the
//! total; a lost GPU ([`SimBackend::lose`]) answers
//! [`GpuError::Lost`] for good. Telemetry (utilization, temperature,
//! power) is whatever the test sets, `None` standing for a GPU that does
//! not support the query. Nothing here is random or timed, so replays are
//! deterministic.

use super::backend::{GpuBackend, GpuError, GpuIndex, GpuInfo, GpuSample, ProcessUse};
use crate::topology::{GpuPlan, GpuSource, GpuSpec};

/// First pid handed to a simulated load; high enough not to look like a
/// real process of a small test.
const FIRST_PID: u32 = 100_000;

/// Simulated GPUs.
#[derive(Debug, Clone)]
pub struct SimBackend {
    gpus: Vec<GpuInfo>,
    state: Vec<SimGpu>,
    next_pid: u32,
    degraded: Option<String>,
}

#[derive(Debug, Clone, Default)]
struct SimGpu {
    processes: Vec<(u32, u64)>,
    external_mib: u64,
    lost: bool,
    util_pct: Option<u32>,
    temp_c: Option<u32>,
    power_mw: Option<u32>,
}

impl SimBackend {
    /// GPUs with these names and sizes (MiB), idle, at 30 C and 20 W.
    pub fn new(gpus: &[(&str, u64)]) -> Self {
        let infos = gpus
            .iter()
            .enumerate()
            .map(|(i, (name, total_mib))| GpuInfo {
                index: GpuIndex(i as u32),
                name: (*name).to_owned(),
                uuid: format!("GPU-sim-{i}"),
                total_mib: *total_mib,
            })
            .collect();
        Self::from_infos(infos)
    }

    fn from_infos(gpus: Vec<GpuInfo>) -> Self {
        let state = gpus
            .iter()
            .map(|_| SimGpu {
                util_pct: Some(0),
                temp_c: Some(30),
                power_mw: Some(20_000),
                ..SimGpu::default()
            })
            .collect();
        Self {
            gpus,
            state,
            next_pid: FIRST_PID,
            degraded: None,
        }
    }

    /// The GPUs a topology declares, each with its `vram_mib`. `gpus =
    /// "nvml"` gives none: without a driver nothing says what to simulate.
    pub fn from_plan(plan: &GpuPlan) -> Result<Self, GpuError> {
        let specs: &[GpuSpec] = match plan {
            GpuPlan::Declared(specs) => specs,
            GpuPlan::Nvml => &[],
        };
        let gpus = specs
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                let total_mib = spec.vram_mib.ok_or_else(|| GpuError::NoSize {
                    gpu: i,
                    name: spec.name.clone(),
                })?;
                let uuid = match &spec.source {
                    GpuSource::NvmlUuid(uuid) => uuid.clone(),
                    GpuSource::NvmlIndex(_) | GpuSource::Simulated => format!("GPU-sim-{i}"),
                };
                Ok(GpuInfo {
                    index: GpuIndex(i as u32),
                    name: spec.name.clone(),
                    uuid,
                    total_mib,
                })
            })
            .collect::<Result<Vec<_>, GpuError>>()?;
        Ok(Self::from_infos(gpus))
    }

    /// Marks this backend as a stand-in, with the reason `/health` shows.
    pub fn degrade(mut self, reason: impl Into<String>) -> Self {
        self.degraded = Some(reason.into());
        self
    }

    /// A process loads `mib` onto `gpu`; returns its pid.
    pub fn load(&mut self, gpu: GpuIndex, mib: u64) -> Result<u32, GpuError> {
        let free_mib = self.free_mib(gpu)?;
        if mib > free_mib {
            return Err(GpuError::OutOfMemory {
                gpu,
                wanted_mib: mib,
                free_mib,
            });
        }
        let pid = self.next_pid;
        self.next_pid += 1;
        self.gpu_mut(gpu)?.processes.push((pid, mib));
        Ok(pid)
    }

    /// The process `pid` frees its VRAM on `gpu`.
    pub fn unload(&mut self, gpu: GpuIndex, pid: u32) -> Result<(), GpuError> {
        let state = self.gpu_mut(gpu)?;
        let before = state.processes.len();
        state.processes.retain(|(p, _)| *p != pid);
        if state.processes.len() == before {
            return Err(GpuError::NoSuchProcess { gpu, pid });
        }
        Ok(())
    }

    /// Other programs now want `mib` on `gpu` (0 ends it); they hold as
    /// much of it as is free, now and whenever we free more.
    pub fn set_external(&mut self, gpu: GpuIndex, mib: u64) -> Result<(), GpuError> {
        self.gpu_mut(gpu)?.external_mib = mib;
        Ok(())
    }

    /// Sets utilization (%), temperature (C) and power (mW); `None` makes
    /// the GPU report that query as not supported.
    pub fn set_telemetry(
        &mut self,
        gpu: GpuIndex,
        util_pct: Option<u32>,
        temp_c: Option<u32>,
        power_mw: Option<u32>,
    ) -> Result<(), GpuError> {
        let state = self.gpu_mut(gpu)?;
        state.util_pct = util_pct;
        state.temp_c = temp_c;
        state.power_mw = power_mw;
        Ok(())
    }

    /// The GPU falls off the bus; its processes and VRAM are gone.
    pub fn lose(&mut self, gpu: GpuIndex) {
        if let Some(state) = self.state.get_mut(gpu.0 as usize) {
            state.lost = true;
            state.processes.clear();
        }
    }

    /// VRAM in use on `gpu` (ours and other programs'), MiB.
    pub fn used_mib(&self, gpu: GpuIndex) -> Result<u64, GpuError> {
        let state = self.gpu(gpu)?;
        let total = self.gpus[gpu.0 as usize].total_mib;
        let ours: u64 = state.processes.iter().map(|(_, m)| m).sum();
        Ok(ours + state.external_mib.min(total.saturating_sub(ours)))
    }

    fn free_mib(&self, gpu: GpuIndex) -> Result<u64, GpuError> {
        let total = self.gpus[gpu.0 as usize].total_mib;
        Ok(total.saturating_sub(self.used_mib(gpu)?))
    }

    fn gpu(&self, gpu: GpuIndex) -> Result<&SimGpu, GpuError> {
        match self.state.get(gpu.0 as usize) {
            Some(state) if state.lost => Err(GpuError::Lost { gpu }),
            Some(state) => Ok(state),
            None => Err(GpuError::NoSuchGpu {
                gpu,
                count: self.gpus.len(),
            }),
        }
    }

    fn gpu_mut(&mut self, gpu: GpuIndex) -> Result<&mut SimGpu, GpuError> {
        let count = self.gpus.len();
        match self.state.get_mut(gpu.0 as usize) {
            Some(state) if state.lost => Err(GpuError::Lost { gpu }),
            Some(state) => Ok(state),
            None => Err(GpuError::NoSuchGpu { gpu, count }),
        }
    }
}

impl GpuBackend for SimBackend {
    fn gpus(&self) -> &[GpuInfo] {
        &self.gpus
    }

    fn sample(&mut self, gpu: GpuIndex) -> Result<GpuSample, GpuError> {
        let state = self.gpu(gpu)?;
        let total_mib = self.gpus[gpu.0 as usize].total_mib;
        let used_mib = self.used_mib(gpu)?;
        Ok(GpuSample {
            gpu,
            total_mib,
            used_mib,
            free_mib: total_mib - used_mib,
            util_pct: state.util_pct,
            temp_c: state.temp_c,
            power_mw: state.power_mw,
            processes: Some(
                state
                    .processes
                    .iter()
                    .map(|&(pid, mib)| ProcessUse {
                        pid,
                        used_mib: Some(mib),
                    })
                    .collect(),
            ),
        })
    }

    fn degraded(&self) -> Option<&str> {
        self.degraded.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_load_bigger_than_free_vram_is_refused() {
        let mut sut = SimBackend::new(&[("a", 1000)]);
        sut.set_external(GpuIndex(0), 600).unwrap();
        let err = sut.load(GpuIndex(0), 500).unwrap_err();
        assert!(
            matches!(err, GpuError::OutOfMemory { free_mib: 400, .. }),
            "{err}"
        );
    }

    #[test]
    fn other_programs_get_only_what_is_free_and_take_back_what_we_free() {
        let mut sut = SimBackend::new(&[("a", 1000)]);
        let pid = sut.load(GpuIndex(0), 700).unwrap();
        sut.set_external(GpuIndex(0), 600).unwrap();
        assert_eq!(sut.used_mib(GpuIndex(0)).unwrap(), 1000);
        sut.unload(GpuIndex(0), pid).unwrap();
        assert_eq!(sut.used_mib(GpuIndex(0)).unwrap(), 600);
    }

    #[test]
    fn from_plan_takes_declared_gpus_and_their_uuids() {
        let plan = GpuPlan::Declared(vec![GpuSpec {
            source: GpuSource::NvmlUuid("GPU-1234".to_owned()),
            name: "card".to_owned(),
            vram_mib: Some(8192),
        }]);
        let sut = SimBackend::from_plan(&plan).unwrap();
        assert_eq!(sut.gpus()[0].uuid, "GPU-1234");
        assert_eq!(sut.gpus()[0].total_mib, 8192);
    }

    #[test]
    fn a_gpu_without_a_size_cannot_be_simulated() {
        let plan = GpuPlan::Declared(vec![GpuSpec {
            source: GpuSource::NvmlIndex(0),
            name: "card".to_owned(),
            vram_mib: None,
        }]);
        let err = SimBackend::from_plan(&plan).unwrap_err();
        assert!(err.to_string().contains("set vram_mib"), "{err}");
    }
}
