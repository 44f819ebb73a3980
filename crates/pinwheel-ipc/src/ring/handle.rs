//! The safe handles of a ring: [`Producer`] and [`Consumer`], and the
//! constructors of in-process rings. See the module doc of `ring` for the
//! full-ring policies and wait strategies they offer.

use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::layout::{ConsumerEnd, ProducerEnd, Shared, WriteFail};
use super::peer::Export;
use super::sync::Doorbell;
use super::wait::Waiter;
use super::{Parked, RingConfig, RingError, RingStats, WaitStrategy, os, shm};
use crate::wire::{self, ArchivedEnvelope, Envelope, InlineFrame, Scratch, WireError};

/// The doorbells of one ring: `data` wakes the consumer, `space` the
/// producer.
#[derive(Debug)]
pub(super) struct Bells {
    pub data: Arc<Doorbell>,
    pub space: Doorbell,
}

/// A doorbell that wakes one consumer thread for several rings: every ring
/// built with [`shm_ring_into`] on the same bell rings it, so an executor
/// that consumes many rings parks once, on one eventfd
/// ([`super::ConsumerGroup`]).
#[derive(Debug, Clone)]
pub struct DataBell(pub(super) Arc<Doorbell>);

impl DataBell {
    /// A new bell.
    pub fn new() -> Result<Self, RingError> {
        Ok(Self(Arc::new(Doorbell::new().map_err(os("eventfd"))?)))
    }

    /// Rings the bell whatever its consumer declared, waking the thread
    /// parked on it (a consumer that is awake takes it as a spurious
    /// wake-up). The runtime's guard uses it on a late executor.
    pub fn nudge(&self) -> Result<(), RingError> {
        self.0.ring().map_err(os("eventfd write"))
    }
}

/// Creates an in-process ring in heap memory (tests and models).
pub fn heap_ring(config: RingConfig) -> Result<(Producer, Consumer), RingError> {
    config.validate()?;
    let shared = Arc::new(Shared::heap(config.slots));
    let bells = Arc::new(Bells {
        data: Arc::new(Doorbell::new().map_err(os("eventfd"))?),
        space: Doorbell::new().map_err(os("eventfd"))?,
    });
    Ok(pair(shared, bells, config))
}

/// Creates an in-process ring in a memfd, as the daemon does between its
/// cores.
pub fn shm_ring(config: RingConfig) -> Result<(Producer, Consumer), RingError> {
    shm_ring_into(config, &DataBell::new()?)
}

/// Creates an in-process ring in a memfd whose consumer is woken by `bell`,
/// shared with the other rings the same thread consumes.
pub fn shm_ring_into(
    config: RingConfig,
    bell: &DataBell,
) -> Result<(Producer, Consumer), RingError> {
    config.validate()?;
    let shared = shm::create_private(config.slots)?;
    let bells = Arc::new(Bells {
        data: Arc::clone(&bell.0),
        space: Doorbell::new().map_err(os("eventfd"))?,
    });
    Ok(pair(Arc::new(shared), bells, config))
}

fn pair(shared: Arc<Shared>, bells: Arc<Bells>, config: RingConfig) -> (Producer, Consumer) {
    let producer = Producer::new(
        ProducerEnd::new(Arc::clone(&shared), config.max_frame),
        Arc::clone(&bells),
        config,
    );
    let consumer = Consumer::new(ConsumerEnd::new(shared, config.max_frame), bells, config);
    (producer, consumer)
}

/// The writing end of a ring.
pub struct Producer {
    pub(super) end: ProducerEnd,
    pub(super) bells: Arc<Bells>,
    pub(super) config: RingConfig,
    stats: RingStats,
    scratch: Box<Scratch>,
    pub(super) export: Option<Export>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("config", &self.config)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Producer {
    pub(super) fn new(end: ProducerEnd, bells: Arc<Bells>, config: RingConfig) -> Self {
        Self {
            end,
            bells,
            config,
            stats: RingStats::default(),
            scratch: Box::new(Scratch::new()),
            export: None,
        }
    }

    /// The ring's configuration.
    pub fn config(&self) -> &RingConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> RingStats {
        self.stats
    }

    fn fail(&self, fail: WriteFail, len: usize) -> RingError {
        match fail {
            WriteFail::Full => RingError::Full,
            WriteFail::TooLarge => RingError::TooLarge {
                len,
                max: self.config.max_frame,
            },
        }
    }

    /// Writes one frame without publishing it: `write` fills the payload
    /// bytes it is given and returns how many it used, or `None` when they
    /// are too few (it may be called again with more). On an in-process
    /// ring the bytes are the slots themselves; on a ring another process
    /// maps they are private staging memory, copied in when `write`
    /// returns, because the peer could write the slots meanwhile. Frames
    /// become visible together at the next [`Producer::flush`].
    pub fn try_write(
        &mut self,
        write: impl FnMut(&mut [u8]) -> Option<usize>,
    ) -> Result<(), RingError> {
        match self.end.write_frame(write)? {
            Ok(()) => {
                self.stats.frames += 1;
                Ok(())
            }
            Err(fail) => Err(self.fail(fail, self.config.max_frame + 1)),
        }
    }

    /// Copies `bytes` in as one frame without publishing it.
    pub fn try_write_bytes(&mut self, bytes: &[u8]) -> Result<(), RingError> {
        match self.end.write_bytes(bytes)? {
            Ok(()) => {
                self.stats.frames += 1;
                Ok(())
            }
            Err(fail) => Err(self.fail(fail, bytes.len())),
        }
    }

    /// Encodes `env` into the ring without publishing it, nothing
    /// allocated. A request, reply, event or heartbeat is written straight
    /// into the slots as its body and words ([`InlineFrame`]); rkyv
    /// serializes the other kinds into the slot on an in-process ring, and
    /// into staging memory then copied in on a ring another process maps.
    ///
    /// In line for the common case only: an in-line kind with room before
    /// the ring's end by the cached tail. The rest (the rkyv kinds, a full
    /// ring, a pad, the errors) is out of line.
    ///
    /// Always in line, not left to LLVM: with a plain `#[inline]` it stayed
    /// a call, so the caller built the whole [`Envelope`] on its stack for
    /// it and read its 48-byte result back through memory. In line, the
    /// fields go straight from the caller's registers into the slots: a
    /// round trip over two exported rings took 1,083 instructions before
    /// and 915 after (callgrind).
    #[inline(always)]
    pub fn try_write_envelope(&mut self, env: &Envelope<'_>) -> Result<(), RingError> {
        if self.write_now(env) {
            return Ok(());
        }
        self.write_envelope_slowly(env)
    }

    /// Writes `env` if it is an in-line kind with room before the ring's
    /// end by the cached tail, the common case; false (nothing written)
    /// for the rest. A bool, not a `Result`: the callers' fast paths then
    /// return a constant `Ok`, which folds into their own checks, instead
    /// of joining the slow path's result in memory.
    #[inline(always)]
    fn write_now(&mut self, env: &Envelope<'_>) -> bool {
        if let Some(frame) = InlineFrame::of(env)
            && self.end.write_words_now(frame.body(), frame.root())
        {
            self.stats.frames += 1;
            return true;
        }
        false
    }

    /// [`Producer::try_write_envelope`] beyond its common case.
    #[inline(never)]
    fn write_envelope_slowly(&mut self, env: &Envelope<'_>) -> Result<(), RingError> {
        let Some(frame) = InlineFrame::of(env) else {
            return self.write_archived(env);
        };
        match self.end.write_words(frame.body(), frame.root())? {
            Ok(()) => {
                self.stats.frames += 1;
                Ok(())
            }
            Err(fail) => Err(self.fail(fail, frame.encoded_len())),
        }
    }

    /// [`Producer::try_write_envelope`] for the kinds rkyv serializes. Out
    /// of line, so that its buffers and error handling stay off the stack
    /// frame of the in-line kinds' path, which round trips wait on.
    #[inline(never)]
    fn write_archived(&mut self, env: &Envelope<'_>) -> Result<(), RingError> {
        let scratch = &mut *self.scratch;
        let mut failure = None;
        let written = self
            .end
            .write_frame(|out| match wire::encode_into(env, out, scratch) {
                Ok(len) => Some(len),
                Err(WireError::TooLarge { .. }) => None,
                Err(err) => {
                    failure = Some(err);
                    Some(0)
                }
            })?;
        if let Some(source) = failure {
            return Err(RingError::Message {
                source: Box::new(source),
            });
        }
        match written {
            Ok(()) => {
                self.stats.frames += 1;
                Ok(())
            }
            Err(WriteFail::Full) => Err(RingError::Full),
            Err(WriteFail::TooLarge) => {
                let len = wire::encoded_len(env, scratch).map_err(|source| RingError::Message {
                    source: Box::new(source),
                })?;
                Err(RingError::TooLarge {
                    len,
                    max: self.config.max_frame,
                })
            }
        }
    }

    /// Encodes and publishes one envelope; on [`RingError::Full`] nothing
    /// was written and the caller still has the envelope.
    #[inline]
    pub fn try_send(&mut self, env: &Envelope<'_>) -> Result<(), RingError> {
        if self.write_now(env) {
            return self.flush();
        }
        self.try_send_slowly(env)
    }

    /// [`Producer::try_send`] beyond its common case.
    #[inline(never)]
    fn try_send_slowly(&mut self, env: &Envelope<'_>) -> Result<(), RingError> {
        self.write_envelope_slowly(env)?;
        self.flush()
    }

    /// Publishes every frame written so far and wakes a parked consumer.
    #[inline]
    pub fn flush(&mut self) -> Result<(), RingError> {
        if self.end.publish(self.config.wait != WaitStrategy::Spin) {
            return self.wake_consumer();
        }
        Ok(())
    }

    /// Rings the data doorbell for a consumer that parked.
    #[inline(never)]
    fn wake_consumer(&mut self) -> Result<(), RingError> {
        self.stats.wakeups_sent += 1;
        self.bells.data.ring().map_err(os("ring data doorbell"))
    }

    /// Writes and publishes one frame; [`RingError::Full`] leaves nothing
    /// written.
    pub fn try_push(&mut self, bytes: &[u8]) -> Result<(), RingError> {
        self.try_write_bytes(bytes)?;
        self.flush()
    }

    /// Writes and publishes one frame, waiting up to `timeout` for space.
    pub fn push(&mut self, bytes: &[u8], timeout: Duration) -> Result<(), RingError> {
        self.with_space(timeout, |producer| producer.try_push(bytes))
    }

    /// Encodes and publishes one envelope, waiting up to `timeout` for
    /// space.
    ///
    /// In line up to its first try: a send that finds room, the common
    /// case, costs no call of its own and hands its result straight to
    /// the caller; waiting for space is out of line.
    #[inline]
    pub fn send(&mut self, env: &Envelope<'_>, timeout: Duration) -> Result<(), RingError> {
        if self.write_now(env) {
            return self.flush();
        }
        self.send_slowly(env, timeout)
    }

    /// [`Producer::send`] beyond its common case: the rkyv kinds, a pad,
    /// and a ring found full, which it waits on.
    #[inline(never)]
    fn send_slowly(&mut self, env: &Envelope<'_>, timeout: Duration) -> Result<(), RingError> {
        match self.try_send_slowly(env) {
            Err(RingError::Full) => self.with_space(timeout, |producer| producer.try_send(env)),
            other => other,
        }
    }

    /// Retries `attempt` while the ring is full, parked on the space
    /// doorbell between tries, until `timeout`.
    fn with_space(
        &mut self,
        timeout: Duration,
        mut attempt: impl FnMut(&mut Self) -> Result<(), RingError>,
    ) -> Result<(), RingError> {
        // The clock is read only once the ring turns out to be full.
        match attempt(self) {
            Err(RingError::Full) => {}
            other => return other,
        }
        let start = Instant::now();
        loop {
            let waited = start.elapsed();
            if waited >= timeout {
                return Err(RingError::Timeout { waited });
            }
            self.flush()?;
            if self.end.arm()? {
                self.stats.parks += 1;
                self.bells
                    .space
                    .wait(timeout - waited)
                    .map_err(os("wait for ring space"))?;
                self.end.disarm();
            }
            match attempt(self) {
                Err(RingError::Full) => {}
                other => return other,
            }
        }
    }

    /// Writes and publishes one frame, or drops it if the ring is full.
    /// Returns whether it was written.
    pub fn push_or_drop(&mut self, bytes: &[u8]) -> Result<bool, RingError> {
        match self.try_push(bytes) {
            Ok(()) => Ok(true),
            Err(RingError::Full) => {
                self.stats.drops += 1;
                Ok(false)
            }
            Err(err) => Err(err),
        }
    }

    /// Whether frames were written but not flushed.
    pub fn has_unflushed(&self) -> bool {
        self.end.pending()
    }
}

/// The reading end of a ring.
pub struct Consumer {
    pub(super) end: ConsumerEnd,
    pub(super) bells: Arc<Bells>,
    pub(super) config: RingConfig,
    waiter: Waiter,
    stats: RingStats,
    pub(super) export: Option<Export>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("config", &self.config)
            .field("in_place", &self.end.reads_in_place())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Consumer {
    pub(super) fn new(end: ConsumerEnd, bells: Arc<Bells>, config: RingConfig) -> Self {
        let waiter = Waiter::new(
            config.wait,
            Duration::from_micros(u64::from(config.spin_us)),
        );
        Self {
            end,
            bells,
            config,
            waiter,
            stats: RingStats::default(),
            export: None,
        }
    }

    /// The ring's configuration.
    pub fn config(&self) -> &RingConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> RingStats {
        self.stats
    }

    /// Slots published but not yet read, as of this end's last look at
    /// the head (no shared-memory read).
    pub fn backlog(&self) -> u64 {
        self.end.backlog()
    }

    /// Hands the next frame's bytes to `read`; `None` when the ring is
    /// empty. On a ring another process maps the bytes are a private copy
    /// that the peer cannot change; on an in-process ring they are read in
    /// place.
    pub fn try_recv<R>(&mut self, read: impl FnOnce(&[u8]) -> R) -> Result<Option<R>, RingError> {
        let Some(frame) = self.end.next_frame()? else {
            self.release_idle()?;
            return Ok(None);
        };
        let result = self.end.read(&frame, read);
        self.stats.frames += 1;
        if self.end.release(frame, true) {
            self.wake_producer()?;
        }
        Ok(Some(result))
    }

    /// Hands the next frame, checked as an envelope, to `read`. A frame
    /// that is not a valid envelope is [`RingError::Message`]: on an
    /// untrusted ring that means the peer must be disconnected.
    pub fn try_recv_envelope<R>(
        &mut self,
        read: impl FnOnce(&ArchivedEnvelope<'_>) -> R,
    ) -> Result<Option<R>, RingError> {
        let mut bad = None;
        let got = self.try_recv(|bytes| match wire::decode(bytes) {
            Ok(env) => Some(read(env)),
            Err(err) => {
                bad = Some(err);
                None
            }
        })?;
        match bad {
            Some(err) => Err(RingError::Message {
                source: Box::new(err),
            }),
            None => Ok(got.flatten()),
        }
    }

    /// Reads up to `max` frames; returns how many.
    pub fn recv_batch(
        &mut self,
        max: usize,
        mut read: impl FnMut(&[u8]),
    ) -> Result<usize, RingError> {
        let mut count = 0;
        while count < max && self.try_recv(&mut read)?.is_some() {
            count += 1;
        }
        Ok(count)
    }

    #[cfg(feature = "glommio")]
    /// Whether this consumer is woken by `bell`.
    pub(super) fn rings(&self, bell: &DataBell) -> bool {
        Arc::ptr_eq(&self.bells.data, &bell.0)
    }

    #[cfg(feature = "glommio")]
    /// Whether published frames are waiting.
    pub(super) fn has_frames(&mut self) -> Result<bool, RingError> {
        self.end.has_frames()
    }

    #[cfg(feature = "glommio")]
    /// Declares this consumer asleep; false (undeclared) if frames came.
    pub(super) fn arm(&mut self) -> Result<bool, RingError> {
        self.end.arm()
    }

    #[cfg(feature = "glommio")]
    /// Undeclares it.
    pub(super) fn disarm(&mut self) {
        self.end.disarm();
    }

    /// Publishes the tail when the ring was found empty, so a producer
    /// waiting for space sees it.
    pub(super) fn release_idle(&mut self) -> Result<(), RingError> {
        if self.end.publish_tail(true) {
            self.wake_producer()?;
        }
        Ok(())
    }

    fn wake_producer(&mut self) -> Result<(), RingError> {
        self.stats.wakeups_sent += 1;
        self.bells.space.ring().map_err(os("ring space doorbell"))
    }

    /// Waits up to `timeout` for a frame by the ring's wait strategy, on a
    /// plain thread. Returns whether one is ready.
    ///
    /// In line up to its first polls: a frame that comes while they run
    /// (a round trip's answer) is handed back with no call in between;
    /// spinning on with the clock, and parking, are out of line.
    #[inline]
    pub fn wait(&mut self, timeout: Duration) -> Result<bool, RingError> {
        if self.waiter.poll_first(&mut self.end)? {
            return Ok(true);
        }
        self.wait_on_bell(timeout)
    }

    /// [`Consumer::wait`] after its first polls.
    #[inline(never)]
    fn wait_on_bell(&mut self, timeout: Duration) -> Result<bool, RingError> {
        self.wait_parking(timeout, |bell, left| {
            bell.wait(left)
                .map(|rung| if rung { Parked::Bell } else { Parked::Timeout })
        })
    }

    /// [`Consumer::wait`] with the parking done by `park`, so that a thread
    /// can sleep on the doorbell and its own descriptors at once (an agent
    /// process parks on its ring and its link to the daemon). `park` gets
    /// the doorbell's eventfd and the time left; it returns
    /// [`Parked::Bell`] once the eventfd was readable and its counter read,
    /// [`Parked::Timeout`], or [`Parked::Other`] when something else woke
    /// it: then this returns `Ok(false)` at once, frames or not checked by
    /// the caller.
    pub fn wait_with(
        &mut self,
        timeout: Duration,
        mut park: impl FnMut(BorrowedFd<'_>, Duration) -> std::io::Result<Parked>,
    ) -> Result<bool, RingError> {
        if self.waiter.poll_first(&mut self.end)? {
            return Ok(true);
        }
        self.wait_parking(timeout, |bell, left| park(bell.as_fd(), left))
    }

    /// [`Consumer::wait_with`] after its first polls, with `park` given
    /// the doorbell itself, borrowed: cloning its `Arc` for the closure
    /// cost two locked instructions on every wait, frames found at once or
    /// not.
    fn wait_parking(
        &mut self,
        timeout: Duration,
        mut park: impl FnMut(&Doorbell, Duration) -> std::io::Result<Parked>,
    ) -> Result<bool, RingError> {
        let started = Instant::now();
        let deadline = started + timeout;
        if self.waiter.spin(&mut self.end, started, deadline)? {
            return Ok(true);
        }
        loop {
            self.release_idle()?;
            if !self.end.arm()? {
                return Ok(true);
            }
            let now = Instant::now();
            if now >= deadline {
                self.end.disarm();
                return Ok(false);
            }
            self.stats.parks += 1;
            let parked =
                park(&self.bells.data, deadline - now).map_err(os("wait for ring data"))?;
            self.end.disarm();
            if self.end.has_frames()? {
                return Ok(true);
            }
            if parked == Parked::Other {
                return Ok(false);
            }
        }
    }

    #[cfg(feature = "glommio")]
    /// Like [`Consumer::wait`], on a glommio executor: the spin phase yields
    /// to other tasks, and parking awaits the doorbell on the executor's
    /// io_uring reactor through `bell` (from [`Consumer::async_doorbell`]).
    pub async fn wait_async(
        &mut self,
        bell: &glommio::io::BufferedFile,
        timeout: Duration,
    ) -> Result<bool, RingError> {
        if self.waiter.poll_first(&mut self.end)? {
            return Ok(true);
        }
        let started = Instant::now();
        let deadline = started + timeout;
        if self
            .waiter
            .spin_async(&mut self.end, started, deadline)
            .await?
        {
            return Ok(true);
        }
        loop {
            self.release_idle()?;
            if !self.end.arm()? {
                return Ok(true);
            }
            let now = Instant::now();
            if now >= deadline {
                self.end.disarm();
                return Ok(false);
            }
            self.stats.parks += 1;
            let read = glommio::timer::timeout(deadline - now, async {
                bell.read_at(0, 8)
                    .await
                    .map(drop)
                    .map_err(std::io::Error::from)
                    .map_err(glommio::GlommioError::from)
            })
            .await;
            self.end.disarm();
            match read {
                Ok(()) | Err(glommio::GlommioError::TimedOut(_)) => {}
                Err(err) => {
                    return Err(RingError::Os {
                        what: "await ring doorbell",
                        source: err.into(),
                    });
                }
            }
            if self.end.has_frames()? {
                return Ok(true);
            }
        }
    }

    #[cfg(feature = "glommio")]
    /// A glommio file over this ring's data doorbell, for
    /// [`Consumer::wait_async`]. Create it on the executor that waits.
    pub fn async_doorbell(&self) -> Result<glommio::io::BufferedFile, RingError> {
        self.bells
            .data
            .async_handle()
            .map_err(os("duplicate ring doorbell"))
    }
}
