#![cfg(test)]
//! `pinwheel install` and `pinwheel uninstall` in a temporary root: what
//! install writes (the unit, /etc/pinwheel, the token, the binary), and
//! that uninstall leaves the tree exactly as it was, keeps a file the
//! operator changed, and removes nothing install did not write.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

const CRATE: &str = env!("CARGO_MANIFEST_DIR");
const PINWHEEL: &str = env!("CARGO_BIN_EXE_pinwheel");

fn pinwheel(args: &[&str]) -> Output {
    Command::new(PINWHEEL)
        .current_dir(CRATE)
        .args(args)
        .output()
        .unwrap()
}

fn install(root: &Path, bin: &Path) -> Output {
    pinwheel(&[
        "install",
        "--root",
        root.to_str().unwrap(),
        "--bin",
        bin.to_str().unwrap(),
        "--sysfs-root",
        "tests/fixtures/sysfs/vm-2cpu/sys",
        "--name",
        "testhost",
        "--agents",
        "agents/mainpc.toml",
        "agents/pc2.toml",
    ])
}

fn uninstall(root: &Path) -> Output {
    pinwheel(&["uninstall", "--root", root.to_str().unwrap()])
}

/// Every path under `root` with its mode, owner and contents.
fn listing(root: &Path) -> BTreeMap<String, (u32, u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = path.symlink_metadata().unwrap();
            let bytes = if meta.is_file() {
                std::fs::read(&path).unwrap()
            } else {
                Vec::new()
            };
            if meta.is_dir() {
                stack.push(path.clone());
            }
            let name = path.strip_prefix(root).unwrap().display().to_string();
            out.insert(name, (meta.mode(), meta.uid(), bytes));
        }
    }
    out
}

/// A root with some of what a real one has: /etc with a file, an empty
/// /etc/systemd/system, /usr/local/bin with another program.
fn lived_in_root() -> (tempfile::TempDir, tempfile::NamedTempFile) {
    let root = tempfile::tempdir().unwrap();
    let make = |dir: &str| std::fs::create_dir_all(root.path().join(dir)).unwrap();
    make("etc/systemd/system");
    make("usr/local/bin");
    std::fs::write(root.path().join("etc/hostname"), "testhost\n").unwrap();
    std::fs::write(root.path().join("usr/local/bin/other"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        root.path().join("usr/local/bin/other"),
        std::fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    let bin = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bin.path(), b"\x7fELF pinwheel stand-in").unwrap();
    (root, bin)
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn install_then_uninstall_leaves_the_tree_as_it_was() {
    let (root, bin) = lived_in_root();
    let before = listing(root.path());

    let installed = install(root.path(), bin.path());

    assert!(installed.status.success(), "{}", text(&installed));
    let during = listing(root.path());
    let etc = root.path().join("etc/pinwheel");
    let unit =
        std::fs::read_to_string(root.path().join("etc/systemd/system/pinwheel.service")).unwrap();
    for line in [
        "Type=notify",
        "WatchdogSec=5",
        "LimitMEMLOCK=infinity",
        "Restart=on-failure",
        "ExecStart=/usr/local/bin/pinwheel run --topology /etc/pinwheel/topology.toml --agents /etc/pinwheel/agents/mainpc.toml /etc/pinwheel/agents/pc2.toml",
    ] {
        assert!(unit.contains(line), "{line} in\n{unit}");
    }
    assert!(unit.contains("CapabilityBoundingSet=CAP_SYS_NICE CAP_IPC_LOCK"));
    let token = etc.join("admin.token");
    let meta = token.metadata().unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), 0, "the token is root's (the tests run as root)");
    let token_text = std::fs::read_to_string(&token).unwrap();
    assert_eq!(token_text.trim().len(), 64, "32 random bytes in hex");
    let topology = std::fs::read_to_string(etc.join("topology.toml")).unwrap();
    assert!(topology.contains("name = \"testhost\""), "{topology}");
    assert_eq!(
        std::fs::read(etc.join("agents/pc2.toml")).unwrap(),
        std::fs::read(Path::new(CRATE).join("agents/pc2.toml")).unwrap()
    );
    assert_eq!(during["usr/local/bin/pinwheel"].0 & 0o777, 0o755);
    let said = text(&installed);
    assert!(said.contains("systemctl --root="), "{said}");
    let validated = pinwheel(&[
        "validate",
        "--topology",
        etc.join("topology.toml").to_str().unwrap(),
        "--sysfs-root",
        "tests/fixtures/sysfs/vm-2cpu/sys",
    ]);
    assert!(validated.status.success(), "{}", text(&validated));

    let removed = uninstall(root.path());

    assert!(removed.status.success(), "{}", text(&removed));
    assert_eq!(listing(root.path()), before, "{}", text(&removed));
}

#[test]
fn a_second_install_refuses_and_a_fresh_token_differs_each_time() {
    let (root, bin) = lived_in_root();
    assert!(install(root.path(), bin.path()).status.success());
    let first = std::fs::read(root.path().join("etc/pinwheel/admin.token")).unwrap();

    let again = install(root.path(), bin.path());

    assert_eq!(again.status.code(), Some(2), "{}", text(&again));
    assert!(
        text(&again).contains("never overwrites"),
        "{}",
        text(&again)
    );
    assert!(uninstall(root.path()).status.success());
    assert!(install(root.path(), bin.path()).status.success());
    let second = std::fs::read(root.path().join("etc/pinwheel/admin.token")).unwrap();
    assert_ne!(first, second);
}

#[test]
fn uninstall_keeps_a_changed_file_and_anything_install_did_not_write() {
    let (root, bin) = lived_in_root();
    assert!(install(root.path(), bin.path()).status.success());
    let topology = root.path().join("etc/pinwheel/topology.toml");
    std::fs::write(&topology, "# edited by the operator\n").unwrap();
    let extra = root.path().join("etc/pinwheel/agents/local.toml");
    std::fs::write(&extra, "# the operator's own manifest\n").unwrap();

    let removed = uninstall(root.path());

    assert!(removed.status.success(), "{}", text(&removed));
    let said = text(&removed);
    assert!(
        said.contains("kept /etc/pinwheel/topology.toml: changed since install"),
        "{said}"
    );
    assert!(
        said.contains("kept /etc/pinwheel/agents: not empty"),
        "{said}"
    );
    assert_eq!(
        std::fs::read_to_string(&topology).unwrap(),
        "# edited by the operator\n"
    );
    assert!(extra.exists());
    assert!(!root.path().join("etc/pinwheel/admin.token").exists());
    assert!(
        !root
            .path()
            .join("etc/systemd/system/pinwheel.service")
            .exists()
    );
    assert!(root.path().join("usr/local/bin/other").exists());
}

#[test]
fn uninstall_where_nothing_was_installed_is_bad_input() {
    let (root, _bin) = lived_in_root();
    let before = listing(root.path());

    let out = uninstall(root.path());

    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("no install manifest"), "{}", text(&out));
    assert_eq!(listing(root.path()), before);
}
