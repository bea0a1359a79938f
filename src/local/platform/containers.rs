//! The containers of a revision's replicas: listed and inspected by their labels, probed
//! for readiness, created with their environment, secrets and volume; their last log lines
//! and how long ago they started.

use std::collections::HashMap;

use anyhow::Context as _;
use bollard::models::{ContainerCreateBody, EndpointSettings, HostConfig, NetworkingConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;

use super::secrets::secrets_archive;
use super::{probe, LocalPlatform, Replica, ServiceRuntime};
use crate::local::{label_filter, labels};
use crate::rollout::{Failure, Revision};

impl LocalPlatform {
    pub(super) async fn replicas(
        &self,
        service: &str,
        revision: &str,
    ) -> anyhow::Result<Vec<Replica>> {
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

    pub(super) async fn ready(&self, runtime: &ServiceRuntime, replica: &Replica) -> bool {
        let Some(ip) = &replica.ip else { return false };
        if !replica.running || replica.restarting {
            return false;
        }
        let addr = format!("{ip}:{}", runtime.port);
        probe(&addr, &runtime.readiness, runtime.probe_timeout).await
    }

    /// `ip:port` of the ready replicas of a revision.
    pub(super) async fn ready_endpoints(
        &self,
        service: &str,
        revision: &str,
    ) -> anyhow::Result<Vec<String>> {
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

    pub(super) async fn create_replica(
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
                binds,
                ..self.names.host_config()
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

fn ignore_not_modified(e: bollard::errors::Error) -> Result<(), bollard::errors::Error> {
    match e {
        bollard::errors::Error::DockerResponseServerError {
            status_code: 304, ..
        } => Ok(()),
        e => Err(e),
    }
}

/// Seconds since an RFC 3339 timestamp from the engine (`None` when unparsable).
pub(super) fn seconds_since(timestamp: &str) -> Option<u64> {
    // "2026-11-22T01:02:03.123456789Z", against the same clock as the rest of the rollout.
    let then: jiff::Timestamp = timestamp.parse().ok()?;
    let now = (crate::rollout::now_ms() / 1000) as i64;
    Some(now.saturating_sub(then.as_second()).max(0) as u64)
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
}
