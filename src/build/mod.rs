//! `dronectl build`: compile the selected services (one cargo invocation, static binaries),
//! turn each into a minimal image, tag them all once every image exists, and optionally
//! push them and write an artifacts file.
//!
//! Incremental: each image carries the hash of its service's inputs (see [`inputs`]) in
//! the `dev.dronectl.inputs-hash` label. A service whose hash matches an image in the
//! engine is up to date: it is re-tagged if needed, never compiled or rebuilt. When every
//! selected service is up to date cargo is not run at all.

pub mod artifacts;
pub mod auth;
mod cargo;
mod error;
pub mod git;
pub mod image;
pub mod images;
pub mod inputs;
pub mod pack;
mod select;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use bollard::Docker;

use crate::docker::{self, DockerError};
use crate::events::{BuildStage, Event, Reporter, StepStatus};
use crate::manifest::{Environment, LoadedManifest, Manifest};
pub use artifacts::{Artifact, ArtifactsError};
pub use cargo::{Profile, STATIC_RUSTFLAGS, TARGET};
pub use error::BuildError;
use git::GitInfo;
use image::{ImageConfig, Layer, DEFAULT_USER, LABEL_APP, LABEL_INPUTS, LABEL_SERVICE};
use inputs::ServiceInputs;
use select::{canonical, changed_among};
pub use select::{changed_services, check_tag, select_services};

/// What to build.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// The app directory (holding dronectl.yaml).
    pub app_dir: PathBuf,
    /// Services to build; empty means all.
    pub services: Vec<String>,
    /// Only the selected services whose inputs changed since this git revision.
    pub changed_since: Option<String>,
    /// Tag to use instead of `<version>-<shortsha>[-dirty]`.
    pub tag: Option<String>,
    /// Push to the registry of `env`.
    pub push: bool,
    /// The environment (for `push`).
    pub env: Option<String>,
    /// Write the artifacts file here.
    pub artifacts: Option<PathBuf>,
    /// Rebuild even when an image with the same inputs exists.
    pub force: bool,
    /// The cargo profile (`dronectl dev` builds with [`Profile::Dev`]).
    pub profile: Profile,
}

/// One service's result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuiltImage {
    pub service: String,
    /// Local repository, `<app>/<service>`.
    pub image: String,
    pub tag: String,
    /// Local image id.
    pub id: String,
    pub size: u64,
    /// false when the inputs were unchanged and the existing image was reused.
    pub rebuilt: bool,
    /// `<registry>/<app>/<service>` and the manifest digest, when pushed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pushed: Option<PushedImage>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PushedImage {
    pub image: String,
    pub digest: String,
}

impl BuiltImage {
    pub fn artifact(&self) -> Artifact {
        match &self.pushed {
            Some(p) => Artifact {
                service: self.service.clone(),
                image: p.image.clone(),
                tag: self.tag.clone(),
                digest: p.digest.clone(),
                pushed: true,
            },
            None => Artifact {
                service: self.service.clone(),
                image: self.image.clone(),
                tag: self.tag.clone(),
                digest: self.id.clone(),
                pushed: false,
            },
        }
    }
}

/// What `build` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuildOutcome {
    pub app: String,
    pub images: Vec<BuiltImage>,
    /// Services left out because `--changed-since` found no change in their inputs.
    pub unchanged_since: Vec<String>,
    /// Whether cargo ran.
    pub compiled: bool,
    pub elapsed_ms: u64,
}

impl BuildOutcome {
    pub fn rebuilt(&self) -> usize {
        self.images.iter().filter(|i| i.rebuilt).count()
    }
}

/// A service's planned image.
struct Plan {
    inputs: ServiceInputs,
    hash: String,
    tag: String,
    /// An existing image with the same inputs: (id, size).
    existing: Option<(String, u64)>,
}

/// Builds the selected services' images. See the module docs.
pub async fn build(
    options: &BuildOptions,
    reporter: &dyn Reporter,
) -> Result<BuildOutcome, BuildError> {
    let start = Instant::now();
    let app_dir = canonical(&options.app_dir);
    let loaded = LoadedManifest::read_valid(&app_dir)?;
    let manifest = &loaded.manifest;
    let app = manifest.app.value.clone();
    if let Some(tag) = &options.tag {
        check_tag(tag)?;
    }
    // Credentials are looked up before anything is built: an unusable entry fails fast.
    let registry = if options.push {
        let registry = push_registry(manifest, options.env.as_deref())?;
        let host = auth::registry_host(&registry).to_string();
        let credentials = match auth::credentials(&registry)? {
            auth::Lookup::Found(found) => {
                reporter.event(Event::Note {
                    message: format!("registry credentials for {host} from {}", found.source),
                    verbose: true,
                });
                Some(found)
            }
            auth::Lookup::Anonymous(why) => {
                reporter.event(Event::Note {
                    message: format!("{why}; pushing anonymously"),
                    verbose: false,
                });
                None
            }
        };
        Some((registry, credentials))
    } else {
        None
    };
    let mut names = select_services(manifest, &options.services)?;
    let all_inputs = inputs::resolve_all(&app_dir, manifest, &names)?;
    let git = GitInfo::discover(&app_dir)?;
    let mut unchanged_since = Vec::new();
    let all_inputs = match &options.changed_since {
        Some(since) => {
            let git = git.as_ref().ok_or(BuildError::NotGit {
                dir: app_dir.clone(),
            })?;
            let changed = changed_among(git, &loaded, &all_inputs, since)?;
            unchanged_since = names
                .iter()
                .filter(|n| !changed.contains(n))
                .cloned()
                .collect();
            names.retain(|n| changed.contains(n));
            reporter.event(Event::Note {
                message: if changed.is_empty() {
                    format!("no service's inputs changed since {since}")
                } else {
                    format!("changed since {since}: {}", changed.join(", "))
                },
                verbose: false,
            });
            all_inputs
                .into_iter()
                .filter(|i| changed.contains(&i.service))
                .collect()
        }
        None => all_inputs,
    };
    if names.is_empty() {
        let outcome = BuildOutcome {
            app,
            images: Vec::new(),
            unchanged_since,
            compiled: false,
            elapsed_ms: start.elapsed().as_millis() as u64,
        };
        if let Some(path) = &options.artifacts {
            artifacts::write(path, &[])?;
        }
        return Ok(outcome);
    }

    let docker = docker::connect().await?;
    let existing = existing_images(&docker, &app).await?;

    // Plan: hash inputs, pick tags, find images that are already up to date.
    let created_secs = git
        .as_ref()
        .and_then(|g| g.head.as_ref().map(|(_, t)| *t))
        .or_else(source_date_epoch)
        .unwrap_or(0);
    let mut plans = Vec::new();
    for inputs in all_inputs {
        let hash = profile_hash(inputs.hash()?, options.profile);
        let tag = match &options.tag {
            Some(tag) => tag.clone(),
            None => profile_tag(default_tag(git.as_ref(), &inputs, &hash)?, options.profile),
        };
        let found = existing
            .get(&(inputs.service.clone(), hash.clone()))
            .cloned();
        plans.push(Plan {
            inputs,
            hash,
            tag,
            existing: if options.force { None } else { found },
        });
    }
    for plan in plans.iter().filter(|p| p.existing.is_some()) {
        for stage in [BuildStage::Compile, BuildStage::Image] {
            reporter.event(Event::BuildStep {
                service: plan.inputs.service.clone(),
                stage,
                status: StepStatus::Skipped,
                detail: Some("inputs unchanged".into()),
                bytes: None,
                elapsed_ms: None,
            });
        }
    }

    // Compile every Rust service that needs it, one cargo invocation per workspace.
    let mut executables = HashMap::new();
    let mut by_workspace: BTreeMap<PathBuf, Vec<cargo::Unit>> = BTreeMap::new();
    for plan in plans
        .iter()
        .filter(|p| p.existing.is_none() && !p.inputs.dockerfile)
    {
        by_workspace
            .entry(plan.inputs.workspace.clone())
            .or_default()
            .push(cargo::Unit {
                service: plan.inputs.service.clone(),
                package: plan
                    .inputs
                    .package
                    .clone()
                    .unwrap_or_else(|| plan.inputs.service.clone()),
            });
    }
    let compiled = !by_workspace.is_empty();
    for (workspace, units) in &by_workspace {
        executables.extend(cargo::build(workspace, units, options.profile, reporter).await?);
    }
    if compiled {
        // cargo may have written Cargo.lock: hash what was actually built.
        for plan in plans
            .iter_mut()
            .filter(|p| executables.contains_key(&p.inputs.service))
        {
            plan.hash = profile_hash(plan.inputs.hash()?, options.profile);
        }
    }

    // Images, concurrently; nothing is tagged until every one exists.
    let source = source_label(git.as_ref(), &app_dir);
    let revision = git
        .as_ref()
        .and_then(|g| g.head.as_ref().map(|(id, _)| id.clone()))
        .unwrap_or_default();
    let created = image::rfc3339(created_secs);
    let ids: Vec<Result<(String, u64), BuildError>> = {
        let jobs = plans.iter().map(|plan| {
            let docker = &docker;
            let executables = &executables;
            let labels = labels(&app, plan, &revision, &source, &created);
            async move {
                if let Some(found) = &plan.existing {
                    return Ok(found.clone());
                }
                let service = plan.inputs.service.clone();
                let started = Instant::now();
                reporter.event(Event::BuildStep {
                    service: service.clone(),
                    stage: BuildStage::Image,
                    status: StepStatus::Started,
                    detail: Some(if plan.inputs.dockerfile {
                        "docker build (its own Dockerfile)".into()
                    } else {
                        "assembling a scratch image".into()
                    }),
                    bytes: None,
                    elapsed_ms: None,
                });
                let result = if plan.inputs.dockerfile {
                    match image::build_dockerfile(
                        docker,
                        &service,
                        &plan.inputs.dir,
                        &labels,
                        |line| {
                            reporter.event(Event::DockerOutput {
                                service: service.clone(),
                                line: line.to_string(),
                            })
                        },
                    )
                    .await
                    {
                        Ok(id) => inspect_size(docker, &id).await.map(|size| (id, size)),
                        Err(e) => Err(e),
                    }
                } else {
                    let exe = executables[&service].clone();
                    assemble_service(docker, plan, exe, labels).await
                };
                reporter.event(Event::BuildStep {
                    service: service.clone(),
                    stage: BuildStage::Image,
                    status: if result.is_ok() {
                        StepStatus::Finished
                    } else {
                        StepStatus::Failed
                    },
                    detail: result.as_ref().ok().map(|(id, _)| short_id(id)),
                    bytes: result.as_ref().ok().map(|(_, size)| *size),
                    elapsed_ms: Some(started.elapsed().as_millis() as u64),
                });
                result
            }
        });
        futures_util::future::join_all(jobs).await
    };
    let mut built = Vec::new();
    for (plan, result) in plans.iter().zip(ids) {
        built.push((plan, result?));
    }

    // Every image exists: tag them all.
    let mut images = Vec::new();
    for (plan, (id, size)) in &built {
        let repository = format!("{app}/{}", plan.inputs.service);
        image::tag(&docker, id, &repository, &plan.tag).await?;
        reporter.event(Event::BuildStep {
            service: plan.inputs.service.clone(),
            stage: BuildStage::Tag,
            status: StepStatus::Finished,
            detail: Some(format!("{repository}:{}", plan.tag)),
            bytes: None,
            elapsed_ms: None,
        });
        images.push(BuiltImage {
            service: plan.inputs.service.clone(),
            image: repository,
            tag: plan.tag.clone(),
            id: id.clone(),
            size: *size,
            rebuilt: plan.existing.is_none(),
            pushed: None,
        });
    }

    if let Some((registry, credentials)) = &registry {
        let pushed: Vec<Result<PushedImage, BuildError>> = {
            let app = &app;
            let jobs = images.iter().map(|img| {
                let docker = &docker;
                let credentials = credentials.as_ref();
                async move { push_one(docker, registry, app, img, credentials, reporter).await }
            });
            futures_util::future::join_all(jobs).await
        };
        for (img, result) in images.iter_mut().zip(pushed) {
            img.pushed = Some(result?);
        }
    }

    for img in &images {
        reporter.event(Event::ImageReady {
            service: img.service.clone(),
            image: img
                .pushed
                .as_ref()
                .map_or_else(|| img.image.clone(), |p| p.image.clone()),
            tag: img.tag.clone(),
            id: img.id.clone(),
            size: img.size,
            digest: img.pushed.as_ref().map(|p| p.digest.clone()),
            rebuilt: img.rebuilt,
        });
    }
    if let Some(path) = &options.artifacts {
        let list: Vec<Artifact> = images.iter().map(BuiltImage::artifact).collect();
        artifacts::write(path, &list)?;
        reporter.event(Event::File {
            path: path.clone(),
            dry_run: false,
        });
    }
    Ok(BuildOutcome {
        app,
        images,
        unchanged_since,
        compiled,
        elapsed_ms: start.elapsed().as_millis() as u64,
    })
}

/// The inputs hash of an image built in `profile`: the release hash as it is, a dev build's
/// hash of it and the profile, so neither is ever taken as up to date for the other.
fn profile_hash(hash: String, profile: Profile) -> String {
    match profile {
        Profile::Release => hash,
        Profile::Dev => {
            use sha2::Digest as _;
            // The marker names the dev build's settings: images of older settings rebuild.
            inputs::hex(&sha2::Sha256::digest(format!(
                "profile dev; dependencies opt-level 1\n{hash}"
            )))
        }
    }
}

/// Dev-profile images are tagged `<tag>-dev`.
fn profile_tag(tag: String, profile: Profile) -> String {
    match profile {
        Profile::Release => tag,
        Profile::Dev => format!("{tag}-dev"),
    }
}

fn source_date_epoch() -> Option<i64> {
    std::env::var("SOURCE_DATE_EPOCH").ok()?.parse().ok()
}

/// `<version>-<shortsha>`, `-dirty` when the inputs have uncommitted changes; without git
/// (or before the first commit), `<version>-<first 7 of the inputs hash>`.
fn default_tag(
    git: Option<&GitInfo>,
    inputs: &ServiceInputs,
    hash: &str,
) -> Result<String, BuildError> {
    let version = &inputs.version;
    let tag = match git.and_then(|g| g.short_sha().map(|s| (g, s))) {
        Some((git, sha)) => {
            if git.is_dirty(inputs)? {
                format!("{version}-{sha}-dirty")
            } else {
                format!("{version}-{sha}")
            }
        }
        None => format!("{version}-{}", &hash[..7]),
    };
    // Versions may carry `+build` metadata, which tags cannot.
    Ok(tag.replace('+', "_"))
}

/// The registry `--push` sends to.
fn push_registry(manifest: &Manifest, env: Option<&str>) -> Result<String, BuildError> {
    let Some(env) = env else {
        let known = manifest.environments.keys().cloned().collect();
        return Err(BuildError::PushNeedsEnv { known });
    };
    Environment::resolve(manifest, Some(env))?
        .registry
        .clone()
        .map(|r| r.trim_end_matches('/').to_string())
        .ok_or_else(|| BuildError::NoRegistry {
            env: env.to_string(),
        })
}

/// `org.opencontainers.image.source`: the `origin` remote, else the app directory.
fn source_label(git: Option<&GitInfo>, app_dir: &Path) -> String {
    git.and_then(|g| g.origin_url())
        .unwrap_or_else(|| format!("file://{}", app_dir.display()))
}

fn labels(
    app: &str,
    plan: &Plan,
    revision: &str,
    source: &str,
    created: &str,
) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut put = |k: &str, v: &str| {
        labels.insert(k.to_string(), v.to_string());
    };
    put("org.opencontainers.image.title", &plan.inputs.service);
    put("org.opencontainers.image.version", &plan.inputs.version);
    put("org.opencontainers.image.revision", revision);
    put("org.opencontainers.image.source", source);
    put("org.opencontainers.image.created", created);
    put(LABEL_APP, app);
    put(LABEL_SERVICE, &plan.inputs.service);
    put(LABEL_INPUTS, &plan.hash);
    put("dev.dronectl.version", env!("CARGO_PKG_VERSION"));
    labels
}

/// Images of `app` in the engine, by (service, inputs hash) → (id, size).
async fn existing_images(
    docker: &Docker,
    app: &str,
) -> Result<HashMap<(String, String), (String, u64)>, DockerError> {
    let mut filters = HashMap::new();
    filters.insert("label".to_string(), vec![format!("{LABEL_APP}={app}")]);
    let options = bollard::query_parameters::ListImagesOptionsBuilder::default()
        .filters(&filters)
        .build();
    let list = docker.list_images(Some(options)).await?;
    Ok(list
        .into_iter()
        .filter_map(|img| {
            let service = img.labels.get(LABEL_SERVICE)?.clone();
            let hash = img.labels.get(LABEL_INPUTS)?.clone();
            Some(((service, hash), (img.id, img.size.max(0) as u64)))
        })
        .collect())
}

async fn inspect_size(docker: &Docker, id: &str) -> Result<u64, BuildError> {
    let info = docker.inspect_image(id).await.map_err(DockerError::from)?;
    Ok(info.size.unwrap_or(0).max(0) as u64)
}

/// `sha256:0123456789ab…` → `0123456789ab`.
pub fn short_id(id: &str) -> String {
    id.trim_start_matches("sha256:").chars().take(12).collect()
}

/// The scratch image of a Rust service: its static binary, CA certificates if it uses the
/// system's roots, a numeric non-root user.
async fn assemble_service(
    docker: &Docker,
    plan: &Plan,
    exe: PathBuf,
    labels: BTreeMap<String, String>,
) -> Result<(String, u64), BuildError> {
    let name = plan
        .inputs
        .package
        .clone()
        .unwrap_or_else(|| plan.inputs.service.clone());
    let port = plan
        .inputs
        .settings
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("port="))
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(8080);
    let needs_certs = plan.inputs.needs_ca_certs;
    let assembled = tokio::task::spawn_blocking(move || -> Result<image::Assembled, BuildError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| BuildError::Io { path, source }
        };
        let binary = std::fs::read(&exe).map_err(io(&exe))?;
        let mut layer = Layer::new();
        layer.base(DEFAULT_USER).map_err(io(&exe))?;
        if needs_certs {
            let bundle = Path::new("/etc/ssl/certs/ca-certificates.crt");
            if let Ok(pem) = std::fs::read(bundle) {
                layer
                    .file("etc/ssl/certs/ca-certificates.crt", &pem, 0o644)
                    .map_err(io(bundle))?;
            }
        }
        let path = format!("/usr/local/bin/{name}");
        layer.file(&path, &binary, 0o755).map_err(io(&exe))?;
        let config = ImageConfig {
            entrypoint: vec![path],
            cmd: Vec::new(),
            env: vec![
                "PATH=/usr/local/bin:/usr/bin:/bin".into(),
                format!("PORT={port}"),
            ],
            user: DEFAULT_USER,
            workdir: Some("/".into()),
            exposed_ports: vec![port],
            created: labels
                .get("org.opencontainers.image.created")
                .cloned()
                .unwrap_or_default(),
            labels,
        };
        image::assemble(layer.finish().map_err(io(&exe))?, &config).map_err(io(&exe))
    });
    let assembled = assembled.await.map_err(|e| BuildError::ImageBuild {
        service: plan.inputs.service.clone(),
        message: e.to_string(),
    })??;
    let size = assembled.size;
    let id = image::load(docker, assembled).await?;
    Ok((id, size))
}

async fn push_one(
    docker: &Docker,
    registry: &str,
    app: &str,
    img: &BuiltImage,
    credentials: Option<&auth::RegistryAuth>,
    reporter: &dyn Reporter,
) -> Result<PushedImage, BuildError> {
    let remote = format!("{registry}/{app}/{}", img.service);
    let started = Instant::now();
    image::tag(docker, &img.id, &remote, &img.tag).await?;
    reporter.event(Event::BuildStep {
        service: img.service.clone(),
        stage: BuildStage::Push,
        status: StepStatus::Started,
        detail: Some(format!("{remote}:{}", img.tag)),
        bytes: None,
        elapsed_ms: None,
    });
    let mut last_report = Instant::now();
    let docker_credentials = credentials.map(auth::RegistryAuth::docker_credentials);
    let digest = image::push(
        docker,
        &remote,
        &img.tag,
        docker_credentials,
        |done, _total| {
            if last_report.elapsed().as_millis() > 200 {
                last_report = Instant::now();
                reporter.event(Event::BuildStep {
                    service: img.service.clone(),
                    stage: BuildStage::Push,
                    status: StepStatus::Progress,
                    detail: None,
                    bytes: Some(done),
                    elapsed_ms: Some(started.elapsed().as_millis() as u64),
                });
            }
        },
    )
    .await
    .map_err(|e| {
        // Registries and engines may echo what they were sent: scrub it.
        let message = image::docker_message(&e);
        BuildError::Push {
            service: img.service.clone(),
            image: format!("{remote}:{}", img.tag),
            message: credentials.map_or(message.clone(), |c| c.redact(&message)),
        }
    })?;
    reporter.event(Event::BuildStep {
        service: img.service.clone(),
        stage: BuildStage::Push,
        status: StepStatus::Finished,
        detail: Some(format!("{remote}@{digest}")),
        bytes: Some(img.size),
        elapsed_ms: Some(started.elapsed().as_millis() as u64),
    });
    Ok(PushedImage {
        image: remote,
        digest,
    })
}
