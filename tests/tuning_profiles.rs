//! Tuning profiles on fake host trees (`--root`): apply and revert put
//! every file back byte for byte, also after applying twice and after a
//! SIGKILL in the middle of an apply; bad profiles exit 2 naming the file
//! and line; knobs that cannot be written are reported skipped with the
//! reason. The shipped profiles (`tuning/*.toml`) are the ones applied.
//!
//! The SIGKILL lands at a known point without any hook in pinwheel: one of
//! the profile's knobs is a FIFO, and reading a FIFO's original bytes
//! blocks until a writer opens it. The test opens it for writing, which
//! succeeds only once pinwheel is waiting on it, that is after every
//! earlier knob was journaled and written, and before this one was.

// The crate is test code as a whole; marking it so lets the lints that
// keep `unwrap` and `#[test]` inside test modules see that.
#![cfg(test)]

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use pinwheel::topology::CpuSet;
use pinwheel::tuning::{Host, Profile, Tuning, journal_path};

const NOBODY: u32 = 65_534;

/// A fake host: 4 CPUs with cpufreq, the knobs the shipped profiles name,
/// four interrupts, a workqueue mask.
struct Tree {
    dir: tempfile::TempDir,
}

const FILES: &[(&str, &str)] = &[
    ("proc/sys/vm/swappiness", "60\n"),
    ("proc/sys/vm/dirty_ratio", "20\n"),
    ("proc/sys/vm/dirty_background_ratio", "10\n"),
    ("proc/sys/kernel/numa_balancing", "1\n"),
    ("proc/sys/kernel/timer_migration", "1\n"),
    ("proc/sys/kernel/nmi_watchdog", "1\n"),
    ("proc/sys/net/core/busy_read", "0\n"),
    ("proc/sys/net/core/busy_poll", "0\n"),
    ("proc/irq/default_smp_affinity", "f\n"),
    ("proc/irq/0/smp_affinity_list", "0-3\n"),
    ("proc/irq/8/smp_affinity_list", "2\n"),
    ("proc/irq/24/smp_affinity_list", "0-3\n"),
    ("proc/irq/25/smp_affinity_list", "1,3\n"),
    ("proc/cmdline", "quiet console=ttyS0\n"),
    (
        "sys/kernel/mm/transparent_hugepage/enabled",
        "always [madvise] never\n",
    ),
    ("sys/module/haltpoll/parameters/guest_halt_poll_ns", "0\n"),
    ("sys/devices/system/cpu/online", "0-3\n"),
    ("sys/devices/virtual/workqueue/cpumask", "f\n"),
];

impl Tree {
    fn new() -> Self {
        let sut = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        for (path, text) in FILES {
            sut.write(path, text);
        }
        for cpu in 0..4 {
            let dir = format!("sys/devices/system/cpu/cpu{cpu}/cpufreq");
            sut.write(&format!("{dir}/scaling_governor"), "powersave\n");
            sut.write(
                &format!("{dir}/energy_performance_preference"),
                "balance_performance\n",
            );
        }
        sut
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    fn write(&self, rel: &str, text: &str) {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap()
    }

    /// Every plain file's bytes, except pinwheel's own under `run/`.
    fn snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut files = BTreeMap::new();
        let mut dirs = vec![self.root().to_path_buf()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let entry = entry.unwrap();
                let kind = entry.file_type().unwrap();
                let rel = entry
                    .path()
                    .strip_prefix(self.root())
                    .unwrap()
                    .to_path_buf();
                if rel.starts_with("run") {
                    continue;
                }
                if kind.is_dir() {
                    dirs.push(entry.path());
                } else if kind.is_file() {
                    files.insert(rel, std::fs::read(entry.path()).unwrap());
                }
            }
        }
        files
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pinwheel"));
        command
            .arg("tune")
            .args(args)
            .arg("--root")
            .arg(self.root());
        command
    }

    fn tune(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }
}

fn shipped(name: &str) -> String {
    format!("{}/tuning/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[track_caller]
fn assert_ok(out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        stdout(out),
        stderr(out)
    );
}

/// The line of `text` that reports `name`.
fn line_of<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines()
        .find(|line| line.trim_start().starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no row for {name} in\n{text}"))
}

#[test]
fn apply_then_revert_restores_every_file_byte_for_byte() {
    let tree = Tree::new();
    let before = tree.snapshot();
    let profile = shipped("cpu-partitioning.toml");
    let out = tree.tune(&["apply", "--profile", &profile, "--data-plane", "2-3"]);
    assert_ok(&out);
    let report = stdout(&out);
    assert_eq!(tree.read("proc/sys/vm/swappiness"), "10\n");
    assert_eq!(tree.read("proc/sys/net/core/busy_poll"), "50\n");
    assert_eq!(
        tree.read("sys/kernel/mm/transparent_hugepage/enabled"),
        "never\n"
    );
    assert_eq!(
        tree.read("sys/devices/system/cpu/cpu3/cpufreq/scaling_governor"),
        "performance\n"
    );
    assert_eq!(
        tree.read("sys/module/haltpoll/parameters/guest_halt_poll_ns"),
        "200000\n"
    );
    assert_eq!(tree.read("proc/irq/24/smp_affinity_list"), "0-1\n");
    assert_eq!(tree.read("proc/irq/25/smp_affinity_list"), "1\n");
    assert_eq!(tree.read("sys/devices/virtual/workqueue/cpumask"), "3\n");
    assert!(
        line_of(&report, "vm.swappiness").contains("60 -> 10"),
        "{report}"
    );
    assert!(
        report.contains("isolcpus=managed_irq,domain,2-3 nohz_full=2-3 rcu_nocbs=2-3"),
        "{report}"
    );
    assert!(journal_path(tree.root()).exists());

    let out = tree.tune(&["revert"]);
    assert_ok(&out);
    assert!(stdout(&out).contains("restored"), "{}", stdout(&out));
    assert_eq!(tree.snapshot(), before);
    assert!(!journal_path(tree.root()).exists());
}

#[test]
fn applying_twice_then_reverting_restores_the_originals_not_the_first_apply() {
    let tree = Tree::new();
    let before = tree.snapshot();
    let profile = shipped("network-latency.toml");
    assert_ok(&tree.tune(&["apply", "--profile", &profile]));
    let out = tree.tune(&["apply", "--profile", &profile]);
    assert_ok(&out);
    assert_eq!(tree.read("proc/sys/vm/swappiness"), "10\n");
    let out = tree.tune(&["revert"]);
    assert_ok(&out);
    assert!(line_of(&stdout(&out), "/proc/sys/vm/swappiness").contains("10 -> 60"));
    assert_eq!(tree.snapshot(), before);
}

#[test]
fn sigkill_during_apply_then_revert_restores_the_originals() {
    let tree = Tree::new();
    tree.write("proc/sys/kernel/a_first", "0\n");
    tree.write("proc/sys/kernel/b_second", "0\n");
    let fifo = tree.path("sys/kernel/z_fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    tree.write(
        "profile.toml",
        "schema = 1\n[sysctl]\n\"kernel.a_first\" = 1\n\"kernel.b_second\" = 2\n[sysfs]\n\"/sys/kernel/z_fifo\" = 3\n",
    );
    let before = tree.snapshot();
    let profile = tree.path("profile.toml");
    let mut child = tree
        .command(&["apply", "--profile", profile.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Opening a FIFO's write end without blocking fails (ENXIO) until a
    // reader has it open: pinwheel, reading the third knob's original.
    let writer = loop {
        let open = OpenOptions::new()
            .write(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(&fifo);
        match open {
            Ok(writer) => break writer,
            Err(err) if err.raw_os_error() == Some(nix::libc::ENXIO) => {
                let status = child.try_wait().unwrap();
                assert!(
                    status.is_none(),
                    "apply ended ({status:?}) before the FIFO knob"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(err) => panic!("{err}"),
        }
    };
    child.kill().unwrap();
    child.wait().unwrap();
    drop(writer);
    assert_eq!(
        tree.read("proc/sys/kernel/a_first"),
        "1\n",
        "killed before mid-apply"
    );
    assert_eq!(tree.read("proc/sys/kernel/b_second"), "2\n");

    let out = tree.tune(&["revert"]);
    assert_ok(&out);
    assert_eq!(tree.snapshot(), before);
    assert!(!journal_path(tree.root()).exists());
}

#[test]
fn a_profile_with_an_unknown_setting_is_an_error_naming_file_and_line() {
    let tree = Tree::new();
    tree.write(
        "base.toml",
        "schema = 1\n[cpu]\ngovernor = \"performance\"\nturbo = true\n",
    );
    tree.write("top.toml", "schema = 1\ninclude = \"base.toml\"\n");
    let before = tree.snapshot();
    for (file, line) in [("top.toml", 4), ("base.toml", 4)] {
        let out = tree.tune(&["apply", "--profile", tree.path(file).to_str().unwrap()]);
        let message = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{message}");
        assert!(out.stdout.is_empty(), "{}", stdout(&out));
        let at = format!("error: {}:{line}:", tree.path("base.toml").display());
        assert!(message.starts_with(&at), "expected {at:?} in {message}");
        assert!(message.contains("unknown field `turbo`"), "{message}");
        assert!(message.contains("4 | turbo = true"), "{message}");
    }
    assert_eq!(tree.snapshot(), before);
}

#[test]
fn a_read_only_file_and_a_missing_knob_are_reported_skipped_with_reasons() {
    let tree = Tree::new();
    let swappiness = tree.path("proc/sys/vm/swappiness");
    std::fs::set_permissions(&swappiness, std::fs::Permissions::from_mode(0o444)).unwrap();
    std::fs::remove_file(tree.path("proc/sys/kernel/nmi_watchdog")).unwrap();
    std::fs::remove_dir_all(tree.path("sys/module/haltpoll")).unwrap();
    let out = tree.tune(&["apply", "--profile", &shipped("network-latency.toml")]);
    assert_ok(&out);
    let report = stdout(&out);
    assert!(
        line_of(&report, "vm.swappiness").contains("skipped: read-only"),
        "{report}"
    );
    assert!(
        line_of(&report, "kernel.nmi_watchdog").contains("skipped: knob missing on this host"),
        "{report}"
    );
    assert!(
        line_of(
            &report,
            "/sys/module/haltpoll/parameters/guest_halt_poll_ns"
        )
        .contains("skipped: knob missing on this host"),
        "{report}"
    );
    assert!(
        line_of(&report, "vm.dirty_ratio").contains("applied"),
        "{report}"
    );
    assert_eq!(tree.read("proc/sys/vm/swappiness"), "60\n");
    // The fourth: this tree has no /dev/cpu_dma_latency.
    assert!(report.contains("skipped 4, failed 0"), "{report}");
}

#[test]
fn not_root_on_a_closed_host_skips_every_knob_with_that_reason() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "only root can run a command as another user; run the tests as root, as CI does"
    );
    let tree = Tree::new();
    std::fs::set_permissions(tree.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let before = tree.snapshot();
    let out = tree
        .command(&["apply", "--profile", &shipped("network-latency.toml")])
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    assert_ok(&out);
    let report = stdout(&out);
    assert!(
        line_of(&report, "vm.swappiness").contains("skipped: not root"),
        "{report}"
    );
    assert!(!report.contains("applied 1"), "{report}");
    assert_eq!(tree.snapshot(), before);
}

#[test]
fn the_include_chain_brings_in_every_profile_and_diff_writes_nothing() {
    let tree = Tree::new();
    let before = tree.snapshot();
    let out = tree.tune(&[
        "diff",
        "--profile",
        &shipped("cpu-partitioning.toml"),
        "--data-plane",
        "3",
    ]);
    assert_ok(&out);
    let report = stdout(&out);
    assert!(report.contains("includes"), "{report}");
    let swappiness = line_of(&report, "vm.swappiness");
    assert!(swappiness.contains("60 -> 10") && swappiness.contains("would change"));
    assert!(
        swappiness.contains("[latency-performance.toml:"),
        "{report}"
    );
    assert!(line_of(&report, "kernel.numa_balancing").contains("[network-latency.toml:"));
    let irq = line_of(&report, "/proc/irq/24/smp_affinity_list");
    assert!(
        irq.contains("0-3 -> 0-2") && irq.contains("[cpu-partitioning.toml:"),
        "{report}"
    );
    assert_eq!(tree.snapshot(), before);
    assert!(!tree.path("run").exists());
}

#[test]
fn an_include_cycle_is_an_error_at_the_include_that_closes_it() {
    let tree = Tree::new();
    tree.write("a.toml", "schema = 1\ninclude = \"b.toml\"\n");
    tree.write("b.toml", "schema = 1\n\ninclude = \"a.toml\"\n");
    let out = tree.tune(&["diff", "--profile", tree.path("a.toml").to_str().unwrap()]);
    let message = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{message}");
    let at = format!("error: {}:3:", tree.path("b.toml").display());
    assert!(message.starts_with(&at), "expected {at:?} in {message}");
    assert!(
        message.contains("include cycle: a.toml -> b.toml -> a.toml"),
        "{message}"
    );
}

#[test]
fn revert_without_a_journal_changes_nothing() {
    let tree = Tree::new();
    let before = tree.snapshot();
    let out = tree.tune(&["revert"]);
    assert_ok(&out);
    assert!(
        stdout(&out).contains("nothing to revert"),
        "{}",
        stdout(&out)
    );
    assert_eq!(tree.snapshot(), before);
}

#[test]
fn the_daemon_guard_reverts_leftovers_at_start_and_its_own_tuning_when_dropped() {
    let tree = Tree::new();
    tree.write(
        "leftover.toml",
        "schema = 1\n[sysctl]\n\"kernel.timer_migration\" = 0\n",
    );
    let before = tree.snapshot();
    // An apply whose process never reverted: leftovers for the guard.
    let leftover = tree.path("leftover.toml");
    assert_ok(&tree.tune(&["apply", "--profile", leftover.to_str().unwrap()]));
    assert_eq!(tree.read("proc/sys/kernel/timer_migration"), "0\n");

    let profile = Profile::load(Path::new(&shipped("latency-performance.toml"))).unwrap();
    let host = Host {
        root: tree.root().to_path_buf(),
        data_plane: Some(CpuSet::parse_list("2-3").unwrap()),
    };
    let sut = Tuning::start(&profile, &host).unwrap();
    assert_eq!(tree.read("proc/sys/kernel/timer_migration"), "1\n");
    assert_eq!(tree.read("proc/sys/vm/swappiness"), "10\n");
    drop(sut);
    assert_eq!(tree.snapshot(), before);

    let sut = Tuning::start(&profile, &host).unwrap();
    let report = sut.finish().unwrap();
    assert!(report.changed() > 0, "{}", report.to_text());
    assert_eq!(tree.snapshot(), before);
}

#[test]
fn the_daemon_checks_its_topology_profile_before_starting_and_unprivileged_leaves_the_host_alone() {
    let tree = Tree::new();
    let topology = std::fs::read_to_string(format!(
        "{}/topology/vm-2cpu.toml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    tree.write(
        "topo.toml",
        &format!("{topology}\n[tuning]\nprofile = \"host.toml\"\n"),
    );
    let run = |profile: &str| {
        tree.write("host.toml", profile);
        Command::new(env!("CARGO_BIN_EXE_pinwheel"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .arg("run")
            .arg("--topology")
            .arg(tree.path("topo.toml"))
            .args(["--agents", "agents/voice-pipeline.toml", "--unprivileged"])
            .args(["--duration", "0.2", "--rate", "0"])
            .output()
            .unwrap()
    };

    let out = run("schema = 1\n[sysctl]\n\"vm.swappiness\" = 10\n[cpu]\nturbo = true\n");
    let message = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{message}");
    let at = format!("error: {}:5:", tree.path("host.toml").display());
    assert!(message.contains(&at), "expected {at:?} in {message}");

    let out = run(&format!(
        "schema = 1\ninclude = \"{}\"\n",
        shipped("network-latency.toml")
    ));
    assert_ok(&out);
    let message = stderr(&out);
    assert_eq!(
        message.matches("tuning profile not applied").count(),
        1,
        "{message}"
    );
    assert!(message.contains("--unprivileged"), "{message}");
}

/// One journal record as pinwheel writes it: path and bytes, both hex.
fn record_line(path: &str, original: &str) -> String {
    let hex = |bytes: &[u8]| -> String { bytes.iter().map(|b| format!("{b:02x}")).collect() };
    format!("{} {}\n", hex(path.as_bytes()), hex(original.as_bytes()))
}

/// A journal with these records.
fn journal_text(records: &[(&str, &str)]) -> String {
    let mut text = "# pinwheel tuning journal 1\n".to_owned();
    for (path, original) in records {
        text.push_str(&record_line(path, original));
    }
    text
}

#[test]
fn replay_refuses_a_journal_record_outside_the_kernel_knobs() {
    let tree = Tree::new();
    tree.write("etc/passwd", "root:x:0:0:root:/root:/bin/bash\n");
    tree.write("proc/sys/vm/swappiness", "10\n");
    let journal = journal_text(&[
        ("/proc/sys/vm/swappiness", "60\n"),
        ("/etc/passwd", "mallory::0:0::/:/bin/sh\n"),
        ("/proc/sys/../../etc/passwd", "mallory::0:0::/:/bin/sh\n"),
    ]);
    tree.write("run/pinwheel/tuning.journal", &journal);

    let out = tree.tune(&["revert"]);

    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report = stdout(&out);
    let passwd = line_of(&report, "/etc/passwd");
    assert!(
        passwd.contains("refused: is outside /proc/sys, /proc/irq, /sys and /dev/cpu_dma_latency"),
        "{report}"
    );
    assert!(
        line_of(&report, "/proc/sys/../../etc/passwd").contains("refused: is not a plain"),
        "{report}"
    );
    assert_eq!(tree.read("etc/passwd"), "root:x:0:0:root:/root:/bin/bash\n");
    assert_eq!(tree.read("proc/sys/vm/swappiness"), "60\n");
    let kept = tree.read("run/pinwheel/tuning.journal");
    assert!(kept.contains(&record_line("/etc/passwd", "mallory::0:0::/:/bin/sh\n")));
    assert!(!kept.contains(&record_line("/proc/sys/vm/swappiness", "60\n")));
}

#[test]
fn a_symlinked_journal_is_refused_and_its_target_left_alone() {
    let tree = Tree::new();
    tree.write("proc/sys/vm/swappiness", "10\n");
    let planted = journal_text(&[("/proc/sys/vm/swappiness", "60\n")]);
    tree.write("etc/shadow", &planted);
    std::fs::create_dir_all(tree.path("run/pinwheel")).unwrap();
    std::os::unix::fs::symlink(
        tree.path("etc/shadow"),
        tree.path("run/pinwheel/tuning.journal"),
    )
    .unwrap();

    for args in [
        &["revert"][..],
        &["apply", "--profile", &shipped("latency-performance.toml")],
    ] {
        let out = tree.tune(args);

        let message = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {message}");
        assert!(message.contains("tuning journal"), "{message}");
        assert!(message.contains("symbolic links"), "{message}");
        assert_eq!(tree.read("proc/sys/vm/swappiness"), "10\n");
        assert_eq!(tree.read("etc/shadow"), planted);
    }
}
