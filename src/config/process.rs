//! The manifest fields of agent processes: validated into a
//! [`ProcessSpec`] (kind `process`: what to start and how to supervise it)
//! and an [`Account`] (kinds `process` and `external`: who it runs as, or
//! who may attach as it).
//!
//! Paths: a relative `command[0]` that holds a `/`, a relative `cwd` and
//! relative credential paths are resolved against the directory of the
//! manifest that names them (made absolute with the daemon's working
//! directory when the manifest was given by a relative path), so
//! `agents/echo-chain.toml` can say `../target/release/examples/echo`
//! and work from a clean checkout. A bare program name (`python3`) is
//! looked up in the child's `PATH`.
//!
//! What this module does not check: whether the user exists on this host,
//! the program is there or a credential file is readable. Those belong to
//! the host the agent starts on and are checked when it starts, where a
//! failure counts as a failed start.

use std::path::{Path, PathBuf};

use pinwheel_ipc::ring::WaitStrategy;
use toml::Spanned;

use super::agents_file::{AgentEntry, KindName, RestartMode};
use super::{ConfigError, SourceFile};

/// Environment variables pinwheel sets for its agents.
pub const RESERVED_ENV: [&str; 4] = [
    "PINWHEEL_AGENT",
    "PINWHEEL_AGENT_FD",
    "PINWHEEL_AGENT_SOCKET",
    "CREDENTIALS_DIRECTORY",
];
/// Most `env` entries.
pub const MAX_ENV: usize = 64;
/// Most `credentials` entries.
pub const MAX_CREDENTIALS: usize = 32;
/// Most `command` words.
pub const MAX_COMMAND: usize = 64;
/// Default `max_restarts`.
pub const DEFAULT_MAX_RESTARTS: u32 = 5;
/// Default `restart_window_s`.
pub const DEFAULT_RESTART_WINDOW_S: u32 = 60;
/// Default `stop_timeout_ms`.
pub const DEFAULT_STOP_TIMEOUT_MS: u32 = 3_000;

/// Who an agent process runs as (or, for `external`, who may attach).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// A user name or a numeric uid.
    pub user: String,
    /// A group name or numeric gid; the user's primary group when absent.
    pub group: Option<String>,
}

/// How a `process` agent is started and supervised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    command: Vec<String>,
    env: Vec<(String, String)>,
    credentials: Vec<(String, PathBuf)>,
    allow_root: bool,
    cwd: PathBuf,
    restart: RestartMode,
    max_restarts: u32,
    restart_window_s: u32,
    stop_timeout_ms: u32,
    memory_max_mib: Option<u64>,
    wait: Option<WaitStrategy>,
}

impl ProcessSpec {
    /// The program (resolved) and its arguments.
    pub fn command(&self) -> &[String] {
        &self.command
    }
    /// Environment variables to set, besides pinwheel's own.
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }
    /// Credentials: the file name the child sees, and the file to read.
    pub fn credentials(&self) -> &[(String, PathBuf)] {
        &self.credentials
    }
    /// Whether it may run as root.
    pub fn allow_root(&self) -> bool {
        self.allow_root
    }
    /// Its working directory.
    pub fn cwd(&self) -> &Path {
        &self.cwd
    }
    /// When it is restarted.
    pub fn restart(&self) -> RestartMode {
        self.restart
    }
    /// Restarts allowed within [`ProcessSpec::restart_window_s`].
    pub fn max_restarts(&self) -> u32 {
        self.max_restarts
    }
    /// The restart intensity's window, seconds.
    pub fn restart_window_s(&self) -> u32 {
        self.restart_window_s
    }
    /// SIGTERM to SIGKILL, milliseconds.
    pub fn stop_timeout_ms(&self) -> u32 {
        self.stop_timeout_ms
    }
    /// Memory limit, MiB.
    pub fn memory_max_mib(&self) -> Option<u64> {
        self.memory_max_mib
    }
    /// How it waits for its requests, when the manifest says (else its
    /// CPU class's `wait`): a rarely called agent may park on a CPU whose
    /// executors spin.
    pub fn wait(&self) -> Option<WaitStrategy> {
        self.wait
    }
}

/// The process fields of one entry: the spec for kind `process` (and
/// for kind `zmq` with a `command`: a legacy agent the daemon starts and
/// supervises), the account for those and `external`; every process field
/// on another kind is an error naming it.
pub fn validate(
    raw: &AgentEntry,
    file: &SourceFile,
    agent: &str,
) -> Result<(Option<ProcessSpec>, Option<Account>), ConfigError> {
    let kind = *raw.kind.get_ref();
    let spawned = kind == KindName::Process || (kind == KindName::Zmq && raw.command.is_some());
    if !spawned {
        forbid_process_fields(raw, file, agent, kind)?;
    }
    if let Some(wait) = &raw.wait
        && kind != KindName::Process
    {
        let message = format!(
            "agent {agent}: `wait` goes with kind = \"process\" only (an agent on a ring of its own); other agents wait as their CPU class says"
        );
        return Err(invalid(file, wait.span(), message));
    }
    let account = match (&raw.user, kind) {
        (Some(user), KindName::Process | KindName::External | KindName::Zmq) => Some(Account {
            user: user.get_ref().clone(),
            group: raw.group.as_ref().map(|g| g.get_ref().clone()),
        }),
        (Some(user), _) => return Err(only_process(file, user.span(), agent, "user")),
        (None, _) => {
            if let Some(group) = &raw.group {
                let message = format!("agent {agent}: `group` needs `user`");
                return Err(invalid(file, group.span(), message));
            }
            None
        }
    };
    if !spawned {
        return Ok((None, account));
    }
    Ok((Some(spec(raw, file, agent, account.as_ref())?), account))
}

fn spec(
    raw: &AgentEntry,
    file: &SourceFile,
    agent: &str,
    account: Option<&Account>,
) -> Result<ProcessSpec, ConfigError> {
    let dir = file.path().parent().unwrap_or(Path::new(""));
    let resolved = command(raw, file, agent, dir)?;
    let allow_root = raw.allow_root.as_ref().is_some_and(|a| *a.get_ref());
    check_root(raw, file, agent, account, allow_root)?;
    Ok(ProcessSpec {
        command: resolved,
        env: env(raw, file, agent)?,
        credentials: credentials(raw, file, agent, dir)?,
        allow_root,
        cwd: raw
            .cwd
            .as_ref()
            .map_or_else(|| PathBuf::from("/"), |c| resolve(dir, c.get_ref())),
        restart: raw
            .restart
            .as_ref()
            .map_or(RestartMode::OnFailure, |r| *r.get_ref()),
        max_restarts: raw
            .max_restarts
            .as_ref()
            .map_or(DEFAULT_MAX_RESTARTS, |m| *m.get_ref()),
        restart_window_s: number(
            &raw.restart_window_s,
            file,
            agent,
            "restart_window_s",
            1,
            86_400,
        )?
        .unwrap_or(DEFAULT_RESTART_WINDOW_S),
        stop_timeout_ms: number(
            &raw.stop_timeout_ms,
            file,
            agent,
            "stop_timeout_ms",
            1,
            600_000,
        )?
        .unwrap_or(DEFAULT_STOP_TIMEOUT_MS),
        memory_max_mib: match &raw.memory_max_mib {
            Some(m) if !(16..=16 << 20).contains(m.get_ref()) => {
                let message = format!("agent {agent}: memory_max_mib must be 16 to 16777216");
                return Err(invalid(file, m.span(), message));
            }
            other => other.as_ref().map(|m| *m.get_ref()),
        },
        wait: raw.wait.as_ref().map(|w| *w.get_ref()),
    })
}

/// `user = "root"` (or uid 0) needs `allow_root = true`, and so does
/// having no `user` at all (the child would run as the root daemon).
fn check_root(
    raw: &AgentEntry,
    file: &SourceFile,
    agent: &str,
    account: Option<&Account>,
    allow_root: bool,
) -> Result<(), ConfigError> {
    if allow_root {
        return Ok(());
    }
    match (account, &raw.user) {
        (Some(a), Some(user)) if a.user == "root" || a.user == "0" => Err(invalid(
            file,
            user.span(),
            format!("agent {agent} would run as root; name another user, or set allow_root = true"),
        )),
        (None, _) => Err(invalid(
            file,
            raw.kind.span(),
            format!(
                "agent {agent} is a process with no `user`, so it would run as the daemon (root); add user = \"...\" (for example \"nobody\"), or set allow_root = true"
            ),
        )),
        _ => Ok(()),
    }
}

/// `command`, its program resolved against the manifest's directory.
fn command(
    raw: &AgentEntry,
    file: &SourceFile,
    agent: &str,
    dir: &Path,
) -> Result<Vec<String>, ConfigError> {
    let Some(command) = &raw.command else {
        return Err(invalid(
            file,
            raw.kind.span(),
            format!(
                "agent {agent} is a process but has no `command`; add command = [\"path\", ...]"
            ),
        ));
    };
    let words = command.get_ref();
    if words.is_empty() || words.len() > MAX_COMMAND || words.iter().any(|w| w.contains('\0')) {
        let message =
            format!("agent {agent}: `command` needs 1 to {MAX_COMMAND} words without NUL bytes");
        return Err(invalid(file, command.span(), message));
    }
    let mut resolved = words.clone();
    if words[0].contains('/') {
        resolved[0] = resolve(dir, &words[0]).display().to_string();
    }
    Ok(resolved)
}

fn env(
    raw: &AgentEntry,
    file: &SourceFile,
    agent: &str,
) -> Result<Vec<(String, String)>, ConfigError> {
    let Some(env) = &raw.env else {
        return Ok(Vec::new());
    };
    let map = env.get_ref();
    let bad_key = |k: &str| {
        !k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || RESERVED_ENV.contains(&k)
    };
    if map.len() > MAX_ENV {
        let message = format!("agent {agent}: at most {MAX_ENV} `env` entries");
        return Err(invalid(file, env.span(), message));
    }
    if let Some(key) = map.keys().find(|k| bad_key(k)) {
        let message = format!(
            "agent {agent}: env name {key:?} must be letters, digits and '_', and not one pinwheel sets ({})",
            RESERVED_ENV.join(", ")
        );
        return Err(invalid(file, env.span(), message));
    }
    if map.values().any(|v| v.contains('\0')) {
        let message = format!("agent {agent}: env values may not hold NUL bytes");
        return Err(invalid(file, env.span(), message));
    }
    Ok(map.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

fn credentials(
    raw: &AgentEntry,
    file: &SourceFile,
    agent: &str,
    dir: &Path,
) -> Result<Vec<(String, PathBuf)>, ConfigError> {
    let Some(credentials) = &raw.credentials else {
        return Ok(Vec::new());
    };
    let map = credentials.get_ref();
    let good_name = |n: &str| {
        !n.is_empty()
            && n.len() <= 64
            && !n.starts_with('.')
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    };
    if map.len() > MAX_CREDENTIALS || !map.keys().all(|k| good_name(k)) {
        let message = format!(
            "agent {agent}: at most {MAX_CREDENTIALS} credentials, each named with letters, digits, '_', '-' and '.' (not starting with '.')"
        );
        return Err(invalid(file, credentials.span(), message));
    }
    Ok(map
        .iter()
        .map(|(name, path)| (name.clone(), resolve(dir, path)))
        .collect())
}

fn number(
    value: &Option<Spanned<u32>>,
    file: &SourceFile,
    agent: &str,
    what: &str,
    low: u32,
    high: u32,
) -> Result<Option<u32>, ConfigError> {
    match value {
        Some(v) if !(low..=high).contains(v.get_ref()) => Err(invalid(
            file,
            v.span(),
            format!("agent {agent}: {what} must be {low} to {high}"),
        )),
        other => Ok(other.as_ref().map(|v| *v.get_ref())),
    }
}

fn forbid_process_fields(
    raw: &AgentEntry,
    file: &SourceFile,
    agent: &str,
    kind: KindName,
) -> Result<(), ConfigError> {
    let spans = [
        ("command", raw.command.as_ref().map(Spanned::span)),
        ("env", raw.env.as_ref().map(Spanned::span)),
        ("credentials", raw.credentials.as_ref().map(Spanned::span)),
        ("allow_root", raw.allow_root.as_ref().map(Spanned::span)),
        ("cwd", raw.cwd.as_ref().map(Spanned::span)),
        ("restart", raw.restart.as_ref().map(Spanned::span)),
        ("max_restarts", raw.max_restarts.as_ref().map(Spanned::span)),
        (
            "restart_window_s",
            raw.restart_window_s.as_ref().map(Spanned::span),
        ),
        (
            "stop_timeout_ms",
            raw.stop_timeout_ms.as_ref().map(Spanned::span),
        ),
        (
            "memory_max_mib",
            raw.memory_max_mib.as_ref().map(Spanned::span),
        ),
    ];
    if let Some((field, Some(span))) = spans.into_iter().find(|(_, s)| s.is_some()) {
        return Err(only_process(file, span, agent, field));
    }
    if kind != KindName::External
        && let Some(user) = &raw.user
    {
        return Err(only_process(file, user.span(), agent, "user"));
    }
    Ok(())
}

fn only_process(
    file: &SourceFile,
    span: std::ops::Range<usize>,
    agent: &str,
    field: &str,
) -> ConfigError {
    let also = if matches!(field, "user" | "group") {
        " (and \"external\")"
    } else {
        ""
    };
    invalid(
        file,
        span,
        format!(
            "agent {agent}: `{field}` goes with kind = \"process\"{also} only (or \"zmq\" with a `command`)"
        ),
    )
}

fn resolve(dir: &Path, path: &str) -> PathBuf {
    let joined = dir.join(path);
    std::path::absolute(&joined).unwrap_or(joined)
}

fn invalid(file: &SourceFile, span: std::ops::Range<usize>, message: String) -> ConfigError {
    ConfigError::Invalid {
        at: file.locate(span),
        message,
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{AgentIndex, AgentKind, AgentSet, ConfigError, SourceFile};
    use pinwheel_ipc::ring::WaitStrategy;
    use std::path::Path;

    fn sut(extra: &str, kind: &str) -> Result<AgentSet, ConfigError> {
        let text = format!(
            "schema = 1\n[[agent]]\nname = \"P\"\nhost = \"h\"\nrole = \"r\"\nkind = \"{kind}\"\n{extra}\n"
        );
        AgentSet::from_sources(&[SourceFile::from_text(Path::new("/srv/agents/p.toml"), text)])
    }

    #[test]
    fn a_process_resolves_its_paths_against_the_manifest_and_takes_defaults() {
        let set = sut(
            "command = [\"../bin/echo\", \"-v\"]\nuser = \"nobody\"\ncredentials = { key = \"creds/key\" }",
            "process",
        )
        .unwrap();
        let spec = set.get(AgentIndex(0));
        assert_eq!(spec.kind(), AgentKind::Process);
        let process = spec.process().unwrap();
        assert_eq!(process.command(), ["/srv/agents/../bin/echo", "-v"]);
        assert_eq!(
            process.credentials()[0].1,
            Path::new("/srv/agents/creds/key")
        );
        assert_eq!(process.cwd(), Path::new("/"));
        assert_eq!(
            (
                process.max_restarts(),
                process.restart_window_s(),
                process.stop_timeout_ms()
            ),
            (5, 60, 3_000)
        );
        assert_eq!(spec.account().unwrap().user, "nobody");
    }

    #[test]
    fn a_bare_program_name_is_left_for_path() {
        let set = sut(
            "command = [\"python3\", \"a.py\"]\nuser = \"nobody\"",
            "process",
        )
        .unwrap();
        assert_eq!(
            set.get(AgentIndex(0)).process().unwrap().command()[0],
            "python3"
        );
    }

    #[test]
    fn root_needs_allow_root_and_the_error_names_the_line() {
        let err = sut("command = [\"/bin/true\"]\nuser = \"root\"", "process").unwrap_err();
        assert!(err.to_string().contains("allow_root"), "{err}");
        assert_eq!(err.location().unwrap().line(), 8);
        let err = sut("command = [\"/bin/true\"]", "process").unwrap_err();
        assert!(err.to_string().contains("no `user`"), "{err}");
        assert!(sut("command = [\"/bin/true\"]\nallow_root = true", "process").is_ok());
    }

    #[test]
    fn a_process_without_a_command_and_process_fields_on_other_kinds_are_errors() {
        let err = sut("user = \"nobody\"", "process").unwrap_err();
        assert!(err.to_string().contains("no `command`"), "{err}");
        let err = sut("command = [\"/bin/true\"]", "synthetic").unwrap_err();
        assert!(err.to_string().contains("`command` goes with"), "{err}");
        assert_eq!(err.location().unwrap().line(), 7);
        let err = sut("user = \"nobody\"", "synthetic").unwrap_err();
        assert!(err.to_string().contains("`user` goes with"), "{err}");
        assert!(sut("user = \"nobody\"", "external").is_ok());
        let err = sut("wait = \"park\"", "synthetic").unwrap_err();
        assert!(err.to_string().contains("`wait` goes with"), "{err}");
        assert_eq!(err.location().unwrap().line(), 7);
    }

    #[test]
    fn a_process_may_wait_otherwise_than_its_cpu_class() {
        let base = "command = [\"/bin/true\"]\nuser = \"nobody\"\n";
        let set = sut(&format!("{base}wait = \"park\""), "process").unwrap();
        let process = set.get(AgentIndex(0)).process().unwrap();
        assert_eq!(process.wait(), Some(WaitStrategy::Park));
        let set = sut(base, "process").unwrap();
        assert_eq!(set.get(AgentIndex(0)).process().unwrap().wait(), None);
        let err = sut(&format!("{base}wait = \"doze\""), "process").unwrap_err();
        assert_eq!(err.location().unwrap().line(), 9, "{err}");
    }

    #[test]
    fn env_names_that_pinwheel_owns_and_bad_numbers_are_refused() {
        let base = "command = [\"/bin/true\"]\nuser = \"nobody\"\n";
        for bad in [
            "env = { PINWHEEL_AGENT = \"x\" }",
            "env = { CREDENTIALS_DIRECTORY = \"/tmp\" }",
            "env = { \"A B\" = \"x\" }",
            "credentials = { \"../x\" = \"/etc/x\" }",
            "restart_window_s = 0",
            "stop_timeout_ms = 0",
            "memory_max_mib = 1",
            "restart = \"sometimes\"",
        ] {
            assert!(sut(&format!("{base}{bad}"), "process").is_err(), "{bad}");
        }
        let ok = sut(
            &format!("{base}env = {{ LOG = \"1\" }}\nrestart = \"always\""),
            "process",
        )
        .unwrap();
        assert_eq!(
            ok.get(AgentIndex(0)).process().unwrap().env(),
            [("LOG".to_owned(), "1".to_owned())]
        );
    }
}
