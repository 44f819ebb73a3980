//! [`GpuScheduler`]: the state and the public surface. Inputs are reports
//! from other hosts, this host's GPUs, placement requests and the time;
//! outputs are [`Decision`]s pushed onto a caller's vector, and this
//! host's [`HostReport`] for the cluster link to publish.
//!
//! The periodic work (liveness, yielding, taking up assignments, placing
//! orphans) is in `replace.rs`; choosing a GPU is in `fit.rs`.

use std::collections::{BTreeMap, BTreeSet};

use super::fit::{self, Candidate};
use super::types::{
    Assignment, Claim, Decision, GpuIndex, GpuReport, HostName, HostReport, JobRequest, ModelName,
    ModelRequest, Orphan, Placement, Slot,
};
use super::view::{Catalogue, Peer};
use super::{MAX_VRAM_MIB, SchedConfig, SchedError};

/// The most replicas one model may ask for.
pub const MAX_REPLICAS: u8 = 8;

/// Whether this scheduler is one of a cluster or alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// No cluster configured: one host, no peers, never degraded by them.
    SingleHost,
    /// One of the hosts of a cluster.
    Cluster,
}

/// A slot this host holds.
#[derive(Debug, Clone)]
pub(super) struct Owned {
    pub claim: Claim,
    /// The slot is active until then, ms.
    pub active_until_ms: u64,
}

/// A placement this host decided for another host, not yet taken up.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    pub assignment: Assignment,
    pub issued_ms: u64,
}

/// VRAM promised to loads in flight, per (host, GPU), MiB.
pub(super) type Reserved = BTreeMap<(HostName, GpuIndex), u64>;

/// The cross-host GPU scheduler of one host. See the module doc of
/// [`crate::gpu::sched`] for the protocol.
#[derive(Debug)]
pub struct GpuScheduler {
    pub(super) me: HostName,
    pub(super) incarnation: u64,
    pub(super) mode: Mode,
    pub(super) config: SchedConfig,
    pub(super) local_gpus: Vec<GpuReport>,
    pub(super) owned: BTreeMap<Slot, Owned>,
    pub(super) assignments: BTreeMap<Slot, Pending>,
    pub(super) peers: BTreeMap<HostName, Peer>,
    pub(super) catalogue: Catalogue,
    pub(super) link_up: bool,
    pub(super) degraded: bool,
    pub(super) unplaced: BTreeSet<Slot>,
    /// VRAM of local loads decided since the last GPU sample, per GPU: the
    /// sample cannot show them yet.
    pub(super) loaded_since_sample: BTreeMap<GpuIndex, u64>,
    /// Orphans as of the last tick, for the report.
    pub(super) orphans: Vec<Orphan>,
}

impl GpuScheduler {
    /// A scheduler for a host with no cluster: every placement is local.
    pub fn single_host(me: HostName, config: SchedConfig) -> Result<Self, SchedError> {
        Self::build(me, 0, Mode::SingleHost, config)
    }

    /// A scheduler for `me`, one host of a cluster. `incarnation` must grow
    /// each time the host starts (the daemon uses its start time, Unix ms):
    /// peers tell a restart by it, and the longest-running host re-places
    /// lost hosts' models.
    pub fn cluster(
        me: HostName,
        incarnation: u64,
        config: SchedConfig,
    ) -> Result<Self, SchedError> {
        Self::build(me, incarnation, Mode::Cluster, config)
    }

    fn build(
        me: HostName,
        incarnation: u64,
        mode: Mode,
        config: SchedConfig,
    ) -> Result<Self, SchedError> {
        config.check()?;
        Ok(GpuScheduler {
            me,
            incarnation,
            mode,
            config,
            local_gpus: Vec::new(),
            owned: BTreeMap::new(),
            assignments: BTreeMap::new(),
            peers: BTreeMap::new(),
            catalogue: Catalogue::default(),
            link_up: true,
            degraded: false,
            unplaced: BTreeSet::new(),
            loaded_since_sample: BTreeMap::new(),
            orphans: Vec::new(),
        })
    }

    /// This host's name.
    pub fn host(&self) -> &HostName {
        &self.me
    }

    /// Whether this host's view is degraded: a peer lost, or the link down.
    pub fn is_degraded(&self) -> bool {
        self.degraded
    }

    /// This host's GPUs as its backend sees them.
    pub fn set_local_gpus(&mut self, gpus: &[GpuReport]) {
        self.loaded_since_sample.clear();
        self.local_gpus.clear();
        self.local_gpus.extend_from_slice(gpus);
    }

    /// Whether the cluster link is connected; down makes the view degraded
    /// at the next tick.
    pub fn set_link_up(&mut self, up: bool) {
        self.link_up = up;
    }

    /// Takes in a peer's report, which arrived at `now_ms` over a link of
    /// `latency_us`. Reports older than the peer's latest incarnation are
    /// ignored, as is this host's own echo.
    pub fn observe(
        &mut self,
        report: HostReport,
        latency_us: u64,
        now_ms: u64,
        out: &mut Vec<Decision>,
    ) -> Result<(), SchedError> {
        if self.mode == Mode::SingleHost {
            return Err(SchedError::SingleHost { host: report.host });
        }
        if report.host == self.me {
            return if report.incarnation == self.incarnation {
                Ok(())
            } else {
                Err(SchedError::SameName { host: report.host })
            };
        }
        if self
            .peers
            .get(&report.host)
            .is_some_and(|p| report.incarnation < p.report.incarnation)
        {
            return Ok(());
        }
        self.admit(&report)?;
        self.catalogue.learn(
            &report.host,
            &report.owned,
            &report.assignments,
            &report.orphans,
        );
        match self.peers.get_mut(&report.host) {
            Some(peer) => {
                if peer.lost || report.incarnation > peer.report.incarnation {
                    out.push(Decision::HostUp {
                        host: report.host.clone(),
                    });
                }
                *peer = Peer {
                    report,
                    last_seen_ms: now_ms,
                    latency_us,
                    lost: false,
                };
            }
            None => {
                out.push(Decision::HostUp {
                    host: report.host.clone(),
                });
                let peer = Peer {
                    report,
                    last_seen_ms: now_ms,
                    latency_us,
                    lost: false,
                };
                self.peers.insert(peer.report.host.clone(), peer);
            }
        }
        Ok(())
    }

    /// Places each replica of a model: where it is resident already, else
    /// on the best GPU (see `fit.rs`), locally (a [`Decision::Load`]) or on
    /// a peer (an assignment it takes up from this host's next report).
    pub fn place(
        &mut self,
        req: &ModelRequest,
        now_ms: u64,
        out: &mut Vec<Decision>,
    ) -> Result<Vec<Placement>, SchedError> {
        self.check_request(&req.model, req.vram_mib, req.replicas, req.host.as_ref())?;
        let mut placed = Vec::with_capacity(usize::from(req.replicas));
        for replica in 0..req.replicas {
            let slot = Slot {
                model: req.model.clone(),
                replica,
            };
            if let Some(found) = self.where_is(&slot) {
                if req.pinned {
                    self.pin_local(&slot);
                }
                placed.push(found);
                continue;
            }
            let claim = Claim {
                epoch: self.catalogue.max_epoch(&slot).next(),
                slot,
                gpu: GpuIndex(0),
                vram_mib: req.vram_mib,
                pinned: req.pinned,
                active: false,
                priority: req.priority,
                policy: req.policy,
            };
            placed.push(self.place_claim(claim, req.host.as_ref(), now_ms, out)?);
        }
        Ok(placed)
    }

    /// Places a GPU job: on a host where its model is resident (this host
    /// first, then the nearest), else it loads the model like an unpinned
    /// [`place`](Self::place). The model stays active `hold_ms` after.
    pub fn place_job(
        &mut self,
        job: &JobRequest,
        now_ms: u64,
        out: &mut Vec<Decision>,
    ) -> Result<Placement, SchedError> {
        self.check_request(&job.model, job.vram_mib, 1, None)?;
        self.touch(&job.model, job.hold_ms, now_ms);
        if let Some(found) = self.resident_replica(&job.model) {
            return Ok(found);
        }
        let slot = Slot {
            model: job.model.clone(),
            replica: 0,
        };
        if let Some(found) = self.where_is(&slot) {
            return Ok(found);
        }
        let claim = Claim {
            epoch: self.catalogue.max_epoch(&slot).next(),
            slot,
            gpu: GpuIndex(0),
            vram_mib: job.vram_mib,
            pinned: false,
            active: true,
            priority: job.priority,
            policy: job.policy,
        };
        let placed = self.place_claim(claim, None, now_ms, out)?;
        self.touch(&job.model, job.hold_ms, now_ms);
        Ok(placed)
    }

    /// Marks this host's replicas of `model` active for `hold_ms` more (a
    /// job for it arrived here).
    pub fn touch(&mut self, model: &ModelName, hold_ms: u64, now_ms: u64) {
        for owned in self
            .owned
            .values_mut()
            .filter(|o| &o.claim.slot.model == model)
        {
            owned.active_until_ms = owned.active_until_ms.max(now_ms.saturating_add(hold_ms));
            owned.claim.active = true;
        }
    }

    /// Pins (or unpins) this host's replicas of `model`: a pinned replica
    /// is placed again elsewhere if this host is lost. Returns how many
    /// replicas this host holds; replicas on other hosts are theirs to
    /// change.
    pub fn set_pinned(&mut self, model: &ModelName, pinned: bool) -> usize {
        let mut held = 0;
        for owned in self
            .owned
            .values_mut()
            .filter(|o| &o.claim.slot.model == model)
        {
            owned.claim.pinned = pinned;
            self.catalogue
                .learn(&self.me, std::slice::from_ref(&owned.claim), &[], &[]);
            held += 1;
        }
        held
    }

    /// The daemon could not load a slot after all: this host no longer
    /// holds it, and if it must survive it is placed again elsewhere.
    pub fn load_failed(&mut self, slot: &Slot) {
        self.owned.remove(slot);
    }

    /// What this host tells the cluster now.
    pub fn local_report(&self) -> HostReport {
        HostReport {
            host: self.me.clone(),
            incarnation: self.incarnation,
            degraded: self.degraded,
            gpus: self
                .local_gpus
                .iter()
                .map(|g| GpuReport {
                    free_mib: self.local_free(g),
                    ..*g
                })
                .collect(),
            owned: self.owned.values().map(|o| o.claim.clone()).collect(),
            assignments: self
                .assignments
                .values()
                .map(|p| p.assignment.clone())
                .collect(),
            orphans: self.orphans.clone(),
        }
    }

    /// Where `slot` is in this view: held here, held by the best-ranked
    /// live peer, or assigned and loading.
    pub fn where_is(&self, slot: &Slot) -> Option<Placement> {
        if let Some(owned) = self.owned.get(slot) {
            return Some(placement(&self.me, &owned.claim, true));
        }
        let held = self
            .live_peers()
            .filter_map(|p| p.holds(slot).map(|c| (&p.report.host, c)))
            .reduce(|best, next| {
                let better = super::types::outranks(next.1.epoch, next.0, best.1.epoch, best.0);
                if better { next } else { best }
            });
        if let Some((host, claim)) = held {
            return Some(placement(host, claim, true));
        }
        self.pending_assignment(slot)
            .map(|a| placement(&a.target, &a.claim, false))
    }

    pub(super) fn live_peers(&self) -> impl Iterator<Item = &Peer> {
        self.peers.values().filter(|p| !p.lost)
    }

    /// An assignment of `slot` to a live host, by this host or a live peer.
    pub(super) fn pending_assignment(&self, slot: &Slot) -> Option<&Assignment> {
        let live =
            |host: &HostName| *host == self.me || self.peers.get(host).is_some_and(|p| !p.lost);
        self.assignments
            .get(slot)
            .map(|p| &p.assignment)
            .into_iter()
            .chain(self.live_peers().flat_map(|p| {
                p.report
                    .assignments
                    .iter()
                    .filter(|a| &a.claim.slot == slot)
            }))
            .find(|a| live(&a.target))
    }

    /// VRAM free on a local GPU: the backend's figure less the loads
    /// decided since it was sampled, and never more than what this host's
    /// own claims leave, since the driver's figure lags loads.
    pub(super) fn local_free(&self, gpu: &GpuReport) -> u64 {
        let since = self.loaded_since_sample.get(&gpu.gpu).copied().unwrap_or(0);
        let held: u64 = self
            .owned
            .values()
            .filter(|o| o.claim.gpu == gpu.gpu)
            .map(|o| o.claim.vram_mib)
            .fold(0, u64::saturating_add);
        gpu.free_mib
            .saturating_sub(since)
            .min(gpu.total_mib.saturating_sub(held))
    }

    /// VRAM assigned to live hosts that have not loaded it yet.
    pub(super) fn reserved(&self) -> Reserved {
        let mut reserved = Reserved::new();
        let mine = self.assignments.values().map(|p| &p.assignment);
        let theirs = self.live_peers().flat_map(|p| p.report.assignments.iter());
        for a in mine.chain(theirs) {
            let loaded = self
                .peers
                .get(&a.target)
                .is_some_and(|p| p.holds(&a.claim.slot).is_some());
            if a.target != self.me && !loaded {
                let taken = reserved.entry((a.target.clone(), a.claim.gpu)).or_default();
                *taken = taken.saturating_add(a.claim.vram_mib);
            }
        }
        reserved
    }

    /// Every GPU of this host and of live peers, with room after
    /// reservations, for a slot of `model` other than `slot`.
    pub(super) fn candidates<'s>(&'s self, reserved: &Reserved, slot: &Slot) -> Vec<Candidate<'s>> {
        let other_replica =
            |c: &Claim| c.slot.model == slot.model && c.slot.replica != slot.replica;
        let assigned_replica = |host: &HostName| {
            self.assignments
                .values()
                .any(|p| &p.assignment.target == host && other_replica(&p.assignment.claim))
        };
        let mut out: Vec<Candidate<'s>> = Vec::new();
        let mine =
            self.owned.values().any(|o| other_replica(&o.claim)) || assigned_replica(&self.me);
        out.extend(self.local_gpus.iter().map(|g| Candidate {
            host: &self.me,
            gpu: g.gpu,
            free_mib: self.local_free(g),
            latency_us: 0,
            holds_replica: mine,
        }));
        for peer in self.live_peers() {
            let host = &peer.report.host;
            let holds = peer.report.owned.iter().any(other_replica) || assigned_replica(host);
            out.extend(peer.report.gpus.iter().map(|g| {
                let taken = reserved.get(&(host.clone(), g.gpu)).copied().unwrap_or(0);
                Candidate {
                    host,
                    gpu: g.gpu,
                    free_mib: g.free_mib.saturating_sub(taken),
                    latency_us: peer.latency_us,
                    holds_replica: holds,
                }
            }));
        }
        out
    }

    /// Chooses a GPU for `claim` and places it there (see `assign`).
    fn place_claim(
        &mut self,
        mut claim: Claim,
        only: Option<&HostName>,
        now_ms: u64,
        out: &mut Vec<Decision>,
    ) -> Result<Placement, SchedError> {
        let reserved = self.reserved();
        let mut cands = self.candidates(&reserved, &claim.slot);
        cands.retain(|c| only.is_none_or(|h| c.host == h));
        let weight = self.config.latency_weight_mib_per_ms;
        let Some(chosen) = fit::choose(&cands, claim.vram_mib, claim.policy, weight) else {
            let largest_free_mib = cands.iter().map(|c| c.free_mib).max().unwrap_or(0);
            return Err(SchedError::NoRoom {
                model: claim.slot.model.clone(),
                vram_mib: claim.vram_mib,
                largest_free_mib,
            });
        };
        let target = chosen.host.clone();
        claim.gpu = chosen.gpu;
        let placed = placement(&target, &claim, target == self.me);
        self.assign(target, claim, now_ms, out);
        Ok(placed)
    }

    /// Loads `claim` here, or records it as assigned to `target`.
    pub(super) fn assign(
        &mut self,
        target: HostName,
        claim: Claim,
        now_ms: u64,
        out: &mut Vec<Decision>,
    ) {
        self.catalogue.saw_epoch(&claim.slot, claim.epoch);
        self.unplaced.remove(&claim.slot);
        if target == self.me {
            self.load_local(claim, now_ms, out);
            return;
        }
        out.push(Decision::Assigned {
            slot: claim.slot.clone(),
            host: target.clone(),
            gpu: claim.gpu,
            epoch: claim.epoch,
        });
        let slot = claim.slot.clone();
        let assignment = Assignment { target, claim };
        self.catalogue
            .learn(&self.me, &[], std::slice::from_ref(&assignment), &[]);
        self.assignments.insert(
            slot,
            Pending {
                assignment,
                issued_ms: now_ms,
            },
        );
    }

    /// Takes ownership of `claim` on this host.
    pub(super) fn load_local(&mut self, claim: Claim, now_ms: u64, out: &mut Vec<Decision>) {
        out.push(Decision::Load {
            slot: claim.slot.clone(),
            gpu: claim.gpu,
            vram_mib: claim.vram_mib,
            epoch: claim.epoch,
        });
        let active_until_ms = if claim.active {
            now_ms.saturating_add(self.config.lost_after_ms())
        } else {
            0
        };
        self.catalogue
            .learn(&self.me, std::slice::from_ref(&claim), &[], &[]);
        let since = self.loaded_since_sample.entry(claim.gpu).or_default();
        *since = since.saturating_add(claim.vram_mib);
        self.owned.insert(
            claim.slot.clone(),
            Owned {
                claim,
                active_until_ms,
            },
        );
    }

    fn pin_local(&mut self, slot: &Slot) {
        if let Some(owned) = self.owned.get_mut(slot) {
            owned.claim.pinned = true;
        }
    }

    /// A loaded replica of `model`: this host's, else the nearest peer's.
    fn resident_replica(&self, model: &ModelName) -> Option<Placement> {
        if let Some(o) = self.owned.values().find(|o| &o.claim.slot.model == model) {
            return Some(placement(&self.me, &o.claim, true));
        }
        self.live_peers()
            .filter_map(|p| {
                let claim = p.report.owned.iter().find(|c| &c.slot.model == model)?;
                Some((p.latency_us, &p.report.host, claim))
            })
            .min_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)))
            .map(|(_, host, claim)| placement(host, claim, true))
    }

    fn check_request(
        &self,
        model: &ModelName,
        vram_mib: u64,
        replicas: u8,
        host: Option<&HostName>,
    ) -> Result<(), SchedError> {
        if !(1..=MAX_VRAM_MIB).contains(&vram_mib) {
            return Err(SchedError::Vram {
                model: model.clone(),
                vram_mib,
                max: MAX_VRAM_MIB,
            });
        }
        if replicas == 0 || replicas > MAX_REPLICAS {
            return Err(SchedError::Replicas {
                model: model.clone(),
                replicas,
                max: MAX_REPLICAS,
            });
        }
        match host {
            Some(h) if *h != self.me && self.peers.get(h).is_none_or(|p| p.lost) => {
                Err(SchedError::UnknownHost { host: h.clone() })
            }
            _ => Ok(()),
        }
    }
}

fn placement(host: &HostName, claim: &Claim, loaded: bool) -> Placement {
    Placement {
        slot: claim.slot.clone(),
        host: host.clone(),
        gpu: claim.gpu,
        vram_mib: claim.vram_mib,
        pinned: claim.pinned,
        epoch: claim.epoch,
        loaded,
    }
}
