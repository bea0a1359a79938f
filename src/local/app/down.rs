//! `dronectl down`: removes what dronectl created for the app.

use std::path::Path;

use anyhow::Context as _;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use serde::Serialize;

use super::{container_name, read_environment};
use crate::local::{label_filter, labels, Names};
use crate::rollout::FileStore;

/// What `down` removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DownOutcome {
    pub containers: Vec<String>,
    pub networks: Vec<String>,
    pub volumes: Vec<String>,
}

/// Removes everything dronectl created for the app (found by labels); volumes only when
/// asked. The rollout records go too: nothing they describe runs any more.
pub async fn down(app_dir: &Path, env: Option<&str>, volumes: bool) -> anyhow::Result<DownOutcome> {
    let (manifest, environment) = read_environment(app_dir, env)?;
    let env = environment.name;
    let names = Names {
        app: manifest.manifest.app.value.clone(),
    };
    let state_dir = FileStore::default_dir(&names.app, &env)?;
    let docker = crate::docker::connect().await?;
    let filter = label_filter(&[(labels::APP, &names.app), (labels::ENV, &env)]);
    let mut outcome = DownOutcome::default();
    let containers = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filter)
                .build(),
        ))
        .await?;
    // Services first (they may still be serving through the router), then the router and
    // infrastructure.
    let mut ordered: Vec<_> = containers.into_iter().collect();
    ordered.sort_by_key(|c| {
        match c
            .labels
            .as_ref()
            .and_then(|l| l.get(labels::KIND))
            .map(String::as_str)
        {
            Some("service") => 0,
            Some("router") => 1,
            _ => 2,
        }
    });
    for c in ordered {
        let name = container_name(c.names);
        let stop = bollard::query_parameters::StopContainerOptionsBuilder::default()
            .t(10)
            .build();
        let _ = docker.stop_container(&name, Some(stop)).await;
        match docker
            .remove_container(
                &name,
                Some(
                    RemoveContainerOptionsBuilder::default()
                        .force(true)
                        .v(false)
                        .build(),
                ),
            )
            .await
        {
            Ok(()) => outcome.containers.push(name),
            Err(e) if crate::docker::is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let networks = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::default()
                .filters(&filter)
                .build(),
        ))
        .await?;
    for n in networks {
        if let Some(name) = n.name {
            docker
                .remove_network(&name)
                .await
                .with_context(|| format!("removing network {name}"))?;
            outcome.networks.push(name);
        }
    }
    if volumes {
        let list = docker
            .list_volumes(Some(
                ListVolumesOptionsBuilder::default()
                    .filters(&filter)
                    .build(),
            ))
            .await?;
        for v in list.volumes.unwrap_or_default() {
            docker
                .remove_volume(
                    &v.name,
                    None::<bollard::query_parameters::RemoveVolumeOptions>,
                )
                .await
                .with_context(|| format!("removing volume {}", v.name))?;
            outcome.volumes.push(v.name);
        }
    }
    if state_dir.exists() {
        std::fs::remove_dir_all(&state_dir)
            .with_context(|| format!("removing rollout state in {}", state_dir.display()))?;
    }
    Ok(outcome)
}
