//! `dronectl validate`: positions for syntax and type errors, cross-reference checks,
//! exit codes and JSON output.

use crate::common;

use common::*;

fn app_with(manifest: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("dronectl.yaml"), manifest).unwrap();
    tmp
}

#[test]
fn typo_is_reported_with_line_and_column() {
    let tmp = app_with("app: shop\nservices:\n  api:\n    path: services/api\n    replcas: 2\n");
    let out = run(tmp.path(), &["validate"]);
    assert_code(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("dronectl.yaml:5:5: unknown field `replcas`"),
        "{err}"
    );
    assert!(
        err.contains("replicas"),
        "the message lists the expected fields: {err}"
    );
}

#[test]
fn wrong_type_is_reported_with_line_and_column() {
    let tmp = app_with("app: shop\nservices:\n  api:\n    path: services/api\n    port: http\n");
    let out = run(tmp.path(), &["validate"]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("dronectl.yaml:5:11:"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn cross_references_are_checked() {
    let tmp = app_with(
        "app: shop
services:
  a:
    path: services/a
    routes: [/api/a]
    depends_on: [cache]
  b:
    path: services/b
    routes: [/api/a]
    strategy: canary
",
    );
    let out = run(tmp.path(), &["validate"]);
    assert_code(&out, 2);
    let err = stderr(&out);
    for expected in [
        "dronectl.yaml:6:18: error: services.a.depends_on[0]: unknown dependency `cache`",
        "dronectl.yaml:9:14: error: services.b.routes[0]: route `/api/a` is also owned by service `a`",
        "dronectl.yaml:10:15: error: services.b.strategy: strategy `canary` is not defined under `strategies`",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}

#[test]
fn json_output_and_strict_warnings() {
    let tmp = app_with("app: shop\nenvironments:\n  local: { target: docker, namespace: x }\n");
    let out = run(tmp.path(), &["-o", "json", "validate"]);
    assert_code(&out, 0);
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["event"], "diagnostic");
    assert_eq!(lines[0]["schema"], 1);
    assert_eq!(lines[0]["diagnostic"]["severity"], "warning");
    let summary = lines.last().unwrap();
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["command"], "validate");
    assert_eq!(summary["result"]["warnings"], 1);
    assert_code(&run(tmp.path(), &["validate", "--strict"]), 2);
}

#[test]
fn explicit_file_and_missing_manifest() {
    let tmp = app_with("app: shop\n");
    let elsewhere = tempfile::tempdir().unwrap();
    let file = tmp.path().join("dronectl.yaml");
    assert_code(
        &run(elsewhere.path(), &["validate", file.to_str().unwrap()]),
        0,
    );
    assert_code(
        &run(
            elsewhere.path(),
            &["-C", tmp.path().to_str().unwrap(), "validate"],
        ),
        0,
    );
    let out = run(elsewhere.path(), &["validate"]);
    assert_code(&out, 2);
    assert!(stderr(&out).contains("no dronectl.yaml found"));
    let bad = app_with("app: [unclosed\n");
    let out = run(bad.path(), &["validate"]);
    assert_code(&out, 2);
    assert!(stderr(&out).contains("dronectl.yaml:"), "{}", stderr(&out));
}

#[test]
fn reference_app_manifest_is_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("reference-app");
    if !dir.join("dronectl.yaml").exists() {
        panic!("reference-app/dronectl.yaml is missing");
    }
    let out = run(&dir, &["validate", "--strict"]);
    assert_code(&out, 0);
}

fn app_with_bytes(manifest: &[u8]) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("dronectl.yaml"), manifest).unwrap();
    tmp
}

/// `n` services, each depending on the next; with `cycle`, the last depends on the first.
fn chain(n: usize, cycle: bool) -> String {
    let mut text = String::from("app: shop\nservices:\n");
    for i in 0..n {
        let next = if i + 1 < n {
            format!(", depends_on: [s{}]", i + 1)
        } else if cycle {
            ", depends_on: [s0]".to_string()
        } else {
            String::new()
        };
        text.push_str(&format!("  s{i}: {{ path: s{i}{next} }}\n"));
    }
    text
}

#[test]
fn a_25000_service_dependency_chain_neither_overflows_nor_hangs() {
    // This overflowed the main thread's stack (SIGABRT, no exit code) before the cycle
    // check was iterative.
    let tmp = app_with(&chain(25_000, false));
    let out = run(tmp.path(), &["validate"]);
    assert_code(&out, 0);
    assert!(stderr(&out).contains("25000 services"), "{}", stderr(&out));

    let tmp = app_with(&chain(25_000, true));
    let out = run(tmp.path(), &["validate"]);
    assert_code(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("dronectl.yaml:25002:40: error: services.s24999.depends_on: dependency cycle: s0 → s1 → s2 → s3 → … 24993 more … → s24997 → s24998 → s24999 → s0"),
        "{}",
        &err[..err.len().min(2000)]
    );
}

#[test]
fn control_and_bidirectional_characters_are_refused_with_position() {
    let mut failures = Vec::new();
    for (manifest, expected) in [
        // Decoded from escapes in quoted values.
        (
            "app: shop\nservices:\n  api: { path: \"services/a\\0pi\" }\n",
            "dronectl.yaml:3:16: `services/a\\u{0}pi` contains U+0000 (NUL), which is not allowed in dronectl.yaml",
        ),
        (
            "app: shop\nservices:\n  api:\n    path: api\n    routes: [\"/api/\\u202Eadmin\"]\n",
            "dronectl.yaml:5:14: `/api/\\u{202e}admin` contains U+202E (a bidirectional control character)",
        ),
        (
            "app: shop\nservices:\n  api:\n    path: api\n    env: { \"KEY\\u2066\": x }\n",
            "dronectl.yaml:5:12: `KEY\\u{2066}` contains U+2066 (a bidirectional control character)",
        ),
        (
            "app: shop\nservices:\n  api:\n    path: api\n    env: { KEY: \"a\\eb\" }\n",
            "dronectl.yaml:5:17: `a\\u{1b}b` contains U+001B (a control character)",
        ),
        (
            "app: shop\ninfrastructure:\n  db: { image: \"pg\\u0085\", port: 5432 }\n",
            "dronectl.yaml:3:16: `pg\\u{85}` contains U+0085 (a control character)",
        ),
        // Raw in the text, comments included ("Trojan Source").
        (
            "app: shop # \u{202e} }nigol{ \nservices:\n",
            "dronectl.yaml:1:13: U+202E (a bidirectional control character) is not allowed in dronectl.yaml, not even in a comment or a quoted value",
        ),
        (
            "app: shop\nservices:\n  api: { path: \"api\u{2069}\" }\n",
            "dronectl.yaml:3:20: U+2069 (a bidirectional control character) is not allowed",
        ),
        // Line breaks and tabs are fine in YAML values, but not in a path or a probe.
        (
            "app: shop\nservices:\n  api: { path: \"a\\nb\" }\n",
            "dronectl.yaml:3:16: error: services.api.path: `a\\u{a}b` contains U+000A (a line break); paths may not contain control or bidirectional characters",
        ),
        (
            "app: shop\nservices:\n  api:\n    path: api\n    health: { readiness: \"/readyz HTTP/1.1\\r\\nHost: x\" }\n",
            "dronectl.yaml:4:5: error: services.api.health.readiness: `/readyz HTTP/1.1\\u{d}\\u{a}Host: x` contains U+000D (a line break)",
        ),
    ] {
        let tmp = app_with(manifest);
        let out = run(tmp.path(), &["validate"]);
        let err = stderr(&out);
        if out.status.code() != Some(2) || !err.contains(expected) {
            failures.push(format!("{manifest:?}: {:?}, missing {expected:?} in:\n{err}", out.status));
        }
        for c in ['\0', '\u{1b}', '\u{85}', '\u{202e}', '\u{2066}', '\u{2069}'] {
            assert!(!err.contains(c), "{c:?} reaches the terminal: {err:?}");
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn unknown_tags_are_errors() {
    let tmp = app_with("app: shop\nservices:\n  api: { path: !custom api }\n");
    let out = run(tmp.path(), &["validate"]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("dronectl.yaml:3:24: unknown tag `!custom`"),
        "{}",
        stderr(&out)
    );
    // Standard tags keep their meaning.
    let tmp = app_with("app: !!str shop\nservices:\n  api: { path: api, port: !!int 8080 }\n");
    assert_code(&run(tmp.path(), &["validate"]), 0);
}

#[test]
fn invalid_utf8_names_the_byte_offset_line_and_column() {
    let tmp = app_with_bytes(b"app: shop\nservices:\n  api: { path: ap\xffi }\n");
    let out = run(tmp.path(), &["validate"]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains(
            "dronectl.yaml:3:18: invalid UTF-8 at byte offset 37: dronectl.yaml must be UTF-8 text"
        ),
        "{}",
        stderr(&out)
    );
}

#[test]
fn parser_limits_and_duplicate_keys_are_worded_for_users() {
    let mut big = String::from("app: shop\nservices:\n  api:\n    path: api\n    env:\n");
    for i in 0..130_000 {
        big.push_str(&format!("      K{i}: v\n"));
    }
    let tmp = app_with(&big);
    let out = run(tmp.path(), &["validate"]);
    assert_code(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("the manifest is too large: more than 250,000 nodes (values, lists and maps)"),
        "{err}"
    );
    assert!(!err.contains("budget") && !err.contains("Nodes {"), "{err}");

    let deep = format!(
        "app: shop\nservices:\n  api: {{ path: a, env: {{ A: {}{} }} }}\n",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let tmp = app_with(&deep);
    let out = run(tmp.path(), &["validate"]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains(
            "dronectl.yaml:3:282: the manifest is nested too deeply: more than 24 levels of lists and maps"
        ),
        "{}",
        stderr(&out)
    );

    let tmp = app_with(
        "app: shop\nservices:\n  api: { path: a }\n  web: { path: w }\n  api: { path: b }\n",
    );
    let out = run(tmp.path(), &["validate"]);
    assert_code(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("dronectl.yaml:5:3: duplicate key `api` (first at line 3, column 3)"),
        "{err}"
    );
    assert!(
        !err.contains("DuplicateKeyPolicy") && !err.contains("Options"),
        "{err}"
    );
}

#[test]
fn registry_has_no_scheme_userinfo_traversal_or_whitespace() {
    for (registry, expected) in [
        (
            "https://registry.example.com/shop",
            "has a scheme (`https://`); write it without one: `registry.example.com/shop`",
        ),
        (
            "ci:s3cret@registry.example.com/shop",
            "must not contain userinfo",
        ),
        (
            "https://ci:s3cret@registry.example.com",
            "must not contain userinfo",
        ),
        ("registry.example.com/../other", "has a `..` segment"),
        (
            "\"registry.example.com/sh op\"",
            "contains U+0020 (a space)",
        ),
    ] {
        let tmp = app_with(&format!(
            "app: shop\nenvironments:\n  staging:\n    target: kubernetes\n    registry: {registry}\n"
        ));
        let out = run(tmp.path(), &["validate"]);
        assert_code(&out, 2);
        let err = stderr(&out);
        assert!(
            err.contains("dronectl.yaml:4:5: error: environments.staging.registry: "),
            "{registry}: {err}"
        );
        assert!(
            err.contains(expected),
            "{registry}: missing {expected:?} in {err}"
        );
        assert!(!err.contains("s3cret"), "the password is shown: {err}");
    }
}

/// Without a gateway a Kubernetes canary splits by replica ratio: `validate` says which
/// weights that only approximates (issue 15, bug 4), as hints that `--strict` does not fail.
#[test]
fn canary_weights_a_replica_ratio_cannot_give_are_named() {
    let manifest = |replicas: u32| {
        format!(
            "app: shop
services:
  api:
    path: services/api
    replicas: {replicas}
    strategy: canary
environments:
  staging: {{ target: kubernetes, namespace: shop }}
strategies:
  canary:
    type: canary
    steps:
      - weight: 20
      - pause: {{}}
"
        )
    };
    let tmp = app_with(&manifest(2));
    let out = run(tmp.path(), &["validate", "--strict"]);
    assert_code(&out, 0);
    let err = stderr(&out);
    assert!(
        err.contains("dronectl.yaml:13:9: environment `staging`: `api` runs 2 replica(s), so weight 20% of strategy `canary` gives 50% by replica ratio (1+1 pods behind one Service)"),
        "{err}"
    );
    let tmp = app_with(&manifest(10));
    let out = run(tmp.path(), &["validate"]);
    assert_code(&out, 0);
    assert!(!stderr(&out).contains("replica ratio"), "{}", stderr(&out));
}

/// A Kubernetes environment that publishes routes through an Ingress without TLS is plain
/// HTTP: a warning (so `--strict` fails); with TLS and hosts it is quiet; a gateway
/// environment leaves TLS to the gateway's listeners.
#[test]
fn publishing_routes_without_tls_is_a_warning() {
    let manifest = "app: shop
services:
  api: { path: services/api, routes: [/api] }
  worker: { path: services/worker }
environments:
  local: { target: docker }
  staging: { target: kubernetes, namespace: shop }
  prod:
    target: kubernetes
    ingress: { tls: { cluster_issuer: letsencrypt } }
    services:
      api: { hosts: [api.shop.example.com] }
  edge: { target: kubernetes, gateway: { name: public } }
";
    let tmp = app_with(manifest);
    let out = run(tmp.path(), &["--env", "staging", "validate"]);
    assert_code(&out, 0);
    let err = stderr(&out);
    assert!(
        err.contains("dronectl.yaml:7:12: warning: environments.staging: publishes the routes of api over plain HTTP: set `ingress.tls` (a Secret, or a cert-manager issuer) and the services' `hosts`"),
        "{err}"
    );
    for quiet in [
        "environments.prod",
        "environments.edge",
        "environments.local",
    ] {
        assert!(!err.contains(quiet), "{quiet}: {err}");
    }
    assert_code(
        &run(tmp.path(), &["--env", "staging", "validate", "--strict"]),
        2,
    );

    // -o json: the warning is a diagnostic event with its position.
    let out = run(tmp.path(), &["-o", "json", "--env", "staging", "validate"]);
    assert_code(&out, 0);
    let warnings: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["event"] == "diagnostic" && e["diagnostic"]["severity"] == "warning")
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let d = &warnings[0]["diagnostic"];
    assert_eq!(d["field"], "environments.staging");
    assert_eq!(d["position"]["line"], 7, "{d}");

    // Not public in staging: nothing is published, nothing to warn about.
    let private = manifest.replace(
        "  staging: { target: kubernetes, namespace: shop }\n",
        "  staging: { target: kubernetes, namespace: shop, services: { api: { public: false } } }\n",
    );
    let tmp = app_with(&private);
    let out = run(tmp.path(), &["--env", "staging", "validate", "--strict"]);
    assert_code(&out, 0);

    // TLS in a gateway environment is the gateway's job: named as ignored.
    let gateway_tls = manifest.replace(
        "  edge: { target: kubernetes, gateway: { name: public } }\n",
        "  edge: { target: kubernetes, gateway: { name: public }, ingress: { tls: { secret: x } } }\n",
    );
    let tmp = app_with(&gateway_tls);
    let out = run(tmp.path(), &["validate"]);
    assert!(
        stderr(&out).contains("warning: environments.edge.ingress.tls: ignored in an environment with a gateway: the gateway's listeners terminate TLS"),
        "{}",
        stderr(&out)
    );
}

/// Traffic-control steps (issue 18): shapes, A/B rules, and Kubernetes without a gateway.
#[test]
fn traffic_control_steps_are_checked_with_positions() {
    let tmp = app_with(
        "app: shop
services:
  api:
    path: services/api
    routes: [/api]
    strategy: beta
strategies:
  beta:
    type: canary
    sticky: true
    steps:
      - match: { header: { x-beta: \"true\" }, cookie: { group: { regex: \"qa-[0-9]+\" } } }
      - mirror: 20
      - weight: 20
  ab:
    type: ab
    steps:
      - match: { cookie: { \"bad;name\": \"1\" } }
      - weight: 10
      - match: { header: { x-user: { regex: \"(unclosed\" } } }
      - match: {}
      - mirror: 101
  blue:
    type: blue-green
    sticky: true
    steps:
      - mirror: 10
  noab:
    type: ab
    steps:
      - pause: {}
",
    );
    let out = run(tmp.path(), &["validate"]);
    assert_code(&out, 2);
    let err = stderr(&out);
    for expected in [
        "dronectl.yaml:18:9: error: strategies.ab.steps[0].match.cookie: `bad;name` is not a valid cookie name",
        "dronectl.yaml:19:9: error: strategies.ab.steps[1]: an A/B strategy has no `weight` steps: a match decides, not weight",
        "dronectl.yaml:20:9: error: strategies.ab.steps[2].match.header.x-user.regex: invalid regex",
        "dronectl.yaml:21:9: error: strategies.ab.steps[3]: a `match` step needs a `header` or a `cookie` to match",
        "dronectl.yaml:22:9: error: strategies.ab.steps[4]: mirror 101 is over 100",
        "dronectl.yaml:27:9: error: strategies.blue.steps[0]: `match` and `mirror` steps apply to canary and ab strategies, not blue-green",
        "error: strategies.blue.sticky: `sticky` applies to canary and ab strategies, not blue-green",
        "error: strategies.noab.steps: an A/B strategy needs a `match` step",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    assert!(!err.contains("strategies.beta"), "{err}");
    // An unknown key in a match step is a parse error with its position.
    let tmp = app_with(
        "app: shop
strategies:
  beta:
    type: canary
    steps:
      - match: { headers: { x-beta: \"1\" } }
",
    );
    let out = run(tmp.path(), &["validate"]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("dronectl.yaml:6:"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn match_and_mirror_steps_on_kubernetes_need_a_gateway() {
    let manifest = |gateway: &str, routes: &str| {
        format!(
            "app: shop
services:
  api:
    path: services/api
{routes}    strategy: beta
environments:
  local: {{ target: docker }}
  prod: {{ target: kubernetes, namespace: shop{gateway} }}
strategies:
  beta:
    type: canary
    steps:
      - match: {{ header: {{ x-beta: \"true\" }} }}
      - mirror: 20
      - weight: 50
"
        )
    };
    let tmp = app_with(&manifest("", "    routes: [/api]\n"));
    let out = run(tmp.path(), &["validate"]);
    assert_code(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("dronectl.yaml:14:9: error: strategies.beta.steps[0]: environment `prod` (kubernetes): a `match` step of strategy `beta` needs a Gateway API gateway for `api` (HTTPRoute matches and RequestMirror), but environment `prod` names no `gateway:`"),
        "{err}"
    );
    assert!(
        err.contains("dronectl.yaml:15:9: error: strategies.beta.steps[1]: environment `prod` (kubernetes): a `mirror` step"),
        "{err}"
    );
    // A gateway, but no public route: no HTTPRoute carries the traffic.
    let gw = ", gateway: { name: edge }";
    let tmp = app_with(&manifest(gw, ""));
    let out = run(tmp.path(), &["validate"]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("`api` has no public `routes`"),
        "{}",
        stderr(&out)
    );
    // With a gateway and public routes: valid.
    let tmp = app_with(&manifest(gw, "    routes: [/api]\n"));
    let out = run(tmp.path(), &["validate", "--strict"]);
    assert_code(&out, 0);
}
