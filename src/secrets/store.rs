//! The local secret store: values set with `dronectl secret set` for environments whose
//! target is the local Docker engine.
//!
//! Values live in dronectl's per-user state directory (see [`FileStore::default_dir`]),
//! under `<state>/<app>/.secrets/<env>/<service>/<NAME>.json`: outside the app directory
//! (so never in git), next to but not inside the environment's rollout state (which `down`
//! removes; secrets outlive it). Every level is `0700` and checked like the rollout state
//! directory; each file is `0600`, written atomically and read without following a
//! symbolic link. A file holds the value and its *version*: 128 random bits made at every
//! `set`, which is what revisions, labels and annotations carry instead of the value.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::rollout::FileStore;

const FORMAT: u32 = 1;

/// What is known about a stored secret without its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretInfo {
    pub service: String,
    pub name: String,
    /// Random id of this value (changes at every `set`).
    pub version: String,
    /// When it was set (RFC 3339).
    pub set_at: String,
}

impl SecretInfo {
    /// A new value's info: a fresh random version, set now.
    pub fn new_version(service: &str, name: &str) -> anyhow::Result<SecretInfo> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes)
            .map_err(|e| anyhow::anyhow!("the OS random generator failed: {e}"))?;
        Ok(SecretInfo {
            service: service.to_string(),
            name: name.to_string(),
            version: bytes.iter().map(|b| format!("{b:02x}")).collect(),
            set_at: jiff::Timestamp::now()
                .round(jiff::Unit::Second)?
                .to_string(),
        })
    }
}

/// A value read from the store. Its `Debug` never shows the value.
pub struct SecretValue {
    pub info: SecretInfo,
    bytes: Vec<u8>,
}

impl SecretValue {
    pub fn expose(&self) -> &[u8] {
        &self.bytes
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretValue")
            .field("info", &self.info)
            .field("bytes", &"<redacted>")
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    format: u32,
    version: String,
    set_at: String,
    /// The value, base64 (values are bytes: a key file need not be UTF-8).
    value: String,
}

/// The secrets of one app in one local environment.
#[derive(Debug, Clone)]
pub struct SecretStore {
    dir: PathBuf,
}

/// A secret file that cannot be used (damaged, a link, readable by others).
#[derive(Debug, thiserror::Error)]
#[error("{}: {problem}; set the secret again with `dronectl secret set` (after removing the file)", path.display())]
pub struct DamagedSecret {
    pub path: PathBuf,
    pub problem: String,
}

impl SecretStore {
    /// The store of `app` in the environment `env`, in the default state directory. Nothing
    /// is created until a value is set.
    pub fn open(app: &str, env: &str) -> anyhow::Result<SecretStore> {
        let env_state = FileStore::default_dir(app, env)?;
        let app_state = env_state
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        Ok(SecretStore::in_dir(app_state.join(".secrets").join(env)))
    }

    /// A store rooted at `dir` (tests).
    pub fn in_dir(dir: impl Into<PathBuf>) -> SecretStore {
        SecretStore { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, service: &str, name: &str) -> anyhow::Result<PathBuf> {
        // Names were validated against the manifest; refuse anything that could leave the
        // directory all the same.
        let plain = |s: &str| {
            !s.is_empty()
                && s.len() <= 128
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        anyhow::ensure!(
            plain(service) && plain(name),
            "invalid secret `{service}/{name}`"
        );
        Ok(self.dir.join(service).join(format!("{name}.json")))
    }

    /// Stores `value` for `service`'s secret `name` with a new version.
    pub fn set(&self, service: &str, name: &str, value: &[u8]) -> anyhow::Result<SecretInfo> {
        use std::io::Write;
        let path = self.path(service, name)?;
        let dir = path.parent().expect("a service directory");
        // Creates every missing level 0700 and checks ownership and modes.
        FileStore::new(dir)?;
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(DamagedSecret {
                path,
                problem:
                    "is a symbolic link; dronectl does not follow links in its state directory"
                        .into(),
            }
            .into());
        }
        let info = SecretInfo::new_version(service, name)?;
        let record = Record {
            format: FORMAT,
            version: info.version.clone(),
            set_at: info.set_at.clone(),
            value: base64::engine::general_purpose::STANDARD.encode(value),
        };
        // tempfile creates the file 0600 with O_EXCL; the rename replaces the old value.
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        serde_json::to_writer(&mut tmp, &record)?;
        tmp.write_all(b"\n")?;
        tmp.as_file().sync_all()?;
        tmp.persist(&path)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {}", path.display(), e.error))?;
        Ok(info)
    }

    fn read(&self, service: &str, name: &str) -> anyhow::Result<Option<(SecretInfo, Vec<u8>)>> {
        use std::io::Read;
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let path = self.path(service, name)?;
        let damaged = |problem: String| DamagedSecret {
            path: path.clone(),
            problem,
        };
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(damaged(
                    "is a symbolic link; dronectl does not follow links in its state directory"
                        .into(),
                )
                .into())
            }
            Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
        };
        let meta = file.metadata()?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let uid = unsafe { libc::geteuid() };
        if !meta.is_file() || meta.mode() & 0o077 != 0 || meta.uid() != uid {
            return Err(damaged(
                "must be a regular file of yours that only you can read (mode 0600)".into(),
            )
            .into());
        }
        let mut text = Vec::new();
        file.take(4 << 20)
            .read_to_end(&mut text)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        // Never let serde quote the document (it holds the value) in an error.
        let record: Record = serde_json::from_slice(&text)
            .map_err(|_| damaged("is not a secret record dronectl wrote".into()))?;
        let version_ok =
            record.version.len() == 32 && record.version.chars().all(|c| c.is_ascii_hexdigit());
        if record.format != FORMAT || !version_ok {
            return Err(damaged("has an unknown format or version".into()).into());
        }
        let value = base64::engine::general_purpose::STANDARD
            .decode(record.value.as_bytes())
            .map_err(|_| damaged("holds a value that is not base64".into()))?;
        Ok(Some((
            SecretInfo {
                service: service.to_string(),
                name: name.to_string(),
                version: record.version,
                set_at: record.set_at,
            },
            value,
        )))
    }

    /// The version and time of a stored secret, without its value.
    pub fn info(&self, service: &str, name: &str) -> anyhow::Result<Option<SecretInfo>> {
        Ok(self.read(service, name)?.map(|(info, _)| info))
    }

    /// A stored secret with its value.
    pub fn get(&self, service: &str, name: &str) -> anyhow::Result<Option<SecretValue>> {
        Ok(self
            .read(service, name)?
            .map(|(info, bytes)| SecretValue { info, bytes }))
    }

    /// Removes a stored secret; whether there was one.
    pub fn remove(&self, service: &str, name: &str) -> anyhow::Result<bool> {
        let path = self.path(service, name)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(anyhow::anyhow!("cannot remove {}: {e}", path.display())),
        }
    }

    /// Every stored secret (also ones the manifest no longer declares), by service and name.
    pub fn list(&self) -> anyhow::Result<Vec<SecretInfo>> {
        let mut out = Vec::new();
        let services = match std::fs::read_dir(&self.dir) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => anyhow::bail!("cannot read {}: {e}", self.dir.display()),
        };
        for entry in services {
            let entry = entry?;
            if !entry.file_type()?.is_dir() {
                continue;
            }
            let service = entry.file_name().to_string_lossy().into_owned();
            for file in std::fs::read_dir(entry.path())? {
                let file = file?;
                let file_name = file.file_name().to_string_lossy().into_owned();
                let Some(name) = file_name.strip_suffix(".json") else {
                    continue;
                };
                if let Ok(Some(info)) = self.info(&service, name) {
                    out.push(info);
                }
            }
        }
        out.sort_by(|a, b| (&a.service, &a.name).cmp(&(&b.service, &b.name)));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn values_are_private_versioned_and_removable() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("state/shop/.secrets/local");
        let store = SecretStore::in_dir(&root);
        assert!(store.info("api", "DB_PASSWORD").unwrap().is_none());
        let a = store.set("api", "DB_PASSWORD", b"hunter2\n\x00").unwrap();
        let file = root.join("api/DB_PASSWORD.json");
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&root.join("api")), 0o700);
        assert_eq!(mode(&root), 0o700);
        let got = store.get("api", "DB_PASSWORD").unwrap().unwrap();
        assert_eq!(got.expose(), b"hunter2\n\x00");
        assert!(!format!("{got:?}").contains("hunter2"));
        let b = store.set("api", "DB_PASSWORD", b"hunter2\n\x00").unwrap();
        assert_ne!(a.version, b.version, "the same value gets a new version");
        assert_eq!(store.list().unwrap(), vec![b]);
        assert!(store.remove("api", "DB_PASSWORD").unwrap());
        assert!(!store.remove("api", "DB_PASSWORD").unwrap());
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn links_modes_and_bad_names_are_refused_without_showing_the_value() {
        let tmp = tempfile::tempdir().unwrap();
        let store = SecretStore::in_dir(tmp.path().join("s"));
        store.set("api", "A", b"s3cr3t-value").unwrap();
        let file = tmp.path().join("s/api/A.json");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = store.get("api", "A").unwrap_err().to_string();
        assert!(
            err.contains("mode 0600") && !err.contains("s3cr3t"),
            "{err}"
        );
        std::fs::remove_file(&file).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("elsewhere"), &file).unwrap();
        let err = store.get("api", "A").unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        assert!(store.set("api", "A", b"x").is_err());
        assert!(store.set("../x", "A", b"x").is_err());
        assert!(store.set("api", "../../A", b"x").is_err());
    }
}
