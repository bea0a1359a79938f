//! `dronectl.yaml`: finding it, parsing it strictly, checking it, and editing it in place.

mod edit;
mod env;
mod environment;
mod overrides;
mod registry;
mod scan;
mod types;
mod validate;
mod yaml;

use std::fmt;
use std::path::{Path, PathBuf};

pub use edit::add_service_entry;
pub use env::service_env;
pub use environment::{
    effective_document, Environment, EnvironmentError, EnvironmentTarget, KubernetesSettings,
    DEFAULT_ENV,
};
pub use overrides::{
    effective, HealthOverride, InfrastructureOverride, ResourceSpecOverride, ResourcesOverride,
    ServiceOverride,
};
pub use registry::check_registry;
pub use types::*;
pub use validate::{check_relative_path, normalize_route, validate, Diagnostic, Severity};

/// The manifest's file name.
pub const MANIFEST_FILE: &str = "dronectl.yaml";

/// A position in a file, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Position {
    pub line: u64,
    pub column: u64,
}

impl Position {
    /// The position a `serde_saphyr` location points at, when it is known.
    pub fn from_location(location: serde_saphyr::Location) -> Option<Position> {
        (location.line() > 0).then(|| Position {
            line: location.line(),
            column: location.column(),
        })
    }
}

/// A manifest that could not be read or does not parse.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("no {MANIFEST_FILE} found in {searched} or any parent directory; run `dronectl new app <dir>` to create an app, or pass -C <app dir>")]
    NotFound { searched: PathBuf },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", render_parse_error(path, position.as_ref(), message))]
    Parse {
        path: PathBuf,
        position: Option<Position>,
        message: String,
    },
    #[error("{} is invalid:\n{}", path.display(), render_diagnostics(diagnostics))]
    Invalid {
        path: PathBuf,
        diagnostics: Vec<Diagnostic>,
    },
}

impl crate::exit::ExitStatus for ManifestError {
    /// A manifest that cannot be used is a usage error (2).
    fn exit_code(&self) -> crate::exit::ExitCode {
        crate::exit::ExitCode::Usage
    }
}

fn render_parse_error(path: &Path, position: Option<&Position>, message: &str) -> String {
    match position {
        Some(p) => format!("{}:{}:{}: {message}", path.display(), p.line, p.column),
        None => format!("{}: {message}", path.display()),
    }
}

fn render_diagnostics(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(|d| format!("  {d}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A parsed manifest together with where it came from.
#[derive(Debug, Clone)]
pub struct LoadedManifest {
    /// The manifest file.
    pub path: PathBuf,
    /// The app directory (the manifest's parent).
    pub dir: PathBuf,
    /// The file's text, kept for in-place edits.
    pub text: String,
    pub manifest: Manifest,
}

impl LoadedManifest {
    /// Reads and parses `dir/dronectl.yaml`; semantic checks are left to [`validate`].
    pub fn read(dir: &Path) -> Result<LoadedManifest, ManifestError> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = std::fs::read(&path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ManifestError::NotFound {
                    searched: dir.to_path_buf(),
                }
            } else {
                ManifestError::Read {
                    path: path.clone(),
                    source,
                }
            }
        })?;
        let text = scan::utf8(&path, &bytes)?.to_string();
        let manifest = parse(&path, &text)?;
        Ok(LoadedManifest {
            dir: dir.to_path_buf(),
            path,
            text,
            manifest,
        })
    }

    /// Reads the manifest and refuses it when [`validate`] finds errors.
    pub fn read_valid(dir: &Path) -> Result<LoadedManifest, ManifestError> {
        let loaded = Self::read(dir)?;
        loaded.check()?;
        Ok(loaded)
    }

    /// The errors [`validate`] finds, as a [`ManifestError::Invalid`].
    pub fn check(&self) -> Result<(), ManifestError> {
        let errors: Vec<Diagnostic> = validate(&self.manifest)
            .into_iter()
            .filter(|d| d.severity == Severity::Error)
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ManifestError::Invalid {
                path: self.path.clone(),
                diagnostics: errors,
            })
        }
    }
}

/// The stack reading a manifest runs on. Reading YAML is recursive, a few frames per level
/// of nesting (tens of KiB each in a debug build); the nesting limit bounds the depth, this
/// makes the bound hold whatever thread calls [`parse`].
const PARSE_STACK: usize = 16 * 1024 * 1024;

/// Parses manifest text strictly: refused characters, unknown tags, duplicate keys, unknown
/// fields and wrong types are errors with a position.
pub fn parse(path: &Path, text: &str) -> Result<Manifest, ManifestError> {
    std::thread::scope(|scope| {
        let reader = std::thread::Builder::new()
            .name("manifest".into())
            .stack_size(PARSE_STACK)
            .spawn_scoped(scope, || parse_on_this_thread(path, text))
            .map_err(|source| ManifestError::Read {
                path: path.to_path_buf(),
                source,
            })?;
        reader
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

fn parse_on_this_thread(path: &Path, text: &str) -> Result<Manifest, ManifestError> {
    scan::check(path, text)?;
    serde_saphyr::from_str_with_options::<Manifest>(text, yaml::options()).map_err(|err| {
        let (position, message) = yaml::describe(path, &err);
        ManifestError::Parse {
            path: path.to_path_buf(),
            position,
            message,
        }
    })
}

/// Finds the app directory: `start` itself when given by the user (`-C`), otherwise the
/// nearest directory from `cwd` upwards that holds a manifest.
pub fn find_app_dir(explicit: Option<&Path>, cwd: &Path) -> Result<PathBuf, ManifestError> {
    if let Some(dir) = explicit {
        let dir = if dir.is_absolute() {
            dir.to_path_buf()
        } else {
            cwd.join(dir)
        };
        return if dir.join(MANIFEST_FILE).is_file() {
            Ok(dir)
        } else {
            Err(ManifestError::NotFound { searched: dir })
        };
    }
    cwd.ancestors()
        .find(|d| d.join(MANIFEST_FILE).is_file())
        .map(Path::to_path_buf)
        .ok_or_else(|| ManifestError::NotFound {
            searched: cwd.to_path_buf(),
        })
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

#[cfg(test)]
mod tests;
