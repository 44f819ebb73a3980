//! perf events per executor thread.
//!
//! At boot [`probe`] opens each event alone on the calling thread and
//! closes it: hardware events (cycles, instructions, cache misses) exist
//! only where the kernel has a PMU for this CPU (a VM usually has none:
//! `ENOENT`), software events (task clock, context switches, CPU
//! migrations, page faults) always. Each executor thread then opens the
//! events that probed fine with [`ThreadPerf::open`], right after glommio
//! pinned it. Every counter is its own file descriptor, never a group:
//! perf-event 0.4.9 panics reading a group with a member that failed, and
//! separate counters lose nothing here (they are read once a scrape).
//!
//! A pinned thread should never migrate. [`PerfSet::check_migrations`]
//! reports each executor whose CPU-migration count grew since the last
//! check, so the core loop can raise the alarm.

use std::io;
use std::sync::Mutex;

use perf_event::events::{Event, Hardware, Software};
use perf_event::{Builder, Counter};
use serde::Serialize;

use crate::topology::CpuId;

/// The events pinwheel counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PerfEvent {
    /// CPU cycles (hardware).
    Cycles,
    /// Instructions retired (hardware).
    Instructions,
    /// Last-level cache misses (hardware).
    CacheMisses,
    /// Time on CPU, ns (software).
    TaskClock,
    /// Context switches (software).
    ContextSwitches,
    /// Migrations to another CPU (software).
    CpuMigrations,
    /// Page faults (software).
    PageFaults,
}

impl PerfEvent {
    /// Every event, hardware first.
    pub const ALL: [PerfEvent; 7] = [
        PerfEvent::Cycles,
        PerfEvent::Instructions,
        PerfEvent::CacheMisses,
        PerfEvent::TaskClock,
        PerfEvent::ContextSwitches,
        PerfEvent::CpuMigrations,
        PerfEvent::PageFaults,
    ];

    /// Whether it needs a PMU.
    pub fn is_hardware(self) -> bool {
        matches!(
            self,
            PerfEvent::Cycles | PerfEvent::Instructions | PerfEvent::CacheMisses
        )
    }

    /// Its name in metrics (`perf stat`'s, with underscores).
    pub fn as_str(self) -> &'static str {
        match self {
            PerfEvent::Cycles => "cycles",
            PerfEvent::Instructions => "instructions",
            PerfEvent::CacheMisses => "cache_misses",
            PerfEvent::TaskClock => "task_clock_ns",
            PerfEvent::ContextSwitches => "context_switches",
            PerfEvent::CpuMigrations => "cpu_migrations",
            PerfEvent::PageFaults => "page_faults",
        }
    }

    fn event(self) -> Event {
        match self {
            PerfEvent::Cycles => Hardware::CPU_CYCLES.into(),
            PerfEvent::Instructions => Hardware::INSTRUCTIONS.into(),
            PerfEvent::CacheMisses => Hardware::CACHE_MISSES.into(),
            PerfEvent::TaskClock => Software::TASK_CLOCK.into(),
            PerfEvent::ContextSwitches => Software::CONTEXT_SWITCHES.into(),
            PerfEvent::CpuMigrations => Software::CPU_MIGRATIONS.into(),
            PerfEvent::PageFaults => Software::PAGE_FAULTS.into(),
        }
    }

    /// An enabled counter of this event on the calling thread. Software
    /// events happen in the kernel (a migration, a fault, a switch), so
    /// they count kernel mode where `perf_event_paranoid` allows it, and
    /// user mode only where it does not.
    fn open(self) -> io::Result<Counter> {
        let build = |kernel: bool| {
            let mut builder = Builder::new().observe_self().any_cpu().kind(self.event());
            if kernel {
                builder.include_kernel();
            }
            builder.build()
        };
        let mut counter = if self.is_hardware() {
            build(false)?
        } else {
            build(true).or_else(|_| build(false))?
        };
        counter.enable()?;
        Ok(counter)
    }
}

/// What the probe found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Probe {
    /// Events that open.
    pub available: Vec<PerfEvent>,
    /// Events that do not, with the error.
    pub failed: Vec<(PerfEvent, String)>,
}

impl Probe {
    /// Whether any hardware event opened: the host has a usable PMU.
    pub fn has_pmu(&self) -> bool {
        self.available.iter().any(|e| e.is_hardware())
    }
}

/// Opens each event alone on the calling thread, and closes it.
pub fn probe() -> Probe {
    let mut probe = Probe::default();
    for event in PerfEvent::ALL {
        match event.open() {
            Ok(_) => probe.available.push(event),
            Err(err) => probe.failed.push((event, err.to_string())),
        }
    }
    probe
}

/// One executor thread's counters.
#[derive(Debug)]
pub struct ThreadPerf {
    cpu: CpuId,
    counters: Vec<(PerfEvent, Counter)>,
    migrations_seen: u64,
}

impl ThreadPerf {
    /// Opens `events` on the calling thread (pinned to `cpu`); an event
    /// that fails now is left out with a warning.
    pub fn open(cpu: CpuId, events: &[PerfEvent]) -> Self {
        let mut counters = Vec::with_capacity(events.len());
        for &event in events {
            match event.open() {
                Ok(counter) => counters.push((event, counter)),
                Err(err) => {
                    tracing::warn!(cpu = cpu.0, event = event.as_str(), error = %err, "perf event did not open on this thread")
                }
            }
        }
        Self {
            cpu,
            counters,
            migrations_seen: 0,
        }
    }

    fn read(&mut self) -> Vec<(PerfEvent, u64)> {
        self.counters
            .iter_mut()
            .filter_map(|(event, counter)| counter.read().ok().map(|v| (*event, v)))
            .collect()
    }
}

/// One thread's counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reading {
    /// The CPU the thread is pinned to.
    pub cpu: CpuId,
    /// Counts since the thread opened its counters.
    pub counts: Vec<(PerfEvent, u64)>,
}

/// Every executor thread's counters; threads register as they start.
#[derive(Debug, Default)]
pub struct PerfSet {
    threads: Mutex<Vec<ThreadPerf>>,
}

impl PerfSet {
    /// Adds a thread's counters.
    pub fn register(&self, thread: ThreadPerf) {
        self.lock().push(thread);
    }

    /// Every thread's counts, by CPU.
    pub fn read(&self) -> Vec<Reading> {
        let mut threads = self.lock();
        let mut readings: Vec<Reading> = threads
            .iter_mut()
            .map(|t| Reading {
                cpu: t.cpu,
                counts: t.read(),
            })
            .collect();
        readings.sort_by_key(|r| r.cpu);
        readings
    }

    /// CPUs whose pinned thread migrated since the last check, with the
    /// migrations counted so far.
    pub fn check_migrations(&self) -> Vec<(CpuId, u64)> {
        let mut moved = Vec::new();
        for thread in self.lock().iter_mut() {
            let count = thread
                .counters
                .iter_mut()
                .find(|(e, _)| *e == PerfEvent::CpuMigrations)
                .and_then(|(_, c)| c.read().ok());
            if let Some(count) = count.filter(|&c| c > thread.migrations_seen) {
                thread.migrations_seen = count;
                moved.push((thread.cpu, count));
            }
        }
        moved
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<ThreadPerf>> {
        // Counters hold no invariant a panicking reader could break.
        self.threads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn software_events_always_open() {
        let probe = probe();
        for event in [PerfEvent::TaskClock, PerfEvent::ContextSwitches] {
            assert!(probe.available.contains(&event), "{probe:?}");
        }
        assert_eq!(probe.available.len() + probe.failed.len(), 7);
    }

    #[test]
    fn a_thread_that_runs_counts_task_clock() {
        let set = PerfSet::default();
        set.register(ThreadPerf::open(CpuId(0), &[PerfEvent::TaskClock]));
        let mut x = 0u64;
        for i in 0..1_000_000u64 {
            x = std::hint::black_box(x.wrapping_add(i));
        }
        let readings = set.read();
        let clock = readings[0].counts[0];
        assert_eq!(clock.0, PerfEvent::TaskClock);
        assert!(clock.1 > 0, "{readings:?}");
    }

    #[test]
    fn a_thread_moved_to_another_cpu_is_reported_once() {
        std::thread::spawn(|| {
            crate::runtime::affinity::pin_current_thread(CpuId(0)).unwrap();
            let set = PerfSet::default();
            set.register(ThreadPerf::open(CpuId(0), &[PerfEvent::CpuMigrations]));
            assert!(set.check_migrations().is_empty());
            crate::runtime::affinity::pin_current_thread(CpuId(1)).unwrap();
            let moved = set.check_migrations();
            assert_eq!(moved.len(), 1, "{moved:?}");
            assert!(set.check_migrations().is_empty());
        })
        .join()
        .unwrap();
    }
}
