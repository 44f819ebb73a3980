//! What the control side and a process agent's bridge (on its executor)
//! share: one [`ProcessSlot`] per process or external agent.
//!
//! ```text
//!  control side (core loop)                 bridge (executor)
//!  attach(Attachment{epoch, rings}) ──▶     generation moved, up:
//!                                           take the rings, serve
//!  detach(epoch)                    ──▶     generation moved, down:
//!                                           fail in-flight requests,
//!                                           drop the rings
//!  take_report() -> (epoch, reason) ◀──     report(epoch, Corrupt|Silent)
//!  SIGKILL, then detach
//! ```
//!
//! The generation is one atomic word the bridge reads every pass (no lock
//! on the message path); the rings themselves cross in a mutex that the
//! bridge only `try_lock`s, so an executor never waits on the control
//! side. Every incarnation gets new rings: an agent that was disconnected
//! may still be alive (an external one always may), still mapping its old
//! rings, so they are never reused. The epoch (the incarnation number) is
//! what the agent is told in its facts and what reports name, so a report
//! about an incarnation already gone is ignored.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use pinwheel_ipc::ring::{Consumer, DataBell, Producer};

use super::supervisor::ExitReason;

/// The daemon's ends of one incarnation's rings.
#[derive(Debug)]
pub struct Attachment {
    /// The incarnation.
    pub epoch: u64,
    /// Requests, replies and events to the agent.
    pub to_agent: Producer,
    /// Calls, replies and publications from it (untrusted).
    pub from_agent: Consumer,
}

/// Counters the bridge keeps, read by the control side for views,
/// metrics and the report.
#[derive(Debug, Default)]
pub struct BridgeCounters {
    /// Requests forwarded to the agent.
    pub forwarded: AtomicU64,
    /// Requests answered by the agent.
    pub answered: AtomicU64,
    /// Requests answered "unavailable" because the agent was down, or
    /// failed at once when it went down with them in flight.
    pub unavailable: AtomicU64,
    /// Requests whose deadline passed in the agent.
    pub missed: AtomicU64,
    /// Calls the agent made.
    pub calls: AtomicU64,
}

/// One agent's slot.
#[derive(Debug)]
pub struct ProcessSlot {
    /// `epoch << 1 | up`: moves on every attach and detach.
    generation: AtomicU64,
    handover: Mutex<Option<Attachment>>,
    report: Mutex<Option<(u64, ExitReason)>>,
    bell: DataBell,
    /// The bridge's counters.
    pub counters: BridgeCounters,
}

impl ProcessSlot {
    /// A slot, down, whose rings from the agent wake `bell`.
    pub fn new(bell: DataBell) -> Self {
        Self {
            generation: AtomicU64::new(0),
            handover: Mutex::new(None),
            report: Mutex::new(None),
            bell,
            counters: BridgeCounters::default(),
        }
    }

    /// The bell the bridge parks on; rings from the agent are built on it.
    pub fn bell(&self) -> &DataBell {
        &self.bell
    }

    /// Control side: incarnation `epoch` is attached; its rings go to the
    /// bridge.
    pub fn attach(&self, attachment: Attachment) {
        let epoch = attachment.epoch;
        if let Ok(mut slot) = self.handover.lock() {
            *slot = Some(attachment);
        }
        // SYNC: Release pairs with the Acquire load in `generation`: a
        // bridge that sees the new generation finds the attachment.
        self.generation.store(epoch << 1 | 1, Ordering::Release);
        // Wakes a bridge parked on the agent's ring to take it now.
        let _ = self.bell.nudge();
    }

    /// Control side: incarnation `epoch` is gone (or being disconnected).
    pub fn detach(&self, epoch: u64) {
        if let Ok(mut slot) = self.handover.lock()
            && slot.as_ref().is_some_and(|a| a.epoch <= epoch)
        {
            *slot = None;
        }
        // SYNC: Release pairs with the Acquire load in `generation`.
        self.generation.store(epoch << 1, Ordering::Release);
        // Wakes a parked bridge to fail what is in flight now.
        let _ = self.bell.nudge();
    }

    /// The current `(epoch, up)`.
    pub fn generation(&self) -> (u64, bool) {
        // SYNC: Acquire pairs with the Release stores in attach and detach.
        let word = self.generation.load(Ordering::Acquire);
        (word >> 1, word & 1 == 1)
    }

    /// Bridge side: takes the rings of `epoch` if they are there and the
    /// control side is not holding the lock this instant.
    pub fn take(&self, epoch: u64) -> Option<Attachment> {
        let mut slot = self.handover.try_lock().ok()?;
        match slot.take() {
            Some(a) if a.epoch == epoch => Some(a),
            other => {
                *slot = other;
                None
            }
        }
    }

    /// Bridge side: incarnation `epoch` broke the protocol or stopped
    /// answering; the control side disconnects it.
    pub fn report(&self, epoch: u64, reason: ExitReason) {
        if let Ok(mut slot) = self.report.try_lock() {
            slot.get_or_insert((epoch, reason));
        }
    }

    /// Control side: the bridge's report, if any.
    pub fn take_report(&self) -> Option<(u64, ExitReason)> {
        self.report.lock().ok().and_then(|mut slot| slot.take())
    }
}

#[cfg(test)]
mod tests {
    use pinwheel_ipc::ring::{RingConfig, WaitStrategy, export_consumer_into, export_producer};

    use super::*;

    fn attachment(slot: &ProcessSlot, epoch: u64) -> Attachment {
        let config = RingConfig {
            slots: 16,
            max_frame: 256,
            wait: WaitStrategy::Park,
            spin_us: 0,
        };
        Attachment {
            epoch,
            to_agent: export_producer(config).unwrap().0,
            from_agent: export_consumer_into(config, slot.bell()).unwrap().0,
        }
    }

    #[test]
    fn the_bridge_takes_only_the_rings_of_the_generation_it_saw() {
        let sut = ProcessSlot::new(DataBell::new().unwrap());
        assert_eq!(sut.generation(), (0, false));
        sut.attach(attachment(&sut, 1));
        assert_eq!(sut.generation(), (1, true));
        assert!(sut.take(2).is_none());
        assert_eq!(sut.take(1).unwrap().epoch, 1);
        assert!(sut.take(1).is_none());
    }

    #[test]
    fn a_detach_withdraws_rings_not_yet_taken() {
        let sut = ProcessSlot::new(DataBell::new().unwrap());
        sut.attach(attachment(&sut, 3));
        sut.detach(3);
        assert_eq!(sut.generation(), (3, false));
        assert!(sut.take(3).is_none());
    }

    #[test]
    fn the_first_report_of_an_incarnation_wins() {
        let sut = ProcessSlot::new(DataBell::new().unwrap());
        sut.report(2, ExitReason::Corrupt);
        sut.report(2, ExitReason::Silent);
        assert_eq!(sut.take_report(), Some((2, ExitReason::Corrupt)));
        assert_eq!(sut.take_report(), None);
    }
}
