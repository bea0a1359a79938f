//! Analysis steps: measure the candidate every interval, compare each measurement with
//! the threshold, abort after `failure_limit` failures, pause on an inconclusive one
//! (`promote` continues), pass after `count` measurements.

use std::time::Duration;

use anyhow::Context as _;

use super::{Engine, Tick};
use crate::events::RolloutWhat;
use crate::manifest::Metric;
use crate::rollout::now_ms;
use crate::rollout::plan::AnalysisPlan;
use crate::rollout::platform::{Measurement, Platform};
use crate::rollout::state::*;

impl<P: Platform, S: StateStore> Engine<'_, P, S> {
    pub(super) async fn advance_analysis(
        &self,
        state: &mut RolloutState,
        name: &str,
    ) -> anyhow::Result<Tick> {
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
                self.save(state).await?;
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
        self.save(state).await?;
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
            self.save(state).await?;
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
            self.save(state).await?;
            return Ok(Tick::Continue);
        }
        Ok(Tick::Wait(plan.interval))
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

#[cfg(test)]
mod tests {
    use crate::rollout::test_support::*;

    #[tokio::test]
    async fn failed_analysis_aborts_and_rolls_back() {
        let s = Setup::new();
        let v1 = s.deploy_stable("api:1").await;
        s.fake.inner.lock().unwrap().measurements = vec![Measurement::Value(0.30)];
        let v2 = rev("api:2", 1);
        let (outcome, state) = s
            .roll(
                &v2,
                canary(vec![
                    PlanStep::Weight(20),
                    PlanStep::Analysis("errors".into()),
                    PlanStep::Weight(100),
                ]),
                Some(Duration::from_secs(10)),
            )
            .await;
        assert_eq!(outcome, DriveOutcome::Aborted);
        assert_eq!(outcome.exit_code().code(), 3);
        assert!(
            state.message.contains("error rate 30.00%"),
            "{}",
            state.message
        );
        let log = s.fake.traffic_log();
        assert_eq!(log.last().unwrap()[&v1.id], 100, "traffic back on stable");
        assert_eq!(
            s.fake.inner.lock().unwrap().replicas[&v2.id],
            0,
            "candidate scaled down after the delay"
        );
        assert_eq!(
            s.store.load_record("api").await.unwrap().stable.unwrap().id,
            v1.id
        );
        assert!(s.kinds().contains(&RolloutWhat::Aborted));
    }

    #[tokio::test]
    async fn manual_pause_and_inconclusive_analysis_wait_for_promotion() {
        let s = Setup::new();
        s.deploy_stable("api:1").await;
        let v2 = rev("api:2", 1);
        let engine = s.engine();
        let (outcome, state) = s
            .roll(
                &v2,
                canary(vec![
                    PlanStep::Weight(10),
                    PlanStep::Pause(None),
                    PlanStep::Analysis("errors".into()),
                    PlanStep::Weight(60),
                ]),
                Some(Duration::from_secs(5)),
            )
            .await;
        assert_eq!(outcome, DriveOutcome::Paused);
        assert_eq!(outcome.exit_code().code(), 5);
        assert_eq!(
            state.phase,
            Phase::Paused {
                reason: PauseReason::UntilPromoted
            }
        );
        assert_eq!(state.step, 1);
        // Another process promotes; no traffic → the analysis is inconclusive → paused again.
        s.store.post("api", Request::Promote).await.unwrap();
        let (outcome, state) = engine
            .drive("api", Some(Duration::from_secs(5)))
            .await
            .unwrap();
        assert_eq!(outcome, DriveOutcome::Paused);
        assert!(
            matches!(
                state.phase,
                Phase::Paused {
                    reason: PauseReason::Inconclusive { .. }
                }
            ),
            "{:?}",
            state.phase
        );
        s.store.post("api", Request::Promote).await.unwrap();
        let (outcome, _) = engine
            .drive("api", Some(Duration::from_secs(5)))
            .await
            .unwrap();
        assert_eq!(outcome, DriveOutcome::Completed);
        assert_eq!(
            candidate_weights(&s.fake.traffic_log(), &v2.id),
            vec![0, 0, 10, 60, 100]
        );
    }
}
