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

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;

use super::now_ms;
use super::plan::{AnalysisPlan, Plan, PlanStep};
use super::platform::{Failure, Measurement, Platform, Revision, Traffic, Weights};
use super::state::*;
use crate::events::{Event, Reporter, RolloutEvent, RolloutWhat};
use crate::manifest::{Metric, StrategyKind};

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

/// How a drive ended. Maps onto exit codes 0, 1, 3, 4 and 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriveOutcome {
    Completed,
    Failed,
    Aborted,
    TimedOut,
    Paused,
}

impl DriveOutcome {
    pub fn exit_code(self) -> crate::error::ExitCode {
        use crate::error::ExitCode;
        match self {
            DriveOutcome::Completed => ExitCode::Success,
            DriveOutcome::Failed => ExitCode::Failed,
            DriveOutcome::Aborted => ExitCode::Aborted,
            DriveOutcome::TimedOut => ExitCode::TimedOut,
            DriveOutcome::Paused => ExitCode::Paused,
        }
    }

    pub fn of(phase: &Phase) -> Option<DriveOutcome> {
        match phase {
            Phase::Completed => Some(DriveOutcome::Completed),
            Phase::Aborted { .. } => Some(DriveOutcome::Aborted),
            Phase::Failed { .. } => Some(DriveOutcome::Failed),
            _ => None,
        }
    }
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

/// The result of starting a rollout.
#[derive(Debug)]
pub enum Started {
    /// A new rollout was recorded; drive it.
    New(Box<RolloutState>),
    /// The candidate already is the stable revision: nothing to do.
    Unchanged(Revision),
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

    fn save(&self, state: &mut RolloutState) -> anyhow::Result<()> {
        state.updated_ms = now_ms();
        self.store.save(state)
    }

    /// Records a new rollout of `candidate` with `plan`. Requires the service's lock.
    pub async fn start(
        &self,
        service: &str,
        candidate: Revision,
        plan: Plan,
    ) -> anyhow::Result<Started> {
        self.collect_garbage(service).await?;
        let previous = self.store.load(service)?;
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
        let mut record = self.store.load_record(service)?;
        let mut candidate = candidate;
        if let Some(scaled) = record.scaled {
            if candidate.autoscale.is_none() && candidate.replicas == scaled.manifest {
                // `dronectl scale` set the count and the manifest's is unchanged: keep it.
                candidate.replicas = scaled.replicas;
            } else {
                // The manifest's count changed (or an autoscaler took over): it wins.
                record.scaled = None;
                if let Some(stable) = record.stable.as_mut() {
                    if stable.id == candidate.id && candidate.autoscale.is_none() {
                        self.platform
                            .scale(service, stable, candidate.replicas)
                            .await?;
                        stable.replicas = candidate.replicas;
                    }
                }
                self.store.save_record(service, &record)?;
            }
        }
        if record.stable.as_ref().is_some_and(|s| s.id == candidate.id) {
            return Ok(Started::Unchanged(candidate));
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
        self.store.take_requests(service)?;
        self.save(&mut state)?;
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
            .load(service)?
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
        for request in self.store.take_requests(&state.service)? {
            match request {
                Request::Abort => {
                    return self.abort(state, "aborted by request".into(), None).await
                }
                Request::Promote | Request::PromoteFull => {
                    self.promote(state, request == Request::PromoteFull)?
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

    fn promote(&self, state: &mut RolloutState, full: bool) -> anyhow::Result<()> {
        if full {
            state.step = state.plan.steps.len();
            state.step_started_ms = now_ms();
            state.analysis = None;
            state.phase = Phase::Progressing;
            self.save(state)?;
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
            self.save(state)?;
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
        if let Some(failure) = self.past_deadline(
            state,
            format!("{} of {replicas} replicas ready", status.ready),
        ) {
            return self
                .abort(state, failure.message.clone(), Some(failure))
                .await
                .map(Some);
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

    /// A `ProgressDeadlineExceeded` failure once the current step has waited longer than
    /// the progress deadline; `what` says what was not ready (`1 of 2 replicas ready`).
    fn past_deadline(&self, state: &RolloutState, what: String) -> Option<Failure> {
        let waited = Duration::from_millis(now_ms().saturating_sub(state.step_started_ms));
        (waited > self.timing.progress_deadline).then(|| Failure {
            reason: "ProgressDeadlineExceeded".into(),
            message: format!("{what} after {}s", waited.as_secs()),
            logs: vec![],
        })
    }

    async fn advance_initial(&self, state: &mut RolloutState) -> anyhow::Result<Tick> {
        if let Some(tick) = self.bring_up(state, state.candidate.replicas).await? {
            return Ok(tick);
        }
        self.complete(state).await
    }

    async fn advance_steps(&self, state: &mut RolloutState) -> anyhow::Result<Tick> {
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

    async fn advance_analysis(&self, state: &mut RolloutState, name: &str) -> anyhow::Result<Tick> {
        let plan = state
            .plan
            .analyses
            .get(name)
            .cloned()
            .with_context(|| format!("analysis `{name}` is missing from the plan"))?;
        if let Phase::Paused {
            reason: PauseReason::Inconclusive { .. },
        } = state.phase
        {
            return Ok(Tick::Paused);
        }
        let now = now_ms();
        let run = match &state.analysis {
            Some(run) if run.name == name => run.clone(),
            _ => {
                let baseline = self
                    .platform
                    .snapshot(&state.service, &state.candidate)
                    .await?;
                state.analysis = Some(AnalysisRun {
                    name: name.to_string(),
                    started_ms: now,
                    baseline,
                    measurements: Vec::new(),
                });
                state.message = format!(
                    "analysis {name}: measuring every {}",
                    crate::manifest::Duration(plan.interval)
                );
                self.save(state)?;
                self.emit(state, RolloutWhat::Analysis, state.message.clone());
                return Ok(Tick::Wait(plan.interval));
            }
        };
        let due = run.measurements.last().map_or(run.started_ms, |m| m.at_ms)
            + plan.interval.as_millis() as u64;
        if now < due {
            return Ok(Tick::Wait(Duration::from_millis(due - now)));
        }
        let (measurement, next) = self
            .platform
            .measure(&state.service, &state.candidate, &plan, &run.baseline)
            .await?;
        let record = evaluate(&plan, &measurement, now);
        let outcome = record.outcome;
        let detail = record.detail.clone();
        let analysis = state.analysis.as_mut().expect("analysis run");
        analysis.baseline = next;
        analysis.measurements.push(record);
        let failures = analysis
            .measurements
            .iter()
            .filter(|m| m.outcome == MeasurementOutcome::Fail)
            .count() as u32;
        let taken = analysis.measurements.len() as u32;
        state.message = format!("analysis {name} {taken}/{}: {detail}", plan.count);
        self.save(state)?;
        self.emit(state, RolloutWhat::Analysis, state.message.clone());
        if failures >= plan.failure_limit {
            state
                .analyses_done
                .push((name.to_string(), MeasurementOutcome::Fail));
            state.analysis = None;
            return self
                .abort(state, format!("analysis {name} failed: {detail}"), None)
                .await;
        }
        if outcome == MeasurementOutcome::Inconclusive {
            state.phase = Phase::Paused {
                reason: PauseReason::Inconclusive {
                    analysis: name.to_string(),
                },
            };
            state.message = format!("analysis {name} is inconclusive ({detail}); paused: `dronectl rollout promote {}` continues, `abort` rolls back", state.service);
            self.save(state)?;
            self.emit(state, RolloutWhat::Paused, state.message.clone());
            return Ok(Tick::Paused);
        }
        if taken >= plan.count {
            state
                .analyses_done
                .push((name.to_string(), MeasurementOutcome::Pass));
            state.analysis = None;
            state.step += 1;
            state.step_started_ms = now;
            self.save(state)?;
            return Ok(Tick::Continue);
        }
        Ok(Tick::Wait(plan.interval))
    }

    async fn advance_rolling(&self, state: &mut RolloutState) -> anyhow::Result<Tick> {
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
            if let Some(failure) = self.past_deadline(
                state,
                format!("{ready} of {} new replicas ready", progress.candidate),
            ) {
                return self
                    .abort(state, failure.message.clone(), Some(failure))
                    .await;
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
            self.save(state)?;
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
            self.save(state)?;
            self.emit(state, RolloutWhat::Scaling, state.message.clone());
        }
        Ok(Tick::Wait(self.timing.poll))
    }

    /// A rolling update the platform performs itself: start it (idempotently), then wait
    /// for every new replica to be ready and every old one gone. An abort hands the
    /// platform all traffic for stable, which rolls the update back.
    async fn advance_native_rolling(&self, state: &mut RolloutState) -> anyhow::Result<Tick> {
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
        if let Some(failure) = self.past_deadline(
            state,
            format!("{} of {replicas} new replicas ready", status.ready),
        ) {
            return self
                .abort(state, failure.message.clone(), Some(failure))
                .await;
        }
        let message = format!(
            "rolling to {}: {}/{replicas} new replicas ready, {} replicas in all",
            state.candidate.label(),
            status.ready,
            status.current
        );
        if self.report_scaling(state, message, (status.ready, replicas)) {
            self.save(state)?;
        }
        Ok(Tick::Wait(self.timing.poll))
    }

    /// The split that gives the candidate `candidate_weight` (the rest to stable).
    fn split(state: &RolloutState, candidate_weight: u32) -> (Weights, Vec<&Revision>) {
        let mut weights = Weights::new();
        let mut revisions = vec![&state.candidate];
        weights.insert(state.candidate.id.clone(), candidate_weight);
        if let Some(stable) = &state.stable {
            weights.insert(stable.id.clone(), 100 - candidate_weight);
            revisions.push(stable);
        }
        (weights, revisions)
    }

    /// Before the candidate's share changes to `candidate_weight`: scales every revision
    /// up to the replicas the platform needs for that split and waits until they are
    /// ready (scale up, wait until ready, then give traffic — also for 100 % and
    /// `promote --full`). `None` when traffic may move now; else what to do meanwhile.
    async fn scale_for(
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

    /// Sets the candidate's traffic share (the rest to stable), with the controls of the
    /// steps done so far.
    async fn route(&self, state: &mut RolloutState, candidate_weight: u32) -> anyhow::Result<()> {
        self.route_with(state, candidate_weight, state.step).await
    }

    /// Sets the candidate's share with the controls of `steps[..upto]`.
    async fn route_with(
        &self,
        state: &mut RolloutState,
        candidate_weight: u32,
        upto: usize,
    ) -> anyhow::Result<()> {
        let traffic = Self::traffic(state, candidate_weight, upto);
        let (_, revisions) = Self::split(state, candidate_weight);
        self.platform
            .set_routing(&state.service, &traffic, &revisions, state.plan.max_surge)
            .await?;
        state.weight = candidate_weight;
        Ok(())
    }

    /// The traffic for a candidate share: the split, plus the match rules and mirror share
    /// that the plan's steps before `upto` set, and sticky sessions if the plan asks. They
    /// are derived from the persisted plan and step index, so a resumed rollout routes as
    /// the interrupted one did. Full promotion (100 %) drops every control.
    pub fn traffic(state: &RolloutState, candidate_weight: u32, upto: usize) -> Traffic {
        let (weights, _) = Self::split(state, candidate_weight);
        let mut traffic = Traffic::weights(weights);
        if candidate_weight >= 100 || state.stable.is_none() {
            return traffic;
        }
        traffic.candidate = state.candidate.id.clone();
        for step in state.plan.steps.iter().take(upto) {
            match step {
                PlanStep::Match(m) => traffic.matches.push(m.clone()),
                PlanStep::Mirror(p) => traffic.mirror = (*p).min(100),
                _ => {}
            }
        }
        traffic.sticky =
            state.plan.sticky && matches!(state.plan.kind, StrategyKind::Canary | StrategyKind::Ab);
        traffic
    }

    /// Full promotion: all traffic to the candidate, which becomes stable.
    async fn complete(&self, state: &mut RolloutState) -> anyhow::Result<Tick> {
        self.route(state, 100).await?;
        let now = now_ms();
        let mut record = self.store.load_record(&state.service)?;
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
        push_history(&mut record, state, "completed");
        self.store.save_record(&state.service, &record)?;
        self.save(state)?;
        self.emit(state, RolloutWhat::Completed, state.message.clone());
        self.collect_garbage(&state.service).await?;
        Ok(Tick::Done)
    }

    /// Moves traffic back to stable and marks the rollout aborted (or failed, with a
    /// failure). The candidate is scaled down later, by [`Engine::finish_abort`].
    async fn abort(
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
            "failed"
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
            "aborted"
        };
        let mut record = self.store.load_record(&state.service)?;
        record
            .retired
            .retain(|r| r.revision.id != state.candidate.id);
        record.retired.push(Retired {
            revision: state.candidate.clone(),
            remove_after_ms: now + self.timing.abort_delay.as_millis() as u64,
            warm: false,
        });
        push_history(&mut record, state, outcome);
        self.store.save_record(&state.service, &record)?;
        self.save(state)?;
        let what = if outcome == "failed" {
            RolloutWhat::Failed
        } else {
            RolloutWhat::Aborted
        };
        self.emit(state, what, state.message.clone());
        Ok(Tick::Done)
    }

    /// After an abort: wait for the abort delay, then scale the candidate down.
    async fn finish_abort(&self, state: &mut RolloutState) -> anyhow::Result<()> {
        tokio::time::sleep(self.timing.abort_delay).await;
        self.collect_garbage(&state.service).await
    }

    /// Scales down and removes retired revisions whose delay has passed.
    pub async fn collect_garbage(&self, service: &str) -> anyhow::Result<()> {
        let mut record = self.store.load_record(service)?;
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
            self.store.save_record(service, &record)?;
        }
        Ok(())
    }

    /// Starts a rollout back to an earlier revision: the previous one, or the one rollout
    /// `number` deployed. A revision still warm is switched to at once.
    pub async fn undo(&self, service: &str, number: Option<u64>) -> anyhow::Result<Started> {
        let record = self.store.load_record(service)?;
        let current = record.stable.as_ref().map(|s| s.id.clone());
        let target = record
            .history
            .iter()
            .rev()
            .filter(|h| h.outcome == "completed" && Some(&h.revision.id) != current.as_ref())
            .find(|h| number.is_none_or(|n| h.number == n))
            .map(|h| h.revision.clone())
            .ok_or_else(|| EngineError::NothingToUndo {
                service: service.into(),
            })?;
        let warm = record
            .retired
            .iter()
            .any(|r| r.warm && r.revision.id == target.id);
        let mut plan = if warm {
            Plan::builtin(StrategyKind::BlueGreen)
        } else {
            Plan::builtin(StrategyKind::Rolling)
        };
        plan.name = if warm {
            "undo (instant switch)".into()
        } else {
            "undo (rolling)".into()
        };
        plan.scale_down_delay = Duration::ZERO;
        self.start(service, target, plan).await
    }
}

fn push_history(record: &mut ServiceRecord, state: &RolloutState, outcome: &str) {
    record.history.retain(|h| h.number != state.number);
    record.history.push(HistoryEntry {
        number: state.number,
        revision: state.candidate.clone(),
        strategy: state.plan.name.clone(),
        outcome: outcome.to_string(),
        started_ms: state.started_ms,
        finished_ms: state.finished_ms.unwrap_or_else(now_ms),
        message: state.message.clone(),
    });
    const KEEP: usize = 50;
    if record.history.len() > KEEP {
        let drop = record.history.len() - KEEP;
        record.history.drain(..drop);
    }
}

/// Compares a measurement with the analysis's threshold.
pub fn evaluate(plan: &AnalysisPlan, measurement: &Measurement, at_ms: u64) -> MeasurementRecord {
    let (value, outcome, detail) = match measurement {
        Measurement::NoData => (
            None,
            MeasurementOutcome::Inconclusive,
            "no traffic to measure".to_string(),
        ),
        Measurement::Inconclusive { detail } => {
            (None, MeasurementOutcome::Inconclusive, detail.clone())
        }
        Measurement::Check { ok, detail } => (
            None,
            if *ok {
                MeasurementOutcome::Pass
            } else {
                MeasurementOutcome::Fail
            },
            detail.clone(),
        ),
        Measurement::Value(v) => {
            let threshold = plan.threshold.unwrap_or(f64::INFINITY);
            let shown = match plan.metric {
                Metric::ErrorRate => format!(
                    "error rate {:.2}% (threshold {:.2}%)",
                    v * 100.0,
                    threshold * 100.0
                ),
                Metric::LatencyP50 | Metric::LatencyP95 | Metric::LatencyP99 => {
                    format!(
                        "{} {:.1} ms (threshold {:.1} ms)",
                        metric_name(plan.metric),
                        v * 1000.0,
                        threshold * 1000.0
                    )
                }
                _ => format!("{v} (threshold {threshold})"),
            };
            (
                Some(*v),
                if *v <= threshold {
                    MeasurementOutcome::Pass
                } else {
                    MeasurementOutcome::Fail
                },
                shown,
            )
        }
    };
    MeasurementRecord {
        at_ms,
        value,
        outcome,
        detail,
    }
}

fn metric_name(metric: Metric) -> &'static str {
    match metric {
        Metric::ErrorRate => "error rate",
        Metric::LatencyP50 => "p50 latency",
        Metric::LatencyP95 => "p95 latency",
        Metric::LatencyP99 => "p99 latency",
        Metric::Http => "http check",
        Metric::Prometheus => "prometheus query",
    }
}

/// A phase in words, for messages.
/// What the controls do now, for people.
pub fn describe_controls(traffic: &Traffic, candidate: &Revision) -> String {
    let mut parts = Vec::new();
    if !traffic.matches.is_empty() {
        let rules: Vec<String> = traffic.matches.iter().map(|m| m.to_string()).collect();
        parts.push(format!(
            "requests with {} go to {}",
            rules.join(", or "),
            candidate.label()
        ));
    }
    if traffic.mirror > 0 {
        parts.push(format!(
            "{}% of the other requests are mirrored to {} (responses discarded)",
            traffic.mirror,
            candidate.label()
        ));
    }
    let weight = traffic.weights.get(&candidate.id).copied().unwrap_or(0);
    parts.push(format!(
        "{weight}% of traffic by weight on {}",
        candidate.label()
    ));
    parts.join("; ")
}

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
