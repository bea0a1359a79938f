//! Per-service, per-version counters as served by `GET /stats`, and the pure helpers
//! dronectl's analysis uses: take two snapshots, [`Stats::delta`] them, then read the error
//! rate and latency percentiles of the interval.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Upper bounds (seconds) of the latency histogram buckets; a final `+Inf` bucket follows.
/// Roughly logarithmic (1-2-3-5 steps) from 0.5 ms to 30 s so p50/p95/p99 interpolate within
/// a factor of ~1.5.
pub const LATENCY_BUCKETS: [f64; 27] = [
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15,
    0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 30.0,
];

/// A snapshot of the router's cumulative counters (`GET /stats`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Generation of the routing table applied when the snapshot was taken.
    #[serde(default)]
    pub generation: u64,
    /// Requests that matched no host and no public route (404).
    #[serde(default)]
    pub no_route: u64,
    #[serde(default)]
    pub services: BTreeMap<String, ServiceStats>,
}

/// Counters of one service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceStats {
    /// Requests answered 503 because no version of the service had weight and endpoints
    /// (not attributed to any version).
    #[serde(default)]
    pub unroutable: u64,
    #[serde(default)]
    pub versions: BTreeMap<String, VersionStats>,
}

/// Counters of one version of a service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VersionStats {
    /// Requests answered (any status), including router-made 502/504 for this version.
    pub requests: u64,
    /// Of those, responses with status >= 500 (upstream's own or the router's 502/504).
    pub errors_5xx: u64,
    /// Failed upstream attempts (connect errors, resets, timeouts), including attempts that
    /// were retried successfully on another endpoint.
    pub upstream_errors: u64,
    /// Time from receiving the request head to receiving the upstream response head.
    pub latency: LatencyHistogram,
    /// Of `requests`, mirrored copies (shadow traffic: answered to nobody, but counted in
    /// `requests`, `errors_5xx` and `latency` so an analysis measures them).
    #[serde(default)]
    pub mirrored: u64,
    /// Copies that were not sent (body above the mirror bound, too many in flight).
    #[serde(default)]
    pub mirror_skipped: u64,
}

/// A latency histogram: `counts[i]` requests took at most `bounds[i]` seconds (and more than
/// `bounds[i-1]`); the last count (`counts.len() == bounds.len() + 1`) is the `+Inf` bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyHistogram {
    pub bounds: Vec<f64>,
    pub counts: Vec<u64>,
    /// Sum of all observations, seconds.
    pub sum: f64,
    /// Number of observations (= sum of `counts`).
    pub count: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new(LATENCY_BUCKETS.to_vec())
    }
}

impl LatencyHistogram {
    /// An empty histogram with the given finite upper bounds (ascending).
    pub fn new(bounds: Vec<f64>) -> Self {
        let n = bounds.len() + 1;
        LatencyHistogram {
            bounds,
            counts: vec![0; n],
            sum: 0.0,
            count: 0,
        }
    }

    /// Records one observation (seconds).
    pub fn observe(&mut self, secs: f64) {
        let i = bucket_index(&self.bounds, secs);
        self.counts[i] += 1;
        self.sum += secs;
        self.count += 1;
    }

    /// Mean observation in seconds, `None` without observations.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }

    /// Estimates the `q`-quantile (0.0..=1.0) in seconds, as Prometheus' `histogram_quantile`
    /// does: linear interpolation inside the bucket holding the rank, the first bucket starting
    /// at 0. If the rank falls in the `+Inf` bucket, the largest finite bound is returned.
    /// `None` when the histogram is empty or `q` is outside 0..=1 / NaN.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if !(0.0..=1.0).contains(&q) {
            return None;
        }
        let total: u64 = self.counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = q * total as f64;
        let mut cum: u64 = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            let before = cum;
            cum += c;
            if c > 0 && (cum as f64) >= rank {
                if i >= self.bounds.len() {
                    return self.bounds.last().copied().or(Some(0.0));
                }
                let upper = self.bounds[i];
                let lower = if i == 0 { 0.0 } else { self.bounds[i - 1] };
                let frac = ((rank - before as f64) / c as f64).clamp(0.0, 1.0);
                return Some(lower + (upper - lower) * frac);
            }
        }
        self.bounds.last().copied()
    }

    /// `after - before`, bucket by bucket. If the bounds differ or any counter went down
    /// (the router restarted in between), `after` is taken as the whole interval.
    pub fn delta(before: &LatencyHistogram, after: &LatencyHistogram) -> LatencyHistogram {
        let reset = before.bounds != after.bounds
            || before.counts.len() != after.counts.len()
            || after.count < before.count
            || before.counts.iter().zip(&after.counts).any(|(b, a)| a < b);
        if reset {
            return after.clone();
        }
        LatencyHistogram {
            bounds: after.bounds.clone(),
            counts: after
                .counts
                .iter()
                .zip(&before.counts)
                .map(|(a, b)| a - b)
                .collect(),
            sum: (after.sum - before.sum).max(0.0),
            count: after.count - before.count,
        }
    }
}

pub(crate) fn bucket_index(bounds: &[f64], secs: f64) -> usize {
    bounds.partition_point(|b| *b < secs)
}

impl VersionStats {
    /// Share of requests answered with a 5xx; `None` without requests (inconclusive).
    pub fn error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors_5xx as f64 / self.requests as f64)
    }

    /// `after - before`; a counter that went down (router restart) means `after` is taken
    /// as the whole interval.
    pub fn delta(before: &VersionStats, after: &VersionStats) -> VersionStats {
        if after.requests < before.requests
            || after.errors_5xx < before.errors_5xx
            || after.upstream_errors < before.upstream_errors
        {
            return after.clone();
        }
        VersionStats {
            requests: after.requests - before.requests,
            errors_5xx: after.errors_5xx - before.errors_5xx,
            upstream_errors: after.upstream_errors - before.upstream_errors,
            latency: LatencyHistogram::delta(&before.latency, &after.latency),
            mirrored: after.mirrored.saturating_sub(before.mirrored),
            mirror_skipped: after.mirror_skipped.saturating_sub(before.mirror_skipped),
        }
    }
}

impl Stats {
    /// What happened between two snapshots: every service/version present in `after`, minus
    /// its counters in `before` (absent in `before` = zero). Counter resets are handled as
    /// described on [`VersionStats::delta`]. `generation` is `after`'s.
    pub fn delta(before: &Stats, after: &Stats) -> Stats {
        let empty_v = VersionStats::default();
        let services = after
            .services
            .iter()
            .map(|(name, a)| {
                let b = before.services.get(name);
                let versions = a
                    .versions
                    .iter()
                    .map(|(v, av)| {
                        let bv = b.and_then(|b| b.versions.get(v)).unwrap_or(&empty_v);
                        (v.clone(), VersionStats::delta(bv, av))
                    })
                    .collect();
                let bu = b.map_or(0, |b| b.unroutable);
                let unroutable = if a.unroutable >= bu {
                    a.unroutable - bu
                } else {
                    a.unroutable
                };
                (
                    name.clone(),
                    ServiceStats {
                        unroutable,
                        versions,
                    },
                )
            })
            .collect();
        Stats {
            generation: after.generation,
            no_route: if after.no_route >= before.no_route {
                after.no_route - before.no_route
            } else {
                after.no_route
            },
            services,
        }
    }

    /// The counters of one version, if the router has seen it.
    pub fn version(&self, service: &str, version: &str) -> Option<&VersionStats> {
        self.services.get(service)?.versions.get(version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(obs: &[f64]) -> LatencyHistogram {
        let mut h = LatencyHistogram::default();
        for o in obs {
            h.observe(*o);
        }
        h
    }

    #[test]
    fn buckets_are_ascending() {
        assert!(LATENCY_BUCKETS.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(bucket_index(&LATENCY_BUCKETS, 0.0), 0);
        assert_eq!(bucket_index(&LATENCY_BUCKETS, 0.0005), 0);
        assert_eq!(bucket_index(&LATENCY_BUCKETS, 0.0006), 1);
        assert_eq!(bucket_index(&LATENCY_BUCKETS, 99.0), LATENCY_BUCKETS.len());
    }

    #[test]
    fn quantile_interpolates_like_prometheus() {
        let h = LatencyHistogram {
            bounds: vec![0.1, 0.2, 0.4],
            counts: vec![50, 40, 10, 0],
            sum: 0.0,
            count: 100,
        };
        // rank 50 -> end of first bucket.
        assert!((h.quantile(0.5).unwrap() - 0.1).abs() < 1e-9);
        // rank 70 -> halfway through (0.1, 0.2].
        assert!((h.quantile(0.7).unwrap() - 0.15).abs() < 1e-9);
        // rank 95 -> halfway through (0.2, 0.4].
        assert!((h.quantile(0.95).unwrap() - 0.3).abs() < 1e-9);
        assert!((h.quantile(0.0).unwrap() - 0.0).abs() < 1e-9);
        assert_eq!(h.quantile(1.5), None);
        assert_eq!(LatencyHistogram::default().quantile(0.5), None);
        // Rank in +Inf bucket -> largest finite bound.
        let inf = LatencyHistogram {
            bounds: vec![0.1],
            counts: vec![1, 9],
            sum: 0.0,
            count: 10,
        };
        assert_eq!(inf.quantile(0.99), Some(0.1));
    }

    #[test]
    fn quantile_of_observations_is_close() {
        // 1000 observations uniform over 1..=100 ms.
        let obs: Vec<f64> = (0..1000).map(|i| (1 + i % 100) as f64 / 1000.0).collect();
        let h = hist(&obs);
        let p50 = h.quantile(0.5).unwrap();
        let p99 = h.quantile(0.99).unwrap();
        assert!((0.03..=0.075).contains(&p50), "{p50}");
        assert!((0.075..=0.1).contains(&p99), "{p99}");
        assert!((h.mean().unwrap() - 0.0505).abs() < 1e-6);
    }

    #[test]
    fn delta_subtracts_and_handles_resets() {
        let mut before = Stats::default();
        let mut after = Stats::default();
        let v_before = VersionStats {
            requests: 100,
            errors_5xx: 1,
            upstream_errors: 0,
            latency: hist(&[0.001; 100]),
            ..Default::default()
        };
        let mut lat = hist(&[0.001; 100]);
        for _ in 0..50 {
            lat.observe(0.2);
        }
        let v_after = VersionStats {
            requests: 150,
            errors_5xx: 6,
            upstream_errors: 2,
            latency: lat,
            ..Default::default()
        };
        before
            .services
            .entry("orders".into())
            .or_default()
            .versions
            .insert("v1".into(), v_before.clone());
        let svc = after.services.entry("orders".into()).or_default();
        svc.versions.insert("v1".into(), v_after.clone());
        svc.versions.insert("v2".into(), v_before.clone());
        svc.unroutable = 3;

        let d = Stats::delta(&before, &after);
        let v1 = d.version("orders", "v1").unwrap();
        assert_eq!(v1.requests, 50);
        assert_eq!(v1.errors_5xx, 5);
        assert_eq!(v1.upstream_errors, 2);
        assert_eq!(v1.error_rate(), Some(0.1));
        assert_eq!(v1.latency.count, 50);
        assert!((v1.latency.sum - 10.0).abs() < 1e-9);
        let p50 = v1.latency.quantile(0.5).unwrap();
        assert!((0.15..=0.2).contains(&p50), "{p50}");
        // New in `after`: whole counters.
        assert_eq!(d.version("orders", "v2").unwrap(), &v_before);
        assert_eq!(d.services["orders"].unroutable, 3);
        // Reset (after < before): after is the interval.
        let r = VersionStats::delta(&v_after, &v_before);
        assert_eq!(r, v_before);
        // Zero traffic: inconclusive.
        let z = VersionStats::delta(&v_before, &v_before);
        assert_eq!(z.error_rate(), None);
        assert_eq!(z.latency.quantile(0.99), None);
    }

    #[test]
    fn stats_json_round_trips() {
        let mut s = Stats::default();
        s.services
            .entry("a".into())
            .or_default()
            .versions
            .insert("v1".into(), VersionStats::default());
        let j = serde_json::to_string(&s).unwrap();
        let back: Stats = serde_json::from_str(&j).unwrap();
        assert_eq!(back, s);
    }
}
