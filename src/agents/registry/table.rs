//! The registry's table: agents by name and by id, their records and when
//! each was last heard from, and the change counter snapshots follow.
//!
//! Invariants: `names_by_id` holds exactly one entry per entry of
//! `entries`, mapping its record's id back to its name; `entries.len() <=
//! config.capacity`; `saved_generation <= generation`, and `dirty_since_ns`
//! is `Some` exactly when they differ.
//!
//! The census (entries, and how many are up) answers every work request
//! to a registry agent, so it is kept instead of counted per request (a
//! scan of every entry's health). A census taken at `t` holds until the
//! first entry up at `t` would go stale, unless the table changed in a way
//! that could add an entry or raise the count: an entry added, removed,
//! restored or changed, or one heard from while not up (`census_epoch`).
//! A heartbeat of an entry already up only postpones its going stale, so
//! the census's end stays a safe bound and it is not retaken.

use std::cell::Cell;
use std::collections::HashMap;

use crate::config::name_problem;
use crate::topology::CpuId;
use pinwheel_ipc::wire::AgentId;

use super::{Health, HealthThresholds, RegistryError};

/// The longest role text accepted, in bytes; roles are labels, not
/// documents, and a hostile agent should not grow the snapshot unboundedly.
pub const MAX_ROLE_LEN: usize = crate::config::MAX_ROLE_BYTES;

/// How a registry is built: its fixed capacity and its health thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryConfig {
    /// The most agents it holds.
    pub capacity: usize,
    /// When silence makes an agent stale, then down.
    pub thresholds: HealthThresholds,
}

impl RegistryConfig {
    /// `capacity` agents with the default thresholds.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            capacity,
            thresholds: HealthThresholds::DEFAULT,
        }
    }
}

/// What an agent says about itself when it registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its address on the wire.
    pub id: AgentId,
    /// The host it runs on.
    pub host: String,
    /// The CPU it is pinned to.
    pub cpu: CpuId,
    /// What it does, free text (at most [`MAX_ROLE_LEN`] bytes).
    pub role: String,
}

/// When an entry was last heard from, on this daemon's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// Registered or heartbeat at this time.
    Heartbeat(u64),
    /// Loaded from a snapshot at this time; not heard from since.
    Restored(u64),
}

/// One registered agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    record: Record,
    seen: Seen,
}

impl Entry {
    /// What the agent registered.
    pub fn record(&self) -> &Record {
        &self.record
    }

    /// When it was last heard from (registration or heartbeat); `None` if it
    /// was loaded from a snapshot and has not been heard from since.
    pub fn last_heard_ns(&self) -> Option<u64> {
        match self.seen {
            Seen::Heartbeat(at_ns) => Some(at_ns),
            Seen::Restored(_) => None,
        }
    }

    /// Its health at `now_ns` (see the module doc for restored entries).
    pub fn health(&self, now_ns: u64, thresholds: &HealthThresholds) -> Health {
        match self.seen {
            Seen::Heartbeat(at_ns) => thresholds.classify(now_ns.saturating_sub(at_ns)),
            Seen::Restored(at_ns) if now_ns.saturating_sub(at_ns) >= thresholds.down_after_ns() => {
                Health::Down
            }
            Seen::Restored(_) => Health::Stale,
        }
    }

    /// Notes the agent heard from at `now_ns`, and bumps `census_epoch`
    /// when it was not up just before (judged at `now_ns`): it may come up.
    fn hear(&mut self, now_ns: u64, thresholds: &HealthThresholds, census_epoch: &mut u64) {
        if self.health(now_ns, thresholds) != Health::Up {
            *census_epoch += 1;
        }
        // A late heartbeat (an older `now_ns` from another task) must not
        // move the time back.
        self.seen = match self.seen {
            Seen::Heartbeat(at_ns) => Seen::Heartbeat(at_ns.max(now_ns)),
            Seen::Restored(_) => Seen::Heartbeat(now_ns),
        };
    }
}

/// The census as taken at `from_ns`, good until `until_ns` unless
/// `epoch` is no longer the table's (module doc).
#[derive(Debug, Clone, Copy)]
struct Census {
    epoch: u64,
    from_ns: u64,
    until_ns: u64,
    entries: u32,
    up: u32,
}

/// What [`Registry::register`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterOutcome {
    /// A new name.
    Added,
    /// A known name with a changed record.
    Updated,
    /// A known name with the same record: only a heartbeat, and no change
    /// for the snapshot.
    Unchanged,
}

/// The agents of this daemon, by name and id. See the module doc.
#[derive(Debug)]
pub struct Registry {
    entries: HashMap<String, Entry>,
    names_by_id: HashMap<AgentId, String>,
    config: RegistryConfig,
    generation: u64,
    saved_generation: u64,
    dirty_since_ns: Option<u64>,
    /// Bumped by every change that may add to the census (module doc).
    census_epoch: u64,
    census: Cell<Option<Census>>,
}

impl Registry {
    /// An empty registry for `capacity` agents with the default thresholds.
    pub fn new(capacity: usize) -> Self {
        Self::with_config(RegistryConfig::with_capacity(capacity))
    }

    /// An empty registry built as `config` says.
    pub fn with_config(config: RegistryConfig) -> Self {
        Self {
            entries: HashMap::with_capacity(config.capacity),
            names_by_id: HashMap::with_capacity(config.capacity),
            config,
            generation: 0,
            saved_generation: 0,
            dirty_since_ns: None,
            census_epoch: 0,
            census: Cell::new(None),
        }
    }

    /// Registers `name`, or updates it if it is known. Either way the agent
    /// counts as heard from at `now_ns`.
    pub fn register(
        &mut self,
        name: &str,
        record: Record,
        now_ns: u64,
    ) -> Result<RegisterOutcome, RegistryError> {
        check_record(name, &record)?;
        if let Some(holder) = self.names_by_id.get(&record.id)
            && holder != name
        {
            return Err(RegistryError::IdTaken {
                name: name.to_owned(),
                id: record.id.0,
                holder: holder.clone(),
            });
        }
        let Some(entry) = self.entries.get_mut(name) else {
            return self.add(name, record, now_ns);
        };
        entry.hear(now_ns, &self.config.thresholds, &mut self.census_epoch);
        if entry.record == record {
            return Ok(RegisterOutcome::Unchanged);
        }
        let old_id = entry.record.id;
        entry.record = record;
        if old_id != entry.record.id {
            self.names_by_id.remove(&old_id);
            self.names_by_id.insert(entry.record.id, name.to_owned());
        }
        self.note_change(now_ns);
        Ok(RegisterOutcome::Updated)
    }

    fn add(
        &mut self,
        name: &str,
        record: Record,
        now_ns: u64,
    ) -> Result<RegisterOutcome, RegistryError> {
        if self.entries.len() >= self.config.capacity {
            return Err(RegistryError::Full {
                name: name.to_owned(),
                capacity: self.config.capacity,
            });
        }
        self.names_by_id.insert(record.id, name.to_owned());
        let seen = Seen::Heartbeat(now_ns);
        self.entries.insert(name.to_owned(), Entry { record, seen });
        self.note_change(now_ns);
        Ok(RegisterOutcome::Added)
    }

    /// Removes `name` and returns what it had registered.
    pub fn deregister(&mut self, name: &str, now_ns: u64) -> Result<Record, RegistryError> {
        let entry = self.entries.remove(name).ok_or_else(|| unknown(name))?;
        self.names_by_id.remove(&entry.record.id);
        self.note_change(now_ns);
        Ok(entry.record)
    }

    /// Notes that `name` is alive at `now_ns`. Never allocates unless the
    /// name is unknown.
    pub fn heartbeat(&mut self, name: &str, now_ns: u64) -> Result<(), RegistryError> {
        let entry = self.entries.get_mut(name).ok_or_else(|| unknown(name))?;
        entry.hear(now_ns, &self.config.thresholds, &mut self.census_epoch);
        Ok(())
    }

    /// Notes that the agent with `id` is alive at `now_ns`, if it holds
    /// the id as `name` with `record`; `false` (nothing noted) if not, and
    /// the caller registers it. For the runtime, which knows senders by
    /// id and hears from them at every message: two hashes, no
    /// allocation.
    pub fn heartbeat_id(&mut self, id: AgentId, name: &str, record: &Record, now_ns: u64) -> bool {
        if self.names_by_id.get(&id).is_none_or(|held| held != name) {
            return false;
        }
        match self.entries.get_mut(name) {
            Some(entry) if entry.record == *record => {
                entry.hear(now_ns, &self.config.thresholds, &mut self.census_epoch);
                true
            }
            _ => false,
        }
    }

    /// The entry registered as `name`. One hash, no allocation.
    pub fn lookup(&self, name: &str) -> Option<&Entry> {
        self.entries.get(name)
    }

    /// The name and entry of the agent holding `id`. Only tests ask the
    /// table by id alone; the runtime hears senders through
    /// [`Registry::heartbeat_id`].
    #[cfg(test)]
    pub fn lookup_id(&self, id: AgentId) -> Option<(&str, &Entry)> {
        let name = self.names_by_id.get(&id)?;
        let entry = self.entries.get(name.as_str())?;
        Some((name.as_str(), entry))
    }

    /// The health of `name` at `now_ns`; `None` if it is not registered.
    pub fn health(&self, name: &str, now_ns: u64) -> Option<Health> {
        self.lookup(name)
            .map(|entry| entry.health(now_ns, &self.config.thresholds))
    }

    /// Every agent, in no particular order (collect and sort for display).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries
            .iter()
            .map(|(name, entry)| (name.as_str(), entry))
    }

    /// How many agents are registered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The most agents it holds.
    pub fn capacity(&self) -> usize {
        self.config.capacity
    }

    /// The thresholds health is judged by.
    pub fn thresholds(&self) -> &HealthThresholds {
        &self.config.thresholds
    }

    /// A counter of changes a snapshot records (registrations that changed
    /// something, deregistrations); heartbeats do not count.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether there are changes no saved snapshot holds.
    pub fn is_dirty(&self) -> bool {
        self.generation != self.saved_generation
    }

    /// Whether a snapshot should be written now: there are unsaved changes
    /// and the oldest is at least `debounce_ns` old. A burst of
    /// registrations (every agent at boot) then costs one write, and no
    /// change waits more than `debounce_ns` to reach the disk.
    pub fn snapshot_due(&self, now_ns: u64, debounce_ns: u64) -> bool {
        self.dirty_since_ns
            .is_some_and(|since_ns| now_ns.saturating_sub(since_ns) >= debounce_ns)
    }

    /// Records that a snapshot of `generation` (read before
    /// [`Registry::save`]) is on disk. Changes made since stay dirty, and
    /// their snapshot is due at once.
    pub fn mark_saved(&mut self, generation: u64) {
        self.saved_generation = self.saved_generation.max(generation.min(self.generation));
        if !self.is_dirty() {
            self.dirty_since_ns = None;
        }
    }

    fn note_change(&mut self, now_ns: u64) {
        self.generation += 1;
        self.census_epoch += 1;
        self.dirty_since_ns.get_or_insert(now_ns);
    }

    /// How many agents are registered, and how many of them are up at
    /// `now_ns`: kept, and retaken only when the module doc says.
    pub fn census(&self, now_ns: u64) -> (u32, u32) {
        if let Some(c) = self.census.get()
            && c.epoch == self.census_epoch
            && (c.from_ns..c.until_ns).contains(&now_ns)
        {
            return (c.entries, c.up);
        }
        let thresholds = &self.config.thresholds;
        let (mut up, mut until_ns) = (0, u64::MAX);
        for entry in self.entries.values() {
            if let Seen::Heartbeat(at_ns) = entry.seen
                && entry.health(now_ns, thresholds) == Health::Up
            {
                up += 1;
                until_ns = until_ns.min(at_ns.saturating_add(thresholds.stale_after_ns()));
            }
        }
        let census = Census {
            epoch: self.census_epoch,
            from_ns: now_ns,
            until_ns,
            entries: self.entries.len() as u32,
            up,
        };
        self.census.set(Some(census));
        (census.entries, census.up)
    }

    /// Adds an entry read from a snapshot: not heard from yet, and not a
    /// change (the snapshot already holds it). On a contradiction, says
    /// what it is, for the caller to report with the file's name.
    pub(super) fn restore(
        &mut self,
        name: String,
        record: Record,
        now_ns: u64,
    ) -> Result<(), String> {
        check_record(&name, &record).map_err(|err| err.to_string())?;
        if self.entries.len() >= self.config.capacity {
            let capacity = self.config.capacity;
            return Err(format!("more than {capacity} agents"));
        }
        if self.entries.contains_key(&name) {
            return Err(format!("agent {name} appears twice"));
        }
        if let Some(holder) = self.names_by_id.get(&record.id) {
            let id = record.id.0;
            return Err(format!("agents {holder} and {name} share id {id}"));
        }
        self.names_by_id.insert(record.id, name.clone());
        let seen = Seen::Restored(now_ns);
        self.entries.insert(name, Entry { record, seen });
        self.census_epoch += 1;
        Ok(())
    }
}

fn unknown(name: &str) -> RegistryError {
    RegistryError::Unknown {
        name: name.to_owned(),
    }
}

fn check_record(name: &str, record: &Record) -> Result<(), RegistryError> {
    let bad = |what, name: &str, problem| RegistryError::BadName {
        what,
        name: name.to_owned(),
        problem,
    };
    // A name may be qualified with its host, `Name@host`, as in the
    // manifests, when one daemon runs two hosts' agents of the same name.
    let (agent, host) = name.split_once('@').unwrap_or((name, record.host.as_str()));
    if let Some(problem) = name_problem(agent) {
        return Err(bad("agent", name, problem));
    }
    if host != record.host {
        return Err(bad("agent", name, "names another host than its record"));
    }
    if let Some(problem) = name_problem(&record.host) {
        return Err(bad("host", &record.host, problem));
    }
    if record.role.len() > MAX_ROLE_LEN {
        return Err(RegistryError::RoleTooLong {
            name: name.to_owned(),
            len: record.role.len(),
            max: MAX_ROLE_LEN,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SECOND_NS: u64 = 1_000_000_000;

    fn record(id: u32, role: &str) -> Record {
        Record {
            id: AgentId(id),
            host: "mainpc".to_owned(),
            cpu: CpuId(3),
            role: role.to_owned(),
        }
    }

    #[test]
    fn a_registered_agent_is_found_by_name_and_by_id() {
        let mut sut = Registry::new(4);

        let outcome = sut.register("stt", record(7, "speech"), 0).unwrap();

        assert_eq!(outcome, RegisterOutcome::Added);
        assert_eq!(sut.lookup("stt").unwrap().record(), &record(7, "speech"));
        let (name, entry) = sut.lookup_id(AgentId(7)).unwrap();
        assert_eq!(name, "stt");
        assert_eq!(entry.record().role, "speech");
        assert!(sut.lookup("tts").is_none());
        assert_eq!(sut.len(), 1);
    }

    #[test]
    fn registering_a_known_name_again_updates_its_record() {
        let mut sut = Registry::new(4);
        sut.register("stt", record(7, "speech"), 0).unwrap();

        let outcome = sut.register("stt", record(8, "speech v2"), 5).unwrap();

        assert_eq!(outcome, RegisterOutcome::Updated);
        assert_eq!(sut.lookup("stt").unwrap().record(), &record(8, "speech v2"));
        assert!(sut.lookup_id(AgentId(7)).is_none());
        assert_eq!(sut.lookup_id(AgentId(8)).unwrap().0, "stt");
        assert_eq!(sut.len(), 1);
    }

    #[test]
    fn registering_the_same_record_again_changes_nothing_to_save() {
        let mut sut = Registry::new(4);
        sut.register("stt", record(7, "speech"), 0).unwrap();
        let generation = sut.generation();

        let outcome = sut.register("stt", record(7, "speech"), 9).unwrap();

        assert_eq!(outcome, RegisterOutcome::Unchanged);
        assert_eq!(sut.generation(), generation);
        assert_eq!(sut.lookup("stt").unwrap().last_heard_ns(), Some(9));
    }

    #[test]
    fn a_deregistered_agent_is_gone_by_name_and_by_id() {
        let mut sut = Registry::new(4);
        sut.register("stt", record(7, "speech"), 0).unwrap();

        let removed = sut.deregister("stt", 1).unwrap();

        assert_eq!(removed, record(7, "speech"));
        assert!(sut.lookup("stt").is_none());
        assert!(sut.lookup_id(AgentId(7)).is_none());
        assert!(sut.is_empty());
        assert!(matches!(
            sut.deregister("stt", 2),
            Err(RegistryError::Unknown { .. })
        ));
    }

    #[test]
    fn a_full_registry_refuses_a_new_name_but_updates_a_known_one() {
        let mut sut = Registry::new(2);
        sut.register("a", record(1, ""), 0).unwrap();
        sut.register("b", record(2, ""), 0).unwrap();

        let err = sut.register("c", record(3, ""), 0).unwrap_err();

        assert!(matches!(err, RegistryError::Full { capacity: 2, .. }));
        assert!(err.to_string().contains("full (2 agents)"));
        assert_eq!(
            sut.register("b", record(2, "new"), 0).unwrap(),
            RegisterOutcome::Updated
        );
    }

    #[test]
    fn an_id_held_by_another_name_is_refused() {
        let mut sut = Registry::new(4);
        sut.register("stt", record(7, ""), 0).unwrap();

        let err = sut.register("tts", record(7, ""), 0).unwrap_err();

        assert!(matches!(err, RegistryError::IdTaken { id: 7, .. }));
        assert!(sut.lookup("tts").is_none());
    }

    #[test]
    fn bad_names_and_long_roles_are_refused() {
        let mut sut = Registry::new(4);
        let mut bad_host = record(1, "");
        bad_host.host = "main pc".to_owned();

        assert!(matches!(
            sut.register("-stt", record(1, ""), 0),
            Err(RegistryError::BadName { what: "agent", .. })
        ));
        assert!(matches!(
            sut.register("stt", bad_host, 0),
            Err(RegistryError::BadName { what: "host", .. })
        ));
        assert!(matches!(
            sut.register("stt", record(1, &"x".repeat(MAX_ROLE_LEN + 1)), 0),
            Err(RegistryError::RoleTooLong { .. })
        ));
        assert!(sut.is_empty());
    }

    #[test]
    fn a_name_qualified_with_its_own_host_is_accepted_and_another_host_refused() {
        let mut sut = Registry::new(4);
        let host = record(1, "").host;
        sut.register(&format!("ObservabilityHub@{host}"), record(1, ""), 0)
            .unwrap();
        assert!(sut.lookup(&format!("ObservabilityHub@{host}")).is_some());
        assert!(matches!(
            sut.register("ObservabilityHub@elsewhere", record(2, ""), 0),
            Err(RegistryError::BadName { what: "agent", .. })
        ));
    }

    #[test]
    fn health_goes_up_stale_down_with_silence_and_back_up_on_a_heartbeat() {
        let mut sut = Registry::new(4);
        sut.register("stt", record(7, ""), 10 * SECOND_NS).unwrap();

        assert_eq!(sut.health("stt", 12 * SECOND_NS), Some(Health::Up));
        assert_eq!(sut.health("stt", 13 * SECOND_NS), Some(Health::Stale));
        assert_eq!(sut.health("stt", 19 * SECOND_NS), Some(Health::Stale));
        assert_eq!(sut.health("stt", 20 * SECOND_NS), Some(Health::Down));

        sut.heartbeat("stt", 21 * SECOND_NS).unwrap();
        assert_eq!(sut.health("stt", 21 * SECOND_NS), Some(Health::Up));
        assert!(sut.heartbeat_id(AgentId(7), "stt", &record(7, ""), 30 * SECOND_NS));
        assert_eq!(sut.health("stt", 32 * SECOND_NS), Some(Health::Up));
        assert_eq!(sut.health("tts", 32 * SECOND_NS), None);
    }

    #[test]
    fn a_late_heartbeat_does_not_move_the_last_heard_time_back() {
        let mut sut = Registry::new(4);
        sut.register("stt", record(7, ""), 0).unwrap();
        sut.heartbeat("stt", 5 * SECOND_NS).unwrap();

        sut.heartbeat("stt", 2 * SECOND_NS).unwrap();

        assert_eq!(
            sut.lookup("stt").unwrap().last_heard_ns(),
            Some(5 * SECOND_NS)
        );
    }

    #[test]
    fn heartbeats_for_unknown_agents_are_reported() {
        let mut sut = Registry::new(4);

        assert!(matches!(
            sut.heartbeat("ghost", 0),
            Err(RegistryError::Unknown { .. })
        ));
        assert!(!sut.heartbeat_id(AgentId(9), "ghost", &record(9, ""), 0));
    }

    #[test]
    fn a_heartbeat_by_id_notes_nothing_for_another_name_or_record() {
        let mut sut = Registry::new(4);
        sut.register("stt", record(7, "asr"), SECOND_NS).unwrap();

        assert!(!sut.heartbeat_id(AgentId(7), "tts", &record(7, "asr"), 5 * SECOND_NS));
        assert!(!sut.heartbeat_id(AgentId(7), "stt", &record(7, "vad"), 5 * SECOND_NS));
        assert_eq!(sut.lookup("stt").unwrap().last_heard_ns(), Some(SECOND_NS));
        assert!(sut.heartbeat_id(AgentId(7), "stt", &record(7, "asr"), 5 * SECOND_NS));
        assert_eq!(
            sut.lookup("stt").unwrap().last_heard_ns(),
            Some(5 * SECOND_NS)
        );
    }

    #[test]
    fn custom_thresholds_are_used_and_must_be_ordered() {
        let thresholds = HealthThresholds::try_new(100, 200).unwrap();
        let mut sut = Registry::with_config(RegistryConfig {
            capacity: 1,
            thresholds,
        });
        sut.register("stt", record(7, ""), 0).unwrap();

        assert_eq!(sut.health("stt", 99), Some(Health::Up));
        assert_eq!(sut.health("stt", 100), Some(Health::Stale));
        assert_eq!(sut.health("stt", 200), Some(Health::Down));
        assert!(HealthThresholds::try_new(200, 200).is_err());
        assert!(HealthThresholds::try_new(0, 200).is_err());
    }

    #[test]
    fn changes_make_a_snapshot_due_after_the_debounce_and_saving_clears_them() {
        let mut sut = Registry::new(4);
        assert!(!sut.is_dirty());
        sut.register("a", record(1, ""), 100).unwrap();
        sut.register("b", record(2, ""), 150).unwrap();

        assert!(sut.is_dirty());
        assert!(!sut.snapshot_due(199, 100));
        assert!(sut.snapshot_due(200, 100));

        sut.mark_saved(sut.generation());
        assert!(!sut.is_dirty());
        assert!(!sut.snapshot_due(1_000, 100));
    }

    #[test]
    fn a_change_made_while_saving_stays_dirty() {
        let mut sut = Registry::new(4);
        sut.register("a", record(1, ""), 0).unwrap();
        let saving = sut.generation();

        sut.register("b", record(2, ""), 50).unwrap();
        sut.mark_saved(saving);

        assert!(sut.is_dirty());
        assert!(sut.snapshot_due(60, 10));
    }

    #[test]
    fn heartbeats_do_not_dirty_the_registry() {
        let mut sut = Registry::new(4);
        sut.register("a", record(1, ""), 0).unwrap();
        sut.mark_saved(sut.generation());

        sut.heartbeat("a", 10).unwrap();

        assert!(!sut.is_dirty());
    }

    /// What the census must say: every entry's health, counted now.
    fn counted(sut: &Registry, now_ns: u64) -> (u32, u32) {
        let up = sut
            .iter()
            .filter(|(_, e)| e.health(now_ns, sut.thresholds()) == Health::Up)
            .count();
        (sut.len() as u32, up as u32)
    }

    #[test]
    fn the_census_is_kept_until_an_up_agent_goes_stale_or_one_comes_up() {
        let mut sut = Registry::new(4);
        sut.register("a", record(1, ""), 0).unwrap();
        sut.register("b", record(2, ""), SECOND_NS).unwrap();
        assert_eq!(sut.census(2 * SECOND_NS), (2, 2));
        // a goes stale at 3 s, b at 4 s.
        assert_eq!(sut.census(3 * SECOND_NS), (2, 1));
        assert_eq!(sut.census(4 * SECOND_NS), (2, 0));
        // A heartbeat brings b back up: the kept census is retaken.
        assert!(sut.heartbeat_id(AgentId(2), "b", &record(2, ""), 4 * SECOND_NS));
        assert_eq!(sut.census(4 * SECOND_NS), (2, 1));
        sut.deregister("a", 5 * SECOND_NS).unwrap();
        assert_eq!(sut.census(5 * SECOND_NS), (1, 1));
    }

    /// A step of the property below.
    #[derive(Debug, Clone)]
    enum Step {
        Register(u8),
        Heartbeat(u8),
        Deregister(u8),
        Restore(u8),
        Wait(u64),
        Back(u64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0..6u8).prop_map(Step::Register),
            (0..6u8).prop_map(Step::Heartbeat),
            (0..6u8).prop_map(Step::Deregister),
            (0..6u8).prop_map(Step::Restore),
            (0..5 * SECOND_NS).prop_map(Step::Wait),
            // A late clock reading from another task.
            (0..SECOND_NS).prop_map(Step::Back),
        ]
    }

    proptest! {
        #[test]
        fn the_kept_census_always_equals_a_count_of_every_entry(
            steps in proptest::collection::vec(step(), 1..60)
        ) {
            let mut sut = Registry::new(4);
            let mut now = 10 * SECOND_NS;
            for step in steps {
                let name = |n: u8| format!("agent{n}");
                let mut at = now;
                match step {
                    Step::Register(n) => {
                        let _ = sut.register(&name(n), record(u32::from(n) + 1, ""), now);
                    }
                    Step::Heartbeat(n) => {
                        let _ = sut.heartbeat_id(AgentId(u32::from(n) + 1), &name(n), &record(u32::from(n) + 1, ""), now);
                    }
                    Step::Deregister(n) => {
                        let _ = sut.deregister(&name(n), now);
                    }
                    Step::Restore(n) => {
                        let _ = sut.restore(name(n), record(u32::from(n) + 1, ""), now);
                    }
                    Step::Wait(ns) => now += ns,
                    Step::Back(ns) => at = now.saturating_sub(ns),
                }
                prop_assert_eq!(sut.census(at), counted(&sut, at));
            }
        }
    }
}
