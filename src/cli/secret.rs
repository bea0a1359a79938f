//! `dronectl secret set|list|rm`.

use std::path::Path;

use clap::{Args, Subcommand};
use serde_json::json;

use dronectl::error::UsageError;
use dronectl::secrets::input;
use dronectl::secrets::ops::{self, SecretScope};

use super::kube::KubeArgs;
use super::local::app_dir;
use super::printer::Printer;
use super::{GlobalArgs, Outcome};

pub const SET_EXAMPLES: &str = "Examples:\n  dronectl secret set api DB_PASSWORD                   # type it (not echoed)\n  printf %s \"$DB_PASSWORD\" | dronectl secret set api DB_PASSWORD --env staging\n  dronectl secret set api TLS_KEY < key.pem\n\nThe value is read from standard input, never from the command line; one trailing line\nbreak is dropped. Local environments keep it in dronectl's state directory (mode 0600);\nKubernetes environments in the Secret <service>-secrets (server-side apply). The next\n`deploy` or `up` rolls the service out with it.";

pub const LIST_EXAMPLES: &str = "Examples:\n  dronectl secret list\n  dronectl secret list --env staging api\n  dronectl -o json secret list\n\nShows names, where each value is kept and when it was set; never a value.";

pub const RM_EXAMPLES: &str =
    "Examples:\n  dronectl secret rm api DB_PASSWORD\n  dronectl secret rm api DB_PASSWORD --env staging";

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Set a secret's value, read from standard input
    #[command(after_help = SET_EXAMPLES)]
    Set(SetArgs),
    /// List the secrets of the app's services and where each is set (never values)
    #[command(after_help = LIST_EXAMPLES)]
    List(ListArgs),
    /// Remove a secret's value
    #[command(after_help = RM_EXAMPLES)]
    Rm(RmArgs),
}

#[derive(Debug, Args)]
pub struct SetArgs {
    /// The service that declares the secret
    pub service: String,
    /// The secret's name, as in the service's `secrets`
    pub name: String,
    /// Refused: a value on the command line shows in `ps`, shell history and CI logs
    #[arg(hide = true)]
    pub value: Option<String>,
    /// Refused, like a value given as an argument
    #[arg(long = "value", hide = true, value_name = "VALUE")]
    pub value_flag: Option<String>,
    #[command(flatten)]
    pub kube: KubeArgs,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only these services [default: every service]
    pub services: Vec<String>,
    #[command(flatten)]
    pub kube: KubeArgs,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// The service
    pub service: String,
    /// The secret's name
    pub name: String,
    #[command(flatten)]
    pub kube: KubeArgs,
}

impl SecretCommand {
    pub fn name(&self) -> &'static str {
        match self {
            SecretCommand::Set(_) => "secret set",
            SecretCommand::List(_) => "secret list",
            SecretCommand::Rm(_) => "secret rm",
        }
    }
}

fn scope(global: &GlobalArgs, cwd: &Path, kube: &KubeArgs) -> anyhow::Result<SecretScope> {
    Ok(SecretScope {
        app_dir: app_dir(global, cwd)?,
        env: global.env.clone(),
        connect: kube.connect_options(global.yes),
    })
}

pub async fn run(
    cmd: SecretCommand,
    global: &GlobalArgs,
    cwd: &Path,
    printer: &Printer,
) -> anyhow::Result<Outcome> {
    match cmd {
        SecretCommand::Set(args) => {
            if args.value.is_some() || args.value_flag.is_some() {
                // The value itself is never repeated.
                return Err(UsageError(format!(
                    "refusing a secret value on the command line (it would show in `ps`, shell history and CI logs); pipe it to standard input instead: `printf %s \"$VALUE\" | dronectl secret set {} {}`",
                    args.service, args.name
                ))
                .into());
            }
            let scope = scope(global, cwd, &args.kube)?;
            ops::check_set(&scope, &args.service, &args.name)?;
            let source = input::stdin();
            if matches!(source, input::Source::Terminal(_)) {
                printer.status(
                    "Enter",
                    &format!(
                        "the value of {} for {} (not echoed), then Enter",
                        args.name, args.service
                    ),
                );
            }
            let value = input::read_value(source)?;
            let outcome = ops::set(&scope, &args.service, &args.name, &value).await?;
            printer.status(
                "Set",
                &format!(
                    "secret {} of {} in {} ({})",
                    outcome.name, outcome.service, outcome.env, outcome.location
                ),
            );
            printer.status("Next", &outcome.next);
            Ok(Outcome::ok(serde_json::to_value(&outcome)?))
        }
        SecretCommand::List(args) => {
            let scope = scope(global, cwd, &args.kube)?;
            let outcome = ops::list(&scope, &args.services).await?;
            if outcome.secrets.is_empty() {
                printer.status(
                    "Listed",
                    &format!("no secrets declared or set in {}", outcome.env),
                );
            } else {
                let width = outcome
                    .secrets
                    .iter()
                    .map(|s| s.service.len() + s.name.len() + 1)
                    .max()
                    .unwrap_or(0);
                printer.result_line(&format!(
                    "{:width$}  {:8}  {:20}  WHERE",
                    "SECRET", "STATE", "SET AT"
                ));
                for s in &outcome.secrets {
                    let state = match (s.set, s.declared) {
                        (true, true) => "set",
                        (false, _) => "missing",
                        (true, false) => "unused",
                    };
                    printer.result_line(&format!(
                        "{:width$}  {state:8}  {:20}  {}",
                        format!("{}/{}", s.service, s.name),
                        s.set_at.as_deref().unwrap_or("-"),
                        s.location
                    ));
                }
            }
            Ok(Outcome::ok(serde_json::to_value(&outcome)?))
        }
        SecretCommand::Rm(args) => {
            let scope = scope(global, cwd, &args.kube)?;
            let outcome = ops::remove(&scope, &args.service, &args.name).await?;
            if outcome.removed {
                printer.status(
                    "Removed",
                    &format!(
                        "secret {} of {} in {}",
                        outcome.name, outcome.service, outcome.env
                    ),
                );
            } else {
                printer.status(
                    "Unchanged",
                    &format!(
                        "secret {} of {} has no value in {}",
                        outcome.name, outcome.service, outcome.env
                    ),
                );
            }
            Ok(Outcome::ok(json!(outcome)))
        }
    }
}
