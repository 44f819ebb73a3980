#![cfg(test)]
//! `NvmlBackend` against a real NVIDIA GPU and driver: what the fake
//! library of `tests/gpu_backends.rs` stands in for on machines without
//! one. These tests are `#[ignore]`d because CI has no GPU; on a GPU host
//! run them with
//! `cargo test --release --test gpu_nvml_device -- --ignored --test-threads 1`.
//! They fail (never skip) when run where no driver answers.
//!
//! A real process takes VRAM here: `python3` with PyTorch (as on CUDA
//! hosts that run the seed's models) allocates a tensor of a known size,
//! and the backend must show it as a compute process and as used VRAM,
//! then release it when the process ends.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pinwheel::gpu::{GpuBackend, GpuIndex, NvmlBackend, open_backend};
use pinwheel::topology::GpuPlan;

/// VRAM the helper process allocates.
const TAKE_MIB: u64 = 2048;

fn backend() -> NvmlBackend {
    NvmlBackend::open(&GpuPlan::Nvml, None).expect("a real NVIDIA driver answers NVML")
}

/// A python3 process holding `mib` of VRAM on GPU 0 until killed; returns
/// once it says the memory is allocated.
fn vram_holder(mib: u64) -> Child {
    let script = format!(
        "import torch, sys\n\
         x = torch.empty({mib} * 1024 * 1024, dtype=torch.uint8, device='cuda:0')\n\
         torch.cuda.synchronize()\n\
         print('held', flush=True)\n\
         sys.stdin.read()\n"
    );
    let mut child = Command::new("python3")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 with PyTorch is on the GPU host");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().expect("piped"))
        .read_line(&mut line)
        .expect("read the helper's line");
    assert_eq!(line.trim(), "held", "the helper allocated its VRAM");
    child
}

/// Samples GPU 0 until `done` holds or 20 s pass.
fn sample_until(
    sut: &mut NvmlBackend,
    what: &str,
    done: impl Fn(&pinwheel::gpu::GpuSample) -> bool,
) -> pinwheel::gpu::GpuSample {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let sample = sut.sample(GpuIndex(0)).expect("sample GPU 0");
        if done(&sample) {
            return sample;
        }
        assert!(Instant::now() < deadline, "{what}: last sample {sample:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU and driver; run with --ignored on a GPU host"]
fn every_gpu_is_listed_with_a_name_a_uuid_and_its_total_vram() {
    let sut = backend();
    assert!(!sut.gpus().is_empty(), "at least one GPU");
    for (i, gpu) in sut.gpus().iter().enumerate() {
        assert_eq!(gpu.index, GpuIndex(u32::try_from(i).unwrap()));
        assert!(gpu.name.starts_with("NVIDIA"), "{gpu:?}");
        assert!(gpu.uuid.starts_with("GPU-"), "{gpu:?}");
        assert!(gpu.total_mib >= 1024, "{gpu:?}");
    }
    assert!(sut.degraded().is_none());
}

#[test]
#[ignore = "needs an NVIDIA GPU and driver; run with --ignored on a GPU host"]
fn a_sample_adds_up_and_reports_telemetry() {
    let mut sut = backend();
    let total = sut.gpus()[0].total_mib;
    let sample = sut.sample(GpuIndex(0)).unwrap();
    assert_eq!(sample.total_mib, total);
    assert!(
        sample.used_mib <= total && sample.free_mib <= total,
        "{sample:?}"
    );
    // NVML's used + free may leave out memory the driver reserves.
    assert!(sample.used_mib + sample.free_mib <= total, "{sample:?}");
    assert!(sample.util_pct.is_some_and(|u| u <= 100), "{sample:?}");
    assert!(
        sample.temp_c.is_some_and(|t| (1..120).contains(&t)),
        "{sample:?}"
    );
    assert!(sample.power_mw.is_some_and(|p| p > 0), "{sample:?}");
}

#[test]
#[ignore = "needs an NVIDIA GPU and driver; run with --ignored on a GPU host"]
fn a_process_holding_vram_is_listed_and_counted_until_it_exits() {
    let mut sut = backend();
    let before = sut.sample(GpuIndex(0)).unwrap();
    let mut holder = vram_holder(TAKE_MIB);
    let pid = holder.id();
    let held = sample_until(&mut sut, "the holder appears as a process", |s| {
        s.processes
            .as_ref()
            .is_some_and(|p| p.iter().any(|p| p.pid == pid))
    });
    let process = *held
        .processes
        .as_ref()
        .unwrap()
        .iter()
        .find(|p| p.pid == pid)
        .unwrap();
    // The CUDA context adds a few hundred MiB to the tensor.
    if let Some(used) = process.used_mib {
        assert!(used >= TAKE_MIB, "{process:?}");
    }
    assert!(
        held.used_mib >= before.used_mib + TAKE_MIB,
        "before {before:?}, held {held:?}"
    );
    holder.kill().unwrap();
    holder.wait().unwrap();
    let after = sample_until(&mut sut, "the holder's VRAM is released", |s| {
        s.processes
            .as_ref()
            .is_some_and(|p| p.iter().all(|p| p.pid != pid))
    });
    assert!(
        after.used_mib + TAKE_MIB <= held.used_mib,
        "held {held:?}, after {after:?}"
    );
}

#[test]
#[ignore = "needs an NVIDIA GPU and driver; run with --ignored on a GPU host"]
fn the_daemon_opens_the_real_driver_not_a_simulation() {
    let sut = open_backend(&GpuPlan::Nvml, None).unwrap();
    assert!(sut.degraded().is_none(), "{:?}", sut.degraded());
    assert!(!sut.gpus().is_empty());
}
