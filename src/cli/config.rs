//! `dronectl config`: the effective manifest of an environment.

use std::path::Path;

use clap::{Args, ValueEnum};
use serde_json::json;

use dronectl::manifest::{self, Environment, LoadedManifest};

use super::local::app_dir;
use super::printer::Printer;
use super::{GlobalArgs, Outcome};

pub const EXAMPLES: &str = "Examples:\n  dronectl config                    # the local environment\n  dronectl config --env staging      # staging's overrides merged over the base entries\n  dronectl config --env staging --format json | jq .services.api\n  dronectl -o json config --env staging\n\nPrints YAML (a manifest that parses back as the same), or one JSON document with --format json;\nwith -o json the manifest is the `result` of the summary event. Secrets are shown by name only.";

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// How the manifest is printed (with -o json it is the summary's `result` either way)
    #[arg(long, value_enum, default_value_t = ConfigFormat::Yaml, env = "DRONECTL_CONFIG_FORMAT")]
    pub format: ConfigFormat,
}

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConfigFormat {
    /// YAML, like `docker compose config`
    Yaml,
    /// One pretty-printed JSON document
    Json,
}

pub fn run(
    args: ConfigArgs,
    global: &GlobalArgs,
    cwd: &Path,
    printer: &Printer,
) -> anyhow::Result<Outcome> {
    let dir = app_dir(global, cwd)?;
    let loaded = LoadedManifest::read_valid(&dir)?;
    let environment = Environment::resolve(&loaded.manifest, global.env.as_deref())?;
    // The effective manifest's own types: secrets are names there, never values.
    let document = manifest::effective_document(&environment)?;
    let text = match args.format {
        ConfigFormat::Yaml => serde_saphyr::to_string(&document)?,
        ConfigFormat::Json => serde_json::to_string_pretty(&document)?,
    };
    printer.result_line(text.trim_end());
    Ok(Outcome::ok(json!({
        "env": environment.name,
        "target": environment.target_kind(),
        "manifest": document,
    })))
}
