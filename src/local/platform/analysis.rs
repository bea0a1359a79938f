//! Analyses on the local target: router metrics (error rate, latency percentiles) from the
//! router's per-version counters between two snapshots; HTTP checks and Prometheus queries.

use super::LocalPlatform;
use crate::manifest::Metric;
use crate::rollout::{AnalysisPlan, Measurement, Platform, Revision};

impl LocalPlatform {
    /// [`Platform::measure`](crate::rollout::Platform::measure): the measurement since
    /// `baseline` and the snapshot it was taken from.
    pub(super) async fn measure_analysis(
        &self,
        service: &str,
        revision: &Revision,
        analysis: &AnalysisPlan,
        baseline: &serde_json::Value,
    ) -> anyhow::Result<(Measurement, serde_json::Value)> {
        let now = self.snapshot(service, revision).await?;
        let measurement = match analysis.metric {
            Metric::ErrorRate | Metric::LatencyP50 | Metric::LatencyP95 | Metric::LatencyP99 => {
                let before: dronectl_router::VersionStats =
                    serde_json::from_value(baseline.clone()).unwrap_or_default();
                let after: dronectl_router::VersionStats =
                    serde_json::from_value(now.clone()).unwrap_or_default();
                router_measurement(
                    analysis.metric,
                    &dronectl_router::VersionStats::delta(&before, &after),
                )
            }
            Metric::Http => crate::rollout::analysis::http_check(analysis).await,
            Metric::Prometheus => {
                crate::rollout::analysis::prometheus_query(analysis, service, &revision.version)
                    .await
            }
        };
        Ok((measurement, now))
    }
}

/// Error rate or a latency percentile of the router's counters for one interval.
pub fn router_measurement(metric: Metric, delta: &dronectl_router::VersionStats) -> Measurement {
    if delta.requests == 0 {
        return Measurement::NoData;
    }
    let value = match metric {
        Metric::ErrorRate => delta.error_rate(),
        Metric::LatencyP50 => delta.latency.quantile(0.50),
        Metric::LatencyP95 => delta.latency.quantile(0.95),
        Metric::LatencyP99 => delta.latency.quantile(0.99),
        _ => None,
    };
    value.map_or(Measurement::NoData, Measurement::Value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measurements_from_router_counters() {
        let mut stats = dronectl_router::VersionStats::default();
        assert_eq!(
            router_measurement(Metric::ErrorRate, &stats),
            Measurement::NoData
        );
        stats.requests = 200;
        stats.errors_5xx = 10;
        assert_eq!(
            router_measurement(Metric::ErrorRate, &stats),
            Measurement::Value(0.05)
        );
    }
}
