//! `rollout undo`: a new rollout back to an earlier completed revision, an instant switch
//! when that revision is still warm.

use std::time::Duration;

use super::{Engine, EngineError, Started};
use crate::manifest::StrategyKind;
use crate::rollout::outcome::Outcome;
use crate::rollout::plan::Plan;
use crate::rollout::platform::Platform;
use crate::rollout::state::*;

impl<P: Platform, S: StateStore> Engine<'_, P, S> {
    /// Starts a rollout back to an earlier revision: the previous one, or the one rollout
    /// `number` deployed. A revision still warm is switched to at once.
    pub async fn undo(&self, service: &str, number: Option<u64>) -> anyhow::Result<Started> {
        let record = self.store.load_record(service).await?;
        let current = record.stable.as_ref().map(|s| s.id.clone());
        let target = record
            .history
            .iter()
            .rev()
            .filter(|h| {
                h.outcome == Outcome::Completed.as_str() && Some(&h.revision.id) != current.as_ref()
            })
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

#[cfg(test)]
mod tests {
    use crate::rollout::test_support::*;

    #[tokio::test]
    async fn undo_switches_back_to_the_warm_revision() {
        let s = Setup::new();
        let v1 = s.deploy_stable("api:1").await;
        let engine = s.engine();
        let mut plan = Plan::builtin(StrategyKind::BlueGreen);
        plan.scale_down_delay = Duration::from_secs(60);
        engine.start("api", rev("api:2", 1), plan).await.unwrap();
        assert_eq!(
            engine.drive("api", None).await.unwrap().0,
            DriveOutcome::Completed
        );
        let Started::New(state) = engine.undo("api", None).await.unwrap() else {
            panic!("expected a new rollout")
        };
        assert_eq!(state.candidate.id, v1.id);
        assert_eq!(
            engine.drive("api", None).await.unwrap().0,
            DriveOutcome::Completed
        );
        assert_eq!(
            s.store.load_record("api").await.unwrap().stable.unwrap().id,
            v1.id
        );
        let history = s.store.load_record("api").await.unwrap().history;
        assert_eq!(
            history.iter().map(|h| h.number).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
    }
}
