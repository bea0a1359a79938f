//! Environments: one resolution and one wording of its errors for every command, and the
//! per-environment overrides that `config`, `render` and `validate` see.

use crate::common;

use common::*;

const MANIFEST: &str = "app: shop
services:
  api:
    path: services/api
    replicas: 1
    env: { LOG_LEVEL: info, DEBUG_ENDPOINTS: on }
    routes: [/api]
environments:
  local: { target: docker }
  staging:
    target: kubernetes
    namespace: shop
    services:
      api:
        replicas: 3
        resources: { limits: { memory: 256Mi } }
        env: { LOG_LEVEL: debug, DEBUG_ENDPOINTS: null }
";

fn app_with(manifest: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("dronectl.yaml"), manifest).unwrap();
    tmp
}

#[test]
fn an_unknown_environment_has_one_wording_everywhere() {
    let tmp = app_with(MANIFEST);
    let wording = "unknown environment `prod` (--env prod); dronectl.yaml defines: local, staging";
    for args in [
        &["render", "--tag", "1"][..],
        &["diff", "--tag", "1"],
        &["deploy", "api", "--image", "shop/api:1"],
        &["rollout", "status", "api"],
        &["up"],
        &["down"],
        &["ps"],
        &["logs", "api"],
        &["build", "--push"],
        &["config"],
        &["validate"],
    ] {
        let mut all = vec!["--env", "prod"];
        all.extend_from_slice(args);
        let out = run(tmp.path(), &all);
        assert_code(&out, 2);
        assert!(stderr(&out).contains(wording), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn a_wrong_target_names_where_the_environment_is_defined() {
    let tmp = app_with(MANIFEST);
    let out = run(tmp.path(), &["--env", "local", "render", "--tag", "1"]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("environment `local` (dronectl.yaml:9:10) has `target: docker`; this command needs an environment with `target: kubernetes`"),
        "{}",
        stderr(&out)
    );
    for args in [&["up"][..], &["ps"], &["down"], &["logs", "api"]] {
        let mut all = vec!["--env", "staging"];
        all.extend_from_slice(args);
        let out = run(tmp.path(), &all);
        assert_code(&out, 2);
        assert!(
            stderr(&out).contains("environment `staging` (dronectl.yaml:11:5) has `target: kubernetes`; this command needs an environment with `target: docker`"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn config_prints_the_effective_manifest() {
    let tmp = app_with(MANIFEST);
    let out = run(tmp.path(), &["--env", "staging", "config"]);
    assert_code(&out, 0);
    let yaml = stdout(&out);
    for expected in [
        "    replicas: 3\n",
        "      limits:\n        memory: 256Mi\n",
        "    env:\n      LOG_LEVEL: debug\n    routes:",
        "environments:\n  staging:\n    target: kubernetes\n    namespace: shop\n",
    ] {
        assert!(yaml.contains(expected), "missing {expected:?} in:\n{yaml}");
    }
    assert!(
        !yaml.contains("DEBUG_ENDPOINTS"),
        "null removes a key:\n{yaml}"
    );
    assert!(
        !yaml.contains("local"),
        "only the environment shown:\n{yaml}"
    );
    assert!(
        !yaml.contains("secrets"),
        "a service without secrets has no `secrets:` line:\n{yaml}"
    );

    // The local environment runs the base entries.
    let out = run(tmp.path(), &["config"]);
    assert_code(&out, 0);
    let yaml = stdout(&out);
    assert!(yaml.contains("    replicas: 1\n"), "{yaml}");
    assert!(yaml.contains("LOG_LEVEL: info"), "{yaml}");
    assert!(yaml.contains("DEBUG_ENDPOINTS: \"true\""), "{yaml}");

    let out = run(tmp.path(), &["-o", "json", "--env", "staging", "config"]);
    assert_code(&out, 0);
    let text = stdout(&out);
    let summary: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["command"], "config");
    let result = &summary["result"];
    assert_eq!(result["env"], "staging");
    assert_eq!(result["target"], "kubernetes");
    let api = &result["manifest"]["services"]["api"];
    assert_eq!(api["replicas"], 3);
    assert_eq!(api["env"], serde_json::json!({ "LOG_LEVEL": "debug" }));
    assert_eq!(api["resources"]["limits"]["memory"], "256Mi");
}

#[test]
fn config_output_is_a_manifest_that_prints_the_same() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("reference-app");
    let out = run(&dir, &["--env", "staging", "config"]);
    assert_code(&out, 0);
    let printed = stdout(&out);
    assert!(
        printed.contains("    - pause: {}\n") || printed.contains("    - pause: {}"),
        "{printed}"
    );
    let tmp = app_with(&printed);
    assert_code(&run(tmp.path(), &["validate", "--strict"]), 0);
    let again = run(tmp.path(), &["--env", "staging", "config"]);
    assert_code(&again, 0);
    assert_eq!(stdout(&again), printed);
}

#[test]
fn render_uses_the_environment_s_overrides() {
    let tmp = app_with(MANIFEST);
    let out = run(
        tmp.path(),
        &["--env", "staging", "-o", "json", "render", "--tag", "1.0.0"],
    );
    assert_code(&out, 0);
    let summary: serde_json::Value =
        serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
    let objects = summary["result"]["objects"].as_array().unwrap();
    let find = |kind: &str| {
        objects
            .iter()
            .find(|o| o["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in {objects:?}"))
    };
    let deployment = find("Deployment");
    assert_eq!(deployment["spec"]["replicas"], 3);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["resources"]["limits"]["memory"], "256Mi");
    let data = &find("ConfigMap")["data"];
    assert_eq!(data["LOG_LEVEL"], "debug");
    assert!(data.get("DEBUG_ENDPOINTS").is_none(), "{data}");
}

#[test]
fn overrides_are_strict_with_positions() {
    let unknown_service = MANIFEST.replace(
        "    services:\n      api:\n        replicas: 3",
        "    services:\n      apl:\n        replicas: 3",
    );
    let tmp = app_with(&unknown_service);
    for args in [
        &["validate"][..],
        &["--env", "staging", "config"],
        &["--env", "staging", "render", "--tag", "1"],
    ] {
        let out = run(tmp.path(), args);
        assert_code(&out, 2);
        let err = stderr(&out);
        assert!(
            err.contains("15:9: error: environments.staging.services.apl: overrides `apl`, which is not a service; did you mean `api`?"),
            "{args:?}: {err}"
        );
    }
    let out = run(tmp.path(), &["validate"]);
    assert!(
        stderr(&out).contains("dronectl.yaml:15:9: error: environments.staging.services.apl"),
        "{}",
        stderr(&out)
    );

    let unknown_field = MANIFEST.replace("        replicas: 3", "        port: 9000");
    let tmp = app_with(&unknown_field);
    for args in [&["validate"][..], &["--env", "staging", "config"]] {
        let out = run(tmp.path(), args);
        assert_code(&out, 2);
        let err = stderr(&out);
        assert!(
            err.contains("dronectl.yaml:15:9: unknown field `port`"),
            "{args:?}: {err}"
        );
    }

    let negative = MANIFEST.replace("        replicas: 3", "        replicas: -3");
    let tmp = app_with(&negative);
    let out = run(tmp.path(), &["validate"]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("dronectl.yaml:15:19: invalid u32"),
        "{}",
        stderr(&out)
    );

    let route_clash = MANIFEST
        .replace(
            "  api:\n    path: services/api\n",
            "  web:\n    path: services/web\n    routes: [/web]\n  api:\n    path: services/api\n",
        )
        .replace("        replicas: 3", "        routes: [/web]");
    let tmp = app_with(&route_clash);
    let out = run(tmp.path(), &["validate"]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("dronectl.yaml:18:18: error: environments.staging.services.api.routes[0]: route `/web` is also owned by service `web`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn reference_app_scales_up_in_staging_only() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("reference-app");
    let replicas = |env: &str| {
        let out = run(&dir, &["-o", "json", "--env", env, "config"]);
        assert_code(&out, 0);
        let summary: serde_json::Value =
            serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
        let services = summary["result"]["manifest"]["services"].clone();
        ["ingestion", "workflow", "delivery", "account"].map(|s| services[s]["replicas"].clone())
    };
    assert_eq!(replicas("local"), [2, 2, 2, 2].map(serde_json::Value::from));
    assert_eq!(
        replicas("staging"),
        [3, 3, 3, 2].map(serde_json::Value::from)
    );
}

#[test]
fn config_prints_hosts_tls_and_health_timings_as_yaml_or_json() {
    let manifest = "app: shop
services:
  api:
    path: services/api
    routes: [/api]
    health: { interval: 10s }
  web: { path: services/web, routes: [/] }
environments:
  local: { target: docker }
  prod:
    target: kubernetes
    ingress: { class: nginx, tls: { cluster_issuer: letsencrypt } }
    services:
      api: { hosts: [api.shop.example.com], health: { timeout: 3s, retries: 5 } }
      web: { public: false }
";
    let tmp = app_with(manifest);
    let out = run(tmp.path(), &["--env", "prod", "config"]);
    assert_code(&out, 0);
    let yaml = stdout(&out);
    for expected in [
        "    health:\n      liveness: /healthz\n      readiness: /readyz\n      interval: 10s\n      timeout: 3s\n      retries: 5\n",
        "    routes:\n    - /api\n    hosts:\n    - api.shop.example.com\n",
        "    ingress:\n      class: nginx\n      tls:\n        cluster_issuer: letsencrypt\n",
    ] {
        assert!(yaml.contains(expected), "missing {expected:?} in:\n{yaml}");
    }
    // The printed manifest is valid as it stands and prints the same.
    let again = app_with(&yaml);
    assert_code(&run(again.path(), &["validate", "--strict"]), 0);
    assert_eq!(
        stdout(&run(again.path(), &["--env", "prod", "config"])),
        yaml
    );

    let out = run(tmp.path(), &["--env", "prod", "config", "--format", "json"]);
    assert_code(&out, 0);
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        doc["services"]["api"]["hosts"],
        serde_json::json!(["api.shop.example.com"])
    );
    assert_eq!(doc["services"]["api"]["health"]["retries"], 5);
    assert_eq!(doc["services"]["web"]["routes"], serde_json::json!([]));
    assert_eq!(
        doc["environments"]["prod"]["ingress"]["tls"]["cluster_issuer"],
        "letsencrypt"
    );
    // -o json: one summary event with the same document, whatever --format says.
    for format in ["yaml", "json"] {
        let out = run(
            tmp.path(),
            &["-o", "json", "--env", "prod", "config", "--format", format],
        );
        assert_code(&out, 0);
        let text = stdout(&out);
        let summary: serde_json::Value =
            serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!(summary["result"]["manifest"], doc, "{format}");
    }
    // The local environment: no hosts, the base timings.
    let out = run(tmp.path(), &["config", "--format", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(doc["services"]["api"].get("hosts").is_none(), "{doc}");
    assert_eq!(doc["services"]["api"]["health"]["interval"], "10s");
    assert!(
        doc["services"]["api"]["health"].get("timeout").is_none(),
        "{doc}"
    );
}

#[test]
fn bad_hosts_and_tls_stop_config_render_and_validate_with_positions() {
    let manifest = "app: shop
services:
  api: { path: services/api, routes: [/api] }
environments:
  prod:
    target: kubernetes
    ingress: { tls: { secret: shop-tls } }
    services:
      api: { hosts: [\"shop.example.com:443\"] }
";
    let tmp = app_with(manifest);
    for args in [
        &["validate"][..],
        &["--env", "prod", "config"],
        &["--env", "prod", "render", "--tag", "1"],
    ] {
        let out = run(tmp.path(), args);
        assert_code(&out, 2);
        assert!(
            stderr(&out).contains("9:22: error: environments.prod.services.api.hosts[0]: host `shop.example.com:443` must be a DNS name without a port"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    let no_hosts = manifest.replace(
        "      api: { hosts: [\"shop.example.com:443\"] }\n",
        "      api: { replicas: 2 }\n",
    );
    let tmp = app_with(&no_hosts);
    let out = run(tmp.path(), &["--env", "prod", "render", "--tag", "1"]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("7:14: error: environments.prod.ingress.tls: TLS needs host names, and service `api` publishes routes without `hosts`"),
        "{}",
        stderr(&out)
    );
    let unknown = manifest.replace("secret: shop-tls", "secretName: shop-tls");
    let tmp = app_with(&unknown);
    let out = run(tmp.path(), &["--env", "prod", "config"]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("dronectl.yaml:7:23: unknown field `secretName`"),
        "{}",
        stderr(&out)
    );
}
