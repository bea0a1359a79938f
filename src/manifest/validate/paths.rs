//! Values that become paths, URL prefixes and host names: a service's directory, its route
//! prefixes and the host names its public routes answer on.

use std::path::{Component, Path};

use crate::names;

/// A service path must stay inside the app: relative, no `..`. Returns it normalised.
pub fn check_relative_path(path: &str) -> Result<String, String> {
    let p = Path::new(path);
    if path.trim().is_empty() {
        return Err("path is empty".into());
    }
    if let Some(c) = names::find_not_single_line(path) {
        return Err(format!(
            "`{path}` contains {}; paths may not contain control or bidirectional characters",
            names::describe_char(c)
        ));
    }
    if p.is_absolute() || path.starts_with('\\') {
        return Err(format!(
            "`{path}` is absolute; paths are relative to dronectl.yaml"
        ));
    }
    let mut parts = Vec::new();
    for component in p.components() {
        match component {
            Component::Normal(c) => parts.push(c.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(format!(
                    "`{path}` leaves the app directory (`..` is not allowed)"
                ))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "`{path}` is absolute; paths are relative to dronectl.yaml"
                ))
            }
        }
    }
    if parts.is_empty() {
        return Err(format!(
            "`{path}` is the app directory itself; give the service its own directory"
        ));
    }
    Ok(parts.join("/"))
}

/// Routes are path prefixes: `/api/x` (a trailing `/` is ignored).
pub fn normalize_route(route: &str) -> Result<String, String> {
    if !route.starts_with('/') {
        return Err(format!("route `{route}` must start with `/`"));
    }
    if let Some(c) = route
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "/-._~".contains(*c)))
    {
        return Err(format!(
            "route `{route}` contains {}; use letters, digits and `/-._~`",
            names::describe_char(c)
        ));
    }
    if route.split('/').any(|seg| seg == ".." || seg == ".") || route.contains("//") {
        return Err(format!("route `{route}` has an empty, `.` or `..` segment"));
    }
    let trimmed = route.trim_end_matches('/');
    Ok(if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_string()
    })
}

/// A host name a public route answers on: a lowercase DNS-1123 subdomain (at most 253
/// characters), optionally `*.` followed by one, and not an IP address or `host:port`.
pub fn check_host(host: &str) -> Result<(), String> {
    let bare = host.strip_prefix("*.").unwrap_or(host);
    if host.contains(':') || bare.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err(format!(
            "host `{host}` must be a DNS name without a port (an IP address or a port is not a host name)"
        ));
    }
    if host.len() > 253 || !bare.split('.').all(dronectl_router::config::is_dns_label) {
        return Err(format!(
            "host `{host}` is not a valid host name: lowercase letters, digits, `-` and `.` (labels of 1 to 63 characters, at most 253 in all), optionally starting with `*.`"
        ));
    }
    Ok(())
}
