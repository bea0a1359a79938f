//! Route choice inside a service: which version serves a request, whether it sets a sticky
//! cookie, and whether a copy goes to a mirror version.
//!
//! The proxy calls [`choose`] once per request. Precedence: a forced version
//! (`x-dronectl-version`), the preview host, the first matching match rule, a valid sticky
//! cookie, then the weights (which set the sticky cookie when the service is sticky). A
//! service without controls costs one branch over the plain weighted pick.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::config::{compile_regex, ServiceConfig, ValueMatch};
use crate::table::{ServiceEntry, VersionEntry};

/// Prefix of the sticky cookie's name: `dronectl-<service>`.
pub const STICKY_COOKIE_PREFIX: &str = "dronectl-";

/// A service's compiled traffic controls.
pub(crate) struct Controls {
    rules: Vec<Rule>,
    /// (version index, percent).
    mirror: Option<(usize, u32)>,
    mirror_cursor: AtomicU64,
    sticky: Option<Sticky>,
}

struct Rule {
    version: usize,
    headers: Vec<(HeaderName, Matcher)>,
    cookies: Vec<(String, Matcher)>,
}

enum Matcher {
    Exact(String),
    Regex(regex::Regex),
}

impl Matcher {
    fn compile(m: &ValueMatch) -> Option<Matcher> {
        match (&m.exact, &m.regex) {
            (Some(e), _) => Some(Matcher::Exact(e.clone())),
            (None, Some(r)) => compile_regex(r).ok().map(Matcher::Regex),
            (None, None) => None,
        }
    }

    fn matches(&self, value: &[u8]) -> bool {
        match self {
            Matcher::Exact(e) => e.as_bytes() == value,
            Matcher::Regex(r) => std::str::from_utf8(value).is_ok_and(|v| r.is_match(v)),
        }
    }
}

struct Sticky {
    /// `dronectl-<service>`.
    cookie: String,
    /// Per version: the cookie value naming it (a hash of the version name: version names
    /// may hold characters a cookie value cannot) and the `Set-Cookie` header pinning it.
    tokens: Vec<(String, HeaderValue)>,
}

/// What [`choose`] decided for one request.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Choice {
    /// The version to serve the request; `None`: nothing routable.
    pub(crate) version: Option<usize>,
    /// Chosen by weight: a refused connection may be retried on other versions.
    pub(crate) weighted: bool,
    /// A `Set-Cookie` for the response (sticky sessions).
    pub(crate) set_cookie: Option<HeaderValue>,
    /// A copy of the request goes to this version (mirroring).
    pub(crate) mirror: Option<usize>,
}

/// Compiles a validated service config's controls; `None` when it has none.
pub(crate) fn compile(
    service: &str,
    cfg: &ServiceConfig,
    versions: &[VersionEntry],
) -> Option<Box<Controls>> {
    if cfg.matches.is_empty() && cfg.mirror.is_none() && !cfg.sticky {
        return None;
    }
    let index = |name: &str| versions.iter().position(|v| v.name == name);
    let rules = cfg
        .matches
        .iter()
        .filter_map(|r| {
            Some(Rule {
                version: index(&r.version)?,
                headers: r
                    .headers
                    .iter()
                    .map(|m| {
                        Some((
                            HeaderName::from_bytes(m.name.as_bytes()).ok()?,
                            Matcher::compile(m)?,
                        ))
                    })
                    .collect::<Option<_>>()?,
                cookies: r
                    .cookies
                    .iter()
                    .map(|m| Some((m.name.clone(), Matcher::compile(m)?)))
                    .collect::<Option<_>>()?,
            })
        })
        .collect();
    let mirror = cfg
        .mirror
        .as_ref()
        .filter(|m| m.percent > 0)
        .and_then(|m| Some((index(&m.version)?, u32::from(m.percent.min(100)))));
    let sticky = cfg.sticky.then(|| {
        let cookie = format!("{STICKY_COOKIE_PREFIX}{service}");
        let tokens = versions
            .iter()
            .map(|v| {
                let token = version_token(&v.name);
                let set = HeaderValue::from_str(&format!(
                    "{cookie}={token}; Path=/; HttpOnly; SameSite=Lax"
                ))
                .expect("a DNS label and hex digits are valid header bytes");
                (token, set)
            })
            .collect();
        Sticky { cookie, tokens }
    });
    Some(Box::new(Controls {
        rules,
        mirror,
        mirror_cursor: AtomicU64::new(0),
        sticky,
    }))
}

/// The sticky cookie's value for a version: 16 hex digits of its name's FNV-1a hash
/// (stable across router restarts and tables).
pub fn version_token(version: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in version.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Chooses the version for a request (see the module docs for the precedence).
pub(crate) fn choose(
    svc: &ServiceEntry,
    headers: &HeaderMap,
    forced: Option<usize>,
    preview: bool,
) -> Choice {
    if let Some(v) = forced {
        return Choice {
            version: Some(v),
            ..Choice::default()
        };
    }
    if preview {
        return Choice {
            version: svc.preview,
            ..Choice::default()
        };
    }
    let Some(c) = svc.controls.as_deref() else {
        return Choice {
            version: svc.pick_weighted(),
            weighted: true,
            ..Choice::default()
        };
    };
    let mut choice = Choice::default();
    let has_endpoints = |v: usize| !svc.versions[v].endpoints.is_empty();
    if let Some(rule) = c
        .rules
        .iter()
        .find(|r| has_endpoints(r.version) && r.matches(headers))
    {
        choice.version = Some(rule.version);
    } else if let Some(sticky) = &c.sticky {
        let pinned = cookie(headers, &sticky.cookie).and_then(|value| {
            sticky
                .tokens
                .iter()
                .position(|(t, _)| t.as_bytes() == value)
                .filter(|&v| svc.versions[v].weight > 0)
        });
        choice.weighted = true;
        choice.version = pinned.or_else(|| {
            let v = svc.pick_weighted()?;
            choice.set_cookie = Some(sticky.tokens[v].1.clone());
            Some(v)
        });
    } else {
        choice.version = svc.pick_weighted();
        choice.weighted = true;
    }
    if let (Some((m, percent)), Some(v)) = (c.mirror, choice.version) {
        if m != v && has_endpoints(m) && c.mirror_this(percent) {
            choice.mirror = Some(m);
        }
    }
    choice
}

impl Controls {
    /// Spreads `percent` of the calls evenly (the n-th call is mirrored when
    /// `floor((n+1)·p/100)` steps up), so any 100 consecutive calls mirror exactly `percent`.
    fn mirror_this(&self, percent: u32) -> bool {
        let n = self.mirror_cursor.fetch_add(1, Relaxed);
        let p = u64::from(percent);
        (n + 1) * p / 100 != n * p / 100
    }
}

impl Rule {
    fn matches(&self, headers: &HeaderMap) -> bool {
        self.headers.iter().all(|(name, m)| {
            headers
                .get_all(name)
                .iter()
                .any(|v| m.matches(v.as_bytes()))
        }) && self
            .cookies
            .iter()
            .all(|(name, m)| cookie(headers, name).is_some_and(|v| m.matches(v)))
    }
}

/// The value of the first cookie called `name` in the request's `Cookie` headers.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers.get_all(header::COOKIE).iter().find_map(|h| {
        h.as_bytes().split(|&b| b == b';').find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            let (k, v) = (&pair[..eq], &pair[eq + 1..]);
            (k.trim_ascii() == name.as_bytes()).then(|| {
                let v = v.trim_ascii();
                v.strip_prefix(b"\"")
                    .and_then(|v| v.strip_suffix(b"\""))
                    .unwrap_or(v)
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RouterConfig;
    use crate::metrics::Metrics;
    use crate::table::Table;

    fn table(controls: &str) -> Table {
        let json = format!(
            r#"{{"services":{{"a":{{"versions":{{
            "v1":{{"weight":80,"endpoints":["127.0.0.1:1"]}},
            "v2":{{"weight":20,"endpoints":["127.0.0.1:2"]}}}}{controls}}}}}}}"#
        );
        Table::compile(
            RouterConfig::from_json(json.as_bytes()).unwrap(),
            &Metrics::default(),
        )
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn name(t: &Table, c: &Choice) -> String {
        t.by_host("a").unwrap().versions[c.version.unwrap()]
            .name
            .clone()
    }

    fn pick(t: &Table, h: &HeaderMap) -> Choice {
        choose(t.by_host("a").unwrap(), h, None, false)
    }

    #[test]
    fn exact_header_sends_every_match_and_nothing_else() {
        let t =
            table(r#","matches":[{"version":"v2","headers":[{"name":"x-beta","exact":"true"}]}]"#);
        let beta = headers(&[("x-beta", "true")]);
        let other = headers(&[("x-beta", "TRUE")]);
        let mut v2_unmatched = 0;
        for _ in 0..500 {
            let c = pick(&t, &beta);
            assert_eq!(name(&t, &c), "v2");
            assert!(!c.weighted, "a match must not fall back to other versions");
            if name(&t, &pick(&t, &other)) == "v2" {
                v2_unmatched += 1;
            }
        }
        // The rest keeps the weights: 20 % of 500.
        assert_eq!(v2_unmatched, 100);
    }

    #[test]
    fn regex_header_is_anchored_and_all_conditions_must_hold() {
        let t = table(
            r#","matches":[{"version":"v2","headers":[
                {"name":"x-user","regex":"(alice|bob)@corp"},
                {"name":"x-team","exact":"qa"}]}]"#,
        );
        let s = t.by_host("a").unwrap();
        let m = |pairs: &[(&str, &str)]| {
            let c = choose(s, &headers(pairs), None, false);
            c.version == Some(1) && !c.weighted
        };
        assert!(m(&[("x-user", "alice@corp"), ("x-team", "qa")]));
        assert!(!m(&[("x-user", "alice@corp.evil"), ("x-team", "qa")]));
        assert!(!m(&[("x-user", "mallory@corp"), ("x-team", "qa")]));
        assert!(!m(&[("x-user", "bob@corp")]));
        // Any of several values of a repeated header may match.
        assert!(m(&[
            ("x-user", "carol"),
            ("x-user", "bob@corp"),
            ("x-team", "qa")
        ]));
    }

    #[test]
    fn cookie_match_reads_every_cookie_header() {
        let t =
            table(r#","matches":[{"version":"v2","cookies":[{"name":"beta","regex":"1|yes"}]}]"#);
        let s = t.by_host("a").unwrap();
        let m = |pairs: &[(&str, &str)]| {
            let c = choose(s, &headers(pairs), None, false);
            c.version == Some(1) && !c.weighted
        };
        assert!(m(&[("cookie", "a=b; beta=yes")]));
        assert!(m(&[("cookie", "a=b"), ("cookie", "beta=\"1\"")]));
        assert!(!m(&[("cookie", "xbeta=1; beta=no")]));
        assert!(!m(&[("cookie", "abeta=1")]));
        assert!(!m(&[("x-beta", "1")]));
    }

    #[test]
    fn ab_rule_with_zero_weight_candidate() {
        // A/B: the candidate has weight 0 and only the match reaches it.
        let json = r#"{"services":{"a":{"versions":{
            "v1":{"weight":100,"endpoints":["127.0.0.1:1"]},
            "v2":{"weight":0,"endpoints":["127.0.0.1:2"]}},
            "matches":[{"version":"v2","headers":[{"name":"x-group","exact":"b"}]}]}}}"#;
        let t = Table::compile(
            RouterConfig::from_json(json.as_bytes()).unwrap(),
            &Metrics::default(),
        );
        for _ in 0..100 {
            assert_eq!(name(&t, &pick(&t, &headers(&[("x-group", "b")]))), "v2");
            assert_eq!(name(&t, &pick(&t, &headers(&[("x-group", "a")]))), "v1");
        }
    }

    #[test]
    fn rule_without_endpoints_is_skipped() {
        let json = r#"{"services":{"a":{"versions":{
            "v1":{"weight":100,"endpoints":["127.0.0.1:1"]},
            "v2":{"weight":0}},
            "matches":[{"version":"v2","headers":[{"name":"x-beta","exact":"1"}]}]}}}"#;
        let t = Table::compile(
            RouterConfig::from_json(json.as_bytes()).unwrap(),
            &Metrics::default(),
        );
        assert_eq!(name(&t, &pick(&t, &headers(&[("x-beta", "1")]))), "v1");
    }

    #[test]
    fn mirror_copies_exactly_the_percentage_of_other_versions_requests() {
        let t = table(r#","mirror":{"version":"v2","percent":25}"#);
        let (mut served_v1, mut mirrored) = (0, 0);
        for _ in 0..1000 {
            let c = pick(&t, &HeaderMap::new());
            if name(&t, &c) == "v1" {
                served_v1 += 1;
                mirrored += usize::from(c.mirror == Some(1));
            } else {
                // Requests the mirror version serves itself are never copied to it.
                assert_eq!(c.mirror, None);
            }
        }
        assert_eq!(served_v1, 800);
        assert_eq!(mirrored, 200);
        // Forced and preview requests are not mirrored.
        let s = t.by_host("a").unwrap();
        assert_eq!(choose(s, &HeaderMap::new(), Some(0), false).mirror, None);
        let t = table(r#","mirror":{"version":"v2","percent":0}"#);
        assert!((0..100).all(|_| pick(&t, &HeaderMap::new()).mirror.is_none()));
        let t = table(r#","mirror":{"version":"v2","percent":100}"#);
        assert!((0..100).all(|_| {
            let c = pick(&t, &HeaderMap::new());
            c.version == Some(1) || c.mirror == Some(1)
        }));
    }

    #[test]
    fn sticky_cookie_pins_a_session_while_its_version_has_weight() {
        let t = table(r#","sticky":true"#);
        let first = pick(&t, &HeaderMap::new());
        let set = first
            .set_cookie
            .clone()
            .expect("a new session gets a cookie");
        let set = set.to_str().unwrap();
        assert!(set.starts_with("dronectl-a="), "{set}");
        assert!(set.contains("HttpOnly") && set.contains("Path=/"), "{set}");
        let pair = set.split(';').next().unwrap().to_string();
        let v = name(&t, &first);
        for _ in 0..200 {
            let c = pick(&t, &headers(&[("cookie", &format!("x=1; {pair}"))]));
            assert_eq!(name(&t, &c), v);
            assert_eq!(c.set_cookie, None);
        }
        // A weight change keeps the session; a version without weight releases it.
        let json = |w1: u8, w2: u8| {
            format!(
                r#"{{"services":{{"a":{{"versions":{{
                "v1":{{"weight":{w1},"endpoints":["127.0.0.1:1"]}},
                "v2":{{"weight":{w2},"endpoints":["127.0.0.1:2"]}}}},"sticky":true}}}}}}"#
            )
        };
        let compile = |j: String| {
            Table::compile(
                RouterConfig::from_json(j.as_bytes()).unwrap(),
                &Metrics::default(),
            )
        };
        let cookie_for = |version: &str| format!("dronectl-a={}", version_token(version));
        let t2 = compile(json(50, 50));
        for _ in 0..50 {
            let c = pick(&t2, &headers(&[("cookie", &cookie_for("v2"))]));
            assert_eq!(name(&t2, &c), "v2");
        }
        let t3 = compile(json(100, 0));
        let c = pick(&t3, &headers(&[("cookie", &cookie_for("v2"))]));
        assert_eq!(name(&t3, &c), "v1");
        assert!(c.set_cookie.is_some(), "moved sessions get a new cookie");
        // A forged or unknown token is a new session.
        let c = pick(&t2, &headers(&[("cookie", "dronectl-a=0000")]));
        assert!(c.set_cookie.is_some());
    }

    #[test]
    fn version_tokens_are_stable_hex() {
        assert_eq!(version_token("v1"), version_token("v1"));
        assert_ne!(version_token("v1"), version_token("v2"));
        assert_eq!(version_token("1.0.0-abc").len(), 16);
    }
}
