//! The file state store: one JSON file per service in a private directory, written
//! atomically, read back without following links, with an advisory lock per service.

use std::path::{Path, PathBuf};

use super::check::Checked;
use super::*;

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

/// Opens `path` with `options` without following a symbolic link at its end.
pub(super) fn open_no_follow(
    options: &mut std::fs::OpenOptions,
    path: &Path,
) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    options.custom_flags(libc::O_NOFOLLOW).open(path)
}

/// An error opening `path`: a link is a [`StateSymlink`], anything else names the file.
pub(super) fn open_error(path: &Path, e: std::io::Error) -> anyhow::Error {
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

    async fn lock(&self, service: &str, holder: &str) -> anyhow::Result<FileLock> {
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

    async fn unlock(&self, lock: FileLock) {
        // Closing the file releases the advisory lock.
        drop(lock);
    }

    async fn load(&self, service: &str) -> anyhow::Result<Option<RolloutState>> {
        Self::read(&self.path(service, "rollout.json"), service)
    }

    async fn save(&self, state: &RolloutState) -> anyhow::Result<()> {
        self.write(&self.path(&state.service, "rollout.json"), state)
    }

    async fn load_record(&self, service: &str) -> anyhow::Result<ServiceRecord> {
        Ok(Self::read(&self.path(service, "record.json"), service)?.unwrap_or_default())
    }

    async fn save_record(&self, service: &str, record: &ServiceRecord) -> anyhow::Result<()> {
        self.write(&self.path(service, "record.json"), record)
    }

    async fn post(&self, service: &str, request: Request) -> anyhow::Result<()> {
        // One file per request: posting never rewrites what another process reads.
        let name = format!(
            "{service}.request.{}.{}.json",
            crate::rollout::now_ms(),
            std::process::id()
        );
        self.write(&self.dir.join(name), &request)
    }

    async fn take_requests(&self, service: &str) -> anyhow::Result<Vec<Request>> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::state::fixtures::*;

    #[tokio::test]
    async fn symlinks_in_the_state_directory_are_not_followed() {
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
        assert!(link(store.load("api").await.unwrap_err()).contains("api.rollout.json"));
        assert!(link(store.load_record("api").await.unwrap_err()).contains("api.record.json"));
        assert!(link(store.lock("api", "pid 1").await.err().unwrap()).contains("api.lock"));
        assert!(link(store.save(&state()).await.unwrap_err()).contains("api.rollout.json"));
        assert!(link(store.save_record("api", &record()).await.unwrap_err()).contains("record"));
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
        assert!(std::fs::symlink_metadata(state_dir.join("api.lock"))
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[tokio::test]
    async fn state_directories_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let leaf = dir.path().join("base/app/env");
        let store = FileStore::new(&leaf).unwrap();
        for level in ["base", "base/app", "base/app/env"] {
            assert_eq!(mode(&dir.path().join(level)), 0o700, "{level}");
        }
        let _lock = store.lock("api", "pid 1").await.unwrap();
        assert_eq!(mode(&leaf.join("api.lock")), 0o600);
        store.save(&state()).await.unwrap();
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

    #[tokio::test]
    async fn lock_is_exclusive_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path()).unwrap();
        let held = store.lock("api", "pid 1").await.unwrap();
        let err = store.lock("api", "pid 2").await.err().unwrap();
        assert!(err.to_string().contains("pid 1"), "{err}");
        assert!(
            store.lock("web", "pid 2").await.is_ok(),
            "locks are per service"
        );
        drop(held);
        assert!(store.lock("api", "pid 2").await.is_ok());
    }

    #[tokio::test]
    async fn requests_are_taken_once_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path()).unwrap();
        store.post("api", Request::Promote).await.unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        store.post("api", Request::Abort).await.unwrap();
        store.post("web", Request::PromoteFull).await.unwrap();
        assert_eq!(
            store.take_requests("api").await.unwrap(),
            vec![Request::Promote, Request::Abort]
        );
        assert!(store.take_requests("api").await.unwrap().is_empty());
        assert_eq!(
            store.take_requests("web").await.unwrap(),
            vec![Request::PromoteFull]
        );
    }
}
