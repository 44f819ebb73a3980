//! [`MemoryKv`]: the placement store as a value in memory, with the
//! compare-and-set rules of a JetStream KV bucket. The daemon of a single
//! host (no cluster, no NATS) keeps its placements in one; the
//! simulation (`tests/gpu_sched_sim.rs`) shares one between its hosts, in
//! place of the bucket.
//!
//! The rules, as JetStream applies them to a bucket's stream:
//! * revisions are the stream's sequence: one counter for every key, so a
//!   revision names one change of one key;
//! * a create succeeds if the key has no entry or only a deletion;
//! * an update or a delete succeeds if the key's last revision is the one
//!   it names (the `Nats-Expected-Last-Subject-Sequence` header);
//! * a deletion leaves a marker with its own revision.
//!
//! Every change is kept in order ([`MemoryKv::changes`]) so that a
//! simulated watch can deliver them, with delays, as the bucket's watch
//! would.

use std::collections::BTreeMap;

use super::types::{Ownership, Slot, Write, WriteOutcome, WriteRequest};

/// One change of one key: what a watch delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The key.
    pub slot: Slot,
    /// Its revision.
    pub revision: u64,
    /// The new record; `None` for a deletion.
    pub owner: Option<Ownership>,
}

/// The placement store in memory. See the module doc.
#[derive(Debug, Default)]
pub struct MemoryKv {
    last: BTreeMap<Slot, (u64, Option<Ownership>)>,
    changes: Vec<Change>,
}

impl MemoryKv {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies a write by the store's rules.
    pub fn apply(&mut self, req: &WriteRequest) -> WriteOutcome {
        let last = self.last.get(&req.slot);
        let allowed = match &req.write {
            Write::Create(_) => last.is_none_or(|(_, owner)| owner.is_none()),
            Write::Update { revision, .. } | Write::Delete { revision } => {
                last.is_some_and(|(r, _)| r == revision)
            }
        };
        if !allowed {
            return WriteOutcome::Conflict;
        }
        let revision = self.changes.len() as u64 + 1;
        let owner = req.write.owner().cloned();
        self.last
            .insert(req.slot.clone(), (revision, owner.clone()));
        self.changes.push(Change {
            slot: req.slot.clone(),
            revision,
            owner,
        });
        WriteOutcome::Written { revision }
    }

    /// Every change so far, in order (revision `n` is `changes()[n - 1]`).
    pub fn changes(&self) -> &[Change] {
        &self.changes
    }

    /// The current record of `slot` and its revision, if it has one.
    pub fn get(&self, slot: &Slot) -> Option<(u64, &Ownership)> {
        let (revision, owner) = self.last.get(slot)?;
        owner.as_ref().map(|o| (*revision, o))
    }

    /// Every slot with a record, in slot order.
    pub fn entries(&self) -> impl Iterator<Item = (&Slot, u64, &Ownership)> {
        self.last
            .iter()
            .filter_map(|(s, (r, o))| o.as_ref().map(|o| (s, *r, o)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::sched::{GpuIndex, HostName, ModelName, Policy};

    fn owner(host: &str) -> Ownership {
        Ownership {
            host: HostName::from(host),
            gpu: GpuIndex(0),
            vram_mib: 100,
            pinned: true,
            active: false,
            priority: 0,
            policy: Policy::Binpack,
            loaded: true,
        }
    }

    fn write(write: Write) -> WriteRequest {
        WriteRequest {
            slot: Slot {
                model: ModelName::from("m"),
                replica: 0,
            },
            write,
            id: 0,
        }
    }

    #[test]
    fn a_create_wins_once_and_an_update_needs_the_current_revision() {
        let mut sut = MemoryKv::new();

        let first = sut.apply(&write(Write::Create(owner("a"))));
        let second = sut.apply(&write(Write::Create(owner("b"))));
        let stale = sut.apply(&write(Write::Update {
            owner: owner("b"),
            revision: 7,
        }));
        let current = sut.apply(&write(Write::Update {
            owner: owner("b"),
            revision: 1,
        }));
        let loser = sut.apply(&write(Write::Update {
            owner: owner("c"),
            revision: 1,
        }));

        assert_eq!(first, WriteOutcome::Written { revision: 1 });
        assert_eq!(second, WriteOutcome::Conflict);
        assert_eq!(stale, WriteOutcome::Conflict);
        assert_eq!(current, WriteOutcome::Written { revision: 2 });
        assert_eq!(loser, WriteOutcome::Conflict, "revision 1 is gone");
        let slot = write(Write::Delete { revision: 0 }).slot;
        assert_eq!(
            sut.get(&slot).map(|(r, o)| (r, o.host.0.as_str())),
            Some((2, "b"))
        );
    }

    #[test]
    fn a_deleted_key_can_be_created_again_and_every_change_is_kept_in_order() {
        let mut sut = MemoryKv::new();
        sut.apply(&write(Write::Create(owner("a"))));

        let deleted = sut.apply(&write(Write::Delete { revision: 1 }));
        let again = sut.apply(&write(Write::Create(owner("b"))));

        assert_eq!(deleted, WriteOutcome::Written { revision: 2 });
        assert_eq!(again, WriteOutcome::Written { revision: 3 });
        let revisions: Vec<(u64, bool)> = sut
            .changes()
            .iter()
            .map(|c| (c.revision, c.owner.is_some()))
            .collect();
        assert_eq!(revisions, [(1, true), (2, false), (3, true)]);
        assert_eq!(sut.entries().count(), 1);
    }
}
