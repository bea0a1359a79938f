//! `dronectl render`: snapshots of the reference app's Kubernetes objects, round trips
//! through the k8s-openapi types, and the properties every pod must have.

use std::collections::BTreeMap;
use std::path::Path;

use dronectl::k8s::render::{self, Object};
use dronectl::k8s::{Images, KubeEnv, RollingParams};
use dronectl::manifest::{LoadedManifest, Manifest};

const APP: &str = "tests/fixtures/kube-app";

fn manifest() -> Manifest {
    LoadedManifest::read_valid(Path::new(APP)).unwrap().manifest
}

fn objects(env: &str, services: &[String]) -> Vec<Object> {
    let m = manifest();
    let kenv = KubeEnv::from_manifest(&m, env, None).unwrap();
    let images = Images {
        tag: Some("1.4.0-abc1234".into()),
        ..Default::default()
    };
    let revisions = images.revisions(&kenv, &m, services).unwrap();
    render::render_app(
        &kenv,
        &m,
        services,
        &revisions,
        RollingParams {
            max_surge: 1,
            max_unavailable: 0,
        },
    )
}

#[test]
fn reference_app_staging() {
    let yaml = render::to_yaml(&objects("staging", &[])).unwrap();
    insta::assert_snapshot!("reference_app_staging", yaml);
}

#[test]
fn reference_app_with_a_gateway() {
    let yaml = render::to_yaml(&objects("production", &["ingestion".to_string()])).unwrap();
    insta::assert_snapshot!("ingestion_production_gateway", yaml);
}

#[test]
fn every_object_round_trips_through_the_typed_structs() {
    for env in ["staging", "production"] {
        for o in objects(env, &[]) {
            let value = o.to_value();
            let yaml = serde_saphyr::to_string(&value).unwrap();
            let back: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
            let parsed = o
                .reparse(back)
                .unwrap_or_else(|e| panic!("{} {}: {e}", o.kind(), o.name()));
            assert_eq!(parsed, o, "{} {}", o.kind(), o.name());
        }
    }
}

#[test]
fn pods_meet_the_restricted_pod_security_standard() {
    for o in objects("staging", &[]) {
        let spec = match &o {
            Object::Deployment(d) => d.spec.template.spec.clone().unwrap(),
            Object::StatefulSet(s) => s.spec.template.spec.clone().unwrap(),
            _ => continue,
        };
        let pod = spec.security_context.clone().unwrap();
        assert_eq!(pod.run_as_non_root, Some(true));
        assert_eq!(pod.run_as_user, Some(65532));
        assert_eq!(pod.seccomp_profile.unwrap().type_, "RuntimeDefault");
        for c in &spec.containers {
            let sc = c.security_context.clone().unwrap();
            assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", o.name());
            assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_string()]));
            assert_eq!(sc.read_only_root_filesystem, Some(true));
            let r = c.resources.clone().unwrap();
            assert!(r.requests.is_some() && r.limits.is_some(), "{}", o.name());
            assert!(c.readiness_probe.is_some(), "{}", o.name());
        }
        if let Object::Deployment(_) = o {
            assert!(spec.containers[0].liveness_probe.is_some());
            assert_eq!(spec.termination_grace_period_seconds, Some(40));
            assert!(spec.containers[0]
                .env
                .as_ref()
                .unwrap()
                .iter()
                .any(|e| e.name == "SHUTDOWN_DELAY_MS"));
            assert_eq!(
                spec.topology_spread_constraints.as_ref().map(Vec::len),
                Some(2)
            );
        }
    }
}

#[test]
fn labels_dependency_urls_and_images() {
    let objs = objects("staging", &[]);
    for o in &objs {
        let labels = o.meta().labels.clone().unwrap();
        for key in [
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/component",
            "app.kubernetes.io/part-of",
        ] {
            assert!(
                labels.contains_key(key),
                "{} {} lacks {key}",
                o.kind(),
                o.name()
            );
        }
        assert_eq!(labels["app.kubernetes.io/managed-by"], "dronectl");
    }
    let cm = objs
        .iter()
        .find_map(|o| match o {
            Object::ConfigMap(c)
                if c.metadata
                    .name
                    .as_deref()
                    .unwrap()
                    .starts_with("workflow-env-") =>
            {
                Some(c.data.clone().unwrap())
            }
            _ => None,
        })
        .unwrap();
    assert_eq!(cm["REDIS_URL"], "redis://redis:6379");
    assert_eq!(cm["DELIVERY_URL"], "http://delivery:8080");
    assert_eq!(cm["ACCOUNT_URL"], "http://account:8080");
    let images: Vec<String> = objs
        .iter()
        .filter_map(|o| match o {
            Object::Deployment(d) => d.spec.template.spec.as_ref().unwrap().containers[0]
                .image
                .clone(),
            _ => None,
        })
        .collect();
    assert!(images
        .contains(&"registry.example.com/drone/drone-delivery/delivery:1.4.0-abc1234".to_string()));
}

#[test]
fn config_changes_change_the_configmap_name() {
    let m = manifest();
    let kenv = KubeEnv::from_manifest(&m, "staging", None).unwrap();
    let a = dronectl::rollout::Revision::new(
        "img:1",
        "1",
        1,
        BTreeMap::from([("A".to_string(), "1".to_string())]),
    );
    let b = dronectl::rollout::Revision::new(
        "img:1",
        "1",
        1,
        BTreeMap::from([("A".to_string(), "2".to_string())]),
    );
    let c = dronectl::rollout::Revision::new(
        "img:2",
        "2",
        1,
        BTreeMap::from([("A".to_string(), "1".to_string())]),
    );
    assert_ne!(
        render::config_map_name("x", &a),
        render::config_map_name("x", &b)
    );
    assert_eq!(
        render::config_map_name("x", &a),
        render::config_map_name("x", &c),
        "same content, same ConfigMap"
    );
    let _ = kenv;
}

#[test]
fn network_policies_admit_only_declared_callers() {
    let objs = objects("staging", &[]);
    let policy = |name: &str| {
        objs.iter()
            .find_map(|o| match o {
                Object::NetworkPolicy(p) if p.metadata.name.as_deref() == Some(name) => {
                    Some(p.clone())
                }
                _ => None,
            })
            .unwrap()
    };
    let callers = |name: &str| -> Vec<String> {
        let p = policy(name);
        let rules = p.spec.unwrap().ingress.unwrap_or_default();
        rules
            .iter()
            .flat_map(|r| r.from.clone().unwrap_or_default())
            .filter_map(|peer| {
                peer.pod_selector
                    .and_then(|s| s.match_labels)
                    .and_then(|l| l.get("app.kubernetes.io/name").cloned())
            })
            .collect()
    };
    assert_eq!(callers("account-ingress"), vec!["workflow"]);
    assert!(callers("thirdparty-ingress").contains(&"workflow".to_string()));
    let mut delivery = callers("delivery-ingress");
    delivery.sort();
    assert_eq!(delivery, vec!["supervisor", "workflow"]);
    // delivery has public routes: the ingress controller's namespace may reach it.
    let p = policy("delivery-ingress");
    assert!(p.spec.unwrap().ingress.unwrap()[0]
        .from
        .as_ref()
        .unwrap()
        .iter()
        .any(|peer| peer.namespace_selector.is_some()));
    // nobody declares a dependency on ingestion, but it has routes; redis admits its callers.
    assert!(callers("redis-ingress").len() >= 6);
    assert!(policy("drone-delivery-default-deny")
        .spec
        .unwrap()
        .ingress
        .is_none());
}

#[test]
fn render_cli_prints_yaml() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dronectl"))
        .args([
            "-C", APP, "render", "--env", "staging", "--tag", "1.0.0", "delivery",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("---\n"));
    assert!(text.contains("kind: Deployment") && text.contains("kind: Ingress"));
    let docs = text.matches("---\n").count();
    assert_eq!(docs, 7, "{text}");
    // No image: a clear usage error.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dronectl"))
        .args(["-C", APP, "render", "--env", "staging"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--artifacts"));
}

/// The API server drops the empty lists and maps of optional fields on store; an object sent
/// with one differs from the stored object on every apply, so every deploy would be a write.
/// Only empty structs (which the server keeps) may appear.
#[test]
fn no_empty_lists_or_maps_that_the_server_would_drop() {
    fn walk(v: &serde_json::Value, path: &str, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, c) in m {
                    let p = format!("{path}.{k}");
                    let empty = c.as_array().is_some_and(Vec::is_empty)
                        || c.as_object().is_some_and(|o| o.is_empty());
                    // `emptyDir: {}` is a struct: it stays, and it means "an emptyDir volume".
                    if empty && k != "emptyDir" {
                        out.push(p.clone());
                    }
                    walk(c, &p, out);
                }
            }
            serde_json::Value::Array(a) => {
                for (i, c) in a.iter().enumerate() {
                    walk(c, &format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    for env in ["staging", "production"] {
        let mut empties = vec![];
        for o in objects(env, &[]) {
            walk(
                &o.to_value(),
                &format!("{} {}", o.kind(), o.name()),
                &mut empties,
            );
        }
        assert!(empties.is_empty(), "{env}: {empties:#?}");
    }
}

/// Every container of every workload, infrastructure included, is probed for readiness and
/// liveness (a wedged Redis is restarted like a wedged service).
#[test]
fn every_workload_container_has_readiness_and_liveness_probes() {
    for o in objects("staging", &[]) {
        let pod = match &o {
            Object::Deployment(d) => d.spec.template.spec.clone(),
            Object::StatefulSet(s) => s.spec.template.spec.clone(),
            _ => continue,
        };
        for c in pod.unwrap().containers {
            assert!(c.readiness_probe.is_some(), "{} {}", o.kind(), o.name());
            assert!(c.liveness_probe.is_some(), "{} {}", o.kind(), o.name());
        }
    }
}

/// An app with hosts, TLS and an ingress class per environment (issue 14, public entry).
const PUBLIC_ENTRY: &str = "app: shop
services:
  api:
    path: services/api
    routes: [/api]
    hosts: [api.shop.example.com]
    health: { interval: 15s, timeout: 4s, retries: 6, start_period: 20s }
  web:
    path: services/web
    routes: [/]
  admin:
    path: services/admin
    routes: [/admin]
environments:
  staging:
    target: kubernetes
    namespace: shop
    ingress: { class: nginx, tls: { cluster_issuer: letsencrypt } }
    services:
      api: { hosts: [api.staging.shop.example.com] }
      web: { hosts: [staging.shop.example.com, www.staging.shop.example.com] }
      admin: { public: false }
  secret:
    target: kubernetes
    namespace: shop
    ingress: { tls: { secret: shop-wildcard-tls } }
    services:
      web: { hosts: [\"*.shop.example.com\"] }
      admin: { hosts: [admin.shop.example.com] }
  gateway:
    target: kubernetes
    namespace: shop
    gateway: { name: public, namespace: gateways }
";

fn public_entry_routes(env: &str) -> String {
    let m = dronectl::manifest::parse(Path::new("dronectl.yaml"), PUBLIC_ENTRY).unwrap();
    let errors: Vec<_> = dronectl::manifest::validate(&m)
        .into_iter()
        .filter(|d| d.severity == dronectl::manifest::Severity::Error)
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    let environment = dronectl::manifest::Environment::resolve(&m, Some(env)).unwrap();
    let kenv = KubeEnv::new(&environment, None);
    let m = environment.manifest;
    let images = Images {
        tag: Some("1.0.0".into()),
        ..Default::default()
    };
    let revisions = images.revisions(&kenv, &m, &[]).unwrap();
    let objects: Vec<Object> = render::render_app(
        &kenv,
        &m,
        &[],
        &revisions,
        RollingParams {
            max_surge: 1,
            max_unavailable: 0,
        },
    )
    .into_iter()
    .filter(|o| matches!(o.kind(), "Ingress" | "HTTPRoute"))
    .collect();
    render::to_yaml(&objects).unwrap()
}

#[test]
fn ingress_carries_hosts_class_and_cert_manager_tls() {
    let yaml = public_entry_routes("staging");
    // `admin` is not public in staging: no Ingress at all.
    assert!(!yaml.contains("name: admin"), "{yaml}");
    insta::assert_snapshot!("public_entry_staging_ingress", yaml);
}

#[test]
fn ingress_tls_from_an_existing_secret_and_hosts_from_the_base_entry() {
    let yaml = public_entry_routes("secret");
    assert!(!yaml.contains("cert-manager.io"), "{yaml}");
    assert!(!yaml.contains("ingressClassName"), "{yaml}");
    insta::assert_snapshot!("public_entry_secret_ingress", yaml);
}

#[test]
fn http_route_carries_hostnames_and_no_tls() {
    let yaml = public_entry_routes("gateway");
    assert!(!yaml.contains("tls"), "{yaml}");
    insta::assert_snapshot!("public_entry_gateway_httproute", yaml);
}

#[test]
fn health_timings_become_the_probes_timings() {
    let m = dronectl::manifest::parse(Path::new("dronectl.yaml"), PUBLIC_ENTRY).unwrap();
    let environment = dronectl::manifest::Environment::resolve(&m, Some("staging")).unwrap();
    let kenv = KubeEnv::new(&environment, None);
    let m = environment.manifest;
    let images = Images {
        tag: Some("1.0.0".into()),
        ..Default::default()
    };
    let revisions = images.revisions(&kenv, &m, &[]).unwrap();
    let probes = |service: &str| {
        let o = render::render_app(
            &kenv,
            &m,
            &[],
            &revisions,
            RollingParams {
                max_surge: 1,
                max_unavailable: 0,
            },
        )
        .into_iter()
        .find(|o| o.kind() == "Deployment" && o.name() == service)
        .unwrap();
        let Object::Deployment(d) = o else {
            unreachable!()
        };
        let c = d.spec.template.spec.unwrap().containers.remove(0);
        let t = |p: Option<k8s_openapi::api::core::v1::Probe>| {
            let p = p.unwrap();
            (
                p.period_seconds,
                p.timeout_seconds,
                p.failure_threshold,
                p.initial_delay_seconds,
            )
        };
        (t(c.readiness_probe), t(c.liveness_probe))
    };
    assert_eq!(
        probes("api"),
        (
            (Some(15), Some(4), Some(6), Some(20)),
            (Some(15), Some(4), Some(6), Some(20))
        )
    );
    // Unset timings: readiness every 5 s, liveness every 10 s, 2 s timeout, 3 failures.
    assert_eq!(
        probes("web"),
        (
            (Some(5), Some(2), Some(3), None),
            (Some(10), Some(2), Some(3), None)
        )
    );
}

/// A rollout's traffic controls on a gateway (issue 18): one rule per match (headers exact
/// or regex, cookies as a regex on `Cookie`) to the candidate only, and a `RequestMirror`
/// filter with `percent` on the weighted rule.
#[test]
fn http_route_with_matches_and_mirror() {
    use dronectl::rollout::{MatchValue, TrafficMatch};
    let m = manifest();
    let kenv = KubeEnv::from_manifest(&m, "production", None).unwrap();
    let controls = render::RouteControls {
        candidate: "ingestion-b2c3d4e5f6".into(),
        matches: vec![
            TrafficMatch {
                headers: vec![
                    ("x-beta".into(), MatchValue::Exact("true".into())),
                    ("x-user".into(), MatchValue::Regex("[a-z]+@corp".into())),
                ],
                cookies: vec![],
            },
            TrafficMatch {
                headers: vec![],
                cookies: vec![("group".into(), MatchValue::Exact("qa.1".into()))],
            },
        ],
        mirror: 20,
    };
    let route = render::http_route_with(
        &kenv,
        &m,
        "ingestion",
        &[
            ("ingestion-a1b2c3d4e5".into(), 90),
            ("ingestion-b2c3d4e5f6".into(), 10),
        ],
        &controls,
    )
    .unwrap();
    let yaml = render::to_yaml(&[Object::HttpRoute(Box::new(route.clone()))]).unwrap();
    insta::assert_snapshot!("ingestion_http_route_matches_mirror", yaml);
    // The cookie regex holds whether the gateway matches the whole value or searches it.
    let cookie = &route.spec.rules[1].matches[0].headers[0];
    assert_eq!(cookie.name, "Cookie");
    assert_eq!(cookie.value, r"^(.*;\s*)?group=qa\.1(;.*)?$");
    // Without controls: the plain weighted rule, as before.
    let plain = render::http_route(&kenv, &m, "ingestion", &[("ingestion".into(), 100)]).unwrap();
    assert_eq!(plain.spec.rules.len(), 1);
    assert!(plain.spec.rules[0].filters.is_empty());
}
