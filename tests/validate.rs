//! `dronectl validate`: positions for syntax and type errors, cross-reference checks,
//! exit codes and JSON output.

mod common;

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
