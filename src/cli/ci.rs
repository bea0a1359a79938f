//! `dronectl ci init` and `dronectl changed`.

use std::path::Path;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;

use dronectl::ci::{self, CiInitOptions, Provider};

use super::local::app_dir;
use super::printer::Printer;
use super::{GlobalArgs, Outcome};

#[derive(Debug, Subcommand)]
pub enum CiCommand {
    /// Write a CI/CD pipeline for the app: build and test on every push; on the main branch
    /// build what changed, push, deploy to staging with a canary, wait, approve, production
    #[command(
        after_help = "Examples:\n  dronectl ci init --provider github\n  dronectl ci init --provider gitlab --branch trunk\n  dronectl ci init --provider azure-pipelines --staging qa --production prod\n  dronectl ci init --provider github --dry-run"
    )]
    Init(CiInitArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ProviderArg {
    /// GitHub Actions (.github/workflows/dronectl.yml)
    Github,
    /// GitLab CI (.gitlab-ci.yml)
    Gitlab,
    /// Azure Pipelines (azure-pipelines.yml)
    AzurePipelines,
}

#[derive(Debug, Args)]
pub struct CiInitArgs {
    /// The CI provider
    #[arg(long, value_enum, env = "DRONECTL_PROVIDER")]
    pub provider: ProviderArg,
    /// The branch that deploys: a git branch name of ASCII letters, digits, `.`, `_`, `-` and
    /// `/` [default: the repository's current branch, else main]
    #[arg(long, env = "DRONECTL_BRANCH")]
    pub branch: Option<String>,
    /// The staging environment (from dronectl.yaml)
    #[arg(long, default_value = "staging", env = "DRONECTL_STAGING")]
    pub staging: String,
    /// The production environment (from dronectl.yaml)
    #[arg(long, default_value = "production", env = "DRONECTL_PRODUCTION")]
    pub production: String,
    /// Replace an existing pipeline file
    #[arg(long, env = "DRONECTL_FORCE")]
    pub force: bool,
    /// Print the pipeline instead of writing it
    #[arg(long, env = "DRONECTL_DRY_RUN")]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct ChangedArgs {
    /// The git revision to compare with (a commit, tag or branch)
    #[arg(long, value_name = "REF", env = "DRONECTL_SINCE")]
    pub since: String,
}

pub fn run(
    cmd: CiCommand,
    global: &GlobalArgs,
    cwd: &Path,
    printer: &Printer,
) -> anyhow::Result<Outcome> {
    match cmd {
        CiCommand::Init(args) => {
            let provider = match args.provider {
                ProviderArg::Github => Provider::Github,
                ProviderArg::Gitlab => Provider::Gitlab,
                ProviderArg::AzurePipelines => Provider::AzurePipelines,
            };
            let opts = CiInitOptions {
                app_dir: app_dir(global, cwd)?,
                provider,
                branch: args.branch,
                staging: args.staging,
                production: args.production,
                force: args.force,
                dry_run: args.dry_run,
            };
            let outcome = ci::init(&opts, printer)?;
            if outcome.dry_run {
                printer.result_line(&outcome.contents);
            } else {
                printer.status(
                    "Created",
                    &format!(
                        "{} (deploys from branch `{}`)",
                        outcome.path.display(),
                        outcome.branch
                    ),
                );
            }
            Ok(Outcome::ok(
                json!({"provider": outcome.provider, "path": outcome.path, "branch": outcome.branch, "dry_run": outcome.dry_run}),
            ))
        }
    }
}

pub fn changed(
    args: ChangedArgs,
    global: &GlobalArgs,
    cwd: &Path,
    printer: &Printer,
) -> anyhow::Result<Outcome> {
    let dir = app_dir(global, cwd)?;
    let services = dronectl::build::changed_services(&dir, &args.since)?;
    for s in &services {
        printer.result_line(s);
    }
    Ok(Outcome::ok(
        json!({"since": args.since, "services": services}),
    ))
}
