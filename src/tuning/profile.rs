//! Profile files (`tuning/*.toml`, schema 1) and their include chains.
//!
//! ```toml
//! schema = 1
//! include = "latency-performance.toml"   # relative to this file
//! description = "what this profile is for"
//!
//! [sysctl]                               # names in quotes: /proc/sys/<a>/<b>
//! "vm.swappiness" = 10
//!
//! [sysfs]                                # any file under /sys; `*` globs
//! "/sys/module/haltpoll/parameters/guest_halt_poll_ns" = 200000
//!
//! [cpu]
//! governor = "performance"               # every cpu*/cpufreq/scaling_governor
//! energy_performance_preference = "performance"
//! dma_latency_us = 0                     # /dev/cpu_dma_latency, held open
//!
//! [memory]
//! transparent_hugepages = "never"        # always | madvise | never
//!
//! [isolation]                            # need the data-plane CPUs
//! irqs_off_data_plane = true
//! workqueues_off_data_plane = true
//! suggest_kernel_cmdline = true          # printed only; needs a reboot
//! ```
//!
//! Settings apply in section order (`[sysctl]`, `[sysfs]`, `[cpu]`,
//! `[memory]`, `[isolation]`), keys of the first two in name order. An
//! included profile's settings come first; the including file's values
//! replace them knob by knob, keeping their place, and `false` in
//! `[isolation]` turns an included setting off. Unknown keys and sections
//! are errors naming file, line and column. Cycles, and chains of more
//! than [`MAX_INCLUDE_DEPTH`] files, are errors at the `include` that
//! closes or lengthens them. Parsing reads only the profile files, never
//! the host.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::TuningError;
use super::setting::{Compare, Entry, Setting};
use crate::config::{ConfigError, SourceFile};

/// The most files one include chain may hold, the first included.
pub const MAX_INCLUDE_DEPTH: usize = 8;

/// Values a `[memory] transparent_hugepages` may take.
const THP_MODES: [&str; 3] = ["always", "madvise", "never"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    schema: Spanned<i64>,
    include: Option<Spanned<String>>,
    description: Option<String>,
    #[serde(default)]
    sysctl: BTreeMap<String, Spanned<toml::Value>>,
    #[serde(default)]
    sysfs: BTreeMap<String, Spanned<toml::Value>>,
    cpu: Option<CpuSection>,
    memory: Option<MemorySection>,
    isolation: Option<IsolationSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CpuSection {
    governor: Option<Spanned<String>>,
    energy_performance_preference: Option<Spanned<String>>,
    dma_latency_us: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MemorySection {
    transparent_hugepages: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IsolationSection {
    irqs_off_data_plane: Option<Spanned<bool>>,
    workqueues_off_data_plane: Option<Spanned<bool>>,
    suggest_kernel_cmdline: Option<Spanned<bool>>,
}

/// A validated profile with its includes resolved: settings in the order
/// they are applied.
#[derive(Debug, Clone)]
pub struct Profile {
    files: Vec<PathBuf>,
    description: Option<String>,
    entries: Vec<Entry>,
}

impl Profile {
    /// Reads `path` and every file it includes.
    pub fn load(path: &Path) -> Result<Self, TuningError> {
        let mut profile = Profile {
            files: Vec::new(),
            description: None,
            entries: Vec::new(),
        };
        let mut merged = Merged::default();
        let mut stack = Vec::new();
        load_into(path, None, &mut stack, &mut merged, &mut profile)?;
        profile.entries = merged.into_entries();
        Ok(profile)
    }

    /// The file named on the command line, then the files it includes, in
    /// include order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The top file's description, if it has one.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// The settings, included ones first.
    pub(super) fn entries(&self) -> &[Entry] {
        &self.entries
    }
}

/// Settings keyed by what they set, in first-seen order.
#[derive(Debug, Default)]
struct Merged(Vec<(String, Option<Entry>)>);

impl Merged {
    fn set(&mut self, key: String, entry: Option<Entry>) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some((_, slot)) => *slot = entry,
            None => self.0.push((key, entry)),
        }
    }

    fn into_entries(self) -> Vec<Entry> {
        self.0.into_iter().filter_map(|(_, entry)| entry).collect()
    }
}

fn load_into(
    path: &Path,
    included_at: Option<(&SourceFile, std::ops::Range<usize>)>,
    stack: &mut Vec<PathBuf>,
    merged: &mut Merged,
    profile: &mut Profile,
) -> Result<(), TuningError> {
    let bad = TuningError::Profile;
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    if let Some(first) = stack.iter().position(|p| *p == canonical) {
        let (file, span) = included_at.expect("only an include can revisit a file");
        let chain: Vec<String> = stack[first..]
            .iter()
            .chain([&canonical])
            .map(|p| file_name(p))
            .collect();
        return Err(bad(ConfigError::Invalid {
            at: file.locate(span),
            message: format!("include cycle: {}; remove one include", chain.join(" -> ")),
        }));
    }
    let file = SourceFile::read(path).map_err(bad)?;
    let raw: ProfileFile = file.parse().map_err(bad)?;
    if *raw.schema.get_ref() != 1 {
        return Err(bad(ConfigError::Schema {
            at: file.locate(raw.schema.span()),
            found: *raw.schema.get_ref(),
        }));
    }
    profile.files.push(path.to_path_buf());
    if profile.description.is_none() {
        profile.description.clone_from(&raw.description);
    }
    if let Some(include) = &raw.include {
        let target = include_target(path, &file, include, stack.len()).map_err(bad)?;
        stack.push(canonical);
        load_into(
            &target,
            Some((&file, include.span())),
            stack,
            merged,
            profile,
        )?;
        stack.pop();
    }
    settings_of(&raw, &file, merged).map_err(bad)
}

/// The file `include` (in `file`, at `path`) names, if it exists and the
/// chain of `depth` files above it may grow by one.
fn include_target(
    path: &Path,
    file: &SourceFile,
    include: &Spanned<String>,
    depth: usize,
) -> Result<PathBuf, ConfigError> {
    if depth + 2 > MAX_INCLUDE_DEPTH {
        return Err(invalid(
            file,
            include.span(),
            format!("include chains may hold at most {MAX_INCLUDE_DEPTH} files; include fewer"),
        ));
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let target = base.join(include.get_ref());
    if !target.is_file() {
        return Err(invalid(
            file,
            include.span(),
            format!(
                "included profile {} not found (paths are relative to this file's directory)",
                target.display()
            ),
        ));
    }
    Ok(target)
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

fn invalid(file: &SourceFile, span: std::ops::Range<usize>, message: String) -> ConfigError {
    ConfigError::Invalid {
        at: file.locate(span),
        message,
    }
}

/// Adds one file's settings to `merged`, in a fixed section order.
fn settings_of(
    raw: &ProfileFile,
    file: &SourceFile,
    merged: &mut Merged,
) -> Result<(), ConfigError> {
    for (name, value) in &raw.sysctl {
        let text = scalar(value, file, name)?;
        let pattern = sysctl_path(name).ok_or_else(|| {
            invalid(
                file,
                value.span(),
                format!(
                    "{name:?} is not a sysctl name; write it like \"vm.swappiness\" (a directory and a name: letters, digits, '_', '-', '*', separated by '.' or '/')"
                ),
            )
        })?;
        let setting = Setting::file(name, &pattern, &text, Compare::Text);
        merged.set(
            pattern,
            Some(Entry::new(setting, file.locate(value.span()))),
        );
    }
    for (path, value) in &raw.sysfs {
        if !sysfs_path_ok(path) {
            return Err(invalid(
                file,
                value.span(),
                format!(
                    "{path:?} is not a file under /sys; write an absolute path like \"/sys/kernel/mm/transparent_hugepage/enabled\" (`*` matches within one component)"
                ),
            ));
        }
        let text = scalar(value, file, path)?;
        let setting = Setting::file(path, path, &text, Compare::Text);
        merged.set(
            path.clone(),
            Some(Entry::new(setting, file.locate(value.span()))),
        );
    }
    if let Some(cpu) = &raw.cpu {
        cpu_settings(cpu, file, merged)?;
    }
    if let Some(memory) = &raw.memory {
        memory_settings(memory, file, merged)?;
    }
    if let Some(isolation) = &raw.isolation {
        isolation_settings(isolation, file, merged);
    }
    Ok(())
}

fn memory_settings(
    memory: &MemorySection,
    file: &SourceFile,
    merged: &mut Merged,
) -> Result<(), ConfigError> {
    if let Some(thp) = &memory.transparent_hugepages {
        if !THP_MODES.contains(&thp.get_ref().as_str()) {
            return Err(invalid(
                file,
                thp.span(),
                format!(
                    "transparent_hugepages {:?} is not a mode; write one of {}",
                    thp.get_ref(),
                    THP_MODES.join(", ")
                ),
            ));
        }
        let pattern = "/sys/kernel/mm/transparent_hugepage/enabled";
        let setting = Setting::file(pattern, pattern, thp.get_ref(), Compare::Text);
        merged.set(
            pattern.to_owned(),
            Some(Entry::new(setting, file.locate(thp.span()))),
        );
    }
    Ok(())
}

/// `true` sets a flag; `false` turns off one an included profile set.
fn isolation_settings(isolation: &IsolationSection, file: &SourceFile, merged: &mut Merged) {
    let flags = [
        (&isolation.irqs_off_data_plane, Setting::IrqsOffDataPlane),
        (
            &isolation.workqueues_off_data_plane,
            Setting::WorkqueuesOffDataPlane,
        ),
        (&isolation.suggest_kernel_cmdline, Setting::KernelCmdline),
    ];
    for (flag, setting) in flags {
        if let Some(flag) = flag {
            let entry = flag
                .get_ref()
                .then(|| Entry::new(setting.clone(), file.locate(flag.span())));
            merged.set(setting.key(), entry);
        }
    }
}

fn cpu_settings(
    cpu: &CpuSection,
    file: &SourceFile,
    merged: &mut Merged,
) -> Result<(), ConfigError> {
    let per_cpu = [
        (&cpu.governor, "governor", "scaling_governor"),
        (
            &cpu.energy_performance_preference,
            "energy_performance_preference",
            "energy_performance_preference",
        ),
    ];
    for (value, key, knob) in per_cpu {
        let Some(value) = value else { continue };
        let word = value.get_ref();
        if word.is_empty() || !word.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(invalid(
                file,
                value.span(),
                format!("{key} {word:?} is not a cpufreq word; write e.g. \"performance\""),
            ));
        }
        let pattern = format!("/sys/devices/system/cpu/cpu*/cpufreq/{knob}");
        let setting = Setting::file(&format!("cpu.{key}"), &pattern, word, Compare::Text);
        merged.set(
            pattern,
            Some(Entry::new(setting, file.locate(value.span()))),
        );
    }
    if let Some(us) = &cpu.dma_latency_us {
        let value = u32::try_from(*us.get_ref())
            .ok()
            .filter(|v| i32::try_from(*v).is_ok())
            .ok_or_else(|| {
                invalid(
                    file,
                    us.span(),
                    format!(
                        "dma_latency_us {} is out of range; write 0 (stay awake) to {} microseconds",
                        us.get_ref(),
                        i32::MAX
                    ),
                )
            })?;
        let setting = Setting::DmaLatency { us: value };
        merged.set(
            setting.key(),
            Some(Entry::new(setting, file.locate(us.span()))),
        );
    }
    Ok(())
}

/// A knob value: an integer, or a one-line string.
fn scalar(
    value: &Spanned<toml::Value>,
    file: &SourceFile,
    name: &str,
) -> Result<String, ConfigError> {
    match value.get_ref() {
        toml::Value::Integer(n) => Ok(n.to_string()),
        toml::Value::String(s) if !s.is_empty() && !s.contains(['\n', '\r']) => Ok(s.clone()),
        toml::Value::Table(_) => Err(invalid(
            file,
            value.span(),
            format!(
                "{name:?} holds a table; put the whole knob name in quotes, like \"vm.swappiness\" = 10"
            ),
        )),
        _ => Err(invalid(
            file,
            value.span(),
            format!(
                "{name:?} needs an integer or a one-line string, like 10 or \"4096 87380 6291456\""
            ),
        )),
    }
}

/// `/proc/sys/...` for a sysctl name, if it is one.
fn sysctl_path(name: &str) -> Option<String> {
    let separator = if name.contains('/') { '/' } else { '.' };
    let parts: Vec<&str> = name.split(separator).collect();
    // Every sysctl lives in a directory (`kernel`, `vm`, `net`, ...), so a
    // bare name is a typo, not a knob some host might have.
    let ok = parts.len() >= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && *p != "."
                && *p != ".."
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '*' | '.'))
        });
    ok.then(|| format!("/proc/sys/{}", parts.join("/")))
}

fn sysfs_path_ok(path: &str) -> bool {
    path.strip_prefix("/sys/").is_some_and(|rest| {
        rest.split('/')
            .all(|p| !p.is_empty() && p != "." && p != ".." && !p.contains(char::is_whitespace))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn error_of(text: &str) -> (usize, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "p.toml", text);
        let err = Profile::load(&path).unwrap_err();
        (err.location().unwrap().line(), err.to_string())
    }

    #[test]
    fn sysctl_names_map_to_proc_sys_paths() {
        assert_eq!(
            sysctl_path("vm.swappiness").unwrap(),
            "/proc/sys/vm/swappiness"
        );
        assert_eq!(
            sysctl_path("net/ipv4/conf/eth0.1/rp_filter").unwrap(),
            "/proc/sys/net/ipv4/conf/eth0.1/rp_filter"
        );
        assert_eq!(sysctl_path("vm..x"), None);
        assert_eq!(sysctl_path("swappiness"), None);
        assert_eq!(sysctl_path("vm swappiness"), None);
    }

    #[test]
    fn an_unknown_cpu_setting_names_its_line() {
        let (line, message) = error_of("schema = 1\n[cpu]\ngoverner = \"performance\"\n");
        assert_eq!(line, 3);
        assert!(message.contains("unknown field `governer`"), "{message}");
    }

    #[test]
    fn a_sysctl_written_as_a_dotted_key_says_to_quote_it() {
        let (line, message) = error_of("schema = 1\n[sysctl]\nvm.swappiness = 10\n");
        assert_eq!(line, 3);
        assert!(message.contains("in quotes"), "{message}");
    }

    #[test]
    fn a_sysfs_path_outside_sys_is_rejected() {
        let (line, message) = error_of("schema = 1\n[sysfs]\n\"/etc/passwd\" = \"x\"\n");
        assert_eq!(line, 3);
        assert!(message.contains("not a file under /sys"), "{message}");
    }

    #[test]
    fn an_unknown_transparent_hugepage_mode_lists_the_modes() {
        let (_, message) = error_of("schema = 1\n[memory]\ntransparent_hugepages = \"off\"\n");
        assert!(message.contains("always, madvise, never"), "{message}");
    }

    #[test]
    fn the_including_file_overrides_in_place_and_false_turns_a_setting_off() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "base.toml",
            "schema = 1\n[sysctl]\n\"vm.a\" = 1\n\"vm.b\" = 2\n[isolation]\nirqs_off_data_plane = true\n",
        );
        let top = write(
            dir.path(),
            "top.toml",
            "schema = 1\ninclude = \"base.toml\"\n[sysctl]\n\"vm.a\" = 9\n[isolation]\nirqs_off_data_plane = false\n",
        );
        let sut = Profile::load(&top).unwrap();
        let shown: Vec<String> = sut
            .entries()
            .iter()
            .map(|e| format!("{:?}", e.setting()))
            .collect();
        assert_eq!(shown.len(), 2, "{shown:?}");
        assert!(
            shown[0].contains("vm.a") && shown[0].contains("\"9\""),
            "{shown:?}"
        );
        assert!(shown[1].contains("vm.b"), "{shown:?}");
        assert_eq!(sut.files().len(), 2);
    }

    #[test]
    fn an_include_chain_past_its_bound_is_refused_at_the_include_too_many() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "p0.toml", "schema = 1\n");
        for i in 1..=MAX_INCLUDE_DEPTH {
            let text = format!("schema = 1\ninclude = \"p{}.toml\"\n", i - 1);
            write(dir.path(), &format!("p{i}.toml"), &text);
        }
        let longest_allowed = dir.path().join(format!("p{}.toml", MAX_INCLUDE_DEPTH - 1));
        assert_eq!(
            Profile::load(&longest_allowed).unwrap().files().len(),
            MAX_INCLUDE_DEPTH
        );

        let err =
            Profile::load(&dir.path().join(format!("p{MAX_INCLUDE_DEPTH}.toml"))).unwrap_err();

        let at = err.location().unwrap();
        assert_eq!(at.line(), 2);
        assert!(at.path().ends_with("p1.toml"), "{err}");
        assert!(err.to_string().contains("at most 8 files"), "{err}");
    }
}
