//! The rollout state machine. One engine for every strategy and every platform.
//!
//! [`Engine::advance`] performs at most one action, persists the state, and says what to
//! do next; [`Engine::drive`] loops over it. Because every decision input is persisted
//! before the next action, a process killed at any point is continued by `resume` from
//! exactly where it stopped, and `status` can always explain where that is.
//!
//! Ordering invariants kept here:
//! * the candidate is scaled up and ready before it gets any traffic;
//! * traffic never goes to a revision with zero ready replicas (the platform only routes
//!   to ready replicas; the engine never gives weight before readiness);
//! * on abort, traffic moves back to stable first, the candidate is scaled down after
//!   `abort_delay`;
//! * after a switch the previous stable revision stays warm for the plan's
//!   `scale_down_delay`, so `undo` is an instant switch back.
//!
//! This module holds the dispatch (start, drive, advance, promote, bringing the candidate
//! up, deadlines); each kind of step has its own file:
//! * [`steps`]: the canary / blue-green / A/B step walk (weight, pause, controls);
//! * [`analysis`]: analysis steps and how a measurement is judged ([`evaluate`]);
//! * [`rolling`]: rolling updates, client-side and native;
//! * [`traffic`]: the split and traffic controls handed to the platform;
//! * [`finish`]: completion, abort / failure, history and garbage collection;
//! * [`undo`]: rolling back to an earlier revision.

use std::collections::BTreeMap;
use std::time::Duration;

use super::now_ms;
pub use super::outcome::DriveOutcome;
use super::plan::{Plan, PlanStep};
use super::platform::{Failure, Platform, Revision};
use super::state::*;
use crate::events::{Event, Reporter, RolloutEvent, RolloutWhat};
use crate::manifest::StrategyKind;

mod analysis;
mod finish;
mod rolling;
mod steps;
mod traffic;
mod undo;

pub use analysis::evaluate;
pub use traffic::describe_controls;

/// Timing knobs (defaults suit real services; tests shorten them).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How often readiness is polled.
    pub poll: Duration,
    /// How long a candidate may take to become ready before the rollout fails.
    pub progress_deadline: Duration,
    /// How long an aborted candidate keeps running (without traffic) before it is removed.
    pub abort_delay: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            poll: Duration::from_millis(250),
            progress_deadline: Duration::from_secs(120),
            abort_delay: Duration::from_secs(2),
        }
    }
}

/// What [`Engine::advance`] says should happen next.
#[derive(Debug, Clone, PartialEq)]
pub enum Tick {
    /// Call again right away.
    Continue,
    /// Call again after this long (or earlier to react to requests).
    Wait(Duration),
    /// Waiting for `promote` (a pause without duration, or an inconclusive analysis).
    Paused,
    /// The rollout ended.
    Done,
}

/// Errors a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("rollout #{number} of `{service}` is still in progress ({phase}); use `dronectl rollout status|resume|promote|abort {service}`")]
    InProgress {
        service: String,
        number: u64,
        phase: String,
    },
    #[error("`{0}` has no rollout to act on; deploy it first")]
    NoRollout(String),
    #[error("`{service}` has no earlier revision to go back to")]
    NothingToUndo { service: String },
}

impl crate::exit::ExitStatus for EngineError {
    /// The rollout cannot be acted on as asked: the operation failed (1).
    fn exit_code(&self) -> crate::exit::ExitCode {
        crate::exit::ExitCode::Failed
    }
}

/// The result of starting a rollout.
#[derive(Debug)]
pub enum Started {
    /// A new rollout was recorded; drive it.
    New(Box<RolloutState>),
    /// The candidate already is the stable revision: no rollout. `scaled_from`: the live
    /// revision was scaled from this count to the candidate's (its `replicas` changed).
    Unchanged {
        revision: Revision,
        scaled_from: Option<u32>,
    },
}

/// Drives rollouts of one app in one environment.
pub struct Engine<'a, P: Platform, S: StateStore> {
    pub platform: &'a P,
    pub store: &'a S,
    pub reporter: &'a dyn Reporter,
    pub timing: Timing,
}
impl<'a, P: Platform, S: StateStore> Engine<'a, P, S> {
    pub fn new(platform: &'a P, store: &'a S, reporter: &'a dyn Reporter) -> Self {
        Engine {
            platform,
            store,
            reporter,
            timing: Timing::default(),
        }
    }

    fn emit(&self, state: &RolloutState, what: RolloutWhat, message: impl Into<String>) {
        let weights = (!matches!(what, RolloutWhat::Started)).then(|| self.weights_by_label(state));
        let message = message.into();
        self.reporter.event(Event::Rollout(RolloutEvent {
            service: state.service.clone(),
            number: state.number,
            what,
            message,
            step: (!state.plan.steps.is_empty() && state.stable.is_some())
                .then(|| state.plan.describe_step(state.step)),
            weights,
            ready: None,
            logs: match &state.phase {
                Phase::Failed { failure } if !failure.logs.is_empty() => Some(failure.logs.clone()),
                _ => None,
            },
        }));
    }

    fn weights_by_label(&self, state: &RolloutState) -> BTreeMap<String, u32> {
        let mut w = BTreeMap::new();
        if let Some(stable) = &state.stable {
            w.insert(stable.label(), 100 - state.weight);
        }
        if state.weight > 0 || state.stable.is_none() {
            w.insert(
                state.candidate.label(),
                if state.stable.is_none() {
                    100
                } else {
                    state.weight
                },
            );
        }
        w
    }

    async fn save(&self, state: &mut RolloutState) -> anyhow::Result<()> {
        state.updated_ms = now_ms();
        self.store.save(state).await
    }

    /// Records a new rollout of `candidate` with `plan`. Requires the service's lock.
    pub async fn start(
        &self,
        service: &str,
        candidate: Revision,
        plan: Plan,
    ) -> anyhow::Result<Started> {
        self.collect_garbage(service).await?;
        let previous = self.store.load(service).await?;
        if let Some(p) = &previous {
            if !p.phase.is_terminal() {
                return Err(EngineError::InProgress {
                    service: service.into(),
                    number: p.number,
                    phase: describe_phase(&p.phase),
                }
                .into());
            }
        }
        let mut record = self.store.load_record(service).await?;
        let mut candidate = candidate;
        let mut changed = false;
        if let Some(scaled) = record.scaled {
            if candidate.autoscale.is_none() && candidate.replicas == scaled.manifest {
                // `dronectl scale` set the count and the manifest's is unchanged: keep it.
                candidate.replicas = scaled.replicas;
            } else {
                // The manifest's count changed (or an autoscaler took over): it wins.
                record.scaled = None;
                changed = true;
            }
        }
        if let Some(stable) = record.stable.as_mut().filter(|s| s.id == candidate.id) {
            // The same version; only the count (the manifest's `replicas`, the end of a
            // `dronectl scale` override or of `autoscale`) may differ: scale the live
            // revision, no rollout (as `kubectl apply` does).
            let mut scaled_from = None;
            if candidate.autoscale.is_none()
                && (stable.replicas != candidate.replicas || stable.autoscale.is_some())
            {
                self.platform
                    .scale(service, stable, candidate.replicas)
                    .await?;
                scaled_from = Some(stable.replicas).filter(|&n| n != candidate.replicas);
                stable.replicas = candidate.replicas;
                stable.autoscale = None;
                changed = true;
            } else if candidate.autoscale != stable.autoscale {
                // Became autoscaled, or new bounds: the autoscaler owns the count now.
                stable.autoscale = candidate.autoscale;
                changed = true;
            }
            if changed {
                self.store.save_record(service, &record).await?;
            }
            return Ok(Started::Unchanged {
                revision: candidate,
                scaled_from,
            });
        }
        if changed {
            self.store.save_record(service, &record).await?;
        }
        let now = now_ms();
        let mut state = RolloutState {
            format: STATE_FORMAT,
            service: service.to_string(),
            number: previous
                .map_or(0, |p| p.number)
                .max(record.history.last().map_or(0, |h| h.number))
                + 1,
            plan,
            stable: record.stable.clone(),
            candidate,
            phase: Phase::Progressing,
            step: 0,
            step_started_ms: now,
            candidate_ready: false,
            weight: 0,
            rolling: None,
            analysis: None,
            analyses_done: Vec::new(),
            started_ms: now,
            updated_ms: now,
            finished_ms: None,
            message: String::new(),
        };
        Box::pin(self.follow_autoscaler(&mut state)).await?;
        state.message = match &state.stable {
            Some(stable) => format!(
                "{} rollout from {} to {}",
                state.plan.name,
                stable.label(),
                state.candidate.label()
            ),
            None => format!("first deploy of {}", state.candidate.label()),
        };
        self.warn_nominal_weights(&state);
        // A stale request from an earlier rollout must not act on this one.
        self.store.take_requests(service).await?;
        self.save(&mut state).await?;
        self.emit(&state, RolloutWhat::Started, state.message.clone());
        Ok(Started::New(Box::new(state)))
    }

    /// Says which weight steps of the plan the platform can only approximate (a replica
    /// ratio with few replicas), before anything moves.
    fn warn_nominal_weights(&self, state: &RolloutState) {
        if state.stable.is_none() || state.plan.kind == StrategyKind::Rolling {
            return;
        }
        for step in &state.plan.steps {
            let PlanStep::Weight(w) = step else { continue };
            if *w == 0 || *w >= 100 {
                continue;
            }
            let (weights, revisions) = Self::split(state, *w);
            let (effective, how) = self.platform.effective_weights(
                &state.service,
                &weights,
                &revisions,
                state.plan.max_surge,
            );
            let got = effective.get(&state.candidate.id).copied().unwrap_or(*w);
            if let Some(how) = how {
                if got.abs_diff(*w) >= 5 {
                    self.reporter.event(Event::Hint {
                        message: format!(
                            "{}: weight {w}% cannot be approximated with {} replicas: the replica ratio gives {got}% ({how}); more replicas, the strategy's `max_surge` (extra pods during the canary) or a gateway (HTTPRoute weights) split it closer",
                            state.service, state.candidate.replicas
                        ),
                    });
                }
            }
        }
    }

    /// Continues the service's rollout until it ends, pauses for promotion, or `timeout`
    /// passes. Requires the service's lock.
    pub async fn drive(
        &self,
        service: &str,
        timeout: Option<Duration>,
    ) -> anyhow::Result<(DriveOutcome, RolloutState)> {
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        let mut state = self
            .store
            .load(service)
            .await?
            .ok_or_else(|| EngineError::NoRollout(service.into()))?;
        if matches!(state.phase, Phase::Paused { .. }) {
            self.emit(&state, RolloutWhat::Resumed, "resuming");
        }
        loop {
            let tick = self.advance(&mut state).await?;
            let outcome = match tick {
                Tick::Continue => continue,
                Tick::Done => DriveOutcome::of(&state.phase).unwrap_or(DriveOutcome::Failed),
                Tick::Paused => DriveOutcome::Paused,
                Tick::Wait(d) => {
                    let d = d
                        .min(self.timing.poll.max(Duration::from_millis(50)) * 4)
                        .max(Duration::from_millis(10));
                    if let Some(deadline) = deadline {
                        let now = std::time::Instant::now();
                        if now >= deadline {
                            return Ok((DriveOutcome::TimedOut, state));
                        }
                        tokio::time::sleep(d.min(deadline - now)).await;
                    } else {
                        tokio::time::sleep(d).await;
                    }
                    continue;
                }
            };
            if matches!(outcome, DriveOutcome::Aborted | DriveOutcome::Failed) {
                self.finish_abort(&mut state).await?;
            }
            return Ok((outcome, state));
        }
    }

    /// Performs at most one action of the rollout and persists the result.
    pub async fn advance(&self, state: &mut RolloutState) -> anyhow::Result<Tick> {
        if state.phase.is_terminal() {
            return Ok(Tick::Done);
        }
        for request in self.store.take_requests(&state.service).await? {
            match request {
                Request::Abort => {
                    return self.abort(state, "aborted by request".into(), None).await
                }
                Request::Promote | Request::PromoteFull => {
                    self.promote(state, request == Request::PromoteFull).await?
                }
            }
        }
        if state.stable.is_none() {
            // Boxed: each strategy's future holds the platform's, large in a debug build.
            return Box::pin(self.advance_initial(state)).await;
        }
        match state.plan.kind {
            StrategyKind::Rolling => Box::pin(self.advance_rolling(state)).await,
            StrategyKind::Canary | StrategyKind::BlueGreen | StrategyKind::Ab => {
                Box::pin(self.advance_steps(state)).await
            }
        }
    }

    async fn promote(&self, state: &mut RolloutState, full: bool) -> anyhow::Result<()> {
        if full {
            state.step = state.plan.steps.len();
            state.step_started_ms = now_ms();
            state.analysis = None;
            state.phase = Phase::Progressing;
            self.save(state).await?;
            self.emit(
                state,
                RolloutWhat::Resumed,
                "promoted: skipping the remaining steps",
            );
            return Ok(());
        }
        let skippable = matches!(state.phase, Phase::Paused { .. })
            || matches!(
                state.plan.steps.get(state.step),
                Some(PlanStep::Pause(_) | PlanStep::Analysis(_))
            );
        if skippable && state.candidate_ready {
            if let Some(run) = state.analysis.take() {
                state
                    .analyses_done
                    .push((run.name, MeasurementOutcome::Inconclusive));
            }
            state.step += 1;
            state.step_started_ms = now_ms();
            state.phase = Phase::Progressing;
            self.save(state).await?;
            self.emit(
                state,
                RolloutWhat::Resumed,
                "promoted: continuing with the next step",
            );
        }
        Ok(())
    }

    /// Scales the candidate up to `replicas` and reports whether it is ready; fails the
    /// rollout as soon as the platform knows it never will be.
    async fn bring_up(
        &self,
        state: &mut RolloutState,
        replicas: u32,
    ) -> anyhow::Result<Option<Tick>> {
        let service = state.service.clone();
        self.platform
            .scale(&service, &state.candidate, replicas)
            .await?;
        let status = self.platform.status(&service, &state.candidate).await?;
        if let Some(failure) = status.failure {
            return self.fail(state, failure).await.map(Some);
        }
        if status.ready >= replicas {
            return Ok(None);
        }
        if let Some(tick) = self
            .abort_past_deadline(
                state,
                format!("{} of {replicas} replicas ready", status.ready),
            )
            .await?
        {
            return Ok(Some(tick));
        }
        let message = format!(
            "waiting for {}: {}/{replicas} ready",
            state.candidate.label(),
            status.ready
        );
        self.report_scaling(state, message, (status.ready, replicas));
        Ok(Some(Tick::Wait(self.timing.poll)))
    }

    /// Reports replica readiness while waiting, once per change of `message`; returns
    /// whether it changed.
    fn report_scaling(&self, state: &mut RolloutState, message: String, ready: (u32, u32)) -> bool {
        if state.message == message {
            return false;
        }
        state.message = message.clone();
        self.reporter.event(Event::Rollout(RolloutEvent {
            service: state.service.clone(),
            number: state.number,
            what: RolloutWhat::Scaling,
            message,
            step: None,
            weights: None,
            ready: Some(ready),
            logs: None,
        }));
        true
    }

    /// Fails the rollout because the candidate cannot run (traffic goes back to stable).
    async fn fail(&self, state: &mut RolloutState, failure: Failure) -> anyhow::Result<Tick> {
        let reason = format!("{}: {}", failure.reason, failure.message);
        self.abort(state, reason, Some(failure)).await
    }

    /// Aborts with a `ProgressDeadlineExceeded` failure once the current step has waited
    /// longer than the progress deadline (the abort's tick), else `None`; `what` says what
    /// was not ready (`1 of 2 replicas ready`).
    async fn abort_past_deadline(
        &self,
        state: &mut RolloutState,
        what: String,
    ) -> anyhow::Result<Option<Tick>> {
        let waited = Duration::from_millis(now_ms().saturating_sub(state.step_started_ms));
        if waited <= self.timing.progress_deadline {
            return Ok(None);
        }
        let failure = Failure {
            reason: "ProgressDeadlineExceeded".into(),
            message: format!("{what} after {}s", waited.as_secs()),
            logs: vec![],
        };
        let reason = failure.message.clone();
        self.abort(state, reason, Some(failure)).await.map(Some)
    }

    async fn advance_initial(&self, state: &mut RolloutState) -> anyhow::Result<Tick> {
        if let Some(tick) = self.bring_up(state, state.candidate.replicas).await? {
            return Ok(tick);
        }
        self.complete(state).await
    }

    /// With an autoscaler (the candidate is autoscaled), the stable revision's live count
    /// is what the HorizontalPodAutoscaler chose: the stable's `replicas` follow it (the
    /// rollout never scales the stable below it), and so does the candidate's full size,
    /// within the candidate's bounds. Read before every scaling decision.
    async fn follow_autoscaler(&self, state: &mut RolloutState) -> anyhow::Result<()> {
        let Some(bounds) = state.candidate.autoscale else {
            return Ok(());
        };
        let Some(stable) = state.stable.as_mut() else {
            return Ok(());
        };
        // A rolling update the engine performs scales the stable down itself.
        if state.rolling.is_some() {
            return Ok(());
        }
        let mut live = self.platform.status(&state.service, stable).await?.desired;
        if live == 0 && self.platform.native_rolling() {
            // A native rolling update moved the stable's Deployment (and its autoscaler)
            // to the candidate already.
            live = self
                .platform
                .status(&state.service, &state.candidate)
                .await?
                .desired;
        }
        if live > 0 {
            stable.replicas = live;
        }
        state.candidate.replicas = bounds.clamp(stable.replicas);
        Ok(())
    }
}

/// A phase in words, for messages.
pub fn describe_phase(phase: &Phase) -> String {
    match phase {
        Phase::Progressing => "progressing".into(),
        Phase::Paused {
            reason: PauseReason::Timed { until_ms },
        } => {
            format!(
                "paused for {}s more",
                until_ms.saturating_sub(now_ms()).div_ceil(1000)
            )
        }
        Phase::Paused {
            reason: PauseReason::UntilPromoted,
        } => "paused until promoted".into(),
        Phase::Paused {
            reason: PauseReason::Inconclusive { analysis },
        } => format!("paused: analysis {analysis} inconclusive"),
        Phase::Completed => "completed".into(),
        Phase::Aborted { reason } => format!("aborted ({reason})"),
        Phase::Failed { failure } => format!("failed ({})", failure.reason),
    }
}

#[cfg(test)]
mod tests {
    use crate::rollout::test_support::*;

    #[tokio::test]
    async fn first_deploy_completes_and_redeploy_is_a_no_op() {
        let s = Setup::new();
        let v1 = s.deploy_stable("api:1").await;
        assert_eq!(candidate_weights(&s.fake.traffic_log(), &v1.id), vec![100]);
        let engine = s.engine();
        assert!(matches!(
            engine
                .start("api", v1.clone(), Plan::builtin(StrategyKind::Canary))
                .await
                .unwrap(),
            Started::Unchanged { .. }
        ));
        assert_eq!(s.store.load_record("api").await.unwrap().stable, Some(v1));
    }

    #[tokio::test]
    async fn a_killed_driver_is_resumed_from_the_persisted_state() {
        let s = Setup::new();
        s.deploy_stable("api:1").await;
        let v2 = rev("api:2", 1);
        {
            let engine = s.engine();
            engine
                .start(
                    "api",
                    v2.clone(),
                    canary(vec![
                        PlanStep::Weight(30),
                        PlanStep::Pause(Some(Duration::from_millis(2000))),
                        PlanStep::Weight(70),
                    ]),
                )
                .await
                .unwrap();
            // "Killed" during the pause: the drive stops at its timeout.
            let (outcome, _) = engine
                .drive("api", Some(Duration::from_millis(500)))
                .await
                .unwrap();
            assert_eq!(outcome, DriveOutcome::TimedOut);
        }
        let stored = s.store.load("api").await.unwrap().unwrap();
        assert!(matches!(
            stored.phase,
            Phase::Paused {
                reason: PauseReason::Timed { .. }
            }
        ));
        assert_eq!((stored.step, stored.weight), (1, 30));
        // A new engine (a new process) continues; the pause counts from when it began.
        let engine = s.engine();
        let started = std::time::Instant::now();
        let (outcome, _) = engine
            .drive("api", Some(Duration::from_secs(5)))
            .await
            .unwrap();
        assert_eq!(outcome, DriveOutcome::Completed);
        assert!(
            // A restarted pause would take the whole 2 s again; the rest of it is 1.5 s. The
            // margin is for a loaded machine (the completion steps take a few ms each).
            started.elapsed() < Duration::from_millis(1950),
            "the pause was not restarted"
        );
        assert_eq!(
            candidate_weights(&s.fake.traffic_log(), &v2.id),
            vec![0, 0, 30, 70, 100]
        );
        // A second start while one is in progress is refused.
    }
}
