//! Nothing outlives its delay on the local Docker engine: after a blue-green promotion the
//! command waits out the scale-down delay and removes the previous version (no dronectl
//! runs afterwards); with `--no-wait-retire` it hands off, `rollout status` shows what is
//! warm and until when, and the next command removes it.
//!
//! The service is tests/fixtures/readyz.rs (compiled with rustc, packed `FROM scratch`), so
//! no crate has to be built. A unique app name and `down --volumes` keep runs apart.

use crate::common;

use std::time::{Duration, Instant};

use common::*;

/// Writes the app's manifest: the service `echo` with `V=<value>` and a blue-green
/// strategy with a 3 s scale-down delay.
fn write_manifest(app: &TestApp, value: &str) {
    let text = format!(
        "app: {}
services:
  echo:
    path: services/echo
    template: rust-http
    port: 8080
    health: {{ liveness: /healthz, readiness: /readyz }}
    replicas: 1
    env: {{ V: \"{value}\" }}
    routes: []
    depends_on: []
environments:
  local: {{ target: docker }}
strategies:
  bg:
    type: blue-green
    steps:
      - weight: 100
    scale_down_delay: 3s
",
        app.name
    );
    std::fs::write(app.dir.join("dronectl.yaml"), text).unwrap();
}

#[test]
fn retired_versions_are_removed_when_their_delay_ends() {
    let app = TestApp::empty("rt");
    // The service's image: tests/fixtures/readyz.rs, `FROM scratch`.
    let (image, artifacts) = app.pack_fixture("readyz", "echo");
    let artifacts = artifacts.as_str();
    write_manifest(&app, "1");
    let out = app.up_from(artifacts, "2m");
    assert_code(&out, 0);
    assert_eq!(app.containers_of(Some("echo")).len(), 1);

    // A blue-green promotion: the command waits out the delay and removes v1 itself.
    write_manifest(&app, "2");
    let started = Instant::now();
    let out = app.run(&["deploy", "echo", "--image", &image, "--strategy", "bg"]);
    assert_code(&out, 0);
    let err = stderr(&out);
    assert!(
        err.contains("warm until") && err.contains("--no-wait-retire to hand off"),
        "{err}"
    );
    assert!(err.contains("removed"), "{err}");
    assert!(started.elapsed() >= Duration::from_secs(3), "did not wait");
    assert_eq!(
        app.containers_of(Some("echo")).len(),
        1,
        "the previous version is gone"
    );

    // Handed off: it stays warm, status says until when, the next command removes it.
    write_manifest(&app, "3");
    let started = Instant::now();
    let out = app.run(&[
        "deploy",
        "echo",
        "--image",
        &image,
        "--strategy",
        "bg",
        "--no-wait-retire",
    ]);
    assert_code(&out, 0);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(
        app.containers_of(Some("echo")).len(),
        2,
        "kept warm for an instant undo"
    );
    let out = app.run(&["rollout", "status", "echo"]);
    assert_code(&out, 0);
    let text = stdout(&out);
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("warm") && l.contains(" until ")),
        "{text}"
    );
    let out = app.run(&["ps"]);
    assert_code(&out, 0);
    assert!(stdout(&out).contains("(warm until "), "{}", stdout(&out));
    let until = app.result(&["rollout", "status", "echo"])["retired"][0]["until_ms"]
        .as_u64()
        .unwrap();
    std::thread::sleep(Duration::from_millis(until.saturating_sub(now_ms()) + 200));
    let out = app.run(&["deploy", "echo", "--image", &image, "--strategy", "bg"]);
    assert_code(&out, 0);
    assert!(stderr(&out).contains("removed"), "{}", stderr(&out));
    assert_eq!(app.containers_of(Some("echo")).len(), 1);
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
