//! The long-running containers `up` keeps as declared: networks, volumes, infrastructure,
//! and the create-or-replace logic they share with the router container.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkConnectRequest, NetworkCreateRequest,
    NetworkingConfig, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use bollard::Docker;
use dronectl_router::BindNetwork;

use crate::events::{Event, Reporter};
use crate::local::{labels, Names};
use crate::manifest::Manifest;

pub(super) fn base_labels(names: &Names, env: &str, kind: &str) -> HashMap<String, String> {
    HashMap::from([
        (labels::APP.to_string(), names.app.clone()),
        (labels::ENV.to_string(), env.to_string()),
        (labels::KIND.to_string(), kind.to_string()),
    ])
}

pub(super) fn config_hash(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    h.finalize()
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub(super) async fn ensure_network(
    docker: &Docker,
    name: &str,
    names: &Names,
    env: &str,
) -> anyhow::Result<bool> {
    if docker.inspect_network(name, None).await.is_ok() {
        return Ok(false);
    }
    docker
        .create_network(NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("bridge".into()),
            labels: Some(base_labels(names, env, "network")),
            ..Default::default()
        })
        .await
        .with_context(|| format!("creating network {name}"))?;
    Ok(true)
}

/// A network's IPv4 gateway and prefix length, as the router's `--bind-network` takes them.
pub(super) async fn bind_network(docker: &Docker, name: &str) -> anyhow::Result<BindNetwork> {
    let inspect = docker
        .inspect_network(name, None)
        .await
        .with_context(|| format!("inspecting network {name}"))?;
    inspect
        .ipam
        .and_then(|i| i.config)
        .unwrap_or_default()
        .iter()
        .find_map(|c| {
            let gateway: std::net::Ipv4Addr = c.gateway.as_deref()?.parse().ok()?;
            let prefix = c.subnet.as_deref()?.split_once('/')?.1;
            format!("{gateway}/{prefix}").parse().ok()
        })
        .with_context(|| format!("network {name} has no IPv4 subnet with a gateway"))
}

async fn ensure_volume(
    docker: &Docker,
    names: &Names,
    env: &str,
    owner: &str,
) -> anyhow::Result<()> {
    let mut l = base_labels(names, env, "volume");
    l.insert(labels::SERVICE.into(), owner.into());
    docker
        .create_volume(VolumeCreateRequest {
            name: Some(names.volume(owner)),
            labels: Some(l),
            ..Default::default()
        })
        .await?;
    Ok(())
}

/// What is done to a newly created container before it first starts.
#[derive(Default)]
pub(super) struct BeforeStart {
    /// Further networks to join (the create call takes one).
    pub(super) networks: Vec<String>,
    /// A tar archive extracted at `/` (files that must not be in the container's settings).
    pub(super) archive: Option<Vec<u8>>,
    /// Replace the container even when its settings did not change.
    pub(super) replace: bool,
}

/// Creates (or replaces, when its settings changed) a long-running container.
pub(super) async fn ensure_container(
    docker: &Docker,
    name: &str,
    hash: &str,
    mut body: ContainerCreateBody,
    before_start: BeforeStart,
) -> anyhow::Result<bool> {
    if let Ok(existing) = docker.inspect_container(name, None).await {
        let same = !before_start.replace
            && existing
                .config
                .and_then(|c| c.labels)
                .and_then(|l| l.get(labels::CONFIG).cloned())
                .as_deref()
                == Some(hash);
        let running = existing.state.and_then(|s| s.running).unwrap_or(false);
        if same && running {
            return Ok(false);
        }
        if same {
            docker.start_container(name, None).await?;
            return Ok(true);
        }
        docker
            .remove_container(
                name,
                Some(RemoveContainerOptionsBuilder::default().force(true).build()),
            )
            .await?;
    }
    body.labels
        .get_or_insert_with(HashMap::new)
        .insert(labels::CONFIG.into(), hash.into());
    docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(name).build()),
            body,
        )
        .await
        .with_context(|| format!("creating container {name}"))?;
    let prepared = prepare(docker, name, before_start).await;
    if let Err(e) = prepared {
        let _ = docker
            .remove_container(
                name,
                Some(RemoveContainerOptionsBuilder::default().force(true).build()),
            )
            .await;
        return Err(e);
    }
    docker
        .start_container(name, None)
        .await
        .with_context(|| format!("starting container {name}"))?;
    Ok(true)
}

async fn prepare(docker: &Docker, name: &str, before_start: BeforeStart) -> anyhow::Result<()> {
    for network in &before_start.networks {
        docker
            .connect_network(
                network,
                NetworkConnectRequest {
                    container: name.to_string(),
                    endpoint_config: Some(EndpointSettings::default()),
                },
            )
            .await
            .with_context(|| format!("connecting container {name} to network {network}"))?;
    }
    if let Some(archive) = before_start.archive {
        docker
            .upload_to_container(
                name,
                Some(UploadToContainerOptionsBuilder::default().path("/").build()),
                bollard::body_full(bytes::Bytes::from(archive)),
            )
            .await
            .with_context(|| format!("copying files into container {name}"))?;
    }
    Ok(())
}

pub(super) async fn ensure_infrastructure(
    docker: &Docker,
    names: &Names,
    env: &str,
    m: &Manifest,
    name: &str,
    reporter: &dyn Reporter,
) -> anyhow::Result<bool> {
    let infra = &m.infrastructure[name].value;
    let container = names.infrastructure(name);
    let env_vars: Vec<String> = infra
        .env
        .iter()
        .map(|(k, v)| format!("{k}={}", v.0))
        .collect();
    let binds = infra
        .volume
        .as_ref()
        .map(|path| vec![format!("{}:{path}", names.volume(name))]);
    if infra.volume.is_some() {
        ensure_volume(docker, names, env, name).await?;
    }
    let hash = config_hash(&[
        &infra.image,
        &infra.command.join(" "),
        &env_vars.join(" "),
        infra.volume.as_deref().unwrap_or(""),
        &infra.port.to_string(),
    ]);
    let mut l = base_labels(names, env, "infrastructure");
    l.insert(labels::SERVICE.into(), name.into());
    let body = ContainerCreateBody {
        image: Some(infra.image.clone()),
        cmd: (!infra.command.is_empty()).then(|| infra.command.clone()),
        env: Some(env_vars),
        labels: Some(l),
        host_config: Some(HostConfig {
            binds,
            ..names.host_config()
        }),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                names.network(),
                EndpointSettings {
                    aliases: Some(vec![name.to_string()]),
                    ..Default::default()
                },
            )])),
        }),
        ..Default::default()
    };
    let changed = ensure_container(docker, &container, &hash, body, BeforeStart::default()).await?;
    if changed {
        reporter.event(Event::Note {
            message: format!("started infrastructure `{name}` ({})", infra.image),
            verbose: false,
        });
    }
    // Ready when its port accepts connections.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let ip = container_ip(docker, &container, &names.network()).await;
        if let Some(ip) = ip {
            if tokio::net::TcpStream::connect((ip.as_str(), infra.port))
                .await
                .is_ok()
            {
                return Ok(changed);
            }
        }
        if tokio::time::Instant::now() > deadline {
            let logs = crate::local::platform::tail_logs(docker, &container, 20).await;
            bail!("infrastructure `{name}` did not accept connections on port {} within 60s; last log lines:\n  {}", infra.port, logs.join("\n  "));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn container_ip(docker: &Docker, container: &str, network: &str) -> Option<String> {
    docker
        .inspect_container(container, None)
        .await
        .ok()?
        .network_settings?
        .networks?
        .get(network)?
        .ip_address
        .clone()
        .filter(|ip| !ip.is_empty())
}
