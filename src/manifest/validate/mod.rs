//! Checks beyond what the types enforce: names, paths, and cross-references between
//! entries (routes owned twice, unknown dependencies, undefined strategies and analyses).

//!
//! One file per part of the manifest: `services.rs` (services and infrastructure entries,
//! health, autoscaling, dependency cycles), `secrets.rs`, `environments.rs` (targets,
//! gateways, ingress and TLS), `strategies.rs` (strategies, steps and analyses) and
//! `paths.rs` (service paths, routes, host names). This module holds the findings
//! ([`Diagnostic`]) and runs the checks ([`validate`]).

use std::fmt;

use serde_saphyr::Spanned;

use super::{Manifest, Position};
use crate::names;

mod environments;
mod paths;
mod secrets;
mod services;
mod strategies;

pub use paths::{check_relative_path, normalize_route};

/// How serious a finding is. Errors make `validate` exit 2 and stop every other command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One finding, with the place in the manifest it is about.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Where in the document, as a dotted path (`services.api.depends_on`).
    pub field: String,
    pub position: Option<Position>,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        match &self.position {
            Some(p) => write!(
                f,
                "{}:{}: {severity}: {}: {}",
                p.line, p.column, self.field, self.message
            ),
            None => write!(f, "{severity}: {}: {}", self.field, self.message),
        }
    }
}

struct Findings(Vec<Diagnostic>);

impl Findings {
    fn push<T>(
        &mut self,
        severity: Severity,
        field: String,
        at: Option<&Spanned<T>>,
        message: String,
    ) {
        let position = at.and_then(|s| Position::from_location(s.referenced));
        // Names and values come from the manifest: shown escaped, whatever they contain.
        self.0.push(Diagnostic {
            severity,
            field: names::shown(&field).into_owned(),
            position,
            message: names::shown(&message).into_owned(),
        });
    }
    fn error<T>(&mut self, field: String, at: Option<&Spanned<T>>, message: impl Into<String>) {
        self.push(Severity::Error, field, at, message.into());
    }
    fn warning<T>(&mut self, field: String, at: Option<&Spanned<T>>, message: impl Into<String>) {
        self.push(Severity::Warning, field, at, message.into());
    }
    /// Refuses control characters (tab and line breaks included), the characters
    /// [`names::refused_char`] lists and, unless `spaces` is true, whitespace in a value that
    /// is one token or one line: an image, a URL, a probe path.
    fn single_line<T>(
        &mut self,
        field: String,
        at: Option<&Spanned<T>>,
        value: &str,
        spaces: bool,
    ) {
        let bad = names::find_not_single_line(value)
            .or_else(|| value.chars().find(|c| !spaces && c.is_whitespace()));
        if let Some(c) = bad {
            self.error(
                field,
                at,
                format!("`{value}` contains {}", names::describe_char(c)),
            );
        }
    }
}

/// Checks a parsed manifest. Returns every finding, errors first, in document order.
pub fn validate(manifest: &Manifest) -> Vec<Diagnostic> {
    let mut diagnostics = check_entries(manifest);
    diagnostics.extend(super::overrides::check(manifest));
    let mut out = Findings(Vec::new());
    environments::check_public_entry(manifest, &mut out);
    diagnostics.extend(out.0);
    diagnostics.sort_by_key(|d| {
        (
            d.severity == Severity::Warning,
            d.position.map(|p| (p.line, p.column)),
        )
    });
    diagnostics
}

/// The checks of one manifest's entries as written (overrides not applied), unsorted.
pub(super) fn check_entries(manifest: &Manifest) -> Vec<Diagnostic> {
    let mut out = Findings(Vec::new());
    if let Err(e) = names::validate_label(&manifest.app.value) {
        out.error("app".into(), Some(&manifest.app), e.to_string());
    }
    services::check_services(manifest, &mut out);
    services::check_infrastructure(manifest, &mut out);
    environments::check_environments(manifest, &mut out);
    strategies::check_strategies(manifest, &mut out);
    out.0
}

/// ", did you mean `x`?" for the closest known name, when one is close.
pub(super) fn suggest<'a>(name: &str, known: impl Iterator<Item = &'a String>) -> String {
    known
        .map(|k| (edit_distance(name, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min()
        .map(|(_, k)| format!("; did you mean `{k}`?"))
        .unwrap_or_default()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + usize::from(ca != *cb))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}
