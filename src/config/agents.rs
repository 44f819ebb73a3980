//! Validated agent manifests: [`AgentSet`] and [`AgentSpec`].
//!
//! Several manifests load into one set (`agents/mainpc.toml` and
//! `agents/pc2.toml`). An agent is identified by its name and host, so the
//! seed's two ObservabilityHubs coexist. A call target is written `Name`
//! or `Name@host`:
//!
//! * `Name@host` names exactly that agent. If no manifest of `host` was
//!   loaded, the call is *remote*: kept, served through the cluster, and
//!   not checked here.
//! * `Name` means the agent of that name on the caller's host, else the
//!   only agent of that name on any loaded host; two candidates elsewhere
//!   make it ambiguous, and none makes it unknown.
//!
//! An entry with `replicas = N` is N agents, `Name#0 .. Name#N-1`, with
//! consecutive indices; callers still write `Name`, which resolves to the
//! first replica ([`AgentSet::replicas_of`] gives them all; see
//! `replicas.rs`).
//!
//! What this module does not check: anything about CPUs or the host's
//! topology (that is `plan`'s job).

use std::path::PathBuf;

use toml::Spanned;

use super::agents_file::{
    AgentEntry, AgentsFile, ClassWish, KindName, ModelEntry, NativeName, Priority,
};
use super::calls::resolve_calls;
use super::legacy::{self, LegacySpec};
use super::limits::{self, MAX_TOPIC_BYTES, MAX_VRAM_MIB};
use super::process::{Account, ProcessSpec};
use super::replicas::{self, ReplicaSet};
use super::{ConfigError, Location, SourceFile, name_problem};

pub use super::calls::Hint;

/// Longest `role`, bytes (what the registry stores).
pub const MAX_ROLE_BYTES: usize = 256;

/// An agent's `weight` when its entry gives none: one ordinary agent's
/// CPU load, the unit weights are counted in.
pub const DEFAULT_WEIGHT: f64 = 1.0;

/// Position of an agent in its [`AgentSet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AgentIndex(pub usize);

/// How an agent runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentKind {
    /// Rust code in the daemon.
    Native(NativeName),
    /// Simulated from the manifest.
    Synthetic,
    /// A process the daemon starts and supervises.
    Process,
    /// A process started by something else that attaches.
    External,
    /// An unchanged seed agent on ZeroMQ, reached through the gateway.
    Zmq,
}

impl AgentKind {
    /// The manifest's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentKind::Native(_) => "native",
            AgentKind::Synthetic => "synthetic",
            AgentKind::Process => "process",
            AgentKind::External => "external",
            AgentKind::Zmq => "zmq",
        }
    }
}

/// Where an agent asks to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Exactly this CPU.
    Cpu(u32),
    /// A CPU of this class, by the fallback order of the class.
    Class(ClassWish),
}

/// Where a call goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallTarget {
    /// An agent of this set: its first replica when it has several
    /// ([`AgentSet::replicas_of`]).
    Local(AgentIndex),
    /// An agent on a host whose manifest was not loaded.
    Remote {
        /// Its name.
        name: String,
        /// Its host.
        host: String,
    },
}

/// A GPU model an agent needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelNeed {
    /// Model name.
    pub name: String,
    /// VRAM when resident, MiB.
    pub vram_mib: u64,
    /// Whether the size is an estimate.
    pub estimate: bool,
}

/// How a synthetic agent behaves (and how many workers any agent runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Behaviour {
    /// Median service time, nanoseconds.
    pub median_ns: u64,
    /// 99th-percentile service time, nanoseconds.
    pub p99_ns: u64,
    /// Requests served at once.
    pub concurrency: u32,
    /// Event-driven agents make their calls once every this many events.
    pub calls_every: u32,
    /// Frames a second the load generator sends this stream source (0:
    /// not a source).
    pub stream_hz: u32,
    /// Every Nth request fails (0: never).
    pub fail_every: u32,
    /// Every Nth request stalls (0: never).
    pub stall_every: u32,
    /// Stall length, nanoseconds.
    pub stall_ns: u64,
}

impl Default for Behaviour {
    /// 200 us median, 1 ms p99, one worker, calls on every event, no faults.
    fn default() -> Self {
        Self {
            median_ns: 200_000,
            p99_ns: 1_000_000,
            concurrency: 1,
            calls_every: 1,
            stream_hz: 0,
            fail_every: 0,
            stall_every: 0,
            stall_ns: 0,
        }
    }
}

/// One validated agent.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSpec {
    name: String,
    host: String,
    role: String,
    ports: Vec<u16>,
    kind: AgentKind,
    placement: Placement,
    priority: Priority,
    weight: f64,
    calls: Vec<CallTarget>,
    publishes: Vec<String>,
    subscribes: Vec<String>,
    models: Vec<ModelNeed>,
    behaviour: Behaviour,
    process: Option<Box<ProcessSpec>>,
    account: Option<Account>,
    legacy: LegacySpec,
    service: String,
    replica: u32,
    replicas: ReplicaSet,
    at: Location,
    placement_at: Location,
}

impl AgentSpec {
    /// Name, as in the seed; `Name#i` for replica `i` of several.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The name callers use: the manifest's `name`, without `#i`.
    pub fn service(&self) -> &str {
        &self.service
    }
    /// Which replica this is (0 for an agent of one instance).
    pub fn replica(&self) -> u32 {
        self.replica
    }
    /// Its replica set: how many, and how calls are spread.
    pub fn replicas(&self) -> &ReplicaSet {
        &self.replicas
    }
    /// The spec with its calls resolved.
    pub(super) fn with_calls(self, calls: Vec<CallTarget>) -> Self {
        Self { calls, ..self }
    }
    /// Host it belongs to.
    pub fn host(&self) -> &str {
        &self.host
    }
    /// What it does.
    pub fn role(&self) -> &str {
        &self.role
    }
    /// Legacy ports.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }
    /// How it runs.
    pub fn kind(&self) -> AgentKind {
        self.kind
    }
    /// Where it asks to run.
    pub fn placement(&self) -> Placement {
        self.placement
    }
    /// Priority of its traffic.
    pub fn priority(&self) -> Priority {
        self.priority
    }
    /// Relative CPU load.
    pub fn weight(&self) -> f64 {
        self.weight
    }
    /// Agents it calls.
    pub fn calls(&self) -> &[CallTarget] {
        &self.calls
    }
    /// Topics it publishes.
    pub fn publishes(&self) -> &[String] {
        &self.publishes
    }
    /// Topics it subscribes to.
    pub fn subscribes(&self) -> &[String] {
        &self.subscribes
    }
    /// GPU models it needs.
    pub fn models(&self) -> &[ModelNeed] {
        &self.models
    }
    /// How it behaves when synthetic, and how many workers it runs.
    pub fn behaviour(&self) -> &Behaviour {
        &self.behaviour
    }
    /// How it is started and supervised (kind `process`).
    pub fn process(&self) -> Option<&ProcessSpec> {
        self.process.as_deref()
    }
    /// Who it runs as (`process`), or who may attach as it (`external`).
    pub fn account(&self) -> Option<&Account> {
        self.account.as_ref()
    }
    /// Its place on the legacy ZeroMQ edge.
    pub fn legacy(&self) -> &LegacySpec {
        &self.legacy
    }
    /// Its `[[agent]]` entry.
    pub fn location(&self) -> &Location {
        &self.at
    }
    /// Its `cpu` or `class` value (the entry if neither is given).
    pub fn placement_location(&self) -> &Location {
        &self.placement_at
    }
}

/// Agents loaded from one or more manifests.
#[derive(Debug, Clone, Default)]
pub struct AgentSet {
    agents: Vec<AgentSpec>,
    files: Vec<PathBuf>,
}

impl AgentSet {
    /// Reads and validates manifests. Every file is checked before calls
    /// are resolved, so a call may name an agent of a later file.
    pub fn load(paths: &[PathBuf]) -> Result<Self, ConfigError> {
        let files = paths
            .iter()
            .map(|p| SourceFile::read(p))
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_sources(&files)
    }

    /// Validates manifests already in memory.
    pub fn from_sources(files: &[SourceFile]) -> Result<Self, ConfigError> {
        let mut pending: Vec<Pending> = Vec::new();
        for file in files {
            let raw: AgentsFile = file.parse()?;
            let schema = *raw.schema.get_ref();
            if schema != 1 {
                return Err(ConfigError::Schema {
                    at: file.locate(raw.schema.span()),
                    found: schema,
                });
            }
            if raw.agent.is_empty() {
                return Err(ConfigError::Invalid {
                    at: Location::file(file.path()),
                    message: "no [[agent]] entries; a manifest lists at least one agent".to_owned(),
                });
            }
            limits::check_agent_count(file, &raw.agent, pending.len())?;
            for entry in raw.agent {
                let next = entry_spec(entry, file)?;
                if let Some(first) = pending
                    .iter()
                    .find(|p| p.spec.service == next.spec.service && p.spec.host == next.spec.host)
                {
                    return Err(ConfigError::DuplicateAgent {
                        at: next.spec.at.clone(),
                        name: next.spec.service,
                        host: next.spec.host,
                        first: first.spec.at.clone(),
                    });
                }
                pending.extend(instances(next));
            }
        }
        let agents = resolve_calls(pending)?;
        legacy::check_ports(&agents)?;
        Ok(Self {
            agents,
            files: files.iter().map(|f| f.path().to_path_buf()).collect(),
        })
    }

    /// The agents, in file order.
    pub fn agents(&self) -> &[AgentSpec] {
        &self.agents
    }

    /// One agent.
    pub fn get(&self, index: AgentIndex) -> &AgentSpec {
        &self.agents[index.0]
    }

    /// Where a daemon's own request load goes (the load generator's
    /// requests, and the plan that spreads agents for them): the first
    /// coordinator for which `here` holds.
    pub fn request_entry(&self, here: impl Fn(AgentIndex) -> bool) -> Option<AgentIndex> {
        self.iter()
            .find(|(i, a)| here(*i) && a.kind() == AgentKind::Native(NativeName::Coordinator))
            .map(|(i, _)| i)
    }

    /// Every agent with its index.
    pub fn iter(&self) -> impl Iterator<Item = (AgentIndex, &AgentSpec)> {
        self.agents
            .iter()
            .enumerate()
            .map(|(i, a)| (AgentIndex(i), a))
    }

    /// Number of agents.
    pub fn len(&self) -> usize {
        self.agents.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }

    /// The manifests it was loaded from.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The name to show for an agent: its plain name when unique in the
    /// set, `name@host` otherwise.
    pub fn display_name(&self, index: AgentIndex) -> String {
        let agent = self.get(index);
        let clash = self.agents.iter().filter(|a| a.name == agent.name).count() > 1;
        if clash {
            format!("{}@{}", agent.name, agent.host)
        } else {
            agent.name.clone()
        }
    }

    /// The name to show for a call target: the service name, not a
    /// replica's.
    pub fn target_name(&self, target: &CallTarget) -> String {
        match target {
            CallTarget::Local(index) => self.service_name(*index),
            CallTarget::Remote { name, host } => format!("{name}@{host}"),
        }
    }

    /// The name callers use for `index`'s agent: its service name, with
    /// `@host` when two hosts share it.
    pub fn service_name(&self, index: AgentIndex) -> String {
        let agent = self.get(index);
        let clash = self
            .agents
            .iter()
            .any(|a| a.service == agent.service && a.host != agent.host);
        if clash {
            format!("{}@{}", agent.service, agent.host)
        } else {
            agent.service.clone()
        }
    }

    /// Every replica of the agent `index` belongs to, first to last (just
    /// `index` for an agent of one instance).
    pub fn replicas_of(&self, index: AgentIndex) -> impl Iterator<Item = AgentIndex> + use<> {
        let agent = self.get(index);
        let first = index.0 - agent.replica as usize;
        (first..first + agent.replicas.count() as usize).map(AgentIndex)
    }
}

/// `next` as its replicas: itself when it has one instance, else one
/// copy per replica, named `Name#i`.
fn instances(next: Pending) -> Vec<Pending> {
    let count = next.spec.replicas.count();
    if count == 1 {
        return vec![next];
    }
    (0..count)
        .map(|i| Pending {
            spec: AgentSpec {
                name: format!("{}#{i}", next.spec.service),
                replica: i,
                ..next.spec.clone()
            },
            raw_calls: next.raw_calls.clone(),
            file: next.file.clone(),
        })
        .collect()
}

/// An entry validated but for its calls.
pub(super) struct Pending {
    pub spec: AgentSpec,
    pub raw_calls: Vec<Spanned<String>>,
    pub file: SourceFile,
}

fn entry_spec(entry: Spanned<AgentEntry>, file: &SourceFile) -> Result<Pending, ConfigError> {
    let at = file.locate(entry.span());
    let raw = entry.into_inner();
    let name = checked(&raw.name, file, "agent name")?;
    let host = checked(&raw.host, file, "host name")?;
    let kind = kind(&raw, &name, file)?;
    let (placement, placement_at) = match (&raw.cpu, &raw.class) {
        (Some(_), Some(class)) => {
            return Err(invalid(
                file,
                class.span(),
                format!("agent {name} gives both `cpu` and `class`; keep one"),
            ));
        }
        (Some(cpu), None) => (Placement::Cpu(*cpu.get_ref()), file.locate(cpu.span())),
        (None, Some(class)) => (
            Placement::Class(*class.get_ref()),
            file.locate(class.span()),
        ),
        (None, None) => (Placement::Class(ClassWish::Any), at.clone()),
    };
    let weight = match &raw.weight {
        Some(w) if !(w.get_ref().is_finite() && *w.get_ref() > 0.0 && *w.get_ref() <= 1000.0) => {
            let message = format!(
                "weight {} is out of range; use a positive number up to 1000",
                w.get_ref()
            );
            return Err(invalid(file, w.span(), message));
        }
        Some(w) => *w.get_ref(),
        None => DEFAULT_WEIGHT,
    };
    check_role(&raw.role, &name, &at)?;
    limits::check_agent_lists(&raw, file, &name)?;
    let (process, account) = super::process::validate(&raw, file, &name)?;
    let spec = AgentSpec {
        process: process.map(Box::new),
        account,
        legacy: legacy::validate(&raw, file, &name)?,
        replicas: replicas::validate(&raw, file, &name)?,
        service: name.clone(),
        replica: 0,
        publishes: topics(&raw.publishes, file, &name)?,
        subscribes: topics(&raw.subscribes, file, &name)?,
        models: models(&raw.models, file, &name)?,
        behaviour: behaviour(&raw, file, &name)?,
        name,
        host,
        role: raw.role,
        ports: raw.ports,
        kind,
        placement,
        priority: raw.priority.map_or(Priority::Normal, |p| *p.get_ref()),
        weight,
        calls: Vec::new(),
        at,
        placement_at,
    };
    Ok(Pending {
        spec,
        raw_calls: raw.calls,
        file: file.clone(),
    })
}

fn check_role(role: &str, name: &str, at: &Location) -> Result<(), ConfigError> {
    if role.len() > MAX_ROLE_BYTES {
        return Err(ConfigError::Invalid {
            at: at.clone(),
            message: format!(
                "agent {name}: role is {} bytes; keep it to {MAX_ROLE_BYTES}",
                role.len()
            ),
        });
    }
    Ok(())
}

fn behaviour(raw: &AgentEntry, file: &SourceFile, agent: &str) -> Result<Behaviour, ConfigError> {
    let mut out = Behaviour::default();
    if let Some(service) = &raw.service {
        let s = service.get_ref();
        if s.median_us == 0 || s.p99_us < s.median_us || s.p99_us > 60_000_000 {
            let message = format!(
                "agent {agent}: service needs 0 < median_us <= p99_us <= 60000000, got {} and {}",
                s.median_us, s.p99_us
            );
            return Err(invalid(file, service.span(), message));
        }
        (out.median_ns, out.p99_ns) = (s.median_us * 1_000, s.p99_us * 1_000);
    }
    if let Some(concurrency) = &raw.concurrency {
        if !(1..=256).contains(concurrency.get_ref()) {
            return Err(invalid(
                file,
                concurrency.span(),
                format!("agent {agent}: concurrency must be 1 to 256"),
            ));
        }
        out.concurrency = *concurrency.get_ref();
    }
    if let Some(every) = &raw.calls_every {
        if *every.get_ref() == 0 {
            return Err(invalid(
                file,
                every.span(),
                format!("agent {agent}: calls_every must be at least 1"),
            ));
        }
        out.calls_every = *every.get_ref();
    }
    if let Some(hz) = &raw.stream_hz {
        if !(1..=1_000).contains(hz.get_ref()) {
            return Err(invalid(
                file,
                hz.span(),
                format!("agent {agent}: stream_hz must be 1 to 1000 frames a second"),
            ));
        }
        out.stream_hz = *hz.get_ref();
    }
    if let Some(faults) = &raw.faults {
        let f = faults.get_ref();
        if f.stall_every > 0 && f.stall_ms == 0 {
            return Err(invalid(
                file,
                faults.span(),
                format!("agent {agent}: stall_every needs stall_ms above 0"),
            ));
        }
        (out.fail_every, out.stall_every, out.stall_ns) =
            (f.fail_every, f.stall_every, f.stall_ms * 1_000_000);
    }
    Ok(out)
}

fn invalid(file: &SourceFile, span: std::ops::Range<usize>, message: String) -> ConfigError {
    ConfigError::Invalid {
        at: file.locate(span),
        message,
    }
}

fn kind(raw: &AgentEntry, name: &str, file: &SourceFile) -> Result<AgentKind, ConfigError> {
    match (*raw.kind.get_ref(), &raw.native) {
        (KindName::Native, Some(native)) => Ok(AgentKind::Native(*native.get_ref())),
        (KindName::Native, None) => Err(invalid(
            file,
            raw.kind.span(),
            format!(
                "agent {name} is native but names no implementation; add native = \"registry\" or \"coordinator\""
            ),
        )),
        (_, Some(native)) => Err(invalid(
            file,
            native.span(),
            format!("agent {name}: `native` goes with kind = \"native\" only"),
        )),
        (KindName::Synthetic, None) => Ok(AgentKind::Synthetic),
        (KindName::Process, None) => Ok(AgentKind::Process),
        (KindName::External, None) => Ok(AgentKind::External),
        (KindName::Zmq, None) => Ok(AgentKind::Zmq),
    }
}

fn models(
    raw: &[Spanned<ModelEntry>],
    file: &SourceFile,
    agent: &str,
) -> Result<Vec<ModelNeed>, ConfigError> {
    raw.iter()
        .map(|m| {
            let model = m.get_ref();
            if let Some(problem) = name_problem(&model.name) {
                let message = format!("agent {agent}: model name {:?} {problem}", model.name);
                return Err(invalid(file, m.span(), message));
            }
            if !(1..=MAX_VRAM_MIB).contains(&model.vram_mib) {
                let message = format!(
                    "agent {agent}: model {} needs vram_mib from 1 to {MAX_VRAM_MIB}, got {}",
                    model.name, model.vram_mib
                );
                return Err(invalid(file, m.span(), message));
            }
            Ok(ModelNeed {
                name: model.name.clone(),
                vram_mib: model.vram_mib,
                estimate: model.estimate,
            })
        })
        .collect()
}

fn checked(name: &Spanned<String>, file: &SourceFile, what: &str) -> Result<String, ConfigError> {
    match name_problem(name.get_ref()) {
        None => Ok(name.get_ref().clone()),
        Some(problem) => Err(ConfigError::Invalid {
            at: file.locate(name.span()),
            message: format!("{what} {:?} {problem}", name.get_ref()),
        }),
    }
}

fn topics(
    raw: &[Spanned<String>],
    file: &SourceFile,
    agent: &str,
) -> Result<Vec<String>, ConfigError> {
    let mut out: Vec<String> = Vec::new();
    for topic in raw {
        let text = topic.get_ref();
        let well_formed = text.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && text.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
            });
        let message = if text.len() > MAX_TOPIC_BYTES {
            format!(
                "topic of agent {agent} is {} bytes; keep it to {MAX_TOPIC_BYTES}",
                text.len()
            )
        } else if !well_formed {
            format!(
                "topic {text:?} of agent {agent} may hold only lowercase letters, digits, '.', '_' and '-'"
            )
        } else if out.contains(text) {
            format!("topic {text:?} is listed twice for agent {agent}; remove one")
        } else {
            out.push(text.clone());
            continue;
        };
        return Err(ConfigError::Invalid {
            at: file.locate(topic.span()),
            message,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::limits::{MAX_AGENTS, MAX_TOPICS};

    fn sut(texts: &[&str]) -> Result<AgentSet, ConfigError> {
        let files: Vec<SourceFile> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                SourceFile::from_text(Path::new(&format!("a{i}.toml")), format!("schema = 1\n{t}"))
            })
            .collect();
        AgentSet::from_sources(&files)
    }

    fn agent(name: &str, host: &str, extra: &str) -> String {
        format!(
            "[[agent]]\nname = \"{name}\"\nhost = \"{host}\"\nrole = \"r\"\nkind = \"synthetic\"\n{extra}\n"
        )
    }

    #[test]
    fn calls_resolve_to_the_callers_host_first() {
        let a = agent("Hub", "mainpc", "") + &agent("Rm", "pc2", "calls = [\"Hub\"]");
        let b = agent("Hub", "pc2", "");
        let set = sut(&[&a, &b]).unwrap();
        let rm = set.get(AgentIndex(1));
        assert_eq!(rm.calls(), &[CallTarget::Local(AgentIndex(2))]);
        assert_eq!(set.display_name(AgentIndex(2)), "Hub@pc2");
    }

    #[test]
    fn a_qualified_call_to_an_unloaded_host_is_remote() {
        let set = sut(&[&agent("A", "mainpc", "calls = [\"Mos@pc2\"]")]).unwrap();
        let expected = CallTarget::Remote {
            name: "Mos".into(),
            host: "pc2".into(),
        };
        assert_eq!(set.get(AgentIndex(0)).calls(), &[expected]);
    }

    #[test]
    fn an_unknown_call_is_an_error_with_a_suggestion_and_a_line() {
        let text = agent("ModelManagerSuite", "m", "")
            + &agent("Stt", "m", "calls = [\"ModelManagerSuit\"]");
        let err = sut(&[&text]).unwrap_err();
        assert!(
            err.to_string()
                .contains("did you mean \"ModelManagerSuite\"?"),
            "{err}"
        );
        assert_eq!(err.location().unwrap().line(), 13);
    }

    #[test]
    fn a_qualified_call_to_a_loaded_host_without_that_agent_is_unknown() {
        let text = agent("A", "m", "calls = [\"B@m\"]");
        assert!(matches!(
            sut(&[&text]).unwrap_err(),
            ConfigError::UnknownCall { .. }
        ));
    }

    #[test]
    fn an_ambiguous_call_names_the_hosts() {
        let text =
            agent("Hub", "x", "") + &agent("Hub", "y", "") + &agent("A", "z", "calls = [\"Hub\"]");
        let err = sut(&[&text]).unwrap_err();
        assert!(err.to_string().contains("x, y"), "{err}");
    }

    #[test]
    fn a_duplicate_agent_points_at_both_entries() {
        let err = sut(&[&agent("A", "m", ""), &agent("A", "m", "")]).unwrap_err();
        let ConfigError::DuplicateAgent { at, first, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(at.path(), Path::new("a1.toml"));
        assert_eq!(first.path(), Path::new("a0.toml"));
    }

    #[test]
    fn native_kind_requires_an_implementation() {
        let text = agent("R", "m", "").replace("synthetic", "native");
        assert!(
            sut(&[&text])
                .unwrap_err()
                .to_string()
                .contains("names no implementation")
        );
        let text = text.replace("role = \"r\"", "role = \"r\"\nnative = \"registry\"");
        assert_eq!(
            sut(&[&text]).unwrap().get(AgentIndex(0)).kind(),
            AgentKind::Native(NativeName::Registry)
        );
    }

    #[test]
    fn cpu_and_class_together_are_an_error() {
        let text = agent("A", "m", "cpu = 1\nclass = \"P\"");
        assert!(
            sut(&[&text])
                .unwrap_err()
                .to_string()
                .contains("both `cpu` and `class`")
        );
    }

    #[test]
    fn self_calls_duplicate_calls_and_bad_topics_are_errors() {
        assert!(
            sut(&[&agent("A", "m", "calls = [\"A\"]")])
                .unwrap_err()
                .to_string()
                .contains("calls itself")
        );
        let twice = agent("B", "m", "") + &agent("A", "m", "calls = [\"B\", \"B@m\"]");
        assert!(sut(&[&twice]).unwrap_err().to_string().contains("twice"));
        assert!(sut(&[&agent("A", "m", "publishes = [\"Audio Raw\"]")]).is_err());
    }

    #[test]
    fn lists_and_sizes_past_their_bounds_are_errors_at_the_entry() {
        let error = |extra: &str| sut(&[&agent("A", "m", extra)]).unwrap_err().to_string();
        let topics: Vec<String> = (0..=MAX_TOPICS).map(|i| format!("\"t{i}\"")).collect();
        let long_topic = "t".repeat(MAX_TOPIC_BYTES + 1);
        let huge = MAX_VRAM_MIB + 1;

        let many = error(&format!("subscribes = [{}]", topics.join(", ")));
        let long = error(&format!("publishes = [\"{long_topic}\"]"));
        let vram = error(&format!(
            "models = [{{ name = \"llm\", vram_mib = {huge} }}]"
        ));
        let name = error("models = [{ name = \"a b\", vram_mib = 1 }]");

        assert!(many.starts_with("a0.toml:7:"), "{many}");
        assert!(
            many.contains("subscribes: 65 entries; at most 64"),
            "{many}"
        );
        assert!(long.contains("keep it to 128"), "{long}");
        assert!(
            vram.contains(&format!("vram_mib from 1 to {MAX_VRAM_MIB}")),
            "{vram}"
        );
        assert!(name.contains("model name \"a b\""), "{name}");
    }

    #[test]
    fn more_agents_than_the_bound_across_manifests_are_an_error_at_the_first_too_many() {
        let first: String = (0..MAX_AGENTS - 1)
            .map(|i| agent(&format!("A{i}"), "m", ""))
            .collect();
        let second = agent("B0", "m", "") + &agent("B1", "m", "");

        let err = sut(&[&first, &second]).unwrap_err();

        let at = err.location().unwrap();
        assert_eq!((at.path(), at.line()), (Path::new("a1.toml"), 8));
        assert!(err.to_string().contains("at most 1024 agents"), "{err}");
    }

    #[test]
    fn unknown_keys_and_unknown_kinds_are_parse_errors_with_lines() {
        let err = sut(&[&agent("A", "m", "colour = \"red\"")]).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Parse { message, .. } if message.contains("unknown field `colour`")),
            "{err}"
        );
        let err = sut(&[&agent("A", "m", "").replace("synthetic", "magic")]).unwrap_err();
        assert!(err.to_string().contains("unknown variant `magic`"), "{err}");
        assert_eq!(err.location().unwrap().line(), 6);
    }

    #[test]
    fn behaviour_defaults_and_checks_its_numbers() {
        let set = sut(&[&agent(
            "A",
            "m",
            "service = { median_us = 50, p99_us = 400 }\nconcurrency = 4",
        )])
        .unwrap();
        let b = set.get(AgentIndex(0)).behaviour();
        assert_eq!(
            (b.median_ns, b.p99_ns, b.concurrency, b.calls_every),
            (50_000, 400_000, 4, 1)
        );
        assert!(
            sut(&[&agent(
                "A",
                "m",
                "service = { median_us = 500, p99_us = 400 }"
            )])
            .is_err()
        );
        assert!(sut(&[&agent("A", "m", "concurrency = 0")]).is_err());
        assert!(sut(&[&agent("A", "m", "stream_hz = 0")]).is_err());
        let long_role =
            agent("A", "m", "").replace("role = \"r\"", &format!("role = \"{}\"", "r".repeat(300)));
        assert!(
            sut(&[&long_role])
                .unwrap_err()
                .to_string()
                .contains("keep it to 256")
        );
        let source = sut(&[&agent("A", "m", "stream_hz = 50")]).unwrap();
        assert_eq!(source.get(AgentIndex(0)).behaviour().stream_hz, 50);
        assert!(sut(&[&agent("A", "m", "faults = { stall_every = 2 }")]).is_err());
    }

    #[test]
    fn an_empty_manifest_and_a_bad_weight_are_errors() {
        assert!(
            sut(&[""])
                .unwrap_err()
                .to_string()
                .contains("no [[agent]] entries")
        );
        assert!(
            sut(&[&agent("A", "m", "weight = 0.0")])
                .unwrap_err()
                .to_string()
                .contains("out of range")
        );
    }
}
