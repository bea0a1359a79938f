//! The router's side of a revision: endpoints kept equal to ready replicas, replicas taken
//! out and drained before they stop, a rollout's controls in the router's form, and the
//! router's counters as measurements.

use bollard::query_parameters::{RemoveContainerOptionsBuilder, StopContainerOptionsBuilder};

use super::{LocalPlatform, Replica};
use crate::manifest::Metric;
use crate::rollout::platform::{MatchValue, Traffic};
use crate::rollout::Measurement;

/// The router's entry of `revision` of `service`, when the router routes to it.
fn routed_version<'c>(
    config: &'c mut dronectl_router::RouterConfig,
    service: &str,
    revision: &str,
) -> Option<&'c mut dronectl_router::VersionConfig> {
    config.services.get_mut(service)?.versions.get_mut(revision)
}

impl LocalPlatform {
    /// Keeps the router's endpoints of a routed revision equal to its ready replicas.
    pub(super) async fn sync_endpoints(
        &self,
        service: &str,
        revision: &str,
        ready: &[String],
    ) -> anyhow::Result<()> {
        let config = self.router.config().await?;
        let routed = config
            .services
            .get(service)
            .and_then(|s| s.versions.get(revision));
        let Some(current) = routed else { return Ok(()) };
        let mut want = ready.to_vec();
        want.sort();
        let mut have = current.endpoints.clone();
        have.sort();
        if want != have {
            self.router
                .update(|config| {
                    if let Some(version) = routed_version(config, service, revision) {
                        version.endpoints = want.clone();
                    }
                })
                .await?;
        }
        Ok(())
    }

    /// Takes replicas out of the router, waits for their requests, then stops them.
    pub(super) async fn retire_replicas(
        &self,
        service: &str,
        revision: &str,
        replicas: &[Replica],
    ) -> anyhow::Result<()> {
        if replicas.is_empty() {
            return Ok(());
        }
        let port = self.runtime(service)?.port;
        let endpoints: Vec<String> = replicas
            .iter()
            .filter_map(|r| r.ip.as_ref().map(|ip| format!("{ip}:{port}")))
            .collect();
        self.router
            .update(|config| {
                if let Some(version) = routed_version(config, service, revision) {
                    version.endpoints.retain(|e| !endpoints.contains(e));
                }
            })
            .await?;
        self.router.drain(&endpoints, self.stop_timeout).await?;
        for replica in replicas {
            self.stop_and_remove(&replica.name).await?;
        }
        Ok(())
    }

    pub(super) async fn stop_and_remove(&self, name: &str) -> anyhow::Result<()> {
        let stop = StopContainerOptionsBuilder::default()
            .t(self.stop_timeout.as_secs() as i32)
            .build();
        match self.docker.stop_container(name, Some(stop)).await {
            Ok(()) => {}
            Err(e) if crate::docker::is_not_found(&e) => return Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => {}
            Err(e) => return Err(e.into()),
        }
        let remove = RemoveContainerOptionsBuilder::default().force(true).build();
        match self.docker.remove_container(name, Some(remove)).await {
            Ok(()) => Ok(()),
            Err(e) if crate::docker::is_not_found(&e) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()), // removal already in progress
            Err(e) => Err(e.into()),
        }
    }
}

/// The router's form of a rollout's traffic controls: (match rules, mirror, sticky).
pub fn router_controls(
    traffic: &Traffic,
) -> (
    Vec<dronectl_router::MatchRule>,
    Option<dronectl_router::Mirror>,
    bool,
) {
    let conditions = |list: &[(String, MatchValue)]| {
        list.iter()
            .map(|(name, v)| {
                let (exact, regex) = match v {
                    MatchValue::Exact(e) => (Some(e.clone()), None),
                    MatchValue::Regex(r) => (None, Some(r.clone())),
                };
                dronectl_router::ValueMatch {
                    name: name.clone(),
                    exact,
                    regex,
                }
            })
            .collect()
    };
    let matches = traffic
        .matches
        .iter()
        .map(|m| dronectl_router::MatchRule {
            version: traffic.candidate.clone(),
            headers: conditions(&m.headers),
            cookies: conditions(&m.cookies),
        })
        .collect();
    let mirror = (traffic.mirror > 0).then(|| dronectl_router::Mirror {
        version: traffic.candidate.clone(),
        percent: traffic.mirror.min(100) as u8,
    });
    (matches, mirror, traffic.sticky)
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
