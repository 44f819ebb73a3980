//! How a drill ([`FaultSpec`], which the daemon sends on the link) shapes
//! a reply: [`shape`] decides, `Request::reply` carries it out. Pure but
//! for the draws, so the decision is tested without a daemon or a clock.
//!
//! * `stall`: nothing is sent, at once (the daemon answers the caller
//!   "timed out" at its deadline).
//! * `error=P`: a share P of replies is [`STATUS_DRILL_ERROR`] with no
//!   body, at once, as a synthetic agent fails before its service time.
//! * `slow=Kx`: the reply waits `(K - 1)` times the handling (from `recv`
//!   to `reply`), so the request takes K times as long; a wait that would
//!   run past the deadline ends there with nothing sent (the caller has
//!   been answered "timed out"), keeping the agent busy as a slow agent
//!   would be.
//!
//! [`STATUS_DRILL_ERROR`]: pinwheel_ipc::drill::STATUS_DRILL_ERROR

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pinwheel_ipc::drill::FaultSpec;

/// What to do with a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shaped {
    /// Send it after `after`.
    Send { after: Duration },
    /// Send the drill's error instead, now.
    Fail,
    /// Send nothing, after `after`.
    Withhold { after: Duration },
}

/// How long a request was handled, and how long its caller still waits
/// (`None`: no deadline).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Handled {
    pub handled: Duration,
    pub left: Option<Duration>,
}

/// What `drill` does to a reply handled as `handled`, given `draw`, a
/// uniformly random `u32`.
pub(crate) fn shape(drill: FaultSpec, draw: u32, handled: Handled) -> Shaped {
    if drill.stalls() {
        return Shaped::Withhold {
            after: Duration::ZERO,
        };
    }
    if drill.fails(draw) {
        return Shaped::Fail;
    }
    let ns = u64::try_from(handled.handled.as_nanos()).unwrap_or(u64::MAX);
    let after = Duration::from_nanos(drill.extra_ns(ns));
    match handled.left {
        Some(left) if after > left => Shaped::Withhold { after: left },
        _ => Shaped::Send { after },
    }
}

/// Uniformly random `u32`s for error chances: splitmix64 over one atomic
/// word, so threads replying at once need no lock.
#[derive(Debug)]
pub(crate) struct Draws(AtomicU64);

impl Draws {
    /// A sequence from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(AtomicU64::new(seed))
    }

    /// The next draw.
    pub fn next(&self) -> u32 {
        // SYNC: Relaxed; only the sequence of values matters.
        let mut z = self.0.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 32) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handled(handled_ms: u64, left_ms: Option<u64>) -> Handled {
        Handled {
            handled: Duration::from_millis(handled_ms),
            left: left_ms.map(Duration::from_millis),
        }
    }

    #[test]
    fn a_slowed_reply_waits_until_the_request_took_k_times_its_handling() {
        let sut = FaultSpec::slow(10.0);
        assert_eq!(
            shape(sut, 0, handled(4, None)),
            Shaped::Send {
                after: Duration::from_millis(36)
            }
        );
        assert_eq!(
            shape(sut, 0, handled(4, Some(100))),
            Shaped::Send {
                after: Duration::from_millis(36)
            }
        );
    }

    #[test]
    fn a_slowed_reply_past_the_deadline_is_withheld_at_the_deadline() {
        let sut = FaultSpec::slow(10.0);
        assert_eq!(
            shape(sut, 0, handled(4, Some(20))),
            Shaped::Withhold {
                after: Duration::from_millis(20)
            }
        );
    }

    #[test]
    fn a_stall_withholds_at_once_and_an_error_fails_its_share() {
        assert_eq!(
            shape(FaultSpec::NONE.with_stall(), 0, handled(1, None)),
            Shaped::Withhold {
                after: Duration::ZERO
            }
        );
        let sut = FaultSpec::slow(3.0).with_error(0.5);
        let draws = Draws::new(7);
        let failed = (0..10_000)
            .filter(|_| shape(sut, draws.next(), handled(1, None)) == Shaped::Fail)
            .count();
        assert!((4_500..=5_500).contains(&failed), "{failed}");
        assert_eq!(
            shape(FaultSpec::NONE.with_error(1.0), u32::MAX, handled(1, None)),
            Shaped::Fail
        );
    }
}
