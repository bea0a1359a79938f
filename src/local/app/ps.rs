//! `dronectl ps`: what runs, by container, with traffic weights and replica decisions.

use std::path::Path;

use bollard::query_parameters::ListContainersOptionsBuilder;
use serde::Serialize;

use super::{container_name, read_environment};
use crate::local::{label_filter, labels, router, Names};
use crate::rollout::state::read_router_token;
use crate::rollout::FileStore;

/// One row of `dronectl ps`.
#[derive(Debug, Clone, Serialize)]
pub struct PsRow {
    pub container: String,
    pub kind: String,
    pub name: String,
    pub version: String,
    pub revision: String,
    pub state: String,
    /// Traffic share of the revision (services), in percent.
    pub weight: Option<u32>,
    /// A retired revision (kept warm for an instant undo, or an aborted candidate): when
    /// it is removed, in milliseconds since the Unix epoch.
    pub retired_until_ms: Option<u64>,
}

/// A service whose replica count is not simply the manifest's `replicas`, for `dronectl ps`.
#[derive(Debug, Clone, Serialize)]
pub struct PsScaling {
    pub service: String,
    /// The count `dronectl scale` set (and the manifest's `replicas` it overrides).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scaled: Option<crate::rollout::state::Scaled>,
    /// The manifest's `autoscale` bounds: the local target has no autoscaler and runs `min`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<crate::rollout::replicas::Bounds>,
}

/// What `dronectl ps` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Ps {
    /// The router's public URL, when it runs.
    pub entry_url: Option<String>,
    pub containers: Vec<PsRow>,
    /// Services scaled by `dronectl scale` or autoscaled in the manifest.
    pub scaling: Vec<PsScaling>,
}

/// What runs, by container; the entry URL when the router runs; and how replica counts
/// were decided where it is not the manifest's `replicas`.
pub async fn ps(app_dir: &Path, env: Option<&str>) -> anyhow::Result<Ps> {
    let (manifest, environment) = read_environment(app_dir, env)?;
    let env = environment.name;
    let names = Names {
        app: manifest.manifest.app.value.clone(),
    };
    let docker = crate::docker::connect().await?;
    let filter = label_filter(&[(labels::APP, &names.app), (labels::ENV, &env)]);
    let ports = router::find(&docker, &names).await?;
    let state_dir = FileStore::default_dir(&names.app, &env)?;
    let token = read_router_token(&state_dir)?;
    let config = match (&ports, token) {
        (Some(p), Some(token)) => p.admin(token).config().await.ok(),
        _ => None,
    };
    // Retired revisions and when they go, and `dronectl scale` counts, from the rollout
    // records (nothing is created).
    let mut retired = std::collections::BTreeMap::new();
    let mut scaled = std::collections::BTreeMap::new();
    if state_dir.exists() {
        use crate::rollout::StateStore as _;
        let store = FileStore::new(&state_dir)?;
        for service in manifest.manifest.services.keys() {
            let record = store.load_record(service).await?;
            if let Some(s) = record.scaled {
                scaled.insert(service.clone(), s);
            }
            for r in record.retired {
                retired.insert((service.clone(), r.revision.id), r.remove_after_ms);
            }
        }
    }
    let scaling = manifest
        .manifest
        .services
        .iter()
        .map(|(name, s)| PsScaling {
            service: name.clone(),
            scaled: scaled.get(name).copied(),
            autoscale: crate::rollout::replicas::Bounds::of(s.value.autoscale.as_ref()),
        })
        .filter(|s| s.scaled.is_some() || s.autoscale.is_some())
        .collect();
    let mut rows = Vec::new();
    for c in docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filter)
                .build(),
        ))
        .await?
    {
        let l = c.labels.unwrap_or_default();
        let get = |k: &str| l.get(k).cloned().unwrap_or_default();
        let (service, revision) = (get(labels::SERVICE), get(labels::REVISION));
        let weight = config.as_ref().and_then(|cfg| {
            cfg.services
                .get(&service)?
                .versions
                .get(&revision)
                .map(|v| v.weight as u32)
        });
        let retired_until_ms = retired.get(&(service.clone(), revision.clone())).copied();
        rows.push(PsRow {
            retired_until_ms,
            container: container_name(c.names),
            kind: get(labels::KIND),
            name: if service.is_empty() {
                "router".into()
            } else {
                service
            },
            version: get(labels::VERSION),
            revision,
            state: c.status.unwrap_or_default(),
            weight,
        });
    }
    rows.sort_by(|a, b| (&a.kind, &a.name, &a.container).cmp(&(&b.kind, &b.name, &b.container)));
    Ok(Ps {
        entry_url: ports.map(|p| format!("http://127.0.0.1:{}", p.entry)),
        containers: rows,
        scaling,
    })
}
