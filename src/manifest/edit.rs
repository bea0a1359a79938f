//! Textual edits of `dronectl.yaml` that keep the user's comments, order and layout.
//!
//! A YAML round trip through serde would drop every comment, so new entries are spliced
//! into the text instead, and the result is parsed again by the caller before it is
//! written.

/// Why an edit could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    #[error("`services` is written in flow style (`{{...}}`) at line {0}; rewrite it as a block mapping so entries can be added")]
    FlowStyle(usize),
}

/// Returns `text` with a `name:` entry added at the end of the top-level `services:`
/// block. `body` is the entry's YAML with its keys at column 0; it is indented to match
/// the indentation the file already uses.
pub fn add_service_entry(text: &str, name: &str, body: &str) -> Result<String, EditError> {
    let lines: Vec<&str> = text.lines().collect();
    let key = lines.iter().position(|l| is_top_level_key(l, "services"));

    let mut out: Vec<String> = Vec::with_capacity(lines.len() + body.lines().count() + 2);
    let (insert_at, indent) = match key {
        Some(k) => {
            let value = value_after_key(lines[k], "services");
            match value {
                "" => {}
                "{}" | "null" | "~" => {}
                _ => return Err(EditError::FlowStyle(k + 1)),
            }
            let end = block_end(&lines, k);
            let indent = child_indent(&lines[k + 1..end]).unwrap_or(2);
            out.extend(lines[..k].iter().map(|l| l.to_string()));
            // `services: {}` or `services: ~` becomes a block key, keeping any comment.
            out.push(match lines[k].find('#') {
                Some(_) if value.is_empty() => lines[k].to_string(),
                Some(hash) => format!("services: {}", &lines[k][hash..]),
                None => "services:".to_string(),
            });
            out.extend(lines[k + 1..end].iter().map(|l| l.to_string()));
            (end, indent)
        }
        None => {
            out.extend(lines.iter().map(|l| l.to_string()));
            if out.last().is_some_and(|l| !l.trim().is_empty()) {
                out.push(String::new());
            }
            out.push("services:".to_string());
            (lines.len(), 2)
        }
    };
    let pad = " ".repeat(indent);
    out.push(format!("{pad}{name}:"));
    for line in body.lines() {
        if line.trim().is_empty() {
            continue;
        }
        out.push(format!("{pad}{pad}{line}"));
    }
    if key.is_some() {
        out.extend(lines[insert_at..].iter().map(|l| l.to_string()));
    }
    let mut result = out.join("\n");
    result.push('\n');
    Ok(result)
}

fn is_top_level_key(line: &str, key: &str) -> bool {
    line.strip_prefix(key)
        .map(|rest| rest.trim_start().starts_with(':'))
        .unwrap_or(false)
}

/// The value written on the key's own line, without a trailing comment.
fn value_after_key<'a>(line: &'a str, key: &str) -> &'a str {
    let rest = line[key.len()..].trim_start();
    let rest = rest.strip_prefix(':').unwrap_or(rest);
    let rest = match rest.find(" #") {
        Some(i) => &rest[..i],
        None if rest.trim_start().starts_with('#') => "",
        None => rest,
    };
    rest.trim()
}

/// The index one past the last line that belongs to the block under the key at `key`:
/// indented lines (entries and indented comments). Blank lines and column-0 comments
/// right before the next top-level key stay with that key.
fn block_end(lines: &[&str], key: usize) -> usize {
    let mut end = key + 1;
    for (i, line) in lines.iter().enumerate().skip(key + 1) {
        if line.trim().is_empty() {
            continue;
        }
        if line.starts_with(' ') || line.starts_with('\t') || line.starts_with('-') {
            end = i + 1;
        } else {
            break;
        }
    }
    end
}

/// The indentation of the first entry (not a comment) in the block.
fn child_indent(block: &[&str]) -> Option<usize> {
    block
        .iter()
        .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|l| l.len() - l.trim_start().len())
        .filter(|n| *n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = "path: services/b\nport: 8080\nhealth:\n  liveness: /healthz\n";

    #[test]
    fn appends_after_last_entry_keeping_comments() {
        let text = "# my app\napp: demo # name\nservices:\n  # the API\n  a:\n    path: services/a # here\n\n# environments below\nenvironments:\n  local: { target: docker }\n";
        let got = add_service_entry(text, "b", BODY).unwrap();
        assert_eq!(
            got,
            "# my app\napp: demo # name\nservices:\n  # the API\n  a:\n    path: services/a # here\n  b:\n    path: services/b\n    port: 8080\n    health:\n      liveness: /healthz\n\n# environments below\nenvironments:\n  local: { target: docker }\n"
        );
    }

    #[test]
    fn follows_existing_indentation() {
        let text = "app: demo\nservices:\n    a:\n        path: services/a\n";
        let got = add_service_entry(text, "b", "path: services/b\n").unwrap();
        assert!(
            got.ends_with("    a:\n        path: services/a\n    b:\n        path: services/b\n"),
            "{got}"
        );
    }

    #[test]
    fn empty_services_with_comment_only() {
        let text =
            "app: demo\nservices:\n  # dronectl new service adds entries here\nenvironments: {}\n";
        let got = add_service_entry(text, "b", "path: x\n").unwrap();
        assert_eq!(got, "app: demo\nservices:\n  # dronectl new service adds entries here\n  b:\n    path: x\nenvironments: {}\n");
    }

    #[test]
    fn flow_empty_and_missing_services() {
        assert_eq!(
            add_service_entry("app: d\nservices: {}\n", "b", "path: x").unwrap(),
            "app: d\nservices:\n  b:\n    path: x\n"
        );
        assert_eq!(
            add_service_entry("app: d\n", "b", "path: x").unwrap(),
            "app: d\n\nservices:\n  b:\n    path: x\n"
        );
        assert_eq!(
            add_service_entry("app: d\nservices: { a: { path: a } }\n", "b", "path: x"),
            Err(EditError::FlowStyle(2))
        );
    }
}
