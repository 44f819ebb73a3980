//! The registry's snapshot: a JSON file written atomically and read back at
//! boot (see the parent module's doc for the protocol and the health of
//! loaded entries).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::topology::CpuId;
use pinwheel_ipc::wire::AgentId;

use super::{Record, Registry, RegistryConfig, RegistryError};

/// The snapshot format this build writes and reads.
pub const SNAPSHOT_VERSION: u32 = 1;

impl Registry {
    /// Writes the registry to `path` atomically (see the module doc).
    pub fn save(&self, path: &Path) -> Result<(), RegistryError> {
        write_snapshot(path, &self.snapshot_bytes())
    }

    /// The snapshot's bytes, for a caller that writes them elsewhere (the
    /// runtime encodes on its executor and writes on a blocking thread,
    /// so an fsync never stalls the executor).
    pub fn snapshot_bytes(&self) -> Vec<u8> {
        let mut agents: Vec<AgentLine> = self
            .iter()
            .map(|(name, entry)| AgentLine::of(name, entry.record()))
            .collect();
        agents.sort_by(|a, b| a.name.cmp(&b.name));
        let file = SnapshotFile {
            version: SNAPSHOT_VERSION,
            agents,
        };
        let mut bytes =
            serde_json::to_vec_pretty(&file).expect("strings and integers always encode as JSON");
        bytes.push(b'\n');
        bytes
    }

    /// Reads a snapshot written by [`Registry::save`]. A missing file is an
    /// empty registry. Loaded entries are [`Health::Stale`](super::Health::Stale) until heard
    /// from, and [`Health::Down`](super::Health::Down) once the down threshold has passed since
    /// `now_ns` without a heartbeat.
    pub fn load(path: &Path, config: RegistryConfig, now_ns: u64) -> Result<Self, RegistryError> {
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self::with_config(config));
            }
            Err(source) => {
                return Err(RegistryError::Io {
                    op: "read",
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let file = parse_snapshot(path, &bytes)?;
        if file.agents.len() > config.capacity {
            return Err(RegistryError::SnapshotTooBig {
                path: path.to_path_buf(),
                agents: file.agents.len(),
                capacity: config.capacity,
            });
        }
        let mut registry = Self::with_config(config);
        for line in file.agents {
            let (name, record) = line.into_record();
            registry
                .restore(name, record, now_ns)
                .map_err(|message| RegistryError::Corrupt {
                    path: path.to_path_buf(),
                    message,
                })?;
        }
        Ok(registry)
    }
}

/// The snapshot file. Ids are plain numbers here: the file format is its
/// own contract, apart from the wire types.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotFile {
    version: u32,
    agents: Vec<AgentLine>,
}

/// Read first and leniently, so that a file of another version is
/// reported as such rather than as a field this version does not know.
#[derive(Debug, Deserialize)]
struct VersionProbe {
    version: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentLine {
    name: String,
    id: u32,
    host: String,
    cpu: u32,
    role: String,
}

impl AgentLine {
    fn of(name: &str, record: &Record) -> Self {
        Self {
            name: name.to_owned(),
            id: record.id.0,
            host: record.host.clone(),
            cpu: record.cpu.0,
            role: record.role.clone(),
        }
    }

    fn into_record(self) -> (String, Record) {
        let record = Record {
            id: AgentId(self.id),
            host: self.host,
            cpu: CpuId(self.cpu),
            role: self.role,
        };
        (self.name, record)
    }
}

fn parse_snapshot(path: &Path, bytes: &[u8]) -> Result<SnapshotFile, RegistryError> {
    let corrupt = |message: String| RegistryError::Corrupt {
        path: path.to_path_buf(),
        message,
    };
    let probe: VersionProbe =
        serde_json::from_slice(bytes).map_err(|err| corrupt(err.to_string()))?;
    match probe.version {
        None => return Err(corrupt("it has no `version` field".to_owned())),
        Some(found) if found != u64::from(SNAPSHOT_VERSION) => {
            return Err(RegistryError::UnsupportedVersion {
                path: path.to_path_buf(),
                found,
                supported: SNAPSHOT_VERSION,
            });
        }
        Some(_) => {}
    }
    serde_json::from_slice(bytes).map_err(|err| corrupt(err.to_string()))
}

/// Where [`write_snapshot`] stages `path`: a hidden file in the same
/// directory (a rename is only atomic within one file system). The name is
/// fixed, not unique per process: one daemon owns the snapshot, and a fixed
/// name means a crash leaves at most one stray file, which the next save
/// truncates.
fn temp_path(path: &Path) -> Result<PathBuf, RegistryError> {
    let name = path.file_name().ok_or_else(|| RegistryError::BadPath {
        path: path.to_path_buf(),
    })?;
    let mut temp = std::ffi::OsString::from(".");
    temp.push(name);
    temp.push(".tmp");
    Ok(path.with_file_name(temp))
}

/// Writes snapshot bytes to `path` atomically: a temporary file, fsync,
/// rename over `path`, fsync of the directory.
pub fn write_snapshot(path: &Path, bytes: &[u8]) -> Result<(), RegistryError> {
    let temp = temp_path(path)?;
    let io = |op: &'static str, at: &Path| {
        let at = at.to_path_buf();
        move |source| RegistryError::Io {
            op,
            path: at,
            source,
        }
    };
    let staged = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)
        .map_err(io("create", &temp))
        .and_then(|mut file| {
            file.write_all(bytes).map_err(io("write", &temp))?;
            file.sync_all().map_err(io("fsync", &temp))
        });
    if let Err(err) = staged {
        // Best effort: the next save truncates the file anyway.
        let _ = fs::remove_file(&temp);
        return Err(err);
    }
    fs::rename(&temp, path).map_err(io("rename", path))?;
    // The rename is durable only once the directory entry is.
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|dir_file| dir_file.sync_all())
        .map_err(io("fsync the directory of", dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::registry::Health;

    const SECOND_NS: u64 = 1_000_000_000;

    fn record(id: u32, role: &str) -> Record {
        Record {
            id: AgentId(id),
            host: "mainpc".to_owned(),
            cpu: CpuId(3),
            role: role.to_owned(),
        }
    }

    fn snapshot_path(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("registry.json")
    }

    #[test]
    fn a_saved_registry_loads_back_with_the_same_agents() {
        let dir = tempfile::tempdir().unwrap();
        let path = snapshot_path(&dir);
        let mut original = Registry::new(8);
        original.register("stt", record(7, "speech"), 0).unwrap();
        original.register("tts", record(8, "voice"), 0).unwrap();

        original.save(&path).unwrap();
        let sut = Registry::load(&path, RegistryConfig::with_capacity(8), 0).unwrap();

        assert_eq!(sut.len(), 2);
        assert_eq!(sut.lookup("stt").unwrap().record(), &record(7, "speech"));
        assert_eq!(sut.lookup_id(AgentId(8)).unwrap().0, "tts");
        assert!(!sut.is_dirty());
        assert!(!dir.path().join(".registry.json.tmp").exists());
    }

    #[test]
    fn loaded_agents_are_stale_until_heard_from_and_down_if_never() {
        let dir = tempfile::tempdir().unwrap();
        let path = snapshot_path(&dir);
        let mut original = Registry::new(8);
        original.register("stt", record(7, ""), 0).unwrap();
        original.register("tts", record(8, ""), 0).unwrap();
        original.save(&path).unwrap();
        let loaded_ns = 1_000 * SECOND_NS;

        let mut sut = Registry::load(&path, RegistryConfig::with_capacity(8), loaded_ns).unwrap();
        assert_eq!(sut.health("stt", loaded_ns), Some(Health::Stale));
        assert_eq!(sut.lookup("stt").unwrap().last_heard_ns(), None);
        sut.heartbeat("stt", loaded_ns + SECOND_NS).unwrap();

        assert_eq!(sut.health("stt", loaded_ns + SECOND_NS), Some(Health::Up));
        assert_eq!(
            sut.health("tts", loaded_ns + 9 * SECOND_NS),
            Some(Health::Stale)
        );
        assert_eq!(
            sut.health("tts", loaded_ns + 10 * SECOND_NS),
            Some(Health::Down)
        );
    }

    #[test]
    fn a_missing_snapshot_is_an_empty_registry() {
        let dir = tempfile::tempdir().unwrap();

        let sut =
            Registry::load(&snapshot_path(&dir), RegistryConfig::with_capacity(3), 0).unwrap();

        assert!(sut.is_empty());
        assert_eq!(sut.capacity(), 3);
    }

    #[test]
    fn a_crash_before_the_rename_leaves_the_previous_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let path = snapshot_path(&dir);
        let mut original = Registry::new(8);
        original.register("stt", record(7, ""), 0).unwrap();
        original.save(&path).unwrap();
        // The next save died after writing part of its temporary file.
        fs::write(
            temp_path(&path).unwrap(),
            b"{\"version\": 1, \"agents\": [{\"na",
        )
        .unwrap();

        let mut sut = Registry::load(&path, RegistryConfig::with_capacity(8), 0).unwrap();

        assert_eq!(sut.len(), 1);
        assert!(sut.lookup("stt").is_some());
        sut.register("tts", record(8, ""), 0).unwrap();
        sut.save(&path).unwrap();
        let reloaded = Registry::load(&path, RegistryConfig::with_capacity(8), 0).unwrap();
        assert_eq!(reloaded.len(), 2);
    }

    #[test]
    fn a_corrupt_snapshot_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = snapshot_path(&dir);
        fs::write(&path, b"{\"version\": 1, \"agents\": [").unwrap();

        let err = Registry::load(&path, RegistryConfig::with_capacity(8), 0).unwrap_err();

        assert!(matches!(err, RegistryError::Corrupt { .. }));
        assert!(err.to_string().contains("registry.json"));
        assert!(err.to_string().contains("corrupt"));
    }

    #[test]
    fn a_snapshot_with_contradicting_entries_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = snapshot_path(&dir);
        let line =
            |name: &str| format!(r#"{{"name":"{name}","id":7,"host":"mainpc","cpu":1,"role":""}}"#);
        let text = format!(r#"{{"version":1,"agents":[{},{}]}}"#, line("a"), line("b"));
        fs::write(&path, text).unwrap();

        let err = Registry::load(&path, RegistryConfig::with_capacity(8), 0).unwrap_err();

        assert!(err.to_string().contains("share id 7"), "{err}");
    }

    #[test]
    fn a_snapshot_without_a_version_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = snapshot_path(&dir);
        fs::write(&path, br#"{"agents": []}"#).unwrap();

        let err = Registry::load(&path, RegistryConfig::with_capacity(8), 0).unwrap_err();

        assert!(err.to_string().contains("no `version`"), "{err}");
    }

    #[test]
    fn a_snapshot_of_an_unknown_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = snapshot_path(&dir);
        fs::write(&path, br#"{"version": 2, "agents": [], "shards": 4}"#).unwrap();

        let err = Registry::load(&path, RegistryConfig::with_capacity(8), 0).unwrap_err();

        assert!(matches!(
            err,
            RegistryError::UnsupportedVersion {
                found: 2,
                supported: 1,
                ..
            }
        ));
        assert!(err.to_string().contains("registry.json"));
    }

    #[test]
    fn a_snapshot_larger_than_the_capacity_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = snapshot_path(&dir);
        let mut original = Registry::new(8);
        original.register("a", record(1, ""), 0).unwrap();
        original.register("b", record(2, ""), 0).unwrap();
        original.save(&path).unwrap();

        let err = Registry::load(&path, RegistryConfig::with_capacity(1), 0).unwrap_err();

        assert!(matches!(
            err,
            RegistryError::SnapshotTooBig {
                agents: 2,
                capacity: 1,
                ..
            }
        ));
    }

    #[test]
    fn saving_to_a_path_without_a_file_name_is_an_error() {
        let sut = Registry::new(1);

        let err = sut.save(Path::new("/")).unwrap_err();

        assert!(matches!(err, RegistryError::BadPath { .. }));
    }
}
