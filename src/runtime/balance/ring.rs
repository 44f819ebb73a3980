//! Consistent hashing with bounded loads (Mirrokni, Thorup and
//! Zadimoghaddam, "Consistent Hashing with Bounded Loads", 2018), on a
//! ring like Envoy's ring hash.
//!
//! Each replica owns [`POINTS`] points of a 64-bit ring, at hashes of
//! `(replica, point)`; a key goes to the owner of the first point at or
//! after the key's hash. Removing a replica moves only the keys on its
//! points (about 1/N of them) and adding it back moves them home, so a
//! session keeps its replica while the set is stable. The bound: a replica
//! already holding `ceil(c x (calls in flight + 1) / usable replicas)`
//! calls is passed over for the next point's owner (`c` = [`LOAD_FACTOR`]),
//! so one hot key cannot pile onto one replica. A replica that may not be
//! used (down, isolated, failing) is passed over the same way.
//!
//! Built once (the points are sorted at construction); a lookup is a
//! binary search and a short walk, and allocates nothing.

/// Points per replica (ketama's 160): enough that replicas own shares
/// within a few percent of each other.
pub const POINTS: u32 = 160;
/// How far above the average load a replica may go.
pub const LOAD_FACTOR: f64 = 1.25;

/// The ring.
#[derive(Debug, Clone)]
pub struct HashRing {
    points: Box<[(u64, u8)]>,
}

impl HashRing {
    /// A ring for `replicas` replicas (at most 64).
    pub fn new(replicas: usize) -> Self {
        let mut points: Vec<(u64, u8)> = (0..replicas.min(64))
            .flat_map(|r| (0..POINTS).map(move |p| (mix((r as u64) << 32 | u64::from(p)), r as u8)))
            .collect();
        points.sort_unstable();
        Self {
            points: points.into_boxed_slice(),
        }
    }

    /// The replica for `key`: the first owner clockwise from the key's
    /// hash that is in `usable` (a bit per replica) and holds fewer calls
    /// than the bound. `in_flight` gives a replica's calls.
    pub fn pick(&self, key: u64, usable: u64, in_flight: impl Fn(usize) -> u32) -> Option<usize> {
        let live = usable.count_ones();
        if live == 0 || self.points.is_empty() {
            return None;
        }
        let total: u64 = (0..64)
            .filter(|r| usable & (1 << r) != 0)
            .map(|r| u64::from(in_flight(r)))
            .sum();
        let bound = (LOAD_FACTOR * (total + 1) as f64 / f64::from(live)).ceil() as u32;
        let start = self.points.partition_point(|&(h, _)| h < mix(key));
        let n = self.points.len();
        (0..n)
            .map(|i| usize::from(self.points[(start + i) % n].1))
            .find(|&r| usable & (1 << r) != 0 && in_flight(r) < bound.max(1))
    }
}

/// splitmix64's finalizer: a fast, well-mixed 64-bit hash of `x`.
pub fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
