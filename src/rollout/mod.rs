//! Progressive delivery: one engine for rolling, canary and blue-green rollouts, over a
//! platform interface that the Docker and Kubernetes back ends implement.
//!
//! * [`plan`]: strategies from the manifest (or flags) resolved into data.
//! * [`platform`]: what a back end must do (scale, report readiness, split traffic, measure).
//! * [`state`]: the persisted rollout state, requests from other processes, and the lock.
//! * [`engine`]: the state machine that drives a rollout one persisted step at a time.

pub mod analysis;
pub mod engine;
pub mod ops;
pub mod outcome;
pub mod plan;
pub mod platform;
pub mod replicas;
pub mod state;

#[cfg(test)]
pub(crate) mod test_support;

pub use engine::{DriveOutcome, Engine, EngineError, Started, Tick, Timing};
pub use outcome::Outcome;
pub use plan::{AnalysisPlan, Plan, PlanStep};
pub use platform::{
    Autoscaler, Failure, MatchValue, Measurement, Platform, Revision, RevisionStatus, Traffic,
    TrafficMatch, Weights,
};
pub use state::{
    FileStore, LockHeld, PauseReason, Phase, Request, RolloutState, ServiceRecord, StateStore,
};

/// Milliseconds since the Unix epoch: persisted times survive process restarts.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
