//! Exit codes, and the mapping of every error dronectl can return onto them.
//!
//! This is the one place where errors become exit codes; the binary calls [`exit_code`]
//! on whatever error reaches it.

use crate::build::{ArtifactsError, BuildError};
use crate::docker::DockerError;
use crate::manifest::{EnvironmentError, ManifestError};
use crate::scaffold::ScaffoldError;

/// dronectl's exit codes, stable for CI pipelines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[repr(u8)]
pub enum ExitCode {
    /// Done.
    Success = 0,
    /// The operation failed.
    Failed = 1,
    /// Bad usage or configuration; nothing was changed.
    Usage = 2,
    /// A rollout was aborted and rolled back.
    Aborted = 3,
    /// A wait timed out.
    TimedOut = 4,
    /// A rollout is paused, waiting for promotion.
    Paused = 5,
}

impl ExitCode {
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// A usage error found by dronectl itself (not by clap): exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The exit code for an error returned by any dronectl operation.
pub fn exit_code(err: &anyhow::Error) -> ExitCode {
    for cause in err.chain() {
        if cause.is::<UsageError>()
            || cause.is::<ManifestError>()
            || cause.is::<EnvironmentError>()
            || cause.is::<crate::secrets::MissingSecrets>()
        {
            return ExitCode::Usage;
        }
        if let Some(e) = cause.downcast_ref::<ScaffoldError>() {
            return e.exit_code();
        }
        if let Some(e) = cause.downcast_ref::<BuildError>() {
            return e.exit_code();
        }
        // No engine / engine too old: the operation could not run (1), with what to do.
        if cause.is::<DockerError>() {
            return ExitCode::Failed;
        }
        if let Some(e) = cause.downcast_ref::<ArtifactsError>() {
            return e.exit_code();
        }
        // `dronectl router`: bad flags, token or config file → 2, as `dronectl-router` exits.
        if let Some(e) = cause.downcast_ref::<dronectl_router::cli::CliError>() {
            return if e.is_usage() {
                ExitCode::Usage
            } else {
                ExitCode::Failed
            };
        }
    }
    ExitCode::Failed
}
