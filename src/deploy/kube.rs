//! Kubernetes: deploying to a cluster (or only rendering, `--dry-run=client`), `render`
//! and `diff`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::exit::{ExitCode, UsageError};
use crate::k8s::{
    self, ConnectOptions, DeployOptions, DryRun, Images, KubeEnv, KubeTarget, ObjectDiff,
    RollingParams,
};
use crate::manifest::{Environment, LoadedManifest, Target};

use super::{image_version, AppLocation, DeployReport, DeployReporter, DeployRequest, Deployed};

/// `dronectl deploy` to a Kubernetes environment.
pub(super) async fn deploy(
    request: &DeployRequest,
    environment: Environment,
    reporter: &dyn DeployReporter,
) -> anyhow::Result<DeployReport> {
    let mut images = Images::default();
    match &request.images {
        super::ImageSource::Build => {}
        super::ImageSource::Artifacts(file) => images.artifacts = super::artifacts(file)?,
        super::ImageSource::Tag(tag) => images.tag = Some(tag.clone()),
        super::ImageSource::Image(image) => {
            let [service] = &request.services[..] else {
                return Err(UsageError(
                    "--image names one image: name the service it is for".into(),
                )
                .into());
            };
            images
                .overrides
                .insert(service.clone(), (image.clone(), image_version(image)));
        }
    }
    let opts = DeployOptions {
        services: request.services.clone(),
        images,
        kind: request.strategy.kind,
        strategy: request.strategy.name.clone(),
        timing: request.wait.timing,
        timeout: request.wait.timeout,
        dry_run: request.dry_run,
        create_namespace: request.create_namespace,
    };
    if request.dry_run == Some(DryRun::Client) {
        // Nothing is sent: no cluster needed.
        let kenv = KubeEnv::new(&environment, request.connect.namespace.as_deref());
        let objects = render_objects(&environment, &kenv, &opts.services, &opts.images)?;
        return Ok(DeployReport {
            code: ExitCode::Success,
            deployed: Deployed::Rendered(RenderReport {
                env: environment.name.clone(),
                yaml: k8s::render::to_yaml(&objects)?,
                objects: objects.iter().map(|o| o.to_value()).collect(),
            }),
        });
    }
    let mut target = KubeTarget::connect(&environment, &request.connect).await?;
    target.platform.force_conflicts = request.force_conflicts;
    reporter.status_line(
        "Deploying",
        &format!(
            "to {} (context {}, namespace {})",
            environment.name, target.context, target.kenv.namespace
        ),
    );
    let outcome = k8s::deploy(&target, &opts, reporter).await?;
    let engine = target.engine(reporter, opts.timing);
    futures_util::future::try_join_all(
        outcome
            .services
            .iter()
            .map(|r| request.wait.retire(&engine, r)),
    )
    .await?;
    Ok(DeployReport {
        code: request.wait.code(outcome.code),
        deployed: Deployed::Kubernetes(outcome),
    })
}

/// The objects `deploy` applies for `services` (every service plus the infrastructure when
/// empty), with the rolling parameters of a first deploy.
fn render_objects(
    environment: &Environment,
    kenv: &KubeEnv,
    services: &[String],
    images: &Images,
) -> anyhow::Result<Vec<k8s::render::Object>> {
    let m = &environment.manifest;
    let revisions = images.revisions(kenv, m, services)?;
    Ok(k8s::render::render_app(
        kenv,
        m,
        services,
        &revisions,
        RollingParams {
            max_surge: 1,
            max_unavailable: 0,
        },
    ))
}

/// Which images `render` and `diff` show: one tag for every service, and/or a build
/// artifacts file (its entries win).
fn images(tag: &Option<String>, artifacts: &Option<PathBuf>) -> anyhow::Result<Images> {
    Ok(Images {
        artifacts: match artifacts {
            Some(f) => super::artifacts(f)?,
            None => vec![],
        },
        tag: tag.clone(),
        ..Default::default()
    })
}

/// The Kubernetes environment of `render` and `diff`: `env`, else the only one.
fn environment(app: &AppLocation, env: Option<&str>) -> anyhow::Result<Environment> {
    let loaded = LoadedManifest::read_valid(&app.find()?)?;
    Ok(Environment::resolve_for(
        &loaded.manifest,
        env,
        Target::Kubernetes,
    )?)
}

/// `dronectl render`: the Kubernetes objects of the app (or of some services).
#[derive(Debug, Clone)]
pub struct RenderRequest {
    pub app: AppLocation,
    pub env: Option<String>,
    /// None: every service plus the infrastructure.
    pub services: Vec<String>,
    pub tag: Option<String>,
    pub artifacts: Option<PathBuf>,
    /// The namespace written into the objects (else the environment's).
    pub namespace: Option<String>,
    /// Read the Secrets' values from the cluster instead of redacting them.
    pub show_secrets: bool,
    /// With `show_secrets`: allow a context other than the pinned one.
    pub allow_other_context: bool,
}

/// Rendered objects.
#[derive(Debug, Clone)]
pub struct RenderReport {
    pub env: String,
    /// The objects as one YAML stream (each document starts with `---`).
    pub yaml: String,
    pub objects: Vec<serde_json::Value>,
}

/// Renders the objects `deploy` would apply, with the Secrets `dronectl secret set`
/// manages (values redacted, or read from the cluster).
pub async fn render(request: &RenderRequest) -> anyhow::Result<RenderReport> {
    let environment = environment(&request.app, request.env.as_deref())?;
    let m = &environment.manifest;
    for s in &request.services {
        if !m.services.contains_key(s) {
            return Err(UsageError(format!("no service `{s}` in dronectl.yaml")).into());
        }
    }
    let kenv = KubeEnv::new(&environment, request.namespace.as_deref());
    let images = images(&request.tag, &request.artifacts)?;
    let objects = render_objects(&environment, &kenv, &request.services, &images)?;
    let mut values: Vec<serde_json::Value> = objects.iter().map(|o| o.to_value()).collect();
    let secrets = rendered_secrets(&environment, &kenv, request).await?;
    let mut yaml = k8s::render::to_yaml(&objects)?;
    for secret in secrets {
        yaml.push_str("---\n");
        yaml.push_str(&serde_saphyr::to_string(&secret)?);
        values.push(secret);
    }
    Ok(RenderReport {
        env: environment.name.clone(),
        yaml,
        objects: values,
    })
}

/// The Secrets `dronectl secret set` manages for the rendered services: values redacted,
/// or read from the cluster with `show_secrets`.
async fn rendered_secrets(
    environment: &Environment,
    kenv: &KubeEnv,
    request: &RenderRequest,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let m = &environment.manifest;
    let services: Vec<&String> = m
        .services
        .keys()
        .filter(|s| request.services.is_empty() || request.services.contains(s))
        .filter(|s| !k8s::secret::managed(m, s).is_empty())
        .collect();
    if services.is_empty() {
        return Ok(vec![]);
    }
    let mut values = BTreeMap::new();
    if request.show_secrets {
        let options = ConnectOptions {
            namespace: request.namespace.clone(),
            allow_other_context: request.allow_other_context,
            ..Default::default()
        };
        let target = KubeTarget::connect(environment, &options).await?;
        for s in &services {
            let v = crate::secrets::kube::values(&target.platform.client, kenv, s).await?;
            values.insert(s.to_string(), v);
        }
    }
    Ok(services
        .into_iter()
        .filter_map(|s| k8s::secret::rendered(kenv, m, s, request.show_secrets.then(|| &values[s])))
        .collect())
}

/// `dronectl diff`: how the cluster differs from what `deploy` would apply.
#[derive(Debug, Clone)]
pub struct DiffRequest {
    pub app: AppLocation,
    pub env: Option<String>,
    /// None: every service plus the infrastructure.
    pub services: Vec<String>,
    pub tag: Option<String>,
    pub artifacts: Option<PathBuf>,
    pub connect: ConnectOptions,
}

/// The differences, object by object.
#[derive(Debug, Clone)]
pub struct DiffReport {
    pub env: String,
    pub objects: Vec<ObjectDiff>,
    /// How many objects would change.
    pub changed: usize,
    /// 0 without differences, 1 with (as `kubectl diff`).
    pub code: ExitCode,
}

/// Sends each object as a server-side dry-run apply and compares it with the live one.
pub async fn diff(request: &DiffRequest) -> anyhow::Result<DiffReport> {
    let environment = environment(&request.app, request.env.as_deref())?;
    let target = KubeTarget::connect(&environment, &request.connect).await?;
    let images = images(&request.tag, &request.artifacts)?;
    let objects = k8s::diff(&target, &request.services, &images).await?;
    let changed = objects.iter().filter(|d| d.change != "unchanged").count();
    Ok(DiffReport {
        env: environment.name.clone(),
        objects,
        changed,
        code: if changed == 0 {
            ExitCode::Success
        } else {
            ExitCode::Failed
        },
    })
}
