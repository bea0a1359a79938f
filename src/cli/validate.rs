//! `dronectl validate`.

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::json;

use dronectl::check::{check_app, CheckRequest};
use dronectl::error::ExitCode;
use dronectl::events::{Event, Reporter};

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
    let check = check_app(&CheckRequest {
        file: args.file.as_deref(),
        app_dir: global.dir.as_deref(),
        env: global.env.as_deref(),
        cwd,
    })?;
    let loaded = &check.loaded;
    let display_path = loaded
        .path
        .strip_prefix(cwd)
        .unwrap_or(&loaded.path)
        .to_path_buf();
    for d in &check.diagnostics {
        printer.event(Event::Diagnostic {
            file: display_path.clone(),
            diagnostic: d.clone(),
        });
    }
    for d in &check.hints {
        let at = d
            .position
            .map(|p| format!(":{}:{}", p.line, p.column))
            .unwrap_or_default();
        printer.event(Event::Hint {
            message: format!("{}{at}: {}", display_path.display(), d.message),
        });
    }
    let (errors, warnings) = (check.errors(), check.warnings());
    let failed = check.failed(args.strict);
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
            "env": check.env,
            "valid": !failed,
            "errors": errors,
            "warnings": warnings,
            "diagnostics": check.diagnostics,
        }),
    })
}
