//! One knob file: read it, compare it, write it, restore it; and the PM
//! QoS hold.
//!
//! Kernel knobs are files that interpret what is written: a write is one
//! `write(2)` of the whole value, files are opened without `O_CREAT` (a
//! knob is never created), and a value is read back after writing, since
//! the kernel may accept a write and keep something else.
//!
//! Restoring writes the journal's original bytes verbatim, which puts back
//! a plain file byte for byte. A kernel selector file reads as every choice
//! with the current one in brackets (`always [madvise] never`) and rejects
//! that text with EINVAL; then the bracketed word is written instead.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use super::report::SkipReason;
use super::setting::{Compare, parse_cpus};
use crate::config::suggest;

/// The file that stands for `logical` (an absolute path) under `root`.
pub fn resolve(root: &Path, logical: &str) -> PathBuf {
    root.join(logical.trim_start_matches('/'))
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The whole content of a knob.
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    std::fs::read(path)
}

/// A knob's value as shown and compared: the bracketed word of a selector
/// file, or the words separated by single spaces.
pub fn shown(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    selected(&text).map_or_else(
        || text.split_whitespace().collect::<Vec<_>>().join(" "),
        str::to_owned,
    )
}

fn selected(text: &str) -> Option<&str> {
    text.split_whitespace()
        .find_map(|word| word.strip_prefix('[')?.strip_suffix(']'))
}

/// Whether the knob's `current` content already has `target`.
pub fn has(current: &[u8], target: &str, compare: Compare) -> bool {
    match compare {
        Compare::Text => shown(current) == shown(target.as_bytes()),
        Compare::CpuList | Compare::CpuMask => {
            let now = parse_cpus(&String::from_utf8_lossy(current), compare);
            now.is_some() && now == parse_cpus(target, compare)
        }
    }
}

/// Why a knob that exists cannot be written, if it cannot: its mode has
/// no write bit (root's override does not make a kernel knob writable), or
/// this process is not root and may not write it.
pub fn unwritable(path: &Path) -> Option<SkipReason> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.permissions().mode() & 0o222 == 0 {
        return Some(SkipReason::ReadOnly);
    }
    let denied = nix::unistd::access(path, nix::unistd::AccessFlags::W_OK).is_err();
    (denied && !is_root()).then_some(SkipReason::NotRoot)
}

/// The skip reason an I/O error stands for, if it stands for one.
pub fn skip_for(err: &io::Error, root: &Path, logical: &str) -> Option<SkipReason> {
    match err.raw_os_error().map(Errno::from_raw) {
        Some(Errno::ENOENT | Errno::ENODEV) => Some(missing(root, logical)),
        Some(Errno::EROFS) => Some(SkipReason::ReadOnly),
        Some(Errno::EACCES | Errno::EPERM) if !is_root() => Some(SkipReason::NotRoot),
        Some(Errno::EACCES | Errno::EPERM) => Some(SkipReason::ReadOnly),
        _ => None,
    }
}

/// Whether the kernel refused a value (as it does for an interrupt whose
/// affinity it manages).
pub fn is_refusal(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error().map(Errno::from_raw),
        Some(Errno::EIO | Errno::EINVAL)
    )
}

/// "Missing on this host", with the closest sibling name when the parent
/// directory exists (a likely typo in the profile).
pub fn missing(root: &Path, logical: &str) -> SkipReason {
    let (parent, name) = logical.rsplit_once('/').unwrap_or(("", logical));
    let hint = std::fs::read_dir(resolve(root, parent))
        .ok()
        .and_then(|entries| {
            let names: Vec<String> = entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect();
            (!name.contains('*'))
                .then(|| suggest(name, names.iter().map(String::as_str)).map(str::to_owned))
                .flatten()
        });
    SkipReason::Missing { hint }
}

/// Writes `bytes` in one `write(2)`, truncating a plain file.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).truncate(true).open(path)?;
    let written = file.write(bytes)?;
    if written != bytes.len() {
        return Err(io::Error::other(format!(
            "short write: {written} of {} bytes",
            bytes.len()
        )));
    }
    Ok(())
}

/// Writes `original` back (see the module doc for selector files).
pub fn restore(path: &Path, original: &[u8]) -> io::Result<()> {
    match write(path, original) {
        Err(err) if is_refusal(&err) => {
            let text = String::from_utf8_lossy(original);
            match selected(&text) {
                Some(word) => write(path, format!("{word}\n").as_bytes()),
                None => Err(err),
            }
        }
        other => other,
    }
}

/// `/dev/cpu_dma_latency` held open with a latency bound: the kernel keeps
/// CPUs out of deep idle states for as long as the file stays open, and
/// drops the request when it closes (also when the process dies), so this
/// needs no journal.
#[derive(Debug)]
pub struct DmaHold {
    _file: File,
}

impl DmaHold {
    /// Opens `path` and writes `us` as the 32-bit binary value the PM QoS
    /// device reads. `path` must be the character device; see [`is_device`].
    pub fn open(path: &Path, us: u32) -> io::Result<Self> {
        let value = i32::try_from(us).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let mut file = OpenOptions::new().write(true).open(path)?;
        file.write_all(&value.to_ne_bytes())?;
        Ok(Self { _file: file })
    }
}

/// Whether `path` is a character device (a fake tree's plain file is not
/// the PM QoS interface, and writing it would only change the file).
pub fn is_device(path: &Path) -> io::Result<bool> {
    Ok(std::fs::metadata(path)?.file_type().is_char_device())
}

/// The PM QoS device's current bound, microseconds.
pub fn read_dma(path: &Path) -> io::Result<i32> {
    let mut value = [0u8; 4];
    File::open(path)?.read_exact(&mut value)?;
    Ok(i32::from_ne_bytes(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_reads_the_selected_word_of_a_selector_file() {
        assert_eq!(shown(b"always [madvise] never\n"), "madvise");
        assert_eq!(shown(b"4096\t131072  6291456\n"), "4096 131072 6291456");
    }

    #[test]
    fn has_compares_cpu_lists_and_masks_as_sets() {
        assert!(has(b"0,1,2\n", "0-2", Compare::CpuList));
        assert!(has(b"00000003\n", "3", Compare::CpuMask));
        assert!(!has(b"3\n", "1", Compare::CpuMask));
        assert!(has(b"always madvise [never]\n", "never", Compare::Text));
    }

    #[test]
    fn restore_puts_a_plain_file_back_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let sut = dir.path().join("enabled");
        std::fs::write(&sut, "always [madvise] never\n").unwrap();
        write(&sut, b"never\n").unwrap();
        restore(&sut, b"always [madvise] never\n").unwrap();
        assert_eq!(std::fs::read(&sut).unwrap(), b"always [madvise] never\n");
    }

    #[test]
    fn a_missing_knob_suggests_a_close_sibling() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc/sys/vm")).unwrap();
        std::fs::write(dir.path().join("proc/sys/vm/swappiness"), "60\n").unwrap();
        let sut = missing(dir.path(), "/proc/sys/vm/swapiness");
        assert_eq!(
            sut,
            SkipReason::Missing {
                hint: Some("swappiness".to_owned())
            }
        );
    }

    #[test]
    fn the_dma_hold_writes_a_32_bit_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cpu_dma_latency");
        std::fs::write(&path, "").unwrap();
        let sut = DmaHold::open(&path, 0).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), 0i32.to_ne_bytes());
        assert_eq!(read_dma(&path).unwrap(), 0);
        assert!(!is_device(&path).unwrap());
        drop(sut);
    }
}
