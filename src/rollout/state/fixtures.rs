//! Stored documents for the state tests: a canary half way and its service record.

use std::path::Path;

use super::*;
use crate::manifest::StrategyKind;

/// A change that damages a stored document.
pub(crate) type Damage<T> = fn(&mut T);

pub(crate) fn revision(image: &str) -> Revision {
    Revision::new(image, "1.0.0", 2, Default::default())
}

/// A canary of `api` half way: 50% on the candidate, at step 3 of 4.
pub(crate) fn state() -> RolloutState {
    RolloutState {
        format: STATE_FORMAT,
        service: "api".into(),
        number: 2,
        plan: Plan::builtin(StrategyKind::Canary),
        stable: Some(revision("app/api:1")),
        candidate: revision("app/api:2"),
        phase: Phase::Progressing,
        step: 2,
        step_started_ms: 1,
        candidate_ready: true,
        weight: 50,
        rolling: None,
        analysis: None,
        analyses_done: vec![],
        started_ms: 1,
        updated_ms: 1,
        finished_ms: None,
        message: String::new(),
    }
}

pub(crate) fn record() -> ServiceRecord {
    let stable = revision("app/api:1");
    ServiceRecord {
        stable: Some(stable.clone()),
        history: vec![HistoryEntry {
            number: 1,
            revision: stable,
            strategy: "canary".into(),
            outcome: "completed".into(),
            started_ms: 1,
            finished_ms: 2,
            message: String::new(),
        }],
        retired: vec![],
        scaled: None,
    }
}

pub(crate) fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}
