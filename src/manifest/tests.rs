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
  staging: { target: kubernetes, context: staging, namespace: drone, registry: registry.example.com/drone, strategy: canary }
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
