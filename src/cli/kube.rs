//! `dronectl render`, `dronectl diff`, and the Kubernetes side of `deploy` and `rollout`.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use serde_json::json;

use dronectl::error::{ExitCode, UsageError};
use dronectl::k8s::{self, ConnectOptions, DryRun, Images, KubeEnv, KubeTarget, RollingParams};
use dronectl::manifest::{Environment, LoadedManifest, Target};

use super::local::app_dir;
use super::printer::Printer;
use super::{GlobalArgs, Outcome};

pub const RENDER_EXAMPLES: &str = "Examples:\n  dronectl render --env staging --tag 1.4.0-abc1234\n  dronectl render --env staging --artifacts build.json delivery account\n  dronectl render --env staging --tag dev -n drone-test > app.yaml\n\nPrints the Kubernetes objects `deploy` applies, as one YAML stream.";

pub const DIFF_EXAMPLES: &str = "Examples:\n  dronectl diff --env staging --artifacts build.json\n  dronectl diff --env staging --tag 1.4.0-abc1234 delivery\n\nEach object is sent as a server-side dry-run apply and compared with the live one.\nExit codes: 0 no differences, 1 differences (like `kubectl diff`), 2 usage.";

/// How to reach the cluster (Kubernetes environments only).
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Kubernetes options")]
pub struct KubeArgs {
    /// The kubeconfig file [default: $KUBECONFIG, then ~/.kube/config, then in-cluster]
    #[arg(long, value_name = "FILE", env = "DRONECTL_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context [default: the one the environment pins, else the current one];
    /// another context than the pinned one needs --yes
    #[arg(long, value_name = "NAME", env = "DRONECTL_CONTEXT")]
    pub context: Option<String>,
    /// The namespace [default: the environment's `namespace`, else `default`]
    #[arg(short = 'n', long, value_name = "NAME", env = "DRONECTL_NAMESPACE")]
    pub namespace: Option<String>,
}

impl KubeArgs {
    pub fn connect_options(&self, yes: bool) -> ConnectOptions {
        ConnectOptions {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
            namespace: self.namespace.clone(),
            allow_other_context: yes,
        }
    }
}

/// Which images to run, for render and diff.
#[derive(Debug, Clone, Default, Args)]
pub struct ImageArgs {
    /// The image tag of every service (`<registry>/<app>/<service>:<tag>`)
    #[arg(long, value_name = "TAG", env = "DRONECTL_TAG")]
    pub tag: Option<String>,
    /// Take each service's tag (and digest, when pushed) from this build artifacts file
    #[arg(long, value_name = "FILE", env = "DRONECTL_ARTIFACTS")]
    pub artifacts: Option<PathBuf>,
}

impl ImageArgs {
    pub fn images(&self) -> anyhow::Result<Images> {
        Ok(Images {
            artifacts: match &self.artifacts {
                Some(f) => dronectl::build::artifacts::read(f)?,
                None => vec![],
            },
            tag: self.tag.clone(),
            ..Default::default()
        })
    }
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// Services to render [default: every service, plus the infrastructure]
    pub services: Vec<String>,
    #[command(flatten)]
    pub images: ImageArgs,
    /// The namespace written into the objects [default: the environment's]
    #[arg(short = 'n', long, value_name = "NAME", env = "DRONECTL_NAMESPACE")]
    pub namespace: Option<String>,
    /// Show the values of the services' Secrets (read from the cluster, through
    /// $KUBECONFIG and the environment's context) instead of `<redacted>`
    #[arg(long, env = "DRONECTL_SHOW_SECRETS")]
    pub show_secrets: bool,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// Services to compare [default: every service, plus the infrastructure]
    pub services: Vec<String>,
    #[command(flatten)]
    pub images: ImageArgs,
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// `--dry-run` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DryRunArg {
    /// Print the objects; send nothing
    Client,
    /// Send every object as a server-side dry-run apply; persist nothing
    Server,
}

impl From<DryRunArg> for DryRun {
    fn from(d: DryRunArg) -> DryRun {
        match d {
            DryRunArg::Client => DryRun::Client,
            DryRunArg::Server => DryRun::Server,
        }
    }
}

/// The environment `--env` names when it targets Kubernetes: the command goes to the
/// cluster; `None` without `--env` or for a Docker environment (the local target).
pub fn selected(global: &GlobalArgs, cwd: &Path) -> anyhow::Result<Option<Environment>> {
    let Some(name) = global.env.as_deref() else {
        return Ok(None);
    };
    let dir = app_dir(global, cwd)?;
    let loaded = LoadedManifest::read_valid(&dir)?;
    let environment = Environment::resolve(&loaded.manifest, Some(name))?;
    Ok((environment.target_kind() == Target::Kubernetes).then_some(environment))
}

/// The Kubernetes environment of `render` and `diff`: `--env`, else the only one.
fn kube_environment(global: &GlobalArgs, cwd: &Path) -> anyhow::Result<Environment> {
    let dir = app_dir(global, cwd)?;
    let loaded = LoadedManifest::read_valid(&dir)?;
    Ok(Environment::resolve_for(
        &loaded.manifest,
        global.env.as_deref(),
        Target::Kubernetes,
    )?)
}

pub async fn render(
    args: RenderArgs,
    global: &GlobalArgs,
    cwd: &Path,
    printer: &Printer,
) -> anyhow::Result<Outcome> {
    let environment = kube_environment(global, cwd)?;
    let m = &environment.manifest;
    for s in &args.services {
        if !m.services.contains_key(s) {
            return Err(UsageError(format!("no service `{s}` in dronectl.yaml")).into());
        }
    }
    let kenv = KubeEnv::new(&environment, args.namespace.as_deref());
    let revisions = args.images.images()?.revisions(&kenv, m, &args.services)?;
    let objects = k8s::render::render_app(
        &kenv,
        m,
        &args.services,
        &revisions,
        RollingParams {
            max_surge: 1,
            max_unavailable: 0,
        },
    );
    let mut values: Vec<serde_json::Value> = objects.iter().map(|o| o.to_value()).collect();
    let secrets = rendered_secrets(&environment, &kenv, &args, global).await?;
    let mut yaml = k8s::render::to_yaml(&objects)?;
    for secret in secrets {
        yaml.push_str("---\n");
        yaml.push_str(&serde_saphyr::to_string(&secret)?);
        values.push(secret);
    }
    printer.result_line(yaml.trim_end());
    Ok(Outcome::ok(
        json!({ "env": environment.name, "objects": values }),
    ))
}

/// The Secrets `dronectl secret set` manages for the rendered services: values redacted,
/// or read from the cluster with `--show-secrets`.
async fn rendered_secrets(
    environment: &Environment,
    kenv: &KubeEnv,
    args: &RenderArgs,
    global: &GlobalArgs,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let m = &environment.manifest;
    let services: Vec<&String> = m
        .services
        .keys()
        .filter(|s| args.services.is_empty() || args.services.contains(s))
        .filter(|s| !k8s::secret::managed(m, s).is_empty())
        .collect();
    if services.is_empty() {
        return Ok(vec![]);
    }
    let mut values = std::collections::BTreeMap::new();
    if args.show_secrets {
        let options = ConnectOptions {
            namespace: args.namespace.clone(),
            allow_other_context: global.yes,
            ..Default::default()
        };
        let target = KubeTarget::connect(environment, &options).await?;
        for s in &services {
            let v = dronectl::secrets::kube::values(&target.platform.client, kenv, s).await?;
            values.insert(s.to_string(), v);
        }
    }
    Ok(services
        .into_iter()
        .filter_map(|s| k8s::secret::rendered(kenv, m, s, args.show_secrets.then(|| &values[s])))
        .collect())
}

pub async fn diff(
    args: DiffArgs,
    global: &GlobalArgs,
    cwd: &Path,
    printer: &Printer,
) -> anyhow::Result<Outcome> {
    let environment = kube_environment(global, cwd)?;
    {
        let target = KubeTarget::connect(&environment, &args.kube.connect_options(true)).await?;
        let diffs = k8s::diff(&target, &args.services, &args.images.images()?).await?;
        let changed = diffs.iter().filter(|d| d.change != "unchanged").count();
        for d in &diffs {
            if !d.diff.is_empty() {
                printer.result_line(d.diff.trim_end());
            }
        }
        printer.status(
            "Compared",
            &format!("{} objects: {changed} would change", diffs.len()),
        );
        Ok(Outcome {
            code: if changed == 0 {
                ExitCode::Success
            } else {
                ExitCode::Failed
            },
            result: json!({ "env": environment.name, "changed": changed, "objects": diffs }),
        })
    }
}
