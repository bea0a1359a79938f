//! Validation of the names users choose: app, service and infrastructure names.
//!
//! Every name dronectl accepts becomes a Docker container name, a DNS name on the app
//! network, a Kubernetes object name and a Cargo package name, so the rules are the
//! intersection of all of those: a DNS-1123 label that starts with a letter.
//!
//! Also the characters refused in any user text (NUL, control and bidirectional control
//! characters), and how user text is shown in messages so that it cannot rearrange or
//! hide what a terminal displays.

use std::borrow::Cow;

/// The longest name Kubernetes accepts for a DNS-1123 label.
pub const MAX_NAME_LEN: usize = 63;

/// Names that dronectl itself uses, or that would break a tool a service passes through.
const RESERVED: &[&str] = &[
    "dronectl",
    "router",
    "all",
    "default",
    "kubernetes",
    "localhost",
    "infrastructure",
    "services",
    "target",
    "templates",
    "src",
    "build",
    "test",
    "tests",
    "bench",
    "benches",
    "examples",
    "self",
    "super",
    "crate",
    "core",
    "std",
    "alloc",
    "proc-macro",
];

/// Rust keywords: a package with such a name cannot be used as a crate.
const RUST_KEYWORDS: &[&str] = &[
    "as", "async", "await", "break", "const", "continue", "dyn", "else", "enum", "extern", "false",
    "fn", "for", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref",
    "return", "static", "struct", "trait", "true", "type", "unsafe", "use", "where", "while",
    "abstract", "become", "box", "do", "final", "gen", "macro", "override", "priv", "try",
    "typeof", "unsized", "virtual", "yield",
];

/// Why a name was refused. The message says what a valid name looks like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the name is empty")]
    Empty,
    #[error("`{}` is {} characters long; names are at most {MAX_NAME_LEN} characters", shown(.0), .1)]
    TooLong(String, usize),
    #[error("`{}` must start with a lowercase letter (a-z)", shown(.0))]
    BadStart(String),
    #[error("`{}` must end with a lowercase letter or digit", shown(.0))]
    BadEnd(String),
    #[error("`{}` contains {}; names may only contain lowercase letters, digits and `-`", shown(.name), describe_char(*.ch))]
    BadChar { name: String, ch: char },
    #[error("`{}` is reserved; choose another name", shown(.0))]
    Reserved(String),
}

/// Checks that `name` is a DNS-1123 label starting with a letter and not reserved.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    validate_label(name)?;
    if RESERVED.contains(&name) || RUST_KEYWORDS.contains(&name) {
        return Err(NameError::Reserved(name.to_string()));
    }
    Ok(())
}

/// The DNS-1123 label rules alone (used for app names, which may be any label).
pub fn validate_label(name: &str) -> Result<(), NameError> {
    let first = name.chars().next().ok_or(NameError::Empty)?;
    let len = name.chars().count();
    if len > MAX_NAME_LEN {
        return Err(NameError::TooLong(name.to_string(), len));
    }
    if let Some(ch) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(NameError::BadChar {
            name: name.to_string(),
            ch,
        });
    }
    if !first.is_ascii_lowercase() {
        return Err(NameError::BadStart(name.to_string()));
    }
    if name.ends_with('-') {
        return Err(NameError::BadEnd(name.to_string()));
    }
    Ok(())
}

/// The Rust identifier for a service name: `order-api` → `order_api`.
pub fn crate_ident(name: &str) -> String {
    name.replace('-', "_")
}

/// The environment variable dronectl sets for a dependency: `order-api` → `ORDER_API_URL`.
pub fn dependency_env_var(name: &str) -> String {
    format!("{}_URL", name.to_ascii_uppercase().replace('-', "_"))
}

/// Why `c` may not appear in a manifest (anywhere, comments and quoted text included) or in
/// any value dronectl passes on, if it may not: NUL, control characters other than tab,
/// line feed and carriage return, bidirectional controls (which make text display in
/// another order than it is read: "Trojan Source"), line/paragraph separators and a byte
/// order mark.
pub fn refused_char(c: char) -> Option<&'static str> {
    match c {
        '\t' | '\n' | '\r' => None,
        '\0' => Some("NUL"),
        '\u{061C}'
        | '\u{200E}'
        | '\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2066}'..='\u{2069}' => Some("a bidirectional control character"),
        '\u{2028}' | '\u{2029}' => Some("a line or paragraph separator"),
        '\u{FEFF}' => Some("a byte order mark"),
        c if c.is_control() => Some("a control character"),
        _ => None,
    }
}

/// The first character of `text` that [`refused_char`] refuses, with its byte offset.
pub fn find_refused(text: &str) -> Option<(usize, char)> {
    text.char_indices()
        .find(|(_, c)| refused_char(*c).is_some())
}

/// The first control character of `text` (tab and line breaks included) or character
/// [`refused_char`] refuses: none of them belongs in a single-line value such as a path,
/// an image or a URL.
pub fn find_not_single_line(text: &str) -> Option<char> {
    text.chars()
        .find(|c| c.is_control() || refused_char(*c).is_some())
}

/// A character as a message names it: `_` for a visible one, `U+202E (a bidirectional
/// control character)` for one that is not.
pub fn describe_char(c: char) -> String {
    let what = match c {
        '\t' => Some("a tab"),
        '\n' | '\r' => Some("a line break"),
        ' ' => Some("a space"),
        c if refused_char(c).is_some() => refused_char(c),
        c if c.is_whitespace() => Some("a space character"),
        _ => None,
    };
    match what {
        Some(what) => format!("U+{:04X} ({what})", u32::from(c)),
        None => format!("`{c}`"),
    }
}

/// User text made safe to show: every control, bidirectional or other refused character is
/// written as an escape (`\u{202e}`), so a message shows what the text is, not what it makes
/// a terminal display.
pub fn shown(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        text.chars()
            .map(|c| {
                if needs_escape(c) {
                    format!("\\u{{{:x}}}", u32::from(c))
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

fn needs_escape(c: char) -> bool {
    c.is_control() || refused_char(c).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_labels() {
        for ok in ["a", "ratings", "order-api", "svc2", &"a".repeat(63)] {
            assert_eq!(validate_name(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_bad_names() {
        assert_eq!(validate_name(""), Err(NameError::Empty));
        assert!(matches!(
            validate_name(&"a".repeat(64)),
            Err(NameError::TooLong(_, 64))
        ));
        assert!(matches!(
            validate_name("Ratings"),
            Err(NameError::BadChar { ch: 'R', .. })
        ));
        assert!(matches!(validate_name("1abc"), Err(NameError::BadStart(_))));
        assert!(matches!(validate_name("-abc"), Err(NameError::BadStart(_))));
        assert!(matches!(validate_name("abc-"), Err(NameError::BadEnd(_))));
        assert!(matches!(
            validate_name("a_b"),
            Err(NameError::BadChar { ch: '_', .. })
        ));
        assert!(matches!(
            validate_name("../x"),
            Err(NameError::BadChar { ch: '.', .. })
        ));
        assert!(matches!(
            validate_name("a/b"),
            Err(NameError::BadChar { ch: '/', .. })
        ));
        assert!(matches!(
            validate_name("router"),
            Err(NameError::Reserved(_))
        ));
        assert!(matches!(validate_name("type"), Err(NameError::Reserved(_))));
    }

    #[test]
    fn refused_characters() {
        for c in [
            '\0', '\u{1b}', '\u{7f}', '\u{85}', '\u{202a}', '\u{202e}', '\u{2066}', '\u{2069}',
            '\u{200f}', '\u{2028}', '\u{feff}',
        ] {
            assert!(refused_char(c).is_some(), "{c:?}");
        }
        for c in ['\t', '\n', '\r', ' ', 'a', 'é', 'ش', '\u{2065}', '\u{202f}'] {
            assert_eq!(refused_char(c), None, "{c:?}");
        }
        assert_eq!(find_refused("ab\u{202e}c"), Some((2, '\u{202e}')));
        assert_eq!(find_not_single_line("a\tb"), Some('\t'));
        assert_eq!(find_not_single_line("/a b"), None);
    }

    #[test]
    fn messages_escape_what_a_terminal_would_interpret() {
        assert_eq!(shown("plain"), "plain");
        assert_eq!(
            shown("a\u{202e}b\n\u{1b}[2J"),
            "a\\u{202e}b\\u{a}\\u{1b}[2J"
        );
        assert_eq!(
            describe_char('\u{202e}'),
            "U+202E (a bidirectional control character)"
        );
        assert_eq!(describe_char('_'), "`_`");
        let err = validate_name("ab\u{202e}c").unwrap_err().to_string();
        assert_eq!(
            err,
            "`ab\\u{202e}c` contains U+202E (a bidirectional control character); names may only contain lowercase letters, digits and `-`"
        );
    }

    #[test]
    fn derived_identifiers() {
        assert_eq!(crate_ident("order-api"), "order_api");
        assert_eq!(dependency_env_var("order-api"), "ORDER_API_URL");
    }
}
