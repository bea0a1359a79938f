//! Environments: one resolution and one wording of its errors for every command.

mod common;

use common::*;

const MANIFEST: &str = "app: shop
services:
  api:
    path: services/api
    replicas: 1
environments:
  local: { target: docker }
  staging: { target: kubernetes, namespace: shop }
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
        stderr(&out).contains("environment `local` (dronectl.yaml:7:10) has `target: docker`; this command needs an environment with `target: kubernetes`"),
        "{}",
        stderr(&out)
    );
    for args in [&["up"][..], &["ps"], &["down"], &["logs", "api"]] {
        let mut all = vec!["--env", "staging"];
        all.extend_from_slice(args);
        let out = run(tmp.path(), &all);
        assert_code(&out, 2);
        assert!(
            stderr(&out).contains("environment `staging` (dronectl.yaml:8:12) has `target: kubernetes`; this command needs an environment with `target: docker`"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}
