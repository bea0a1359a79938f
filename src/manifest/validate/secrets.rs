//! A service's `secrets`: names, duplicates, clashes with `env`, and `from` references.

use std::collections::HashMap;

use super::services::is_env_name;
use super::Findings;

/// A service's `secrets`: names that are environment variable names (they become files
/// under `/run/secrets/` and Kubernetes Secret keys), each listed once, not also a plain
/// variable when given as one, and `from` references that Kubernetes accepts.
pub(super) fn check_secrets(field: &str, s: &crate::manifest::Service, out: &mut Findings) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, secret) in s.secrets.iter().enumerate() {
        let name = secret.value.name();
        let at = format!("{field}.secrets[{i}]");
        if !is_env_name(name) || name.len() > 128 {
            out.error(
                at.clone(),
                Some(secret),
                format!("secret `{name}` is not a valid environment variable name (letters, digits and `_`, not starting with a digit, at most 128 characters)"),
            );
        }
        if let Some(first) = seen.insert(name, i) {
            out.error(
                at.clone(),
                Some(secret),
                format!("secret `{name}` is listed twice (also at {field}.secrets[{first}])"),
            );
        }
        if secret.value.env() && s.env.contains_key(name) {
            out.error(
                at.clone(),
                Some(secret),
                format!("secret `{name}` has `env: true`, but `{name}` is also set in `env`"),
            );
        }
        if let Some(from) = secret.value.from() {
            if !is_subdomain(&from.secret) {
                out.error(
                    format!("{at}.from.secret"),
                    Some(secret),
                    format!("`{}` is not a valid Kubernetes Secret name (a DNS-1123 subdomain: lowercase letters, digits, `-` and `.`, at most 253 characters)", from.secret),
                );
            }
            let key_ok = !from.key.is_empty()
                && from.key.len() <= 253
                && from
                    .key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                && from.key != "."
                && from.key != "..";
            if !key_ok {
                out.error(
                    format!("{at}.from.key"),
                    Some(secret),
                    format!(
                        "`{}` is not a valid Secret key (letters, digits, `-`, `_`, `.`)",
                        from.key
                    ),
                );
            }
        }
    }
}

/// A DNS-1123 subdomain (the names of most Kubernetes objects, Secrets among them).
fn is_subdomain(name: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !name.is_empty()
        && name.len() <= 253
        && name.starts_with(alnum)
        && name.ends_with(alnum)
        && name.chars().all(|c| alnum(c) || c == '-' || c == '.')
}
