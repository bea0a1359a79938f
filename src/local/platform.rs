//! The rollout engine's [`Platform`] on the local Docker engine.
//!
//! A revision's replicas are containers `<app>-<service>-<revision>-<n>` on the app
//! network. dronectl probes their readiness itself (scratch images have no shell for a
//! Docker health check) and keeps the router's endpoint lists equal to the ready replicas
//! of every revision that has traffic. A replica leaves the router before it is stopped,
//! and is stopped only once its in-flight requests are done.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkingConfig, RestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;

use super::router::RouterAdmin;
use super::{label_filter, labels, Names};
use crate::http;
use crate::manifest::Metric;
use crate::rollout::platform::{MatchValue, Traffic};
use crate::rollout::{
    AnalysisPlan, Failure, Measurement, Platform, Revision, RevisionStatus, Weights,
};

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

    async fn replicas(&self, service: &str, revision: &str) -> anyhow::Result<Vec<Replica>> {
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&label_filter(&[
                (labels::APP, &self.names.app),
                (labels::SERVICE, service),
                (labels::REVISION, revision),
            ]))
            .build();
        let mut out = Vec::new();
        for summary in self.docker.list_containers(Some(options)).await? {
            let Some(id) = summary.id else { continue };
            let index = summary
                .labels
                .as_ref()
                .and_then(|l| l.get(labels::REPLICA))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let inspect = match self.docker.inspect_container(&id, None).await {
                Ok(i) => i,
                Err(e) if crate::docker::is_not_found(&e) => continue,
                Err(e) => return Err(e.into()),
            };
            let state = inspect.state.unwrap_or_default();
            let ip = inspect
                .network_settings
                .and_then(|n| n.networks)
                .and_then(|n| n.get(&self.names.network()).cloned())
                .and_then(|e| e.ip_address)
                .filter(|ip| !ip.is_empty());
            out.push(Replica {
                name: inspect
                    .name
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_string(),
                index,
                ip,
                running: state.running.unwrap_or(false),
                restarting: state.restarting.unwrap_or(false),
                restart_count: inspect.restart_count.unwrap_or(0),
                exit_code: state.exit_code,
                started_at: state.started_at,
                error: state.error.filter(|e| !e.is_empty()),
            });
        }
        out.sort_by_key(|r| r.index);
        Ok(out)
    }

    async fn ready(&self, runtime: &ServiceRuntime, replica: &Replica) -> bool {
        let Some(ip) = &replica.ip else { return false };
        if !replica.running || replica.restarting {
            return false;
        }
        let addr = format!("{ip}:{}", runtime.port);
        probe(&addr, &runtime.readiness, runtime.probe_timeout).await
    }

    /// `ip:port` of the ready replicas of a revision.
    async fn ready_endpoints(&self, service: &str, revision: &str) -> anyhow::Result<Vec<String>> {
        let runtime = self.runtime(service)?;
        let mut endpoints = Vec::new();
        for replica in self.replicas(service, revision).await? {
            if self.ready(runtime, &replica).await {
                endpoints.push(format!(
                    "{}:{}",
                    replica.ip.as_deref().unwrap_or_default(),
                    runtime.port
                ));
            }
        }
        Ok(endpoints)
    }

    /// The last `lines` log lines of a container.
    pub async fn tail_logs(&self, container: &str, lines: usize) -> Vec<String> {
        tail_logs(&self.docker, container, lines).await
    }

    async fn create_replica(
        &self,
        service: &str,
        revision: &Revision,
        index: u32,
    ) -> anyhow::Result<()> {
        let runtime = self.runtime(service)?;
        let name = self.names.replica(service, &revision.id, index);
        let mut env: Vec<String> = revision
            .env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        env.push(format!("PORT={}", runtime.port));
        let secrets = self.secret_files(service, revision).await?;
        for name in &runtime.secret_env {
            if let Some((_, value)) = secrets.iter().find(|(n, _)| n == name) {
                env.push(format!(
                    "{name}={}",
                    String::from_utf8_lossy(value.expose())
                ));
            }
        }
        let mut labels = HashMap::from([
            (labels::APP.to_string(), self.names.app.clone()),
            (labels::ENV.to_string(), self.env.clone()),
            (labels::KIND.to_string(), "service".to_string()),
            (labels::SERVICE.to_string(), service.to_string()),
            (labels::REVISION.to_string(), revision.id.clone()),
            (labels::VERSION.to_string(), revision.version.clone()),
            (labels::REPLICA.to_string(), index.to_string()),
        ]);
        if !revision.secrets.is_empty() {
            labels.insert(
                labels::SECRETS.to_string(),
                crate::secrets::digest(&revision.secrets),
            );
        }
        let binds = runtime
            .volume
            .as_ref()
            .map(|path| vec![format!("{}:{path}", self.names.volume(service))]);
        let body = ContainerCreateBody {
            image: Some(revision.image.clone()),
            env: Some(env),
            labels: Some(labels),
            stop_timeout: Some(self.stop_timeout.as_secs() as i64),
            host_config: Some(HostConfig {
                network_mode: Some(self.names.network()),
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                    maximum_retry_count: None,
                }),
                binds,
                ..Default::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    self.names.network(),
                    EndpointSettings::default(),
                )])),
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        match self.docker.create_container(Some(options), body).await {
            Ok(_) => {}
            Err(e) if crate::docker::is_not_found(&e) => {
                self.failures.lock().expect("failures").insert(
                    revision.id.clone(),
                    Failure {
                        reason: "ImageNotFound".into(),
                        message: format!(
                            "image {} is not in the local engine (run `dronectl build {service}`)",
                            revision.image
                        ),
                        logs: vec![],
                    },
                );
                return Ok(());
            }
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => {}
            Err(e) => {
                return Err(anyhow::Error::from(e).context(format!("creating container {name}")))
            }
        }
        if !secrets.is_empty() {
            // Before start, every time: the files are in the container's own layer, never
            // in its configuration (`docker inspect` shows no value).
            let archive = secrets_archive(&secrets, self.image_user(&revision.image).await)?;
            self.docker
                .upload_to_container(
                    &name,
                    Some(
                        bollard::query_parameters::UploadToContainerOptionsBuilder::default()
                            .path("/")
                            .build(),
                    ),
                    bollard::body_full(bytes::Bytes::from(archive)),
                )
                .await
                .with_context(|| {
                    format!("copying the secrets of {service} into container {name}")
                })?;
        }
        self.docker
            .start_container(&name, None)
            .await
            .or_else(ignore_not_modified)
            .with_context(|| format!("starting container {name}"))?;
        Ok(())
    }

    /// The values of the secrets `revision` runs with, from the store (the current value of
    /// each: an older revision brought back by `undo` gets the value set last).
    async fn secret_files(
        &self,
        service: &str,
        revision: &Revision,
    ) -> anyhow::Result<Vec<(String, crate::secrets::SecretValue)>> {
        if revision.secrets.is_empty() {
            return Ok(Vec::new());
        }
        let store = self
            .secrets
            .as_ref()
            .context("no secret store for the local target")?;
        let mut out = Vec::new();
        let mut missing = Vec::new();
        for name in revision.secrets.keys() {
            match store.get(service, name)? {
                Some(v) => out.push((name.clone(), v)),
                None => missing.push(crate::secrets::Missing {
                    service: service.to_string(),
                    name: name.clone(),
                    env: self.env.clone(),
                    detail: None,
                }),
            }
        }
        if !missing.is_empty() {
            return Err(crate::secrets::MissingSecrets(missing).into());
        }
        Ok(out)
    }

    /// The numeric `uid:gid` an image runs as (`0:0` for root or a user given by name).
    async fn image_user(&self, image: &str) -> (u64, u64, bool) {
        let user = self
            .docker
            .inspect_image(image)
            .await
            .ok()
            .and_then(|i| i.config)
            .and_then(|c| c.user)
            .unwrap_or_default();
        parse_user(&user)
    }

    /// Takes replicas out of the router, waits for their requests, then stops them.
    async fn retire_replicas(
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

    async fn stop_and_remove(&self, name: &str) -> anyhow::Result<()> {
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

    /// Keeps the router's endpoints of a routed revision equal to its ready replicas.
    async fn sync_endpoints(
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
}

/// The last `lines` log lines (stdout and stderr) of a container.
pub(crate) async fn tail_logs(docker: &Docker, container: &str, lines: usize) -> Vec<String> {
    let options = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .tail(&lines.to_string())
        .build();
    let mut stream = docker.logs(container, Some(options));
    let mut out = Vec::new();
    while let Some(Ok(chunk)) = stream.next().await {
        out.extend(
            String::from_utf8_lossy(&chunk.into_bytes())
                .lines()
                .map(str::to_string),
        );
    }
    let keep = out.len().saturating_sub(lines);
    out.split_off(keep)
}

/// `uid[:gid]` of an image's `USER`: numeric ids, and whether they were numeric (a user
/// named in the image cannot be resolved without its `/etc/passwd`).
fn parse_user(user: &str) -> (u64, u64, bool) {
    if user.is_empty() {
        return (0, 0, true);
    }
    let (uid, gid) = user.split_once(':').unwrap_or((user, user));
    match (uid.parse(), gid.parse()) {
        (Ok(u), Ok(g)) => (u, g, true),
        (Ok(u), Err(_)) => (u, u, true),
        _ => (0, 0, false),
    }
}

/// A tar archive with one file per secret at `/run/secrets/<NAME>`, owned by the image's
/// user and readable by it only (mode 0400; 0444 when the user is named, not numbered).
fn secrets_archive(
    secrets: &[(String, crate::secrets::SecretValue)],
    (uid, gid, numeric): (u64, u64, bool),
) -> anyhow::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    let header = |kind: tar::EntryType, mode: u32, size: u64, owner: (u64, u64)| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(owner.0);
        h.set_gid(owner.1);
        h.set_size(size);
        h
    };
    let dir = crate::secrets::MOUNT_DIR.trim_start_matches('/');
    let mut run = header(tar::EntryType::Directory, 0o755, 0, (0, 0));
    tar.append_data(&mut run, "run", std::io::empty())?;
    let mut h = header(tar::EntryType::Directory, 0o755, 0, (0, 0));
    tar.append_data(&mut h, dir, std::io::empty())?;
    for (name, value) in secrets {
        let bytes = value.expose();
        let mode = if numeric { 0o400 } else { 0o444 };
        let mut h = header(
            tar::EntryType::Regular,
            mode,
            bytes.len() as u64,
            (uid, gid),
        );
        tar.append_data(&mut h, format!("{dir}/{name}"), bytes)?;
    }
    Ok(tar.into_inner()?)
}

fn ignore_not_modified(e: bollard::errors::Error) -> Result<(), bollard::errors::Error> {
    match e {
        bollard::errors::Error::DockerResponseServerError {
            status_code: 304, ..
        } => Ok(()),
        e => Err(e),
    }
}

/// Seconds since an RFC 3339 timestamp from the engine (`None` when unparsable).
fn seconds_since(timestamp: &str) -> Option<u64> {
    // "2026-11-22T01:02:03.123456789Z": compare via the engine's own clock semantics (UTC).
    let (date, time) = timestamp.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let time = time.trim_end_matches('Z');
    let mut t = time.split(':');
    let (h, min) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let s: f64 = t.next()?.split(['+', '-']).next()?.parse().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    let epoch = days * 86400 + h * 3600 + min * 60 + s as i64;
    let now = (crate::rollout::now_ms() / 1000) as i64;
    Some(now.saturating_sub(epoch).max(0) as u64)
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
                    .is_some_and(|s| {
                        s > (self.never_ready_after + runtime.start_period).as_secs()
                    })
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
    fn timestamps() {
        let now = (crate::rollout::now_ms() / 1000) as i64;
        let day = seconds_since("1970-01-02T00:00:00.25Z").unwrap() as i64;
        assert!((now - 86_400 - day).abs() <= 1, "{day}");
        assert!(seconds_since("garbage").is_none());
    }

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
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
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
        assert!(started.elapsed() < Duration::from_millis(1150), "{:?}", started.elapsed());
    }
}
