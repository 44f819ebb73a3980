//! Credentials: files the daemon reads when it starts an agent and hands
//! it in a private directory, as systemd's `LoadCredential=` does: the
//! path is in `$CREDENTIALS_DIRECTORY`, the directory is the agent's
//! (mode 0500) and each file is mode 0400, owned by the agent's user.
//!
//! A secret never goes anywhere else: not into the environment, not into
//! a log line (errors name the file, never its content), not into the
//! admin API or reports. The directory lives under the daemon's run
//! directory (`/run/pinwheel/credentials/<agent>`, a tmpfs: never on
//! disk), is written afresh for every incarnation and removed when the
//! agent stops.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid, chown};

/// The largest credential file, bytes.
pub const MAX_CREDENTIAL_BYTES: u64 = 1 << 20;

/// Writes `agent`'s credentials under `root` for the account `owner`
/// (`None`: the daemon's own); returns the directory.
pub fn install(
    root: &Path,
    agent: &str,
    credentials: &[(String, PathBuf)],
    owner: Option<(Uid, Gid)>,
) -> Result<PathBuf, String> {
    let dir = root.join(agent);
    remove(&dir);
    std::fs::create_dir_all(root)
        .map_err(|err| format!("cannot create {}: {err}", root.display()))?;
    std::fs::create_dir(&dir).map_err(|err| format!("cannot create {}: {err}", dir.display()))?;
    set_mode(&dir, 0o700)?;
    for (name, source) in credentials {
        let secret = read(source)?;
        let path = dir.join(name);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o400)
            .open(&path)
            .map_err(|err| format!("cannot create credential {name}: {err}"))?;
        file.write_all(&secret)
            .map_err(|err| format!("cannot write credential {name}: {err}"))?;
        if let Some((uid, gid)) = owner {
            chown(&path, Some(uid), Some(gid))
                .map_err(|err| format!("cannot give credential {name} to uid {uid}: {err}"))?;
        }
    }
    if let Some((uid, gid)) = owner {
        chown(&dir, Some(uid), Some(gid))
            .map_err(|err| format!("cannot give {} to uid {uid}: {err}", dir.display()))?;
    }
    set_mode(&dir, 0o500)?;
    Ok(dir)
}

/// Removes a credentials directory (missing is fine).
pub fn remove(dir: &Path) {
    if dir.exists() {
        let _ = set_mode(dir, 0o700);
        if let Err(err) = std::fs::remove_dir_all(dir) {
            tracing::warn!(dir = %dir.display(), error = %err, "credentials not removed");
        }
    }
}

fn read(source: &Path) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(source)
        .map_err(|err| format!("cannot read credential file {}: {err}", source.display()))?;
    if !meta.is_file() || meta.len() > MAX_CREDENTIAL_BYTES {
        return Err(format!(
            "credential file {} must be a regular file of at most {MAX_CREDENTIAL_BYTES} bytes",
            source.display()
        ));
    }
    std::fs::read(source)
        .map_err(|err| format!("cannot read credential file {}: {err}", source.display()))
}

fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|err| format!("cannot set the mode of {}: {err}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn credentials_land_as_0400_files_in_a_0500_directory_owned_by_the_agent() {
        let tmp = tempfile::tempdir().unwrap();
        let source = tmp.path().join("src");
        std::fs::write(&source, b"s3cret").unwrap();
        let owner = (Uid::from_raw(65534), Gid::from_raw(65534));
        let dir = install(
            &tmp.path().join("creds"),
            "Echo",
            &[("api_key".into(), source)],
            Some(owner),
        )
        .unwrap();
        let file = std::fs::metadata(dir.join("api_key")).unwrap();
        assert_eq!(file.mode() & 0o777, 0o400);
        assert_eq!((file.uid(), file.gid()), (65534, 65534));
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o500);
        assert_eq!(std::fs::read(dir.join("api_key")).unwrap(), b"s3cret");
        remove(&dir);
        assert!(!dir.exists());
    }

    #[test]
    fn a_missing_credential_names_the_file_only() {
        let tmp = tempfile::tempdir().unwrap();
        let err = install(
            tmp.path(),
            "A",
            &[("k".into(), tmp.path().join("nope"))],
            None,
        )
        .unwrap_err();
        assert!(err.contains("nope"), "{err}");
    }
}
