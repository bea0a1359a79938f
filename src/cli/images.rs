//! `dronectl images`, `dronectl images prune` and `dronectl image pack`.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde_json::json;

use dronectl::build::{images, pack};
use dronectl::manifest;

use super::printer::{human_bytes, Printer};
use super::{GlobalArgs, Outcome};

pub const IMAGES_EXAMPLES: &str = "\
Examples:
  dronectl images                 List the app's images (tags, size, containers using them)
  dronectl images prune           Remove unused images, keeping each service's newest
  dronectl images prune --all     Remove every image of the app no container uses
  dronectl images prune --dry-run Show what would be removed";

#[derive(Debug, Args)]
pub struct ImagesArgs {
    #[command(subcommand)]
    pub command: Option<ImagesCommand>,
}

#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// Remove the app's images that no container uses, except each service's newest
    #[command(after_help = IMAGES_EXAMPLES)]
    Prune(PruneArgs),
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Also remove each service's newest image (still never one a container uses)
    #[arg(long, env = "DRONECTL_ALL")]
    pub all: bool,

    /// List what would be removed, and remove nothing
    #[arg(long, env = "DRONECTL_DRY_RUN")]
    pub dry_run: bool,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Pack a prebuilt Linux executable (static, or dynamic with its shared libraries) into
    /// a minimal image that runs as a numeric non-root user
    #[command(after_help = PACK_EXAMPLES)]
    Pack(PackArgs),
}

pub const PACK_EXAMPLES: &str = "\
Examples:
  dronectl image pack target/x86_64-unknown-linux-gnu/release/tool --tag tool:1.0
  dronectl image pack /usr/bin/redis-server --tag redis:7 --as-command \\
      --entrypoint-arg=--protected-mode --entrypoint-arg=no --expose 6379 --workdir /data
  dronectl image pack /usr/bin/redis-server --tag redis:7 --include /bin/sh \\
      --entrypoint /bin/sh --entrypoint -c --entrypoint 'exec \"$@\" --protected-mode no' \\
      --entrypoint redis --expose 6379 --workdir /data

A dynamic executable gets its shared-library closure as `ldd` reports it (the dynamic loader
included) at the libraries' real paths, with the symlinks on the way. The executable goes
to /usr/local/bin, which is on PATH. Running as root needs --user 0 --allow-root.";

#[derive(Debug, Args)]
pub struct PackArgs {
    /// The executable to pack
    #[arg(value_name = "EXECUTABLE", env = "DRONECTL_EXECUTABLE")]
    pub executable: PathBuf,

    /// Image name and tag, `name[:tag]`
    #[arg(long, value_name = "NAME", env = "DRONECTL_TAG")]
    pub tag: String,

    /// Numeric uid (and gid) the image runs as
    #[arg(
        long,
        value_name = "UID",
        default_value_t = 65532,
        env = "DRONECTL_USER"
    )]
    pub user: u32,

    /// Allow --user 0 (root)
    #[arg(long, env = "DRONECTL_ALLOW_ROOT")]
    pub allow_root: bool,

    /// An argument after the executable (repeatable, in order)
    #[arg(
        long = "entrypoint-arg",
        value_name = "ARG",
        allow_hyphen_values = true,
        env = "DRONECTL_ENTRYPOINT_ARG",
        value_delimiter = ','
    )]
    pub entrypoint_args: Vec<String>,

    /// Put the executable and its arguments in the image's CMD instead of its ENTRYPOINT,
    /// so that a container command (`command:` in dronectl.yaml) replaces them entirely
    #[arg(long, env = "DRONECTL_AS_COMMAND")]
    pub as_command: bool,

    /// Use this ENTRYPOINT (repeat for each word) instead of the executable; the executable
    /// and its arguments become the CMD
    #[arg(
        long = "entrypoint",
        value_name = "ARG",
        allow_hyphen_values = true,
        env = "DRONECTL_ENTRYPOINT"
    )]
    pub entrypoint: Vec<String>,

    /// Also copy this host file at its own path, with its shared libraries when it is an
    /// executable (repeatable), e.g. /bin/sh for an entrypoint wrapper
    #[arg(
        long,
        value_name = "PATH",
        env = "DRONECTL_INCLUDE",
        value_delimiter = ','
    )]
    pub include: Vec<PathBuf>,

    /// A TCP port the image exposes (repeatable)
    #[arg(
        long,
        value_name = "PORT",
        env = "DRONECTL_EXPOSE",
        value_delimiter = ','
    )]
    pub expose: Vec<u16>,

    /// Working directory, created in the image and owned by --user
    #[arg(long, value_name = "DIR", env = "DRONECTL_WORKDIR")]
    pub workdir: Option<String>,

    /// An environment variable of the image, KEY=VALUE (repeatable). (`--env` is the global
    /// flag that picks a dronectl environment.)
    #[arg(
        short = 'e',
        long = "env-var",
        value_name = "KEY=VALUE",
        env = "DRONECTL_ENV_VAR",
        value_delimiter = ','
    )]
    pub env: Vec<String>,
}

pub async fn run_images(
    args: ImagesArgs,
    global: &GlobalArgs,
    cwd: &Path,
    printer: &Printer,
) -> anyhow::Result<Outcome> {
    let app_dir = manifest::find_app_dir(global.dir.as_deref(), cwd)?;
    match args.command {
        None => {
            let list = images::list(&app_dir).await?;
            if list.is_empty() {
                printer.status("Finished", "no images of this app in the engine");
            } else {
                printer.result_line(&format!(
                    "{:<18} {:<12} {:>9} {:>4}  {}",
                    "SERVICE", "IMAGE ID", "SIZE", "USED", "TAGS"
                ));
            }
            for img in &list {
                let tags = if img.tags.is_empty() {
                    "<untagged>".to_string()
                } else {
                    img.tags.join(", ")
                };
                printer.result_line(&format!(
                    "{:<18} {:<12} {:>9} {:>4}  {tags}",
                    img.service,
                    dronectl::build::short_id(&img.id),
                    human_bytes(img.size),
                    img.containers,
                ));
            }
            Ok(Outcome::ok(json!({ "images": list })))
        }
        Some(ImagesCommand::Prune(prune)) => {
            let options = images::PruneOptions {
                app_dir,
                all: prune.all,
                dry_run: prune.dry_run,
            };
            let outcome = images::prune(&options, printer).await?;
            let verb = if options.dry_run {
                "Would remove"
            } else {
                "Removed"
            };
            printer.status(
                verb,
                &format!(
                    "{} image{}, {} ({} kept)",
                    outcome.removed.len(),
                    if outcome.removed.len() == 1 { "" } else { "s" },
                    human_bytes(outcome.reclaimed_bytes),
                    outcome.kept
                ),
            );
            Ok(Outcome::ok(json!({
                "removed": outcome.removed,
                "kept": outcome.kept,
                "reclaimed_bytes": outcome.reclaimed_bytes,
                "dry_run": options.dry_run,
            })))
        }
    }
}

pub async fn run_image(
    cmd: ImageCommand,
    cwd: &Path,
    printer: &Printer,
) -> anyhow::Result<Outcome> {
    match cmd {
        ImageCommand::Pack(args) => {
            let options = pack::PackOptions {
                executable: if args.executable.is_absolute() {
                    args.executable
                } else {
                    cwd.join(args.executable)
                },
                tag: args.tag,
                user: args.user,
                allow_root: args.allow_root,
                args: args.entrypoint_args,
                as_command: args.as_command,
                expose: args.expose,
                workdir: args.workdir,
                env: args.env,
                labels: Default::default(),
            };
            let extras = pack::PackExtras {
                entrypoint: args.entrypoint,
                include: args.include,
            };
            let outcome = pack::pack_with(&options, &extras, printer).await;
            printer.finish_progress();
            let outcome = outcome?;
            printer.status(
                "Packed",
                &format!(
                    "{} ({}, {}{})",
                    outcome.image,
                    dronectl::build::short_id(&outcome.id),
                    human_bytes(outcome.size),
                    if outcome.static_binary {
                        ", static".to_string()
                    } else {
                        format!(", {} shared libraries", outcome.libraries.len())
                    }
                ),
            );
            Ok(Outcome::ok(json!({
                "image": outcome.image,
                "id": outcome.id,
                "size": outcome.size,
                "static": outcome.static_binary,
                "libraries": outcome.libraries,
            })))
        }
    }
}
