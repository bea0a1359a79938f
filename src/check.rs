//! `dronectl validate` as one library call: find and read the manifest, then run every
//! check that needs no cluster: the manifest's own, the traffic controls a Kubernetes
//! environment cannot carry (no gateway), and, for a named local environment, that every
//! declared secret has a value. Also the replica-ratio hints of Kubernetes environments
//! without a gateway (facts about the environment, not faults of the manifest).

use std::path::Path;

use crate::manifest::{self, Diagnostic, Environment, LoadedManifest, Severity};

/// What to check.
#[derive(Debug, Clone, Copy)]
pub struct CheckRequest<'a> {
    /// A manifest file, or a directory in the app, named by the user.
    pub file: Option<&'a Path>,
    /// The app directory (`-C`), when no file is named.
    pub app_dir: Option<&'a Path>,
    /// `--env`: an environment that must exist, whose secrets are checked when it is local.
    pub env: Option<&'a str>,
    /// The directory relative paths are taken from.
    pub cwd: &'a Path,
}

/// The findings of [`check_app`].
#[derive(Debug)]
pub struct AppCheck {
    pub loaded: LoadedManifest,
    /// The environment `--env` named.
    pub env: Option<String>,
    /// Errors and warnings, in the order the checks found them.
    pub diagnostics: Vec<Diagnostic>,
    /// Replica-ratio hints (only when there are no errors); never fail a check.
    pub hints: Vec<Diagnostic>,
}

impl AppCheck {
    pub fn errors(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }

    pub fn warnings(&self) -> usize {
        self.diagnostics.len() - self.errors()
    }

    /// Whether the check fails: any error, or with `strict` any warning.
    pub fn failed(&self, strict: bool) -> bool {
        self.errors() > 0 || (strict && self.warnings() > 0)
    }
}

/// The app directory a named `file` belongs to: the file's own directory when it is a
/// `dronectl.yaml`; for another file or a directory, the nearest app directory above it.
fn app_dir_of(file: &Path, cwd: &Path) -> anyhow::Result<std::path::PathBuf> {
    let file = cwd.join(file);
    let parent = || file.parent().unwrap_or(cwd).to_path_buf();
    if file.is_dir() {
        Ok(manifest::find_app_dir(Some(&file), cwd)?)
    } else if file
        .file_name()
        .is_some_and(|n| n != manifest::MANIFEST_FILE)
    {
        Ok(manifest::find_app_dir(Some(&parent()), cwd)?)
    } else {
        Ok(parent())
    }
}

/// Reads the app's manifest and runs every check (see the module docs). Fails only when
/// the manifest cannot be found or read, or `--env` names no environment.
pub fn check_app(req: &CheckRequest<'_>) -> anyhow::Result<AppCheck> {
    let dir = match req.file {
        Some(file) => app_dir_of(file, req.cwd)?,
        None => manifest::find_app_dir(req.app_dir, req.cwd)?,
    };
    let loaded = LoadedManifest::read(&dir)?;
    // Every environment's effective manifest is checked; --env also names one that must exist.
    let environment = match req.env {
        Some(name) => Some(Environment::resolve(&loaded.manifest, Some(name))?),
        None => None,
    };
    let mut diagnostics = manifest::validate(&loaded.manifest);
    let no_errors = |d: &[Diagnostic]| !d.iter().any(|d| d.severity == Severity::Error);
    // Traffic controls a Kubernetes environment cannot carry (no gateway): errors.
    if no_errors(&diagnostics) {
        diagnostics.extend(crate::k8s::weights::traffic_controls(&loaded.manifest));
    }
    // Where values are known without a cluster (a local environment), every declared
    // secret must have one.
    if let Some(environment) = &environment {
        if no_errors(&diagnostics) {
            diagnostics.extend(crate::secrets::local_diagnostics(environment)?);
        }
    }
    let hints = if no_errors(&diagnostics) {
        crate::k8s::weights::nominal_weights(&loaded.manifest)
    } else {
        vec![]
    };
    Ok(AppCheck {
        env: environment.map(|e| e.name),
        loaded,
        diagnostics,
        hints,
    })
}
