//! `dronectl build`.

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::json;

use dronectl::build::{self, BuildOptions};
use dronectl::manifest;

use super::printer::Printer;
use super::{GlobalArgs, Outcome};

pub const EXAMPLES: &str = "\
Examples:
  dronectl build                           Build every service of the app
  dronectl build account delivery          Build two services
  dronectl build --changed-since origin/main
                                           Only services whose inputs changed since a revision
  dronectl build --push --env staging --artifacts build.json
                                           Push to staging's registry, record what was pushed
  dronectl -o json build                   JSON Lines events for CI

Rust services are compiled together by one `cargo build --release --target
x86_64-unknown-linux-gnu` with static linking, sharing one target dir (CARGO_TARGET_DIR is
honoured), then packed into minimal scratch images that run as uid 65532. A service with its
own Dockerfile is built from it instead. Images are tagged <version>-<git sha>[-dirty] and
named <app>/<service> (<registry>/<app>/<service> when pushed). A service whose inputs did
not change since its last image is not rebuilt. Registry credentials come from
DRONECTL_REGISTRY_USERNAME/DRONECTL_REGISTRY_PASSWORD or ~/.docker/config.json (credHelpers,
credsStore, auths).";

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Services to build [default: all services of the app]
    #[arg(
        value_name = "SERVICE",
        env = "DRONECTL_SERVICES",
        value_delimiter = ','
    )]
    pub services: Vec<String>,

    /// Only build the selected services whose inputs changed since this git revision
    /// (a branch, tag or commit), uncommitted changes included
    #[arg(long, value_name = "REV", env = "DRONECTL_CHANGED_SINCE")]
    pub changed_since: Option<String>,

    /// Tag every image with TAG instead of <version>-<git sha>[-dirty]
    #[arg(long, value_name = "TAG", env = "DRONECTL_TAG")]
    pub tag: Option<String>,

    /// Push the images to the registry of the --env environment
    #[arg(long, env = "DRONECTL_PUSH")]
    pub push: bool,

    /// Write the built images as JSON ([{service, image, tag, digest}]) to FILE, for
    /// `dronectl deploy --artifacts`
    #[arg(long, value_name = "FILE", env = "DRONECTL_ARTIFACTS")]
    pub artifacts: Option<PathBuf>,

    /// Rebuild even the services whose inputs did not change
    #[arg(long, env = "DRONECTL_FORCE")]
    pub force: bool,
}

pub async fn run(
    args: BuildArgs,
    global: &GlobalArgs,
    cwd: &Path,
    printer: &Printer,
) -> anyhow::Result<Outcome> {
    let app_dir = manifest::find_app_dir(global.dir.as_deref(), cwd)?;
    let options = BuildOptions {
        app_dir,
        services: args.services,
        changed_since: args.changed_since,
        tag: args.tag,
        push: args.push,
        env: global.env.clone(),
        artifacts: args
            .artifacts
            .map(|p| if p.is_absolute() { p } else { cwd.join(p) }),
        force: args.force,
        profile: build::Profile::Release,
    };
    let outcome = build::build(&options, printer).await;
    printer.finish_progress();
    let outcome = outcome?;
    let rebuilt = outcome.rebuilt();
    let total = outcome.images.len();
    let secs = outcome.elapsed_ms as f64 / 1000.0;
    if total == 0 {
        printer.status("Finished", &format!("nothing to build ({secs:.2}s)"));
    } else if rebuilt == 0 {
        printer.status(
            "Finished",
            &format!(
                "{total} image{} up to date, nothing rebuilt ({secs:.2}s)",
                plural(total)
            ),
        );
    } else {
        printer.status(
            "Finished",
            &format!(
                "{rebuilt} image{} built, {} up to date ({secs:.2}s)",
                plural(rebuilt),
                total - rebuilt
            ),
        );
    }
    for image in &outcome.images {
        let reference = match &image.pushed {
            Some(p) => format!("{}:{}  {}", p.image, image.tag, p.digest),
            None => format!("{}:{}", image.image, image.tag),
        };
        printer.result_line(&reference);
    }
    Ok(Outcome::ok(json!({
        "app": outcome.app,
        "images": outcome.images,
        "rebuilt": rebuilt,
        "up_to_date": total - rebuilt,
        "unchanged_since": outcome.unchanged_since,
        "compiled": outcome.compiled,
        "elapsed_ms": outcome.elapsed_ms,
        "artifacts": options.artifacts,
    })))
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
