//! Deploying and steering services on either target. The CLI fills in a request
//! ([`DeployRequest`], [`RolloutRequest`], [`ScaleRequest`], [`RenderRequest`],
//! [`DiffRequest`]) and makes one call; the request's `run` resolves the environment once,
//! picks the local Docker or the Kubernetes target, does the work through the rollout
//! engine and returns a typed report with its exit code. Nothing here prints: progress goes
//! to the [`DeployReporter`] as events, the result comes back in the report.
//!
//! - `local.rs`: deploying to the local Docker engine (building the image first when asked).
//! - `kube.rs`: deploying to a cluster, the client dry-run, `render` and `diff`.
//! - `rollout.rs`: `rollout status|history|promote|abort|undo|resume` and `scale`.

mod kube;
mod local;
mod rollout;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::events::Reporter;
use crate::exit::{ExitCode, UsageError};
use crate::k8s::{ConnectOptions, DryRun};
use crate::local::LocalTarget;
use crate::manifest::{self, Environment, LoadedManifest, StrategyKind, Target};
use crate::rollout::ops::{self, DriveReport};
use crate::rollout::{Engine, Platform, StateStore, Timing};

pub use kube::{diff, render, DiffReport, DiffRequest, RenderReport, RenderRequest};
pub use rollout::{
    scale, RolloutAction, RolloutOutcome, RolloutReport, RolloutRequest, ScaleRequest,
};

/// How the library reports while it deploys: the events of [`Reporter`], plus the human
/// status lines that are no event (a JSON consumer finds the same facts in the report).
pub trait DeployReporter: Reporter {
    /// A status line for people, e.g. `Deploying to staging (context …, namespace …)`.
    fn status_line(&self, verb: &str, text: &str);
}

/// Where the app is: the directory given (`-C DIR`), else the nearest parent of `cwd` that
/// holds a dronectl.yaml. It is looked up only when a command needs it, so that a mistake in
/// the flags is reported before a missing dronectl.yaml.
#[derive(Debug, Clone)]
pub struct AppLocation {
    pub dir: Option<PathBuf>,
    pub cwd: PathBuf,
}

impl AppLocation {
    /// The app directory.
    pub fn find(&self) -> anyhow::Result<PathBuf> {
        Ok(manifest::find_app_dir(self.dir.as_deref(), &self.cwd)?)
    }
}

/// The target a command acts on, resolved once per command from `--env`.
pub enum ResolvedTarget {
    /// A Kubernetes environment: the command goes to its cluster.
    Kubernetes(Environment),
    /// A Docker environment (the local engine), with the app's manifest as it applies
    /// there (the environment's effective manifest).
    Local {
        /// The app directory.
        dir: PathBuf,
        manifest: Box<LoadedManifest>,
        environment: Environment,
    },
}

impl ResolvedTarget {
    /// Finds and reads the app's manifest and resolves `env` once: a Kubernetes
    /// environment, or the local target (`env` unset, or a Docker environment).
    pub fn resolve(app: &AppLocation, env: Option<&str>) -> anyhow::Result<ResolvedTarget> {
        let dir = app.find()?;
        let mut manifest = LoadedManifest::read_valid(&dir)?;
        let environment = match env {
            Some(name) => Environment::resolve(&manifest.manifest, Some(name))?,
            None => Environment::resolve_for(&manifest.manifest, None, Target::Docker)?,
        };
        if environment.target_kind() == Target::Kubernetes {
            return Ok(ResolvedTarget::Kubernetes(environment));
        }
        manifest.manifest = environment.manifest.clone();
        Ok(ResolvedTarget::Local {
            dir,
            manifest: Box::new(manifest),
            environment,
        })
    }
}

/// A command's target, connected: the cluster of a Kubernetes environment, or the app
/// running on the local engine.
pub enum ConnectedTarget {
    Kubernetes(Box<crate::k8s::KubeTarget>),
    Local(Box<LocalTarget>),
}

impl ResolvedTarget {
    /// Connects to the target (`connect` applies to a cluster); fails when a local app is
    /// not up.
    pub async fn connect(self, connect: &ConnectOptions) -> anyhow::Result<ConnectedTarget> {
        Ok(match self {
            ResolvedTarget::Kubernetes(environment) => ConnectedTarget::Kubernetes(Box::new(
                crate::k8s::KubeTarget::connect(&environment, connect).await?,
            )),
            ResolvedTarget::Local {
                manifest,
                environment,
                ..
            } => ConnectedTarget::Local(Box::new(
                LocalTarget::connect(*manifest, &environment).await?,
            )),
        })
    }
}

/// Which image a deploy runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// Build the service first (local target only).
    Build,
    /// The images a build artifacts file names (`build --artifacts`).
    Artifacts(PathBuf),
    /// This image reference, for the one service deployed.
    Image(String),
    /// Kubernetes: `<registry>/<app>/<service>:<tag>` for every service deployed.
    Tag(String),
}

/// The strategy a deploy asked for; neither: the service's, the environment's, rolling.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StrategyChoice {
    /// `--canary`, `--blue-green`, `--rolling`.
    pub kind: Option<StrategyKind>,
    /// `--strategy NAME`.
    pub name: Option<String>,
}

/// How a command that drives a rollout waits.
#[derive(Debug, Clone, Default)]
pub struct WaitOptions {
    pub timing: Timing,
    /// Stop waiting after this long (exit 4).
    pub timeout: Option<Duration>,
    /// A rollout paused for promotion is a success (exit 0 instead of 5).
    pub success_on_pause: bool,
    /// Return when the rollout ends instead of waiting out the scale-down delay.
    pub no_wait_retire: bool,
}

impl WaitOptions {
    /// The exit code of a rollout that ended with `code`.
    pub fn code(&self, code: ExitCode) -> ExitCode {
        if code == ExitCode::Paused && self.success_on_pause {
            ExitCode::Success
        } else {
            code
        }
    }

    /// After a rollout ended: removes its retired revisions when their delay ends, unless
    /// `no_wait_retire` hands that to the next command.
    async fn retire<P: Platform, S: StateStore>(
        &self,
        engine: &Engine<'_, P, S>,
        report: &DriveReport,
    ) -> anyhow::Result<()> {
        if self.no_wait_retire || !ops::retires_after(report) {
            return Ok(());
        }
        ops::retire(engine, &report.service).await
    }
}

/// `dronectl deploy`: ship services to the environment's target.
#[derive(Debug, Clone)]
pub struct DeployRequest {
    pub app: AppLocation,
    /// `--env`.
    pub env: Option<String>,
    /// The services to ship; none: every service of the artifacts file (local), every
    /// service plus the infrastructure (Kubernetes).
    pub services: Vec<String>,
    pub images: ImageSource,
    pub strategy: StrategyChoice,
    pub wait: WaitOptions,
    /// Kubernetes only.
    pub dry_run: Option<DryRun>,
    /// Kubernetes: take over fields another field manager owns.
    pub force_conflicts: bool,
    /// Kubernetes: create the namespace when it does not exist.
    pub create_namespace: bool,
    /// Kubernetes: how to reach the cluster (its namespace also for the client dry-run).
    pub connect: ConnectOptions,
}

/// What a deploy did.
#[derive(Debug)]
pub struct DeployReport {
    /// The exit code (`success_on_pause` applied).
    pub code: ExitCode,
    pub deployed: Deployed,
}

/// What a deploy did, by target.
#[derive(Debug)]
pub enum Deployed {
    /// Local: the one service named.
    Service(Box<DriveReport>),
    /// Local: the services of an artifacts file, in order, up to the first that did not
    /// complete (the rest stay as they are).
    Services(Vec<DriveReport>),
    /// Kubernetes.
    Kubernetes(crate::k8s::DeployOutcome),
    /// Kubernetes `--dry-run=client`: the objects that would be applied; nothing was sent.
    Rendered(RenderReport),
}

/// Runs a deploy on the target of its environment.
pub async fn run(
    request: &DeployRequest,
    reporter: &dyn DeployReporter,
) -> anyhow::Result<DeployReport> {
    let kubernetes_only =
        request.dry_run.is_some() || matches!(request.images, ImageSource::Tag(_));
    let refused = || -> anyhow::Error {
        UsageError(
            "--dry-run and --tag apply to Kubernetes environments; pass --env <a kubernetes environment>".into(),
        )
        .into()
    };
    // Without --env the target is local: refused before the app is looked up.
    if request.env.is_none() && kubernetes_only {
        return Err(refused());
    }
    match ResolvedTarget::resolve(&request.app, request.env.as_deref())? {
        ResolvedTarget::Kubernetes(environment) => {
            kube::deploy(request, environment, reporter).await
        }
        ResolvedTarget::Local { .. } if kubernetes_only => Err(refused()),
        ResolvedTarget::Local {
            dir,
            manifest,
            environment,
        } => {
            let target = LocalTarget::connect(*manifest, &environment).await?;
            local::deploy(request, &target, &dir, reporter).await
        }
    }
}

/// The version an image reference shows: its tag, `latest` without one. A colon before the
/// last `/` belongs to a registry port (`host:5000/app` has no tag).
pub fn image_version(reference: &str) -> String {
    let name = reference.rsplit_once('/').map_or(reference, |(_, n)| n);
    name.rsplit_once(':')
        .map_or("latest".to_string(), |(_, t)| t.to_string())
}

/// Reads a build artifacts file.
fn artifacts(file: &Path) -> anyhow::Result<Vec<crate::build::artifacts::Artifact>> {
    Ok(crate::build::artifacts::read(file)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keeps the status lines; drops the events.
    #[derive(Default)]
    struct Lines(std::sync::Mutex<Vec<String>>);

    impl Reporter for Lines {
        fn event(&self, _: crate::events::Event) {}
    }

    impl DeployReporter for Lines {
        fn status_line(&self, verb: &str, text: &str) {
            self.0.lock().unwrap().push(format!("{verb} {text}"));
        }
    }

    fn reference_app() -> AppLocation {
        AppLocation {
            dir: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("reference-app")),
            cwd: PathBuf::from(env!("CARGO_MANIFEST_DIR")),
        }
    }

    fn request(app: AppLocation, env: Option<&str>, images: ImageSource) -> DeployRequest {
        DeployRequest {
            app,
            env: env.map(str::to_string),
            services: vec![],
            images,
            strategy: StrategyChoice::default(),
            wait: WaitOptions::default(),
            dry_run: Some(DryRun::Client),
            force_conflicts: false,
            create_namespace: false,
            connect: ConnectOptions::default(),
        }
    }

    #[tokio::test]
    async fn a_kubernetes_flag_without_a_kubernetes_environment_is_refused_before_the_app_is_looked_up(
    ) {
        let nowhere = AppLocation {
            dir: None,
            cwd: PathBuf::from("/nonexistent/dronectl-app"),
        };
        let err = run(
            &request(nowhere, None, ImageSource::Build),
            &Lines::default(),
        )
        .await
        .unwrap_err();
        assert!(err.downcast_ref::<UsageError>().is_some(), "{err:#}");
        assert!(err
            .to_string()
            .starts_with("--dry-run and --tag apply to Kubernetes"));
    }

    #[tokio::test]
    async fn the_client_dry_run_renders_what_render_renders_without_a_cluster() {
        let lines = Lines::default();
        let tag = ImageSource::Tag("1.0.0".into());
        let report = run(&request(reference_app(), Some("staging"), tag), &lines)
            .await
            .unwrap();
        assert_eq!(report.code, ExitCode::Success);
        let Deployed::Rendered(dry) = report.deployed else {
            panic!("a client dry-run renders: {:?}", report.deployed);
        };
        // Nothing connected, so nothing said it was deploying.
        assert!(lines.0.lock().unwrap().is_empty());
        let rendered = render(&RenderRequest {
            app: reference_app(),
            env: Some("staging".into()),
            services: vec![],
            tag: Some("1.0.0".into()),
            artifacts: None,
            namespace: None,
            show_secrets: false,
            allow_other_context: false,
        })
        .await
        .unwrap();
        assert_eq!(dry.env, "staging");
        assert!(!dry.objects.is_empty());
        // render adds the managed Secrets (redacted) after the same objects.
        assert_eq!(rendered.objects[..dry.objects.len()], dry.objects[..]);
        assert!(rendered.yaml.starts_with(&dry.yaml));
    }

    #[tokio::test]
    async fn image_names_the_version_it_runs_and_needs_a_service() {
        let image = ImageSource::Image("127.0.0.1:5000/drone/delivery".into());
        let mut req = request(reference_app(), Some("staging"), image);
        let err = run(&req, &Lines::default()).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "--image names one image: name the service it is for"
        );
        req.services = vec!["delivery".into()];
        let Deployed::Rendered(dry) = run(&req, &Lines::default()).await.unwrap().deployed else {
            panic!("a client dry-run renders");
        };
        let deployment = dry
            .objects
            .iter()
            .find(|o| o["kind"] == "Deployment")
            .expect("the service's Deployment");
        assert_eq!(
            deployment["metadata"]["labels"]["app.kubernetes.io/version"],
            "latest"
        );
    }

    #[test]
    fn image_version_is_the_tag_after_the_last_slash() {
        assert_eq!(
            image_version("drone-delivery/delivery:1.2.0-abc"),
            "1.2.0-abc"
        );
        assert_eq!(image_version("delivery"), "latest");
        assert_eq!(image_version("127.0.0.1:5000/drone/delivery:2.0"), "2.0");
        // A registry port is no tag.
        assert_eq!(
            image_version("registry.local:5000/drone/delivery"),
            "latest"
        );
        assert_eq!(image_version("host:5000/app"), "latest");
    }

    #[test]
    fn success_on_pause_turns_only_a_pause_into_success() {
        let wait = WaitOptions {
            success_on_pause: true,
            ..Default::default()
        };
        assert_eq!(wait.code(ExitCode::Paused), ExitCode::Success);
        assert_eq!(wait.code(ExitCode::Failed), ExitCode::Failed);
        assert_eq!(
            WaitOptions::default().code(ExitCode::Paused),
            ExitCode::Paused
        );
    }
}
