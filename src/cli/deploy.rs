//! `dronectl deploy` and `dronectl rollout status|promote|abort|undo|history|resume`.

use std::path::{Path, PathBuf};

use clap::{ArgGroup, Args, Subcommand};
use serde_json::json;

use dronectl::error::{ExitCode, UsageError};
use dronectl::local::LocalTarget;
use dronectl::manifest::{self, StrategyKind};
use dronectl::rollout::{ops, Plan, Request, Timing};

use dronectl::rollout::{Engine, Platform, StateStore};

use super::kube::{DryRunArg, KubeArgs};
use super::local::app_dir;
use super::printer::Printer;
use super::{GlobalArgs, Outcome};

pub const DEPLOY_EXAMPLES: &str = "Examples:\n  dronectl deploy delivery                     # the strategy from dronectl.yaml (default rolling)\n  dronectl deploy delivery --canary --timeout 10m\n  dronectl deploy delivery --blue-green\n  dronectl deploy delivery --strategy careful-canary\n  dronectl deploy delivery --artifacts build.json --no-build\n  dronectl deploy delivery --image drone-delivery/delivery:1.2.0-abc1234\n\n\nKubernetes environments (`target: kubernetes`):\n  dronectl deploy --env staging --artifacts build.json      # every service + infrastructure\n  dronectl deploy delivery --env staging --tag 1.2.0-abc1234 --canary\n  dronectl deploy --env staging --tag 1.2.0 --dry-run=server\n\nBuilds the service (unless told which image to run), then rolls it out and waits.\nOn Kubernetes nothing is built: images come from --artifacts, --tag or --image.\nExit codes: 0 done, 1 failed, 2 usage, 3 aborted and rolled back, 4 timed out,\n5 paused waiting for `dronectl rollout promote`.";

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("strategy_choice").args(["canary", "blue_green", "rolling", "strategy"])))]
pub struct DeployArgs {
    /// The service to ship [default: every service of --artifacts; on Kubernetes every service
    /// plus the infrastructure]
    pub service: Option<String>,

    /// Canary: shift traffic in weighted steps (the manifest's canary strategy, or 20% → 50% → 100%)
    #[arg(long, env = "DRONECTL_CANARY")]
    pub canary: bool,
    /// Blue-green: bring the new version up beside the old one, then switch all traffic
    #[arg(long, env = "DRONECTL_BLUE_GREEN")]
    pub blue_green: bool,
    /// Rolling: replace replicas a few at a time
    #[arg(long, env = "DRONECTL_ROLLING")]
    pub rolling: bool,
    /// A strategy by its name under `strategies` in dronectl.yaml
    #[arg(long, value_name = "NAME", env = "DRONECTL_STRATEGY")]
    pub strategy: Option<String>,

    /// Run this image instead of building
    #[arg(
        long,
        value_name = "REF",
        env = "DRONECTL_IMAGE",
        conflicts_with = "artifacts"
    )]
    pub image: Option<String>,
    /// Run the image this artifacts file names for the service (from `build --artifacts`)
    #[arg(long, value_name = "FILE", env = "DRONECTL_ARTIFACTS")]
    pub artifacts: Option<PathBuf>,

    /// Kubernetes: run `<registry>/<app>/<service>:<TAG>` (for every service deployed)
    #[arg(long, value_name = "TAG", env = "DRONECTL_TAG", conflicts_with_all = ["image", "artifacts"])]
    pub tag: Option<String>,
    /// Kubernetes: only show what would be applied (client: print the objects; server:
    /// server-side dry-run apply)
    #[arg(long, value_enum, value_name = "MODE", env = "DRONECTL_DRY_RUN")]
    pub dry_run: Option<DryRunArg>,
    /// Kubernetes: take over fields that another field manager owns (server-side apply)
    #[arg(long, env = "DRONECTL_FORCE_CONFLICTS")]
    pub force_conflicts: bool,
    /// Kubernetes: create the namespace when it does not exist (as `helm --create-namespace`)
    #[arg(long, env = "DRONECTL_CREATE_NAMESPACE")]
    pub create_namespace: bool,

    #[command(flatten)]
    pub wait: WaitArgs,
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// Waiting options shared by every command that drives a rollout.
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Wait for the rollout (always on: dronectl drives the rollout while it waits)
    #[arg(long, env = "DRONECTL_WAIT", default_value_t = true, hide = true)]
    pub wait: bool,
    /// Stop waiting after this long (exit 4); `rollout resume` continues later
    #[arg(long, value_name = "DURATION", env = "DRONECTL_TIMEOUT")]
    pub timeout: Option<manifest::Duration>,
    /// A candidate not ready after this long fails the rollout
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "2m",
        env = "DRONECTL_PROGRESS_DEADLINE"
    )]
    pub progress_deadline: manifest::Duration,
    /// Exit 0 instead of 5 when the rollout pauses for promotion
    #[arg(long, env = "DRONECTL_SUCCESS_ON_PAUSE")]
    pub success_on_pause: bool,
    /// Return when the rollout ends instead of waiting out the scale-down delay to remove
    /// the previous version (the next dronectl command for the service removes it)
    #[arg(long, env = "DRONECTL_NO_WAIT_RETIRE")]
    pub no_wait_retire: bool,
}

impl WaitArgs {
    fn timing(&self) -> Timing {
        Timing {
            progress_deadline: self.progress_deadline.0,
            ..Default::default()
        }
    }

    /// After a rollout ended: removes its retired revisions when their delay ends, unless
    /// `--no-wait-retire` hands that to the next command.
    async fn retire<P: Platform, S: StateStore>(
        &self,
        engine: &Engine<'_, P, S>,
        report: &ops::DriveReport,
    ) -> anyhow::Result<()> {
        if self.no_wait_retire || !ops::retires_after(report) {
            return Ok(());
        }
        ops::retire(engine, &report.service).await
    }
}

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Where the rollout stands: step, traffic split, replicas, analysis
    #[command(
        after_help = "Examples:\n  dronectl rollout status delivery\n  dronectl -o json rollout status delivery\n\nExit codes: 0 completed or progressing, 1 failed, 3 aborted, 5 paused."
    )]
    Status(StatusArgs),
    /// Continue past the current pause or inconclusive analysis (`--full`: skip every step)
    #[command(
        after_help = "Examples:\n  dronectl rollout promote delivery\n  dronectl rollout promote delivery --full"
    )]
    Promote(PromoteArgs),
    /// Stop the rollout: traffic back to the stable version, then remove the candidate
    #[command(after_help = "Examples:\n  dronectl rollout abort delivery")]
    Abort(DriveArgs),
    /// Go back to the previous version (instantly, while it is still warm)
    #[command(
        after_help = "Examples:\n  dronectl rollout undo delivery\n  dronectl rollout undo delivery --to 3"
    )]
    Undo(UndoArgs),
    /// List the service's rollouts
    #[command(after_help = "Examples:\n  dronectl rollout history delivery")]
    History(ServiceArg),
    /// Continue a rollout whose dronectl was stopped or timed out
    #[command(after_help = "Examples:\n  dronectl rollout resume delivery --timeout 10m")]
    Resume(DriveArgs),
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The service
    pub service: String,
    /// Wait until the rollout ends or pauses for promotion (exit 4 after --timeout)
    #[arg(long, env = "DRONECTL_WAIT_STATUS")]
    pub wait: bool,
    /// With --wait: give up after this long
    #[arg(
        long,
        value_name = "DURATION",
        env = "DRONECTL_TIMEOUT",
        requires = "wait"
    )]
    pub timeout: Option<manifest::Duration>,
    /// Pin to the rollout of this revision (id or version): another revision's rollout is
    /// an error; a revision that already is stable is done
    #[arg(long, value_name = "REVISION", env = "DRONECTL_REVISION")]
    pub revision: Option<String>,
    #[command(flatten)]
    pub kube: KubeArgs,
}

#[derive(Debug, Args)]
pub struct ServiceArg {
    /// The service
    pub service: String,
    #[command(flatten)]
    pub kube: KubeArgs,
}

#[derive(Debug, Args)]
pub struct DriveArgs {
    /// The service
    pub service: String,
    #[command(flatten)]
    pub wait: WaitArgs,
    #[command(flatten)]
    pub kube: KubeArgs,
}

#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// The service
    pub service: String,
    /// Skip every remaining step and analysis
    #[arg(long, env = "DRONECTL_FULL")]
    pub full: bool,
    #[command(flatten)]
    pub wait: WaitArgs,
    #[command(flatten)]
    pub kube: KubeArgs,
}

#[derive(Debug, Args)]
pub struct UndoArgs {
    /// The service
    pub service: String,
    /// The rollout number to go back to (see `rollout history`) [default: the previous one]
    #[arg(long, value_name = "N", env = "DRONECTL_TO")]
    pub to: Option<u64>,
    #[command(flatten)]
    pub wait: WaitArgs,
    #[command(flatten)]
    pub kube: KubeArgs,
}

pub const SCALE_EXAMPLES: &str = "Examples:\n  dronectl scale delivery 3\n  dronectl scale delivery 5 --env staging -o json\n\nNew replicas serve once they are ready; removed ones leave the router first and drain.\nLater deploys keep the count while the manifest's `replicas` stays the same.\nRefused (exit 2) while a rollout of the service is in progress, for an autoscaled\nservice (change `autoscale.min`/`max` instead) and for a service that is not running.";

#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// The service
    pub service: String,
    /// The replica count (0 stops every replica; the service stays deployed)
    #[arg(value_name = "N")]
    pub replicas: u32,
    /// Replicas not ready after this long fail the command
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "2m",
        env = "DRONECTL_PROGRESS_DEADLINE"
    )]
    pub progress_deadline: manifest::Duration,
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// `dronectl scale` on either target.
pub async fn scale(
    args: ScaleArgs,
    global: &GlobalArgs,
    cwd: &Path,
    printer: &Printer,
) -> anyhow::Result<Outcome> {
    if let Some(environment) = super::kube::selected(global, cwd)? {
        let options = args.kube.connect_options(global.yes);
        return {
            let target = dronectl::k8s::KubeTarget::connect(&environment, &options).await?;
            run_scale(
                &args,
                &target.platform,
                &target.store,
                &target.manifest,
                printer,
            )
            .await
        };
    }
    let dir = app_dir(global, cwd)?;
    {
        let target = LocalTarget::connect(&dir, global.env.as_deref()).await?;
        let manifest = &target.manifest.manifest;
        run_scale(&args, &target.platform, &target.store, manifest, printer).await
    }
}

async fn run_scale<P: Platform, S: StateStore>(
    args: &ScaleArgs,
    platform: &P,
    store: &S,
    manifest: &manifest::Manifest,
    printer: &Printer,
) -> anyhow::Result<Outcome> {
    let Some(service) = manifest.services.get(&args.service) else {
        return Err(UsageError(format!("no service `{}` in dronectl.yaml", args.service)).into());
    };
    if let Some(bounds) = dronectl::rollout::replicas::Bounds::of(service.value.autoscale.as_ref())
    {
        return Err(ops::autoscaled(&args.service, bounds));
    }
    let mut engine = Engine::new(platform, store, printer);
    engine.timing.progress_deadline = args.progress_deadline.0;
    let report = ops::scale(&engine, &args.service, args.replicas).await?;
    let kept = if report.to == report.manifest_replicas {
        String::new()
    } else {
        format!(
            "; deploys keep {} while dronectl.yaml says replicas: {}",
            report.to, report.manifest_replicas
        )
    };
    printer.status(
        "Scaled",
        &format!(
            "{} {} ({}) from {} to {} replicas{kept}",
            report.service, report.version, report.revision, report.from, report.to
        ),
    );
    Ok(Outcome::ok(serde_json::to_value(&report)?))
}

fn report_outcome(
    report: ops::DriveReport,
    wait: &WaitArgs,
    printer: &Printer,
) -> anyhow::Result<Outcome> {
    let mut code = report.exit_code();
    if code == ExitCode::Paused && wait.success_on_pause {
        code = ExitCode::Success;
    }
    // Rollout events already told the rest; these outcomes have no event of their own.
    if let Some(verb) = report.outcome.status_verb() {
        printer.status(verb, &report.message);
    }
    Ok(Outcome {
        code,
        result: serde_json::to_value(&report)?,
    })
}

pub async fn deploy(
    args: DeployArgs,
    global: &GlobalArgs,
    cwd: &Path,
    printer: &Printer,
) -> anyhow::Result<Outcome> {
    if let Some(environment) = super::kube::selected(global, cwd)? {
        return deploy_kube(args, environment, global, printer).await;
    }
    if args.dry_run.is_some() || args.tag.is_some() {
        return Err(UsageError(
            "--dry-run and --tag apply to Kubernetes environments; pass --env <a kubernetes environment>".into(),
        )
        .into());
    }
    let dir = app_dir(global, cwd)?;
    {
        let target = LocalTarget::connect(&dir, global.env.as_deref()).await?;
        // One service, or every service of the artifacts file (a CI pipeline's hand-off).
        let services: Vec<String> = match (&args.service, &args.artifacts) {
            (Some(service), _) => vec![service.clone()],
            (None, Some(file)) => dronectl::build::artifacts::read(file)?
                .into_iter()
                .map(|a| a.service)
                .collect(),
            (None, None) => anyhow::bail!(UsageError(
                "name the service to deploy, or pass --artifacts FILE to deploy every service it lists (`dronectl up` brings up the whole app)".into()
            )),
        };
        if args.image.is_some() && services.len() != 1 {
            anyhow::bail!(UsageError("--image needs exactly one service".into()));
        }
        let mut reports = Vec::new();
        for service in &services {
            let report = deploy_local(&target, service, &args, &dir, global, printer).await?;
            let done = report.exit_code() == ExitCode::Success;
            reports.push(report);
            if !done {
                break; // the rest stay as they are; the pipeline fails here
            }
        }
        if reports.len() == 1 && args.service.is_some() {
            return report_outcome(reports.remove(0), &args.wait, printer);
        }
        let mut code = reports.last().map_or(ExitCode::Success, |r| r.exit_code());
        if code == ExitCode::Paused && args.wait.success_on_pause {
            code = ExitCode::Success;
        }
        for r in &reports {
            if let Some(verb) = r.outcome.status_verb() {
                printer.status(verb, &r.message);
            }
        }
        Ok(Outcome {
            code,
            result: serde_json::json!({ "services": reports }),
        })
    }
}

/// One service's rollout on the local target.
async fn deploy_local(
    target: &LocalTarget,
    service: &str,
    args: &DeployArgs,
    dir: &Path,
    global: &GlobalArgs,
    printer: &Printer,
) -> anyhow::Result<ops::DriveReport> {
    let m = &target.manifest.manifest;
    if !m.services.contains_key(service) {
        anyhow::bail!(UsageError(format!(
            "no service `{service}` in dronectl.yaml"
        )));
    }
    let (image, version) = match (&args.image, &args.artifacts) {
        (Some(image), _) => (
            image.clone(),
            image
                .rsplit_once(':')
                .map_or("latest".to_string(), |(_, t)| t.to_string()),
        ),
        (None, Some(file)) => {
            let a = dronectl::build::artifacts::read(file)?
                .into_iter()
                .find(|a| a.service == service)
                .ok_or_else(|| {
                    UsageError(format!("{} has no image for `{service}`", file.display()))
                })?;
            (a.reference(), a.tag.clone())
        }
        (None, None) => {
            let options = dronectl::build::BuildOptions {
                app_dir: dir.to_path_buf(),
                services: vec![service.to_string()],
                env: global.env.clone(),
                ..Default::default()
            };
            let outcome = dronectl::build::build(&options, printer).await?;
            let built = outcome
                .images
                .into_iter()
                .next()
                .ok_or_else(|| anyhow::anyhow!("the build produced no image"))?;
            (format!("{}:{}", built.image, built.tag), built.tag)
        }
    };
    let revision = target.revision(service, &image, &version).await?;
    let kind = if args.canary {
        Some(StrategyKind::Canary)
    } else if args.blue_green {
        Some(StrategyKind::BlueGreen)
    } else if args.rolling {
        Some(StrategyKind::Rolling)
    } else {
        None
    };
    let plan = match &args.strategy {
        Some(name) => Plan::from_manifest(m, name, revision.replicas)?,
        None => Plan::choose(
            m,
            service,
            target.strategy.as_deref(),
            kind,
            revision.replicas,
        )?,
    };
    let engine = target.engine(printer, args.wait.timing());
    let report = ops::deploy(
        &engine,
        service,
        revision,
        plan,
        args.wait.timeout.map(|d| d.0),
    )
    .await?;
    args.wait.retire(&engine, &report).await?;
    Ok(report)
}

pub async fn rollout(
    cmd: RolloutCommand,
    global: &GlobalArgs,
    cwd: &Path,
    printer: &Printer,
) -> anyhow::Result<Outcome> {
    if let Some(environment) = super::kube::selected(global, cwd)? {
        let kube = match &cmd {
            RolloutCommand::Status(a) => &a.kube,
            RolloutCommand::History(a) => &a.kube,
            RolloutCommand::Promote(a) => &a.kube,
            RolloutCommand::Abort(a) | RolloutCommand::Resume(a) => &a.kube,
            RolloutCommand::Undo(a) => &a.kube,
        };
        let options = kube.connect_options(global.yes);
        return {
            let target = dronectl::k8s::KubeTarget::connect(&environment, &options).await?;
            run_rollout(
                cmd,
                &target.platform,
                &target.store,
                &target.manifest,
                printer,
            )
            .await
        };
    }
    let dir = app_dir(global, cwd)?;
    {
        let target = LocalTarget::connect(&dir, global.env.as_deref()).await?;
        let manifest = &target.manifest.manifest;
        run_rollout(cmd, &target.platform, &target.store, manifest, printer).await
    }
}

/// The rollout commands over any platform and state store, for the services of `manifest`
/// (the environment's effective manifest).
async fn run_rollout<P: Platform, S: StateStore>(
    cmd: RolloutCommand,
    platform: &P,
    store: &S,
    manifest: &manifest::Manifest,
    printer: &Printer,
) -> anyhow::Result<Outcome> {
    let check = |service: &str| -> anyhow::Result<()> {
        if manifest.services.contains_key(service) {
            Ok(())
        } else {
            Err(UsageError(format!("no service `{service}` in dronectl.yaml")).into())
        }
    };
    let engine = |timing: Timing| {
        let mut engine = Engine::new(platform, store, printer);
        engine.timing = timing;
        engine
    };
    match cmd {
        RolloutCommand::Status(a) => {
            check(&a.service)?;
            let (view, end) = if a.wait || a.revision.is_some() {
                let timeout = if a.wait {
                    a.timeout.map(|d| d.0)
                } else {
                    Some(std::time::Duration::ZERO)
                };
                ops::wait_status(platform, store, &a.service, a.revision.as_deref(), timeout)
                    .await?
            } else {
                (
                    ops::status(platform, store, &a.service).await?,
                    ops::WaitEnd::Settled,
                )
            };
            let mut view = view;
            view.autoscale = dronectl::rollout::replicas::Bounds::of(
                manifest.services[&a.service].value.autoscale.as_ref(),
            );
            print_status(&view, printer);
            let code = match end {
                ops::WaitEnd::TimedOut if a.wait => ExitCode::TimedOut,
                ops::WaitEnd::Undriven if a.wait => {
                    printer.status("Stalled", &format!("no dronectl is driving this rollout; `dronectl rollout resume {}` continues it", a.service));
                    ExitCode::Failed
                }
                _ => view.exit_code(),
            };
            Ok(Outcome {
                code,
                result: serde_json::to_value(&view)?,
            })
        }
        RolloutCommand::History(a) => {
            check(&a.service)?;
            let history = ops::history(store, &a.service).await?;
            printer.result_line(&format!(
                "{:>4}  {:<30} {:<24} {:<10} {}",
                "#", "VERSION (REVISION)", "STRATEGY", "OUTCOME", "MESSAGE"
            ));
            for h in &history {
                printer.result_line(&format!(
                    "{:>4}  {:<30} {:<24} {:<10} {}",
                    h.number,
                    h.revision.label(),
                    h.strategy,
                    h.outcome,
                    h.message
                ));
            }
            Ok(Outcome::ok(
                json!({"service": a.service, "history": history}),
            ))
        }
        RolloutCommand::Promote(a) => {
            check(&a.service)?;
            let engine = engine(a.wait.timing());
            let request = if a.full {
                Request::PromoteFull
            } else {
                Request::Promote
            };
            let report =
                ops::request(&engine, &a.service, request, a.wait.timeout.map(|d| d.0)).await?;
            a.wait.retire(&engine, &report).await?;
            report_outcome(report, &a.wait, printer)
        }
        RolloutCommand::Abort(a) => {
            check(&a.service)?;
            let engine = engine(a.wait.timing());
            let report = ops::request(
                &engine,
                &a.service,
                Request::Abort,
                a.wait.timeout.map(|d| d.0),
            )
            .await?;
            a.wait.retire(&engine, &report).await?;
            let mut outcome = report_outcome(report, &a.wait, printer)?;
            // An abort that was asked for and happened is what the user wanted.
            if outcome.code == ExitCode::Aborted {
                outcome.code = ExitCode::Success;
            }
            Ok(outcome)
        }
        RolloutCommand::Undo(a) => {
            check(&a.service)?;
            let engine = engine(a.wait.timing());
            let report = ops::undo(&engine, &a.service, a.to, a.wait.timeout.map(|d| d.0)).await?;
            a.wait.retire(&engine, &report).await?;
            report_outcome(report, &a.wait, printer)
        }
        RolloutCommand::Resume(a) => {
            check(&a.service)?;
            let engine = engine(a.wait.timing());
            let report = ops::resume(&engine, &a.service, a.wait.timeout.map(|d| d.0)).await?;
            a.wait.retire(&engine, &report).await?;
            report_outcome(report, &a.wait, printer)
        }
    }
}

/// `deploy` to a Kubernetes environment.
async fn deploy_kube(
    args: DeployArgs,
    environment: manifest::Environment,
    global: &GlobalArgs,
    printer: &Printer,
) -> anyhow::Result<Outcome> {
    use dronectl::k8s::{self, DeployOptions, Images};
    let mut images = Images {
        artifacts: match &args.artifacts {
            Some(f) => dronectl::build::artifacts::read(f)?,
            None => vec![],
        },
        tag: args.tag.clone(),
        ..Default::default()
    };
    if let Some(image) = &args.image {
        let service = args.service.clone().ok_or_else(|| {
            UsageError("--image names one image: name the service it is for".into())
        })?;
        let version = image
            .rsplit_once(':')
            .map_or("latest".to_string(), |(_, t)| t.to_string());
        images.overrides.insert(service, (image.clone(), version));
    }
    let kind = if args.canary {
        Some(StrategyKind::Canary)
    } else if args.blue_green {
        Some(StrategyKind::BlueGreen)
    } else if args.rolling {
        Some(StrategyKind::Rolling)
    } else {
        None
    };
    let opts = DeployOptions {
        services: args.service.iter().cloned().collect(),
        images,
        kind,
        strategy: args.strategy.clone(),
        timing: args.wait.timing(),
        timeout: args.wait.timeout.map(|d| d.0),
        dry_run: args.dry_run.map(Into::into),
        create_namespace: args.create_namespace,
    };
    if args.dry_run == Some(DryRunArg::Client) {
        // Nothing is sent: no cluster needed.
        let m = &environment.manifest;
        let kenv = k8s::KubeEnv::new(&environment, args.kube.namespace.as_deref());
        let revisions = opts.images.revisions(&kenv, m, &opts.services)?;
        let objects = k8s::render::render_app(
            &kenv,
            m,
            &opts.services,
            &revisions,
            k8s::RollingParams {
                max_surge: 1,
                max_unavailable: 0,
            },
        );
        printer.result_line(k8s::render::to_yaml(&objects)?.trim_end());
        return Ok(Outcome::ok(json!({
            "env": environment.name,
            "dry_run": "client",
            "objects": objects.iter().map(|o| o.to_value()).collect::<Vec<_>>(),
        })));
    }
    {
        let mut target =
            k8s::KubeTarget::connect(&environment, &args.kube.connect_options(global.yes)).await?;
        target.platform.force_conflicts = args.force_conflicts;
        printer.status(
            "Deploying",
            &format!(
                "to {} (context {}, namespace {})",
                environment.name, target.context, target.kenv.namespace
            ),
        );
        let outcome = k8s::deploy(&target, &opts, printer).await?;
        let engine = target.engine(printer, opts.timing);
        futures_util::future::try_join_all(
            outcome
                .services
                .iter()
                .map(|r| args.wait.retire(&engine, r)),
        )
        .await?;
        if opts.dry_run.is_some() {
            for o in &outcome.objects {
                printer.result_line("---");
                printer.result_line(serde_saphyr::to_string(o)?.trim_end());
            }
        }
        // Rollout events told the rest; these outcomes have no event of their own.
        for r in &outcome.services {
            if let Some(verb) = r.outcome.status_verb() {
                printer.status(verb, &r.message);
            }
        }
        for s in &outcome.skipped {
            printer.status("Skipped", &s.message);
        }
        let mut code = outcome.code;
        if code == ExitCode::Paused && args.wait.success_on_pause {
            code = ExitCode::Success;
        }
        Ok(Outcome {
            code,
            result: serde_json::to_value(&outcome)?,
        })
    }
}

/// How the service's replica count is decided, when it is not simply the manifest's.
fn print_scaling(view: &ops::StatusView, printer: &Printer) {
    match (&view.autoscaler, view.autoscale) {
        (Some(a), _) => {
            let metrics = if a.metrics.is_empty() {
                String::new()
            } else {
                format!(", {}", a.metrics.join(", "))
            };
            printer.result_line(&format!(
                "  autoscaler {} → {}: {} running, {} wanted (bounds {}..{}{metrics})",
                a.name, a.target, a.current, a.desired, a.min, a.max
            ));
        }
        (None, Some(b)) => printer.result_line(&format!(
            "  autoscale  {}..{} replicas: no autoscaler runs on this target, so it runs {} (the minimum)",
            b.min, b.max, b.min
        )),
        (None, None) => {}
    }
    if let Some(s) = view.scaled {
        printer.result_line(&format!(
            "  scaled     to {} replicas by `dronectl scale`; deploys keep {} while dronectl.yaml says replicas: {}",
            s.replicas, s.replicas, s.manifest
        ));
    }
}

fn print_status(view: &ops::StatusView, printer: &Printer) {
    let number = view.rollout.as_ref().map_or(String::new(), |r| {
        format!(" #{} ({})", r.number, r.plan.name)
    });
    printer.result_line(&format!("{}{number}: {}", view.service, view.phase));
    if let Some(step) = &view.step {
        printer.result_line(&format!("  step:      {step}"));
    }
    for (role, rev) in [("stable", &view.stable), ("candidate", &view.candidate)] {
        if let Some(r) = rev {
            let traffic = if r.effective_weight == r.weight {
                format!("{}% traffic", r.weight)
            } else {
                format!(
                    "{}% traffic by replica ratio ({}% requested)",
                    r.effective_weight, r.weight
                )
            };
            printer.result_line(&format!(
                "  {role:<10} {} — {traffic}, {}/{} ready{}",
                r.revision.label(),
                r.status.ready,
                r.revision.replicas,
                r.status
                    .failure
                    .as_ref()
                    .map_or(String::new(), |f| format!(", {}: {}", f.reason, f.message))
            ));
        }
    }
    print_scaling(view, printer);
    if let Some(r) = &view.rollout {
        if let Some(a) = &r.analysis {
            for m in &a.measurements {
                printer.result_line(&format!(
                    "  analysis {}: {:?} {}",
                    a.name, m.outcome, m.detail
                ));
            }
        }
        if !r.message.is_empty() {
            printer.result_line(&format!("  {}", r.message));
        }
    }
    for r in &view.retired {
        printer.result_line(&format!(
            "  {:<10} {} until {}{}",
            if r.warm { "warm" } else { "removing" },
            r.revision.label(),
            ops::clock(r.until_ms),
            if r.warm {
                " (`rollout undo` switches back instantly)"
            } else {
                ""
            }
        ));
    }
    if view.driven {
        printer.result_line("  a dronectl process is driving this rollout now");
    }
}
