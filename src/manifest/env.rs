//! The environment a service runs with, derived from the manifest alone. Both targets use
//! it; they differ only in how another service is addressed.

use std::collections::BTreeMap;

use super::Manifest;

/// A service's variables: its own `env`, `SERVICE_NAME`, and `<DEP>_URL` per dependency —
/// `service_url(name, port)` for services (`http://x:8080` through the local router, the
/// Kubernetes Service's port on a cluster), `<scheme>://<name>:<port>` for infrastructure
/// (`redis://redis:6379`).
pub fn service_env(
    manifest: &Manifest,
    service: &str,
    service_url: impl Fn(&str, u16) -> String,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let Some(s) = manifest.services.get(service) else {
        return env;
    };
    for dep in &s.value.depends_on {
        let name = dep.value.as_str();
        let url = if let Some(d) = manifest.services.get(name) {
            service_url(name, d.value.port)
        } else if let Some(infra) = manifest.infrastructure.get(name) {
            let scheme = infra
                .value
                .scheme
                .clone()
                .unwrap_or_else(|| default_scheme(name).to_string());
            format!("{scheme}://{name}:{}", infra.value.port)
        } else {
            continue;
        };
        env.insert(crate::names::dependency_env_var(name), url);
    }
    for (k, v) in &s.value.env {
        env.insert(k.clone(), v.0.clone());
    }
    env.insert("SERVICE_NAME".into(), service.to_string());
    env
}

/// The URL scheme of an infrastructure entry without `scheme:`: its name when that is a
/// well-known one, else `tcp`.
fn default_scheme(name: &str) -> &str {
    match name {
        "redis" | "postgres" | "postgresql" | "mysql" | "mongodb" | "nats" | "amqp"
        | "memcached" => name,
        _ => "tcp",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dependency_urls() {
        let m = crate::manifest::parse(
            std::path::Path::new("dronectl.yaml"),
            "app: a\nservices:\n  api: { path: api, depends_on: [db, cache, auth], env: { X: 1 } }\n  auth: { path: auth, port: 9000 }\ninfrastructure:\n  db: { image: pg, port: 5432, scheme: postgres }\n  cache: { image: redis, port: 6379 }\n",
        )
        .unwrap();
        let env = super::service_env(&m, "api", |n, p| format!("http://{n}:{p}"));
        assert_eq!(env["DB_URL"], "postgres://db:5432");
        assert_eq!(env["CACHE_URL"], "tcp://cache:6379");
        assert_eq!(env["AUTH_URL"], "http://auth:9000");
        assert_eq!(env["X"], "1");
        assert_eq!(env["SERVICE_NAME"], "api");
    }
}
