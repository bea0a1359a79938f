//! The first pass over a manifest, before it is read into types. A manifest is untrusted
//! input (it may come from a pull request), so this pass refuses, with a line and column:
//!
//! * bytes that are not UTF-8 (with the byte offset);
//! * NUL, control characters other than tab and line breaks, bidirectional controls and
//!   the other characters [`names::refused_char`] lists, anywhere in the text (comments
//!   too: a bidirectional control in a comment can make a line display as something else);
//! * the same characters in any value or key once YAML escapes (`"\u202e"`) are decoded;
//! * a key given twice in one mapping, naming where it was first given;
//! * tags dronectl does not know (`!custom`), and anything over the parser's limits.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{DuplicateKeyPolicy, Spanned};

use super::{yaml, ManifestError, Position};
use crate::names;

/// Checks that `bytes` are UTF-8 and returns them as text.
pub(super) fn utf8<'a>(path: &Path, bytes: &'a [u8]) -> Result<&'a str, ManifestError> {
    std::str::from_utf8(bytes).map_err(|err| {
        let offset = err.valid_up_to();
        // The valid prefix is text: count lines and characters in it.
        let valid = std::str::from_utf8(&bytes[..offset]).unwrap_or_default();
        ManifestError::Parse {
            path: path.to_path_buf(),
            position: Some(position_at(valid, valid.len())),
            message: format!(
                "invalid UTF-8 at byte offset {offset}: dronectl.yaml must be UTF-8 text"
            ),
        }
    })
}

/// Runs every check of this pass over `text`.
pub(super) fn check(path: &Path, text: &str) -> Result<(), ManifestError> {
    let refuse = |position: Option<Position>, message: String| ManifestError::Parse {
        path: path.to_path_buf(),
        position,
        message,
    };
    if let Some((offset, c)) = refused_in_text(text) {
        return Err(refuse(
            Some(position_at(text, offset)),
            format!(
                "{} is not allowed in dronectl.yaml, not even in a comment or a quoted value",
                names::describe_char(c)
            ),
        ));
    }
    let mut options = yaml::options();
    // Duplicates reach the tree, which names both places.
    options.duplicate_keys = DuplicateKeyPolicy::PassThrough;
    let tree: Spanned<Node> =
        serde_saphyr::from_str_with_options(text, options).map_err(|err| {
            let (position, message) = yaml::describe(path, &err);
            refuse(position, message)
        })?;
    match first_problem(&tree) {
        Some((position, message)) => Err(refuse(position, message)),
        None => Ok(()),
    }
}

/// The first refused character of the raw text; a byte order mark may open the file.
fn refused_in_text(text: &str) -> Option<(usize, char)> {
    text.char_indices()
        .find(|&(i, c)| names::refused_char(c).is_some() && !(i == 0 && c == '\u{feff}'))
}

/// The 1-based line and column (in characters) of byte `offset` of `text`.
fn position_at(text: &str, offset: usize) -> Position {
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Position {
        line: before.matches('\n').count() as u64 + 1,
        column: before[line_start..].chars().count() as u64 + 1,
    }
}

/// A YAML node with the places of its children.
enum Node {
    /// A string, number or boolean, as its text; whether it is a string (`1` and `"1"` are
    /// different keys).
    Scalar(String, bool),
    /// A null, or binary data.
    Other,
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<Node>, Spanned<Node>)>),
}

/// The first problem in document order: a refused character in a decoded key or value, or
/// a duplicate key. The tree is as deep as the parser's depth limit allows; it is walked
/// with an explicit stack all the same.
fn first_problem(root: &Spanned<Node>) -> Option<(Option<Position>, String)> {
    let mut problems: Vec<(Option<Position>, String)> = Vec::new();
    let mut stack = vec![root];
    while let Some(node) = stack.pop() {
        let at = Position::from_location(node.referenced);
        match &node.value {
            Node::Scalar(text, _) => {
                if let Some((_, c)) = names::find_refused(text) {
                    problems.push((
                        at,
                        format!(
                            "`{}` contains {}, which is not allowed in dronectl.yaml",
                            names::shown(text),
                            names::describe_char(c)
                        ),
                    ));
                }
            }
            Node::Other => {}
            Node::Seq(items) => stack.extend(items),
            Node::Map(entries) => {
                let mut seen: HashMap<(&str, bool), Option<Position>> = HashMap::new();
                for (key, value) in entries {
                    if let Node::Scalar(text, string) = &key.value {
                        let here = Position::from_location(key.referenced);
                        match seen.get(&(text.as_str(), *string)) {
                            Some(first) => {
                                let first = first
                                    .map(|p| {
                                        format!(" (first at line {}, column {})", p.line, p.column)
                                    })
                                    .unwrap_or_default();
                                problems.push((
                                    here,
                                    format!("duplicate key `{}`{first}", names::shown(text)),
                                ));
                            }
                            None => {
                                seen.insert((text, *string), here);
                            }
                        }
                    }
                    stack.push(key);
                    stack.push(value);
                }
            }
        }
    }
    problems
        .into_iter()
        .min_by_key(|(p, _)| p.map_or((u64::MAX, u64::MAX), |p| (p.line, p.column)))
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Scalar(v.to_string(), true))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::Scalar(v, true))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Scalar(v.to_string(), false))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Scalar(v.to_string(), false))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Node, E> {
        Ok(Node::Scalar(v.to_string(), false))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Scalar(v.to_string(), false))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Node, E> {
        Ok(Node::Scalar(v.to_string(), false))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Scalar(v.to_string(), false))
    }
    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Node, E> {
        Ok(Node::Other)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Other)
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Other)
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        Node::deserialize(deserializer)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        Node::deserialize(deserializer)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Node::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(text: &str) -> Option<String> {
        check(Path::new("m.yaml"), text)
            .err()
            .map(|e| e.to_string())
    }

    #[test]
    fn duplicate_keys_are_compared_as_yaml_values() {
        assert_eq!(
            problem("a: {b: 1, c: 2, b: 3}\n").as_deref(),
            Some("m.yaml:1:17: duplicate key `b` (first at line 1, column 5)")
        );
        // A number and a string with the same text are different keys.
        assert_eq!(problem("a: {1: x, \"1\": y}\n"), None);
        // Keys of different mappings do not collide; merged keys are overridden, not repeated.
        assert_eq!(problem("a: {b: 1}\nc: {b: 1}\n"), None);
        assert_eq!(problem("a: &x {b: 1}\nc: {<<: *x, b: 2}\n"), None);
    }

    #[test]
    fn positions_count_characters() {
        let text = "ab\ncdé\u{202e}";
        assert_eq!(position_at(text, 0), Position { line: 1, column: 1 });
        assert_eq!(position_at(text, 3), Position { line: 2, column: 1 });
        assert_eq!(position_at(text, 7), Position { line: 2, column: 4 });
    }
}
