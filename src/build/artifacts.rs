//! The build artifacts file: what `dronectl build --artifacts FILE` writes and
//! `dronectl deploy --artifacts FILE` reads.
//!
//! ```json
//! [{"service": "account", "image": "127.0.0.1:5000/drone-delivery/account",
//!   "tag": "0.1.0-3f2a9c1", "digest": "sha256:…"}]
//! ```
//!
//! `image` is the repository (without tag). `digest` is the registry's manifest digest when
//! the image was pushed, otherwise the local image id (also `sha256:…`); `pushed` tells
//! which.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One built image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    pub service: String,
    /// The repository: `<app>/<service>` locally, `<registry>/<app>/<service>` when pushed.
    pub image: String,
    pub tag: String,
    /// Registry manifest digest after a push; the local image id otherwise.
    pub digest: String,
    /// Whether `digest` is a registry digest (the image was pushed).
    #[serde(default)]
    pub pushed: bool,
}

impl Artifact {
    /// The reference to run: `image@digest` when pushed, else `image:tag`.
    pub fn reference(&self) -> String {
        if self.pushed {
            format!("{}@{}", self.image, self.digest)
        } else {
            format!("{}:{}", self.image, self.tag)
        }
    }
}

/// Errors reading or writing an artifacts file.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactsError {
    #[error("cannot read artifacts file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a dronectl artifacts file: {source}", path.display())]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write artifacts file {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl crate::exit::ExitStatus for ArtifactsError {
    /// A missing or malformed file given by the user is a usage error (2); failing to
    /// write one is a failure (1).
    fn exit_code(&self) -> crate::exit::ExitCode {
        match self {
            ArtifactsError::Write { .. } => crate::exit::ExitCode::Failed,
            _ => crate::exit::ExitCode::Usage,
        }
    }
}

/// Reads an artifacts file.
pub fn read(path: &Path) -> Result<Vec<Artifact>, ArtifactsError> {
    let text = std::fs::read_to_string(path).map_err(|source| ArtifactsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| ArtifactsError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes an artifacts file atomically: a private temporary file next to it, written
/// through its handle (never reopened by name), then renamed over `path` — a symbolic link
/// at `path` is replaced, never followed.
pub fn write(path: &Path, artifacts: &[Artifact]) -> Result<(), ArtifactsError> {
    use std::io::Write as _;
    let err = |source| ArtifactsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut text = serde_json::to_string_pretty(artifacts).map_err(|e| err(e.into()))?;
    text.push('\n');
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
    tmp.write_all(text.as_bytes()).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("artifacts.json");
        let list = vec![Artifact {
            service: "account".into(),
            image: "127.0.0.1:5000/app/account".into(),
            tag: "0.1.0-abcdef0".into(),
            digest: "sha256:00".into(),
            pushed: true,
        }];
        write(&path, &list).unwrap();
        assert_eq!(read(&path).unwrap(), list);
        assert_eq!(list[0].reference(), "127.0.0.1:5000/app/account@sha256:00");
        // The minimal form other tools write is accepted.
        std::fs::write(
            &path,
            r#"[{"service":"a","image":"app/a","tag":"1","digest":"sha256:1"}]"#,
        )
        .unwrap();
        assert_eq!(read(&path).unwrap()[0].reference(), "app/a:1");
    }

    #[test]
    fn a_link_at_the_path_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("precious");
        std::fs::write(&target, "keep me").unwrap();
        let path = dir.path().join("artifacts.json");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        write(&path, &[]).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
        assert!(std::fs::symlink_metadata(&path).unwrap().is_file());
        assert_eq!(read(&path).unwrap(), vec![]);
    }
}
