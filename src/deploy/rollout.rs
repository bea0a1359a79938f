//! `dronectl rollout status|history|promote|abort|undo|resume` and `dronectl scale`, on
//! either target: the same operations over its platform and state store.

use std::time::Duration;

use crate::exit::{ExitCode, UsageError};
use crate::k8s::ConnectOptions;
use crate::manifest::Manifest;
use crate::rollout::ops::{self, DriveReport, ScaleReport, StatusView};
use crate::rollout::replicas::Bounds;
use crate::rollout::state::HistoryEntry;
use crate::rollout::{Engine, Platform, Request, StateStore, Timing};

use super::{AppLocation, ConnectedTarget, DeployReporter, ResolvedTarget, WaitOptions};

/// A rollout command for one service.
#[derive(Debug, Clone)]
pub struct RolloutRequest {
    pub app: AppLocation,
    pub env: Option<String>,
    /// Kubernetes: how to reach the cluster.
    pub connect: ConnectOptions,
    pub service: String,
    pub action: RolloutAction,
}

/// What to do with the service's rollout.
#[derive(Debug, Clone)]
pub enum RolloutAction {
    /// Where it stands; with `wait`, once it ends or pauses (or `timeout` passes); with
    /// `revision`, pinned to the rollout of that revision.
    Status {
        wait: bool,
        timeout: Option<Duration>,
        revision: Option<String>,
    },
    /// The service's rollouts.
    History,
    /// Continue past the current pause (`full`: skip every remaining step).
    Promote { full: bool, wait: WaitOptions },
    /// Traffic back to the stable version, then remove the candidate.
    Abort(WaitOptions),
    /// Back to the rollout numbered `to` (else the previous one).
    Undo { to: Option<u64>, wait: WaitOptions },
    /// Continue a rollout whose dronectl was stopped or timed out.
    Resume(WaitOptions),
}

/// What a rollout command found or did.
#[derive(Debug)]
pub struct RolloutReport {
    pub code: ExitCode,
    pub outcome: RolloutOutcome,
}

#[derive(Debug)]
pub enum RolloutOutcome {
    /// `status`; `stalled`: the rollout waited on is in progress and no dronectl drives it.
    Status {
        view: Box<StatusView>,
        stalled: bool,
    },
    History(Vec<HistoryEntry>),
    /// The rollout driven (promote, abort, undo, resume).
    Driven(Box<DriveReport>),
}

impl RolloutRequest {
    /// Runs the command on the target of its environment.
    pub async fn run(&self, reporter: &dyn DeployReporter) -> anyhow::Result<RolloutReport> {
        let target = ResolvedTarget::resolve(&self.app, self.env.as_deref())?;
        match target.connect(&self.connect).await? {
            ConnectedTarget::Kubernetes(t) => {
                self.on(&t.platform, &t.store, &t.manifest, reporter).await
            }
            ConnectedTarget::Local(t) => {
                let manifest = &t.manifest.manifest;
                self.on(&t.platform, &t.store, manifest, reporter).await
            }
        }
    }

    /// The command over any platform and state store, for the services of `manifest` (the
    /// environment's effective manifest).
    async fn on<P: Platform, S: StateStore>(
        &self,
        platform: &P,
        store: &S,
        manifest: &Manifest,
        reporter: &dyn DeployReporter,
    ) -> anyhow::Result<RolloutReport> {
        let service = &self.service;
        if !manifest.services.contains_key(service) {
            return Err(UsageError(format!("no service `{service}` in dronectl.yaml")).into());
        }
        let engine = |timing: Timing| {
            let mut engine = Engine::new(platform, store, reporter);
            engine.timing = timing;
            engine
        };
        let driven = |wait: &WaitOptions, report: DriveReport| RolloutReport {
            code: wait.code(report.exit_code()),
            outcome: RolloutOutcome::Driven(Box::new(report)),
        };
        match &self.action {
            RolloutAction::Status {
                wait,
                timeout,
                revision,
            } => {
                let (mut view, end) = if *wait || revision.is_some() {
                    let timeout = if *wait {
                        *timeout
                    } else {
                        Some(Duration::ZERO)
                    };
                    ops::wait_status(platform, store, service, revision.as_deref(), timeout).await?
                } else {
                    (
                        ops::status(platform, store, service).await?,
                        ops::WaitEnd::Settled,
                    )
                };
                view.autoscale = Bounds::of(manifest.services[service].value.autoscale.as_ref());
                let (code, stalled) = match end {
                    ops::WaitEnd::TimedOut if *wait => (ExitCode::TimedOut, false),
                    ops::WaitEnd::Undriven if *wait => (ExitCode::Failed, true),
                    _ => (view.exit_code(), false),
                };
                Ok(RolloutReport {
                    code,
                    outcome: RolloutOutcome::Status {
                        view: Box::new(view),
                        stalled,
                    },
                })
            }
            RolloutAction::History => Ok(RolloutReport {
                code: ExitCode::Success,
                outcome: RolloutOutcome::History(ops::history(store, service).await?),
            }),
            RolloutAction::Promote { full, wait } => {
                let engine = engine(wait.timing);
                let request = if *full {
                    Request::PromoteFull
                } else {
                    Request::Promote
                };
                let report = ops::request(&engine, service, request, wait.timeout).await?;
                wait.retire(&engine, &report).await?;
                Ok(driven(wait, report))
            }
            RolloutAction::Abort(wait) => {
                let engine = engine(wait.timing);
                let report = ops::request(&engine, service, Request::Abort, wait.timeout).await?;
                wait.retire(&engine, &report).await?;
                let mut report = driven(wait, report);
                // An abort that was asked for and happened is what the user wanted.
                if report.code == ExitCode::Aborted {
                    report.code = ExitCode::Success;
                }
                Ok(report)
            }
            RolloutAction::Undo { to, wait } => {
                let engine = engine(wait.timing);
                let report = ops::undo(&engine, service, *to, wait.timeout).await?;
                wait.retire(&engine, &report).await?;
                Ok(driven(wait, report))
            }
            RolloutAction::Resume(wait) => {
                let engine = engine(wait.timing);
                let report = ops::resume(&engine, service, wait.timeout).await?;
                wait.retire(&engine, &report).await?;
                Ok(driven(wait, report))
            }
        }
    }
}

/// `dronectl scale`: the replica count of a service's live version, without a rollout.
#[derive(Debug, Clone)]
pub struct ScaleRequest {
    pub app: AppLocation,
    pub env: Option<String>,
    /// Kubernetes: how to reach the cluster.
    pub connect: ConnectOptions,
    pub service: String,
    pub replicas: u32,
    /// Replicas not ready after this long fail the command.
    pub progress_deadline: Duration,
}

/// Scales the service on the target of its environment.
pub async fn scale(
    request: &ScaleRequest,
    reporter: &dyn DeployReporter,
) -> anyhow::Result<ScaleReport> {
    let target = ResolvedTarget::resolve(&request.app, request.env.as_deref())?;
    match target.connect(&request.connect).await? {
        ConnectedTarget::Kubernetes(t) => {
            scale_on(request, &t.platform, &t.store, &t.manifest, reporter).await
        }
        ConnectedTarget::Local(t) => {
            let manifest = &t.manifest.manifest;
            scale_on(request, &t.platform, &t.store, manifest, reporter).await
        }
    }
}

async fn scale_on<P: Platform, S: StateStore>(
    request: &ScaleRequest,
    platform: &P,
    store: &S,
    manifest: &Manifest,
    reporter: &dyn DeployReporter,
) -> anyhow::Result<ScaleReport> {
    let Some(service) = manifest.services.get(&request.service) else {
        return Err(
            UsageError(format!("no service `{}` in dronectl.yaml", request.service)).into(),
        );
    };
    if let Some(bounds) = Bounds::of(service.value.autoscale.as_ref()) {
        return Err(ops::autoscaled(&request.service, bounds));
    }
    let mut engine = Engine::new(platform, store, reporter);
    engine.timing.progress_deadline = request.progress_deadline;
    ops::scale(&engine, &request.service, request.replicas).await
}
