//! `dronectl up`, `down`, `ps`, `logs` and the hidden `router` (what the local target's
//! router container runs).

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::json;

use dronectl::local;
use dronectl::manifest;

use super::printer::Printer;
use super::{GlobalArgs, Outcome};

pub const UP_EXAMPLES: &str = "Examples:\n  dronectl up\n  dronectl up --env local --timeout 5m\n  dronectl up --no-build --artifacts build.json\n\nBuilds what changed, then starts the network, infrastructure, every service (with its\nreplicas) and the router on the local Docker engine, waits until all are ready and prints\nthe entry URL. Running it again with nothing changed changes nothing.";

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Do not build; run the images named by --artifacts
    #[arg(long, env = "DRONECTL_NO_BUILD", requires = "artifacts")]
    pub no_build: bool,

    /// Run the images of this artifacts file (from `dronectl build --artifacts`)
    #[arg(long, value_name = "FILE", env = "DRONECTL_ARTIFACTS")]
    pub artifacts: Option<PathBuf>,

    /// Give up waiting for readiness after this long (e.g. 90s, 5m)
    #[arg(long, value_name = "DURATION", env = "DRONECTL_TIMEOUT")]
    pub timeout: Option<manifest::Duration>,

    /// A replica not ready after this long fails the service
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "2m",
        env = "DRONECTL_PROGRESS_DEADLINE"
    )]
    pub progress_deadline: manifest::Duration,
}

#[derive(Debug, Args)]
pub struct DownArgs {
    /// Also remove the volumes (data of infrastructure and services)
    #[arg(long, env = "DRONECTL_VOLUMES")]
    pub volumes: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Service, infrastructure entry, or `router`
    pub name: String,
    /// Keep streaming new lines
    #[arg(short, long, env = "DRONECTL_FOLLOW")]
    pub follow: bool,
    /// Lines of history per container
    #[arg(long, default_value_t = 100, env = "DRONECTL_TAIL")]
    pub tail: usize,
}

pub(crate) fn app_dir(global: &GlobalArgs, cwd: &Path) -> anyhow::Result<PathBuf> {
    Ok(manifest::find_app_dir(global.dir.as_deref(), cwd)?)
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(dronectl::docker::runtime()?)
}

pub fn up(
    args: UpArgs,
    global: &GlobalArgs,
    cwd: &Path,
    printer: &Printer,
) -> anyhow::Result<Outcome> {
    let opts = local::UpOptions {
        app_dir: app_dir(global, cwd)?,
        env: global.env.clone(),
        build: !args.no_build,
        artifacts: args.artifacts,
        timing: dronectl::rollout::Timing {
            progress_deadline: args.progress_deadline.0,
            ..Default::default()
        },
        timeout: args.timeout.map(|d| d.0),
    };
    let outcome = runtime()?.block_on(local::up(&opts, printer))?;
    let verb = if outcome.changed { "Up" } else { "Unchanged" };
    printer.status(
        verb,
        &format!(
            "app `{}` ({} services, {} infrastructure) on the local Docker engine",
            outcome.app,
            outcome.services.len(),
            outcome.infrastructure.len()
        ),
    );
    printer.result_line(&outcome.entry_url);
    Ok(Outcome::ok(serde_json::to_value(&outcome)?))
}

pub fn down(
    args: DownArgs,
    global: &GlobalArgs,
    cwd: &Path,
    printer: &Printer,
) -> anyhow::Result<Outcome> {
    let dir = app_dir(global, cwd)?;
    let outcome = runtime()?.block_on(local::down(&dir, global.env.as_deref(), args.volumes))?;
    printer.status(
        "Removed",
        &format!(
            "{} containers, {} networks, {} volumes",
            outcome.containers.len(),
            outcome.networks.len(),
            outcome.volumes.len()
        ),
    );
    Ok(Outcome::ok(serde_json::to_value(&outcome)?))
}

pub fn ps(global: &GlobalArgs, cwd: &Path, printer: &Printer) -> anyhow::Result<Outcome> {
    let dir = app_dir(global, cwd)?;
    let (entry, rows) = runtime()?.block_on(local::ps(&dir, global.env.as_deref()))?;
    printer.result_line(&format!(
        "{:<16} {:<14} {:<24} {:<11} {:>7}  {:<34} {}",
        "NAME", "KIND", "VERSION", "REVISION", "TRAFFIC", "CONTAINER", "STATE"
    ));
    for r in &rows {
        let weight = r.weight.map_or("-".to_string(), |w| format!("{w}%"));
        let retired = r.retired_until_ms.map_or(String::new(), |ms| {
            format!(" (warm until {})", dronectl::rollout::ops::clock(ms))
        });
        printer.result_line(&format!(
            "{:<16} {:<14} {:<24} {:<11} {:>7}  {:<34} {}{retired}",
            r.name, r.kind, r.version, r.revision, weight, r.container, r.state
        ));
    }
    match &entry {
        Some(url) => printer.status("Entry", url),
        None => printer.status("Down", "the app is not running on the local engine"),
    }
    Ok(Outcome::ok(json!({"entry_url": entry, "containers": rows})))
}

pub fn logs(
    args: LogsArgs,
    global: &GlobalArgs,
    cwd: &Path,
    printer: &Printer,
) -> anyhow::Result<Outcome> {
    let dir = app_dir(global, cwd)?;
    runtime()?.block_on(local::logs(
        &dir,
        global.env.as_deref(),
        &args.name,
        args.follow,
        args.tail,
        printer,
    ))?;
    Ok(Outcome::ok(json!({"name": args.name})))
}

/// `dronectl router`: the router's own command line (the same flags, environment
/// variables and logs as the standalone `dronectl-router`), on dronectl's runtime.
pub fn router(args: dronectl_router::cli::Args) -> anyhow::Result<Outcome> {
    args.init_logging()?;
    let opts = args.options()?;
    runtime()?.block_on(dronectl_router::cli::serve(opts))?;
    Ok(Outcome::ok(serde_json::Value::Null))
}
