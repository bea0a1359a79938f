//! How dronectl reads YAML: the parser's options (limits, no unknown tags, unique keys) and
//! its errors worded for the person who wrote the manifest, not for the parser's developer.

use std::borrow::Cow;
use std::path::Path;

use serde_saphyr::budget::BudgetBreach;
use serde_saphyr::granit_parser::ErrorKind;
use serde_saphyr::{
    Budget, DefaultMessageFormatter, Error, ExternalMessageSource, MessageFormatter, Options,
};

use super::Position;

/// How deeply lists and maps may nest. The deepest part of a valid manifest
/// (`strategies.<name>.steps[i].pause.duration`) is 6 levels; reading is recursive, and
/// serde-saphyr's default (64) can exhaust a 2 MiB thread stack in a debug build.
const MAX_DEPTH: usize = 24;

/// The limits every manifest is read with: serde-saphyr's defaults (250,000 nodes,
/// 1,000,000 events, 64 MiB of values, 50,000 aliases, ...) except for the nesting depth.
pub(super) fn limits() -> Budget {
    let mut budget = Budget::default();
    budget.max_depth = MAX_DEPTH;
    budget
}

/// The options every manifest is read with: [`limits`], duplicate keys and tags dronectl
/// does not know refused.
pub(super) fn options() -> Options {
    serde_saphyr::options! {
        budget: Some(limits()),
        reject_unsupported_tags: true,
    }
}

/// The position an error points at and its message, with the snippet the parser renders
/// below the first line (which we print after `file:line:column:` ourselves).
pub(super) fn describe(path: &Path, err: &Error) -> (Option<Position>, String) {
    let position = err.location().and_then(Position::from_location);
    let name = path.display().to_string();
    let rendered = err.render_with_options(serde_saphyr::render_options! {
        formatter: &Wording,
        source_name: Some(name.as_str()),
    });
    (position, strip_location(&rendered))
}

/// serde-saphyr's rendering without the location prefix of its first line:
/// "error: line 3 column 5: unknown field ..." → "unknown field ...".
fn strip_location(rendered: &str) -> String {
    let mut lines = rendered.lines();
    let first = lines.next().unwrap_or_default();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let first = match first.split_once(": ") {
        Some((head, tail)) if head.starts_with("line ") => tail,
        _ => first,
    };
    // "... at line 1, column 1" when there is no snippet: the position is printed first.
    let first = match first.rsplit_once(" at line ") {
        Some((message, at))
            if at.split_once(", column ").is_some_and(|(l, c)| {
                [l, c]
                    .iter()
                    .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            }) =>
        {
            message
        }
        _ => first,
    };
    let rest: Vec<&str> = lines.collect();
    if rest.is_empty() {
        first.to_string()
    } else {
        format!("{first}\n{}", rest.join("\n"))
    }
}

/// serde-saphyr's developer messages, except where they name its internals.
struct Wording;

impl MessageFormatter for Wording {
    fn format_message<'a>(&self, err: &'a Error) -> Cow<'a, str> {
        match err {
            Error::Budget { breach, .. } => Cow::Owned(budget_message(breach, &limits())),
            Error::DuplicateMappingKey { key: Some(key), .. } => {
                Cow::Owned(format!("duplicate key `{key}`"))
            }
            Error::DuplicateMappingKey { key: None, .. } => Cow::Borrowed("duplicate key"),
            Error::Eof { .. } => {
                Cow::Borrowed("the manifest has no content: it needs at least `app: <name>`")
            }
            Error::MultipleDocuments { .. } => Cow::Borrowed(
                "dronectl.yaml holds one YAML document; remove the `---` that starts a second one",
            ),
            Error::NullIntoString { .. } | Error::InvalidCharNull { .. } => {
                Cow::Borrowed("a value is required here, not null")
            }
            Error::TaggedScalarCannotDeserializeIntoString { .. } | Error::BinaryNotUtf8 { .. } => {
                Cow::Borrowed("a text value is required here, without a tag")
            }
            Error::UnsupportedTag { tag, .. } => Cow::Owned(format!(
                "unknown tag `{tag}`: dronectl.yaml takes plain YAML values, without custom tags"
            )),
            // The scanner's own nesting limit, met when a flow collection nests so deep that
            // the scanner reaches it before the parser reports the depth.
            Error::ExternalMessage { source, .. } if matches!(&**source, ExternalMessageSource::Parser(e) if matches!(e.kind(), ErrorKind::RecursionLimitExceeded)) => {
                Cow::Owned(depth_message())
            }
            _ => DefaultMessageFormatter.format_message(err),
        }
    }
}

/// What limit a manifest went over, in the manifest's terms.
pub(super) fn budget_message(breach: &BudgetBreach, limits: &Budget) -> String {
    let too = |what: &str, limit: usize| {
        format!(
            "the manifest is too large: more than {} {what}",
            thousands(limit)
        )
    };
    match breach {
        BudgetBreach::Nodes { .. } => too("nodes (values, lists and maps)", limits.max_nodes),
        BudgetBreach::Events { .. } => too("YAML events", limits.max_events),
        BudgetBreach::Depth { .. } => depth_message(),
        BudgetBreach::Documents { .. } => too("YAML documents", limits.max_documents),
        BudgetBreach::ScalarBytes { .. } => {
            too("bytes of values", limits.max_total_scalar_bytes)
        }
        BudgetBreach::InputBytes { .. } => too(
            "bytes",
            limits.max_reader_input_bytes.unwrap_or(usize::MAX),
        ),
        BudgetBreach::Aliases { .. } => too("aliases (`*name`)", limits.max_aliases),
        BudgetBreach::Anchors { .. } => too("anchors (`&name`)", limits.max_anchors),
        BudgetBreach::MergeKeys { .. } => too("merge keys (`<<`)", limits.max_merge_keys),
        BudgetBreach::AliasAnchorRatio { aliases, anchors } => format!(
            "the manifest uses its anchors too often ({} aliases for {} anchors): aliases may repeat an anchor at most {} times on average",
            thousands(*aliases),
            thousands(*anchors),
            limits.alias_anchor_ratio_multiplier
        ),
        BudgetBreach::RecordedAnchorEvents { .. } | BudgetBreach::RecordedAnchorBytes { .. } => {
            "the manifest's anchors (`&name`) hold too much data".to_string()
        }
        _ => "the manifest is too large or too deeply nested to read".to_string(),
    }
}

fn depth_message() -> String {
    format!("the manifest is nested too deeply: more than {MAX_DEPTH} levels of lists and maps")
}

/// 250000 → "250,000".
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first_line(text: &str) -> String {
        let err = crate::manifest::parse(Path::new("dronectl.yaml"), text).unwrap_err();
        err.to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    }

    #[test]
    fn parser_hints_meant_for_developers_are_reworded() {
        assert_eq!(
            first_line(""),
            "dronectl.yaml:1:1: the manifest has no content: it needs at least `app: <name>`"
        );
        assert_eq!(
            first_line("app: a\n---\napp: b\n"),
            "dronectl.yaml:3:1: dronectl.yaml holds one YAML document; remove the `---` that starts a second one"
        );
        assert_eq!(
            first_line("app: ~\n"),
            "dronectl.yaml:1:6: a value is required here, not null"
        );
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(250_000), "250,000");
        assert_eq!(thousands(1_000_000), "1,000,000");
    }

    #[test]
    fn every_budget_breach_is_worded_without_internals() {
        let limits = limits();
        for breach in [
            BudgetBreach::Nodes { nodes: 250_001 },
            BudgetBreach::Events { events: 1 },
            BudgetBreach::Depth { depth: 65 },
            BudgetBreach::Aliases { aliases: 1 },
            BudgetBreach::Anchors { anchors: 1 },
            BudgetBreach::ScalarBytes {
                total_scalar_bytes: 1,
            },
            BudgetBreach::AliasAnchorRatio {
                aliases: 5000,
                anchors: 2,
            },
            BudgetBreach::SequenceUnbalanced,
        ] {
            let message = budget_message(&breach, &limits);
            assert!(
                !message.contains('{') && !message.contains("budget"),
                "{message}"
            );
        }
        assert_eq!(
            budget_message(&BudgetBreach::Nodes { nodes: 250_001 }, &limits),
            "the manifest is too large: more than 250,000 nodes (values, lists and maps)"
        );
    }
}
