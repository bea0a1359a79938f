//! The event stream: everything dronectl has to tell the user, as data.
//!
//! Core logic emits [`Event`]s to a [`Reporter`]; the printer in the binary renders them as
//! human text (with progress on a terminal) or as JSON Lines (`--output json`). The JSON
//! form is a versioned schema: every line carries `"schema": SCHEMA_VERSION` and an
//! `"event"` tag; fields are only ever added within one version.

use std::path::PathBuf;

use serde::Serialize;

use crate::manifest::Diagnostic;

/// Version of the JSON Lines event schema.
pub const SCHEMA_VERSION: u32 = 1;

/// Something that happened, or a result.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A step of the current command began (`Creating service ratings`).
    Started { action: String, subject: String },
    /// A file or directory was created, or would be with `--dry-run`.
    File { path: PathBuf, dry_run: bool },
    /// An existing file was changed, or would be with `--dry-run`.
    Modified {
        path: PathBuf,
        dry_run: bool,
        what: String,
    },
    /// A manifest finding.
    Diagnostic {
        file: PathBuf,
        diagnostic: Diagnostic,
    },
    /// Free-form information for humans (`-v` shows more of these).
    Note { message: String, verbose: bool },
    /// A suggestion of what to run next.
    Hint { message: String },
}

/// Receives the events core logic emits.
pub trait Reporter: Sync {
    fn event(&self, event: Event);
}

/// A reporter that keeps events in memory (tests, and callers that render later).
#[derive(Default)]
pub struct Collect(pub std::sync::Mutex<Vec<Event>>);

impl Reporter for Collect {
    fn event(&self, event: Event) {
        self.0.lock().expect("events lock").push(event);
    }
}

impl Collect {
    pub fn take(&self) -> Vec<Event> {
        std::mem::take(&mut self.0.lock().expect("events lock"))
    }
}
