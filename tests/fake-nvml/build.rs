//! Compiles `fake_nvml.c` into a shared library with the C compiler the
//! `cc` crate finds (the one cargo links with), and tells the crate where
//! it is.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let lib = out.join("libnvidia-ml.so.1");
    let compiler = cc::Build::new().cargo_metadata(false).get_compiler();
    let status = Command::new(compiler.path())
        .args(["-shared", "-fPIC", "-O1", "-Wall", "-o"])
        .arg(&lib)
        .arg("fake_nvml.c")
        .arg("-ldl")
        .status()
        .expect("run the C compiler");
    assert!(status.success(), "compiling fake_nvml.c failed");
    println!("cargo:rerun-if-changed=fake_nvml.c");
    println!("cargo:rustc-env=FAKE_NVML_LIB={}", lib.display());
}
