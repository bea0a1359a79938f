//! `dronectl deploy` and `dronectl rollout status|promote|abort|undo|history|resume`.

use std::path::{Path, PathBuf};

use clap::{ArgGroup, Args, Subcommand};
use serde_json::json;

use dronectl::deploy::{
    self, Deployed, ImageSource, RolloutAction, RolloutOutcome, RolloutRequest, ScaleRequest,
    StrategyChoice, WaitOptions,
};
use dronectl::manifest::{self, StrategyKind};
use dronectl::rollout::{ops, Timing};

use super::kube::{DryRunArg, KubeArgs};
use super::printer::Printer;
use super::{GlobalArgs, Outcome};

pub const DEPLOY_EXAMPLES: &str = "Examples:\n  dronectl deploy delivery                     # the strategy from dronectl.yaml (default rolling)\n  dronectl deploy delivery --canary --timeout 10m\n  dronectl deploy delivery --blue-green\n  dronectl deploy delivery --strategy careful-canary\n  dronectl deploy delivery --artifacts build.json\n  dronectl deploy delivery --image drone-delivery/delivery:1.2.0-abc1234\n\n\nKubernetes environments (`target: kubernetes`):\n  dronectl deploy --env staging --artifacts build.json      # every service + infrastructure\n  dronectl deploy delivery --env staging --tag 1.2.0-abc1234 --canary\n  dronectl deploy --env staging --tag 1.2.0 --dry-run=server\n\nBuilds the service (unless told which image to run), then rolls it out and waits.\nOn Kubernetes nothing is built: images come from --artifacts, --tag or --image.\nExit codes: 0 done, 1 failed, 2 usage, 3 aborted and rolled back, 4 timed out,\n5 paused waiting for `dronectl rollout promote`.";

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
    fn options(&self) -> WaitOptions {
        WaitOptions {
            timing: Timing {
                progress_deadline: self.progress_deadline.0,
                ..Default::default()
            },
            timeout: self.timeout.map(|d| d.0),
            success_on_pause: self.success_on_pause,
            no_wait_retire: self.no_wait_retire,
        }
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
    let request = ScaleRequest {
        app: global.app(cwd),
        env: global.env.clone(),
        connect: args.kube.connect_options(global.yes),
        service: args.service,
        replicas: args.replicas,
        progress_deadline: args.progress_deadline.0,
    };
    let report = deploy::scale(&request, printer).await?;
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

/// The outcomes that have no rollout event of their own (the events told the rest).
fn print_verb(report: &ops::DriveReport, printer: &Printer) {
    if let Some(verb) = report.outcome.status_verb() {
        printer.status(verb, &report.message);
    }
}

pub async fn deploy(
    args: DeployArgs,
    global: &GlobalArgs,
    cwd: &Path,
    printer: &Printer,
) -> anyhow::Result<Outcome> {
    let images = match (args.image, args.artifacts, args.tag) {
        (Some(image), _, _) => ImageSource::Image(image),
        (_, Some(file), _) => ImageSource::Artifacts(file),
        (_, _, Some(tag)) => ImageSource::Tag(tag),
        (None, None, None) => ImageSource::Build,
    };
    let kind = if args.canary {
        Some(StrategyKind::Canary)
    } else if args.blue_green {
        Some(StrategyKind::BlueGreen)
    } else if args.rolling {
        Some(StrategyKind::Rolling)
    } else {
        None
    };
    let request = deploy::DeployRequest {
        app: global.app(cwd),
        env: global.env.clone(),
        services: args.service.into_iter().collect(),
        images,
        strategy: StrategyChoice {
            kind,
            name: args.strategy,
        },
        wait: args.wait.options(),
        dry_run: args.dry_run.map(Into::into),
        force_conflicts: args.force_conflicts,
        create_namespace: args.create_namespace,
        connect: args.kube.connect_options(global.yes),
    };
    let report = deploy::run(&request, printer).await?;
    let result = match &report.deployed {
        Deployed::Service(r) => {
            print_verb(r, printer);
            serde_json::to_value(r)?
        }
        Deployed::Services(reports) => {
            reports.iter().for_each(|r| print_verb(r, printer));
            json!({ "services": reports })
        }
        Deployed::Rendered(rendered) => {
            printer.result_line(rendered.yaml.trim_end());
            json!({
                "env": rendered.env,
                "dry_run": "client",
                "objects": rendered.objects,
            })
        }
        Deployed::Kubernetes(outcome) => {
            if request.dry_run.is_some() {
                for o in &outcome.objects {
                    printer.result_line("---");
                    printer.result_line(serde_saphyr::to_string(o)?.trim_end());
                }
            }
            outcome.services.iter().for_each(|r| print_verb(r, printer));
            for s in &outcome.skipped {
                printer.status("Skipped", &s.message);
            }
            serde_json::to_value(outcome)?
        }
    };
    Ok(Outcome {
        code: report.code,
        result,
    })
}

pub async fn rollout(
    cmd: RolloutCommand,
    global: &GlobalArgs,
    cwd: &Path,
    printer: &Printer,
) -> anyhow::Result<Outcome> {
    let (service, kube, action) = match cmd {
        RolloutCommand::Status(a) => (
            a.service,
            a.kube,
            RolloutAction::Status {
                wait: a.wait,
                timeout: a.timeout.map(|d| d.0),
                revision: a.revision,
            },
        ),
        RolloutCommand::History(a) => (a.service, a.kube, RolloutAction::History),
        RolloutCommand::Promote(a) => (
            a.service,
            a.kube,
            RolloutAction::Promote {
                full: a.full,
                wait: a.wait.options(),
            },
        ),
        RolloutCommand::Abort(a) => (a.service, a.kube, RolloutAction::Abort(a.wait.options())),
        RolloutCommand::Undo(a) => (
            a.service,
            a.kube,
            RolloutAction::Undo {
                to: a.to,
                wait: a.wait.options(),
            },
        ),
        RolloutCommand::Resume(a) => (a.service, a.kube, RolloutAction::Resume(a.wait.options())),
    };
    let request = RolloutRequest {
        app: global.app(cwd),
        env: global.env.clone(),
        connect: kube.connect_options(global.yes),
        service,
        action,
    };
    let report = request.run(printer).await?;
    let result = match &report.outcome {
        RolloutOutcome::Status { view, stalled } => {
            print_status(view, printer);
            if *stalled {
                printer.status("Stalled", &format!("no dronectl is driving this rollout; `dronectl rollout resume {}` continues it", request.service));
            }
            serde_json::to_value(view)?
        }
        RolloutOutcome::History(history) => {
            printer.result_line(&format!(
                "{:>4}  {:<30} {:<24} {:<10} {}",
                "#", "VERSION (REVISION)", "STRATEGY", "OUTCOME", "MESSAGE"
            ));
            for h in history {
                printer.result_line(&format!(
                    "{:>4}  {:<30} {:<24} {:<10} {}",
                    h.number,
                    h.revision.label(),
                    h.strategy,
                    h.outcome,
                    h.message
                ));
            }
            json!({"service": request.service, "history": history})
        }
        RolloutOutcome::Driven(r) => {
            print_verb(r, printer);
            serde_json::to_value(r)?
        }
    };
    Ok(Outcome {
        code: report.code,
        result,
    })
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
