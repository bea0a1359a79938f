//! The rollout commands, for any platform and state store: deploy, status, promote,
//! abort, undo, resume, history. Each takes the service's lock when it drives the
//! rollout; promote and abort only post a request when another process is driving.
//!
//! This module holds the commands that drive a rollout (and the wait for retired
//! revisions after them); [`status`] what `rollout status|history` show, [`scale`]
//! `dronectl scale`.

use std::time::Duration;

use serde::Serialize;

use super::engine::{describe_phase, DriveOutcome, Engine, Started};
use super::outcome::Outcome;
use super::plan::Plan;
use super::platform::{Platform, Revision};
use super::state::{with_lock, LockHeld, Request, RolloutState, StateStore};

mod scale;
mod status;

pub use scale::{autoscaled, scale, ScaleReport};
pub use status::{history, status, wait_status, RetiredView, RevisionView, StatusView, WaitEnd};

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

// The engine's `start`, `drive`, `undo` and `collect_garbage` futures are boxed where these
// commands await them: inline they would make every command's future, and its stack frames
// in debug builds, hundreds of kilobytes larger (a rollout test overflowed a 2 MiB stack).

/// Starts a rollout of `candidate` and drives it.
pub async fn deploy<P: Platform, S: StateStore>(
    engine: &Engine<'_, P, S>,
    service: &str,
    candidate: Revision,
    plan: Plan,
    timeout: Option<Duration>,
) -> anyhow::Result<DriveReport> {
    with_lock(engine.store, service, &holder(), async {
    match Box::pin(engine.start(service, candidate, plan)).await? {
        Started::Unchanged {
            revision,
            scaled_from,
        } => Ok(DriveReport {
            service: service.into(),
            outcome: Outcome::Unchanged,
            number: None,
            message: match scaled_from {
                Some(from) => format!(
                    "{service} already runs {}; scaled it from {from} to {} replicas, no new version",
                    revision.label(),
                    revision.replicas
                ),
                None => format!(
                    "{} already runs {}; nothing to do",
                    service,
                    revision.label()
                ),
            },
            state: None,
        }),
        Started::New(_) => {
            let (outcome, state) = Box::pin(engine.drive(service, timeout)).await?;
            Ok(DriveReport::from_drive(service, outcome, state))
        }
    }
    })
    .await
}

/// Continues an interrupted or paused rollout.
pub async fn resume<P: Platform, S: StateStore>(
    engine: &Engine<'_, P, S>,
    service: &str,
    timeout: Option<Duration>,
) -> anyhow::Result<DriveReport> {
    with_lock(engine.store, service, &holder(), async {
        Box::pin(engine.collect_garbage(service)).await?;
        let (outcome, state) = Box::pin(engine.drive(service, timeout)).await?;
        Ok(DriveReport::from_drive(service, outcome, state))
    })
    .await
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
        .load(service)
        .await?
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
    engine.store.post(service, request).await?;
    match engine.store.lock(service, &holder()).await {
        Ok(lock) => {
            let driven = Box::pin(engine.drive(service, timeout)).await;
            engine.store.unlock(lock).await;
            let (outcome, state) = driven?;
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
    with_lock(engine.store, service, &holder(), async {
        Box::pin(engine.undo(service, to)).await?;
        let (outcome, state) = Box::pin(engine.drive(service, timeout)).await?;
        Ok(DriveReport::from_drive(service, outcome, state))
    })
    .await
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
        let record = engine.store.load_record(service).await?;
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
        match engine.store.lock(service, &holder()).await {
            Ok(lock) => {
                let collected = Box::pin(engine.collect_garbage(service)).await;
                engine.store.unlock(lock).await;
                collected?
            }
            Err(e) if e.is::<LockHeld>() => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}
