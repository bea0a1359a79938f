//! `dronectl config`: the effective manifest of an environment.

use std::path::Path;

use serde_json::json;

use dronectl::manifest::{self, Environment, LoadedManifest};

use super::local::app_dir;
use super::printer::Printer;
use super::{GlobalArgs, Outcome};

pub const EXAMPLES: &str = "Examples:\n  dronectl config                    # the local environment\n  dronectl config --env staging      # staging's overrides merged over the base entries\n  dronectl -o json config --env staging\n\nPrints YAML; with -o json the manifest is the `result` of the summary event.";

pub fn run(global: &GlobalArgs, cwd: &Path, printer: &Printer) -> anyhow::Result<Outcome> {
    let dir = app_dir(global, cwd)?;
    let loaded = LoadedManifest::read_valid(&dir)?;
    let environment = Environment::resolve(&loaded.manifest, global.env.as_deref())?;
    let document = manifest::effective_document(&environment)?;
    printer.result_line(serde_saphyr::to_string(&document)?.trim_end());
    Ok(Outcome::ok(json!({
        "env": environment.name,
        "target": environment.target_kind(),
        "manifest": document,
    })))
}
