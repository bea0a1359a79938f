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
