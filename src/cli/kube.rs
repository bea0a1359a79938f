//! `dronectl render`, `dronectl diff`, and the Kubernetes flags of `deploy` and `rollout`.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use serde_json::json;

use dronectl::deploy::{self, DiffRequest, RenderRequest};
use dronectl::k8s::{ConnectOptions, DryRun};

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

pub async fn render(
    args: RenderArgs,
    global: &GlobalArgs,
    cwd: &Path,
    printer: &Printer,
) -> anyhow::Result<Outcome> {
    let request = RenderRequest {
        app: global.app(cwd),
        env: global.env.clone(),
        services: args.services,
        tag: args.images.tag,
        artifacts: args.images.artifacts,
        namespace: args.namespace,
        show_secrets: args.show_secrets,
        allow_other_context: global.yes,
    };
    let rendered = deploy::render(&request).await?;
    printer.result_line(rendered.yaml.trim_end());
    Ok(Outcome::ok(
        json!({ "env": rendered.env, "objects": rendered.objects }),
    ))
}

pub async fn diff(
    args: DiffArgs,
    global: &GlobalArgs,
    cwd: &Path,
    printer: &Printer,
) -> anyhow::Result<Outcome> {
    let request = DiffRequest {
        app: global.app(cwd),
        env: global.env.clone(),
        services: args.services,
        tag: args.images.tag,
        artifacts: args.images.artifacts,
        connect: args.kube.connect_options(true),
    };
    let report = deploy::diff(&request).await?;
    for d in &report.objects {
        if !d.diff.is_empty() {
            printer.result_line(d.diff.trim_end());
        }
    }
    printer.status(
        "Compared",
        &format!(
            "{} objects: {} would change",
            report.objects.len(),
            report.changed
        ),
    );
    Ok(Outcome {
        code: report.code,
        result: json!({ "env": report.env, "changed": report.changed, "objects": report.objects }),
    })
}
