//! Rolling updates, without traffic steps: client-side (the engine starts new replicas
//! within `max_surge` and retires old ones while `max_unavailable` allows, moving traffic
//! first), or native (the platform rolls, as a Kubernetes Deployment does).

use super::{Engine, Tick};
use crate::events::RolloutWhat;
use crate::rollout::now_ms;
use crate::rollout::platform::Platform;
use crate::rollout::state::*;

impl<P: Platform, S: StateStore> Engine<'_, P, S> {
    pub(super) async fn advance_rolling(&self, state: &mut RolloutState) -> anyhow::Result<Tick> {
        if self.platform.native_rolling() {
            return self.advance_native_rolling(state).await;
        }
        let replicas = state.candidate.replicas.max(1);
        let stable = state.stable.clone().expect("rolling has a stable revision");
        let (mut surge, unavailable) = (
            state.plan.max_surge,
            state.plan.max_unavailable.min(replicas),
        );
        if surge == 0 && unavailable == 0 {
            surge = 1;
        }
        let mut progress = state.rolling.unwrap_or(RollingProgress {
            candidate: 0,
            stable: stable.replicas,
        });
        let status = self
            .platform
            .status(&state.service, &state.candidate)
            .await?;
        if let Some(failure) = status.failure {
            return self.fail(state, failure).await;
        }
        let ready = status.ready.min(progress.candidate);
        if progress.candidate == replicas && ready == replicas && progress.stable == 0 {
            return self.complete(state).await;
        }
        if ready < progress.candidate {
            let waiting = format!("{ready} of {} new replicas ready", progress.candidate);
            if let Some(tick) = self.abort_past_deadline(state, waiting).await? {
                return Ok(tick);
            }
            return Ok(Tick::Wait(self.timing.poll));
        }
        // Everything asked for is ready: give the new replicas their share of traffic.
        let share = |stable_left: u32| {
            (ready * 100)
                .checked_div(ready + stable_left)
                .unwrap_or(100)
        };
        if ready > 0 && state.weight != share(progress.stable) {
            self.route(state, share(progress.stable)).await?;
            state.candidate_ready = true;
        }
        // Retire old replicas while enough stay available.
        let min_available = replicas - unavailable;
        let removable = (ready + progress.stable)
            .saturating_sub(min_available)
            .min(progress.stable);
        if removable > 0 {
            let left = progress.stable - removable;
            // Traffic first, then the replicas.
            if ready > 0 {
                self.route(state, share(left)).await?;
            }
            self.platform.scale(&state.service, &stable, left).await?;
            progress.stable = left;
            state.rolling = Some(progress);
            state.message = format!("{ready}/{replicas} new replicas ready, {left} old left");
            self.save(state).await?;
            self.emit(state, RolloutWhat::Step, state.message.clone());
            return Ok(Tick::Continue);
        }
        // Start more new replicas within the surge.
        let room = (replicas + surge).saturating_sub(progress.candidate + progress.stable);
        if room > 0 && progress.candidate < replicas {
            progress.candidate = (progress.candidate + room).min(replicas);
            self.platform
                .scale(&state.service, &state.candidate, progress.candidate)
                .await?;
            state.rolling = Some(progress);
            state.step_started_ms = now_ms();
            state.message = format!("starting new replica {} of {replicas}", progress.candidate);
            self.save(state).await?;
            self.emit(state, RolloutWhat::Scaling, state.message.clone());
        }
        Ok(Tick::Wait(self.timing.poll))
    }

    /// A rolling update the platform performs itself: start it (idempotently), then wait
    /// for every new replica to be ready and every old one gone. An abort hands the
    /// platform all traffic for stable, which rolls the update back.
    pub(super) async fn advance_native_rolling(
        &self,
        state: &mut RolloutState,
    ) -> anyhow::Result<Tick> {
        // The autoscaler may change the count while the Deployment rolls.
        Box::pin(self.follow_autoscaler(state)).await?;
        let replicas = state.candidate.replicas;
        let stable = state.stable.clone().expect("rolling has a stable revision");
        self.platform
            .roll(
                &state.service,
                &stable,
                &state.candidate,
                state.plan.max_surge,
                state.plan.max_unavailable,
            )
            .await?;
        let status = self
            .platform
            .status(&state.service, &state.candidate)
            .await?;
        if let Some(failure) = status.failure {
            return self.fail(state, failure).await;
        }
        if status.ready >= replicas && status.current <= replicas {
            return self.complete(state).await;
        }
        let waiting = format!("{} of {replicas} new replicas ready", status.ready);
        if let Some(tick) = self.abort_past_deadline(state, waiting).await? {
            return Ok(tick);
        }
        let message = format!(
            "rolling to {}: {}/{replicas} new replicas ready, {} replicas in all",
            state.candidate.label(),
            status.ready,
            status.current
        );
        if self.report_scaling(state, message, (status.ready, replicas)) {
            self.save(state).await?;
        }
        Ok(Tick::Wait(self.timing.poll))
    }
}

#[cfg(test)]
mod tests {
    use crate::rollout::test_support::*;

    #[tokio::test]
    async fn rolling_update_replaces_replicas_without_losing_capacity() {
        let s = Setup::new();
        let engine = s.engine();
        let v1 = rev("api:1", 3);
        s.deploy(&v1).await;
        s.fake.inner.lock().unwrap().ready_after = 2;
        let v2 = rev("api:2", 3);
        engine
            .start("api", v2.clone(), Plan::builtin(StrategyKind::Rolling))
            .await
            .unwrap();
        let (outcome, state) = engine
            .drive("api", Some(Duration::from_secs(10)))
            .await
            .unwrap();
        assert_eq!(outcome, DriveOutcome::Completed, "{}", state.message);
        let shares = candidate_weights(&s.fake.traffic_log(), &v2.id);
        assert_eq!(shares.last(), Some(&100));
        assert!(
            shares.windows(2).all(|w| w[0] <= w[1]),
            "traffic only moves forward: {shares:?}"
        );
        let replicas = s.fake.inner.lock().unwrap().replicas.clone();
        assert_eq!((replicas[&v1.id], replicas[&v2.id]), (0, 3));
    }
}
