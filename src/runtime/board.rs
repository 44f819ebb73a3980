//! The board: the few words the control side and the executors share
//! while the mesh runs, each an atomic, so neither side ever waits for
//! the other.
//!
//! * Per agent id, a state word ([`AgentFlags`]: down, isolated, failing,
//!   slow) and a drill word (a packed [`FaultSpec`]). Supervisors and the
//!   core loop write them; every executor's balancers read the flags of
//!   the replicas they pick among, and synthetic agents read their own
//!   drill, once per request.
//! * Per GPU model the manifests name, a grant word and, per executor, a
//!   use desk: the path by which agents ask the VRAM optimizer for their
//!   models ([`super::desk`]). One more desk, after the executors', is
//!   the agent processes': the control side posts their uses there on
//!   their behalf.
//!
//! Built once with the routing table, sized by the plan; nothing here
//! allocates after that. All orderings are Relaxed unless a comment says
//! otherwise: each word is a value on its own, published for the next
//! decision, and no other memory is read through it.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use super::desk::{ModelGrant, UseDesk};
use pinwheel_ipc::drill::FaultSpec;
use pinwheel_ipc::wire::AgentId;

/// An agent's state bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AgentFlags(pub u32);

impl AgentFlags {
    /// Not running: an external agent no process attached, a process
    /// agent that is down.
    pub const DOWN: u32 = 1;
    /// Isolated by its supervisor, waiting out a backoff.
    pub const ISOLATED: u32 = 1 << 1;
    /// Its error rate is anomalous: callers skip it.
    pub const FAILING: u32 = 1 << 2;
    /// Its latency is anomalous: load-aware balancers pass it over while
    /// another replica is usable.
    pub const SLOW: u32 = 1 << 3;

    /// Whether a call may be sent to it.
    pub fn usable(self) -> bool {
        self.0 & (Self::DOWN | Self::ISOLATED | Self::FAILING) == 0
    }

    /// Whether its latency is anomalous.
    pub fn slow(self) -> bool {
        self.0 & Self::SLOW != 0
    }
}

/// One agent's words.
#[derive(Debug, Default)]
#[repr(align(64))]
struct AgentWords {
    flags: AtomicU32,
    drill: AtomicU64,
}

/// A GPU model the manifests name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// Its name.
    pub name: String,
    /// Its VRAM as the manifest estimates it, MiB.
    pub vram_mib: u64,
    /// The highest VRAM class of the agents that use it
    /// ([`vram_class`]).
    pub class: u8,
}

/// The VRAM class of an agent's model uses, from its priority: audio in
/// and out (critical, high) is realtime (2), normal work interactive (1),
/// low work batch (0).
pub fn vram_class(priority: crate::config::Priority) -> u8 {
    match priority {
        crate::config::Priority::Critical | crate::config::Priority::High => 2,
        crate::config::Priority::Normal => 1,
        crate::config::Priority::Low => 0,
    }
}

/// The shared words of one mesh.
#[derive(Debug)]
pub struct Board {
    agents: Box<[AgentWords]>,
    models: Box<[ModelInfo]>,
    grants: Box<[ModelGrant]>,
    desks: Box<[UseDesk]>,
    /// The index of the agent processes' desk in `desks`, if it has one.
    process_desk: Option<usize>,
    managed: AtomicBool,
}

impl Board {
    /// A board for `agents` ids, `models`, one desk per executor with the
    /// given number of slots, and the agent processes' desk with
    /// `process_slots` (none when 0).
    pub fn new(
        agents: usize,
        models: Vec<ModelInfo>,
        desk_slots: &[usize],
        process_slots: usize,
    ) -> Self {
        let process = (process_slots > 0).then_some(process_slots);
        Self {
            agents: (0..agents).map(|_| AgentWords::default()).collect(),
            grants: models.iter().map(|_| ModelGrant::default()).collect(),
            desks: desk_slots
                .iter()
                .chain(process.as_ref())
                .map(|&n| UseDesk::new(n, models.len()))
                .collect(),
            process_desk: process.map(|_| desk_slots.len()),
            models: models.into_boxed_slice(),
            managed: AtomicBool::new(false),
        }
    }

    /// Whether the core loop serves the desks. Until it does (and when
    /// the host has no GPU to manage) model uses run untracked.
    pub fn models_managed(&self) -> bool {
        // SYNC: Acquire pairs with the Release store in `manage_models`,
        // so an executor that sees it set sees the grants made before.
        self.managed.load(Ordering::Acquire)
    }

    /// The core loop takes the desks over.
    pub fn manage_models(&self) {
        // SYNC: Release pairs with the Acquire load in `models_managed`.
        self.managed.store(true, Ordering::Release);
    }

    fn words(&self, agent: AgentId) -> Option<&AgentWords> {
        self.agents.get(agent.0 as usize)
    }

    /// An agent's state.
    pub fn flags(&self, agent: AgentId) -> AgentFlags {
        // SYNC: Relaxed; see the module docs.
        AgentFlags(
            self.words(agent)
                .map_or(0, |w| w.flags.load(Ordering::Relaxed)),
        )
    }

    /// Sets (`on`) or clears the bits `flag` of an agent.
    pub fn set_flag(&self, agent: AgentId, flag: u32, on: bool) {
        if let Some(w) = self.words(agent) {
            // SYNC: Relaxed; see the module docs.
            if on {
                w.flags.fetch_or(flag, Ordering::Relaxed);
            } else {
                w.flags.fetch_and(!flag, Ordering::Relaxed);
            }
        }
    }

    /// The drill an agent is under ([`FaultSpec::NONE`] when none).
    pub fn drill(&self, agent: AgentId) -> FaultSpec {
        // SYNC: Relaxed; see the module docs.
        let bits = self
            .words(agent)
            .map_or(0, |w| w.drill.load(Ordering::Relaxed));
        FaultSpec::from_bits(bits).unwrap_or(FaultSpec::NONE)
    }

    /// Puts an agent under `drill` (`FaultSpec::NONE` ends it).
    pub fn set_drill(&self, agent: AgentId, drill: FaultSpec) {
        if let Some(w) = self.words(agent) {
            // SYNC: Relaxed; see the module docs.
            w.drill.store(drill.to_bits(), Ordering::Relaxed);
        }
    }

    /// The models, by slot.
    pub fn models(&self) -> &[ModelInfo] {
        &self.models
    }

    /// The grant word of a model slot.
    pub fn grant(&self, model: usize) -> Option<&ModelGrant> {
        self.grants.get(model)
    }

    /// Every grant word, by model slot.
    pub fn grants(&self) -> &[ModelGrant] {
        &self.grants
    }

    /// Executor `executor`'s use desk.
    pub fn desk(&self, executor: u16) -> Option<&UseDesk> {
        self.desks.get(usize::from(executor))
    }

    /// The agent processes' use desk, if any agent process names a model.
    pub fn process_desk(&self) -> Option<&UseDesk> {
        self.desks.get(self.process_desk?)
    }

    /// Every use desk: the executors', then the agent processes'.
    pub fn desks(&self) -> &[UseDesk] {
        &self.desks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_drills_are_per_agent_and_out_of_range_ids_read_as_clear() {
        let sut = Board::new(3, Vec::new(), &[], 0);
        sut.set_flag(AgentId(1), AgentFlags::ISOLATED, true);
        sut.set_flag(AgentId(1), AgentFlags::SLOW, true);
        assert!(!sut.flags(AgentId(1)).usable() && sut.flags(AgentId(1)).slow());
        assert!(sut.flags(AgentId(0)).usable());
        sut.set_flag(AgentId(1), AgentFlags::ISOLATED, false);
        assert!(sut.flags(AgentId(1)).usable());
        sut.set_drill(AgentId(2), FaultSpec::slow(10.0));
        assert_eq!(sut.drill(AgentId(2)).slow_factor(), 10.0);
        assert_eq!(sut.drill(AgentId(9)), FaultSpec::NONE);
        assert!(sut.flags(AgentId(9)).usable());
    }

    #[test]
    fn the_agent_processes_desk_comes_after_the_executors_and_only_when_sized() {
        let models = vec![ModelInfo {
            name: "m".into(),
            vram_mib: 1,
            class: 1,
        }];
        let sut = Board::new(1, models.clone(), &[2, 4], 6);
        assert_eq!(sut.desks().len(), 3);
        assert_eq!(sut.process_desk().map(UseDesk::len), Some(6));
        assert_eq!(sut.desk(1).map(UseDesk::len), Some(4));
        assert!(Board::new(1, models, &[2], 0).process_desk().is_none());
    }
}
