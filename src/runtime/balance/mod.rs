//! [`Balancer`]: which replica of a replicated agent a call goes to. Pure:
//! the time is passed in, the replicas' states arrive as bit masks, and
//! nothing here reads a clock, touches an atomic or allocates after
//! construction, so each executor keeps one per service it calls and a
//! decision costs a few comparisons.
//!
//! Like Finagle's and Linkerd's client-side balancers, each caller
//! balances on what it sees itself: the calls it has outstanding to each
//! replica and the round trips it measured. The core loop's view (up,
//! isolated, failing, anomalous) arrives with each pick as two masks:
//! `usable`, the replicas that may be picked at all (down, isolated and
//! failing ones are skipped by every algorithm), and `suspect`, replicas
//! whose latency is anomalous, which the load-aware algorithms take only
//! when nothing else is usable.
//!
//! | `balance` | decision |
//! | --- | --- |
//! | `p2c_ewma` (default) | power of two choices: two distinct usable replicas at random, the one with the lower peak-EWMA latency x (outstanding + 1) wins ([`ewma`]) |
//! | `least_outstanding` | the usable replica with the fewest calls outstanding; ties rotate |
//! | `round_robin` | the next usable replica in turn |
//! | `weighted` | smooth weighted round robin (nginx's): each usable replica in proportion to its weight, interleaved |
//! | `consistent_hash` | by the caller's key on a hash ring with bounded loads ([`ring`]); a call without a key goes round robin |
//!
//! A failed call is observed as a round trip [`FAILURE_PENALTY`] times
//! longer than the estimate, so a replica that fails fast does not look
//! fast to `p2c_ewma` (the black hole a latency-only balancer falls into).

pub mod ewma;
pub mod ring;

use self::ewma::PeakEwma;
use self::ring::HashRing;
use crate::config::Balance;

/// How many times its estimate a failed call counts for.
pub const FAILURE_PENALTY: f64 = 5.0;

/// One replica as a caller sees it.
#[derive(Debug, Clone, Copy)]
struct Replica {
    outstanding: u32,
    latency: PeakEwma,
    weight: i64,
    current: i64,
}

/// A caller's balancer for one replicated agent.
#[derive(Debug, Clone)]
pub struct Balancer {
    kind: Balance,
    replicas: Box<[Replica]>,
    cursor: usize,
    rng: u64,
    ring: Option<HashRing>,
}

impl Balancer {
    /// A balancer over `count` replicas (at most 64) by `kind`, with
    /// `weights` for `weighted` (1 each when empty); `seed` starts its
    /// random choices, `now_ns` its latency estimates.
    pub fn new(kind: Balance, count: usize, weights: &[u32], seed: u64, now_ns: u64) -> Self {
        let count = count.clamp(1, 64);
        let replicas = (0..count)
            .map(|i| Replica {
                outstanding: 0,
                latency: PeakEwma::new(now_ns),
                weight: i64::from(weights.get(i).copied().unwrap_or(1).max(1)),
                current: 0,
            })
            .collect();
        Self {
            kind,
            replicas,
            cursor: 0,
            rng: ring::mix(seed) | 1,
            ring: (kind == Balance::ConsistentHash).then(|| HashRing::new(count)),
        }
    }

    /// Replicas it balances over.
    pub fn len(&self) -> usize {
        self.replicas.len()
    }

    /// Whether it has no replica (never: at least one).
    pub fn is_empty(&self) -> bool {
        self.replicas.is_empty()
    }

    /// The mask with every replica set.
    pub fn all(&self) -> u64 {
        u64::MAX >> (64 - self.replicas.len())
    }

    /// Calls outstanding to `replica`.
    pub fn outstanding(&self, replica: usize) -> u32 {
        self.replicas.get(replica).map_or(0, |r| r.outstanding)
    }

    /// `replica`'s load as `p2c_ewma` sees it at `now_ns`: latency
    /// estimate x (outstanding + 1).
    pub fn cost(&self, replica: usize, now_ns: u64) -> f64 {
        self.replicas.get(replica).map_or(f64::INFINITY, |r| {
            r.latency.get(now_ns) * f64::from(r.outstanding + 1)
        })
    }

    /// Picks a replica among `usable` (a bit per replica), avoiding
    /// `suspect` ones where it can, and counts a call outstanding to it.
    /// `key` is the caller's affinity key (`consistent_hash`). `None` when
    /// no replica is usable.
    pub fn pick(
        &mut self,
        now_ns: u64,
        key: Option<u64>,
        usable: u64,
        suspect: u64,
    ) -> Option<usize> {
        let usable = usable & self.all();
        if usable == 0 {
            return None;
        }
        let preferred = match usable & !suspect {
            0 => usable,
            healthy => healthy,
        };
        let chosen = match (self.kind, key) {
            (Balance::P2cEwma, _) => self.two_choices(now_ns, preferred),
            (Balance::LeastOutstanding, _) => self.least_outstanding(preferred),
            (Balance::RoundRobin, _) | (Balance::ConsistentHash, None) => self.round_robin(usable),
            (Balance::Weighted, _) => self.weighted(usable),
            (Balance::ConsistentHash, Some(key)) => {
                let replicas = &self.replicas;
                self.ring
                    .as_ref()
                    .and_then(|ring| ring.pick(key, usable, |r| replicas[r].outstanding))
                    .unwrap_or_else(|| first(usable))
            }
        };
        self.replicas[chosen].outstanding += 1;
        Some(chosen)
    }

    /// A call to `replica` ended at `now_ns` after `rtt_ns`; `ok` if it
    /// succeeded.
    pub fn finish(&mut self, replica: usize, now_ns: u64, rtt_ns: u64, ok: bool) {
        let Some(r) = self.replicas.get_mut(replica) else {
            return;
        };
        r.outstanding = r.outstanding.saturating_sub(1);
        let rtt = rtt_ns as f64;
        let seen = if ok {
            rtt
        } else {
            rtt.max(r.latency.get(now_ns)) * FAILURE_PENALTY
        };
        r.latency.observe(now_ns, seen);
    }

    fn two_choices(&mut self, now_ns: u64, usable: u64) -> usize {
        let n = usable.count_ones();
        if n == 1 {
            return first(usable);
        }
        let a = self.next_random() % n;
        let mut b = self.next_random() % (n - 1);
        if b >= a {
            b += 1;
        }
        let (a, b) = (nth(usable, a), nth(usable, b));
        let (ca, cb) = (self.cost(a, now_ns), self.cost(b, now_ns));
        if cb < ca || (cb == ca && self.replicas[b].outstanding < self.replicas[a].outstanding) {
            b
        } else {
            a
        }
    }

    fn least_outstanding(&mut self, usable: u64) -> usize {
        let n = self.replicas.len();
        let start = self.cursor;
        self.cursor = (self.cursor + 1) % n;
        (0..n)
            .map(|i| (start + i) % n)
            .filter(|&r| usable & (1 << r) != 0)
            .min_by_key(|&r| self.replicas[r].outstanding)
            .unwrap_or_else(|| first(usable))
    }

    fn round_robin(&mut self, usable: u64) -> usize {
        let n = self.replicas.len();
        let chosen = (0..n)
            .map(|i| (self.cursor + i) % n)
            .find(|&r| usable & (1 << r) != 0)
            .unwrap_or_else(|| first(usable));
        self.cursor = (chosen + 1) % n;
        chosen
    }

    fn weighted(&mut self, usable: u64) -> usize {
        let mut total = 0;
        for (i, r) in self.replicas.iter_mut().enumerate() {
            if usable & (1 << i) != 0 {
                r.current += r.weight;
                total += r.weight;
            }
        }
        let chosen = (0..self.replicas.len())
            .filter(|&i| usable & (1 << i) != 0)
            .max_by_key(|&i| (self.replicas[i].current, std::cmp::Reverse(i)))
            .unwrap_or_else(|| first(usable));
        self.replicas[chosen].current -= total;
        chosen
    }

    /// xorshift64*: cheap, good enough to pick two replicas.
    fn next_random(&mut self) -> u32 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    }
}

/// The lowest replica in `mask` (which is not empty).
fn first(mask: u64) -> usize {
    mask.trailing_zeros() as usize
}

/// The `n`th set bit of `mask`.
fn nth(mut mask: u64, n: u32) -> usize {
    for _ in 0..n {
        mask &= mask - 1;
    }
    first(mask)
}
