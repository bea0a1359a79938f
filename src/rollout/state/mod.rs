//! Persisted rollout state, and where it is kept.
//!
//! Every input of every decision lives here, outside the process: a killed dronectl loses
//! nothing, and `rollout status` / `resume` / `abort` continue from what is stored.
//! Requests from other processes (promote, abort) are posted separately and taken by the
//! process driving the rollout, so they are never lost in a read-modify-write race.
//!
//! This module holds the records and the [`StateStore`] interface; [`file`] is the store
//! in a directory (the Docker target's; the Kubernetes one is `crate::k8s::store`),
//! [`check`] validates every document read back, [`token`] keeps the router's admin
//! token beside the state.

use std::future::Future;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::outcome::Outcome;
use super::plan::{Plan, PlanStep};
use super::platform::{Failure, Revision};

mod check;
mod file;
#[cfg(test)]
mod fixtures;
mod token;

pub(crate) use check::Checked;
pub use file::{FileLock, FileStore};
pub use token::{ensure_router_token, read_router_token, ROUTER_TOKEN_FILE};

/// Where a rollout stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// Working towards the next step.
    Progressing,
    /// Waiting: for a timed pause, for `promote`, or after an inconclusive analysis.
    Paused { reason: PauseReason },
    /// The candidate is the new stable version.
    Completed,
    /// Stopped and rolled back to the stable version (by request or by analysis).
    Aborted { reason: String },
    /// The candidate could not run; traffic stayed on (or went back to) stable.
    Failed { failure: Failure },
}

impl Phase {
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Phase::Completed | Phase::Aborted { .. } | Phase::Failed { .. }
        )
    }
}

/// Why a rollout waits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PauseReason {
    /// A pause step with a duration: continues by itself at `until_ms`.
    Timed { until_ms: u64 },
    /// A pause step without a duration: waits for `rollout promote`.
    UntilPromoted,
    /// An analysis saw no traffic: waits for `rollout promote` (or `abort`).
    Inconclusive { analysis: String },
}

/// One measurement of a running analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeasurementRecord {
    pub at_ms: u64,
    /// The measured value (`None` for pass/fail checks and missing data).
    pub value: Option<f64>,
    pub outcome: MeasurementOutcome,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MeasurementOutcome {
    Pass,
    Fail,
    Inconclusive,
}

/// An analysis in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisRun {
    pub name: String,
    pub started_ms: u64,
    /// Counters at the start of the current interval (from the platform).
    pub baseline: serde_json::Value,
    pub measurements: Vec<MeasurementRecord>,
}

/// A rolling update in progress: replicas of each side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollingProgress {
    pub candidate: u32,
    pub stable: u32,
}

/// A revision kept around after it lost its traffic, until `remove_after_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Retired {
    pub revision: Revision,
    pub remove_after_ms: u64,
    /// Scaled to zero already (abort), or still warm for instant undo (blue-green).
    pub warm: bool,
}

/// Everything about one rollout of one service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutState {
    /// Format version of this record.
    pub format: u32,
    pub service: String,
    /// Increases by one per rollout of the service.
    pub number: u64,
    pub plan: Plan,
    /// What runs now; `None` for a service's first deploy.
    pub stable: Option<Revision>,
    pub candidate: Revision,
    #[serde(flatten)]
    pub phase: Phase,
    /// Index of the current step of `plan.steps`; `steps.len()` means full promotion.
    pub step: usize,
    /// When the current step began (pause durations count from here).
    pub step_started_ms: u64,
    /// The candidate is scaled up and ready (traffic may be given to it).
    pub candidate_ready: bool,
    /// Traffic percentage the candidate has now.
    pub weight: u32,
    pub rolling: Option<RollingProgress>,
    pub analysis: Option<AnalysisRun>,
    /// Past analyses of this rollout, for status and history.
    pub analyses_done: Vec<(String, MeasurementOutcome)>,
    pub started_ms: u64,
    pub updated_ms: u64,
    pub finished_ms: Option<u64>,
    /// A line for people: what happens now.
    pub message: String,
}

pub const STATE_FORMAT: u32 = 1;

/// An entry of a service's rollout history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub number: u64,
    pub revision: Revision,
    pub strategy: String,
    /// How the rollout ended: [`Outcome::Completed`], [`Outcome::Aborted`] or
    /// [`Outcome::Failed`], as their words (`completed`, `aborted`, `failed`).
    pub outcome: String,
    pub started_ms: u64,
    pub finished_ms: u64,
    pub message: String,
}

/// What is kept for a service besides the current rollout.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceRecord {
    /// The revision that has all the traffic (after the last completed rollout).
    pub stable: Option<Revision>,
    pub history: Vec<HistoryEntry>,
    /// Revisions waiting for their scale-down delay to pass.
    pub retired: Vec<Retired>,
    /// A replica count set with `dronectl scale`, kept by later deploys while the
    /// manifest's `replicas` stays what it was when the count was set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaled: Option<Scaled>,
}

/// The `dronectl scale` override of a service's replica count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scaled {
    /// The count `dronectl scale` set.
    pub replicas: u32,
    /// The manifest's `replicas` when it was set; a deploy with another count drops the
    /// override.
    pub manifest: u32,
}

/// A request posted by another process to the one driving a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// Continue past the current pause or inconclusive analysis.
    Promote,
    /// Skip every remaining step.
    PromoteFull,
    /// Abort and roll back.
    Abort,
}

/// The lock is held by someone else.
#[derive(Debug, thiserror::Error)]
#[error("a rollout of `{service}` is already being driven by {holder}; wait for it, or use `dronectl rollout status|promote|abort {service}`")]
pub struct LockHeld {
    pub service: String,
    pub holder: String,
}

/// Where rollout state lives. One store per app and environment.
///
/// Every call is async: the Kubernetes store makes API requests, the file store does small
/// local file operations (a few kilobytes, never waiting on a lock: locking is
/// `try_lock`), which it runs inline.
pub trait StateStore: Sync {
    type Lock: Send;
    /// Takes the service's lock, or fails with [`LockHeld`] while a live process holds it.
    fn lock(
        &self,
        service: &str,
        holder: &str,
    ) -> impl Future<Output = anyhow::Result<Self::Lock>> + Send;
    /// Releases a lock taken with [`StateStore::lock`]. A lock that is dropped instead (a
    /// panic, a cancelled future) is released by the kernel (file store) or expires after
    /// its lease time (Kubernetes store): dropping does no I/O.
    fn unlock(&self, lock: Self::Lock) -> impl Future<Output = ()> + Send;
    fn load(
        &self,
        service: &str,
    ) -> impl Future<Output = anyhow::Result<Option<RolloutState>>> + Send;
    fn save(&self, state: &RolloutState) -> impl Future<Output = anyhow::Result<()>> + Send;
    fn load_record(
        &self,
        service: &str,
    ) -> impl Future<Output = anyhow::Result<ServiceRecord>> + Send;
    fn save_record(
        &self,
        service: &str,
        record: &ServiceRecord,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
    fn post(
        &self,
        service: &str,
        request: Request,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
    fn take_requests(
        &self,
        service: &str,
    ) -> impl Future<Output = anyhow::Result<Vec<Request>>> + Send;
}

/// Runs `body` holding `service`'s lock, and releases the lock when it ends, whatever it
/// returned. (`body` is a future: nothing of it runs before the lock is held.)
pub async fn with_lock<S: StateStore, T>(
    store: &S,
    service: &str,
    holder: &str,
    body: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let lock = store.lock(service, holder).await?;
    let result = body.await;
    store.unlock(lock).await;
    result
}

/// Rollout state (or a record, or a request) that was read back but cannot be trusted:
/// not JSON, an unknown format, or values that contradict each other.
#[derive(Debug, thiserror::Error)]
#[error("{place} is damaged: {problem}\nto recover: {recovery}")]
pub struct DamagedState {
    /// The file (or ConfigMap key) holding it.
    pub place: String,
    pub problem: String,
    /// What the user can do about it.
    pub recovery: String,
}

/// A state directory that someone other than the user could tamper with.
#[derive(Debug, thiserror::Error)]
#[error("refusing to keep rollout state in {}: {problem}", dir.display())]
pub struct UnsafeStateDir {
    pub dir: PathBuf,
    pub problem: String,
}

/// A file in the state directory that is a symbolic link.
#[derive(Debug, thiserror::Error)]
#[error("{} is a symbolic link; dronectl does not follow links in its state directory: remove the link", path.display())]
pub struct StateSymlink {
    pub path: PathBuf,
}

/// The state can't be used as it is: the operation failed (1). What to do is in the
/// message.
macro_rules! failed {
    ($($t:ty),*) => {
        $(impl crate::exit::ExitStatus for $t {
            fn exit_code(&self) -> crate::exit::ExitCode {
                crate::exit::ExitCode::Failed
            }
        })*
    };
}
failed!(LockHeld, DamagedState, UnsafeStateDir, StateSymlink);

/// How many history entries a service keeps (older ones are dropped).
pub const HISTORY_KEEP: usize = 50;
