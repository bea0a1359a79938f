//! The errors of `build`, `images` and `image pack`, and the exit code each gives.

use std::path::PathBuf;

use super::artifacts::ArtifactsError;
use super::auth;
use crate::docker::DockerError;
use crate::manifest::{EnvironmentError, ManifestError};

/// Errors of `build`, `images` and `image pack`.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("unknown service `{name}`; the app's services are: {}", known.join(", "))]
    UnknownService { name: String, known: Vec<String> },
    #[error("service `{service}` has neither a Cargo.toml nor a Dockerfile in {}", dir.display())]
    NoRecipe { service: String, dir: PathBuf },
    #[error("--push needs an environment with a registry: pass --env <name> (environments: {})", known.join(", "))]
    PushNeedsEnv { known: Vec<String> },
    #[error(transparent)]
    Environment(#[from] EnvironmentError),
    #[error("environment `{env}` has no `registry` to push to; add `registry: <host>/<path>` to it in dronectl.yaml")]
    NoRegistry { env: String },
    #[error("invalid tag `{0}`: use up to 128 letters, digits, `_`, `.` and `-`, not starting with `.` or `-`")]
    BadTag(String),
    #[error("invalid image name `{0}`: use lowercase letters, digits, `.`, `_`, `-` and `/`, with an optional `:tag`")]
    BadImageName(String),
    #[error("unknown git revision `{reference}`: {message}")]
    BadRef { reference: String, message: String },
    #[error("{} is not in a git repository, so --changed-since cannot compare with a revision", dir.display())]
    NotGit { dir: PathBuf },
    #[error("{}", compile_message(services, *errors, cargo_output))]
    Compile {
        services: Vec<String>,
        errors: usize,
        cargo_output: String,
    },
    #[error("cargo: {message}")]
    Cargo { message: String },
    #[error("building the image of `{service}` failed:\n{message}")]
    ImageBuild { service: String, message: String },
    #[error("pushing {image} (service `{service}`) failed: {message}")]
    Push {
        service: String,
        image: String,
        message: String,
    },
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error("git: {0}")]
    Git(#[from] git2::Error),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Artifacts(#[from] ArtifactsError),
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    #[error("refusing to pack an image that runs as root (uid 0); pass --allow-root if you really mean it")]
    PackRoot,
    #[error("cannot pack {}: {message}", path.display())]
    Pack { path: PathBuf, message: String },
    #[error("invalid {what} `{value}`: {why}")]
    BadValue {
        what: &'static str,
        value: String,
        why: &'static str,
    },
}

fn compile_message(services: &[String], errors: usize, cargo_output: &str) -> String {
    let mut text = if services.is_empty() {
        "cargo build failed".to_string()
    } else {
        format!(
            "compiling {} failed with {errors} error{} (shown above); no image was built or tagged",
            services
                .iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", "),
            if errors == 1 { "" } else { "s" }
        )
    };
    let output = cargo_output.trim();
    if !output.is_empty() {
        text.push_str(":\n");
        text.push_str(output);
    }
    text
}

impl crate::exit::ExitStatus for BuildError {
    /// Bad input is a usage error (2), the rest failures (1).
    fn exit_code(&self) -> crate::exit::ExitCode {
        use crate::exit::ExitCode;
        match self {
            BuildError::Manifest(_)
            | BuildError::UnknownService { .. }
            | BuildError::NoRecipe { .. }
            | BuildError::PushNeedsEnv { .. }
            | BuildError::Environment(_)
            | BuildError::NoRegistry { .. }
            | BuildError::BadTag(_)
            | BuildError::BadImageName(_)
            | BuildError::BadRef { .. }
            | BuildError::NotGit { .. }
            | BuildError::PackRoot
            | BuildError::BadValue { .. }
            | BuildError::Auth(
                auth::AuthError::ParseConfig { .. } | auth::AuthError::BadEntry { .. },
            ) => ExitCode::Usage,
            _ => ExitCode::Failed,
        }
    }
}
