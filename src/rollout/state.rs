//! Persisted rollout state, and where it is kept.
//!
//! Every input of every decision lives here, outside the process: a killed dronectl loses
//! nothing, and `rollout status` / `resume` / `abort` continue from what is stored.
//! Requests from other processes (promote, abort) are posted separately and taken by the
//! process driving the rollout, so they are never lost in a read-modify-write race.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::plan::Plan;
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
    /// `completed`, `aborted`, `failed`.
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
pub struct FileStore {
    dir: PathBuf,
}

/// A held file lock; dropping it releases the lock.
pub struct FileLock {
    _file: std::fs::File,
}

impl FileStore {
    pub fn new(dir: impl Into<PathBuf>) -> anyhow::Result<FileStore> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| {
            anyhow::anyhow!("cannot create the state directory {}: {e}", dir.display())
        })?;
        Ok(FileStore { dir })
    }

    /// The default place: `$DRONECTL_STATE_DIR`, else `$XDG_STATE_HOME/dronectl`, else
    /// `~/.local/state/dronectl`, then `<app>/<environment>`.
    pub fn default_dir(app: &str, environment: &str) -> PathBuf {
        let base = std::env::var_os("DRONECTL_STATE_DIR")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("XDG_STATE_HOME").map(|p| PathBuf::from(p).join("dronectl"))
            })
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state/dronectl"))
            })
            .unwrap_or_else(|| std::env::temp_dir().join("dronectl-state"));
        base.join(app).join(environment)
    }

    fn path(&self, service: &str, suffix: &str) -> PathBuf {
        self.dir.join(format!("{service}.{suffix}"))
    }

    fn read<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<Option<T>> {
        match std::fs::read(path) {
            Ok(bytes) => {
                Ok(Some(serde_json::from_slice(&bytes).map_err(|e| {
                    anyhow::anyhow!("{} is damaged: {e}", path.display())
                })?))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
        }
    }

    fn write<T: Serialize>(&self, path: &Path, value: &T) -> anyhow::Result<()> {
        use std::io::Write;
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

impl StateStore for FileStore {
    type Lock = FileLock;

    fn lock(&self, service: &str, holder: &str) -> anyhow::Result<FileLock> {
        use std::io::{Seek, Write};
        let path = self.path(service, "lock");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)?;
        match file.try_lock() {
            Ok(()) => {
                file.set_len(0)?;
                file.rewind()?;
                write!(file, "{holder}")?;
                Ok(FileLock { _file: file })
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
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
        Self::read(&self.path(service, "rollout.json"))
    }

    fn save(&self, state: &RolloutState) -> anyhow::Result<()> {
        self.write(&self.path(&state.service, "rollout.json"), state)
    }

    fn load_record(&self, service: &str) -> anyhow::Result<ServiceRecord> {
        Ok(Self::read(&self.path(service, "record.json"))?.unwrap_or_default())
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
            if let Some(r) = Self::read::<Request>(&file)? {
                requests.push(r);
            }
            let _ = std::fs::remove_file(&file);
        }
        Ok(requests)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
