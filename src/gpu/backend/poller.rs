//! [`GpuPoller`]: samples a blocking [`GpuBackend`] on its own thread and
//! hands the readings to the core loop as messages.
//!
//! The thread is a plain `std` thread (name `pinwheel-gpu-poll`) that
//! inherits the affinity of the thread that spawns it: spawn it from the
//! control thread, which runs on the housekeeping CPUs. Every period it
//! reads each GPU once and `try_send`s one [`GpuEvent`] per GPU into a
//! bounded channel. A full channel means the core loop is behind; the
//! reading is dropped (the next one supersedes it) and counted, so the
//! poller never blocks on the core loop and the core loop never blocks on
//! the driver.
//!
//! A lost GPU is reported once, then skipped. Stopping is prompt: the
//! thread waits for its next period on a stop channel, not in `sleep`.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::Duration;

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

/// The running poller thread. Dropping it stops the thread and waits for
/// it.
#[derive(Debug)]
pub struct GpuPoller {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<PollStats>>,
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
    /// Starts polling `backend` every `period`. The core loop reads the
    /// returned receiver with `try_recv`; at most `capacity` events wait
    /// in it.
    pub fn spawn(
        mut backend: Box<dyn GpuBackend>,
        period: Duration,
        capacity: usize,
    ) -> Result<(Self, Receiver<GpuEvent>), GpuError> {
        let (events, receiver) = mpsc::sync_channel(capacity.max(1));
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("pinwheel-gpu-poll".to_owned())
            .spawn(move || poll(backend.as_mut(), period, &events, &stopped))
            .map_err(GpuError::Spawn)?;
        Ok((
            Self {
                stop: Some(stop),
                thread: Some(thread),
            },
            receiver,
        ))
    }

    /// Stops the thread and returns what it did.
    pub fn stop(mut self) -> PollStats {
        self.join()
    }

    fn join(&mut self) -> PollStats {
        drop(self.stop.take());
        self.thread
            .take()
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Drop for GpuPoller {
    fn drop(&mut self) {
        self.join();
    }
}

fn poll(
    backend: &mut dyn GpuBackend,
    period: Duration,
    events: &SyncSender<GpuEvent>,
    stopped: &Receiver<()>,
) -> PollStats {
    let gpus: Vec<GpuIndex> = backend.gpus().iter().map(|g| g.index).collect();
    let mut lost = vec![false; gpus.len()];
    let mut stats = PollStats::default();
    loop {
        for (slot, &gpu) in gpus.iter().enumerate() {
            if lost[slot] {
                continue;
            }
            let event = match backend.sample(gpu) {
                Ok(sample) => GpuEvent::Sample(sample),
                Err(GpuError::Lost { gpu }) => {
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
                Err(TrySendError::Full(_)) => stats.dropped += 1,
                Err(TrySendError::Disconnected(_)) => return stats,
            }
        }
        match stopped.recv_timeout(period) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return stats,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::sim::SimBackend;

    #[test]
    fn the_poller_sends_samples_and_reports_a_lost_gpu_once() {
        let mut sim = SimBackend::new(&[("a", 1000), ("b", 2000)]);
        sim.lose(GpuIndex(1));
        let (sut, events) = GpuPoller::spawn(Box::new(sim), Duration::from_millis(1), 64).unwrap();
        let mut samples = 0;
        let mut lost = 0;
        while samples < 5 {
            match events.recv().unwrap() {
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
        let stats = sut.stop();
        while let Ok(event) = events.try_recv() {
            assert!(matches!(event, GpuEvent::Sample(_)), "{event:?}");
        }
        assert_eq!(lost, 1);
        assert!(stats.sent >= 6);
    }

    /// A backend that tells the test each time it is read.
    #[derive(Debug)]
    struct Pinging {
        inner: SimBackend,
        pings: mpsc::Sender<()>,
    }

    impl GpuBackend for Pinging {
        fn gpus(&self) -> &[crate::gpu::GpuInfo] {
            self.inner.gpus()
        }
        fn sample(&mut self, gpu: GpuIndex) -> Result<GpuSample, GpuError> {
            let _ = self.pings.send(());
            self.inner.sample(gpu)
        }
        fn degraded(&self) -> Option<&str> {
            None
        }
    }

    #[test]
    fn a_full_channel_drops_readings_instead_of_blocking() {
        let (pings, pinged) = mpsc::channel();
        let backend = Pinging {
            inner: SimBackend::new(&[("a", 1000)]),
            pings,
        };
        let (sut, events) =
            GpuPoller::spawn(Box::new(backend), Duration::from_millis(1), 1).unwrap();
        // The third read starts after the second reading met a full channel.
        for _ in 0..3 {
            pinged.recv().unwrap();
        }
        let stats = sut.stop();
        assert!(events.try_recv().is_ok());
        assert!(stats.dropped >= 1, "{stats:?}");
    }
}
