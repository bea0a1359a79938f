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
            self.save(state).await?;
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
                self.save(state).await?;
                self.emit(state, RolloutWhat::Traffic, state.message.clone());
                Ok(Tick::Continue)
            }
            PlanStep::Pause(Some(duration)) => {
                let until = state.step_started_ms + duration.as_millis() as u64;
                if now >= until {
                    state.step += 1;
                    state.step_started_ms = now;
                    state.phase = Phase::Progressing;
                    self.save(state).await?;
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
                    self.save(state).await?;
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
                    self.save(state).await?;
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
                self.save(state).await?;
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
        if let Some(tick) = self
            .abort_past_deadline(
                state,
                format!(
                    "{ready} of {need} replicas of {} ready for {candidate_weight}% of traffic",
                    revision.label()
                ),
            )
            .await?
        {
            return Ok(Some(tick));
        }
        let message = format!(
            "waiting for {}: {ready}/{need} ready before {candidate_weight}% of traffic goes to {}",
            revision.label(),
            state.candidate.label()
        );
        if self.report_scaling(state, message, (ready, need)) {
            self.save(state).await?;
        }
        Ok(Some(Tick::Wait(self.timing.poll)))
    }
}

#[cfg(test)]
mod tests {
    use crate::rollout::test_support::*;

    #[tokio::test]
    async fn canary_walks_its_steps_and_keeps_the_old_version_warm() {
        let s = Setup::new();
        let v1 = s.deploy_stable("api:1").await;
        s.fake.inner.lock().unwrap().ready_after = 3;
        s.fake.inner.lock().unwrap().measurements =
            vec![Measurement::Value(0.0), Measurement::Value(0.01)];
        let v2 = rev("api:2", 1);
        let engine = s.engine();
        let (outcome, state) = s
            .roll(
                &v2,
                canary(vec![
                    PlanStep::Weight(20),
                    PlanStep::Pause(Some(Duration::from_millis(30))),
                    PlanStep::Analysis("errors".into()),
                    PlanStep::Weight(50),
                ]),
                Some(Duration::from_secs(10)),
            )
            .await;
        assert_eq!(outcome, DriveOutcome::Completed, "{}", state.message);
        let log = s.fake.traffic_log();
        assert_eq!(candidate_weights(&log, &v2.id), vec![0, 0, 20, 50, 100]);
        let record = s.store.load_record("api").await.unwrap();
        assert_eq!(record.stable.as_ref().unwrap().id, v2.id);
        assert!(
            record
                .retired
                .iter()
                .any(|r| r.revision.id == v1.id && r.warm),
            "v1 kept warm"
        );
        assert_eq!(
            state.analyses_done,
            vec![("errors".to_string(), state::MeasurementOutcome::Pass)]
        );
        // After the scale-down delay, the next engine run removes v1.
        tokio::time::sleep(Duration::from_millis(250)).await;
        engine.collect_garbage("api").await.unwrap();
        assert_eq!(s.fake.inner.lock().unwrap().removed, vec![v1.id.clone()]);
    }

    #[tokio::test]
    async fn crash_looping_candidate_fails_without_getting_traffic() {
        let s = Setup::new();
        let v1 = s.deploy_stable("api:1").await;
        s.fake.inner.lock().unwrap().crashing.push("api:bad".into());
        let bad = rev("api:bad", 1);
        let (outcome, state) = s
            .roll(
                &bad,
                canary(vec![PlanStep::Weight(50)]),
                Some(Duration::from_secs(10)),
            )
            .await;
        assert_eq!(outcome, DriveOutcome::Failed);
        let Phase::Failed { failure } = &state.phase else {
            panic!("{:?}", state.phase)
        };
        assert_eq!(failure.reason, "CrashLoopBackOff");
        assert_eq!(failure.logs, vec!["panic: boom".to_string()]);
        assert!(candidate_weights(&s.fake.traffic_log(), &bad.id)
            .iter()
            .all(|w| *w == 0));
        assert_eq!(s.fake.traffic_log().last().unwrap()[&v1.id], 100);
    }

    #[tokio::test]
    async fn promote_full_after_a_replica_ratio_split_waits_until_the_candidate_is_ready() {
        let s = Setup::new();
        s.fake.inner.lock().unwrap().ratio = true;
        let v1 = rev("api:1", 2);
        let engine = s.engine();
        s.deploy(&v1).await;
        let v2 = rev("api:2", 2);
        engine
            .start(
                "api",
                v2.clone(),
                canary(vec![PlanStep::Weight(50), PlanStep::Pause(None)]),
            )
            .await
            .unwrap();
        let (outcome, _) = engine.drive("api", None).await.unwrap();
        assert_eq!(outcome, DriveOutcome::Paused);
        let replicas = |id: &str| s.fake.inner.lock().unwrap().replicas[id];
        assert_eq!(
            (replicas(&v1.id), replicas(&v2.id)),
            (1, 1),
            "50/50 by ratio"
        );
        // New replicas now take a while: the candidate must be ready at full size first.
        s.fake.inner.lock().unwrap().ready_after = 4;
        s.events.take();
        s.store.post("api", Request::PromoteFull).await.unwrap();
        let (outcome, state) = engine.drive("api", None).await.unwrap();
        assert_eq!(outcome, DriveOutcome::Completed, "{}", state.message);
        assert_eq!(s.fake.traffic_log().last().unwrap()[&v2.id], 100);
        assert_eq!(s.fake.ready(&v2.id), 2);
        assert_eq!(
            replicas(&v1.id),
            2,
            "the old stable is kept warm at full size"
        );
        let waited = s.events.take().into_iter().any(|e| {
            matches!(e, Event::Rollout(r) if r.what == RolloutWhat::Scaling
                && r.message.contains("before 100% of traffic"))
        });
        assert!(waited, "the candidate was waited for before the switch");
    }

    #[tokio::test]
    async fn with_an_autoscaler_the_canary_is_sized_from_the_stables_live_count() {
        let s = Setup::new();
        let v1 = autoscaled("api:1", 2, 10);
        autoscaled_stable(&s, &v1, 4).await;
        let v2 = autoscaled("api:2", 2, 10);
        let engine = s.engine();
        let (outcome, state) = s
            .roll(
                &v2,
                canary(vec![
                    PlanStep::Weight(20),
                    PlanStep::Pause(None),
                    PlanStep::Weight(50),
                    PlanStep::Pause(None),
                ]),
                None,
            )
            .await;
        assert_eq!(outcome, DriveOutcome::Paused);
        let replicas = |id: &str| s.fake.inner.lock().unwrap().replicas[id];
        // The stable keeps the autoscaler's 4 pods; one canary pod is 20 %.
        assert_eq!((replicas(&v2.id), replicas(&v1.id)), (1, 4));
        assert_eq!(state.stable.as_ref().unwrap().replicas, 4);
        // The autoscaler adds stable pods meanwhile: the next weight is sized from 6.
        s.fake.autoscaler_scales(6);
        s.store.post("api", Request::Promote).await.unwrap();
        let (outcome, _) = engine.drive("api", None).await.unwrap();
        assert_eq!(outcome, DriveOutcome::Paused);
        assert_eq!((replicas(&v2.id), replicas(&v1.id)), (6, 6));
        s.store.post("api", Request::Promote).await.unwrap();
        let (outcome, state) = engine.drive("api", None).await.unwrap();
        assert_eq!(outcome, DriveOutcome::Completed, "{}", state.message);
        // The new stable runs at the live count and the autoscaler moved to it.
        assert_eq!(replicas(&v2.id), 6);
        assert_eq!(state.candidate.replicas, 6);
        assert_eq!(s.fake.inner.lock().unwrap().hpa, Some((v2.id.clone(), 6)));
        // The old stable was only scaled once, after the switch: kept warm at its live size.
        let scaled = s.fake.inner.lock().unwrap().scaled.clone();
        let old: Vec<u32> = scaled
            .iter()
            .filter(|(id, _)| id == &v1.id)
            .map(|(_, n)| *n)
            .collect();
        assert_eq!(old, [6], "{scaled:?}");
    }

    #[tokio::test]
    async fn with_an_autoscaler_blue_green_brings_the_candidate_up_at_the_current_count() {
        let s = Setup::new();
        let v1 = autoscaled("api:1", 2, 10);
        autoscaled_stable(&s, &v1, 5).await;
        s.fake.inner.lock().unwrap().ready_after = 3;
        let v2 = autoscaled("api:2", 2, 10);
        let engine = s.engine();
        let mut plan = Plan::builtin(StrategyKind::BlueGreen);
        plan.scale_down_delay = Duration::from_millis(100);
        engine.start("api", v2.clone(), plan).await.unwrap();
        let (outcome, state) = engine.drive("api", None).await.unwrap();
        assert_eq!(outcome, DriveOutcome::Completed, "{}", state.message);
        let f = s.fake.inner.lock().unwrap();
        // Scaled once, to the live count, before any traffic; then the switch.
        assert_eq!(
            f.scaled
                .iter()
                .filter(|(id, _)| id == &v2.id)
                .map(|(_, n)| *n)
                .collect::<Vec<_>>()[0],
            5
        );
        assert_eq!(f.replicas[&v2.id], 5);
        assert_eq!(f.hpa, Some((v2.id.clone(), 5)));
        // The previous stable stays warm at the size the autoscaler had given it.
        assert_eq!(f.replicas[&v1.id], 5);
    }

    #[tokio::test]
    async fn max_surge_scales_the_total_up_so_the_ratio_matches_the_weight() {
        let s = Setup::new();
        s.fake.inner.lock().unwrap().ratio = true;
        let v1 = rev("api:1", 2);
        let engine = s.engine();
        engine
            .start("api", v1.clone(), Plan::builtin(StrategyKind::Rolling))
            .await
            .unwrap();
        engine.drive("api", None).await.unwrap();
        s.fake.inner.lock().unwrap().ready_after = 2;
        let v2 = rev("api:2", 2);
        let mut plan = canary(vec![PlanStep::Weight(20), PlanStep::Pause(None)]);
        plan.max_surge = 3;
        s.events.take();
        engine.start("api", v2.clone(), plan).await.unwrap();
        let (outcome, state) = engine.drive("api", None).await.unwrap();
        assert_eq!(outcome, DriveOutcome::Paused);
        let replicas = |id: &str| s.fake.inner.lock().unwrap().replicas[id];
        // 4 stable + 1 canary: 20 % by ratio, both ready before the traffic moved (the fake
        // asserts that on every set_traffic).
        assert_eq!((replicas(&v2.id), replicas(&v1.id)), (1, 4));
        assert_eq!(state.weight, 20);
        let hints: Vec<String> = s
            .events
            .take()
            .into_iter()
            .filter_map(|e| match e {
                Event::Hint { message } => Some(message),
                _ => None,
            })
            .collect();
        assert!(hints.is_empty(), "20 % can be approximated: {hints:?}");
        // Without the surge the same split is 1 + 1 and the engine says so.
        let s2 = Setup::new();
        s2.fake.inner.lock().unwrap().ratio = true;
        let e2 = s2.engine();
        e2.start("api", v1.clone(), Plan::builtin(StrategyKind::Rolling))
            .await
            .unwrap();
        e2.drive("api", None).await.unwrap();
        e2.start(
            "api",
            v2.clone(),
            canary(vec![PlanStep::Weight(20), PlanStep::Pause(None)]),
        )
        .await
        .unwrap();
        e2.drive("api", None).await.unwrap();
        let r2 = |id: &str| s2.fake.inner.lock().unwrap().replicas[id];
        assert_eq!((r2(&v2.id), r2(&v1.id)), (1, 1));
    }
}
