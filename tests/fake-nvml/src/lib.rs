//! A fake `libnvidia-ml.so` for tests: the NVML entry points nvml-wrapper
//! calls, answering from a script file instead of a GPU.
//!
//! The library reads `fake-nvml.script` from its own directory on every
//! call, so a test changes what "the driver" says by rewriting the file.
//! Copy the library into a fresh directory per test ([`install`]): each
//! copy is loaded as its own library, so tests running in parallel do not
//! share state. Script lines:
//!
//! ```text
//! init 9                      # nvmlInit_v2 returns 9 (DRIVER_NOT_LOADED); default 0
//! gpu 0 name NVIDIA GeForce RTX 4090
//! gpu 0 uuid GPU-0a1b
//! gpu 0 total 24564           # MiB
//! gpu 0 used 3100             # MiB, everyone's
//! gpu 0 util 37 12            # GPU and memory utilization, %
//! gpu 0 temp 55               # C
//! gpu 0 power 123500          # mW
//! gpu 0 proc 4242 3100        # a compute process and its MiB
//! gpu 0 fail util 3           # that query returns 3 (NOT_SUPPORTED)
//! gpu 0 fail all 15           # every query of the GPU returns 15 (GPU_IS_LOST)
//! ```
//!
//! `fail` takes `util`, `temp`, `power`, `procs` or `all`.

use std::io;
use std::path::{Path, PathBuf};

/// Where the build put the library.
pub const LIB_PATH: &str = env!("FAKE_NVML_LIB");

/// Copies the library into `dir` with `script` beside it; returns the
/// library's path there.
pub fn install(dir: &Path, script: &str) -> io::Result<PathBuf> {
    let lib = dir.join("libnvidia-ml.so.1");
    std::fs::copy(LIB_PATH, &lib)?;
    write_script(dir, script)?;
    Ok(lib)
}

/// Replaces the script of the library installed in `dir`.
pub fn write_script(dir: &Path, script: &str) -> io::Result<()> {
    // Write then rename, so the library never reads half a script.
    let tmp = dir.join("fake-nvml.script.tmp");
    std::fs::write(&tmp, script)?;
    std::fs::rename(tmp, dir.join("fake-nvml.script"))
}
