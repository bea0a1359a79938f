//! Replica counts for a canary split by replica ratio (Kubernetes without a gateway: every
//! pod of both revisions behind one Service, so the share of pods is the share of traffic).
//!
//! Like Argo Rollouts' basic canary, the total may grow above the service's replica count
//! by the strategy's `max_surge` to get closer to a weight: with 2 replicas, weight 20 is
//! 1 + 1 pods (50 %) without surge, and 1 canary + 4 stable pods (20 %) with `max_surge: 3`.
//! With an autoscaler the stable revision's count belongs to the HorizontalPodAutoscaler:
//! it is never scaled down by the rollout, and the canary is sized from the stable's
//! current (live) count instead — the total grows, as with Argo's `setCanaryScale` under
//! traffic routing, bounded by the autoscaler's `max`.

use serde::{Deserialize, Serialize};

use super::platform::{Revision, Weights};

/// The replica bounds of an autoscaled revision (`autoscale: { min, max }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bounds {
    pub min: u32,
    pub max: u32,
}

impl Bounds {
    /// The bounds a service's `autoscale:` gives, if any.
    pub fn of(autoscale: Option<&crate::manifest::Autoscale>) -> Option<Bounds> {
        autoscale.map(|a| Bounds {
            min: a.min.value,
            max: a.max.value,
        })
    }

    /// `replicas` kept within the bounds (0, nothing running, becomes `min`).
    pub fn clamp(self, replicas: u32) -> u32 {
        replicas.clamp(self.min.max(1), self.max.max(self.min).max(1))
    }
}

/// `(candidate pods, stable pods)` whose ratio is closest to `weight` percent (1–99) for a
/// service of `replicas` replicas, with at most `max_surge` extra pods in all and at least
/// one pod on each side. Among equally close splits the smallest total wins; within one
/// total the nearest integer, halves rounded up (so `max_surge: 0` is the plain nearest
/// split).
pub fn canary_counts(replicas: u32, weight: u32, max_surge: u32) -> (u32, u32) {
    let weight = weight.clamp(1, 99);
    let base = replicas.max(2);
    let mut best = (1, base - 1);
    // Distance from the weight as a fraction err/total, compared by cross-multiplying.
    let mut best_err = (u64::MAX, 1u64);
    for total in base..=base.saturating_add(max_surge) {
        for candidate in 1..total {
            let err = (100 * candidate as u64).abs_diff(weight as u64 * total as u64);
            let (be, bt) = best_err;
            let better = err * bt < be.saturating_mul(total as u64)
                || (err * bt == be.saturating_mul(total as u64) && bt == total as u64);
            if better {
                best = (candidate, total - candidate);
                best_err = (err, total as u64);
            }
        }
    }
    best
}

/// `(candidate pods, stable pods)` for `weight` percent when an autoscaler owns the stable
/// revision's count: the stable keeps its current `stable` pods, the candidate gets the
/// nearest count for the weight, at least 1 and at most the autoscaler's `max`.
pub fn canary_counts_autoscaled(stable: u32, weight: u32, bounds: Bounds) -> (u32, u32) {
    let weight = weight.clamp(1, 99) as u64;
    let stable = stable.max(1);
    let ideal = (stable as u64 * weight * 2 + (100 - weight)) / ((100 - weight) * 2);
    let candidate = (ideal as u32).clamp(1, bounds.max.max(1));
    (candidate, stable)
}

/// The candidate's share of traffic, in percent, that `candidate` of `candidate + stable`
/// pods get.
pub fn effective_percent(candidate: u32, stable: u32) -> u32 {
    let total = (candidate + stable).max(1);
    (candidate * 100 + total / 2) / total
}

/// Replicas per revision (id → count) for traffic split by replica ratio: a revision with
/// all the traffic runs its full count; a split between a candidate (the first revision)
/// and stable (the second) uses [`canary_counts_autoscaled`] when the candidate is
/// autoscaled, else [`canary_counts`] on the larger of the two counts.
pub fn ratio_counts(weights: &Weights, revisions: &[&Revision], max_surge: u32) -> Weights {
    let weight = |r: &Revision| weights.get(&r.id).copied().unwrap_or(0);
    if let Some(full) = revisions.iter().find(|r| weight(r) >= 100) {
        return Weights::from([(full.id.clone(), full.replicas)]);
    }
    let Some((candidate, rest)) = revisions.split_first() else {
        return Weights::new();
    };
    let Some(stable) = rest.first() else {
        return Weights::from([(candidate.id.clone(), candidate.replicas)]);
    };
    let (c, s) = match candidate.autoscale {
        Some(bounds) => canary_counts_autoscaled(stable.replicas, weight(candidate), bounds),
        None => canary_counts(
            candidate.replicas.max(stable.replicas),
            weight(candidate),
            max_surge,
        ),
    };
    Weights::from([(candidate.id.clone(), c), (stable.id.clone(), s)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_surge_it_is_the_nearest_split_with_a_pod_each_side() {
        assert_eq!(canary_counts(2, 50, 0), (1, 1));
        assert_eq!(canary_counts(2, 20, 0), (1, 1));
        assert_eq!(canary_counts(10, 20, 0), (2, 8));
        assert_eq!(canary_counts(10, 95, 0), (9, 1));
        assert_eq!(canary_counts(4, 30, 0), (1, 3));
        assert_eq!(canary_counts(1, 50, 0), (1, 1));
        assert_eq!(canary_counts(10, 25, 0), (3, 7));
    }

    #[test]
    fn surge_scales_the_total_up_to_approximate_the_weight() {
        // The example: weight 20 with 2 replicas is 4 stable + 1 canary.
        assert_eq!(canary_counts(2, 20, 3), (1, 4));
        assert_eq!(effective_percent(1, 4), 20);
        // Only as far as the surge allows: 1 + 3 (25 %) is the closest with one extra... two.
        assert_eq!(canary_counts(2, 20, 2), (1, 3));
        // An exact split needs no surge: the smallest total wins.
        assert_eq!(canary_counts(2, 50, 3), (1, 1));
        assert_eq!(canary_counts(4, 25, 5), (1, 3));
        // 3 replicas, 10 %: 1 + 9 needs 7 extra; with 2 extra 1 + 4 (20 %).
        assert_eq!(canary_counts(3, 10, 7), (1, 9));
        assert_eq!(canary_counts(3, 10, 2), (1, 4));
        // Heavy canary weights grow the candidate side instead.
        assert_eq!(canary_counts(2, 80, 3), (4, 1));
    }

    #[test]
    fn with_an_autoscaler_the_stable_keeps_its_live_count() {
        let b = Bounds { min: 2, max: 10 };
        assert_eq!(canary_counts_autoscaled(4, 20, b), (1, 4));
        assert_eq!(canary_counts_autoscaled(8, 50, b), (8, 8));
        assert_eq!(canary_counts_autoscaled(6, 10, b), (1, 6));
        // Capped at the autoscaler's max.
        assert_eq!(canary_counts_autoscaled(6, 80, b), (10, 6));
        assert_eq!(b.clamp(0), 2);
        assert_eq!(b.clamp(12), 10);
        assert_eq!(b.clamp(5), 5);
    }
}
