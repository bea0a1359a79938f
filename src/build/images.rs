//! `dronectl images` and `dronectl images prune`: the app's images in the engine, found by
//! their `dev.dronectl.app` label.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use bollard::Docker;

use super::image::{LABEL_APP, LABEL_SERVICE};
use super::BuildError;
use crate::docker::{self, DockerError};
use crate::events::{Event, Reporter};
use crate::manifest::LoadedManifest;

/// One image of the app.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageInfo {
    pub service: String,
    pub id: String,
    /// `repository:tag` references.
    pub tags: Vec<String>,
    pub version: Option<String>,
    pub revision: Option<String>,
    /// The image's creation time (the git commit's time), RFC 3339.
    pub created: Option<String>,
    pub size: u64,
    /// Containers (running or stopped) that use it.
    pub containers: usize,
}

async fn list_in(docker: &Docker, app: &str) -> Result<Vec<ImageInfo>, DockerError> {
    let mut filters = HashMap::new();
    filters.insert("label".to_string(), vec![format!("{LABEL_APP}={app}")]);
    let options = bollard::query_parameters::ListImagesOptionsBuilder::default()
        .filters(&filters)
        .build();
    let images = docker.list_images(Some(options)).await?;
    let used = used_images(docker).await?;
    let mut out: Vec<ImageInfo> = images
        .into_iter()
        .map(|img| ImageInfo {
            service: img.labels.get(LABEL_SERVICE).cloned().unwrap_or_default(),
            containers: used.get(&img.id).copied().unwrap_or(0),
            tags: img
                .repo_tags
                .into_iter()
                .filter(|t| t != "<none>:<none>")
                .collect(),
            version: img.labels.get("org.opencontainers.image.version").cloned(),
            revision: img.labels.get("org.opencontainers.image.revision").cloned(),
            created: img.labels.get("org.opencontainers.image.created").cloned(),
            size: img.size.max(0) as u64,
            id: img.id,
        })
        .collect();
    out.sort_by(|a, b| (&a.service, &b.created, &a.id).cmp(&(&b.service, &a.created, &b.id)));
    Ok(out)
}

/// Image id → number of containers (any state) created from it.
async fn used_images(docker: &Docker) -> Result<HashMap<String, usize>, DockerError> {
    let options = bollard::query_parameters::ListContainersOptionsBuilder::default()
        .all(true)
        .build();
    let mut used = HashMap::new();
    for container in docker.list_containers(Some(options)).await? {
        if let Some(id) = container.image_id {
            *used.entry(id).or_insert(0) += 1;
        }
    }
    Ok(used)
}

fn app_name(app_dir: &std::path::Path) -> Result<String, BuildError> {
    Ok(LoadedManifest::read_valid(app_dir)?.manifest.app.value)
}

/// The app's images, by service, newest first.
pub async fn list(app_dir: &std::path::Path) -> Result<Vec<ImageInfo>, BuildError> {
    let app = app_name(app_dir)?;
    let docker = docker::connect().await?;
    Ok(list_in(&docker, &app).await?)
}

/// `dronectl images prune`.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    pub app_dir: PathBuf,
    /// Also remove each service's newest image.
    pub all: bool,
    pub dry_run: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PruneOutcome {
    pub removed: Vec<ImageInfo>,
    pub kept: usize,
    pub reclaimed_bytes: u64,
}

/// Removes the app's images that no container uses, keeping each service's newest image
/// (the one tagged last) unless `all`.
pub async fn prune(
    options: &PruneOptions,
    reporter: &dyn Reporter,
) -> Result<PruneOutcome, BuildError> {
    let app = app_name(&options.app_dir)?;
    let docker = docker::connect().await?;
    let images = list_in(&docker, &app).await?;
    // Newest per service: last tagged, then created.
    let mut newest: BTreeMap<String, (String, String, String)> = BTreeMap::new();
    for img in &images {
        let inspect = docker
            .inspect_image(&img.id)
            .await
            .map_err(DockerError::from)?;
        let tagged = inspect
            .metadata
            .and_then(|m| m.last_tag_time)
            .map(|t| t.to_string())
            .unwrap_or_default();
        let key = (
            tagged,
            img.created.clone().unwrap_or_default(),
            img.id.clone(),
        );
        let entry = newest.entry(img.service.clone()).or_insert(key.clone());
        if key > *entry {
            *entry = key;
        }
    }
    let keep: HashSet<&str> = if options.all {
        HashSet::new()
    } else {
        newest.values().map(|(_, _, id)| id.as_str()).collect()
    };
    let mut removed = Vec::new();
    let mut kept = 0;
    for img in images {
        if img.containers > 0 || keep.contains(img.id.as_str()) {
            kept += 1;
            continue;
        }
        if !options.dry_run {
            let opts = bollard::query_parameters::RemoveImageOptionsBuilder::default()
                .force(true)
                .build();
            match docker.remove_image(&img.id, Some(opts), None).await {
                Ok(_) => {}
                Err(e) if docker::is_not_found(&e) => {}
                Err(e) => return Err(BuildError::Docker(e.into())),
            }
        }
        reporter.event(Event::ImageRemoved {
            id: img.id.clone(),
            tags: img.tags.clone(),
            size: img.size,
            dry_run: options.dry_run,
        });
        removed.push(img);
    }
    let reclaimed_bytes = removed.iter().map(|i| i.size).sum();
    Ok(PruneOutcome {
        removed,
        kept,
        reclaimed_bytes,
    })
}
