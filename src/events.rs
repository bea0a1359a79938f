//! The event stream: everything dronectl has to tell the user, as data.
//!
//! Core logic emits [`Event`]s to a [`Reporter`]; the printer in the binary renders them as
//! human text (with progress on a terminal) or as JSON Lines (`--output json`). The JSON
//! form is a versioned schema: every line carries `"schema": SCHEMA_VERSION` and an
//! `"event"` tag; fields are only ever added within one version.

use std::path::PathBuf;

use serde::Serialize;

use crate::manifest::Diagnostic;

/// Version of the JSON Lines event schema.
pub const SCHEMA_VERSION: u32 = 1;

/// Something that happened, or a result.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Progress of a rollout (see [`RolloutEvent`]).
    Rollout(RolloutEvent),
    /// A log line of a container (`dronectl logs`; see [`LogEvent`]).
    Log(LogEvent),
    /// What the edit loop of `dronectl dev` is doing (see [`DevEvent`]).
    Dev(DevEvent),
    /// A step of the current command began (`Creating service ratings`).
    Started { action: String, subject: String },
    /// A file or directory was created, or would be with `--dry-run`.
    File { path: PathBuf, dry_run: bool },
    /// An existing file was changed, or would be with `--dry-run`.
    Modified {
        path: PathBuf,
        dry_run: bool,
        what: String,
    },
    /// A manifest finding.
    Diagnostic {
        file: PathBuf,
        diagnostic: Diagnostic,
    },
    /// Free-form information for humans (`-v` shows more of these).
    Note { message: String, verbose: bool },
    /// A suggestion of what to run next.
    Hint { message: String },
    /// A step of building one service's image began, progressed, finished or was skipped.
    BuildStep {
        service: String,
        stage: BuildStage,
        status: StepStatus,
        /// What is happening (`cargo build …`, the image reference, the push digest).
        #[serde(skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
        /// Bytes: the binary's size after compile, the image's after image, pushed so far.
        #[serde(skip_serializing_if = "Option::is_none")]
        bytes: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        elapsed_ms: Option<u64>,
    },
    /// cargo finished compiling one more crate (a dependency, or a service's library).
    CompileProgress { crates_done: u32, current: String },
    /// A compiler diagnostic in full, attributed to the service whose crate produced it
    /// (`service` is absent for shared crates).
    CompilerMessage {
        #[serde(skip_serializing_if = "Option::is_none")]
        service: Option<String>,
        package: String,
        level: String,
        rendered: String,
    },
    /// A line of a service's Dockerfile build output.
    DockerOutput { service: String, line: String },
    /// A service's image is ready: built now, or found up to date.
    ImageReady {
        service: String,
        /// Repository (`app/service`, or `registry/app/service` when pushed).
        image: String,
        tag: String,
        /// Local image id.
        id: String,
        size: u64,
        /// Registry manifest digest, when pushed.
        #[serde(skip_serializing_if = "Option::is_none")]
        digest: Option<String>,
        /// false: the inputs were unchanged and the existing image was reused.
        rebuilt: bool,
    },
    /// An image was removed (`dronectl images prune`), or would be with `--dry-run`.
    ImageRemoved {
        id: String,
        tags: Vec<String>,
        size: u64,
        dry_run: bool,
    },
}

/// The stages of building a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BuildStage {
    /// cargo compiles the static binary.
    Compile,
    /// The image is assembled (or built from the service's Dockerfile) and loaded.
    Image,
    /// The image gets its tag.
    Tag,
    /// The image is pushed to the environment's registry.
    Push,
}

/// Where a build stage is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Started,
    Progress,
    Finished,
    /// Not needed: the service's inputs are unchanged.
    Skipped,
    Failed,
}

/// Receives the events core logic emits.
pub trait Reporter: Sync {
    fn event(&self, event: Event);
}

/// A reporter that keeps events in memory (tests, and callers that render later).
#[derive(Default)]
pub struct Collect(pub std::sync::Mutex<Vec<Event>>);

impl Reporter for Collect {
    fn event(&self, event: Event) {
        self.0.lock().expect("events lock").push(event);
    }
}

impl Collect {
    pub fn take(&self) -> Vec<Event> {
        std::mem::take(&mut self.0.lock().expect("events lock"))
    }
}

/// What happened in a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutWhat {
    Started,
    /// The candidate's replicas are coming up (`ready` says how many are ready).
    Scaling,
    /// Traffic moved (`weights`).
    Traffic,
    /// A step began.
    Step,
    /// An analysis measurement was taken.
    Analysis,
    Paused,
    Resumed,
    Completed,
    Aborted,
    Failed,
    /// An old revision was scaled down and removed.
    Cleaned,
}

/// A rollout event: the same information for people and for machines.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutEvent {
    pub service: String,
    /// The rollout's number for this service.
    pub number: u64,
    pub what: RolloutWhat,
    pub message: String,
    /// Current step, as `2/5 pause 30s`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Traffic per version label (`1.2.0-abc1234 (rev)`), in percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weights: Option<std::collections::BTreeMap<String, u32>>,
    /// Ready and desired replicas of the candidate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready: Option<(u32, u32)>,
    /// Failure details: the reason and the last log lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logs: Option<Vec<String>>,
}

/// One log line of one container of the app, with what dronectl could read from it.
#[derive(Debug, Clone, Serialize)]
pub struct LogEvent {
    /// Who wrote it: a service, an infrastructure entry, or `router`.
    pub service: String,
    /// `service`, `infrastructure` or `router`.
    pub kind: String,
    /// The container.
    pub source: String,
    /// The prefix people see: `orders`, `orders.2` (replica 2), `orders@r3.1` (replica 1 of
    /// revision r3 while several revisions run).
    pub label: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replica: Option<u32>,
    /// When the engine received the line (RFC 3339, nanoseconds, UTC).
    pub timestamp: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The line as the container wrote it.
    pub line: String,
    /// The line's level, message and correlation id, when it is a JSON log record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The whole JSON object, when the line is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<serde_json::Map<String, serde_json::Value>>,
}

/// What happened in `dronectl dev`'s edit loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DevWhat {
    /// The app is up and the loop watches the sources (`message` holds the entry URL).
    Watching,
    /// Source files of `services` changed (`paths`, relative to the app).
    Changed,
    /// A build of `services` began.
    BuildStarted,
    /// The build of `services` finished (`elapsed_ms`).
    BuildFinished,
    /// The build failed (a compile error: the compiler's messages came as
    /// `compiler_message` events); the running versions keep serving.
    BuildFailed,
    /// The new revision of a service is being swapped in.
    Swapping,
    /// A service serves its new revision (`version`, `revision`, `elapsed_ms` since the change).
    Live,
    /// The change produced the revision that already runs: nothing to swap.
    Unchanged,
    /// The new revision failed (crash loop, never ready) and traffic stayed on or went back
    /// to the old one; `logs` holds its last log lines.
    RolledBack,
    /// A service's directory disappeared (deleted or renamed): it is no longer watched until
    /// it comes back; the loop goes on for the others.
    Missing,
    /// A missing service directory is back and watched again.
    Restored,
    /// The loop stopped; `message` says what was left running.
    Stopped,
}

/// One step of the `dronectl dev` loop.
#[derive(Debug, Clone, Serialize)]
pub struct DevEvent {
    pub what: DevWhat,
    /// The services concerned (empty for the loop as a whole).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
    pub message: String,
    /// Changed files, relative to the app directory.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Duration of the step (build), or since the change was seen (`live`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elapsed_ms: Option<u64>,
    /// The failed revision's last log lines (`rolled_back`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logs: Option<Vec<String>>,
}

impl DevEvent {
    /// An event with only `what`, `services` and `message` set.
    pub fn new(what: DevWhat, services: Vec<String>, message: impl Into<String>) -> DevEvent {
        DevEvent {
            what,
            services,
            message: message.into(),
            paths: Vec::new(),
            version: None,
            revision: None,
            elapsed_ms: None,
            logs: None,
        }
    }
}
