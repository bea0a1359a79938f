//! The one place dronectl writes to the terminal.
//!
//! Human output follows cargo: status lines on stderr (`    Creating service ...`),
//! results on stdout, colour only on a terminal (and never with `NO_COLOR`). JSON output
//! is one object per line on stdout, each with `schema` and `event` fields, ending with
//! a `summary` object whose `exit_code` is the process's exit code.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{IsTerminal, Write};
use std::sync::Mutex;

use anstyle::{AnsiColor, Style};
use dronectl::error::ExitCode;
use dronectl::events::{Event, Reporter, SCHEMA_VERSION};
use dronectl::manifest::Severity;
use serde::Serialize;

/// `-o/--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Text for people; progress animation on a terminal.
    Human,
    /// JSON Lines events on stdout (schema in docs/ci.md).
    Json,
}

pub struct Printer {
    format: OutputFormat,
    /// -1 quiet, 0 normal, 1+ verbose.
    verbosity: i8,
    /// Progress animation allowed (a terminal, not CI, no --no-progress).
    progress: bool,
    lock: Mutex<()>,
}

const STATUS: Style = AnsiColor::Green.on_default().bold();
const ERROR: Style = AnsiColor::Red.on_default().bold();
const WARNING: Style = AnsiColor::Yellow.on_default().bold();
const DIM: Style = Style::new().dimmed();

impl Printer {
    pub fn new(format: OutputFormat, verbose: u8, quiet: bool, no_progress: bool) -> Printer {
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
        let progress =
            !no_progress && !ci && std::io::stderr().is_terminal() && format == OutputFormat::Human;
        let verbosity = if quiet { -1 } else { verbose.min(3) as i8 };
        Printer {
            format,
            verbosity,
            progress,
            lock: Mutex::new(()),
        }
    }

    pub fn is_json(&self) -> bool {
        self.format == OutputFormat::Json
    }

    #[allow(dead_code)] // used by the long-running commands (build, deploy) as they land
    pub fn progress_enabled(&self) -> bool {
        self.progress
    }

    fn json_line<T: Serialize>(&self, value: &T) {
        // `schema` first, then `event`, then the event's own fields.
        let mut object = serde_json::Map::new();
        object.insert("schema".into(), SCHEMA_VERSION.into());
        if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(value) {
            object.extend(fields);
        }
        let object = serde_json::Value::Object(object);
        let _guard = self.lock.lock();
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{object}");
        let _ = out.flush();
    }

    /// A cargo-style status line on stderr: a right-aligned coloured verb, then text.
    pub fn status(&self, verb: &str, text: &str) {
        if self.verbosity < 0 || self.is_json() {
            return;
        }
        let _guard = self.lock.lock();
        anstream::eprintln!("{STATUS}{verb:>12}{STATUS:#} {text}");
    }

    /// A line of the command's result on stdout (human mode only).
    pub fn result_line(&self, text: &str) {
        if self.is_json() {
            return;
        }
        let _guard = self.lock.lock();
        anstream::println!("{text}");
    }

    /// Reports a failure. Always shown, even with `-q`.
    pub fn error(&self, err: &anyhow::Error, code: ExitCode) {
        if self.is_json() {
            let causes: Vec<String> = err.chain().skip(1).map(|c| c.to_string()).collect();
            self.json_line(&serde_json::json!({
                "event": "error",
                "message": err.to_string(),
                "causes": causes,
                "exit_code": code.code(),
            }));
        } else {
            let _guard = self.lock.lock();
            anstream::eprintln!("{ERROR}error{ERROR:#}: {err}");
            for cause in err.chain().skip(1) {
                anstream::eprintln!("  {DIM}caused by:{DIM:#} {cause}");
            }
        }
    }

    /// The final JSON object of a command (JSON mode only).
    pub fn summary(&self, command: &str, code: ExitCode, result: serde_json::Value) {
        if !self.is_json() {
            return;
        }
        let status = match code {
            ExitCode::Success => "ok",
            ExitCode::Failed => "failed",
            ExitCode::Usage => "usage_error",
            ExitCode::Aborted => "aborted",
            ExitCode::TimedOut => "timed_out",
            ExitCode::Paused => "paused",
        };
        self.json_line(&serde_json::json!({
            "event": "summary",
            "command": command,
            "status": status,
            "exit_code": code.code(),
            "result": result,
        }));
    }
}

impl Reporter for Printer {
    fn event(&self, event: Event) {
        if self.is_json() {
            self.json_line(&event);
            return;
        }
        match event {
            Event::Started { action, subject } => self.status(&action, &subject),
            Event::File { path, dry_run } => {
                if dry_run || self.verbosity >= 0 {
                    let verb = if dry_run { "would create" } else { "create" };
                    self.result_line(&format!("{verb:>14} {}", path.display()));
                }
            }
            Event::Modified {
                path,
                dry_run,
                what,
            } => {
                if dry_run || self.verbosity >= 0 {
                    let verb = if dry_run { "would modify" } else { "modify" };
                    self.result_line(&format!("{verb:>14} {} ({what})", path.display()));
                }
            }
            Event::Diagnostic { file, diagnostic } => {
                let (style, word) = match diagnostic.severity {
                    Severity::Error => (ERROR, "error"),
                    Severity::Warning => (WARNING, "warning"),
                };
                let place = match diagnostic.position {
                    Some(p) => format!("{}:{}:{}", file.display(), p.line, p.column),
                    None => file.display().to_string(),
                };
                let _guard = self.lock.lock();
                anstream::eprintln!(
                    "{place}: {style}{word}{style:#}: {}: {}",
                    diagnostic.field,
                    diagnostic.message
                );
            }
            Event::Note { message, verbose } => {
                if self.verbosity >= i8::from(verbose) {
                    let _guard = self.lock.lock();
                    anstream::eprintln!("{DIM}note:{DIM:#} {message}");
                }
            }
            Event::Hint { message } => {
                if self.verbosity >= 0 {
                    let _guard = self.lock.lock();
                    anstream::eprintln!("{DIM}hint:{DIM:#} {message}");
                }
            }
        }
    }
}
