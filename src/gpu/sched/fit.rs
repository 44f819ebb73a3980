//! Choosing a GPU for a slot among the candidates that can hold it: pure,
//! over a list the scheduler builds from its view.
//!
//! The order, most important first:
//! 1. **Anti-affinity.** A GPU on a host that already holds another
//!    replica of the model comes last, so replicas land on distinct hosts
//!    while distinct hosts have room (a soft rule: one host alone still
//!    takes every replica rather than refusing).
//! 2. **Cost**, in MiB: the policy's fit cost plus the link latency to the
//!    host times [`SchedConfig::latency_weight_mib_per_ms`]. Binpack costs
//!    the VRAM left over (tightest fit first), spread the negated VRAM left
//!    over (most room first). With the default weight, 1 ms of link
//!    latency weighs as much as 1 GiB of fit.
//! 3. Host name, then GPU index: every host computes the same choice from
//!    the same view.
//!
//! [`SchedConfig::latency_weight_mib_per_ms`]: super::SchedConfig::latency_weight_mib_per_ms

use super::types::{GpuIndex, HostName, Policy};

/// A GPU the slot might go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Candidate<'a> {
    /// Its host.
    pub host: &'a HostName,
    /// The GPU.
    pub gpu: GpuIndex,
    /// VRAM free for the slot, MiB, after loads in flight.
    pub free_mib: u64,
    /// Link latency from the deciding host, µs (0 for itself).
    pub latency_us: u64,
    /// Whether the host holds another replica of the model.
    pub holds_replica: bool,
}

/// The best candidate that fits `need_mib`, if any.
pub(super) fn choose<'c, 'a>(
    candidates: &'c [Candidate<'a>],
    need_mib: u64,
    policy: Policy,
    latency_weight_mib_per_ms: u64,
) -> Option<&'c Candidate<'a>> {
    candidates
        .iter()
        .filter(|c| c.free_mib >= need_mib)
        .min_by(|a, b| {
            let key = |c: &Candidate<'_>| {
                (
                    c.holds_replica,
                    cost(c, need_mib, policy, latency_weight_mib_per_ms),
                )
            };
            key(a)
                .cmp(&key(b))
                .then_with(|| a.host.cmp(b.host))
                .then_with(|| a.gpu.cmp(&b.gpu))
        })
}

/// A fitting candidate's cost in MiB; lower is better.
fn cost(c: &Candidate<'_>, need_mib: u64, policy: Policy, weight_mib_per_ms: u64) -> i128 {
    let left = i128::from(c.free_mib - need_mib);
    let fit = match policy {
        Policy::Binpack => left,
        Policy::Spread => -left,
    };
    fit + i128::from(c.latency_us) * i128::from(weight_mib_per_ms) / 1000
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names() -> Vec<HostName> {
        ["a", "b", "c", "d"].map(HostName::from).to_vec()
    }

    fn cand(host: &HostName, gpu: u32, free_mib: u64) -> Candidate<'_> {
        Candidate {
            host,
            gpu: GpuIndex(gpu),
            free_mib,
            latency_us: 0,
            holds_replica: false,
        }
    }

    #[test]
    fn binpack_takes_the_tightest_fit_and_spread_the_most_room() {
        let h = names();
        let cands = [
            cand(&h[0], 0, 10_000),
            cand(&h[1], 0, 5_000),
            cand(&h[2], 0, 3_000),
        ];

        let packed = choose(&cands, 4_000, Policy::Binpack, 0).expect("fits");
        let spread = choose(&cands, 4_000, Policy::Spread, 0).expect("fits");

        assert_eq!(packed.host, &h[1]);
        assert_eq!(spread.host, &h[0]);
    }

    #[test]
    fn link_latency_pushes_work_to_a_nearer_host() {
        let h = names();
        let mut far = cand(&h[0], 0, 4_500);
        far.latency_us = 2_000;
        let near = cand(&h[1], 0, 6_000);

        let cands = [far, near];

        let sut = choose(&cands, 4_000, Policy::Binpack, 1024).expect("fits");

        assert_eq!(
            sut.host, &h[1],
            "2 ms weighs 2 GiB, more than the 1.5 GiB tighter fit"
        );
    }

    #[test]
    fn a_host_with_another_replica_is_taken_only_when_no_other_fits() {
        let h = names();
        let mut with_replica = cand(&h[0], 0, 4_000);
        with_replica.holds_replica = true;

        let roomy = [with_replica.clone(), cand(&h[1], 0, 20_000)];
        let cramped = [with_replica, cand(&h[1], 0, 1_000)];

        let other = choose(&roomy, 4_000, Policy::Binpack, 0);
        let only = choose(&cramped, 4_000, Policy::Binpack, 0);

        assert_eq!(other.expect("fits").host, &h[1]);
        assert_eq!(only.expect("fits").host, &h[0]);
    }

    #[test]
    fn nothing_is_chosen_when_nothing_fits() {
        let h = names();

        assert_eq!(choose(&[cand(&h[0], 0, 100)], 101, Policy::Spread, 0), None);
    }

    proptest! {
        #[test]
        fn the_choice_fits_and_no_fitting_candidate_without_a_replica_is_passed_over(
            gpus in proptest::collection::vec((0usize..4, 0u64..30_000, 0u64..5_000, any::<bool>()), 1..12),
            need in 1u64..20_000,
            spread in any::<bool>(),
        ) {
            let h = names();
            let cands: Vec<_> = gpus.iter().enumerate().map(|(i, &(host, free, lat, rep))| Candidate {
                host: &h[host], gpu: GpuIndex(i as u32), free_mib: free, latency_us: lat, holds_replica: rep,
            }).collect();
            let policy = if spread { Policy::Spread } else { Policy::Binpack };

            let sut = choose(&cands, need, policy, 1024);

            let any_fits = cands.iter().any(|c| c.free_mib >= need);
            prop_assert_eq!(sut.is_some(), any_fits);
            if let Some(c) = sut {
                prop_assert!(c.free_mib >= need);
                let clean_fits = cands.iter().any(|c| c.free_mib >= need && !c.holds_replica);
                prop_assert!(!c.holds_replica || !clean_fits);
            }
        }
    }
}
