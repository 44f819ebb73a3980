//! The status line `pinwheel run` redraws once a second on a terminal:
//! agents up, messages handled a second, requests a second and the p99 of
//! request latency so far.
//!
//! It reads the totals each executor's ticker publishes in
//! [`LiveCounters`] (relaxed atomics, a tenth of a second stale at most)
//! and takes differences between two readings, so printing it costs the
//! executors nothing. It goes to stderr, redrawn in place with a carriage
//! return, and only when stderr is a terminal: logs and pipes get no
//! control characters.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::latency::format_ns;
use crate::runtime::stats::LiveCounters;

/// Totals at one reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Reading {
    handled: u64,
    completed: u64,
    p99_ns: u64,
}

fn read(live: &[LiveCounters]) -> Reading {
    live.iter().fold(Reading::default(), |a, c| Reading {
        // SYNC: Relaxed; monotonic totals for display, no ordering needed.
        handled: a.handled + c.handled.load(Ordering::Relaxed),
        // SYNC: as above.
        completed: a.completed + c.completed.load(Ordering::Relaxed),
        // SYNC: as above.
        p99_ns: a.p99_ns.max(c.e2e_p99_ns.load(Ordering::Relaxed)),
    })
}

/// The status line's state between redraws.
#[derive(Debug)]
pub struct StatusLine {
    enabled: bool,
    last: Reading,
    last_at: Instant,
    started: Instant,
}

impl StatusLine {
    /// A status line, drawn only if `enabled` (stderr is a terminal).
    pub fn new(enabled: bool) -> Self {
        let now = Instant::now();
        Self {
            enabled,
            last: Reading::default(),
            last_at: now,
            started: now,
        }
    }

    /// Redraws the line from the executors' totals.
    pub fn redraw(&mut self, live: &[LiveCounters], up: usize, planned: usize) {
        let now = Instant::now();
        let reading = read(live);
        let line = render(
            up,
            planned,
            rate(
                reading.handled - self.last.handled.min(reading.handled),
                now - self.last_at,
            ),
            rate(
                reading.completed - self.last.completed.min(reading.completed),
                now - self.last_at,
            ),
            reading.p99_ns,
            now - self.started,
        );
        (self.last, self.last_at) = (reading, now);
        if self.enabled {
            let _ = std::io::stderr().write_all(format!("\r\x1b[2K{line}").as_bytes());
        }
    }

    /// Ends the line so what follows starts on a clean one.
    pub fn finish(&self) {
        if self.enabled {
            let _ = std::io::stderr().write_all(b"\r\x1b[2K");
        }
    }
}

fn rate(count: u64, over: Duration) -> f64 {
    if over.is_zero() {
        0.0
    } else {
        count as f64 / over.as_secs_f64()
    }
}

/// The line's text.
fn render(
    up: usize,
    planned: usize,
    msgs_per_s: f64,
    reqs_per_s: f64,
    p99_ns: u64,
    elapsed: Duration,
) -> String {
    format!(
        "pinwheel {:>5}s | agents up {up}/{planned} | {msgs_per_s:.0} msg/s | {reqs_per_s:.0} req/s | p99 {}",
        elapsed.as_secs(),
        if p99_ns == 0 {
            "-".to_owned()
        } else {
            format_ns(p99_ns)
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shows_agents_rates_and_p99() {
        let line = render(
            79,
            79,
            15_234.4,
            2_000.2,
            4_210_000,
            Duration::from_secs(12),
        );
        assert_eq!(
            line,
            "pinwheel    12s | agents up 79/79 | 15234 msg/s | 2000 req/s | p99 4.21 ms"
        );
        assert!(render(3, 5, 0.0, 0.0, 0, Duration::ZERO).ends_with("p99 -"));
    }

    #[test]
    fn rates_are_differences_between_readings() {
        let live = [LiveCounters::default(), LiveCounters::default()];
        let mut sut = StatusLine::new(false);
        live[0].handled.store(500, Ordering::Relaxed);
        live[1].handled.store(700, Ordering::Relaxed);
        live[1].e2e_p99_ns.store(9, Ordering::Relaxed);
        sut.redraw(&live, 1, 1);
        assert_eq!(
            sut.last,
            Reading {
                handled: 1_200,
                completed: 0,
                p99_ns: 9
            }
        );
    }
}
