//! [`GpuPoller`]: samples a blocking [`GpuBackend`] from a task on the
//! control runtime and hands the readings to the core loop as messages.
//!
//! The backend's calls block (NVML takes the driver's locks), so each
//! round runs through `spawn_blocking`: on the control runtime's one
//! blocking thread (`pinwheel-block`), never on the runtime's own thread,
//! which keeps ticking the core loop and serving the admin API while the
//! driver answers. The backend moves into the blocking call and back, so
//! at most one round is ever in flight; a round that takes longer than
//! the period delays the next one (rounds are never queued up behind a
//! slow driver).
//!
//! Every period the poller reads each GPU once and `try_send`s one
//! [`GpuEvent`] per GPU into a bounded channel. A full channel means the
//! core loop is behind; the reading is dropped (the next one supersedes
//! it) and counted, so the poller never waits on the core loop and the
//! core loop never waits on the driver.
//!
//! A lost GPU is reported once, then skipped. Stopping is prompt: the task
//! waits for its next period, or for a round in flight, together with its
//! stop signal; a round still in the driver when it stops is left to
//! finish on the blocking thread, and the backend is dropped there (closing
//! NVML is a driver call too).

use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tracing::{debug, warn};

use super::{GpuBackend, GpuError, GpuIndex, GpuSample};

/// What the poller tells the core loop.
#[derive(Debug, Clone, PartialEq)]
pub enum GpuEvent {
    /// A fresh reading.
    Sample(GpuSample),
    /// The GPU is gone; sent once.
    Lost {
        /// The GPU.
        gpu: GpuIndex,
    },
}

/// The running poller task. Dropping it stops the task (without waiting).
#[derive(Debug)]
pub struct GpuPoller {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<PollStats>,
}

/// What the poller did, returned by [`GpuPoller::stop`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PollStats {
    /// Readings sent.
    pub sent: u64,
    /// Readings dropped because the core loop had not drained the channel.
    pub dropped: u64,
    /// Readings that failed with an error other than a lost GPU.
    pub failed: u64,
}

impl GpuPoller {
    /// Starts polling `backend` every `period` from a task on `on` (the
    /// control runtime). The core loop reads the returned receiver with
    /// `try_recv`; at most `capacity` events wait in it.
    pub fn spawn(
        on: &Handle,
        backend: Box<dyn GpuBackend>,
        period: Duration,
        capacity: usize,
    ) -> (Self, mpsc::Receiver<GpuEvent>) {
        let (events, receiver) = mpsc::channel(capacity.max(1));
        let (stop, stopped) = oneshot::channel();
        let task = on.spawn(poll(backend, period, events, stopped));
        (
            Self {
                stop: Some(stop),
                task,
            },
            receiver,
        )
    }

    /// Stops the task and returns what it did.
    pub async fn stop(mut self) -> PollStats {
        drop(self.stop.take());
        (&mut self.task).await.unwrap_or_default()
    }
}

impl Drop for GpuPoller {
    fn drop(&mut self) {
        drop(self.stop.take());
    }
}

/// One round's readings, by GPU slot.
type Round = Vec<(usize, GpuIndex, Result<GpuSample, GpuError>)>;

async fn poll(
    mut backend: Box<dyn GpuBackend>,
    period: Duration,
    events: mpsc::Sender<GpuEvent>,
    mut stopped: oneshot::Receiver<()>,
) -> PollStats {
    let gpus: Vec<GpuIndex> = backend.gpus().iter().map(|g| g.index).collect();
    let mut lost = vec![false; gpus.len()];
    let mut stats = PollStats::default();
    let mut rounds = tokio::time::interval(period);
    // A round that overran the period is followed by a whole period, not
    // by a catch-up round against a driver that is already slow.
    rounds.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stopped => {
                // Closing NVML is a driver call too.
                drop(tokio::task::spawn_blocking(move || drop(backend)));
                return stats;
            }
            _ = rounds.tick() => {}
        }
        let wanted: Vec<(usize, GpuIndex)> = gpus
            .iter()
            .enumerate()
            .filter(|(slot, _)| !lost[*slot])
            .map(|(slot, &gpu)| (slot, gpu))
            .collect();
        let round = tokio::task::spawn_blocking(move || {
            let round: Round = wanted
                .into_iter()
                .map(|(slot, gpu)| (slot, gpu, backend.sample(gpu)))
                .collect();
            (backend, round)
        });
        let round = tokio::select! {
            // The round's result, backend included, is dropped on the
            // blocking thread when it ends.
            _ = &mut stopped => return stats,
            round = round => round,
        };
        let Ok((returned, round)) = round else {
            // The backend panicked in the driver call; with
            // `panic = "abort"` this is not reached, and without it the
            // backend is gone with the blocking thread.
            return stats;
        };
        backend = returned;
        if !send_round(round, &mut lost, &events, &mut stats) {
            return stats;
        }
    }
}

/// Sends one round's events; false once the core loop is gone.
fn send_round(
    round: Round,
    lost: &mut [bool],
    events: &mpsc::Sender<GpuEvent>,
    stats: &mut PollStats,
) -> bool {
    for (slot, gpu, reading) in round {
        let event = match reading {
            Ok(sample) => GpuEvent::Sample(sample),
            Err(GpuError::Lost { .. }) => {
                warn!(gpu = %gpu, "gpu lost, no longer polled");
                lost[slot] = true;
                GpuEvent::Lost { gpu }
            }
            Err(err) => {
                debug!(gpu = %gpu, error = %err, "gpu reading failed");
                stats.failed += 1;
                continue;
            }
        };
        match events.try_send(event) {
            Ok(()) => stats.sent += 1,
            Err(mpsc::error::TrySendError::Full(_)) => stats.dropped += 1,
            Err(mpsc::error::TrySendError::Closed(_)) => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc as std_mpsc;

    use super::*;
    use crate::gpu::sim::SimBackend;
    use crate::runtime::control::ControlRuntime;

    #[test]
    fn the_poller_sends_samples_and_reports_a_lost_gpu_once() {
        let control = ControlRuntime::start(None, &Default::default()).unwrap();
        let mut sim = SimBackend::new(&[("a", 1000), ("b", 2000)]);
        sim.lose(GpuIndex(1));
        let (sut, mut events) = GpuPoller::spawn(
            control.handle(),
            Box::new(sim),
            Duration::from_millis(1),
            64,
        );
        let mut samples = 0;
        let mut lost = 0;
        while samples < 5 {
            match events.blocking_recv().unwrap() {
                GpuEvent::Sample(s) => {
                    assert_eq!(s.gpu, GpuIndex(0));
                    samples += 1;
                }
                GpuEvent::Lost { gpu } => {
                    assert_eq!(gpu, GpuIndex(1));
                    lost += 1;
                }
            }
        }
        let stats = control.handle().block_on(sut.stop());
        while let Ok(event) = events.try_recv() {
            assert!(matches!(event, GpuEvent::Sample(_)), "{event:?}");
        }
        assert_eq!(lost, 1);
        assert!(stats.sent >= 6);
    }

    /// A backend that tells the test each time it is read, and on which
    /// thread.
    #[derive(Debug)]
    struct Pinging {
        inner: SimBackend,
        pings: std_mpsc::Sender<Option<String>>,
    }

    impl GpuBackend for Pinging {
        fn gpus(&self) -> &[crate::gpu::GpuInfo] {
            self.inner.gpus()
        }
        fn sample(&mut self, gpu: GpuIndex) -> Result<GpuSample, GpuError> {
            let _ = self
                .pings
                .send(std::thread::current().name().map(str::to_owned));
            self.inner.sample(gpu)
        }
        fn degraded(&self) -> Option<&str> {
            None
        }
    }

    #[test]
    fn a_full_channel_drops_readings_instead_of_blocking() {
        let control = ControlRuntime::start(None, &Default::default()).unwrap();
        let (pings, pinged) = std_mpsc::channel();
        let backend = Pinging {
            inner: SimBackend::new(&[("a", 1000)]),
            pings,
        };
        let (sut, mut events) = GpuPoller::spawn(
            control.handle(),
            Box::new(backend),
            Duration::from_millis(1),
            1,
        );
        // The third read starts after the second reading met a full channel.
        for _ in 0..3 {
            pinged.recv().unwrap();
        }
        let stats = control.handle().block_on(sut.stop());
        assert!(events.try_recv().is_ok());
        assert!(stats.dropped >= 1, "{stats:?}");
    }

    #[test]
    fn the_backend_is_read_on_the_blocking_thread_not_the_control_thread() {
        let control = ControlRuntime::start(None, &Default::default()).unwrap();
        let (pings, pinged) = std_mpsc::channel();
        let backend = Pinging {
            inner: SimBackend::new(&[("a", 1000)]),
            pings,
        };
        let (_sut, _events) = GpuPoller::spawn(
            control.handle(),
            Box::new(backend),
            Duration::from_millis(1),
            4,
        );

        let thread = pinged.recv().unwrap();

        assert_eq!(
            thread.as_deref(),
            Some(crate::runtime::control::BLOCKING_THREAD)
        );
    }
}
