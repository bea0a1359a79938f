//! `--set KEY=VALUE` variables, and the characters refused in them and in template paths.

use std::collections::BTreeMap;

use super::ScaffoldError;
use crate::names;

/// Characters refused in `--set` values and template paths: every control character (tab and
/// newline included) and whatever the manifest refuses too ([`names::refused_char`]: the
/// bidirectional formatting set, line and paragraph separators, the byte order mark).
pub fn is_forbidden_char(c: char) -> bool {
    c.is_control() || names::refused_char(c).is_some()
}

/// What kind of forbidden character `c` is, for messages.
pub fn describe_forbidden(c: char) -> String {
    let kind = if c.is_control() {
        "a control character"
    } else if matches!(c, '\u{2028}' | '\u{2029}') {
        "a line separator"
    } else if c == '\u{FEFF}' {
        "a byte order mark"
    } else {
        "a bidirectional formatting character"
    };
    format!("U+{:04X} ({kind})", u32::from(c))
}

/// `text` with every forbidden character written as `\u{…}`, safe to show on a terminal.
pub fn printable(text: &str) -> String {
    names::shown(text).into_owned()
}

/// Parses repeated `--set key=value` flags.
pub fn parse_vars(pairs: &[String]) -> Result<BTreeMap<String, String>, ScaffoldError> {
    let mut vars = BTreeMap::new();
    for pair in pairs {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| ScaffoldError::BadVar(printable(pair)))?;
        let valid = key
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(ScaffoldError::BadVar(printable(pair)));
        }
        if let Some(c) = value.chars().find(|&c| is_forbidden_char(c)) {
            return Err(ScaffoldError::BadVarValue {
                key: key.to_string(),
                found: describe_forbidden(c),
            });
        }
        vars.insert(key.to_string(), value.to_string());
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vars() {
        let v = parse_vars(&["a=1".into(), "b_c=x=y".into()]).unwrap();
        assert_eq!(v["a"], "1");
        assert_eq!(v["b_c"], "x=y");
        assert!(parse_vars(&["novalue".into()]).is_err());
        assert!(parse_vars(&["1a=b".into()]).is_err());
        assert!(parse_vars(&["a-b=c".into()]).is_err());
        let v = parse_vars(&["d=Étoile — «☆» 星".into(), "e=".into()]).unwrap();
        assert_eq!(v["d"], "Étoile — «☆» 星");
        assert_eq!(v["e"], "");
    }

    #[test]
    fn control_and_bidi_characters_are_refused_naming_the_key() {
        for (c, code) in [
            ('\0', "U+0000 (a control character)"),
            ('\t', "U+0009 (a control character)"),
            ('\n', "U+000A (a control character)"),
            ('\r', "U+000D (a control character)"),
            ('\u{1b}', "U+001B (a control character)"),
            ('\u{7f}', "U+007F (a control character)"),
            ('\u{85}', "U+0085 (a control character)"),
            ('\u{9f}', "U+009F (a control character)"),
            ('\u{202A}', "U+202A (a bidirectional formatting character)"),
            ('\u{202E}', "U+202E (a bidirectional formatting character)"),
            ('\u{2066}', "U+2066 (a bidirectional formatting character)"),
            ('\u{2069}', "U+2069 (a bidirectional formatting character)"),
            ('\u{200F}', "U+200F (a bidirectional formatting character)"),
            ('\u{2028}', "U+2028 (a line separator)"),
        ] {
            let err = parse_vars(&["ok=fine".into(), format!("description=a{c}b")]).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("invalid --set `description`: the value contains {code}; values may not contain control, bidirectional formatting or line separator characters"),
            );
        }
    }

    #[test]
    fn printable_escapes_only_forbidden_characters() {
        assert_eq!(
            printable("a\u{1b}[2Jb\u{202E}c é"),
            "a\\u{1b}[2Jb\\u{202e}c é"
        );
    }
}
