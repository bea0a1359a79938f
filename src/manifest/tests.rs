use std::path::Path;

use super::*;

const FULL: &str = r#"
app: drone-delivery
services:
  ingestion:
    path: services/ingestion
    template: rust-http
    port: 8080
    health: { liveness: /healthz, readiness: /readyz }
    replicas: 2
    resources: { requests: { cpu: 100m, memory: 64Mi }, limits: { cpu: 1, memory: 256Mi } }
    env: { MAX_BODY_BYTES: 65536, FEATURE: true }
    routes: [/api/deliveryrequests]
    depends_on: [redis]
    strategy: canary
  workflow:
    path: services/workflow
    depends_on: [redis, ingestion]
    volume: /data
infrastructure:
  redis:
    image: redis:7
    port: 6379
    volume: /data
    command: ["redis-server", "--appendonly", "yes"]
environments:
  local: { target: docker, strategy: rolling }
  staging: { target: kubernetes, context: staging, namespace: drone, registry: registry.example.com/drone, strategy: canary, ingress: { class: nginx, tls: { cluster_issuer: letsencrypt } }, services: { ingestion: { hosts: [api.drone.example] } } }
strategies:
  rolling: { type: rolling, max_surge: 1, max_unavailable: "0" }
  canary:
    type: canary
    steps:
      - weight: 20
      - pause: { duration: 30s }
      - analysis: error-rate
      - weight: 50
      - pause: {}
analyses:
  error-rate: { metric: error-rate, threshold: 0.01, interval: 10s, count: 3 }
"#;

fn p(text: &str) -> Result<Manifest, ManifestError> {
    parse(Path::new("dronectl.yaml"), text)
}

#[test]
fn parses_every_section() {
    let m = p(FULL).unwrap();
    assert_eq!(m.app.value, "drone-delivery");
    let ingestion = &m.services["ingestion"].value;
    assert_eq!(ingestion.replicas, 2);
    assert_eq!(ingestion.env["MAX_BODY_BYTES"].0, "65536");
    assert_eq!(ingestion.env["FEATURE"].0, "true");
    assert_eq!(ingestion.resources.limits.cpu.as_ref().unwrap().0, "1");
    assert_eq!(ingestion.routes[0].value, "/api/deliveryrequests");
    assert_eq!(ingestion.routes[0].referenced.line(), 12);
    let workflow = &m.services["workflow"].value;
    assert_eq!(workflow.port, 8080);
    assert_eq!(workflow.health, Health::default());
    let canary = &m.strategies["canary"].value;
    assert_eq!(canary.kind, StrategyKind::Canary);
    let steps: Vec<&Step> = canary.steps.iter().map(|s| &s.value).collect();
    assert_eq!(
        steps,
        vec![
            &Step::Weight(20),
            &Step::Pause(Pause {
                duration: Some("30s".parse().unwrap())
            }),
            &Step::Analysis("error-rate".into()),
            &Step::Weight(50),
            &Step::Pause(Pause { duration: None }),
        ]
    );
    assert_eq!(m.environments["staging"].value.target, Target::Kubernetes);
    assert_eq!(validate(&m), vec![]);
}

#[test]
fn unknown_field_names_line_and_column() {
    let text = "app: demo\nservices:\n  api:\n    path: services/api\n    prot: 8080\n";
    let err = p(text).unwrap_err();
    let ManifestError::Parse {
        position, message, ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(*position, Some(Position { line: 5, column: 5 }));
    assert!(message.contains("prot"), "{message}");
    let shown = err.to_string();
    assert!(shown.starts_with("dronectl.yaml:5:5: "), "{shown}");
}

#[test]
fn wrong_type_names_line_and_column() {
    let err = p("app: demo\nservices:\n  api:\n    path: x\n    port: eighty\n").unwrap_err();
    let ManifestError::Parse { position, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(position.map(|p| p.line), Some(5));
}

#[test]
fn services_may_be_empty() {
    let m = p("app: demo\nservices:\n  # nothing yet\n").unwrap();
    assert!(m.services.is_empty());
}

#[test]
fn cross_reference_errors() {
    let text = r#"app: demo
services:
  a:
    path: services/a
    routes: [/api/x]
    depends_on: [b, nope]
    strategy: canery
  b:
    path: services/b
    routes: [/api/x/]
    depends_on: [a]
strategies:
  canary:
    type: canary
    steps:
      - weight: 120
      - analysis: missing
environments:
  local: { target: docker, strategy: fast }
"#;
    let m = p(text).unwrap();
    let found: Vec<String> = validate(&m)
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| d.to_string())
        .collect();
    let joined = found.join("\n");
    for expected in [
        "6:21: error: services.a.depends_on[1]: unknown dependency `nope`",
        "7:15: error: services.a.strategy: strategy `canery` is not defined under `strategies`; did you mean `canary`?",
        "10:14: error: services.b.routes[0]: route `/api/x` is also owned by service `a`",
        "dependency cycle: a → b → a",
        "16:9: error: strategies.canary.steps[0]: weight 120 is over 100",
        "error: strategies.canary.steps[1]: analysis `missing` is not defined",
        "error: environments.local.strategy: strategy `fast` is not defined",
    ] {
        assert!(joined.contains(expected), "missing {expected:?} in:\n{joined}");
    }
}

#[test]
fn bad_paths_are_refused() {
    use super::validate::check_relative_path;
    assert!(check_relative_path("../x").is_err());
    assert!(check_relative_path("/abs").is_err());
    assert!(check_relative_path("a/../../b").is_err());
    assert!(check_relative_path(".").is_err());
    assert_eq!(check_relative_path("./services/a/").unwrap(), "services/a");
}

#[test]
fn durations() {
    let d: Duration = "1m30s".parse().unwrap();
    assert_eq!(d.0.as_secs(), 90);
    assert_eq!(d.to_string(), "1m30s");
    assert_eq!("500ms".parse::<Duration>().unwrap().0.as_millis(), 500);
    assert!("10x".parse::<Duration>().is_err());
    assert!("".parse::<Duration>().is_err());
}

fn errors(text: &str) -> Vec<String> {
    validate(&p(text).unwrap())
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| d.to_string())
        .collect()
}

fn parse_error(text: &str) -> String {
    p(text).unwrap_err().to_string()
}

#[test]
fn a_long_dependency_chain_is_checked_without_recursion() {
    let chain = |cycle: bool| {
        let n = 25_000;
        let mut text = String::from("app: a\nservices:\n");
        for i in 0..n {
            let next = match (i + 1 < n, cycle) {
                (true, _) => format!(", depends_on: [s{}]", i + 1),
                (false, true) => ", depends_on: [s0]".into(),
                (false, false) => String::new(),
            };
            text.push_str(&format!("  s{i}: {{ path: s{i}{next} }}\n"));
        }
        p(&text).unwrap()
    };
    let (acyclic, cyclic) = (chain(false), chain(true));
    // A small stack: the recursive check needed a frame per service of the chain.
    let found = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || (validate(&acyclic), validate(&cyclic)))
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(found.0, vec![]);
    let messages: Vec<String> = found.1.iter().map(|d| d.message.clone()).collect();
    assert_eq!(
        messages,
        vec![
            "dependency cycle: s0 → s1 → s2 → s3 → … 24993 more … → s24997 → s24998 → s24999 → s0"
        ]
    );
}

#[test]
fn short_cycles_are_shown_whole_and_reported_once() {
    let found = errors(
        "app: a\nservices:\n  a: { path: a, depends_on: [b] }\n  b: { path: b, depends_on: [c] }\n  c: { path: c, depends_on: [a, b] }\n",
    );
    let cycles: Vec<&String> = found.iter().filter(|e| e.contains("cycle")).collect();
    assert_eq!(
        cycles,
        vec![
            "5:30: error: services.c.depends_on: dependency cycle: a → b → c → a",
            "5:33: error: services.c.depends_on: dependency cycle: b → c → b",
        ]
    );
}

#[test]
fn refused_characters_in_decoded_values_and_keys() {
    for (text, expected) in [
        (
            "app: a\nservices:\n  x: { path: \"x\\0y\" }\n",
            "dronectl.yaml:3:14: `x\\u{0}y` contains U+0000 (NUL)",
        ),
        (
            "app: a\nservices:\n  \"x\\u202Ey\": { path: x }\n",
            "dronectl.yaml:3:3: `x\\u{202e}y` contains U+202E (a bidirectional control character)",
        ),
        (
            "app: a\ninfrastructure:\n  db: { image: db, port: 1, command: [\"sh\", \"-c\", \"\\x7f\"] }\n",
            "dronectl.yaml:3:51: `\\u{7f}` contains U+007F (a control character)",
        ),
        (
            "app: a\nservices:\n  x: { path: x, env: { A: \"\\u2028\" } }\n",
            "dronectl.yaml:3:27: `\\u{2028}` contains U+2028 (a line or paragraph separator)",
        ),
    ] {
        let err = parse_error(text);
        assert!(err.contains(expected), "{text:?}: {err}");
    }
    // Tabs and line breaks are ordinary in values such as a command or an env value.
    let m = p("app: a\ninfrastructure:\n  db: { image: db, port: 1, command: [\"sh\", \"-c\", \"a\\n\\tb\"] }\n").unwrap();
    assert_eq!(validate(&m), vec![]);
}

#[test]
fn raw_refused_characters_anywhere_in_the_text() {
    let err = parse_error("app: a\n# the next line is \u{2067}reversed\u{2069}\n");
    assert!(
        err.starts_with(
            "dronectl.yaml:2:20: U+2067 (a bidirectional control character) is not allowed"
        ),
        "{err}"
    );
    assert!(
        parse_error("app: a\u{1}\n").starts_with("dronectl.yaml:1:7: U+0001 (a control character)")
    );
    // A byte order mark may open the file.
    assert_eq!(p("\u{feff}app: a\n").unwrap().app.value, "a");
    assert!(parse_error("app: a\u{feff}\n").contains("U+FEFF (a byte order mark)"));
}

#[test]
fn unknown_tags_duplicate_keys_and_limits_are_errors_worded_for_users() {
    let err = parse_error("app: a\nservices:\n  x: { path: x, env: { A: !secret v } }\n");
    assert!(
        err.starts_with("dronectl.yaml:3:35: unknown tag `!secret`"),
        "{err}"
    );
    let err = parse_error("app: a\nservices:\n  x:\n    path: x\n    port: 1\n    port: 2\n");
    assert!(
        err.starts_with("dronectl.yaml:6:5: duplicate key `port` (first at line 5, column 5)"),
        "{err}"
    );
    let err = parse_error(&format!(
        "app: a\nx: {}{}\n",
        "[".repeat(70),
        "]".repeat(70)
    ));
    assert!(
        err.contains("the manifest is nested too deeply: more than 24 levels of lists and maps"),
        "{err}"
    );
    assert!(!err.contains("budget"), "{err}");
    // As deep as allowed, from a thread with a small stack: reading runs on its own.
    let deepest = format!("app: a\nx: {}{}\n", "{a: ".repeat(23), "}".repeat(23));
    let err = std::thread::Builder::new()
        .stack_size(128 * 1024)
        .spawn(move || parse_error(&deepest))
        .unwrap()
        .join()
        .unwrap();
    assert!(err.contains("unknown field `x`"), "{err}");
}

#[test]
fn invalid_utf8_names_the_byte_offset() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(MANIFEST_FILE),
        b"app: a\n# caf\xc3\xa9 \xc3\n",
    )
    .unwrap();
    let err = LoadedManifest::read(dir.path()).unwrap_err();
    let ManifestError::Parse {
        position, message, ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(*position, Some(Position { line: 2, column: 8 }));
    assert_eq!(
        message,
        "invalid UTF-8 at byte offset 15: dronectl.yaml must be UTF-8 text"
    );
}

#[test]
fn single_line_values_and_names() {
    let found = errors(
        r#"app: a
services:
  x:
    path: x
    template: "rust http"
    health: { liveness: "/healthz\r\nX: y" }
    volume: "/data\n"
infrastructure:
  db: { image: "pg 16", port: 5432, scheme: "Post gres", env: { "A-B": 1 } }
environments:
  prod: { target: kubernetes, registry: "user@r.example.com", context: "a\tb", gateway: { name: "g w", namespace: "Gw" } }
strategies:
  "fast one": { type: rolling }
analyses:
  "x\ty": { metric: http, url: "http://a b" }
"#,
    );
    let joined = found.join("\n");
    for expected in [
        "services.x.template: `rust http` contains U+0020 (a space)",
        "services.x.health.liveness: `/healthz\\u{d}\\u{a}X: y` contains U+000D (a line break)",
        "services.x.volume: `/data\\u{a}` contains U+000A (a line break)",
        "infrastructure.db.image: `pg 16` contains U+0020 (a space)",
        "infrastructure.db.scheme: `Post gres` is not a URL scheme",
        "infrastructure.db.env.A-B: `A-B` is not a valid environment variable name",
        "environments.prod.registry: the registry must not contain userinfo",
        "environments.prod.context: `a\\u{9}b` contains U+0009 (a tab)",
        "environments.prod.gateway.name: `g w` contains U+0020 (a space)",
        "environments.prod.gateway.namespace: `Gw` contains `G`",
        "strategies.fast one: `fast one` contains U+0020 (a space)",
        "analyses.x\\u{9}y: `x\\u{9}y` contains U+0009 (a tab)",
        "analyses.x\\u{9}y.url: `http://a b` contains U+0020 (a space)",
    ] {
        assert!(
            joined.contains(expected),
            "missing {expected:?} in:\n{joined}"
        );
    }
    assert!(
        !joined.contains('\t') && !joined.contains('\r'),
        "{joined:?}"
    );
}

#[test]
fn names_in_messages_are_escaped() {
    let found = errors("app: a\nservices:\n  \"a\\tb\": { path: x }\n");
    assert_eq!(
        found,
        vec!["3:11: error: services.a\\u{9}b: `a\\u{9}b` contains U+0009 (a tab); names may only contain lowercase letters, digits and `-`"]
    );
}

#[test]
fn secrets_are_env_names_listed_once_with_valid_references() {
    let found = errors(
        "app: a
services:
  api:
    path: api
    env: { TOKEN: x }
    secrets:
      - DB_PASSWORD
      - 1BAD
      - DB_PASSWORD
      - { name: TOKEN, env: true }
      - { name: EXT, from: { secret: Shop_DB, key: \"a/b\" } }
",
    );
    assert_eq!(
        found,
        [
            "8:9: error: services.api.secrets[1]: secret `1BAD` is not a valid environment variable name (letters, digits and `_`, not starting with a digit, at most 128 characters)",
            "9:9: error: services.api.secrets[2]: secret `DB_PASSWORD` is listed twice (also at services.api.secrets[0])",
            "10:9: error: services.api.secrets[3]: secret `TOKEN` has `env: true`, but `TOKEN` is also set in `env`",
            "11:9: error: services.api.secrets[4].from.secret: `Shop_DB` is not a valid Kubernetes Secret name (a DNS-1123 subdomain: lowercase letters, digits, `-` and `.`, at most 253 characters)",
            "11:9: error: services.api.secrets[4].from.key: `a/b` is not a valid Secret key (letters, digits, `-`, `_`, `.`)",
        ]
    );
}

#[test]
fn secret_declarations_are_strict_and_round_trip() {
    let err = parse(
        Path::new("dronectl.yaml"),
        "app: a\nservices:\n  api: { path: api, secrets: [{ name: A, value: hunter2 }] }\n",
    )
    .unwrap_err();
    let ManifestError::Parse { position, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(position.map(|p| p.line), Some(3), "{err}");
    let m = parse(
        Path::new("dronectl.yaml"),
        "app: a\nservices:\n  api: { path: api, secrets: [A, { name: B, env: true, from: { secret: s, key: k } }] }\n",
    )
    .unwrap();
    let secrets = &m.services["api"].value.secrets;
    assert_eq!(secrets[0].value, SecretDecl::Name("A".into()));
    assert!(secrets[1].value.env());
    assert_eq!(secrets[1].value.from().unwrap().secret, "s");
    let json = serde_json::to_value(&m.services["api"].value.secrets).unwrap();
    assert_eq!(
        json,
        serde_json::json!(["A", {"name": "B", "env": true, "from": {"secret": "s", "key": "k"}}])
    );
}
