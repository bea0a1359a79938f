//! The services `dronectl new service` generates really work: the generated workspace
//! builds, passes its own tests, clippy and rustfmt, and the HTTP service answers its
//! probes, exposes metrics, carries correlation ids and drains in-flight requests on
//! SIGTERM — over real sockets, as a real process.
//!
//! Builds share the suite's target directory, so the dependency graph is compiled once.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;

struct GeneratedApp {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

const HTTP_SERVICE: &str = "gen-ratings";
const WORKER_SERVICE: &str = "gen-indexer";

/// Runs cargo in the generated app. Its output is kept (and shown when it fails): inherited,
/// the nested `test result:` lines would land in the suite's log and be counted as its own.
fn cargo(app: &Path, args: &[&str]) {
    let out = Command::new(env!("CARGO"))
        .current_dir(app)
        .args(args)
        .env("CARGO_TARGET_DIR", shared_target_dir())
        .env_remove("RUSTFLAGS")
        .stdin(Stdio::null())
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "cargo {args:?} failed in the generated app:\n{}\n{}",
        stdout(&out),
        stderr(&out)
    );
}

/// One generated app for every test in this file, built and tested once.
fn app() -> &'static GeneratedApp {
    static APP: OnceLock<GeneratedApp> = OnceLock::new();
    APP.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        assert_code(&run(tmp.path(), &["new", "app", "gen-app"]), 0);
        let dir = tmp.path().join("gen-app");
        assert_code(&run(&dir, &["new", "service", HTTP_SERVICE]), 0);
        assert_code(
            &run(
                &dir,
                &[
                    "new",
                    "service",
                    WORKER_SERVICE,
                    "--template",
                    "rust-worker",
                    "--port",
                    "8081",
                ],
            ),
            0,
        );
        assert_code(&run(&dir, &["validate", "--strict"]), 0);
        cargo(&dir, &["fmt", "--all", "--check"]);
        cargo(&dir, &["test", "--workspace", "--quiet"]);
        cargo(
            &dir,
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--quiet",
                "--",
                "-D",
                "warnings",
            ],
        );
        GeneratedApp { _tmp: tmp, dir }
    })
}

#[test]
fn generated_workspace_builds_and_passes_its_own_tests() {
    let app = app();
    // `cargo test` above built both binaries.
    for name in [HTTP_SERVICE, WORKER_SERVICE] {
        assert!(
            shared_target_dir().join("debug").join(name).is_file(),
            "{name} binary"
        );
    }
    assert!(app
        .dir
        .join("services")
        .join(HTTP_SERVICE)
        .join("tests")
        .is_dir());
}

/// A running service process, killed if the test fails half way.
struct Service {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(name: &str, log_dir: &Path, env: &[(&str, &str)]) -> Service {
    let port = free_port();
    let log = log_dir.join(format!("{name}.log"));
    let child = Command::new(shared_target_dir().join("debug").join(name))
        .env("PORT", port.to_string())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start service");
    let service = Service { child, port, log };
    wait_for("the service to listen", Duration::from_secs(20), || {
        http(port, "GET", "/healthz", &[]).ok()
    });
    service
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn log_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn http_service_probes_metrics_correlation_and_graceful_drain() {
    app();
    let logs = tempfile::tempdir().unwrap();
    let mut svc = start(
        HTTP_SERVICE,
        logs.path(),
        &[
            ("ENABLE_DEBUG_ENDPOINTS", "true"),
            ("SHUTDOWN_DELAY_MS", "300"),
        ],
    );
    let port = svc.port;

    // Liveness and readiness.
    let live = http(port, "GET", "/healthz", &[]).unwrap();
    assert_eq!(live.status, 200, "{live:?}");
    let ready = http(port, "GET", "/readyz", &[]).unwrap();
    assert_eq!(ready.status, 200, "{ready:?}");

    // The example route, with a correlation id that is echoed and logged.
    let route = format!("/api/{HTTP_SERVICE}");
    let res = http(port, "GET", &route, &[("x-correlation-id", "test-corr-42")]).unwrap();
    assert_eq!(res.status, 200, "{res:?}");
    assert_eq!(res.header("x-correlation-id"), Some("test-corr-42"));
    // Without one, an id is generated and returned.
    let res = http(port, "GET", &route, &[]).unwrap();
    let generated = res
        .header("x-correlation-id")
        .expect("generated correlation id");
    assert!(generated.len() >= 16, "{generated}");

    // Prometheus metrics count the requests by route and status.
    let metrics = http(port, "GET", "/metrics", &[]).unwrap();
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .unwrap_or_default()
            .starts_with("text/plain"),
        "{metrics:?}"
    );
    let counted = metrics
        .body
        .lines()
        .any(|l| l.starts_with("http_requests_total{") && l.contains(&route) && l.contains("200"));
    assert!(
        counted,
        "no http_requests_total line for {route}:\n{}",
        metrics.body
    );
    assert!(
        metrics
            .body
            .contains("http_request_duration_seconds_bucket"),
        "{}",
        metrics.body
    );

    // JSON logs carry the correlation id.
    let tagged = wait_for(
        "a log line with the correlation id",
        Duration::from_secs(5),
        || {
            log_lines(&svc.log)
                .into_iter()
                .find(|l| l.to_string().contains("test-corr-42"))
        },
    );
    assert!(
        tagged.get("timestamp").is_some() || tagged.get("time").is_some(),
        "{tagged}"
    );

    // SIGTERM while a slow request is in flight: it completes, readiness turns 503 during
    // the drain, and the process exits 0.
    let slow = std::thread::spawn(move || {
        let started = Instant::now();
        let res = http(port, "GET", "/debug/sleep?ms=1500", &[]);
        (res, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    sigterm(&svc.child);
    let not_ready = wait_for(
        "readiness to fail during the drain",
        Duration::from_secs(2),
        || {
            match http(port, "GET", "/readyz", &[]) {
                Ok(r) if r.status == 503 => Some(true),
                Ok(_) => None,
                Err(_) => Some(false), // listener already closed: also not routable
            }
        },
    );
    let _ = not_ready;
    let (res, elapsed) = slow.join().unwrap();
    let res = res.expect("the in-flight request completes");
    assert_eq!(res.status, 200, "{res:?}");
    assert!(elapsed >= Duration::from_millis(1400), "{elapsed:?}");
    let exit = wait_for("the process to exit", Duration::from_secs(10), || {
        svc.child.try_wait().unwrap()
    });
    assert!(exit.success(), "exit status {exit:?}");
    // After exit, nothing listens any more.
    assert!(http(port, "GET", "/healthz", &[]).is_err());
}

#[test]
fn worker_service_runs_its_loop_and_stops_on_sigterm() {
    app();
    let logs = tempfile::tempdir().unwrap();
    let mut svc = start(WORKER_SERVICE, logs.path(), &[("WORK_INTERVAL_MS", "50")]);
    let iterations = wait_for("the worker loop to run", Duration::from_secs(10), || {
        let metrics = http(svc.port, "GET", "/metrics", &[]).ok()?;
        let line = metrics
            .body
            .lines()
            .find(|l| l.starts_with("worker_iterations_total"))?
            .to_string();
        let value: f64 = line.rsplit(' ').next()?.parse().ok()?;
        (value >= 3.0).then_some(value)
    });
    assert!(iterations >= 3.0);
    assert_eq!(http(svc.port, "GET", "/readyz", &[]).unwrap().status, 200);
    sigterm(&svc.child);
    let exit = wait_for("the worker to exit", Duration::from_secs(10), || {
        svc.child.try_wait().unwrap()
    });
    assert!(exit.success(), "exit status {exit:?}");
}

/// `/metrics` of both generated services has the exposition the docs and dronectl's
/// analysis queries rely on: the Prometheus text format with the conventional names, types
/// and labels, every sample line well formed.
#[test]
fn both_services_expose_the_documented_metrics() {
    app();
    let logs = tempfile::tempdir().unwrap();
    for (name, own) in [
        (HTTP_SERVICE, None),
        (WORKER_SERVICE, Some("worker_iterations_total")),
    ] {
        let svc = start(name, logs.path(), &[("WORK_INTERVAL_MS", "50")]);
        assert_eq!(http(svc.port, "GET", "/healthz", &[]).unwrap().status, 200);
        let metrics = http(svc.port, "GET", "/metrics", &[]).unwrap();
        assert_eq!(metrics.status, 200, "{name}");
        assert_eq!(
            metrics.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8"),
            "{name}"
        );
        let text = &metrics.body;
        let healthz = r#"method="GET",route="/healthz""#;
        let mut expected = vec![
            "# TYPE http_requests_total counter".to_owned(),
            format!(r#"http_requests_total{{{healthz},status="200"}} "#),
            "# TYPE http_request_duration_seconds histogram".to_owned(),
            format!(r#"http_request_duration_seconds_bucket{{{healthz},le="0.005"}} "#),
            format!(r#"http_request_duration_seconds_bucket{{{healthz},le="1"}} "#),
            format!(r#"http_request_duration_seconds_bucket{{{healthz},le="+Inf"}} "#),
            format!("http_request_duration_seconds_sum{{{healthz}}} "),
            format!("http_request_duration_seconds_count{{{healthz}}} "),
            "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds ".to_owned(),
            "# TYPE service_info gauge".to_owned(),
            format!("service_info{{service=\"{name}\",version=\"0.1.0\"}} 1\n"),
        ];
        expected.extend(own.map(|m| format!("# TYPE {m} counter\n{m} ")));
        for e in &expected {
            assert!(
                text.contains(e.as_str()),
                "{name}: missing {e:?} in:\n{text}"
            );
        }
        let mut described = std::collections::BTreeSet::new();
        for line in text.lines() {
            if let Some(help) = line.strip_prefix("# HELP ") {
                let family = help.split(' ').next().unwrap();
                assert!(described.insert(family.to_owned()), "{name}: twice: {line}");
                assert!(
                    help.ends_with('.') && !help.ends_with(".."),
                    "{name}: {line}"
                );
            } else if !line.starts_with("# TYPE ") {
                let (series, value) = line.rsplit_once(' ').unwrap();
                assert!(value.parse::<f64>().is_ok(), "{name}: {line}");
                let metric = series.split('{').next().unwrap();
                assert!(
                    !metric.is_empty()
                        && metric
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "{name}: {line}"
                );
            }
        }
        drop(svc);
    }
}
