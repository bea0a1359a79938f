//! `dronectl new app` and `dronectl new service`: render a template, check the result,
//! and move it into place only when everything is ready.
//!
//! Nothing in the user's tree changes until the last step: files are rendered in memory
//! (every output path checked to stay inside the destination), the manifest and workspace
//! edits are computed and re-parsed in memory, and only then are the files written to a
//! temporary directory beside the destination and moved into place with the edited files.
//! If a move fails, the earlier ones are undone. `--dry-run` stops before the first write.

mod app;
mod render;
mod service;
mod templates;
mod vars;

use std::path::{Component, Path, PathBuf};

use crate::events::{Event, Reporter};
use crate::manifest::{self, LoadedManifest, ManifestError};
use crate::names::{self, NameError};

pub use app::{new_app, NewAppOptions, NewAppOutcome};
use render::{base_context, render_files, render_text, RenderedFile};
pub use service::{new_service, NewServiceOptions, NewServiceOutcome};
pub use templates::{embedded_file, Template, TemplateKind, TemplateMeta, TemplateSource};
use vars::parse_vars;

/// Why scaffolding failed. Every variant except `Io` is the user's input: exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error("invalid name: {0}")]
    Name(#[from] NameError),
    #[error("unknown template `{name}`{}", available_list(available))]
    UnknownTemplate {
        name: String,
        available: Vec<String>,
    },
    #[error("cannot read templates in {}: {message}", dir.display())]
    TemplateDir { dir: PathBuf, message: String },
    #[error("{} is {what}; a template may hold only regular files and directories (links are not followed: copy the file instead)", vars::printable(&path.to_string_lossy()))]
    TemplateEntry { path: PathBuf, what: String },
    #[error("template `{template}`, file {file}: {message}")]
    Template {
        template: String,
        file: String,
        message: String,
    },
    #[error("a service named `{0}` already exists in the manifest")]
    ServiceExists(String),
    #[error("`{0}` is already the name of an infrastructure entry")]
    InfrastructureExists(String),
    #[error("{} already exists; choose another name or --path", .0.display())]
    PathExists(PathBuf),
    #[error("invalid path `{path}`: {why}")]
    BadPath { path: String, why: String },
    #[error("invalid route `{route}`: {why}")]
    BadRoute { route: String, why: String },
    #[error("route `{route}` is already owned by service `{owner}`")]
    RouteTaken { route: String, owner: String },
    #[error("invalid --set `{0}`: write key=value, with a key of letters, digits and `_`")]
    BadVar(String),
    #[error("invalid --set `{key}`: the value contains {found}; values may not contain control, bidirectional formatting or line separator characters")]
    BadVarValue { key: String, found: String },
    #[error("invalid port {0}: use 1-65535")]
    BadPort(u32),
    #[error("{0}")]
    Invalid(String),
    #[error("the generated manifest entry is invalid (a template problem):\n{0}")]
    GeneratedManifest(ManifestError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn available_list(available: &[String]) -> String {
    if available.is_empty() {
        String::new()
    } else {
        format!("; available: {}", available.join(", "))
    }
}

impl crate::exit::ExitStatus for ScaffoldError {
    /// Failing to write is a failure (1); a bad name, template or place is a usage error (2).
    fn exit_code(&self) -> crate::exit::ExitCode {
        match self {
            ScaffoldError::Io { .. } => crate::exit::ExitCode::Failed,
            _ => crate::exit::ExitCode::Usage,
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ScaffoldError + '_ {
    move |source| ScaffoldError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes rendered files under `out` (a directory this run just created and nothing else
/// writes to), refusing any path that would resolve outside it.
fn write_files(files: &[RenderedFile], out: &Path) -> Result<(), ScaffoldError> {
    std::fs::create_dir(out).map_err(io(out))?;
    let root = out.canonicalize().map_err(io(out))?;
    for file in files {
        let dest = out.join(&file.output);
        let parent = dest.parent().unwrap_or(out);
        std::fs::create_dir_all(parent).map_err(io(parent))?;
        let real = parent.canonicalize().map_err(io(parent))?;
        if !real.starts_with(&root)
            || file
                .output
                .components()
                .any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(ScaffoldError::BadPath {
                path: file.output.display().to_string(),
                why: "leads outside the directory being created".into(),
            });
        }
        // create_new: never follow or replace anything that is already there.
        let mut handle = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&dest)
            .map_err(io(&dest))?;
        std::io::Write::write_all(&mut handle, &file.contents).map_err(io(&dest))?;
    }
    Ok(())
}

/// Creates the missing ancestors of `dir`, returning them deepest first for undo.
pub(super) fn create_parents(dir: &Path) -> Result<Vec<PathBuf>, ScaffoldError> {
    let mut missing: Vec<PathBuf> = dir
        .ancestors()
        .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
        .map(Path::to_path_buf)
        .collect();
    for d in missing.iter().rev() {
        std::fs::create_dir(d).map_err(io(d))?;
    }
    missing.shrink_to_fit();
    Ok(missing)
}

pub(super) fn remove_created(dirs: &[PathBuf]) {
    for d in dirs {
        let _ = std::fs::remove_dir(d);
    }
}
