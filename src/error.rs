//! The mapping of every error dronectl can return onto its exit code.
//!
//! This is the one place where errors become exit codes; the binary calls [`exit_code`]
//! on whatever error reaches it. Each error type says its own code through
//! [`ExitStatus`]; this module only lists the types to look for in an error's chain.
//! Nothing in the library imports this module: the codes themselves and [`UsageError`]
//! live in the leaf module [`crate::exit`] (re-exported here).

use std::error::Error;

pub use crate::exit::{ExitCode, ExitStatus, UsageError};

/// The exit code of `cause` when it is one of dronectl's error types.
fn coded(cause: &(dyn Error + 'static)) -> Option<ExitCode> {
    macro_rules! first_of {
        ($($t:ty),* $(,)?) => {
            $(
                if let Some(e) = cause.downcast_ref::<$t>() {
                    return Some(ExitStatus::exit_code(e));
                }
            )*
        };
    }
    first_of!(
        UsageError,
        crate::manifest::ManifestError,
        crate::manifest::EnvironmentError,
        crate::secrets::MissingSecrets,
        crate::scaffold::ScaffoldError,
        crate::build::BuildError,
        crate::docker::DockerError,
        crate::build::ArtifactsError,
        crate::rollout::plan::PlanError,
        crate::rollout::EngineError,
        crate::rollout::state::LockHeld,
        crate::rollout::state::DamagedState,
        crate::rollout::state::UnsafeStateDir,
        crate::rollout::state::StateSymlink,
        crate::k8s::KubeError,
        dronectl_router::cli::CliError,
    );
    None
}

/// `dronectl router`: bad flags, token or config file → 2, as `dronectl-router` exits.
impl ExitStatus for dronectl_router::cli::CliError {
    fn exit_code(&self) -> ExitCode {
        if self.is_usage() {
            ExitCode::Usage
        } else {
            ExitCode::Failed
        }
    }
}

/// The exit code for an error returned by any dronectl operation: that of the outermost
/// cause in its chain that is one of dronectl's error types, else 1.
pub fn exit_code(err: &anyhow::Error) -> ExitCode {
    err.chain().find_map(coded).unwrap_or(ExitCode::Failed)
}
