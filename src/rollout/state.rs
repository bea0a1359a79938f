//! Persisted rollout state, and where it is kept.
//!
//! Every input of every decision lives here, outside the process: a killed dronectl loses
//! nothing, and `rollout status` / `resume` / `abort` continue from what is stored.
//! Requests from other processes (promote, abort) are posted separately and taken by the
//! process driving the rollout, so they are never lost in a read-modify-write race.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::outcome::Outcome;
use super::plan::{Plan, PlanStep};
use super::platform::{Failure, Revision};

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
pub trait StateStore: Sync {
    type Lock: Send;
    /// Takes the service's lock, or fails with [`LockHeld`] while a live process holds it.
    fn lock(&self, service: &str, holder: &str) -> anyhow::Result<Self::Lock>;
    fn load(&self, service: &str) -> anyhow::Result<Option<RolloutState>>;
    fn save(&self, state: &RolloutState) -> anyhow::Result<()>;
    fn load_record(&self, service: &str) -> anyhow::Result<ServiceRecord>;
    fn save_record(&self, service: &str, record: &ServiceRecord) -> anyhow::Result<()>;
    fn post(&self, service: &str, request: Request) -> anyhow::Result<()>;
    fn take_requests(&self, service: &str) -> anyhow::Result<Vec<Request>>;
}

/// A state store in a directory: one JSON file per service, written atomically, and an
/// advisory file lock that the kernel releases when the holder dies (so `kill -9` never
/// leaves a stale lock behind).
///
/// The directory is the user's own: every level dronectl creates is made `0700`, and the
/// directory must belong to the current user and be writable by nobody else. Files in it
/// are opened without following symbolic links (`O_NOFOLLOW`), and everything read back
/// is validated (see [`RolloutState::validate`]).
pub struct FileStore {
    dir: PathBuf,
}

/// A held file lock; dropping it releases the lock.
pub struct FileLock {
    _file: std::fs::File,
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

impl FileStore {
    /// Opens (creating it, `0700` per created level) the state directory `dir`, and checks
    /// that it is the user's own.
    pub fn new(dir: impl Into<PathBuf>) -> anyhow::Result<FileStore> {
        let dir: PathBuf = dir.into();
        let mut missing = Vec::new();
        let mut at = dir.as_path();
        while !at.as_os_str().is_empty() && std::fs::symlink_metadata(at).is_err() {
            missing.push(at.to_path_buf());
            match at.parent() {
                Some(parent) => at = parent,
                None => break,
            }
        }
        for level in missing.iter().rev() {
            use std::os::unix::fs::DirBuilderExt;
            match std::fs::DirBuilder::new().mode(0o700).create(level) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(anyhow::anyhow!(
                        "cannot create the state directory {}: {e}",
                        level.display()
                    ))
                }
            }
        }
        // The levels dronectl created must still be real directories, the state directory
        // itself the user's own, and no directory above it open to everyone (a sticky one
        // such as /tmp is: nobody can move the user's entries in it).
        for level in missing.iter().skip(1) {
            check_dir(level, false)?;
        }
        check_dir(&dir, true)?;
        let absolute = std::path::absolute(&dir).map_err(|e| UnsafeStateDir {
            dir: dir.clone(),
            problem: e.to_string(),
        })?;
        for ancestor in absolute.ancestors().skip(1) {
            use std::os::unix::fs::MetadataExt;
            let Ok(meta) = std::fs::metadata(ancestor) else {
                continue;
            };
            if meta.mode() & 0o002 != 0 && meta.mode() & 0o1000 == 0 {
                return Err(UnsafeStateDir {
                    dir: dir.clone(),
                    problem: format!(
                        "{} above it can be written by everyone (mode {:o}), so anyone could replace it",
                        ancestor.display(),
                        meta.mode() & 0o7777
                    ),
                }
                .into());
            }
        }
        Ok(FileStore { dir })
    }

    /// The default place: `$DRONECTL_STATE_DIR`, else `$XDG_STATE_HOME/dronectl`, else
    /// `~/.local/state/dronectl`, then `<app>/<environment>`. With none of them set it is
    /// a usage error (exit 2), never a shared directory such as `/tmp`.
    pub fn default_dir(app: &str, environment: &str) -> anyhow::Result<PathBuf> {
        let set = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let base = set("DRONECTL_STATE_DIR")
            .map(PathBuf::from)
            .or_else(|| set("XDG_STATE_HOME").map(|p| PathBuf::from(p).join("dronectl")))
            .or_else(|| set("HOME").map(|h| PathBuf::from(h).join(".local/state/dronectl")))
            .ok_or_else(|| {
                crate::exit::UsageError(
                    "cannot choose a directory for rollout state: none of DRONECTL_STATE_DIR, XDG_STATE_HOME and HOME is set; set DRONECTL_STATE_DIR to a directory only you can write".into(),
                )
            })?;
        Ok(base.join(app).join(environment))
    }

    fn path(&self, service: &str, suffix: &str) -> PathBuf {
        self.dir.join(format!("{service}.{suffix}"))
    }

    /// Reads and validates a JSON document; `None` when the file does not exist.
    fn read<T: Checked>(path: &Path, service: &str) -> anyhow::Result<Option<T>> {
        use std::io::Read;
        let mut file = match open_no_follow(std::fs::OpenOptions::new().read(true), path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(open_error(path, e)),
        };
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        let recovery = T::file_recovery(path, service);
        Ok(Some(T::parse(
            &bytes,
            service,
            &path.display().to_string(),
            recovery,
        )?))
    }

    fn write<T: Serialize>(&self, path: &Path, value: &T) -> anyhow::Result<()> {
        use std::io::Write;
        // The rename below would replace a link rather than follow it; still, a link where
        // dronectl keeps its files is a sign of tampering: say so.
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(StateSymlink {
                path: path.to_path_buf(),
            }
            .into());
        }
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        serde_json::to_writer_pretty(&mut tmp, value)?;
        tmp.write_all(b"\n")?;
        tmp.as_file().sync_all()?;
        tmp.persist(path)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {}", path.display(), e.error))?;
        Ok(())
    }
}

/// The file, in an app's state directory, holding the admin token of the app's router.
pub const ROUTER_TOKEN_FILE: &str = "router.token";

/// Reads the router admin token kept in `dir`; `None` when there is none. The file is opened
/// without following a symlink and must be a regular file that only its owner can access.
pub fn read_router_token(dir: &Path) -> anyhow::Result<Option<dronectl_router::AdminToken>> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let path = dir.join(ROUTER_TOKEN_FILE);
    let recover = "remove it and run `dronectl up`, which makes a new token and router";
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => anyhow::bail!(
            "{} is a symbolic link; the router token is never read through one ({recover})",
            path.display()
        ),
        Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
    };
    let meta = file.metadata()?;
    if !meta.is_file() || meta.mode() & 0o077 != 0 {
        anyhow::bail!(
            "{} must be a regular file that only you can read (mode 0600); {recover}",
            path.display()
        );
    }
    let mut text = String::new();
    file.take(4096)
        .read_to_string(&mut text)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    dronectl_router::AdminToken::new(text.trim_end())
        .map(Some)
        .map_err(|e| anyhow::anyhow!("{} is damaged: {e}; {recover}", path.display()))
}

/// The router admin token kept in `dir`, made when there is none: 32 bytes from the OS
/// random generator as 64 hex digits, written to a 0600 file that appears atomically and
/// never replaces an existing one. Returns the token and whether it was made now.
pub fn ensure_router_token(dir: &Path) -> anyhow::Result<(dronectl_router::AdminToken, bool)> {
    use std::io::Write;
    if let Some(token) = read_router_token(dir)? {
        return Ok((token, false));
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("the OS random generator failed: {e}"))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let token = dronectl_router::AdminToken::new(hex)?;
    // tempfile creates the file 0600 with O_EXCL; persisting never overwrites.
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(format!("{}\n", token.expose()).as_bytes())?;
    tmp.as_file().sync_all()?;
    let path = dir.join(ROUTER_TOKEN_FILE);
    match tmp.persist_noclobber(&path) {
        Ok(_) => Ok((token, true)),
        // Another dronectl made one in the meantime: use that.
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
            let token = read_router_token(dir)?
                .ok_or_else(|| anyhow::anyhow!("{} vanished", path.display()))?;
            Ok((token, false))
        }
        Err(e) => Err(anyhow::anyhow!(
            "cannot write {}: {}",
            path.display(),
            e.error
        )),
    }
}

/// Opens `path` with `options` without following a symbolic link at its end.
fn open_no_follow(
    options: &mut std::fs::OpenOptions,
    path: &Path,
) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    options.custom_flags(libc::O_NOFOLLOW).open(path)
}

/// An error opening `path`: a link is a [`StateSymlink`], anything else names the file.
fn open_error(path: &Path, e: std::io::Error) -> anyhow::Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        StateSymlink {
            path: path.to_path_buf(),
        }
        .into()
    } else {
        anyhow::anyhow!("cannot open {}: {e}", path.display())
    }
}

/// Checks that `dir` is a directory owned by the current user that nobody else can
/// write. `follow`: whether `dir` itself may be a symbolic link to such a directory (the
/// configured directory may be; the levels dronectl creates may not).
fn check_dir(dir: &Path, follow: bool) -> Result<(), UnsafeStateDir> {
    use std::os::unix::fs::MetadataExt;
    let unsafe_dir = |problem: String| UnsafeStateDir {
        dir: dir.to_path_buf(),
        problem,
    };
    let meta = if follow {
        std::fs::metadata(dir)
    } else {
        std::fs::symlink_metadata(dir)
    }
    .map_err(|e| unsafe_dir(e.to_string()))?;
    if !meta.is_dir() {
        return Err(unsafe_dir("it is not a directory".into()));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    if meta.uid() != uid {
        return Err(unsafe_dir(format!(
            "it belongs to uid {}, not to you (uid {uid})",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(unsafe_dir(format!(
            "others can write to it (mode {:o}); `chmod go-w {}` or choose another DRONECTL_STATE_DIR",
            meta.mode() & 0o7777,
            dir.display()
        )));
    }
    Ok(())
}
impl StateStore for FileStore {
    type Lock = FileLock;

    fn lock(&self, service: &str, holder: &str) -> anyhow::Result<FileLock> {
        use std::io::{Seek, Write};
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.path(service, "lock");
        let mut file = open_no_follow(
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .mode(0o600),
            &path,
        )
        .map_err(|e| open_error(&path, e))?;
        match file.try_lock() {
            Ok(()) => {
                file.set_len(0)?;
                file.rewind()?;
                write!(file, "{holder}")?;
                Ok(FileLock { _file: file })
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::io::read_to_string(&file).unwrap_or_default();
                Err(LockHeld {
                    service: service.to_string(),
                    holder: if holder.is_empty() {
                        "another process".into()
                    } else {
                        holder
                    },
                }
                .into())
            }
            Err(std::fs::TryLockError::Error(e)) => {
                Err(anyhow::anyhow!("cannot lock {}: {e}", path.display()))
            }
        }
    }

    fn load(&self, service: &str) -> anyhow::Result<Option<RolloutState>> {
        Self::read(&self.path(service, "rollout.json"), service)
    }

    fn save(&self, state: &RolloutState) -> anyhow::Result<()> {
        self.write(&self.path(&state.service, "rollout.json"), state)
    }

    fn load_record(&self, service: &str) -> anyhow::Result<ServiceRecord> {
        Ok(Self::read(&self.path(service, "record.json"), service)?.unwrap_or_default())
    }

    fn save_record(&self, service: &str, record: &ServiceRecord) -> anyhow::Result<()> {
        self.write(&self.path(service, "record.json"), record)
    }

    fn post(&self, service: &str, request: Request) -> anyhow::Result<()> {
        // One file per request: posting never rewrites what another process reads.
        let name = format!(
            "{service}.request.{}.{}.json",
            super::now_ms(),
            std::process::id()
        );
        self.write(&self.dir.join(name), &request)
    }

    fn take_requests(&self, service: &str) -> anyhow::Result<Vec<Request>> {
        let prefix = format!("{service}.request.");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
            })
            .collect();
        files.sort();
        let mut requests = Vec::new();
        for file in files {
            if let Some(r) = Self::read::<Request>(&file, service)? {
                requests.push(r);
            }
            let _ = std::fs::remove_file(&file);
        }
        Ok(requests)
    }
}

/// How many history entries a service keeps (older ones are dropped).
pub const HISTORY_KEEP: usize = 50;

/// A document of the state store that is validated when read back: state files and
/// ConfigMaps are untrusted input (a bad edit, a disk error, another tool).
pub(crate) trait Checked: serde::de::DeserializeOwned {
    /// The contradictions in `self` as read for `service`, if any.
    fn check(&self, service: &str) -> Result<(), String>;

    /// What to do when the file at `path` is damaged.
    fn file_recovery(path: &Path, service: &str) -> String;

    /// Parses and checks `bytes` read from `place` (a file or a ConfigMap key).
    fn parse(
        bytes: &[u8],
        service: &str,
        place: &str,
        recovery: String,
    ) -> Result<Self, DamagedState> {
        let damaged = |problem: String| DamagedState {
            place: place.to_string(),
            problem,
            recovery: recovery.clone(),
        };
        let value: Self =
            serde_json::from_slice(bytes).map_err(|e| damaged(format!("not valid state: {e}")))?;
        value.check(service).map_err(damaged)?;
        Ok(value)
    }
}

fn move_away(path: &Path) -> String {
    format!("`mv {0} {0}.damaged`", path.display())
}

impl Checked for RolloutState {
    fn check(&self, service: &str) -> Result<(), String> {
        self.validate(service)
    }

    fn file_recovery(path: &Path, service: &str) -> String {
        format!(
            "move it away ({}): dronectl then forgets the rollout in progress (what runs stays as it is) and the next `dronectl deploy {service}` starts afresh",
            move_away(path)
        )
    }
}

impl Checked for ServiceRecord {
    fn check(&self, _service: &str) -> Result<(), String> {
        self.validate()
    }

    fn file_recovery(path: &Path, service: &str) -> String {
        format!(
            "move it away ({}): dronectl then forgets `{service}`'s stable revision and history, and the next deploy is treated as its first",
            move_away(path)
        )
    }
}

impl Checked for Request {
    fn check(&self, _service: &str) -> Result<(), String> {
        Ok(())
    }

    fn file_recovery(path: &Path, _service: &str) -> String {
        format!(
            "delete it (`rm {}`) and post the request again",
            path.display()
        )
    }
}

/// A revision is consistent when its id is the hash of its content (so an edited image or
/// environment cannot pass for the revision that was deployed).
fn check_revision(revision: &Revision, what: &str) -> Result<(), String> {
    let expected = Revision::new(
        &revision.image,
        &revision.version,
        revision.replicas,
        revision.env.clone(),
    )
    .with_secrets(revision.secrets.clone());
    if revision.id != expected.id {
        return Err(format!(
            "{what} revision `{}` does not match its content (image `{}`)",
            revision.id.escape_debug(),
            revision.image.escape_debug()
        ));
    }
    if revision.image.is_empty() {
        return Err(format!("{what} revision `{}` has no image", revision.id));
    }
    // Secret versions are names and random ids (or `rv:<resourceVersion>`), never values.
    for (name, version) in &revision.secrets {
        let name_ok = !name.is_empty()
            && name.len() <= 128
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        let version_ok = !version.is_empty()
            && version.len() <= 64
            && version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == ':' || c == '-');
        if !name_ok || !version_ok {
            return Err(format!(
                "{what} revision `{}` has a malformed secret version",
                revision.id
            ));
        }
    }
    Ok(())
}

impl RolloutState {
    /// Checks a rollout read back for `service`: a known format, weights 0–100 (the stable
    /// revision has `100 - weight`), a step within the plan, analyses the plan defines,
    /// consistent revisions and a phase that agrees with the traffic.
    pub fn validate(&self, service: &str) -> Result<(), String> {
        if self.format != STATE_FORMAT {
            return Err(format!(
                "format {} is not one this dronectl reads (format {STATE_FORMAT}); was it written by another version?",
                self.format
            ));
        }
        if self.service != service {
            return Err(format!(
                "it holds the rollout of `{}`, not of `{service}`",
                self.service.escape_debug()
            ));
        }
        if self.number == 0 {
            return Err("rollout number 0 (numbers start at 1)".into());
        }
        if self.weight > 100 {
            return Err(format!(
                "the candidate has {}% of the traffic (at most 100%)",
                self.weight
            ));
        }
        for (i, step) in self.plan.steps.iter().enumerate() {
            match step {
                PlanStep::Weight(w) if *w > 100 => {
                    return Err(format!("step {} sets weight {w}% (at most 100%)", i + 1))
                }
                PlanStep::Mirror(p) if *p > 100 => {
                    return Err(format!("step {} mirrors {p}% (at most 100%)", i + 1))
                }
                PlanStep::Match(m) => {
                    if let Err(e) = check_match(m) {
                        return Err(format!("step {}: {e}", i + 1));
                    }
                }
                PlanStep::Analysis(a) if !self.plan.analyses.contains_key(a) => {
                    return Err(format!(
                        "step {} runs analysis `{}`, which the plan does not define",
                        i + 1,
                        a.escape_debug()
                    ))
                }
                _ => {}
            }
        }
        if self.step > self.plan.steps.len() {
            return Err(format!(
                "the current step is {} of a plan with {} steps",
                self.step + 1,
                self.plan.steps.len()
            ));
        }
        if let Some(run) = &self.analysis {
            if !self.plan.analyses.contains_key(&run.name) {
                return Err(format!(
                    "analysis `{}` runs, but the plan does not define it",
                    run.name.escape_debug()
                ));
            }
        }
        check_revision(&self.candidate, "the candidate")?;
        if let Some(stable) = &self.stable {
            check_revision(stable, "the stable")?;
            if stable.id == self.candidate.id {
                return Err(format!(
                    "the candidate and the stable revision are the same ({})",
                    stable.id
                ));
            }
        }
        if let Some(progress) = self.rolling {
            let Some(stable) = &self.stable else {
                return Err("a rolling update without a stable revision".into());
            };
            if progress.candidate > self.candidate.replicas.max(1)
                || progress.stable > stable.replicas
            {
                return Err(format!(
                    "the rolling update has {} new and {} old replicas (of {} and {})",
                    progress.candidate,
                    progress.stable,
                    self.candidate.replicas.max(1),
                    stable.replicas
                ));
            }
        }
        match &self.phase {
            Phase::Completed if self.weight != 100 => Err(format!(
                "completed, but the candidate has {}% of the traffic, not 100%",
                self.weight
            )),
            Phase::Aborted { .. } | Phase::Failed { .. } if self.weight != 0 => Err(format!(
                "rolled back, but the candidate still has {}% of the traffic",
                self.weight
            )),
            phase if phase.is_terminal() && self.finished_ms.is_none() => {
                Err("finished, without a finish time".into())
            }
            _ => Ok(()),
        }
    }
}

impl ServiceRecord {
    /// Checks a record read back: consistent revisions, rollout numbers each once, known
    /// outcomes, and a stable revision that a completed rollout deployed.
    pub fn validate(&self) -> Result<(), String> {
        let mut numbers = std::collections::BTreeSet::new();
        for entry in &self.history {
            if !numbers.insert(entry.number) || entry.number == 0 {
                return Err(format!(
                    "the history lists rollout number {} more than once (or as 0)",
                    entry.number
                ));
            }
            let ends = [Outcome::Completed, Outcome::Aborted, Outcome::Failed];
            if !ends.iter().any(|o| *o == entry.outcome.as_str()) {
                return Err(format!(
                    "rollout {} has the unknown outcome `{}`",
                    entry.number,
                    entry.outcome.escape_debug()
                ));
            }
            check_revision(&entry.revision, &format!("rollout {}'s", entry.number))?;
        }
        for retired in &self.retired {
            check_revision(&retired.revision, "a retired")?;
        }
        if let Some(stable) = &self.stable {
            check_revision(stable, "the stable")?;
            let deployed = self
                .history
                .iter()
                .any(|h| h.outcome == Outcome::Completed.as_str() && h.revision.id == stable.id);
            // Old entries are dropped, so a long history may have lost it.
            if !deployed && self.history.len() < HISTORY_KEEP {
                return Err(format!(
                    "the stable revision {} is not one any completed rollout in the history deployed",
                    stable.label().escape_debug()
                ));
            }
        }
        Ok(())
    }
}

/// A stored match step: conditions the router would accept.
fn check_match(m: &super::platform::TrafficMatch) -> Result<(), String> {
    use super::platform::MatchValue;
    if m.headers.is_empty() && m.cookies.is_empty() {
        return Err("a match without conditions".into());
    }
    for (kind, list) in [("header", &m.headers), ("cookie", &m.cookies)] {
        for (name, value) in list {
            let name_ok = if kind == "header" {
                http::HeaderName::from_bytes(name.as_bytes()).is_ok()
            } else {
                dronectl_router::config::is_cookie_name(name)
            };
            if !name_ok {
                return Err(format!("invalid {kind} name `{}`", name.escape_debug()));
            }
            match value {
                MatchValue::Exact(v) if http::HeaderValue::from_str(v).is_err() => {
                    return Err(format!("invalid {kind} value `{}`", v.escape_debug()))
                }
                MatchValue::Regex(r) => {
                    dronectl_router::config::compile_regex(r).map_err(|e| {
                        format!("{kind} `{}`: invalid regex: {e}", name.escape_debug())
                    })?;
                }
                MatchValue::Exact(_) => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::StrategyKind;

    /// A change that damages a stored document.
    type Damage<T> = fn(&mut T);

    fn revision(image: &str) -> Revision {
        Revision::new(image, "1.0.0", 2, Default::default())
    }

    /// A canary of `api` half way: 50% on the candidate, at step 3 of 4.
    fn state() -> RolloutState {
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

    fn record() -> ServiceRecord {
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

    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    #[test]
    fn valid_state_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path()).unwrap();
        store.save(&state()).unwrap();
        store.save_record("api", &record()).unwrap();
        assert_eq!(store.load("api").unwrap(), Some(state()));
        assert_eq!(store.load_record("api").unwrap(), record());
    }

    #[test]
    fn damaged_state_is_refused_naming_the_file_and_the_way_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path()).unwrap();
        let path = dir.path().join("api.rollout.json");
        let cases: Vec<(Damage<RolloutState>, &str)> = vec![
            ((|s| s.weight = 4_294_967_246), "4294967246% of the traffic"),
            ((|s| s.weight = 101), "101%"),
            ((|s| s.format = 9), "format 9"),
            ((|s| s.step = 7), "step is 8 of a plan with 4 steps"),
            ((|s| s.plan.steps[0] = PlanStep::Weight(250)), "weight 250%"),
            (
                (|s| s.plan.steps[1] = PlanStep::Analysis("nope".into())),
                "analysis `nope`",
            ),
            ((|s| s.service = "web".into()), "not of `api`"),
            (
                (|s| s.candidate.image = "evil/x:1".into()),
                "does not match its content",
            ),
            (
                (|s| s.candidate.id = "../../x".into()),
                "does not match its content",
            ),
            ((|s| s.stable = Some(s.candidate.clone())), "the same"),
            (
                (|s| {
                    s.phase = Phase::Completed;
                    s.finished_ms = Some(2);
                }),
                "not 100%",
            ),
            (
                (|s| {
                    s.plan.kind = StrategyKind::Rolling;
                    s.rolling = Some(RollingProgress {
                        candidate: 9,
                        stable: 0,
                    });
                }),
                "9 new",
            ),
        ];
        for (damage, expected) in cases {
            let mut bad = state();
            damage(&mut bad);
            std::fs::write(&path, serde_json::to_vec(&bad).unwrap()).unwrap();
            let err = store.load("api").unwrap_err();
            let text = err.to_string();
            assert!(err.is::<DamagedState>(), "{text}");
            assert!(text.contains(expected), "expected {expected:?} in {text}");
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(
                text.contains(&format!("mv {0} {0}.damaged", path.display())),
                "{text}"
            );
        }
        std::fs::write(&path, b"{\"format\": 1, \"servi").unwrap();
        let text = store.load("api").unwrap_err().to_string();
        assert!(
            text.contains("not valid state") && text.contains("api.rollout.json"),
            "{text}"
        );
    }

    #[test]
    fn secret_versions_are_part_of_the_revision_and_checked() {
        let plain = revision("api:1");
        let with = plain
            .clone()
            .with_secrets(std::collections::BTreeMap::from([(
                "DB_PASSWORD".to_string(),
                "0".repeat(32),
            )]));
        assert_ne!(plain.id, with.id);
        assert_eq!(check_revision(&with, "stable"), Ok(()));
        // Without secrets the id is what it always was (recorded revisions stay valid).
        assert_eq!(
            plain.id,
            Revision::new("api:1", "1.0.0", 2, Default::default()).id
        );
        let mut swapped = with.clone();
        swapped.secrets.insert("DB_PASSWORD".into(), "1".repeat(32));
        assert!(check_revision(&swapped, "stable").is_err());
        let mut odd = plain.clone();
        odd.secrets.insert("A".into(), "hunter 2".into());
        odd = odd.clone().with_secrets(odd.secrets.clone());
        assert!(check_revision(&odd, "stable")
            .unwrap_err()
            .contains("malformed secret version"));
    }

    #[test]
    fn damaged_records_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path()).unwrap();
        let path = dir.path().join("api.record.json");
        let cases: Vec<(Damage<ServiceRecord>, &str)> = vec![
            (
                (|r| r.stable = Some(revision("app/api:9"))),
                "not one any completed rollout",
            ),
            ((|r| r.history.push(r.history[0].clone())), "more than once"),
            ((|r| r.history[0].outcome = "won".into()), "unknown outcome"),
            (
                (|r| {
                    r.history[0]
                        .revision
                        .env
                        .insert("K".into(), "v".into())
                        .map_or((), drop)
                }),
                "does not match",
            ),
        ];
        for (damage, expected) in cases {
            let mut bad = record();
            damage(&mut bad);
            std::fs::write(&path, serde_json::to_vec(&bad).unwrap()).unwrap();
            let text = store.load_record("api").unwrap_err().to_string();
            assert!(
                text.contains(expected) && text.contains("api.record.json"),
                "expected {expected:?} in {text}"
            );
            assert!(text.contains("forgets `api`'s stable revision"), "{text}");
        }
    }

    #[test]
    fn symlinks_in_the_state_directory_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path().join("state")).unwrap();
        let target = dir.path().join("precious");
        std::fs::write(&target, "keep me").unwrap();
        let state_dir = dir.path().join("state");
        for name in ["api.rollout.json", "api.record.json", "api.lock"] {
            std::os::unix::fs::symlink(&target, state_dir.join(name)).unwrap();
        }
        let link = |e: anyhow::Error| {
            assert!(e.is::<StateSymlink>(), "{e}");
            e.to_string()
        };
        assert!(link(store.load("api").unwrap_err()).contains("api.rollout.json"));
        assert!(link(store.load_record("api").unwrap_err()).contains("api.record.json"));
        assert!(link(store.lock("api", "pid 1").err().unwrap()).contains("api.lock"));
        assert!(link(store.save(&state()).unwrap_err()).contains("api.rollout.json"));
        assert!(link(store.save_record("api", &record()).unwrap_err()).contains("record"));
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
        assert!(std::fs::symlink_metadata(state_dir.join("api.lock"))
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn state_directories_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let leaf = dir.path().join("base/app/env");
        let store = FileStore::new(&leaf).unwrap();
        for level in ["base", "base/app", "base/app/env"] {
            assert_eq!(mode(&dir.path().join(level)), 0o700, "{level}");
        }
        let _lock = store.lock("api", "pid 1").unwrap();
        assert_eq!(mode(&leaf.join("api.lock")), 0o600);
        store.save(&state()).unwrap();
        assert_eq!(mode(&leaf.join("api.rollout.json")), 0o600);

        // Writable by others: refused, naming the directory.
        use std::os::unix::fs::PermissionsExt;
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        let text = FileStore::new(&shared).err().unwrap().to_string();
        assert!(
            text.contains("others can write") && text.contains("shared"),
            "{text}"
        );
        let text = FileStore::new(shared.join("app/env"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            text.contains("above it can be written by everyone"),
            "{text}"
        );
        // Sticky, like /tmp: nobody else can move the user's entries.
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(FileStore::new(shared.join("app/env")).is_ok());
        // A file where the directory should be.
        std::fs::write(dir.path().join("file"), "").unwrap();
        let text = FileStore::new(dir.path().join("file"))
            .err()
            .unwrap()
            .to_string();
        assert!(text.contains("not a directory"), "{text}");
        // Someone else's: refused (only root can hand a directory to another user).
        if unsafe { libc::geteuid() } == 0 {
            let theirs = dir.path().join("theirs");
            std::fs::create_dir(&theirs).unwrap();
            std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o700)).unwrap();
            std::os::unix::fs::chown(&theirs, Some(12345), Some(12345)).unwrap();
            let text = FileStore::new(&theirs).err().unwrap().to_string();
            assert!(
                text.contains("uid 12345") && text.contains("theirs"),
                "{text}"
            );
        }
    }

    #[test]
    fn router_token_is_made_once_private_and_never_read_through_a_symlink() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        assert!(read_router_token(dir.path()).unwrap().is_none());
        let (token, made) = ensure_router_token(dir.path()).unwrap();
        assert!(made);
        assert_eq!(token.expose().len(), 64);
        assert!(token.expose().bytes().all(|c| c.is_ascii_hexdigit()));
        let file = dir.path().join(ROUTER_TOKEN_FILE);
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (again, made) = ensure_router_token(dir.path()).unwrap();
        assert!(!made);
        assert_eq!(again, token);
        // Another app's token is different (it is random).
        let other = tempfile::tempdir().unwrap();
        assert_ne!(ensure_router_token(other.path()).unwrap().0, token);

        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_router_token(dir.path()).unwrap_err().to_string();
        assert!(err.contains("mode 0600"), "{err}");
        assert!(!err.contains(token.expose()));

        std::fs::remove_file(&file).unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, format!("{}\n", token.expose())).unwrap();
        std::os::unix::fs::symlink(&target, &file).unwrap();
        let err = read_router_token(dir.path()).unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        assert!(ensure_router_token(dir.path()).is_err());
    }

    #[test]
    fn lock_is_exclusive_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path()).unwrap();
        let held = store.lock("api", "pid 1").unwrap();
        let err = store.lock("api", "pid 2").err().unwrap();
        assert!(err.to_string().contains("pid 1"), "{err}");
        assert!(store.lock("web", "pid 2").is_ok(), "locks are per service");
        drop(held);
        assert!(store.lock("api", "pid 2").is_ok());
    }

    #[test]
    fn requests_are_taken_once_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path()).unwrap();
        store.post("api", Request::Promote).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        store.post("api", Request::Abort).unwrap();
        store.post("web", Request::PromoteFull).unwrap();
        assert_eq!(
            store.take_requests("api").unwrap(),
            vec![Request::Promote, Request::Abort]
        );
        assert!(store.take_requests("api").unwrap().is_empty());
        assert_eq!(
            store.take_requests("web").unwrap(),
            vec![Request::PromoteFull]
        );
    }
}
