//! The routing table as data: what `PUT /config` accepts and `GET /config` returns.
//!
//! The table is always replaced as a whole. [`RouterConfig::validate`] checks every rule the
//! router relies on and names the offending service / version / endpoint / route.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The full routing table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterConfig {
    /// Monotonic version of this table, chosen by the writer (dronectl). A `PUT` whose
    /// generation is not above the one currently applied is rejected (409): compare-and-set.
    /// `0` (or absent) is never above it; only a table given at start may leave it out (it
    /// becomes generation 1).
    #[serde(default)]
    pub generation: u64,
    /// Services by name (a DNS-1123 label, the same name service-to-service calls use as host).
    #[serde(default)]
    pub services: BTreeMap<String, ServiceConfig>,
}

/// One service: its versions, an optional preview version and its public routes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Versions by name (e.g. `1.4.0-a1b2c3d`). Their weights sum to 100, or are all 0.
    #[serde(default)]
    pub versions: BTreeMap<String, VersionConfig>,
    /// The version `Host: <service>-preview` reaches (blue-green preview), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<String>,
    /// Public path prefixes routed to this service (`/api/orders` matches `/api/orders` and
    /// `/api/orders/...`, not `/api/ordersx`). Longest prefix wins across services.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
    /// Host names the routes answer on: a request's `Host` (port stripped, compared without
    /// case) must be one of them; `*.example.com` matches one label or more before
    /// `.example.com`. Empty: any host. A route with hosts wins over the same prefix without.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Traffic controls beside the weights (see `docs/router.md`): requests matching any
    /// rule go to the rule's version whatever the weights (first matching rule wins; a rule
    /// whose version has no endpoints is skipped).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<MatchRule>,
    /// Shadow traffic: a copy of this share of the requests served by other versions goes
    /// to `version`; its responses are discarded and counted in its stats only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Mirror>,
    /// Session affinity: a request picked by weight gets a cookie naming its version, and
    /// later requests with that cookie stay on it while it has weight and endpoints.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sticky: bool,
}

/// Requests carrying every listed header and cookie (all must match) go to `version`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchRule {
    pub version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<ValueMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cookies: Vec<ValueMatch>,
}

/// One header or cookie condition: the name and either an exact value or a regex the
/// whole value must match (anchored).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueMatch {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// Mirroring: `percent` of the requests other versions serve are copied to `version`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    pub version: String,
    pub percent: u8,
}

/// Longest regex source a match rule may carry.
pub const MAX_REGEX_LEN: usize = 1024;
/// Compiled-size bound of one regex (the `regex` crate's limit; matching is linear-time).
pub(crate) const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Compiles a rule's regex, anchored to the whole value.
pub fn compile_regex(src: &str) -> Result<regex::Regex, String> {
    if src.len() > MAX_REGEX_LEN {
        return Err(format!("longer than {MAX_REGEX_LEN} bytes"));
    }
    regex::RegexBuilder::new(&format!("^(?:{src})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| e.to_string())
}

/// One version of a service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionConfig {
    /// Share of the service's traffic, 0..=100.
    pub weight: u8,
    /// Upstream endpoints as `host:port` (container IPs in practice). A version without
    /// endpoints never receives traffic: its weight counts as 0 and the others are renormalised.
    #[serde(default)]
    pub endpoints: Vec<String>,
}

/// Why a [`RouterConfig`] was rejected. The message names the offending element.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("service name {0:?} is not a DNS-1123 label (lowercase letters, digits and '-', 1..63 chars, starting and ending with a letter or digit)")]
    ServiceName(String),
    #[error("service {service:?}: version name {version:?} is invalid (1..128 visible ASCII characters)")]
    VersionName { service: String, version: String },
    #[error("service {service:?}, version {version:?}: weight {weight} is above 100")]
    WeightRange {
        service: String,
        version: String,
        weight: u8,
    },
    #[error("service {service:?}: weights sum to {sum}; they must sum to 100 (or all be 0)")]
    WeightSum { service: String, sum: u32 },
    #[error("service {service:?}, version {version:?}: endpoint {endpoint:?} is not host:port")]
    Endpoint {
        service: String,
        version: String,
        endpoint: String,
    },
    #[error("service {service:?}, version {version:?}: endpoint {endpoint:?} is listed twice")]
    DuplicateEndpoint {
        service: String,
        version: String,
        endpoint: String,
    },
    #[error("service {service:?}: preview version {preview:?} is not one of its versions")]
    Preview { service: String, preview: String },
    #[error("service {service:?}: route {route:?} must start with '/' and contain no '?', '#' or whitespace")]
    Route { service: String, route: String },
    #[error("service {service:?}: host {host:?} is not a host name (letters, digits, '-' and '.', optionally starting with \"*.\")")]
    Host { service: String, host: String },
    #[error("route {route:?} is claimed by both {first:?} and {second:?}")]
    DuplicateRoute {
        route: String,
        first: String,
        second: String,
    },
    #[error(
        "service {service:?}: {what} names version {version:?}, which is not one of its versions"
    )]
    ControlVersion {
        service: String,
        what: &'static str,
        version: String,
    },
    #[error("service {service:?}: match rule {index}: {problem}")]
    Match {
        service: String,
        index: usize,
        problem: String,
    },
    #[error("service {service:?}: mirror percent {percent} is above 100")]
    MirrorPercent { service: String, percent: u8 },
    #[error("stale generation {got}: generation {current} is already applied")]
    StaleGeneration { got: u64, current: u64 },
    #[error("generation is required: compare-and-set needs the applied generation + 1 ({})", current + 1)]
    GenerationRequired { current: u64 },
}

impl RouterConfig {
    /// Parses and validates a JSON routing table.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        let cfg: RouterConfig =
            serde_json::from_slice(bytes).map_err(|e| ConfigError::Json(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every rule of the schema (see `docs/router.md`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        // (route, host or "" for any host) → service.
        let mut routes: BTreeMap<(String, String), &str> = BTreeMap::new();
        for (name, svc) in &self.services {
            if !is_dns_label(name) {
                return Err(ConfigError::ServiceName(name.clone()));
            }
            let mut sum: u32 = 0;
            for (vname, v) in &svc.versions {
                if !is_version_name(vname) {
                    return Err(ConfigError::VersionName {
                        service: name.clone(),
                        version: vname.clone(),
                    });
                }
                if v.weight > 100 {
                    return Err(ConfigError::WeightRange {
                        service: name.clone(),
                        version: vname.clone(),
                        weight: v.weight,
                    });
                }
                sum += u32::from(v.weight);
                for (i, ep) in v.endpoints.iter().enumerate() {
                    if !is_endpoint(ep) {
                        return Err(ConfigError::Endpoint {
                            service: name.clone(),
                            version: vname.clone(),
                            endpoint: ep.clone(),
                        });
                    }
                    if v.endpoints[..i].contains(ep) {
                        return Err(ConfigError::DuplicateEndpoint {
                            service: name.clone(),
                            version: vname.clone(),
                            endpoint: ep.clone(),
                        });
                    }
                }
            }
            if sum != 0 && sum != 100 {
                return Err(ConfigError::WeightSum {
                    service: name.clone(),
                    sum,
                });
            }
            if let Some(p) = &svc.preview {
                if !svc.versions.contains_key(p) {
                    return Err(ConfigError::Preview {
                        service: name.clone(),
                        preview: p.clone(),
                    });
                }
            }
            for h in &svc.hosts {
                if !is_host(h) {
                    return Err(ConfigError::Host {
                        service: name.clone(),
                        host: h.clone(),
                    });
                }
            }
            let hosts: Vec<String> = if svc.hosts.is_empty() {
                vec![String::new()]
            } else {
                svc.hosts.iter().map(|h| h.to_ascii_lowercase()).collect()
            };
            validate_controls(name, svc)?;
            for r in &svc.routes {
                if !is_route(r) {
                    return Err(ConfigError::Route {
                        service: name.clone(),
                        route: r.clone(),
                    });
                }
                let norm = normalize_route(r).to_string();
                for host in &hosts {
                    let key = (norm.clone(), host.clone());
                    if let Some(first) = routes.get(&key) {
                        return Err(ConfigError::DuplicateRoute {
                            route: r.clone(),
                            first: (*first).to_string(),
                            second: name.clone(),
                        });
                    }
                    routes.insert(key, name);
                }
            }
        }
        Ok(())
    }
}

fn validate_controls(name: &str, svc: &ServiceConfig) -> Result<(), ConfigError> {
    for (index, rule) in svc.matches.iter().enumerate() {
        if !svc.versions.contains_key(&rule.version) {
            return Err(ConfigError::ControlVersion {
                service: name.to_string(),
                what: "a match rule",
                version: rule.version.clone(),
            });
        }
        let bad = |problem: String| ConfigError::Match {
            service: name.to_string(),
            index,
            problem,
        };
        if rule.headers.is_empty() && rule.cookies.is_empty() {
            return Err(bad("it needs at least one header or cookie".into()));
        }
        for (kind, list) in [("header", &rule.headers), ("cookie", &rule.cookies)] {
            for m in list {
                let name_ok = if kind == "header" {
                    http::HeaderName::from_bytes(m.name.as_bytes()).is_ok()
                } else {
                    is_cookie_name(&m.name)
                };
                if !name_ok {
                    return Err(bad(format!("{kind} name {:?} is invalid", m.name)));
                }
                match (&m.exact, &m.regex) {
                    (Some(_), None) => {}
                    (None, Some(r)) => {
                        compile_regex(r)
                            .map_err(|e| bad(format!("{kind} {:?}: regex: {e}", m.name)))?;
                    }
                    _ => {
                        return Err(bad(format!(
                            "{kind} {:?} needs exactly one of `exact` and `regex`",
                            m.name
                        )))
                    }
                }
            }
        }
    }
    if let Some(m) = &svc.mirror {
        if !svc.versions.contains_key(&m.version) {
            return Err(ConfigError::ControlVersion {
                service: name.to_string(),
                what: "the mirror",
                version: m.version.clone(),
            });
        }
        if m.percent > 100 {
            return Err(ConfigError::MirrorPercent {
                service: name.to_string(),
                percent: m.percent,
            });
        }
    }
    Ok(())
}

/// A cookie name is an RFC 6265 token.
pub fn is_cookie_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
}

/// `/api/orders/` and `/api/orders` are the same prefix; `/` stays `/`.
pub(crate) fn normalize_route(r: &str) -> &str {
    let t = r.trim_end_matches('/');
    if t.is_empty() {
        "/"
    } else {
        t
    }
}

/// A DNS label: 1 to 63 lowercase letters, digits and `-`, not starting or ending with `-`.
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn is_host(h: &str) -> bool {
    let bare = h.strip_prefix("*.").unwrap_or(h);
    !bare.is_empty()
        && h.len() <= 253
        && bare.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        })
}

fn is_version_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.bytes().all(|c| c.is_ascii_graphic())
}

fn is_route(r: &str) -> bool {
    r.starts_with('/') && !r.chars().any(|c| c == '?' || c == '#' || c.is_whitespace())
}

/// `host:port` with a non-zero port; host is an IPv4 address, a bracketed IPv6 address or a
/// DNS name.
pub(crate) fn is_endpoint(s: &str) -> bool {
    if s.parse::<std::net::SocketAddr>().is_ok() {
        return !s.ends_with(":0");
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    let port_ok = matches!(port.parse::<u16>(), Ok(p) if p != 0);
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.' || c == b'_');
    port_ok && host_ok && s.parse::<http::uri::Authority>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(json: &str) -> Result<RouterConfig, ConfigError> {
        RouterConfig::from_json(json.as_bytes())
    }

    #[test]
    fn accepts_a_full_table() {
        let c = cfg(r#"{"generation":3,"services":{"orders":{"versions":{
            "v1":{"weight":90,"endpoints":["10.0.0.5:8080","orders-1:8080"]},
            "v2":{"weight":10,"endpoints":["[::1]:8080"]}},
            "preview":"v2","routes":["/api/orders","/"]}}}"#)
        .unwrap();
        assert_eq!(c.generation, 3);
        assert_eq!(c.services["orders"].versions["v2"].weight, 10);
    }

    #[test]
    fn accepts_all_zero_and_empty() {
        cfg(r#"{"services":{"a":{"versions":{"v1":{"weight":0}}}}}"#).unwrap();
        cfg(r#"{}"#).unwrap();
    }

    #[test]
    fn rejects_with_named_problem() {
        let cases = [
            (r#"{"services":{"Orders":{}}}"#, "Orders"),
            (
                r#"{"services":{"a":{"versions":{"v1":{"weight":60},"v2":{"weight":30}}}}}"#,
                "sum to 90",
            ),
            (
                r#"{"services":{"a":{"versions":{"v1":{"weight":101}}}}}"#,
                "above 100",
            ),
            (
                r#"{"services":{"a":{"versions":{"v1":{"weight":100,"endpoints":["nope"]}}}}}"#,
                "\"nope\"",
            ),
            (
                r#"{"services":{"a":{"versions":{"v1":{"weight":100,"endpoints":["h:1","h:1"]}}}}}"#,
                "twice",
            ),
            (
                r#"{"services":{"a":{"versions":{"v1":{"weight":100,"endpoints":["h:0"]}}}}}"#,
                "h:0",
            ),
            (r#"{"services":{"a":{"preview":"v9"}}}"#, "v9"),
            (r#"{"services":{"a":{"routes":["api"]}}}"#, "\"api\""),
            (
                r#"{"services":{"a":{"routes":["/x"]},"b":{"routes":["/x/"]}}}"#,
                "claimed by both",
            ),
            (r#"{"services":{"a":{"bogus":1}}}"#, "bogus"),
            (
                r#"{"services":{"a":{"routes":["/x"],"hosts":["a b"]}}}"#,
                "host \"a b\"",
            ),
            (
                r#"{"services":{"a":{"routes":["/x"],"hosts":["A.example"]},"b":{"routes":["/x"],"hosts":["a.example","b.example"]}}}"#,
                "claimed by both",
            ),
            (
                r#"{"services":{"a":{"matches":[{"version":"v9","headers":[{"name":"x","exact":"1"}]}]}}}"#,
                "a match rule names version \"v9\"",
            ),
            (
                r#"{"services":{"a":{"versions":{"v1":{"weight":0}},"matches":[{"version":"v1"}]}}}"#,
                "at least one header or cookie",
            ),
            (
                r#"{"services":{"a":{"versions":{"v1":{"weight":0}},"matches":[{"version":"v1","headers":[{"name":"x","exact":"1","regex":"1"}]}]}}}"#,
                "exactly one of",
            ),
            (
                r#"{"services":{"a":{"versions":{"v1":{"weight":0}},"matches":[{"version":"v1","headers":[{"name":"x","regex":"("}]}]}}}"#,
                "regex",
            ),
            (
                r#"{"services":{"a":{"versions":{"v1":{"weight":0}},"matches":[{"version":"v1","cookies":[{"name":"a;b","exact":"1"}]}]}}}"#,
                "cookie name",
            ),
            (
                r#"{"services":{"a":{"versions":{"v1":{"weight":0}},"mirror":{"version":"v1","percent":101}}}}"#,
                "above 100",
            ),
            (
                r#"{"services":{"a":{"mirror":{"version":"v2","percent":1}}}}"#,
                "the mirror names",
            ),
            (r#"{"services":"#, "invalid JSON"),
        ];
        for (json, needle) in cases {
            let err = cfg(json).unwrap_err().to_string();
            assert!(err.contains(needle), "{json}: {err}");
        }
    }

    #[test]
    fn one_route_on_different_hosts_or_with_and_without_hosts() {
        cfg(r#"{"services":{"a":{"routes":["/x"],"hosts":["a.example"]},"b":{"routes":["/x"],"hosts":["b.example"]},"c":{"routes":["/x"]}}}"#).unwrap();
    }

    #[test]
    fn normalizes_routes() {
        assert_eq!(normalize_route("/"), "/");
        assert_eq!(normalize_route("/a/"), "/a");
        assert_eq!(normalize_route("/a"), "/a");
    }
}
