//! `dronectl up`, `down`, `ps`, `logs` and the hidden `router` (what the local target's
//! router container runs).

use std::path::{Path, PathBuf};

use clap::Args;

use dronectl::local;
use dronectl::manifest;

use super::printer::{LogLayout, Printer};
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

pub const LOGS_EXAMPLES: &str = "Examples:\n  dronectl logs\n  dronectl logs orders users -f\n  dronectl logs --grep 3f2b8c1e-0d7a-4c1b-9f4e-2a6d5b7c8e9f\n  dronectl logs orders --since 10m --timestamps\n  dronectl logs router --tail 20 --raw\n\nLines of every replica of every revision are interleaved by time, each prefixed with its\nservice (`orders.2` for replica 2, `orders@REV.1` while several revisions run). JSON log\nrecords read as `LEVEL message key=value … [correlation id]`; --raw shows them as written,\n-o json gives one `log` event per line with the parsed fields.";

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Services, infrastructure entries or `router` (none: every container of the app)
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
    /// Keep streaming new lines, and those of containers that start meanwhile (Ctrl-C stops)
    #[arg(short, long, env = "DRONECTL_FOLLOW")]
    pub follow: bool,
    /// Lines of history per container, a number or `all` [default: 100; all with --since or
    /// --grep]
    #[arg(long, value_name = "N|all", env = "DRONECTL_TAIL")]
    pub tail: Option<Tail>,
    /// Only lines since then: a duration back from now (10m, 1h30m) or an RFC 3339 time
    /// (2026-12-01T10:00:00Z)
    #[arg(long, value_name = "DURATION|TIME", env = "DRONECTL_SINCE")]
    pub since: Option<local::logs::Since>,
    /// Only lines containing TEXT, as written (case-sensitive), e.g. a correlation id
    #[arg(long, value_name = "TEXT", env = "DRONECTL_GREP")]
    pub grep: Option<String>,
    /// Show the time of each line (the engine's, UTC)
    #[arg(short, long, env = "DRONECTL_TIMESTAMPS")]
    pub timestamps: bool,
    /// Show lines as written, without rendering JSON log records
    #[arg(long, env = "DRONECTL_RAW")]
    pub raw: bool,
}

/// `--tail`: a number of lines, or `all`.
#[derive(Debug, Clone, Copy)]
pub enum Tail {
    All,
    Lines(usize),
}

impl std::str::FromStr for Tail {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "all" => Ok(Tail::All),
            n => n
                .parse()
                .map(Tail::Lines)
                .map_err(|_| format!("invalid --tail `{text}`: write a number of lines or `all`")),
        }
    }
}

pub(crate) fn app_dir(global: &GlobalArgs, cwd: &Path) -> anyhow::Result<PathBuf> {
    Ok(manifest::find_app_dir(global.dir.as_deref(), cwd)?)
}

pub async fn up(
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
        profile: dronectl::build::Profile::Release,
    };
    let outcome = local::up(&opts, printer).await?;
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

pub async fn down(
    args: DownArgs,
    global: &GlobalArgs,
    cwd: &Path,
    printer: &Printer,
) -> anyhow::Result<Outcome> {
    let dir = app_dir(global, cwd)?;
    let outcome = local::down(&dir, global.env.as_deref(), args.volumes).await?;
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

pub async fn ps(global: &GlobalArgs, cwd: &Path, printer: &Printer) -> anyhow::Result<Outcome> {
    let dir = app_dir(global, cwd)?;
    let ps = local::ps(&dir, global.env.as_deref()).await?;
    let (entry, rows) = (&ps.entry_url, &ps.containers);
    printer.result_line(&format!(
        "{:<16} {:<14} {:<24} {:<11} {:>7}  {:<34} {}",
        "NAME", "KIND", "VERSION", "REVISION", "TRAFFIC", "CONTAINER", "STATE"
    ));
    for r in rows {
        let weight = r.weight.map_or("-".to_string(), |w| format!("{w}%"));
        let retired = r.retired_until_ms.map_or(String::new(), |ms| {
            format!(" (warm until {})", dronectl::rollout::ops::clock(ms))
        });
        printer.result_line(&format!(
            "{:<16} {:<14} {:<24} {:<11} {:>7}  {:<34} {}{retired}",
            r.name, r.kind, r.version, r.revision, weight, r.container, r.state
        ));
    }
    for s in &ps.scaling {
        if let Some(b) = s.autoscale {
            printer.status(
                "Autoscale",
                &format!(
                    "{}: {}..{} replicas in dronectl.yaml; the local target has no autoscaler and runs {}",
                    s.service, b.min, b.max, b.min
                ),
            );
        }
        if let Some(n) = s.scaled {
            printer.status(
                "Scaled",
                &format!(
                    "{}: {} replicas by `dronectl scale` (dronectl.yaml says {}; deploys keep {} until it changes)",
                    s.service, n.replicas, n.manifest, n.replicas
                ),
            );
        }
    }
    match entry {
        Some(url) => printer.status("Entry", url),
        None => printer.status("Down", "the app is not running on the local engine"),
    }
    Ok(Outcome::ok(serde_json::to_value(&ps)?))
}

pub async fn logs(
    args: LogsArgs,
    global: &GlobalArgs,
    cwd: &Path,
    printer: &Printer,
) -> anyhow::Result<Outcome> {
    let filtered = args.since.is_some() || args.grep.is_some();
    let opts = local::logs::LogsOptions {
        app_dir: app_dir(global, cwd)?,
        env: global.env.clone(),
        names: args.names,
        follow: args.follow,
        tail: match args.tail {
            Some(Tail::All) => None,
            Some(Tail::Lines(n)) => Some(n),
            None if filtered => None,
            None => Some(100),
        },
        since: args.since,
        grep: args.grep,
    };
    let outcome = {
        let logs = local::logs::Logs::open(opts).await?;
        printer.log_layout(LogLayout {
            names: logs.names().to_vec(),
            width: logs
                .sources()
                .iter()
                .map(|s| s.label.len())
                .max()
                .unwrap_or(0),
            timestamps: args.timestamps,
            raw: args.raw,
        });
        let stop = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        logs.stream(printer, stop).await?
    };
    Ok(Outcome::ok(serde_json::to_value(&outcome)?))
}

/// `dronectl router`: the router's own command line (the same flags, environment
/// variables and logs as the standalone `dronectl-router`), on dronectl's one runtime.
pub async fn router(args: dronectl_router::cli::Args) -> anyhow::Result<Outcome> {
    args.init_logging()?;
    let opts = args.options()?;
    dronectl_router::cli::serve(opts).await?;
    Ok(Outcome::ok(serde_json::Value::Null))
}
