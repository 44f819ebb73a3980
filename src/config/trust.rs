//! Files a root daemon trusts: the one place topology files, agent
//! manifests, tuning profiles (and their includes) and the admin token are
//! opened.
//!
//! A root process that reads a file anyone else can change runs that
//! person's configuration as root: a manifest names processes to start and
//! users to run them as, a profile names kernel knobs to write. So, like
//! sshd's `StrictModes`, a process whose effective uid is 0 reads a config
//! file only if
//!
//! * the file is a regular file owned by root (or the process's own uid)
//!   and not writable by group or others, and
//! * every directory from its parent up to `/` is owned by root (or the
//!   process's uid) and not writable by group or others, unless the
//!   directory has the sticky bit (as `/tmp`: there only an entry's owner
//!   may rename or remove it, and the entry below is checked in turn).
//!
//! Anything else is [`ConfigError::Untrusted`], which ends the command
//! with exit code 2 and names the file and the `chown`/`chmod` that fixes
//! it. A secret (the admin token) is checked whatever the uid, and may not
//! even be readable by group or others.
//!
//! Symlinks: the path is resolved first, the resolved file is opened with
//! `O_NOFOLLOW` and the checks run on the opened descriptor (`fstat`), so
//! the bytes read are those of the inode checked. The directories are
//! checked by path after the open; swapping one needs write access to a
//! directory above it, which the same walk refuses.
//!
//! A process that is not root reads config files without these checks:
//! nobody else's privileges ride on them.

use std::fmt;
use std::fs::{File, Metadata};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

use super::ConfigError;

/// The largest config file read, bytes. The seed's 79-agent manifest is
/// about 30 KiB; a file past this is a mistake (or `/dev/zero`).
pub const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

/// Group- and other-write bits.
const GROUP_OTHER_WRITE: u32 = 0o022;
/// Every group and other permission bit.
const GROUP_OTHER_ANY: u32 = 0o077;
/// The sticky bit.
const STICKY: u32 = 0o1000;

/// How much a file must be protected before it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strictness {
    /// Read as is (the process is not root).
    Off,
    /// A config file of a process running as `euid`: owned by root or
    /// `euid`, not writable by group or others, nor its directories.
    Config {
        /// The process's effective uid.
        euid: u32,
    },
    /// A secret: as [`Strictness::Config`], and no group or other
    /// permission at all on the file.
    Secret {
        /// The process's effective uid.
        euid: u32,
    },
}

impl Strictness {
    /// For a config file read by this process: checked when root.
    pub fn config() -> Self {
        let euid = nix::unistd::geteuid();
        if euid.is_root() {
            Strictness::Config { euid: 0 }
        } else {
            Strictness::Off
        }
    }

    /// For a secret read by this process: always checked.
    pub fn secret() -> Self {
        Strictness::Secret {
            euid: nix::unistd::geteuid().as_raw(),
        }
    }

    fn euid(self) -> Option<u32> {
        match self {
            Strictness::Off => None,
            Strictness::Config { euid } | Strictness::Secret { euid } => Some(euid),
        }
    }
}

/// What is wrong with a file or one of its directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Owned by someone other than root and the process.
    Owner {
        /// The owner.
        uid: u32,
    },
    /// Writable by group or others.
    Writable {
        /// The permission bits.
        mode: u32,
    },
    /// A secret readable (or usable at all) by group or others.
    Readable {
        /// The permission bits.
        mode: u32,
    },
    /// Not a regular file (a directory, a device, a FIFO).
    NotRegular,
}

/// A file that may not be trusted, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flaw {
    /// The file or directory at fault.
    pub culprit: PathBuf,
    /// Whether the culprit is a directory above the file.
    pub directory: bool,
    /// What is wrong with it.
    pub problem: Problem,
    /// The uid the process runs as, which may own the file too.
    pub euid: u32,
}

impl fmt::Display for Flaw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let culprit = self.culprit.display();
        if self.directory {
            write!(f, "its directory {culprit} is ")?;
        }
        let owner = if self.euid == 0 {
            "root:root".to_owned()
        } else {
            self.euid.to_string()
        };
        match &self.problem {
            Problem::Owner { uid } => write!(
                f,
                "owned by uid {uid}, who could change what pinwheel trusts; fix: chown {owner} {culprit}"
            ),
            Problem::Writable { mode } if self.directory => write!(
                f,
                "{} (mode {mode:04o}) without the sticky bit, so others could replace the file; fix: chmod go-w {culprit}",
                writable(*mode)
            ),
            Problem::Writable { mode } => write!(
                f,
                "{} (mode {mode:04o}), and pinwheel trusts no file others can change; fix: chmod go-w {culprit}",
                writable(*mode)
            ),
            Problem::Readable { mode } => write!(
                f,
                "open to group or others (mode {mode:04o}), and it holds a secret; fix: chmod 600 {culprit}"
            ),
            Problem::NotRegular => write!(f, "not a regular file; fix: name a regular file"),
        }
    }
}

fn writable(mode: u32) -> &'static str {
    match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (true, true) => "group- and world-writable",
        (false, true) => "world-writable",
        _ => "group-writable",
    }
}

/// Reads `path` as UTF-8 text once it passes `strictness`.
pub fn read(path: &Path, strictness: Strictness) -> Result<String, ConfigError> {
    let io_error = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let untrusted = |flaw| ConfigError::Untrusted {
        path: path.to_path_buf(),
        flaw,
    };
    let file = match strictness.euid() {
        None => File::open(path).map_err(io_error)?,
        Some(euid) => {
            let resolved = path.canonicalize().map_err(io_error)?;
            let file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(OFlag::O_NOFOLLOW.bits())
                .open(&resolved)
                .map_err(io_error)?;
            let meta = file.metadata().map_err(io_error)?;
            check_file(&meta, &resolved, strictness)
                .and_then(|()| check_directories(&resolved, euid))
                .map_err(untrusted)?;
            file
        }
    };
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(io_error)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.to_path_buf(),
            max_bytes: MAX_CONFIG_BYTES,
        });
    }
    Ok(text)
}

/// Checks a secret that may be absent: `Ok` if there is no file at
/// `path`, else whatever [`read`] with [`Strictness::secret`] finds wrong.
pub fn check_secret(path: &Path) -> Result<(), ConfigError> {
    match read(path, Strictness::secret()) {
        Err(ConfigError::Read { source, .. }) if source.kind() == ErrorKind::NotFound => Ok(()),
        other => other.map(drop),
    }
}

/// Checks the opened file's own metadata.
pub fn check_file(meta: &Metadata, path: &Path, strictness: Strictness) -> Result<(), Flaw> {
    let Some(euid) = strictness.euid() else {
        return Ok(());
    };
    let flaw = |problem| Flaw {
        culprit: path.to_path_buf(),
        directory: false,
        problem,
        euid,
    };
    let mode = meta.mode() & 0o7777;
    if !meta.file_type().is_file() {
        Err(flaw(Problem::NotRegular))
    } else if meta.uid() != 0 && meta.uid() != euid {
        Err(flaw(Problem::Owner { uid: meta.uid() }))
    } else if mode & GROUP_OTHER_WRITE != 0 {
        Err(flaw(Problem::Writable { mode }))
    } else if matches!(strictness, Strictness::Secret { .. }) && mode & GROUP_OTHER_ANY != 0 {
        Err(flaw(Problem::Readable { mode }))
    } else {
        Ok(())
    }
}

/// Checks every directory above `resolved` (a canonical path), nearest
/// first.
fn check_directories(resolved: &Path, euid: u32) -> Result<(), Flaw> {
    for dir in resolved.ancestors().skip(1) {
        let flaw = |problem| Flaw {
            culprit: dir.to_path_buf(),
            directory: true,
            problem,
            euid,
        };
        // A directory that vanished under us: the open already succeeded,
        // and there is nothing left to swap.
        let Ok(meta) = std::fs::symlink_metadata(dir) else {
            continue;
        };
        let mode = meta.mode() & 0o7777;
        if meta.uid() != 0 && meta.uid() != euid {
            return Err(flaw(Problem::Owner { uid: meta.uid() }));
        }
        if mode & GROUP_OTHER_WRITE != 0 && mode & STICKY == 0 {
            return Err(flaw(Problem::Writable { mode }));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    const ROOT: Strictness = Strictness::Config { euid: 0 };

    fn file_with_mode(dir: &Path, mode: u32) -> PathBuf {
        let path = dir.join("topology.toml");
        std::fs::write(&path, "schema = 1\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    fn flaw_of(result: Result<String, ConfigError>) -> Flaw {
        match result {
            Err(ConfigError::Untrusted { flaw, .. }) => flaw,
            other => panic!("expected an untrusted file, got {other:?}"),
        }
    }

    #[test]
    fn a_root_owned_file_closed_to_others_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let sut = file_with_mode(dir.path(), 0o644);

        assert_eq!(read(&sut, ROOT).unwrap(), "schema = 1\n");
    }

    #[test]
    fn a_group_writable_file_is_refused_naming_chmod() {
        let dir = tempfile::tempdir().unwrap();
        let sut = file_with_mode(dir.path(), 0o664);

        let flaw = flaw_of(read(&sut, ROOT));

        assert_eq!(flaw.problem, Problem::Writable { mode: 0o664 });
        let message = flaw.to_string();
        assert!(
            message.starts_with("group-writable (mode 0664)"),
            "{message}"
        );
        assert!(message.ends_with(&format!("fix: chmod go-w {}", sut.display())));
    }

    #[test]
    fn a_file_owned_by_another_uid_is_refused_naming_chown() {
        let dir = tempfile::tempdir().unwrap();
        let sut = file_with_mode(dir.path(), 0o644);
        nix::unistd::chown(&sut, Some(nix::unistd::Uid::from_raw(1000)), None).unwrap();

        let flaw = flaw_of(read(&sut, ROOT));

        assert_eq!(flaw.problem, Problem::Owner { uid: 1000 });
        assert!(flaw.to_string().contains("fix: chown root:root"), "{flaw}");
    }

    #[test]
    fn the_process_own_uid_may_own_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let sut = file_with_mode(dir.path(), 0o644);
        nix::unistd::chown(&sut, Some(nix::unistd::Uid::from_raw(1000)), None).unwrap();

        read(&sut, Strictness::Config { euid: 1000 }).unwrap();
    }

    #[test]
    fn a_group_writable_directory_is_refused_and_a_sticky_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let sut = file_with_mode(dir.path(), 0o644);
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o775)).unwrap();

        let flaw = flaw_of(read(&sut, ROOT));

        assert!(flaw.directory);
        assert_eq!(flaw.culprit, dir.path().canonicalize().unwrap());
        assert!(
            flaw.to_string().contains("without the sticky bit"),
            "{flaw}"
        );
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        read(&sut, ROOT).unwrap();
    }

    #[test]
    fn a_symlink_is_checked_at_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = file_with_mode(dir.path(), 0o646);
        let link = dir.path().join("link.toml");
        std::os::unix::fs::symlink(&target, &link).unwrap();

        let flaw = flaw_of(read(&link, ROOT));

        assert_eq!(flaw.culprit, target.canonicalize().unwrap());
        assert!(flaw.to_string().starts_with("world-writable"), "{flaw}");
    }

    #[test]
    fn a_secret_open_to_others_is_refused_and_a_600_one_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let sut = file_with_mode(dir.path(), 0o644);
        let secret = Strictness::Secret { euid: 0 };

        let flaw = flaw_of(read(&sut, secret));

        assert_eq!(flaw.problem, Problem::Readable { mode: 0o644 });
        assert!(flaw.to_string().contains("fix: chmod 600"), "{flaw}");
        std::fs::set_permissions(&sut, std::fs::Permissions::from_mode(0o600)).unwrap();
        read(&sut, secret).unwrap();
    }

    #[test]
    fn a_directory_is_not_a_config_file() {
        let dir = tempfile::tempdir().unwrap();

        let flaw = flaw_of(read(dir.path(), ROOT));

        assert_eq!(flaw.problem, Problem::NotRegular);
    }

    #[test]
    fn a_file_past_the_size_limit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sut = file_with_mode(dir.path(), 0o644);
        let big = vec![b'#'; MAX_CONFIG_BYTES as usize + 1];
        std::fs::write(&sut, big).unwrap();

        let err = read(&sut, ROOT).unwrap_err();

        assert!(matches!(err, ConfigError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn without_root_nothing_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let sut = file_with_mode(dir.path(), 0o666);

        read(&sut, Strictness::Off).unwrap();
    }
}
