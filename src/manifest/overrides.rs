//! Per-environment overrides (`environments.<E>.services.<svc>`,
//! `environments.<E>.infrastructure.<name>`) and the effective manifest they make.
//!
//! The merge rule, the same for every field: the environment's value wins over the base
//! entry's; maps (`env`, `resources`) are merged key by key, and a key set to null removes
//! it; scalars (`replicas`, each `health` timing) and lists (`routes`, `hosts`, `command`) are
//! replaced as a whole. `public: false` takes a service's routes and hosts away in that
//! environment: it has no public entry there (no Ingress or HTTPRoute, no router route).
//! `autoscale` is a map too: `min`, `max`, `cpu` and `memory` are merged one by one
//! (`cpu: null` drops that target), `autoscale: null` turns autoscaling off, and an
//! environment that adds autoscaling to a service without it must give `min` and `max`.
//! Overrides are as strict as the rest of the manifest: an unknown field is a parse error,
//! an unknown service or infrastructure entry a validation error, both with their position.

use indexmap::IndexMap;
use serde::{Deserialize, Deserializer};
use serde_saphyr::Spanned;

use super::types::null_as_default;
use super::validate::suggest;
use super::{
    Autoscale, Diagnostic, Duration, Health, Manifest, Position, ResourceSpec, Resources,
    ScalarString, Severity,
};

/// What an environment may change in a service.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceOverride {
    /// Replaces the replica count.
    #[serde(default)]
    pub replicas: Option<u32>,
    /// Merged into the requests and limits, quantity by quantity (null removes one).
    #[serde(default)]
    pub resources: Option<ResourcesOverride>,
    /// Merged into the variables, key by key (null removes one).
    #[serde(default, deserialize_with = "null_as_default")]
    pub env: IndexMap<String, Option<ScalarString>>,
    /// Replaces the public routes.
    #[serde(default)]
    pub routes: Option<Vec<Spanned<String>>>,
    /// Replaces the host names of the public routes.
    #[serde(default)]
    pub hosts: Option<Vec<Spanned<String>>>,
    /// `false`: the service has no public routes in this environment.
    #[serde(default)]
    pub public: Option<bool>,
    /// Replaces probe paths and timings, each one that is written.
    #[serde(default)]
    pub health: Option<HealthOverride>,
    /// Merged into the autoscaling bounds and targets, key by key; null turns it off.
    #[serde(default, deserialize_with = "present")]
    pub autoscale: Option<Option<Spanned<AutoscaleOverride>>>,
}

/// Autoscaling keys to merge: absent keeps the base value; a null target removes it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoscaleOverride {
    #[serde(default)]
    pub min: Option<Spanned<u32>>,
    #[serde(default)]
    pub max: Option<Spanned<u32>>,
    #[serde(default, deserialize_with = "present")]
    pub cpu: Option<Option<Spanned<u32>>>,
    #[serde(default, deserialize_with = "present")]
    pub memory: Option<Option<Spanned<u32>>>,
}

/// Probe paths and timings to replace (absent keeps the base value).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthOverride {
    #[serde(default)]
    pub liveness: Option<String>,
    #[serde(default)]
    pub readiness: Option<String>,
    #[serde(default)]
    pub interval: Option<Spanned<Duration>>,
    #[serde(default)]
    pub timeout: Option<Spanned<Duration>>,
    #[serde(default)]
    pub retries: Option<Spanned<u32>>,
    #[serde(default)]
    pub start_period: Option<Spanned<Duration>>,
}

/// What an environment may change in an infrastructure entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfrastructureOverride {
    /// Merged into the variables, key by key (null removes one).
    #[serde(default, deserialize_with = "null_as_default")]
    pub env: IndexMap<String, Option<ScalarString>>,
    /// Replaces the command line.
    #[serde(default)]
    pub command: Option<Vec<String>>,
}

/// Requests and limits to merge.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourcesOverride {
    #[serde(default)]
    pub requests: Option<ResourceSpecOverride>,
    #[serde(default)]
    pub limits: Option<ResourceSpecOverride>,
}

/// CPU and memory to merge: absent keeps the base value, null removes it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceSpecOverride {
    #[serde(default, deserialize_with = "present")]
    pub cpu: Option<Option<ScalarString>>,
    #[serde(default, deserialize_with = "present")]
    pub memory: Option<Option<ScalarString>>,
}

/// Tells a key written as null (`Some(None)`) from a key not written (`None`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Some(Option::<T>::deserialize(deserializer)?))
}

/// The manifest as it applies in the environment `env`: its overrides merged over the base
/// entries, and `environments` holding only `env` (with its overrides, now applied, removed).
/// An overridden entry points at its override, so findings about merged values point there.
pub fn effective(manifest: &Manifest, env: &str) -> Manifest {
    let mut m = manifest.clone();
    m.environments.retain(|name, _| name == env);
    let Some(spec) = m.environments.get_mut(env) else {
        return m;
    };
    let services = std::mem::take(&mut spec.value.services);
    let infrastructure = std::mem::take(&mut spec.value.infrastructure);
    for (name, o) in services {
        if let Some(s) = m.services.get_mut(&name) {
            s.referenced = o.referenced;
            let (base, o) = (&mut s.value, o.value);
            if let Some(replicas) = o.replicas {
                base.replicas = replicas;
            }
            if let Some(r) = o.resources {
                merge_resources(&mut base.resources, r);
            }
            merge_env(&mut base.env, o.env);
            if let Some(routes) = o.routes {
                base.routes = routes;
            }
            if let Some(hosts) = o.hosts {
                base.hosts = hosts;
            }
            if let Some(h) = o.health {
                merge_health(&mut base.health, h);
            }
            if o.public == Some(false) {
                base.routes.clear();
                base.hosts.clear();
            }
            if let Some(autoscale) = o.autoscale {
                base.autoscale = merge_autoscale(base.autoscale.take(), autoscale);
            }
        }
    }
    for (name, o) in infrastructure {
        if let Some(i) = m.infrastructure.get_mut(&name) {
            i.referenced = o.referenced;
            let (base, o) = (&mut i.value, o.value);
            merge_env(&mut base.env, o.env);
            if let Some(command) = o.command {
                base.command = command;
            }
        }
    }
    m
}

fn merge_env(
    base: &mut IndexMap<String, ScalarString>,
    over: IndexMap<String, Option<ScalarString>>,
) {
    for (key, value) in over {
        match value {
            Some(v) => {
                base.insert(key, v);
            }
            None => {
                base.shift_remove(&key);
            }
        }
    }
}

fn merge_health(base: &mut Health, over: HealthOverride) {
    if let Some(path) = over.liveness {
        base.liveness = path;
    }
    if let Some(path) = over.readiness {
        base.readiness = path;
    }
    if over.interval.is_some() {
        base.interval = over.interval;
    }
    if over.timeout.is_some() {
        base.timeout = over.timeout;
    }
    if over.retries.is_some() {
        base.retries = over.retries;
    }
    if over.start_period.is_some() {
        base.start_period = over.start_period;
    }
}

/// The merged autoscaling settings: `None` when the override turns it off, or adds it
/// without both bounds (`check` reports that).
fn merge_autoscale(
    base: Option<Autoscale>,
    over: Option<Spanned<AutoscaleOverride>>,
) -> Option<Autoscale> {
    let over = over?.value;
    let mut merged = match base {
        Some(b) => b,
        None => Autoscale {
            min: over.min.clone()?,
            max: over.max.clone()?,
            cpu: None,
            memory: None,
        },
    };
    if let Some(min) = over.min {
        merged.min = min;
    }
    if let Some(max) = over.max {
        merged.max = max;
    }
    if let Some(cpu) = over.cpu {
        merged.cpu = cpu;
    }
    if let Some(memory) = over.memory {
        merged.memory = memory;
    }
    Some(merged)
}

fn merge_resources(base: &mut Resources, over: ResourcesOverride) {
    for (spec, o) in [
        (&mut base.requests, over.requests),
        (&mut base.limits, over.limits),
    ] {
        if let Some(o) = o {
            merge_spec(spec, o);
        }
    }
}

fn merge_spec(base: &mut ResourceSpec, over: ResourceSpecOverride) {
    if let Some(cpu) = over.cpu {
        base.cpu = cpu;
    }
    if let Some(memory) = over.memory {
        base.memory = memory;
    }
}

/// The findings about overrides: entries that do not exist (with a suggestion), and every
/// finding an environment's effective manifest has that the base manifest has not (a route
/// an override makes owned twice, an invalid variable name), under `environments.<E>.`.
pub(super) fn check(manifest: &Manifest) -> Vec<Diagnostic> {
    let overrides = |m: &Manifest| {
        m.environments
            .values()
            .any(|e| !e.value.services.is_empty() || !e.value.infrastructure.is_empty())
    };
    if !overrides(manifest) {
        return Vec::new();
    }
    let mut out = Vec::new();
    let error = |field: String, at: serde_saphyr::Location, message: String| Diagnostic {
        severity: Severity::Error,
        field,
        position: Position::from_location(at),
        message,
    };
    for (env, spec) in &manifest.environments {
        for (name, o) in &spec.value.services {
            if let (Some(base), Some(Some(a))) = (manifest.services.get(name), &o.value.autoscale) {
                if base.value.autoscale.is_none()
                    && (a.value.min.is_none() || a.value.max.is_none())
                {
                    out.push(error(
                        format!("environments.{env}.services.{name}.autoscale"),
                        a.referenced,
                        format!("`{name}` has no `autoscale` in `services`, so this environment must give both `min` and `max`"),
                    ));
                }
            }
            if !manifest.services.contains_key(name) {
                out.push(error(
                    format!("environments.{env}.services.{name}"),
                    o.referenced,
                    format!(
                        "overrides `{name}`, which is not a service{}",
                        suggest(name, manifest.services.keys())
                    ),
                ));
            }
        }
        for (name, o) in &spec.value.infrastructure {
            if !manifest.infrastructure.contains_key(name) {
                out.push(error(
                    format!("environments.{env}.infrastructure.{name}"),
                    o.referenced,
                    format!(
                        "overrides `{name}`, which is not an infrastructure entry{}",
                        suggest(name, manifest.infrastructure.keys())
                    ),
                ));
            }
        }
    }
    let mut plain = manifest.clone();
    for spec in plain.environments.values_mut() {
        spec.value.services.clear();
        spec.value.infrastructure.clear();
    }
    let base = super::validate::check_entries(&plain);
    let seen = |d: &Diagnostic| {
        base.iter()
            .any(|b| (b.severity, &b.field, &b.message) == (d.severity, &d.field, &d.message))
    };
    for env in manifest.environments.keys() {
        for mut d in super::validate::check_entries(&effective(manifest, env)) {
            if !seen(&d) {
                d.field = format!("environments.{env}.{}", d.field);
                out.push(d);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::manifest::{parse, validate, ManifestError, Position, Severity};

    const BASE: &str = "app: shop
services:
  api:
    path: services/api
    replicas: 1
    resources: { requests: { cpu: 100m, memory: 64Mi }, limits: { memory: 256Mi } }
    env: { LOG_LEVEL: info, KEEP: kept, DROP: x }
    routes: [/api]
infrastructure:
  redis: { image: redis:7, port: 6379, command: [redis-server], env: { A: 1 } }
environments:
  local: { target: docker }
";

    fn with(environments: &str) -> crate::manifest::Manifest {
        parse(Path::new("dronectl.yaml"), &format!("{BASE}{environments}")).unwrap()
    }

    #[test]
    fn environment_wins_maps_merge_key_by_key_lists_are_replaced() {
        let m = with(
            "  staging:
    target: kubernetes
    services:
      api:
        replicas: 3
        resources: { requests: { cpu: 500m }, limits: { memory: null, cpu: 1 } }
        env: { LOG_LEVEL: debug, DROP: null, NEW: 2 }
        routes: [/v2/api]
    infrastructure:
      redis: { command: [redis-server, --maxmemory, 1gb], env: { B: 2 } }
",
        );
        // No TLS in staging is a warning, not an error.
        assert!(validate(&m).iter().all(|d| d.severity == Severity::Warning));
        let e = super::effective(&m, "staging");
        let api = &e.services["api"].value;
        assert_eq!(api.replicas, 3);
        let env: Vec<(&str, &str)> = api
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.0.as_str()))
            .collect();
        assert_eq!(
            env,
            [("LOG_LEVEL", "debug"), ("KEEP", "kept"), ("NEW", "2")]
        );
        let r = &api.resources;
        assert_eq!(r.requests.cpu.as_ref().unwrap().0, "500m");
        assert_eq!(r.requests.memory.as_ref().unwrap().0, "64Mi");
        assert_eq!(r.limits.cpu.as_ref().unwrap().0, "1");
        assert_eq!(r.limits.memory, None);
        let routes: Vec<&str> = api.routes.iter().map(|r| r.value.as_str()).collect();
        assert_eq!(routes, ["/v2/api"]);
        let redis = &e.infrastructure["redis"].value;
        assert_eq!(redis.command, ["redis-server", "--maxmemory", "1gb"]);
        assert_eq!(redis.env.keys().collect::<Vec<_>>(), ["A", "B"]);
        assert_eq!(e.environments.keys().collect::<Vec<_>>(), ["staging"]);
        assert!(e.environments["staging"].value.services.is_empty());
        // The base and other environments are untouched.
        let local = super::effective(&m, "local");
        assert_eq!(local.services["api"].value.replicas, 1);
        assert_eq!(local.services["api"].value.env["DROP"].0, "x");
        assert_eq!(m.services["api"].value.replicas, 1);
    }

    #[test]
    fn unknown_service_or_entry_is_an_error_at_its_position() {
        let m = with(
            "  staging:
    target: kubernetes
    services:
      apj: { replicas: 2 }
    infrastructure:
      cache: { env: { A: 1 } }
",
        );
        let found: Vec<String> = validate(&m)
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| d.to_string())
            .collect();
        assert_eq!(found, [
            "16:12: error: environments.staging.services.apj: overrides `apj`, which is not a service; did you mean `api`?",
            "18:14: error: environments.staging.infrastructure.cache: overrides `cache`, which is not an infrastructure entry",
        ]);
    }

    #[test]
    fn unknown_field_and_negative_replicas_are_parse_errors_with_positions() {
        for (text, at) in [
            (
                "      api: { port: 9000 }\n",
                Position {
                    line: 16,
                    column: 14,
                },
            ),
            (
                "      api: { replicas: -1 }\n",
                Position {
                    line: 16,
                    column: 24,
                },
            ),
            (
                "      api: { resources: { requests: { gpu: 1 } } }\n",
                Position {
                    line: 16,
                    column: 39,
                },
            ),
        ] {
            let err = parse(
                Path::new("dronectl.yaml"),
                &format!("{BASE}  staging:\n    target: kubernetes\n    services:\n{text}"),
            )
            .unwrap_err();
            let ManifestError::Parse { position, .. } = &err else {
                panic!("{err:?}")
            };
            assert_eq!(*position, Some(at), "{text}: {err}");
        }
    }

    #[test]
    fn findings_the_merge_creates_point_at_the_override() {
        let m = parse(
            Path::new("dronectl.yaml"),
            "app: shop
services:
  api: { path: api, routes: [/api] }
  web: { path: web, routes: [/web] }
environments:
  staging:
    target: kubernetes
    services:
      web: { routes: [/api], env: { bad-name: 1 } }
",
        )
        .unwrap();
        let errors: Vec<String> = validate(&m)
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| d.to_string())
            .collect();
        assert_eq!(errors, [
            "9:12: error: environments.staging.services.web.env.bad-name: `bad-name` is not a valid environment variable name",
            "9:23: error: environments.staging.services.web.routes[0]: route `/api` is also owned by service `api`",
        ]);
    }

    #[test]
    fn hosts_public_and_health_timings_are_overridden() {
        let m = parse(
            Path::new("dronectl.yaml"),
            "app: shop
services:
  api:
    path: api
    routes: [/api]
    hosts: [api.example.com]
    health: { interval: 10s, retries: 2 }
  web: { path: web, routes: [/] }
environments:
  staging:
    target: kubernetes
    ingress: { class: nginx, tls: { secret: shop-tls } }
    services:
      api:
        hosts: [api.staging.example.com, \"*.api.staging.example.com\"]
        health: { timeout: 5s, start_period: 30s, readiness: /ready }
      web: { public: false }
",
        )
        .unwrap();
        assert_eq!(validate(&m), vec![]);
        let e = super::effective(&m, "staging");
        let api = &e.services["api"].value;
        let hosts: Vec<&str> = api.hosts.iter().map(|h| h.value.as_str()).collect();
        assert_eq!(
            hosts,
            ["api.staging.example.com", "*.api.staging.example.com"]
        );
        assert_eq!(api.health.readiness, "/ready");
        assert_eq!(api.health.liveness, "/healthz");
        let t = api.health.timings();
        let secs = std::time::Duration::from_secs;
        assert_eq!(
            (t.readiness_interval, t.liveness_interval, t.timeout),
            (secs(10), secs(10), secs(5))
        );
        assert_eq!((t.retries, t.start_period), (2, secs(30)));
        let web = &e.services["web"].value;
        assert!(web.routes.is_empty() && web.hosts.is_empty());
        // The base is untouched, and its defaults are the probes' defaults.
        let base = &m.services["web"].value;
        assert_eq!(base.routes.len(), 1);
        let t = base.health.timings();
        assert_eq!(
            (t.readiness_interval, t.liveness_interval, t.timeout, t.retries),
            (secs(5), secs(10), secs(2), 3)
        );
    }

    #[test]
    fn bad_hosts_tls_and_timings_are_errors_at_their_positions() {
        let m = parse(
            Path::new("dronectl.yaml"),
            "app: shop
services:
  api:
    path: api
    routes: [/api]
    hosts: [Api.Example.com, \"api.example.com:443\", 10.0.0.1, ok.example.com, ok.example.com]
    health: { interval: 1500ms, timeout: 0s, retries: 0 }
  web: { path: web, routes: [/api], hosts: [ok.example.com] }
environments:
  staging:
    target: kubernetes
    ingress: { tls: { issuer: a, cluster_issuer: b } }
  prod:
    target: kubernetes
    ingress: { class: Bad_Class, tls: {} }
    services:
      api: { hosts: [], health: { timeout: 2500ms } }
",
        )
        .unwrap();
        let found: Vec<String> = validate(&m).iter().map(|d| d.to_string()).collect();
        assert_eq!(found, [
            "6:13: error: services.api.hosts[0]: host `Api.Example.com` is not a valid host name: lowercase letters, digits, `-` and `.` (labels of 1 to 63 characters, at most 253 in all), optionally starting with `*.`",
            "6:30: error: services.api.hosts[1]: host `api.example.com:443` must be a DNS name without a port (an IP address or a port is not a host name)",
            "6:53: error: services.api.hosts[2]: host `10.0.0.1` must be a DNS name without a port (an IP address or a port is not a host name)",
            "6:79: error: services.api.hosts[4]: host `ok.example.com` is listed twice",
            "7:25: error: services.api.health.interval: `1s500ms` is not a whole number of seconds (Kubernetes probes count seconds)",
            "7:42: error: services.api.health.timeout: must be at least 1s",
            "7:55: error: services.api.health.retries: must be at least 1",
            "8:30: error: services.web.routes[0]: route `/api` on host `ok.example.com` is also owned by service `api`",
            "12:14: error: environments.staging.ingress.tls: set `issuer` or `cluster_issuer`, not both",
            "15:14: error: environments.prod.ingress.class: ingress class `Bad_Class` is not a Kubernetes object name: lowercase letters, digits, `-` and `.`, at most 253 characters",
            "15:14: error: environments.prod.ingress.tls: TLS needs a certificate: `secret` (an existing kubernetes.io/tls Secret), or `issuer` / `cluster_issuer` (cert-manager fills the Secret)",
            "15:14: error: environments.prod.ingress.tls: TLS needs host names, and service `api` publishes routes without `hosts`: set `services.api.hosts` or `environments.prod.services.api.hosts`",
            "17:44: error: environments.prod.services.api.health.timeout: `2s500ms` is not a whole number of seconds (Kubernetes probes count seconds)",
        ]);
    }

    #[test]
    fn unknown_fields_in_hosts_tls_and_health_are_parse_errors() {
        for (text, line, column) in [
            ("    ingress: { tls: { secret: s, issuer_kind: x } }\n", 15, 34),
            ("    ingress: { klass: nginx }\n", 15, 16),
            ("    services:\n      api: { health: { period: 5s } }\n", 16, 24),
            ("    services:\n      api: { public: maybe }\n", 16, 22),
        ] {
            let err = parse(
                Path::new("dronectl.yaml"),
                &format!("{BASE}  staging:\n    target: kubernetes\n{text}"),
            )
            .unwrap_err();
            let ManifestError::Parse { position, .. } = &err else {
                panic!("{err:?}")
            };
            assert_eq!(*position, Some(Position { line, column }), "{text}: {err}");
        }
    }

    #[test]
    fn autoscale_merges_key_by_key_and_null_turns_it_off() {
        let m = parse(
            Path::new("dronectl.yaml"),
            "app: shop
services:
  api: { path: api, autoscale: { min: 2, max: 6, cpu: 70 } }
  web: { path: web }
environments:
  staging:
    target: kubernetes
    services:
      api: { autoscale: { max: 10, cpu: null, memory: 80 } }
      web: { autoscale: { min: 3, max: 4 } }
  local:
    target: docker
    services:
      api: { autoscale: null }
",
        )
        .unwrap();
        assert_eq!(validate(&m), vec![]);
        let e = super::effective(&m, "staging");
        let a = e.services["api"].value.autoscale.as_ref().unwrap();
        assert_eq!((a.min.value, a.max.value), (2, 10));
        assert_eq!(a.targets(), (None, Some(80)));
        let w = e.services["web"].value.autoscale.as_ref().unwrap();
        assert_eq!((w.min.value, w.max.value), (3, 4));
        assert_eq!(w.targets(), (Some(80), None));
        assert!(super::effective(&m, "local").services["api"]
            .value
            .autoscale
            .is_none());
    }

    #[test]
    fn autoscale_bad_bounds_and_targets_are_errors_at_their_position() {
        let m = parse(
            Path::new("dronectl.yaml"),
            "app: shop
services:
  api: { path: api, autoscale: { min: 0, max: 6, cpu: 0 } }
  web: { path: web, autoscale: { min: 5, max: 2, memory: 101 } }
  pay: { path: pay }
environments:
  staging:
    target: kubernetes
    services:
      pay: { autoscale: { max: 3 } }
      api: { autoscale: { min: 7, cpu: 50 } }
",
        )
        .unwrap();
        let found: Vec<String> = validate(&m).iter().map(|d| d.to_string()).collect();
        assert_eq!(found, [
            "3:39: error: services.api.autoscale.min: min must be at least 1 (an autoscaler cannot scale to zero)",
            "3:55: error: services.api.autoscale.cpu: cpu target 0% must be between 1 and 100 (percent of the cpu request)",
            "4:47: error: services.web.autoscale.max: max (2) must be at least min (5)",
            "4:58: error: services.web.autoscale.memory: memory target 101% must be between 1 and 100 (percent of the memory request)",
            "10:25: error: environments.staging.services.pay.autoscale: `pay` has no `autoscale` in `services`, so this environment must give both `min` and `max`",
            "11:32: error: environments.staging.services.api.autoscale.min: max (6) must be at least min (7)",
        ]);
        let err = parse(
            Path::new("dronectl.yaml"),
            "app: shop\nservices:\n  api: { path: api, autoscale: { min: -1, max: 2 } }\n",
        )
        .unwrap_err();
        let ManifestError::Parse { position, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(position.map(|p| p.line), Some(3), "{err}");
    }
}
