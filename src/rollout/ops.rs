//! The rollout commands, for any platform and state store: deploy, status, promote,
//! abort, undo, resume, history. Each takes the service's lock when it drives the
//! rollout; promote and abort only post a request when another process is driving.

use std::time::Duration;

use serde::Serialize;

use super::engine::{describe_phase, DriveOutcome, Engine, Started};
use super::outcome::Outcome;
use super::plan::Plan;
use super::platform::{Platform, Revision, RevisionStatus};
use super::state::{HistoryEntry, LockHeld, Phase, Request, RolloutState, Scaled, StateStore};

/// What a driving command ended with.
#[derive(Debug, Clone, Serialize)]
pub struct DriveReport {
    pub service: String,
    pub outcome: Outcome,
    pub number: Option<u64>,
    pub message: String,
    pub state: Option<RolloutState>,
}

impl DriveReport {
    pub fn exit_code(&self) -> crate::exit::ExitCode {
        self.outcome.exit_code()
    }

    fn from_drive(service: &str, outcome: DriveOutcome, state: RolloutState) -> DriveReport {
        let message = match outcome {
            DriveOutcome::TimedOut => format!(
                "timed out while {}; the rollout is kept: `dronectl rollout resume {service}` continues it",
                describe_phase(&state.phase)
            ),
            _ => state.message.clone(),
        };
        DriveReport {
            service: service.into(),
            outcome: outcome.into(),
            number: Some(state.number),
            message,
            state: Some(state),
        }
    }
}

fn holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("dronectl pid {} on {}", std::process::id(), host.trim())
}

/// Starts a rollout of `candidate` and drives it.
pub async fn deploy<P: Platform, S: StateStore>(
    engine: &Engine<'_, P, S>,
    service: &str,
    candidate: Revision,
    plan: Plan,
    timeout: Option<Duration>,
) -> anyhow::Result<DriveReport> {
    let _lock = engine.store.lock(service, &holder())?;
    match engine.start(service, candidate, plan).await? {
        Started::Unchanged(revision) => Ok(DriveReport {
            service: service.into(),
            outcome: Outcome::Unchanged,
            number: None,
            message: format!(
                "{} already runs {}; nothing to do",
                service,
                revision.label()
            ),
            state: None,
        }),
        Started::New(_) => {
            let (outcome, state) = engine.drive(service, timeout).await?;
            Ok(DriveReport::from_drive(service, outcome, state))
        }
    }
}

/// Continues an interrupted or paused rollout.
pub async fn resume<P: Platform, S: StateStore>(
    engine: &Engine<'_, P, S>,
    service: &str,
    timeout: Option<Duration>,
) -> anyhow::Result<DriveReport> {
    let _lock = engine.store.lock(service, &holder())?;
    engine.collect_garbage(service).await?;
    let (outcome, state) = engine.drive(service, timeout).await?;
    Ok(DriveReport::from_drive(service, outcome, state))
}

/// Posts `request`; drives the rollout when no other process does.
pub async fn request<P: Platform, S: StateStore>(
    engine: &Engine<'_, P, S>,
    service: &str,
    request: Request,
    timeout: Option<Duration>,
) -> anyhow::Result<DriveReport> {
    let state = engine
        .store
        .load(service)?
        .ok_or_else(|| super::EngineError::NoRollout(service.into()))?;
    if state.phase.is_terminal() {
        anyhow::bail!(crate::exit::UsageError(format!(
            "rollout #{} of `{service}` has already ended ({}); nothing to {}",
            state.number,
            describe_phase(&state.phase),
            if request == Request::Abort {
                "abort"
            } else {
                "promote"
            }
        )));
    }
    engine.store.post(service, request)?;
    match engine.store.lock(service, &holder()) {
        Ok(_lock) => {
            let (outcome, state) = engine.drive(service, timeout).await?;
            Ok(DriveReport::from_drive(service, outcome, state))
        }
        Err(e) if e.is::<LockHeld>() => Ok(DriveReport {
            service: service.into(),
            outcome: Outcome::Requested,
            number: Some(state.number),
            message: format!("requested; {e}"),
            state: Some(state),
        }),
        Err(e) => Err(e),
    }
}

/// Rolls back to the previous revision (or rollout `to`).
pub async fn undo<P: Platform, S: StateStore>(
    engine: &Engine<'_, P, S>,
    service: &str,
    to: Option<u64>,
    timeout: Option<Duration>,
) -> anyhow::Result<DriveReport> {
    let _lock = engine.store.lock(service, &holder())?;
    engine.undo(service, to).await?;
    let (outcome, state) = engine.drive(service, timeout).await?;
    Ok(DriveReport::from_drive(service, outcome, state))
}

/// What `dronectl scale` did.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleReport {
    pub service: String,
    /// The live revision that was scaled.
    pub revision: String,
    pub version: String,
    pub from: u32,
    pub to: u32,
    /// The manifest's `replicas`; a deploy keeps `to` while the manifest keeps this count.
    pub manifest_replicas: u32,
    /// Replicas ready when the command returned.
    pub ready: u32,
}

/// Changes the replica count of the live revision of `service`, without a rollout:
/// refused while a rollout is in progress, for an autoscaled service and for a service
/// that is not running. Holds the service's lock, so it cannot race a deploy. Returns
/// once the new count is ready (scaling down: once the removed replicas are gone).
pub async fn scale<P: Platform, S: StateStore>(
    engine: &Engine<'_, P, S>,
    service: &str,
    replicas: u32,
) -> anyhow::Result<ScaleReport> {
    let _lock = engine.store.lock(service, &holder())?;
    if let Some(state) = engine.store.load(service)? {
        if !state.phase.is_terminal() {
            anyhow::bail!(crate::exit::UsageError(format!(
                "a rollout of `{service}` is in progress (#{}, {}): finish it with `dronectl rollout promote|abort {service}`",
                state.number,
                describe_phase(&state.phase)
            )));
        }
    }
    let mut record = engine.store.load_record(service)?;
    let Some(stable) = record.stable.clone() else {
        anyhow::bail!(crate::exit::UsageError(format!(
            "`{service}` is not running: deploy it first (`dronectl deploy {service}` or `dronectl up`)"
        )));
    };
    if let Some(bounds) = &stable.autoscale {
        anyhow::bail!(crate::exit::UsageError(format!(
            "`{service}` is autoscaled ({}..{} replicas): change `autoscale.min` / `autoscale.max` in dronectl.yaml instead",
            bounds.min, bounds.max
        )));
    }
    let from = stable.replicas;
    let manifest = record.scaled.map_or(from, |s| s.manifest);
    engine.platform.scale(service, &stable, replicas).await?;
    let deadline = std::time::Instant::now() + engine.timing.progress_deadline;
    let ready = loop {
        let status = engine.platform.status(service, &stable).await?;
        if let Some(failure) = status.failure {
            anyhow::bail!(
                "scaling `{service}` to {replicas}: {}: {}",
                failure.reason,
                failure.message
            );
        }
        if status.ready >= replicas && status.current <= replicas {
            break status.ready;
        }
        if std::time::Instant::now() >= deadline {
            anyhow::bail!(
                "scaling `{service}` to {replicas}: {} of {replicas} replicas ready after {:?}",
                status.ready,
                engine.timing.progress_deadline
            );
        }
        tokio::time::sleep(engine.timing.poll).await;
    };
    let mut scaled = stable.clone();
    scaled.replicas = replicas;
    record.stable = Some(scaled);
    record.scaled = (replicas != manifest).then_some(Scaled { replicas, manifest });
    engine.store.save_record(service, &record)?;
    Ok(ScaleReport {
        service: service.into(),
        revision: stable.id.clone(),
        version: stable.version.clone(),
        from,
        to: replicas,
        manifest_replicas: manifest,
        ready,
    })
}

/// `HH:MM:SS UTC` of a time in milliseconds since the Unix epoch, for messages.
pub fn clock(ms: u64) -> String {
    let s = (ms / 1000) % 86_400;
    format!("{:02}:{:02}:{:02} UTC", s / 3600, (s % 3600) / 60, s % 60)
}

/// Whether a command that ended with `report` waits for the service's retired revisions
/// (only once its rollout has ended: completed, aborted or failed).
pub fn retires_after(report: &DriveReport) -> bool {
    report.outcome.is_end()
}

/// Waits until each retired revision of `service` (the previous version kept warm for an
/// instant undo, an aborted candidate) is due and removes it, so that nothing outlives its
/// delay even when no dronectl runs afterwards. The lock is not held while waiting: an
/// `undo` or the next deploy may run meanwhile; whoever holds the lock when a revision is
/// due removes it, and this wait ends when another process holds it. Interrupted, the
/// removal time stays recorded and the next command for the service removes it.
pub async fn retire<P: Platform, S: StateStore>(
    engine: &Engine<'_, P, S>,
    service: &str,
) -> anyhow::Result<()> {
    use crate::events::Event;
    let mut told = std::collections::BTreeSet::new();
    loop {
        let record = engine.store.load_record(service)?;
        let Some(next) = record.retired.iter().map(|r| r.remove_after_ms).min() else {
            return Ok(());
        };
        for r in &record.retired {
            if told.insert((r.revision.id.clone(), r.remove_after_ms)) {
                let message = if r.warm {
                    format!(
                        "{service}: keeping {} warm until {} for instant undo (Ctrl-C or --no-wait-retire to hand off)",
                        r.revision.label(),
                        clock(r.remove_after_ms)
                    )
                } else {
                    format!(
                        "{service}: removing {} at {} (Ctrl-C or --no-wait-retire to hand off)",
                        r.revision.label(),
                        clock(r.remove_after_ms)
                    )
                };
                engine.reporter.event(Event::Note {
                    message,
                    verbose: false,
                });
            }
        }
        let now = super::now_ms();
        if next > now {
            // Re-read now and then: another process may have changed the record.
            tokio::time::sleep(Duration::from_millis((next - now).min(5_000))).await;
            continue;
        }
        match engine.store.lock(service, &holder()) {
            Ok(_lock) => engine.collect_garbage(service).await?,
            Err(e) if e.is::<LockHeld>() => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

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
}

impl StatusView {
    /// Exit code of `rollout status`: 0 completed or progressing, 1 failed, 3 aborted, 5 paused.
    /// A timed pause is progress (0); a pause waiting for promotion is [`Outcome::Paused`].
    pub fn exit_code(&self) -> crate::exit::ExitCode {
        let outcome = match self.rollout.as_ref().map(|r| &r.phase) {
            Some(Phase::Paused {
                reason: super::PauseReason::UntilPromoted | super::PauseReason::Inconclusive { .. },
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
    let rollout = store.load(service)?;
    let record = store.load_record(service)?;
    let driven = match store.lock(service, "status probe") {
        Ok(lock) => {
            drop(lock);
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
        let weights = super::Weights::from([
            (c.revision.id.clone(), c.weight),
            (s.revision.id.clone(), s.weight),
        ]);
        let surge = rollout.as_ref().map_or(0, |r| r.plan.max_surge);
        let (effective, _) =
            platform.effective_weights(service, &weights, &[&c.revision, &s.revision], surge);
        c.effective_weight = effective.get(&c.revision.id).copied().unwrap_or(c.weight);
        s.effective_weight = effective.get(&s.revision.id).copied().unwrap_or(s.weight);
    }
    Ok(StatusView {
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
pub fn history<S: StateStore>(store: &S, service: &str) -> anyhow::Result<Vec<HistoryEntry>> {
    Ok(store.load_record(service)?.history)
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
                reason: super::PauseReason::UntilPromoted | super::PauseReason::Inconclusive { .. },
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

#[cfg(test)]
mod tests {
    use crate::rollout::test_support::*;

    #[tokio::test]
    async fn scale_changes_the_live_count_and_later_deploys_keep_it() {
        let s = Setup::new();
        let v1 = s.deploy_stable("api:1").await;
        let engine = s.engine();
        let report = ops::scale(&engine, "api", 3).await.unwrap();
        assert_eq!((report.from, report.to, report.ready), (1, 3, 3));
        assert_eq!(s.fake.inner.lock().unwrap().replicas[&v1.id], 3);
        let record = s.store.load_record("api").unwrap();
        assert_eq!(record.stable.as_ref().unwrap().replicas, 3);
        assert_eq!(
            record.scaled,
            Some(state::Scaled {
                replicas: 3,
                manifest: 1
            })
        );
        // The same manifest (replicas: 1) again: unchanged, still 3.
        assert!(matches!(
            engine
                .start("api", rev("api:1", 1), Plan::builtin(StrategyKind::Rolling))
                .await
                .unwrap(),
            Started::Unchanged(_)
        ));
        assert_eq!(s.fake.inner.lock().unwrap().replicas[&v1.id], 3);
        // A new version with the same manifest count starts at the scaled count.
        let v2 = rev("api:2", 1);
        match engine
            .start("api", v2.clone(), Plan::builtin(StrategyKind::Rolling))
            .await
            .unwrap()
        {
            Started::New(state) => assert_eq!(state.candidate.replicas, 3),
            Started::Unchanged(_) => panic!("a new version is a rollout"),
        }
        let (outcome, _) = engine.drive("api", None).await.unwrap();
        assert_eq!(outcome, DriveOutcome::Completed);
        assert_eq!(s.fake.inner.lock().unwrap().replicas[&v2.id], 3);
        // Scaling back to the manifest's count drops the override.
        ops::scale(&engine, "api", 1).await.unwrap();
        assert_eq!(s.store.load_record("api").unwrap().scaled, None);
        ops::scale(&engine, "api", 2).await.unwrap();
        // The manifest's count changes (1 → 4): it wins over the override.
        match engine
            .start("api", rev("api:3", 4), Plan::builtin(StrategyKind::Rolling))
            .await
            .unwrap()
        {
            Started::New(state) => assert_eq!(state.candidate.replicas, 4),
            Started::Unchanged(_) => panic!("a new version is a rollout"),
        }
        assert_eq!(s.store.load_record("api").unwrap().scaled, None);
    }

    #[tokio::test]
    async fn scale_with_a_changed_manifest_count_of_the_same_revision_applies_the_manifest() {
        let s = Setup::new();
        let v1 = s.deploy_stable("api:1").await;
        let engine = s.engine();
        ops::scale(&engine, "api", 3).await.unwrap();
        assert!(matches!(
            engine
                .start("api", rev("api:1", 2), Plan::builtin(StrategyKind::Rolling))
                .await
                .unwrap(),
            Started::Unchanged(_)
        ));
        assert_eq!(s.fake.inner.lock().unwrap().replicas[&v1.id], 2);
        let record = s.store.load_record("api").unwrap();
        assert_eq!(record.scaled, None);
        assert_eq!(record.stable.unwrap().replicas, 2);
    }

    #[tokio::test]
    async fn scale_is_refused_during_a_rollout_for_an_autoscaled_and_an_undeployed_service() {
        let s = Setup::new();
        let engine = s.engine();
        let err = ops::scale(&engine, "api", 2).await.unwrap_err();
        assert!(err.is::<crate::exit::UsageError>(), "{err}");
        assert!(err.to_string().contains("is not running"), "{err}");

        s.deploy_stable("api:1").await;
        engine
            .start(
                "api",
                rev("api:2", 1),
                canary(vec![PlanStep::Weight(20), PlanStep::Pause(None)]),
            )
            .await
            .unwrap();
        let err = ops::scale(&engine, "api", 2).await.unwrap_err();
        assert!(err.is::<crate::exit::UsageError>(), "{err}");
        assert!(
            err.to_string().contains(
                "a rollout of `api` is in progress (#2, progressing): finish it with `dronectl rollout promote|abort api`"
            ) || err.to_string().contains("finish it with `dronectl rollout promote|abort api`"),
            "{err}"
        );
        assert_eq!(s.store.load_record("api").unwrap().scaled, None);

        let s = Setup::new();
        let engine = s.engine();
        let mut auto = rev("api:1", 2);
        auto.autoscale = Some(replicas::Bounds { min: 2, max: 6 });
        engine
            .start("api", auto, Plan::builtin(StrategyKind::Rolling))
            .await
            .unwrap();
        engine.drive("api", None).await.unwrap();
        let err = ops::scale(&engine, "api", 4).await.unwrap_err();
        assert!(err.is::<crate::exit::UsageError>(), "{err}");
        assert!(err.to_string().contains("autoscale.min"), "{err}");
    }
}
