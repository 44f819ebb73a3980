//! Files a root daemon trusts, from outside: the real binary, run as root
//! (as CI runs it), refuses a topology, manifest, tuning profile or admin
//! token that someone else could change (or, for the token, read), with
//! exit code 2 and a message naming the file and the command that fixes
//! it, before anything starts.

// The crate is test code as a whole; marking it so lets the lints that
// keep `unwrap` and `#[test]` inside test modules see that.
#![cfg(test)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const CRATE: &str = env!("CARGO_MANIFEST_DIR");
const PINWHEEL: &str = env!("CARGO_BIN_EXE_pinwheel");

/// The shipped single-host files, copied into a private directory with
/// modes the test sets.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        let files = Files {
            dir: tempfile::tempdir().unwrap(),
        };
        for (from, to) in [
            ("topology/vm-2cpu.toml", "topo.toml"),
            ("agents/mainpc.toml", "agents.toml"),
            ("tuning/latency-performance.toml", "base.toml"),
        ] {
            std::fs::copy(Path::new(CRATE).join(from), files.path(to)).unwrap();
            files.chmod(to, 0o644);
        }
        std::fs::write(
            files.path("profile.toml"),
            "schema = 1\ninclude = \"base.toml\"\n",
        )
        .unwrap();
        files.chmod("profile.toml", 0o644);
        files
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn chmod(&self, name: &str, mode: u32) {
        std::fs::set_permissions(self.path(name), std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn pinwheel(&self, args: &[&str]) -> Output {
        Command::new(PINWHEEL)
            .current_dir(self.dir.path())
            .args(args)
            .output()
            .unwrap()
    }

    fn validate(&self) -> Output {
        self.pinwheel(&[
            "validate",
            "--topology",
            "topo.toml",
            "--agents",
            "agents.toml",
        ])
    }
}

/// Checks the refusal contract; returns stderr.
#[track_caller]
fn refused(out: &Output, file: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(stderr.starts_with(&format!("error: {file}: ")), "{stderr}");
    stderr
}

#[test]
fn the_test_runs_as_root_as_ci_does() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests check what a root daemon refuses; run them as root"
    );
}

#[test]
fn files_closed_to_others_validate() {
    let files = Files::new();

    let out = files.validate();

    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_group_writable_topology_is_refused_by_validate_and_run_with_exit_2() {
    let files = Files::new();
    files.chmod("topo.toml", 0o664);
    let fix = format!(
        "fix: chmod go-w {}",
        files.path("topo.toml").canonicalize().unwrap().display()
    );

    let stderr = refused(&files.validate(), "topo.toml");
    assert!(stderr.contains("group-writable (mode 0664)"), "{stderr}");
    assert!(stderr.contains(&fix), "{stderr}");

    let out = files.pinwheel(&[
        "run",
        "--topology",
        "topo.toml",
        "--agents",
        "agents.toml",
        "--admin-addr",
        "127.0.0.1:0",
        "--duration",
        "5",
    ]);
    let stderr = refused(&out, "topo.toml");
    assert!(stderr.contains(&fix), "{stderr}");
}

#[test]
fn a_world_writable_manifest_is_refused() {
    let files = Files::new();
    files.chmod("agents.toml", 0o646);

    let stderr = refused(&files.validate(), "agents.toml");

    assert!(stderr.contains("world-writable (mode 0646)"), "{stderr}");
    assert!(stderr.contains("fix: chmod go-w"), "{stderr}");
}

#[test]
fn a_manifest_owned_by_another_uid_is_refused_naming_chown() {
    let files = Files::new();
    let uid = nix::unistd::Uid::from_raw(1000);
    nix::unistd::chown(&files.path("agents.toml"), Some(uid), None).unwrap();

    let stderr = refused(&files.validate(), "agents.toml");

    assert!(stderr.contains("owned by uid 1000"), "{stderr}");
    assert!(stderr.contains("fix: chown root:root"), "{stderr}");
}

#[test]
fn a_group_writable_directory_above_the_topology_is_refused() {
    let files = Files::new();
    std::fs::set_permissions(files.dir.path(), std::fs::Permissions::from_mode(0o775)).unwrap();
    let dir = files.dir.path().canonicalize().unwrap();

    let stderr = refused(&files.validate(), "topo.toml");

    assert!(
        stderr.contains(&format!(
            "its directory {} is group-writable",
            dir.display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("fix: chmod go-w {}", dir.display())),
        "{stderr}"
    );
}

#[test]
fn a_group_writable_included_tuning_profile_is_refused() {
    let files = Files::new();
    files.chmod("base.toml", 0o664);

    let out = files.pinwheel(&[
        "tune",
        "diff",
        "--profile",
        "profile.toml",
        "--root",
        files.dir.path().to_str().unwrap(),
    ]);

    let stderr = refused(&out, "base.toml");
    assert!(stderr.contains("group-writable"), "{stderr}");
}

#[test]
fn an_admin_token_others_can_read_stops_the_daemon_with_exit_2() {
    let files = Files::new();
    std::fs::write(files.path("admin.token"), "s3cret\n").unwrap();
    files.chmod("admin.token", 0o644);

    let out = files.pinwheel(&[
        "run",
        "--topology",
        "topo.toml",
        "--agents",
        "agents.toml",
        "--admin-addr",
        "127.0.0.1:0",
        "--admin-token-file",
        "admin.token",
        "--duration",
        "5",
    ]);

    let stderr = refused(&out, "admin.token");
    assert!(stderr.contains("(mode 0644)"), "{stderr}");
    assert!(stderr.contains("fix: chmod 600"), "{stderr}");
}
