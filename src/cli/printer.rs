//! The one place dronectl writes to the terminal.
//!
//! Human output follows cargo: status lines on stderr (`    Creating service ...`),
//! results on stdout, colour only on a terminal (and never with `NO_COLOR`). JSON output
//! is one object per line on stdout, each with `schema` and `event` fields, ending with
//! a `summary` object whose `exit_code` is the process's exit code.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use anstyle::{AnsiColor, Style};
use dronectl::error::ExitCode;
use dronectl::events::{BuildStage, Event, Reporter, StepStatus, SCHEMA_VERSION};
use dronectl::manifest::Severity;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
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
    /// Progress lines (one per service) while a build runs on a terminal.
    bars: Mutex<Bars>,
    /// How log lines look (`dronectl logs`).
    logs: Mutex<LogLayout>,
    /// `dronectl dev`'s status line on a terminal (building / swapping / live), shown while
    /// no build progress lines are.
    dev_status: Mutex<Option<ProgressBar>>,
    /// `dronectl dev` watches: its own swapping / live lines say what a swap did, so the
    /// rollout engine's progress lines (started, scaling, traffic, completed, cleaned) are
    /// shown only with -v; failures always are.
    dev_watching: std::sync::atomic::AtomicBool,
}

/// The layout of log lines: `label | line`, the label padded to `width` and coloured per
/// name (in the order of `names`, then as they appear).
#[derive(Debug, Default)]
pub struct LogLayout {
    pub names: Vec<String>,
    pub width: usize,
    /// Show the engine's timestamp of each line.
    pub timestamps: bool,
    /// Show lines as written instead of rendering JSON records.
    pub raw: bool,
}

/// Colours of log prefixes, as compose cycles them.
const LOG_COLOURS: [AnsiColor; 6] = [
    AnsiColor::Cyan,
    AnsiColor::Yellow,
    AnsiColor::Green,
    AnsiColor::Magenta,
    AnsiColor::Blue,
    AnsiColor::BrightRed,
];

#[derive(Default)]
struct Bars {
    multi: Option<MultiProgress>,
    /// Service → its line and whether it is compiling.
    lines: HashMap<String, (ProgressBar, bool)>,
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
            bars: Mutex::new(Bars::default()),
            logs: Mutex::new(LogLayout::default()),
            dev_status: Mutex::new(None),
            dev_watching: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn is_json(&self) -> bool {
        self.format == OutputFormat::Json
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
        self.suspended(|| {
            let _guard = self.lock.lock();
            anstream::eprintln!("{STATUS}{verb:>12}{STATUS:#} {text}");
        });
    }

    /// A line of the command's result on stdout (human mode only).
    pub fn result_line(&self, text: &str) {
        if self.is_json() {
            return;
        }
        self.suspended(|| {
            let _guard = self.lock.lock();
            anstream::println!("{text}");
        });
    }

    /// Runs `write` with `dev`'s status line (if shown) cleared, and redraws it after.
    fn suspended(&self, write: impl FnOnce()) {
        let bar = self.dev_status.lock().expect("status lock").clone();
        match bar {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }

    /// Shows `text` in `dev`'s status line (terminal only).
    fn set_dev_status(&self, text: String) {
        if !self.progress {
            return;
        }
        let mut status = self.dev_status.lock().expect("status lock");
        let bar = status.get_or_insert_with(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{prefix:>12.cyan.bold} {spinner} {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix("dev");
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        bar.set_message(text);
    }

    /// Removes `dev`'s status line.
    pub fn finish_status(&self) {
        if let Some(bar) = self.dev_status.lock().expect("status lock").take() {
            bar.finish_and_clear();
        }
    }

    /// A `dronectl dev` event: a status line (failures in red with the failed version's
    /// last log lines), and the terminal's status line.
    fn dev(&self, d: &dronectl::events::DevEvent) {
        use dronectl::events::DevWhat as W;
        let services = d.services.join(", ");
        match d.what {
            W::BuildStarted => {
                // The build's own progress lines take over the terminal meanwhile.
                self.finish_status();
                self.status("Building", &services);
                return;
            }
            W::BuildFinished | W::BuildFailed => self.finish_progress(),
            _ => {}
        }
        let (verb, failure) = match d.what {
            W::Watching => ("Watching", false),
            W::Changed => ("Changed", false),
            W::BuildStarted => ("Building", false),
            W::BuildFinished => ("Built", false),
            W::BuildFailed => ("Failed", true),
            W::Swapping => ("Swapping", false),
            W::Live => ("Live", false),
            W::Unchanged => ("Unchanged", false),
            W::RolledBack => ("Rolled back", true),
            W::Missing => ("Missing", true),
            W::Restored => ("Restored", false),
            W::Stopped => ("Stopped", false),
        };
        let show = match d.what {
            W::Changed | W::Swapping | W::Unchanged => self.verbosity > 0,
            W::BuildFailed | W::RolledBack | W::Missing => true,
            _ => self.verbosity >= 0,
        };
        if show {
            let text = match d.what {
                W::Changed => format!("{services}: {}", d.message),
                W::Stopped => d
                    .message
                    .strip_prefix("stopped ")
                    .unwrap_or(&d.message)
                    .to_string(),
                _ => d.message.clone(),
            };
            if failure {
                self.suspended(|| {
                    let _guard = self.lock.lock();
                    anstream::eprintln!("{ERROR}{verb:>12}{ERROR:#} {text}");
                    for line in d.logs.iter().flatten() {
                        anstream::eprintln!("             {DIM}|{DIM:#} {line}");
                    }
                });
            } else {
                self.status(verb, &text);
            }
        }
        let version = match (&d.version, &d.revision) {
            (Some(v), Some(r)) => format!(" {v} ({r})"),
            _ => String::new(),
        };
        match d.what {
            W::Watching => {
                self.dev_watching
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                self.set_dev_status("live — watching for changes".into())
            }
            W::Swapping => self.set_dev_status(format!("swapping {services}{version}…")),
            W::Live => self.set_dev_status(format!("live: {services}{version} — watching")),
            W::Unchanged => {
                self.set_dev_status(format!("live: {services}{version} (unchanged) — watching"))
            }
            W::BuildFailed => self.set_dev_status(
                "build failed; the running versions serve — waiting for a save".into(),
            ),
            W::RolledBack => self.set_dev_status(format!(
                "{services}: new version rolled back; the running one serves — waiting for a save"
            )),
            W::Stopped => self.finish_status(),
            _ => {}
        }
    }

    /// Sets how log lines look.
    pub fn log_layout(&self, layout: LogLayout) {
        *self.logs.lock().expect("logs lock") = layout;
    }

    /// A log line: `label | LEVEL message key=value … [correlation id]` (a JSON record) or
    /// `label | line` (anything else), the label coloured per name on a terminal.
    fn log_line(&self, log: &dronectl::events::LogEvent) {
        let mut layout = self.logs.lock().expect("logs lock");
        let index = match layout.names.iter().position(|n| *n == log.service) {
            Some(index) => index,
            None => {
                layout.names.push(log.service.clone());
                layout.names.len() - 1
            }
        };
        layout.width = layout.width.max(log.label.len());
        let colour = LOG_COLOURS[index % LOG_COLOURS.len()].on_default();
        let mut text = format!(
            "{colour}{:<width$} |{colour:#} ",
            log.label,
            width = layout.width
        );
        if layout.timestamps {
            text.push_str(&format!("{DIM}{}{DIM:#} ", log.timestamp));
        }
        let rendered = dronectl::local::logs::render(log);
        match (&rendered.level, layout.raw) {
            (Some(level), false) => {
                let style = match level.as_str() {
                    "ERROR" | "FATAL" | "CRITICAL" => ERROR,
                    "WARN" | "WARNING" => WARNING,
                    "DEBUG" | "TRACE" => DIM,
                    _ => Style::new().bold(),
                };
                text.push_str(&format!("{style}{level:<5}{style:#} {}", rendered.text));
            }
            _ => text.push_str(&log.line),
        }
        drop(layout);
        self.result_line(&text);
    }

    /// Ends every progress line (left as it is, so a failure shows where it stopped).
    pub fn finish_progress(&self) {
        let mut bars = self.bars.lock().expect("bars lock");
        for (_, (bar, _)) in bars.lines.drain() {
            if !bar.is_finished() {
                bar.abandon();
            }
        }
        if bars.multi.take().is_some() {
            // The last progress line is left without a line end.
            let _guard = self.lock.lock();
            anstream::eprintln!();
        }
    }

    /// Writes text to stderr above the progress lines (or plainly without them).
    fn above_bars(&self, text: &str) {
        let bars = self.bars.lock().expect("bars lock");
        match &bars.multi {
            Some(multi) => multi.suspend(|| anstream::eprintln!("{text}")),
            None => {
                let _guard = self.lock.lock();
                anstream::eprintln!("{text}");
            }
        }
    }

    /// The progress line of `service`, created on first use (terminal only).
    fn bar(&self, service: &str) -> Option<ProgressBar> {
        if !self.progress {
            return None;
        }
        let mut bars = self.bars.lock().expect("bars lock");
        let multi = bars
            .multi
            .get_or_insert_with(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
            .clone();
        let entry = bars.lines.entry(service.to_string()).or_insert_with(|| {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{prefix:>16.green.bold} {spinner} {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(service.to_string());
            bar.enable_steady_tick(Duration::from_millis(120));
            (bar, false)
        });
        Some(entry.0.clone())
    }

    fn set_compiling(&self, service: &str, compiling: bool) {
        if let Some(entry) = self.bars.lock().expect("bars lock").lines.get_mut(service) {
            entry.1 = compiling;
        }
    }

    fn build_step(
        &self,
        service: String,
        stage: BuildStage,
        status: StepStatus,
        detail: Option<String>,
        bytes: Option<u64>,
        elapsed_ms: Option<u64>,
    ) {
        let size = bytes.map(human_bytes).unwrap_or_default();
        let time = elapsed_ms
            .map(|ms| format!("{:.1}s", ms as f64 / 1000.0))
            .unwrap_or_default();
        let join = |parts: &[&str]| {
            parts
                .iter()
                .filter(|p| !p.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join(", ")
        };
        if let Some(bar) = self.bar(&service) {
            match (stage, status) {
                (BuildStage::Compile, StepStatus::Started) => {
                    self.set_compiling(&service, true);
                    bar.set_message("compiling…");
                }
                (BuildStage::Compile, StepStatus::Finished) => {
                    self.set_compiling(&service, false);
                    bar.set_message(format!("compiled ({})", join(&[&size, &time])));
                }
                (BuildStage::Compile, StepStatus::Skipped) => {
                    bar.set_message("up to date (inputs unchanged)");
                }
                (BuildStage::Image, StepStatus::Started) => {
                    bar.set_message(format!("image: {}…", detail.unwrap_or_default()));
                }
                (BuildStage::Image, StepStatus::Finished) => {
                    bar.set_message(format!("image {}", join(&[&size, &time])));
                }
                (BuildStage::Image, StepStatus::Failed) => bar.abandon_with_message("image failed"),
                (BuildStage::Tag, StepStatus::Finished) => {
                    bar.set_message(format!("tagged {}", detail.unwrap_or_default()));
                }
                (BuildStage::Push, StepStatus::Started) => bar.set_message("pushing…"),
                (BuildStage::Push, StepStatus::Progress) => {
                    bar.set_message(format!("pushing ({})", join(&[&size, &time])))
                }
                (BuildStage::Push, StepStatus::Finished) => {
                    bar.set_message(format!("pushed ({time})"))
                }
                _ => {}
            }
            return;
        }
        if self.verbosity < 0 {
            return;
        }
        let line = match (stage, status) {
            (BuildStage::Compile, StepStatus::Started) => Some((
                "Compiling",
                format!("{service} ({})", detail.unwrap_or_default()),
            )),
            (BuildStage::Compile, StepStatus::Finished) => {
                Some(("Compiled", format!("{service} ({})", join(&[&size, &time]))))
            }
            (BuildStage::Compile, StepStatus::Skipped) => {
                Some(("Up to date", format!("{service} (inputs unchanged)")))
            }
            (BuildStage::Image, StepStatus::Started) => Some((
                "Building",
                format!("{service} image: {}", detail.unwrap_or_default()),
            )),
            (BuildStage::Image, StepStatus::Finished) => Some((
                "Built",
                format!(
                    "{service} image {} ({})",
                    detail.unwrap_or_default(),
                    join(&[&size, &time])
                ),
            )),
            (BuildStage::Tag, StepStatus::Finished) if self.verbosity > 0 => {
                Some(("Tagged", detail.unwrap_or_default()))
            }
            (BuildStage::Push, StepStatus::Started) => Some((
                "Pushing",
                format!("{service} to {}", detail.unwrap_or_default()),
            )),
            (BuildStage::Push, StepStatus::Finished) => Some((
                "Pushed",
                format!("{} ({})", detail.unwrap_or_default(), join(&[&time])),
            )),
            _ => None,
        };
        if let Some((verb, text)) = line {
            self.status(verb, &text);
        }
    }

    /// Reports a failure. Always shown, even with `-q`.
    pub fn error(&self, err: &anyhow::Error, code: ExitCode) {
        self.finish_progress();
        // A Kubernetes API error reads as its message, reason, code and object, not as
        // kube's dump of the whole `Status` struct.
        let text = |c: &(dyn std::error::Error + 'static)| {
            dronectl::k8s::api_error_text(c).unwrap_or_else(|| c.to_string())
        };
        let message = text(err.as_ref());
        if self.is_json() {
            let causes: Vec<String> = err.chain().skip(1).map(text).collect();
            self.json_line(&serde_json::json!({
                "event": "error",
                "message": message,
                "causes": causes,
                "exit_code": code.code(),
            }));
        } else {
            let _guard = self.lock.lock();
            anstream::eprintln!("{ERROR}error{ERROR:#}: {message}");
            for cause in err.chain().skip(1) {
                anstream::eprintln!("  {DIM}caused by:{DIM:#} {}", text(cause));
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

impl Printer {
    /// A rollout event: a status line with the step, the traffic split and readiness; the
    /// failing container's last log lines under a failure.
    fn rollout(&self, r: &dronectl::events::RolloutEvent) {
        use dronectl::events::RolloutWhat as W;
        let failure = matches!(r.what, W::Failed | W::Aborted);
        if self.verbosity < 0 && !failure {
            return;
        }
        if self.verbosity < 1
            && !failure
            && self.dev_watching.load(std::sync::atomic::Ordering::Relaxed)
        {
            return;
        }
        let verb = match r.what {
            W::Started => "Rollout",
            W::Scaling => "Scaling",
            W::Traffic => "Traffic",
            W::Step => "Step",
            W::Analysis => "Analysis",
            W::Paused => "Paused",
            W::Resumed => "Resumed",
            W::Completed => "Completed",
            W::Aborted => "Aborted",
            W::Failed => "Failed",
            W::Cleaned => "Cleaned",
        };
        let mut text = r.service.to_string();
        if r.number > 0 {
            text.push_str(&format!(" #{}", r.number));
        }
        if let Some(step) = &r.step {
            text.push_str(&format!(" [{step}]"));
        }
        text.push_str(&format!(": {}", r.message));
        if let Some((ready, desired)) = r.ready {
            text.push_str(&format!(" ({ready}/{desired} ready)"));
        }
        if matches!(r.what, W::Traffic | W::Completed | W::Aborted | W::Failed) {
            if let Some(weights) = &r.weights {
                let split: Vec<String> = weights.iter().map(|(v, w)| format!("{v} {w}%")).collect();
                text.push_str(&format!(" — traffic: {}", split.join(", ")));
            }
        }
        if matches!(r.what, W::Failed | W::Aborted) {
            self.suspended(|| {
                let _guard = self.lock.lock();
                anstream::eprintln!("{ERROR}{verb:>12}{ERROR:#} {text}");
                for line in r.logs.iter().flatten() {
                    anstream::eprintln!("             {DIM}|{DIM:#} {line}");
                }
            });
        } else {
            self.status(verb, &text);
        }
    }
}

impl dronectl::deploy::DeployReporter for Printer {
    fn status_line(&self, verb: &str, text: &str) {
        self.status(verb, text);
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
            Event::Rollout(rollout) => self.rollout(&rollout),
            Event::Log(log) => self.log_line(&log),
            Event::Dev(dev) => self.dev(&dev),
            Event::BuildStep {
                service,
                stage,
                status,
                detail,
                bytes,
                elapsed_ms,
            } => self.build_step(service, stage, status, detail, bytes, elapsed_ms),
            Event::CompileProgress {
                crates_done,
                current,
            } => {
                let bars = self.bars.lock().expect("bars lock");
                for (bar, compiling) in bars.lines.values() {
                    if *compiling {
                        bar.set_message(format!(
                            "compiling ({crates_done} crates built, {current})"
                        ));
                    }
                }
            }
            Event::CompilerMessage {
                service,
                package,
                level,
                rendered,
            } => {
                if level == "error" || self.verbosity >= 0 {
                    let style = if level == "error" { ERROR } else { WARNING };
                    let whose = match service {
                        Some(s) => format!("service `{s}`"),
                        None => format!("crate `{package}`"),
                    };
                    self.above_bars(&format!(
                        "{style}{level}{style:#} in {whose}:\n{}",
                        rendered.trim_end()
                    ));
                }
            }
            Event::DockerOutput { service, line } => {
                if self.verbosity > 0 {
                    self.above_bars(&format!("{DIM}{service} |{DIM:#} {line}"));
                }
            }
            Event::ImageReady {
                service,
                image,
                tag,
                size,
                digest,
                rebuilt,
                ..
            } => {
                let what = if rebuilt { "built" } else { "up to date" };
                let text = match digest {
                    Some(d) => format!("{image}:{tag} {what}, pushed {d}"),
                    None => format!("{image}:{tag} {what} ({})", human_bytes(size)),
                };
                let bar = self
                    .bars
                    .lock()
                    .expect("bars lock")
                    .lines
                    .get(&service)
                    .map(|b| b.0.clone());
                if let Some(bar) = bar {
                    bar.finish_with_message(text);
                }
            }
            Event::ImageRemoved {
                id,
                tags,
                size,
                dry_run,
            } => {
                let verb = if dry_run { "would remove" } else { "removed" };
                let tags = if tags.is_empty() {
                    "<untagged>".to_string()
                } else {
                    tags.join(", ")
                };
                self.result_line(&format!(
                    "{verb:>14} {} {tags} ({})",
                    dronectl::build::short_id(&id),
                    human_bytes(size)
                ));
            }
        }
    }
}

/// `5.2 MB`, `812 kB`, `90 B` (decimal units, as Docker shows sizes).
pub fn human_bytes(bytes: u64) -> String {
    match bytes {
        b if b >= 1_000_000_000 => format!("{:.1} GB", b as f64 / 1e9),
        b if b >= 1_000_000 => format!("{:.1} MB", b as f64 / 1e6),
        b if b >= 1_000 => format!("{:.0} kB", b as f64 / 1e3),
        b => format!("{b} B"),
    }
}
