//! Waiting on several rings at once: the rings one executor consumes.
//!
//! Every ring of a group wakes the same [`DataBell`], so the group parks
//! on one eventfd. Parking follows the rings' own protocol, widened to the
//! group: publish every tail, declare every ring asleep, re-check every
//! head, and sleep only if all are still empty; a producer of any of them
//! that publishes after the declaration sees it and rings the shared bell.
//! The spin phase is the consumers' wait strategy, clock-free first polls
//! included; on an executor it yields to other tasks between polls.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::handle::DataBell;
use super::wait::Waiter;
use super::{Consumer, RingError, WaitStrategy, os};

/// Consumers that park together on one bell.
#[derive(Debug)]
pub struct ConsumerGroup {
    bell: DataBell,
    consumers: Vec<Consumer>,
    waiter: Waiter,
    file: Option<glommio::io::BufferedFile>,
    parks: u64,
}

impl ConsumerGroup {
    /// An empty group woken by `bell`, waiting by `wait` with at most
    /// `spin_us` of spinning.
    pub fn new(bell: DataBell, wait: WaitStrategy, spin_us: u32) -> Self {
        let waiter = Waiter::new(wait, Duration::from_micros(u64::from(spin_us)));
        Self {
            bell,
            consumers: Vec::new(),
            waiter,
            file: None,
            parks: 0,
        }
    }

    /// Adds a consumer; its ring must have been built on the group's bell.
    pub fn add(&mut self, consumer: Consumer) -> Result<(), RingError> {
        if !consumer.rings(&self.bell) {
            return Err(RingError::Config {
                reason: "a ring joins a consumer group only if it rings the group's bell".into(),
            });
        }
        self.consumers.push(consumer);
        Ok(())
    }

    /// Removes every consumer (their rings are dropped).
    pub fn clear(&mut self) {
        self.consumers.clear();
    }

    /// The consumers, to read from.
    pub fn consumers_mut(&mut self) -> &mut [Consumer] {
        &mut self.consumers
    }

    /// Times the group parked on its bell.
    pub fn parks(&self) -> u64 {
        self.parks
    }

    fn any_frames(&mut self) -> Result<bool, RingError> {
        for consumer in &mut self.consumers {
            if consumer.has_frames()? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Declares every ring asleep; false (all undeclared) if any has frames.
    fn arm_all(&mut self) -> Result<bool, RingError> {
        for consumer in &mut self.consumers {
            consumer.release_idle()?;
        }
        for i in 0..self.consumers.len() {
            if !self.consumers[i].arm()? {
                self.disarm_all();
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn disarm_all(&mut self) {
        for consumer in &mut self.consumers {
            consumer.disarm();
        }
    }

    /// Waits up to `timeout` for a frame on any ring, on a glommio
    /// executor; returns whether one is ready. Must be called on the
    /// executor thread that keeps calling it (the bell's io_uring handle is
    /// created there on first use).
    pub async fn wait_async(&mut self, timeout: Duration) -> Result<bool, RingError> {
        for _ in 0..POLLS_FIRST {
            if self.any_frames()? {
                self.waiter.waited(Duration::ZERO);
                return Ok(true);
            }
            std::hint::spin_loop();
        }
        let started = Instant::now();
        let deadline = started + timeout;
        let spin = match self.waiter.budget() {
            None => Some(timeout),
            Some(budget) if budget.is_zero() => None,
            Some(budget) => Some(budget),
        };
        if let Some(budget) = spin {
            let stop = (started + budget).min(deadline);
            while Instant::now() < stop {
                if self.any_frames()? {
                    self.waiter.waited(started.elapsed());
                    return Ok(true);
                }
                YieldNow(false).await;
            }
        }
        self.park(started, deadline).await
    }

    async fn park(&mut self, started: Instant, deadline: Instant) -> Result<bool, RingError> {
        if self.file.is_none() {
            self.file = Some(
                self.bell
                    .0
                    .async_handle()
                    .map_err(os("duplicate ring doorbell"))?,
            );
        }
        loop {
            if !self.arm_all()? {
                self.waiter.waited(started.elapsed());
                return Ok(true);
            }
            let now = Instant::now();
            if now >= deadline {
                self.disarm_all();
                return Ok(false);
            }
            self.parks += 1;
            let file = self.file.as_ref().expect("created above");
            let read = glommio::timer::timeout(deadline - now, async {
                file.read_at(0, 8).await.map(drop)
            })
            .await;
            self.disarm_all();
            match read {
                Ok(()) | Err(glommio::GlommioError::TimedOut(_)) => {}
                Err(err) => {
                    return Err(RingError::Os {
                        what: "await ring doorbell",
                        source: err.into(),
                    });
                }
            }
            if self.any_frames()? {
                self.waiter.waited(started.elapsed());
                return Ok(true);
            }
        }
    }

    /// Like [`ConsumerGroup::wait_async`] on a plain thread (tests, tools).
    pub fn wait(&mut self, timeout: Duration) -> Result<bool, RingError> {
        let started = Instant::now();
        let deadline = started + timeout;
        loop {
            if self.any_frames()? {
                return Ok(true);
            }
            if !self.arm_all()? {
                return Ok(true);
            }
            let now = Instant::now();
            if now >= deadline {
                self.disarm_all();
                return Ok(false);
            }
            self.parks += 1;
            self.bell
                .0
                .wait(deadline - now)
                .map_err(os("wait for ring data"))?;
            self.disarm_all();
        }
    }
}

/// Polls across the group before the clock is read.
const POLLS_FIRST: u32 = 16;

/// Yields once to the executor's other tasks.
struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}
