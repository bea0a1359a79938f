//! Routing: the split between candidate and stable, with the match rules, mirror share
//! and sticky sessions the plan's steps so far set, all derived from the persisted plan and
//! step index so that a resumed rollout routes as the interrupted one did.

use super::Engine;
use crate::manifest::StrategyKind;
use crate::rollout::plan::PlanStep;
use crate::rollout::platform::{Platform, Revision, Traffic, Weights};
use crate::rollout::state::*;

impl<P: Platform, S: StateStore> Engine<'_, P, S> {
    /// The split that gives the candidate `candidate_weight` (the rest to stable).
    pub(super) fn split(state: &RolloutState, candidate_weight: u32) -> (Weights, Vec<&Revision>) {
        let mut weights = Weights::new();
        let mut revisions = vec![&state.candidate];
        weights.insert(state.candidate.id.clone(), candidate_weight);
        if let Some(stable) = &state.stable {
            weights.insert(stable.id.clone(), 100 - candidate_weight);
            revisions.push(stable);
        }
        (weights, revisions)
    }

    /// Sets the candidate's traffic share (the rest to stable), with the controls of the
    /// steps done so far.
    pub(super) async fn route(
        &self,
        state: &mut RolloutState,
        candidate_weight: u32,
    ) -> anyhow::Result<()> {
        self.route_with(state, candidate_weight, state.step).await
    }

    /// Sets the candidate's share with the controls of `steps[..upto]`.
    pub(super) async fn route_with(
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
}

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

#[cfg(test)]
mod tests {
    use crate::rollout::test_support::*;

    #[tokio::test]
    async fn match_then_mirror_then_weights_set_controls_step_by_step_and_promotion_ends_them() {
        let s = Setup::new();
        let _v1 = s.deploy_stable("api:1").await;
        let engine = s.engine();
        let v2 = rev("api:2", 1);
        let mut plan = canary(vec![
            PlanStep::Match(beta()),
            PlanStep::Mirror(20),
            PlanStep::Analysis("errors".into()),
            PlanStep::Weight(20),
            PlanStep::Mirror(0),
            PlanStep::Weight(50),
        ]);
        plan.sticky = true;
        s.fake.inner.lock().unwrap().measurements =
            vec![Measurement::Value(0.0), Measurement::Value(0.01)];
        engine.start("api", v2.clone(), plan).await.unwrap();
        let (outcome, _) = engine.drive("api", None).await.unwrap();
        assert_eq!(outcome, DriveOutcome::Completed);
        let log: Vec<(u32, usize, u32, bool)> = s.fake.routing()[1..]
            .iter()
            .map(|t| {
                (
                    t.weights.get(&v2.id).copied().unwrap_or(0),
                    t.matches.len(),
                    t.mirror,
                    t.sticky,
                )
            })
            .collect();
        assert_eq!(
            log,
            vec![
                (0, 0, 0, true),    // ready, preview only
                (0, 1, 0, true),    // match x-beta
                (0, 1, 20, true),   // mirror 20 % (analysed before it serves anyone by weight)
                (20, 1, 20, true),  // weight 20
                (20, 1, 0, true),   // mirror stops
                (50, 1, 0, true),   // weight 50
                (100, 0, 0, false), // full promotion: no controls
            ]
        );
        let with_match = &s.fake.routing()[2];
        assert_eq!(with_match.candidate, v2.id);
        assert_eq!(with_match.matches, vec![beta()]);
    }

    #[tokio::test]
    async fn controls_survive_a_resume_and_an_abort_clears_them() {
        let s = Setup::new();
        let v1 = s.deploy_stable("api:1").await;
        let v2 = rev("api:2", 1);
        s.engine()
            .start(
                "api",
                v2.clone(),
                canary(vec![
                    PlanStep::Match(beta()),
                    PlanStep::Match(testers()),
                    PlanStep::Mirror(30),
                    PlanStep::Pause(None),
                    PlanStep::Weight(40),
                    PlanStep::Pause(None),
                ]),
            )
            .await
            .unwrap();
        let (outcome, state) = s.engine().drive("api", None).await.unwrap();
        assert_eq!(outcome, DriveOutcome::Paused);
        assert_eq!(state.step, 3);
        // A new process (a new engine reading the stored state) routes as the old one did.
        let stored = s.store.load("api").await.unwrap().unwrap();
        let t = Engine::<Fake, FileStore>::traffic(&stored, stored.weight, stored.step);
        assert_eq!((t.matches.clone(), t.mirror), (vec![beta(), testers()], 30));
        s.store.post("api", Request::Promote).await.unwrap();
        let (outcome, state) = s.engine().drive("api", None).await.unwrap();
        assert_eq!(outcome, DriveOutcome::Paused);
        assert_eq!(state.weight, 40);
        let last = s.fake.routing().last().unwrap().clone();
        assert_eq!(
            (last.matches.len(), last.mirror, last.weights[&v2.id]),
            (2, 30, 40)
        );
        s.store.post("api", Request::Abort).await.unwrap();
        let (outcome, _) = s.engine().drive("api", None).await.unwrap();
        assert_eq!(outcome, DriveOutcome::Aborted);
        let last = s.fake.routing().last().unwrap().clone();
        assert!(!last.has_controls(), "{last:?}");
        assert_eq!(last.weights[&v1.id], 100);
    }

    #[tokio::test]
    async fn ab_test_gives_the_candidate_only_matched_traffic_until_promoted() {
        let s = Setup::new();
        let v1 = s.deploy_stable("api:1").await;
        let v2 = rev("api:2", 1);
        let mut plan = Plan::builtin(StrategyKind::Ab);
        plan.steps = vec![PlanStep::Match(beta()), PlanStep::Pause(None)];
        plan.sticky = true;
        s.engine().start("api", v2.clone(), plan).await.unwrap();
        let (outcome, state) = s.engine().drive("api", None).await.unwrap();
        assert_eq!(outcome, DriveOutcome::Paused);
        assert_eq!(state.weight, 0);
        let last = s.fake.routing().last().unwrap().clone();
        assert_eq!(last.matches, vec![beta()]);
        assert_eq!((last.weights[&v1.id], last.weights[&v2.id]), (100, 0));
        assert!(last.sticky);
        assert!(s
            .fake
            .routing()
            .iter()
            .all(|t| t.weights.get(&v2.id).copied().unwrap_or(0) == 0));
        s.store.post("api", Request::Promote).await.unwrap();
        let (outcome, _) = s.engine().drive("api", None).await.unwrap();
        assert_eq!(outcome, DriveOutcome::Completed);
        let last = s.fake.routing().last().unwrap().clone();
        assert_eq!(last.weights[&v2.id], 100);
        assert!(!last.has_controls());
    }

    #[tokio::test]
    async fn platforms_without_controls_refuse_them() {
        struct Plain(Fake);
        impl Platform for Plain {
            async fn scale(&self, s: &str, r: &Revision, n: u32) -> anyhow::Result<()> {
                self.0.scale(s, r, n).await
            }
            async fn status(&self, s: &str, r: &Revision) -> anyhow::Result<RevisionStatus> {
                self.0.status(s, r).await
            }
            async fn set_traffic(
                &self,
                s: &str,
                w: &Weights,
                r: &[&Revision],
                m: u32,
            ) -> anyhow::Result<()> {
                self.0.set_traffic(s, w, r, m).await
            }
            async fn snapshot(&self, s: &str, r: &Revision) -> anyhow::Result<serde_json::Value> {
                self.0.snapshot(s, r).await
            }
            async fn measure(
                &self,
                s: &str,
                r: &Revision,
                a: &AnalysisPlan,
                b: &serde_json::Value,
            ) -> anyhow::Result<(Measurement, serde_json::Value)> {
                self.0.measure(s, r, a, b).await
            }
            async fn remove(&self, s: &str, r: &Revision) -> anyhow::Result<()> {
                self.0.remove(s, r).await
            }
        }
        let p = Plain(Fake::default());
        let (a, b) = (rev("api:1", 1), rev("api:2", 1));
        p.scale("api", &a, 1).await.unwrap();
        p.status("api", &a).await.unwrap();
        let mut t = Traffic::weights(Weights::from([(a.id.clone(), 100)]));
        p.set_routing("api", &t, &[&a, &b], 0).await.unwrap();
        t.mirror = 10;
        let err = p.set_routing("api", &t, &[&a, &b], 0).await.unwrap_err();
        assert!(err.to_string().contains("cannot route by header"), "{err}");
    }
}
