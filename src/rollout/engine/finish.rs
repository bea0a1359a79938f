//! How a rollout ends: full promotion (the candidate becomes stable, the old one stays
//! warm), abort or failure (traffic back to stable first, the candidate removed after
//! `abort_delay`), the history entry, and garbage collection of retired revisions.

use std::time::Duration;

use super::{Engine, Tick};
use crate::events::{Event, RolloutEvent, RolloutWhat};
use crate::manifest::StrategyKind;
use crate::rollout::now_ms;
use crate::rollout::outcome::Outcome;
use crate::rollout::platform::{Failure, Platform, Weights};
use crate::rollout::state::*;

impl<P: Platform, S: StateStore> Engine<'_, P, S> {
    /// Full promotion: all traffic to the candidate, which becomes stable.
    pub(super) async fn complete(&self, state: &mut RolloutState) -> anyhow::Result<Tick> {
        self.route(state, 100).await?;
        let now = now_ms();
        let mut record = self.store.load_record(&state.service).await?;
        if let Some(old) = state.stable.clone() {
            let rolling = state.plan.kind == StrategyKind::Rolling;
            if !rolling && state.plan.scale_down_delay > Duration::ZERO {
                // Warm at full size (a canary split may have scaled it down), so that
                // `rollout undo` is an instant switch back.
                self.platform
                    .scale(&state.service, &old, old.replicas)
                    .await?;
            }
            record
                .retired
                .retain(|r| r.revision.id != old.id && r.revision.id != state.candidate.id);
            record.retired.push(Retired {
                revision: old,
                remove_after_ms: if rolling {
                    now
                } else {
                    now + state.plan.scale_down_delay.as_millis() as u64
                },
                warm: !rolling,
            });
        }
        record
            .retired
            .retain(|r| r.revision.id != state.candidate.id);
        record.stable = Some(state.candidate.clone());
        state.phase = Phase::Completed;
        state.finished_ms = Some(now);
        state.message = match &state.stable {
            Some(old) if state.plan.kind != StrategyKind::Rolling => format!(
                "{} is live; {} stays warm for {} for an instant `rollout undo`",
                state.candidate.label(),
                old.label(),
                crate::manifest::Duration(state.plan.scale_down_delay)
            ),
            _ => format!("{} is live", state.candidate.label()),
        };
        push_history(&mut record, state, Outcome::Completed);
        self.store.save_record(&state.service, &record).await?;
        self.save(state).await?;
        self.emit(state, RolloutWhat::Completed, state.message.clone());
        self.collect_garbage(&state.service).await?;
        Ok(Tick::Done)
    }

    /// Moves traffic back to stable and marks the rollout aborted (or failed, with a
    /// failure). The candidate is scaled down later, by [`Engine::finish_abort`].
    pub(super) async fn abort(
        &self,
        state: &mut RolloutState,
        reason: String,
        failure: Option<Failure>,
    ) -> anyhow::Result<Tick> {
        if let Some(stable) = state.stable.clone() {
            if let Some(progress) = state.rolling {
                // A rolling update may have retired stable replicas: bring them back first.
                if progress.stable < stable.replicas {
                    self.platform
                        .scale(&state.service, &stable, stable.replicas)
                        .await?;
                    let deadline = std::time::Instant::now() + self.timing.progress_deadline;
                    while self.platform.status(&state.service, &stable).await?.ready
                        < stable.replicas.min(1)
                        && std::time::Instant::now() < deadline
                    {
                        tokio::time::sleep(self.timing.poll).await;
                    }
                }
            }
            let mut weights = Weights::new();
            weights.insert(stable.id.clone(), 100);
            weights.insert(state.candidate.id.clone(), 0);
            self.platform
                .set_traffic(
                    &state.service,
                    &weights,
                    &[&stable, &state.candidate],
                    state.plan.max_surge,
                )
                .await?;
        }
        state.weight = 0;
        let now = now_ms();
        state.finished_ms = Some(now);
        let outcome = if let Some(failure) = failure {
            state.phase = Phase::Failed { failure };
            state.message = format!(
                "failed: {reason}; traffic stays on {}",
                state
                    .stable
                    .as_ref()
                    .map_or("nothing".into(), |s| s.label())
            );
            Outcome::Failed
        } else {
            state.phase = Phase::Aborted {
                reason: reason.clone(),
            };
            state.message = format!(
                "aborted: {reason}; traffic is back on {}",
                state
                    .stable
                    .as_ref()
                    .map_or("nothing".into(), |s| s.label())
            );
            Outcome::Aborted
        };
        let mut record = self.store.load_record(&state.service).await?;
        record
            .retired
            .retain(|r| r.revision.id != state.candidate.id);
        record.retired.push(Retired {
            revision: state.candidate.clone(),
            remove_after_ms: now + self.timing.abort_delay.as_millis() as u64,
            warm: false,
        });
        push_history(&mut record, state, outcome);
        self.store.save_record(&state.service, &record).await?;
        self.save(state).await?;
        let what = if outcome == Outcome::Failed {
            RolloutWhat::Failed
        } else {
            RolloutWhat::Aborted
        };
        self.emit(state, what, state.message.clone());
        Ok(Tick::Done)
    }

    /// After an abort: wait for the abort delay, then scale the candidate down.
    pub(super) async fn finish_abort(&self, state: &mut RolloutState) -> anyhow::Result<()> {
        tokio::time::sleep(self.timing.abort_delay).await;
        self.collect_garbage(&state.service).await
    }

    /// Scales down and removes retired revisions whose delay has passed.
    pub async fn collect_garbage(&self, service: &str) -> anyhow::Result<()> {
        let mut record = self.store.load_record(service).await?;
        let now = now_ms();
        let (due, keep): (Vec<Retired>, Vec<Retired>) = record
            .retired
            .drain(..)
            .partition(|r| r.remove_after_ms <= now);
        record.retired = keep;
        for retired in &due {
            if record
                .stable
                .as_ref()
                .is_some_and(|s| s.id == retired.revision.id)
            {
                continue;
            }
            self.platform.scale(service, &retired.revision, 0).await?;
            self.platform.remove(service, &retired.revision).await?;
            self.reporter.event(Event::Rollout(RolloutEvent {
                service: service.to_string(),
                number: 0,
                what: RolloutWhat::Cleaned,
                message: format!("removed {}", retired.revision.label()),
                step: None,
                weights: None,
                ready: None,
                logs: None,
            }));
        }
        if !due.is_empty() {
            self.store.save_record(service, &record).await?;
        }
        Ok(())
    }
}

/// Records how rollout `state` ended (completed, aborted or failed) in the service's
/// history, keeping the last [`HISTORY_KEEP`].
fn push_history(record: &mut ServiceRecord, state: &RolloutState, outcome: Outcome) {
    record.history.retain(|h| h.number != state.number);
    record.history.push(HistoryEntry {
        number: state.number,
        revision: state.candidate.clone(),
        strategy: state.plan.name.clone(),
        outcome: outcome.as_str().to_string(),
        started_ms: state.started_ms,
        finished_ms: state.finished_ms.unwrap_or_else(now_ms),
        message: state.message.clone(),
    });
    if record.history.len() > HISTORY_KEEP {
        let drop = record.history.len() - HISTORY_KEEP;
        record.history.drain(..drop);
    }
}

#[cfg(test)]
mod tests {
    use crate::rollout::test_support::*;

    #[tokio::test]
    async fn abort_request_rolls_back_and_a_second_start_is_refused_while_running() {
        let s = Setup::new();
        let v1 = s.deploy_stable("api:1").await;
        let engine = s.engine();
        let (outcome, _) = s
            .roll(
                &rev("api:2", 1),
                canary(vec![PlanStep::Weight(50), PlanStep::Pause(None)]),
                None,
            )
            .await;
        assert_eq!(outcome, DriveOutcome::Paused);
        let err = engine
            .start("api", rev("api:3", 1), Plan::builtin(StrategyKind::Rolling))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("still in progress"), "{err}");
        s.store.post("api", Request::Abort).await.unwrap();
        let (outcome, _) = engine.drive("api", None).await.unwrap();
        assert_eq!(outcome, DriveOutcome::Aborted);
        assert_eq!(s.fake.traffic_log().last().unwrap()[&v1.id], 100);
    }

    #[tokio::test]
    async fn with_an_autoscaler_an_abort_leaves_the_stable_as_the_autoscaler_set_it() {
        let s = Setup::new();
        let v1 = autoscaled("api:1", 2, 10);
        autoscaled_stable(&s, &v1, 3).await;
        let v2 = autoscaled("api:2", 2, 10);
        let engine = s.engine();
        engine
            .start(
                "api",
                v2.clone(),
                canary(vec![PlanStep::Weight(50), PlanStep::Pause(None)]),
            )
            .await
            .unwrap();
        assert_eq!(
            engine.drive("api", None).await.unwrap().0,
            DriveOutcome::Paused
        );
        s.store.post("api", Request::Abort).await.unwrap();
        let (outcome, _) = engine.drive("api", None).await.unwrap();
        assert_eq!(outcome, DriveOutcome::Aborted);
        let f = s.fake.inner.lock().unwrap();
        assert_eq!(f.replicas[&v1.id], 3);
        assert_eq!(f.hpa, Some((v1.id.clone(), 3)));
        // Traffic went back before the candidate was scaled down.
        assert_eq!(f.weights.last().unwrap()[&v1.id], 100);
        assert_eq!(f.replicas[&v2.id], 0);
    }
}
