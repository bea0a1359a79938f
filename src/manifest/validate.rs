//! Checks beyond what the types enforce: names, paths, and cross-references between
//! entries (routes owned twice, unknown dependencies, undefined strategies and analyses).

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::{Component, Path};

use serde_saphyr::Spanned;

use super::{Manifest, Metric, Position, Step, StrategyKind, Target};
use crate::names;

/// How serious a finding is. Errors make `validate` exit 2 and stop every other command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One finding, with the place in the manifest it is about.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Where in the document, as a dotted path (`services.api.depends_on`).
    pub field: String,
    pub position: Option<Position>,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        match &self.position {
            Some(p) => write!(
                f,
                "{}:{}: {severity}: {}: {}",
                p.line, p.column, self.field, self.message
            ),
            None => write!(f, "{severity}: {}: {}", self.field, self.message),
        }
    }
}

struct Findings(Vec<Diagnostic>);

impl Findings {
    fn push<T>(
        &mut self,
        severity: Severity,
        field: String,
        at: Option<&Spanned<T>>,
        message: String,
    ) {
        let position = at.and_then(|s| Position::from_location(s.referenced));
        // Names and values come from the manifest: shown escaped, whatever they contain.
        self.0.push(Diagnostic {
            severity,
            field: names::shown(&field).into_owned(),
            position,
            message: names::shown(&message).into_owned(),
        });
    }
    fn error<T>(&mut self, field: String, at: Option<&Spanned<T>>, message: impl Into<String>) {
        self.push(Severity::Error, field, at, message.into());
    }
    fn warning<T>(&mut self, field: String, at: Option<&Spanned<T>>, message: impl Into<String>) {
        self.push(Severity::Warning, field, at, message.into());
    }
    /// Refuses control characters (tab and line breaks included), the characters
    /// [`names::refused_char`] lists and, unless `spaces` is true, whitespace in a value that
    /// is one token or one line: an image, a URL, a probe path.
    fn single_line<T>(
        &mut self,
        field: String,
        at: Option<&Spanned<T>>,
        value: &str,
        spaces: bool,
    ) {
        let bad = names::find_not_single_line(value)
            .or_else(|| value.chars().find(|c| !spaces && c.is_whitespace()));
        if let Some(c) = bad {
            self.error(
                field,
                at,
                format!("`{value}` contains {}", names::describe_char(c)),
            );
        }
    }
}

/// Checks a parsed manifest. Returns every finding, errors first, in document order.
pub fn validate(manifest: &Manifest) -> Vec<Diagnostic> {
    let mut diagnostics = check_entries(manifest);
    diagnostics.extend(super::overrides::check(manifest));
    let mut out = Findings(Vec::new());
    check_public_entry(manifest, &mut out);
    diagnostics.extend(out.0);
    diagnostics.sort_by_key(|d| {
        (
            d.severity == Severity::Warning,
            d.position.map(|p| (p.line, p.column)),
        )
    });
    diagnostics
}

/// The checks of one manifest's entries as written (overrides not applied), unsorted.
pub(super) fn check_entries(manifest: &Manifest) -> Vec<Diagnostic> {
    let mut out = Findings(Vec::new());
    if let Err(e) = names::validate_label(&manifest.app.value) {
        out.error("app".into(), Some(&manifest.app), e.to_string());
    }
    check_services(manifest, &mut out);
    check_infrastructure(manifest, &mut out);
    check_environments(manifest, &mut out);
    check_strategies(manifest, &mut out);
    out.0
}

/// Each Kubernetes environment's public entry with its overrides applied: TLS needs every
/// public service to name its hosts; publishing routes through an Ingress without TLS is
/// plain HTTP (a warning). A gateway's listeners own TLS, so gateway environments are not
/// judged here.
fn check_public_entry(m: &Manifest, out: &mut Findings) {
    for (name, env) in &m.environments {
        let e = &env.value;
        if e.target != Target::Kubernetes || e.gateway.is_some() {
            continue;
        }
        let effective = super::effective(m, name);
        let public: Vec<(&String, &super::Service)> = effective
            .services
            .iter()
            .filter(|(_, s)| !s.value.routes.is_empty())
            .map(|(n, s)| (n, &s.value))
            .collect();
        let tls = e.ingress.as_ref().filter(|i| i.value.tls.is_some());
        match tls {
            Some(ingress) => {
                for (service, s) in &public {
                    if s.hosts.is_empty() {
                        out.error(
                            format!("environments.{name}.ingress.tls"),
                            Some(ingress),
                            format!("TLS needs host names, and service `{service}` publishes routes without `hosts`: set `services.{service}.hosts` or `environments.{name}.services.{service}.hosts`"),
                        );
                    }
                }
            }
            None if !public.is_empty() => {
                let names: Vec<&str> = public.iter().map(|(n, _)| n.as_str()).collect();
                out.warning(
                    format!("environments.{name}"),
                    Some(env),
                    format!(
                        "publishes the routes of {} over plain HTTP: set `ingress.tls` (a Secret, or a cert-manager issuer) and the services' `hosts`",
                        names.join(", ")
                    ),
                );
            }
            None => {}
        }
    }
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
    let label_ok = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b.len() <= 63
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    };
    if host.len() > 253 || !bare.split('.').all(label_ok) {
        return Err(format!(
            "host `{host}` is not a valid host name: lowercase letters, digits, `-` and `.` (labels of 1 to 63 characters, at most 253 in all), optionally starting with `*.`"
        ));
    }
    Ok(())
}

/// A Kubernetes object name (DNS-1123 subdomain): a Secret, an IngressClass, an issuer.
fn check_object_name(what: &str, name: &str) -> Result<(), String> {
    if name.starts_with("*.") || check_host(name).is_err() {
        return Err(format!(
            "{what} `{name}` is not a Kubernetes object name: lowercase letters, digits, `-` and `.`, at most 253 characters"
        ));
    }
    Ok(())
}

/// Probe timings map to whole seconds on Kubernetes; interval and timeout are at least 1 s.
fn check_health_timings(field: &str, h: &super::Health, out: &mut Findings) {
    for (key, value, min_one) in [
        ("interval", &h.interval, true),
        ("timeout", &h.timeout, true),
        ("start_period", &h.start_period, false),
    ] {
        let Some(d) = value else { continue };
        let ms = d.value.0.as_millis();
        if ms % 1000 != 0 {
            out.error(
                format!("{field}.health.{key}"),
                Some(d),
                format!("`{}` is not a whole number of seconds (Kubernetes probes count seconds)", d.value),
            );
        } else if min_one && ms == 0 {
            out.error(
                format!("{field}.health.{key}"),
                Some(d),
                "must be at least 1s",
            );
        }
    }
    if let Some(r) = &h.retries {
        if r.value == 0 {
            out.error(
                format!("{field}.health.retries"),
                Some(r),
                "must be at least 1",
            );
        }
    }
}

fn check_services(m: &Manifest, out: &mut Findings) {
    // (route, host or "" for any host) → owner.
    let mut route_owner: HashMap<(String, String), &str> = HashMap::new();
    let mut path_owner: HashMap<String, &str> = HashMap::new();
    for (name, service) in &m.services {
        let field = format!("services.{name}");
        if let Err(e) = names::validate_name(name) {
            out.error(field.clone(), Some(service), e.to_string());
        }
        if let Some(template) = &service.value.template {
            out.single_line(format!("{field}.template"), Some(service), template, false);
        }
        if m.infrastructure.contains_key(name) {
            out.error(
                field.clone(),
                Some(service),
                format!("`{name}` is also an infrastructure entry; names must be unique"),
            );
        }
        let s = &service.value;
        match check_relative_path(&s.path.value) {
            Err(why) => out.error(format!("{field}.path"), Some(&s.path), why),
            Ok(normal) => {
                if let Some(other) = path_owner.insert(normal.clone(), name) {
                    out.error(
                        format!("{field}.path"),
                        Some(&s.path),
                        format!("path `{normal}` is also the path of service `{other}`"),
                    );
                }
            }
        }
        if s.port == 0 {
            out.error(
                format!("{field}.port"),
                Some(service),
                "port must be between 1 and 65535",
            );
        }
        for (probe, path) in [
            ("liveness", &s.health.liveness),
            ("readiness", &s.health.readiness),
        ] {
            if !path.starts_with('/') {
                out.error(
                    format!("{field}.health.{probe}"),
                    Some(service),
                    format!("`{path}` must start with `/`"),
                );
            }
            // It becomes an HTTP request line: a space or line break would forge one.
            out.single_line(
                format!("{field}.health.{probe}"),
                Some(service),
                path,
                false,
            );
        }
        check_health_timings(&field, &s.health, out);
        let mut hosts = BTreeSet::new();
        for (i, host) in s.hosts.iter().enumerate() {
            if let Err(why) = check_host(&host.value) {
                out.error(format!("{field}.hosts[{i}]"), Some(host), why);
            } else if !hosts.insert(host.value.as_str()) {
                out.error(
                    format!("{field}.hosts[{i}]"),
                    Some(host),
                    format!("host `{}` is listed twice", host.value),
                );
            }
        }
        if !s.hosts.is_empty() && s.routes.is_empty() {
            out.warning(
                format!("{field}.hosts"),
                s.hosts.first(),
                "hosts without routes have no effect: the service has no public route",
            );
        }
        let route_hosts: Vec<&str> = if hosts.is_empty() {
            vec![""]
        } else {
            hosts.iter().copied().collect()
        };
        for (i, route) in s.routes.iter().enumerate() {
            match normalize_route(&route.value) {
                Err(why) => out.error(format!("{field}.routes[{i}]"), Some(route), why),
                Ok(normal) => {
                    for host in &route_hosts {
                        let key = (normal.clone(), host.to_string());
                        if let Some(other) = route_owner.insert(key, name) {
                            let on = if host.is_empty() {
                                String::new()
                            } else {
                                format!(" on host `{host}`")
                            };
                            let why = if other == name {
                                format!("route `{normal}` is listed twice")
                            } else {
                                format!("route `{normal}`{on} is also owned by service `{other}`")
                            };
                            out.error(format!("{field}.routes[{i}]"), Some(route), why);
                            break;
                        }
                    }
                }
            }
        }
        for (i, dep) in s.depends_on.iter().enumerate() {
            let dep_name = dep.value.as_str();
            if dep_name == name {
                out.error(
                    format!("{field}.depends_on[{i}]"),
                    Some(dep),
                    "a service cannot depend on itself",
                );
            } else if !m.services.contains_key(dep_name) && !m.infrastructure.contains_key(dep_name)
            {
                out.error(
                    format!("{field}.depends_on[{i}]"),
                    Some(dep),
                    format!(
                        "unknown dependency `{dep_name}`: not a service or infrastructure entry{}",
                        suggest(dep_name, m.services.keys().chain(m.infrastructure.keys()))
                    ),
                );
            }
        }
        for key in s.env.keys() {
            if !is_env_name(key) {
                out.error(
                    format!("{field}.env.{key}"),
                    Some(service),
                    format!("`{key}` is not a valid environment variable name"),
                );
            }
        }
        check_secrets(&field, s, out);
        if let Some(volume) = &s.volume {
            check_volume(format!("{field}.volume"), Some(service), volume, out);
        }
        if let Some(strategy) = &s.strategy {
            check_strategy_ref(m, format!("{field}.strategy"), strategy, out);
        }
        if let Some(a) = &s.autoscale {
            check_autoscale(&format!("{field}.autoscale"), a, out);
        }
    }
    check_cycles(m, out);
}

/// `min` at least 1 and at most `max` (the HorizontalPodAutoscaler's own rules), targets
/// between 1 and 100 percent.
fn check_autoscale(field: &str, a: &super::Autoscale, out: &mut Findings) {
    if a.min.value < 1 {
        out.error(
            format!("{field}.min"),
            Some(&a.min),
            "min must be at least 1 (an autoscaler cannot scale to zero)",
        );
    }
    if a.min.value > a.max.value {
        // At the later of the two: the one an environment's override wrote.
        let at = |s: &Spanned<u32>| (s.referenced.line(), s.referenced.column());
        let (key, later) = if at(&a.min) > at(&a.max) {
            ("min", &a.min)
        } else {
            ("max", &a.max)
        };
        out.error(
            format!("{field}.{key}"),
            Some(later),
            format!(
                "max ({}) must be at least min ({})",
                a.max.value, a.min.value
            ),
        );
    }
    for (key, target) in [("cpu", &a.cpu), ("memory", &a.memory)] {
        if let Some(t) = target {
            if t.value == 0 || t.value > 100 {
                out.error(
                    format!("{field}.{key}"),
                    Some(t),
                    format!(
                        "{key} target {}% must be between 1 and 100 (percent of the {key} request)",
                        t.value
                    ),
                );
            }
        }
    }
}

fn check_infrastructure(m: &Manifest, out: &mut Findings) {
    for (name, infra) in &m.infrastructure {
        let field = format!("infrastructure.{name}");
        if let Err(e) = names::validate_name(name) {
            out.error(field.clone(), Some(infra), e.to_string());
        }
        if infra.value.image.trim().is_empty() {
            out.error(
                format!("{field}.image"),
                Some(infra),
                "image must not be empty",
            );
        } else {
            out.single_line(
                format!("{field}.image"),
                Some(infra),
                &infra.value.image,
                false,
            );
        }
        if let Some(scheme) = &infra.value.scheme {
            let mut chars = scheme.chars();
            let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
                && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+.-".contains(c));
            if !valid {
                out.error(
                    format!("{field}.scheme"),
                    Some(infra),
                    format!("`{scheme}` is not a URL scheme: a lowercase letter, then letters, digits, `+`, `.` or `-`"),
                );
            }
        }
        for key in infra.value.env.keys() {
            if !is_env_name(key) {
                out.error(
                    format!("{field}.env.{key}"),
                    Some(infra),
                    format!("`{key}` is not a valid environment variable name"),
                );
            }
        }
        if infra.value.port == 0 {
            out.error(
                format!("{field}.port"),
                Some(infra),
                "port must be between 1 and 65535",
            );
        }
        if let Some(volume) = &infra.value.volume {
            check_volume(format!("{field}.volume"), Some(infra), volume, out);
        }
    }
}

fn check_environments(m: &Manifest, out: &mut Findings) {
    for (name, env) in &m.environments {
        let field = format!("environments.{name}");
        if let Err(e) = names::validate_label(name) {
            out.error(field.clone(), Some(env), e.to_string());
        }
        let e = &env.value;
        if e.target == Target::Docker {
            for (key, set) in [
                ("context", e.context.is_some()),
                ("namespace", e.namespace.is_some()),
                ("gateway", e.gateway.is_some()),
                ("ingress", e.ingress.is_some()),
            ] {
                if set {
                    out.warning(
                        format!("{field}.{key}"),
                        Some(env),
                        format!(
                            "`{key}` only applies to kubernetes environments and is ignored here"
                        ),
                    );
                }
            }
        }
        if let Some(registry) = &e.registry {
            if let Err(why) = super::check_registry(registry) {
                out.error(format!("{field}.registry"), Some(env), why);
            }
        }
        if let Some(context) = &e.context {
            out.single_line(format!("{field}.context"), Some(env), context, true);
        }
        if let Some(gateway) = &e.gateway {
            out.single_line(
                format!("{field}.gateway.name"),
                Some(env),
                &gateway.name,
                false,
            );
            if let Some(ns) = &gateway.namespace {
                if let Err(err) = names::validate_label(ns) {
                    out.error(
                        format!("{field}.gateway.namespace"),
                        Some(env),
                        err.to_string(),
                    );
                }
            }
        }
        if let Some(ns) = &e.namespace {
            if let Err(err) = names::validate_label(ns) {
                out.error(format!("{field}.namespace"), Some(env), err.to_string());
            }
        }
        if let Some(strategy) = &e.strategy {
            check_strategy_ref(m, format!("{field}.strategy"), strategy, out);
        }
        if let Some(ingress) = &e.ingress {
            check_ingress(&field, e, ingress, out);
        }
    }
}

fn check_ingress(
    field: &str,
    e: &super::EnvironmentSpec,
    ingress: &Spanned<super::IngressSettings>,
    out: &mut Findings,
) {
    let i = &ingress.value;
    if let Some(class) = &i.class {
        if let Err(why) = check_object_name("ingress class", class) {
            out.error(format!("{field}.ingress.class"), Some(ingress), why);
        }
    }
    if let Some(tls) = &i.tls {
        if tls.secret.is_none() && tls.issuer.is_none() && tls.cluster_issuer.is_none() {
            out.error(
                format!("{field}.ingress.tls"),
                Some(ingress),
                "TLS needs a certificate: `secret` (an existing kubernetes.io/tls Secret), or `issuer` / `cluster_issuer` (cert-manager fills the Secret)",
            );
        }
        if tls.issuer.is_some() && tls.cluster_issuer.is_some() {
            out.error(
                format!("{field}.ingress.tls"),
                Some(ingress),
                "set `issuer` or `cluster_issuer`, not both",
            );
        }
        for (key, value, what) in [
            ("secret", &tls.secret, "secret"),
            ("issuer", &tls.issuer, "issuer"),
            ("cluster_issuer", &tls.cluster_issuer, "cluster issuer"),
        ] {
            if let Some(v) = value {
                if let Err(why) = check_object_name(what, v) {
                    out.error(format!("{field}.ingress.tls.{key}"), Some(ingress), why);
                }
            }
        }
    }
    if e.target == Target::Kubernetes && e.gateway.is_some() {
        for (key, set, why) in [
            ("class", i.class.is_some(), "the gateway's own class decides which controller serves it"),
            ("tls", i.tls.is_some(), "the gateway's listeners terminate TLS (the Gateway's `spec.listeners[].tls`), not the HTTPRoutes dronectl writes"),
        ] {
            if set {
                out.warning(
                    format!("{field}.ingress.{key}"),
                    Some(ingress),
                    format!("ignored in an environment with a gateway: {why}"),
                );
            }
        }
    }
}

/// A `match` step: at least one condition; valid header and cookie names, values, regexes.
fn check_match_step<T>(
    field: &str,
    step: &Spanned<T>,
    ms: &crate::manifest::MatchStep,
    out: &mut Findings,
) {
    if ms.header.is_empty() && ms.cookie.is_empty() {
        out.error(
            field.to_string(),
            Some(step),
            "a `match` step needs a `header` or a `cookie` to match",
        );
    }
    for (kind, list) in [("header", &ms.header), ("cookie", &ms.cookie)] {
        for (name, value) in list {
            let name_ok = if kind == "header" {
                http::HeaderName::from_bytes(name.as_bytes()).is_ok()
            } else {
                dronectl_router::config::is_cookie_name(name)
            };
            if !name_ok {
                out.error(
                    format!("{field}.match.{kind}"),
                    Some(step),
                    format!("`{}` is not a valid {kind} name", name.escape_debug()),
                );
            }
            match value {
                crate::manifest::MatchValue::Exact(v) => {
                    if http::HeaderValue::from_str(&v.0).is_err()
                        || v.0.contains(';') && kind == "cookie"
                    {
                        out.error(
                            format!("{field}.match.{kind}.{name}"),
                            Some(step),
                            format!("`{}` cannot be a {kind} value", v.0.escape_debug()),
                        );
                    }
                }
                crate::manifest::MatchValue::Regex(r) => {
                    if let Err(e) = dronectl_router::config::compile_regex(&r.regex) {
                        out.error(
                            format!("{field}.match.{kind}.{name}.regex"),
                            Some(step),
                            format!("invalid regex: {}", e.lines().last().unwrap_or_default()),
                        );
                    }
                }
            }
        }
    }
}

fn check_strategies(m: &Manifest, out: &mut Findings) {
    for (name, strategy) in &m.strategies {
        let field = format!("strategies.{name}");
        out.single_line(field.clone(), Some(strategy), name, false);
        let s = &strategy.value;
        match s.kind {
            StrategyKind::Canary => {
                if s.steps.is_empty() {
                    out.error(
                        format!("{field}.steps"),
                        Some(strategy),
                        "a canary needs at least one step",
                    );
                }
                if !s.steps.iter().any(|st| matches!(st.value, Step::Weight(_))) {
                    out.warning(
                        format!("{field}.steps"),
                        Some(strategy),
                        "no `weight` step: the canary never receives traffic before full promotion",
                    );
                }
            }
            StrategyKind::BlueGreen => {
                for (i, step) in s.steps.iter().enumerate() {
                    if let Step::Weight(w) = step.value {
                        if w != 0 && w != 100 {
                            out.error(format!("{field}.steps[{i}]"), Some(step), format!("a blue-green switches all traffic at once: weight must be 0 or 100, not {w}"));
                        }
                    }
                }
            }
            StrategyKind::Ab => {
                if !s.steps.iter().any(|st| matches!(st.value, Step::Match(_))) {
                    out.error(
                        format!("{field}.steps"),
                        Some(strategy),
                        "an A/B strategy needs a `match` step: the match decides who sees the new version",
                    );
                }
                for (i, step) in s.steps.iter().enumerate() {
                    if let Step::Weight(_) = step.value {
                        out.error(format!("{field}.steps[{i}]"), Some(step), "an A/B strategy has no `weight` steps: a match decides, not weight (use `type: canary` to combine them)");
                    }
                }
            }
            StrategyKind::Rolling => {
                if let Some(step) = s.steps.first() {
                    out.error(format!("{field}.steps"), Some(step), "`steps` do not apply to rolling strategies (use max_surge and max_unavailable)");
                }
            }
        }
        if s.kind != StrategyKind::Rolling && (s.max_surge.is_some() || s.max_unavailable.is_some())
        {
            out.error(
                field.clone(),
                Some(strategy),
                format!(
                    "`max_surge`/`max_unavailable` only apply to rolling strategies, not {}",
                    s.kind
                ),
            );
        }
        for key in [&s.max_surge, &s.max_unavailable].into_iter().flatten() {
            if !is_int_or_percent(&key.0) {
                out.error(
                    field.clone(),
                    Some(strategy),
                    format!("`{key}` must be a count (`1`) or a percentage (`25%`)"),
                );
            }
        }
        let mut last_weight = 0;
        for (i, step) in s.steps.iter().enumerate() {
            match &step.value {
                Step::Weight(w) if *w > 100 => out.error(
                    format!("{field}.steps[{i}]"),
                    Some(step),
                    format!("weight {w} is over 100"),
                ),
                Step::Weight(w) if *w < last_weight => {
                    out.warning(
                        format!("{field}.steps[{i}]"),
                        Some(step),
                        format!("weight {w} is lower than the previous weight {last_weight}"),
                    );
                    last_weight = *w;
                }
                Step::Weight(w) => last_weight = *w,
                Step::Analysis(a) => {
                    check_analysis_ref(m, format!("{field}.steps[{i}]"), step, a, out)
                }
                Step::Pause(_) => {}
                Step::Match(ms) => check_match_step(&format!("{field}.steps[{i}]"), step, ms, out),
                Step::Mirror(p) if *p > 100 => out.error(
                    format!("{field}.steps[{i}]"),
                    Some(step),
                    format!("mirror {p} is over 100 (a percentage of requests)"),
                ),
                Step::Mirror(_) => {}
            }
            if matches!(step.value, Step::Match(_) | Step::Mirror(_))
                && !matches!(s.kind, StrategyKind::Canary | StrategyKind::Ab)
            {
                out.error(
                    format!("{field}.steps[{i}]"),
                    Some(step),
                    format!(
                        "`match` and `mirror` steps apply to canary and ab strategies, not {}",
                        s.kind
                    ),
                );
            }
        }
        if s.sticky && !matches!(s.kind, StrategyKind::Canary | StrategyKind::Ab) {
            out.error(
                format!("{field}.sticky"),
                Some(strategy),
                format!(
                    "`sticky` applies to canary and ab strategies, not {}",
                    s.kind
                ),
            );
        }
    }
    for (name, analysis) in &m.analyses {
        let field = format!("analyses.{name}");
        out.single_line(field.clone(), Some(analysis), name, false);
        let a = &analysis.value;
        for (key, value) in [("url", &a.url), ("address", &a.address)] {
            if let Some(value) = value {
                out.single_line(format!("{field}.{key}"), Some(analysis), value, false);
            }
        }
        let needs_threshold = matches!(
            a.metric,
            Metric::ErrorRate
                | Metric::LatencyP50
                | Metric::LatencyP95
                | Metric::LatencyP99
                | Metric::Prometheus
        );
        match (needs_threshold, a.threshold) {
            (true, None) => out.error(
                format!("{field}.threshold"),
                Some(analysis),
                "this metric needs a `threshold`",
            ),
            (_, Some(t)) if !(t.is_finite() && t >= 0.0) => out.error(
                format!("{field}.threshold"),
                Some(analysis),
                "threshold must be a non-negative number",
            ),
            (_, Some(t)) if a.metric == Metric::ErrorRate && t > 1.0 => out.error(
                format!("{field}.threshold"),
                Some(analysis),
                format!("error-rate threshold {t} is a fraction between 0 and 1 (use 0.01 for 1%)"),
            ),
            _ => {}
        }
        if a.metric == Metric::Http && a.url.is_none() {
            out.error(
                format!("{field}.url"),
                Some(analysis),
                "an http analysis needs a `url`",
            );
        }
        if a.metric == Metric::Prometheus && a.query.is_none() {
            out.error(
                format!("{field}.query"),
                Some(analysis),
                "a prometheus analysis needs a `query`",
            );
        }
        if a.count == 0 {
            out.error(
                format!("{field}.count"),
                Some(analysis),
                "count must be at least 1",
            );
        }
        if a.failure_limit == 0 || a.failure_limit > a.count {
            out.error(
                format!("{field}.failure_limit"),
                Some(analysis),
                format!("failure_limit must be between 1 and count ({})", a.count),
            );
        }
        if a.interval.0.is_zero() {
            out.error(
                format!("{field}.interval"),
                Some(analysis),
                "interval must be longer than 0s",
            );
        }
    }
}

fn check_strategy_ref(m: &Manifest, field: String, at: &Spanned<String>, out: &mut Findings) {
    if !m.strategies.contains_key(&at.value) {
        out.error(
            field,
            Some(at),
            format!(
                "strategy `{}` is not defined under `strategies`{}",
                at.value,
                suggest(&at.value, m.strategies.keys())
            ),
        );
    }
}

fn check_analysis_ref<T>(
    m: &Manifest,
    field: String,
    at: &Spanned<T>,
    name: &str,
    out: &mut Findings,
) {
    if !m.analyses.contains_key(name) {
        out.error(
            field,
            Some(at),
            format!(
                "analysis `{name}` is not defined under `analyses`{}",
                suggest(name, m.analyses.keys())
            ),
        );
    }
}

/// Reports each dependency cycle between services once. A depth-first search with an
/// explicit stack: a manifest's dependency chain may be as long as its author likes (a
/// 25,000-service chain must not overflow the thread's stack).
fn check_cycles(m: &Manifest, out: &mut Findings) {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    let mut marks: HashMap<&str, Mark> = HashMap::with_capacity(m.services.len());
    // The current path: each service with the index of the next dependency to look at.
    let mut path: Vec<(&str, usize)> = Vec::new();
    for root in m.services.keys() {
        if marks.contains_key(root.as_str()) {
            continue;
        }
        marks.insert(root, Mark::Visiting);
        path.push((root, 0));
        while let Some((name, next)) = path.last_mut() {
            let name: &str = name;
            let deps = &m.services[name].value.depends_on;
            let Some(dep) = deps.get(*next) else {
                marks.insert(name, Mark::Done);
                path.pop();
                continue;
            };
            *next += 1;
            let Some((dep_name, _)) = m.services.get_key_value(dep.value.as_str()) else {
                continue;
            };
            if dep_name == name {
                continue;
            }
            match marks.get(dep_name.as_str()) {
                Some(Mark::Visiting) => {
                    let start = path.iter().position(|(s, _)| s == dep_name).unwrap_or(0);
                    let mut cycle: Vec<&str> = path[start..].iter().map(|(s, _)| *s).collect();
                    cycle.push(dep_name);
                    out.error(
                        format!("services.{name}.depends_on"),
                        Some(dep),
                        format!("dependency cycle: {}", show_cycle(&cycle)),
                    );
                }
                Some(Mark::Done) => {}
                None => {
                    marks.insert(dep_name, Mark::Visiting);
                    path.push((dep_name, 0));
                }
            }
        }
    }
}

/// A mount path inside a container: absolute, one line.
fn check_volume<T>(field: String, at: Option<&Spanned<T>>, volume: &str, out: &mut Findings) {
    if !volume.starts_with('/') {
        out.error(
            field.clone(),
            at,
            format!("volume mount path `{volume}` must be absolute"),
        );
    }
    out.single_line(field, at, volume, true);
}

/// `a → b → a`; a long cycle shows its ends and how many services lie between.
fn show_cycle(cycle: &[&str]) -> String {
    const ENDS: usize = 4;
    if cycle.len() <= 2 * ENDS + 1 {
        return cycle.join(" → ");
    }
    format!(
        "{} → … {} more … → {}",
        cycle[..ENDS].join(" → "),
        cycle.len() - 2 * ENDS,
        cycle[cycle.len() - ENDS..].join(" → ")
    )
}

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

/// A service's `secrets`: names that are environment variable names (they become files
/// under `/run/secrets/` and Kubernetes Secret keys), each listed once, not also a plain
/// variable when given as one, and `from` references that Kubernetes accepts.
fn check_secrets(field: &str, s: &super::Service, out: &mut Findings) {
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

fn is_env_name(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_int_or_percent(v: &str) -> bool {
    let digits = v.strip_suffix('%').unwrap_or(v);
    !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
}

/// ", did you mean `x`?" for the closest known name, when one is close.
pub(super) fn suggest<'a>(name: &str, known: impl Iterator<Item = &'a String>) -> String {
    known
        .map(|k| (edit_distance(name, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min()
        .map(|(_, k)| format!("; did you mean `{k}`?"))
        .unwrap_or_default()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + usize::from(ca != *cb))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}
