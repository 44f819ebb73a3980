//! `pinwheel install` and `pinwheel uninstall`: pinwheel as a systemd
//! service, and gone again.
//!
//! Install writes, under `--root` (default `/`):
//!
//! | file | mode | what |
//! | --- | --- | --- |
//! | `usr/local/bin/pinwheel` | 755 | this binary (or `--bin`) |
//! | `etc/systemd/system/pinwheel.service` | 644 | `deploy/systemd/pinwheel.service`, filled in |
//! | `etc/pinwheel/topology.toml` | 644 | this host, as `pinwheel topo detect` writes it |
//! | `etc/pinwheel/agents/*.toml` | 644 | the manifests chosen with `--agents` |
//! | `etc/pinwheel/admin.token` | 600 | 32 random bytes from the OS, hex |
//! | `etc/pinwheel/install.manifest` | 644 | every path above with its SHA-256, and the directories install created |
//!
//! and prints the `systemctl` commands to run next. It checks everything
//! first (the manifests load and plan on the detected topology, no target
//! file exists) and writes nothing if anything is wrong.
//!
//! Uninstall reads the install manifest and removes exactly those files
//! and then those directories, nothing else. A file changed since install
//! (an edited topology, say) is kept, not removed, and named, so an
//! operator's edits are never lost; a directory that is not empty then is
//! kept too. Run it again after dealing with them, or remove them by hand.

mod manifest;

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;

use self::manifest::{Entry, Manifest};
use super::CliError;
use super::SysfsArg;
use crate::config::AgentSet;
use crate::error::DaemonError;
use crate::plan::Plan;
use crate::topology;

/// The unit file's template.
const UNIT_TEMPLATE: &str = include_str!("../../../deploy/systemd/pinwheel.service");
/// Where the installed files go, under the root.
const BIN: &str = "usr/local/bin/pinwheel";
const UNIT: &str = "etc/systemd/system/pinwheel.service";
const TOPOLOGY: &str = "etc/pinwheel/topology.toml";
const AGENTS: &str = "etc/pinwheel/agents";
const TOKEN: &str = "etc/pinwheel/admin.token";
const MANIFEST: &str = "etc/pinwheel/install.manifest";
/// Random bytes in the admin token.
const TOKEN_BYTES: usize = 32;

/// Errors of install and uninstall.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// A file install would write is there already.
    #[error(
        "{} exists; pinwheel install never overwrites (run `pinwheel uninstall{}` first, or move it away)",
        path.display(), root_flag(root)
    )]
    Exists {
        /// The file.
        path: PathBuf,
        /// The root given.
        root: PathBuf,
    },
    /// Nothing was installed under this root.
    #[error("{}: no install manifest; nothing was installed there by pinwheel install", path.display())]
    NotInstalled {
        /// The manifest's path.
        path: PathBuf,
    },
    /// The install manifest is not one install wrote.
    #[error("{}, line {line}: {reason}", path.display())]
    Manifest {
        /// The manifest's path.
        path: PathBuf,
        /// Its line, from 1.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A file could not be read, written or removed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The OS gave no random bytes for the token.
    #[error("no random bytes for the admin token: {reason}")]
    Random {
        /// Why.
        reason: String,
    },
}

impl InstallError {
    /// Whether the operator's input is at fault (exit 2) rather than the
    /// system (exit 1).
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            InstallError::Exists { .. }
                | InstallError::NotInstalled { .. }
                | InstallError::Manifest { .. }
        )
    }
}

fn root_flag(root: &Path) -> String {
    if root == Path::new("/") {
        String::new()
    } else {
        format!(" --root {}", root.display())
    }
}

/// `pinwheel install`.
#[derive(Debug, Args)]
pub struct InstallArgs {
    /// Install under this directory instead of `/` (an image, or a test).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// The agent manifests the service runs.
    #[arg(long, value_name = "FILE", num_args = 1.., default_values = ["agents/mainpc.toml"])]
    pub agents: Vec<PathBuf>,
    /// The binary to install (default: this one).
    #[arg(long, value_name = "FILE")]
    pub bin: Option<PathBuf>,
    /// The host name written into the topology (default: this host's).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Where sysfs is, for detecting this host's CPUs.
    #[command(flatten)]
    pub sysfs: SysfsArg,
}

/// `pinwheel uninstall`.
#[derive(Debug, Args)]
pub struct UninstallArgs {
    /// The directory `pinwheel install --root` wrote under.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
}

/// A file to write: where (relative to the root), its mode, its bytes.
struct Planned {
    path: PathBuf,
    mode: u32,
    bytes: Vec<u8>,
}

pub(super) fn install(args: &InstallArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let files = plan_files(args)?;
    for file in &files {
        let path = args.root.join(&file.path);
        if path.symlink_metadata().is_ok() {
            return Err(InstallError::Exists {
                path,
                root: args.root.clone(),
            }
            .into());
        }
    }
    let mut manifest = Manifest::default();
    for file in &files {
        let parent = file.path.parent().unwrap_or(Path::new(""));
        manifest
            .dirs
            .extend(manifest::create_dirs(&args.root, parent)?);
        manifest::write_file(&args.root.join(&file.path), file.mode, &file.bytes)?;
        manifest
            .files
            .push(Entry::of(&file.path, file.mode, &file.bytes));
    }
    manifest::write_file(
        &args.root.join(MANIFEST),
        0o644,
        manifest.render().as_bytes(),
    )?;
    out.write_all(install_report(args, &manifest).as_bytes())?;
    Ok(())
}

/// Everything install writes, checked: the manifests load and plan on
/// this host's detected topology.
fn plan_files(args: &InstallArgs) -> Result<Vec<Planned>, CliError> {
    let topology = detect_and_check(args)?;
    let mut files = agent_files(&args.agents)?;
    let installed_agents: Vec<String> = files
        .iter()
        .map(|f| format!("/{}", f.path.display()))
        .collect();
    let bin = match &args.bin {
        Some(bin) => bin.clone(),
        None => std::env::current_exe()?,
    };
    let unit = UNIT_TEMPLATE
        .replace("@BIN@", &format!("/{BIN}"))
        .replace("@AGENTS@", &installed_agents.join(" "));
    let file = |path: &str, mode, bytes| Planned {
        path: path.into(),
        mode,
        bytes,
    };
    files.push(file(TOPOLOGY, 0o644, topology.into_bytes()));
    files.push(file(TOKEN, 0o600, token()?.into_bytes()));
    files.push(file(UNIT, 0o644, unit.into_bytes()));
    files.push(file(BIN, 0o755, read(&bin)?));
    Ok(files)
}

/// This host's topology file, checked with the manifests: they load and
/// plan on it.
fn detect_and_check(args: &InstallArgs) -> Result<String, DaemonError> {
    let name = match &args.name {
        Some(name) => name.clone(),
        None => super::files::default_host_name(&args.sysfs.sysfs_root),
    };
    let host = topology::detect_host(&args.sysfs.sysfs_root)?;
    let text = topology::render_detect_toml(&host, &name);
    let agents = AgentSet::load(&args.agents)?;
    let mut scratch = tempfile::NamedTempFile::new()?;
    scratch.write_all(text.as_bytes())?;
    let detected = topology::load(scratch.path(), &args.sysfs.sysfs_root)?;
    Plan::build(&detected, &agents)?;
    Ok(text)
}

/// The manifests, each under `etc/pinwheel/agents/` by its file name.
fn agent_files(sources: &[PathBuf]) -> Result<Vec<Planned>, CliError> {
    let mut files: Vec<Planned> = Vec::new();
    for source in sources {
        let file_name = source
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| !n.contains('\n'))
            .ok_or_else(|| DaemonError::Usage {
                message: format!(
                    "--agents {}: install needs a UTF-8 file name without newlines",
                    source.display()
                ),
            })?;
        let path = Path::new(AGENTS).join(file_name);
        if files.iter().any(|f| f.path == path) {
            return Err(DaemonError::Usage {
                message: format!("--agents: two manifests are named {file_name}; rename one"),
            }
            .into());
        }
        files.push(Planned {
            bytes: read(source)?,
            path,
            mode: 0o644,
        });
    }
    Ok(files)
}

fn read(path: &Path) -> Result<Vec<u8>, InstallError> {
    std::fs::read(path).map_err(|source| InstallError::Io {
        what: "cannot read",
        path: path.to_owned(),
        source,
    })
}

/// A fresh admin token: [`TOKEN_BYTES`] from the OS's random source, hex.
fn token() -> Result<String, InstallError> {
    use rand::TryRngCore;
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|err| InstallError::Random {
            reason: err.to_string(),
        })?;
    let mut text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    text.push('\n');
    Ok(text)
}

fn install_report(args: &InstallArgs, manifest: &Manifest) -> String {
    let mut out = format!("installed pinwheel under {}:\n", args.root.display());
    for entry in &manifest.files {
        out.push_str(&format!("  {:o} /{}\n", entry.mode, entry.path.display()));
    }
    out.push_str(&format!("  644 /{MANIFEST} (what uninstall removes)\n"));
    out.push_str("\nnext:\n");
    if args.root == Path::new("/") {
        out.push_str("  systemctl daemon-reload\n  systemctl enable --now pinwheel\n");
        out.push_str("  journalctl -u pinwheel -f\n  pinwheel top\n");
    } else {
        out.push_str(&format!(
            "  systemctl --root={} enable pinwheel\n",
            args.root.display()
        ));
    }
    out.push_str(&format!(
        "edit /{TOPOLOGY} to move CPUs between roles; `pinwheel uninstall{}` removes all of it\n",
        root_flag(&args.root)
    ));
    out
}

pub(super) fn uninstall(args: &UninstallArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let manifest_path = args.root.join(MANIFEST);
    let text = match std::fs::read_to_string(&manifest_path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(InstallError::NotInstalled {
                path: manifest_path,
            }
            .into());
        }
        Err(source) => {
            return Err(InstallError::Io {
                what: "cannot read",
                path: manifest_path,
                source,
            }
            .into());
        }
    };
    let manifest = Manifest::parse(&text, &manifest_path)?;
    let outcome = manifest::remove(&args.root, &manifest)?;
    manifest::remove_file(&manifest_path)?;
    let kept_dirs = manifest::remove_dirs(&args.root, &manifest.dirs)?;
    let mut report = format!(
        "removed {} files and {} directories pinwheel install wrote under {}\n",
        outcome.removed + 1,
        manifest.dirs.len() - kept_dirs.len(),
        args.root.display()
    );
    for path in &outcome.changed {
        report.push_str(&format!(
            "kept /{}: changed since install (remove it by hand if it is not wanted)\n",
            path.display()
        ));
    }
    for path in &outcome.missing {
        report.push_str(&format!("already gone: /{}\n", path.display()));
    }
    for path in &kept_dirs {
        report.push_str(&format!("kept /{}: not empty\n", path.display()));
    }
    if args.root == Path::new("/") {
        report.push_str("next: systemctl daemon-reload\n");
    }
    out.write_all(report.as_bytes())?;
    Ok(())
}
