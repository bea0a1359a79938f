//! Command-line definitions (clap) and dispatch. Each command module turns its arguments
//! into the library's option struct, calls the library, and hands the result to the
//! printer; none of them holds logic of its own.

mod build;
mod ci;
mod config;
mod deploy;
mod dev;
mod images;
mod kube;
mod local;
mod new;
pub mod printer;
mod secret;
mod validate;

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};

use dronectl::error::ExitCode;
use printer::{OutputFormat, Printer};

/// `dronectl --version`: the crate version and the git revision it was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("DRONECTL_GIT_REV"),
    ")"
);

const ABOUT: &str = "Scaffold, build, deploy and progressively roll out microservices";

const LONG_ABOUT: &str = "dronectl takes microservices from nothing to production: it scaffolds services from \
templates, builds and containerises them, deploys them to the local Docker engine or to Kubernetes, \
and ships new versions with canary, blue-green and rolling rollouts.

Every flag can also be set through an environment variable named DRONECTL_<FLAG> \
(for example DRONECTL_OUTPUT=json); flags given on the command line win.";

const EXAMPLES: &str = "\
Examples:
  dronectl new app shop                 Create an app repository in ./shop
  dronectl -C shop new service orders   Add an HTTP service to it
  dronectl validate                     Check the dronectl.yaml of the current app
  dronectl -o json validate             The same, as JSON Lines for CI
  dronectl build                        Compile every service and build its image
  dronectl build --push --env staging   ...and push the images to staging's registry

Exit codes: 0 done, 1 failed, 2 usage or config error, 3 rollout aborted and rolled back,
4 timed out, 5 paused waiting for promotion.";

#[derive(Debug, Parser)]
#[command(name = "dronectl", version = VERSION, about = ABOUT, long_about = LONG_ABOUT, after_help = EXAMPLES)]
#[command(propagate_version = true, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command accepts.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Run as if started in DIR: the app directory holding dronectl.yaml [default: the nearest
    /// parent directory that has one]
    #[arg(
        id = "app_dir",
        short = 'C',
        long = "dir",
        value_name = "DIR",
        env = "DRONECTL_DIR",
        global = true
    )]
    pub dir: Option<PathBuf>,

    /// The environment to act on, as named under `environments` in dronectl.yaml
    #[arg(long = "env", value_name = "NAME", env = "DRONECTL_ENV", global = true)]
    pub env: Option<String>,

    /// Output format: human text, or JSON Lines events for machines
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Human, env = "DRONECTL_OUTPUT", global = true)]
    pub output: OutputFormat,

    /// Never animate progress (it is also off without a terminal and when CI is set)
    #[arg(long, env = "DRONECTL_NO_PROGRESS", global = true)]
    pub no_progress: bool,

    /// Say more (repeat for even more)
    #[arg(short, long, action = ArgAction::Count, env = "DRONECTL_VERBOSE", global = true, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Say only what went wrong
    #[arg(short, long, env = "DRONECTL_QUIET", global = true)]
    pub quiet: bool,

    /// Answer yes to every confirmation (without a terminal dronectl never asks; it refuses)
    #[arg(short = 'y', long, env = "DRONECTL_YES", global = true)]
    pub yes: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create an app or a service from a template
    #[command(subcommand)]
    New(new::NewCommand),
    /// List the templates `dronectl new` can use
    #[command(
        after_help = "Examples:\n  dronectl templates\n  dronectl templates --template-dir ./my-templates"
    )]
    Templates(new::TemplatesArgs),
    /// Check dronectl.yaml: syntax, types, names, and references between entries
    #[command(after_help = validate::EXAMPLES)]
    Validate(validate::ValidateArgs),
    /// Print the manifest as it applies in an environment (its overrides merged)
    #[command(after_help = config::EXAMPLES)]
    Config(config::ConfigArgs),
    /// Compile services as static binaries and build their minimal images
    #[command(after_help = build::EXAMPLES)]
    Build(build::BuildArgs),
    /// List the app's images, or prune the unused ones
    #[command(after_help = images::IMAGES_EXAMPLES)]
    Images(images::ImagesArgs),
    /// Make images from prebuilt executables
    #[command(subcommand)]
    Image(images::ImageCommand),
    /// Bring the whole app up on the local Docker engine and print its entry URL
    #[command(after_help = local::UP_EXAMPLES)]
    Up(local::UpArgs),
    /// Remove everything `up` created for the app (volumes only with --volumes)
    #[command(after_help = "Examples:\n  dronectl down\n  dronectl down --volumes")]
    Down(local::DownArgs),
    /// Show the app's containers, versions and traffic split
    #[command(after_help = "Examples:\n  dronectl ps\n  dronectl -o json ps")]
    Ps,
    /// Watch and rebuild each saved change, swap it in with no failed request
    #[command(after_help = dev::EXAMPLES)]
    Dev(dev::DevArgs),
    /// Show the logs of the app's services, infrastructure and router as one stream
    #[command(after_help = local::LOGS_EXAMPLES)]
    Logs(local::LogsArgs),
    /// Ship a new version of a service with a rolling, blue-green or canary rollout
    #[command(after_help = deploy::DEPLOY_EXAMPLES)]
    Deploy(deploy::DeployArgs),
    /// Watch and steer a service's rollout
    #[command(subcommand)]
    Rollout(deploy::RolloutCommand),
    /// Change the replica count of a service's live version, without a rollout
    #[command(after_help = deploy::SCALE_EXAMPLES)]
    Scale(deploy::ScaleArgs),
    /// Set, list and remove the values of the services' secrets
    #[command(subcommand)]
    Secret(secret::SecretCommand),
    /// Print the Kubernetes objects of the app (or of some services) as YAML
    #[command(after_help = kube::RENDER_EXAMPLES)]
    Render(kube::RenderArgs),
    /// Show how the cluster differs from what `deploy` would apply (Kubernetes)
    #[command(after_help = kube::DIFF_EXAMPLES)]
    Diff(kube::DiffArgs),
    /// Generate CI/CD pipelines that drive dronectl
    #[command(subcommand)]
    Ci(ci::CiCommand),
    /// List the services whose inputs changed since a git revision (for monorepo pipelines)
    #[command(
        after_help = "Examples:\n  dronectl changed --since origin/main\n  dronectl -o json changed --since HEAD~1"
    )]
    Changed(ci::ChangedArgs),
    /// Run dronectl's traffic router (what the local router container runs)
    #[command(hide = true)]
    Router(dronectl_router::cli::Args),
    /// Print a shell completion script
    #[command(
        after_help = "Examples:\n  dronectl completions bash > /etc/bash_completion.d/dronectl\n  dronectl completions zsh > \"${fpath[1]}/_dronectl\"\n  dronectl completions fish > ~/.config/fish/completions/dronectl.fish"
    )]
    Completions {
        /// The shell to generate completions for
        #[arg(value_enum, env = "DRONECTL_SHELL")]
        shell: clap_complete::Shell,
    },
}

impl GlobalArgs {
    /// Where the app is (`-C DIR`, else found from `cwd`), for the library to look up when
    /// the command needs it.
    pub fn app(&self, cwd: &std::path::Path) -> dronectl::deploy::AppLocation {
        dronectl::deploy::AppLocation {
            dir: self.dir.clone(),
            cwd: cwd.to_path_buf(),
        }
    }
}

/// What a command produced: its exit code and its summary for `--output json`.
pub struct Outcome {
    pub code: ExitCode,
    pub result: serde_json::Value,
}

impl Outcome {
    pub fn ok(result: serde_json::Value) -> Outcome {
        Outcome {
            code: ExitCode::Success,
            result,
        }
    }
}

impl Command {
    /// The command's name as the JSON summary reports it.
    pub fn name(&self) -> &'static str {
        match self {
            Command::New(new::NewCommand::App(_)) => "new app",
            Command::New(new::NewCommand::Service(_)) => "new service",
            Command::Templates(_) => "templates",
            Command::Validate(_) => "validate",
            Command::Config(_) => "config",
            Command::Build(_) => "build",
            Command::Images(images::ImagesArgs { command: None }) => "images",
            Command::Images(_) => "images prune",
            Command::Image(images::ImageCommand::Pack(_)) => "image pack",
            Command::Up(_) => "up",
            Command::Down(_) => "down",
            Command::Ps => "ps",
            Command::Logs(_) => "logs",
            Command::Dev(_) => "dev",
            Command::Deploy(_) => "deploy",
            Command::Scale(_) => "scale",
            Command::Rollout(deploy::RolloutCommand::Status(_)) => "rollout status",
            Command::Rollout(deploy::RolloutCommand::Promote(_)) => "rollout promote",
            Command::Rollout(deploy::RolloutCommand::Abort(_)) => "rollout abort",
            Command::Rollout(deploy::RolloutCommand::Undo(_)) => "rollout undo",
            Command::Rollout(deploy::RolloutCommand::History(_)) => "rollout history",
            Command::Rollout(deploy::RolloutCommand::Resume(_)) => "rollout resume",
            Command::Secret(cmd) => cmd.name(),
            Command::Render(_) => "render",
            Command::Diff(_) => "diff",
            Command::Router(_) => "router",
            Command::Ci(_) => "ci init",
            Command::Changed(_) => "changed",
            Command::Completions { .. } => "completions",
        }
    }
}

/// Runs a parsed command line, on the one runtime `main` builds. Commands that are purely
/// synchronous (`new`, `validate`, `config`, `ci`, `changed`) stay plain functions.
pub async fn run(cli: Cli, printer: &Printer) -> anyhow::Result<Outcome> {
    let cwd = std::env::current_dir()?;
    match cli.command {
        Command::New(cmd) => new::run(cmd, &cli.global, &cwd, printer),
        Command::Templates(args) => new::templates(args, printer),
        Command::Validate(args) => validate::run(args, &cli.global, &cwd, printer),
        Command::Config(args) => config::run(args, &cli.global, &cwd, printer),
        Command::Build(args) => build::run(args, &cli.global, &cwd, printer).await,
        Command::Images(args) => images::run_images(args, &cli.global, &cwd, printer).await,
        Command::Image(cmd) => images::run_image(cmd, &cwd, printer).await,
        Command::Up(args) => local::up(args, &cli.global, &cwd, printer).await,
        Command::Down(args) => local::down(args, &cli.global, &cwd, printer).await,
        Command::Ps => local::ps(&cli.global, &cwd, printer).await,
        Command::Logs(args) => local::logs(args, &cli.global, &cwd, printer).await,
        Command::Dev(args) => dev::run(args, &cli.global, &cwd, printer).await,
        Command::Deploy(args) => deploy::deploy(args, &cli.global, &cwd, printer).await,
        Command::Rollout(cmd) => deploy::rollout(cmd, &cli.global, &cwd, printer).await,
        Command::Scale(args) => deploy::scale(args, &cli.global, &cwd, printer).await,
        Command::Secret(cmd) => secret::run(cmd, &cli.global, &cwd, printer).await,
        Command::Render(args) => kube::render(args, &cli.global, &cwd, printer).await,
        Command::Diff(args) => kube::diff(args, &cli.global, &cwd, printer).await,
        Command::Router(args) => local::router(args).await,
        Command::Ci(cmd) => ci::run(cmd, &cli.global, &cwd, printer),
        Command::Changed(args) => ci::changed(args, &cli.global, &cwd, printer),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "dronectl", &mut std::io::stdout());
            Ok(Outcome::ok(serde_json::Value::Null))
        }
    }
}
