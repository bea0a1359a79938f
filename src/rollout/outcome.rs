//! How a rollout command ended, and the exit code that follows from it: the one place
//! where outcomes become exit codes (errors become theirs in [`crate::error`]).

use std::fmt;

use serde::Serialize;

use super::state::Phase;
use crate::exit::ExitCode;

/// How a drive of the engine ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriveOutcome {
    Completed,
    Failed,
    Aborted,
    TimedOut,
    Paused,
}

impl DriveOutcome {
    /// The outcome of a rollout in the terminal `phase`, `None` while it runs.
    pub fn of(phase: &Phase) -> Option<DriveOutcome> {
        match phase {
            Phase::Completed => Some(DriveOutcome::Completed),
            Phase::Aborted { .. } => Some(DriveOutcome::Aborted),
            Phase::Failed { .. } => Some(DriveOutcome::Failed),
            _ => None,
        }
    }

    pub fn exit_code(self) -> ExitCode {
        Outcome::from(self).exit_code()
    }
}

/// What a rollout command ended with, as written in its JSON result and messages:
/// `completed`, `failed`, `aborted`, `timed_out`, `paused`, `unchanged`, `requested`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The rollout completed: the candidate is the stable revision.
    Completed,
    /// The rollout failed (a deadline, a failed analysis) and was rolled back.
    Failed,
    /// The rollout was aborted and rolled back.
    Aborted,
    /// The wait ended before the rollout did; the rollout is kept.
    TimedOut,
    /// The rollout is paused, waiting for promotion.
    Paused,
    /// The candidate already was the stable revision: nothing was done.
    Unchanged,
    /// A request was posted for the process that drives the rollout.
    Requested,
}

impl Outcome {
    /// The word in JSON output and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Failed => "failed",
            Outcome::Aborted => "aborted",
            Outcome::TimedOut => "timed_out",
            Outcome::Paused => "paused",
            Outcome::Unchanged => "unchanged",
            Outcome::Requested => "requested",
        }
    }

    /// The exit code of a command that ended so: 0, 1, 3, 4 or 5.
    pub fn exit_code(self) -> ExitCode {
        match self {
            Outcome::Completed | Outcome::Unchanged | Outcome::Requested => ExitCode::Success,
            Outcome::Failed => ExitCode::Failed,
            Outcome::Aborted => ExitCode::Aborted,
            Outcome::TimedOut => ExitCode::TimedOut,
            Outcome::Paused => ExitCode::Paused,
        }
    }

    /// The status verb printed for an outcome that has no rollout event of its own
    /// (`Unchanged`, `Requested`, `Timed out`); `None` when the events already told it.
    pub fn status_verb(self) -> Option<&'static str> {
        match self {
            Outcome::Unchanged => Some("Unchanged"),
            Outcome::Requested => Some("Requested"),
            Outcome::TimedOut => Some("Timed out"),
            _ => None,
        }
    }

    /// Whether the rollout has ended (completed, aborted or failed).
    pub fn is_end(self) -> bool {
        matches!(
            self,
            Outcome::Completed | Outcome::Aborted | Outcome::Failed
        )
    }
}

impl From<DriveOutcome> for Outcome {
    fn from(drive: DriveOutcome) -> Outcome {
        match drive {
            DriveOutcome::Completed => Outcome::Completed,
            DriveOutcome::Failed => Outcome::Failed,
            DriveOutcome::Aborted => Outcome::Aborted,
            DriveOutcome::TimedOut => Outcome::TimedOut,
            DriveOutcome::Paused => Outcome::Paused,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Compares with the word (`report.outcome == "completed"`), for tests and scripts.
impl PartialEq<&str> for Outcome {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<str> for Outcome {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_serialise_as_their_words() {
        for o in [
            Outcome::Completed,
            Outcome::Failed,
            Outcome::Aborted,
            Outcome::TimedOut,
            Outcome::Paused,
            Outcome::Unchanged,
            Outcome::Requested,
        ] {
            assert_eq!(
                serde_json::to_value(o).unwrap(),
                serde_json::Value::String(o.as_str().into())
            );
            assert_eq!(o.to_string(), o.as_str());
        }
        assert_eq!(Outcome::TimedOut.as_str(), "timed_out");
    }

    #[test]
    fn exit_codes_follow_the_outcome() {
        assert_eq!(Outcome::Completed.exit_code(), ExitCode::Success);
        assert_eq!(Outcome::Unchanged.exit_code(), ExitCode::Success);
        assert_eq!(Outcome::Requested.exit_code(), ExitCode::Success);
        assert_eq!(Outcome::Failed.exit_code(), ExitCode::Failed);
        assert_eq!(Outcome::Aborted.exit_code(), ExitCode::Aborted);
        assert_eq!(Outcome::TimedOut.exit_code(), ExitCode::TimedOut);
        assert_eq!(Outcome::Paused.exit_code(), ExitCode::Paused);
        assert_eq!(DriveOutcome::Paused.exit_code().code(), 5);
    }
}
