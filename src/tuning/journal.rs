//! The tuning journal: each knob's original bytes, on disk before the knob
//! is first written.
//!
//! `<root>/run/pinwheel/tuning.journal` is append-only text, one record a
//! line: the knob's path and its original bytes, both hex (a knob's bytes
//! may hold anything, tabs and newlines included). Each record is written
//! with one `write(2)` and fsynced before the knob is touched; creating the
//! file also fsyncs the directory. A crash can therefore leave at most one
//! torn last line, and that record's knob was never written, so a line
//! without its newline is ignored.
//!
//! A knob is recorded once per journal: the first original wins, so
//! applying again never records a value pinwheel wrote. Revert rewrites
//! the journal with the records it could not restore (atomically: temp
//! file, fsync, rename) or removes it when all are back.
//!
//! `tuning.lock` beside it, held with `flock` for as long as a process
//! applies or runs tuned, keeps two pinwheels from interleaving records.
//! The lock file is never removed, so every process locks the same inode.
//!
//! The journal tells a root process which files to write and with what,
//! so it is handled as hostile input: the journal, its replacement and the
//! lock are opened with `O_NOFOLLOW` (a symlink planted in their place is
//! an error, never followed to `/etc/shadow`), the journal must be a
//! regular file, and [`knob_problem`] refuses, at replay, any record whose
//! path is not a kernel knob pinwheel could have written: a path outside
//! `/proc/sys`, `/proc/irq` (the `[isolation]` interrupt affinities),
//! `/sys` and `/dev/cpu_dma_latency`, or one with a `..`.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{Flock, FlockArg, OFlag};

use super::TuningError;
use super::knob::resolve;

/// Where the journal is, relative to the root.
pub const JOURNAL_PATH: &str = "/run/pinwheel/tuning.journal";
/// The lock file, relative to the root.
const LOCK_PATH: &str = "/run/pinwheel/tuning.lock";
/// First line of a journal.
const HEADER: &[u8] =
    b"# pinwheel tuning journal 1: <hex path> <hex original bytes>, one knob a line\n";

/// Where on a host the knobs pinwheel writes live: sysctls, sysfs,
/// interrupt affinity (`[isolation]`) and the PM QoS device; a record
/// outside them is refused at replay.
pub const KNOB_PREFIXES: [&str; 4] = ["/proc/sys/", "/proc/irq/", "/sys/", "/dev/cpu_dma_latency"];

/// The journal file under `root`.
pub fn journal_path(root: &Path) -> PathBuf {
    resolve(root, JOURNAL_PATH)
}

/// Why a journal record's path is not one replay may write, if it is not:
/// it must be absolute, free of `.` and `..` components, and under one of
/// [`KNOB_PREFIXES`] (`/dev/cpu_dma_latency` itself, the others as
/// directories).
pub fn knob_problem(path: &str) -> Option<&'static str> {
    let parsed = Path::new(path);
    let plain = parsed
        .components()
        .skip(1)
        .all(|c| matches!(c, Component::Normal(_)));
    if !parsed.is_absolute() || !plain || path.contains("/./") || path.ends_with("/.") {
        Some("is not a plain absolute path (no `.` or `..`)")
    } else if path == KNOB_PREFIXES[3] || KNOB_PREFIXES[..3].iter().any(|p| path.starts_with(p)) {
        None
    } else {
        Some("is outside /proc/sys, /proc/irq, /sys and /dev/cpu_dma_latency")
    }
}

/// Opens `path` without following a symlink in its last component.
fn options_no_follow() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.custom_flags(OFlag::O_NOFOLLOW.bits());
    options
}

/// One knob's original content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The knob's absolute path on the host (before the root prefix).
    pub path: String,
    /// Its bytes before pinwheel first wrote it.
    pub original: Vec<u8>,
}

/// The records of the journal under `root`, oldest first; none if there is
/// no journal.
pub fn read(root: &Path) -> Result<Vec<Record>, TuningError> {
    let path = journal_path(root);
    let bytes = match read_regular(&path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(TuningError::Journal { path, source }),
    };
    parse(&bytes).map_err(|(line, problem)| TuningError::JournalCorrupt {
        path,
        line,
        problem,
    })
}

/// The bytes of `path`, a regular file that is not a symlink.
fn read_regular(path: &Path) -> io::Result<Vec<u8>> {
    let mut file = options_no_follow().read(true).open(path)?;
    if !file.metadata()?.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a regular file",
        ));
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn parse(bytes: &[u8]) -> Result<Vec<Record>, (usize, &'static str)> {
    let mut records: Vec<Record> = Vec::new();
    let complete = bytes
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(&[][..], |end| &bytes[..end]);
    for (index, line) in complete.split(|b| *b == b'\n').enumerate() {
        if line.is_empty() || line.starts_with(b"#") {
            continue;
        }
        let text = std::str::from_utf8(line).map_err(|_| (index + 1, "not text"))?;
        let (path, original) = text
            .split_once(' ')
            .ok_or((index + 1, "no space between fields"))?;
        let path = unhex(path)
            .and_then(|p| String::from_utf8(p).ok())
            .ok_or((index + 1, "bad path"))?;
        let original = unhex(original).ok_or((index + 1, "bad original bytes"))?;
        if !records.iter().any(|r| r.path == path) {
            records.push(Record { path, original });
        }
    }
    Ok(records)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// Appends records; opens (and creates) the file on the first one.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: Option<File>,
    recorded: BTreeSet<String>,
}

impl Journal {
    /// A journal under `root` that already holds `existing`.
    pub fn new(root: &Path, existing: &[Record]) -> Self {
        Self {
            path: journal_path(root),
            file: None,
            recorded: existing.iter().map(|r| r.path.clone()).collect(),
        }
    }

    /// Records `original` as the bytes of `knob`, durably, unless the
    /// journal already holds an original for it.
    pub fn record(&mut self, knob: &str, original: &[u8]) -> Result<(), TuningError> {
        if self.recorded.contains(knob) {
            return Ok(());
        }
        let line = format!("{} {}\n", hex(knob.as_bytes()), hex(original));
        let error = |source| TuningError::Journal {
            path: self.path.clone(),
            source,
        };
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(open(&self.path).map_err(error)?),
        };
        file.write_all(line.as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(error)?;
        self.recorded.insert(knob.to_owned());
        Ok(())
    }
}

fn open(path: &Path) -> io::Result<File> {
    let dir = path.parent().expect("the journal path has a directory");
    std::fs::create_dir_all(dir)?;
    let mut file = options_no_follow().create(true).append(true).open(path)?;
    if file.metadata()?.len() == 0 {
        file.write_all(HEADER)?;
        file.sync_all()?;
        File::open(dir)?.sync_all()?;
    }
    Ok(file)
}

/// Leaves only `keep` in the journal under `root`; removes it when `keep`
/// is empty.
pub fn rewrite(root: &Path, keep: &[Record]) -> Result<(), TuningError> {
    let path = journal_path(root);
    let dir = path.parent().expect("the journal path has a directory");
    let result = if keep.is_empty() {
        match std::fs::remove_file(&path) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other.and_then(|()| File::open(dir)?.sync_all()),
        }
    } else {
        let temp = path.with_extension("journal.new");
        let mut text = HEADER.to_vec();
        for record in keep {
            text.extend(
                format!(
                    "{} {}\n",
                    hex(record.path.as_bytes()),
                    hex(&record.original)
                )
                .bytes(),
            );
        }
        options_no_follow()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .and_then(|mut file| file.write_all(&text).and_then(|()| file.sync_all()))
            .and_then(|()| std::fs::rename(&temp, &path))
            .and_then(|()| File::open(dir)?.sync_all())
    };
    result.map_err(|source| TuningError::Journal { path, source })
}

/// The tuning lock, held until dropped.
#[derive(Debug)]
pub struct Lock {
    _file: Flock<File>,
}

impl Lock {
    /// Takes the lock under `root` without waiting.
    pub fn take(root: &Path) -> Result<Self, TuningError> {
        let path = resolve(root, LOCK_PATH);
        let error = |source| TuningError::Journal {
            path: path.clone(),
            source,
        };
        let dir = path.parent().expect("the lock path has a directory");
        std::fs::create_dir_all(dir).map_err(error)?;
        let file = options_no_follow()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(error)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(file) => Ok(Self { _file: file }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(TuningError::Locked { path }),
            Err((_, errno)) => Err(error(io::Error::from(errno))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_round_trip_and_the_first_original_wins() {
        let dir = tempfile::tempdir().unwrap();
        let mut sut = Journal::new(dir.path(), &[]);
        sut.record("/proc/sys/vm/swappiness", b"60\n").unwrap();
        sut.record("/sys/x", b"a b\tc\n\0").unwrap();
        sut.record("/proc/sys/vm/swappiness", b"10\n").unwrap();
        let records = read(dir.path()).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].original, b"60\n");
        assert_eq!(records[1].original, b"a b\tc\n\0");
    }

    #[test]
    fn a_torn_last_line_is_ignored() {
        let mut bytes = HEADER.to_vec();
        bytes.extend(format!("{} {}\n", hex(b"/a"), hex(b"1")).bytes());
        bytes.extend(hex(b"/b").bytes());
        let records = parse(&bytes).unwrap();
        assert_eq!(
            records,
            [Record {
                path: "/a".to_owned(),
                original: b"1".to_vec()
            }]
        );
    }

    #[test]
    fn a_garbled_line_is_an_error_naming_the_line() {
        let mut bytes = HEADER.to_vec();
        bytes.extend(b"zz 00\n");
        assert_eq!(parse(&bytes), Err((2, "bad path")));
    }

    #[test]
    fn rewrite_keeps_the_given_records_and_removes_an_empty_journal() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::new(dir.path(), &[]);
        journal.record("/a", b"1").unwrap();
        journal.record("/b", b"2").unwrap();
        let keep = [Record {
            path: "/b".to_owned(),
            original: b"2".to_vec(),
        }];
        rewrite(dir.path(), &keep).unwrap();
        assert_eq!(read(dir.path()).unwrap(), keep);
        rewrite(dir.path(), &[]).unwrap();
        assert!(!journal_path(dir.path()).exists());
    }

    #[test]
    fn a_second_lock_is_refused_while_the_first_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let held = Lock::take(dir.path()).unwrap();
        assert!(matches!(
            Lock::take(dir.path()),
            Err(TuningError::Locked { .. })
        ));
        drop(held);
        Lock::take(dir.path()).unwrap();
    }

    #[test]
    fn only_plain_paths_of_kernel_knobs_may_be_replayed() {
        for knob in [
            "/proc/sys/vm/swappiness",
            "/sys/kernel/mm/transparent_hugepage/enabled",
            "/dev/cpu_dma_latency",
            "/proc/irq/24/smp_affinity_list",
            "/proc/irq/default_smp_affinity",
        ] {
            assert_eq!(knob_problem(knob), None, "{knob}");
        }
        for hostile in [
            "/etc/passwd",
            "/proc/sys/../../etc/shadow",
            "/sys/./x",
            "proc/sys/vm/swappiness",
            "/dev/cpu_dma_latency2",
            "/system",
            "/proc/sysrq-trigger",
        ] {
            assert!(knob_problem(hostile).is_some(), "{hostile}");
        }
    }

    #[test]
    fn a_symlinked_journal_is_refused_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("shadow");
        std::fs::write(&target, "secret\n").unwrap();
        let path = journal_path(dir.path());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();

        let read_err = read(dir.path()).unwrap_err();
        let record_err = Journal::new(dir.path(), &[])
            .record("/proc/sys/vm/swappiness", b"60\n")
            .unwrap_err();

        for err in [read_err, record_err] {
            let TuningError::Journal { source, .. } = &err else {
                panic!("expected a journal error, got {err}");
            };
            assert_eq!(source.raw_os_error(), Some(nix::libc::ELOOP), "{err}");
        }
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "secret\n");
    }

    #[test]
    fn a_symlinked_lock_is_refused_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let lock = resolve(dir.path(), LOCK_PATH);
        std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), &lock).unwrap();

        let sut = Lock::take(dir.path());

        assert!(matches!(sut, Err(TuningError::Journal { .. })), "{sut:?}");
        assert!(!dir.path().join("elsewhere").exists());
    }
}
