//! The optimizer's books: what it knows about each model and each GPU.
//!
//! A [`Gpu`] keeps two views of its memory. `predicted_mib` is the sum of
//! the models we placed there (resident or loading), kept exact on every
//! transition. The driver's view is the last sample's free figure,
//! adjusted by what we loaded (-) and evicted (+) since that sample, less
//! every load that was still in flight when the sample was taken (it may
//! show only part of one; counting it whole errs on the safe side). Free
//! memory is the smaller of the two, so a lagging sample never makes room
//! that is not there, and other programs' VRAM (which only the driver
//! sees) is never forgotten.

use super::Priority;
use crate::gpu::backend::GpuIndex;
use crate::topology::VramPolicy;

/// Where a model is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Residency {
    /// Not on any GPU.
    Absent,
    /// A load is in flight.
    Loading {
        /// Where.
        gpu: GpuIndex,
        /// When it was decided, ms.
        since_ms: u64,
        /// Whether a prediction, not a use, asked for it.
        preload: bool,
    },
    /// Loaded.
    Resident {
        /// Where.
        gpu: GpuIndex,
        /// When the load finished, ms.
        since_ms: u64,
    },
}

impl Residency {
    /// The GPU holding (or receiving) the model.
    pub(super) fn gpu(self) -> Option<GpuIndex> {
        match self {
            Residency::Absent => None,
            Residency::Loading { gpu, .. } | Residency::Resident { gpu, .. } => Some(gpu),
        }
    }
}

/// One model.
#[derive(Debug, Clone)]
pub(super) struct Model {
    pub name: Box<str>,
    /// Predicted VRAM, MiB: the requester's estimate until measured.
    pub size_mib: u64,
    /// Whether the size came from a measurement.
    pub measured: bool,
    pub residency: Residency,
    pub pinned: bool,
    /// The GPU a configured pin names.
    pub pin_gpu: Option<GpuIndex>,
    /// Highest class any use asked for.
    pub class: Priority,
    /// Uses in progress.
    pub busy: u32,
    /// Uses the executors run on the model's grant without asking, in
    /// progress (as busy as admitted ones).
    pub held: u32,
    /// Uses waiting for it (it is about to be busy).
    pub wanted: u32,
    /// Arrival of the latest use, ms; `None` before the first.
    pub last_arrival_ms: Option<u64>,
    /// When it last went idle (or arrived), ms.
    pub last_used_ms: u64,
    /// Mean gap between use arrivals (EWMA), ms.
    pub mean_gap_ms: Option<f64>,
    /// Expected load time, ms: the policy's guess until measured.
    pub reload_ms: u64,
    /// The process holding it, when the executor said.
    pub pid: Option<u32>,
    /// Consecutive failed loads.
    pub failures: u32,
    /// When its latest load started, ms.
    pub last_load_ms: Option<u64>,
    /// Loaded by a preload and not used since.
    pub preload_unused: bool,
    /// Preloads that were used, and that were evicted unused.
    pub preloads_used: u32,
    pub preloads_wasted: u32,
}

impl Model {
    pub(super) fn new(name: &str, size_mib: u64, policy: &VramPolicy) -> Self {
        Self {
            name: name.into(),
            size_mib,
            measured: false,
            residency: Residency::Absent,
            pinned: false,
            pin_gpu: None,
            class: Priority::Batch,
            busy: 0,
            held: 0,
            wanted: 0,
            last_arrival_ms: None,
            last_used_ms: 0,
            mean_gap_ms: None,
            reload_ms: policy.load_ms(size_mib),
            pid: None,
            failures: 0,
            last_load_ms: None,
            preload_unused: false,
            preloads_used: 0,
            preloads_wasted: 0,
        }
    }

    /// Resident on `gpu`, idle, wanted by no waiting use and not pinned;
    /// `min_residency_ms` old at least (0 to ignore its age).
    pub(super) fn evictable(&self, gpu: GpuIndex, now_ms: u64, min_residency_ms: u64) -> bool {
        matches!(self.residency, Residency::Resident { gpu: g, since_ms }
            if g == gpu && now_ms.saturating_sub(since_ms) >= min_residency_ms)
            && !self.pinned
            && self.busy == 0
            && self.held == 0
            && self.wanted == 0
    }

    /// Whether a load may start at `now_ms`: not within the minimum
    /// residency of the previous one, so a model evicted young (only ever
    /// to get back under the budget) cannot thrash.
    pub(super) fn may_load(&self, now_ms: u64, min_residency_ms: u64) -> bool {
        self.last_load_ms
            .is_none_or(|t| now_ms.saturating_sub(t) >= min_residency_ms)
    }

    /// Notes a use arriving at `now_ms`.
    pub(super) fn arrive(&mut self, now_ms: u64, priority: Priority) {
        if let Some(last) = self.last_arrival_ms {
            let gap = now_ms.saturating_sub(last).min(86_400_000) as f64;
            self.mean_gap_ms = Some(match self.mean_gap_ms {
                None => gap,
                Some(mean) => 0.8 * mean + 0.2 * gap,
            });
        }
        self.last_arrival_ms = Some(now_ms);
        self.last_used_ms = now_ms;
        self.class = self.class.max(priority);
    }

    /// Whether preloading it has paid off often enough to keep doing it.
    pub(super) fn worth_preloading(&self) -> bool {
        self.preloads_wasted <= 2 * self.preloads_used + 2
    }
}

/// One GPU's books.
#[derive(Debug, Clone)]
pub(super) struct Gpu {
    pub index: GpuIndex,
    pub total_mib: u64,
    pub budget_mib: u64,
    pub high_mib: u64,
    pub low_mib: u64,
    pub lost: bool,
    /// Over the high-water mark and not yet back under the low one.
    pub pressure: bool,
    /// Sum of our models placed here (resident or loading), MiB.
    pub predicted_mib: u64,
    /// Free MiB in the last sample, if any.
    pub sample_free_mib: Option<u64>,
    /// MiB we freed (+) and claimed (-) since that sample, less loads in
    /// flight when it was taken.
    pub since_sample_mib: i64,
    /// MiB of configured pins on this GPU.
    pub pinned_mib: u64,
    /// The last sample showed no free VRAM: other programs may want more
    /// than they hold, and will take what we free.
    pub saturated: bool,
}

impl Gpu {
    pub(super) fn new(index: GpuIndex, total_mib: u64, policy: &VramPolicy) -> Self {
        let mut gpu = Self {
            index,
            total_mib,
            budget_mib: 0,
            high_mib: 0,
            low_mib: 0,
            lost: false,
            pressure: false,
            predicted_mib: 0,
            sample_free_mib: None,
            since_sample_mib: 0,
            pinned_mib: 0,
            saturated: false,
        };
        gpu.resize(total_mib, policy);
        gpu
    }

    /// Sets the total (a sample may correct the topology's figure).
    pub(super) fn resize(&mut self, total_mib: u64, policy: &VramPolicy) {
        self.total_mib = total_mib;
        self.budget_mib = policy.budget_mib(total_mib);
        self.high_mib = (self.budget_mib as f64 * policy.high_water) as u64;
        self.low_mib = (self.budget_mib as f64 * policy.low_water) as u64;
    }

    /// Free MiB: the smaller of the driver's (adjusted) and ours.
    pub(super) fn free_mib(&self) -> u64 {
        let ours = self.total_mib.saturating_sub(self.predicted_mib);
        match self.sample_free_mib {
            None => ours,
            Some(free) => {
                let adjusted = (free as i64 + self.since_sample_mib).max(0) as u64;
                adjusted.min(ours)
            }
        }
    }

    /// Used MiB, by anyone, as far as we can tell.
    pub(super) fn used_mib(&self) -> u64 {
        self.total_mib - self.free_mib().min(self.total_mib)
    }

    /// Takes a sample's free figure; `in_flight_mib` is what our loads in
    /// flight will add.
    pub(super) fn sample(&mut self, free_mib: u64, in_flight_mib: u64) {
        self.saturated = free_mib == 0;
        self.sample_free_mib = Some(free_mib);
        self.since_sample_mib = -(in_flight_mib as i64);
    }

    /// Books a load of `mib`.
    pub(super) fn claim(&mut self, mib: u64) {
        self.predicted_mib += mib;
        self.since_sample_mib -= mib as i64;
    }

    /// Books the end of a load or a residency of `mib`. On a saturated
    /// GPU the driver's figure is not credited: what we free may go to
    /// another program, so loads wait for the next sample to see.
    pub(super) fn release(&mut self, mib: u64) {
        self.predicted_mib = self.predicted_mib.saturating_sub(mib);
        if !self.saturated {
            self.since_sample_mib += mib as i64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_is_the_smaller_of_the_lagging_sample_and_our_books() {
        let policy = VramPolicy::default();
        let mut sut = Gpu::new(GpuIndex(0), 10_000, &policy);
        sut.sample_free_mib = Some(6_000); // another program holds 4000
        assert_eq!(sut.free_mib(), 6_000);
        sut.claim(3_000); // our load, not in the sample yet
        assert_eq!(sut.free_mib(), 3_000);
        // A sample catches 1000 MiB of the load still in flight: the
        // load counts whole, so free errs low (2000), never high (5000).
        sut.sample(5_000, 3_000);
        assert_eq!(sut.free_mib(), 2_000);
        sut.release(3_000);
        assert_eq!(sut.free_mib(), 5_000);
    }
}
