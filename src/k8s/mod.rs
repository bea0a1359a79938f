//! The Kubernetes target: environments with `target: kubernetes`.
//!
//! * [`render`]: the app's objects as typed k8s-openapi structs (what `render` prints and
//!   `deploy` applies).
//! * [`platform`]: the rollout engine's platform (Deployments, Services, HTTPRoutes).
//! * [`store`]: rollout state in ConfigMaps and a Lease, so any machine can steer a rollout.
//! * [`connect`]: kubeconfig resolution as kubectl does it, the [`KubeTarget`], the
//!   namespace.
//! * [`apply`]: deploying the whole app in dependency order, the API check.
//! * [`diff`]: what applying would change.
//! * [`describe`]: API errors as a person reads them.

mod apply;
mod cache;
mod connect;
mod describe;
mod diff;
pub mod hpa;
pub mod platform;
pub mod render;
pub mod secret;
pub mod store;
pub mod wait;
pub mod weights;

pub use apply::{
    dependency_levels, deploy, deploy_service, missing_apis, DeployOptions, DeployOutcome, DryRun,
    Images, MissingApi, Skipped,
};
pub use connect::{client_for, ensure_namespace, user_agent, ConnectOptions, KubeTarget};
pub use describe::{api_error_text, describe_chain, describe_error, describe_status};
pub use diff::{diff, ObjectDiff};
pub use platform::KubePlatform;
pub use render::{KubeEnv, Object, RollingParams};
pub use store::KubeStore;

/// Errors of the Kubernetes target a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("conflict applying {kind} {name}: {message}\n  another field manager owns these fields; rerun with --force-conflicts to take them over")]
    Conflict {
        kind: String,
        name: String,
        message: String,
    },
    #[error("cannot load the Kubernetes configuration: {0}")]
    Config(String),
}

impl crate::exit::ExitStatus for KubeError {
    /// A kubeconfig that cannot be loaded is a configuration error (2); a conflict a
    /// failure (1).
    fn exit_code(&self) -> crate::exit::ExitCode {
        match self {
            KubeError::Config(_) => crate::exit::ExitCode::Usage,
            KubeError::Conflict { .. } => crate::exit::ExitCode::Failed,
        }
    }
}
