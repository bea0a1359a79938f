//! `environments.<name>.registry`: where images are pushed, as a Docker image name prefix
//! (`registry.example.com:5000/team`). The value ends up in image names, push requests and
//! rendered Kubernetes objects, so it is held to the reference grammar Docker uses, and it
//! must not carry credentials.

use crate::names;

/// Checks a registry prefix: `host[:port][/path]`, without scheme, userinfo, whitespace or
/// `.`/`..` segments. A trailing `/` is allowed (it is dropped where the prefix is used).
///
/// The message never repeats the value when it may hold a password.
pub fn check_registry(registry: &str) -> Result<(), String> {
    if registry.contains('@') {
        return Err(
            "the registry must not contain userinfo (`user@` or `user:password@`); \
             credentials belong in Docker's config (`docker login`), never in dronectl.yaml"
                .into(),
        );
    }
    if let Some(c) = names::find_not_single_line(registry)
        .or_else(|| registry.chars().find(|c| c.is_whitespace()))
    {
        return Err(format!(
            "registry `{}` contains {}",
            names::shown(registry),
            names::describe_char(c)
        ));
    }
    if let Some((scheme, rest)) = registry.split_once("://") {
        return Err(format!(
            "registry `{registry}` has a scheme (`{scheme}://`); write it without one: `{rest}`"
        ));
    }
    let trimmed = registry.strip_suffix('/').unwrap_or(registry);
    let mut parts = trimmed.split('/');
    let host = parts.next().unwrap_or_default();
    check_host(host).map_err(|why| format!("registry `{registry}`: {why}"))?;
    for part in parts {
        check_path_component(part).map_err(|why| format!("registry `{registry}`: {why}"))?;
    }
    Ok(())
}

/// `registry.example.com`, `127.0.0.1:5000`, `localhost:5000`, `[::1]:5000`.
fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("the registry host is empty".into());
    }
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (addr, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("`{host}` opens `[` without closing it"))?;
        if addr.is_empty() || !addr.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            return Err(format!("`[{addr}]` is not an IPv6 address"));
        }
        match after {
            "" => (None, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return Err(format!("unexpected `{after}` after `[{addr}]`")),
            },
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) => (Some(name), Some(port)),
            None => (Some(host), None),
        }
    };
    if let Some(name) = name {
        let valid_label = |label: &str| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if !name.split('.').all(valid_label) {
            return Err(format!(
                "`{name}` is not a host name: use letters, digits, `-` and `.` between labels"
            ));
        }
    }
    if let Some(port) = port {
        if !matches!(port.parse::<u16>(), Ok(p) if p > 0) || port.starts_with('+') {
            return Err(format!("port `{port}` is not a number between 1 and 65535"));
        }
    }
    Ok(())
}

/// One `/`-separated part of the repository prefix: lowercase letters and digits, separated
/// by `.`, `_`, `__` or `-` (Docker's reference grammar).
fn check_path_component(part: &str) -> Result<(), String> {
    if part.is_empty() {
        return Err("the path has an empty segment (`//`)".into());
    }
    if part == "." || part == ".." {
        return Err(format!("the path has a `{part}` segment"));
    }
    if let Some(c) = part
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(*c)))
    {
        return Err(format!(
            "the path contains {}; use lowercase letters, digits, `.`, `_` and `-`",
            names::describe_char(c)
        ));
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !alnum(part.chars().next()) || !alnum(part.chars().last()) {
        return Err(format!(
            "path segment `{part}` must start and end with a letter or digit"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_registry;

    #[test]
    fn accepts_registry_prefixes() {
        for ok in [
            "registry.example.com/drone",
            "127.0.0.1:5000/shop",
            "localhost:5000",
            "localhost:5000/",
            "ghcr.io/acme/team_a/sub-dir",
            "[::1]:5000/x",
            "Registry.Example.COM/x",
        ] {
            assert_eq!(check_registry(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_schemes_userinfo_traversal_and_whitespace() {
        let refused = |r: &str| check_registry(r).unwrap_err();
        assert!(refused("https://registry.example.com/x").contains("has a scheme (`https://`)"));
        assert!(refused("http://localhost:5000").contains("scheme"));
        let userinfo = refused("user:s3cret@registry.example.com/x");
        assert!(userinfo.contains("userinfo"), "{userinfo}");
        assert!(
            !userinfo.contains("s3cret"),
            "the password is not repeated: {userinfo}"
        );
        assert!(!refused("https://ci:s3cret@r.example.com").contains("s3cret"));
        assert!(refused("r.example.com/../x").contains("`..` segment"));
        assert!(refused("r.example.com/./x").contains("`.` segment"));
        assert!(refused("r.example.com//x").contains("empty segment"));
        assert!(refused("r.example.com/a b").contains("U+0020 (a space)"));
        assert!(refused("r.example.com/a\nb").contains("U+000A (a line break)"));
        assert!(refused("r.example.com/a\u{202e}b").contains("bidirectional"));
        assert!(refused("r.example.com/Team").contains("`T`"));
        assert!(refused("r.example.com/x?tag=1").contains("`?`"));
        assert!(refused("r_x.example.com/x").contains("not a host name"));
        assert!(refused("r.example.com:99999/x").contains("port `99999`"));
        assert!(refused("r.example.com:/x").contains("port ``"));
        assert!(refused("").contains("host is empty"));
        assert!(refused("/x").contains("host is empty"));
        assert!(refused("[::1/x").contains("without closing"));
    }
}
