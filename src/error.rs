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

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn each_error_type_gives_its_code_through_context_and_wrapping() {
        let plan: anyhow::Error =
            crate::rollout::plan::PlanError::UnknownStrategy("x".into()).into();
        assert_eq!(exit_code(&plan.context("deploying api")), ExitCode::Usage);
        let config: anyhow::Error = crate::k8s::KubeError::Config("no file".into()).into();
        assert_eq!(exit_code(&config), ExitCode::Usage);
        let conflict: anyhow::Error = crate::k8s::KubeError::Conflict {
            kind: "Deployment".into(),
            name: "api".into(),
            message: "owned".into(),
        }
        .into();
        assert_eq!(exit_code(&conflict), ExitCode::Failed);
        let usage = Err::<(), _>(UsageError("bad".into())).context("outer");
        assert_eq!(exit_code(&usage.unwrap_err()), ExitCode::Usage);
        assert_eq!(
            exit_code(&anyhow::anyhow!("anything else")),
            ExitCode::Failed
        );
        let locked: anyhow::Error = crate::rollout::LockHeld {
            service: "api".into(),
            holder: "pid 1".into(),
        }
        .into();
        assert_eq!(exit_code(&locked), ExitCode::Failed);
    }
}
