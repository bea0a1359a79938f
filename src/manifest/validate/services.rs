//! Services and infrastructure entries: names, paths, ports, probes and their timings,
//! hosts and routes (each owned once), dependencies and their cycles, environment variable
//! names, volumes, autoscaling.

use std::collections::{BTreeSet, HashMap};

use serde_saphyr::Spanned;

use super::paths::{check_host, check_relative_path, normalize_route};
use super::secrets::check_secrets;
use super::strategies::check_strategy_ref;
use super::{suggest, Findings};
use crate::manifest::Manifest;
use crate::names;

pub(super) fn check_services(m: &Manifest, out: &mut Findings) {
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

/// Probe timings map to whole seconds on Kubernetes; interval and timeout are at least 1 s.
fn check_health_timings(field: &str, h: &crate::manifest::Health, out: &mut Findings) {
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
                format!(
                    "`{}` is not a whole number of seconds (Kubernetes probes count seconds)",
                    d.value
                ),
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

/// `min` at least 1 and at most `max` (the HorizontalPodAutoscaler's own rules), targets
/// between 1 and 100 percent.
fn check_autoscale(field: &str, a: &crate::manifest::Autoscale, out: &mut Findings) {
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

pub(super) fn check_infrastructure(m: &Manifest, out: &mut Findings) {
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

pub(super) fn is_env_name(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
