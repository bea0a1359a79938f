//! The step walk of canary, blue-green and A/B rollouts (what Argo Rollouts splits into
//! `canary.go` and `bluegreen.go`; here one walk serves the three, the plan's steps differ):
//! the candidate comes up at full size with no traffic (the preview), then each weight,
//! pause, analysis and traffic-control step in turn. Before a weight moves, every revision
//! is scaled to what the platform needs for the new split and waited for.

use std::time::Duration;

use super::traffic::describe_controls;
use super::{Engine, Tick};
use crate::events::RolloutWhat;
use crate::rollout::now_ms;
use crate::rollout::plan::PlanStep;
use crate::rollout::platform::Platform;
use crate::rollout::state::*;

impl<P: Platform, S: StateStore> Engine<'_, P, S> {
    pub(super) async fn advance_steps(&self, state: &mut RolloutState) -> anyhow::Result<Tick> {
        if !state.candidate_ready {
            // Blue-green and canary bring the candidate up at the stable's current count.
            Box::pin(self.follow_autoscaler(state)).await?;
            if let Some(tick) = self.bring_up(state, state.candidate.replicas).await? {
                return Ok(tick);
            }
            // Registered with no traffic: reachable as the preview (`<service>-preview`).
            self.route(state, 0).await?;
            state.candidate_ready = true;
            state.step_started_ms = now_ms();
            state.message = format!(
                "{} is ready (no traffic yet; preview at `{}-preview`)",
                state.candidate.label(),
                state.service
            );
            self.save(state)?;
            self.emit(state, RolloutWhat::Step, state.message.clone());
            return Ok(Tick::Continue);
        }
        // A candidate that starts failing after it got traffic fails the rollout at once.
        let status = self
            .platform
            .status(&state.service, &state.candidate)
            .await?;
        if let Some(failure) = status.failure {
            return self.fail(state, failure).await;
        }
        let Some(step) = state.plan.steps.get(state.step).cloned() else {
            if let Some(tick) = self.scale_for(state, 100).await? {
                return Ok(tick);
            }
            return self.complete(state).await;
        };
        let now = now_ms();
        match step {
            PlanStep::Weight(w) => {
                let w = w.min(100);
                if let Some(tick) = self.scale_for(state, w).await? {
                    return Ok(tick);
                }
                self.route(state, w).await?;
                state.step += 1;
                state.step_started_ms = now;
                let (weights, revisions) = Self::split(state, w);
                let (effective, how) = self.platform.effective_weights(
                    &state.service,
                    &weights,
                    &revisions,
                    state.plan.max_surge,
                );
                let got = effective.get(&state.candidate.id).copied().unwrap_or(w);
                state.message = match how {
                    Some(how) if got != w => format!(
                        "{w}% of traffic requested on {}; the replica ratio gives it {got}% ({how})",
                        state.candidate.label()
                    ),
                    _ => format!("{}% of traffic on {}", w, state.candidate.label()),
                };
                self.save(state)?;
                self.emit(state, RolloutWhat::Traffic, state.message.clone());
                Ok(Tick::Continue)
            }
            PlanStep::Pause(Some(duration)) => {
                let until = state.step_started_ms + duration.as_millis() as u64;
                if now >= until {
                    state.step += 1;
                    state.step_started_ms = now;
                    state.phase = Phase::Progressing;
                    self.save(state)?;
                    return Ok(Tick::Continue);
                }
                if state.phase
                    != (Phase::Paused {
                        reason: PauseReason::Timed { until_ms: until },
                    })
                {
                    state.phase = Phase::Paused {
                        reason: PauseReason::Timed { until_ms: until },
                    };
                    state.message = format!("pausing {}s", (until - now).div_ceil(1000));
                    self.save(state)?;
                    self.emit(state, RolloutWhat::Paused, state.message.clone());
                }
                Ok(Tick::Wait(Duration::from_millis(until - now)))
            }
            PlanStep::Pause(None) => {
                if state.phase
                    != (Phase::Paused {
                        reason: PauseReason::UntilPromoted,
                    })
                {
                    state.phase = Phase::Paused {
                        reason: PauseReason::UntilPromoted,
                    };
                    state.message = format!(
                        "paused: run `dronectl rollout promote {}` to continue",
                        state.service
                    );
                    self.save(state)?;
                    self.emit(state, RolloutWhat::Paused, state.message.clone());
                }
                Ok(Tick::Paused)
            }
            PlanStep::Analysis(name) => self.advance_analysis(state, &name).await,
            PlanStep::Match(_) | PlanStep::Mirror(_) => {
                // The controls of every step up to this one, with the weight unchanged.
                let weight = state.weight;
                self.route_with(state, weight, state.step + 1).await?;
                state.step += 1;
                state.step_started_ms = now;
                let traffic = Self::traffic(state, weight, state.step);
                state.message = describe_controls(&traffic, &state.candidate);
                self.save(state)?;
                self.emit(state, RolloutWhat::Traffic, state.message.clone());
                Ok(Tick::Continue)
            }
        }
    }

    /// Before the candidate's share changes to `candidate_weight`: scales every revision
    /// up to the replicas the platform needs for that split and waits until they are
    /// ready (scale up, wait until ready, then give traffic — also for 100 % and
    /// `promote --full`). `None` when traffic may move now; else what to do meanwhile.
    pub(super) async fn scale_for(
        &self,
        state: &mut RolloutState,
        candidate_weight: u32,
    ) -> anyhow::Result<Option<Tick>> {
        Box::pin(self.follow_autoscaler(state)).await?;
        let (weights, revisions) = Self::split(state, candidate_weight);
        let needs =
            self.platform
                .replicas_for(&state.service, &weights, &revisions, state.plan.max_surge);
        let mut waiting = None;
        for revision in revisions {
            let need = needs.get(&revision.id).copied().unwrap_or(0);
            if need == 0 {
                continue;
            }
            let mut status = self.platform.status(&state.service, revision).await?;
            if status.desired < need {
                self.platform.scale(&state.service, revision, need).await?;
                status = self.platform.status(&state.service, revision).await?;
            }
            if revision.id == state.candidate.id {
                if let Some(failure) = status.failure.clone() {
                    return self.fail(state, failure).await.map(Some);
                }
            }
            if status.ready < need && waiting.is_none() {
                waiting = Some((revision.clone(), status.ready, need));
            }
        }
        let Some((revision, ready, need)) = waiting else {
            return Ok(None);
        };
        if let Some(failure) = self.past_deadline(
            state,
            format!(
                "{ready} of {need} replicas of {} ready for {candidate_weight}% of traffic",
                revision.label()
            ),
        ) {
            return self
                .abort(state, failure.message.clone(), Some(failure))
                .await
                .map(Some);
        }
        let message = format!(
            "waiting for {}: {ready}/{need} ready before {candidate_weight}% of traffic goes to {}",
            revision.label(),
            state.candidate.label()
        );
        if self.report_scaling(state, message, (ready, need)) {
            self.save(state)?;
        }
        Ok(Some(Tick::Wait(self.timing.poll)))
    }
}
