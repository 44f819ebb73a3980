//! What one executor measures: per-route call latency, end-to-end latency
//! of the load generator's requests and of the voice path, request
//! outcomes, and per-agent counts.
//!
//! Everything is allocated at boot: one HdrHistogram per route that starts
//! on this executor (every local agent's call targets), and fixed counters.
//! Recording a value is an array increment, found through an index by
//! agent id ([`Slots`]): a record touches its agent's entries only, not
//! every route of the executor (a scan of ~100 histograms per call in the
//! seed's mesh). Executors share nothing while
//! they run; the daemon collects a [`StatsSnapshot`] from each at the end,
//! and the live totals it prints each second come from [`LiveCounters`],
//! which each executor's ticker publishes in batches.
//!
//! The live view's copy of everything, once a second, is made in parts
//! and in place ([`NodeStats::copy_part`]): a few histograms a tick into a
//! snapshot the executor got back from the view, so no tick holds the
//! executor for long and nothing is allocated after the first period. A
//! whole copy at once (fresh histograms, ~5 MB on each of the seed mesh's
//! executors, in locked memory the allocator had just handed back) held
//! each executor for 5-19 ms every second: at 100,000 req/s the load
//! generator fell up to 29 ms behind each time, and the mesh's p99 was
//! 6-19 ms while no route's was over 0.7 ms.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;

use super::node::{Node, RouterTotals};
use super::offcpu::OffCpuTotals;
use super::routes::Routes;
use crate::latency::{new_histogram, new_live_histogram, record_ns};
use pinwheel_ipc::wire::AgentId;

/// Outcomes of the load generator's requests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Requests {
    /// Fell due before the runtime drained (rate × time).
    pub offered: u64,
    /// Sent.
    pub sent: u64,
    /// Answered with success.
    pub completed: u64,
    /// Answered with an error status.
    pub failed: u64,
    /// No answer before the deadline.
    pub timed_out: u64,
}

/// Per-agent counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AgentCounts {
    /// Messages handled.
    pub handled: u64,
    /// Handler failures (errors and missed deadlines).
    pub failures: u64,
    /// Restarts by the supervisor.
    pub restarts: u64,
    /// Requests whose deadline passed while they waited in the inbox:
    /// answered as timed out without running the handler, and not held
    /// against the agent (the wait was the callers' load, not its fault).
    pub expired: u64,
    /// CPU the agent's worker found itself on (`sched_getcpu`).
    pub cpu_seen: Option<u32>,
    /// Isolated by the supervisor now, waiting out its backoff.
    pub isolated: bool,
}

/// Where a local agent's entries are in [`NodeStats`]: its position in
/// `agents` and `service`, and its routes (contiguous in `routes`).
#[derive(Debug, Clone, Copy)]
struct Slot {
    agent: usize,
    routes: (usize, usize),
}

/// [`Slot`]s by agent id (`None`: not on this executor).
type Slots = Vec<Option<Slot>>;

/// One executor's statistics.
#[derive(Debug)]
pub struct NodeStats {
    slots: Slots,
    routes: RefCell<Vec<(AgentId, AgentId, Histogram<u64>)>>,
    e2e: RefCell<Histogram<u64>>,
    voice: RefCell<Histogram<u64>>,
    requests: Cell<Requests>,
    agents: RefCell<Vec<(AgentId, AgentCounts)>>,
    /// Handler time per agent, in the order of `agents`.
    service: RefCell<Vec<Histogram<u64>>>,
}

impl NodeStats {
    /// Everything an executor measured so far: its agents', its router's and
    /// glommio's own figures.
    pub fn full_snapshot(&self, node: &Node) -> StatsSnapshot {
        let mut snapshot = self.snapshot();
        copy_totals(&mut snapshot, node);
        snapshot
    }

    /// A snapshot shaped like these statistics, every route's histogram in
    /// it, empty or not: what [`NodeStats::copy_part`] fills.
    pub fn blank_snapshot(&self) -> StatsSnapshot {
        let blank = |h: &Histogram<u64>| {
            let mut copy = h.clone();
            copy.reset();
            copy
        };
        StatsSnapshot {
            routes: self
                .routes
                .borrow()
                .iter()
                .map(|(from, to, h)| (*from, *to, blank(h)))
                .collect(),
            e2e: blank(&self.e2e.borrow()),
            voice: blank(&self.voice.borrow()),
            requests: Requests::default(),
            agents: self.agents.borrow().clone(),
            service: self
                .agents
                .borrow()
                .iter()
                .zip(self.service.borrow().iter())
                .map(|((agent, _), h)| (*agent, blank(h)))
                .collect(),
            router: RouterTotals::default(),
            executor: ExecutorTotals::default(),
        }
    }

    /// Copies up to `budget` histograms into `into` (from
    /// [`NodeStats::blank_snapshot`]), in place, from the `next`-th on: the
    /// routes', then the agents' service times, then the end-to-end and
    /// voice ones. Returns where the next part starts, or `None` once all
    /// are copied; the counts are copied then, with that last part (the
    /// executor's totals are [`copy_totals`]'s).
    pub fn copy_part(&self, into: &mut StatsSnapshot, next: usize, budget: usize) -> Option<usize> {
        let routes = self.routes.borrow();
        let service = self.service.borrow();
        let (e2e, voice) = (self.e2e.borrow(), self.voice.borrow());
        let total = routes.len() + service.len() + 2;
        let end = next.saturating_add(budget).min(total);
        for i in next..end {
            let (to, from) = if i < routes.len() {
                (&mut into.routes[i].2, &routes[i].2)
            } else if i < routes.len() + service.len() {
                let a = i - routes.len();
                (&mut into.service[a].1, &service[a])
            } else if i == total - 2 {
                (&mut into.e2e, &*e2e)
            } else {
                (&mut into.voice, &*voice)
            };
            catch_up(to, from);
        }
        if end < total {
            return Some(end);
        }
        into.requests = self.requests.get();
        into.agents.clone_from(&self.agents.borrow());
        None
    }

    /// Statistics for `executor`, with a histogram per route its agents
    /// (and the load generator, if here) may call.
    pub fn new(routes: &Routes, executor: u16) -> Self {
        let local = routes.agents_on(executor);
        let mut pairs = Vec::new();
        let mut slots: Slots = vec![None; routes.agent_count()];
        for (position, &agent) in local.iter().enumerate() {
            let first = pairs.len();
            for &target in routes.calls(agent) {
                pairs.push((agent, target, new_live_histogram()));
            }
            if let Some(slot) = slots.get_mut(agent.0 as usize) {
                *slot = Some(Slot {
                    agent: position,
                    routes: (first, pairs.len()),
                });
            }
        }
        Self {
            slots,
            routes: RefCell::new(pairs),
            e2e: RefCell::new(new_histogram()),
            voice: RefCell::new(new_histogram()),
            requests: Cell::new(Requests::default()),
            agents: RefCell::new(local.iter().map(|&a| (a, AgentCounts::default())).collect()),
            service: RefCell::new(local.iter().map(|_| new_live_histogram()).collect()),
        }
    }

    /// Records a call's round trip. Calls on routes not in the plan (a
    /// load generator's, a registration) are not recorded per route.
    pub fn record_call(&self, from: AgentId, to: AgentId, ns: u64) {
        let Some((first, end)) = self.slot(from).map(|s| s.routes) else {
            return;
        };
        let mut routes = self.routes.borrow_mut();
        if let Some((_, _, histogram)) = routes[first..end].iter_mut().find(|(_, t, _)| *t == to) {
            record_ns(histogram, ns);
        }
    }

    /// Where `agent`'s entries are, if it is on this executor.
    fn slot(&self, agent: AgentId) -> Option<Slot> {
        self.slots.get(agent.0 as usize).copied().flatten()
    }

    /// Records the end-to-end time of one of the load generator's requests.
    pub fn record_e2e(&self, ns: u64) {
        record_ns(&mut self.e2e.borrow_mut(), ns);
    }

    /// Records the end-to-end time of the voice path (audio frame to the
    /// coordinator's answer).
    pub fn record_voice(&self, ns: u64) {
        record_ns(&mut self.voice.borrow_mut(), ns);
    }

    /// Records how long one of `agent`'s handlers ran.
    pub fn record_service(&self, agent: AgentId, ns: u64) {
        let Some(slot) = self.slot(agent) else {
            return;
        };
        if let Some(histogram) = self.service.borrow_mut().get_mut(slot.agent) {
            record_ns(histogram, ns);
        }
    }

    /// Updates the request outcomes.
    pub fn update_requests(&self, change: impl FnOnce(&mut Requests)) {
        let mut requests = self.requests.get();
        change(&mut requests);
        self.requests.set(requests);
    }

    /// Updates an agent's counts.
    pub fn update_agent(&self, agent: AgentId, change: impl FnOnce(&mut AgentCounts)) {
        let Some(slot) = self.slot(agent) else {
            return;
        };
        if let Some((_, counts)) = self.agents.borrow_mut().get_mut(slot.agent) {
            change(counts);
        }
    }

    /// Publishes the live totals.
    pub fn publish(&self, live: &LiveCounters) {
        let handled: u64 = self.agents.borrow().iter().map(|(_, c)| c.handled).sum();
        let requests = self.requests.get();
        // SYNC: Relaxed; monotonic counters read for a status line.
        live.handled.store(handled, Ordering::Relaxed);
        // SYNC: as above.
        live.completed.store(requests.completed, Ordering::Relaxed);
        // SYNC: as above.
        live.sent.store(requests.sent, Ordering::Relaxed);
        // SYNC: as above.
        live.e2e_p99_ns
            .store(self.e2e.borrow().value_at_quantile(0.99), Ordering::Relaxed);
    }

    /// A copy of everything, for the final report (the executor adds its
    /// router's totals): routes that carried no call are left out.
    pub fn snapshot(&self) -> StatsSnapshot {
        let mut snapshot = self.blank_snapshot();
        let rest = self.copy_part(&mut snapshot, 0, usize::MAX);
        debug_assert!(rest.is_none(), "one part is everything");
        snapshot.routes.retain(|(_, _, h)| !h.is_empty());
        snapshot
    }
}

/// Brings `to`, an earlier copy of `from` (or a blank one), up to `from`:
/// only the buckets that grew since are written. Recording only adds to a
/// histogram, so a copy as long as its source is already equal to it, and
/// one longer than its source (reset since) starts over. Writing the whole
/// copy instead (reset, then add: ~3 MB of mostly zeros on each of the
/// seed mesh's executors) took 3.8 ms of an executor's CPU each second on
/// the benchmark VM, most of it in `memset`, over the ticks it was spread
/// on.
fn catch_up(to: &mut Histogram<u64>, from: &Histogram<u64>) {
    if to.len() == from.len() {
        return;
    }
    if to.len() > from.len() {
        to.reset();
    }
    for bucket in from.iter_recorded() {
        let value = bucket.value_iterated_to();
        let (want, have) = (bucket.count_at_value(), to.count_at(value));
        if want > have {
            // Same bounds (`blank_snapshot` copied them): `value` fits.
            let _ = to.record_n(value, want - have);
        }
    }
}

/// Copies the router's, glommio's and the pump's totals into `snapshot`
/// (on the executor's thread).
pub fn copy_totals(snapshot: &mut StatsSnapshot, node: &Node) {
    snapshot.router = node.counters().totals();
    let glommio = glommio::executor().executor_stats();
    snapshot.executor = ExecutorTotals {
        index: node.executor(),
        busy_ns: u64::try_from(glommio.total_runtime().as_nanos()).unwrap_or(u64::MAX),
        tasks: glommio.tasks_executed(),
        scheduler_runs: glommio.scheduler_runs(),
        off_cpu: node.counters().off_cpu.get(),
    };
}

/// An executor's statistics at the end of a run.
#[derive(Debug, Clone)]
pub struct StatsSnapshot {
    /// Per-route call round trips (routes that carried calls).
    pub routes: Vec<(AgentId, AgentId, Histogram<u64>)>,
    /// Load generator requests, end to end.
    pub e2e: Histogram<u64>,
    /// The voice path, end to end.
    pub voice: Histogram<u64>,
    /// Load generator request outcomes.
    pub requests: Requests,
    /// Per-agent counts.
    pub agents: Vec<(AgentId, AgentCounts)>,
    /// Handler time per agent.
    pub service: Vec<(AgentId, Histogram<u64>)>,
    /// The executor's router.
    pub router: RouterTotals,
    /// The executor itself.
    pub executor: ExecutorTotals,
}

/// What glommio and the pump report about one executor.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ExecutorTotals {
    /// The executor's index.
    pub index: u16,
    /// Time spent running tasks and polling I/O, ns (glommio's
    /// `total_runtime`; a spinning pump counts as busy).
    pub busy_ns: u64,
    /// Tasks run.
    pub tasks: u64,
    /// Task-queue selections by glommio's scheduler.
    pub scheduler_runs: u64,
    /// Stretches its thread was awake and yet did not run
    /// ([`super::offcpu`]).
    pub off_cpu: OffCpuTotals,
}

/// Totals an executor publishes for the status line, on their own cache
/// line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct LiveCounters {
    /// Messages handled by its agents.
    pub handled: AtomicU64,
    /// Load generator requests sent (on the generator's executor).
    pub sent: AtomicU64,
    /// Load generator requests completed.
    pub completed: AtomicU64,
    /// p99 of end-to-end latency so far, ns.
    pub e2e_p99_ns: AtomicU64,
    /// When the executor's ticker last ran ([`super::ctx::now_ns`]); the
    /// watchdog's heartbeat.
    pub heartbeat_ns: AtomicU64,
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{AgentSet, SourceFile};
    use crate::plan::Plan;
    use crate::topology;

    /// `A` calls `B` and `C`, `B` calls `C`, all on CPU 1; `D` on CPU 0.
    fn routes() -> Routes {
        let topo_text = "schema = 1\n[host]\nname = \"h\"\ncpus = { uniform = \"0-1\" }\n";
        let file = SourceFile::from_text(Path::new("t.toml"), topo_text);
        let topology = topology::validate(file.parse().unwrap(), &file, None).unwrap();
        let agent = |name: &str, cpu: u32, calls: &str| {
            format!(
                "[[agent]]\nname = \"{name}\"\nhost = \"h\"\nrole = \"r\"\nkind = \"synthetic\"\ncpu = {cpu}\ncalls = [{calls}]\n"
            )
        };
        let agents_text = format!(
            "schema = 1\n{}{}{}{}",
            agent("A", 1, "\"B\", \"C\""),
            agent("B", 1, "\"C\""),
            agent("C", 1, ""),
            agent("D", 0, ""),
        );
        let agents =
            AgentSet::from_sources(&[SourceFile::from_text(Path::new("a.toml"), &agents_text)])
                .unwrap();
        let plan = Plan::build(&topology, &agents).unwrap();
        Routes::new(&plan, &agents)
    }

    #[test]
    fn each_record_lands_on_its_own_agent_and_route_and_others_are_ignored() {
        let routes = routes();
        let [a, b, c, d] = [0, 1, 2, 3].map(AgentId);
        let sut = NodeStats::new(&routes, routes.executor_of(a));

        sut.record_call(a, c, 1_000);
        sut.record_call(b, c, 2_000);
        sut.record_call(b, c, 2_000);
        sut.record_call(a, d, 3_000); // not a planned route
        sut.record_call(d, a, 3_000); // not an agent of this executor
        sut.record_service(b, 500);
        sut.record_service(d, 500);
        sut.update_agent(c, |counts| counts.handled += 1);
        sut.update_agent(d, |counts| counts.handled += 1);

        let snapshot = sut.snapshot();
        // In id order: the executor keeps its agents in start order.
        let sorted = |mut v: Vec<(AgentId, AgentId, u64)>| {
            v.sort_by_key(|&(from, to, _)| (from.0, to.0));
            v
        };
        let calls = snapshot.routes.iter().map(|(f, t, h)| (*f, *t, h.len()));
        assert_eq!(sorted(calls.collect()), [(a, c, 1), (b, c, 2)]);
        let served = snapshot.service.iter().map(|(x, h)| (*x, *x, h.len()));
        assert_eq!(sorted(served.collect()), [(a, a, 0), (b, b, 1), (c, c, 0)]);
        let handled = snapshot.agents.iter().map(|(x, n)| (*x, *x, n.handled));
        assert_eq!(sorted(handled.collect()), [(a, a, 0), (b, b, 0), (c, c, 1)]);
    }

    #[test]
    fn a_copy_made_in_parts_into_a_reused_snapshot_matches_a_fresh_one() {
        let routes = routes();
        let [a, b, c] = [0, 1, 2].map(AgentId);
        let sut = NodeStats::new(&routes, routes.executor_of(a));
        let mut copy = sut.blank_snapshot();
        let copy_all = |copy: &mut StatsSnapshot| {
            let (mut next, mut parts) = (0, 0);
            while let Some(n) = sut.copy_part(copy, next, 2) {
                (next, parts) = (n, parts + 1);
            }
            parts + 1
        };
        let same = |copy: &StatsSnapshot, fresh: &StatsSnapshot| {
            let lens = |s: &StatsSnapshot| {
                let mut v: Vec<_> = s
                    .routes
                    .iter()
                    .filter(|(_, _, h)| !h.is_empty())
                    .map(|(f, t, h)| (*f, *t, h.len(), h.max()))
                    .collect();
                v.extend(s.service.iter().map(|(x, h)| (*x, *x, h.len(), h.max())));
                v
            };
            assert_eq!(lens(copy), lens(fresh));
            assert_eq!(copy.e2e, fresh.e2e);
            assert_eq!(copy.voice, fresh.voice);
            assert_eq!(copy.agents, fresh.agents);
            assert_eq!(copy.requests, fresh.requests);
        };

        sut.record_call(a, c, 1_000);
        sut.record_service(b, 500);
        sut.record_e2e(40_000);
        sut.update_requests(|r| r.sent += 1);
        // Three agents' routes (A: B, C; B: C), three service times, e2e
        // and voice: 8 histograms, 2 a part.
        assert_eq!(copy_all(&mut copy), 4);
        same(&copy, &sut.snapshot());

        // The next period reuses the copy: what was recorded since shows,
        // and nothing of the last copy stays twice.
        sut.record_call(a, c, 9_000);
        sut.record_call(b, c, 2_000);
        sut.record_voice(70_000);
        sut.update_agent(c, |counts| counts.handled += 1);
        copy_all(&mut copy);
        same(&copy, &sut.snapshot());
        let ac = copy.routes.iter().find(|(f, t, _)| (*f, *t) == (a, c));
        assert_eq!(ac.map(|(_, _, h)| h.len()), Some(2));
    }

    #[test]
    fn catching_up_writes_what_grew_and_starts_over_after_a_reset() {
        let mut from = new_live_histogram();
        let mut to = new_live_histogram();
        for ns in [1_000, 1_000, 50_000, 7_000_000] {
            record_ns(&mut from, ns);
        }
        catch_up(&mut to, &from);
        assert_eq!(to, from);
        record_ns(&mut from, 1_000);
        record_ns(&mut from, 90_000_000);
        catch_up(&mut to, &from);
        assert_eq!(to, from);
        assert_eq!((to.len(), to.max()), (6, from.max()));
        from.reset();
        record_ns(&mut from, 3_000);
        catch_up(&mut to, &from);
        assert_eq!(to, from);
    }
}
