//! Validation of the names users choose: app, service and infrastructure names.
//!
//! Every name dronectl accepts becomes a Docker container name, a DNS name on the app
//! network, a Kubernetes object name and a Cargo package name, so the rules are the
//! intersection of all of those: a DNS-1123 label that starts with a letter.

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
    #[error("`{0}` is {1} characters long; names are at most {MAX_NAME_LEN} characters")]
    TooLong(String, usize),
    #[error("`{0}` must start with a lowercase letter (a-z)")]
    BadStart(String),
    #[error("`{0}` must end with a lowercase letter or digit")]
    BadEnd(String),
    #[error("`{name}` contains `{ch}`; names may only contain lowercase letters, digits and `-`")]
    BadChar { name: String, ch: char },
    #[error("`{0}` is reserved; choose another name")]
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
    fn derived_identifiers() {
        assert_eq!(crate_ident("order-api"), "order_api");
        assert_eq!(dependency_env_var("order-api"), "ORDER_API_URL");
    }
}
