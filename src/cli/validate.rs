//! `dronectl validate`.

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::json;

use dronectl::error::ExitCode;
use dronectl::events::{Event, Reporter};
use dronectl::manifest::{self, Environment, LoadedManifest, Severity};

use super::printer::Printer;
use super::{GlobalArgs, Outcome};

pub const EXAMPLES: &str = "Examples:\n  dronectl validate\n  dronectl validate --env staging\n  dronectl validate path/to/dronectl.yaml\n  dronectl -o json validate\n\nExits 0 when the manifest is valid (warnings allowed), 2 when it has errors.";

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The manifest to check [default: the app's dronectl.yaml]
    #[arg(value_name = "FILE", env = "DRONECTL_MANIFEST")]
    pub file: Option<PathBuf>,

    /// Treat warnings as errors
    #[arg(long, env = "DRONECTL_STRICT")]
    pub strict: bool,
}

pub fn run(
    args: ValidateArgs,
    global: &GlobalArgs,
    cwd: &Path,
    printer: &Printer,
) -> anyhow::Result<Outcome> {
    let dir = match &args.file {
        Some(file) => {
            let file = cwd.join(file);
            if file
                .file_name()
                .is_some_and(|n| n != manifest::MANIFEST_FILE)
                || file.is_dir()
            {
                let dir = if file.is_dir() {
                    file.clone()
                } else {
                    file.parent().unwrap_or(cwd).to_path_buf()
                };
                manifest::find_app_dir(Some(&dir), cwd)?
            } else {
                file.parent().unwrap_or(cwd).to_path_buf()
            }
        }
        None => manifest::find_app_dir(global.dir.as_deref(), cwd)?,
    };
    let loaded = LoadedManifest::read(&dir)?;
    // Every environment's effective manifest is checked; --env also names one that must exist.
    let environment = match global.env.as_deref() {
        Some(name) => Some(Environment::resolve(&loaded.manifest, Some(name))?),
        None => None,
    };
    let env = environment.as_ref().map(|e| e.name.clone());
    let mut diagnostics = manifest::validate(&loaded.manifest);
    // Traffic controls a Kubernetes environment cannot carry (no gateway): errors.
    if !diagnostics.iter().any(|d| d.severity == Severity::Error) {
        diagnostics.extend(dronectl::k8s::weights::traffic_controls(&loaded.manifest));
    }
    // Where values are known without a cluster (a local environment), every declared
    // secret must have one.
    if let Some(environment) = &environment {
        if !diagnostics.iter().any(|d| d.severity == Severity::Error) {
            diagnostics.extend(dronectl::secrets::local_diagnostics(environment)?);
        }
    }
    let display_path = loaded
        .path
        .strip_prefix(cwd)
        .unwrap_or(&loaded.path)
        .to_path_buf();
    for d in &diagnostics {
        printer.event(Event::Diagnostic {
            file: display_path.clone(),
            diagnostic: d.clone(),
        });
    }
    let errors = diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    // What a Kubernetes environment without a gateway really gives a canary weight: facts
    // about the environment, not faults of the manifest, so hints (not failed by --strict).
    if errors == 0 {
        for d in dronectl::k8s::weights::nominal_weights(&loaded.manifest) {
            let at = d
                .position
                .map(|p| format!(":{}:{}", p.line, p.column))
                .unwrap_or_default();
            printer.event(Event::Hint {
                message: format!("{}{at}: {}", display_path.display(), d.message),
            });
        }
    }
    let warnings = diagnostics.len() - errors;
    let failed = errors > 0 || (args.strict && warnings > 0);
    let m = &loaded.manifest;
    if !failed {
        printer.status(
            "Valid",
            &format!(
                "{} (app `{}`: {} services, {} infrastructure, {} environments, {} strategies{})",
                display_path.display(),
                m.app.value,
                m.services.len(),
                m.infrastructure.len(),
                m.environments.len(),
                m.strategies.len(),
                if warnings > 0 {
                    format!(", {warnings} warnings")
                } else {
                    String::new()
                }
            ),
        );
    } else {
        printer.status(
            "Invalid",
            &format!(
                "{}: {errors} errors, {warnings} warnings",
                display_path.display()
            ),
        );
    }
    Ok(Outcome {
        code: if failed {
            ExitCode::Usage
        } else {
            ExitCode::Success
        },
        result: json!({
            "file": loaded.path,
            "env": env,
            "valid": !failed,
            "errors": errors,
            "warnings": warnings,
            "diagnostics": diagnostics,
        }),
    })
}
