//! The install manifest: what `pinwheel install` wrote, so that
//! `pinwheel uninstall` removes exactly that.
//!
//! ```text
//! # pinwheel install manifest: what `pinwheel uninstall` removes
//! file 755 <sha256 hex> usr/local/bin/pinwheel
//! dir etc/pinwheel
//! ```
//!
//! Paths are relative to the root. A file line carries the SHA-256 of what
//! install wrote, so uninstall can tell an operator's edit from its own
//! file; a dir line is a directory install created (one that was there
//! before is not listed, so it is never removed). The parser accepts only
//! the paths install writes and their parent directories: a manifest
//! edited to name `etc/passwd` removes nothing.

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use ring::digest::{SHA256, digest};

use super::{AGENTS, BIN, InstallError, MANIFEST, TOKEN, TOPOLOGY, UNIT};

const HEADER: &str = "# pinwheel install manifest: what `pinwheel uninstall` removes";

/// A file install wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative to the root.
    pub path: PathBuf,
    /// Its mode.
    pub mode: u32,
    /// SHA-256 of its bytes, hex.
    pub sha256: String,
}

impl Entry {
    /// The entry for `bytes` written at `path`.
    pub fn of(path: &Path, mode: u32, bytes: &[u8]) -> Entry {
        Entry {
            path: path.to_owned(),
            mode,
            sha256: sha256(bytes),
        }
    }
}

/// Everything install wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    /// Files, in the order written.
    pub files: Vec<Entry>,
    /// Directories created, parents first.
    pub dirs: Vec<PathBuf>,
}

/// What uninstall did with the files.
#[derive(Debug, Default)]
pub struct Removal {
    /// Files removed.
    pub removed: usize,
    /// Files kept because they changed since install.
    pub changed: Vec<PathBuf>,
    /// Files already gone.
    pub missing: Vec<PathBuf>,
}

impl Manifest {
    /// The manifest's text.
    pub fn render(&self) -> String {
        let mut out = format!("{HEADER}\n");
        for file in &self.files {
            out.push_str(&format!(
                "file {:o} {} {}\n",
                file.mode,
                file.sha256,
                file.path.display()
            ));
        }
        for dir in &self.dirs {
            out.push_str(&format!("dir {}\n", dir.display()));
        }
        out
    }

    /// Reads a manifest, accepting only what install writes.
    pub fn parse(text: &str, source: &Path) -> Result<Manifest, InstallError> {
        let mut manifest = Manifest::default();
        for (i, line) in text.lines().enumerate() {
            let bad = |reason: String| InstallError::Manifest {
                path: source.to_owned(),
                line: i + 1,
                reason,
            };
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(path) = line.strip_prefix("dir ") {
                let path = PathBuf::from(path);
                if !is_install_dir(&path) {
                    return Err(bad(format!("{path:?} is not a directory install creates")));
                }
                manifest.dirs.push(path);
                continue;
            }
            let Some(rest) = line.strip_prefix("file ") else {
                return Err(bad("expected `file` or `dir`".to_owned()));
            };
            let mut parts = rest.splitn(3, ' ');
            let (Some(mode), Some(hash), Some(path)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(bad("expected `file MODE SHA256 PATH`".to_owned()));
            };
            let mode = u32::from_str_radix(mode, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .ok_or_else(|| bad(format!("mode {mode:?} is not octal")))?;
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(format!("{hash:?} is not a SHA-256")));
            }
            let path = PathBuf::from(path);
            if !is_install_file(&path) {
                return Err(bad(format!("{path:?} is not a file install writes")));
            }
            manifest.files.push(Entry {
                path,
                mode,
                sha256: hash.to_ascii_lowercase(),
            });
        }
        Ok(manifest)
    }
}

/// Relative, plain (no `..`, no `.`, no root).
fn is_plain(path: &Path) -> bool {
    path.components().all(|c| matches!(c, Component::Normal(_)))
}

fn is_install_file(path: &Path) -> bool {
    if !is_plain(path) {
        return false;
    }
    let fixed = [BIN, UNIT, TOPOLOGY, TOKEN, MANIFEST];
    fixed.iter().any(|f| path == Path::new(f))
        || (path.parent() == Some(Path::new(AGENTS)) && path.extension() == Some("toml".as_ref()))
}

/// A directory above a file install writes (an agent manifest stands for
/// all of them).
fn is_install_dir(path: &Path) -> bool {
    let agent = Path::new(AGENTS).join("agents.toml");
    is_plain(path)
        && [Path::new(BIN), Path::new(UNIT), Path::new(TOPOLOGY), &agent]
            .iter()
            .any(|file| file.starts_with(path) && *file != path)
}

/// SHA-256 of `bytes`, hex.
pub fn sha256(bytes: &[u8]) -> String {
    digest(&SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Creates the directories of `dir` (relative) under `root` that do not
/// exist, mode 755; returns them, parents first.
pub fn create_dirs(root: &Path, dir: &Path) -> Result<Vec<PathBuf>, InstallError> {
    let mut created = Vec::new();
    let mut at = PathBuf::new();
    for part in dir.components() {
        at.push(part);
        let full = root.join(&at);
        if full.symlink_metadata().is_ok() {
            continue;
        }
        DirBuilder::new()
            .mode(0o755)
            .create(&full)
            .and_then(|()| set_mode(&full, 0o755))
            .map_err(|source| InstallError::Io {
                what: "cannot create directory",
                path: full.clone(),
                source,
            })?;
        created.push(at.clone());
    }
    Ok(created)
}

/// Writes a new file (never over an old one) with exactly `mode`.
pub fn write_file(path: &Path, mode: u32, bytes: &[u8]) -> Result<(), InstallError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        // The umask may have taken bits off.
        .and_then(|()| set_mode(path, mode))
        .map_err(|source| InstallError::Io {
            what: "cannot write",
            path: path.to_owned(),
            source,
        })
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Removes `path`.
pub fn remove_file(path: &Path) -> Result<(), InstallError> {
    std::fs::remove_file(path).map_err(|source| InstallError::Io {
        what: "cannot remove",
        path: path.to_owned(),
        source,
    })
}

/// Removes the manifest's files that are as install wrote them.
pub fn remove(root: &Path, manifest: &Manifest) -> Result<Removal, InstallError> {
    let mut removal = Removal::default();
    for entry in &manifest.files {
        let full = root.join(&entry.path);
        let bytes = match std::fs::read(&full) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                removal.missing.push(entry.path.clone());
                continue;
            }
            Err(source) => {
                return Err(InstallError::Io {
                    what: "cannot read",
                    path: full,
                    source,
                });
            }
        };
        if sha256(&bytes) == entry.sha256 {
            remove_file(&full)?;
            removal.removed += 1;
        } else {
            removal.changed.push(entry.path.clone());
        }
    }
    Ok(removal)
}

/// Removes the directories install created, deepest first; returns those
/// kept because something else is in them now.
pub fn remove_dirs(root: &Path, dirs: &[PathBuf]) -> Result<Vec<PathBuf>, InstallError> {
    let mut deepest_first = dirs.to_vec();
    deepest_first.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    let mut kept = Vec::new();
    for dir in deepest_first {
        let full = root.join(&dir);
        match std::fs::remove_dir(&full) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) if err.kind() == std::io::ErrorKind::DirectoryNotEmpty => kept.push(dir),
            Err(source) => {
                return Err(InstallError::Io {
                    what: "cannot remove directory",
                    path: full,
                    source,
                });
            }
        }
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_reads_back_as_it_was_written() {
        let sut = Manifest {
            files: vec![
                Entry::of(Path::new(BIN), 0o755, b"elf"),
                Entry::of(Path::new("etc/pinwheel/agents/my agents.toml"), 0o644, b"x"),
            ],
            dirs: vec!["etc/pinwheel".into(), "etc/pinwheel/agents".into()],
        };

        let back = Manifest::parse(&sut.render(), Path::new("m")).unwrap();

        assert_eq!(back, sut);
    }

    #[test]
    fn a_manifest_naming_other_files_is_refused() {
        let hash = sha256(b"");
        for line in [
            format!("file 644 {hash} etc/passwd"),
            format!("file 644 {hash} etc/pinwheel/agents/../../passwd.toml"),
            format!("file 644 {hash} /etc/pinwheel/topology.toml"),
            "dir var".to_owned(),
            "dir usr/local/bin/pinwheel".to_owned(),
            format!("file 9999 {hash} {BIN}"),
            format!("file 644 abc {BIN}"),
        ] {
            let err = Manifest::parse(&line, Path::new("m")).unwrap_err();
            assert!(
                matches!(err, InstallError::Manifest { line: 1, .. }),
                "{line}: {err}"
            );
        }
    }

    #[test]
    fn the_parent_directories_of_installed_files_are_accepted() {
        for dir in [
            "etc",
            "etc/pinwheel",
            "etc/pinwheel/agents",
            "usr/local/bin",
            "etc/systemd/system",
        ] {
            assert!(is_install_dir(Path::new(dir)), "{dir}");
        }
    }
}
