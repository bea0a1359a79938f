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
        let record = self.store.load_record(service)?;
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
