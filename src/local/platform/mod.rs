//! The rollout engine's [`Platform`] on the local Docker engine.
//!
//! A revision's replicas are containers `<app>-<service>-<revision>-<n>` on the app
//! network. dronectl probes their readiness itself (scratch images have no shell for a
//! Docker health check) and keeps the router's endpoint lists equal to the ready replicas
//! of every revision that has traffic. A replica leaves the router before it is stopped,
//! and is stopped only once its in-flight requests are done.
//!
//! This module holds [`LocalPlatform`], how a service runs ([`ServiceRuntime`]) and the
//! [`Platform`] implementation (what the engine calls); what those calls need is in one
//! file per job: `containers.rs` (the Docker side: replica containers listed, probed,
//! created, their logs and start times), `secrets.rs` (secret files) and `routing.rs` (the
//! router's side: configuration, controls, draining, its counters as measurements).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use bollard::Docker;

use super::router::RouterAdmin;
use super::Names;
use crate::http;
use crate::manifest::Metric;
use crate::rollout::platform::Traffic;
use crate::rollout::{
    AnalysisPlan, Failure, Measurement, Platform, Revision, RevisionStatus, Weights,
};

mod containers;
mod routing;
mod secrets;

use containers::seconds_since;
pub(crate) use containers::tail_logs;
pub use routing::{router_controls, router_measurement};

/// How a service runs, from the manifest.
#[derive(Debug, Clone)]
pub struct ServiceRuntime {
    pub port: u16,
    pub readiness: String,
    /// How long one readiness probe may take (`health.timeout`).
    pub probe_timeout: Duration,
    /// Grace after start before a never-ready replica fails its revision
    /// (`health.start_period`, added to [`LocalPlatform::never_ready_after`]).
    pub start_period: Duration,
    pub volume: Option<String>,
    pub routes: Vec<String>,
    /// The `Host` names the public routes answer on (empty: any).
    pub hosts: Vec<String>,
    /// Secrets also given as environment variables (`env: true`).
    pub secret_env: Vec<String>,
}

impl ServiceRuntime {
    /// How a service of the (effective) manifest runs locally.
    pub fn new(s: &crate::manifest::Service) -> ServiceRuntime {
        let timings = s.health.timings();
        ServiceRuntime {
            port: s.port,
            readiness: s.health.readiness.clone(),
            probe_timeout: timings.timeout,
            start_period: timings.start_period,
            volume: s.volume.clone(),
            routes: s
                .routes
                .iter()
                .map(|r| {
                    crate::manifest::normalize_route(&r.value).unwrap_or_else(|_| r.value.clone())
                })
                .collect(),
            hosts: s.hosts.iter().map(|h| h.value.clone()).collect(),
            secret_env: s
                .secrets
                .iter()
                .filter(|d| d.value.env())
                .map(|d| d.value.name().to_string())
                .collect(),
        }
    }
}

/// One readiness probe: `GET path` on `addr` answers 200 within `timeout`.
pub(crate) async fn probe(addr: &str, path: &str, timeout: Duration) -> bool {
    http::get(addr, path, timeout)
        .await
        .is_ok_and(|r| r.status == 200)
}

/// The local Docker engine as a rollout platform.
pub struct LocalPlatform {
    pub docker: Docker,
    pub names: Names,
    pub env: String,
    pub router: RouterAdmin,
    pub services: BTreeMap<String, ServiceRuntime>,
    /// A replica running this long without ever being ready fails its revision.
    pub never_ready_after: Duration,
    /// How long a stopping replica may take to drain before it is killed.
    pub stop_timeout: Duration,
    /// Failures found while scaling (an image that is not there), by revision id.
    failures: Mutex<HashMap<String, Failure>>,
    /// Where the values of the services' secrets are (`None`: services have none).
    pub secrets: Option<crate::secrets::SecretStore>,
}

/// One replica container as seen by the engine.
#[derive(Debug, Clone)]
struct Replica {
    name: String,
    index: u32,
    ip: Option<String>,
    running: bool,
    restarting: bool,
    restart_count: i64,
    exit_code: Option<i64>,
    started_at: Option<String>,
    error: Option<String>,
}

impl LocalPlatform {
    pub fn new(
        docker: Docker,
        names: Names,
        env: &str,
        router: RouterAdmin,
        services: BTreeMap<String, ServiceRuntime>,
    ) -> LocalPlatform {
        LocalPlatform {
            docker,
            names,
            env: env.to_string(),
            router,
            services,
            never_ready_after: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(30),
            failures: Mutex::new(HashMap::new()),
            secrets: None,
        }
    }

    fn runtime(&self, service: &str) -> anyhow::Result<&ServiceRuntime> {
        self.services
            .get(service)
            .with_context(|| format!("unknown service `{service}`"))
    }
}

impl Platform for LocalPlatform {
    async fn scale(&self, service: &str, revision: &Revision, replicas: u32) -> anyhow::Result<()> {
        let existing = self.replicas(service, &revision.id).await?;
        let (keep, extra): (Vec<Replica>, Vec<Replica>) =
            existing.into_iter().partition(|r| r.index < replicas);
        self.retire_replicas(service, &revision.id, &extra).await?;
        for index in 0..replicas {
            if !keep.iter().any(|r| r.index == index) {
                self.create_replica(service, revision, index).await?;
            }
        }
        Ok(())
    }

    async fn status(&self, service: &str, revision: &Revision) -> anyhow::Result<RevisionStatus> {
        if let Some(failure) = self
            .failures
            .lock()
            .expect("failures")
            .get(&revision.id)
            .cloned()
        {
            return Ok(RevisionStatus {
                failure: Some(failure),
                ..Default::default()
            });
        }
        let runtime = self.runtime(service)?;
        let replicas = self.replicas(service, &revision.id).await?;
        let mut status = RevisionStatus {
            desired: replicas.len() as u32,
            current: 0,
            ready: 0,
            failure: None,
        };
        let mut ready_endpoints = Vec::new();
        for replica in &replicas {
            if replica.running {
                status.current += 1;
            }
            let crashed = replica.restarting
                || replica.restart_count > 0
                || (!replica.running
                    && replica
                        .started_at
                        .as_deref()
                        .is_some_and(|s| !s.starts_with("0001")));
            if crashed && status.failure.is_none() {
                let logs = self.tail_logs(&replica.name, 20).await;
                let reason = if replica.restarting || replica.restart_count > 0 {
                    "CrashLoopBackOff"
                } else {
                    "Exited"
                };
                let message = match (&replica.error, replica.exit_code) {
                    (Some(e), _) => format!("{} failed to run: {e}", replica.name),
                    (None, Some(code)) => format!(
                        "{} exited with code {code} (restarted {} times)",
                        replica.name, replica.restart_count
                    ),
                    (None, None) => format!("{} stopped", replica.name),
                };
                status.failure = Some(Failure {
                    reason: reason.into(),
                    message,
                    logs,
                });
                continue;
            }
            if self.ready(runtime, replica).await {
                status.ready += 1;
                ready_endpoints.push(format!(
                    "{}:{}",
                    replica.ip.as_deref().unwrap_or_default(),
                    runtime.port
                ));
            } else if status.failure.is_none()
                && replica.running
                && replica
                    .started_at
                    .as_deref()
                    .and_then(seconds_since)
                    .is_some_and(|s| s > (self.never_ready_after + runtime.start_period).as_secs())
            {
                let logs = self.tail_logs(&replica.name, 20).await;
                status.failure = Some(Failure {
                    reason: "NeverReady".into(),
                    message: format!(
                        "{} has run for over {}s without answering {} with 200",
                        replica.name,
                        (self.never_ready_after + runtime.start_period).as_secs(),
                        runtime.readiness
                    ),
                    logs,
                });
            }
        }
        if status.failure.is_none() {
            self.sync_endpoints(service, &revision.id, &ready_endpoints)
                .await?;
        }
        Ok(status)
    }

    async fn set_traffic(
        &self,
        service: &str,
        weights: &Weights,
        revisions: &[&Revision],
        _max_surge: u32,
    ) -> anyhow::Result<()> {
        // Weights alone: any match rules, mirror or sticky sessions of a rollout end here.
        self.set_routing(service, &Traffic::weights(weights.clone()), revisions, 0)
            .await
    }

    async fn set_routing(
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

    async fn snapshot(
        &self,
        service: &str,
        revision: &Revision,
    ) -> anyhow::Result<serde_json::Value> {
        let stats = self.router.stats().await?;
        Ok(serde_json::to_value(
            stats
                .version(service, &revision.id)
                .cloned()
                .unwrap_or_default(),
        )?)
    }

    async fn measure(
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

    async fn remove(&self, service: &str, revision: &Revision) -> anyhow::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A readiness endpoint that answers 200 after `delay`, on a real socket.
    async fn slow_ready(delay: Duration) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = conn.read(&mut buf).await;
                    tokio::time::sleep(delay).await;
                    let _ = conn
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        )
                        .await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn the_probe_timeout_is_the_service_s_health_timeout() {
        let addr = slow_ready(Duration::from_millis(1200)).await;
        let service = |health: &str| {
            let m = crate::manifest::parse(
                std::path::Path::new("dronectl.yaml"),
                &format!("app: shop\nservices:\n  api: {{ path: api, health: {health} }}\n"),
            )
            .unwrap();
            ServiceRuntime::new(&m.services["api"].value)
        };
        // The default 2 s timeout waits for the slow answer; `timeout: 1s` does not.
        let default = service("{}");
        assert_eq!(default.probe_timeout, Duration::from_secs(2));
        assert!(probe(&addr, &default.readiness, default.probe_timeout).await);
        let short = service("{ timeout: 1s, start_period: 45s }");
        assert_eq!(short.start_period, Duration::from_secs(45));
        let started = std::time::Instant::now();
        assert!(!probe(&addr, &short.readiness, short.probe_timeout).await);
        assert!(
            started.elapsed() < Duration::from_millis(1150),
            "{:?}",
            started.elapsed()
        );
    }
}
