//! What `rollout status` and `rollout history` show, and `rollout status --wait`.

use std::time::Duration;

use serde::Serialize;

use crate::rollout::engine::{describe_phase, DriveOutcome};
use crate::rollout::outcome::Outcome;
use crate::rollout::platform::{Platform, Revision, RevisionStatus};
use crate::rollout::state::{HistoryEntry, LockHeld, Phase, RolloutState, Scaled, StateStore};

/// A retired revision as `rollout status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RetiredView {
    pub revision: Revision,
    /// Still running (kept warm for an instant undo) rather than an aborted candidate.
    pub warm: bool,
    /// When it is removed (milliseconds since the Unix epoch).
    pub until_ms: u64,
}

/// A revision and how its replicas are doing.
#[derive(Debug, Clone, Serialize)]
pub struct RevisionView {
    pub revision: Revision,
    pub status: RevisionStatus,
    /// Traffic percentage asked for.
    pub weight: u32,
    /// Traffic percentage it really gets (a replica ratio may differ from `weight`).
    pub effective_weight: u32,
}

/// Everything `rollout status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct StatusView {
    pub service: String,
    pub rollout: Option<RolloutState>,
    /// `progressing`, `paused until promoted`, ... or `none`.
    pub phase: String,
    pub step: Option<String>,
    pub stable: Option<RevisionView>,
    pub candidate: Option<RevisionView>,
    /// Whether a process is driving the rollout now.
    pub driven: bool,
    /// Revisions waiting for their delay to end before they are removed.
    pub retired: Vec<RetiredView>,
    /// The count `dronectl scale` set, while the manifest's `replicas` stays the same.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scaled: Option<Scaled>,
    /// The service's autoscaler, where the platform runs one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autoscaler: Option<crate::rollout::Autoscaler>,
    /// The manifest's `autoscale` bounds (set by the caller, which has the manifest; the
    /// local target runs `min` replicas, having no autoscaler).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<crate::rollout::replicas::Bounds>,
}

impl StatusView {
    /// Exit code of `rollout status`: 0 completed or progressing, 1 failed, 3 aborted, 5 paused.
    /// A timed pause is progress (0); a pause waiting for promotion is [`Outcome::Paused`].
    pub fn exit_code(&self) -> crate::exit::ExitCode {
        let outcome = match self.rollout.as_ref().map(|r| &r.phase) {
            Some(Phase::Paused {
                reason:
                    crate::rollout::PauseReason::UntilPromoted
                    | crate::rollout::PauseReason::Inconclusive { .. },
            }) => Some(Outcome::Paused),
            Some(phase) => DriveOutcome::of(phase).map(Outcome::from),
            None => None,
        };
        outcome.map_or(crate::exit::ExitCode::Success, Outcome::exit_code)
    }
}

/// Where the service's rollout stands, with live replica counts.
pub async fn status<P: Platform, S: StateStore>(
    platform: &P,
    store: &S,
    service: &str,
) -> anyhow::Result<StatusView> {
    let rollout = store.load(service).await?;
    let record = store.load_record(service).await?;
    let driven = match store.lock(service, "status probe").await {
        Ok(lock) => {
            store.unlock(lock).await;
            false
        }
        Err(e) if e.is::<LockHeld>() => true,
        Err(e) => return Err(e),
    };
    let view = |revision: Revision, weight: u32| async move {
        let status = platform
            .status(service, &revision)
            .await
            .unwrap_or_default();
        RevisionView {
            revision,
            status,
            weight,
            effective_weight: weight,
        }
    };
    let (stable, candidate, phase, step) = match &rollout {
        Some(r) if !r.phase.is_terminal() => (
            match r.stable.clone() {
                Some(s) => Some(view(s, 100 - r.weight).await),
                None => None,
            },
            Some(
                view(
                    r.candidate.clone(),
                    if r.stable.is_none() { 100 } else { r.weight },
                )
                .await,
            ),
            describe_phase(&r.phase),
            (r.stable.is_some() && !r.plan.steps.is_empty()).then(|| r.plan.describe_step(r.step)),
        ),
        Some(r) => (
            match record.stable.clone() {
                Some(s) => Some(view(s, 100).await),
                None => None,
            },
            None,
            describe_phase(&r.phase),
            None,
        ),
        None => (
            match record.stable.clone() {
                Some(s) => Some(view(s, 100).await),
                None => None,
            },
            None,
            "none".into(),
            None,
        ),
    };
    let (mut stable, mut candidate) = (stable, candidate);
    if let (Some(s), Some(c)) = (stable.as_mut(), candidate.as_mut()) {
        let weights = crate::rollout::Weights::from([
            (c.revision.id.clone(), c.weight),
            (s.revision.id.clone(), s.weight),
        ]);
        let surge = rollout.as_ref().map_or(0, |r| r.plan.max_surge);
        let (effective, _) =
            platform.effective_weights(service, &weights, &[&c.revision, &s.revision], surge);
        c.effective_weight = effective.get(&c.revision.id).copied().unwrap_or(c.weight);
        s.effective_weight = effective.get(&s.revision.id).copied().unwrap_or(s.weight);
    }
    // Best effort: a status that cannot read the autoscaler still shows the rollout.
    let autoscaler = platform.autoscaler(service).await.unwrap_or(None);
    Ok(StatusView {
        scaled: record.scaled,
        autoscaler,
        autoscale: None,
        service: service.into(),
        rollout,
        phase,
        step,
        stable,
        candidate,
        driven,
        retired: record
            .retired
            .iter()
            .map(|r| RetiredView {
                revision: r.revision.clone(),
                warm: r.warm,
                until_ms: r.remove_after_ms,
            })
            .collect(),
    })
}

/// The service's rollout history, oldest first.
pub async fn history<S: StateStore>(store: &S, service: &str) -> anyhow::Result<Vec<HistoryEntry>> {
    Ok(store.load_record(service).await?.history)
}

/// How `rollout status --wait` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitEnd {
    /// The rollout reached an end, or a pause for promotion.
    Settled,
    /// The rollout is in progress but no dronectl drives it (`rollout resume` continues it).
    Undriven,
    TimedOut,
}

/// Waits until the service's rollout ends or pauses for promotion (or `timeout` passes),
/// then returns its status. With `revision` (a revision id or version), the wait is pinned
/// to the rollout of that revision: a rollout of another revision is an error, and a
/// revision that already is stable is done.
pub async fn wait_status<P: Platform, S: StateStore>(
    platform: &P,
    store: &S,
    service: &str,
    revision: Option<&str>,
    timeout: Option<Duration>,
) -> anyhow::Result<(StatusView, WaitEnd)> {
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    loop {
        let view = status(platform, store, service).await?;
        if let Some(wanted) = revision {
            let matches = |r: &Revision| r.id == wanted || r.version == wanted;
            match &view.rollout {
                Some(r) if matches(&r.candidate) => {}
                _ if view.stable.as_ref().is_some_and(|s| matches(&s.revision)) => {
                    return Ok((view, WaitEnd::Settled))
                }
                Some(r) => anyhow::bail!(crate::exit::UsageError(format!(
                    "the current rollout of `{service}` (#{}) is for {}, not `{wanted}`",
                    r.number,
                    r.candidate.label()
                ))),
                None => anyhow::bail!(crate::exit::UsageError(format!(
                    "`{service}` has no rollout of `{wanted}`"
                ))),
            }
        }
        let settled = match view.rollout.as_ref().map(|r| &r.phase) {
            None => true,
            Some(phase) if phase.is_terminal() => true,
            Some(Phase::Paused {
                reason:
                    crate::rollout::PauseReason::UntilPromoted
                    | crate::rollout::PauseReason::Inconclusive { .. },
            }) => true,
            _ => false,
        };
        if settled {
            return Ok((view, WaitEnd::Settled));
        }
        if !view.driven {
            return Ok((view, WaitEnd::Undriven));
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            return Ok((view, WaitEnd::TimedOut));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
