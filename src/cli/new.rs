//! `dronectl new app|service` and `dronectl templates`.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde_json::json;

use dronectl::error::UsageError;
use dronectl::manifest;
use dronectl::scaffold::{self, NewAppOptions, NewServiceOptions, TemplateKind, TemplateSource};

use super::printer::Printer;
use super::{GlobalArgs, Outcome};
use dronectl::events::{Event, Reporter};

#[derive(Debug, Subcommand)]
pub enum NewCommand {
    /// Create a new app repository: dronectl.yaml, a Cargo workspace, README, .gitignore and
    /// an initial git commit
    #[command(
        after_help = "Examples:\n  dronectl new app shop\n  dronectl new app ./apps/shop --name shop-eu --no-git\n  dronectl new app shop --dry-run"
    )]
    App(NewAppArgs),
    /// Add a service to the app: generate its crate, and register it in the Cargo workspace
    /// and in dronectl.yaml so build, deploy and rollouts pick it up
    #[command(
        after_help = "Examples:\n  dronectl new service ratings\n  dronectl new service ratings --port 8081 --route /api/ratings\n  dronectl new service indexer --template rust-worker\n  dronectl new service ratings --set description=\"Star ratings\" --dry-run\n\nThe name must be a DNS-1123 label: lowercase letters, digits and `-`, starting with a\nletter, at most 63 characters. Nothing is written unless every check passes."
    )]
    Service(NewServiceArgs),
}

#[derive(Debug, Args)]
pub struct TemplateArgs {
    /// Read templates from this directory instead of the ones built into dronectl
    #[arg(long, value_name = "DIR", env = "DRONECTL_TEMPLATE_DIR")]
    pub template_dir: Option<PathBuf>,

    /// Set a template variable (repeatable); templates read it as `vars.KEY`
    #[arg(
        long = "set",
        value_name = "KEY=VALUE",
        env = "DRONECTL_SET",
        value_delimiter = ','
    )]
    pub set: Vec<String>,

    /// List what would be created or changed, and write nothing
    #[arg(long, env = "DRONECTL_DRY_RUN")]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct NewAppArgs {
    /// Directory to create (it must not exist, or be empty)
    pub dir: PathBuf,

    /// App name [default: the directory's name]
    #[arg(long, env = "DRONECTL_NAME")]
    pub name: Option<String>,

    /// App template
    #[arg(long, default_value = "app", env = "DRONECTL_APP_TEMPLATE")]
    pub template: String,

    /// Do not create a git repository
    #[arg(long, env = "DRONECTL_NO_GIT")]
    pub no_git: bool,

    #[command(flatten)]
    pub common: TemplateArgs,
}

#[derive(Debug, Args)]
pub struct NewServiceArgs {
    /// Service name: a DNS-1123 label such as `ratings` or `order-api`
    pub name: String,

    /// Service template: rust-http (an axum HTTP service) or rust-worker (a background worker)
    #[arg(short, long, default_value = "rust-http", env = "DRONECTL_TEMPLATE")]
    pub template: String,

    /// Port the service listens on [default: the template's, 8080]
    #[arg(short, long, env = "DRONECTL_PORT")]
    pub port: Option<u32>,

    /// Public route prefix the router sends to the service [default: /api/<name> for HTTP
    /// services; workers have none]
    #[arg(short, long, value_name = "PATH", env = "DRONECTL_ROUTE")]
    pub route: Option<String>,

    /// Directory of the service, relative to the app [default: services/<name>]
    #[arg(long, value_name = "DIR", env = "DRONECTL_PATH")]
    pub path: Option<String>,

    #[command(flatten)]
    pub common: TemplateArgs,
}

#[derive(Debug, Args)]
pub struct TemplatesArgs {
    /// Read templates from this directory instead of the ones built into dronectl
    #[arg(long, value_name = "DIR", env = "DRONECTL_TEMPLATE_DIR")]
    pub template_dir: Option<PathBuf>,
}

pub fn run(
    cmd: NewCommand,
    global: &GlobalArgs,
    cwd: &Path,
    printer: &Printer,
) -> anyhow::Result<Outcome> {
    match cmd {
        NewCommand::App(args) => new_app(args, global, cwd, printer),
        NewCommand::Service(args) => new_service(args, global, cwd, printer),
    }
}

fn new_app(
    args: NewAppArgs,
    global: &GlobalArgs,
    cwd: &Path,
    printer: &Printer,
) -> anyhow::Result<Outcome> {
    // For `new app`, -C is where the new directory is created from.
    let base = match &global.dir {
        Some(d) if d.is_absolute() => d.clone(),
        Some(d) => cwd.join(d),
        None => cwd.to_path_buf(),
    };
    let opts = NewAppOptions {
        dir: base.join(&args.dir),
        name: args.name,
        template: args.template,
        templates: TemplateSource::new(args.common.template_dir.as_deref()),
        vars: args.common.set,
        git: !args.no_git,
        dry_run: args.common.dry_run,
    };
    let outcome = scaffold::new_app(&opts, printer)?;
    if !opts.dry_run {
        printer.status(
            "Created",
            &format!("app `{}` in {}", outcome.name, outcome.dir.display()),
        );
        printer.event(Event::Hint {
            message: format!("cd {} && dronectl new service <name>", args.dir.display()),
        });
    }
    Ok(Outcome::ok(json!({
        "app": outcome.name,
        "dir": outcome.dir,
        "files": outcome.files,
        "commit": outcome.commit,
        "dry_run": opts.dry_run,
    })))
}

fn new_service(
    args: NewServiceArgs,
    global: &GlobalArgs,
    cwd: &Path,
    printer: &Printer,
) -> anyhow::Result<Outcome> {
    let app_dir = manifest::find_app_dir(global.dir.as_deref(), cwd)?;
    let opts = NewServiceOptions {
        app_dir,
        name: args.name,
        template: args.template,
        templates: TemplateSource::new(args.common.template_dir.as_deref()),
        port: args.port,
        route: args.route,
        path: args.path,
        vars: args.common.set,
        dry_run: args.common.dry_run,
    };
    let outcome = scaffold::new_service(&opts, printer)?;
    if !opts.dry_run {
        printer.status(
            "Created",
            &format!("service `{}` in {}", outcome.name, outcome.path),
        );
        printer.event(Event::Hint {
            message: format!(
                "cargo test -p {}   # then: cargo run -p {}",
                outcome.name, outcome.name
            ),
        });
    }
    Ok(Outcome::ok(json!({
        "service": outcome.name,
        "path": outcome.path,
        "template": outcome.template,
        "port": outcome.port,
        "route": outcome.route,
        "files": outcome.files,
        "workspace_updated": outcome.workspace_updated,
        "dry_run": opts.dry_run,
    })))
}

pub fn templates(args: TemplatesArgs, printer: &Printer) -> anyhow::Result<Outcome> {
    let source = TemplateSource::new(args.template_dir.as_deref());
    let mut listed = Vec::new();
    for (kind, label) in [
        (TemplateKind::Service, "service"),
        (TemplateKind::App, "app"),
    ] {
        for (name, meta) in source.list(kind)? {
            printer.result_line(&format!("{name:<14} {label:<8} {}", meta.description));
            listed.push(json!({"name": name, "kind": label, "description": meta.description, "default_port": meta.default_port}));
        }
    }
    if listed.is_empty() {
        return Err(UsageError(format!(
            "no templates found in {}",
            args.template_dir.unwrap_or_default().display()
        ))
        .into());
    }
    Ok(Outcome::ok(json!({ "templates": listed })))
}
