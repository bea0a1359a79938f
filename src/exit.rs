//! dronectl's exit codes, and the trait by which every error type says its own.
//!
//! A leaf module: it imports nothing from the crate, so any module can name an exit code
//! (or return a [`UsageError`]) without depending on [`crate::error`], which maps the
//! errors of the whole crate onto these codes.

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

/// An error that knows the exit code it ends dronectl with.
pub trait ExitStatus {
    fn exit_code(&self) -> ExitCode;
}

/// A usage error found by dronectl itself (not by clap): exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

impl ExitStatus for UsageError {
    fn exit_code(&self) -> ExitCode {
        ExitCode::Usage
    }
}
