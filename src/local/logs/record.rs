//! One log line as an event: a JSON log record parsed (level, message, correlation id,
//! the other fields) and rendered as a readable line.

use serde_json::{Map, Value};

use super::{LogLine, LogSource};
use crate::events::LogEvent;

/// The event for one line: JSON object lines are parsed.
pub(super) fn log_event(source: &LogSource, line: &LogLine) -> LogEvent {
    let fields = parse_record(&line.text);
    let record = fields.as_ref().map(Record::of);
    LogEvent {
        service: source.service.clone(),
        kind: source.kind.clone(),
        source: source.container.clone(),
        label: source.label.clone(),
        revision: source.revision.clone(),
        replica: source.replica,
        timestamp: line
            .timestamp
            .strftime("%Y-%m-%dT%H:%M:%S%.9fZ")
            .to_string(),
        stream: if line.stderr { "stderr" } else { "stdout" }.to_string(),
        line: line.text.clone(),
        level: record.as_ref().and_then(|r| r.level.clone()),
        message: record.as_ref().and_then(|r| r.message.clone()),
        correlation_id: record.as_ref().and_then(|r| r.correlation_id.clone()),
        fields,
    }
}

/// A line that is a JSON object with a level or a message (a log record), else `None`.
fn parse_record(text: &str) -> Option<Map<String, Value>> {
    if !text.trim_start().starts_with('{') {
        return None;
    }
    let object: Map<String, Value> = serde_json::from_str(text).ok()?;
    let record = Record::of(&object);
    (record.level.is_some() || record.message.is_some()).then_some(object)
}

/// Keys read as the level, the message or the correlation id.
const LEVEL_KEYS: [&str; 3] = ["level", "lvl", "severity"];
const MESSAGE_KEYS: [&str; 2] = ["message", "msg"];
const CORRELATION_KEYS: [&str; 2] = ["correlation_id", "correlationId"];
/// Top-level keys not shown: the time is the engine's (`--timestamps` shows it), the
/// target is the module path, the nested objects are read on their own.
const HIDDEN_KEYS: [&str; 7] = [
    "timestamp",
    "time",
    "ts",
    "target",
    "fields",
    "span",
    "spans",
];

/// Where a map sits in a record.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Top,
    /// The event's fields (`fields`, when not flattened).
    Fields,
    /// The current span (`span`), whose `name` is the span's name.
    Span,
}

/// What a JSON log record says, as the tracing JSON format writes it (flattened or with
/// the event's fields under `fields`, the current span under `span`, the span list under
/// `spans`) and as other common JSON loggers do (`msg`, `lvl`, `severity`).
struct Record {
    level: Option<String>,
    message: Option<String>,
    correlation_id: Option<String>,
    /// The other fields, event fields first, then the span's.
    rest: Vec<(String, String)>,
}

impl Record {
    fn of(object: &Map<String, Value>) -> Record {
        let mut record = Record {
            level: None,
            message: None,
            correlation_id: None,
            rest: Vec::new(),
        };
        record.take(object, Part::Top);
        if let Some(Value::Object(fields)) = object.get("fields") {
            record.take(fields, Part::Fields);
        }
        if let Some(Value::Object(span)) = object.get("span") {
            record.take(span, Part::Span);
        }
        if record.correlation_id.is_none() {
            if let Some(Value::Array(spans)) = object.get("spans") {
                record.correlation_id = spans.iter().rev().find_map(|s| {
                    CORRELATION_KEYS
                        .iter()
                        .find_map(|k| s.get(k).map(scalar_text))
                });
            }
        }
        record
    }

    /// Picks the level (top level only), message and correlation id out of `object`, and
    /// keeps its other fields.
    fn take(&mut self, object: &Map<String, Value>, part: Part) {
        for (key, value) in object {
            let key = key.as_str();
            if part == Part::Top && LEVEL_KEYS.contains(&key) {
                if self.level.is_none() {
                    self.level = Some(scalar_text(value).to_uppercase());
                }
            } else if part != Part::Span && MESSAGE_KEYS.contains(&key) && self.message.is_none() {
                self.message = Some(scalar_text(value));
            } else if CORRELATION_KEYS.contains(&key) {
                if self.correlation_id.is_none() {
                    self.correlation_id = Some(scalar_text(value));
                }
            } else if (part == Part::Top && HIDDEN_KEYS.contains(&key))
                || (part == Part::Span && key == "name")
            {
                continue;
            } else {
                self.rest.push((key.to_string(), field_text(value)));
            }
        }
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A field's value for `key=value`: plain when it is one word, quoted otherwise.
fn field_text(value: &Value) -> String {
    match value {
        Value::String(s)
            if !s.is_empty()
                && !s.contains(|c: char| c.is_whitespace() || c == '"' || c == '=') =>
        {
            s.clone()
        }
        other => other.to_string(),
    }
}

/// A log line for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// `INFO`, `WARN`, … for a JSON record.
    pub level: Option<String>,
    /// `message key=value … [correlation id]` for a JSON record; the line as written
    /// otherwise.
    pub text: String,
}

/// Renders a line readably: a JSON record as its level, message, other fields and
/// correlation id; any other line as written.
pub fn render(event: &LogEvent) -> Rendered {
    let Some(fields) = &event.fields else {
        return Rendered {
            level: None,
            text: event.line.clone(),
        };
    };
    let record = Record::of(fields);
    let mut parts: Vec<String> = Vec::new();
    if let Some(message) = &record.message {
        parts.push(message.clone());
    }
    parts.extend(record.rest.iter().map(|(k, v)| format!("{k}={v}")));
    if let Some(id) = &record.correlation_id {
        parts.push(format!("[{id}]"));
    }
    Rendered {
        level: record.level,
        text: parts.join(" "),
    }
}
