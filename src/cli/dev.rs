//! `dronectl dev`: the inner loop (watch, rebuild what changed, swap it in, one log stream).

use std::path::Path;

use clap::Args;

use dronectl::dev;
use dronectl::manifest;

use super::local::app_dir;
use super::printer::{LogLayout, Printer};
use super::{GlobalArgs, Outcome};

pub const EXAMPLES: &str = "Examples:\n  dronectl dev\n  dronectl dev orders users\n  dronectl dev --no-logs\n  dronectl -o json dev\n  dronectl dev --down-on-exit\n\nBrings the app up on the local Docker engine if it is not (as `up`), prints the entry URL,\nthen watches the selected services' sources (and their local crates), honouring\n.gitignore and .dockerignore. A save rebuilds only the services whose inputs changed, with\nan incremental dev-profile static build, and swaps the new revision in with a rolling\nupdate: the new version is ready before it gets traffic, no request fails. A compile error\nis shown and the running version keeps serving; a new version that crash-loops is rolled\nback with its last log lines. Ctrl-C stops watching and leaves the app running.";

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Services to watch and rebuild (none: every service)
    #[arg(value_name = "SERVICE")]
    pub services: Vec<String>,
    /// Do not stream the services' logs
    #[arg(long, env = "DRONECTL_NO_LOGS")]
    pub no_logs: bool,
    /// Remove the app (as `down`, volumes kept) when the loop stops, instead of leaving it running
    #[arg(long, env = "DRONECTL_DOWN_ON_EXIT")]
    pub down_on_exit: bool,
    /// Quiet time after the last save before a build starts (a burst of saves is one build)
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "100ms",
        env = "DRONECTL_DEBOUNCE"
    )]
    pub debounce: manifest::Duration,
    /// A new version not ready after this long is rolled back
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "1m",
        env = "DRONECTL_PROGRESS_DEADLINE"
    )]
    pub progress_deadline: manifest::Duration,
}

pub async fn run(
    args: DevArgs,
    global: &GlobalArgs,
    cwd: &Path,
    printer: &Printer,
) -> anyhow::Result<Outcome> {
    let opts = dev::DevOptions {
        app_dir: app_dir(global, cwd)?,
        env: global.env.clone(),
        services: args.services,
        logs: !args.no_logs,
        down_on_exit: args.down_on_exit,
        debounce: args.debounce.0,
        progress_deadline: args.progress_deadline.0,
    };
    printer.log_layout(LogLayout::default());
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let outcome = dev::run(&opts, printer, stop).await;
    printer.finish_progress();
    printer.finish_status();
    Ok(Outcome::ok(serde_json::to_value(outcome?)?))
}
