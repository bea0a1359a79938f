//! The router's side of a revision: its versions, routes, hosts, preview and controls;
//! endpoints kept equal to ready replicas; replicas taken out and drained before they stop;
//! a removed revision's traces.

use std::collections::BTreeMap;

use bollard::query_parameters::{RemoveContainerOptionsBuilder, StopContainerOptionsBuilder};

use super::{LocalPlatform, Replica};
use crate::rollout::platform::{MatchValue, Traffic};
use crate::rollout::Revision;

impl LocalPlatform {
    /// [`Platform::set_routing`](crate::rollout::Platform::set_routing): the service's
    /// entry in the router's configuration.
    pub(super) async fn route(
        &self,
        service: &str,
        traffic: &Traffic,
        revisions: &[&Revision],
        _max_surge: u32,
    ) -> anyhow::Result<()> {
        let weights = &traffic.weights;
        let routes = self.runtime(service)?.routes.clone();
        let hosts = self.runtime(service)?.hosts.clone();
        let mut versions = BTreeMap::new();
        for revision in revisions {
            let endpoints = self.ready_endpoints(service, &revision.id).await?;
            let weight = weights.get(&revision.id).copied().unwrap_or(0).min(100) as u8;
            versions.insert(
                revision.id.clone(),
                dronectl_router::VersionConfig { weight, endpoints },
            );
        }
        // A candidate without traffic yet can be tried at `<service>-preview`.
        let preview = revisions
            .first()
            .filter(|r| weights.get(&r.id).copied().unwrap_or(0) == 0)
            .map(|r| r.id.clone());
        let controls = router_controls(traffic);
        self.router
            .update(|config| {
                let entry = config.services.entry(service.to_string()).or_default();
                entry.versions = versions.clone();
                entry.routes = routes.clone();
                entry.hosts = hosts.clone();
                entry.preview = preview.clone();
                (entry.matches, entry.mirror, entry.sticky) = controls.clone();
            })
            .await?;
        Ok(())
    }

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
                    if let Some(version) = config
                        .services
                        .get_mut(service)
                        .and_then(|s| s.versions.get_mut(revision))
                    {
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
                if let Some(version) = config
                    .services
                    .get_mut(service)
                    .and_then(|s| s.versions.get_mut(revision))
                {
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

    /// [`Platform::remove`](crate::rollout::Platform::remove): the replicas retired, the
    /// revision out of the router's configuration.
    pub(super) async fn remove_revision(
        &self,
        service: &str,
        revision: &Revision,
    ) -> anyhow::Result<()> {
        let replicas = self.replicas(service, &revision.id).await?;
        self.retire_replicas(service, &revision.id, &replicas)
            .await?;
        self.router
            .update(|config| {
                if let Some(entry) = config.services.get_mut(service) {
                    entry.versions.remove(&revision.id);
                    if entry.preview.as_deref() == Some(revision.id.as_str()) {
                        entry.preview = None;
                    }
                    entry.matches.retain(|m| m.version != revision.id);
                    if entry
                        .mirror
                        .as_ref()
                        .is_some_and(|m| m.version == revision.id)
                    {
                        entry.mirror = None;
                    }
                }
            })
            .await?;
        self.failures.lock().expect("failures").remove(&revision.id);
        Ok(())
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
