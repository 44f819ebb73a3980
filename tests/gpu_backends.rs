#![cfg(test)]
//! One conformance suite for every GPU backend: `SimBackend`, and
//! `NvmlBackend` on a fake `libnvidia-ml.so` (the `fake-nvml` test crate)
//! that answers from a script, so the real NVML code path runs on
//! machines without a GPU. Each case drives a [`Rig`]: the same changes
//! (a process loads, another program takes VRAM, a query is not
//! supported, a GPU falls off the bus) applied to either backend, and the
//! same answers expected. The NVML-only cases at the end cover what only
//! a driver does: failing to start.

use std::ffi::OsStr;
use std::path::PathBuf;

use pinwheel::gpu::{GpuBackend, GpuError, GpuIndex, NvmlBackend, SimBackend, open_backend};
use pinwheel::topology::{GpuPlan, GpuSource, GpuSpec};
use tempfile::TempDir;

const CARDS: [(&str, &str, u64); 2] = [
    ("NVIDIA GeForce RTX 4090", "GPU-4090", 24564),
    ("NVIDIA GeForce RTX 3060", "GPU-3060", 12288),
];

/// A backend and a way to change what it will report.
trait Rig {
    fn backend(&mut self) -> &mut dyn GpuBackend;
    /// A process takes `mib` on `gpu`; returns its pid.
    fn load(&mut self, gpu: u32, mib: u64) -> u32;
    fn unload(&mut self, gpu: u32, pid: u32);
    fn external(&mut self, gpu: u32, mib: u64);
    /// `None` makes the query unsupported.
    fn telemetry(&mut self, gpu: u32, util: Option<u32>, temp: Option<u32>, power: Option<u32>);
    fn lose(&mut self, gpu: u32);
}

struct SimRig(SimBackend);

impl Rig for SimRig {
    fn backend(&mut self) -> &mut dyn GpuBackend {
        &mut self.0
    }
    fn load(&mut self, gpu: u32, mib: u64) -> u32 {
        self.0.load(GpuIndex(gpu), mib).unwrap()
    }
    fn unload(&mut self, gpu: u32, pid: u32) {
        self.0.unload(GpuIndex(gpu), pid).unwrap();
    }
    fn external(&mut self, gpu: u32, mib: u64) {
        self.0.set_external(GpuIndex(gpu), mib).unwrap();
    }
    fn telemetry(&mut self, gpu: u32, util: Option<u32>, temp: Option<u32>, power: Option<u32>) {
        self.0
            .set_telemetry(GpuIndex(gpu), util, temp, power)
            .unwrap();
    }
    fn lose(&mut self, gpu: u32) {
        self.0.lose(GpuIndex(gpu));
    }
}

fn sim_rig() -> SimRig {
    let specs = CARDS
        .iter()
        .map(|(name, uuid, mib)| GpuSpec {
            source: GpuSource::NvmlUuid((*uuid).to_owned()),
            name: (*name).to_owned(),
            vram_mib: Some(*mib),
        })
        .collect();
    SimRig(SimBackend::from_plan(&GpuPlan::Declared(specs)).unwrap())
}

/// What the fake driver knows about one GPU.
#[derive(Clone, Default)]
struct FakeGpu {
    procs: Vec<(u32, u64)>,
    external: u64,
    telemetry: (Option<u32>, Option<u32>, Option<u32>),
    lost: bool,
}

struct NvmlRig {
    dir: TempDir,
    gpus: Vec<FakeGpu>,
    next_pid: u32,
    backend: Option<NvmlBackend>,
}

impl NvmlRig {
    fn script(&self) -> String {
        let mut text = String::new();
        for (i, ((name, uuid, total), g)) in CARDS.iter().zip(&self.gpus).enumerate() {
            let used: u64 = g.procs.iter().map(|p| p.1).sum::<u64>() + g.external;
            text += &format!(
                "gpu {i} name {name}\ngpu {i} uuid {uuid}\ngpu {i} total {total}\ngpu {i} used {used}\n"
            );
            let (util, temp, power) = g.telemetry;
            match util {
                Some(u) => text += &format!("gpu {i} util {u} 0\n"),
                None => text += &format!("gpu {i} fail util 3\n"),
            }
            match temp {
                Some(t) => text += &format!("gpu {i} temp {t}\n"),
                None => text += &format!("gpu {i} fail temp 3\n"),
            }
            match power {
                Some(p) => text += &format!("gpu {i} power {p}\n"),
                None => text += &format!("gpu {i} fail power 3\n"),
            }
            for (pid, mib) in &g.procs {
                text += &format!("gpu {i} proc {pid} {mib}\n");
            }
            if g.lost {
                text += &format!("gpu {i} fail all 15\n");
            }
        }
        text
    }

    fn rewrite(&self) {
        fake_nvml::write_script(self.dir.path(), &self.script()).unwrap();
    }
}

impl Rig for NvmlRig {
    fn backend(&mut self) -> &mut dyn GpuBackend {
        self.backend.as_mut().unwrap()
    }
    fn load(&mut self, gpu: u32, mib: u64) -> u32 {
        self.next_pid += 1;
        let pid = self.next_pid;
        self.gpus[gpu as usize].procs.push((pid, mib));
        self.rewrite();
        pid
    }
    fn unload(&mut self, gpu: u32, pid: u32) {
        self.gpus[gpu as usize].procs.retain(|p| p.0 != pid);
        self.rewrite();
    }
    fn external(&mut self, gpu: u32, mib: u64) {
        self.gpus[gpu as usize].external = mib;
        self.rewrite();
    }
    fn telemetry(&mut self, gpu: u32, util: Option<u32>, temp: Option<u32>, power: Option<u32>) {
        self.gpus[gpu as usize].telemetry = (util, temp, power);
        self.rewrite();
    }
    fn lose(&mut self, gpu: u32) {
        self.gpus[gpu as usize].lost = true;
        self.rewrite();
    }
}

fn nvml_rig() -> NvmlRig {
    let mut rig = NvmlRig {
        dir: tempfile::tempdir().unwrap(),
        gpus: vec![
            FakeGpu {
                telemetry: (Some(0), Some(30), Some(20_000)),
                ..FakeGpu::default()
            };
            CARDS.len()
        ],
        next_pid: 4000,
        backend: None,
    };
    let lib: PathBuf = fake_nvml::install(rig.dir.path(), &rig.script()).unwrap();
    rig.backend = Some(NvmlBackend::open(&GpuPlan::Nvml, Some(lib.as_os_str())).unwrap());
    rig
}

/// Runs a conformance case on both backends.
fn on_both(case: fn(&mut dyn Rig)) {
    case(&mut sim_rig());
    case(&mut nvml_rig());
}

#[test]
fn gpus_are_listed_with_name_uuid_and_size_in_order() {
    on_both(|rig| {
        let gpus = rig.backend().gpus().to_vec();
        assert_eq!(gpus.len(), 2);
        for (i, (gpu, (name, uuid, mib))) in gpus.iter().zip(CARDS).enumerate() {
            assert_eq!(gpu.index, GpuIndex(i as u32));
            assert_eq!(
                (gpu.name.as_str(), gpu.uuid.as_str(), gpu.total_mib),
                (name, uuid, mib)
            );
        }
        assert_eq!(rig.backend().degraded(), None);
    });
}

#[test]
fn a_load_shows_as_a_process_and_as_used_vram_until_it_is_unloaded() {
    on_both(|rig| {
        let pid = rig.load(0, 3100);
        let sample = rig.backend().sample(GpuIndex(0)).unwrap();
        assert_eq!(
            (sample.used_mib, sample.free_mib, sample.total_mib),
            (3100, 21464, 24564)
        );
        let processes = sample.processes.unwrap();
        assert_eq!(processes.len(), 1);
        assert_eq!((processes[0].pid, processes[0].used_mib), (pid, Some(3100)));
        rig.unload(0, pid);
        let sample = rig.backend().sample(GpuIndex(0)).unwrap();
        assert_eq!(sample.used_mib, 0);
        assert_eq!(sample.processes, Some(vec![]));
    });
}

#[test]
fn other_programs_vram_counts_as_used_but_lists_no_process() {
    on_both(|rig| {
        rig.load(1, 2000);
        rig.external(1, 5000);
        let sample = rig.backend().sample(GpuIndex(1)).unwrap();
        assert_eq!(sample.used_mib, 7000);
        assert_eq!(sample.used_mib + sample.free_mib, 12288);
        assert_eq!(sample.processes.unwrap().len(), 1);
    });
}

#[test]
fn telemetry_is_reported_and_an_unsupported_query_leaves_only_its_field_out() {
    on_both(|rig| {
        rig.telemetry(0, Some(37), Some(55), Some(123_500));
        let sample = rig.backend().sample(GpuIndex(0)).unwrap();
        assert_eq!(
            (sample.util_pct, sample.temp_c, sample.power_mw),
            (Some(37), Some(55), Some(123_500))
        );
        rig.telemetry(0, None, Some(60), None);
        let sample = rig.backend().sample(GpuIndex(0)).unwrap();
        assert_eq!(
            (sample.util_pct, sample.temp_c, sample.power_mw),
            (None, Some(60), None)
        );
        assert_eq!(sample.total_mib, 24564);
    });
}

#[test]
fn a_lost_gpu_answers_lost_for_good_and_the_others_keep_working() {
    on_both(|rig| {
        rig.lose(1);
        for _ in 0..2 {
            let err = rig.backend().sample(GpuIndex(1)).unwrap_err();
            assert!(matches!(err, GpuError::Lost { gpu: GpuIndex(1) }), "{err}");
        }
        assert!(rig.backend().sample(GpuIndex(0)).is_ok());
    });
}

#[test]
fn a_gpu_past_the_list_is_an_error() {
    on_both(|rig| {
        let err = rig.backend().sample(GpuIndex(7)).unwrap_err();
        assert!(matches!(err, GpuError::NoSuchGpu { count: 2, .. }), "{err}");
    });
}

// NVML only: what a driver can do that a simulation cannot.

fn declared() -> GpuPlan {
    GpuPlan::Declared(vec![GpuSpec {
        source: GpuSource::NvmlIndex(0),
        name: "NVIDIA GeForce RTX 4090".to_owned(),
        vram_mib: Some(24564),
    }])
}

fn fake_driver(script: &str) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let lib = fake_nvml::install(dir.path(), script).unwrap();
    (dir, lib)
}

#[test]
fn no_driver_or_no_permission_falls_back_to_the_topologys_gpus_with_a_reason() {
    for (code, words) in [(9, "driver is not loaded"), (4, "permission")] {
        let (_dir, lib) = fake_driver(&format!("init {code}\n"));
        let sut = open_backend(&declared(), Some(lib.as_os_str())).unwrap();
        assert_eq!(sut.gpus()[0].total_mib, 24564);
        let reason = sut.degraded().unwrap().to_lowercase();
        assert!(reason.contains(&words.to_lowercase()), "{code}: {reason}");
        assert!(reason.contains("simulating 1 gpu(s)"), "{reason}");
    }
}

#[test]
fn a_broken_driver_is_an_error_not_a_simulation() {
    let (_dir, lib) = fake_driver("init 999\n");
    let err = open_backend(&declared(), Some(lib.as_os_str())).unwrap_err();
    assert!(
        matches!(
            err,
            GpuError::Nvml {
                call: "nvmlInit_v2",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn declared_gpus_are_found_by_index_and_uuid_and_a_missing_one_is_named() {
    let script = "gpu 0 name A\ngpu 0 uuid GPU-a\ngpu 0 total 1000\ngpu 1 name B\ngpu 1 uuid GPU-b\ngpu 1 total 2000\n";
    let (_dir, lib) = fake_driver(script);
    let plan = GpuPlan::Declared(vec![
        GpuSpec {
            source: GpuSource::NvmlUuid("GPU-b".to_owned()),
            name: "B".to_owned(),
            vram_mib: None,
        },
        GpuSpec {
            source: GpuSource::NvmlIndex(0),
            name: "A".to_owned(),
            vram_mib: None,
        },
    ]);
    let sut = NvmlBackend::open(&plan, Some(lib.as_os_str())).unwrap();
    let names: Vec<&str> = sut.gpus().iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["B", "A"]);
    let plan = GpuPlan::Declared(vec![GpuSpec {
        source: GpuSource::NvmlIndex(5),
        name: "X".to_owned(),
        vram_mib: None,
    }]);
    let err = NvmlBackend::open(&plan, Some(lib.as_os_str())).unwrap_err();
    assert!(
        err.to_string()
            .contains("NVML lists 2 device(s) (GPU-a, GPU-b)"),
        "{err}"
    );
}

#[test]
fn a_gpu_without_process_accounting_samples_without_processes() {
    let (_dir, lib) = fake_driver(
        "gpu 0 name A\ngpu 0 uuid GPU-a\ngpu 0 total 1000\ngpu 0 used 10\ngpu 0 fail procs 3\n",
    );
    let mut sut = NvmlBackend::open(&GpuPlan::Nvml, Some(OsStr::new(&lib))).unwrap();
    let sample = sut.sample(GpuIndex(0)).unwrap();
    assert_eq!((sample.used_mib, sample.processes), (10, None));
}
